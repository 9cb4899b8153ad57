"""The regression gate: the results of a sweep against a committed baseline.

A cell is worse when its status dropped (pass > fail > error: a crash is never better
than a measured failure), its max ULP rose beyond a small tolerance or is no longer
measured, it has more special mismatches, or one of its inputs fails that passed in the
baseline (the record's ``failing_inputs``, by the inputs' labels: a cell that failed
before may not start failing somewhere else); a support-table cell that lost its ✅ is
worse too. Cells that did not run here (no GPU), and libraries that were not swept, are
neither better nor worse.

Results depend on the platform a library computes on (its instruction set, or the GPU):
the baseline keeps each cell's entry per platform (the ``platform`` column). A cell is
judged against the entry of its own platform. Where the baseline has it only for other
platforms (a CI runner with a newer CPU), it is judged against the entry of the nearest
of them (:func:`nearest_platform`) and the cell's budget: a change of platform may
excuse a higher max ULP that stays within the budget (reported as a platform
difference, and recorded by ``--update``), never a change of status (pass to fail,
error or timeout), more special-value mismatches, or a max ULP beyond the budget.

``update`` ratchets: improved, new and new-platform entries are written into the
baseline, worse ones never are, and the gate writes nothing unless it passes. Bad input
(a baseline or results that cannot be read, or a comparison of nothing) raises
:class:`GateInputError`, which the command line turns into exit status 2; exit 1 means
only "got worse".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scoring._budgets import Budgets
from ..scoring._results import record_key
from ._support import support, uid_of, uids

__all__ = ["GateInputError", "GateResult", "gate", "nearest_platform"]

REL_TOL = 1e-6  # relative slack on max ULP (reductions may reorder between runs)
ABS_TOL = 1e-3  # ULP
RANK = {"pass": 2, "fail": 1, "error": 0}
_NEEDED = ("candidate", "backend", "library", "device", "dtype", "family", "profile",
           "status", "max_ulp", "special_mismatches", "reason", "platform")  # fmt: skip


class GateInputError(ValueError):
    """A baseline or results the gate cannot judge (exit status 2)."""


def _ulp(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _enc(v: float | None) -> Any:
    return "inf" if v is not None and math.isinf(v) else v


def _dec(v: Any) -> float | None:
    return math.inf if v == "inf" else (None if v is None else float(v))


# Instruction-set levels in the order each library's dispatch climbs them: NumPy's
# dispatch targets (x86-64, then Arm, then Power and Z), torch's CPU capabilities and
# XLA's --xla_cpu_max_isa names. A platform tag names its library first ("numpy
# AVX512_ICL", "torch AVX2", "xla AVX512"); the nearest of two tags of one library is
# the level closest to this run's.
_LEVELS = (
    "baseline DEFAULT SSE SSE2 SSE3 SSSE3 SSE41 POPCNT SSE42 X86_V2 AVX F16C FMA3 AVX2 "
    "X86_V3 AVX512F AVX512CD AVX512 AVX512_KNL AVX512_KNM AVX512_SKX X86_V4 AVX512_CLX "
    "AVX512_CNL AVX512_ICL AVX512_SPR AVX512_BF16 AVX512_FP16"
).split()
_ARM_LEVELS = "NEON NEON_FP16 NEON_VFPV4 ASIMD ASIMDHP ASIMDDP ASIMDFHM SVE SVE256".split()


def _level(word: str) -> tuple[int, int] | None:
    for family, levels in enumerate((_LEVELS, _ARM_LEVELS)):
        if word in levels:
            return family, levels.index(word)
    return None


def nearest_platform(plat: str, known: list[str]) -> str:
    """Of the baseline's platforms ``known``, the one nearest to ``plat``: same library
    word first, then the closest instruction-set level, then the longest common prefix;
    ties go to the earlier of ``known`` in sorted order (deterministic)."""

    def distance(other: str) -> tuple[int, int, int]:
        a, b = plat.split(), other.split()
        same_lib = int(bool(a and b and a[0] == b[0]))
        la = next((lv for w in reversed(a) if (lv := _level(w)) is not None), None)
        lb = next((lv for w in reversed(b) if (lv := _level(w)) is not None), None)
        if la is not None and lb is not None and la[0] == lb[0]:
            gap = abs(la[1] - lb[1])
        else:
            gap = len(_LEVELS)
        prefix = next((i for i, (u, v) in enumerate(zip(plat, other, strict=False)) if u != v),
                      min(len(plat), len(other)))  # fmt: skip
        return (-same_lib, gap, -prefix)

    return min(sorted(known), key=distance)


def _failing_inputs(r: Any) -> list[str] | None:
    """The labels of a cell's failing inputs (its record's ``counts``), or None where
    the record does not say (a streamed family, a peer's suite, an older record)."""
    try:
        got = json.loads(r.get("counts") or "{}").get("failing_inputs")
    except (ValueError, AttributeError):
        return None
    return [str(v) for v in got] if isinstance(got, list) else None


def _entry(r: Any) -> dict[str, Any]:
    e = {
        "status": r["status"],
        "max_ulp": _enc(_ulp(r["max_ulp"])),
        "special_mismatches": int(r["special_mismatches"] or 0),
    }
    failing = _failing_inputs(r)
    if failing is not None and r["status"] in ("pass", "fail"):
        e["failing_inputs"] = failing
    return e


def _check_entry(path: Path, key: str, e: Any) -> dict[str, Any]:
    where = f"baseline {str(path)!r}, cell {key!r}"
    if not isinstance(e, dict) or e.get("status") not in RANK:
        raise GateInputError(f"{where}: expected {{status: pass|fail|error, max_ulp, ...}}")
    m = e.get("max_ulp")
    if m is not None and m != "inf" and (isinstance(m, bool) or not isinstance(m, int | float)):
        raise GateInputError(f"{where}: max_ulp {m!r} is not a number")
    sm = e.get("special_mismatches", 0)
    if isinstance(sm, bool) or not isinstance(sm, int):
        raise GateInputError(f"{where}: special_mismatches {sm!r} is not an integer")
    out = {"status": e["status"], "max_ulp": m, "special_mismatches": sm}
    if "failing_inputs" in e:
        f = e["failing_inputs"]
        if not isinstance(f, list) or not all(isinstance(v, str) for v in f):
            raise GateInputError(f"{where}: failing_inputs {f!r} is not a list of labels")
        out["failing_inputs"] = f
    return out


def read_baseline(path: Path, update: bool) -> dict[str, Any]:
    """The baseline, checked, as {"cells": {key: {platform: entry}}, "support": ...}."""
    if path.is_dir():
        raise GateInputError(f"baseline {str(path)!r} is a directory, not a JSON file")
    if not path.exists():
        if update:
            return {"format": 2, "cells": {}, "support": {}}
        raise FileNotFoundError(f"baseline {str(path)!r} does not exist (create it with --update)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GateInputError(f"baseline {str(path)!r} cannot be read: {exc}") from None
    if not text.strip():
        raise GateInputError(f"baseline {str(path)!r} is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GateInputError(f"baseline {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
        raise GateInputError(
            f"baseline {str(path)!r} is not a baseline: expected a JSON object with a "
            f"'cells' object, got {type(data).__name__}"
            + (f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else "")
        )
    sup = data.get("support", {})
    if not isinstance(sup, dict):
        raise GateInputError(f"baseline {str(path)!r}: 'support' is not an object")
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for key, v in data["cells"].items():
        if isinstance(v, dict) and "status" in v:  # before platforms: one entry, any platform
            cells[key] = {"": _check_entry(path, key, v)}
        elif isinstance(v, dict):
            cells[key] = {str(p): _check_entry(path, key, e) for p, e in v.items()}
        else:
            raise GateInputError(f"baseline {str(path)!r}, cell {key!r}: not an object")
    return {"format": 2, "cells": cells, "support": sup}


@dataclass
class GateResult:
    worse: list[str] = field(default_factory=list)
    better: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # failing, listed as expected
    stale: list[str] = field(default_factory=list)  # listed as expected, now passing
    platform: list[str] = field(default_factory=list)  # worse, but measured elsewhere
    missing: list[str] = field(default_factory=list)  # in the baseline, not in the results
    compared: int = 0
    recorded: int = 0  # entries written by --update
    recorded_failing: dict[str, int] = field(default_factory=dict)  # of those, by status

    @property
    def ok(self) -> bool:
        return not self.worse


def _worse(cur: dict[str, Any], b: dict[str, Any]) -> list[str]:
    why = []
    if RANK[cur["status"]] < RANK[b["status"]]:
        why.append(f"status {b['status']} -> {cur['status']}")
    n, o = _dec(cur["max_ulp"]), _dec(b["max_ulp"])
    if o is not None and not math.isinf(o):
        if n is None:
            why.append(f"max ULP {_fmt(o)} -> not measured")
        elif n > o * (1 + REL_TOL) + ABS_TOL:
            why.append(f"max ULP {_fmt(o)} -> {_fmt(n)}")
    if cur["special_mismatches"] > b["special_mismatches"]:
        why.append(f"special mismatches {b['special_mismatches']} -> {cur['special_mismatches']}")
    if "failing_inputs" in cur and "failing_inputs" in b:  # an input that passed, failing
        new = [v for v in cur["failing_inputs"] if v not in b["failing_inputs"]]
        if new:
            why.append(f"newly failing inputs: {'; '.join(new[:8])}")
    return why


def _better(cur: dict[str, Any], b: dict[str, Any]) -> bool:
    rc, rb = RANK[cur["status"]], RANK[b["status"]]
    if rc != rb:
        return rc > rb
    n, o = _dec(cur["max_ulp"]), _dec(b["max_ulp"])
    return (n is not None and o is not None and n < o) or (
        cur["special_mismatches"] < b["special_mismatches"]
    )


def _check_table(table: Any) -> None:
    missing = [c for c in _NEEDED if c not in getattr(table, "columns", [])]
    if missing:
        raise GateInputError(f"the results lack the columns {', '.join(missing)}")
    bad = sorted(set(table["status"]) - {*RANK, "not run"})
    if bad:
        raise GateInputError(f"the results hold unknown statuses {bad}")


def gate(
    table: Any,
    baseline_path: str | os.PathLike[str],
    update: bool = False,
    budgets: Budgets | None = None,
) -> GateResult:
    """Compare; with ``update``, write the ratcheted baseline (only when nothing got
    worse). ``budgets`` are those the results were judged by (the run's fingerprint
    holds them; the default budgets otherwise): a cell on a platform the baseline lacks
    may exceed its nearest platform's max ULP only within them. Raises GateInputError
    for input it cannot judge, FileNotFoundError for a missing baseline without
    ``update``."""
    _check_table(table)
    budgets = budgets if budgets is not None else Budgets.load()
    path = Path(baseline_path)
    base = read_baseline(path, update)
    res = GateResult()
    rows = {record_key(r): r for _, r in table.iterrows()}
    ran = {k: r for k, r in rows.items() if r["status"] != "not run"}
    worse: set[str] = set()
    written: dict[str, dict[str, Any]] = {}
    for k, r in ran.items():
        cur, plat = _entry(r), str(r["platform"] or "")
        plats = base["cells"].get(k)
        if not plats:
            res.new.append(f"{k}: {cur['status']}, {_fmt(_dec(cur['max_ulp']))} ULP")
            written[k] = cur
            base["cells"][k] = {plat: cur}
            continue
        res.compared += 1
        if plat in plats:
            b = plats[plat]
            why = _worse(cur, b)
            if why:
                res.worse.append(f"{k}: " + "; ".join(why) + _repro(r))
                worse.add(k)
            elif _better(cur, b):
                res.better.append(f"{k}: max ULP {_fmt(_dec(b['max_ulp']))} -> "
                                  f"{_fmt(_dec(cur['max_ulp']))}, {cur['status']}")  # fmt: skip
                plats[plat] = written[k] = cur
            elif cur.get("failing_inputs") != b.get("failing_inputs"):
                plats[plat] = written[k] = cur  # fewer failing inputs, or their first record
            continue
        # a platform the baseline lacks: against its nearest platform and the budget
        near = nearest_platform(plat, list(plats))
        b = plats[near]
        budget = budgets.for_dtype(str(r["dtype"]))
        excusable, fatal = _foreign(cur, b, budget)
        where = (
            f" (this run's platform {plat!r} is not in the baseline; judged against its "
            f"nearest, {near!r}"
        )
        if fatal:
            res.worse.append(
                f"{k}: " + "; ".join(fatal) + where + ": a change of platform never excuses "
                "a change of status, more special-value mismatches or a max ULP beyond the "
                "budget)" + _repro(r)
            )
            worse.add(k)
            continue
        if excusable:
            res.platform.append(
                f"{k}: " + "; ".join(excusable) + where + f", within the budget of "
                f"{_fmt(budget)} ULP: not a regression verdict, --update records it)"
            )
        plats[plat] = written[k] = cur
    _missing(res, base, rows, ran)
    _known(res, rows)
    new = {line.split(":", 1)[0] for line in res.new}
    _support(res, base, table, ran, worse | new, update)
    if not update and res.compared == 0:
        raise GateInputError(_nothing(table, ran, base))
    if update and res.ok:
        res.recorded = len(written)
        for e in written.values():
            if e["status"] != "pass":
                res.recorded_failing[e["status"]] = res.recorded_failing.get(e["status"], 0) + 1
        out = {"format": 2, "cells": base["cells"], "support": base["support"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return res


def _foreign(cur: dict[str, Any], b: dict[str, Any], budget: float) -> tuple[list[str], list[str]]:
    """(excusable, fatal) differences of a cell from its nearest platform's entry: a
    higher max ULP within the budget is excusable; a lower status, more special-value
    mismatches, a max ULP beyond the budget, or one no longer measured is not."""
    excusable: list[str] = []
    fatal: list[str] = []
    for why in _worse(cur, b):
        if why.startswith("max ULP") and not why.endswith("not measured"):
            n = _dec(cur["max_ulp"])
            (excusable if n is not None and n <= budget else fatal).append(
                why + ("" if n is not None and n <= budget else f" (budget {_fmt(budget)} ULP)")
            )
        else:
            fatal.append(why)
    return excusable, fatal


def _repro(r: Any) -> str:
    where = r["worst_where"] if isinstance(r.get("worst_where"), str) else ""
    inp = r["worst_input"] if isinstance(r.get("worst_input"), str) else ""
    return (f"\n    reason: {r['reason']}" if r["reason"] else "") + (
        f"\n    worst: {where}\n    input: {inp[:400]}" if where else ""
    )


def _missing(
    res: GateResult, base: dict[str, Any], rows: dict[str, Any], ran: dict[str, Any]
) -> None:
    """Baseline cells of the swept backends, dtypes, families and profiles that these
    results lack (a candidate's cells that vanished, or that did not run here)."""
    swept = [{r[c] for r in ran.values()} for c in ("backend", "dtype", "family", "profile")]
    for k in sorted(base["cells"]):
        parts = k.split("|")
        if len(parts) == 5 and all(p in s for p, s in zip(parts[1:], swept, strict=True)):
            if k not in ran:
                res.missing.append(k + (" (not run here)" if k in rows else ""))


def _known(res: GateResult, rows: dict[str, Any]) -> None:
    from ..functions._expected import expected_failures

    known = expected_failures("budget")
    for k, r in rows.items():
        e = known.get((uid_of(r), r["backend"], r["dtype"], r["family"]))
        if e is not None and e.applies(r["profile"]):
            if r["status"] == "pass":
                res.stale.append(f"{k}: passes now ({e.describe()}); remove the entry")
            elif r["status"] != "not run":
                res.known.append(f"{k}: {r['reason']} ({e.describe()})")


def _support(
    res: GateResult, base: dict[str, Any], table: Any, ran: dict[str, Any], culprits: set[str],
    update: bool,
) -> None:  # fmt: skip
    """Support-table cells that lost their ✅ through a cell that got worse on its own
    platform or is new; a cell that fails as it failed before on this platform (the ✅
    came from another platform) or differs across platforms is reported per cell."""
    from ._support import _device

    for profile in dict.fromkeys(table["profile"]):
        t = table[table["profile"] == profile]
        for c in dict.fromkeys(uids(t)):
            for (lib, dev), cell in support(t, c).items():
                where, sym = f"{lib} {dev}", cell.symbol
                if sym in ("not run", "not swept", "n/a"):
                    continue
                was = base["support"].get(profile, {}).get(c, {}).get(where)
                if was == "✅" and sym != "✅":
                    bad = [
                        k for k, r in ran.items()
                        if uid_of(r) == c and r["profile"] == profile
                        and r["status"] != "pass" and _lib_row(r["library"]) == lib
                        and _device(r) == dev
                    ]  # fmt: skip
                    if not any(k in culprits for k in bad):
                        continue
                    res.worse.append(f"support {c} {where} ({profile}): ✅ -> {sym}")
                elif update and (was is None or (sym == "✅" and was != "✅")):
                    base["support"].setdefault(profile, {}).setdefault(c, {})[where] = sym


def _lib_row(library: str) -> str:
    from ._support import LIBRARIES

    return next((name for name, lib, _ in LIBRARIES if lib == library), library)


def _nothing(table: Any, ran: dict[str, Any], base: dict[str, Any]) -> str:
    if not ran:
        return (
            f"nothing to compare: the results hold {len(table)} cells and none of them ran "
            "(every one 'not run')"
        )
    profiles = sorted({r["profile"] for r in ran.values()})
    bprof = sorted({k.split("|")[-1] for k in base["cells"]})
    backends = sorted({r["backend"] for r in ran.values()})
    return (
        f"nothing compared: the results hold {len(ran)} cells that ran (profile "
        f"{', '.join(profiles)}; backends {', '.join(backends)}) and the baseline "
        f"({len(base['cells'])} cells, profile {', '.join(bprof) or 'none'}) has none of them"
    )


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.4g}"
