"""The oracle driver: slicing, special values, and Ziv's loop over the engines."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._engines import Engine, get_engine, prepare_terms_block
from ._formats import (
    Dyadic,
    Format,
    dyadic_add,
    dyadic_from_float,
    dyadic_to_float,
    format_of,
)
from ._result import Answer, OracleResult, SpecialSlice
from ._rounding import round_exact, round_fast

__all__ = [
    "RowsOut",
    "as_input",
    "evaluate",
    "evaluate_slices",
    "from_rows",
    "normalize_axis",
    "special_slice",
    "to_rows",
    "triple",
]

# Ziv's loop doubles the working precision from fmt.precision + 64 bits. The rounding
# of a transcendental value is always decided eventually (y is rational only when the
# normaliser is exactly 1, which is handled exactly); this cap turns a bug into an error
# instead of an endless loop.
MAX_PREC = 1 << 16
# Bits beyond the format's precision at the first try: enough that nearly every
# rounding is decided at once and the residual is known to ~2**-50 ulp.
FIRST_GUARD_BITS = 64


def normalize_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    """The reduced axes as sorted non-negative ints, with NumPy's errors."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        try:
            if isinstance(a, bool):  # an index to operator.index, never an axis
                raise TypeError
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"axis must be None, an integer or a tuple of integers, got {axis!r}"
            ) from None
        if ndim == 0 and a in (0, -1) and not isinstance(axis, tuple):
            return ()  # NumPy's reductions take axis 0 or -1 of a 0-d array as its element
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in axis={axis!r}")
    return tuple(sorted(out))


def to_rows(arr: NDArray[Any], axes: tuple[int, ...]) -> tuple[NDArray[np.float64], list[int]]:
    """The slices of ``arr`` along ``axes`` as the rows of a float64 matrix, and the
    permutation of arr's axes (kept axes first) that laid them out."""
    kept = [i for i in range(arr.ndim) if i not in axes]
    perm = kept + list(axes)
    n = math.prod(arr.shape[a] for a in axes)
    with np.errstate(invalid="ignore"):  # signalling NaN patterns widen quietly
        return np.transpose(arr.astype(np.float64), perm).reshape(-1, n), perm


def from_rows(a: NDArray[Any], shape: tuple[int, ...], perm: list[int]) -> NDArray[Any]:
    """The inverse of :func:`to_rows` for an array of the rows' shape."""
    return np.transpose(a.reshape([shape[p] for p in perm]), np.argsort(perm))


def as_input(x: Any) -> NDArray[Any]:
    arr = np.asarray(x)
    format_of(arr.dtype)  # TypeError for complex, object, ...
    return arr


def triple(lo: Dyadic, hi: Dyadic) -> tuple[float, float, float, float]:
    """L1 + L2 + L3 approximating the interval's midpoint, and a float64 upper bound on
    the distance from that sum to any point of the interval."""
    s, e = dyadic_add(lo, hi)
    w, _ = dyadic_add(hi, (-lo[0], lo[1]))  # same exponent e
    mid: Dyadic = (s, e - 1)
    parts = []
    rem = mid
    for _ in range(3):
        p = dyadic_to_float(*rem)
        parts.append(p)
        m, x = dyadic_from_float(p)
        rem = dyadic_add(rem, (-m, x))
    bound = dyadic_add((abs(rem[0]), rem[1]), (w, e - 1))
    return parts[0], parts[1], parts[2], dyadic_to_float(*bound, direction="u")


class RowsOut:
    """Output buffers in slice-major order: value, residual and ulp exponent."""

    def __init__(self, rows: int, n: int, fmt: Format) -> None:
        self.value = np.full((rows, n), np.nan)
        self.residual = np.full((rows, n), np.nan)
        self.ulp_exp = np.full((rows, n), fmt.qmin, dtype=np.int64)

    def put(self, r: int, c: int, got: tuple[float, float, int]) -> None:
        self.value[r, c], self.residual[r, c], self.ulp_exp[r, c] = got


