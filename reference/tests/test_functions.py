"""softmax and logsumexp: bits against the definitions evaluated plainly in mpmath at
thousands of bits, the exact cases, the special values, and SciPy's known regressions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
import pytest

from reference import (
    FORMATS,
    evaluate_logsumexp,
    evaluate_softmax,
    logsumexp,
    softmax,
)
from reference._interval import round_rational

from ._corpus import rounded, rows

ENGINES = ["arb", "mpmath"]
PREC = 4000  # bits: far beyond what any row here needs (direct, no error analysis)


def bits(a: Any) -> Any:
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def direct_softmax(row, fmt) -> list[float]:
    with mpmath.workprec(PREC):
        xs = [mpmath.mpf(float(v)) for v in row]
        fin = [v for v in xs if mpmath.isfinite(v)]
        m = max(fin)
        s = mpmath.fsum(mpmath.exp(mpmath.fsub(v, m, exact=True)) for v in fin)
        return [
            rounded(fmt, mpmath.exp(mpmath.fsub(v, m, exact=True)) / s)
            if mpmath.isfinite(v)
            else 0.0
            for v in xs
        ]


def direct_logsumexp(row, fmt, b=None) -> tuple[float, float]:
    """(RN(log|S|), sign S) for a row of finite or -inf a and finite b. S = c0 + R with
    c0 the weight at the maximum and R the rest, so that R keeps its relative accuracy
    (and its sign) when it is far below 2**-PREC of c0."""
    with mpmath.workprec(PREC):
        xs = [mpmath.mpf(float(v)) for v in row]
        ws = [mpmath.mpf(1)] * len(xs) if b is None else [mpmath.mpf(float(v)) for v in b]
        m = max(v for v in xs if mpmath.isfinite(v))
        c0 = mpmath.fsum(w for v, w in zip(xs, ws, strict=True) if v == m)
        R = mpmath.fsum(
            w * mpmath.exp(mpmath.fsub(v, m, exact=True))
            for v, w in zip(xs, ws, strict=True)
            if mpmath.isfinite(v) and v != m
        )
        if c0 + R == 0:
            return -math.inf, 0.0
        if c0 != 0 and abs(R) < abs(c0) / 2:
            g = mpmath.log(abs(c0)) + mpmath.log1p(R / c0)
            sign = mpmath.sign(c0)
        else:
            g, sign = mpmath.log(abs(c0 + R)), mpmath.sign(c0 + R)
        if m and abs(g) < abs(m) * mpmath.ldexp(1, -200):
            # far below m's last bit: m + g rounds as m + sign(g) 2**-200 |m| does
            g = mpmath.sign(g) * abs(m) * mpmath.ldexp(1, -200)
        return rounded(fmt, m + g), float(sign)


def _finite_rows(fmt) -> Iterator[tuple[str, np.ndarray]]:
    for name, row in rows(fmt, seed=3, n=6):
        if (
            np.isfinite(row.astype(np.float64)).sum() >= 1
            and not np.isnan(row.astype(np.float64)).any()
            and not (row.astype(np.float64) == np.inf).any()
        ):
            yield name, row


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_softmax_bits_match_the_definition(name, engine):
    fmt = FORMATS[name]
    for label, row in _finite_rows(fmt):
        got = softmax(row, engine=engine)
        want = np.array(direct_softmax(row, fmt)).astype(fmt.dtype)
        assert got.dtype == fmt.dtype
        assert np.array_equal(bits(got), bits(want)), (label, row, got, want)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_logsumexp_bits_match_the_definition(name, engine):
    fmt = FORMATS[name]
    rng = np.random.default_rng(5)
    for label, row in _finite_rows(fmt):
        got = logsumexp(row, engine=engine)
        want, _ = direct_logsumexp(row, fmt)
        assert got.shape == () and got.dtype == fmt.dtype
        assert bits(got) == bits(np.array(want, fmt.dtype)), (label, row, got, want)
        # mixed-sign weights: cancellation, with the sign
        b = rng.choice([-2.0, -1.0, -0.5, 0.25, 1.0, 3.0], row.size).astype(fmt.dtype)
        got, sgn = logsumexp(row, b=b, return_sign=True, engine=engine)
        want, wsgn = direct_logsumexp(row, fmt, b)
        assert (float(sgn), bits(got)) == (wsgn, bits(np.array(want, fmt.dtype))), (
            label,
            row,
            b,
            got,
            want,
        )


@pytest.mark.parametrize("name", list(FORMATS))
def test_unit_weights_take_the_other_path_to_the_same_bits(name):
    """Without b the engines' normaliser decides; with b = 1 the weighted sum does."""
    fmt = FORMATS[name]
    for label, row in _finite_rows(fmt):
        a = logsumexp(row)
        w = logsumexp(row, b=np.ones(row.size, fmt.dtype))
        assert bits(a) == bits(w), (label, row, a, w)


