"""Checks of the built documentation site (``tox -e docs`` runs it after the build):

    python docs/_ext/check_site.py docs/_build/html

- no support mark (✅, ⚠️, ⛔) is left as text in a table cell of the report's pages:
  each is a badge (docs/_ext/badges.py), which needs no emoji font;
- the sidebar lists each page once;
- where Chromium is installed: at 1280 px every table of the report's pages fits its
  content column (no column behind a scrollbar), and every badge is a box wide and
  tall enough to hold its label.

Exits 1 naming each problem.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MARKS = ("✅", "⚠️", "⛔")

_PROBE = """<script>window.addEventListener('load', () => {
const col = document.querySelector('.bd-article') || document.body;
const tables = [...col.querySelectorAll('table')].map(t => ({
  width: t.getBoundingClientRect().width, column: col.getBoundingClientRect().width,
  scroll: t.parentElement.scrollWidth - t.parentElement.clientWidth,
  head: t.querySelector('tr') ? t.querySelector('tr').textContent.trim().slice(0, 60) : ''}));
const badges = [...col.querySelectorAll('.badge')].map(b => {
  const r = b.getBoundingClientRect(); return {w: r.width, h: r.height, text: b.textContent};});
document.body.insertAdjacentHTML('beforeend', '<pre id=probe>' +
  JSON.stringify({tables, badges}) + '</pre>');});</script>"""


def _cells_with_marks(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", text, flags=re.S)
    return [c for c in cells if any(m in c for m in MARKS)]


def _sidebar_repeats(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    nav = re.search(r'<nav class="bd-docs-nav.*?</nav>', text, flags=re.S)
    if nav is None:
        return []
    links = re.findall(r'<a class="reference internal" href="([^"]*)">(.*?)</a>', nav.group(0))
    names = [re.sub(r"<[^>]+>", "", t).strip() for _, t in links]
    return sorted({n for n in names if names.count(n) > 1})


def _layout(chromium: str, page: Path) -> dict[str, list[dict[str, object]]]:
    with tempfile.TemporaryDirectory() as tmp:
        page = page.resolve()
        probe = page.with_name(f".probe-{page.name}")
        probe.write_text(
            page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
            encoding="utf-8",
        )
        try:
            cmd = [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={tmp}", "--force-device-scale-factor=1",
                "--window-size=1280,3000", "--virtual-time-budget=3000", "--dump-dom",
                probe.as_uri(),
            ]  # fmt: skip
            dom = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        finally:
            probe.unlink()
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom.stdout, flags=re.S)
    if found is None:
        raise RuntimeError(f"{page}: the layout probe did not run")
    result: dict[str, list[dict[str, object]]] = json.loads(html.unescape(found.group(1)))
    return result


def main(site: Path) -> int:
    problems: list[str] = []
    pages = sorted((site / "report").rglob("*.html"))
    if not pages:
        problems.append(f"{site / 'report'}: no report pages")
    for page in pages:
        name = page.relative_to(site)
        for cell in _cells_with_marks(page):
            problems.append(f"{name}: a support mark left as text in a table cell: {cell[:80]}")
    for name in _sidebar_repeats(site / "index.html"):
        problems.append(f"index.html: the sidebar lists {name!r} more than once")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed: the layout checks were skipped")
    else:
        for page in pages:
            name = page.relative_to(site)
            got = _layout(chromium, page)
            for t in got["tables"]:
                if float(str(t["scroll"])) > 1:
                    problems.append(f"{name}: table {t['head']!r} is wider than its column "
                                    f"({t['width']} px in {t['column']} px)")  # fmt: skip
            for b in got["badges"]:
                if float(str(b["w"])) < 30 or float(str(b["h"])) < 10:
                    problems.append(f"{name}: badge {b['text']!r} is {b['w']} x {b['h']} px")
    for p in problems:
        print(p)
    print(f"{len(pages)} report pages checked: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")))
