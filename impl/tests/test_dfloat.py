"""The double-word arithmetic of the generic precise core (impl/_dfloat.py), on
array-api-strict in float32 and float64, against exact arithmetic: its constants,
exp, log1p, the tree sum and the one-rounding scaling into the subnormal range."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from impl import _dfloat as D
from impl._generic import _PRESCALE, _scale_once
from reference import FORMATS

xp = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")

DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}
P = {"float32": 24, "float64": 53}


def _arr(values: object, name: str):
    return xp.asarray(np.asarray(values, dtype=DTYPES[name]))


def _np(a) -> np.ndarray:
    return np.asarray(a)


def _mp(v) -> mpmath.mpf:
    return mpmath.mpf(float(v))


def _round_to(v: Fraction, name: str) -> float:
    """v (a dyadic rational) rounded to nearest even in the format, subnormals
    included: the oracle's own exact rounding."""
    return FORMATS[name].round_dyadic(v.numerator, 1 - v.denominator.bit_length())[0]


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_constants_are_exact_to_their_claims(name):
    f = D.fmt(name)
    with mpmath.workprec(300):
        n = 1 << f.table_bits
        c = mpmath.log(2) / n
        assert abs(sum(mpmath.mpf(v) for v in f.c) - c) < c * mpmath.mpf(2) ** (-3 * f.precision)
        # k * c[0] and k * c[1] exact for |k| <= k_max
        for v in f.c[:2]:
            bits = Fraction(v).denominator.bit_length() - 1 + math.floor(math.log2(v)) + 1
            assert bits + f.k_max.bit_length() <= f.precision
        hi, lo = D._exp_table(name)
        for j in range(n):
            exact = mpmath.power(2, mpmath.mpf(j) / n)
            err = abs(mpmath.mpf(hi[j]) + mpmath.mpf(lo[j]) - exact)
            assert err < exact * 2.0 ** (-2 * P[name])
    lo_q, hi_q = f.p2_range
    table = _np(D.pow2(xp, _arr(np.arange(lo_q - 3, hi_q + 1), name), _arr(0.0, name), f))
    e_sub = f.emin - P[name] + 1
    want = [math.ldexp(1.0, q) if q >= e_sub else 0.0 for q in range(lo_q - 3, hi_q + 1)]
    np.testing.assert_array_equal(table, np.asarray(want, dtype=DTYPES[name]))


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_exp_parts_relative_error(name):
    f = D.fmt(name)
    dt = DTYPES[name]
    rng = np.random.default_rng(3)
    dh = np.concatenate([
        -rng.uniform(0, f.exp_domain, 600), -rng.uniform(0, 1, 200),
        -(10.0 ** rng.uniform(-30, 0, 200)), [0.0, -f.exp_domain],
    ]).astype(dt)  # fmt: skip
    dl = (dh * np.finfo(dt).eps * rng.uniform(-0.5, 0.5, dh.size)).astype(dt)
    hi, lo, q = (_np(a) for a in D.exp_parts(xp, _arr(dh, name), _arr(dl, name), f))
    assert np.all((hi >= 0.99) & (hi < 2.02)) and np.all(q <= 0) and np.all(q == np.round(q))
    worst = 0.0
    with mpmath.workprec(200):
        for i in range(dh.size):
            want = mpmath.exp(_mp(dh[i]) + _mp(dl[i]))
            got = (_mp(hi[i]) + _mp(lo[i])) * mpmath.mpf(2) ** int(q[i])
            worst = max(worst, float(abs(got / want - 1)))
    # the docstring's bounds: float32 2^-44, float64 2^-86 (ln2/1024's reduction)
    assert worst < 2.0 ** {"float32": -44, "float64": -86}[name], math.log2(worst)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_log1p_dw_relative_error(name):
    f = D.fmt(name)
    dt = DTYPES[name]
    rng = np.random.default_rng(4)
    low = -40 if name == "float32" else -300
    th = np.concatenate([
        10.0 ** rng.uniform(low, 9, 800), f.series_below * (1 + rng.uniform(-1e-3, 1e-3, 50)),
        [0.0, f.series_below, 1.0, 31999.0],
    ]).astype(dt)  # fmt: skip
    tl = (th * np.finfo(dt).eps * rng.uniform(-0.5, 0.5, th.size)).astype(dt)
    hi, lo = (_np(a) for a in D.log1p_dw(xp, _arr(th, name), _arr(tl, name), f))
    worst = 0.0
    with mpmath.workprec(200):
        for i in range(th.size):
            want = mpmath.log1p(_mp(th[i]) + _mp(tl[i]))
            got = _mp(hi[i]) + _mp(lo[i])
            worst = max(worst, float(abs(got / want - 1)) if want else float(abs(got)))
    # the docstring's bounds: float32 2^-36, float64 2^-75
    assert worst < 2.0 ** {"float32": -36, "float64": -75}[name], math.log2(worst)


