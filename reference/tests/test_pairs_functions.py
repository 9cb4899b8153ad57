"""The certified fast path for pairs [0, v] of softmax and logsumexp
(``reference._pairs.softmax_pairs``, ``logsumexp_pairs``): bit for bit the exact
engine's answers on every float16 and bfloat16 pair, and on float32 pairs chosen where
the outputs are hard (uniform bit patterns, subnormals, the ends of the format, NaN and
the infinities, the softmax outputs' binade and subnormal boundaries, logsumexp's near
powers of two, the exact-path threshold |v| = 200): 92,000 here, a quarter of a million
in the extended tier, 2.3 million more in the slow tier; and a computation worse than
its claimed bound is caught."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import reference
from reference import _pairs
from reference._formats import FORMATS

PAIRS = {"softmax": _pairs.softmax_pairs, "logsumexp": _pairs.logsumexp_pairs}
EXACT: dict[str, Any] = {"softmax": reference.softmax, "logsumexp": reference.logsumexp}


def _exact(function: str, v: np.ndarray) -> np.ndarray:
    rows = np.stack([np.zeros(v.size, dtype=v.dtype), v], axis=1)
    with np.errstate(invalid="ignore"):
        return np.asarray(EXACT[function](rows, axis=-1))


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair: equal bit patterns at every element (NaN payloads aside)."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    bits = np.dtype(f"u{a.dtype.itemsize}")
    with np.errstate(invalid="ignore"):
        nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    same = (a.view(bits) == b.view(bits)) | nan
    return same.reshape(same.shape[0], -1).all(axis=1)  # type: ignore[no-any-return]


def _every(name: str) -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(FORMATS[name].dtype)


@pytest.mark.parametrize("function", list(PAIRS))
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_every_pair_of_the_16_bit_formats(function, name):
    v = _every(name)
    counts: dict[str, int] = {}
    got = PAIRS[function](v, counts=counts)
    assert got.dtype == v.dtype
    assert got.shape == ((v.size,) if function == "logsumexp" else (v.size, 2))
    same = _same_bits(got, _exact(function, v))
    assert same.all(), v[~same][:5]
    assert counts["fast"] + counts["exact"] == v.size
    assert counts["exact"] <= 16  # all but a handful certified (none, when measured)


def _near(mags: np.ndarray, k: int) -> np.ndarray:
    """The finite float32 values within k units in the last place of each magnitude."""
    b = np.abs(mags).astype(np.float32).view(np.uint32).astype(np.int64)
    out = (b[:, None] + np.arange(-k, k + 1)[None, :]).reshape(-1)
    out = out[(out >= 0) & (out < 0x7F800000)]
    near: np.ndarray = out.astype(np.uint32).view(np.float32)
    return near


def _float32_sample(seed: int, n_uniform: int = 60_000) -> np.ndarray:
    """Float32 inputs where the outputs are hard, both signs of each: 40 units in the
    last place either side of each edge, the specials, and n_uniform random bit
    patterns with half as many random magnitudes and a tenth as many subnormals."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, size=n_uniform, dtype=np.uint64).astype(np.uint32)
    mag = np.exp(rng.uniform(np.log(1e-8), np.log(210.0), n_uniform // 2))
    sub = rng.integers(1, 1 << 23, size=n_uniform // 10, dtype=np.uint64).astype(np.uint32)
    k = np.arange(1, 151, dtype=np.float64)
    with np.errstate(over="ignore"):
        edges = np.concatenate([
            # softmax's outputs at powers of two: 1 / (1 + e^v) = 2^-k, v = ln(2^k - 1);
            # and e^-v = 2^-k: 1 / (1 + 2^-k) next to 1 - 2^-k (at k = 25 a midpoint)
            np.log(np.expm1(k * np.log(2.0))), k * np.log(2.0),
            # logsumexp's near 2^-k (log1p(e^v) = 2^-k) and 2^k (v + log1p(e^-v) = 2^k)
            -np.log(np.expm1(2.0 ** -np.arange(1, 60, dtype=np.float64))), 2.0 ** k[:7],
            # the smaller softmax output at float32's least normal and half its least
            # subnormal; the exact-path threshold; the largest finite value
            [87.33654, 103.27893, 103.97208, 200.0, 3.4028235e38, 1.0, 2.0**-149],
        ])  # fmt: skip
    near = _near(edges.astype(np.float32), 40)
    specials = np.array(
        [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x80000000, 0],
        dtype=np.uint32,
    ).view(np.float32)
    v = np.concatenate([
        bits.view(np.float32), mag.astype(np.float32), sub.view(np.float32), near, specials,
    ])  # fmt: skip
    return np.concatenate([v, -v])


@pytest.mark.parametrize(
    "n_uniform",
    [10_000, pytest.param(60_000, marks=pytest.mark.extended)],
    ids=["edges", "quarter-million"],
)
@pytest.mark.parametrize("function", list(PAIRS))
def test_hard_float32_pairs(function, n_uniform):
    """Every edge's neighbours and some random pairs (92,000 pairs); a quarter of a
    million in the extended tier."""
    v = _float32_sample(0, n_uniform)
    assert v.size > 3 * n_uniform + 60_000
    counts: dict[str, int] = {}
    got = PAIRS[function](v, counts=counts)
    same = _same_bits(got, _exact(function, v))
    assert same.all(), v[~same][:5]
    # the ones near a midpoint (v near 25 ln 2 for softmax: 1 - 2^-25) go on; the rest
    # are certified
    assert 0 < counts["exact"] < 100


@pytest.mark.slow
@pytest.mark.parametrize("function", list(PAIRS))
def test_millions_of_float32_pairs(function):
    for seed in range(2):
        v = _float32_sample(100 + seed, 500_000)
        same = _same_bits(PAIRS[function](v), _exact(function, v))
        assert same.all(), (seed, v[~same][:5])


def test_a_computation_worse_than_its_bound_is_caught(monkeypatch):
    """The certification trusts REL_BOUND: with exp made 2**-17 off (far beyond the
    2**-46 the bound assumes) while the bound still claims 2**-44, pairs get wrong bits
    and the comparison with the exact engine finds them; with the bound widened past
    that error (2**-15) the doubtful pairs are declined and go to the exact engine, and
    every pair is right again."""
    v = _every("float16")
    exact = {f: _exact(f, v) for f in PAIRS}
    real = np.exp
    monkeypatch.setattr(_pairs, "_EXP", lambda x: real(x) * (1 + 2.0**-17))
    wrong = {f: int((~_same_bits(PAIRS[f](v), exact[f])).sum()) for f in PAIRS}
    assert all(n > 50 for n in wrong.values()), wrong
    monkeypatch.setattr(_pairs, "REL_BOUND", 2.0**-15)
    monkeypatch.setattr(_pairs, "_WIDTH", 2.0**-14)
    for f in PAIRS:
        counts: dict[str, int] = {}
        assert _same_bits(PAIRS[f](v, counts=counts), exact[f]).all(), f
        assert counts["exact"] >= wrong[f]


def test_a_wider_bound_declines_more_and_stays_exact(monkeypatch):
    """With the bound widened a millionfold, thousands more float32 values (those near
    rounding boundaries among them) go to the exact engine: still bit for bit; and a
    smaller bound (2**-60) certifies values the real one declines."""
    v = _float32_sample(1, 60_000)[::8]
    base = {}
    for f in PAIRS:
        counts: dict[str, int] = {}
        PAIRS[f](v, counts=counts)
        base[f] = counts["exact"]
    monkeypatch.setattr(_pairs, "REL_BOUND", 2.0**-60)
    monkeypatch.setattr(_pairs, "_WIDTH", 2.0**-59)
    for f in PAIRS:
        counts = {}
        PAIRS[f](v, counts=counts)
        assert counts["exact"] < base[f], (f, counts, base[f])
    monkeypatch.setattr(_pairs, "REL_BOUND", 2.0**-24)
    monkeypatch.setattr(_pairs, "_WIDTH", 2.0**-23)
    for f in PAIRS:
        counts = {}
        got = PAIRS[f](v, counts=counts)
        assert counts["exact"] > 1000 + base[f]
        assert _same_bits(got, _exact(f, v)).all(), f


def test_subnormal_outputs_are_certified_by_the_subnormal_spacing():
    """softmax's smaller output is subnormal from v ~ -87 (float32): a value at a
    subnormal midpoint is declined, one between is certified to its neighbour, in the
    cast path (float32) and in the exact construction (bfloat16's)."""
    for name, least in (("float32", 2.0**-149), ("bfloat16", 2.0**-133)):
        fmt = FORMATS[name]
        y = np.array([1.5 * least, 1.25 * least, 0.5 * least, 0.4 * least, 3.5 * least])
        r, ok = _pairs._round_certified(y, fmt)
        assert ok.tolist() == [False, True, False, True, False], name
        assert r[1] == least and r[3] == 0.0
        if name == "float32":
            r2, ok2 = _pairs._certify(y[None, :], fmt)
            assert ok2[0].tolist() == ok.tolist()
            assert r2[0][1] == np.float32(least) and r2[0][3] == 0


@pytest.mark.parametrize("function", list(PAIRS))
def test_float64_is_refused_and_nan_raises_no_warning(function):
    import warnings

    import ml_dtypes

    with pytest.raises(ValueError, match="at most 24 significant bits"):
        PAIRS[function](np.zeros(3))
    snan = np.array([0x7F800001, 0], dtype=np.uint32).view(np.float32)
    bnan = np.array([0x7F81, 0], dtype=np.uint16).view(ml_dtypes.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (snan, bnan):
            got = PAIRS[function](x)
            assert np.isnan(got[0].astype(np.float32)).all()


def test_specials_are_the_specifications():
    """NaN, +inf and -inf v: the answers the exact engine gives (checked above over
    every pattern too), here spelled out."""
    v = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np.float32)
    sm = _pairs.softmax_pairs(v)
    assert np.isnan(sm[0]).all()
    assert sm[1:].tolist() == [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]
    lse = _pairs.logsumexp_pairs(v)
    assert np.isnan(lse[0]) and lse[1] == np.inf and lse[2] == 0.0
    assert lse[3] == lse[4] == np.float32(np.log(2.0))
    for f in PAIRS:
        assert _same_bits(PAIRS[f](v), _exact(f, v)).all()
    assert not np.signbit(sm[2, 1]) and not np.signbit(lse[2])  # +0, as the engine's
