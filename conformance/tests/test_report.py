"""Reports and the regression gate, from a small real sweep."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance.functions._candidates import Candidate
from conformance.reporting._gate import gate
from conformance.reporting._report import write_report
from conformance.reporting._support import SCIPY_DECLARED, markdown_table, rst_table

H = "conformance.tests._helpers"


def _sweep(tmp_path: Path, name: str, cands: list[Candidate]) -> Path:
    cfg = RunConfig(
        candidates=cands,
        backends=[backend("numpy:cpu"), backend("torch:cuda")],
        dtypes=["float32", "float64"],
        families=[family("dominant"), family("specials"), family("normal")],
        jobs=2,
        results=tmp_path / name,
        cache=tmp_path / "cache",
        progress=False,
    )
    run(cfg, log=lambda s: None)
    return tmp_path / name


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    return _sweep(tmp, "res", [candidate("impl"), candidate("scipy")])


def test_the_support_table_has_scipys_layout():
    text = rst_table(SCIPY_DECLARED)
    lines = text.splitlines()
    assert lines[0] == lines[2] == lines[-1] == "  ".join(["=" * 20] * 3)
    assert lines[1] == "Library" + " " * 15 + "CPU" + " " * 19 + "GPU"
    # ✅ takes two columns: padded by display width, not by code points (one column
    # off, as SciPy's own docstring is)
    assert lines[3] == "NumPy" + " " * 17 + "✅" + " " * 20 + "n/a"


def _columns_by_display(line: str) -> list[int]:
    """Display columns where each run of non-spaces starts after two spaces or more."""
    from conformance.reporting._support import display_width

    return [
        display_width(line[:i])  # of the whole prefix: ⚠️ is two code points, 2 columns
        for i, ch in enumerate(line)
        if ch != " " and (i == 0 or line[max(0, i - 2) : i] == "  ")
    ]


def _check_rst(text: str) -> None:
    """docutils parses ``text`` with no message, and every row of each simple table
    starts its cells at the rule's columns, counted in display width."""
    docutils_core = pytest.importorskip("docutils.core")
    import io

    errors = io.StringIO()
    doc = docutils_core.publish_doctree(
        text, settings_overrides={"report_level": 1, "warning_stream": errors}
    )
    assert errors.getvalue() == "", errors.getvalue()
    assert len(list(doc.findall(lambda n: n.tagname == "table"))) >= 1
    rule = "  ".join(["=" * 20] * 3)
    for block in text.split(rule + "\n" + "Library")[1:]:
        for line in block.split(rule)[1].strip("\n").splitlines():
            assert _columns_by_display(line) == [0, 22, 44], line


def test_every_generated_rest_table_parses_and_aligns(results, tmp_path):
    from conformance.reporting._support import support

    out = tmp_path / "reports"
    write_report(results, out)
    _check_rst((out / "support.rst").read_text())
    t = pd.read_parquet(results / "results.parquet")
    for c in sorted(set(t["candidate"])):
        _check_rst(rst_table(support(t, c)))
    _check_rst(rst_table(SCIPY_DECLARED))
    rst = (out / "support.rst").read_text()
    assert "scipy: declared" in rst and "impl: measured" in rst


