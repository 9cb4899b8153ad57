"""The measured support table: for each candidate, Library x CPU/GPU, earned by
passing runs. Rendered in the reST simple-table layout of SciPy's docstrings (20
character columns, ``====`` rules) and in Markdown."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..functions._functions import DEFAULT_FUNCTION, uid

__all__ = [
    "LIBRARIES",
    "SCIPY_DECLARED",
    "SupportCell",
    "markdown_table",
    "rst_table",
    "support",
    "uid_of",
    "uids",
]

# (row name, backend library, devices the library has)
LIBRARIES = (
    ("NumPy", "numpy", ("CPU",)),
    ("CuPy", "cupy", ("GPU",)),
    ("PyTorch", "torch", ("CPU", "GPU")),
    ("JAX", "jax", ("CPU", "GPU")),
    ("Dask", "dask", ("CPU",)),
)
# what scipy.special.log_softmax's docstring declares (every cell supported)
SCIPY_DECLARED = {
    ("NumPy", "CPU"): "✅",
    ("NumPy", "GPU"): "n/a",
    ("CuPy", "CPU"): "n/a",
    ("CuPy", "GPU"): "✅",
    ("PyTorch", "CPU"): "✅",
    ("PyTorch", "GPU"): "✅",
    ("JAX", "CPU"): "✅",
    ("JAX", "GPU"): "✅",
    ("Dask", "CPU"): "✅",
    ("Dask", "GPU"): "n/a",
}


@dataclass(frozen=True)
class SupportCell:
    symbol: str  # ✅ ⚠️ ⛔ "not run" "not swept" "n/a"
    short: str  # what goes in a 20-character column
    detail: str  # the reasons, for the notes under the table

    @property
    def supported(self) -> bool:
        return self.symbol == "✅"


def _device(row: Any) -> str:
    return "GPU" if row["device"] in ("cuda", "gpu") else "CPU"


def _fmt_ulp(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "?"
    if math.isinf(v):
        return "inf ULP"
    return f"{v:.2g} ULP".replace("e+0", "e").replace("e+", "e")


def _cell(rows: Any, swept: bool) -> SupportCell:
    if not swept:
        return SupportCell("not swept", "not swept", "")
    if rows.empty:
        return SupportCell("⛔", "⛔ unsupported", "the candidate does not run on this library")
    ran = rows[rows["status"] != "not run"]
    if ran.empty:
        reasons = sorted(set(rows["reason"]))
        return SupportCell("not run", "not run", "; ".join(reasons))
    failing = ran[ran["status"] == "fail"]
    errors = ran[ran["status"] == "error"]
    notes = _summary(ran, failing, errors)
    if not failing.empty:
        over_budget = failing["reason"].str.contains("ULP >", regex=False).any()
        short = (
            _fmt_ulp(float(failing["max_ulp"].max())) if over_budget else _short_finding(failing)
        )
        return SupportCell("⚠️", f"⚠️ {short}", notes)
    if not errors.empty:
        return SupportCell("⛔", "⛔ raises", notes)
    return SupportCell("✅", "✅", "")


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _summary(ran: Any, failing: Any, errors: Any) -> str:
    """The reasons of a support cell in a sentence or two: how many cells failed and
    the worst of them, how many raised and the commonest errors (every cell with its
    reason is on the candidate's own page)."""
    parts = []
    if not failing.empty:
        ulp = failing["max_ulp"].astype(float).fillna(-1.0)
        w = failing.loc[ulp.idxmax()]
        parts.append(
            f"{len(failing)} of {len(ran)} cells fail; the worst: {w['backend']} {w['dtype']} "
            f"{w['family']}: {_clip(str(w['reason']))}"
        )
    if not errors.empty:
        # "raised on <input>: <error>": the error, whichever input raised it
        kinds = Counter(_clip(_error_of(str(r)), 120) for r in errors["reason"])
        common = "; ".join(f"{k} ({n} cells)" for k, n in kinds.most_common(3))
        more = f"; {len(kinds) - 3} other errors" if len(kinds) > 3 else ""
        parts.append(f"{len(errors)} of {len(ran)} cells raise: {common}{more}")
    return "; ".join(parts)


_EXCEPTION = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Interrupt)\b.*")


