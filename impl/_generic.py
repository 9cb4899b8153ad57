"""log_softmax for any array-API namespace: one functional algorithm (no in-place
writes, no data-dependent control flow), so it runs eagerly, under ``jax.jit`` and
lazily in Dask.

With m the slice maximum, d = x - m, k the number of maximal entries and

    T = sum_{x_j < m} exp(d_j) + (k - 1),        out = d - log1p(T),

nothing saturates: the maximal entries never enter T as exp(0) = 1, so a T of 1e-300
is kept instead of vanishing in 1 + T. Narrow formats are computed in a wider one
(float64 where the device has it) as a double-word with a bound on its error,
rounded once, and tested against the narrow format's rounding boundaries; a caller's
``fix`` decides the outputs the test leaves open (impl/_host.py: the row kernels on
the host), which makes them correctly rounded. Where there is no wider format
(float64; float32 on a device without float64) the precise core below does the work
in double-words (``_dfloat``), and four things matter, each measured by the oracle:

- d = x - m is rounded; its error |d| eps would go through exp. d is kept exactly as
  dh + dl (TwoSum), and exp, log1p and the sum carry about twice the format's
  precision, so T and L = log1p(T) are good to far below one ulp.
- Near the subnormal range each exp(d_j) would be rounded (or flushed) on its own
  before summing. Below a gap x2 - m of -40 (float32) or -600 (float64) the terms
  are taken relative to the second largest entry x2, and T = exp(x2 - m) * S is
  scaled by a power of two with one rounding, also where T is subnormal.
- out = dh + dl - L is summed with TwoSum so that its only rounding is the last one.
- The sum is a tree of TwoSums, so the result does not depend on the order in which
  a namespace would have reduced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat as compat

from ._dfloat import (
    Format,
    const,
    exp_parts,
    fast_two_sum,
    fmt,
    log1p_dw,
    pow2,
    sum_dw,
    two_prod,
    two_sum,
)

__all__ = ["log_softmax_generic", "special_values"]


# Below this gap x2 - m the terms are taken relative to x2 (module docstring): far
# enough above the subnormal range that a term rounded or flushed there costs less
# than 2**-60 of T (float32: e**-40 = 2**-57.7; float64: e**-600 = 2**-865.6).
_SCALE_GAP = {"float32": -40.0, "float64": -600.0}
# 2**-P brings T's significand b >= 1/2 down exactly, 2**(q + P) <= 1 then rounds once
_PRESCALE = {"float32": 56, "float64": 800}


def _two_diff(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """a - b == hi + lo exactly, for finite a <= b (b: the slice maximum).

    hi is RN(a - b) and lo the exact remainder. Where a - b overflows (a far below a
    positive b) hi is RN(a - b) from the halves, -inf beyond the range, and lo is 0;
    no operation overflows or makes a NaN on the way.
    """
    fmax = float(xp.finfo(a.dtype).max)
    far = a < (xp.maximum(b, xp.zeros_like(b)) - fmax)  # a - b < -max: would overflow
    hi, lo = two_sum(xp, xp.where(far, b, a), -b)
    half = a * 0.5 - b * 0.5  # RN((a - b) / 2): never overflows
    top = math.ldexp(1.0, math.frexp(fmax)[1] - 1)  # RN(a - b) overflows iff |half| >= top
    huge = xp.where(
        half <= -top, const(xp, a, -math.inf), 2 * xp.maximum(half, const(xp, a, -fmax / 2))
    )
    return xp.where(far, huge, hi), xp.where(far, xp.zeros_like(lo), lo)


def _count_dtype(xp: Any, x: Any) -> Any:
    """The device's default integer dtype, for counts of entries: int32 would wrap
    past 2**31 entries, and some devices have no int64 (array-api-strict's
    "no_x64", where an int32 sum without a dtype promotes to int64 and fails)."""
    info = xp.__array_namespace_info__()
    try:
        return info.default_dtypes(device=compat.device(x))["integral"]
    except TypeError:  # namespaces whose info takes no device
        return info.default_dtypes()["integral"]


def special_values(xp: Any, x: Any, out: Any, axis: Any, n: int | None) -> Any:
    """Apply the special-value rules of docs/specification.md to ``out`` (same dtype as
    x). ``n``: the entries per slice, None where the shape does not say (then counted,
    lazily)."""
    nan = const(xp, out, math.nan)
    ninf = const(xp, out, -math.inf)
    zero = xp.zeros_like(out)
    isnan = xp.isnan(x)
    if n == 1:
        return xp.where(isnan, nan, zero)
    pinf = x == math.inf
    ints = _count_dtype(xp, x)
    n_pinf = xp.sum(xp.astype(pinf, ints), axis=axis, keepdims=True, dtype=ints)
    has_nan = xp.any(isnan, axis=axis, keepdims=True)
    all_ninf = xp.all(x == -math.inf, axis=axis, keepdims=True)
    out = xp.where(n_pinf == 1, xp.where(pinf, zero, ninf), out)
    out = xp.where(n_pinf >= 2, xp.where(pinf, nan, ninf), out)
    out = xp.where(has_nan | all_ninf, nan, out)
    if n is None:  # slices of one entry, as above (-inf alone is not "all -inf")
        ones = xp.ones_like(x, dtype=ints)
        single = xp.sum(ones, axis=axis, keepdims=True, dtype=ints) == 1
        out = xp.where(single, xp.where(isnan, nan, zero), out)
    return out


def log_softmax_generic(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    cast: Callable[[Any, Any], Any] | None = None,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
    fix: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """log_softmax of a real floating array ``x`` over ``axis`` (a tuple), computed in
    dtype ``wide`` and returned in x's dtype. ``n`` is the number of elements per
    slice (>= 1), or None where the shape does not say (a Dask array's unknown
    chunks).

    Two hooks let a namespace whose arithmetic flushes subnormal results to zero (XLA
    on CPU) build them another way: ``cast(values, dtype)`` rounds the wide result to
    x's dtype (default ``xp.astype``) and ``scale2(v, e)`` is ``v * 2**e`` rounded
    once (default: that product), where the result may be subnormal. A third is for
    compilers that simplify floating-point expressions with constants in them:
    ``opaque(a)`` is ``a`` hidden from the compiler (XLA: an optimization barrier),
    applied to the constants that enter an error-free transformation.

    Narrow formats (computed in a wider one) are tested for correct rounding where
    ``fix`` is given: ``fix(out, open)`` gets the result and the mask of outputs the
    test could not prove (almost never any), and returns the result with those
    decided (the callers: the row kernels on the host)."""
    out_dtype = x.dtype
    if not (wide == xp.float64 or wide == xp.float32):
        return _long_double(xp, x, axis, n, wide)
    P = log_parts(xp, x, axis, n, wide, scale2, opaque)
    finite, out_hi, out_lo, err = P.finite, P.hi, P.lo, P.err
    ninf = const(xp, P.xw, -math.inf)
    # (where lo is 0, hi as it is: a subnormal hi + 0 would flush under XLA on CPU,
    # and -0 + 0 is +0)
    out = xp.where(out_lo == 0, out_hi, out_hi + out_lo)
    out = xp.where(x == -math.inf, ninf, out)
    if wide == out_dtype:  # float64, or float32 on a device without float64
        # out is hi + lo rounded once; -inf only where hi is (x - max beyond the range)
        thr = float(xp.finfo(out_dtype).max)
        narrow = special_values(xp, x, out, axis, n)
    else:
        # Values at or beyond the narrow format's overflow threshold (max + ulp/2)
        # round to -inf; saying so before the cast keeps it from overflowing.
        thr = _overflow_threshold(out_dtype)
        out = xp.where(out <= -thr, ninf, out)
        narrow = xp.astype(out, out_dtype) if cast is None else cast(out, out_dtype)
        narrow = special_values(xp, x, narrow, axis, n)
    if fix is None:
        return narrow
    # The rounding test: out_hi + out_lo is within err of the exact value; where a
    # rounding boundary of the output format lies that close, fix decides
    # (docs/impl.md, "Correct rounding"). Where out (rounded once to the working
    # format) lies exactly on a midpoint of the narrow format and out_lo across it (x -
    # max on a midpoint, L far below its last bit: one output in two of such rows),
    # the cast's tie went to the even neighbour, not always the right one: the other
    # neighbour, 2 out - back, is tested too, and taken where it is proven. (Where
    # the output format is the working one, out is never on a midpoint of it.)
    err = err * _err_scale
    open_, take = rounding_open(xp, out_hi, out_lo, out, narrow, err, out_dtype, thr)
    proper = finite & xp.all(finite | (x == -math.inf), axis=axis, keepdims=True)
    take = take & proper
    narrow = take_neighbour(xp, take, out, narrow, cast)
    open_ = open_ & proper & ~take
    return fix(narrow, open_)


class Parts(NamedTuple):
    """log_softmax's output before its last rounding: the exact value lies within
    ``err`` of hi + lo (double-words in the working format), and what the other
    functions need of the computation (the wide input, its maximum, which entries
    are finite and which lie below the maximum)."""

    finite: Any  # x finite
    m_in: Any  # the slice maximum of the finite entries in x's format (0 where none)
    xw: Any  # x in the working format, non-finite entries replaced by the maximum
    below: Any  # finite and below the maximum
    hi: Any
    lo: Any
    err: Any


def log_parts(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
) -> Parts:
    """log_softmax of x over ``axis`` as a double-word in ``wide`` (float32 or float64)
    with a bound on its error: the computation log_softmax_generic rounds, and
    softmax and logsumexp (impl/_functions.py) build on."""
    out_dtype = x.dtype
    finite, m_in, below, xs, m, k = _prelude(xp, x, axis, wide)
    name = "float64" if wide == xp.float64 else "float32"
    size = n if n is not None else math.prod(int(s) for s in x.shape)
    if wide == xp.float64 and out_dtype != wide:
        # Narrow formats in float64: d = x - m exact, the namespace's exp and log1p
        # (within LIBM_ULP of float64's ULP: impl/tests/test_rounding.py checks this
        # machine's), T as a double-word sum, L's low part from T's, out = d - L as a
        # double-word; the bound on its error for the rounding test below
        d = xs - m
        e = xp.where(below, xp.exp(d), xp.zeros_like(d))
        S_hi, S_lo = sum_dw(xp, e, xp.zeros_like(e), axis)
        T_hi, T_lo = two_sum(xp, k - 1, S_hi)
        T_hi, T_lo = fast_two_sum(T_hi, T_lo + S_lo)
        L = xp.log1p(T_hi)
        out_hi, t = two_sum(xp, d, -L)
        out_lo = t - T_lo / (1.0 + T_hi)
        # T > 0 where an entry lies below the maximum, even where the sum underflows
        # (e^-800): the maximum's output is negative then, and a 0 there is -0
        negative = xp.any(below, axis=axis, keepdims=True) & (out_hi == 0) & (out_lo == 0)
        out_hi = xp.where(negative, const(xp, out_hi, -0.0), out_hi)
        lib = LIBM_ULP * 2.0**-52  # (an ULP is up to 2^-52 of the value)
        # L's error: log1p's, T's relative one (exp's and the double-word sum's) over
        # 1 + T <= L's, and the low part's second-order term; out_lo's own rounding;
        # terms flushed or rounded below the normal range
        err = (2 * lib + (size + 2) * 2.0**-104) * L + 2.0**-52 * xp.abs(out_lo)
        err = err + size * 2.0**-1021
    else:
        # The precise core in the working format: L and out = d - L carried as
        # double-words (out_hi + out_lo), then rounded once to it
        rel = ERR_REL[name] + size * SUM_REL[name]
        out_hi, out_lo, L, extra = _precise_core(
            xp, xs, m, below, k, axis, name, rel, scale2, opaque
        )
        # d = x - m is exact, so L carries the error, relative to L; out's double-word
        # adds its own two roundings below its last bit (2^-(2p - 3) of |out| covers
        # them)
        p = fmt(name).precision
        finite_hi = xp.where(xp.isfinite(out_hi), xp.abs(out_hi), xp.zeros_like(out_hi))
        err = rel * L + finite_hi * 2.0 ** -(2 * p - 3) + extra
    return Parts(finite, m_in, xs, below, out_hi, out_lo, err)


def _prelude(xp: Any, x: Any, axis: Any, wide: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Which entries are finite, the maximum m_in of the finite ones (0 where there
    are none), which lie below it, x in the working format with the non-finite entries
    replaced by the maximum, that maximum, and the count k of maximal entries (>= 1),
    in the working format."""
    # The maximum, the comparisons and the count of maximal entries are exact in the
    # input's own format, and cheaper there (XLA's float64 reductions on CPU are
    # several times slower than its float32 ones); only the sum of exponentials
    # needs the wider format.
    finite = xp.isfinite(x)
    m_in = xp.max(xp.where(finite, x, const(xp, x, -math.inf)), axis=axis, keepdims=True)
    m_in = xp.where(xp.isfinite(m_in), m_in, xp.zeros_like(m_in))
    # Non-finite entries are replaced before any arithmetic (no inf - inf, no NaN
    # made here); -inf entries are put back at the end, the other specials decide
    # their whole slice in special_values.
    below = xp.where(finite, x, m_in) < m_in
    ints = _count_dtype(xp, x)
    count = xp.sum(xp.astype((x == m_in) & finite, ints), axis=axis, keepdims=True, dtype=ints)
    xw = xp.astype(x, wide)
    m = xp.astype(m_in, wide)
    xs = xp.where(finite, xw, m)
    k = xp.astype(xp.maximum(count, xp.ones_like(count)), wide)  # all -inf: overridden
    return finite, m_in, below, xs, m, k


