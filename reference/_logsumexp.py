"""The oracle for logsumexp: log|sum_i b_i exp(a_i)| and its sign, correctly rounded.

Without weights the result is m + L, with m the slice's maximum and L the engines'
certified log-normaliser: the same interval log_softmax is built on, shifted by an
exact float instead of subtracted from each entry.

With weights the sum can cancel. Entries with equal a are merged first, their weights
added exactly; a slice whose merged weights are all zero sums to exactly 0. Otherwise
the sum is nonzero and, but for one merged entry with weight +-1 (whose result is a
itself), its log is transcendental (Lindemann-Weierstrass), so Ziv's loop ends: the sum
is enclosed at a working precision, relative to its largest term, and the precision
doubles until the sum's sign is certain and the rounding of m + log|S| is decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._engines import Engine, get_engine, prepare_terms_block
from ._formats import Dyadic, Format, dyadic_add, dyadic_from_float, format_of
from ._interval import from_mpf, round_interval, shift_interval, to_mpf
from ._oracle import FIRST_GUARD_BITS, MAX_PREC, as_input, normalize_axis, to_rows
from ._result import OracleResult

__all__ = ["LogSumExpResult", "evaluate_logsumexp"]

# mpmath's exp and log at wp bits are taken within 2**-(wp - 10) relative, as for softmax
_SLACK_BITS = 10


@dataclass
class LogSumExpResult(OracleResult):
    """logsumexp's answer: ``expected`` holds log|S| (NaN where S < 0 and the sign was
    not asked for) and ``sign`` the sign of S (+1, 0, -1, NaN) in the same format."""

    sign: NDArray[Any] | None = None

    def sign_matches(self, computed_sign: Any) -> NDArray[np.bool_]:
        """Elements whose computed sign is the exact sign (NaN where NaN)."""
        if self.sign is None:
            raise ValueError("this result was evaluated without return_sign")
        got = np.asarray(computed_sign, dtype=np.float64)
        want = self.sign.astype(np.float64)
        if got.shape != want.shape:
            raise ValueError(f"computed sign has shape {got.shape}, expected {want.shape}")
        return np.asarray((got == want) | (np.isnan(got) & np.isnan(want)), dtype=np.bool_)


# One slice's answer: (value, residual, ulp_exp, sign)
_Row = tuple[float, float, int, float]


def _exact(fmt: Format, v: Dyadic, sign: float) -> _Row:
    value, q = fmt.round_dyadic(*v)
    res = (
        math.nan
        if math.isinf(value)
        else round_interval(fmt, v, v)[2]  # exact: a zero-width interval
    )
    return value, res, q, sign


def _plain(X: NDArray[np.float64], r: int, fmt: Format, eng: Engine) -> _Row:
    """One slice without weights: no NaN, no +inf, at least one finite entry."""
    row = X[r]
    fin = row[np.isfinite(row)]
    m = float(fin.max())
    if fin.size == 1:
        return _exact(fmt, dyadic_from_float(m) if m else (0, 0), 1.0)  # log(exp(a)) = a
    mm = dyadic_from_float(m)
    prec = fmt.precision + FIRST_GUARD_BITS
    while prec <= MAX_PREC:
        lo, hi = eng.log_normaliser_terms(prepare_terms_block(row[None, :], prec)[0])
        ok, v, res, q = round_interval(fmt, *shift_interval(fmt, mm, lo, hi))
        if ok:
            return v, res, q, 1.0
        prec *= 2
    raise RuntimeError(f"rounding undecided at {MAX_PREC} bits for slice {r}")


def _merged(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[list[float], list[Dyadic]]:
    """Distinct values of a with their weights summed exactly; zero sums dropped."""
    sums: dict[float, Dyadic] = {}
    for ai, bi in zip(a.tolist(), b.tolist(), strict=True):
        key = ai + 0.0  # -0.0 and 0.0 are one value
        sums[key] = dyadic_add(sums.get(key, (0, 0)), dyadic_from_float(bi))
    kept = [(k, c) for k, c in sums.items() if c[0]]
    return [k for k, _ in kept], [c for _, c in kept]


def _sum_interval(a: list[float], c: list[Dyadic], wp: int) -> tuple[Any, Any]:
    """mpf bounds on sum_g c_g exp(a_g - a_0) (a_0 = max a) at about wp bits below its
    largest term; terms under 2**-(wp + 8) of it are dropped into the bound."""
    import mpmath
    from mpmath.libmp import libmpf as lm

    rel = lm.from_man_exp(1, -(wp - _SLACK_BITS - 1))
    top = max(a)
    cut = -0.6932 * (wp + 8)  # exp(d) < 2**-(wp + 8) below it (0.6932 > ln 2)
    t0 = dyadic_from_float(top)
    s = lm.fzero
    err = lm.fzero
    with mpmath.workprec(wp):
        for ag, cg in zip(a, c, strict=True):
            mag = to_mpf((abs(cg[0]), cg[1]))
            with np.errstate(over="ignore"):
                dropped = ag - top < cut * (1 + 2.0**-40)
            if dropped:
                err = lm.mpf_add(err, lm.mpf_mul(mag, lm.from_man_exp(1, -(wp + 8))))
                continue
            d = dyadic_add(dyadic_from_float(ag), (-t0[0], t0[1]))
            e = mpmath.exp(mpmath.mp.make_mpf(to_mpf(d)))._mpf_
            t = lm.mpf_mul(to_mpf(cg), e, wp, "n")
            s = lm.mpf_add(s, t)
            err = lm.mpf_add(err, lm.mpf_mul(lm.mpf_abs(t), rel, wp, "u"))
    return lm.mpf_sub(s, err), lm.mpf_add(s, err)


def _log_abs(
    vals: list[float], coef: list[Dyadic], m: float, wp: int
) -> tuple[Dyadic, Dyadic, float] | None:
    """Bounds on log|S'| - with S' = sum_g c_g exp(a_g - m) = c_0 + R, c_0 the weight
    at the maximum m - and S's sign; None while the sign is not yet certain.

    R is enclosed relative to its own largest term, so a remainder far below 1 keeps
    its relative accuracy, and log|S'| = log|c_0| + log1p(R / c_0) keeps it too (with
    |c_0| = 1, log|c_0| is exactly 0): m + log|S'| is then decided next to m however
    small R is. A remainder of at least half of |c_0| goes through log|c_0 + R|.
    """
    import mpmath
    from mpmath.libmp import libelefun as le
    from mpmath.libmp import libmpf as lm

    rel = lm.from_man_exp(1, -(wp - _SLACK_BITS - 1))
    i0 = vals.index(m)
    c0 = to_mpf(coef[i0])
    rest_v, rest_c = vals[:i0] + vals[i0 + 1 :], coef[:i0] + coef[i0 + 1 :]
    if rest_v:
        r_lo, r_hi = _sum_interval(rest_v, rest_c, wp)  # relative to exp(a_2 - m)
        mm = dyadic_from_float(m)
        d2 = dyadic_add(dyadic_from_float(max(rest_v)), (-mm[0], mm[1]))
        with mpmath.workprec(wp):
            e2 = mpmath.exp(mpmath.mp.make_mpf(to_mpf(d2)))._mpf_
        e2_lo = lm.mpf_mul(e2, lm.mpf_sub(lm.fone, rel))
        e2_hi = lm.mpf_mul(e2, lm.mpf_add(lm.fone, rel))
        # [r_lo, r_hi] * [e2_lo, e2_hi], e2 > 0
        r_lo = lm.mpf_mul(r_lo, e2_hi if lm.mpf_sign(r_lo) < 0 else e2_lo)
        r_hi = lm.mpf_mul(r_hi, e2_lo if lm.mpf_sign(r_hi) < 0 else e2_hi)
    else:
        r_lo = r_hi = lm.fzero
    s_lo, s_hi = lm.mpf_add(c0, r_lo, wp, "d"), lm.mpf_add(c0, r_hi, wp, "u")
    if lm.mpf_sign(s_lo) != lm.mpf_sign(s_hi) or lm.mpf_sign(s_lo) == 0:
        return None
    sign = lm.mpf_sign(s_lo)
    half = lm.mpf_shift(lm.mpf_abs(c0), -1)
    with mpmath.workprec(wp):
        if lm.mpf_cmp(lm.mpf_abs(r_lo), half) < 0 and lm.mpf_cmp(lm.mpf_abs(r_hi), half) < 0:
            # log|c0| + log1p(R / c0), log1p increasing; R / c0 reverses for c0 < 0
            ends = (r_lo, r_hi) if lm.mpf_sign(c0) > 0 else (r_hi, r_lo)
            u = [lm.mpf_div(ends[0], c0, wp, "d"), lm.mpf_div(ends[1], c0, wp, "u")]
            g = [mpmath.log1p(mpmath.mp.make_mpf(v))._mpf_ for v in u]
            base = le.mpf_log(lm.mpf_abs(c0), wp, "n")  # exactly 0 for |c0| = 1
        else:
            mags = [lm.mpf_abs(s_lo), lm.mpf_abs(s_hi)]
            if lm.mpf_cmp(mags[0], mags[1]) > 0:  # a negative sum
                mags.reverse()
            g = [le.mpf_log(v, wp, "n") for v in mags]
            base = lm.fzero
    pad = lm.mpf_mul(lm.mpf_abs(base), rel)
    base_lo, base_hi = lm.mpf_sub(base, pad), lm.mpf_add(base, pad)
    pads = [lm.mpf_mul(lm.mpf_abs(v), rel) for v in g]
    lo, hi = lm.mpf_sub(g[0], pads[0]), lm.mpf_add(g[1], pads[1])
    if base != lm.fzero:  # rounded outward: log|c0| + exp(-1e30) exactly would not fit
        lo, hi = lm.mpf_add(base_lo, lo, wp, "d"), lm.mpf_add(base_hi, hi, wp, "u")
    return from_mpf(lo), from_mpf(hi), float(sign)


def _weighted(a: NDArray[np.float64], b: NDArray[np.float64], fmt: Format, r: int) -> _Row:
    """One slice of finite a and finite nonzero b (at least one entry)."""
    vals, coef = _merged(a, b)
    if not vals:
        return -math.inf, math.nan, fmt.qmin, 0.0  # the sum is exactly zero
    if len(vals) == 1 and abs(coef[0][0]) << max(coef[0][1], 0) == 1 << max(-coef[0][1], 0):
        # c * exp(a) with |c| = 1: log|S| = a exactly
        return _exact(fmt, dyadic_from_float(vals[0]), math.copysign(1.0, coef[0][0]))
    m = max(vals)
    mm = dyadic_from_float(m)
    wp = fmt.precision + FIRST_GUARD_BITS + 30
    while wp <= MAX_PREC:
        got = _log_abs(vals, coef, m, wp)
        if got is not None:
            lo, hi, sign = got
            ok, v, res, q = round_interval(fmt, *shift_interval(fmt, mm, lo, hi))
            if ok:
                return v, res, q, sign
        wp *= 2
    raise RuntimeError(f"rounding undecided at {MAX_PREC} bits for slice {r}")


def _special_row(a: NDArray[np.float64], b: NDArray[np.float64] | None) -> _Row | None:
    """The answer of a slice that NaN, infinities or an empty sum decide; None for a
    slice with a finite nonzero sum to compute (docs/specification.md, logsumexp)."""
    nan = (math.nan, math.nan, 0, math.nan)
    if b is None:
        if np.isnan(a).any():
            return nan
        if (a == np.inf).any():
            return math.inf, math.nan, 0, 1.0
        if not np.isfinite(a).any():
            return -math.inf, math.nan, 0, 0.0  # an empty sum, or every term exp(-inf)
        return None
    used = b != 0  # a weight of zero removes its term, whatever a is (NaN b is used)
    a, b = a[used], b[used]
    with np.errstate(invalid="ignore"):
        if np.isnan(a).any() or np.isnan(b).any() or (np.isinf(b) & (a == -np.inf)).any():
            return nan  # inf * exp(-inf) is 0 * inf
        infinite = (a == np.inf) | np.isinf(b)
    if infinite.any():
        signs = set(np.sign(b[infinite]).tolist())
        if len(signs) > 1:
            return nan  # inf - inf
        return math.inf, math.nan, 0, signs.pop()
    if not (a > -np.inf).any():
        return -math.inf, math.nan, 0, 0.0
    return None


def evaluate_logsumexp(
    a: Any,
    axis: Any = None,
    b: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    fmt: Any = None,
    engine: str | Engine | None = None,
) -> LogSumExpResult:
    """Correctly rounded ``logsumexp(a, axis, b, keepdims, return_sign)``, ready to
    score. The format is a's, or a's and b's common one (as NumPy promotes them),
    unless ``fmt`` is given. Without ``return_sign`` a negative sum gives NaN."""
    arr = as_input(a)
    wts = None
    if b is not None:
        wts = as_input(b)
        try:  # together, as SciPy broadcasts them; axis counts the broadcast axes
            arr, wts = np.broadcast_arrays(arr, wts)
        except ValueError:
            raise ValueError(
                f"a of shape {arr.shape} and b of shape {wts.shape} do not broadcast together"
            ) from None
    if fmt is None:
        fmt = format_of(arr.dtype if wts is None else np.result_type(arr.dtype, wts.dtype))
    else:
        fmt = format_of(fmt)
    eng = get_engine(engine)
    axes = normalize_axis(axis, arr.ndim)
    kept = [arr.shape[i] for i in range(arr.ndim) if i not in axes]
    rows = math.prod(kept)
    if arr.size:
        X, _ = to_rows(arr, axes)
        W = None if wts is None else to_rows(wts, axes)[0]
    else:  # no slices, or empty ones
        X = np.zeros((rows, 0))
        W = None if wts is None else X
    value = np.full(rows, np.nan)
    residual = np.full(rows, np.nan)
    ulp_exp = np.full(rows, fmt.qmin, dtype=np.int64)
    sign = np.full(rows, np.nan)
    if X.shape[1] == 0:  # empty slices: log of an empty sum
        value[:], sign[:] = -np.inf, 0.0
    for r in range(rows if X.shape[1] else 0):
        row_b = None if W is None else W[r]
        got = _special_row(X[r], row_b)
        if got is None:
            if row_b is None:
                got = _plain(X, r, fmt, eng)
            else:
                live = (row_b != 0) & (X[r] > -np.inf)
                got = _weighted(X[r][live], row_b[live], fmt, r)
        value[r], residual[r], ulp_exp[r], sign[r] = got
        if math.isnan(got[0]) or math.isinf(got[0]):
            residual[r], ulp_exp[r] = math.nan, fmt.qmin
        if not return_sign and got[3] < 0:
            value[r], residual[r], ulp_exp[r] = math.nan, math.nan, fmt.qmin
    out_shape = tuple(
        1 if i in axes else arr.shape[i] for i in range(arr.ndim) if keepdims or i not in axes
    )
    return LogSumExpResult(
        fmt=fmt,
        axis=axes,
        expected=value.reshape(out_shape).astype(fmt.dtype),
        residual=residual.reshape(out_shape),
        ulp_exp=ulp_exp.reshape(out_shape).astype(np.int16),
        sign=sign.reshape(out_shape).astype(fmt.dtype) if return_sign else None,
    )