def test_scipy_regressions_have_their_exact_answers():
    # scipy/scipy#22903: 1.15.2 gave NaN
    a = [3.06409428, 0.37251854, 3.87471931]
    b = [1.88190708, 2.84174795, -0.85016884]
    res, sgn = logsumexp(a, b=b, return_sign=True)
    assert float(res) == 1.2452165157907387 and float(sgn) == 1.0
    # scipy/scipy#23548: 1.16.0 gave a sign of NaN
    res, sgn = logsumexp([np.inf], return_sign=True)
    assert float(res) == np.inf and float(sgn) == 1.0
    # scipy/scipy#18295: log(1 + e**-40), not 0
    assert float(logsumexp([0.0, -40.0])) == 4.248354255291589e-18
    assert float(logsumexp(np.array([0.0, -20.0], np.float32))) == np.float32(2.0611537e-09)


def test_a_sum_that_cancels_to_its_last_bits_is_still_decided():
    # 1 - e**(1e-300): magnitude 1e-300, below every term by 997 binary orders
    res, sgn = logsumexp([0.0, 1e-300], b=[1.0, -1.0], return_sign=True)
    with mpmath.workprec(8000):
        want = mpmath.log(mpmath.exp(mpmath.mpf(1e-300)) - 1)
    assert (float(res), float(sgn)) == (float(want), -1.0)
    assert np.isnan(logsumexp([0.0, 1e-300], b=[1.0, -1.0]))  # negative: NaN unsigned


@pytest.mark.parametrize(
    ("a", "b", "value", "sign"),
    [
        ([0.0, 0.0], [1.0, -1.0], -np.inf, 0.0),  # cancels exactly
        ([1.0, 2.0, 1.0], [1.0, 0.0, -1.0], -np.inf, 0.0),  # merged weights cancel
        ([1.0, 2.0], [0.0, 0.0], -np.inf, 0.0),  # every weight zero
        ([-np.inf, -np.inf], None, -np.inf, 0.0),
        ([np.inf], None, np.inf, 1.0),
        ([np.inf, -np.inf], None, np.inf, 1.0),
        ([np.inf], [-1.0], np.inf, -1.0),
        ([np.inf, np.inf], [1.0, -1.0], np.nan, np.nan),  # inf - inf
        ([np.inf, 1.0], [0.0, 1.0], 1.0, 1.0),  # a zero weight removes its term
        ([np.nan, 1.0], [0.0, 1.0], 1.0, 1.0),
        ([np.nan, 1.0], None, np.nan, np.nan),
        ([1.0, 2.0], [np.nan, 1.0], np.nan, np.nan),
        ([-np.inf, 1.0], [np.inf, 1.0], np.nan, np.nan),  # inf * exp(-inf)
        ([0.0, 1.0], [np.inf, 1.0], np.inf, 1.0),
        ([0.0], [-1.0], 0.0, -1.0),  # -exp(0): log|S| = 0 exactly
        ([-0.0], None, 0.0, 1.0),  # log(exp(-0)) = +0
        ([2.5], [-1.0], 2.5, -1.0),
    ],
)
def test_logsumexp_special_and_exact_slices(a, b, value, sign):
    r = evaluate_logsumexp(np.array(a), b=None if b is None else np.array(b), return_sign=True)
    assert bits(r.expected) == bits(np.array(value)), (r.expected, value)
    assert r.sign_matches(sign)
    if sign == -1.0:
        assert np.isnan(logsumexp(np.array(a), b=None if b is None else np.array(b)))


