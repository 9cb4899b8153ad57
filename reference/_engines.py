"""Engines: the log of the normaliser of one slice, as a certified interval.

For a slice with maximum m (at one index i*), second largest entry x2 and
d_j = x_j - m, the oracle needs

    L = log(sum_j exp(d_j)) = log1p(T),   T = exp(x2 - m) * T',
    T' = sum_{j != i*} exp(x_j - x2)  in [1, n - 1].

Writing T relative to its largest term keeps every term in (0, 1] so a fixed number of
bits below that term is enough, however far the slice is from its maximum. Terms whose
exponent is below -G*ln2 contribute less than 2**-G each and are dropped; their total
is added to the error bound, never ignored.

An engine returns ``(lo, hi)``, dyadic rationals with ``lo <= L <= hi`` and a relative
width of about 2**-prec. The mpmath engine's bound trusts mpmath's elementary
functions to stay within a few units of their last place (they carry >= 14 guard bits);
the Arb engine's bound is rigorous ball arithmetic. Tests hold the two to identical
rounded results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ._formats import Dyadic

__all__ = ["ENGINES", "Engine", "engine_info", "get_engine", "two_sum"]

F64Array = NDArray[np.float64]


def two_sum(a: F64Array, b: F64Array | float) -> tuple[F64Array, F64Array]:
    """Knuth's TwoSum: s + e == a + b exactly (where s is finite)."""
    with np.errstate(all="ignore"):
        s = a + b
        bb = s - a
        e = (a - (s - bb)) + (b - bb)
    return s, e


@dataclass(frozen=True)
class Terms:
    """The prepared terms of T' for one slice at one precision."""

    m: float  # the slice maximum
    x2: float  # the largest entry other than one maximal entry
    hi: F64Array  # x_j - x2 == hi + lo exactly, for the kept terms
    lo: F64Array
    n_dropped: int  # terms below 2**-G each
    G: int


def prepare_terms(values: F64Array, prec: int) -> Terms:
    """Split a slice of >= 2 finite float64 values into kept terms and a dropped count."""
    imax = int(np.argmax(values))
    rest = np.delete(values, imax)
    x2 = float(rest.max())
    hi, lo = two_sum(rest, -x2)
    G = prec + max(values.size, 2).bit_length() + 10
    # exact x_j - x2 <= hi*(1 - 2**-53) since |lo| <= ulp(hi)/2; 0.6932*(1 - 2**-53) >
    # ln 2, so a dropped term is below exp(-G ln 2) = 2**-G. An overflowed hi (-inf)
    # is dropped too: its exact value is below -max_float64.
    keep = hi > -0.6932 * G
    n_dropped = int(rest.size - np.count_nonzero(keep))
    return Terms(float(values[imax]), x2, hi[keep], lo[keep], n_dropped, G)


class Engine(Protocol):
    name: str

    def log_normaliser(self, values: F64Array, prec: int) -> tuple[Dyadic, Dyadic]:
        """``(lo, hi)`` enclosing log(sum(exp(values - max(values)))), relative width
        about 2**-prec, for a slice of at least 2 finite float64 values."""
        ...


def _fixed_point(values: F64Array, W: int) -> list[int]:
    """floor(v * 2**W) for each float64 v, as Python ints (exact)."""
    frac, ex = np.frexp(values)
    man = np.ldexp(frac, 53).astype(np.int64).tolist()
    shift = (ex.astype(np.int64) - 53 + W).tolist()
    return [mi << s if s >= 0 else mi >> -s for mi, s in zip(man, shift, strict=True)]