def _solve_regular(
    X: NDArray[np.float64],
    rows: NDArray[np.intp],
    fmt: Format,
    engine: Engine,
    out: RowsOut,
) -> None:
    """Slices with >= 2 finite entries and no NaN/+inf: Ziv's loop."""
    sub = X[rows]
    todo = np.isfinite(sub)
    m = np.max(sub, axis=1)
    prec = fmt.precision + FIRST_GUARD_BITS
    active = np.arange(rows.size)
    while active.size:
        if prec > MAX_PREC:
            raise RuntimeError(
                f"rounding undecided at {MAX_PREC} bits for slices {rows[active].tolist()}"
            )
        intervals = [engine.log_normaliser_terms(t) for t in prepare_terms_block(sub[active], prec)]
        trip = np.array([triple(lo, hi) for lo, hi in intervals]).reshape(-1, 4)
        s_x = sub[active]
        s_todo = todo[active]
        decided, val, res, ue = round_fast(
            fmt,
            s_x,
            m[active, None],
            (trip[:, 0, None], trip[:, 1, None], trip[:, 2, None]),
            trip[:, 3, None],
        )
        decided &= s_todo
        r_idx, c_idx = np.nonzero(decided)
        dest = rows[active][r_idx]
        out.value[dest, c_idx] = val[r_idx, c_idx]
        out.residual[dest, c_idx] = res[r_idx, c_idx]
        out.ulp_exp[dest, c_idx] = ue[r_idx, c_idx]
        remaining = s_todo & ~decided
        for i, j in zip(*np.nonzero(remaining), strict=True):
            lo, hi = intervals[i]
            ok, v, r, q = round_exact(fmt, float(s_x[i, j]), float(m[active[i]]), lo, hi)
            if ok:
                dest_row = rows[active[i]]
                out.value[dest_row, j] = v
                out.residual[dest_row, j] = r
                out.ulp_exp[dest_row, j] = q
                remaining[i, j] = False
        todo[active] = remaining
        active = active[remaining.any(axis=1)]
        prec *= 2


def _neg_log_k(k: int, fmt: Format, engine: Engine, cache: dict[int, Answer]) -> Answer:
    """RN(-log k) as the equal-split answer of a slice with k infinities."""
    if k not in cache:
        r = evaluate(np.zeros(k), fmt=fmt, engine=engine)
        cache[k] = Answer(
            "equal-split",
            np.array([float(r.expected[0])]),
            r.residual[:1].copy(),
            r.ulp_exp[:1].astype(np.int64),
        )
    return cache[k]


def special_slice(
    x: NDArray[np.float64],
    idx: NDArray[np.intp],
    fmt: Format,
    engine: Engine,
    cache: dict[int, Answer],
) -> SpecialSlice:
    """The accepted answers for a slice with NaN or +-inf entries (docs/specification.md)."""
    n = x.size
    nan_all = np.full(n, np.nan)
    zeros_i = np.full(n, fmt.qmin, dtype=np.int64)

    def ans(
        label: str,
        value: NDArray[np.float64],
        residual: NDArray[np.float64] | None = None,
        ulp_exp: NDArray[np.int64] | None = None,
    ) -> Answer:
        if residual is None:
            residual = np.where(np.isfinite(value), 0.0, np.nan)
        return Answer(label, value, residual, zeros_i if ulp_exp is None else ulp_exp)

    pinf = x == np.inf
    if np.isnan(x).any():
        return SpecialSlice("nan", idx, (ans("nan-propagating", nan_all),))
    if n == 1:
        return SpecialSlice(
            "length-1 inf", idx, (ans("limit", np.zeros(1)), ans("nan-propagating", nan_all))
        )
    k = int(pinf.sum())
    if k == 1:
        limit = np.where(pinf, 0.0, -np.inf)
        nan_at_inf = np.where(pinf, np.nan, -np.inf)
        return SpecialSlice(
            "one +inf",
            idx,
            (ans("limit", limit), ans("nan-propagating", nan_all), ans("nan-at-inf", nan_at_inf)),
        )
    if k >= 2:
        split = _neg_log_k(k, fmt, engine, cache)
        nan_at_inf = np.where(pinf, np.nan, -np.inf)
        return SpecialSlice(
            "several +inf",
            idx,
            (
                ans("nan-at-inf", nan_at_inf),
                ans(
                    "equal-split",
                    np.where(pinf, split.value[0], -np.inf),
                    np.where(pinf, split.residual[0], np.nan),
                    np.where(pinf, split.ulp_exp[0], fmt.qmin),
                ),
                ans("nan-propagating", nan_all),
            ),
        )
    # every entry -inf (n >= 2)
    return SpecialSlice("all -inf", idx, (ans("nan-propagating", nan_all),))


