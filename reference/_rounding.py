"""Rounding y = d - L to a format, decided or declared undecided (Ziv's test).

All outputs of a regular slice are y_i = -(A_i + L) with A_i = m - x_i >= 0 exact and
L >= 0 known only as an interval. Working with the magnitude Y = A + L, both paths
below return, per element, whether the rounding of Y is certain, the rounded value
-RN(Y), the residual (y - RN(y)) / ulp(y) and the exponent of ulp(y).

``round_fast`` does it for whole arrays in float64 with error-free transformations and
an explicit error bound; whatever it cannot certify goes to ``round_exact``, which uses
Python integers on dyadic rationals and is exact apart from the interval of L.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ._engines import two_sum
from ._formats import (
    Dyadic,
    Format,
    dyadic_add,
    dyadic_floor_log2,
    dyadic_from_float,
    dyadic_to_float,
)

__all__ = ["RESIDUAL_ACCURACY_BITS", "round_exact", "round_fast", "round_positive"]

# The residual of every decided element is accurate to 2**-48 ulp (absolute).
RESIDUAL_ACCURACY_BITS = 48
_U = 2.0**-53
_TINY = 2.0**-1074
_GAMMA3 = 3.0001 * _U  # >= gamma_3 = 3u/(1-3u), with room for rounding the bound itself


def round_fast(
    fmt: Format,
    x: NDArray[np.float64],
    m: NDArray[np.float64],
    L: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    eps_L: NDArray[np.float64],
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Vectorized rounding of y = (x - m) - L with L == L1 + L2 + L3 +- eps_L.

    Returns ``(decided, value, residual, ulp_exp)``; entries where ``decided`` is False
    are meaningless.
    """
    L1, L2, L3 = L
    with np.errstate(all="ignore"):
        a1, a2 = two_sum(m, -x)  # A = a1 + a2 exactly
        s1, s2 = two_sum(a1, L1)
        tail = ((a2 + s2) + L2) + L3
        err = (np.abs(a2) + np.abs(s2) + np.abs(L2) + np.abs(L3)) * _GAMMA3 + 3 * _TINY
        Y1, Y2 = two_sum(s1, tail)  # Y = Y1 + Y2 + e, |e| <= err + eps_L
        err = err + eps_L
        decided, c, residual, ulp_exp = round_positive(fmt, Y1, Y2, err, np.isfinite(a1))
    return decided, -c, -residual, ulp_exp  # y = -Y


def round_positive(
    fmt: Format,
    Y1: NDArray[np.float64],
    Y2: NDArray[np.float64],
    err: NDArray[np.float64],
    ok: NDArray[np.bool_],
    residual_bits: int = RESIDUAL_ACCURACY_BITS,
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """RN(Y) in fmt for Y = Y1 + Y2 +- err > 0 (Y2 small beside Y1), where ``ok``:
    ``(decided, RN(Y), residual, ulp_exp)``, the residual (Y - RN(Y)) / ulp(Y) known to
    2**-residual_bits; entries not decided are meaningless."""
    with np.errstate(all="ignore"):
        # Stay where float64 arithmetic is plain: Y1 normal (with margin) and below
        # the format's overflow threshold; the rest takes the exact path.
        ok = ok & (Y1 > 2.0**-960) & (Y1 < math.ldexp(1.0, fmt.emax))
        t = fmt.precision
        _, ex = np.frexp(Y1)
        q = np.maximum(ex.astype(np.int64) - 1, fmt.emin) - t + 1
        c = np.ldexp(np.rint(np.ldexp(Y1, -q)), q)  # RN of Y1 in the format
        z = (Y1 - c) + Y2  # Y1 - c is exact; z = Y - c up to err and this one rounding
        err = err + np.abs(z) * 2.0**-52 + _TINY

        frc, exc = np.frexp(c)
        ec = np.where(c == 0, fmt.emin, exc.astype(np.int64) - 1)
        qc = np.maximum(ec, fmt.emin) - t + 1
        pow2 = (frc == 0.5) & (ec > fmt.emin)  # below c the spacing halves
        half_up = np.ldexp(0.5, qc)
        half_dn = np.where(pow2, np.ldexp(0.25, qc), half_up)
        decided = ok & (z + err < half_up) & (z - err > -half_dn)
        # At a power of two the side of c decides floor(log2 Y), hence ulp(y).
        decided &= ~pow2 | (np.abs(z) > err)
        ulp_exp = np.where(pow2 & (z < 0), qc - 1, qc)
        decided &= err <= np.ldexp(2.0**-residual_bits, ulp_exp)
        residual = np.ldexp(z, -ulp_exp)
    return decided, c, residual, ulp_exp


def round_exact(
    fmt: Format, x: float, m: float, L_lo: Dyadic, L_hi: Dyadic
) -> tuple[bool, float, float, int]:
    """Rounding of y = (x - m) - L for one element, L in [L_lo, L_hi], L > 0.

    Returns ``(decided, value, residual, ulp_exp)``.
    """
    mm, me = dyadic_from_float(m)
    xm, xe = dyadic_from_float(x)
    A = dyadic_add((mm, me), (-xm, xe))
    if A[0] == 0:
        Y_lo, Y_hi = L_lo, L_hi
    else:
        # L below 2**k with k under both A's last bit and 64 bits below ulp(A): then
        # Y = A + L is strictly between A and the next rounding boundary, and A + 2**k
        # rounds the same way, to within 2**-64 ulp for the residual. This keeps
        # shifts bounded when L is astronomically small.
        k = min(A[1] - 2, fmt.quantum_exponent(dyadic_floor_log2(A)) - 64)
        if L_hi[0] == 0 or dyadic_floor_log2(L_hi) < k:
            Y_lo = Y_hi = dyadic_add(A, (1, k))
        else:
            Y_lo, Y_hi = dyadic_add(A, L_lo), dyadic_add(A, L_hi)
    c_lo, q_lo = fmt.round_dyadic(*Y_lo)
    c_hi, q_hi = fmt.round_dyadic(*Y_hi)
    if c_lo != c_hi or q_lo != q_hi:
        return False, 0.0, 0.0, 0
    if math.isinf(c_lo):
        return True, -math.inf, math.nan, q_lo
    width = dyadic_add(Y_hi, (-Y_lo[0], Y_lo[1]))
    if width[0] and dyadic_floor_log2(width) >= q_lo - 60:
        return False, 0.0, 0.0, 0
    cm, ce = dyadic_from_float(c_lo)
    mid = dyadic_add(Y_lo, Y_hi)
    dm, de = dyadic_add((mid[0], mid[1] - 1), (-cm, ce))  # Y - c
    residual = -dyadic_to_float(dm, de - q_lo)
    return True, -c_lo, residual, q_lo
