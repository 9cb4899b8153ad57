"""What a non-editable install (a wheel, ``pip install git+...``) carries: every file
the packages read at run time. A wheel holds a package's modules and only the data
files that pyproject.toml's package-data names; the conformance data were missing
from it once, and ``python -m conformance run`` failed there with "budgets file ...
does not exist"."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILT = {".py", ".so", ".pyc", ".pyd"}  # modules, and what the build makes


def _owner(path: Path) -> Path:
    """The innermost package holding path (package-data patterns are relative to it)"""
    d = path.parent
    while not (d / "__init__.py").exists():
        d = d.parent
    return d


def test_package_data_covers_every_data_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns: dict[str, list[str]] = config.get("package-data", {})
    missing = []
    for package in ("reference", "impl", "conformance"):
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in BUILT or "__pycache__" in path.parts:
                continue
            owner = _owner(path)
            name = ".".join(owner.relative_to(ROOT).parts)
            rel = str(path.relative_to(owner))
            if not any(fnmatch.fnmatch(rel, pat) for pat in patterns.get(name, [])):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"not in pyproject.toml's package-data, so not in a wheel: {missing}"
