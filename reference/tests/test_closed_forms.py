"""Closed forms: all-equal slices give -log n; two-element slices give
-log1p(exp(-d)) and -d - log1p(exp(-d))."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from reference import FORMATS, evaluate, log_softmax

from ._corpus import rounded

ENGINES = ["arb", "mpmath"]


def _rn_neg_log(n: int, fmt) -> float:
    with mpmath.workprec(4 * (fmt.precision + 64)):
        return rounded(fmt, -mpmath.log(n))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_all_equal_slices(name, engine):
    fmt = FORMATS[name]
    ns = [1, 2, 3, 5, 7, 10, 64, 100, 1000, 4097, 65536]
    for n in ns:
        for c in [0.0, -3.5, 1e4, float(np.ldexp(1.0, fmt.qmin))]:
            x = np.full(n, c).astype(fmt.dtype)
            got = log_softmax(x, engine=engine)
            want = _rn_neg_log(n, fmt) if n > 1 else 0.0
            assert got.dtype == fmt.dtype
            assert np.all(got.astype(np.float64) == want), (name, n, c)


@pytest.mark.parametrize("name", list(FORMATS))
def test_all_equal_slice_of_2_20(name):
    fmt = FORMATS[name]
    n = 1 << 20
    got = log_softmax(np.full(n, 2.0, dtype=fmt.dtype))
    assert np.all(got.astype(np.float64) == _rn_neg_log(n, fmt))


def _gaps(fmt) -> list[float]:
    """d from 0 to beyond -ln(smallest subnormal), densest where outputs saturate."""
    neg_ln_tiny = -fmt.qmin * np.log(2)
    neg_ln_eps = (fmt.precision - 1) * np.log(2)
    g = [0.0, 2.0**-30, 1e-5, 0.5, 1.0, 2.0, 10.0]
    g += list(np.linspace(neg_ln_eps - 2, neg_ln_eps + 2, 9))
    g += list(np.linspace(neg_ln_tiny - 3, neg_ln_tiny + 3, 13))
    g += [2 * neg_ln_tiny, 1e5, fmt.max_finite / 4]
    return [v for v in g if v <= fmt.max_finite]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_two_element_slices(name, engine):
    fmt = FORMATS[name]
    gaps = np.array(_gaps(fmt)).astype(fmt.dtype).astype(np.float64)
    x = np.stack([np.zeros_like(gaps), -gaps], axis=1).astype(fmt.dtype)
    res = evaluate(x, axis=1, engine=engine)
    with mpmath.workprec(4 * (fmt.precision + 64) + 64):
        for i, d in enumerate(gaps.tolist()):
            d = mpmath.mpf(d)
            lp = mpmath.log1p(mpmath.exp(-d)) if d < 1e5 else mpmath.exp(-d)
            assert float(res.expected[i, 0]) == rounded(fmt, -lp), (name, d)
            assert float(res.expected[i, 1]) == rounded(fmt, mpmath.fsub(-d, lp, rounding="f")), (
                name,
                d,
            )
            if d == 0:
                assert res.expected[i, 0] == res.expected[i, 1]
