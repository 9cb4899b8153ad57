"""The support tables' marks (✅, ⚠️, ⛔) drawn as the HTML report's badges on the
site's pages: a coloured box with a text label, so that a machine without an emoji
font shows them. Each table cell whose text starts with a mark becomes the badge
``conformance.reporting._report.badge_for_text`` makes of it, and the badges' CSS (the report
page's own) goes into the site's ``_static/badges.css``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes

from conformance.reporting._report import BADGE_CSS, badge_for_text

# The site's content column is narrower than the report page: its tables' text a
# little smaller, and a table no wider than the column where its cells can wrap
SITE_CSS = BADGE_CSS + (
    ".bd-article table.table{font-size:.8em;width:auto;max-width:100%}\n"
    ".bd-article table.table td,.bd-article table.table th{padding:.2rem .4rem;"
    "white-space:normal;overflow-wrap:anywhere}\n"
)


def badge_cells(doctree: nodes.Node) -> int:
    """Replace every table cell of ``doctree`` that holds a support mark by its badge
    (raw HTML; other builders leave it out). Returns how many were replaced."""
    done = 0
    for entry in list(doctree.findall(nodes.entry)):
        badge = badge_for_text(entry.astext())
        if badge is None:
            continue
        entry.children = []
        entry += nodes.raw("", badge, format="html")
        done += 1
    return done


def _resolved(app: Any, doctree: nodes.document, docname: str) -> None:
    badge_cells(doctree)


def _write_css(app: Any, exc: Exception | None) -> None:
    if exc is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        (static / "badges.css").write_text(SITE_CSS, encoding="utf-8")


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-resolved", _resolved)
    app.connect("build-finished", _write_css)
    app.add_css_file("badges.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