def test_logsumexp_shapes_follow_scipy():
    sp = pytest.importorskip("scipy.special")
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    for axis in [None, 0, 1, -1, (0, 2), (0, 1, 2)]:
        for keepdims in [False, True]:
            got = logsumexp(x, axis=axis, keepdims=keepdims)
            want = sp.logsumexp(x, axis=axis, keepdims=keepdims)
            assert np.shape(got) == np.shape(want), (axis, keepdims)
            np.testing.assert_allclose(got, want, rtol=1e-15)
    got, sgn = logsumexp(x, axis=1, b=np.array([1.0, -1.0, 0.5])[:, None], return_sign=True)
    want, wsgn = sp.logsumexp(x, axis=1, b=np.array([1.0, -1.0, 0.5])[:, None], return_sign=True)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert np.array_equal(sgn, wsgn)
    assert np.array_equal(logsumexp(np.zeros((2, 0)), axis=1), [-np.inf, -np.inf])
    with pytest.raises(ValueError, match=r"a of shape \(2, 3, 4\) and b of shape \(5,\) do not"):
        logsumexp(x, axis=1, b=np.ones(5))
    # a and b broadcast together, as SciPy's do, and axis counts the broadcast axes
    a, b = np.zeros((4, 1, 2, 1)), np.arange(1.0, 16.0).reshape(3, 1, 5)
    for axis in (None, 1, (0, 3)):
        got, sgn = logsumexp(a, axis=axis, b=b, return_sign=True)
        want, wsgn = sp.logsumexp(a, axis=axis, b=b, return_sign=True)
        assert np.shape(got) == np.shape(want), axis
        np.testing.assert_allclose(got, want, rtol=1e-15)
        assert np.array_equal(sgn, wsgn)


def test_logsumexp_weights_set_the_format_with_a():
    a = np.array([0.0, -20.0], np.float32)
    assert logsumexp(a).dtype == np.float32
    assert logsumexp(a, b=np.ones(2, np.float32)).dtype == np.float32
    assert logsumexp(a, b=[1.0, 1.0]).dtype == np.float64  # as NumPy promotes them
    assert float(logsumexp(a, b=[1.0, 1.0])) == float(logsumexp(a.astype(np.float64)))


def test_softmax_exact_cases():
    for n in [1, 2, 3, 4, 7, 1024]:
        for name, fmt in FORMATS.items():
            got = softmax(np.full(n, 1.5, fmt.dtype))
            want = rounded(fmt, mpmath.mpf(1) / n) if n & (n - 1) else 1.0 / n
            assert np.all(got.astype(np.float64) == want), (name, n)
    got = softmax(np.array([0.0, -np.inf, 0.0]))
    assert bits(got).tolist() == bits(np.array([0.5, 0.0, 0.5])).tolist()


