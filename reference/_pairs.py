"""A fast, certified path of the oracle for two-element slices ``[0, v]``: the
log_softmax, softmax and logsumexp of every float32 pair in minutes instead of days.

With d = -|v| <= 0 and T = exp(d) in (0, 1], the exact answers of x = [0, v] are

- log_softmax: -L at the larger entry and d - L at the other, L = log1p(T) (no
  cancellation: both of the sign of -L);
- softmax: 1 / (1 + T) at the larger entry and T / (1 + T) at the other (the sigmoid
  forms: no overflow, no cancellation);
- logsumexp: max(0, v) + L (two terms >= 0).

Each is computed in float64 with NumPy's exp and log1p, vectorised, and rounded to the
target format only where the rounding is proved by a bound on that computation's
error. exp and log1p are taken to be within 2**-46 of their exact values, relatively
(64 units in the last place of float64; libm and NumPy's SIMD loops are within a few),
and each of +, - and / rounds once (2**-53). t = exp(d) = T (1 + e), |e| <= 2**-46:

- log_softmax: exp's error passes to L damped by T / ((1 + T) log1p(T)) <= 1, so
  l = log1p(t) carries at most 2**-46 + 2**-46; d - l adds one rounding without
  cancellation: each output within 2**-45 (1 + 2**-7) of the exact one;
- softmax: 1 + t = (1 + T)(1 + e T / (1 + T)), |e T / (1 + T)| <= 2**-47 (T <= 1),
  and the sum and the quotient round once each: 1 / (1 + t) within 2**-47 + 2 * 2**-53
  (< 2**-46.9); t / (1 + t) adds exp's own 2**-46: within 2**-46 + 2**-47 + 2 * 2**-53
  (< 2**-45.4);
- logsumexp: l = log1p(t) within 2**-45 (1 + 2**-45) as above; max(0, v) is exact and
  >= 0, so max(0, v) + l (one rounding) is within 2**-45 + 2**-53 (< 2**-44.9);

so every output carries a relative error below ``REL_BOUND`` = 2**-44 (each bound is
first order; the second-order terms are below 2**-90). Then:

- a value y is certified when the whole interval y (1 +- REL_BOUND) rounds to one
  number, so that the exact value, which lies strictly inside it, rounds to it too:
  for float16 and float32 both ends are rounded by NumPy's casts (one rounding to
  nearest even, from float64, subnormal results included; the interval is widened to
  2**-43 for the products' own roundings); for bfloat16 (whose cast from float64
  rounds twice) the midpoints around the rounding are built exactly, half-spacings in
  the format, the binade below a power of two having half the spacing, and below the
  least normal the subnormal spacing (``_round_certified``). softmax's smaller output
  T / (1 + T) is subnormal in the target format from d ~ -87 (float32), -92
  (bfloat16) or -9.7 (float16) on: its float64 value is still normal (T >= e**-200)
  and within the bound, and the subnormal spacing decides its rounding;
- for d below -200 (T < 2**-288, far below half the least subnormal of any of these
  formats, and T / (1 + T) below the float64 range where the bound holds) the answers
  are taken exactly, as the exact engine rounds them: log_softmax's -0 at the larger
  entry and d at the other; softmax's 1 and +0; logsumexp's v for v > 0 (v + L with
  L far below half v's spacing) and +0 for v < 0.

NaN and infinite v take the specification's answers directly: NaN (log_softmax,
softmax: at both entries); for v = +inf [-inf, 0], [0, 1] and +inf; for v = -inf
[0, -inf], [1, 0] and 0 (log_softmax, softmax, logsumexp). Everything else (a value
too near a midpoint) goes to the exact engine: a few in a million pairs. Only formats
of at most 24 significant bits (float16, bfloat16, float32) take this path: for
float64 the double computation is not wide enough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._formats import Format, format_of

__all__ = ["REL_BOUND", "log_softmax_pairs", "logsumexp_pairs", "pair_values", "softmax_pairs"]

REL_BOUND = 2.0**-44
# bound here once: a function that replaces numpy's attributes later (a candidate in the
# same worker) does not reach the oracle's
_EXP, _LOG1P, _ABS = np.exp, np.log1p, np.abs
_TINY_D = -200.0
_CHUNK = 1 << 16  # pairs per vectorised block (fits a core's cache)

Values = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def log_softmax_pairs(
    v: Any, *, engine: str | None = None, counts: dict[str, int] | None = None
) -> NDArray[Any]:
    """The correctly rounded log_softmax of each pair ``[0, v[i]]``: an array of shape
    ``(n, 2)`` in v's format, bit for bit ``reference.log_softmax(np.stack([0, v], 1),
    axis=-1)``. ``counts``, if given, receives how many pairs were certified on the fast
    path and how many the exact engine computed."""
    return _pairs("log_softmax", v, engine, counts)


def softmax_pairs(
    v: Any, *, engine: str | None = None, counts: dict[str, int] | None = None
) -> NDArray[Any]:
    """The correctly rounded softmax of each pair ``[0, v[i]]``: an array of shape
    ``(n, 2)`` in v's format, bit for bit ``reference.softmax(np.stack([0, v], 1),
    axis=-1)``. ``counts`` as for :func:`log_softmax_pairs`."""
    return _pairs("softmax", v, engine, counts)


def logsumexp_pairs(
    v: Any, *, engine: str | None = None, counts: dict[str, int] | None = None
) -> NDArray[Any]:
    """The correctly rounded logsumexp of each pair ``[0, v[i]]``: an array of shape
    ``(n,)`` in v's format, bit for bit ``reference.logsumexp(np.stack([0, v], 1),
    axis=-1)``. ``counts`` as for :func:`log_softmax_pairs`."""
    return _pairs("logsumexp", v, engine, counts)


def _pairs(
    function: str, v: Any, engine: str | None, counts: dict[str, int] | None
) -> NDArray[Any]:
    a = np.asarray(v).reshape(-1)
    fmt = format_of(a.dtype)
    if fmt.precision > 24:
        raise ValueError(
            f"{function}_pairs takes formats of at most 24 significant bits (float16, "
            f"bfloat16, float32); got {fmt.name}: use reference.{function}"
        )
    cols = 1 if function == "logsumexp" else 2
    out = np.empty((a.size, cols), dtype=fmt.dtype)
    slow: list[NDArray[np.intp]] = []
    for start in range(0, a.size, _CHUNK):
        part = a[start : start + _CHUNK]
        with np.errstate(invalid="ignore"):  # NaN patterns of the narrow formats
            wide = part.astype(np.float64)
        y, ok = _FAST[function](wide, fmt)
        out[start : start + part.size] = y
        slow.append(np.flatnonzero(~ok) + start)
    rest = np.concatenate(slow) if slow else np.zeros(0, dtype=np.intp)
    if rest.size:
        rows = np.stack([np.zeros(rest.size, dtype=fmt.dtype), a[rest]], axis=1)
        out[rest] = _exact(function, rows, engine).reshape(rest.size, cols)
    if counts is not None:
        counts["fast"] = counts.get("fast", 0) + a.size - rest.size
        counts["exact"] = counts.get("exact", 0) + rest.size
    return out if cols == 2 else out[:, 0]


def _exact(function: str, rows: NDArray[Any], engine: str | None) -> NDArray[Any]:
    """The exact engine's answers for rows [0, v]."""
    if function == "log_softmax":
        from ._oracle import evaluate

        return evaluate(rows, -1, engine=engine).expected
    if function == "softmax":
        from ._softmax import evaluate_softmax

        return evaluate_softmax(rows, -1, engine=engine).expected
    from ._logsumexp import evaluate_logsumexp

    return evaluate_logsumexp(rows, -1, engine=engine).expected


