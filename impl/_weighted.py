"""logsumexp with weights b, on the host in NumPy: S = sum_i b_i exp(a_i) per slice,
whose terms may cancel.

Per slice, with m the largest a among the entries of nonzero weight and the weights
scaled by 2^-eb (eb: the exponent of the largest |b|, so no product overflows):

- each term b_i exp(a_i - m) as a double-word (``exp_parts`` of the exact
  difference, 2^-86 relative, times b_i by an exact product), summed by a tree of
  TwoSums: S is known within E = (2^-84 + n 2^-103) A + n 2^-1072, A the sum of the
  terms' magnitudes (terms below the normal range lose at most 2^-1074 each);
- where |S| > 2^8 E the sign is S's and log|S| = m + (e + eb) ln2 + log1p(s - 1)
  with |S| = s 2^e, s in [1, 2) (the subtraction exact), log1p in double-words
  (2^-75 relative): within E/|S| (1 + 2^-7) + 2^-74 log1p + 2^-100 |result|;
- the rounding test of log_softmax (``rounding_open``) on that double-word, and the
  slices it leaves open, or whose cancellation leaves |S| within 2^8 E, decided in
  exact arithmetic (impl/_exact.py).

Special values follow docs/specification.md's table (a zero weight removes its
entry; NaN; 0 x inf; infinite terms of one sign or both; no entry left).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._dfloat import exp_parts, fast_two_sum, fmt, log1p_dw, pow2, sum_dw, two_prod, two_sum
from ._generic import _format_name, _overflow_threshold, _two_diff, rounding_open, take_neighbour

__all__ = ["weighted_rows"]

# ln 2 in two parts, the first with 40 significant bits (e ln2_hi exact for |e| < 2^13)
_LN2_HI = math.ldexp(math.floor(math.ldexp(math.log(2.0), 40)), -40)
_err_scale = 1.0  # 1 but in the tests that weaken the bound or force the fix


def _ln2_lo() -> float:
    """ln 2 - _LN2_HI, rounded once"""
    from decimal import Context, Decimal

    c = Context(prec=60)
    return float(c.subtract(c.ln(Decimal(2)), Decimal(_LN2_HI)))


_LN2_LO = _ln2_lo()


def weighted_rows(a: Any, b: Any, out_dtype: Any) -> tuple[Any, Any]:
    """logsumexp over the rows of 2-D ``a`` with weights ``b`` (same shape; NumPy
    arrays of any real dtype), rounded to ``out_dtype``: (values, signs), one per
    row, in out_dtype."""
    from ._exact import logsumexp_slice
    from ._numpy import round_narrow

    A = np.asarray(a, dtype=np.float64)
    B = np.asarray(b, dtype=np.float64)
    rows = A.shape[0]
    active = B != 0
    nan = np.any(active & (np.isnan(A) | np.isnan(B)), axis=1)
    nan |= np.any(active & (A == -np.inf) & np.isinf(B), axis=1)
    inf_term = active & ((A == np.inf) | (np.isinf(B) & (A > -np.inf)))
    pos_inf = np.any(inf_term & (B > 0), axis=1)
    neg_inf = np.any(inf_term & (B < 0), axis=1)
    nan |= pos_inf & neg_inf
    use = active & np.isfinite(A) & np.isfinite(B)
    value = np.zeros(rows)
    sign = np.ones(rows)
    none = ~np.any(use, axis=1)
    open_ = np.zeros(rows, dtype=bool)
    name = _format_name(np.dtype(out_dtype))
    proper = ~(nan | pos_inf | neg_inf | none)
    if proper.any():
        with np.errstate(all="ignore"):
            v, s, o = _proper_rows(A[proper], B[proper], use[proper], np.dtype(out_dtype))
        value[proper], sign[proper], open_[proper] = v, s, o
    value[none] = -np.inf
    sign[none] = 0.0
    value[pos_inf | neg_inf] = np.inf
    sign[pos_inf] = 1.0
    sign[neg_inf] = -1.0
    value[nan] = np.nan
    sign[nan] = np.nan
    with np.errstate(all="ignore"):
        out = round_narrow(value, out_dtype)
    for r in np.flatnonzero(open_):
        av = [float(v) for v in A[r]]
        bv = [float(v) for v in B[r]]
        val, sg = logsumexp_slice(av, bv, name)
        out[r] = val
        sign[r] = sg
    return out, sign.astype(out_dtype)


def _proper_rows(A: Any, B: Any, use: Any, out_dtype: Any) -> tuple[Any, Any, Any]:
    """(value in float64 rounded once to out_dtype's values, sign, open) for rows with
    at least one finite term and no special one."""
    f = fmt("float64")
    n = A.shape[1]
    zero = np.zeros_like(A)
    Bu = np.where(use, B, 0.0)
    m = np.max(np.where(use, A, -np.inf), axis=1, keepdims=True)
    # the weights scaled by 2^-eb, eb the exponent of the largest |b| (exact but for
    # weights pushed below the normal range: 2^-1074 each at most, in the bound)
    eb = np.frexp(np.max(np.abs(Bu), axis=1, keepdims=True))[1]
    Bs = np.ldexp(Bu, -eb)  # (not a table's 2^-eb: that ends at 2^1023)
    eb = eb.astype(np.float64)
    dh, dl = _two_diff(np, np.where(use, A, m), m)
    lim = -f.exp_domain
    inside = use & (dh >= lim)
    dc = np.minimum(np.where(inside, dh, lim), 0.0)
    eh, el, q = exp_parts(np, dc, np.where(inside, dl, zero), f)
    sc = pow2(np, q, eh, f)
    eh, el = np.where(inside, eh * sc, zero), np.where(inside, el * sc, zero)
    th, tl = two_prod(np, Bs, eh, f)
    tl = tl + Bs * el
    S_hi, S_lo = sum_dw(np, th, tl, (1,))
    S_hi, S_lo = fast_two_sum(S_hi, S_lo)
    mag = np.sum(np.abs(th), axis=1, keepdims=True)
    # (terms below the normal range, outside exp_parts' domain included, are off by
    # 2^-1074 at most: |Bs| <= 1)
    E = (2.0**-84 + n * 2.0**-103) * mag + n * 2.0**-1072
    sure = np.abs(S_hi) > 256.0 * E
    sign = np.where(S_hi > 0, 1.0, -1.0)
    # |S| = s 2^e, s in [1, 2): the scaling exact (S normal: |S| > 256 E > 2^-1064)
    Sh, Sl = np.abs(S_hi), np.where(S_hi < 0, -S_lo, S_lo)
    e = np.frexp(np.where(sure, Sh, 1.0))[1].astype(np.float64) - 1.0
    p2 = pow2(np, -e, Sh, f)
    sh, sl = Sh * p2, Sl * p2
    T_hi, t = two_sum(np, sh, -1.0)  # exact: sh in [1, 2)
    T_hi, T_lo = fast_two_sum(T_hi, t + sl)
    ok = sure & (T_hi >= 0)
    L1h, L1l = log1p_dw(np, np.where(ok, T_hi, 0.0), np.where(ok, T_lo, 0.0), f)
    E2 = e + eb
    # y = m + E2 ln2 + L1, as a double-word
    kh = E2 * _LN2_HI  # exact: |E2| < 2^12
    kl = E2 * _LN2_LO
    s1, t1 = two_sum(np, m, kh)
    s2, t2 = two_sum(np, s1, L1h)
    hi, lo = fast_two_sum(s2, t1 + t2 + (kl + L1l))
    rel_S = E / np.where(sure, Sh, 1.0)
    # (kl and kl + L1l each rounded once: 2^-52 of them)
    err = rel_S * (1 + 2.0**-7) + 2.0**-74 * np.abs(L1h) + 2.0**-100 * (np.abs(hi) + np.abs(kh))
    err = err + 2.0**-52 * (np.abs(kl) + np.abs(L1l))
    err = err * _err_scale
    out = hi + lo
    dtype = np.dtype(out_dtype)
    from ._numpy import round_narrow

    with np.errstate(all="ignore"):
        narrow = round_narrow(out, dtype)
    thr = float(np.finfo(np.float64).max) if dtype == np.float64 else _overflow_threshold(dtype)
    opened, take = rounding_open(np, hi, lo, out, narrow, err, dtype, thr)
    narrow = take_neighbour(np, take, out, narrow, round_narrow)
    opened = (opened & ~take) | ~ok
    return narrow[:, 0].astype(np.float64), sign[:, 0], opened[:, 0]
