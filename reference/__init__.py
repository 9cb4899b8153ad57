"""The oracle: correctly rounded log_softmax and the ULP error of any computed array.

``log_softmax(x, axis)`` rounds the exact log_softmax of the input floats (taken as
exact) once, to nearest even, in x's format. ``ulp_error(computed, x, axis)`` scores any
array against it. ``evaluate`` returns the cached form both are built on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._direct import ulp_error_direct
from ._engines import engine_info
from ._formats import FORMATS, Format, format_of
from ._oracle import evaluate
from ._pairs import log_softmax_pairs, pair_values
from ._result import ORACLE_VERSION, Answer, OracleResult, SpecialSlice

__all__ = [
    "FORMATS",
    "ORACLE_VERSION",
    "Answer",
    "Format",
    "OracleResult",
    "SpecialSlice",
    "engine_info",
    "evaluate",
    "format_of",
    "log_softmax",
    "log_softmax_pairs",
    "pair_values",
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
