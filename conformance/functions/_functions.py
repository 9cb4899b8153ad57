"""The functions the harness judges: the matrix's first axis.

A function is a name, the oracle that answers it (an OracleResult per input, scored
elementwise) and a line of description. Candidates belong to one function each
(_candidates), and families say which functions their inputs are for (_families).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import reference

__all__ = ["DEFAULT_FUNCTION", "FUNCTIONS", "Function", "function", "scoring_code", "uid"]

DEFAULT_FUNCTION = "log_softmax"


@dataclass(frozen=True)
class Function:
    name: str
    doc: str
    # the correctly rounded answer for an input and its reduced axes, ready to score
    evaluate: Callable[[Any, Any], reference.OracleResult] = field(repr=False)
    reduces: bool = False  # one output per slice (logsumexp), not one per element

    def answer(self, case: Any) -> reference.OracleResult:
        """The oracle's answer for a case: its x and axis, and logsumexp's weights and
        return_sign where the case has them."""
        if getattr(case, "b", None) is None and not getattr(case, "return_sign", False):
            return self.evaluate(case.x, case.axis)
        weighted: Any = self.evaluate  # logsumexp's, the one function with keywords
        return weighted(case.x, case.axis, b=case.b, return_sign=case.return_sign)  # type: ignore[no-any-return]

    def out_shape(self, shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
        """The shape of the answer for an input of ``shape`` reduced over ``axis``."""
        if not self.reduces:
            return tuple(shape)
        from reference._oracle import normalize_axis

        axes = normalize_axis(axis, len(shape))
        return tuple(n for i, n in enumerate(shape) if i not in axes)


FUNCTIONS: tuple[Function, ...] = (
    Function("log_softmax", "x - log(sum(exp(x)))", reference.evaluate),
    Function("softmax", "exp(x) / sum(exp(x))", reference.evaluate_softmax),
    Function("logsumexp", "log(sum(exp(x))), one per slice", reference.evaluate_logsumexp, True),
)


def function(name: str) -> Function:
    for f in FUNCTIONS:
        if f.name == name:
            return f
    raise KeyError(f"unknown function {name!r}; known: {[f.name for f in FUNCTIONS]}")


def uid(function_name: str, name: str) -> str:
    """A candidate's name unique across functions: ``softmax/scipy``; log_softmax's
    candidates keep their bare names (and their cells the keys they always had)."""
    if function_name == DEFAULT_FUNCTION or name.startswith(f"{function_name}/"):
        return name  # (a table whose candidates are uids already: the report's)
    return f"{function_name}/{name}"


def scoring_code(
    function_name: str, got: str, x: str, axis: str = "", keywords: bool = False
) -> str:
    """Python that prints the ULP errors of ``got`` for input ``x`` (a reproducer's
    last line): ``reference.ulp_error(got, x)`` for log_softmax. ``keywords``: x is
    ``case.x`` of a case with logsumexp's b and return_sign, passed on too."""
    ax = f", axis={axis}" if axis else ""
    if keywords:
        ax += ", b=case.b, return_sign=case.return_sign"
    if function_name == DEFAULT_FUNCTION:
        return f"reference.ulp_error({got}, {x}{ax})"
    return f"reference.evaluate_{function_name}({x}{ax}).ulp_error({got})"
