"""The oracle against the definition computed directly in mpmath at 4x precision,
sum(exp(exact out)) == 1, and cached scoring against direct mpmath scoring."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.special

from reference import FORMATS, evaluate, ulp_error, ulp_error_direct
from reference._direct import exact_values

from ._corpus import DTYPES, rounded, rows


@pytest.mark.parametrize("engine", ["arb", "mpmath"])
@pytest.mark.parametrize("name", DTYPES)
def test_rounded_values_match_direct_4x(name, engine):
    fmt = FORMATS[name]
    prec = 4 * (fmt.precision + 64)
    for label, row in rows(fmt, seed=3):
        res = evaluate(row, engine=engine)
        ys = exact_values(row.astype(np.float64), prec)
        with mpmath.workprec(prec):
            want = [rounded(fmt, y) for y in ys]
        got = res.expected.astype(np.float64).tolist()
        assert got == want, (label, row)
        assert [np.signbit(v) for v in got] == [np.signbit(v) for v in want], label


@pytest.mark.parametrize("name", DTYPES)
def test_sum_of_exp_of_exact_output_is_one(name):
    """Reconstruct y = expected + residual * ulp and check sum(exp(y)) == 1."""
    fmt = FORMATS[name]
    for label, row in rows(fmt, seed=4):
        res = evaluate(row)
        with mpmath.workprec(4 * (fmt.precision + 64)):
            total = mpmath.fsum(
                mpmath.exp(mpmath.mpf(float(c)) + mpmath.ldexp(float(r), int(q)))
                for c, r, q in zip(
                    res.expected.astype(np.float64), res.residual, res.ulp_exp, strict=True
                )
                if np.isfinite(c)
            )
            # each y carries <= 2**-48 ulp of error, and |d exp(y)| <= |dy| ulp(y) ...
            bound = len(row) * mpmath.ldexp(1, -(fmt.precision + 46))
            assert abs(total - 1) <= bound, (label, total)


def _candidates(x: np.ndarray, res) -> dict[str, np.ndarray]:
    exp = res.expected
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        naive = (x64 - np.log(np.sum(np.exp(x64)))).astype(x.dtype)
        out = {
            "expected": exp,
            "next-up": np.nextafter(exp.astype(np.float64), 0).astype(exp.dtype)
            if exp.dtype == np.float64
            else exp,
            "scipy": scipy.special.log_softmax(x64).astype(x.dtype),
            "naive": naive,
        }
    return {k: v for k, v in out.items() if np.isfinite(v.astype(np.float64)).all()}


@pytest.mark.parametrize("name", DTYPES)
def test_cached_scoring_agrees_with_direct_mpmath_scoring(name):
    fmt = FORMATS[name]
    for label, row in rows(fmt, seed=5):
        res = evaluate(row)
        if not np.isfinite(res.expected.astype(np.float64)).all():
            continue
        for cname, c in _candidates(row, res).items():
            fast = res.ulp_error(c)
            slow = ulp_error_direct(c, row)
            np.testing.assert_allclose(
                fast, slow, rtol=2**-45, atol=2**-47, err_msg=f"{label} {cname}"
            )


def test_scoring_uses_the_computed_format():
    """A float32 result for bfloat16 input is scored in float32 ULPs."""
    x = np.array([0.0, -3.0, 1.5], dtype=FORMATS["bfloat16"].dtype)
    c32 = scipy.special.log_softmax(x.astype(np.float32))
    e32 = ulp_error(c32, x)
    want = ulp_error_direct(c32, x.astype(np.float32))
    np.testing.assert_allclose(e32, want, rtol=2**-45, atol=2**-47)
    cb = c32.astype(x.dtype)
    np.testing.assert_allclose(ulp_error(cb, x), ulp_error_direct(cb, x), rtol=2**-45, atol=2**-47)
    assert not np.array_equal(ulp_error(cb, x), e32)


def test_known_saturation_figures():
    """The facts that motivate the project, as the oracle measures them."""
    x = np.array([0.0, -40.0])
    e = ulp_error(scipy.special.log_softmax(x), x)
    assert 5.5e15 < e[0] < 5.6e15
    x32 = np.array([0.0, -20.0], dtype=np.float32)
    e32 = ulp_error(scipy.special.log_softmax(x32), x32)
    assert 9.2e6 < e32[0] < 9.4e6
