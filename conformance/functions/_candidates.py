"""Candidates: the implementations under test, each of one function.

log_softmax: ``impl`` (this project's), ``scipy`` (scipy.special.log_softmax with
SCIPY_ARRAY_API=1, on every backend it accepts), ``log(softmax)`` (the log of
scipy.special.softmax, the seed document's own comparison), ``torch.nn.functional``
(torch cells only) and ``jax.nn`` (JAX cells only). softmax: ``impl``, ``scipy``,
``torch.nn.functional`` and ``jax.nn``'s softmax; logsumexp: ``impl``, ``scipy``,
``torch`` (torch.logsumexp) and ``jax.nn``. Any function can join as
``module:function`` on the command line (for the function the sweep names), or through
the entry-point group ``log_softmax_conformance.candidates`` (name = "module:function",
a log_softmax). Every candidate is called as ``fn(x, axis=axis)`` on the backend's
array; the adapters give the library functions that take ``dim`` or a single axis that
signature. logsumexp's candidates that take weights and a sign (``keywords``: impl,
scipy, jax.nn, and a user's function whose source declares ``b``
and ``return_sign``) are also called as ``fn(x, axis=axis, b=b, return_sign=True)`` on
the families that need them; torch.logsumexp takes neither.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..backends._backends import Backend
from ._functions import DEFAULT_FUNCTION, function, uid

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Candidate",
    "candidate",
    "check_target",
    "known_candidates",
    "locate",
    "missing_function",
]

ENTRY_POINT_GROUP = "log_softmax_conformance.candidates"


@dataclass(frozen=True)
class Candidate:
    """A named implementation of ``function``. ``target`` is "module:function"
    (imported in the worker that runs it); ``libraries`` limits it to backends of those
    libraries."""

    name: str
    target: str
    libraries: tuple[str, ...] = ()
    doc: str = ""
    function: str = DEFAULT_FUNCTION
    # the keyword arguments besides axis it takes (logsumexp's b and return_sign): the
    # families whose cases pass them run on it
    keywords: tuple[str, ...] = ()

    @property
    def uid(self) -> str:
        """The name that is unique in a sweep: ``softmax/scipy`` beside ``scipy`` (the
        log_softmax candidates keep their bare names, and their cells their keys)."""
        return uid(self.function, self.name)

    def applies_to(self, b: Backend) -> bool:
        return not self.libraries or b.library in self.libraries

    def load(self) -> Callable[..., Any]:
        """The function, imported (raises ImportError/AttributeError with the target)."""
        return load_target(self.target)


def split_target(target: str) -> tuple[str, str]:
    """("module", "attribute") of "module:attribute" (ValueError for anything else)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr or not all(p.isidentifier() for p in module.split(".")):
        raise ValueError(f"a candidate is 'module:function', got {target!r}")
    return module, attr


def _find_spec(fullname: str, path: list[str] | None) -> Any:
    for finder in sys.meta_path:  # the finders import would ask, in the same order
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(fullname, path)
        except Exception:
            continue
        if spec is not None:
            return spec
    return None


def locate(module: str) -> Path | None:
    """Where ``module`` would be imported from, found without running any of its code
    (nor that of the packages above it); None when it cannot be found."""
    if module in sys.modules:
        f = getattr(sys.modules[module], "__file__", None)
        return Path(f) if f else Path(sys.prefix)
    path: list[str] | None = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = _find_spec(".".join(parts[: i + 1]), path)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        path = list(locations) if locations is not None else []
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        return Path(spec.origin)
    return Path(next(iter(spec.submodule_search_locations or [sys.prefix])))


def check_target(target: str) -> None:
    """That "module:function" names a module that exists, checked without importing
    it: the import itself happens in the worker that runs the candidate."""
    module, _ = split_target(target)
    if locate(module) is None:
        raise ImportError(
            f"cannot import module {module!r} for candidate {target!r}: "
            f"no module named {module!r} on sys.path"
        )


KEYWORDS = ("b", "return_sign")  # the keywords a case may pass besides axis


