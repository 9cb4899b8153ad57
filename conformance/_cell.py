"""One cell: a candidate on a backend, a dtype and a family, run and scored.

The result is one flat record (a row of the results table). Everything the
candidate does wrong is a finding in the record, never an exception out of here:
raising is ``error``; a wrong dtype, shape, namespace or device, a modified input, a
special slice outside the accepted answers or an error above the budget is ``fail``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import reference

from ._backends import Backend, _jitted
from ._candidates import Candidate
from ._families import Case, Family

__all__ = ["COLUMNS", "Budgets", "CellSpec", "OracleCache", "run_cell"]

_DATA = Path(__file__).parent / "data"

COLUMNS = [
    "candidate", "backend", "library", "device", "mode", "dtype", "out_dtype", "family",
    "profile", "n_inputs", "n_elements", "max_ulp", "p99_ulp", "median_ulp", "mean_ulp",
    "frac_correctly_rounded", "max_abs_err_eps", "special_mismatches", "semantics",
    "status", "reason", "worst_where", "worst_input", "worst_expected", "worst_got",
    "worst_ulp", "curve", "hist", "seconds",
]  # fmt: skip

# ULP histogram bins (for the report's plots): [0, 2^-8), then powers of two up to
# 2^64, then [2^64, inf]
HIST_EDGES = [0.0] + [2.0**k for k in range(-8, 65)] + [float("inf")]


@dataclass(frozen=True)
class Budgets:
    """Per-dtype max ULP budgets (conformance/data/budgets.toml by default)."""

    max_ulp: dict[str, float] = field(default_factory=dict)
    default: float = 4.0
    source: str = "default"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Budgets:
        p = Path(path) if path is not None else _DATA / "budgets.toml"
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"budgets file {str(p)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"budgets file {str(p)!r} is not valid TOML: {exc}") from None
        default = float(data.get("default", {}).get("max_ulp", 4.0))
        per = {str(k): float(v) for k, v in data.get("max_ulp", {}).items()}
        for k, v in [("default", default), *per.items()]:
            if not v >= 0:
                raise ValueError(f"budget {k} = {v} in {str(p)!r} must be >= 0")
        return cls(per, default, str(p))

    def for_dtype(self, dtype: str) -> float:
        return self.max_ulp.get(dtype, self.default)


class OracleCache:
    """Oracle results on disk, keyed by a content hash of (dtype, shape, axis, bytes)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @staticmethod
    def key(case: Case) -> str:
        h = hashlib.sha256()
        h.update(f"{case.x.dtype.name}|{case.x.shape}|{case.axis!r}|".encode())
        h.update(np.ascontiguousarray(case.x).tobytes())
        return h.hexdigest()

    def path(self, case: Case) -> Path:
        k = self.key(case)
        return self.root / k[:2] / f"{k}.npz"

    def has(self, case: Case) -> bool:
        return self.path(case).exists()

    def get(self, case: Case) -> reference.OracleResult:
        p = self.path(case)
        if p.exists():
            try:
                return reference.OracleResult.load(p)
            except Exception:  # a damaged entry is recomputed, not trusted
                p.unlink(missing_ok=True)
        res = reference.evaluate(case.x, axis=case.axis)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp.npz")
        res.save(tmp)
        os.replace(tmp, p)
        return res


@dataclass(frozen=True)
class CellSpec:
    candidate: Candidate
    backend: Backend
    dtype: str
    family: Family
    profile: str

    @property
    def key(self) -> str:
        return "|".join(
            [self.candidate.name, self.backend.name, self.dtype, self.family.name, self.profile]
        )

    def base_record(self) -> dict[str, Any]:
        b = self.backend
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(
            candidate=self.candidate.name, backend=b.name, library=b.library, device=b.device,
            mode=b.mode + ("" if b.x64 else ":nox64"), dtype=self.dtype, family=self.family.name,
            profile=self.profile, n_inputs=0, n_elements=0, special_mismatches=0,
            semantics="{}", curve="[]", hist="[]", reason="",
        )  # fmt: skip
        return rec


def not_run(spec: CellSpec, reason: str) -> dict[str, Any]:
    rec = spec.base_record()
    rec.update(status="not run", reason=reason, seconds=0.0)
    return rec


def _hex(values: NDArray[Any]) -> str:
    return json.dumps([float(v).hex() for v in values.astype(np.float64).reshape(-1)])


