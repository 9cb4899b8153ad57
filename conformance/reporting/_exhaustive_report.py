"""The exhaustive float32 figures of a report: the chunk cells of ``exhaustive-f32``
(from the report's own results and from the sweeps given by ``report --exhaustive``),
summed per function, candidate and backend: pairs checked, pairs and elements not
correctly rounded, special mismatches, max ULP, the worst pairs, and the time the
sweep took. A row names its candidate as the sweep does (``softmax/impl``; log_softmax's
by its bare name) and its function in a column of its own."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..functions._exhaustive import N_CHUNKS, NAME
from ..functions._functions import DEFAULT_FUNCTION, FUNCTIONS, uid

__all__ = ["ExhaustiveRow", "exhaustive_rows", "is_chunk", "load_exhaustive"]

_PREFIX = NAME + ":"


def is_chunk(family: str) -> bool:
    return family.startswith(_PREFIX)


@dataclass
class ExhaustiveRow:
    candidate: str  # the uid: softmax/impl, or log_softmax's bare name
    backend: str
    function: str = DEFAULT_FUNCTION
    chunks: int = 0  # measured (pass or fail)
    errors: list[str] = field(default_factory=list)
    pairs: int = 0
    pairs_bad: int = 0
    elems_bad: int = 0
    special: int = 0
    unanswered: int = 0
    max_ulp: float = 0.0
    worst: list[tuple[float, str]] = field(default_factory=list)  # (ulp, bits)
    cell_seconds: float = 0.0
    wall_s: float | None = None  # the sweep's, where it ran this candidate alone
    workers: str = ""
    oracle_exact: int = 0

    @property
    def complete(self) -> bool:
        return self.chunks == N_CHUNKS and not self.errors and not self.unanswered

    def sentence(self) -> str:
        if not self.chunks:
            return f"{self.candidate} ({self.backend}): no chunk measured"
        share = "2^32" if self.pairs == 1 << 32 else f"{self.pairs:,}"
        text = (
            f"{self.candidate} ({self.backend}): {self.pairs_bad:,} of {share} pairs [0, v] "
            f"not correctly rounded, max {_ulp(self.max_ulp)} ULP"
        )
        if self.special:
            text += f", {self.special:,} special mismatches"
        if not self.complete:
            text += f" (incomplete: {self.chunks} of {N_CHUNKS} chunks measured)"
        return text


def _ulp(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return f"{v:.4g}" if v < 1e5 else f"{v:.3e}"


def load_exhaustive(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Any, dict[str, Any]]]:
    """(table of the chunk cells, fingerprint) of each results directory."""
    from ..scoring._results import ResultsError, load_results

    out = []
    for p in paths:
        table, fp = load_results(p)
        chunks = table[table["family"].map(is_chunk)]
        if chunks.empty:
            raise ResultsError(f"results in {str(Path(p))!r} hold no {NAME} cells")
        out.append((chunks, fp))
    return out


def exhaustive_rows(parts: Sequence[tuple[Any, dict[str, Any]]]) -> list[ExhaustiveRow]:
    """One row per (function, candidate, backend) over every part's chunk cells (a
    chunk cell in two parts counts once, from the first)."""
    rows: dict[tuple[str, str, str], ExhaustiveRow] = {}
    seen: set[tuple[str, str, str, str]] = set()  # a chunk given twice counts once
    for table, fp in parts:
        run = fp.get("run", {}) if isinstance(fp, dict) else {}
        cluster = fp.get("cluster", {}) if isinstance(fp, dict) else {}
        workers = (
            f"{len(cluster.get('workers', {}))} Dask workers ({cluster.get('scheduler', '?')})"
            if cluster
            else f"local pool of {run.get('jobs', '?')} jobs"
        )
        recs = table.to_dict("records")
        for rec in recs:  # older results have no function: log_softmax's
            rec["function"] = str(rec.get("function") or DEFAULT_FUNCTION)
        cands = sorted({(rec["function"], rec["candidate"]) for rec in recs})
        for rec in recs:
            fn = rec["function"]
            cell = (fn, rec["candidate"], rec["backend"], rec["family"])
            if cell in seen:
                continue
            seen.add(cell)
            key = (fn, uid(fn, rec["candidate"]), rec["backend"])
            r = rows.setdefault(key, ExhaustiveRow(key[1], key[2], fn))
            r.workers = workers
            if len(cands) == 1 and run.get("wall_s") is not None:
                r.wall_s = float(run["wall_s"])
            r.cell_seconds += float(rec.get("seconds") or 0.0)
            if rec["status"] not in ("pass", "fail"):
                r.errors.append(f"{rec['family']}: {rec['status']}: {rec['reason']}")
                continue
            c = json.loads(rec.get("counts") or "{}")
            r.chunks += 1
            r.pairs += int(c.get("pairs_scored", 0))
            r.pairs_bad += int(c.get("pairs_not_correctly_rounded", 0))
            r.elems_bad += int(c.get("elements_not_correctly_rounded", 0))
            r.special += int(c.get("special_mismatch_pairs", 0))
            r.unanswered += int(c.get("unanswered_pairs", 0))
            r.oracle_exact += int(c.get("oracle_exact_engine", 0))
            m = rec.get("max_ulp")
            if m is not None and not (isinstance(m, float) and math.isnan(m)):
                r.max_ulp = max(r.max_ulp, float(m))
            r.worst += [(float(w["ulp"]), str(w["bits"])) for w in c.get("worst", [])]
    for r in rows.values():
        r.worst = sorted(set(r.worst), key=lambda w: (-w[0], w[1]))[:5]
    order = {f.name: i for i, f in enumerate(FUNCTIONS)}
    return sorted(rows.values(), key=lambda r: (order.get(r.function, 99), r.candidate, r.backend))


HEADER = [
    "candidate", "function", "backend", "pairs checked", "pairs not correctly rounded",
    "elements not correctly rounded", "special mismatches", "max ULP", "worst pairs (v's bits)",
    "time",
]  # fmt: skip


def _time(r: ExhaustiveRow) -> str:
    cpu = f"{r.cell_seconds / 60:.1f} worker-min"
    if r.wall_s is None:
        return f"{cpu}, {r.workers}"
    return f"{r.wall_s / 60:.1f} min on {r.workers} ({cpu})"


def table_rows(rows: Sequence[ExhaustiveRow]) -> list[list[str]]:
    return [
        [
            r.candidate, r.function, r.backend,
            f"{r.pairs:,}" + ("" if r.complete else f" ({r.chunks}/{N_CHUNKS} chunks)"),
            f"{r.pairs_bad:,}", f"{r.elems_bad:,}", f"{r.special:,}", _ulp(r.max_ulp),
            ", ".join(f"{b} ({_ulp(u)})" for u, b in r.worst[:3]) or "-",
            _time(r),
        ]
        for r in rows
    ]  # fmt: skip


INTRO = (
    "Every one of the 2^32 float32 bit patterns v (each finite value, both infinities, "
    "every NaN) as the two-element slice [0, v], for each function swept: log_softmax's "
    "outputs -log1p(exp(-|v|)) and -|v| - log1p(exp(-|v|)) are the saturating region; "
    "softmax's 1 / (1 + exp(-|v|)) and exp(-|v|) / (1 + exp(-|v|)) run through float32's "
    "subnormals to underflow; logsumexp's max(0, v) + log1p(exp(-|v|)) is one element a "
    "pair. Scored pair by pair against the oracle's certified path of the function (every "
    "pair it cannot certify goes to the exact engine); counts are exact, the max ULP and "
    "the worst pairs are the exact engine's (`reference.log_softmax`, `reference.softmax` "
    "or `reference.logsumexp` of the pair, axis -1). `--families exhaustive-f32`, 256 "
    "cells of 2^24 pairs a candidate."
)
