"""Slow tier (``pytest -m slow``): exhaustive pairs and larger engine corpora."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from reference import FORMATS, evaluate
from reference._direct import exact_values

from ._corpus import rounded
from .test_engines import _bits, _random_matrix

pytestmark = pytest.mark.slow


def _every_finite(name: str) -> np.ndarray:
    fmt = FORMATS[name]
    v = np.arange(1 << 16, dtype=np.uint16).view(fmt.dtype)
    return v[np.isfinite(v.astype(np.float32))]


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_exhaustive_pairs_zero_v(name):
    """[0, v] for every finite v of the format: both engines bit-identical, and equal
    to the definition at 4x precision."""
    fmt = FORMATS[name]
    v = _every_finite(name)
    x = np.stack([np.zeros_like(v), v], axis=1)
    a = evaluate(x, axis=1, engine="arb")
    b = evaluate(x, axis=1, engine="mpmath")
    np.testing.assert_array_equal(_bits(a.expected), _bits(b.expected))
    np.testing.assert_allclose(a.residual, b.residual, rtol=0, atol=2**-47)
    prec = 4 * (fmt.precision + 64)
    got = a.expected.astype(np.float64)
    with mpmath.workprec(prec):
        for i in range(0, x.shape[0]):
            ys = exact_values(x[i].astype(np.float64), prec)
            assert [rounded(fmt, y) for y in ys] == got[i].tolist(), x[i]


@pytest.mark.parametrize("name", list(FORMATS))
def test_engines_bit_identical_large_corpus(name):
    fmt = FORMATS[name]
    for seed in range(100, 130):
        x = _random_matrix(fmt, seed)
        a = evaluate(x, axis=-1, engine="arb")
        b = evaluate(x, axis=-1, engine="mpmath")
        np.testing.assert_array_equal(_bits(a.expected), _bits(b.expected))
        np.testing.assert_allclose(a.residual, b.residual, rtol=0, atol=2**-47)
