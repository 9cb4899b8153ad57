"""Rounding a real known only as an interval of dyadic rationals, rounding a rational
exactly, and the conversions between dyadics and mpmath's raw numbers.

softmax and logsumexp reach their results through an exp or a log of an interval that
the engines certify; Ziv's test here decides the rounding when both ends of the
interval round the same way, and declares it undecided otherwise (the caller then
doubles the precision).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ._formats import (
    Dyadic,
    Format,
    dyadic_add,
    dyadic_floor_log2,
    dyadic_from_float,
    dyadic_to_float,
)

__all__ = ["from_mpf", "round_interval", "round_rational", "shift_interval", "to_mpf"]

# A decided residual is known to within 2**-RESIDUAL_GAP ulp: the interval's width must
# be below that (the log_softmax path's exact rounding uses the same gap).
RESIDUAL_GAP = 60


def to_mpf(v: Dyadic) -> Any:
    """A dyadic as mpmath's raw (sign, man, exp, bc) tuple, exactly."""
    from mpmath.libmp import libmpf as lm

    return lm.from_man_exp(v[0], v[1])


def from_mpf(v: Any) -> Dyadic:
    """mpmath's raw tuple (finite) as a dyadic, exactly."""
    sign, man, exp, _ = v
    return (-int(man) if sign else int(man)), int(exp)


def _same(a: float, b: float) -> bool:
    """Equal floats with equal signs (so that -0.0 and +0.0 differ)."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def round_interval(fmt: Format, lo: Dyadic, hi: Dyadic) -> tuple[bool, float, float, int]:
    """Rounding of an exact real y with lo <= y <= hi.

    Returns ``(decided, value, residual, ulp_exp)``: decided when both ends round to the
    same value (sign of zero included) with the same ulp, and the interval is narrow
    enough that the residual (y - RN(y)) / ulp(y), taken at its midpoint, is good to
    2**-60. An overflow is decided as +-inf with a NaN residual.
    """
    v_lo, q_lo = fmt.round_dyadic(*lo)
    v_hi, q_hi = fmt.round_dyadic(*hi)
    if not _same(v_lo, v_hi) or q_lo != q_hi:
        return False, 0.0, 0.0, 0
    if math.isinf(v_lo):
        return True, v_lo, math.nan, q_lo
    width = dyadic_add(hi, (-lo[0], lo[1]))
    if width[0] and dyadic_floor_log2(width) >= q_lo - RESIDUAL_GAP:
        return False, 0.0, 0.0, 0
    s, e = dyadic_add(lo, hi)
    c = dyadic_from_float(v_lo)
    dm, de = dyadic_add((s, e - 1), (-c[0], c[1]))  # y - RN(y) at the midpoint
    return True, v_lo, dyadic_to_float(dm, de - q_lo), q_lo


def shift_interval(fmt: Format, base: Dyadic, lo: Dyadic, hi: Dyadic) -> tuple[Dyadic, Dyadic]:
    """[base + lo, base + hi] for rounding to fmt, exact but for ends far below base.

    An end t with 0 < |t| < 2**k, k below base's last bit and 64 bits below its ulp in
    fmt, becomes +-2**k: every base + t with t of one sign in that range rounds alike
    (no boundary of fmt lies strictly between base and base +- 2**k), with residuals
    within 2**-64 ulp of each other. This keeps the sums small when the increment is
    exp(-1e300), whose exact binary form has about 1e300 bits.
    """
    if base[0] == 0:
        return lo, hi
    k = min(base[1] - 2, fmt.quantum_exponent(dyadic_floor_log2(base)) - 64)

    def clamp(t: Dyadic) -> Dyadic:
        if t[0] and dyadic_floor_log2(t) < k:
            return (1 if t[0] > 0 else -1), k
        return t

    return dyadic_add(base, clamp(lo)), dyadic_add(base, clamp(hi))


def round_rational(fmt: Format, num: int, den: int) -> tuple[float, float, int]:
    """RN(num / den) in fmt (den > 0), exactly: ``(value, residual, ulp_exp)``."""
    if num == 0:
        return 0.0, 0.0, fmt.qmin
    mag = abs(num)
    # enough quotient bits for any rounding of the format; a nonzero remainder becomes
    # a sticky bit below them, which moves neither the rounding nor a tie
    s = fmt.precision + 4 + den.bit_length() - mag.bit_length()
    n, d = (mag << s, den) if s >= 0 else (mag, den << -s)
    q, r = divmod(n, d)
    man, exp = (2 * q + 1, -s - 1) if r else (q, -s)
    value, ulp_exp = fmt.round_dyadic(-man if num < 0 else man, exp)
    if math.isinf(value):
        return value, math.nan, ulp_exp
    residual = (Fraction(num, den) - Fraction(value)) / Fraction(2) ** ulp_exp
    return value, float(residual), ulp_exp
