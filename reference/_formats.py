"""Binary floating-point formats and exact round-to-nearest-even on dyadic rationals.

A dyadic rational is a pair of Python ints ``(man, exp)`` standing for ``man * 2**exp``.
Everything here is exact integer arithmetic; no float rounding is involved until a
finished, representable value is handed to NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

import ml_dtypes
import numpy as np

__all__ = [
    "FORMATS",
    "Dyadic",
    "Format",
    "dyadic_add",
    "dyadic_floor_log2",
    "dyadic_from_float",
    "dyadic_to_float",
    "format_of",
]

Dyadic: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class Format:
    """An IEEE-754-style binary format: ``precision`` significand bits (hidden bit
    included), normal exponents ``emin..emax``, gradual underflow, no +-0 distinction
    in magnitude."""

    name: str
    precision: int
    emin: int
    emax: int
    dtype: np.dtype[Any]

    @property
    def qmin(self) -> int:
        """Exponent of the smallest subnormal (the finest quantum)."""
        return self.emin - self.precision + 1

    @property
    def max_finite(self) -> float:
        return math.ldexp((1 << self.precision) - 1, self.emax - self.precision + 1)

    @property
    def eps(self) -> float:
        """Machine epsilon, 2**(1 - precision)."""
        return math.ldexp(1.0, 1 - self.precision)

    def quantum_exponent(self, e: int) -> int:
        """Exponent of ulp(y) for ``floor(log2|y|) == e`` (docs/specification.md)."""
        return max(e, self.emin) - self.precision + 1

    def round_dyadic(self, man: int, exp: int) -> tuple[float, int]:
        """Round ``man * 2**exp`` to nearest, ties to even, in this format.

        Returns ``(value, ulp_exp)``: the rounded value as a Python float (exact; +-inf
        on overflow, a signed zero on underflow) and the exponent of ``ulp(y)`` of the
        exact value y.
        """
        if man == 0:
            return 0.0, self.qmin
        neg = man < 0
        m = -man if neg else man
        e = m.bit_length() - 1 + exp  # floor(log2 |y|)
        q = self.quantum_exponent(e)
        if e < q - 1:  # |y| < quantum / 2: rounds to zero, whatever the tail
            return (-0.0 if neg else 0.0), q
        shift = q - exp
        if shift <= 0:
            n = m << -shift
        else:
            n = m >> shift
            rem = m - (n << shift)
            half = 1 << (shift - 1)
            if rem > half or (rem == half and n & 1):
                n += 1
        # n * 2**q >= 2**(emax + 1) overflows; below it every multiple of 2**q fits.
        value = math.inf if n.bit_length() + q - 1 > self.emax else math.ldexp(n, q)
        return (-value if neg else value), q


_F16 = Format("float16", 11, -14, 15, np.dtype(np.float16))
_BF16 = Format("bfloat16", 8, -126, 127, np.dtype(ml_dtypes.bfloat16))
_F32 = Format("float32", 24, -126, 127, np.dtype(np.float32))
_F64 = Format("float64", 53, -1022, 1023, np.dtype(np.float64))

FORMATS: dict[str, Format] = {f.name: f for f in (_F16, _BF16, _F32, _F64)}


def format_of(spec: Any) -> Format:
    """The Format for a dtype, a dtype name, an array or a Format.

    Integer and bool dtypes map to float64 (they are computed as float64); anything
    else (complex, object, extended precision) is a TypeError naming the dtype.
    """
    if isinstance(spec, Format):
        return spec
    if isinstance(spec, str) and spec in FORMATS:
        return FORMATS[spec]
    try:
        has_dtype = hasattr(spec, "dtype") and not isinstance(spec, type | np.dtype)
        dt = np.dtype(spec.dtype if has_dtype else spec)
    except TypeError as exc:
        raise TypeError(f"cannot interpret {spec!r} as a floating-point format") from exc
    if dt.kind in "biu":
        return _F64
    for f in FORMATS.values():
        if dt == f.dtype:
            return f
    if dt.kind == "c":
        raise TypeError(f"log_softmax is defined for real input; got complex dtype {dt.name}")
    raise TypeError(
        f"unsupported dtype {dt.name}: expected float16, bfloat16, float32, float64, "
        "integer or bool"
    )


def dyadic_add(a: Dyadic, b: Dyadic) -> Dyadic:
    """a + b exactly (subtract with ``(-man, exp)``)."""
    e = min(a[1], b[1])
    return (a[0] << (a[1] - e)) + (b[0] << (b[1] - e)), e


def dyadic_floor_log2(v: Dyadic) -> int:
    """floor(log2 |v|) of a nonzero dyadic."""
    return abs(v[0]).bit_length() - 1 + v[1]


def dyadic_from_float(v: float) -> Dyadic:
    """Exact (man, exp) of a finite Python float."""
    if v == 0.0:
        return 0, 0
    frac, e = math.frexp(v)
    return int(math.ldexp(frac, 53)), e - 53


def dyadic_to_float(man: int, exp: int, direction: str = "n") -> float:
    """``man * 2**exp`` as a float64: to nearest (``"n"``) or an upper bound of the
    magnitude (``"u"``; never zero for a nonzero input)."""
    value, _ = _F64.round_dyadic(man, exp)
    if direction == "n" or man == 0:
        return value
    mag = abs(value)
    if mag == 0.0:
        return math.ulp(0.0)
    return math.nextafter(mag, math.inf)