def _slice_of(x_shape: tuple[int, ...], axis: Any, flat: int) -> NDArray[np.intp]:
    """Flat indices of the slice (over ``axis``) that holds element ``flat``."""
    ndim = len(x_shape)
    if ndim == 0:
        return np.zeros(1, dtype=np.intp)
    axes = (
        tuple(range(ndim))
        if axis is None
        else tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))
    )
    kept = [i for i in range(ndim) if i not in axes]
    idx = np.arange(math.prod(x_shape)).reshape(x_shape)
    n = math.prod(x_shape[a] for a in axes)
    rows = np.transpose(idx, kept + list(axes)).reshape(-1, n)
    r = int(np.flatnonzero((rows == flat).any(axis=1))[0])
    return np.asarray(rows[r], dtype=np.intp)


def _namespace_finding(b: Backend, out: Any) -> str | None:
    if b.library == "numpy" and isinstance(out, np.ndarray | np.generic):
        return None  # NumPy scalars (0-d results, as SciPy returns) included
    mod = type(out).__module__.split(".")[0]
    want = {
        "numpy": ("numpy",),
        "array_api_strict": ("array_api_strict",),
        "torch": ("torch",),
        "jax": ("jax", "jaxlib"),
        "dask": ("dask",),
        "cupy": ("cupy",),
    }[b.library]
    if mod not in want:
        return f"returned {type(out).__module__}.{type(out).__name__} for {b.library} input"
    return None