def _long_double(xp: Any, x: Any, axis: Any, n: int | None, wide: Any) -> Any:
    """NumPy's long double (x87's 80 bits, or binary128), computed in itself."""
    _, _, below, xs, m, k = _prelude(xp, x, axis, wide)
    ninf = const(xp, xs, -math.inf)
    d = xs - m
    e = xp.where(below, xp.exp(d), xp.zeros_like(d))
    out = d - xp.log1p(xp.sum(e, axis=axis, keepdims=True) + (k - 1))
    # T > 0 where an entry lies below the maximum, even where the sum underflows
    # (e^-800): the maximum's output is negative then, and a 0 there is -0
    negative = xp.any(below, axis=axis, keepdims=True) & (out == 0)
    out = xp.where(negative, const(xp, out, -0.0), out)
    return special_values(xp, x, xp.where(x == -math.inf, ninf, out), axis, n)


# (precision, emax) of the output formats
_NARROW = {"float16": (11, 15), "bfloat16": (8, 127), "float32": (24, 127), "float64": (53, 1023)}


def _format_name(dtype: Any) -> str:
    text = str(dtype)
    for name in ("bfloat16", "float16", "float64"):
        if name in text:
            return name
    return "float32"


def _overflow_threshold(dtype: Any) -> float:
    """max + ulp(max)/2 = (2 - 2**-p) * 2**emax: the smallest magnitude that rounds
    to infinity (of the formats narrower than float64)."""
    p, emax = _NARROW[_format_name(dtype)]
    return math.ldexp(2.0 - math.ldexp(1.0, -p), emax)


