"""Expected failures: conformance/data/expected_failures.toml, the one place they are
kept (tests, gate and report all read it)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExpectedFailure", "expected_failures"]

_FILE = Path(__file__).parent / "data" / "expected_failures.toml"
_SCOPES = ("budget", "impl-targets")
_KEYS = ("candidate", "backend", "dtype", "family", "scope", "measured_ulp", "reason")


@dataclass(frozen=True)
class ExpectedFailure:
    candidate: str
    backend: str
    dtype: str
    family: str
    scope: str
    measured_ulp: float
    reason: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.candidate, self.backend, self.dtype, self.family)

    def describe(self) -> str:
        return f"{self.reason}: {self.measured_ulp:g} ULP (expected_failures.toml)"


def expected_failures(
    scope: str | None = None, path: str | os.PathLike[str] | None = None
) -> dict[tuple[str, str, str, str], ExpectedFailure]:
    """Entries by (candidate, backend, dtype, family), of one scope or all."""
    p = Path(path) if path is not None else _FILE
    data = tomllib.loads(p.read_text())
    out: dict[tuple[str, str, str, str], ExpectedFailure] = {}
    for i, raw in enumerate(data.get("entry", [])):
        missing = [k for k in _KEYS if k not in raw]
        if missing:
            raise ValueError(f"{p}: entry {i} lacks {missing}")
        e = ExpectedFailure(**{k: raw[k] for k in _KEYS})
        if e.scope not in _SCOPES:
            raise ValueError(f"{p}: entry {i} has scope {e.scope!r}; known: {list(_SCOPES)}")
        if scope is None or e.scope == scope:
            if e.key in out and out[e.key].scope == e.scope:
                raise ValueError(f"{p}: entry {i} repeats {e.key}")
            out[e.key] = e
    return out