@pytest.mark.parametrize("name", ["float32", "float64"])
@pytest.mark.parametrize(("shape", "axis"), [
    ((3, 1), (1,)), ((2, 2), (1,)), ((4, 1000), (1,)), ((2, 4097), (1,)),
    ((5, 3, 7), (0, 2)), ((6, 2, 9), (0, 1, 2)),
])  # fmt: skip
def test_sum_dw_is_exact_to_n_ulp_squared(name, shape, axis):
    dt = DTYPES[name]
    rng = np.random.default_rng(5)
    hi = (rng.exponential(size=shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(dt)
    lo = (hi * np.finfo(dt).eps * rng.uniform(-0.5, 0.5, shape)).astype(dt)
    sh, sl = (_np(a) for a in D.sum_dw(xp, _arr(hi, name), _arr(lo, name), axis))
    assert sh.shape == tuple(1 if a in axis else s for a, s in enumerate(shape))
    n = math.prod(shape[a] for a in axis)
    exact_hi = np.moveaxis(hi, axis, tuple(range(-len(axis), 0))).reshape(sh.size, n)
    exact_lo = np.moveaxis(lo, axis, tuple(range(-len(axis), 0))).reshape(sh.size, n)
    for r in range(sh.size):
        want = sum(Fraction(float(v)) for v in (*exact_hi[r], *exact_lo[r]))
        got = Fraction(float(sh.reshape(-1)[r])) + Fraction(float(sl.reshape(-1)[r]))
        assert abs(got - want) <= want * 4 * n * Fraction(2) ** (-2 * P[name])


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_scale_once_rounds_once_into_the_subnormal_range(name):
    """(bh + bl) 2**q rounded once, where a plain round-then-scale rounds twice; the
    inputs put (bh + bl) 2**q near midpoints of the subnormal grid."""
    f = D.fmt(name)
    dt = DTYPES[name]
    p = P[name]
    rng = np.random.default_rng(6)
    e_sub = f.emin - p + 1
    n = 400
    q = -rng.integers(-f.emin - 40, -f.emin + p + 3, n).astype(dt)  # results normal to 0
    grid = rng.integers(1, 1 << 20, n).astype(np.float64)
    # bh on a grid point plus half a grid step, minus an ulp or so: a double-rounding trap
    G = np.ldexp(1.0, (e_sub - q).astype(int))
    bh = ((grid + 0.5) * G).astype(dt)
    keep = (bh >= 0.5) & (bh < 2.0**60)
    bh, q = bh[keep], q[keep]
    bl = (bh * np.finfo(dt).eps * rng.uniform(-0.25, 0.25, bh.size)).astype(dt)
    prescale = _PRESCALE[name]
    got = _np(_scale_once(xp, _arr(bh, name), _arr(bl, name), _arr(q, name), f, prescale, None)[0])
    for i in range(bh.size):
        exact = (Fraction(float(bh[i])) + Fraction(float(bl[i]))) * Fraction(2) ** int(q[i])
        assert float(got[i]) == _round_to(exact, name), (bh[i], bl[i], q[i])