# The precise core's error in out = d - L, relative to L, measured against
# mpmath (impl/tests/test_rounding.py, test_the_generic_cores_parts_hold_their_bounds:
# exp_parts within 2^-88.0 and log1p_dw within 2^-76.7 in float64; 2^-45.8 and 2^-39.0
# in float32), taken with a margin; the double-word sum's n 2^-2p of T (SUM_REL); and
# an absolute part on the slices whose T is taken relative to their second entry:
# there L = T is rounded once in the working format (T < e^-600 in float64, e^-40 in
# float32).
ERR_REL = {"float64": 2.0**-74, "float32": 2.0**-36}
# Narrow formats in float64 take the namespace's own exp and log1p, taken to be within
# this many of float64's ULP (CUDA documents 1 for both, glibc 1, Sleef's u10 1.0;
# impl/tests/test_rounding.py measures NumPy's, torch's and XLA's here)
LIBM_ULP = 4.0
SUM_REL = {"float64": 2.0**-104, "float32": 2.0**-46}
ERR_ABS = {"float64": 2.0**-900, "float32": 2.0**-80}
_err_scale = 1.0  # 1 but in the tests that weaken the bound or force the fix


def rounding_open(
    xp: Any, hi: Any, lo: Any, out: Any, r: Any, err: Any, dtype: Any, thr: float
) -> tuple[Any, Any]:
    """Where the exact value y, known to lie within ``err`` of hi + lo (a double-word
    in the working format), may round to something other than ``r`` (in ``dtype``:
    a narrow format, or the working format itself). With back = r widened (exact),
    r is y's rounding wherever |(hi - back) + lo| + err is below half the gap on y's
    side of r: 2^(e - p) for e = floor(log2 |r|) (log2's floor corrected by exact
    comparisons with 2^e, so that log2's own error cannot move it), half that inward
    from a power of two (the gap halves there), and the subnormal spacing below the
    normal range. -inf (overflow) stands where hi + err is beyond the overflow
    threshold ``thr``. Returns that mask, and where the neighbour of r across the
    midpoint that out (hi + lo rounded once) sits on is proven instead."""
    p, emax = _NARROW[_format_name(dtype)]
    emin = 1 - emax
    f = fmt("float64" if hi.dtype == xp.float64 else "float32")
    back = xp.astype(r, hi.dtype)
    mag = xp.abs(back)
    big = xp.isinf(back)
    zero = xp.zeros_like(back)
    normal = (mag > 0) & ~big
    lg = xp.floor(xp.log2(xp.where(normal, mag, xp.ones_like(mag))))
    p_e = pow2(xp, lg, hi, f)
    lg = lg - xp.where(normal & (mag < p_e), const(xp, lg, 1.0), zero)
    lg = lg + xp.where(normal & (mag >= 2.0 * p_e), const(xp, lg, 1.0), zero)
    low = const(xp, lg, float(emin))
    e = xp.where(mag > 0, xp.maximum(lg, low), low)
    # Everything doubled, so that half the subnormal spacing (2^-1075 in float64, not
    # a float64 number) never appears: gap_up is the whole gap above |r|
    gap_up = pow2(xp, e - float(p - 1), hi, f)
    # 2|a + lo| + 2 err < gap for a = hi - back (exact), as an exact margin g2 = gap -
    # 2|a| (Sterbenz) against lo's pull: +|lo| where lo points away from back, -|lo|
    # where it points back; its one rounding allowed for with 2^-(p - 2).
    # gap: on y's side (outward: |y| > |r|) the gap above; inward, the one below
    a = hi - xp.where(big, hi, back)
    inward = ((a + lo) * xp.where(big, zero, back)) <= 0
    pow2_r = mag == gap_up * float(2 ** (p - 1))
    gap = xp.where(inward & pow2_r, 0.5 * gap_up, gap_up)
    g2 = gap - 2.0 * xp.abs(a)
    # lo outweighing a and pointing back (out is hi + lo rounded to the working format
    # itself, a an ulp of it, lo beyond it): |a + lo| = |lo| - |a| < |lo|, rounded
    # once, against half the gap itself
    across = (a * lo < 0) & (xp.abs(lo) > xp.abs(a))
    lhs = xp.where(across, xp.abs(a + lo), xp.where(a * lo >= 0, xp.abs(lo), -xp.abs(lo))) + err
    lhs = lhs + xp.abs(lhs) * 2.0 ** -(f.precision - 2)
    sure = xp.where(big, hi + err < -thr, 2.0 * lhs < xp.where(across, gap, g2))
    # out (hi + lo rounded once) exactly on the midpoint between r and its neighbour,
    # and hi + lo past it by more than err: the neighbour, 2 out - r, is y's rounding
    # (the cast's tie went to the even side); no other boundary lies between
    fine = ~big & xp.isfinite(out)
    mid = xp.where(fine, out - xp.where(fine, back, zero), zero)
    z = xp.where(fine, (hi - xp.where(fine, out, zero)) + lo, zero)
    past = (z * mid > 0) & (xp.abs(z) - xp.abs(z) * 2.0 ** -(f.precision - 2) > err)
    take = ~sure & ~big & (2.0 * xp.abs(mid) == gap) & past
    return ~sure, take


