"""The gate never passes having compared nothing, tells bad input (exit 2) from a
regression (exit 1), never ratchets toward a crash, and knows the platform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance.reporting._gate import GateInputError, gate, nearest_platform
from conformance.scoring._budgets import Budgets


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
    assert "within the budget of 4 ULP" in res.platform[0]
    # --update records the new platform's entry beside the old one
    assert gate(other, base, update=True).ok
    plats = json.loads(base.read_text())["cells"][key]
    assert len(plats) == 2 and plats["x86_64 AVX2; numpy X86_V3"]["max_ulp"] == 3.0
    assert gate(other, base).platform == []


def _on_a_new_cpu(t: pd.DataFrame, sel: Any, **changes: Any) -> pd.DataFrame:
    new = t.copy()
    new.loc[sel, "platform"] = "numpy AVX512_SPR"
    for col, v in changes.items():
        new.loc[sel, col] = v
    return new


def test_a_new_platform_never_excuses_a_crash(results, tmp_path):
    """Every impl cell crashes on a CPU the baseline has never seen: the gate fails (it
    passed, as 'platform differs'), names the nearest platform, and --update writes
    nothing, so the crash is not recorded as this platform's expected result."""
    base = tmp_path / "b.json"
    t = _table(results)
    old = t.copy()
    old["platform"] = "numpy AVX512_ICL"
    assert gate(old, base, update=True).ok
    x86 = old.copy()
    x86["platform"] = "numpy X86_V3"
    assert gate(x86, base, update=True).ok  # the baseline holds two platforms
    before = base.read_text()
    sel = t.candidate == "impl"
    crashed = _on_a_new_cpu(
        t, sel, status="error", max_ulp=None, reason="worker died: signal 11 (SIGSEGV)"
    )
    for update in (False, True):
        res = gate(crashed, base, update=update)
        assert not res.ok and res.platform == []
        cells = [w for w in res.worse if not w.startswith("support ")]
        assert len(cells) == int(sel.sum())
        assert all("status pass -> error" in w for w in cells), cells
        assert all("judged against its nearest, 'numpy AVX512_ICL'" in w for w in cells)
        assert "support impl NumPy CPU (quick): ✅ -> ⛔" in res.worse
        assert base.read_text() == before
    # a failure, and more special-value mismatches, are not excused either
    failed = _on_a_new_cpu(t, sel, status="fail", max_ulp=9e15)
    assert any("status pass -> fail" in w for w in gate(failed, base).worse)
    key = "impl|numpy:cpu|float64|specials|quick"
    sm = _on_a_new_cpu(t, (t.candidate == "impl") & (t.family == "specials"),
                       special_mismatches=3)  # fmt: skip
    assert any(w.startswith(key) and "special mismatches 0 -> 3" in w for w in gate(sm, base).worse)


def test_a_new_platform_excuses_ulp_only_within_the_budget(results, tmp_path):
    base = tmp_path / "b.json"
    t = _table(results)
    assert gate(t, base, update=True).ok
    sel = (t.candidate == "scipy") & (t.dtype == "float32") & (t.family == "dominant")
    (was,) = t.loc[sel, "max_ulp"]
    assert was > 4  # a failing cell: its figure is over the budget already
    res = gate(_on_a_new_cpu(t, sel, max_ulp=was * 2), base)
    assert not res.ok and "(budget 4 ULP)" in res.worse[0]
    # a passing cell that rises within the budget is a platform difference; past it, worse
    sel = (t.candidate == "impl") & (t.dtype == "float64") & (t.family == "normal")
    assert gate(_on_a_new_cpu(t, sel, max_ulp=3.5), base).ok
    res = gate(_on_a_new_cpu(t, sel, max_ulp=3.5), base, budgets=Budgets({"float64": 3.0}))
    assert not res.ok and "max ULP" in res.worse[0] and "(budget 3 ULP)" in res.worse[0]