class MpmathEngine:
    """Fixed-point mpmath: each term is one ``exp_fixed`` on a Python int, so no mpf
    object is built per element."""

    name = "mpmath"
    # Bound on |exp_fixed(D, W) - exp(D / 2**W) * 2**W| in units of 2**-W, plus two
    # units for flooring the argument. exp_basecase carries sqrt(W) guard bits; the
    # observed error is below 4 units (reference/tests/test_engines.py checks it).
    TERM_ERROR_UNITS = 66

    def log_normaliser(self, values: F64Array, prec: int) -> tuple[Dyadic, Dyadic]:
        from mpmath.libmp import libelefun as le
        from mpmath.libmp import libmpf as lm

        t = prepare_terms(values, prec)
        W = t.G + 16
        ln2 = le.ln2_fixed(W)
        exp_fixed = le.exp_fixed
        args = [a + b for a, b in zip(_fixed_point(t.hi, W), _fixed_point(t.lo, W), strict=True)]
        s = 0
        for a in args:
            s += exp_fixed(a, W, ln2)
        err = self.TERM_ERROR_UNITS * len(args) + (t.n_dropped << (W - t.G))

        wp = prec + 30
        rel = lm.from_man_exp(1, -(prec + 20))  # bound on mpmath's relative error
        one = lm.fone
        d2 = lm.mpf_sub(lm.from_float(t.x2), lm.from_float(t.m), 0)  # exact
        if d2 == lm.fzero:
            e2_lo = e2_hi = one
        else:
            e2 = le.mpf_exp(d2, wp)
            e2_lo = lm.mpf_mul(e2, lm.mpf_sub(one, rel), wp, "d")
            e2_hi = lm.mpf_mul(e2, lm.mpf_add(one, rel), wp, "u")
        T_lo = lm.mpf_mul(lm.from_man_exp(s - err, -W), e2_lo, wp, "d")
        T_hi = lm.mpf_mul(lm.from_man_exp(s + err, -W), e2_hi, wp, "u")

        if lm.mpf_cmp(T_hi, lm.from_man_exp(1, -wp)) < 0:
            # log1p(T) in [T (1 - T), T] for 0 <= T < 1; T**2 is below the precision.
            L_lo = lm.mpf_mul(T_lo, lm.mpf_sub(one, T_lo, wp, "d"), wp, "d")
            L_hi = T_hi
        else:
            L_lo = le.mpf_log(lm.mpf_add(one, T_lo, 0), wp, "d")
            L_hi = le.mpf_log(lm.mpf_add(one, T_hi, 0), wp, "u")
            L_lo = lm.mpf_mul(L_lo, lm.mpf_sub(one, rel), wp, "d")
            L_hi = lm.mpf_mul(L_hi, lm.mpf_add(one, rel), wp, "u")
        return _mpf_to_dyadic(L_lo), _mpf_to_dyadic(L_hi)


def _mpf_to_dyadic(v: tuple[int, int, int, int]) -> Dyadic:
    sign, man, exp, _ = v
    return (-int(man) if sign else int(man)), int(exp)


class ArbEngine:
    """Arb ball arithmetic (python-flint): every bound is rigorous."""

    name = "arb"
    # Enough bits to hold x2 - m exactly for any two float64 values.
    EXACT_F64_DIFF_BITS = 2200

    def log_normaliser(self, values: F64Array, prec: int) -> tuple[Dyadic, Dyadic]:
        import flint

        t = prepare_terms(values, prec)
        W = t.G + 16
        arb = flint.arb
        ctx = flint.ctx
        saved = ctx.prec
        try:
            ctx.prec = W
            s = arb(0)
            for h, lo in zip(t.hi.tolist(), t.lo.tolist(), strict=True):
                a = arb(h)
                if lo:
                    a += lo
                s += a.exp()
            if t.n_dropped:
                s += arb(0, math.ldexp(t.n_dropped, -t.G))
            ctx.prec = self.EXACT_F64_DIFF_BITS
            d2 = arb(t.x2) - arb(t.m)
            # exp of a large argument loses log2|d2| bits in argument reduction
            mag = math.frexp(t.x2 - t.m)[1] if math.isfinite(t.x2 - t.m) else 1025
            ctx.prec = W + max(mag, 0)
            e2 = d2.exp()
            ctx.prec = W
            L = (e2 * s).log1p()
        finally:
            ctx.prec = saved
        mid_m, mid_e = (int(v) for v in L.mid().man_exp())
        rad_m, rad_e = (int(v) for v in L.rad().man_exp())
        e = min(mid_e, rad_e)
        mid_m <<= mid_e - e
        rad_m <<= rad_e - e
        return (max(mid_m - rad_m, 0), e), (mid_m + rad_m, e)


ENGINES: dict[str, Callable[[], Engine]] = {"mpmath": MpmathEngine, "arb": ArbEngine}


def _has_flint() -> bool:
    try:
        import flint  # noqa: F401
    except ImportError:
        return False
    return True


def get_engine(name: str | Engine | None = None) -> Engine:
    """An engine by name: ``"arb"``, ``"mpmath"`` or ``"auto"``/None (Arb when
    python-flint is installed; the environment variable REFERENCE_ENGINE overrides)."""
    if name is None or name == "auto":
        name = os.environ.get("REFERENCE_ENGINE", "auto")
        if name == "auto":
            name = "arb" if _has_flint() else "mpmath"
    if not isinstance(name, str):
        return name
    if name not in ENGINES:
        raise ValueError(f"unknown oracle engine {name!r}; choose one of {sorted(ENGINES)}")
    if name == "arb" and not _has_flint():
        raise ImportError("the 'arb' engine needs python-flint (pip install python-flint)")
    return ENGINES[name]()


def engine_info(name: str | None = None) -> dict[str, str]:
    """What the oracle runs on: engine, mpmath version and backend, python-flint."""
    import mpmath
    from mpmath.libmp import BACKEND

    info = {
        "engine": get_engine(name).name,
        "mpmath": mpmath.__version__,
        "mpmath_backend": BACKEND,
    }
    try:
        import flint

        info["python-flint"] = flint.__version__
    except ImportError:
        info["python-flint"] = "not installed"
    return info
