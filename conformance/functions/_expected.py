"""Expected failures: conformance/data/expected_failures.toml, the one place they are
kept (tests, gate and report all read it)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExpectedFailure", "all_expected_failures", "expected_failures"]

_FILE = Path(__file__).parents[1] / "data" / "expected_failures.toml"
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
    profile: str | None = None  # None: every profile

    def applies(self, profile: str) -> bool:
        return self.profile is None or self.profile == profile

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.candidate, self.backend, self.dtype, self.family)

    def describe(self) -> str:
        return f"{self.reason}: {self.measured_ulp:g} ULP (expected_failures.toml)"


def expected_failures(
    scope: str = "budget", path: str | os.PathLike[str] | None = None
) -> dict[tuple[str, str, str, str], ExpectedFailure]:
    """The entries of one scope by (candidate, backend, dtype, family)."""
    out: dict[tuple[str, str, str, str], ExpectedFailure] = {}
    for e in all_expected_failures(path):
        if e.scope == scope:
            if e.key in out:
                raise ValueError(f"expected failures: {e.key} is listed twice in scope {scope}")
            out[e.key] = e
    return out


def all_expected_failures(path: str | os.PathLike[str] | None = None) -> list[ExpectedFailure]:
    """Every entry of the file, checked."""
    p = Path(path) if path is not None else _FILE
    data = tomllib.loads(p.read_text())
    out: list[ExpectedFailure] = []
    for i, raw in enumerate(data.get("entry", [])):
        missing = [k for k in _KEYS if k not in raw]
        if missing:
            raise ValueError(f"{p}: entry {i} lacks {missing}")
        unknown = set(raw) - {*_KEYS, "profile"}
        if unknown:
            raise ValueError(f"{p}: entry {i} has unknown keys {sorted(unknown)}")
        e = ExpectedFailure(**{k: raw[k] for k in _KEYS}, profile=raw.get("profile"))
        if e.scope not in _SCOPES:
            raise ValueError(f"{p}: entry {i} has scope {e.scope!r}; known: {list(_SCOPES)}")
        out.append(e)
    return out
