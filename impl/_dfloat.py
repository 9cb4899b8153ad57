"""Double-word arithmetic in array-API operations: exp, log1p and sums carried as
unevaluated pairs hi + lo, for the formats that have no wider format to hide in
(float64 everywhere; float32 where the device lacks float64).

Everything here is plain elementwise arithmetic, ``take`` on small constant tables
and slicing, with no fused multiply-add, no data-dependent control flow and no
bit casts, so it runs eagerly, under ``jax.jit`` and on any array-API namespace.
Each function states the relative accuracy it is built for; the tests in
``impl/tests`` check them against exact arithmetic.
"""

from __future__ import annotations

import decimal
import functools
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat as compat

__all__ = [
    "Format",
    "const",
    "exp_parts",
    "fast_two_sum",
    "fmt",
    "log1p_dw",
    "pow2",
    "sum_dw",
    "two_prod",
    "two_sum",
]

# exp reduces by ln2 / 2**table_bits: float32 by ln2/64 (r within ln2/128 = 2**-7.5),
# float64 by ln2/1024 (r within 2**-11.5: the cubic term r**3/6 < 2**-37.1, so its
# roundings cost 2**-88.5 of the result; with ln2/64 they cost 2**-76.5)
_TABLE_BITS = {"float32": 6, "float64": 10}


@dataclass(frozen=True)
class Format:
    """Constants of one format, computed exactly at first use."""

    name: str
    precision: int
    emin: int  # exponent of the smallest normal number
    split: float  # Veltkamp: 2**ceil(p/2) + 1
    table_bits: int  # exp's argument reduction by ln2 / 2**table_bits
    c: tuple[float, float, float, float]  # that step, c[0] and c[1] short: k * c[i] exact
    k_max: int  # |k| <= k_max keeps those products exact
    exp_coeffs: tuple[float, ...]  # 1/3!, 1/4!, ... for the cubic-and-up tail
    log1p_coeffs: tuple[float, ...]  # 1/3, -1/4, 1/5, ... for the cubic-and-up tail
    series_below: float  # log1p by its series below this T, Newton above
    p2_range: tuple[int, int]  # pow2's table: 2**q for q in this range (0 below it)

    @property
    def exp_domain(self) -> float:
        """exp_parts takes arguments down to minus this."""
        return self.k_max * math.log(2.0) / (1 << self.table_bits) - 1.0


def _round(value: decimal.Decimal | float, name: str) -> float:
    """value rounded to the format (float64 round to nearest, then float32 if asked)."""
    v = float(value)
    return struct.unpack("f", struct.pack("f", v))[0] if name == "float32" else v


def _short(value: decimal.Decimal, bits: int) -> float:
    """value truncated to ``bits`` significant bits (exact in either format); under
    the caller's decimal context."""
    e = math.floor(math.log2(abs(float(value))))
    scale = decimal.Decimal(2) ** (bits - 1 - e)
    return float(int(value * scale)) * math.ldexp(1.0, -(bits - 1 - e))