def test_the_gate_reads_the_budgets_the_run_was_judged_by(results, tmp_path):
    """The command line takes the budgets from the results' fingerprint."""
    import shutil

    res_dir = tmp_path / "res"
    shutil.copytree(results, res_dir)
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    data = json.loads(base.read_text())
    key = "impl|numpy:cpu|float64|normal|quick"
    (entry,) = data["cells"][key].values()
    data["cells"][key] = {"numpy SOMEWHERE_ELSE": dict(entry, max_ulp=0.0)}
    base.write_text(json.dumps(data))
    r = cli("gate", "--results", str(res_dir), "--baseline", str(base))
    assert r.returncode == 0 and "platform differs" in r.stdout, r.stdout + r.stderr
    fp_path = res_dir / "fingerprint.json"
    fp = json.loads(fp_path.read_text())
    fp["run"]["budgets"]["max_ulp"]["float64"] = 0.0
    fp_path.write_text(json.dumps(fp))
    r = cli("gate", "--results", str(res_dir), "--baseline", str(base))
    assert r.returncode == 1 and f"WORSE {key}" in r.stdout and "(budget 0 ULP)" in r.stdout


def test_update_creates_the_baselines_folder(results, tmp_path):
    base = tmp_path / "ci" / "nested" / "baseline.json"
    r = cli("gate", "--results", str(results), "--baseline", str(base), "--update")
    assert r.returncode == 0, r.stderr
    assert json.loads(base.read_text())["cells"]


def test_nearest_platform():
    known = ["numpy AVX512_ICL", "numpy X86_V3", "torch AVX2"]
    assert nearest_platform("numpy AVX512_SPR", known) == "numpy AVX512_ICL"
    assert nearest_platform("numpy AVX2", known) == "numpy X86_V3"
    assert nearest_platform("numpy baseline", known) == "numpy X86_V3"
    assert nearest_platform("torch AVX512", known) == "torch AVX2"
    assert nearest_platform("numpy SOMETHING_NEW", known) in ("numpy AVX512_ICL", "numpy X86_V3")
    assert nearest_platform("", ["b", "a"]) == "a"


def test_a_library_that_was_not_swept_is_neither_better_nor_worse(results, tmp_path):
    base = tmp_path / "b.json"
    assert gate(_table(results), base, update=True).ok
    data = json.loads(base.read_text())
    data["support"]["quick"]["impl"]["JAX CPU"] = "✅"
    base.write_text(json.dumps(data))
    res = gate(_table(results), base)
    assert res.ok, res.worse


def test_torch_bits_follow_the_capability_alone():
    """What the 'torch CAPABILITY' platform tag leaves out does not move torch's bits:
    its CPU log_softmax gives the same bytes on 1 and 2 threads and at every alignment
    of the input, over the last axis and another; the capability it runs is recorded."""
    import numpy as np

    torch = pytest.importorskip("torch")
    from conformance.backends._backends import backend as get_backend
    from conformance.execution._worker import library_info

    rng = np.random.default_rng(7)
    threads = torch.get_num_threads()
    try:
        for shape, dim in [((3, 1000), 1), ((1, 4097), 1), ((4097, 3), 0), ((64, 33), 0)]:
            x = rng.normal(size=shape) * 30
            for dt in (torch.float32, torch.float64):
                seen = set()
                for n in (1, 2):
                    torch.set_num_threads(n)
                    for off in (0, 1, 3, 7):
                        buf = torch.empty(x.size + 8, dtype=dt)
                        v = buf[off : off + x.size].view(shape)
                        v.copy_(torch.from_numpy(x))
                        y = torch.nn.functional.log_softmax(v, dim=dim)
                        seen.add(y.numpy().tobytes())
                assert len(seen) == 1, (shape, dim, dt)
    finally:
        torch.set_num_threads(threads)
    info = library_info(get_backend("torch:cpu"))
    assert info["platform"] == f"torch {torch.backends.cpu.get_cpu_capability()}"
    assert info["flags"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["flags"]["libc"]
