"""The regression gate: the results of a sweep against a committed baseline.

A cell is worse when its max ULP rose beyond a small tolerance, when it has more
special mismatches, when it was ``pass`` and is now ``fail`` or ``error``, or when a
support-table cell lost its ✅. Cells that did not run here (no GPU) are neither.
``update`` ratchets: improved and new cells are written into the baseline, worse ones
never are.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._support import support

__all__ = ["GateResult", "baseline_from", "gate"]

REL_TOL = 1e-6  # relative slack on max ULP (reductions may reorder between runs)
ABS_TOL = 1e-3  # ULP


def _key(r: Any) -> str:
    return "|".join([r["candidate"], r["backend"], r["dtype"], r["family"], r["profile"]])


def _ulp(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _enc(v: float | None) -> Any:
    return "inf" if v is not None and math.isinf(v) else v


def _dec(v: Any) -> float | None:
    return math.inf if v == "inf" else (None if v is None else float(v))


def baseline_from(table: Any) -> dict[str, Any]:
    cells = {}
    for _, r in table.iterrows():
        if r["status"] == "not run":
            continue
        cells[_key(r)] = {
            "status": r["status"],
            "max_ulp": _enc(_ulp(r["max_ulp"])),
            "special_mismatches": int(r["special_mismatches"] or 0),
        }
    sup: dict[str, dict[str, Any]] = {}
    for profile in dict.fromkeys(table["profile"]):  # support is per profile
        t = table[table["profile"] == profile]
        for c in dict.fromkeys(t["candidate"]):
            cells_c = {f"{lib} {dev}": cell.symbol for (lib, dev), cell in support(t, c).items()}
            sup.setdefault(profile, {})[c] = cells_c
    return {"cells": cells, "support": sup}


@dataclass
class GateResult:
    worse: list[str] = field(default_factory=list)
    better: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # failing, listed as expected
    stale: list[str] = field(default_factory=list)  # listed as expected, now passing
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.worse


def _worse_ulp(now: float | None, base: float | None) -> bool:
    if now is None or base is None:
        return False
    if math.isinf(base):
        return False
    return now > base * (1 + REL_TOL) + ABS_TOL


def gate(table: Any, baseline_path: str | os.PathLike[str], update: bool = False) -> GateResult:
    """Compare; with ``update``, write the ratcheted baseline."""
    path = Path(baseline_path)
    base = json.loads(path.read_text()) if path.exists() else {"cells": {}, "support": {}}
    if not path.exists() and not update:
        raise FileNotFoundError(f"baseline {str(path)!r} does not exist (create it with --update)")
    now = baseline_from(table)
    res = GateResult()
    repro = {_key(r): r for _, r in table.iterrows()}
    for k, cur in now["cells"].items():
        b = base["cells"].get(k)
        if b is None:
            res.new.append(f"{k}: {cur['status']}, {_fmt(_dec(cur['max_ulp']))} ULP")
            if update:
                base["cells"][k] = cur
            continue
        res.compared += 1
        why = []
        n_ulp, b_ulp = _dec(cur["max_ulp"]), _dec(b["max_ulp"])
        if _worse_ulp(n_ulp, b_ulp) or (n_ulp is not None and math.isinf(n_ulp) and not (
            b_ulp is not None and math.isinf(b_ulp))):  # fmt: skip
            why.append(f"max ULP {_fmt(b_ulp)} -> {_fmt(n_ulp)}")
        if cur["special_mismatches"] > b["special_mismatches"]:
            why.append(
                f"special mismatches {b['special_mismatches']} -> {cur['special_mismatches']}"
            )
        if b["status"] == "pass" and cur["status"] != "pass":
            why.append(f"status pass -> {cur['status']}")
        if why:
            r = repro[k]
            where = r["worst_where"] if isinstance(r["worst_where"], str) else ""
            inp = r["worst_input"] if isinstance(r["worst_input"], str) else ""
            res.worse.append(
                f"{k}: " + "; ".join(why) + (f"\n    reason: {r['reason']}" if r["reason"] else "")
                + (f"\n    worst: {where}\n    input: {inp[:400]}" if where else "")
            )  # fmt: skip
            continue
        improved = (
            (n_ulp is not None and b_ulp is not None and n_ulp < b_ulp)
            or cur["special_mismatches"] < b["special_mismatches"]
            or (b["status"] != "pass" and cur["status"] == "pass")
        )
        if improved:
            res.better.append(f"{k}: max ULP {_fmt(b_ulp)} -> {_fmt(n_ulp)}, {cur['status']}")
            if update:
                base["cells"][k] = cur
    from ._expected import expected_failures

    known = expected_failures("budget")
    for k, r in repro.items():
        e = known.get((r["candidate"], r["backend"], r["dtype"], r["family"]))
        if e is not None and e.applies(r["profile"]):
            if r["status"] == "pass":
                res.stale.append(f"{k}: passes now ({e.describe()}); remove the entry")
            elif r["status"] != "not run":
                res.known.append(f"{k}: {r['reason']} ({e.describe()})")
    for profile, per_c in now["support"].items():
        for c, cells in per_c.items():
            for where, sym in cells.items():
                was = base.get("support", {}).get(profile, {}).get(c, {}).get(where)
                if was == "✅" and sym not in ("✅", "not run"):
                    res.worse.append(f"support {c} {where} ({profile}): ✅ -> {sym}")
                elif update and (was is None or (sym == "✅" and was != "✅")):
                    base.setdefault("support", {}).setdefault(profile, {}).setdefault(c, {})[
                        where
                    ] = sym
    if update and res.ok:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(base, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return res


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.4g}"