def declared_keywords(target: str) -> tuple[str, ...]:
    """The keywords of KEYWORDS that the function "module:function" declares, read
    from its module's source without running it: its parameters by name, or all where
    it takes ``**kwargs``. Empty where the source does not say (a compiled module, a
    function made by an assignment): such a candidate is not given keywords."""
    import ast

    try:
        module, attr = split_target(target)
        where = locate(module)
        if where is None or where.suffix != ".py" or "." in attr:
            return ()
        tree = ast.parse(where.read_text(encoding="utf-8"), str(where))
    except (ValueError, OSError, SyntaxError, UnicodeDecodeError):
        return ()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attr:
            a = node.args
            if a.kwarg is not None:
                return KEYWORDS
            names = {p.arg for p in [*a.posonlyargs[1:], *a.args[1:], *a.kwonlyargs]}
            return tuple(k for k in KEYWORDS if k in names)
    return ()


def load_target(target: str) -> Callable[..., Any]:
    module, attr = split_target(target)
    if module.startswith("scipy") or module == __name__:
        os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before scipy's first import
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"cannot import module {module!r} for candidate {target!r}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"module {module!r} has no attribute {attr!r} ({target!r})"
            ) from None
    if not callable(obj):
        raise TypeError(f"{target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def missing_function(exc: BaseException, target: str) -> bool:
    """Whether ``exc``, raised by load_target(target), says that the module imported
    and holds no such function (the two messages above), not that its import failed."""
    said = str(exc)
    if isinstance(exc, AttributeError):
        return " has no attribute " in said and said.endswith(f"({target!r})")
    return isinstance(exc, TypeError) and said == f"{target!r} is not callable"


# -- adapters to fn(x, axis=...) --------------------------------------------------------


def scipy_log_softmax(x: Any, axis: Any = None) -> Any:
    import scipy.special

    return scipy.special.log_softmax(x, axis=axis)


def log_of_softmax(x: Any, axis: Any = None) -> Any:
    """log(softmax(x)): the seed document's comparison, in x's own namespace."""
    import array_api_compat
    import scipy.special

    s = scipy.special.softmax(x, axis=axis)
    return array_api_compat.array_namespace(s).log(s)


def _torch_over_axes(name: str, x: Any, axis: Any) -> Any:
    """torch.nn.functional.<name> over any axes: the reduced axes are moved last and
    merged into one ``dim``, then put back."""
    import torch

    fn = getattr(torch.nn.functional, name)
    if isinstance(axis, int):
        return fn(x, dim=axis)
    axes = tuple(range(x.ndim)) if axis is None else tuple(a % x.ndim for a in axis)
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = kept + list(axes)
    t = x.permute(perm)
    n = math.prod(t.shape[len(kept) :])
    out = fn(t.reshape(*t.shape[: len(kept)], n), dim=-1)
    inv = [perm.index(i) for i in range(x.ndim)]
    return out.reshape(t.shape).permute(inv)


def torch_log_softmax(x: Any, axis: Any = None) -> Any:
    return _torch_over_axes("log_softmax", x, axis)


def jax_log_softmax(x: Any, axis: Any = None) -> Any:
    import jax

    return jax.nn.log_softmax(x, axis=axis)


def scipy_softmax(x: Any, axis: Any = None) -> Any:
    import scipy.special

    return scipy.special.softmax(x, axis=axis)


def torch_softmax(x: Any, axis: Any = None) -> Any:
    return _torch_over_axes("softmax", x, axis)


def jax_softmax(x: Any, axis: Any = None) -> Any:
    import jax

    return jax.nn.softmax(x, axis=axis)


def _weights(b: Any, return_sign: bool) -> dict[str, Any]:
    """logsumexp's keywords as given (none where absent: a library's own defaults)."""
    return ({} if b is None else {"b": b}) | ({"return_sign": True} if return_sign else {})


def scipy_logsumexp(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    import scipy.special

    return scipy.special.logsumexp(x, axis=axis, **_weights(b, return_sign))


def torch_logsumexp(x: Any, axis: Any = None) -> Any:
    """torch.logsumexp over ``axis`` (None: every dimension; a 0-d tensor's own)."""
    import torch

    if axis is None:
        axis = tuple(range(x.ndim)) if x.ndim else 0
    return torch.logsumexp(x, dim=axis)


def jax_logsumexp(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    import jax

    return jax.nn.logsumexp(x, axis=axis, **_weights(b, return_sign))


def naive_logsumexp(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    """log(sum(b exp(x))): no max subtraction (not in the default sweep); with
    return_sign, (log|S|, sign(S))."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    s = xp.sum(xp.exp(x) if b is None else b * xp.exp(x), axis=axis)
    return (xp.log(xp.abs(s)), xp.sign(s)) if return_sign else xp.log(s)


def naive_softmax(x: Any, axis: Any = None) -> Any:
    """exp(x) / sum(exp(x)): no max subtraction (not in the default sweep)."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    e = xp.exp(x)
    return e / xp.sum(e, axis=axis, keepdims=True)


def naive_log_softmax(x: Any, axis: Any = None) -> Any:
    """x - log(sum(exp(x))): no max subtraction. Not in the default sweep; it is the
    degraded candidate the tests and examples use."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    return x - xp.log(xp.sum(xp.exp(x), axis=axis, keepdims=True))


BUILTIN: tuple[Candidate, ...] = (
    Candidate("impl", "impl:log_softmax", doc="this project's log_softmax"),
    Candidate(
        "scipy",
        f"{__name__}:scipy_log_softmax",
        ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask"),
        "scipy.special.log_softmax (SCIPY_ARRAY_API=1)",
    ),
    Candidate(
        "log(softmax)",
        f"{__name__}:log_of_softmax",
        ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask"),
        "log of scipy.special.softmax",
    ),
    Candidate(
        "torch.nn.functional",
        f"{__name__}:torch_log_softmax",
        ("torch",),
        "torch.nn.functional.log_softmax",
    ),
    Candidate("jax.nn", f"{__name__}:jax_log_softmax", ("jax",), "jax.nn.log_softmax"),
    Candidate(
        "scipy",
        f"{__name__}:scipy_softmax",
        ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask"),
        "scipy.special.softmax (SCIPY_ARRAY_API=1)",
        "softmax",
    ),
    Candidate(
        "torch.nn.functional",
        f"{__name__}:torch_softmax",
        ("torch",),
        "torch.nn.functional.softmax",
        "softmax",
    ),
    Candidate("jax.nn", f"{__name__}:jax_softmax", ("jax",), "jax.nn.softmax", "softmax"),
    Candidate("impl", "impl:softmax", doc="this project's softmax", function="softmax"),
    Candidate(
        "impl",
        "impl:logsumexp",
        doc="this project's logsumexp",
        function="logsumexp",
        keywords=KEYWORDS,
    ),
    Candidate(
        "scipy",
        f"{__name__}:scipy_logsumexp",
        ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask"),
        "scipy.special.logsumexp (SCIPY_ARRAY_API=1)",
        "logsumexp",
        KEYWORDS,
    ),
    Candidate("torch", f"{__name__}:torch_logsumexp", ("torch",), "torch.logsumexp", "logsumexp"),
    Candidate(
        "jax.nn",
        f"{__name__}:jax_logsumexp",
        ("jax",),
        # one function in JAX (jax.nn.logsumexp is jax.scipy.special.logsumexp): swept once
        "jax.nn.logsumexp (= jax.scipy.special.logsumexp)",
        "logsumexp",
        KEYWORDS,
    ),
)


def _entry_point_candidates() -> list[Candidate]:
    out = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.append(Candidate(ep.name, ep.value, doc=f"entry point {ep.value}",
                             keywords=declared_keywords(ep.value)))  # fmt: skip
    return out


def known_candidates(function_name: str | None = None) -> list[Candidate]:
    """Built-ins, then those registered through the entry-point group (log_softmax
    candidates): all, or those of one function."""
    return [
        c
        for c in [*BUILTIN, *_entry_point_candidates()]
        if function_name is None or c.function == function_name
    ]


def candidate(spec: str, function_name: str = DEFAULT_FUNCTION) -> Candidate:
    """A candidate of ``function_name`` by name, or a new one from "module:function".
    The module is looked up on sys.path (a typo is a clear error before any work
    starts) but not imported: a candidate's code runs only in its own worker process."""
    function(function_name)  # KeyError for an unknown function
    for c in known_candidates(function_name):
        if c.name == spec:
            return c
    if ":" in spec:
        check_target(spec)
        return Candidate(
            spec, spec, doc="given on the command line", function=function_name,
            keywords=declared_keywords(spec),
        )  # fmt: skip
    known = [c.name for c in known_candidates(function_name)]
    raise KeyError(
        f"unknown {function_name} candidate {spec!r}; known: {known}, or give module:function"
    )