def take_neighbour(
    xp: Any, take: Any, out: Any, r: Any, cast: Callable[[Any, Any], Any] | None
) -> Any:
    """``r``, the result in its output format, with the other neighbour where ``take``
    (rounding_open's second mask, less the slices the caller's own rules decide): there
    ``out``, the result rounded once to the working format, lies exactly on the
    midpoint between r and that neighbour, and the cast's tie went to r. The neighbour
    is 2 out - r, exact in the working format, converted to r's format as r was, by
    ``cast`` (None: ``xp.astype``); where r's format is the working one, nothing is
    converted."""
    back = xp.astype(r, out.dtype)
    other = xp.where(take, 2.0 * out - back, back)
    if r.dtype != out.dtype:
        other = xp.astype(other, r.dtype) if cast is None else cast(other, r.dtype)
    return xp.where(take, other, r)


def _precise_core(
    xp: Any,
    x: Any,
    m: Any,
    below: Any,
    k: Any,
    axis: Any,
    name: str,
    rel: float,
    scale2: Callable[[Any, Any], Any] | None,
    opaque: Callable[[Any], Any] | None,
) -> tuple[Any, Any, Any, Any]:
    """out = x - m - log1p(T) as a double-word hi + lo (one rounding of it gives the
    result), L = log1p(T)'s high part, and what the bound must add beyond L's
    relative error: on slices whose T was taken relative to their second entry, where
    L = T is rounded once in the working format (rel: the bound on L's relative
    error, which T's shares)"""
    f = fmt(name)
    zero = xp.zeros_like(x)
    ninf = const(xp, x, -math.inf)
    # Reference point for the terms: the maximum, or the second largest entry where
    # the terms would come near the subnormal range (then k == 1).
    x2 = xp.max(xp.where(below, x, ninf), axis=axis, keepdims=True)
    g2h, g2l = _two_diff(xp, x2, m)
    # x2 == -inf: a lone finite entry; k > 1: T >= 1 from the ties, nothing to scale
    scaled = (g2h < _SCALE_GAP[name]) & (x2 > -math.inf) & (k == 1)
    ref = xp.where(scaled, x2, m)
    # Each term exp(x - ref) as a double-word (dh + dl == x - ref exactly); arguments
    # beyond exp_parts' domain give terms far below what T can notice, and 0 when
    # scaled by 2**q. Entries above ref (the maximum, on scaled slices) are masked.
    dh, dl = _two_diff(xp, x, ref)
    lim = const(xp, x, -f.exp_domain)
    inside = dh >= lim
    dc = xp.minimum(xp.where(inside, dh, lim), zero)  # not clip: see pow2
    eh, el, q = exp_parts(xp, dc, xp.where(inside, dl, zero), f)
    scale = pow2(xp, q, x, f)
    terms_hi = xp.where(below, eh * scale, zero)
    S_hi, S_lo = sum_dw(xp, terms_hi, xp.where(below, el * scale, zero), axis)
    # Unscaled slices: T = (k - 1) + S, L = log1p(T), both double-words.
    T_hi, T_lo = two_sum(xp, k - 1, S_hi)
    T_hi, T_lo = fast_two_sum(T_hi, T_lo + S_lo)
    L_hi, L_lo = log1p_dw(xp, T_hi, T_lo, f, opaque)
    # Scaled slices: T = exp(x2 - m) S < e**-40, so L = T to the last bit, and T is
    # the maximal entry's output (negated). b 2**q with b = exp-part times S.
    g2c = xp.where(scaled, xp.maximum(g2h, lim), zero)
    gh, gl, gq = exp_parts(xp, g2c, xp.where(scaled & (g2h >= lim), g2l, zero), f)
    bh, bl = two_prod(xp, gh, S_hi, f)
    bh, bl = fast_two_sum(bh, bl + (gh * S_lo + gl * S_hi))
    T_s, near = _scale_once(xp, bh, bl, gq, f, _PRESCALE[name], scale2, rel)
    neg_T = -T_s
    L_hi = xp.where(scaled, T_s, L_hi)
    L_lo = xp.where(scaled, zero, L_lo)
    # out = (ah + al) - (L_hi + L_lo) = s + (t + (al - L_lo)), for one rounding
    ah, al = _two_diff(xp, x, m)
    fin = xp.isfinite(ah)
    a0 = xp.where(fin, ah, zero)
    s, t = two_sum(xp, a0, -L_hi)
    lo = xp.where(fin, t + (al - L_lo), zero)
    # log1p(T) = T there; said directly, so a subnormal T is not rounded twice. Its
    # low part where T is normal: bl 2**q, rounded once (at most one subnormal ulp
    # off); where T is subnormal, none, and the bound says whether the rounding to
    # the subnormal grid is proven (0) or not (inf)
    at = scaled & (x == m)
    hi = xp.where(at, neg_T, xp.where(fin, s, ah))
    normal_T = T_s >= math.ldexp(1.0, f.emin)
    lo_T = xp.where(normal_T, -_scale(xp, bl, gq, f, _PRESCALE[name], scale2), zero)
    tiny = const(xp, x, math.ldexp(1.0, f.emin - f.precision + 1))
    inf = const(xp, x, math.inf)
    extra = xp.where(normal_T, tiny, xp.where(near, inf, zero))
    # the other entries of those slices: L = T rounded once (2^-p of T < ERR_ABS)
    extra = xp.where(at, extra, xp.where(scaled, const(xp, x, ERR_ABS[name]), zero))
    return hi, xp.where(at, lo_T, lo), L_hi, extra


