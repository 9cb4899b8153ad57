"""softmax's and logsumexp's last resort: one slice at a time, in Python's decimal
arithmetic, to as many digits as it takes (Ziv's loop).

The vectorized paths (impl/_functions.py) compute each output to within a proven
bound and test it against the output format's rounding boundaries; an output the
test leaves open (about one in 2^30 for float32 outputs computed in float64, fewer
in float64) is decided here. Each evaluation at P digits returns a center and a
radius that encloses the exact value; the output is decided once both ends of the
enclosure round to the same number of the format (signed zeros included), and P
doubles otherwise. The loop ends because the values that are exactly rational, and
so could sit on a rounding boundary for ever, are answered exactly beforehand:

- logsumexp: entries with equal a are merged, their weights summed exactly; no entry
  left gives -inf (sign 0), and a single entry of weight +-1 gives a itself. Every
  other log|S| is transcendental (Lindemann-Weierstrass: S is a nonzero sum of
  distinct exponentials of rationals with rational weights, and log of an algebraic
  number other than 1 is transcendental).
- softmax: a slice whose finite entries are all equal gives 1/k there (0 at -inf).
  Every other output, e^(x_i) / sum_j e^(x_j) with at least two distinct
  exponents, is transcendental.

Error model, with u = 10^(1 - P) bounding each decimal operation's relative error
(decimal's exp, ln, division and sums round correctly, to within half of that):
d_j = a_j - m is rounded once (|d_j| u), e^(d_j) adds u and multiplies d_j's error
into a relative one, the weight and the product add 2u, and the sum of n terms adds
n u of the sum of magnitudes A; so R = sum_{j not at m} w_j e^(d_j) is within
(max|d_j| + n + 4) u A of its value. log|S| = log|w_m| + log1p(R / w_m) (w_m, the
maximal entry's summed weight, is exact), log1p by its series where |z| is small,
and every step's error is carried into the radius. Terms below e^-(10^6) relative
to the maximum are not computed: their magnitudes are added to the radius.

Nothing here uses the oracle (reference/): the judge and the judged share no code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, getcontext, localcontext
from fractions import Fraction

__all__ = ["FORMATS", "logsumexp_slice", "round_to", "softmax_slice"]

# (precision, exponent of the smallest normal, of the largest finite)
FORMATS = {
    "float16": (11, -14, 15),
    "bfloat16": (8, -126, 127),
    "float32": (24, -126, 127),
    "float64": (53, -1022, 1023),
}

_START_DIGITS = 40
_MAX_DIGITS = 40 * 2**9  # 20,480 digits; beyond it the loop reports, never guesses
_FAR = 10**6  # terms below e^-_FAR of the maximum go to the radius only
# Calls that needed more than the first precision (for the statistics in the tests)
stats = {"slices": 0, "retries": 0}


def _context(digits: int) -> Context:
    return Context(prec=digits, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])


@functools.lru_cache(maxsize=1)
def _far_unit() -> Decimal:
    """2^-1442695 (to 40 digits): above e^-10^6 = 2^-1442695.04 by 2.8%."""
    with localcontext(_context(40)):
        return Decimal(2) ** -1442695


def _exponent2(a: Fraction) -> int:
    """floor(log2(a)) for a > 0, exactly."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if a < Fraction(2) ** e:
        e -= 1
    elif a >= Fraction(2) ** (e + 1):
        e += 1
    return e


def round_to(q: Fraction, name: str, negative_zero: bool = False) -> float:
    """q rounded to nearest, ties to even, in format ``name``, as a Python float (every
    value of the four formats is one). A nonzero q too small for the format gives a
    zero of q's sign; q == 0 gives -0.0 where ``negative_zero``; beyond the overflow
    threshold, an infinity."""
    p, emin, emax = FORMATS[name]
    if q == 0:
        return -0.0 if negative_zero else 0.0
    a = abs(q)
    e = max(_exponent2(a), emin)
    ulp = Fraction(2) ** (e - p + 1)
    v = round(a / ulp) * ulp  # Fraction's round(): to nearest, ties to even
    out = math.inf if v >= Fraction(2) ** (emax + 1) else float(v)
    return out if q > 0 else -out


