"""Input families: deterministic, in the right format, covering what they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance import FAMILIES, family
from conformance._families import neg_ln_smallest
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
