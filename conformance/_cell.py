"""One cell: a candidate on a backend, a dtype and a family, run and scored.

A cell is run in two halves. :func:`execute` calls the candidate on every input of the
family (in the candidate's worker process) and keeps only validated data; :func:`score`
judges that data against the oracle (in the process that supervises the workers, where
no candidate code runs). The result is one flat record, a row of the results table.
Everything the candidate does wrong is a finding in the record, never an exception out
of here: raising is ``error``; a return that is not an array, a wrong dtype, shape,
namespace or device, a modified input, a changed floating-point environment, a special
slice outside the accepted answers or an error above the budget is ``fail``.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

import reference

from . import _fpenv, _limits
from ._backends import Backend
from ._budgets import Budgets
from ._candidates import Candidate
from ._families import Case, Family
from ._functions import function
from ._invoke import Encoded, decode, encode, invoke
from ._oracle_cache import OracleCache

__all__ = ["COLUMNS", "STATUSES", "CellSpec", "Raw", "execute", "not_run", "run_cell", "score"]

COLUMNS = [
    "function", "candidate", "backend", "library", "device", "mode", "fpenv", "dtype", "out_dtype",
    "family",
    "profile", "n_inputs", "n_elements", "max_ulp", "p99_ulp", "median_ulp", "mean_ulp",
    "frac_correctly_rounded", "max_abs_err_eps", "special_mismatches", "semantics",
    "status", "reason", "worst_where", "worst_input", "worst_expected", "worst_got",
    "worst_ulp", "curve", "hist", "seconds", "platform", "notes", "judge", "host", "counts",
]  # fmt: skip
STATUSES = ("pass", "fail", "error", "not run")

# the labels of a cell's failing inputs kept in its record (``counts``), for the gate
_MAX_LABELS = 50
# ULP histogram bins (for the report's plots): [0, 2^-8), then powers of two up to
# 2^64, then [2^64, inf]
HIST_EDGES = [0.0] + [2.0**k for k in range(-8, 65)] + [float("inf")]


@dataclass(frozen=True)
class CellSpec:
    candidate: Candidate
    backend: Backend
    dtype: str
    family: Family
    profile: str
    # the floating-point environment its calls run in (_fpenv.FPENVS): "default", or
    # "ftz" (flush-to-zero, denormals-are-zero), whose cells' keys end in "|ftz"
    fpenv: str = "default"

    @property
    def function(self) -> str:
        return self.candidate.function

    @property
    def key(self) -> str:
        parts = [self.candidate.uid, self.backend.name, self.dtype, self.family.name, self.profile]
        return "|".join(parts + ([self.fpenv] if self.fpenv != "default" else []))

    @property
    def unit(self) -> tuple[str, str, str]:
        """What its inputs depend on: (family, dtype, the function where the family's
        inputs depend on it, else "")."""
        fn = self.function if self.family.per_function else ""
        return (self.family.name, self.dtype, fn)

    def cases(self) -> list[Case]:
        return self.family.cases(self.dtype, self.profile, self.function)

    def base_record(self) -> dict[str, Any]:
        b = self.backend
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(
            function=self.function, candidate=self.candidate.name, backend=b.name,
            library=b.library, device=b.device, mode=b.mode + ("" if b.x64 else ":nox64"),
            fpenv=self.fpenv,
            dtype=self.dtype, family=self.family.name,
            profile=self.profile, n_inputs=0, n_elements=0, special_mismatches=0,
            semantics="{}", curve="[]", hist="[]", reason="", platform="", notes="", judge="",
            host="", counts="{}",
        )  # fmt: skip
        return rec


@dataclass
class Raw:
    """What a worker sends back for one cell: the outputs as plain arrays (None where
    there was nothing to score), the findings, and the error that stopped the cell."""

    outputs: list[Encoded | None] = field(default_factory=list)
    # one per output where a case asked for return_sign (None where it did not, or
    # where no sign came back); empty where no case of the cell asked for one
    signs: list[Encoded | None] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    host: str = ""  # where it was measured
    # a streamed family's record fields, from the supervisor's scoring processes
    summary: dict[str, Any] | None = None


def not_run(spec: CellSpec, reason: str) -> dict[str, Any]:
    rec = spec.base_record()
    rec.update(status="not run", reason=reason, seconds=0.0)
    return rec


def failed(spec: CellSpec, reason: str, seconds: float = 0.0) -> dict[str, Any]:
    """The record of a cell that produced nothing to score (``error``)."""
    rec = spec.base_record()
    rec.update(status="error", reason=reason, seconds=seconds)
    return rec


def _message(exc: BaseException) -> str:
    """One line for an exception a candidate raised, whatever its __str__ does (a
    MemoryError under the worker's limit says so first)"""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) and _limits.memory_limit():
        name = f"memory limit ({_limits.memory_limit() / 2**30:.3g} GiB): {name}"
    try:
        if isinstance(exc, SyntaxError) and exc.filename:
            text = f"{name}: {exc.msg} ({exc.filename}, line {exc.lineno})"
        else:
            text = f"{name}: {exc}".strip()
    except BaseException as inner:  # a __str__ that raises (or exits)
        text = f"{name} (its message raised {type(inner).__name__})"
    return (text.splitlines() or [name])[0][:300]


def execute(
    spec: CellSpec, fn: Callable[..., Any],
    emit: Callable[[int, Encoded | None], None] | None = None,
) -> Raw:  # fmt: skip
    """Call ``fn`` on every input of the cell; never raises for what fn does. A streamed
    family's answers go to ``emit(block, answer)`` as they come (the worker sends them
    on), or into ``outputs`` where there is no ``emit``."""
    t0 = time.perf_counter()
    raw = Raw(host=socket.gethostname())
    with _fpenv.environment(spec.fpenv):  # the calls' environment; restored after
        _calls(spec, fn, emit, raw)
    raw.seconds = time.perf_counter() - t0
    return raw


def _calls(
    spec: CellSpec, fn: Callable[..., Any], emit: Callable[[int, Encoded | None], None] | None,
    raw: Raw,
) -> None:  # fmt: skip
    stream = spec.family.stream
    if stream is not None:
        for i in range(stream.n_blocks):
            try:
                got = invoke(fn, spec.backend, Case(stream.inputs(i), -1, stream.label),
                             raw.findings)  # fmt: skip
            except (Exception, SystemExit) as exc:
                raw.error = f"raised on {stream.label}, block {i}: {_message(exc)}"
                break
            enc = None if got is None else encode(got)
            if emit is None:
                raw.outputs.append(enc)
            else:
                emit(i, enc)
        return
    cases = [] if spec.family.suite else spec.cases()
    for case in cases:
        sign: list[NDArray[Any] | None] = []
        try:
            got = invoke(fn, spec.backend, case, raw.findings, sign)
        except (Exception, SystemExit) as exc:
            raw.error = f"raised on {case.label}: {_message(exc)}"
            break
        raw.outputs.append(None if got is None else encode(got))
        raw.signs.append(encode(sign[0]) if sign and sign[0] is not None else None)
    if not any(c.return_sign for c in cases):
        raw.signs = []
    if spec.family.check is not None and raw.error is None:
        try:
            with _fpenv.guarded(raw.findings):  # its calls are the candidate's too
                findings, notes = spec.family.check(spec, fn, cases)
            raw.findings += findings
            raw.notes += notes
        except Exception as exc:
            raw.error = f"the {spec.family.name} check raised: {_message(exc)}"


def load_error(spec: CellSpec, exc: BaseException) -> str:
    return f"cannot load {spec.candidate.target}: {_message(exc)}"


def run_cell(spec: CellSpec, cache: OracleCache, budgets: Budgets) -> dict[str, Any]:
    """Run and score one cell in this process (no isolation: for debugging and for the
    in-process mode of the runner and the pytest plugin)."""
    t0 = time.perf_counter()
    try:
        fn = spec.candidate.load()
    except Exception as exc:
        return failed(spec, load_error(spec, exc), time.perf_counter() - t0)
    raw = execute(spec, fn)
    return score(spec, raw, spec.cases(), cache.get, budgets, cache.recompute)


# the oracle's answer for an input, for a function (OracleCache.get and .recompute)
Oracle = Callable[[Case, str], reference.OracleResult]


def _hex(values: NDArray[Any]) -> str:
    return json.dumps([float(v).hex() for v in values.astype(np.float64).reshape(-1)])


def _slice_of(
    x_shape: tuple[int, ...], axis: Any, flat: int, reduces: bool = False
) -> NDArray[np.intp]:
    """Flat indices of the slice (over ``axis``) that holds element ``flat`` of the
    answer: of the input, or for a reduction (one answer per slice) the flat-th slice."""
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
    r = flat if reduces else int(np.flatnonzero((rows == flat).any(axis=1))[0])
    return np.asarray(rows[r], dtype=np.intp)


def _agrees(case: Case, flat: int, res: reference.OracleResult, function_name: str) -> bool:
    """The oracle's answer for the slice that holds element ``flat``, computed again
    now, is ``res``'s (its values' bits, residuals and ULP exponents): a cached answer
    changed on disk shows where it matters most, at the cell's worst element (1.4 ms
    a cell on the quick sweep here, 0.43 s of its 28)."""
    fn = function(function_name)
    sl = _slice_of(case.x.shape, case.axis, flat, fn.reduces)
    wts = None if case.b is None else case.b.reshape(-1)[sl]
    again = fn.answer(
        Case(case.x.reshape(-1)[sl], -1, case.label, b=wts, return_sign=case.return_sign)
    )
    out = np.array([flat]) if fn.reduces else sl  # the answer's elements of that slice
    got, want = res.expected.reshape(-1)[out], again.expected.reshape(-1)
    bits = np.dtype(f"u{want.dtype.itemsize}")
    sign, sign_again = getattr(res, "sign", None), getattr(again, "sign", None)
    return bool(
        np.array_equal(got.view(bits), want.view(bits))
        and np.array_equal(
            res.residual.reshape(-1)[out], again.residual.reshape(-1), equal_nan=True
        )
        and np.array_equal(res.ulp_exp.reshape(-1)[out], again.ulp_exp.reshape(-1))
        and (sign is None) == (sign_again is None)
        and (
            sign is None
            or sign_again is None
            or np.array_equal(sign.reshape(-1)[out], sign_again.reshape(-1), equal_nan=True)
        )
    )


def score(
    spec: CellSpec,
    raw: Raw,
    cases: Sequence[Case],
    oracle: Oracle,
    budgets: Budgets,
    fresh: Oracle | None = None,
) -> dict[str, Any]:
    """Judge a worker's data against the oracle: the cell's record. The worst slice's
    answer is computed again (see _agrees); where it disagrees with ``oracle``'s (a
    cache entry changed on disk), ``fresh(case)`` recomputes that input's answer (and
    replaces the entry), the cell is scored again, and its notes say so."""
    t0 = time.perf_counter()
    rec = spec.base_record()
    rec["notes"] = "; ".join(raw.notes)
    rec["host"] = raw.host
    if spec.family.stream is not None:
        if raw.summary is None and raw.error is None:  # scored here (no supervisor)
            stream = spec.family.stream  # scored for the cell's function
            parts = [stream.score(i, e, spec.function) for i, e in enumerate(raw.outputs)]
            raw.summary, said = stream.summary(parts, spec.function)
            raw.findings += said
        return _measured(spec, raw, rec, budgets)
    if spec.family.suite:  # a peer's test suite: its own verdict, no oracle
        reasons = [raw.error] if raw.error else list(dict.fromkeys(raw.findings))
        rec.update(status="error" if raw.error else "fail" if reasons else "pass")
        rec.update(reason="; ".join(r for r in reasons if r), seconds=raw.seconds)
        return rec
    if not cases:
        rec.update(status="not run", reason=f"family {spec.family.name} has no {spec.dtype} inputs")
        rec["seconds"] = raw.seconds
        return rec
    findings = list(raw.findings)
    if raw.error is not None:  # nothing measured counts beside the error
        rec.update(status="error", n_inputs=len(raw.outputs), seconds=raw.seconds)
        rec["reason"] = "; ".join([raw.error, *dict.fromkeys(findings)])
        return rec
    errs: list[NDArray[np.float64]] = []
    cr = abs_eps = 0.0
    n_el = 0
    worst: tuple[float, int, int] = (-1.0, -1, -1)  # (ulp, case index, flat index)
    semantics: dict[str, str] = {}
    curve: list[tuple[float, float]] = []
    got_arrays: list[NDArray[Any] | None] = []
    results: list[reference.OracleResult | None] = []
    out_dtypes: set[str] = set()
    signs_checked = signs_wrong = 0
    if len(raw.outputs) > len(cases):  # a worker that breaks the rules: nothing counts
        rec.update(status="error", n_inputs=len(cases), seconds=raw.seconds)
        rec["reason"] = f"the worker sent {len(raw.outputs)} answers for {len(cases)} inputs"
        return rec
    budget = budgets.for_dtype(spec.dtype)
    failing: dict[str, None] = {}  # the labels of the inputs that failed, in order
    for ci, (case, enc) in enumerate(zip(cases, raw.outputs, strict=False)):
        got = None if enc is None else decode(enc)
        got_arrays.append(got)
        results.append(None)
        if got is None:
            failing[case.label] = None
            continue
        if (
            got.dtype != case.x.dtype
            and got.dtype.kind == "f"
            and (got.dtype.newbyteorder("=") == case.x.dtype.newbyteorder("="))
        ):  # byte order is no part of the dtype contract (docs/specification.md)
            got = got.astype(got.dtype.newbyteorder("="))
            got_arrays[-1] = got
        out_dtypes.add(str(got.dtype))
        want_shape = function(spec.function).out_shape(case.x.shape, case.axis)
        if got.shape != want_shape:
            findings.append(
                f"returned shape {got.shape} for {case.x.shape} input, expected "
                f"{want_shape} ({case.label})"
            )
            failing[case.label] = None
            continue
        if got.dtype != case.x.dtype:
            findings.append(f"returned {got.dtype} for {case.x.dtype} input")
            if got.dtype.kind not in "fV":  # integers, bools, complex: nothing to score
                failing[case.label] = None
                continue
            with np.errstate(all="ignore"):
                got = got.astype(np.float64).astype(case.x.dtype)  # scored after rounding
                got_arrays[-1] = got
        res = oracle(case, spec.function)
        results[-1] = res
        wrong = 0
        if case.return_sign:
            checked, wrong = _score_sign(case, ci, raw, res, want_shape, findings)
            signs_checked += checked
            signs_wrong += wrong
        err = res.ulp_error(got)
        case_semantics = res.semantics(got)
        mismatches = sum(label == "other" for _, label in case_semantics)
        if wrong or mismatches or (err.size and not np.max(err) <= budget):
            failing[case.label] = None
        errs.append(err.reshape(-1))
        n_el += err.size
        cr += float(res.correctly_rounded(got).sum())
        if err.size:
            abs_eps = max(abs_eps, float(np.max(res.abs_error_eps(got))))
            i = int(np.argmax(np.where(np.isnan(err), np.inf, err)))
            e = float(err.reshape(-1)[i])
            if e > worst[0]:
                worst = (e, ci, i)
        rec["special_mismatches"] += mismatches
        for case_name, label in case_semantics:
            semantics.setdefault(case_name, label)
            if label == "other":
                semantics[case_name] = "other"
        if case.params and err.ndim in (1, 2) and len(case.params) == err.shape[0]:
            # a row per parameter: its worst element (a reduction's one answer)
            curve += [(p, float(np.max(row))) for p, row in zip(case.params, err, strict=True)]
    if spec.family.annotate is not None:
        extra = spec.family.annotate(cases, got_arrays, results, spec.function)
        rec["notes"] = "; ".join([n for n in [rec["notes"], *extra] if n])
    rec["n_inputs"] = len(cases)
    rec["n_elements"] = n_el
    rec["out_dtype"] = ",".join(sorted(out_dtypes))
    rec["semantics"] = json.dumps(semantics, sort_keys=True)
    rec["curve"] = json.dumps(curve)
    counts: dict[str, Any] = {"failing_inputs": list(failing)[:_MAX_LABELS]}
    if any(c.return_sign for c in cases):
        counts.update(signs=signs_checked, wrong_signs=signs_wrong)
    rec["counts"] = json.dumps(counts)
    if errs:
        allerr = np.concatenate(errs)
        finite_or_inf = np.where(np.isnan(allerr), np.inf, allerr)
        bins = [*HIST_EDGES[:-1], 1e301]  # inf counted in the last bin
        hist, _ = np.histogram(np.minimum(finite_or_inf, 1e300), bins=bins)
        rec["hist"] = json.dumps(hist.tolist())
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
        res_w = results[worst[1]]
        assert res_w is not None
        if not _agrees(cases[worst[1]], worst[2], res_w, spec.function):
            if fresh is None:  # the second time: the oracle disagrees with itself
                raise RuntimeError(f"{spec.key}: the oracle's answers are not reproducible")
            bad = cases[worst[1]]
            good = fresh(bad, spec.function)

            def again(c: Case, f: str) -> reference.OracleResult:
                return good if c is bad else oracle(c, f)

            rec = score(spec, raw, cases, again, budgets, fresh)
            note = (
                f"the cached oracle answer for {bad.label} differed from the oracle's at "
                "its worst slice: recomputed"
            )
            rec["notes"] = "; ".join(n for n in [rec["notes"], note] if n)
            return rec
        _reproducer(rec, spec, cases[worst[1]], got_arrays[worst[1]], worst, res_w)
    reasons = list(dict.fromkeys(findings))
    if rec["special_mismatches"]:
        reasons.append(f"{rec['special_mismatches']} special slices outside the accepted answers")
    if rec["max_ulp"] is not None and not rec["max_ulp"] <= budget:
        reasons.append(f"{rec['max_ulp']:.3g} ULP > {budget:g}")
    if len(raw.outputs) < len(cases):  # a worker that sent less than it ran is a fault
        reasons.append(f"{len(cases) - len(raw.outputs)} of {len(cases)} inputs unanswered")
    rec["status"] = "fail" if reasons else "pass"
    rec["reason"] = "; ".join(reasons)
    rec["seconds"] = raw.seconds + (time.perf_counter() - t0)
    return rec


def _score_sign(
    case: Case, ci: int, raw: Raw, res: reference.OracleResult, shape: tuple[int, ...],
    findings: list[str],
) -> tuple[int, int]:  # fmt: skip
    """The sign a ``return_sign`` case returned, against the exact sign of each sum:
    (slices checked, slices with a wrong sign); each problem is a finding."""
    enc = raw.signs[ci] if ci < len(raw.signs) else None
    if enc is None:
        findings.append(f"no sign to score ({case.label})")
        return 0, 0
    got = decode(enc)
    if got.shape != shape:
        findings.append(f"returned a sign of shape {got.shape}, expected {shape} ({case.label})")
        return 0, 0
    if got.dtype != case.x.dtype:  # +1, 0, -1 or NaN in the input's format
        findings.append(f"returned a sign of dtype {got.dtype} for {case.x.dtype} input")
        if got.dtype.kind not in "fiuV":  # complex or bool: not a sign to score
            return 0, 0
    with np.errstate(invalid="ignore"):
        wrong = int(np.count_nonzero(~res.sign_matches(got)))  # type: ignore[attr-defined]
    if wrong:
        findings.append(f"a wrong sign in {wrong} of {got.size} slices ({case.label})")
    return int(got.size), wrong


def _measured(spec: CellSpec, raw: Raw, rec: dict[str, Any], budgets: Budgets) -> dict[str, Any]:
    """The record of a streamed cell, from its blocks' scores (``raw.summary``)."""
    findings = list(dict.fromkeys(raw.findings))
    rec["seconds"] = raw.seconds
    if raw.error is not None or raw.summary is None:
        rec["status"] = "error"
        rec["reason"] = "; ".join([raw.error or "the worker sent no measurement", *findings])
        return rec
    unknown = sorted(set(raw.summary) - set(COLUMNS))
    if unknown:
        raise ValueError(f"{spec.key}: the measurement has fields no record has: {unknown}")
    rec.update(raw.summary)
    reasons = findings
    if rec["special_mismatches"]:
        reasons.append(f"{rec['special_mismatches']} special slices outside the accepted answers")
    budget = budgets.for_dtype(spec.dtype)
    if rec["max_ulp"] is None or not rec["max_ulp"] <= budget:
        reasons.append(f"{rec['max_ulp']:.3g} ULP > {budget:g}" if rec["max_ulp"] is not None
                       else "no error was measured")  # fmt: skip
    counts = json.loads(rec["counts"] or "{}")
    if counts.get("unanswered_pairs"):  # what was not scored cannot pass
        reasons.append(f"{counts['unanswered_pairs']} of {counts['pairs']} pairs unanswered")
    rec["status"] = "fail" if reasons else "pass"
    rec["reason"] = "; ".join(reasons)
    return rec


def _reproducer(
    rec: dict[str, Any], spec: CellSpec, case: Case, got: Any, worst: tuple[float, int, int],
    res: reference.OracleResult,
) -> None:  # fmt: skip
    e, ci, flat = worst
    reduces = function(spec.function).reduces
    sl = _slice_of(case.x.shape, case.axis, flat, reduces)
    at = (
        f"slice {flat} ({case.label})"
        if reduces
        else f"element {flat} ({case.label}), position {int(np.flatnonzero(sl == flat)[0])}"
        " of its slice"
    )
    fn = f", {spec.function!r}" if spec.family.per_function else ""
    where = (
        f"conformance.family({spec.family.name!r}).cases({spec.dtype!r}, {spec.profile!r}{fn})"
        f"[{ci}]: {at}"
    )
    x = case.x.reshape(-1)[sl]
    rec["worst_where"] = where
    rec["worst_input"] = _hex(x) if x.size <= 64 else f"{x.size} values; see worst_where"
    if case.keywords:  # the weights and return_sign too: a JSON object
        wts = None if case.b is None else case.b.reshape(-1)[sl]
        rec["worst_input"] = json.dumps(
            {"a": json.loads(_hex(x)), "b": None if wts is None else json.loads(_hex(wts)),
             "return_sign": case.return_sign}
            if x.size <= 64
            else {"a": f"{x.size} values; see worst_where", "return_sign": case.return_sign}
        )  # fmt: skip
    exp = res.expected.reshape(-1)[flat]
    rec["worst_expected"] = float(np.asarray(exp, dtype=np.float64))
    rec["worst_got"] = float(np.asarray(got).reshape(-1)[flat].astype(np.float64))
    rec["worst_ulp"] = e
