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

    logsumexp's keywords: ``b``, weights of x's shape and format (the candidate gets
    them on the backend, laid out as x), and ``return_sign``: the candidate is called
    with ``return_sign=True`` and returns (log|S|, sign of S), each scored.
    """

    x: NDArray[Any]
    axis: int | tuple[int, ...] | None
    label: str
    transposed: bool = False
    params: tuple[float, ...] = ()
    b: NDArray[Any] | None = None
    return_sign: bool = False

    def __post_init__(self) -> None:
        if self.b is not None and (self.b.shape != self.x.shape or self.b.dtype != self.x.dtype):
            raise ValueError(
                f"{self.label}: weights of {self.b.dtype} {self.b.shape} beside x of "
                f"{self.x.dtype} {self.x.shape}; a case's b has x's shape and format"
            )

    @property
    def keywords(self) -> tuple[str, ...]:
        """The keyword arguments the call passes besides ``axis``."""
        return ("b",) * (self.b is not None) + ("return_sign",) * self.return_sign
