"""A fast, certified path of the oracle for two-element slices ``[0, v]``: the
log_softmax of every float32 pair in minutes instead of days.

For x = [0, v] with d = -|v| and L = log1p(exp(d)), the outputs are -L (at the larger
entry) and d - L (at the other): no cancellation, both of the sign of -L. They are
computed in float64 with NumPy's exp and log1p, vectorised, and each is rounded to the
target format only where the rounding is proved by a bound on that computation's
error:

- exp and log1p are taken to be within 2**-46 of their exact values, relatively (64
  units in the last place of float64; libm and NumPy's SIMD loops are within a few);
  exp's error passes to L damped by t / ((1 + t) log1p(t)) <= 1, and d - L adds one
  rounding, so each output carries a relative error below ``REL_BOUND`` = 2**-44;
- a value y is certified when the whole interval y (1 +- REL_BOUND) rounds to one
  number, so that the exact value, which lies strictly inside it, rounds to it too:
  for float16 and float32 both ends are rounded by NumPy's casts (one rounding to
  nearest even, from float64; the interval is widened to 2**-43 for the products'
  own roundings); for bfloat16 (whose cast from float64 rounds twice) the midpoints
  around the rounding are built exactly, half-spacings in the format, the binade
  below a power of two having half the spacing;
- for d below -200 (exp(d) < 2**-288, far below half the least subnormal of any of
  these formats) the larger entry's output is -0 and the other's is d, exactly as the
  exact engine rounds them.

NaN and infinite v take the specification's answers directly (NaN; [0, -inf]; [-inf,
0] for v = +inf). Everything else (a value too near a midpoint, an overflow) goes to the
exact engine: a few in a million pairs. Only formats of at most
24 significant bits (float16, bfloat16, float32) take this path: for float64 the
double computation is not wide enough.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._formats import Format, format_of

__all__ = ["REL_BOUND", "log_softmax_pairs", "pair_values"]

REL_BOUND = 2.0**-44
# bound here once: a function that replaces numpy's attributes later (a candidate in the
# same worker) does not reach the oracle's
_EXP, _LOG1P, _ABS = np.exp, np.log1p, np.abs
_TINY_D = -200.0
_CHUNK = 1 << 16  # pairs per vectorised block (fits a core's cache)


def log_softmax_pairs(
    v: Any, *, engine: str | None = None, counts: dict[str, int] | None = None
) -> NDArray[Any]:
    """The correctly rounded log_softmax of each pair ``[0, v[i]]``: an array of shape
    ``(n, 2)`` in v's format, bit for bit ``reference.log_softmax(np.stack([0, v], 1),
    axis=-1)``. ``counts``, if given, receives how many pairs were certified on the fast
    path and how many the exact engine computed."""
    from ._oracle import evaluate

    a = np.asarray(v).reshape(-1)
    fmt = format_of(a.dtype)
    if fmt.precision > 24:
        raise ValueError(
            f"log_softmax_pairs takes formats of at most 24 significant bits (float16, "
            f"bfloat16, float32); got {fmt.name}: use reference.log_softmax"
        )
    out = np.empty((a.size, 2), dtype=fmt.dtype)
    slow: list[NDArray[np.intp]] = []
    for start in range(0, a.size, _CHUNK):
        part = a[start : start + _CHUNK]
        with np.errstate(invalid="ignore"):  # NaN patterns of the narrow formats
            wide = part.astype(np.float64)
        y, ok = _fast(wide, fmt)
        out[start : start + part.size] = y
        slow.append(np.flatnonzero(~ok) + start)
    rest = np.concatenate(slow) if slow else np.zeros(0, dtype=np.intp)
    if rest.size:
        rows = np.stack([np.zeros(rest.size, dtype=fmt.dtype), a[rest]], axis=1)
        out[rest] = evaluate(rows, -1, engine=engine).expected
    if counts is not None:
        counts["fast"] = counts.get("fast", 0) + a.size - rest.size
        counts["exact"] = counts.get("exact", 0) + rest.size
    return out


def pair_values(v: Any) -> NDArray[np.float64]:
    """The log_softmax of each pair ``[0, v[i]]`` in float64, shape ``(n, 2)``, each
    finite value within ``REL_BOUND`` of the exact one, relatively (not rounded to v's
    format: for measuring how far a computed value lies from the exact one, where the
    correctly rounded value alone does not tell)."""
    a = np.asarray(v).reshape(-1)
    with np.errstate(invalid="ignore"):
        return np.ascontiguousarray(_values(a.astype(np.float64)).T)


def _values(vd: NDArray[np.float64]) -> NDArray[np.float64]:
    """Both outputs of each pair in float64, shape (2, n): -L at the larger entry and
    d - L at the other (d = -|v|, L = log1p(exp(d)))."""
    with np.errstate(all="ignore"):
        d = -_ABS(vd)
        big_l = _LOG1P(_EXP(d))
        other = d - big_l
        np.negative(big_l, out=big_l)  # -L: the output at the larger entry
        y = np.empty((2, vd.size))
        v_larger = vd > 0.0  # else 0 is the larger entry (ties: both are -ln 2)
        np.copyto(y[0], np.where(v_larger, other, big_l))
        np.copyto(y[1], np.where(v_larger, big_l, other))
    return y


def _fast(vd: NDArray[np.float64], fmt: Format) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Both outputs of each pair rounded to ``fmt`` (in fmt's dtype), and which pairs
    are certified."""
    y = _values(vd)
    with np.errstate(all="ignore"):  # NaN and infinite v: answered at the end
        r, ok2 = _certify(y, fmt)
        d = -np.abs(vd)
    v_larger = vd > 0.0
    ok = ok2[0] & ok2[1]
    tiny = d < _TINY_D
    if tiny.any():
        # exactly, not through the certified rounding: -exp(d) -> -0 at the larger
        # entry, d - L -> d (v's own value) at the other
        small = d[tiny].astype(r.dtype)
        r[0][tiny] = np.where(v_larger[tiny], small, -0.0)
        r[1][tiny] = np.where(v_larger[tiny], -0.0, small)
        ok |= tiny
    out = np.empty((vd.size, 2), dtype=r.dtype)
    out[:, 0] = r[0]
    out[:, 1] = r[1]
    special = ~np.isfinite(vd)
    if special.any():
        # the specification's answers: NaN in a slice makes it NaN; [0, -inf] is
        # [0, -inf]; [0, +inf] is [-inf, 0] (the unique limit)
        out[np.isnan(vd)] = np.nan
        out[vd == np.inf] = (-np.inf, 0.0)
        out[vd == -np.inf] = (0.0, -np.inf)
        ok |= special
    return out, ok


