"""Reports from the results table and the fingerprint; nothing is typed by hand.

``write_report(results, out)`` writes:

- ``README.md``: the index (what ran, a summary per candidate, links);
- ``support.md`` and ``support.rst``: the measured support tables, SciPy's declared
  table beside its measured one;
- ``candidates/<name>.md``: backend x dtype (max, p99, fraction correctly rounded),
  family x dtype, and the worst inputs as reproducers;
- ``specials.md``: the special-value matrix;
- ``exhaustive-f32.md``: the exhaustive float32 figures, where there are any (the
  chunk cells of ``exhaustive-f32``, from these results or ``--exhaustive`` ones);
- ``img/*.png``: ULP histograms, max ULP against the dominant gap, a candidate x
  family heatmap;
- ``index.html``: all of the above on one self-contained page (inline CSS, images
  embedded, every string escaped).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..functions._functions import scoring_code, uid
from ..scoring._score import HIST_EDGES
from ._support import SCIPY_DECLARED, display_width, markdown_table, rst_table, support, uids

__all__ = ["write_report"]

DTYPES = ("float16", "bfloat16", "float32", "float64")


def _code(name: str) -> str:
    """``name`` as inline code that stays one cell of a Markdown table: pipes escaped,
    backticks fenced by a longer run of them."""
    name = name.replace("|", "\\|")
    run = max((len(m) for m in re.findall(r"`+", name)), default=0)
    fence = "`" * (run + 1)
    pad = " " if run else ""
    return f"{fence}{pad}{name}{pad}{fence}"


def _md_text(text: str) -> str:
    """Text a candidate controls (a reason, a note) as plain Markdown text: HTML's
    special characters as entities (no <script>, no raw tag), and Markdown's link,
    emphasis and code characters backslash-escaped (no [x](javascript:...))."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]()#|!])", r"\\\1", text)


def _rst_text(name: str) -> str:
    """``name`` as plain reST text (inline markup characters escaped)."""
    return re.sub(r"([\\`*|_:<>\[\]])", r"\\\1", name)


def _slugs(names: list[str]) -> dict[str, str]:
    """A file name per candidate: readable, never empty, never shared by two."""
    out: dict[str, str] = {}
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "candidate"
        if slug in out.values():
            slug += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        out[name] = slug
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    v = float(v)
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def _order(table: Any) -> list[str]:
    names = list(dict.fromkeys(table["candidate"]))
    return sorted(names, key=lambda c: (c.rsplit("/", 1)[-1] != "impl", names.index(c)))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)


def _summary_rows(table: Any) -> list[list[str]]:
    rows = []
    for c in _order(table):
        t = table[table["candidate"] == c]
        ran = t[t["status"] != "not run"]
        counts = t["status"].value_counts()
        worst = [
            _fmt(ran[ran["dtype"] == d]["max_ulp"].max()) if (ran["dtype"] == d).any() else "-"
            for d in DTYPES
        ]
        rows.append(
            [
                c,
                *(str(int(counts.get(s, 0))) for s in ("pass", "fail", "error", "not run")),
                *worst,
            ]
        )
    return rows


def findings(table: Any, name: Callable[[str], str] = str) -> list[str]:
    """What the sweep found, a sentence per candidate, from the table: its worst error
    per format where it has one, the family that shows it, and its failures. ``name``
    writes a candidate's name (for Markdown: _md_text, the name being the user's)."""
    out = []
    for cand in _order(table):
        t = table[table["candidate"] == cand]
        c = name(cand)
        ran = t[t["status"] != "not run"]
        n = {s: int((t["status"] == s).sum()) for s in ("pass", "fail", "error")}
        if ran.empty:
            out.append(f"{c} did not run here ({len(t)} cells not run).")
            continue
        finite = ran[ran["max_ulp"].notna()]
        if n["fail"] == 0 and n["error"] == 0:
            worst = float(finite["max_ulp"].max()) if not finite.empty else float("nan")
            formats = ", ".join(d for d in DTYPES if (ran["dtype"] == d).any())
            out.append(
                f"{c} is within {_fmt(worst)} ULP on every cell that ran "
                f"({n['pass']} cells: {formats})."
            )
            continue
        parts = []
        for d in reversed(DTYPES):
            cells = finite[finite["dtype"] == d]
            if cells.empty:
                continue
            worst = float(cells["max_ulp"].max())
            # among the cells at the worst value, a generated family says more than
            # the corpus that replays inputs found by search
            at_worst = cells[cells["max_ulp"] >= worst * (1 - 1e-6)]
            named = at_worst[at_worst["family"] != "corpus"]
            top = (named if len(named) else at_worst).iloc[0]
            if float(top["max_ulp"]) > 1:
                parts.append(f"{_fmt(top['max_ulp'])} ULP in {d} ({top['family']})")
        why_inf = (
            " (inf: a non-finite answer where the exact one is finite, or the reverse)"
            if any(p.startswith("inf ") for p in parts)
            else ""
        )
        reach = f" reaches {', '.join(parts)}{why_inf};" if parts else ""
        tail = f"{n['fail']} cells fail, {n['error']} raise, {n['pass']} pass"
        out.append(f"{c}{reach} {tail}.")
    return out


SUITE_HEADER = ["candidate", "suite", "pass", "fail", "error", "not run", "failing cells"]