def _decide(lo_q: Fraction, hi_q: Fraction, name: str) -> float | None:
    """The rounding of every value in [lo_q, hi_q], or None where the ends round
    differently (a zero's sign included)."""
    lo = round_to(lo_q, name)
    hi = round_to(hi_q, name)
    if lo != hi or math.copysign(1.0, lo) != math.copysign(1.0, hi):
        return None
    return lo


def _dec(q: Fraction) -> Decimal:
    """q in the current context (rounded once)."""
    return Decimal(q.numerator) / Decimal(q.denominator)


def _log1p(z: Decimal, u: Fraction) -> tuple[Decimal, Fraction]:
    """log1p(z) for z > -1 and its error bound (beyond z's own), in the current
    context: the series where |z| is below 10^-8, else ln(1 + z) with the sum formed
    to enough extra digits that it loses nothing."""
    az = abs(z)
    if az < Decimal("1e-8"):
        total, power, i = Decimal(0), z, 1
        limit = az * Decimal(u.numerator) / Decimal(u.denominator)
        while abs(power) / i > limit:
            total += power / i if i % 2 else -power / i
            power *= z
            i += 1
        # the remaining terms are below 2 |first omitted| (|z| < 1/2); each sum adds u
        return total, Fraction(abs(power)) * 2 + 2 * u * i * Fraction(az)
    ctx = _context(getcontext().prec + 10 + max(0, -z.adjusted()))
    with localcontext(ctx):
        value = (1 + z).ln()
    value = +value  # rounded to the caller's precision
    return value, 4 * u * (abs(Fraction(value)) + 1)


class _LogSum:
    """log|S| = m + log|w_m| + log1p(R / w_m) for one slice at one precision, as exact
    rational bounds lo <= log|S| <= hi; sign is S's (None where the bounds hide it).
    """

    def __init__(self, groups: dict[float, Fraction], digits: int) -> None:
        self.m = max(groups)
        w_m = groups[self.m]
        u = Fraction(10) ** (1 - digits)
        far_up, far_down = Fraction(0), Fraction(0)  # by the sign of w_m, then of S
        with localcontext(_context(digits)):
            R, A, dmax = Decimal(0), Decimal(0), 0.0
            md = Decimal(self.m)
            for a, w in groups.items():
                if a == self.m:
                    continue
                d = Decimal(a) - md
                if d < -_FAR:  # below e^-10^6: only its bound, on its side
                    if (w > 0) == (w_m > 0):
                        far_up += abs(w)
                    else:
                        far_down += abs(w)
                    continue
                t = _dec(w) * d.exp()
                R += t
                A += abs(t)
                dmax = max(dmax, -float(d))
            n = len(groups)
            r_err = (Fraction(dmax) + n + 4) * u * Fraction(A) * (1 + 2 * u)
            # z = R / w_m, and its error
            zd = R / _dec(w_m)
            z_err = (r_err / abs(w_m)) * (1 + 4 * u) + 2 * u * abs(Fraction(zd))
            one_plus = 1 + Fraction(zd)  # S / w_m without the far terms, within z_err
            unit = Fraction(_far_unit()) / abs(w_m) if far_up or far_down else Fraction(0)
            far = (far_up + far_down) * unit
            if abs(one_plus) <= z_err + far:
                self.sign = None
                self.lo = self.hi = Fraction(0)  # (unused without a sign)
                return
            self.sign = (1 if one_plus > 0 else -1) * (1 if w_m > 0 else -1)
            if one_plus < 0:  # the far terms on w_m's side shrink |S|
                far_up, far_down = far_down, far_up
            if -1 < zd < 1:
                log1p, l_err = _log1p(zd, u)
            else:  # |1 + z| rounded once, |1 + z| > z_err >= 0
                log1p = abs(1 + zd).ln()
                l_err = 4 * u * (abs(Fraction(log1p)) + 1)
            # z's error through log1p: |dz| / (|1 + z| - |dz|)
            low = abs(one_plus) - z_err  # > far
            l_err += z_err / low
            aw = abs(w_m)
            lnw = Decimal(0) if aw == 1 else _dec(aw).ln()
            lnw_err = Fraction(0) if aw == 1 else 4 * u * (abs(Fraction(lnw)) + 1)
        center = Fraction(self.m) + Fraction(lnw) + Fraction(log1p)
        # the far terms: log(1 + t) <= t above, log(1 - t) >= -t / (1 - t) below
        self.hi = center + l_err + lnw_err + far_up * unit / low
        self.lo = center - l_err - lnw_err - far_down * unit / (low - far_down * unit)