def _error_of(reason: str) -> str:
    """The exception in an error's reason (``raised on <input>: TypeError: ...``)."""
    m = _EXCEPTION.search(reason)
    return m.group(0) if m else reason


def _short_finding(failing: Any) -> str:
    reasons = " ".join(failing["reason"])
    if "special" in reasons:
        return "specials"
    if "returned" in reasons:
        return "dtype/shape"
    if "modified" in reasons:
        return "mutates input"
    return "fails"


def uid_of(row: Any) -> str:
    """A row's candidate as the sweep knows it (Candidate.uid): ``softmax/scipy``."""
    f = row["function"] if "function" in row else DEFAULT_FUNCTION
    return uid(str(f), str(row["candidate"]))


def uids(table: Any) -> list[str]:
    """uid_of for every row of a table, in order."""
    if "function" not in table.columns:
        return [str(c) for c in table["candidate"]]
    return [uid(str(f), str(c)) for f, c in zip(table["function"], table["candidate"], strict=True)]


def support(table: Any, candidate: str) -> dict[tuple[str, str], SupportCell]:
    """(library row, device) -> the measured cell, for one candidate (its uid). A
    library and device that no candidate of the table was swept on is "not swept", not
    unsupported."""
    if "fpenv" in table.columns:  # earned in the default environment (not under FTZ)
        table = table[table["fpenv"] == "default"]
    swept = {(r["library"], _device(r)) for _, r in table[["library", "device"]].iterrows()}
    rows = table[[u == candidate for u in uids(table)]]
    out: dict[tuple[str, str], SupportCell] = {}
    for name, lib, devices in LIBRARIES:
        for dev in ("CPU", "GPU"):
            if dev not in devices:
                out[(name, dev)] = SupportCell("n/a", "n/a", "")
                continue
            sel = rows[(rows["library"] == lib)]
            sel = sel[[_device(r) == dev for _, r in sel.iterrows()]]
            out[(name, dev)] = _cell(sel, (lib, dev) in swept)
    return out


def rst_table(cells: dict[tuple[str, str], Any]) -> str:
    """SciPy's layout: three 20-column columns, two spaces apart, padded by display
    width (an emoji such as ✅ or ⚠️ takes two columns of a terminal, an editor and
    docutils, whatever its count of code points)."""
    rule = "  ".join(["=" * 20] * 3)
    lines = [rule, "  ".join([_pad("Library"), _pad("CPU"), "GPU"]), rule]
    for name, _, _ in LIBRARIES:
        vals = [_text(cells[(name, d)]) for d in ("CPU", "GPU")]
        lines.append("  ".join([_pad(name), _pad(vals[0]), vals[1]]))
    lines.append(rule)
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wcwidth: wide and emoji characters 2,
    combining marks and variation selectors 0)."""
    from wcwidth import wcswidth

    width = wcswidth(text)
    if width < 0:
        raise ValueError(f"non-printable character in table cell {text!r}")
    return int(width)


def _pad(text: str, width: int = 20) -> str:
    return text + " " * max(0, width - display_width(text))


def markdown_table(cells: dict[tuple[str, str], Any]) -> str:
    lines = ["| Library | CPU | GPU |", "|---|---|---|"]
    for name, _, _ in LIBRARIES:
        vals = [_text(cells[(name, d)]) for d in ("CPU", "GPU")]
        lines.append(f"| {name} | {vals[0]} | {vals[1]} |")
    return "\n".join(lines)


def _text(cell: Any) -> str:
    return cell if isinstance(cell, str) else cell.short
