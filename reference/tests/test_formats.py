"""Exact rounding per format: ties to even, subnormals, -0, overflow."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from reference import FORMATS, format_of
from reference._formats import dyadic_from_float, dyadic_to_float

F16, BF16, F32, F64 = (FORMATS[k] for k in ("float16", "bfloat16", "float32", "float64"))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_exact_binary_midpoints_tie_to_even(fmt):
    t = fmt.precision
    # 1 + k*2**-t, the midpoint between 1 + (k-1)/2 ulp... : odd k are exact midpoints
    for k in range(1, 9):
        man, exp = (1 << t) + k, -t  # 1 + k * 2**-t, ulp(1) = 2**(1-t)
        value, q = fmt.round_dyadic(man, exp)
        assert q == 1 - t
        lower = 1 + (k // 2) * 2.0 ** (1 - t)
        if k % 2 == 0:
            assert value == lower
        else:  # a midpoint: the neighbour with an even last bit
            upper = lower + 2.0 ** (1 - t)
            even = lower if (k // 2) % 2 == 0 else upper
            assert value == even
            # a hair above/below the midpoint breaks the tie
            assert fmt.round_dyadic(2 * man + 1, exp - 1)[0] == upper
            assert fmt.round_dyadic(2 * man - 1, exp - 1)[0] == lower


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_subnormal_normal_boundary_and_zero(fmt):
    t, emin = fmt.precision, fmt.emin
    smallest_normal = math.ldexp(1.0, emin)
    largest_subnormal = math.ldexp((1 << (t - 1)) - 1, fmt.qmin)
    assert fmt.round_dyadic(1, emin) == (smallest_normal, fmt.qmin)
    assert fmt.round_dyadic((1 << (t - 1)) - 1, fmt.qmin)[0] == largest_subnormal
    # halfway between them rounds to the even one, the smallest normal
    assert fmt.round_dyadic((1 << t) - 1, fmt.qmin - 1)[0] == smallest_normal
    # below the smallest normal the quantum stays 2**qmin
    assert fmt.round_dyadic(3, fmt.qmin - 1) == (math.ldexp(2, fmt.qmin), fmt.qmin)
    # half the smallest subnormal ties to zero (even); more rounds up; sign kept
    assert fmt.round_dyadic(1, fmt.qmin - 1)[0] == 0.0
    assert fmt.round_dyadic(3, fmt.qmin - 2)[0] == math.ldexp(1, fmt.qmin)
    v, _ = fmt.round_dyadic(-1, fmt.qmin - 5)
    assert v == 0.0 and math.copysign(1, v) == -1
    v, _ = fmt.round_dyadic(-1, -(10**6))  # astronomically small, no huge shifts
    assert v == 0.0 and math.copysign(1, v) == -1


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_overflow_threshold(fmt):
    t, emax = fmt.precision, fmt.emax
    big = fmt.max_finite
    thr_man, thr_exp = (1 << (t + 1)) - 1, emax - t  # max + ulp/2
    assert fmt.round_dyadic(thr_man, thr_exp)[0] == math.inf  # tie goes to even: overflow
    assert fmt.round_dyadic(-thr_man, thr_exp)[0] == -math.inf
    assert fmt.round_dyadic(2 * thr_man - 1, thr_exp - 1)[0] == big
    assert fmt.round_dyadic(1, emax + 1)[0] == math.inf
    assert fmt.round_dyadic(3, 10**6)[0] == math.inf


@pytest.mark.parametrize("name", ["float16", "float32"])
def test_matches_numpy_casts_from_float64(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(1)
    fi = np.finfo(fmt.dtype)
    lo, hi = math.log2(float(fi.smallest_subnormal)) - 2, math.log2(float(fi.max)) + 1
    x = np.ldexp(rng.random(20000) + 1.0, rng.integers(int(lo), int(hi), 20000))
    x *= rng.choice([-1.0, 1.0], x.size)
    with np.errstate(over="ignore"):
        want = x.astype(fmt.dtype).astype(np.float64)
    got = np.array([fmt.round_dyadic(*dyadic_from_float(v))[0] for v in x.tolist()])
    np.testing.assert_array_equal(got, want)


def test_bfloat16_matches_ml_dtypes_from_float32():
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    with np.errstate(over="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float64)
    got = np.array(
        [BF16.round_dyadic(*dyadic_from_float(v))[0] for v in x.astype(np.float64).tolist()]
    )
    np.testing.assert_array_equal(got, want)


def test_dyadic_float_round_trip_and_upper_bound():
    for v in [0.0, 5e-324, 1.5, -3.25e300, 1.7976931348623157e308]:
        assert dyadic_to_float(*dyadic_from_float(v)) == v
    assert dyadic_to_float(1, -5000, "u") == 5e-324
    assert dyadic_to_float(3, -1076, "u") >= 3 * 2.0**-1076


def test_format_of():
    assert format_of(np.int32) is F64
    assert format_of(np.bool_) is F64
    assert format_of("bfloat16") is BF16
    assert format_of(np.zeros(2, np.float16)) is F16
    with pytest.raises(TypeError, match="complex"):
        format_of(np.complex128)
    with pytest.raises(TypeError, match="unsupported dtype"):
        format_of(np.dtype("U3"))
    if np.dtype(np.longdouble).itemsize > 8:
        with pytest.raises(TypeError, match="unsupported dtype"):
            format_of(np.longdouble)
    assert F64.eps == 2.0**-52 and F32.max_finite == float(np.finfo(np.float32).max)
