"""Seeded adversarial rows for the oracle's own tests (the conformance families are
the full version of this)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mpmath
import numpy as np
from numpy.typing import ArrayLike, NDArray

from reference import FORMATS, Format

DTYPES = list(FORMATS)


def rows(fmt: Format, seed: int = 0, n: int = 6) -> Iterator[tuple[str, NDArray[Any]]]:
    """(name, row) pairs in fmt's dtype: a little of every input family."""
    rng = np.random.default_rng(seed)
    f = np.finfo(np.float32 if fmt.name == "bfloat16" else fmt.dtype)
    big = fmt.max_finite
    tiny = float(np.ldexp(1.0, fmt.qmin))
    cast = fmt.dtype

    def c(a: ArrayLike) -> NDArray[Any]:
        return np.asarray(a, dtype=np.float64).astype(cast)

    yield "normal", c(rng.standard_normal(n))
    yield "wide", c(rng.uniform(-50, 50, n))
    neg_ln_eps = -np.log(float(f.eps))
    neg_ln_tiny_normal = -fmt.emin * np.log(2)  # beyond: the largest output is subnormal
    gaps = [0.5, neg_ln_eps - 1, neg_ln_eps + 1, 2 * neg_ln_eps, neg_ln_tiny_normal + 2]
    for gap in [*gaps, 80.0, 700.0, 746.0, 1e4]:
        yield f"dominant-{gap:g}", c(np.r_[0.0, -gap * (1 + rng.random(n - 1) * 1e-3)])
    yield "ties", c(np.r_[np.full(3, 1.5), rng.standard_normal(n - 3) - 3])
    base = c([1.0])[0]
    nxt = np.nextafter(np.float64(base), np.inf).astype(cast)
    if fmt.name in ("float16", "bfloat16"):
        nxt = c([float(base) + float(np.ldexp(1.0, 1 - fmt.precision))])[0]
    yield "near-ties", np.array([base, nxt, base, nxt], dtype=cast)
    for off in [1e4, 1e7, 1e30, 1e300]:
        if off < big:
            yield f"offset-{off:g}", c(off + np.round(rng.standard_normal(n) * off * 1e-3, 0))
    yield "saturating", c([big, -big, big * 0.5, -big * 0.75])
    yield "subnormal", c(np.r_[tiny * np.arange(1, n), 0.0] * rng.choice([-1, 1], n))
    yield "mixed-scale", c([0.0, tiny, -tiny, 1.0, -1e-3, 2.0**-20])
    yield "pair-far", c([0.0, -big])


def rounded(fmt: Format, y: mpmath.mpf) -> float:
    """RN(y) in fmt, from an mpf (exact rounding of its binary value)."""
    sign, man, exp, _ = y._mpf_
    return fmt.round_dyadic(-int(man) if sign else int(man), int(exp))[0]
