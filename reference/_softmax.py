"""The oracle for softmax: RN(exp(x_i - m - L)) per element, L certified by the engines.

softmax(x)_i = exp(y_i) with y_i = log_softmax(x)_i = (x_i - m) - L. The engine gives L
as an interval; y_i is then an interval of dyadics, and exp of its lower end, widened
by mpmath's error bound and by the interval's width, encloses softmax(x)_i. Ziv's loop
doubles the precision until the rounding is decided.

The one rational case is decided exactly: exp(y_i) is rational only when every finite
entry of the slice is equal (Lindemann-Weierstrass: a sum of exponentials of distinct
rationals with nonzero rational coefficients is transcendental), and then it is 1/k.
Everywhere else the value is transcendental, so it is never a rounding boundary and
the loop ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._ddexp import REL_BOUND, Y_MIN, exp_dd
from ._engines import Engine, prepare_terms_block, two_sum
from ._formats import Dyadic, Format, dyadic_add, dyadic_from_float
from ._interval import from_mpf, round_interval, round_rational, to_mpf
from ._oracle import (
    FIRST_GUARD_BITS,
    MAX_PREC,
    RowsOut,
    evaluate_slices,
    special_slice,
    triple,
)
from ._result import Answer, OracleResult, SpecialSlice
from ._rounding import round_positive

__all__ = ["evaluate_softmax"]

# mpmath's exp at wp bits is taken to be within 2**-(wp - 10) relative of exp (it carries
# guard bits of its own; the engines' bound makes the same assumption with a wider
# margin); the interval is widened by twice that, so it holds exp whichever side is off.
_EXP_SLACK_BITS = 10
# A decided element's residual is known to 2**-RESIDUAL_BITS ulp (log_softmax's, 2**-48;
# the double-double exp's 2**-94 relative bound leaves float64 about 2**-41)
RESIDUAL_BITS = 38
FAST_PATH = True  # False: every element through mpmath (the tests compare the two)


def _exp_interval(y_lo: Dyadic, width: Dyadic, wp: int) -> tuple[Dyadic, Dyadic]:
    """An interval enclosing exp(y) for y in [y_lo, y_lo + width], y < 0, width < 1/2.

    Above y = -1 it is 1 + expm1(y), widened on expm1's side: the interval then stays
    below 1 however close to 1 the value is (the maximum's output is 1 - T/(1 + T) for
    a sum T of the others' terms that can be far below 2**-wp)."""
    from mpmath.libmp import libelefun as le
    from mpmath.libmp import libmpf as lm

    rel = lm.from_man_exp(1, -(wp - _EXP_SLACK_BITS - 1))
    one_lo, one_hi = lm.mpf_sub(lm.fone, rel), lm.mpf_add(lm.fone, rel)
    # exp(y_lo + w) <= exp(y_lo) + 2w for 0 <= w < 1/2 and exp(y_lo) < 1; the sums
    # are exact, so that nothing is rounded at wp bits next to 1
    grow = lm.mpf_shift(to_mpf(width), 1)
    y = to_mpf(y_lo)
    if y[1] and y[2] + y[3] <= 0:  # -1 < y < 0: 1 + expm1(y)
        mag = y[2] + y[3]
        if mag < -wp:
            e = y  # expm1(y) = y (1 + y/2 + ...), within 2**-wp relative
        else:  # exp(y) - 1 loses -mag bits: exp carries them
            e = lm.mpf_sub(le.mpf_exp(y, wp - mag + 4), lm.fone, wp)
        lo = lm.mpf_add(lm.fone, lm.mpf_mul(e, one_hi, wp, "d"))
        hi = lm.mpf_add(lm.mpf_add(lm.fone, lm.mpf_mul(e, one_lo, wp, "u")), grow)
    else:
        e = le.mpf_exp(y, wp)
        lo = lm.mpf_mul(e, one_lo, wp, "d")
        hi = lm.mpf_add(lm.mpf_mul(e, one_hi, wp, "u"), grow)
    return from_mpf(lo), from_mpf(hi)


def _negligible(fmt: Format) -> float:
    """A float64 d below which exp(d) < 2**(qmin - 60): RN gives +0 with a residual
    under 2**-60 ulp. 0.6932 > ln 2, and the factor absorbs the rounding of x - m."""
    return (fmt.qmin - 61) * 0.6932 * (1 + 2.0**-40)


def _maxima_beside_negligible_rest(
    sub: NDArray[np.float64],
    rows: NDArray[np.intp],
    m: NDArray[np.float64],
    fmt: Format,
    todo: NDArray[np.bool_],
    out: RowsOut,
) -> None:
    """Decide the maxima of rows whose other terms are negligible, without Ziv's loop.

    Each of K equal maxima gets 1/(K + R), R = sum of exp(x_j - m) over x_j < m. With
    R < K 2**-(p + 70) the value lies in (1/K - 2**-(p + 70)/K, 1/K), where no rounding
    boundary and no power of two lies (1/K itself excluded: 1/K is at least
    2**-(p + 2 + 2 log2 K) from every boundary unless it is one, and log2 K < 64), so
    it rounds as the point 1/K (1 - 2**-(p + 71)) does, with a residual within 2**-60
    ulp. Ziv's loop could not decide these where 1/K is a power of two: the interval
    would have to be narrower than R, which can be 2**-90000.
    """
    p = fmt.precision
    is_max = sub == m[:, None]
    k = is_max.sum(axis=1)
    with np.errstate(all="ignore"):
        below = np.where(is_max, -np.inf, sub).max(axis=1)
        # an upper bound on R: (n - K) exp(x2 - m), with room for two roundings in
        # float64 (x2 - m and exp, each far below 2**-40 relative)
        r_up = (sub.shape[1] - k) * np.exp((below - m) * (1 - 2.0**-40)) * (1 + 2.0**-40)
    for i in np.flatnonzero(r_up < np.ldexp(k.astype(np.float64), -(p + 70))):
        got = round_rational(fmt, (1 << (p + 71)) - 1, int(k[i]) << (p + 71))
        for j in np.flatnonzero(is_max[i] & todo[i]):
            out.put(int(rows[i]), int(j), got)
            todo[i, j] = False


def _fast_pass(
    sub: NDArray[np.float64],
    rows: NDArray[np.intp],
    m: NDArray[np.float64],
    active: NDArray[np.intp],
    intervals: list[tuple[Dyadic, Dyadic]],
    fmt: Format,
    todo: NDArray[np.bool_],
    out: RowsOut,
) -> None:
    """Every element still to do, at once: exp(y) in double-double (_ddexp, within
    REL_BOUND) with y = (x - m) - L taken exactly from x, m and L's triple-double
    midpoint (its distance to L's ends added to the bound), rounded where the bound
    decides it with a residual known to 2**-RESIDUAL_BITS ulp; the rest is left to
    the per-element path."""
    r_i, c_i = np.nonzero(todo[active])
    if not r_i.size:
        return
    trip = np.array([triple(lo, hi) for lo, hi in intervals]).reshape(-1, 4)[r_i]
    i = active[r_i]
    with np.errstate(all="ignore"):
        dh, dl = two_sum(sub[i, c_i], -m[i])
        y = dh - trip[:, 0]
        ok = np.isfinite(dh) & (y >= Y_MIN) & (y < 0.5)
        hi, lo, scale = exp_dd([dh, dl, -trip[:, 0], -trip[:, 1], -trip[:, 2]])
        # exp's relative error is y's absolute one: eps_L, plus the double-double's
        Y1, Y2 = hi * scale, lo * scale
        err = (REL_BOUND + trip[:, 3] * 1.01) * Y1 * 1.01
    decided, v, res, q = round_positive(fmt, Y1, Y2, err, ok, RESIDUAL_BITS)
    d_i, d_c = i[decided], c_i[decided]
    out.value[rows[d_i], d_c] = v[decided]
    out.residual[rows[d_i], d_c] = res[decided]
    out.ulp_exp[rows[d_i], d_c] = q[decided]
    todo[d_i, d_c] = False


def _solve_regular(
    X: NDArray[np.float64], rows: NDArray[np.intp], fmt: Format, engine: Engine, out: RowsOut
) -> None:
    """Slices with >= 2 finite entries, not all equal, no NaN or +inf: Ziv's loop."""
    sub = X[rows]
    m = np.max(sub, axis=1)
    with np.errstate(all="ignore"):  # -inf entries; an overflow is below any cut too
        d = sub - m[:, None]
    todo = np.isfinite(sub)
    tiny = todo & (d < _negligible(fmt))
    r_t, c_t = np.nonzero(tiny)
    out.value[rows[r_t], c_t] = 0.0
    out.residual[rows[r_t], c_t] = 0.0
    todo &= ~tiny
    _maxima_beside_negligible_rest(sub, rows, m, fmt, todo, out)
    prec = fmt.precision + FIRST_GUARD_BITS
    active = np.arange(rows.size)
    while active.size:
        if prec > MAX_PREC:
            raise RuntimeError(
                f"rounding undecided at {MAX_PREC} bits for slices {rows[active].tolist()}"
            )
        wp = prec + 30
        intervals = [engine.log_normaliser_terms(t) for t in prepare_terms_block(sub[active], prec)]
        if prec == fmt.precision + FIRST_GUARD_BITS and FAST_PATH:
            _fast_pass(sub, rows, m, active, intervals, fmt, todo, out)
        for i, (l_lo, l_hi) in zip(active, intervals, strict=True):
            width = dyadic_add(l_hi, (-l_lo[0], l_lo[1]))
            mm = dyadic_from_float(float(m[i]))
            for j in np.flatnonzero(todo[i]):
                dj = dyadic_add(dyadic_from_float(float(sub[i, j])), (-mm[0], mm[1]))
                y_lo = dyadic_add(dj, (-l_hi[0], l_hi[1]))
                lo, hi = _exp_interval(y_lo, width, wp)
                ok, v, res, q = round_interval(fmt, lo, hi)
                if ok:
                    out.put(int(rows[i]), int(j), (v, res, q))
                    todo[i, j] = False
        active = active[todo[active].any(axis=1)]
        prec *= 2


def _special(
    x: NDArray[np.float64],
    idx: NDArray[np.intp],
    fmt: Format,
    engine: Engine,
    cache: dict[int, Answer],
) -> SpecialSlice:
    """log_softmax's answers for the slice (the same rules), taken through exp: 0 and
    -inf become 1 and 0, NaN stays, and the equal split -log k becomes RN(1/k)."""
    sp = special_slice(x, idx, fmt, engine, cache)
    inf = x == np.inf
    answers = []
    for a in sp.answers:
        if a.semantics == "equal-split":
            v, res, q_k = round_rational(fmt, 1, int(inf.sum()))
            answers.append(
                Answer(
                    a.semantics,
                    np.where(inf, v, 0.0),
                    np.where(inf, res, 0.0),
                    np.where(inf, q_k, fmt.qmin).astype(np.int64),
                )
            )
            continue
        value = np.exp(a.value)  # exact on 0, -inf and NaN
        residual = np.where(np.isnan(value), np.nan, 0.0)
        q = np.where(value == 1.0, fmt.quantum_exponent(0), fmt.qmin).astype(np.int64)
        answers.append(Answer(a.semantics, value, residual, q))
    return SpecialSlice(sp.case, sp.indices, tuple(answers))


def evaluate_softmax(
    x: Any, axis: Any = None, *, fmt: Any = None, engine: str | Engine | None = None
) -> OracleResult:
    """Correctly rounded softmax of ``x`` along ``axis``, ready to score (the arguments
    are :func:`reference.evaluate`'s)."""
    return evaluate_slices(x, axis, fmt, engine, _solve, _special)


def _solve(
    X: NDArray[np.float64],
    finite: NDArray[np.bool_],
    n_finite: NDArray[np.intp],
    regular: NDArray[np.bool_],
    fmt: Format,
    eng: Engine,
    out: RowsOut,
) -> None:
    with np.errstate(all="ignore"):
        lo = np.where(finite, X, np.inf).min(axis=1)
        hi = np.where(finite, X, -np.inf).max(axis=1)
    # -inf entries of a regular slice give exactly 0
    r0, c0 = np.nonzero(regular[:, None] & ~finite)
    out.value[r0, c0] = 0.0
    out.residual[r0, c0] = 0.0
    # every finite entry equal (a lone one included): exactly 1/k
    equal = regular & (lo == hi)
    for r in np.flatnonzero(equal):
        got = round_rational(fmt, 1, int(n_finite[r]))
        for c in np.flatnonzero(finite[r]):
            out.put(int(r), int(c), got)
    _solve_regular(X, np.flatnonzero(regular & ~equal), fmt, eng, out)
