"""The oracle: correctly rounded log_softmax, softmax and logsumexp, and the ULP error
of any computed array.

``log_softmax(x, axis)`` rounds the exact log_softmax of the input floats (taken as
exact) once, to nearest even, in x's format. ``ulp_error(computed, x, axis)`` scores any
array against it. ``evaluate`` returns the cached form both are built on;
``evaluate_softmax`` and ``evaluate_logsumexp`` do the same for the other two functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._direct import ulp_error_direct
from ._engines import engine_info
from ._formats import FORMATS, Format, format_of
from ._logsumexp import LogSumExpResult, evaluate_logsumexp
from ._oracle import evaluate
from ._pairs import log_softmax_pairs, pair_values
from ._result import ORACLE_VERSION, Answer, OracleResult, SpecialSlice
from ._softmax import evaluate_softmax

__all__ = [
    "FORMATS",
    "ORACLE_VERSION",
    "Answer",
    "Format",
    "LogSumExpResult",
    "OracleResult",
    "SpecialSlice",
    "engine_info",
    "evaluate",
    "evaluate_logsumexp",
    "evaluate_softmax",
    "format_of",
    "log_softmax",
    "log_softmax_pairs",
    "logsumexp",
    "pair_values",
    "softmax",
    "ulp_error",
    "ulp_error_direct",
]


def log_softmax(x: Any, axis: Any = None, *, engine: str | None = None) -> NDArray[Any]:
    """Correctly rounded log_softmax of ``x`` (float16, bfloat16, float32 or float64;
    integer and bool input as float64), with ``scipy.special.log_softmax``'s axis
    semantics. 0-d input gives a 0-d array."""
    return evaluate(x, axis, engine=engine).expected


def ulp_error(
    computed: Any, x: Any, axis: Any = None, *, engine: str | None = None
) -> NDArray[np.float64]:
    """ULP error of each element of ``computed`` against the exact log_softmax of ``x``,
    in the format of ``computed`` (+inf marks a special-value mismatch)."""
    c = np.asarray(computed)
    return evaluate(x, axis, fmt=c.dtype, engine=engine).ulp_error(c)


def softmax(x: Any, axis: Any = None, *, engine: str | None = None) -> NDArray[Any]:
    """Correctly rounded softmax of ``x``, with ``scipy.special.softmax``'s arguments
    and axis semantics; formats as for :func:`log_softmax`."""
    return evaluate_softmax(x, axis, engine=engine).expected


def logsumexp(
    a: Any,
    axis: Any = None,
    b: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    engine: str | None = None,
) -> Any:
    """Correctly rounded ``scipy.special.logsumexp(a, axis, b, keepdims, return_sign)``:
    log|sum(b * exp(a))|, and its sign (+1, 0, -1, NaN) when ``return_sign``; without
    it a negative sum gives NaN. A full reduction gives a 0-d array."""
    r = evaluate_logsumexp(a, axis, b, keepdims, return_sign, engine=engine)
    return (r.expected, r.sign) if return_sign else r.expected