def _scale_once(
    xp: Any,
    bh: Any,
    bl: Any,
    q: Any,
    f: Format,
    prescale: int,
    scale2: Callable[[Any, Any], Any] | None,
    rel: float = 0.0,
) -> tuple[Any, Any]:
    """(bh + bl) * 2**q rounded once, for bh == 0 or 2**-60 < bh < 2**60, and integer-valued q <= 0.

    Where the result is subnormal its grid is coarser than bh's: bh + bl is first
    rounded to that grid (spacing G = 2**(e_sub - q), e_sub the exponent of the
    smallest subnormal), so that the scaling itself is exact. Elsewhere bh already is
    the rounded value, and the scaling is exact too. Also returns where a subnormal
    result's rounding is not proven for a bh + bl known within ``rel`` of bh: bh + bl
    within that (and the remainder's own rounding) of a midpoint of the grid.
    """
    zero = xp.zeros_like(bh)
    e_sub = float(f.emin - f.precision + 1)
    # Below e_sub - 64 every result rounds to 0, as it does with q clipped there
    # (G = 2**64 > 2 bh); the clip keeps G and C finite.
    q = xp.maximum(q, const(xp, bh, e_sub - 64.0))
    sub = bh < pow2(xp, f.emin - q, bh, f)  # bh 2**q below the normal range
    G = pow2(xp, xp.where(sub, e_sub - q, zero), bh, f)
    C = G * float(2 ** (f.precision - 1))  # bh < C, so bh + C stays in C's binade
    on_grid = (bh + C) - C
    rest = (bh - on_grid) + bl
    step = xp.where(rest > 0.5 * G, G, xp.where(rest < -0.5 * G, -G, zero))
    v = xp.where(sub, on_grid + step, bh)
    slack = rel * bh + xp.abs(rest) * 2.0 ** -(f.precision - 2)
    near = sub & (xp.abs(xp.abs(rest) - 0.5 * G) <= slack)
    return _scale(xp, v, q, f, prescale, scale2), near


def _scale(
    xp: Any, v: Any, q: Any, f: Format, prescale: int, scale2: Callable[[Any, Any], Any] | None
) -> Any:
    """v * 2**q rounded once (integer-valued q <= 0, v normal or 0)"""
    if scale2 is not None:
        return scale2(v, q)
    # 2**-prescale exactly (v stays normal), then 2**(q + prescale) <= 1: one rounding
    return (v * math.ldexp(1.0, -prescale)) * pow2(xp, q + float(prescale), v, f)
