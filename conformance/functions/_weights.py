"""logsumexp's own hard cases: weights ``b`` of both signs, and ``return_sign``.

Each case is one class of input, a block of rows reduced over the last axis, named by
its label: the label is what a cell's record lists among its failing inputs, and what
the gate names when a class that passed starts failing. Every case of a family has the
same shape, so a jitted candidate compiles once per family and format.

- ``weights``: positive weights; a negative weight at the maximum with a positive sum
  (scipy/scipy#22903: SciPy 1.15 gives NaN); negative sums (NaN without the sign);
  sums that cancel to a few ulps; weights over the format's exponent range; zero
  weights; sums that cancel exactly (-inf).
- ``weight-specials``: NaN and infinities in a or b, each under the rule of the
  specification's table (a zero weight removes its entry, 0 x inf is NaN, ...).
- ``return-sign``: the finite classes above, called with ``return_sign=True``: the
  sign of each sum is scored beside log|S|.
- ``sign-specials``: the special slices with ``return_sign=True``: +inf terms (sign
  +1; scipy/scipy#23548: SciPy 1.16.0 gives NaN), an empty sum (sign 0), -inf terms,
  NaN, inf - inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from reference import Format

from ._case import Case

__all__ = ["return_sign", "sign_specials", "weight_specials", "weights"]

_N = 8  # entries per row: every class has the same shape
Rows = tuple[NDArray[np.float64], NDArray[np.float64]]  # (a, b), each (rows, _N)


def _rows(profile: str) -> int:
    return 16 if profile == "quick" else 256


def _cast(fmt: Format, v: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=np.float64).astype(fmt.dtype)


def _case(fmt: Format, label: str, a: NDArray[np.float64], b: NDArray[np.float64] | None,
          sign: bool) -> Case:  # fmt: skip
    x = _cast(fmt, a)
    return Case(x, -1, label, b=None if b is None else _cast(fmt, b), return_sign=sign)


def _shuffled(rng: np.random.Generator, a: NDArray[np.float64], b: NDArray[np.float64]) -> Rows:
    """Each row's entries in a random order (a and b together)."""
    order = np.argsort(rng.random(a.shape), axis=1)
    return np.take_along_axis(a, order, 1), np.take_along_axis(b, order, 1)


def _positive(fmt: Format, rng: np.random.Generator, rows: int) -> Rows:
    return 3 * rng.standard_normal((rows, _N)), rng.uniform(0.01, 4.0, (rows, _N))


def _max_weight(fmt: Format, rng: np.random.Generator, rows: int, lo: float, hi: float) -> Rows:
    """The maximum's weight negative, -u times the rest's sum relative to it, u in
    [lo, hi): below 1 the sum stays positive, above 1 it is negative. The weights are
    rounded to the format first and the maximum's is set from the rounded rest. With
    a within 0.5 of the maximum the rest sums to 4.2 at least, so that |S| stays above
    2 (log|S| > 0.69) for u outside (0.5, 1.5): the class is well conditioned, and an
    error in it is the candidate's, not the input's."""
    a = -rng.uniform(0.0, 0.5, (rows, _N))
    a[:, 0] = 0.0
    a = _cast(fmt, a).astype(np.float64)
    b = _cast(fmt, rng.uniform(1.0, 3.0, (rows, _N))).astype(np.float64)
    rest = (b[:, 1:] * np.exp(a[:, 1:])).sum(axis=1)
    b[:, 0] = -rng.uniform(lo, hi, rows) * rest
    return _shuffled(rng, a, b)


def _near_cancel(fmt: Format, rng: np.random.Generator, rows: int) -> Rows:
    """b = [1, -1] at a = [v, v + k ulps], k in 1..4, and six far terms (below the
    pair's difference or not) of either sign: S is a few ulps of e^v, or less."""
    v = _cast(fmt, rng.uniform(-4.0, 4.0, rows)).astype(np.float64)
    k = rng.integers(1, 5, rows)
    ulp = np.array([math.ldexp(1.0, math.frexp(t)[1] - fmt.precision) if t else fmt.eps
                    for t in v])  # fmt: skip
    a = np.empty((rows, _N))
    a[:, 0], a[:, 1] = v, v + k * ulp
    a[:, 2:] = v[:, None] - rng.uniform(5.0, 30.0, (rows, _N - 2))
    b = np.empty((rows, _N))
    b[:, 0], b[:, 1] = 1.0, -1.0
    b[:, 2:] = rng.choice([-1.0, 1.0], (rows, _N - 2)) * rng.uniform(0.5, 2.0, (rows, _N - 2))
    return _shuffled(rng, a, b)


def _span(fmt: Format, rng: np.random.Generator, rows: int) -> Rows:
    """Weights of both signs, 2^-e .. 2^e over most of the format's exponent range."""
    e = max(1, fmt.emax - 2)
    mag = np.exp2(rng.uniform(-e, e, (rows, _N)))
    return rng.standard_normal((rows, _N)), rng.choice([-1.0, 1.0], (rows, _N)) * mag


