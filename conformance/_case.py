"""One input of a family (its own module: the families and the peers' suites, which
build cases, both use it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

__all__ = ["Case"]


@dataclass(frozen=True)
class Case:
    """One input: ``x`` in the family's format, reduced over ``axis``.

    ``transposed``: the backend receives the transpose of a contiguous array and
    transposes it back, so the candidate sees a non-contiguous view. ``params`` is one
    number per row where a family sweeps a parameter (the dominant gap d), for plots.
    """

    x: NDArray[Any]
    axis: int | tuple[int, ...] | None
    label: str
    transposed: bool = False
    params: tuple[float, ...] = ()
