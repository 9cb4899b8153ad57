"""The oracle's answers on disk, keyed by a content hash of the input.

An entry is trusted only when it says so itself: each file carries the key it was
computed for (the hash of the function, dtype, shape, axis and bytes) and the oracle's
version, both checked on load. A file copied under another input's name, written by another oracle
version, or damaged, is recomputed and replaced, never used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

import reference

from ..functions._functions import DEFAULT_FUNCTION, function

__all__ = ["OracleCache"]


class OracleCache:
    """Oracle results under ``root``, one .npz file per input."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.rejected: list[tuple[str, str]] = []  # (file, why) of entries recomputed

    @staticmethod
    def key(case: Any, function_name: str = DEFAULT_FUNCTION) -> str:
        """The content hash of a case's input: dtype, shape, axis and bytes, the
        weights and return_sign where it has them, and the function (log_softmax's keys
        are those from before there were others)."""
        h = hashlib.sha256()
        if function_name != DEFAULT_FUNCTION:
            h.update(f"{function_name}|".encode())
        h.update(f"{case.x.dtype.name}|{case.x.shape}|{case.axis!r}|".encode())
        h.update(np.ascontiguousarray(case.x).tobytes())
        if getattr(case, "b", None) is not None:  # (unweighted keys as before)
            h.update(b"|b|" + np.ascontiguousarray(case.b).tobytes())
        if getattr(case, "return_sign", False):
            h.update(b"|return_sign")
        return h.hexdigest()

    def path(self, case: Any, function_name: str = DEFAULT_FUNCTION) -> Path:
        k = self.key(case, function_name)
        return self.root / k[:2] / f"{k}.npz"

    def has(self, case: Any, function_name: str = DEFAULT_FUNCTION) -> bool:
        """An entry exists under the case's name (it is checked when read)."""
        return self.path(case, function_name).exists()

    def valid(self, case: Any, function_name: str = DEFAULT_FUNCTION) -> bool:
        """An entry exists, was computed for this input and by this oracle version."""
        key = self.key(case, function_name)
        p = self.root / key[:2] / f"{key}.npz"
        try:
            version, tag = reference.OracleResult.read_tag(p)
        except Exception:  # absent or unreadable
            return False
        return version == reference.ORACLE_VERSION and tag.get("key") == key

    def _load(
        self, p: Path, key: str, case: Any, function_name: str
    ) -> reference.OracleResult | None:
        try:
            res, version, tag = reference.OracleResult.load_tagged(p)
            if version != reference.ORACLE_VERSION:
                why = f"computed by oracle version {version}, not {reference.ORACLE_VERSION}"
            elif tag.get("key") != key:
                why = "computed for another input (its key does not match its name)"
            elif (
                res.shape != function(function_name).out_shape(case.x.shape, case.axis)
                or res.fmt.name != case.x.dtype.name
            ):
                why = f"holds a {res.fmt.name} {res.shape} answer, not the input's"
            elif (getattr(res, "sign", None) is None) == getattr(case, "return_sign", False):
                why = "holds an answer with a sign for an input without return_sign, or not"
            else:
                return res
        except Exception as exc:  # damaged: unreadable, truncated, wrong layout
            why = f"unreadable ({type(exc).__name__}: {exc})"
        self.rejected.append((str(p), why))
        return None

    def get(self, case: Any, function_name: str = DEFAULT_FUNCTION) -> reference.OracleResult:
        """The checked entry, or the oracle's answer computed now and stored."""
        key = self.key(case, function_name)
        p = self.root / key[:2] / f"{key}.npz"
        if p.exists():
            res = self._load(p, key, case, function_name)
            if res is not None:
                return res
        return self._compute(case, key, p, function_name)

    def recompute(self, case: Any, function_name: str = DEFAULT_FUNCTION) -> reference.OracleResult:
        """The oracle's answer computed now, replacing an entry whose values were found
        wrong (a re-evaluated slice disagreed: see _score.score); said in ``rejected``."""
        key = self.key(case, function_name)
        p = self.root / key[:2] / f"{key}.npz"
        self.rejected.append((str(p), "its values differ from the oracle's (changed on disk)"))
        return self._compute(case, key, p, function_name)

    def _compute(self, case: Any, key: str, p: Path, function_name: str) -> reference.OracleResult:
        res = function(function_name).answer(case)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp.npz")
        res.save(tmp, tag={"key": key})
        os.replace(tmp, p)
        return res
