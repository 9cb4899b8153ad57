"""log_softmax for any array-API namespace: one functional algorithm (no in-place
writes, no data-dependent control flow), so it runs eagerly, under ``jax.jit`` and
lazily in Dask.

With m the slice maximum, d = x - m, k the number of maximal entries and

    T = sum_{x_j < m} exp(d_j) + (k - 1),        out = d - log1p(T),

nothing saturates: the maximal entries never enter T as exp(0) = 1, so a T of 1e-300
is kept instead of vanishing in 1 + T. Narrow formats are computed in a wider one
(float64 where the device has it) and rounded once. In float64 three more things
matter, each measured by the oracle:

- d = x - m is rounded; its error |d| eps would go through exp. d is kept exactly as
  dh + dl (TwoSum) and exp(d) = exp(dh) (1 + dl).
- When every term is below the normal range, each exp(d_j) would be rounded on the
  subnormal grid before summing. Terms are then taken relative to the second largest
  entry x2, and T = exp(x2 - m) * S is scaled by a power of two in one rounding.
- out = dh + dl - L is summed with TwoSum so that its only rounding is the last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat as compat

__all__ = ["log_softmax_generic", "special_values"]


@dataclass(frozen=True)
class _Consts:
    """Per-format constants of the precise core."""

    ln2_hi: float  # Cody-Waite: k * ln2_hi exact for the k that occur
    ln2_lo: float
    scale_gap: float  # below this gap to x2 the terms would be subnormal
    prescale: int  # 2**-prescale then 2**(q + prescale): exact, then one rounding
    split_max_n: int  # the two-part sum is exact-ish while n**2 << 2**precision


_PRECISE = {
    "float64": _Consts(
        6.93147180369123816490e-01, 1.90821492927058770002e-10, -673.0, 512, 1 << 20
    ),
    "float32": _Consts(0.693145751953125, 1.428606765330187e-06, -83.0, 64, 256),
}


def _const(xp: Any, like: Any, value: float) -> Any:
    """A 0-d constant in like's dtype on like's device (strict namespaces insist)."""
    return xp.asarray(value, dtype=like.dtype, device=compat.device(like))


def _two_sum(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """a + b == hi + lo exactly (finite inputs)."""
    hi = a + b
    bb = hi - a
    return hi, (a - (hi - bb)) + (b - bb)


def _two_diff(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """a - b == hi + lo exactly, for finite a <= b (b: the slice maximum).

    hi is RN(a - b) and lo the exact remainder. Where a - b overflows (a far below a
    positive b) hi is RN(a - b) from the halves, -inf beyond the range, and lo is 0;
    no operation overflows or makes a NaN on the way.
    """
    fmax = float(xp.finfo(a.dtype).max)
    far = a < (xp.maximum(b, xp.zeros_like(b)) - fmax)  # a - b < -max: would overflow
    a_near = xp.where(far, b, a)
    hi = a_near - b
    bb = hi - a_near
    lo = (a_near - (hi - bb)) + (-b - bb)
    half = a * 0.5 - b * 0.5  # RN((a - b) / 2): never overflows
    top = math.ldexp(1.0, math.frexp(fmax)[1] - 1)  # RN(a - b) overflows iff |half| >= top
    huge = xp.where(
        half <= -top, _const(xp, a, -math.inf), 2 * xp.maximum(half, _const(xp, a, -fmax / 2))
    )
    return xp.where(far, huge, hi), xp.where(far, xp.zeros_like(lo), lo)


def _accurate_sum(xp: Any, e: Any, axis: Any, split_max_n: int) -> tuple[Any, Any]:
    """Sum of non-negative terms over ``axis`` as hi + lo.

    For slices up to ``split_max_n`` terms, each term is cut at a per-slice boundary
    sigma (a power of two above 2 n max): the high parts are multiples of ulp(sigma)
    and sum exactly, and the low parts are below ulp(sigma) / 2, so their plain sum is
    needed only to a few bits. The result is then good to ~2**-100 relative and
    independent of the reduction order (NumPy pairwise, XLA trees, Dask chunks alike).
    """
    n = math.prod(e.shape[a] for a in axis) if axis else 1
    if n > split_max_n:
        total = xp.sum(e, axis=axis, keepdims=True)
        return total, xp.zeros_like(total)
    top = xp.max(e, axis=axis, keepdims=True)
    safe_top = xp.where(top > 0, top, xp.ones_like(top))
    sigma = xp.pow(_const(xp, e, 2.0), xp.ceil(xp.log2(safe_top * (2 * n))))
    hi = (sigma + e) - sigma
    lo = e - hi
    return _two_sum(xp, xp.sum(hi, axis=axis, keepdims=True), xp.sum(lo, axis=axis, keepdims=True))


def special_values(xp: Any, x: Any, out: Any, axis: Any, n: int) -> Any:
    """Apply DESIGN.md's special-value rules to ``out`` (same dtype as x)."""
    nan = _const(xp, out, math.nan)
    ninf = _const(xp, out, -math.inf)
    zero = xp.zeros_like(out)
    isnan = xp.isnan(x)
    if n == 1:
        return xp.where(isnan, nan, zero)
    pinf = x == math.inf
    n_pinf = xp.sum(xp.astype(pinf, xp.int32), axis=axis, keepdims=True)
    has_nan = xp.any(isnan, axis=axis, keepdims=True)
    all_ninf = xp.all(x == -math.inf, axis=axis, keepdims=True)
    out = xp.where(n_pinf == 1, xp.where(pinf, zero, ninf), out)
    out = xp.where(n_pinf >= 2, xp.where(pinf, nan, ninf), out)
    return xp.where(has_nan | all_ninf, nan, out)