def _suite_names(table: Any) -> list[str]:
    from ..functions._families import FAMILIES

    names = {f.name for f in FAMILIES if f.optional}
    return [f for f in dict.fromkeys(table["family"]) if f in names]


def _cells_text(cells: list[str], shown: int = 4) -> str:
    more = f" and {len(cells) - shown} more" if len(cells) > shown else ""
    return ", ".join(cells[:shown]) + more


def peer_suites(table: Any) -> list[list[str]]:
    """Per candidate and peer suite: the cells passed, failed, raised and not run
    (a backend the candidate does not apply to has no cell: not applicable), and
    which cells failed."""
    rows = []
    for c in _order(table):
        for f in _suite_names(table):
            t = table[(table["candidate"] == c) & (table["family"] == f)]
            if t.empty:
                continue
            n = {k: int((t["status"] == k).sum()) for k in ("pass", "fail", "error", "not run")}
            bad = t[t["status"].isin(["fail", "error"])]
            where = [f"{r['backend']} {r['dtype']}" for _, r in bad.iterrows()]
            rows.append([c, f, *(str(v) for v in n.values()), _cells_text(where) or "-"])
    return rows


def peer_suite_details(table: Any, limit: int = 30) -> list[str]:
    """The failing suite cells, grouped by candidate, suite and reason, with a
    reproducer; and the cells whose notes record a peer's verdict that the oracle
    overrules (grouped the same way)."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for f in _suite_names(table):
        t = table[table["family"] == f]
        for _, r in t.iterrows():
            cell = f"{r['backend']} {r['dtype']}"
            if r["status"] in ("fail", "error"):
                repro = r["worst_input"] if isinstance(r["worst_input"], str) else ""
                text = f"{r['status']}: {r['reason'][:300]}" + (
                    f"; worst input {repro} ({r['worst_where']})" if repro else ""
                )
            elif "rejects" in (r["notes"] or ""):
                text = f"passes the oracle; {r['notes'][:400]}"
            else:
                continue
            groups.setdefault((r["candidate"], f, text), []).append(cell)
    return [
        f"{c} {f} on {_cells_text(cells)}: {text}"
        for (c, f, text), cells in list(groups.items())[:limit]
    ]


def _html_suites(rows: list[list[str]], details: list[str]) -> list[str]:
    if not rows:
        return []
    items = [f"<li>{_h(d)}</li>" for d in details]
    return ["<h2>Peers' suites</h2>", _html_table(SUITE_HEADER, rows), "<ul>", *items, "</ul>"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pivot(t: Any, index: str, value: str) -> tuple[list[str], list[list[str]]]:
    ran = t[t["status"] != "not run"]
    keys = list(dict.fromkeys(ran[index]))
    rows = []
    for k in keys:
        sel = ran[ran[index] == k]
        cells = []
        for d in DTYPES:
            s = sel[sel["dtype"] == d]
            if s.empty:
                cells.append("-")
            elif value == "max":
                mark = "" if (s["status"] == "pass").all() else " ✗"
                cells.append(_fmt(s["max_ulp"].max()) + mark)
            elif value == "p99":
                cells.append(_fmt(s["p99_ulp"].max()))
            else:
                cells.append(_fmt(s["frac_correctly_rounded"].min()))
        rows.append([k, *cells])
    return keys, rows


def _candidate_md(table: Any, c: str) -> str:
    t = table[table["candidate"] == c]
    out = [f"# {_code(c)}", ""]
    counts = t["status"].value_counts()
    out.append(
        "Cells: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("pass", "fail", "error", "not run"))
    )
    for title, by, value in (
        ("Max ULP by backend and dtype (✗: the cell failed)", "backend", "max"),
        ("p99 ULP by backend and dtype", "backend", "p99"),
        ("Fraction correctly rounded (lowest over the backend's cells)", "backend", "cr"),
        ("Max ULP by family and dtype (over every backend)", "family", "max"),
    ):
        _, rows = _pivot(t, by, value)
        out += ["", f"## {title}", "", _md_table([by, *DTYPES], rows)]
    bad = t[t["status"].isin(["fail", "error"])].copy()
    if not bad.empty:
        out += ["", "## Worst inputs (one per failing cell, worst first)", ""]
        bad["_w"] = bad["worst_ulp"].fillna(-1.0)
        for _, r in bad.sort_values("_w", ascending=False).head(20).iterrows():
            out.append(
                f"- **{r['backend']} {r['dtype']} {r['family']}**: {r['status']}: "
                f"{_md_text(str(r['reason']))}"
            )
            if isinstance(r["worst_input"], str) and r["worst_input"].startswith("["):
                hexes = json.loads(r["worst_input"])
                cast = (
                    ".astype(ml_dtypes.bfloat16)"
                    if r["dtype"] == "bfloat16"
                    else f".astype('{r['dtype']}')"
                )
                fn = str(r["function"])
                name = c.removeprefix(f"{fn}/")
                args = repr(name) if fn == "log_softmax" else f"{name!r}, {fn!r}"
                scored = scoring_code(fn, "got", "x")
                out += [
                    "",
                    "  ```python",
                    "  import numpy as np, ml_dtypes, reference",
                    "  from conformance import backend, candidate",
                    f"  x = np.array([float.fromhex(h) for h in {hexes!r}]){cast}",
                    f"  got = backend({r['backend']!r}).run(candidate({args}).load(), x, axis=-1)",
                    f"  # expected {r['worst_expected']!r}, got {r['worst_got']!r}: "
                    f"{_fmt(r['worst_ulp'])} ULP",
                    f"  print({scored})",
                    "  ```",
                    "",
                ]
            elif isinstance(r["worst_where"], str) and r["worst_where"]:
                out.append(f"  worst element: {_fmt(r['worst_ulp'])} ULP at {r['worst_where']}")
    return "\n".join(out) + "\n"


def _specials(table: Any) -> tuple[list[str], list[list[str]]]:
    t = table[(table["family"] == "specials") & (table["status"] != "not run")]
    cases: list[str] = []
    per: dict[str, dict[str, set[str]]] = {}
    for _, r in t.iterrows():
        sem = json.loads(r["semantics"] or "{}")
        for case, label in sem.items():
            if case not in cases:
                cases.append(case)
            per.setdefault(r["candidate"], {}).setdefault(case, set()).add(label)
    rows = []
    for c in _order(table):
        if c not in per:
            continue
        cells = []
        for case in cases:
            labels = per[c].get(case, set())
            text = ", ".join(sorted(labels)) if labels else "-"
            cells.append(("✗ " if "other" in labels else "") + text)
        rows.append([c, *cells])
    return cases, rows


def _plots(table: Any, img: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    img.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    cands = _order(table)
    ran = table[table["status"] != "not run"]

    # ULP histograms per candidate and dtype, log scale
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    centers = np.array([max(e, 2.0**-9) for e in HIST_EDGES[:-1]])
    for ax, d in zip(axes, DTYPES, strict=True):
        for c in cands:
            h = np.zeros(len(HIST_EDGES) - 1)
            for s in ran[(ran["candidate"] == c) & (ran["dtype"] == d)]["hist"]:
                v = json.loads(s or "[]")
                if v:
                    h += np.asarray(v, dtype=float)
            if h.sum():
                st = _style(cands.index(c))
                ax.step(centers, h / h.sum(), where="post", label=c, linestyle=st["linestyle"],
                        linewidth=st["linewidth"], color=st["color"])  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(d)
        ax.set_xlabel("ULP error (bin lower edge)")
    axes[0].set_ylabel("fraction of elements")
    _legend(fig, axes)
    made["hist"] = _save(fig, img / "ulp_histograms.png")

    # max ULP against the dominant gap d
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, d in zip(axes, DTYPES, strict=True):
        for c in cands:
            sel = ran[(ran["candidate"] == c) & (ran["dtype"] == d) & (ran["family"] == "dominant")]
            pts: dict[float, float] = {}
            for s in sel["curve"]:
                for g, e in json.loads(s or "[]"):
                    pts[g] = max(pts.get(g, 0.0), e)
            if pts:
                gs = sorted(pts)
                ys = [min(max(pts[g], 1e-3), 1e20) for g in gs]
                # candidates that saturate alike draw the same curve: a marker, a
                # dash pattern and a width of their own keep each one visible
                ax.plot(gs, ys, label=c, **_style(cands.index(c)))
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {d} cells", ha="center", va="center", transform=ax.transAxes)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title(f"dominant, {d}")
        ax.set_xlabel("gap d (others at max - d)")
    axes[0].set_ylabel("max ULP (inf drawn at 1e20)")
    _legend(fig, axes)
    made["gap"] = _save(fig, img / "max_ulp_vs_gap.png")

    # heatmap: candidate x family, max ULP over backends and dtypes
    fams = list(dict.fromkeys(ran["family"]))
    grid = np.full((len(cands), len(fams)), np.nan)
    for i, c in enumerate(cands):
        for j, f in enumerate(fams):
            s = ran[(ran["candidate"] == c) & (ran["family"] == f)]["max_ulp"].dropna()
            if len(s):
                grid[i, j] = math.log10(max(min(float(s.max()), 1e20), 1e-3))
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(fams), 1.6 + 0.5 * len(cands)))
    # no ULP measured: grey, labelled in the cell
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", vmin=-3, vmax=20)
    ax.set_xticks(range(len(fams)), fams, rotation=45, ha="right")
    ax.set_yticks(range(len(cands)), cands)
    for i, c in enumerate(cands):
        for j, f in enumerate(fams):
            cells = ran[(ran["candidate"] == c) & (ran["family"] == f)]
            ulps = cells["max_ulp"].dropna()
            if len(ulps):  # the max ULP itself, as the tables print it (never "-0")
                text, colour = _fmt(float(ulps.max())), "w" if grid[i, j] < 12 else "k"
            elif (cells["status"] == "error").any():
                text, colour = "error", "#a00000"
            else:  # ran, but no finite element to score (specials or empty inputs only)
                text, colour = "no ULP", "#404040"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=7)
    ax.set_title("max ULP per candidate and family\n(over backends and dtypes)", fontsize=9)
    fig.colorbar(im, ax=ax, label="log10 max ULP (inf at 20)")
    made["heat"] = _save(fig, img / "heatmap.png")
    return made


_MARKERS = ["o", "s", "^", "D", "v", "x", "+", "*"]
_DASHES: list[Any] = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1))]


def _style(i: int) -> dict[str, Any]:
    """Candidate i's line: colour, marker, dash pattern and width of its own, and
    hollow markers that decrease in size, so that lines drawn on top of each other
    stay visible."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
    return {
        "color": colours[i % len(colours)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "markersize": max(3.0, 9.0 - 1.5 * i),
        "markerfacecolor": "none",
        "linestyle": _DASHES[i % len(_DASHES)],
        "linewidth": max(0.8, 2.6 - 0.45 * i),
        "alpha": 0.9,
    }


def _legend(fig: Any, axes: Any) -> None:
    """One legend for the figure, below its panels, readable at the page's width."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="lower center",
            ncol=min(len(handles), 5), fontsize=10, frameon=False,
        )  # fmt: skip


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write and close one figure."""
    import matplotlib.pyplot as plt

    # room below the panels for a figure legend
    fig.tight_layout(rect=(0, 0.13, 1, 1) if fig.legends else (0, 0, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _agreement(table: Any) -> str:
    gpu = table[(table["device"].isin(["cuda", "gpu"])) & (table["status"] != "not run")]
    if gpu.empty:
        return "No GPU results in this run (every GPU cell: not run), so no CPU/GPU comparison."
    lines = [
        "| candidate | library | dtype | family | CPU max ULP | GPU max ULP |",
        "|---|---|---|---|---|---|",
    ]
    cpu = table[table["device"] == "cpu"]
    for _, g in gpu.iterrows():
        c = cpu[
            (cpu["candidate"] == g["candidate"]) & (cpu["library"] == g["library"])
            & (cpu["dtype"] == g["dtype"]) & (cpu["family"] == g["family"])
        ]  # fmt: skip
        lines.append(
            f"| {g['candidate']} | {g['library']} | {g['dtype']} | {g['family']} | "
            f"{_fmt(c['max_ulp'].max()) if not c.empty else '-'} | {_fmt(g['max_ulp'])} |"
        )
    return "\n".join(lines)


def _oracle_prose(info: dict[str, Any]) -> str:
    """The fingerprint's oracle record in words."""
    if not info:
        return "not recorded"
    name = info.get("engine", "?")
    engine = f"Arb (python-flint {info.get('python-flint', '?')})" if name == "arb" else name
    return (
        f"the {engine} engine; mpmath {info.get('mpmath', '?')} on "
        f"{info.get('mpmath_backend', '?')} integers; oracle version {info.get('version', '?')}"
    )


def _sandbox_prose(run: dict[str, Any]) -> str:
    """The run's sandbox as recorded; a run from before the sandbox had none."""
    return str(run.get("sandbox", "none (not recorded)"))


def _devices_prose(devices: dict[str, list[str]]) -> str:
    """The fingerprint's devices per backend in words: each device with its backends."""
    if not devices:
        return "CPU only"
    by_device: dict[str, list[str]] = {}
    for backend_name, names in devices.items():
        for d in names:
            by_device.setdefault(d, []).append(backend_name)
    return "; ".join(f"{d} ({', '.join(b)})" for d, b in by_device.items())


def _exhaustive_md(rows: list[Any]) -> list[str]:
    from ._exhaustive_report import HEADER, INTRO, table_rows

    md = [INTRO, ""]
    md += [f"- {r.sentence()}" for r in rows]
    md += ["", _md_table(HEADER, [[_code(r[0]), *r[1:]] for r in table_rows(rows)]), ""]
    return md


def _exhaustive_page(rows: list[Any]) -> str:
    md = ["# Exhaustive float32: [0, v] for every float32 v", "", *_exhaustive_md(rows)]
    for r in rows:
        md += ["", f"## {_code(r.candidate)} on {r.backend}", ""]
        md.append(
            f"- {r.chunks} of 256 chunks measured; the oracle sent {r.oracle_exact:,} pairs "
            "to the exact engine (the rest were certified on its fast path)"
        )
        md += [f"- chunk not measured: {e}" for e in r.errors[:8]]
        if r.unanswered:
            md.append(f"- {r.unanswered:,} pairs unanswered (no array, or the wrong shape)")
        if r.worst:
            md.append("- worst pairs [0, v], v's float32 bits (exact ULP error): " + ", ".join(
                f"`{b}` ({u:.6g})" for u, b in r.worst))  # fmt: skip
    md += [
        "",
        "Reproduce a pair: "
        "`conformance.functions._exhaustive.pairs_of(np.array([BITS], dtype=np.uint32))`"
        " is the input; `reference.log_softmax` (or `softmax`, `logsumexp`, the row's "
        "function) of it the correctly rounded answer.",
    ]
    return "\n".join(md) + "\n"


REPORT_FILES = ".report-files"  # what write_report wrote, for a fresh run to remove


def write_report(
    results: str | os.PathLike[str], out: str | os.PathLike[str],
    exhaustive: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:  # fmt: skip
    """Every report file from ``results`` (a runner's results directory) into ``out``;
    the exhaustive float32 figures from its own chunk cells and from the results
    directories in ``exhaustive``. The files written are listed in ``out/.report-files``
    (a fresh run into ``results`` removes a report there, and only its files)."""
    written = _write_report(results, out, exhaustive)
    root = Path(out)
    names = sorted({p.relative_to(root).as_posix() for p in written})
    _write(root / REPORT_FILES, json.dumps(names, indent=0) + "\n")
    return written


FPENV_HEADER = ["candidate", "backend", "dtype", "family", "env", "default", "env's", "verdict"]


def fpenv_rows(table: Any) -> list[list[str]]:
    """One row per cell run in another environment than the default: the candidate,
    backend, dtype and family, the environment, the default twin's and its own status
    and max ULP, and whether the environment changed the verdict."""
    ran = table[table["status"] != "not run"]
    default = {
        (r["function"], r["candidate"], r["backend"], r["dtype"], r["family"]): r
        for _, r in ran[ran["fpenv"] == "default"].iterrows()
    }
    rows = []
    for _, r in ran[ran["fpenv"] != "default"].iterrows():
        twin = default.get((r["function"], r["candidate"], r["backend"], r["dtype"], r["family"]))
        mine = f"{r['status']} {_fmt(r['max_ulp'])}"
        if twin is None:
            was, verdict = "not swept", "-"
        else:
            was = f"{twin['status']} {_fmt(twin['max_ulp'])}"
            verdict = (
                "same" if twin["status"] == r["status"]
                else f"{twin['status']} by default, {r['status']} under {r['fpenv']}"
            )  # fmt: skip
        cand = uid(str(r["function"]), str(r["candidate"]))
        rows.append([cand, r["backend"], r["dtype"], r["family"], r["fpenv"], was, mine, verdict])
    return rows


def fpenv_findings(rows: list[list[str]]) -> list[str]:
    """A sentence per environment: the cells whose verdict it changed."""
    out = []
    for env in dict.fromkeys(r[4] for r in rows):
        mine = [r for r in rows if r[4] == env]
        changed = [r for r in mine if r[7] not in ("same", "-")]
        text = (
            f"Under {env}, {len(mine)} cells ran beside their default twins; "
            f"{len(changed)} changed verdict"
        )
        if changed:
            shown = ", ".join(f"{r[0]} {r[1]} {r[2]} {r[3]} ({r[7]})" for r in changed[:4])
            text += f": {shown}" + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        out.append(text + ".")
    return out


def _fpenv_page(rows: list[list[str]]) -> str:
    lines = [
        "# The floating-point environment",
        "",
        "Cells run with flush-to-zero and denormals-are-zero (`run --fpenv default,ftz`), "
        "each beside the same cell in the default environment. The oracle is the same in "
        "both: a result the environment flushes is scored as the number it should be.",
        "",
        *[f"- {line}" for line in fpenv_findings(rows)],
        "",
        _md_table(FPENV_HEADER, [[_code(r[0]), *r[1:]] for r in rows]),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class _Report:
    """What the steps of one report share: the results read (``table``, the report
    proper: the default environment's cells, the exhaustive chunks apart, each candidate
    under its uid), the fingerprint, where the files go and the files written so far."""

    results: Path
    out: Path
    table: Any
    env: dict[str, Any]  # the fingerprint's environment
    run: dict[str, Any]  # and its run
    ex_rows: list[Any]  # the exhaustive float32 figures (_exhaustive_report)
    env_rows: list[list[str]]  # the cells of another environment beside their default twins
    fn_of: dict[str, str]  # candidate (its uid) -> function
    functions: list[str]
    heading: str
    cands: list[str]  # in the report's order (impl first)
    slugs: dict[str, str]  # candidate -> its page's name
    written: list[Path] = field(default_factory=list)

    def write(self, name: str, text: str) -> None:
        _write(self.out / name, text)
        self.written.append(self.out / name)


def _write_report(
    results: str | os.PathLike[str], out: str | os.PathLike[str],
    exhaustive: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:  # fmt: skip
    """The report's pipeline, step by step: read the results (and the exhaustive
    sweeps), then write the exhaustive float32 page, the support tables, a page per
    candidate, the special values, the plots, the flush-to-zero page, the index and the
    one-page HTML report."""
    r = _read(Path(results), Path(out), exhaustive)
    if r.ex_rows:
        r.write("exhaustive-f32.md", _exhaustive_page(r.ex_rows))
    if r.table.empty:  # a sweep of the exhaustive family alone: its page is the report
        return _write_exhaustive_index(r)
    supports = _write_support(r)
    _write_candidates(r)
    cases, srows = _write_specials(r)
    plots = _plots(r.table, r.out / "img")
    r.written += list(plots.values())
    found, found_md = _findings(r)
    if r.env_rows:
        r.write("fpenv.md", _fpenv_page(r.env_rows))
    suites, details = peer_suites(r.table), peer_suite_details(r.table)
    r.write("README.md", _index(r, supports, found_md, suites, details))
    page = _html(
        r.table, supports, cases, srows, plots, r.env, r.run, r.cands, found, suites, details,
        r.ex_rows,
    )  # fmt: skip
    r.write("index.html", page)
    return r.written


def _read(results: Path, out: Path, exhaustive: Sequence[str | os.PathLike[str]]) -> _Report:
    """The results and fingerprint, split for the report: the exhaustive chunks (these
    results' and those of ``exhaustive``) into their figures, the cells of another
    floating-point environment beside their default twins, and the rest, the report
    proper, each candidate under its uid ("softmax/scipy": its pages, plots and support
    table are its own)."""
    from ..scoring._results import ResultsError, load_results
    from ._exhaustive_report import exhaustive_rows, is_chunk, load_exhaustive

    if out.exists() and not out.is_dir():
        raise ResultsError(f"report directory {str(out)!r} is a file")
    table, fp = load_results(results)
    chunked = table["family"].map(is_chunk)
    parts = [(table[chunked], fp)] if chunked.any() else []
    parts += load_exhaustive(exhaustive)
    ex_rows = exhaustive_rows(parts)
    table = table[~chunked].reset_index(drop=True)
    # the report proper is the default environment's; the cells run under another
    # (flush-to-zero) are set beside their default twins on a page of their own
    other_env = table["fpenv"] != "default"
    env_rows = fpenv_rows(table)
    table = table[~other_env].reset_index(drop=True)
    # a candidate of another function than log_softmax is reported under its uid
    # ("softmax/scipy"): its pages, plots and support table are its own
    fn_of = dict(zip(uids(table), table["function"], strict=True))
    table = table.assign(candidate=uids(table))
    functions = list(dict.fromkeys(table["function"])) or ["log_softmax"]
    heading = (
        f"# {functions[0]} accuracy report"
        if len(functions) == 1
        else f"# Accuracy report: {', '.join(functions[:-1])} and {functions[-1]}"
    )
    cands = _order(table)
    return _Report(
        results, out, table, fp.get("environment", {}), fp.get("run", {}), ex_rows, env_rows,
        fn_of, functions, heading, cands, _slugs(cands),
    )  # fmt: skip


def _write_exhaustive_index(r: _Report) -> list[Path]:
    """The index of a report of the exhaustive family alone (its page is the report)."""
    from ..scoring._results import ResultsError

    if not r.ex_rows:
        raise ResultsError(f"results in {str(r.results)!r} hold no cells to report")
    idx = [r.heading, "", *_exhaustive_md(r.ex_rows)]
    idx.append("Details: [exhaustive-f32.md](exhaustive-f32.md)")
    r.write("README.md", "\n".join(idx) + "\n")
    return r.written


def _write_support(r: _Report) -> dict[str, Any]:
    """The measured support tables (support.md and support.rst, SciPy's declared table
    beside its measured one); returns each candidate's."""
    supports = {c: support(r.table, c) for c in r.cands}
    md = ["# Measured support tables", ""]
    md.append(
        "A cell is ✅ only where the candidate ran and met the budgets on every family and "
        "dtype; ⚠️ gives the worst error where it did not, ⛔ where it raised or does not "
        "run on that library, `not run` where this machine has no such device, `not swept` "
        "where the sweep did not include that library."
    )
    rst = [
        "Measured support tables",
        "=======================",
        "",
        "Measured: each cell earned by this sweep's runs (see support.md for the notes).",
        "",
    ]
    for c in r.cands:
        cells = supports[c]
        md += ["", f"## {_code(c)}", "", markdown_table(cells)]
        notes = [
            f"- {lib} {dev}: {_md_text(cell.detail)}"
            for (lib, dev), cell in cells.items()
            if cell.detail
        ]
        if notes:
            md += ["", *notes[:12]]
        title = f"{_rst_text(c)}: measured"
        rst += [title, "-" * max(3, display_width(title)), "", rst_table(cells), ""]
    if "scipy" in supports:
        title = "scipy: declared (its docstring), for comparison"
        rst += [title, "-" * len(title), "", rst_table(SCIPY_DECLARED), ""]
    if "scipy" in supports:
        md += [
            "", "## SciPy: declared (its docstring) and measured", "",
            "Declared:", "", markdown_table(SCIPY_DECLARED), "",
            "Measured:", "", markdown_table(supports["scipy"]),
        ]  # fmt: skip
    r.write("support.md", "\n".join(md) + "\n")
    r.write("support.rst", "\n".join(rst))
    return supports


def _write_candidates(r: _Report) -> None:
    """A page per candidate: per backend and family, and its worst inputs."""
    for c in r.cands:
        r.write(f"candidates/{r.slugs[c]}.md", _candidate_md(r.table, c))


def _write_specials(r: _Report) -> tuple[list[str], list[list[str]]]:
    """The special-value matrix (specials.md); returns its cases and rows."""
    cases, srows = _specials(r.table)
    sp = ["# Special values: which semantics each candidate follows", ""]
    sp.append(
        "From the `specials` family (the specification's table, docs/specification.md). "
        "`limit`, `nan-propagating`, "
        "`nan-at-inf` and `equal-split` are accepted answers; ✗ marks `other`, a failure."
    )
    sp += ["", _md_table(["candidate", *cases], [[_code(x[0]), *x[1:]] for x in srows])]
    r.write("specials.md", "\n".join(sp) + "\n")
    return cases, srows


def _findings(r: _Report) -> tuple[list[str], list[str]]:
    """The findings: as plain text (for the HTML page) and as the index's Markdown."""
    env_found = fpenv_findings(r.env_rows)
    found = findings(r.table) + [f"Exhaustive float32: {x.sentence()}." for x in r.ex_rows]
    found += env_found
    md = [f"- {line}" for line in findings(r.table, _md_text)]
    md += [f"- Exhaustive float32: {x.sentence()}." for x in r.ex_rows]
    md += [f"- {_md_text(line)}" for line in env_found]
    return found, md


def _index(
    r: _Report, supports: dict[str, Any], found_md: list[str], suites: list[list[str]],
    details: list[str],
) -> str:  # fmt: skip
    """The index (README.md): the findings, what ran, the summary, the measured support,
    the peers' suites, the exhaustive figures, the known failures and the links."""
    idx = [r.heading, ""]
    idx.append(
        f"Generated by `python -m conformance report` from the results in `{r.results.name}`: "
        f"profile `{r.run.get('profile', '?')}`, {len(r.table)} cells."
    )
    idx += ["", "## Findings", "", *found_md]
    idx += _what_ran(r)
    idx += _support_section(r, supports)
    idx += _suites_section(suites, details)
    if r.ex_rows:
        idx += ["## Exhaustive float32", "", *_exhaustive_md(r.ex_rows)]
        idx += ["Details: [exhaustive-f32.md](exhaustive-f32.md)", ""]
    idx += _known_failures()
    idx += _more(r)
    return "\n".join(idx) + "\n"


def _what_ran(r: _Report) -> list[str]:
    """The index's "What ran" (machine, versions, oracle, devices, backends, workers)
    and "Summary" (cells by status, the worst ULP per format)."""
    env, run = r.env, r.run
    versions = env.get("versions", {})
    return [
        "",
        "## What ran",
        "",
        f"- CPU: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores), "
        f"{env.get('platform', '?')}",
        f"- Python {env.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "log-softmax-conformance"),
        f"- Oracle: {_oracle_prose(env.get('oracle', {}))}",
        f"- Devices: {_devices_prose(env.get('devices', {}))}",
        f"- Backends: {', '.join(run.get('backends', []))}",
        f"- Workers: isolation {run.get('isolation', '?')}, sandbox {_sandbox_prose(run)}",
        "",
        "## Summary",
        "",
        "Cells by status, and the worst ULP error in each format.",
        "",
        _md_table(
            SUMMARY_HEADER,
            [[_code(row[0]), *row[1:]] for row in _summary_rows(r.table)],
        ),
        "",
    ]


def _support_section(r: _Report, supports: dict[str, Any]) -> list[str]:
    """The index's measured support tables, by function."""
    idx = ["## Support (measured)", ""]
    for fn in r.functions:
        if len(r.functions) > 1:
            idx += [f"### {fn}", ""]
        for c in r.cands:
            if r.fn_of[c] == fn:
                idx += [f"{_code(c)}:", "", markdown_table(supports[c]), ""]
    return idx


def _suites_section(suites: list[list[str]], details: list[str]) -> list[str]:
    """The index's "Peers' suites", where the sweep ran them."""
    if not suites:
        return []
    idx = ["## Peers' suites", ""]
    idx.append(
        "SciPy's own test class of each function (TestLogSoftmax, TestSoftmax, "
        "TestLogSumExp) and PyTorch's OpInfo samples of it, run on each candidate "
        "(`--families scipy-suite,torch-opinfo`). Where torch's assert_close and the "
        "oracle disagree, the oracle decides."
    )
    idx += ["", _md_table(SUITE_HEADER, [[_code(x[0]), *x[1:]] for x in suites]), ""]
    if details:
        idx += ["Failing cells, and torch's own verdicts where they differ:", ""]
        idx += [f"- {_md_text(d)}" for d in details]
        idx.append("")
    return idx


def _known_failures() -> list[str]:
    """The index's "Known failures": the expected failures of scope ``budget``."""
    from ..functions._expected import all_expected_failures

    known = [e for e in all_expected_failures() if e.scope == "budget"]
    idx = ["## Known failures", ""]
    idx.append(
        "From `conformance/data/expected_failures.toml` (the file the tests and the gate "
        "read), scope `budget`:"
    )
    idx.append("")
    idx += [
        f"- `{e.candidate}` {e.backend} {e.dtype} {e.family}"
        f"{' (' + e.profile + ' profile)' if e.profile else ''}: {e.describe()}"
        for e in known
    ] or ["- none"]
    return idx


def _more(r: _Report) -> list[str]:
    """The index's CPU and GPU agreement, its links and its plots."""
    return [
        "",
        "## CPU and GPU agreement",
        "",
        _agreement(r.table),
        "",
        "## More",
        "",
        "- [support tables, Markdown](support.md) and [reST, SciPy's layout](support.rst)",
        "- [special-value matrix](specials.md)",
        *(["- [exhaustive float32](exhaustive-f32.md)"] if r.ex_rows else []),
        *(["- [flush-to-zero beside the default environment](fpenv.md)"] if r.env_rows else []),
        *(
            f"- [{_code(c)}: per backend, family and worst inputs](candidates/{r.slugs[c]}.md)"
            for c in r.cands
        ),
        "- [one page with the plots](index.html)",
        "",
        "![ULP histograms](img/ulp_histograms.png)",
        "",
        "![max ULP against the dominant gap](img/max_ulp_vs_gap.png)",
        "",
        "![candidate x family](img/heatmap.png)",
    ]


# The summary table's columns (the formats' headers short: the site's content column
# is narrower than the HTML page)
SUMMARY_HEADER = ["candidate", "pass", "fail", "error", "not run", *DTYPES]

# The support cells' badges in HTML: a coloured box with a text label, drawn by CSS,
# so that they need no emoji font (the Markdown and reST tables keep the marks; the
# documentation site draws its tables' marks as these badges too: docs/_ext/badges.py)
BADGE_COLOURS = {"b-ok": "#1a7f37", "b-warn": "#9a6700", "b-bad": "#cf222e", "b-none": "#6e7781"}
BADGE_CSS = (
    ".badge{display:inline-block;min-width:5em;padding:1px 8px;border-radius:3px;"
    "font-weight:600;color:#fff;text-align:center;white-space:nowrap}\n"
    + " ".join(f".{k}{{background:{v}}}" for k, v in BADGE_COLOURS.items())
    + "\n"
)

_CSS = (
    """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:left}
th{background:#eee} pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0} h2{border-bottom:1px solid #ccc}
"""
    + BADGE_CSS
)
_MARKS = ("✅", "⚠️", "⛔")


def _declared(mark: str) -> Any:
    """A declared table's mark as a support cell, for _badge."""
    from ._support import SupportCell

    return SupportCell(mark, mark, "declared, not measured")


def _badge(cell: Any) -> str:
    """One support cell as an HTML badge."""
    kind = {"✅": "b-ok", "⚠️": "b-warn", "⛔": "b-bad"}.get(cell.symbol, "b-none")
    label = cell.short.replace("⚠️", "").replace("⛔", "").strip()
    if cell.symbol == "✅":
        label = "supported"
    title = f" title='{_h(cell.detail[:300])}'" if cell.detail else ""
    return f"<span class='badge {kind}'{title}>{_h(label)}</span>"


def badge_for_text(text: str) -> str | None:
    """A support table cell's text (``✅``, ``⚠️ 9e15 ULP``, ``⛔ unsupported``) as
    the HTML badge the report page draws for it; None where it holds no mark."""
    from ._support import SupportCell

    text = text.strip()
    mark = next((m for m in _MARKS if text.startswith(m)), None)
    if mark is None:
        return None
    return _badge(SupportCell(mark, text, ""))


def _h(v: Any) -> str:
    return html.escape(str(v), quote=True)


class _Markup(str):
    """A table cell that is HTML already (a badge), not text to escape."""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(x: Any) -> str:
        return x if isinstance(x, _Markup) else _h(x)

    head = "".join(f"<th>{_h(x)}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(
    table: Any, supports: dict[str, Any], cases: list[str], srows: list[list[str]],
    plots: dict[str, Path], env: dict[str, Any], run: dict[str, Any], cands: list[str],
    found: list[str], suites: list[list[str]], details: list[str], ex_rows: list[Any],
) -> str:  # fmt: skip
    from ._exhaustive_report import HEADER, INTRO, table_rows

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>log_softmax accuracy report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>log_softmax accuracy report</h1>",
        f"<p>Profile {_h(run.get('profile', '?'))}, {len(table)} cells. "
        f"CPU: {_h(env.get('cpu', '?'))}. Oracle: {_h(_oracle_prose(env.get('oracle', {})))}. "
        f"Devices: {_h(_devices_prose(env.get('devices', {})))}. "
        f"Sandbox: {_h(_sandbox_prose(run))}.</p>",
        "<h2>Findings</h2><ul>",
        *(f"<li>{_h(line)}</li>" for line in found),
        "</ul>",
        "<h2>Summary</h2><p>Cells by status, and the worst ULP error in each format.</p>",
        _html_table(
            SUMMARY_HEADER,
            _summary_rows(table),
        ),
        "<h2 id='support'>Measured support</h2>",
    ]
    for c in cands:
        rows = [
            [
                lib,
                _Markup(_badge(supports[c][(lib, "CPU")])),
                _Markup(_badge(supports[c][(lib, "GPU")])),
            ]
            for lib in ("NumPy", "CuPy", "PyTorch", "JAX", "Dask")
        ]
        parts += [f"<h3>{_h(c)}</h3>", _html_table(["Library", "CPU", "GPU"], rows)]
    if "scipy" in supports:
        parts += [
            "<h3>scipy: declared (its docstring), beside the measured table above</h3>",
            _html_table(
                ["Library", "CPU", "GPU"],
                [
                    [
                        lib,
                        *(
                            _Markup(_badge(_declared(SCIPY_DECLARED[(lib, d)])))
                            for d in ("CPU", "GPU")
                        ),
                    ]
                    for lib in ("NumPy", "CuPy", "PyTorch", "JAX", "Dask")
                ],
            ),
            "<p>The same tables in reST, in SciPy's layout: support.rst.</p>",
        ]
    if ex_rows:
        parts += [
            "<h2 id='exhaustive'>Exhaustive float32</h2>", f"<p>{_h(INTRO)}</p><ul>",
            *(f"<li>{_h(r.sentence())}</li>" for r in ex_rows), "</ul>",
            _html_table(HEADER, table_rows(ex_rows)),
        ]  # fmt: skip
    parts += [
        *_html_suites(suites, details),
        "<h2>Special values</h2>",
        _html_table(["candidate", *cases], srows),
        "<h2>Plots</h2>",
    ]
    for key, title in (("hist", "ULP histograms"), ("gap", "max ULP against the dominant gap"),
                       ("heat", "candidate x family, log10 max ULP")):  # fmt: skip
        data = base64.b64encode(plots[key].read_bytes()).decode("ascii")
        parts.append(
            f"<h3>{_h(title)}</h3><img alt='{_h(title)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("<h2>Per candidate</h2>")
    for c in cands:
        t = table[table["candidate"] == c]
        _, rows = _pivot(t, "backend", "max")
        parts += [f"<h3>{_h(c)}: max ULP by backend</h3>", _html_table(["backend", *DTYPES], rows)]
        _, rows = _pivot(t, "family", "max")
        parts += [f"<h3>{_h(c)}: max ULP by family</h3>", _html_table(["family", *DTYPES], rows)]
    parts.append("</body></html>")
    return "\n".join(parts)
