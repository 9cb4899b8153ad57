"""Sphinx configuration of the documentation site (``tox -e docs``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

project = "log_softmax conformance"
author = "the log_softmax conformance authors"
copyright = "the log_softmax conformance authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "cli_help",
    "badges",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"

html_theme = "pydata_sphinx_theme"
html_title = "log_softmax conformance"
html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}
html_static_path: list[str] = []


def _copy_reports(app: object) -> None:
    """The committed reports/ (Markdown, reST and plots) as pages of the site: copied
    under report/ before the build reads its sources."""
    dest = HERE / "report"
    if dest.exists():
        shutil.rmtree(dest)
    src = ROOT / "reports"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.html", "*.json"))
    # one document per name: the reST support tables under a name of their own, and
    # the report's links to its HTML page (not part of the site) to the site's pages
    # (and a title of its own: the sidebar listed "Measured support tables" twice)
    rest = dest / "support-rest.rst"
    (dest / "support.rst").rename(rest)
    title = "Measured support tables (reST)"
    lines = rest.read_text(encoding="utf-8").split("\n")
    if lines[0] == "Measured support tables" and set(lines[1]) == {"="}:
        lines[:2] = [title, "=" * len(title)]
    rest.write_text("\n".join(lines), encoding="utf-8")
    readme = dest / "README.md"
    text = readme.read_text(encoding="utf-8")
    text = text.replace("(support.rst)", "(support-rest.rst)")
    text = text.replace("[one page with the plots](index.html)", "the plots, below")
    pages = sorted(
        str(f.relative_to(dest).with_suffix("")).replace("\\", "/")
        for f in dest.rglob("*")
        if f.suffix in (".md", ".rst") and f.name != "README.md"
    )
    text += "\n```{toctree}\n:hidden:\n\n" + "\n".join(pages) + "\n```\n"
    readme.write_text(text, encoding="utf-8")


def setup(app: object) -> None:
    app.connect("builder-inited", _copy_reports)  # type: ignore[attr-defined]


# tox -e docs also runs the linkcheck builder: links inside the site (documents,
# anchors, images); links that leave it are not fetched (the build runs offline)
linkcheck_ignore = [r"https?://"]
linkcheck_anchors = True