def test_round_rational_matches_exact_rounding():
    """Against a brute force on fractions: ties (to even), subnormals and overflow."""
    rng = np.random.default_rng(1)
    for fmt in FORMATS.values():
        cases = [(1, 3), (1, 2), (2, 3), (-7, 9), (1, 1 << 30), (1, 3 << 24), (3, 1 << 26)]
        cases += [
            (int(rng.integers(1, 1 << 40)), int(rng.integers(1, 1 << 40))) for _ in range(200)
        ]
        cases += [(1 << 200, 3), (1, (1 << 200) + 1)]
        for num, den in cases:
            v, res, q = round_rational(fmt, num, den)
            exact = Fraction(num, den)
            # the format's neighbours of v, and the rounding rule, by brute force
            if math.isinf(v):  # at or beyond the midpoint above the largest finite value
                assert exact >= Fraction(2) ** fmt.emax * (2 - Fraction(1, 2**fmt.precision))
                continue
            step = Fraction(2) ** q
            assert Fraction(v) % step == 0
            off = exact - Fraction(v)
            assert abs(off) <= step / 2
            if abs(off) == step / 2:
                assert (Fraction(v) / step) % 2 == 0  # ties to even
            assert res == float(off / step)


@pytest.mark.parametrize(
    ("x", "case", "canonical"),
    [
        ([1.0, np.nan], "nan", [np.nan, np.nan]),
        ([np.inf], "length-1 inf", [1.0]),
        ([np.inf, 1.0, -np.inf], "one +inf", [1.0, 0.0, 0.0]),
        ([np.inf, np.inf, 1.0], "several +inf", [np.nan, np.nan, 0.0]),
        ([-np.inf, -np.inf], "all -inf", [np.nan, np.nan]),
    ],
)
def test_softmax_special_slices(x, case, canonical):
    r = evaluate_softmax(np.array(x))
    assert [sp.case for sp in r.special_slices] == [case]
    assert np.array_equal(r.expected, canonical, equal_nan=True)
    # SciPy's answer, NaN everywhere, is accepted in every case (as for log_softmax)
    assert np.all(r.ulp_error(np.full(len(x), np.nan)) == 0.0)
    assert not np.any(r.correctly_rounded(np.full(len(x), 0.25)))
    if case == "several +inf":
        split = np.where(np.array(x) == np.inf, 0.5, 0.0)
        assert np.all(r.ulp_error(split) == 0.0)
        assert r.semantics(split) == [("several +inf", "equal-split")]


def test_softmax_scores_its_errors():
    x = np.array([0.0, -20.0], np.float32)
    r = evaluate_softmax(x)
    naive = (np.exp(x) / np.exp(x).sum()).astype(np.float32)
    assert np.all(r.correctly_rounded(r.expected))
    assert r.ulp_error(naive).max() < 1.0
    wrong = r.expected.copy()
    wrong[1] = np.nextafter(wrong[1], np.float32(1))
    assert r.ulp_error(wrong)[1] > 0.5 and not r.correctly_rounded(wrong)[1]


