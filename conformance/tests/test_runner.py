"""The sweep: table, not-run cells, crash and timeout isolation, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conformance import COLUMNS, RunConfig, backend, candidate, family, run
from conformance.functions._candidates import Candidate

H = "conformance.tests._helpers"


def _config(tmp_path: Path, cands, **kw) -> RunConfig:
    base = dict(
        candidates=cands,
        backends=[backend("numpy:cpu"), backend("cupy:cuda")],
        dtypes=["float32", "bfloat16"],
        families=[family("dominant"), family("specials"), family("normal")],
        jobs=2,
        results=tmp_path / "res",
        cache=tmp_path / "cache",
        progress=False,
    )
    base.update(kw)
    return RunConfig(**base)


def test_a_sweep_writes_one_table_and_records_what_could_not_run(tmp_path):
    naive = Candidate("naive", f"{H}:naive_log_softmax")
    table = run(_config(tmp_path, [candidate("impl"), naive]), log=lambda s: None)
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 2 * 2 * 3  # candidates x backends x dtypes x families
    for name in ("results.parquet", "results.csv", "fingerprint.json"):
        assert (tmp_path / "res" / name).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "res" / "results.parquet"), table)
    cupy = table[table.backend == "cupy:cuda"]
    assert (cupy.status == "not run").all() and cupy.reason.str.len().gt(0).all()
    ran = table[table.backend == "numpy:cpu"]
    assert (ran[ran.candidate == "impl"].status == "pass").all()
    dom = ran[(ran.candidate == "naive") & (ran.family == "dominant")]
    assert (dom.status == "fail").all() and (dom.max_ulp > 100).all()


def test_a_crashing_or_hanging_candidate_is_recorded_and_the_sweep_goes_on(tmp_path):
    cands = [
        Candidate("crash", f"{H}:crashing"),
        Candidate("hang", f"{H}:sleepy"),
        candidate("impl"),
    ]
    cfg = _config(tmp_path, cands, dtypes=["float32"], families=[family("normal")], timeout=5)
    cfg.backends = [backend("numpy:cpu")]
    table = run(cfg, log=lambda s: None).set_index("candidate")
    assert table.loc["crash", "status"] == "error"
    assert "signal 11" in table.loc["crash", "reason"]
    assert table.loc["hang", "status"] == "error" and "timeout" in table.loc["hang", "reason"]
    assert table.loc["impl", "status"] == "pass"


def _sweep_cmd(results: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "conformance", "run", "--candidates",
        f"{H}:slow_impl,impl", "--functions", "log_softmax", "--backends", "numpy:cpu",
        "--dtypes", "float32,float64",
        "--families", "normal,dominant,ties,near-ties,subnormal,saturating,specials",
        "--results", str(results), "--cache", str(cache), "--jobs", "1", "--no-progress",
        *extra,
    ]  # fmt: skip


@pytest.mark.extended
def test_kill_9_then_resume_gives_the_uninterrupted_table(tmp_path):
    env = {**os.environ, "CONFORMANCE_TEST_DELAY": "0.4"}
    cache = tmp_path / "cache"
    whole = tmp_path / "whole"
    subprocess.run(_sweep_cmd(whole, cache), check=True, env=env, capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _sweep_cmd(cut, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    cells = cut / "cells"
    deadline = time.monotonic() + 120
    while len(list(cells.glob("*.json"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
    proc.wait()
    done_before = len(list(cells.glob("*.json")))
    assert 0 < done_before < 28, done_before
    assert not (cut / "results.parquet").exists()
    out = subprocess.run(
        _sweep_cmd(cut, cache, "--resume"), check=True, env=env, capture_output=True, text=True
    )
    assert f"({done_before} already done)" in out.stderr
    a = pd.read_parquet(whole / "results.parquet").drop(columns="seconds")
    b = pd.read_parquet(cut / "results.parquet").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.extended
def test_cli_errors_name_the_problem_and_the_valid_choices(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conformance", *args], capture_output=True, text=True
        )

    r = cli("run", "--backends", "numpy:cpu,tpu:0", "--results", str(tmp_path))
    assert r.returncode == 2 and "unknown backend 'tpu:0'" in r.stderr and "numpy:cpu" in r.stderr
    r = cli("run", "--candidates", "nope", "--results", str(tmp_path))
    assert r.returncode == 2 and "unknown candidate 'nope'" in r.stderr and "impl" in r.stderr
    r = cli("run", "--candidates", "no_such_module_xyz:f", "--results", str(tmp_path))
    assert r.returncode == 2 and "cannot import module 'no_such_module_xyz'" in r.stderr
    r = cli("run", "--families", "normal,bogus", "--results", str(tmp_path))
    assert r.returncode == 2 and "unknown family 'bogus'" in r.stderr and "ties" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("run", "--backends", "numpy:cpu", "--results", str(blocker / "sub"))
    assert r.returncode == 2 and "not writable" in r.stderr
    r = cli("list")
    assert r.returncode == 0 and "numpy:cpu" in r.stdout and "dominant" in r.stdout


@pytest.mark.extended  # 11 to 13 s: the default tier stays near 10 min
def test_two_sweeps_in_other_orders_and_job_counts_give_identical_tables(tmp_path):
    """A cell's measurement is a function of its inputs, versions and recorded settings
    alone: not of the cells that ran before it, nor of how many ran at once."""
    fams = [family("dominant"), family("specials"), family("normal"), family("shapes")]
    bks = [backend("numpy:cpu"), backend("torch:cpu"), backend("dask:cpu")]
    cands = [candidate("impl"), candidate("scipy"), candidate("log(softmax)")]
    a = run(
        _config(tmp_path, cands, backends=bks, families=fams, jobs=1, results=tmp_path / "a"),
        log=lambda s: None,
    )
    b = run(
        _config(
            tmp_path, cands[::-1], backends=bks[::-1], families=fams[::-1], jobs=2,
            dtypes=["bfloat16", "float32"], results=tmp_path / "b",
        ),
        log=lambda s: None,
    )  # fmt: skip
    assert (a.status != "not run").sum() > 50
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


# conformance's rooms, lowest first: a module may import from its own room or a lower
# one. The top-level modules ("": the pipeline's drivers, _runner, _search, _cli, the
# pytest plugin and the package's own __init__) are above every room.
LAYERS = ("backends", "functions", "execution", "scoring", "reporting", "")
_NOT_HARNESS = ("tests", "suite")


def _import_graph(root: Path, package: str = "conformance") -> dict[str, set[str]]:
    """The package's modules (its top level and its rooms, tests left out), each with the
    package's modules it imports: relative imports at any level and absolute ones, at
    module level and inside functions alike. ``from .room import _mod`` counts the
    module ``room._mod``; ``from . import name`` a name of the package's __init__ counts
    the package."""
    import ast

    files: dict[str, Path] = {}
    for f in [*root.glob("*.py"), *root.glob("*/*.py")]:
        parts = f.relative_to(root).with_suffix("").parts
        if parts[0] in _NOT_HARNESS:
            continue
        files[".".join((package, *parts)).removesuffix(".__init__")] = f
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        here = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] != package:
                    continue
                for a in node.names:
                    deps.add(f"{target}.{a.name}" if f"{target}.{a.name}" in files else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == package}
        unknown = deps - files.keys()
        assert not unknown, f"{mod} imports what the package does not have: {sorted(unknown)}"
        graph[mod] = deps - {mod}
    return graph


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def _upward(graph: dict[str, set[str]]) -> list[str]:
    rank = {room: i for i, room in enumerate(LAYERS)}
    return [
        f"{m} ({_room(m) or 'top level'}) imports {d} ({_room(d) or 'top level'})"
        for m in sorted(graph) for d in sorted(graph[m]) if rank[_room(d)] > rank[_room(m)]
    ]  # fmt: skip


def test_the_modules_of_the_package_depend_one_way():
    """No import cycles among conformance's modules, in its rooms and at its top level
    (module-level imports and the ones inside functions alike)."""
    graph = _import_graph(Path(__file__).resolve().parents[1])
    # the walk sees imports at every level: `..`, `.`, absolute, and inside functions
    assert "conformance.execution._cell" in graph["conformance.scoring._score"]
    assert "conformance.execution._cell" in graph["conformance.execution._worker"]
    assert "conformance.execution._sandbox" in graph["conformance.execution._preload"]
    assert "conformance.reporting._report" in graph["conformance._cli"]
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        if seen.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*path, m]))
        if seen.get(m) == 2 or m not in graph:
            return
        seen[m] = 1
        for d in sorted(graph[m]):
            visit(d, [*path, m])
        seen[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_the_rooms_of_the_package_are_layered(tmp_path):
    """Every room is declared in LAYERS, and each module imports only from its own room
    or lower ones (backends < functions < execution < scoring < reporting < the top
    level). An upward import, one level or several up, fails here."""
    root = Path(__file__).resolve().parents[1]
    rooms = {d.name for d in root.iterdir() if (d / "__init__.py").exists()} - set(_NOT_HARNESS)
    assert rooms == set(LAYERS) - {""}
    assert not _upward(_import_graph(root))
    # the check itself: a package whose lower rooms reach up is caught
    pkg = tmp_path / "conformance"
    for room in ("functions", "execution", "scoring"):
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .scoring._b import b\n")
    (pkg / "_runner.py").write_text("from .scoring._b import b\n")
    (pkg / "scoring" / "_b.py").write_text("from ..execution._a import a\nb = a\n")
    (pkg / "execution" / "_a.py").write_text("def a():\n    from ..scoring import _b\n")
    (pkg / "functions" / "_f.py").write_text("import conformance._runner\n")
    assert _upward(_import_graph(pkg)) == [
        "conformance.execution._a (execution) imports conformance.scoring._b (scoring)",
        "conformance.functions._f (functions) imports conformance._runner (top level)",
    ]


@pytest.mark.parametrize("module", ["conformance._cli", "reference._cli"])
def test_every_option_with_a_default_says_it_in_its_help(module: str):
    """--help states each default (--profile, --jobs, --timeout, gate --baseline had
    none): an option with a default and no "default" in its help text fails."""
    import argparse
    import importlib

    parser = importlib.import_module(module).build_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    missing = [
        f"{p.prog} {'/'.join(a.option_strings)}"
        for p in parsers
        for a in p._actions
        if a.option_strings
        and a.default not in (None, False, argparse.SUPPRESS)
        and "default" not in (a.help or "")
    ]
    assert not missing, missing


def test_the_eta_weighs_the_cells_left_by_their_familys_cost(capsys):
    """A sweep whose cheap family ran first: the ETA counts the expensive cells left at
    their own family's cost (it assumed the mean of the finished ones: 426 s shown
    where 143 s were left)."""
    from conformance._runner import _Progress

    p = _Progress(total=20, already=0, enabled=False, pending=["shapes"] * 10 + ["corpus"] * 10)

    def finish(family: str, seconds: float) -> None:
        p.update(
            {"candidate": "c", "backend": "numpy:cpu", "dtype": "float32", "family": family,
             "status": "pass", "max_ulp": 0.5, "seconds": seconds}
        )  # fmt: skip

    for _ in range(10):
        finish("shapes", 0.1)
    finish("corpus", 10.0)
    assert capsys.readouterr().out.count("\n") == 11
    # 11 cells done, 11 s of work in 5.5 s of wall time (two workers); 9 corpus cells
    # left at 10 s each: 90 s of work, 45 s of wall time. By the count alone: 4.5 s
    assert p.eta(5.5) == pytest.approx(45.0)
    finish("corpus", 10.0)
    assert p.eta(10.5) == pytest.approx(10.5 * 80 / 21)


def test_list_aligns_its_columns(capsys):
    from conformance._cli import main

    assert main(["list"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")]
    assert any(r.lstrip().startswith("module:function") for r in rows)
    # every row's second column starts at the same place (module:function was one off)
    starts = {len(r) - len(r[32:].lstrip()) for r in rows if not r.startswith("  " + " " * 30)}
    assert starts == {33}, {r for r in rows if len(r) - len(r[32:].lstrip()) != 33}
