"""Special values, shapes, dtypes and axis handling (docs/specification.md's rules)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from reference import evaluate, log_softmax, ulp_error

inf, nan = math.inf, math.nan


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


def test_nan_anywhere_makes_the_slice_nan():
    x = np.array([[1.0, nan, 3.0], [1.0, 2.0, 3.0]])
    out = log_softmax(x, axis=1)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_neg_inf_entries_give_neg_inf():
    out = log_softmax(np.array([0.0, -inf, -1.0]))
    assert out[1] == -inf and np.isfinite(out[[0, 2]]).all()
    assert same(log_softmax(np.array([3.0, -inf])), [0.0, -inf])  # exact: S == 1


def test_all_neg_inf_is_nan_except_length_one():
    assert np.isnan(log_softmax(np.array([-inf, -inf]))).all()
    for v in [-inf, inf, 5.0, -2e300]:
        assert same(log_softmax(np.array([v])), [0.0])
    assert np.isnan(log_softmax(np.array([nan]))).all()
    # length-1 infinities also accept NaN (x - x in IEEE arithmetic)
    r = evaluate(np.array([[inf], [-inf], [1.0]]), axis=1)
    assert (
        ulp_error(np.array([[nan], [nan], [0.0]]), np.array([[inf], [-inf], [1.0]]), axis=1) == 0
    ).all()
    assert (
        ulp_error(np.array([[0.0], [0.0], [nan]]), np.array([[inf], [-inf], [1.0]]), axis=1)[2, 0]
        == inf
    )
    assert [s.case for s in r.special_slices] == ["length-1 inf", "length-1 inf"]


def test_one_pos_inf():
    x = np.array([1.0, inf, -inf, 2.0])
    r = evaluate(x)
    assert same(r.expected, [-inf, 0.0, -inf, -inf])
    accepted = {
        "limit": [-inf, 0.0, -inf, -inf],
        "nan-propagating": [nan] * 4,
        "nan-at-inf": [-inf, nan, -inf, -inf],  # SciPy today
    }
    for label, ans in accepted.items():
        c = np.array(ans)
        assert (r.ulp_error(c) == 0).all(), label
        assert r.semantics(c) == [("one +inf", label)]
    bad = np.array([-inf, 0.0, nan, -inf])
    assert r.semantics(bad) == [("one +inf", "other")]
    assert r.ulp_error(bad)[2] == inf


def test_several_pos_inf():
    x = np.array([inf, 0.0, inf, inf, -inf], dtype=np.float32)
    r = evaluate(x)
    assert same(r.expected, [nan, -inf, nan, nan, -inf])
    neg_log3 = np.float32(-np.log(3.0))
    split = np.array([neg_log3, -inf, neg_log3, neg_log3, -inf], np.float32)
    assert r.semantics(split) == [("several +inf", "equal-split")]
    assert r.ulp_error(split).max() <= 0.5
    assert r.semantics(np.full(5, nan, np.float32)) == [("several +inf", "nan-propagating")]
    assert r.semantics(r.expected) == [("several +inf", "nan-at-inf")]
    # equal split but 3 ULP off is scored in ULPs, not as a special mismatch
    off = split.copy()
    off[0] = np.nextafter(np.nextafter(np.nextafter(off[0], 0), 0), 0)
    assert 2.5 < r.ulp_error(off)[0] < 3.5


def test_overflow_to_neg_inf():
    x = np.array([1.7e308, -1.7e308])
    r = evaluate(x)
    assert same(r.expected, [0.0, -inf])
    assert np.signbit(r.expected[0])  # RN of a tiny negative number is -0
    assert ulp_error(np.array([0.0, -inf]), x).tolist() == [0.0, 0.0]
    assert ulp_error(np.array([0.0, -1.7976931348623157e308]), x)[1] == inf  # special mismatch


def test_empty_and_zero_d():
    for shape, axis in [((0,), None), ((3, 0), 1), ((0, 3), 1), ((2, 0, 2), (0, 2))]:
        out = log_softmax(np.ones(shape), axis=axis)
        assert out.shape == shape and out.dtype == np.float64
    out = log_softmax(np.float32(7.0))
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32 and out == 0


def test_axis_semantics_match_per_slice():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    full = log_softmax(x, axis=(0, 2))
    np.testing.assert_array_equal(full, log_softmax(x, axis=(2, 0)))
    np.testing.assert_array_equal(full, log_softmax(x, axis=(-1, -3)))
    for j in range(4):
        np.testing.assert_array_equal(full[:, j, :], log_softmax(x[:, j, :]))
    np.testing.assert_array_equal(log_softmax(x, axis=-1)[1, 2], log_softmax(x[1, 2]))
    np.testing.assert_array_equal(log_softmax(x, axis=0)[:, 1, 2], log_softmax(x[:, 1, 2]))
    # non-contiguous input
    np.testing.assert_array_equal(log_softmax(x.T, axis=0), log_softmax(x, axis=-1).T)


def test_invalid_axis_and_dtype_errors():
    x = np.ones((2, 3))
    with pytest.raises(np.exceptions.AxisError):
        log_softmax(x, axis=2)
    with pytest.raises(np.exceptions.AxisError):
        log_softmax(x, axis=-3)
    with pytest.raises(np.exceptions.AxisError):
        log_softmax(np.float64(1.0), axis=1)
    with pytest.raises(np.exceptions.AxisError):
        log_softmax(np.float64(1.0), axis=(0,))
    with pytest.raises(ValueError, match="repeated axis"):
        log_softmax(x, axis=(1, -1))
    with pytest.raises(TypeError, match="axis must be"):
        log_softmax(x, axis=1.0)
    for flag in (True, False, np.True_):  # NumPy and SciPy refuse bools as axes
        with pytest.raises(TypeError, match="axis must be"):
            log_softmax(x, axis=flag)


def test_zero_d_takes_axis_0_and_minus_1_as_numpy_reductions_do():
    """scipy.special.log_softmax(np.array(1.5), axis=0) is 0.0, as np.max(np.array(1.5),
    axis=0) is 1.5 (and torch's dim=0 on a 0-d tensor); axis=(0,) stays an AxisError."""
    for axis in (0, -1, np.int64(0)):
        out = log_softmax(np.array(1.5, np.float32), axis=axis)
        assert out.shape == () and out.dtype == np.float32 and out == 0
        assert np.isnan(log_softmax(np.array(np.nan), axis=axis))
    with pytest.raises(TypeError, match="complex"):
        log_softmax(np.ones(3, np.complex64))
    with pytest.raises(TypeError, match="unsupported dtype"):
        log_softmax(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="shape"):
        ulp_error(np.zeros(3), np.zeros(2))
    with pytest.raises(TypeError, match="floating-point"):
        ulp_error(np.zeros(2, np.int64), np.zeros(2))


def test_integer_and_bool_input_computed_as_float64():
    out = log_softmax(np.array([1, 2, 3], dtype=np.int8))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, log_softmax(np.array([1.0, 2.0, 3.0])))
    assert log_softmax(np.array([True, False])).dtype == np.float64
    assert log_softmax([0, -40]).dtype == np.float64  # plain lists work


def test_input_not_modified_and_dtypes_kept():
    for dt in [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]:
        x = np.array([0.5, -2.0, 3.0]).astype(dt)
        before = x.copy()
        out = log_softmax(x)
        assert out.dtype == np.dtype(dt)
        assert np.array_equal(x.astype(np.float64), before.astype(np.float64))


def test_big_errors_are_finite_and_specials_are_inf():
    x = np.array([0.0, -1e-300])
    e = ulp_error(np.array([1.7e308, -1.7e308]), x)
    assert np.isfinite(e).all() and (e > 1e300).all()
    assert ulp_error(np.array([nan, inf]), x).tolist() == [inf, inf]