@functools.lru_cache(maxsize=2)
def fmt(name: str) -> Format:
    """The constants of ``name`` ("float32" or "float64")."""
    p = {"float32": 24, "float64": 53}[name]
    bits = _TABLE_BITS[name]
    # |k| < 2**k_bits: |d| <= 176 (float32), 2838 (float64)
    k_bits = 14 if name == "float32" else 22
    with decimal.localcontext(decimal.Context(prec=80)):
        c = decimal.Decimal(2).ln() / (1 << bits)
        c1 = _short(c, p - k_bits)
        c2 = _short(c - decimal.Decimal(c1), p - k_bits)
        c3 = _round(c - decimal.Decimal(c1) - decimal.Decimal(c2), name)
        c4 = _round(c - decimal.Decimal(c1) - decimal.Decimal(c2) - decimal.Decimal(c3), name)
    # r**n / n! kept while above 2**(-p - 40) for |r| <= ln2 / 2**(bits + 1): up to
    # r**6/6! in float32 (2**-45.0 / 720), r**7/7! in float64 (2**-80.7 / 5040)
    n_exp = 6 if name == "float32" else 7
    exp_coeffs = tuple(_round(1.0 / math.factorial(i), name) for i in range(3, n_exp + 1))
    # log1p(T) = T - T**2/2 + T**3/3 - ... below series_below (float32 2**-8, float64
    # 2**-12), kept while T**(n-1)/n is above 2**(-p - 16) (float32) and 2**-96
    # (float64). float64's series stops at 2**-12, where its cubic term's roundings
    # (4 ulp of T**3/3 = 2**-25.6 T) and the Newton step's (exp_parts' 2**-88 over
    # L = 2**-12) both stay near 2**-76 of L.
    n_log = 6 if name == "float32" else 9
    log1p_coeffs = tuple(_round((-1.0) ** (i + 1) / i, name) for i in range(3, n_log + 1))
    emax = 127 if name == "float32" else 1023
    return Format(
        name=name,
        precision=p,
        emin=-126 if name == "float32" else -1022,
        split=float((1 << ((p + 1) // 2)) + 1),
        table_bits=bits,
        c=(c1, c2, c3, c4),
        k_max=(1 << k_bits) - 1,
        exp_coeffs=exp_coeffs,
        log1p_coeffs=log1p_coeffs,
        series_below=2.0**-8 if name == "float32" else 2.0**-12,
        p2_range=(-(emax + p + 1), emax),
    )


@functools.lru_cache(maxsize=2)
def _exp_table(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """2**(j/N) = hi + lo for j = 0..N-1 (N = 2**table_bits), good to 2**(-2p)."""
    hi, lo = [], []
    n = 1 << _TABLE_BITS[name]
    with decimal.localcontext(decimal.Context(prec=40)):
        ln2 = decimal.Decimal(2).ln()
        for j in range(n):
            v = (ln2 * j / n).exp()
            h = _round(v, name)
            hi.append(h)
            lo.append(_round(v - decimal.Decimal(h), name))
    return tuple(hi), tuple(lo)


def const(xp: Any, like: Any, value: float) -> Any:
    """A 0-d constant in like's dtype on like's device (strict namespaces insist)."""
    return xp.asarray(value, dtype=like.dtype, device=compat.device(like))


def _table(xp: Any, like: Any, values: tuple[float, ...]) -> Any:
    return xp.asarray(list(values), dtype=like.dtype, device=compat.device(like))


def _lookup(xp: Any, table: Any, index: Any) -> Any:
    """table[index] elementwise for an index array of any shape (``take`` wants 1-D)."""
    flat = xp.reshape(index, (-1,))
    return xp.reshape(xp.take(table, flat, axis=0), index.shape)


def two_sum(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """a + b == hi + lo exactly (finite inputs, no overflow)."""
    hi = a + b
    bb = hi - a
    return hi, (a - (hi - bb)) + (b - bb)


def fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """a + b == hi + lo exactly, for |a| >= |b| or a == 0."""
    hi = a + b
    return hi, b - (hi - a)


def _split(a: Any, f: Format) -> tuple[Any, Any]:
    """Veltkamp: a == hi + lo with both halves short enough to multiply exactly."""
    t = a * f.split
    hi = t - (t - a)
    return hi, a - hi


def two_prod(xp: Any, a: Any, b: Any, f: Format) -> tuple[Any, Any]:
    """a * b == hi + lo exactly (Dekker; no fused multiply-add needed), for products
    and operands far from overflow and underflow."""
    p = a * b
    ah, al = _split(a, f)
    bh, bl = _split(b, f)
    err = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, err


@functools.lru_cache(maxsize=2)
def _pow2_table(name: str) -> tuple[float, ...]:
    lo, hi = fmt(name).p2_range
    return tuple(_round(math.ldexp(1.0, i), name) for i in range(lo, hi + 1))


def pow2(xp: Any, q: Any, like: Any, f: Format) -> Any:
    """2**q for integer-valued float q, exact (0 below the subnormal range, clipped at
    the top of the range): a table, because some namespaces compute pow(2, q) as
    exp(q ln 2)."""
    lo, hi = f.p2_range
    # maximum and minimum, not clip: array_api_compat's Dask clip needs known shapes
    qc = xp.minimum(xp.maximum(q, const(xp, q, float(lo))), const(xp, q, float(hi)))
    index = xp.astype(qc - float(lo), xp.int32)
    return _lookup(xp, _table(xp, like, _pow2_table(f.name)), index)


def exp_parts(xp: Any, dh: Any, dl: Any, f: Format) -> tuple[Any, Any, Any]:
    """exp(dh + dl) == (hi + lo) * 2**q for -exp_domain <= dh <= 0 (176 for float32,
    2838 for float64) and |dl| <= ulp(dh), relative error below 2**(-p - 20) in
    float32 and 2**-86 in float64 (2**-88.5 from the cubic term's roundings). hi + lo
    lies in [0.99, 2.02); q is an integer-valued float <= 0.

    dh = k ln2/N + r (N = 2**table_bits) with ln2/N in four parts (the first two
    products exact, the third made exact), exp(r) by its Taylor series with the
    quadratic term exact, and 2**(j/N) from a table of double-word values.
    """
    c1, c2, c3, c4 = f.c
    n = float(1 << f.table_bits)
    k = xp.round(dh * (n / math.log(2.0)))
    q = xp.floor(k * (1.0 / n))
    j = k - q * n
    r1 = dh - k * c1  # exact: Sterbenz
    rh, rl = two_sum(xp, r1, -(k * c2))  # k * c2 exact
    p3h, p3l = two_prod(xp, k, const(xp, dh, c3), f)
    rh, e2 = two_sum(xp, rh, -p3h)
    rh, e3 = two_sum(xp, rh, dl)
    rl = rl + (e2 + e3) - (p3l + k * c4)
    rh, rl = two_sum(xp, rh, rl)
    # expm1(r) = r + r**2/2 + r**3 (1/6 + r/24 + ...), the quadratic term exact
    s2h, s2l = two_prod(xp, rh, rh, f)
    tail = const(xp, rh, f.exp_coeffs[-1])
    for coeff in reversed(f.exp_coeffs[:-1]):
        tail = tail * rh + coeff
    tail = tail * (s2h * rh)
    ph, pl = two_sum(xp, rh, 0.5 * s2h)
    pl = pl + (rl + (0.5 * s2l + rh * rl + tail))
    ph, pl = fast_two_sum(ph, pl)
    # 2**(j/64) (1 + p)
    index = xp.astype(j, xp.int32)
    th = _lookup(xp, _table(xp, rh, _exp_table(f.name)[0]), index)
    tl = _lookup(xp, _table(xp, rh, _exp_table(f.name)[1]), index)
    mh, ml = two_prod(xp, th, ph, f)
    lo = ml + (th * pl + tl * (1.0 + ph))
    hi, lo2 = fast_two_sum(th, mh)
    hi, lo = fast_two_sum(hi, lo2 + lo)
    return hi, lo, q


def log1p_dw(
    xp: Any, th: Any, tl: Any, f: Format, opaque: Callable[[Any], Any] | None = None
) -> tuple[Any, Any]:
    """log1p(th + tl) == hi + lo, relative error below 2**(-p - 12) in float32 and
    2**-75 in float64, for 0 <= T < 2**60 with |tl| <= ulp(th).

    Below ``series_below`` the series; above, one Newton step on exp(L) = 1 + T from the
    namespace's own log1p: L = L0 + ((1 + T) exp(-L0) - 1), with exp(-L0) double-word
    and the product formed exactly, so the step's own error is ~2**(-2p) and the
    seed's error enters squared.

    ``opaque(a)`` returns ``a`` in a form a compiler cannot see through; the constant
    1 goes through it. XLA rewrites (T + 1) - 1 as T, which turns TwoSum(1, T)'s
    error term into 0 and the Newton step into nothing (38 ULP in float64).
    """
    one = xp.ones_like(th)
    if opaque is not None:
        one = opaque(one)
    small = th < f.series_below
    # series: T - T**2/2 + T**3 (1/3 - T/4 + ...), and tl (1 - T + T**2)
    ts = xp.where(small, th, xp.zeros_like(th))
    tail = const(xp, th, f.log1p_coeffs[-1])
    for coeff in reversed(f.log1p_coeffs[:-1]):
        tail = tail * ts + coeff
    sh, sl = two_prod(xp, ts, ts, f)  # T**2, exact: its half is below T * series_below / 2
    series_h, e = two_sum(xp, ts, -0.5 * sh)
    series_l = e + ((tl - tl * (ts - ts * ts)) - 0.5 * sl + sh * (ts * tail))
    series_h, series_l = fast_two_sum(series_h, series_l)
    # Newton from the seed; T clipped into exp_parts' domain where the series applies
    tn = xp.where(small, one, th)
    seed = xp.log1p(tn)
    yh, yl, q = exp_parts(xp, -seed, xp.zeros_like(seed), f)
    scale = pow2(xp, q, th, f)  # exact: T < 2**60, so 2**q >= 2**-61
    yh, yl = yh * scale, yl * scale
    uh, ul = two_sum(xp, one, tn)
    ul = ul + xp.where(small, xp.zeros_like(tl), tl)
    ph, pl = two_prod(xp, uh, yh, f)
    pl = pl + (uh * yl + ul * yh)
    delta = (ph - one) + pl  # ph - 1 exact: ph lies within a few ulp of 1
    newton_h, newton_l = fast_two_sum(seed, delta)
    return xp.where(small, series_h, newton_h), xp.where(small, series_l, newton_l)


def sum_dw(xp: Any, hi: Any, lo: Any, axis: tuple[int, ...]) -> tuple[Any, Any]:
    """The sum of hi + lo over ``axis`` (keepdims) as a double-word, for
    non-negative terms: a pairwise tree of TwoSums on the high parts, whose rounding
    errors are carried beside them, and a plain sum of the low parts. Relative error
    about n 2**(-2p), independent of any reduction order the namespace would choose.
    """
    shape = hi.shape
    kept = [a for a in range(len(shape)) if a not in axis]
    out_shape = tuple(1 if a in axis else shape[a] for a in range(len(shape)))
    n = math.prod(shape[a] for a in axis)
    lo_sum = xp.sum(lo, axis=axis, keepdims=True)
    if n <= 1:
        return hi if n == 1 else xp.sum(hi, axis=axis, keepdims=True), lo_sum
    s = xp.permute_dims(hi, (*kept, *axis))
    s = xp.reshape(s, (*(shape[a] for a in kept), n))
    width = 1 << (n - 1).bit_length()
    if width != n:
        pad = xp.zeros((*s.shape[:-1], width - n), dtype=s.dtype, device=compat.device(s))
        s = xp.concat([s, pad], axis=-1)
    c = None
    while width > 1:
        width //= 2
        s, err = two_sum(xp, s[..., :width], s[..., width:])
        c = err if c is None else (c[..., :width] + c[..., width:]) + err
    assert c is not None
    return xp.reshape(s, out_shape), xp.reshape(c, out_shape) + lo_sum
