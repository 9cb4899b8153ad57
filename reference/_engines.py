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

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ._formats import Dyadic

__all__ = [
    "ENGINES",
    "Engine",
    "Terms",
    "engine_info",
    "get_engine",
    "log_normaliser",
    "prepare_terms",
    "prepare_terms_block",
    "two_sum",
]

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
    W: int  # fixed-point bits: each term is computed to about 2**-W
    G: int  # drop threshold: a dropped term is below 2**-G = 16 units of 2**-W
    prec: int  # the relative precision asked of log1p(T)

    @property
    def n_kept(self) -> int:
        return int(self.hi.size)


def prepare_terms_block(block: F64Array, prec: int) -> list[Terms]:
    """Terms for each row of ``block`` (rows of finite values and -inf, at least two
    finite per row), vectorized over rows.

    With n terms each within 16 units of 2**-W and W = prec + bitlen(n) + 8, the sum
    T' >= 1 is known to a relative 2**-(prec + 4), and so is log1p(T).
    """
    rows = np.arange(block.shape[0])
    imax = np.argmax(block, axis=1)
    m = block[rows, imax]
    rest = block.copy()
    rest[rows, imax] = -np.inf
    x2 = rest.max(axis=1)
    hi, lo = two_sum(rest, -x2[:, None])
    n_terms = np.count_nonzero(np.isfinite(block), axis=1)
    W = prec + np.frexp(np.maximum(n_terms, 2).astype(np.float64))[1].astype(np.int64) + 8
    G = W - 4
    # exact x_j - x2 <= hi*(1 - 2**-53) since |lo| <= ulp(hi)/2; 0.6932*(1 - 2**-53) >
    # ln 2, so a dropped term is below exp(-G ln 2) = 2**-G. An overflowed hi (-inf)
    # is dropped too (its exact value is below -max_float64), and so are -inf entries,
    # whose terms are exactly zero and are not counted.
    keep = hi > -0.6932 * G[:, None]
    n_dropped = n_terms - 1 - np.count_nonzero(keep, axis=1)
    return [
        Terms(
            float(m[i]),
            float(x2[i]),
            hi[i][keep[i]],
            lo[i][keep[i]],
            int(n_dropped[i]),
            int(W[i]),
            int(G[i]),
            prec,
        )
        for i in range(block.shape[0])
    ]


def prepare_terms(values: F64Array, prec: int) -> Terms:
    """Terms of one slice of >= 2 finite float64 values."""
    return prepare_terms_block(values[None, :], prec)[0]


class Engine(Protocol):
    name: str

    def log_normaliser_terms(self, t: Terms) -> tuple[Dyadic, Dyadic]:
        """``(lo, hi)`` enclosing log1p(T) for prepared terms."""
        ...


def log_normaliser(engine: Engine, values: F64Array, prec: int) -> tuple[Dyadic, Dyadic]:
    """``(lo, hi)`` enclosing log(sum(exp(values - max(values)))), relative width about
    2**-prec, for a slice of at least 2 finite float64 values."""
    return engine.log_normaliser_terms(prepare_terms(values, prec))


def _fixed_point(values: F64Array, W: int) -> list[int]:
    """floor(v * 2**W) for each float64 v, as Python ints (exact)."""
    frac, ex = np.frexp(values)
    man = np.ldexp(frac, 53).astype(np.int64).tolist()
    shift = (ex.astype(np.int64) - 53 + W).tolist()
    return [mi << s if s >= 0 else mi >> -s for mi, s in zip(man, shift, strict=True)]


class _ExpTable:
    """exp(-u) in fixed point for 0 <= u <= umax: three look-ups on the top 24 bits of
    u (steps 2**-8, 2**-16, 2**-24) and a short Taylor polynomial for the rest.

    Tables carry 24 guard bits: the first is built by repeated multiplication (error
    <= 2k units of 2**-(W+24) after k steps, below 1/256 unit of 2**-W for k < 2**15);
    the others come from mpmath's exp. A result is within 4 units of 2**-W.
    """

    GUARD = 24

    def __init__(self, W: int, umax: float) -> None:
        from mpmath.libmp import libelefun as le
        from mpmath.libmp import libmpf as lm

        self.W = W
        WP = self.WP = W + self.GUARD
        one = 1 << WP

        def exp_neg(num: int, den_bits: int) -> int:
            return int(lm.to_fixed(le.mpf_exp(lm.from_man_exp(-num, -den_bits), WP + 10), WP))

        step = exp_neg(1, 8)
        t1 = [one]
        for _ in range(int(umax * 256) + 2):
            t1.append(t1[-1] * step >> WP)
        self.t1 = t1
        self.t2 = [exp_neg(j, 16) for j in range(256)]
        self.t3 = [exp_neg(i, 24) for i in range(256)]
        # Taylor terms for r < 2**-24 until the remainder is below 2**-(WP + 2).
        n = 1
        while 24 * (n + 1) + math.lgamma(n + 2) / math.log(2) < WP + 2:
            n += 1
        self.coef = [(-1) ** k * (one // math.factorial(k)) for k in range(n + 1)]

    def sum_exp_neg(self, us: list[int]) -> int:
        """sum(exp(-U / 2**W) * 2**W) for fixed-point arguments U >= 0."""
        W, WP, t1, t2, t3 = self.W, self.WP, self.t1, self.t2, self.t3
        rev = self.coef[::-1]
        top, rest = rev[0], rev[1:]
        mask = (1 << (W - 24)) - 1
        s = 0
        for U in us:
            R = (U & mask) << 24
            acc = top
            for c in rest:
                acc = c + (R * acc >> WP)
            v = t1[U >> (W - 8)] * t2[(U >> (W - 16)) & 255] >> WP
            s += (v * t3[(U >> (W - 24)) & 255] >> WP) * acc >> WP
        return s >> self.GUARD


@functools.lru_cache(maxsize=32)
def _exp_table(W: int, G: int) -> _ExpTable:
    return _ExpTable(W, 0.6932 * G + 1)


class MpmathEngine:
    """Fixed-point mpmath: terms are Python ints, no mpf object per element. Each
    exp comes from tables of mpmath values and a short polynomial (for the usual
    precisions) or from mpmath's ``exp_fixed`` (beyond 1024 bits)."""

    name = "mpmath"
    # Bound on |computed - exp(d) * 2**W| per term in units of 2**-W, argument
    # flooring included: 4 for the tables, a few for exp_fixed, which carries sqrt(W)
    # guard bits (reference/tests/test_engines.py measures both).
    TERM_ERROR_UNITS = 16
    TABLE_MAX_BITS = 1024  # beyond: Ziv escalations, rare; tables would be large

    def log_normaliser_terms(self, t: Terms) -> tuple[Dyadic, Dyadic]:
        from mpmath.libmp import libelefun as le
        from mpmath.libmp import libmpf as lm

        W, prec = t.W, t.prec
        args = [-(a + b) for a, b in zip(_fixed_point(t.hi, W), _fixed_point(t.lo, W), strict=True)]
        if 48 <= W <= self.TABLE_MAX_BITS:
            s = _exp_table(W, t.G).sum_exp_neg(args)
        else:
            ln2 = le.ln2_fixed(W)
            s = sum(le.exp_fixed(-a, W, ln2) for a in args)
        err = self.TERM_ERROR_UNITS * t.n_kept + (t.n_dropped << (W - t.G))

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

    def log_normaliser_terms(self, t: Terms) -> tuple[Dyadic, Dyadic]:
        import flint

        W = t.W
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
