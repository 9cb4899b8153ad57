"""Input families: deterministic, in the right format, covering what they claim."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from conformance import FAMILIES, family
from conformance.functions._families import neg_ln_smallest
from reference import FORMATS


@pytest.mark.parametrize("fam", FAMILIES, ids=[f.name for f in FAMILIES])
def test_every_family_is_deterministic_and_typed(fam):
    for dtype in fam.dtypes:
        a, b = fam.cases(dtype, "quick"), fam.cases(dtype, "quick")
        # a family with parts has its inputs in them (exhaustive-f32: test_exhaustive.py)
        has_none = fam.name == "corpus" or fam.suite or fam.parts is not None
        assert (a or has_none or fam.why_not()) and len(a) == len(b)
        for ca, cb in zip(a, b, strict=True):
            assert ca.x.dtype == FORMATS[dtype].dtype
            assert ca.x.tobytes() == cb.x.tobytes() and ca.axis == cb.axis
            if ca.params:
                assert len(ca.params) == ca.x.shape[0]


def test_seeds_differ_between_dtypes_and_profiles():
    f = family("normal")
    q32, q64 = f.cases("float32", "quick")[0].x, f.cases("float64", "quick")[0].x
    assert not np.array_equal(q32.astype(np.float64), q64)
    assert f.cases("float32", "full")[0].x.shape[1] > q32.shape[1]


def test_dominant_gaps_cross_both_thresholds():
    for dtype, fmt in FORMATS.items():
        (case,) = family("dominant").cases(dtype, "quick")
        gaps = np.asarray(case.params)
        assert gaps.min() <= 1.0 and gaps.max() > neg_ln_smallest(fmt)
        assert (gaps < -math.log(fmt.eps)).any() and (gaps > -math.log(fmt.eps)).any()


def test_exhaustive_covers_every_finite_value_in_full():
    (case,) = family("exhaustive").cases("float16", "full")
    assert case.x.shape == (63488, 2) and (case.x[:, 0] == 0).all()
    assert np.isfinite(case.x.astype(np.float64)).all()
    with pytest.raises(ValueError, match="no float32"):
        family("exhaustive").cases("float32")


def test_specials_and_shapes_cover_the_contract():
    specials = family("specials").cases("float64")
    assert any(np.isnan(c.x).any() for c in specials)
    assert any(c.x.shape[-1] == 1 for c in specials)
    shapes = family("shapes").cases("float32")
    assert {c.x.ndim for c in shapes} >= {0, 1, 2, 3, 4}
    assert any(c.axis is None for c in shapes) and any(isinstance(c.axis, tuple) for c in shapes)
    assert any(c.transposed for c in shapes) and any(c.x.size == 0 for c in shapes)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known"):
        family("nope")
    with pytest.raises(ValueError, match="profile"):
        family("normal").cases("float32", "huge")


def test_dispatch_shapes_cross_every_threshold_in_every_layout():
    """Full: every length n-1, n, n+1 around each power of two to 4096 and around 517
    and 1238, each in 2 rows, many rows, 16 slices over axis 0 and a transposed view;
    each row with one dominant entry. Quick: a few of those lengths, every layout but
    the view, small."""
    from conformance.functions._families import dispatch_lengths

    lengths = dispatch_lengths()
    assert lengths[0] == 1 and lengths[-1] == 4097 and len(lengths) == len(set(lengths))
    for n in (1024, 2048, 4096, 517, 1238):
        assert {n - 1, n, n + 1} <= set(lengths)
    fam = family("dispatch-shapes")
    assert fam.functions == ("log_softmax", "softmax", "logsumexp") and not fam.optional

    def row_length(c: Any) -> int:
        return int(c.x.shape[0] if c.axis == 0 else c.x.shape[-1])

    full = fam.cases("float32", "full")
    assert len(full) == 4 * len(lengths)
    for n in lengths:
        mine = [c for c in full if row_length(c) == n]
        assert len(mine) == 4, n
        rows = sorted(c.x.shape[1] if c.axis == 0 else c.x.shape[0] for c in mine)
        assert rows[:3] == [2, 2, 16] and rows[3] >= 16
        assert any(c.axis == 0 for c in mine) and any(c.transposed for c in mine)
    # one entry in [10, 11) above normal noise (sd 2) in every slice
    for c in full:
        if row_length(c) in (1, 1024):
            x = c.x.astype(np.float64).T if c.axis == 0 else c.x.astype(np.float64)
            top = np.sort(x, axis=-1)
            assert (top[..., -1] >= 10).all() and (top[..., -1] < 11).all()
            if x.shape[-1] > 1:
                assert (top[..., -2] < 10).all() and np.median(x) < 1

    quick = fam.cases("float32", "quick")
    assert len(quick) == 4 and sum(c.x.size for c in quick) < 100_000
    assert {row_length(c) for c in quick} == {517, 1025, 1238, 2049}
    assert any(c.axis == 0 for c in quick) and any(c.x.shape[0] > 16 for c in quick)
    assert sum(c.x.size for c in full) > 10 * sum(c.x.size for c in quick)