def log_softmax_generic(
    xp: Any,
    x: Any,
    axis: Any,
    n: int,
    wide: Any,
    cast: Callable[[Any, Any], Any] | None = None,
    scale2: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """log_softmax of a real floating array ``x`` over ``axis`` (a tuple), computed in
    dtype ``wide`` and returned in x's dtype. ``n`` is the number of elements per
    slice (>= 1).

    Two hooks let a namespace whose arithmetic flushes subnormal results to zero (XLA
    on CPU) build them another way: ``cast(values, dtype)`` rounds the wide result to
    x's dtype (default ``xp.astype``) and ``scale2(v, e)`` is ``v * 2**e`` rounded
    once (default: that product), where the result may be subnormal."""
    out_dtype = x.dtype
    # The maximum, the comparisons and the count of maximal entries are exact in the
    # input's own format, and cheaper there (XLA's float64 reductions on CPU are
    # several times slower than its float32 ones); only the sum of exponentials
    # needs the wider format.
    finite = xp.isfinite(x)
    m_in = xp.max(xp.where(finite, x, _const(xp, x, -math.inf)), axis=axis, keepdims=True)
    m_in = xp.where(xp.isfinite(m_in), m_in, xp.zeros_like(m_in))
    # Non-finite entries are replaced before any arithmetic (no inf - inf, no NaN
    # made here); -inf entries are put back at the end, the other specials decide
    # their whole slice in special_values.
    below = xp.where(finite, x, m_in) < m_in
    count = xp.sum(xp.astype((x == m_in) & finite, xp.int32), axis=axis, keepdims=True)
    xw = xp.astype(x, wide)
    m = xp.astype(m_in, wide)
    xs = xp.where(finite, xw, m)
    ninf = _const(xp, xw, -math.inf)
    k = xp.astype(xp.maximum(count, xp.ones_like(count)), wide)  # all -inf: overridden
    if wide == out_dtype:  # no wider format to hide in: the precise core
        name = "float64" if wide == xp.float64 else "float32"
        out = _precise_core(xp, xs, m, below, k, axis, _PRECISE[name], scale2)
    else:
        if wide == xp.float64 or "bfloat16" not in str(out_dtype):
            d = xs - m  # the wider range holds any difference of narrow values
        else:
            d, _ = _two_diff(xp, xs, m)  # bfloat16 in float32: same range, may overflow
        e = xp.where(below, xp.exp(d), xp.zeros_like(d))
        T = xp.sum(e, axis=axis, keepdims=True) + (k - 1)
        out = d - xp.log1p(T)
    out = xp.where(x == -math.inf, ninf, out)
    if wide != out_dtype:
        # Values at or beyond the narrow format's overflow threshold (max + ulp/2)
        # round to -inf; saying so before the cast keeps it from overflowing.
        out = xp.where(out <= -_overflow_threshold(out_dtype), ninf, out)
    narrow = xp.astype(out, out_dtype) if cast is None else cast(out, out_dtype)
    return special_values(xp, x, narrow, axis, n)


# (precision, emax) of the formats computed in a wider one
_NARROW = {"float16": (11, 15), "bfloat16": (8, 127), "float32": (24, 127)}


def _overflow_threshold(dtype: Any) -> float:
    """max + ulp(max)/2 = (2 - 2**-p) * 2**emax: the smallest magnitude that rounds
    to infinity."""
    text = str(dtype)
    name = "bfloat16" if "bfloat16" in text else "float16" if "float16" in text else "float32"
    p, emax = _NARROW[name]
    return math.ldexp(2.0 - math.ldexp(1.0, -p), emax)


def _precise_core(
    xp: Any,
    x: Any,
    m: Any,
    below: Any,
    k: Any,
    axis: Any,
    c: _Consts,
    scale2: Callable[[Any, Any], Any] | None,
) -> Any:
    ninf = _const(xp, x, -math.inf)
    # Reference point for the terms: the maximum, or the second largest entry where
    # every term would be subnormal (then k == 1).
    x2 = xp.max(xp.where(below, x, ninf), axis=axis, keepdims=True)
    g2h, g2l = _two_diff(xp, x2, m)
    # x2 == -inf: a lone finite entry; k > 1: T >= 1 from the ties, nothing to scale
    scaled = (g2h < c.scale_gap) & (x2 > -math.inf) & (k == 1)
    ref = xp.where(scaled, x2, m)
    dh, dl = _two_diff(xp, x, ref)
    e = xp.exp(xp.minimum(dh, xp.zeros_like(dh)))  # > 0 only at the masked-out maximum
    e = xp.where(below, e + e * dl, xp.zeros_like(e))
    S_hi, S_lo = _accurate_sum(xp, e, axis, c.split_max_n)
    # T = S * exp(x2 - m) on scaled slices: exp(g2h) = 2**q * exp(r), with the power
    # of two applied last (two exact steps, one rounding) so a subnormal T is rounded
    # once. An overflowed gap (-inf) is clipped and still gives T == 0.
    g2c = xp.clip(g2h, -8.0 * c.prescale, 0.0)
    q = xp.round(g2c / c.ln2_hi)
    r = (g2c - q * c.ln2_hi) - q * c.ln2_lo
    two = _const(xp, x, 2.0)
    big = xp.exp(r) * (S_hi + S_lo) * (1.0 + g2l) * xp.pow(two, _const(xp, x, -c.prescale))
    e2 = xp.where(scaled, q + c.prescale, xp.zeros_like(q))
    # -T, rounded once: the output of the maximal entry on scaled slices
    neg_T = -big * xp.pow(two, e2) if scale2 is None else scale2(-big, e2)
    T_scaled = -neg_T
    # T = (k - 1) + S_hi + S_lo as a double-word, then L = log1p(T_hi) + T_lo/(1 + T).
    T_hi, T_lo = _two_sum(xp, k - 1, S_hi)
    T_lo = T_lo + S_lo
    T_hi = xp.where(scaled, T_scaled, T_hi)
    T_lo = xp.where(scaled, xp.zeros_like(T_lo), T_lo)
    L = xp.log1p(T_hi) + T_lo / (1.0 + T_hi)
    # out = (ah + al) - L with one rounding: TwoSum(ah, -L) then the low parts.
    ah, al = _two_diff(xp, x, m)
    fin = xp.isfinite(ah)
    a0 = xp.where(fin, ah, xp.zeros_like(ah))
    s, t = _two_sum(xp, a0, -L)
    out = xp.where(fin, s + (t + al), ah)
    # log1p(T) = T there; said directly, so a flushed subnormal T cannot lose it
    return xp.where(scaled & (x == m), neg_T, out)