def evaluate(
    x: Any,
    axis: Any = None,
    *,
    fmt: Any = None,
    engine: str | Engine | None = None,
) -> OracleResult:
    """Correctly rounded log_softmax of ``x`` along ``axis``, ready to score.

    Parameters
    ----------
    x : array_like
        float16, bfloat16, float32 or float64 (integer and bool are taken as float64).
    axis : None, int or tuple of ints
        The reduced axes, as in ``scipy.special.log_softmax``.
    fmt : dtype, name or Format, optional
        The format to round to; default: x's own.
    engine : {"auto", "arb", "mpmath"} or Engine, optional

    Returns
    -------
    OracleResult
    """
    return evaluate_slices(x, axis, fmt, engine, _solve_log_softmax, special_slice)


def _solve_log_softmax(
    X: NDArray[np.float64],
    finite: NDArray[np.bool_],
    n_finite: NDArray[np.intp],
    regular: NDArray[np.bool_],
    fmt: Format,
    eng: Engine,
    out: RowsOut,
) -> None:
    # -inf entries of regular slices give -inf; a lone finite entry gives exactly 0.
    out.value[regular] = np.where(finite[regular], np.nan, -np.inf)
    lone = regular & (n_finite == 1)
    lone_r, lone_c = np.nonzero(finite & lone[:, None])
    out.value[lone_r, lone_c] = 0.0
    out.residual[lone_r, lone_c] = 0.0
    _solve_regular(X, np.flatnonzero(regular & (n_finite >= 2)), fmt, eng, out)


# (X, finite, n_finite, regular, fmt, engine, out): fills the regular slices' outputs
Solver = Callable[
    [
        NDArray[np.float64],
        NDArray[np.bool_],
        NDArray[np.intp],
        NDArray[np.bool_],
        Format,
        Engine,
        RowsOut,
    ],
    None,
]
# (slice, its flat indices, fmt, engine, cache): the accepted answers of a special slice
Specials = Callable[
    [NDArray[np.float64], NDArray[np.intp], Format, Engine, dict[int, Answer]], SpecialSlice
]


def evaluate_slices(
    x: Any, axis: Any, fmt: Any, engine: str | Engine | None, solve: Solver, special: Specials
) -> OracleResult:
    """An elementwise function of each slice (log_softmax, softmax): the input checked
    and laid out as rows, the regular rows solved, the special ones given their
    accepted answers (canonical first), and the result laid back in x's shape."""
    arr = as_input(x)
    fmt = format_of(arr.dtype) if fmt is None else format_of(fmt)
    eng = get_engine(engine)
    axes = normalize_axis(axis, arr.ndim)
    shape = arr.shape
    if arr.size == 0:
        return OracleResult(
            fmt, axes, np.empty(shape, fmt.dtype), np.empty(shape), np.zeros(shape, np.int16)
        )
    X, perm = to_rows(arr, axes)
    rows, n = X.shape
    out = RowsOut(rows, n, fmt)
    with np.errstate(all="ignore"):
        finite = np.isfinite(X)
        n_finite = finite.sum(axis=1)
        special_rows = np.isnan(X).any(axis=1) | (X == np.inf).any(axis=1) | (n_finite == 0)
    solve(X, finite, n_finite, ~special_rows, fmt, eng, out)

    special_slices = []
    if special_rows.any():
        flat_idx = np.transpose(np.arange(arr.size).reshape(shape), perm).reshape(-1, n)
        cache: dict[int, Answer] = {}
        for r in np.flatnonzero(special_rows):
            sp = special(X[r], flat_idx[r], fmt, eng, cache)
            canon = sp.answers[0]
            out.value[r], out.residual[r], out.ulp_exp[r] = (
                canon.value,
                canon.residual,
                canon.ulp_exp,
            )
            special_slices.append(sp)

    def back(a: NDArray[Any]) -> NDArray[Any]:
        return from_rows(a, shape, perm)

    return OracleResult(
        fmt=fmt,
        axis=axes,
        expected=back(out.value).astype(fmt.dtype, order="C"),
        residual=back(out.residual).copy(),
        ulp_exp=back(out.ulp_exp).astype(np.int16, order="C"),
        special_slices=tuple(special_slices),
    )