def _rows_and_weights() -> Any:
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    fmt = st.sampled_from(list(FORMATS))
    scale = st.sampled_from([1.0, 30.0, 1e4])

    @st.composite
    def draw(draw):
        f = FORMATS[draw(fmt)]
        n = draw(st.integers(1, 7))
        s = draw(scale)
        x = draw(arrays(np.float64, n, elements=st.floats(-1, 1))) * s
        # repeats of one value: ties for softmax, merged weights for logsumexp
        if n > 2 and draw(st.booleans()):
            x[: n // 2] = x[-1]
        w = draw(arrays(np.float64, n, elements=st.sampled_from([-3.0, -1.0, -0.5, 0.0, 1.0, 2.0])))
        return f, x.astype(f.dtype), w.astype(f.dtype)

    return draw()


def test_random_rows_against_the_definitions():
    from hypothesis import given, settings

    @settings(max_examples=150, deadline=None)
    @given(_rows_and_weights())
    def check(case):
        fmt, x, w = case
        got = softmax(x)
        want = np.array(direct_softmax(x, fmt)).astype(fmt.dtype)
        assert np.array_equal(bits(got), bits(want)), (x, got, want)
        lse = logsumexp(x)
        assert bits(lse) == bits(np.array(direct_logsumexp(x, fmt)[0], fmt.dtype)), x
        if (w != 0).any():
            live = w != 0
            lse, sgn = logsumexp(x, b=w, return_sign=True)
            v, wsgn = direct_logsumexp(x[live], fmt, w[live])
            assert (float(sgn), bits(lse)) == (wsgn, bits(np.array(v, fmt.dtype))), (x, w)

    check()


@pytest.mark.parametrize("name", list(FORMATS))
def test_neighbours_that_cancel(name):
    """b = +-1 on a value and its neighbour: |S| is exp(x) times about one ulp."""
    fmt = FORMATS[name]
    for x0 in [0.0, 1.0, -3.25, 100.0, float(np.ldexp(1.0, fmt.qmin))]:
        a = np.array([x0, x0], fmt.dtype)
        up = np.nextafter(a[:1].astype(np.float32 if name == "bfloat16" else fmt.dtype), np.inf)
        a[1] = (
            up.astype(fmt.dtype)[0]
            if name != "bfloat16"
            else a[0]
            + np.asarray(np.ldexp(1.0, 1 - fmt.precision), fmt.dtype)
            * max(abs(a[0]), np.asarray(1.0, fmt.dtype))
        )
        if a[1] == a[0]:
            continue
        for b in ([1.0, -1.0], [-1.0, 1.0], [2.0, -1.0]):
            bb = np.array(b, fmt.dtype)
            got, sgn = logsumexp(a, b=bb, return_sign=True)
            want, wsgn = direct_logsumexp(a, fmt, bb)
            assert (float(sgn), bits(got)) == (wsgn, bits(np.array(want, fmt.dtype))), (a, b)


def test_the_double_double_exp_is_within_its_bound():
    """Measured against mpmath at 250 bits: far inside REL_BOUND (which the fast path
    trusts), over y in [-700, 0], tiny y, and a low part below y's last bit."""
    from reference._ddexp import REL_BOUND, exp_dd

    rng = np.random.default_rng(0)
    y = np.concatenate(
        [
            -rng.uniform(0, 700, 3000),
            -rng.uniform(0, 1e-3, 300),
            -np.ldexp(1.0, -rng.integers(10, 60, 300)).astype(np.float64),
        ]
    )
    low = y * rng.uniform(-1, 1, y.size) * 2.0**-53
    hi, lo, scale = exp_dd([y, low])
    worst = mpmath.mpf(0)
    with mpmath.workprec(250):
        for i in range(y.size):
            want = mpmath.exp(mpmath.mpf(y[i]) + mpmath.mpf(low[i]))
            got = (mpmath.mpf(hi[i]) + mpmath.mpf(lo[i])) * mpmath.mpf(scale[i])
            worst = max(worst, abs(got / want - 1))
    assert worst < REL_BOUND / 2**6, float(mpmath.log(worst, 2))


@pytest.mark.parametrize("name", list(FORMATS))
def test_softmax_fast_path_gives_the_slow_paths_answers(name, monkeypatch):
    """The double-double pass decides most elements; wherever it does, the value and
    the ulp are the per-element mpmath path's, and the residual within 2**-38 ulp."""
    import reference._softmax as sm

    fmt = FORMATS[name]
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.standard_normal((8, 64)) * s for s in (1.0, 5.0, 30.0)]
        + [
            np.stack(
                [row[:64] if row.size >= 64 else np.resize(row, 64) for _, row in rows(fmt, 2, 64)]
            )
        ]
    ).astype(fmt.dtype)
    fast = evaluate_softmax(x, -1)
    monkeypatch.setattr(sm, "FAST_PATH", False)
    slow = evaluate_softmax(x, -1)
    assert np.array_equal(bits(fast.expected), bits(slow.expected))
    assert np.array_equal(fast.ulp_exp, slow.ulp_exp)
    assert np.nanmax(np.abs(fast.residual - slow.residual)) <= 2.0**-38
