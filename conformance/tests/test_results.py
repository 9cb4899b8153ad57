"""The results directory: nothing lost, nothing invented, nothing of anyone else's
touched; two runs cannot interleave; damaged files are named or recomputed; a resume
reuses a cell only when everything that judged it is unchanged."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference
from conformance import family
from conformance.scoring._oracle_cache import OracleCache

H = "conformance.tests._helpers"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args], capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip


def _run(
    results: Path, cache: Path, *extra: str, candidates: str = "impl"
) -> subprocess.CompletedProcess[str]:
    return cli(
        "run", "--candidates", candidates, "--functions", "log_softmax", "--backends",
        "numpy:cpu", "--dtypes", "float32,float64", "--families", "normal,specials,dominant",
        "--results",
        str(results), "--cache", str(cache), "--no-progress", *extra,
    )  # fmt: skip


def _table(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "results.parquet").drop(columns="seconds")


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    env = {**os.environ, "CONFORMANCE_TEST_DELAY": "0.5"}
    cmd = [
        sys.executable, "-m", "conformance", "run", "--candidates", f"{H}:slow_impl,impl",
        "--functions", "log_softmax", "--backends", "numpy:cpu", "--dtypes", "float32,float64",
        "--families", "normal,specials,dominant", "--results", str(res), "--cache", str(cache),
        "--no-progress", "--jobs", "1",
    ]  # fmt: skip
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((res / "cells").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    # the second run is refused before it probes its candidates: one of them sleeps
    # 600 s on import (before, the refusal came after the probe, and under load run a
    # had finished by then, so b replaced its results)
    (tmp_path / "sleepy_mod.py").write_text("import time\ntime.sleep(600)\n")
    b_cmd = [*cmd, "--timeout", "600"]
    b_cmd[b_cmd.index("--candidates") + 1] = "sleepy_mod:log_softmax,impl"
    b = subprocess.run(b_cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out, err = a.communicate(timeout=300)
    assert b.returncode == 2, b.stderr
    assert "is in use by another run (pid" in b.stderr
    assert a.returncode == 0, err
    assert "12 cells: 12 pass" in out
    t = _table(res)
    assert len(t) == 12 and set(t.candidate) == {"impl", f"{H}:slow_impl"}


@pytest.mark.extended  # 11 to 13 s: the default tier stays near 10 min
def test_damaged_cells_are_recomputed_on_resume_and_named_by_gate_and_report(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    whole = _table(res)
    files = sorted((res / "cells").glob("*.json"))
    assert len(files) == 6
    files[0].write_text("")  # empty
    files[1].write_text("{not json")  # garbage
    rec = json.loads(files[2].read_text())
    del rec["max_ulp"]  # a key missing: before, a NaN-status row replaced the cell
    files[2].write_text(json.dumps(rec))
    shutil.copy(files[4], files[3])  # another cell's record under this name
    base = tmp_path / "baseline.json"
    for cmd in (
        ["gate", "--results", str(res), "--baseline", str(base), "--update"],
        ["report", "--results", str(res), "--out", str(tmp_path / "rep")],
    ):
        r = cli(*cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "4 damaged cell files" in r.stderr and files[0].name in r.stderr
        assert "is empty" in r.stderr and "is not JSON" in r.stderr
        assert "lacks 1 of the record's keys (max_ulp)" in r.stderr
        assert "not the one its file name is for" in r.stderr
        assert "Traceback" not in r.stderr
    r = _run(res, cache, "--resume")
    assert r.returncode == 0, r.stderr
    assert "4 damaged cell files are recomputed" in r.stderr
    assert "(2 already done)" in r.stderr
    pd.testing.assert_frame_equal(whole, _table(res))


@pytest.mark.extended
def test_a_fresh_run_removes_only_what_the_harness_wrote(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    mine = [res / "cells" / "notes.txt", res / "cells" / "keep.json", res / "mine.txt"]
    for f in mine:
        f.write_text("the user's")
    assert _run(res, cache).returncode == 0
    assert all(f.read_text() == "the user's" for f in mine)
    assert len(list((res / "cells").glob("*-??????????.json"))) == 6
    # a directory the harness did not make is refused, untouched
    other = tmp_path / "other"
    (other / "cells").mkdir(parents=True)
    (other / "cells" / "x.json").write_text("{}")
    (other / "data.csv").write_text("1,2\n")
    r = _run(other, cache)
    assert r.returncode == 2 and "was not written by 'conformance run'" in r.stderr
    assert sorted(p.name for p in other.rglob("*")) == ["cells", "data.csv", "x.json"]
    # a file is not a directory
    r = _run(other / "data.csv", cache)
    assert r.returncode == 2 and "is a file" in r.stderr


def test_a_plan_with_no_cells_is_an_error_before_anything_is_touched(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    before = sorted(p.name for p in (res / "cells").iterdir())
    r = _run(res, cache, candidates="torch.nn.functional")
    assert r.returncode == 2, r.stderr
    assert "no cells" in r.stderr and "runs only on torch backends" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in (res / "cells").iterdir()) == before
    r = cli("run", "--families", "exhaustive", "--dtypes", "float32", "--results", str(res))
    assert r.returncode == 2 and "have no inputs in float32" in r.stderr


@pytest.mark.extended
def test_resume_reruns_cells_judged_under_other_budgets(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    assert (_table(res).status == "pass").all()
    strict = tmp_path / "strict.toml"
    strict.write_text("[default]\nmax_ulp = 0.3\n")
    r = _run(res, cache, "--resume", "--budgets", str(strict))
    assert r.returncode == 0, r.stderr
    assert "6 finished cells were judged under other settings" in r.stderr
    t = _table(res)
    # impl's float32 normal cell is at 0.498 ULP: over the new budget
    assert "0.498 ULP > 0.3" in " ".join(t.reason)
    fp = json.loads((res / "fingerprint.json").read_text())
    assert fp["run"]["budgets"]["default"] == 0.3
    # the same budgets again: everything reused
    r = _run(res, cache, "--resume", "--budgets", str(strict))
    assert "(6 already done)" in r.stderr


@pytest.mark.extended  # 11 to 13 s: the default tier stays near 10 min
def test_an_oracle_cache_entry_under_another_inputs_name_is_not_trusted(tmp_path):
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    clean = _table(res)
    oc = OracleCache(cache)
    (normal,) = family("normal").cases("float32")
    dominant = family("dominant").cases("float32")[0]
    # a valid entry for another input, copied under this input's name
    shutil.copy(oc.path(dominant), oc.path(normal))
    assert not oc.valid(normal)
    np_expected = oc.get(normal).expected
    assert np_expected.shape == normal.x.shape and len(oc.rejected) == 1
    shutil.copy(oc.path(dominant), oc.path(normal))
    r = _run(res, cache)
    assert r.returncode == 0, r.stderr
    assert (_table(res).status == "pass").all(), _table(res).reason.tolist()
    # a damaged entry and an entry of another oracle version are recomputed too
    oc.path(normal).write_bytes(b"PK\x03\x04 truncated")
    assert not oc.valid(normal) and oc.get(normal).shape == normal.x.shape
    # values changed with the entry's key and version intact (a poisoned cache): each
    # cell's worst slice is computed again, and the entry is recomputed and replaced
    for case in [normal, *family("normal").cases("float64")]:
        good, version, tag = reference.OracleResult.load_tagged(oc.path(case))
        assert version == reference.ORACLE_VERSION and tag
        bad = dataclasses.replace(
            good, expected=np.nextafter(good.expected, np.inf).astype(good.expected.dtype)
        )
        bad.save(oc.path(case), tag=tag)
        assert oc.valid(case)
    r = _run(res, cache)
    assert r.returncode == 0, r.stderr
    again = _table(res)
    assert "oracle cache entries failed their check" in r.stderr, r.stderr
    notes = again.set_index(["family", "dtype"]).notes
    assert "differed from the oracle's at its worst slice: recomputed" in notes["normal", "float32"]
    pd.testing.assert_frame_equal(again.drop(columns="notes"), clean.drop(columns="notes"))
    truth = reference.evaluate(normal.x, axis=normal.axis).expected
    assert oc.get(normal).expected.tobytes() == truth.tobytes()  # replaced


@pytest.mark.extended
def test_resume_reruns_cells_judged_under_another_timeout_or_helper_module(tmp_path):
    """A cell finished under another --timeout is not this run's verdict (a timeout
    under a shorter one would be kept forever), nor one whose candidate's package has
    changed anywhere: mypkg.mod:fn with mypkg.helpers edited, nor one whose import
    closure changed: a module of another package that it imports (sharedlib). A
    function its module lacks is a one-line error before anything is touched."""
    pkg = tmp_path / "src" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (tmp_path / "src" / "sharedlib.py").write_text("SCALE = 1.0\n")
    (pkg / "helpers.py").write_text("import impl\nimport sharedlib\nls = impl.log_softmax\n")
    (pkg / "mod.py").write_text(
        "from .helpers import ls\n\ndef fn(x, axis=None):\n    return ls(x, axis=axis)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'src'}{os.pathsep}{os.getcwd()}"}
    res, cache = tmp_path / "res", tmp_path / "cache"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "run", "--candidates", "mypkg.mod:fn", "--backends", "numpy:cpu", "--dtypes",
            "float32", "--families", "normal,specials", "--results", str(res), "--cache",
            str(cache), "--no-progress", *extra, env=env,
        )  # fmt: skip

    assert run("--timeout", "30").returncode == 0
    r = run("--resume", "--timeout", "30")
    assert "(2 already done)" in r.stderr, r.stderr
    r = run("--resume", "--timeout", "45")
    assert "2 finished cells were judged under other settings" in r.stderr, r.stderr
    (pkg / "helpers.py").write_text("import impl\nimport sharedlib\nls = impl.log_softmax  # ed\n")
    r = run("--resume", "--timeout", "45")
    assert "2 finished cells were judged under other settings" in r.stderr, r.stderr
    (tmp_path / "src" / "sharedlib.py").write_text("SCALE = 1.0  # edited\n")
    r = run("--resume", "--timeout", "45")
    assert "2 finished cells were judged under other settings" in r.stderr, r.stderr
    before = (res / "results.parquet").read_bytes()
    r = cli(
        "run", "--candidates", "mypkg.mod:nofn", "--backends", "numpy:cpu", "--results",
        str(res), "--cache", str(cache), "--no-progress", env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "no such function: mypkg.mod:nofn: module 'mypkg.mod' has no attribute 'nofn' "
            "('mypkg.mod:nofn')"
        )
    ), r.stderr
    assert "Traceback" not in r.stderr
    assert (res / "results.parquet").read_bytes() == before  # the last results are kept


@pytest.mark.extended
def test_report_and_gate_create_nothing_in_a_directory_that_is_not_the_harnesss(tmp_path):
    """A directory holding only a results table (copied from a run, say) is read by
    report and gate without a .lock left in it: run refuses such a directory as not the
    harness's, and readers should not write into it either."""
    res, cache = tmp_path / "res", tmp_path / "cache"
    assert _run(res, cache).returncode == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(res / "results.parquet", plain / "results.parquet")
    shutil.copy(res / "fingerprint.json", plain / "fingerprint.json")
    r = cli("report", "--results", str(plain), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    cli("gate", "--results", str(plain), "--baseline", str(tmp_path / "b.json"), "--update")
    assert sorted(p.name for p in plain.iterdir()) == ["fingerprint.json", "results.parquet"]


def test_a_full_disk_stops_the_run_with_a_message_that_says_so(tmp_path, monkeypatch):
    """A cell file that cannot be written (ENOSPC here; EACCES alike) stops the sweep
    with one line naming the disk's problem and what to do, not 'N cells have no
    result' or a traceback; the cells written before it stay for --resume."""
    import errno as errno_

    from conformance import RunConfig, backend, candidate, run
    from conformance.scoring import _results
    from conformance.scoring._results import ResultsError

    written: list[Path] = []
    real = _results._write_atomic

    def full_after_two(path: Path, data: bytes) -> None:
        if path.parent.name == "cells":
            if len(written) >= 2:
                raise OSError(errno_.ENOSPC, "No space left on device")
            written.append(path)
        real(path, data)

    monkeypatch.setattr(_results, "_write_atomic", full_after_two)
    cfg = RunConfig(
        candidates=[candidate("impl")], backends=[backend("numpy:cpu")],
        dtypes=["float32", "float64"], families=[family("normal"), family("specials")],
        jobs=1, results=tmp_path / "res", cache=tmp_path / "cache", progress=False,
        isolation="none",
    )  # fmt: skip
    try:
        run(cfg, log=lambda s: None)
    except ResultsError as exc:
        message = str(exc)
    else:
        raise AssertionError("the run went on")
    assert "No space left on device (ENOSPC)" in message and "--resume" in message
    assert len(list((tmp_path / "res" / "cells").glob("*.json"))) == 2


def test_a_fresh_run_says_what_it_replaces_and_removes_that_runs_report(tmp_path):
    """Running into an existing results directory replaced it without a word, and left
    the old report beside the new results."""
    from conformance.reporting._report import write_report
    from conformance.scoring._results import ResultsDir

    res, cache = tmp_path / "res", tmp_path / "cache"
    r = cli(
        "run", "--candidates", "impl", "--functions", "log_softmax", "--backends", "numpy:cpu",
        "--dtypes", "float32", "--families", "normal", "--results", str(res), "--cache",
        str(cache), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "replacing" not in r.stderr
    written = write_report(res, res / "report")
    mine = res / "report" / "my-notes.md"
    mine.write_text("kept")
    finished = json.loads((res / "fingerprint.json").read_text())["run"]["finished"]
    notes = ResultsDir(res).prepare(fresh=True)
    assert f"replacing the results of {finished}: 1 cell" in notes, notes
    assert f"removed the {len(written)} files of the report of those results" in notes, notes
    assert not any(p.exists() for p in written) and mine.read_text() == "kept"
    assert not (res / "report" / "img").exists()


def test_the_runs_header_counts_in_words():
    from conformance._runner import not_run_here, plural

    assert [plural(n, "worker") for n in (0, 1, 2)] == ["0 workers", "1 worker", "2 workers"]
    # cells this machine cannot run are counted apart, not into the progress
    said = not_run_here({"torch:cuda: no CUDA device": 1240, "cupy is not installed": 54})
    assert said == (
        "1,294 not run here: 1,240 (torch:cuda: no CUDA device), 54 (cupy is not installed)"
    )


def test_a_candidates_closure_does_not_depend_on_what_the_server_preloaded(tmp_path):
    """The candidates' probe is a new interpreter: forked from the fork server, it
    listed torch (and what torch imports) after a sweep that preloaded torch, and not
    otherwise, and a resume reran every cell for nothing."""
    from conformance import candidate
    from conformance.execution._isolation import probe_candidates, start_server
    from conformance.scoring._judge import closure_digest

    digests = []
    for libs in ({"numpy"}, {"numpy", "torch"}):
        start_server(libs)
        ((why, found, files),) = probe_candidates([candidate("impl")], 120, tmp_path).values()
        assert why is None and found and files
        assert not any(f.endswith(os.sep + "torch") for f in files)
        digests.append(closure_digest(files))
    assert digests[0] == digests[1]
