"""exp in double-double arithmetic, vectorized in NumPy, with an explicit error bound:
the softmax oracle's fast path.

exp(y) = 2**e * 2**(j/64) * exp(r), k = rint(64 y / ln 2) = 64 e + j, r = y - k ln2/64
with |r| <= ln2/128 + tiny. ln2/64 is split as C1 + C2 + C3, C1 and C2 of 36 bits, so
that k C1 and k C2 are exact for |k| < 2**17 (|y| <= 745 here); r is accumulated from
its terms with error-free sums. 2**(j/64) and 1/i! are double-doubles from mpmath
(within 2**-106 relative), and exp(r) is Taylor's polynomial of degree 11 in Horner's
scheme on double-doubles: its remainder is below 2**-119 for |r| <= 0.0055.

Error bound (relative), with u = 2**-53: a double-double product or sum below adds at
most 16 u**2 = 2**-102 (Joldes, Muller and Popescu prove 5 u**2 and 3 u**2 for these
algorithms; 16 leaves room). In Horner's scheme an error of a partial result shrinks by
|r| <= 0.0055 at each later step, so the polynomial is within about 2 * 2**-102; the
table and the last product add 2**-106 and 2**-102. r is exact but for folding each
error-free sum's low part, six roundings of at most 2 u**2 times the partial sums,
which stay below |L1| + 2 after the first, exact, step: 2**-96.5 for slices of up to
2**60 entries (L1 <= 42), and exp turns that into the same relative error. REL_BOUND =
2**-94 holds the sum with a factor of three to spare; the tests measure the actual
error against mpmath, below 2**-100.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._engines import two_sum

__all__ = ["REL_BOUND", "Y_MIN", "exp_dd"]

F64 = NDArray[np.float64]

REL_BOUND = 2.0**-94
# |y| below this keeps |k| < 2**17 and the result above float64's subnormals
Y_MIN = -700.0
_SPLIT = 134217729.0  # 2**27 + 1


def _fasttwo_sum(a: F64, b: F64) -> tuple[F64, F64]:
    s = a + b
    return s, b - (s - a)


def _split(a: F64) -> tuple[F64, F64]:
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a: F64, b: F64) -> tuple[F64, F64]:
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_mul(ah: F64, al: F64, bh: F64, bl: F64) -> tuple[F64, F64]:
    p, e = _two_prod(ah, bh)
    return _fasttwo_sum(p, e + (ah * bl + al * bh))


def _dd_add(ah: F64, al: F64, bh: F64, bl: F64) -> tuple[F64, F64]:
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    s, e = _fasttwo_sum(s, e + t)
    return _fasttwo_sum(s, e + f)


def _dd_add_d(ah: F64, al: F64, b: F64) -> tuple[F64, F64]:
    s, e = two_sum(ah, b)
    return _fasttwo_sum(s, e + al)


@functools.cache
def _constants() -> tuple[tuple[float, float, float], F64, F64, list[tuple[float, float]]]:
    """ln2/64 in three parts, 2**(j/64) for j < 64 and 1/i! for i <= 11, as
    double-doubles (hi, lo) from mpmath at 300 bits."""
    import mpmath

    with mpmath.workprec(300):
        c = mpmath.log(2) / 64

        def bits(v: Any, n: int) -> float:
            f, e = mpmath.frexp(v)
            return float(mpmath.ldexp(mpmath.floor(mpmath.ldexp(f, n)), e - n))

        c1 = bits(c, 36)
        c2 = bits(c - c1, 36)
        c3 = float(c - c1 - c2)

        def dd(v: Any) -> tuple[float, float]:
            hi = float(v)
            return hi, float(v - hi)

        table = [dd(mpmath.power(2, mpmath.mpf(j) / 64)) for j in range(64)]
        coef = [dd(1 / mpmath.factorial(i)) for i in range(12)]
    th = np.array([t[0] for t in table])
    tl = np.array([t[1] for t in table])
    return (c1, c2, c3), th, tl, coef


def exp_dd(terms: list[F64]) -> tuple[F64, F64, F64]:
    """exp of y = the sum of ``terms`` (float64 arrays of one shape, each exact as given;
    Y_MIN <= y < 1 where the result is wanted): ``(hi, lo, scale)`` with
    exp(y) = (hi + lo) * scale within REL_BOUND relative (scale a power of two, hi in
    [0.5, 2.1]); and the bound on |y| the caller must add (the terms' magnitude)."""
    (c1, c2, c3), th, tl, coef = _constants()
    with np.errstate(all="ignore"):
        approx = sum(terms[1:], terms[0])
        k = np.rint(approx * (64.0 / 0.6931471805599453))
        rh, rl = _fasttwo_sum(terms[0], np.zeros_like(terms[0]))
        for t in [-k * c1, *terms[1:], -k * c2, -k * c3]:
            rh, rl = _dd_add_d(rh, rl, t)
        ph, pl = np.full_like(rh, coef[11][0]), np.full_like(rh, coef[11][1])
        for i in range(10, -1, -1):
            ph, pl = _dd_mul(ph, pl, rh, rl)
            ph, pl = _dd_add(ph, pl, np.full_like(rh, coef[i][0]), np.full_like(rh, coef[i][1]))
        ki = k.astype(np.int64)
        j = np.mod(ki, 64)
        hi, lo = _dd_mul(ph, pl, th[j], tl[j])
        scale = np.ldexp(1.0, (ki - j) // 64)
    return hi, lo, scale
