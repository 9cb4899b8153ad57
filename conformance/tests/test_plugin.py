"""The pytest plugin from another project's point of view, and the worst-case search
with its corpus."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import backend, candidate, family
from conformance._search import load_corpus, search
from conformance.functions._candidates import Candidate

PKG = """
import impl


def naive(x, axis=None):
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    return x - xp.log(xp.sum(xp.exp(x), axis=axis, keepdims=True))


def good(x, axis=None):
    return impl.log_softmax(x, axis=axis)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway package outside this repository."""
    root: Path = tmp_path_factory.mktemp("otherproject")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "lsm.py").write_text(textwrap.dedent(PKG))
    return root


def _pytest(project: Path, cand: str, cache: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "pytest", "--pyargs", "conformance", "--candidate", cand,
        "--backends", "numpy:cpu", "--dtypes", "float32,float64",
        "--families", "dominant,normal,specials", "--oracle-cache", str(cache),
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env)


def test_the_readme_line_runs_from_the_projects_folder(project, tmp_path):
    """`pytest --pyargs conformance --candidate mypkg.module:fn`, run from the folder
    that holds mypkg/ with the plain `pytest` command (which, unlike `python -m
    pytest`, does not put that folder on sys.path): the candidate is found there. A
    wrong one is a one-line usage error."""
    exe = Path(sys.executable).with_name("pytest")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    base = [str(exe), "--pyargs", "conformance", "--backends", "numpy:cpu", "--dtypes",
            "float32", "--families", "normal", "--oracle-cache", str(tmp_path / "cache"),
            "-p", "no:cacheprovider", "-q"]  # fmt: skip
    ok = subprocess.run([*base, "--candidate", "mypkg.lsm:good"], cwd=project,
                        capture_output=True, text=True, env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    bad = subprocess.run([*base, "--candidate", "mypkg.nomodule:good"], cwd=project,
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 4, bad.stdout[-2000:] + bad.stderr[-2000:]
    said = [s for s in bad.stderr.splitlines() if s.strip()]
    assert len(said) == 1 and said[0].startswith("ERROR: --candidate mypkg.nomodule:good: "), said
    assert "no module named 'mypkg.nomodule'" in said[0]


def test_another_project_runs_the_suite_on_its_own_function(project, tmp_path):
    bad = _pytest(project, "mypkg.lsm:naive", tmp_path)
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-2000:]
    out = bad.stdout
    assert "test_accuracy[mypkg.lsm:naive-numpy:cpu-float32-dominant] FAILED" in out or (
        "FAILED" in out and "float32-dominant" in out
    )
    # the failure is a reproducer: the slice in hex, expected, got, and code to run
    assert "input slice (float32, hex)" in out and "reproduce:" in out
    assert "expected (correctly rounded)" in out and "float.fromhex" in out
    # only the suite ran: the package's own unit tests were left out
    assert "test_runner" not in out and "conformance/tests" not in out
    good = _pytest(project, "mypkg.lsm:good", tmp_path)
    assert good.returncode == 0, good.stdout[-3000:]
    assert "passed" in good.stdout and "failed" not in good.stdout


def test_search_finds_and_keeps_a_saturating_input(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    res = search(
        candidate("scipy"), backend("numpy:cpu"), "float32", seconds=60, examples=600,
        strategy="dominant", corpus=corpus,
    )  # fmt: skip
    assert res.ulp >= 1e6 and res.saved == 1
    (entry,) = load_corpus(corpus)
    assert entry["candidate"] == "scipy" and float(entry["ulp"]) == res.ulp
    row = np.array([float.fromhex(h) for h in entry["input"]], dtype=np.float32)
    np.testing.assert_array_equal(row, res.row)
    # a second search that does not beat the known worst adds nothing
    again = search(
        candidate("scipy"), backend("numpy:cpu"), "float32", examples=20, strategy="ties",
        corpus=corpus,
    )  # fmt: skip
    assert again.known == res.ulp and again.saved == 0
    assert len(load_corpus(corpus)) == 1


def test_search_calls_the_candidate_in_a_worker(tmp_path, monkeypatch):
    """A candidate that segfaults or hangs ends its calls, not the search (before: the
    search ran it in-process, exit 139 with no message, and a hang ignored --budget)."""
    (tmp_path / "searched.py").write_text(
        "import os, signal, time\n"
        "def segv(x, axis=None):\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
        "def hang(x, axis=None):\n    time.sleep(600)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    corpus = tmp_path / "corpus.jsonl"
    segv = Candidate("searched:segv", "searched:segv")
    res = search(segv, backend("numpy:cpu"), "float32", examples=4, corpus=corpus)
    assert res.examples == 4 and res.ulp == float("inf")
    t0 = time.monotonic()
    hang = Candidate("searched:hang", "searched:hang")
    res = search(hang, backend("numpy:cpu"), "float32", seconds=1, timeout=3, corpus=corpus)
    assert time.monotonic() - t0 < 30 and res.ulp == float("inf")
    assert res.examples >= 1


def test_the_committed_corpus_is_replayed_as_a_family():
    entries = load_corpus()
    assert entries, "the corpus holds the worst inputs found so far"
    for dtype in {e["dtype"] for e in entries}:
        cases = family("corpus").cases(dtype)
        assert len(cases) == sum(e["dtype"] == dtype for e in entries)
    assert all(json.dumps(e) for e in entries)


def test_the_header_states_one_hypothesis_mode():
    """The header said "derandomized/default" under a profile that was not
    derandomized: it now says what the settings in force do."""
    import hypothesis

    from conformance._pytest_plugin import _hypothesis_seed

    assert _hypothesis_seed(7) == "seed=7 (--hypothesis-seed)"
    current = hypothesis.settings.get_current_profile_name()
    hypothesis.settings.register_profile("_random", derandomize=False)
    hypothesis.settings.register_profile("_fixed", derandomize=True)
    try:
        hypothesis.settings.load_profile("_random")
        assert _hypothesis_seed(None).startswith("a random seed each run (profile _random")
        hypothesis.settings.load_profile("_fixed")
        assert _hypothesis_seed(None) == "derandomized (profile _fixed)"
    finally:
        hypothesis.settings.load_profile(current)


def test_the_plugin_takes_a_selection_of_a_familys_parts(project, tmp_path):
    """--families exhaustive-f32:3-4+9 is three tests (chunk cells), as for run."""
    cmd = [
        sys.executable, "-m", "pytest", "--pyargs", "conformance", "--candidate", "impl",
        "--backends", "numpy:cpu", "--dtypes", "float32", "--families",
        "exhaustive-f32:3-4+9", "--collect-only", "-q", "-p", "no:cacheprovider",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = [line for line in out.stdout.splitlines() if "test_accuracy[" in line]
    assert [i.split("-")[-1].rstrip("]") for i in ids] == ["f32:003", "f32:004", "f32:009"]
