"""The gate never passes having compared nothing, tells bad input (exit 2) from a
regression (exit 1), never ratchets toward a crash, and knows the platform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance._gate import GateInputError, gate


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gate")
    cfg = RunConfig(
        candidates=[candidate("impl"), candidate("scipy")], backends=[backend("numpy:cpu")],
        dtypes=["float32", "float64"],
        families=[family("dominant"), family("specials"), family("normal")],
        jobs=2, results=tmp / "res", cache=tmp / "cache", progress=False,
    )  # fmt: skip
    run(cfg, log=lambda s: None)
    return Path(tmp / "res")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=300
    )


def _table(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "results.parquet")


def test_comparing_nothing_is_an_error(results, tmp_path):
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    data = json.loads(base.read_text())
    # the same cells under the full profile: nothing in common with these quick results
    data["cells"] = {k.replace("|quick", "|full"): v for k, v in data["cells"].items()}
    full = tmp_path / "full.json"
    full.write_text(json.dumps(data))
    r = cli("gate", "--results", str(results), "--baseline", str(full))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing compared" in r.stderr and "profile full" in r.stderr
    # an empty results directory
    (tmp_path / "empty").mkdir()
    r = cli("gate", "--results", str(tmp_path / "empty"), "--baseline", str(base))
    assert r.returncode == 2 and "no results" in r.stderr
    # results in which nothing ran
    t = _table(results).assign(status="not run", max_ulp=None)
    with pytest.raises(GateInputError, match="none of them ran"):
        gate(t, base)


def test_fewer_cells_than_the_baseline_are_reported(results, tmp_path):
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    t = _table(results)
    part = t[(t.candidate != "scipy") | (t.family != "normal")]
    res = gate(part, base)
    assert res.ok and res.compared == len(part)
    assert res.missing == [f"scipy|numpy:cpu|{d}|normal|quick" for d in ("float32", "float64")]
    # a subset of the families is a choice, not a loss
    assert gate(t[t.family != "normal"], base).missing == []


@pytest.mark.parametrize("text", ["", "garbage", "{}", "[]", '{"cells": []}', "null"])
def test_a_bad_baseline_is_exit_2_naming_the_file(results, tmp_path, text):
    base = tmp_path / "bad.json"
    base.write_text(text)
    r = cli("gate", "--results", str(results), "--baseline", str(base))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "bad.json" in r.stderr and "Traceback" not in r.stderr


def test_results_missing_a_column_are_exit_2(results, tmp_path):
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    broken = tmp_path / "broken"
    broken.mkdir()
    _table(results).drop(columns="max_ulp").to_parquet(broken / "results.parquet")
    r = cli("gate", "--results", str(broken), "--baseline", str(base))
    assert r.returncode == 2 and "lacks the columns max_ulp" in r.stderr, r.stderr
    r = cli("report", "--results", str(broken), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "lacks the columns max_ulp" in r.stderr, r.stderr


def test_a_crash_is_never_better_than_a_measured_failure(results, tmp_path):
    base = tmp_path / "b.json"
    t = _table(results)
    assert gate(t, base, update=True).ok
    key = "scipy|numpy:cpu|float32|dominant|quick"
    before = json.loads(base.read_text())["cells"][key]
    (entry,) = before.values()
    assert entry["status"] == "fail" and entry["max_ulp"] > 1e6
    crashed = t.copy()
    sel = (
        (crashed.candidate == "scipy")
        & (crashed.dtype == "float32")
        & (crashed.family == "dominant")
    )
    crashed.loc[sel, ["status", "reason"]] = ["error", "raised on 45 gaps: RuntimeError"]
    crashed.loc[sel, ["max_ulp", "special_mismatches"]] = [None, 0]
    res = gate(crashed, base, update=True)
    assert not res.ok and any(f"{key}: status fail -> error" in w for w in res.worse)
    assert json.loads(base.read_text())["cells"][key] == before


def test_update_says_how_many_failing_cells_it_records(results, tmp_path):
    base = tmp_path / "new.json"
    r = cli("gate", "--results", str(results), "--baseline", str(base), "--update")
    assert r.returncode == 0, r.stderr
    t = _table(results)
    failing = int((t.status == "fail").sum())
    assert failing > 0
    assert f"12 baseline entries written; {failing} of them are failing cells" in r.stdout


def test_a_worse_cell_on_another_platform_is_reported_not_failed(results, tmp_path):
    base = tmp_path / "b.json"
    t = _table(results)
    assert gate(t, base, update=True).ok
    key = "impl|numpy:cpu|float32|normal|quick"
    sel = (t.candidate == "impl") & (t.dtype == "float32") & (t.family == "normal")
    worse = t.copy()
    worse.loc[sel, "max_ulp"] = 3.0
    res = gate(worse, base)
    assert not res.ok and any(w.startswith(key) for w in res.worse)
    other = worse.copy()
    other.loc[sel, "platform"] = "x86_64 AVX2; numpy X86_V3"
    res = gate(other, base)
    assert res.ok, res.worse
    assert len(res.platform) == 1 and res.platform[0].startswith(key)
    assert "x86_64 AVX2; numpy X86_V3" in res.platform[0]
    # --update records the new platform's entry beside the old one
    assert gate(other, base, update=True).ok
    plats = json.loads(base.read_text())["cells"][key]
    assert len(plats) == 2 and plats["x86_64 AVX2; numpy X86_V3"]["max_ulp"] == 3.0
    assert gate(other, base).platform == []


def test_a_library_that_was_not_swept_is_neither_better_nor_worse(results, tmp_path):
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    data = json.loads(base.read_text())
    data["support"]["quick"]["impl"]["JAX CPU"] = "✅"
    base.write_text(json.dumps(data))
    res = gate(_table(results), base)
    assert res.ok, res.worse