def pair_values(v: Any, function: str = "log_softmax") -> NDArray[np.float64]:
    """The ``function`` (log_softmax, softmax or logsumexp) of each pair ``[0, v[i]]``
    in float64, shape ``(n, 2)`` (logsumexp: ``(n,)``), each finite value within
    ``REL_BOUND`` of the exact one, relatively, where ``abs(v) <= 200`` (beyond, softmax's
    smaller output and logsumexp's for v < 0 are below 2**-288, within that of the
    exact one: not rounded to v's format, for measuring how far a computed value lies
    from the exact one, where the correctly rounded value alone does not tell)."""
    a = np.asarray(v).reshape(-1)
    with np.errstate(invalid="ignore"):
        y = _VALUES[function](a.astype(np.float64))
    return np.ascontiguousarray(y[0] if function == "logsumexp" else y.T)


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


def _softmax_values(vd: NDArray[np.float64]) -> NDArray[np.float64]:
    """softmax of each pair in float64, shape (2, n): 1 / (1 + t) at the larger entry
    and t / (1 + t) at the other (t = exp(-|v|))."""
    with np.errstate(all="ignore"):
        t = _EXP(-_ABS(vd))
        s = 1.0 + t
        big = 1.0 / s
        small = t / s
        y = np.empty((2, vd.size))
        v_larger = vd > 0.0  # else 0 is the larger entry (ties: both are 1/2)
        np.copyto(y[0], np.where(v_larger, small, big))
        np.copyto(y[1], np.where(v_larger, big, small))
    return y


