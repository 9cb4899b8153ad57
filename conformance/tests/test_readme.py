"""The README's examples, run as written from a folder outside the repository that
holds a user's package ``mypkg`` (its ``module.log_softmax``: impl's, which passes;
its ``module.softmax``: SciPy's):

- every Python block, each ``expression  # value`` line checked against the value;
- the shell blocks of "A sweep", "As a pytest suite, in any project" and "The
  regression gate, in CI", line by line (continuations joined), with ``python3`` and
  ``pytest`` those of this interpreter; the gate's baseline made once with
  ``--update``, as the README says, before its line runs as written.

The two setup commands, the cluster's and the documentation site's are not run here:
CI runs the test command itself, and the others need a scheduler or Sphinx.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# the README's sections whose shell blocks this test runs, and the exit status each
# line must give
RUN = ("A sweep", "As a pytest suite, in any project", "The regression gate, in CI")
MYPKG = (
    "from impl import log_softmax  # noqa: F401\nfrom scipy.special import softmax  # noqa: F401\n"
)


def _sections() -> dict[str, list[tuple[str, str]]]:
    """{section title: [(language, code)]} for the README's fenced blocks"""
    out: dict[str, list[tuple[str, str]]] = {}
    title = ""
    for part in re.split(r"^(## .*)$", README.read_text(encoding="utf-8"), flags=re.M):
        if part.startswith("## "):
            title = part[3:].strip()
            continue
        for lang, code in re.findall(r"^```(\w*)\n(.*?)^```", part, flags=re.M | re.S):
            out.setdefault(title, []).append((lang, code))
    return out


def _commands(code: str) -> list[str]:
    """Shell lines, continuations joined, comments dropped"""
    joined = code.replace("\\\n", " ")
    lines = [ln.split("  #")[0].strip() for ln in joined.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.extended
def test_the_readme_examples_run_as_written(tmp_path):
    sections = _sections()
    assert set(RUN) <= set(sections), sorted(sections)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "module.py").write_text(MYPKG)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    ran = []
    for title in RUN:
        for lang, code in sections[title]:
            assert lang == "", (title, lang)
            for cmd in _commands(code):
                argv = shlex.split(cmd)
                if argv[:4] == ["python3", "-m", "conformance", "gate"]:
                    base = tmp_path / argv[argv.index("--baseline") + 1]
                    assert not base.parent.exists()  # the gate makes ci/ itself
                    first = subprocess.run([*argv, "--update"], cwd=tmp_path, env=env,
                                           capture_output=True, text=True, timeout=600)  # fmt: skip
                    assert first.returncode == 0, first.stderr[-2000:]
                r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=900)  # fmt: skip
                assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
                ran.append(cmd)
        if title == "A sweep":  # (the gate's run replaces these results and their report)
            assert (tmp_path / "results" / "report" / "README.md").is_file()
    assert any("pytest --pyargs conformance" in c for c in ran)
    assert (tmp_path / "ci" / "log_softmax_baseline.json").is_file()


def _check_python_block(code: str) -> int:
    """Executes a README Python block; each ``expression  # value`` line's value is
    compared with its repr (numbers to 8 significant digits). Returns how many."""
    names: dict[str, Any] = {}
    checked = 0
    for line in code.splitlines():
        expr, sep, want = line.partition("  # ")
        if sep and not expr.lstrip().startswith(("import", "from")) and "=" not in expr:
            got = eval(expr, names)  # the README's own line
            _assert_close_repr(repr(got), want.strip())
            checked += 1
        else:
            exec(line, names)
    return checked


def _assert_close_repr(got: str, want: str) -> None:
    num = r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?"
    g, w = re.findall(num, got), re.findall(num, want)
    assert re.sub(num, "#", got) == re.sub(num, "#", want), (got, want)
    np.testing.assert_allclose([float(v) for v in g], [float(v) for v in w], rtol=1e-8)


def test_the_readme_python_examples_give_their_comments():
    blocks = [code for blocks in _sections().values() for lang, code in blocks if lang == "python"]
    assert len(blocks) >= 2
    assert sum(_check_python_block(code) for code in blocks) >= 3


@pytest.mark.parametrize("cmd", ['python3 -m reference "[0, -40]" --dtype float64'])
def test_the_readme_oracle_command_prints_its_columns(cmd, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert cmd in README.read_text(encoding="utf-8")
    r = subprocess.run(shlex.split(cmd), cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0 and "-4.248354255291589e-18" in r.stdout, r.stdout + r.stderr
