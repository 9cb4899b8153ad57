"""The certified fast path for pairs [0, v]: bit for bit the exact engine's answers,
on every float16 and bfloat16 pair, on random float32 pairs (10**5 here, 10**7 in the
slow tier), near every rounding boundary it declines, and on the cases it sends on."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import reference
from reference import _pairs
from reference._formats import FORMATS


def _exact(v: np.ndarray) -> np.ndarray:
    rows = np.stack([np.zeros(v.size, dtype=v.dtype), v], axis=1)
    with np.errstate(invalid="ignore"):
        return reference.log_softmax(rows, axis=-1)


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair: equal bit patterns (NaN payloads aside)."""
    bits = np.dtype(f"u{a.dtype.itemsize}")
    with np.errstate(invalid="ignore"):
        nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    same: np.ndarray = ((a.view(bits) == b.view(bits)) | nan).all(axis=1)
    return same


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_every_pair_of_the_16_bit_formats(name):
    v = np.arange(1 << 16, dtype=np.uint16).view(FORMATS[name].dtype)
    counts: dict[str, int] = {}
    got = reference.log_softmax_pairs(v, counts=counts)
    assert got.dtype == v.dtype and got.shape == (v.size, 2)
    same = _same_bits(got, _exact(v))
    assert same.all(), v[~same][:5]
    with np.errstate(invalid="ignore"):
        finite = int(np.isfinite(v.astype(np.float32)).sum())
    assert counts["fast"] + counts["exact"] == v.size
    assert counts["fast"] >= finite - 16  # NaN and the infinities go to the exact engine


def _float32_sample(n: int, seed: int) -> np.ndarray:
    """Uniform bit patterns (every binade, NaN and inf included) and values where the
    outputs are hard: |v| from 1e-8 to 110 (log1p(exp(-|v|)) through float32's
    subnormals), integers, and the ends of the format."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, size=n // 2, dtype=np.uint64).astype(np.uint32)
    mag = np.exp(rng.uniform(np.log(1e-8), np.log(110.0), n // 2 - 8))
    sign = np.where(rng.random(mag.size) < 0.5, -1.0, 1.0)
    ends = np.array([0.0, -0.0, 1.0, -1.0, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45])
    return np.concatenate([bits.view(np.float32), (sign * mag).astype(np.float32),
                           ends.astype(np.float32)])  # fmt: skip


def test_random_float32_pairs():
    v = _float32_sample(100_000, 0)
    got = reference.log_softmax_pairs(v)
    same = _same_bits(got, _exact(v))
    assert same.all(), v[~same][:5]


@pytest.mark.slow
def test_ten_million_random_float32_pairs():
    for seed in range(10):
        v = _float32_sample(1_000_000, 100 + seed)
        same = _same_bits(reference.log_softmax_pairs(v), _exact(v))
        assert same.all(), (seed, v[~same][:5])


def test_the_values_the_fast_path_declines_are_the_exact_engines(monkeypatch):
    """With the bound widened a millionfold, the fast path declines many more values
    (the ones near rounding boundaries among them): each goes to the exact engine and
    the results stay bit for bit the same; and a declined value is one whose interval
    does hold a rounding boundary."""
    v = _float32_sample(20_000, 1)
    monkeypatch.setattr(_pairs, "REL_BOUND", 2.0**-24)
    monkeypatch.setattr(_pairs, "_WIDTH", 2.0**-23)
    counts: dict[str, int] = {}
    got = reference.log_softmax_pairs(v, counts=counts)
    assert counts["exact"] > 1000
    assert _same_bits(got, _exact(v)).all()
    # bfloat16's exact construction declines the same way (8 bits: a wider bound)
    monkeypatch.setattr(_pairs, "REL_BOUND", 2.0**-10)
    b = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    counts = {}
    assert _same_bits(reference.log_softmax_pairs(b, counts=counts), _exact(b)).all()
    assert counts["exact"] > 1000


def test_float32_boundaries_are_certified_or_declined_never_misrounded():
    """Values whose float64 output sits within the bound of a float32 midpoint must be
    declined: y built as a midpoint (and one double ulp off it) is not certified."""
    fmt = FORMATS["float32"]
    r = np.float32(-0.693147182)
    up = np.nextafter(r, np.float32(0))
    mid = (np.float64(r) + np.float64(up)) / 2
    y = np.array([[mid, mid], [np.nextafter(mid, 0), -2.0], [-2.0, -2.0]])
    _, ok = _pairs._certify(y.T.copy(), fmt)
    assert not ok[0][0] and not ok[0][1] and ok[1][2] and ok[0][2]
    _, ok_b = _pairs._round_certified(np.array([mid, -2.0]), fmt)
    assert not ok_b[0] and ok_b[1]


def test_float64_is_refused():
    with pytest.raises(ValueError, match="at most 24 significant bits"):
        reference.log_softmax_pairs(np.zeros(3))


def test_signalling_nan_inputs_and_answers_raise_no_warning():
    """A float32 signalling NaN (or a bfloat16 NaN) widened to float64 sets the invalid
    flag: the oracle warned (an error where warnings are errors) on such input and on
    such a computed array; it now reads them as the NaN they are."""
    import warnings

    snan = np.array([0x7F800001, 0], dtype=np.uint32).view(np.float32)
    bnan = np.array([0x7F81, 0], dtype=np.uint16).view(ml_dtypes.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (snan, bnan):
            res = reference.evaluate(x)
            assert np.isnan(res.expected.astype(np.float32)).all()
            assert np.isnan(reference.log_softmax(x).astype(np.float32)).all()
            res.ulp_error(x)  # a computed array holding the same NaN
            reference.log_softmax_pairs(x)
        fin = np.array([0.0, -1.0], dtype=np.float32)
        reference.ulp_error_direct(
            np.array([0x7FA00000, 0x7FA00000], np.uint32).view(np.float32), fin
        )
