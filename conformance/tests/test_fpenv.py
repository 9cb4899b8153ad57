"""The floating-point environment as a sweep axis (run --fpenv default,ftz): each cell
once per environment, recorded per cell, kept apart in keys, reports and the gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance.backends import _fpenv
from conformance.functions._candidates import Candidate
from conformance.reporting._gate import gate
from conformance.reporting._report import write_report
from conformance.reporting._support import support
from conformance.scoring._results import record_key


@pytest.mark.skipif(_fpenv.unavailable("ftz") is not None, reason="no flush-to-zero here")
def test_ftz_is_on_inside_and_undone_after():
    before = _fpenv.capture()
    with _fpenv.environment("ftz"):
        assert float((np.array([5e-324]) * np.array([1.0]))[0]) == 0.0
        assert _fpenv.capture().control != before.control
    assert float((np.array([5e-324]) * np.array([1.0]))[0]) == 5e-324
    assert not before.differences(_fpenv.capture())
    with pytest.raises(RuntimeError, match="unknown floating-point environment"):
        with _fpenv.environment("bogus"):
            pass


@pytest.mark.skipif(_fpenv.unavailable("ftz") is not None, reason="no flush-to-zero here")
def test_a_cell_right_by_default_and_wrong_under_ftz_is_recorded_as_such(tmp_path):
    flushy = Candidate("flushy", "conformance.tests._helpers:flush_sensitive")
    cfg = RunConfig(
        candidates=[flushy, candidate("impl", "softmax")], backends=[backend("numpy:cpu")],
        dtypes=["float32"], families=[family("dominant")], fpenvs=("default", "ftz"),
        results=tmp_path / "res", cache=tmp_path / "cache", progress=False, jobs=2,
    )  # fmt: skip
    table = run(cfg, log=lambda s: None)
    by = {(r.candidate, r.fpenv): r for r in table.itertuples()}
    assert by["flushy", "default"].status == "pass"
    assert by["flushy", "ftz"].status == "fail"  # the worker's calls ran flushed
    # impl computes its subnormal softmax outputs in the default environment itself
    assert by["impl", "ftz"].status == "pass" and by["impl", "ftz"].frac_correctly_rounded == 1
    keys = {record_key(r) for _, r in table.iterrows()}
    assert "flushy|numpy:cpu|float32|dominant|quick|ftz" in keys and len(keys) == 4
    # the support table is earned in the default environment; the report sets the
    # flush-to-zero cells beside their twins
    assert support(table, "flushy")[("NumPy", "CPU")].supported
    write_report(tmp_path / "res", tmp_path / "report")
    page = (tmp_path / "report" / "fpenv.md").read_text()
    assert "pass by default, fail under ftz" in page and "`flushy`" in page
    assert "1 changed verdict" in (tmp_path / "report" / "README.md").read_text()
    # the gate keeps the two apart: a baseline of both, then the default cell worse
    base = tmp_path / "baseline.json"
    assert gate(table, base, update=True).ok
    cells = json.loads(base.read_text())["cells"]
    assert "flushy|numpy:cpu|float32|dominant|quick|ftz" in cells
    worse = table.copy()
    i = worse[(worse.candidate == "flushy") & (worse.fpenv == "default")].index[0]
    worse.loc[i, "status"], worse.loc[i, "max_ulp"] = "fail", 1e9
    res = gate(worse, base)
    cells_worse = [line.split(": ")[0] for line in res.worse if not line.startswith("support")]
    assert cells_worse == ["flushy|numpy:cpu|float32|dominant|quick"]


def test_an_unknown_environment_is_a_usage_error():
    p = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--fpenv", "default,daz", "--backends",
         "numpy:cpu"], capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 2 and "unknown --fpenv 'daz'; valid: default, ftz" in p.stderr


@pytest.mark.skipif(_fpenv.unavailable("ftz") is not None, reason="no flush-to-zero here")
def test_the_plugin_runs_each_cell_in_each_environment(tmp_path):
    cmd = [
        sys.executable, "-m", "pytest", "--pyargs", "conformance",
        "--candidate", "conformance.tests._helpers:flush_sensitive", "--backends", "numpy:cpu",
        "--dtypes", "float64", "--families", "normal", "--fpenv", "default,ftz",
        "--oracle-cache", str(tmp_path / "cache"), "-p", "no:cacheprovider", "-q", "-rA",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 failed, 1 passed" in out.stdout
    assert "float64-normal-ftz" in out.stdout