# NumPy's casts from float64 round once, to nearest even (subnormals included): the
# rounding of y(1 - w) and y(1 + w) agree exactly where no rounding boundary lies
# between them. ml_dtypes' bfloat16 goes through float32 (two roundings): it takes
# the exact construction below.
_CAST_OK = {"float16", "float32"}
_WIDTH = 2.0**-43  # REL_BOUND, and the two multiplications' own roundings


def _certify(y: NDArray[np.float64], fmt: Format) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """``y`` rounded to ``fmt``, and where every value within REL_BOUND of it rounds
    the same way."""
    if fmt.name not in _CAST_OK:
        r, ok = _round_certified(y, fmt)
        with np.errstate(invalid="ignore"):
            return r.astype(fmt.dtype), ok
    bits = np.dtype(f"u{fmt.dtype.itemsize}")
    with np.errstate(over="ignore"):
        lo = (y * (1.0 - _WIDTH)).astype(fmt.dtype)
        hi = (y * (1.0 + _WIDTH)).astype(fmt.dtype)
    ok = (lo.view(bits) == hi.view(bits)) & np.isfinite(lo)
    return lo, ok


_MANTISSA = np.int64((1 << 52) - 1)


def _exponent(a: NDArray[np.float64]) -> NDArray[np.int64]:
    """floor(log2 a) of positive normal doubles, from their bits (-1023 for 0)."""
    return (a.view(np.int64) >> 52) - 1023


def _pow2(e: NDArray[np.int64]) -> NDArray[np.float64]:
    """2**e as a double, built from its bits (-1022 <= e <= 1023)."""
    return ((e + 1023) << 52).view(np.float64)


def _round_certified(
    y: NDArray[np.float64], fmt: Format
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``y`` rounded to nearest even in ``fmt`` (as float64), and whether every value
    within ``REL_BOUND`` of it rounds the same way. Exponents are read from the bits:
    the quantum of |y| is 2**q with q = max(floor(log2 |y|), emin) - p + 1, and |y|
    scaled by 2**-q is rounded by rint (to nearest even), all exact."""
    p = fmt.precision
    a = np.abs(y)
    q = np.maximum(_exponent(a), fmt.emin) - (p - 1)
    m = np.rint(a * _pow2(-q)) * _pow2(q)
    em = _exponent(m)
    above = _pow2(np.maximum(em, fmt.emin) - (p - 1))
    # below a power of two (a normal one) the spacing is half
    power_of_two = ((m.view(np.int64) & _MANTISSA) == 0) & (em > fmt.emin)
    below = np.where(power_of_two, 0.25 * above, 0.5 * above)
    err = REL_BOUND * a
    ok = (a - err > m - below) & (a + err < m + 0.5 * above) & (m <= fmt.max_finite)
    return np.copysign(m, y), ok