def _logsumexp_values(vd: NDArray[np.float64]) -> NDArray[np.float64]:
    """logsumexp of each pair in float64, shape (1, n): max(0, v) + log1p(exp(-|v|))."""
    with np.errstate(all="ignore"):
        y = _LOG1P(_EXP(-_ABS(vd)))
        y += np.where(vd > 0.0, vd, 0.0)
    return y[None, :]


def _fast(vd: NDArray[np.float64], fmt: Format) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Both log_softmax outputs of each pair rounded to ``fmt`` (in fmt's dtype), and
    which pairs are certified."""
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


def _softmax_fast(vd: NDArray[np.float64], fmt: Format) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Both softmax outputs of each pair rounded to ``fmt``, and which are certified."""
    y = _softmax_values(vd)
    with np.errstate(all="ignore"):
        r, ok2 = _certify(y, fmt)
        tiny = vd < _TINY_D
        huge = vd > -_TINY_D
    ok = ok2[0] & ok2[1]
    # exactly: the larger entry's 1 / (1 + T) rounds to 1, the other's T / (1 + T) to +0
    r[0][tiny] = 1.0
    r[1][tiny] = 0.0
    r[0][huge] = 0.0
    r[1][huge] = 1.0
    ok |= tiny | huge
    out = np.empty((vd.size, 2), dtype=r.dtype)
    out[:, 0] = r[0]
    out[:, 1] = r[1]
    special = ~np.isfinite(vd)
    if special.any():
        # the specification's answers: NaN in a slice makes it NaN; [0, -inf] is
        # [1, 0]; [0, +inf] is [0, 1] (the unique limit)
        out[np.isnan(vd)] = np.nan
        out[vd == np.inf] = (0.0, 1.0)
        out[vd == -np.inf] = (1.0, 0.0)
        ok |= special
    return out, ok


def _logsumexp_fast(vd: NDArray[np.float64], fmt: Format) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """logsumexp of each pair rounded to ``fmt`` (shape (n, 1)), and which are certified."""
    y = _logsumexp_values(vd)
    with np.errstate(all="ignore"):
        r, ok2 = _certify(y, fmt)
        tiny = vd < _TINY_D
        huge = vd > -_TINY_D
    ok = ok2[0]
    # exactly: log1p(T) rounds to +0 alone (v < 0), and v + log1p(T) to v (v > 0)
    r[0][tiny] = 0.0
    r[0][huge] = vd[huge].astype(r.dtype)  # v's own value, exact in its format
    ok |= tiny | huge
    out = r.T.copy()
    special = ~np.isfinite(vd)
    if special.any():
        # the specification's answers: NaN; log(1 + 0) = 0 for -inf; +inf for +inf
        out[np.isnan(vd), 0] = np.nan
        out[vd == np.inf, 0] = np.inf
        out[vd == -np.inf, 0] = 0.0
        ok |= special
    return out, ok


_FAST: dict[str, Callable[[NDArray[np.float64], Format], tuple[NDArray[Any], NDArray[np.bool_]]]]
_FAST = {"log_softmax": _fast, "softmax": _softmax_fast, "logsumexp": _logsumexp_fast}
_VALUES: dict[str, Values] = {
    "log_softmax": lambda vd: _values(vd),  # late-bound: a test may replace _values
    "softmax": lambda vd: _softmax_values(vd),
    "logsumexp": lambda vd: _logsumexp_values(vd),
}
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
