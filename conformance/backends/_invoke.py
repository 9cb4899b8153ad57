"""One call of a candidate on one input, the way a backend is used, and its return
value checked as data.

Whatever the candidate returns is validated here before anything reads it: not an
array at all (None, a str, a list), an array of another library, on another device,
not lazy where it must be, of a non-numeric dtype, or an input left modified are
findings, and the value goes on only as ``(dtype, shape, bytes)`` of a plain NumPy
array. The floating-point environment is read before and after the call; a change is a
finding and is undone at once.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from . import _fpenv
from ._backends import Backend, _jitted

__all__ = ["Encoded", "decode", "dtype_of", "encode", "invoke"]

Encoded = tuple[str, tuple[int, ...], bytes]  # dtype, shape, the bytes in C order

_ML_DTYPES = {
    name: np.dtype(getattr(ml_dtypes, name))
    for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3b11fnuz")
    if hasattr(ml_dtypes, name)
}
_PLAIN = re.compile(r"^[<>|=]?[fiubc][1-9][0-9]?$")
_WANT = {
    "numpy": ("numpy",),
    "array_api_strict": ("array_api_strict",),
    "torch": ("torch",),
    "jax": ("jax", "jaxlib"),
    "dask": ("dask",),
    "cupy": ("cupy",),
}


def encode(a: NDArray[Any]) -> Encoded:
    name = a.dtype.name if a.dtype.name in _ML_DTYPES else a.dtype.str
    return (name, tuple(int(s) for s in a.shape), np.ascontiguousarray(a).tobytes())


def dtype_of(name: str) -> np.dtype[Any]:
    """The dtype an encoded array names: plain numbers and ml_dtypes' formats only (no
    structured or object dtype is ever built from what a worker sent)."""
    if name in _ML_DTYPES:
        dt: np.dtype[Any] = _ML_DTYPES[name]
        return dt
    if _PLAIN.match(name):
        return np.dtype(name)
    raise ValueError(f"not an encoded array: dtype {name!r}")


def decode(e: Any) -> NDArray[Any]:
    """A plain NumPy array from what a worker sent (checked: nothing else is built)."""
    name, shape, data = e
    if not (isinstance(name, str) and isinstance(data, bytes) and isinstance(shape, tuple)):
        raise ValueError("not an encoded array")
    dt = dtype_of(name)
    return np.frombuffer(data, dtype=dt).reshape(tuple(int(s) for s in shape)).copy()


def _what(out: Any) -> str:
    t = type(out)
    mod = t.__module__
    return t.__name__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def _namespace_finding(b: Backend, out: Any) -> str | None:
    if b.library == "numpy" and isinstance(out, np.ndarray | np.generic):
        return None  # NumPy scalars (0-d results, as SciPy returns) included
    if type(out).__module__.split(".")[0] not in _WANT[b.library]:
        return f"returned {_what(out)} for {b.library} input"
    return None


def _as_plain(got: Any, label: str, findings: list[str]) -> NDArray[Any] | None:
    """A plain, numeric NumPy copy of ``got``, or None with a finding."""
    try:
        a = np.array(got, copy=True, subok=False)
    except Exception as exc:
        findings.append(f"returned {_what(got)} that is not an array ({label}): {exc}")
        return None
    if a.dtype == object:
        findings.append(f"returned an object array, expected numbers ({label})")
        return None
    if a.dtype.kind not in "fiubc" and a.dtype.name not in _ML_DTYPES:
        findings.append(f"returned a {a.dtype} array, expected numbers ({label})")
        return None
    return np.asarray(a.view(np.ndarray))


def _plain_of(
    b: Backend, out: Any, label: str, findings: list[str], what: str = "an array"
) -> NDArray[Any] | None:
    """One array the candidate returned, validated: a plain NumPy copy, or None with a
    finding where there is nothing to score."""
    if out is None or not hasattr(out, "shape") or not hasattr(out, "dtype"):
        findings.append(f"returned {_what(out)}, expected {what} ({label})")
        return None
    got: Any = None
    if (ns := _namespace_finding(b, out)) is not None:
        findings.append(ns)
        got = out  # scored all the same where it reads as numbers
    else:
        try:
            got = b.to_numpy(out)  # lazy (Dask) work runs here
        except AssertionError as exc:  # the backend's device/laziness checks
            findings.append(str(exc))
    return None if got is None else _as_plain(got, label, findings)


def invoke(
    fn: Callable[..., Any], b: Backend, case: Any, findings: list[str],
    signs: list[NDArray[Any] | None] | None = None,
) -> NDArray[Any] | None:  # fmt: skip
    """fn on the backend; the result as a plain NumPy array, or None with a finding
    where there is nothing to score. Exceptions the candidate raises propagate.

    A case with weights passes ``b=`` on the backend (laid out as x); one with
    ``return_sign`` expects ``(value, sign)``, and the sign, validated the same way,
    goes to ``signs`` (None where there is none to score)."""
    weights = getattr(case, "b", None)
    with_sign = bool(getattr(case, "return_sign", False))

    def on_backend(a: NDArray[Any]) -> Any:
        ab = b.from_numpy(np.ascontiguousarray(a.T) if case.transposed else a)
        return ab.T if case.transposed else ab

    with b.context():
        xb = on_backend(case.x)
        bb = None if weights is None else on_backend(weights)
        before = [b.to_numpy(v).copy() for v in (xb, bb) if v is not None]
        static: tuple[tuple[str, Any], ...] = (("axis", case.axis),)
        if with_sign:
            static += (("return_sign", True),)
        # what a candidate warns about is its own business; the scores say the rest
        with _fpenv.guarded(findings), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = {} if bb is None else {"b": bb}  # arrays: jit's traced arguments
            if b.mode == "jit":
                out = _jitted(fn, static, tuple(traced))(xb, *traced.values())
            else:
                out = fn(xb, **dict(static), **traced)
            got_sign: NDArray[Any] | None = None
            paired = not with_sign or (isinstance(out, tuple | list) and len(out) == 2)
            if not paired:
                findings.append(
                    f"returned {_what(out)}, expected (value, sign) with return_sign=True "
                    f"({case.label})"
                )
            elif with_sign:
                out, sign = out
                got_sign = _plain_of(b, sign, case.label, findings, "a sign array")
            if with_sign and signs is not None:
                signs.append(got_sign)
            got = _plain_of(b, out, case.label, findings) if paired else None
        after = [b.to_numpy(v) for v in (xb, bb) if v is not None]
        if any(a.tobytes() != p.tobytes() for a, p in zip(after, before, strict=True)):
            findings.append(f"modified its input ({case.label})")
    return got
