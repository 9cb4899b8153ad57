"""The two engines, the fast and exact rounding paths, and Ziv's loop agree."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from reference import FORMATS, _oracle, evaluate
from reference._direct import exact_values
from reference._engines import ArbEngine, MpmathEngine, get_engine, log_normaliser
from reference._formats import dyadic_from_float
from reference._rounding import round_exact, round_fast

from ._corpus import DTYPES, rows


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _random_matrix(fmt, seed: int) -> np.ndarray:
    """Rows of 64 drawn from mixed distributions, with infinities sprinkled in."""
    rng = np.random.default_rng(seed)
    k, n = 160, 64
    scale = np.exp(rng.uniform(-8, 6, (k, 1)))
    x = rng.standard_normal((k, n)) * scale
    x[rng.random((k, n)) < 0.01] = -np.inf
    x[::17, 0] = np.inf
    x[5::23, 3] = np.nan
    with np.errstate(over="ignore"):
        return x.astype(fmt.dtype)


@pytest.mark.parametrize("name", DTYPES)
def test_engines_bit_identical_on_corpus(name):
    fmt = FORMATS[name]
    inputs = [row for seed in range(4) for _, row in rows(fmt, seed=seed, n=9)]
    inputs += [_random_matrix(fmt, seed) for seed in range(4)]
    checked = 0
    for x in inputs:
        a = evaluate(x, axis=-1, engine="arb")
        b = evaluate(x, axis=-1, engine="mpmath")
        np.testing.assert_array_equal(_bits(a.expected), _bits(b.expected))
        np.testing.assert_array_equal(a.ulp_exp, b.ulp_exp)
        np.testing.assert_allclose(a.residual, b.residual, rtol=0, atol=2**-47)
        checked += x.size
    assert checked > 40_000


def _worst_term_error(exp_neg_sum, W: int) -> int:
    """Largest |computed - exp(-u) 2**W| in units over a spread of arguments u."""
    rng = np.random.default_rng(0)
    worst = 0
    for v in [0.0, 2.0**-30, *rng.uniform(0, 0.6932 * (W - 4), 300).tolist()]:
        U = int(v * 2**30) << (W - 30)
        got = exp_neg_sum([U])
        with mpmath.workprec(3 * W):
            exact = mpmath.exp(-mpmath.ldexp(U, -W)) * mpmath.ldexp(1, W)
        worst = max(worst, abs(int(mpmath.nint(exact - got))))
    return worst


@pytest.mark.parametrize("W", [60, 136, 300])
def test_term_errors_are_within_the_engine_bound(W):
    from mpmath.libmp import libelefun as le

    from reference._engines import _exp_table

    ln2 = le.ln2_fixed(W)
    fixed = _worst_term_error(lambda us: sum(le.exp_fixed(-u, W, ln2) for u in us), W)
    table = _worst_term_error(_exp_table(W, W - 4).sum_exp_neg, W)
    # two more units come from flooring the argument
    assert max(fixed, table) + 2 <= MpmathEngine.TERM_ERROR_UNITS
    assert table <= 2 and fixed <= 8


@pytest.mark.parametrize("engine", [ArbEngine(), MpmathEngine()], ids=["arb", "mpmath"])
def test_log_normaliser_interval_contains_the_value(engine):
    fmt = FORMATS["float64"]
    for label, row in rows(fmt, seed=7, n=12):
        v = row.astype(np.float64)
        if np.count_nonzero(np.isfinite(v)) < 2:
            continue
        for prec in (60, 117, 300):
            (lm, le_), (hm, he) = log_normaliser(engine, v, prec)
            with mpmath.workprec(4 * prec + 100):
                ys = exact_values(v, 4 * prec + 100)
                L = -ys[int(np.argmax(v))]
                lo, hi = mpmath.ldexp(lm, le_), mpmath.ldexp(hm, he)
                assert lo <= L <= hi, (label, prec)
                if L > 0:
                    assert (hi - lo) / L < mpmath.ldexp(1, -(prec - 8)), (label, prec)


@pytest.mark.parametrize("name", DTYPES)
def test_fast_path_agrees_with_exact_path(name):
    fmt = FORMATS[name]
    engine = get_engine("arb")
    decided_fast = 0
    for seed in range(3):
        for label, row in rows(fmt, seed=seed, n=10):
            v = row.astype(np.float64)
            if np.count_nonzero(np.isfinite(v)) < 2:
                continue
            lo, hi = log_normaliser(engine, v, fmt.precision + 64)
            trip = _oracle.triple(lo, hi)
            m = np.full_like(v, v.max())
            L = (np.full_like(v, trip[0]), np.full_like(v, trip[1]), np.full_like(v, trip[2]))
            ok, val, res, ue = round_fast(fmt, v, m, L, np.full_like(v, trip[3]))
            for j in range(v.size):
                e_ok, e_val, e_res, e_ue = round_exact(fmt, v[j], float(v.max()), lo, hi)
                assert e_ok, (label, j)
                if ok[j]:
                    decided_fast += 1
                    assert dyadic_from_float(val[j]) == dyadic_from_float(e_val), (label, j)
                    assert np.signbit(val[j]) == np.signbit(e_val)
                    assert ue[j] == e_ue and abs(res[j] - e_res) <= 2**-47, (label, j)
    assert decided_fast > 300


@pytest.mark.parametrize("name", DTYPES)
def test_ziv_loop_from_a_starved_start_gives_the_same_answer(name, monkeypatch):
    fmt = FORMATS[name]
    x = np.stack([row for _, row in rows(fmt, seed=11, n=8) if row.size == 8])
    x = np.concatenate([x, _random_matrix(fmt, 12)[:20, :8]])
    want = evaluate(x, axis=1)
    monkeypatch.setattr(_oracle, "FIRST_GUARD_BITS", -fmt.precision + 6)
    got = evaluate(x, axis=1)
    np.testing.assert_array_equal(_bits(got.expected), _bits(want.expected))
    np.testing.assert_allclose(got.residual, want.residual, rtol=0, atol=2**-47)


def test_engine_selection(monkeypatch):
    assert get_engine("mpmath").name == "mpmath"
    monkeypatch.setenv("REFERENCE_ENGINE", "mpmath")
    assert get_engine().name == "mpmath"
    with pytest.raises(ValueError, match="unknown oracle engine"):
        get_engine("gmp")