def _groups(a: Sequence[float], b: Sequence[float] | None) -> dict[float, Fraction]:
    """Entries with equal a merged, weights summed exactly; -inf entries, zero
    weights and groups whose weights cancel left out."""
    groups: dict[float, Fraction] = {}
    for i, ai in enumerate(a):
        w = Fraction(1) if b is None else Fraction(b[i])
        if ai == -math.inf or w == 0:
            continue
        key = ai + 0.0  # -0.0 and +0.0 merged
        groups[key] = groups.get(key, Fraction(0)) + w
    return {k: w for k, w in groups.items() if w != 0}


def logsumexp_slice(
    a: Sequence[float], b: Sequence[float] | None, name: str
) -> tuple[float, float]:
    """(RN(log|S|), sign of S) in format ``name`` for one slice of finite or -inf a
    and finite b (b None: unit weights)."""
    stats["slices"] += 1
    return _log_sum(_groups(a, b), name)


def _log_sum(groups: dict[float, Fraction], name: str) -> tuple[float, float]:
    if not groups:
        return -math.inf, 0.0
    m = max(groups)
    w_m = groups[m]
    sign_m = math.copysign(1.0, w_m)
    if len(groups) == 1 and abs(w_m) == 1:  # log|w e^a| = a exactly (+0 for -0)
        return round_to(Fraction(m), name), sign_m
    if m == 0 and abs(w_m) == 1 and all(a < -_FAR for a in groups if a != m):
        # log|S| = log1p(F / w_m), F the far terms' sum: below e^-10^6, a zero of
        # F w_m's sign in every format; F's sign is the far terms' own logsumexp's
        far_sign = _log_sum({a: w for a, w in groups.items() if a != m}, name)[1]
        return math.copysign(0.0, far_sign * sign_m), sign_m
    digits = _START_DIGITS
    while digits <= _MAX_DIGITS:
        ls = _LogSum(groups, digits)
        if ls.sign is not None:
            value = _decide(ls.lo, ls.hi, name)
            if value is not None:
                return value, float(ls.sign)
        digits *= 2
        stats["retries"] += 1
    raise ArithmeticError(f"logsumexp undecided at {_MAX_DIGITS} digits: {groups}")


def softmax_slice(x: Sequence[float], name: str, which: Sequence[int] | None = None) -> list[float]:
    """RN(softmax(x)_i) in format ``name`` for one slice of finite or -inf entries (at
    least one finite), at the indices ``which`` (all by default)."""
    idx = list(range(len(x))) if which is None else list(which)
    groups = _groups(x, None)
    stats["slices"] += 1
    out: dict[int, float] = {}
    for i in idx:
        if x[i] == -math.inf:
            out[i] = 0.0
    if len(groups) == 1:  # every finite entry equal: 1/k
        ((_, k),) = groups.items()
        for i in idx:
            out.setdefault(i, round_to(1 / k, name))
        return [out[i] for i in idx]
    digits = _START_DIGITS // 2
    while len(out) < len(idx):
        digits *= 2
        stats["retries"] += digits > _START_DIGITS
        if digits > _MAX_DIGITS:
            raise ArithmeticError(f"softmax undecided at {_MAX_DIGITS} digits: {list(x)}")
        ls = _LogSum(groups, digits)  # (weights positive: its sign is known)
        u = Fraction(10) ** (1 - digits)
        for i in idx:
            if i in out:
                continue
            # the output's log lies in [g_lo, g_hi]; exp is increasing
            g_lo, g_hi = Fraction(x[i]) - ls.hi, Fraction(x[i]) - ls.lo
            if g_hi < -800:  # below e^-800 < 2^-1154: +0 in every format
                out[i] = 0.0
                continue
            with localcontext(_context(digits)):
                v_lo, v_hi = _dec(g_lo).exp(), _dec(g_hi).exp()
            # each end: g rounded to decimal (|g| u) and exp's rounding (u)
            lo = Fraction(v_lo) * (1 - 2 * u * (abs(g_lo) + 1))
            hi = Fraction(v_hi) * (1 + 2 * u * (abs(g_hi) + 1))
            value = _decide(lo, hi, name)
            if value is not None:
                out[i] = value
    return [out[i] for i in idx]
