"""The corpus of worst inputs found by ``python -m conformance search``:
conformance/data/worst_cases.jsonl, one JSON object per line, the row in hex floats.
The ``corpus`` family replays it; the search appends to it. Nothing here calls a
candidate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reference import FORMATS

__all__ = ["CORPUS", "corpus_row", "load_corpus"]

CORPUS = Path(__file__).parents[1] / "data" / "worst_cases.jsonl"
_KEYS = ("candidate", "backend", "dtype", "ulp", "input")


def load_corpus(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every entry of the corpus file (none when it does not exist), each checked."""
    p = Path(path) if path is not None else CORPUS
    if not p.exists():
        return []
    out = []
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{i + 1}: not a JSON object: {exc}") from None
        if not isinstance(entry, dict) or any(k not in entry for k in _KEYS):
            raise ValueError(f"{p}:{i + 1}: a corpus entry needs the keys {list(_KEYS)}")
        if entry["dtype"] not in FORMATS or not isinstance(entry["input"], list):
            raise ValueError(f"{p}:{i + 1}: unknown dtype {entry['dtype']!r} or no input list")
        out.append(entry)
    return out


def corpus_row(entry: dict[str, Any]) -> NDArray[Any]:
    """The entry's row in its format, bit for bit."""
    fmt = FORMATS[entry["dtype"]]
    return np.array([float.fromhex(h) for h in entry["input"]]).astype(fmt.dtype)
