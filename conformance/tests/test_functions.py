"""The function axis: candidates of softmax beside log_softmax's, swept, scored by
softmax's oracle, kept apart in the table, the cache, the report and the gate."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import reference
from conformance import RunConfig, backend, candidate, family, run
from conformance._cli import UsageError, _candidates
from conformance._runner import plan
from conformance.functions._candidates import Candidate
from conformance.functions._families import Case
from conformance.reporting._gate import gate
from conformance.reporting._report import write_report
from conformance.scoring._oracle_cache import OracleCache
from conformance.scoring._results import check_record, load_results, record_key

NAIVE = Candidate("naive", "conformance.functions._candidates:naive_softmax", function="softmax")


def test_candidates_belong_to_a_function():
    s = candidate("scipy", "softmax")
    assert s.function == "softmax" and s.target.endswith(":scipy_softmax")
    assert s.uid == "softmax/scipy" and candidate("scipy").uid == "scipy"
    assert candidate("impl", "softmax").target == "impl:softmax"
    with pytest.raises(KeyError, match=r"unknown softmax candidate 'jax\.scipy'"):
        candidate("jax.scipy", "softmax")
    with pytest.raises(KeyError, match="unknown function"):
        candidate("scipy", "softplus")
    mine = candidate("conformance.functions._candidates:naive_softmax", "softmax")
    assert (
        mine.function == "softmax"
        and mine.uid == "softmax/conformance.functions._candidates:naive_softmax"
    )


def test_the_command_line_picks_each_functions_candidates():
    both = ["log_softmax", "softmax"]
    got = {(c.function, c.name) for c in _candidates(None, both)}
    assert ("log_softmax", "impl") in got and ("softmax", "scipy") in got
    assert ("softmax", "impl") in got
    picked = [(c.function, c.name) for c in _candidates("impl,scipy", both)]
    assert picked == [
        ("log_softmax", "impl"),
        ("softmax", "impl"),
        ("log_softmax", "scipy"),
        ("softmax", "scipy"),
    ]
    with pytest.raises(UsageError, match=r"unknown candidate 'log\(softmax\)' for softmax"):
        _candidates("log(softmax)", ["softmax"])
    target = "conformance.functions._candidates:naive_softmax"
    assert [c.function for c in _candidates(target, ["softmax"])] == ["softmax"]
    assert [c.function for c in _candidates(target, both)] == ["log_softmax"]


def test_a_logsumexp_family_is_not_a_softmax_cell():
    cfg = RunConfig(
        candidates=[candidate("scipy"), candidate("scipy", "softmax")],
        backends=[backend("numpy:cpu")],
        dtypes=["float32", "float64"],
        families=[family("normal"), family("scipy-suite"), family("exhaustive-f32:0"),
                  family("weights")],
    )  # fmt: skip
    cells = {(s.function, s.family.name, s.dtype) for s in plan(cfg)}
    assert ("softmax", "normal", "float32") in cells
    assert ("log_softmax", "scipy-suite", "float64") in cells
    assert ("softmax", "scipy-suite", "float64") in cells  # SciPy's TestSoftmax
    assert ("log_softmax", "exhaustive-f32:000", "float32") in cells
    assert ("softmax", "exhaustive-f32:000", "float32") in cells  # its own pairs' oracle
    assert not any(fam == "weights" for _, fam, _ in cells)  # logsumexp's alone
    assert len({s.key for s in plan(cfg)}) == len(plan(cfg))


def test_the_oracle_cache_keeps_each_functions_answers_apart(tmp_path):
    x = np.array([[0.0, -20.0, 1.5]], np.float32)
    case = Case(x, -1, "row")
    cache = OracleCache(tmp_path)
    lsm, sm = cache.get(case), cache.get(case, "softmax")
    assert np.array_equal(lsm.expected, reference.log_softmax(x, -1))
    assert np.array_equal(sm.expected, reference.softmax(x, -1))
    assert cache.path(case) != cache.path(case, "softmax")
    # log_softmax's keys are those from before there were other functions
    h = hashlib.sha256()
    h.update(f"{x.dtype.name}|{x.shape}|{-1!r}|".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    assert OracleCache.key(case) == h.hexdigest()
    assert cache.valid(case, "softmax") and cache.valid(case)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    tmp = tmp_path_factory.mktemp("functions")
    cfg = RunConfig(
        candidates=[candidate("scipy"), candidate("scipy", "softmax"), NAIVE],
        backends=[backend("numpy:cpu")],
        dtypes=["float32", "float64"],
        families=[family("saturating"), family("specials"), family("dominant")],
        jobs=2,
        results=tmp / "res",
        cache=tmp / "cache",
        progress=False,
    )
    return tmp, run(cfg, log=lambda s: None)


def test_a_sweep_scores_softmax_by_its_own_oracle(swept):
    _, table = swept
    assert set(table["function"]) == {"log_softmax", "softmax"}
    assert len(table) == 3 * 2 * 3
    sm = table[table.function == "softmax"]
    # exp(x) / sum(exp(x)) overflows where SciPy's shifted softmax does not
    naive = sm[(sm.candidate == "naive") & (sm.family == "saturating")]
    scipy = sm[(sm.candidate == "scipy") & (sm.family == "saturating")]
    assert (naive.status == "fail").all() and (naive.max_ulp == np.inf).all()
    assert (scipy.status == "pass").all()
    # each row is scored against softmax's answer: the worst element's expected value
    # is a probability, not a log-probability
    got = sm[sm.worst_expected.notna()].worst_expected
    assert ((got >= 0) & (got <= 1)).all()
    specials = json.loads(
        sm[(sm.candidate == "scipy") & (sm.family == "specials")].iloc[0].semantics
    )
    assert specials["one +inf"] == "nan-propagating"  # SciPy's NaN answer, accepted


def test_the_table_keeps_the_functions_apart_on_disk_and_in_the_report(swept):
    tmp, table = swept
    keys = [record_key(r) for _, r in table.iterrows()]
    assert len(set(keys)) == len(keys)
    assert any(k.startswith("softmax/scipy|") for k in keys) and any(
        k.startswith("scipy|") for k in keys
    )
    again, _ = load_results(tmp / "res")
    pd.testing.assert_frame_equal(again, table)
    out = tmp / "report"
    write_report(tmp / "res", out)
    index = (out / "README.md").read_text()
    assert index.startswith("# Accuracy report: log_softmax and softmax")
    assert "### log_softmax" in index and "### softmax" in index
    page = (out / "candidates" / "softmax-naive.md").read_text()
    assert "candidate('naive', 'softmax')" in page and "evaluate_softmax(x)" in page


def test_the_gate_judges_each_function_on_its_own(swept, tmp_path):
    _, table = swept
    base = tmp_path / "baseline.json"
    assert gate(table, base, update=True).ok
    worse = table.copy()
    i = worse[(worse.function == "softmax") & (worse.candidate == "scipy")].index[0]
    worse.loc[i, "max_ulp"] = 1e6
    worse.loc[i, "status"] = "fail"
    res = gate(worse, base)
    assert not res.ok and len(res.worse) >= 1
    assert all(line.startswith(("softmax/scipy|", "support softmax/scipy")) for line in res.worse)


def test_records_from_before_the_function_axis_are_log_softmax(tmp_path):
    rec: dict[str, Any] = dict.fromkeys(table_columns())
    rec.update(
        candidate="impl", backend="numpy:cpu", library="numpy", device="cpu", mode="eager",
        dtype="float32", out_dtype="float32", family="normal", profile="quick", n_inputs=1,
        n_elements=1, max_ulp=0.5, special_mismatches=0, semantics="{}", status="pass",
        reason="", curve="[]", hist="[]", platform="", notes="", judge="", seconds=0.1,
    )  # fmt: skip
    for k in ("function", "host", "counts", "fpenv"):
        rec.pop(k)
    from conformance.scoring._results import cell_file_name

    name = cell_file_name("impl|numpy:cpu|float32|normal|quick")
    assert check_record(rec, name) is None and rec["function"] == "log_softmax"
    assert rec["fpenv"] == "default"  # recorded before the environment was an axis


def table_columns() -> list[str]:
    from conformance import COLUMNS

    return list(COLUMNS)


def test_the_plugin_tests_a_softmax(tmp_path):
    root = tmp_path / "proj"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "sm.py").write_text(
        textwrap.dedent(
            """
            def naive(x, axis=None):
                import array_api_compat

                xp = array_api_compat.array_namespace(x)
                e = xp.exp(x)
                return e / xp.sum(e, axis=axis, keepdims=True)
            """
        )
    )
    cmd = [
        sys.executable, "-m", "pytest", "--pyargs", "conformance", "--function", "softmax",
        "--candidate", "mypkg.sm:naive", "--backends", "numpy:cpu", "--dtypes", "float64",
        "--families", "saturating,normal", "--oracle-cache", str(tmp_path / "cache"),
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 failed, 1 passed" in out.stdout
    assert "softmax candidate 'mypkg.sm:naive'" in out.stdout
    assert "reference.evaluate_softmax(x).ulp_error(got)" in out.stdout


def test_logsumexp_cells_score_one_answer_per_slice(tmp_path):
    """A reduction: the answer has the input's shape less the reduced axes; an answer
    of another shape is a finding; the worst slice is the reproducer's input."""
    cands = [
        Candidate("oracle", "reference:logsumexp", function="logsumexp"),
        Candidate(
            "naive", "conformance.functions._candidates:naive_logsumexp", function="logsumexp"
        ),
        Candidate(
            "keepdims", "conformance.tests._helpers:logsumexp_keepdims", function="logsumexp"
        ),
    ]
    cfg = RunConfig(
        candidates=cands,
        backends=[backend("numpy:cpu")],
        dtypes=["float32", "float64"],
        families=[family("dominant"), family("saturating"), family("shapes"), family("specials")],
        jobs=2,
        results=tmp_path / "res",
        cache=tmp_path / "cache",
        progress=False,
    )
    table = run(cfg, log=lambda s: None)
    assert set(table.function) == {"logsumexp"}
    by = {(r.candidate, r.family, r.dtype): r for r in table.itertuples()}
    for fam in ("dominant", "saturating", "shapes", "specials"):
        for dt in ("float32", "float64"):
            assert by[("oracle", fam, dt)].status == "pass", by[("oracle", fam, dt)].reason
            r = by[("oracle", fam, dt)]
            assert r.max_ulp <= 0.5 and r.frac_correctly_rounded == 1.0
    sat = by[("naive", "saturating", "float64")]
    assert sat.status == "fail" and sat.max_ulp == np.inf  # exp overflows
    dom = by[("naive", "dominant", "float32")]
    assert dom.status == "fail" and "slice" in dom.worst_where
    assert json.loads(dom.curve)  # max ULP against the gap, one point per row
    kd = by[("keepdims", "dominant", "float64")]
    assert kd.status == "fail" and "expected (" in kd.reason and "returned shape" in kd.reason
    cache = OracleCache(tmp_path / "cache")
    for case in family("shapes").cases("float64"):
        assert cache.valid(case, "logsumexp")
        cache.get(case, "logsumexp")
    assert cache.rejected == []
    write_report(tmp_path / "res", tmp_path / "report")
    page = (tmp_path / "report" / "candidates" / "logsumexp-naive.md").read_text()
    assert "evaluate_logsumexp(x).ulp_error(got)" in page