def _zeros(fmt: Format, rng: np.random.Generator, rows: int) -> Rows:
    """Some weights exactly 0 (and every weight of the first row): those entries drop
    out, whatever their a."""
    a, b = _positive(fmt, rng, rows)
    b[rng.random((rows, _N)) < 0.4] = 0.0
    b[0] = 0.0
    return a, b


def _exact_cancel(fmt: Format, rng: np.random.Generator, rows: int) -> Rows:
    """Pairs of equal a with weights w and -w: S = 0 exactly, log|S| = -inf."""
    a = np.repeat(_cast(fmt, 3 * rng.standard_normal((rows, _N // 2))).astype(np.float64), 2, 1)
    w = _cast(fmt, rng.uniform(0.1, 4.0, (rows, _N // 2))).astype(np.float64)
    b = np.stack([w, -w], axis=2).reshape(rows, _N)
    return _shuffled(rng, a, b)


_FINITE: tuple[tuple[str, Callable[[Format, np.random.Generator, int], Rows]], ...] = (
    ("positive weights", _positive),
    ("a negative weight at the maximum, positive sum (scipy/scipy#22903)",
     lambda f, r, n: _max_weight(f, r, n, 0.1, 0.5)),
    ("a negative weight at the maximum, negative sum",
     lambda f, r, n: _max_weight(f, r, n, 1.5, 3.0)),
    ("weights [1, -1] at a few ulps apart: near cancellation", _near_cancel),
    ("weights of both signs over the exponent range", _span),
    ("zero weights", _zeros),
    ("weights w and -w at equal a: exact cancellation", _exact_cancel),
)  # fmt: skip


def _finite(fmt: Format, profile: str, rng: np.random.Generator, sign: bool) -> list[Case]:
    rows = _rows(profile)
    return [_case(fmt, label, *make(fmt, rng, rows), sign) for label, make in _FINITE]


def weights(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    return _finite(fmt, profile, rng, False)


def return_sign(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    return _finite(fmt, profile, rng, True)


_INF, _NAN = math.inf, math.nan

# (label, rows of (a, b)): every special class of the specification's table, with
# finite neighbours in the row where they change nothing
_SPECIAL: tuple[tuple[str, list[tuple[list[float], list[float]]]], ...] = (
    ("a zero weight at a = +inf or NaN: the entry drops out", [
        ([_INF, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, 1.0]),
        ([_NAN, 0.5, 1.0, 2.0], [0.0, 1.0, 2.0, 0.5]),
    ]),
    ("b = +-inf at a finite a: +-inf terms", [
        ([0.0, 1.0, 2.0, 3.0], [_INF, 1.0, 1.0, 1.0]),
        ([0.0, 1.0, 2.0, 3.0], [-_INF, 1.0, 1.0, 1.0]),
    ]),
    ("a = +inf with a positive weight: +inf", [
        ([_INF, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]),
        ([_INF, _INF, 1.0, 2.0], [2.0, 0.5, -1.0, 1.0]),
    ]),
    ("a = +inf with a negative weight: -inf terms", [
        ([_INF, 0.0, 1.0, 2.0], [-1.0, 1.0, 1.0, 1.0]),
    ]),
    ("infinite terms of both signs: NaN", [
        ([_INF, _INF, 0.0, 1.0], [1.0, -1.0, 1.0, 1.0]),
        ([0.0, 1.0, _INF, 2.0], [_INF, 1.0, -1.0, 1.0]),
    ]),
    ("a = -inf with b = +-inf: 0 x inf is NaN", [
        ([-_INF, 0.0, 1.0, 2.0], [_INF, 1.0, 1.0, 1.0]),
        ([-_INF, 0.0, 1.0, 2.0], [-_INF, 1.0, 1.0, 1.0]),
    ]),
    ("NaN in a or b", [
        ([_NAN, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]),
        ([0.0, 1.0, 2.0, 3.0], [1.0, _NAN, 1.0, 1.0]),
    ]),
    ("every a = -inf, or every weight 0: an empty sum", [
        ([-_INF, -_INF, -_INF, -_INF], [1.0, 2.0, -1.0, 0.5]),
        ([0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]),
    ]),
)  # fmt: skip


def _special_cases(fmt: Format, sign: bool) -> list[Case]:
    out = []
    for label, rows in _SPECIAL:
        a = np.array([r[0] for r in rows])
        b = np.array([r[1] for r in rows])
        out.append(_case(fmt, label, a, b, sign))
    return out


def weight_specials(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    return _special_cases(fmt, False)


def sign_specials(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    """The special classes with return_sign, and two without weights, as the issues
    that found them called logsumexp: [+inf] and [-inf]."""
    plain = [
        ("[+inf], no weights: +inf, sign +1 (scipy/scipy#23548)", [[_INF], [_INF]]),
        ("[-inf], no weights: an empty sum, -inf, sign 0", [[-_INF], [-_INF]]),
    ]
    out = [Case(_cast(fmt, np.array(a)), -1, label, return_sign=True) for label, a in plain]
    return out + _special_cases(fmt, True)