def run_cell(spec: CellSpec, cache: OracleCache, budgets: Budgets) -> dict[str, Any]:
    """Run and score one cell; never raises for anything the candidate does."""
    t0 = time.perf_counter()
    rec = spec.base_record()
    b, dtype = spec.backend, spec.dtype
    try:
        fn = spec.candidate.load()
    except Exception as exc:
        rec.update(status="error", reason=f"cannot load: {type(exc).__name__}: {exc}")
        rec["seconds"] = time.perf_counter() - t0
        return rec
    findings: list[str] = []
    errs: list[NDArray[np.float64]] = []
    cr = abs_eps = 0.0
    n_el = 0
    worst: tuple[float, int, int] = (-1.0, -1, -1)  # (ulp, case index, flat index)
    semantics: dict[str, str] = {}
    curve: list[tuple[float, float]] = []
    got_arrays: list[NDArray[Any] | None] = []
    results: list[reference.OracleResult] = []
    out_dtypes: set[str] = set()
    cases = spec.family.cases(dtype, spec.profile)
    if not cases:
        rec.update(status="not run", reason=f"family {spec.family.name} has no {dtype} inputs")
        rec["seconds"] = time.perf_counter() - t0
        return rec
    for ci, case in enumerate(cases):
        res = cache.get(case)
        results.append(res)
        try:
            got = _call(fn, b, case, findings)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
            rec.update(status="error", reason=f"raised on {case.label}: {msg}")
            rec["seconds"] = time.perf_counter() - t0
            rec["n_inputs"] = ci
            return rec
        got_arrays.append(got)
        if got is None:
            continue
        out_dtypes.add(str(got.dtype))
        if got.shape != case.x.shape:
            findings.append(f"returned shape {got.shape} for {case.x.shape} ({case.label})")
            continue
        if got.dtype != case.x.dtype:
            findings.append(f"returned {got.dtype} for {case.x.dtype} input")
            with np.errstate(all="ignore"):
                got = got.astype(np.float64).astype(case.x.dtype)  # scored after rounding
        err = res.ulp_error(got)
        errs.append(err.reshape(-1))
        n_el += err.size
        cr += float(res.correctly_rounded(got).sum())
        if err.size:
            abs_eps = max(abs_eps, float(np.max(res.abs_error_eps(got))))
            i = int(np.argmax(np.where(np.isnan(err), np.inf, err)))
            e = float(err.reshape(-1)[i])
            if e > worst[0]:
                worst = (e, ci, i)
        for case_name, label in res.semantics(got):
            if label == "other":
                rec["special_mismatches"] += 1
            semantics.setdefault(case_name, label)
            if label == "other":
                semantics[case_name] = "other"
        if case.params and err.ndim == 2 and len(case.params) == err.shape[0]:
            curve += [(p, float(np.max(row))) for p, row in zip(case.params, err, strict=True)]
    rec["n_inputs"] = len(cases)
    rec["n_elements"] = n_el
    rec["out_dtype"] = ",".join(sorted(out_dtypes))
    rec["semantics"] = json.dumps(semantics, sort_keys=True)
    rec["curve"] = json.dumps(curve)
    if errs:
        allerr = np.concatenate(errs)
        finite_or_inf = np.where(np.isnan(allerr), np.inf, allerr)
        bins = [*HIST_EDGES[:-1], 1e301]  # inf counted in the last bin
        counts, _ = np.histogram(np.minimum(finite_or_inf, 1e300), bins=bins)
        rec["hist"] = json.dumps(counts.tolist())
        if allerr.size:
            rec.update(
                max_ulp=float(np.max(allerr)),
                # order statistics, not interpolations: inf errors (a saturated
                # candidate) give inf, not inf - inf = NaN and a warning
                p99_ulp=float(np.quantile(allerr, 0.99, method="inverted_cdf")),
                median_ulp=float(np.quantile(allerr, 0.5, method="inverted_cdf")),
                mean_ulp=float(np.mean(allerr)),
                frac_correctly_rounded=cr / allerr.size,
                max_abs_err_eps=abs_eps,
            )
        else:
            rec.update(max_ulp=0.0, p99_ulp=0.0, median_ulp=0.0, mean_ulp=0.0,
                       frac_correctly_rounded=1.0, max_abs_err_eps=0.0)  # fmt: skip
    if worst[1] >= 0:
        _reproducer(rec, spec, cases[worst[1]], got_arrays[worst[1]], worst, results[worst[1]])
    budget = budgets.for_dtype(dtype)
    reasons = list(dict.fromkeys(findings))
    if rec["special_mismatches"]:
        reasons.append(f"{rec['special_mismatches']} special slices outside the accepted answers")
    if rec["max_ulp"] is not None and not rec["max_ulp"] <= budget:
        reasons.append(f"{rec['max_ulp']:.3g} ULP > {budget:g}")
    rec["status"] = "fail" if reasons else "pass"
    rec["reason"] = "; ".join(reasons)
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _reproducer(
    rec: dict[str, Any], spec: CellSpec, case: Case, got: Any, worst: tuple[float, int, int],
    res: reference.OracleResult,
) -> None:  # fmt: skip
    e, ci, flat = worst
    sl = _slice_of(case.x.shape, case.axis, flat)
    pos = int(np.flatnonzero(sl == flat)[0])
    where = (
        f"conformance.family({spec.family.name!r}).cases({spec.dtype!r}, {spec.profile!r})"
        f"[{ci}]: element {flat} ({case.label}), position {pos} of its slice"
    )
    x = case.x.reshape(-1)[sl]
    rec["worst_where"] = where
    rec["worst_input"] = _hex(x) if x.size <= 64 else f"{x.size} values; see worst_where"
    exp = res.expected.reshape(-1)[flat]
    rec["worst_expected"] = float(np.asarray(exp, dtype=np.float64))
    rec["worst_got"] = float(np.asarray(got).reshape(-1)[flat].astype(np.float64))
    rec["worst_ulp"] = e


def _call(fn: Callable[..., Any], b: Backend, case: Case, findings: list[str]) -> Any:
    """fn on the backend; the result in NumPy, or None with a finding where it cannot
    be read back. Checks namespace, device and that the input is unchanged."""
    base = np.ascontiguousarray(case.x.T) if case.transposed else case.x
    with b.context():
        xb = b.from_numpy(base)
        if case.transposed:
            xb = xb.T
        before = b.to_numpy(xb).copy()
        # what a candidate warns about is its own business; the scores say the rest
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if b.mode == "jit":
                out = _jitted(fn, (("axis", case.axis),))(xb)
            else:
                out = fn(xb, axis=case.axis)
        ns = _namespace_finding(b, out)
        if ns:
            findings.append(ns)
            got = np.asarray(out)
        else:
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # lazy (Dask) work runs here
                    got = b.to_numpy(out)
            except AssertionError as exc:  # the backend's own device/laziness checks
                findings.append(str(exc))
                return None
        after = b.to_numpy(xb)
        if after.tobytes() != before.tobytes():
            findings.append(f"modified its input ({case.label})")
    return np.asarray(got)