def test_report_files_tables_and_escaping(results, tmp_path):
    out = tmp_path / "reports"
    files = write_report(results, out)
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"README.md", "support.md", "support.rst", "specials.md", "index.html"} <= names
    assert {"img/ulp_histograms.png", "img/max_ulp_vs_gap.png", "img/heatmap.png"} <= names
    readme = (out / "README.md").read_text()
    assert "| `impl` |" in readme and "| `scipy` |" in readme
    # findings in words at the top, from the data; the fingerprint's records in prose
    top = readme.split("## What ran")[0]
    assert "## Findings" in top
    from conformance.execution import _sandbox

    # the sandbox the workers ran in, as the run recorded it
    assert f"- Workers: isolation worker, sandbox {_sandbox.describe()}" in readme
    assert re.search(r"- impl is within 0\.\d+ ULP on every cell that ran", top), top
    assert re.search(r"- scipy reaches [0-9.e+]+ ULP in float64 \(dominant\)", top), top
    assert "Oracle: the " in readme and "oracle version" in readme and '{"' not in readme
    support = (out / "support.md").read_text()
    # measured, not declared: impl earns its NumPy ✅, scipy does not; no GPU here
    assert "| NumPy | ✅ | n/a |" in support.split("## `scipy`")[0]
    scipy_part = support.split("## `scipy`")[1]
    assert "| NumPy | ⚠️ " in scipy_part and "ULP" in scipy_part
    assert "| PyTorch | not swept | not run |" in scipy_part.split("## SciPy")[0]
    # SciPy's declared table beside its measured one, as tables (a code block's marks
    # are no table cells: the site could not draw them as badges)
    assert "Declared:" in support and markdown_table(SCIPY_DECLARED) in support
    assert "```" not in support
    specials = (out / "specials.md").read_text()
    assert "limit" in specials and "nan-propagating" in specials
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    # every user string is escaped: a candidate named like markup stays text
    t = pd.read_parquet(results / "results.parquet")
    t.loc[t.candidate == "scipy", "candidate"] = "<script>alert(1)</script>"
    # and a reason a candidate controls (its exception's message) is text in Markdown too
    bad = t.index[t.candidate == "<script>alert(1)</script>"][0]
    t.loc[bad, ["status", "reason"]] = "error", "<script>x()</script> [go](javascript:x())"
    evil = tmp_path / "evil"
    evil.mkdir()
    t.to_parquet(evil / "results.parquet")
    write_report(evil, tmp_path / "evil-out")
    html = (tmp_path / "evil-out" / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    for md in (tmp_path / "evil-out").glob("*.md"):
        # outside code spans (`<script>` there is shown, not run)
        text = re.sub(r"(`+).*?\1", "", md.read_text())
        assert "<script>" not in text and "](javascript:" not in text, md.name
    pages = " ".join(md.read_text() for md in (tmp_path / "evil-out").glob("*.md"))
    assert "&lt;script&gt;x\\(\\)" in pages  # the reason is there, as text


def test_the_sites_support_marks_become_badges():
    """docs/_ext/badges.py: every table cell of the site that holds a support mark is
    the report page's badge (an emoji font is not needed to see it); prose keeps its
    marks. Before, the site's tables showed the bare marks: empty boxes without an
    emoji font."""
    import importlib.util

    from docutils import nodes
    from docutils.core import publish_doctree

    path = Path(__file__).resolve().parents[2] / "docs" / "_ext" / "badges.py"
    spec = importlib.util.spec_from_file_location("badges", path)
    assert spec is not None and spec.loader is not None
    badges = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(badges)
    cells = {**SCIPY_DECLARED, ("NumPy", "CPU"): "⚠️ 9e15 ULP", ("Dask", "CPU"): "⛔ unsupported"}
    text = "A cell is ✅ only where it passed.\n\n" + rst_table(cells) + "\n"
    doctree = publish_doctree(text, settings_overrides={"report_level": 5})
    marked = sum(1 for v in cells.values() if v[:1] in "✅⚠⛔")
    assert badges.badge_cells(doctree) == marked
    raw = [r.astext() for r in doctree.findall(nodes.raw)]
    assert len(raw) == marked and all("class='badge " in r for r in raw)
    assert sum("b-ok" in r and ">supported<" in r for r in raw) == marked - 2
    assert any("b-warn" in r and "9e15 ULP" in r for r in raw)
    assert any("b-bad" in r and "unsupported" in r for r in raw)
    cells_text = [e.astext() for e in doctree.findall(nodes.entry)]
    assert not any(m in t for t in cells_text for m in ("✅", "⛔")), cells_text
    assert "✅" in next(iter(doctree.findall(nodes.paragraph))).astext()


def _chromium() -> str:
    """The headless browser, or a skip where there is none."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package: chromium)")
    return chromium


def _browse(chromium: str, page: Path, *what: str) -> str:
    """Chromium on ``page`` at 1280 px, one device pixel per CSS pixel: ``what`` is
    ``--screenshot=FILE`` or ``--dump-dom`` (the DOM is returned)."""
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--window-size=1280,4000", *what, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.extended
def test_the_html_page_renders_in_headless_chromium(results, tmp_path):
    chromium = _chromium()
    out = tmp_path / "reports"
    write_report(results, out)
    shot = tmp_path / "shot.png"
    _browse(chromium, out / "index.html", f"--screenshot={shot}")
    dom = _browse(chromium, out / "index.html", "--dump-dom")
    assert dom.count("<table>") >= 5 and dom.count("<img") == 3
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 3000 and pixels.shape[1] >= 1200
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100, "the page rendered nearly blank: plots missing?"


def _badge_boxes(chromium: str, page: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Each support badge's box on the page as Chromium lays it out at 1280 px: a copy
    of the page with a script that writes the boxes into the DOM, which --dump-dom
    prints (the published page has no script)."""
    probe = tmp_path / "probe.html"
    script = (
        "<script>document.body.insertAdjacentHTML('beforeend', '<pre id=boxes>' + "
        "JSON.stringify([...document.querySelectorAll('.badge')].map(b => {"
        "const r = b.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, "
        "h: r.height, cls: b.className, text: b.textContent};})) + '</pre>');</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = _browse(chromium, probe, "--dump-dom")
    found = re.search(r"<pre id=\"boxes\">(.*?)</pre>", dom, flags=re.S)
    assert found, "no badge on the page"
    return list(json.loads(html.unescape(found.group(1))))


def test_every_support_badge_is_visible_without_an_emoji_font(results, tmp_path):
    """The HTML page's support cells are drawn boxes with text labels: each badge's box
    in the screenshot holds its background colour and the pixels of its label. (The
    emoji marks rendered as empty boxes where no emoji font is installed, and the page
    passed anyway.)"""
    from conformance.reporting._report import BADGE_COLOURS

    chromium = _chromium()
    import matplotlib.image as mpimg
    import numpy as np

    out = tmp_path / "reports"
    write_report(results, out)
    page = out / "index.html"
    assert "✅" not in page.read_text() and "⛔" not in page.read_text()
    boxes = _badge_boxes(chromium, page, tmp_path)
    shot = tmp_path / "shot.png"
    _browse(chromium, page, f"--screenshot={shot}")
    pixels = (mpimg.imread(shot)[..., :3] * 255).astype(np.int32)
    # 2 candidates x 5 libraries x CPU/GPU measured, and SciPy's declared table
    assert len(boxes) == 2 * 10 + 10, len(boxes)
    seen = 0
    for b in boxes:
        x0, y0 = int(b["x"]) + 1, int(b["y"]) + 1
        x1, y1 = int(b["x"] + b["w"]) - 1, int(b["y"] + b["h"]) - 1
        if y1 >= pixels.shape[0]:
            continue  # below the screenshot
        assert b["w"] >= 30 and b["h"] >= 10, b
        kind = next(c for c in b["cls"].split() if c in BADGE_COLOURS)
        rgb = np.array([int(BADGE_COLOURS[kind][i : i + 2], 16) for i in (1, 3, 5)])
        box = pixels[y0:y1, x0:x1].reshape(-1, 3)
        background = (np.abs(box - rgb).max(axis=1) <= 8).mean()
        label = (box.min(axis=1) >= 200).sum()  # the white text
        assert background >= 0.5, (b, background)
        assert label >= 10, f"badge {b['text']!r} shows no label ({label} light pixels)"
        seen += 1
    assert seen >= 20, seen


def test_the_gate_passes_on_its_baseline_and_fails_on_a_degraded_candidate(results, tmp_path):
    base = tmp_path / "baseline.json"
    table = pd.read_parquet(results / "results.parquet")
    with pytest.raises(FileNotFoundError, match="--update"):
        gate(table, base)
    assert gate(table, base, update=True).ok and base.exists()
    assert gate(table, base).ok
    # the same sweep with impl swapped for the naive formula
    naive_as_impl = Candidate("impl", f"{H}:naive_log_softmax")
    degraded = _sweep(tmp_path, "degraded", [naive_as_impl, candidate("scipy")])
    res = gate(pd.read_parquet(degraded / "results.parquet"), base)
    assert not res.ok
    text = "\n".join(res.worse)
    line = next(x for x in res.worse if x.startswith("impl|numpy:cpu|float32|dominant|quick:"))
    assert "status pass -> fail" in line and "max ULP 0.4962 -> " in line
    assert "support impl NumPy CPU (quick): ✅ -> ⚠️" in text
    assert "input:" in text  # a reproducer in the diff
    before = json.loads(base.read_text())
    assert not gate(pd.read_parquet(degraded / "results.parquet"), base, update=True).ok
    assert json.loads(base.read_text()) == before  # the ratchet never moves toward worse


def test_gate_cli_exit_codes(results, tmp_path):
    base = tmp_path / "b.json"

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conformance", *a], capture_output=True, text=True
        )

    r = cli("gate", "--results", str(results), "--baseline", str(base))
    assert r.returncode == 2 and "--update" in r.stderr
    assert (
        cli("gate", "--results", str(results), "--baseline", str(base), "--update").returncode == 0
    )
    r = cli("gate", "--results", str(results), "--baseline", str(base))
    assert r.returncode == 0 and "gate: pass" in r.stdout
    r = cli("report", "--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "run a sweep first" in r.stderr


def test_markdown_tables_hold_names_with_pipes_and_backticks(results, tmp_path):
    t = pd.read_parquet(results / "results.parquet")
    t.loc[t.candidate == "scipy", "candidate"] = "my|odd`name"
    odd = tmp_path / "odd"
    odd.mkdir()
    t.to_parquet(odd / "results.parquet")
    out = tmp_path / "out"
    write_report(odd, out)
    readme = (out / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "odd" in line and "| 0 |" in line)
    # one name cell: the pipe escaped, the backtick inside a longer fence
    assert row.startswith("| `` my\\|odd`name `` |")
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    header = next(line for line in readme.splitlines() if line.startswith("| candidate |"))
    assert len(cells) == len(header.split("|")[1:-1])


def test_a_truncated_table_is_rebuilt_from_the_cell_files(results, tmp_path):
    copy = tmp_path / "res"
    shutil.copytree(results, copy)
    data = (copy / "results.parquet").read_bytes()
    (copy / "results.parquet").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    write_report(copy, out)
    assert "| `impl` |" in (out / "README.md").read_text()


def test_report_out_naming_a_file_is_an_error(results, tmp_path):
    f = tmp_path / "file.md"
    f.write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "report", "--results", str(results), "--out", str(f)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "is a file" in r.stderr and f.read_text() == "mine"


def test_a_library_that_was_not_swept_is_not_called_unsupported(results, tmp_path):
    out = tmp_path / "out"
    write_report(results, out)
    impl_part = (out / "support.md").read_text().split("## `impl`")[1].split("## ")[0]
    assert "| JAX | not swept | not swept |" in impl_part
    assert "| Dask | not swept | n/a |" in impl_part
    assert "unsupported" not in impl_part


def test_the_readmes_support_tables_are_the_published_reports():
    """Each table the README shows under a candidate's name is, cell for cell, that
    candidate's table in reports/support.md (never another candidate's, never stale),
    and the README shows no table without its candidate's name."""
    root = Path(__file__).resolve().parents[2]
    readme, support = root / "README.md", root / "reports" / "support.md"
    if not (readme.exists() and support.exists()):
        pytest.skip("README.md and reports/ are not beside the package")
    published = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^## `([^`]+)`\n\n((?:\|.*\n)+)", support.read_text(), flags=re.M)
    }
    text = readme.read_text()
    shown = re.findall(r"^(`[^`\n]+`)[^\n]*:\n\n((?:\|.*\n)+)", text, flags=re.M)
    assert len(shown) >= 2
    names = {"`impl`": "impl", "`scipy.special.log_softmax`": "scipy"}
    for label, body in shown:
        assert label in names, f"a README table under {label}, which names no candidate"
        assert body.strip() == published[names[label]], label
    # every table in the README is one of those: none left without a heading
    assert text.count("| Library | CPU | GPU |") == len(shown)


def test_a_support_cells_note_is_a_summary_not_every_cells_reason():
    """40 cells raising the same error and 3 over budget: the note counts them, names
    the worst and the error once (it listed every cell's reason: 45 KB of notes)."""
    from conformance.reporting._support import support

    rows = [
        {"candidate": "c", "library": "numpy", "device": "cpu", "backend": "numpy:cpu",
         "dtype": "bfloat16", "family": f"fam{i}", "status": "error", "max_ulp": None,
         "reason": f"raised on OpInfo sample {i}: (5, 0), dim=-1: TypeError: boom"}
        for i in range(40)
    ] + [
        {"candidate": "c", "library": "numpy", "device": "cpu", "backend": "numpy:cpu",
         "dtype": "float32", "family": f"f{u:g}", "status": "fail", "max_ulp": u,
         "reason": f"{u:g} ULP > 4"}
        for u in (5.0, 9e15, 7.0)
    ]  # fmt: skip
    cell = support(pd.DataFrame(rows), "c")[("NumPy", "CPU")]
    assert cell.detail == (
        "3 of 43 cells fail; the worst: numpy:cpu float32 f9e+15: 9e+15 ULP > 4; "
        "40 of 43 cells raise: TypeError: boom (40 cells)"
    )
