"""Scoring a cell: the data its execution sent back (``execution._cell.Raw``) judged
against the oracle, in the process that supervises the workers (no candidate code runs
here). The result is the cell's record, a row of the results table: a special slice
outside the accepted answers, an error above the budget, or any finding of the
execution is ``fail``; an execution that stopped on an error is ``error``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

import reference

from ..backends._invoke import decode
from ..execution._cell import COLUMNS, CellSpec, Raw, execute, failed, load_error
from ..functions._families import Case
from ..functions._functions import function
from ._budgets import Budgets
from ._oracle_cache import OracleCache

__all__ = ["HIST_EDGES", "Oracle", "run_cell", "score"]

# the labels of a cell's failing inputs kept in its record (``counts``), for the gate
_MAX_LABELS = 50
# ULP histogram bins (for the report's plots): [0, 2^-8), then powers of two up to
# 2^64, then [2^64, inf]
HIST_EDGES = [0.0] + [2.0**k for k in range(-8, 65)] + [float("inf")]


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
