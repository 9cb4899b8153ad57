"""Hypothesis: random rows of every dtype, subnormals included, against the
definition at 4x precision; and the correctly rounded answer scores <= 0.5 ULP while
its neighbours score more."""

from __future__ import annotations

from typing import Literal

import mpmath
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference import FORMATS, evaluate
from reference._direct import exact_values

from ._corpus import rounded

_WIDTH: dict[str, Literal[16, 32, 64]] = {
    "float16": 16,
    "bfloat16": 32,
    "float32": 32,
    "float64": 64,
}


@st.composite
def finite_rows(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(list(FORMATS)))
    fmt = FORMATS[name]
    n = draw(st.integers(1, 12))
    elements = st.floats(
        allow_nan=False, allow_infinity=False, allow_subnormal=True, width=_WIDTH[name]
    )
    if draw(st.booleans()):  # clustered rows: a centre and small offsets
        centre = draw(elements)
        spread = draw(st.sampled_from([0.0, 1.0, 30.0, 800.0]))
        offs = draw(hnp.arrays(np.float64, n, elements=st.floats(-1, 1)))
        x = np.float64(centre) + spread * offs
    else:
        x = draw(hnp.arrays(np.float64, n, elements=elements))
    with np.errstate(over="ignore"):
        x = x.astype(np.float32 if name == "bfloat16" else np.float64).astype(fmt.dtype)
    x = x[np.isfinite(x.astype(np.float64))]
    if x.size == 0:
        x = np.zeros(1, fmt.dtype)
    return name, x


@settings(max_examples=150, deadline=None)
@given(finite_rows())
def test_random_rows_match_definition(case):
    name, x = case
    fmt = FORMATS[name]
    res = evaluate(x)
    prec = 4 * (fmt.precision + 64)
    ys = exact_values(x.astype(np.float64), prec)
    with mpmath.workprec(prec):
        want = [rounded(fmt, y) for y in ys]
    assert res.expected.astype(np.float64).tolist() == want


@settings(max_examples=100, deadline=None)
@given(finite_rows())
def test_expected_is_within_half_ulp_and_neighbours_are_not(case):
    name, x = case
    res = evaluate(x)
    exp = res.expected
    err = res.ulp_error(exp)
    assert (err <= 0.5).all()
    assert np.all(np.abs(res.residual[np.isfinite(res.residual)]) <= 0.5)
    if name in ("float32", "float64"):
        for direction in (-np.inf, np.inf):
            with np.errstate(over="ignore"):
                nb = np.nextafter(exp, np.array(direction, dtype=exp.dtype))
            ok = np.isfinite(nb)
            assert (res.ulp_error(nb)[ok] >= 0.5).all()
