"""The sweep on a Dask distributed cluster: a real scheduler and two workers on
127.0.0.1, started here as ``dask scheduler`` and ``dask worker`` processes and torn
down after. A distributed sweep's table is the local sweep's, cell for cell; a
resume crosses between them; a worker killed with SIGKILL mid-sweep loses nothing;
cells go only to workers with the resource they need."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance._runner import PlanError

distributed = pytest.importorskip("distributed")

H = "conformance.tests._helpers"


@dataclass
class _Cluster:
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    where: Path = Path()

    def stop(self) -> None:
        for p in [*self.workers.values(), self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers.values(), self.scheduler]:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:  # a worker that lost its scheduler lingers
                p.kill()
                p.wait(5)


def _start_cluster(root: Path, resources: dict[str, str]) -> _Cluster:
    """A scheduler and one worker per name (``--resources`` as given, one thread, no
    nanny: SIGKILL of its process kills the worker); each worker's processes see
    CONFORMANCE_TEST_WORKER=name, and the helper candidate ``where_am_i`` appends it
    to the file ``where``."""
    root.mkdir(parents=True, exist_ok=True)
    sched_file = root / "scheduler.json"
    where = root / "where.txt"
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    # where_am_i writes ``where``: the workers' sandbox lets them (the variable is
    # part of the sandbox's description, so the local sweeps compared set it too)
    env = {**os.environ, "CONFORMANCE_TEST_WHERE": str(where),
           "CONFORMANCE_SANDBOX_WRITABLE": str(root)}  # fmt: skip
    with open(logs / "scheduler.log", "wb") as log:
        sched = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
            stdout=subprocess.DEVNULL, stderr=log, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    c = _Cluster(address, sched, where=where)
    for name, res in resources.items():
        cmd = [
            sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
            "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name,
        ]  # fmt: skip
        if res:
            cmd += ["--resources", res]
        with open(logs / f"worker-{name}.log", "wb") as log:
            c.workers[name] = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=log,
                env={**env, "CONFORMANCE_TEST_WORKER": name},
            )  # fmt: skip
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(len(resources), timeout=60)
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONFORMANCE_SANDBOX_WRITABLE", str(root))  # as the cluster's (above)
        c = _start_cluster(root, {"A": "fake=1", "B": ""})
        try:
            yield c
        finally:
            c.stop()


def _config(tmp_path: Path, name: str, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        candidates=[candidate("impl"), candidate("scipy"), candidate(f"{H}:crashing")],
        backends=[backend("numpy:cpu"), backend("array_api_strict:cpu")],
        dtypes=["float32"],
        families=[family("dominant"), family("specials"), family("shapes")],
        jobs=2, results=tmp_path / name, cache=tmp_path / "cache", progress=False,
    )  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


def _live_workers(address: str) -> int:
    with distributed.Client(address, timeout=30) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


@pytest.mark.extended
def test_a_distributed_sweep_is_the_local_sweep_cell_for_cell(cluster, tmp_path):
    """Same plan, local pool and cluster: every column but the time equal; a crashing
    candidate costs its cells on the cluster as locally (and no worker); the local
    sweep resumes the distributed one with nothing left to run."""
    local = run(_config(tmp_path, "local"), log=lambda s: None)
    said: list[str] = []
    dist = run(_config(tmp_path, "dist", scheduler=cluster.address), log=said.append)
    assert (local.status == "pass").sum() >= 6
    assert (local.status == "error").sum() >= 6  # the crashing candidate's cells
    assert any("2 workers of tcp://127.0.0.1" in s for s in said), said
    pd.testing.assert_frame_equal(local.drop(columns="seconds"), dist.drop(columns="seconds"))
    measured = dist[dist.status != "error"]  # a crash's cell has no host: nothing measured
    assert set(measured.host) == {os.uname().nodename}
    assert _live_workers(cluster.address) == 2  # the crashes cost cells, not workers

    fp = json.loads((tmp_path / "dist" / "fingerprint.json").read_text())
    workers = fp["cluster"]["workers"]
    assert len(workers) == 2
    for w in workers.values():
        assert w["versions"]["numpy"] and w["probes"]["numpy:cpu"] == "ok"
    assert sorted(w["resources"].get("fake", 0) for w in workers.values()) == [0, 1]

    said.clear()
    again = run(_config(tmp_path, "dist", resume=True), log=said.append)
    n = len(local)
    assert any(f"{n} cells ({n} already done)" in s for s in said), said
    pd.testing.assert_frame_equal(local.drop(columns="seconds"), again.drop(columns="seconds"))


@pytest.mark.extended
def test_a_slow_scheduler_is_not_a_cluster_without_workers(tmp_path, monkeypatch):
    """Under load (CI's extended tier beside a sweep) the scheduler's answer about its
    workers may not come in time. Dask's Client.scheduler_info then returns the
    client's cached identity, whose periodic refresh holds no workers: the sweep read
    both workers as gone and stopped with "no worker left" while they ran. Here that
    cache has no workers, and two checks of the workers go unanswered mid-sweep: the
    sweep finishes, and its table is the local one."""
    import conformance.execution._distributed as D

    monkeypatch.setenv("CONFORMANCE_SANDBOX_WRITABLE", str(tmp_path / "cluster"))
    monkeypatch.setenv("CONFORMANCE_TEST_DELAY", "3")  # a call outlasts a check (2 s)
    c = _start_cluster(tmp_path / "cluster", {"A": "", "B": ""})
    try:

        async def cached_without_workers(self: Any, n_workers: int = 0) -> None:
            self._scheduler_identity = {"workers": {}}

        monkeypatch.setattr(distributed.Client, "_update_scheduler_info", cached_without_workers)
        real = D.Cluster.alive
        calls = {"n": 0}

        def slow(self: Any) -> dict[str, dict[str, Any]]:
            calls["n"] += 1
            if calls["n"] in (3, 4):  # the probe's and the start's answered, two checks not
                raise TimeoutError("Timed out during handshake while connecting")
            return real(self)

        monkeypatch.setattr(D.Cluster, "alive", slow)
        cfg = dict(candidates=[candidate(f"{H}:where_am_i_slowly")], families=[family("specials")])
        dist = run(_config(tmp_path, "dist", scheduler=c.address, **cfg), log=lambda s: None)
        assert calls["n"] >= 5, calls
        local = run(_config(tmp_path, "local", **cfg), log=lambda s: None)
        pd.testing.assert_frame_equal(local.drop(columns="seconds"), dist.drop(columns="seconds"))
    finally:
        c.stop()


@pytest.mark.extended
def test_cells_go_only_to_workers_with_their_resource(cluster, tmp_path, monkeypatch):
    """numpy:cpu routed to the resource only worker A has: every call ran on A (one
    cell a batch: three batches, which two idle workers would share); a backend routed
    to a resource no worker has is 'not run' naming the workers."""
    import conformance.execution._distributed as d

    monkeypatch.setattr(d, "FIRST", 1)
    monkeypatch.setenv("CONFORMANCE_BATCH_SECONDS", "1e-9")
    cluster.where.write_text("")
    cfg = _config(
        tmp_path, "routed", candidates=[candidate(f"{H}:where_am_i")],
        backends=[backend("numpy:cpu"), backend("array_api_strict:cpu")],
        scheduler=cluster.address, routes={"numpy:cpu": "fake", "array_api_strict:cpu": "nosuch"},
    )  # fmt: skip
    table = run(cfg, log=lambda s: None)
    ran = table[table.backend == "numpy:cpu"]
    assert (ran.status == "pass").all() and len(ran) == 3
    calls = cluster.where.read_text().split()
    assert calls and set(calls) == {"A"}, calls
    nowhere = table[table.backend == "array_api_strict:cpu"]
    assert (nowhere.status == "not run").all()
    reason = nowhere.reason.iloc[0]
    assert reason.startswith("no worker with nosuch (workers: tcp://127.0.0.1:"), reason
    assert "fake=1" in reason and "no resources" in reason


@pytest.mark.extended
def test_a_worker_keeps_one_agent_for_every_batch(cluster, tmp_path, monkeypatch):
    """One cell a batch, six batches on two workers: every cell a worker ran was forked
    by the one fork server of its agent, and ran in the one process its agent kept
    for the pair (a Python start per batch, with every library imported again, made
    the cluster cost 15 times the local pool); the agents end with the sweep."""
    import conformance.execution._distributed as d

    monkeypatch.setattr(d, "FIRST", 1)
    monkeypatch.setenv("CONFORMANCE_BATCH_SECONDS", "1e-9")
    cluster.where.write_text("")
    cfg = _config(
        tmp_path, "agents", candidates=[candidate(f"{H}:which_processes")],
        backends=[backend("numpy:cpu")], dtypes=["float32", "float64"], scheduler=cluster.address,
    )  # fmt: skip
    table = run(cfg, log=lambda s: None)
    assert len(table) == 6 and (table.status == "pass").all()
    calls = [line.split(":") for line in cluster.where.read_text().split()]
    assert len({c[0] for c in calls}) == 2, calls  # both workers had batches
    for worker in {c[0] for c in calls}:
        mine = [c for c in calls if c[0] == worker]
        assert len({c[1] for c in mine}) == 1, mine  # one fork server
        assert len({c[2] for c in mine}) == 1, mine  # one process for the pair
    assert sys.platform != "linux" or _agents_of(cluster) == []  # they end with the sweep


def test_batches_are_sized_by_what_their_cells_cost():
    """A pair's first batch is FIRST cells; then as many as fill the target time at
    the pair's measured cost, within a fair share of what is left; a pair stays on its
    worker while another worker takes a pair of its own; a lost batch comes first."""
    from types import SimpleNamespace

    from conformance.execution._distributed import FIRST, _Batches

    def cells(cand: str, n: int) -> list[Any]:
        return [
            SimpleNamespace(
                key=f"{cand}-{i}", candidate=SimpleNamespace(name=cand, uid=cand),
                backend=SimpleNamespace(name="numpy:cpu"),
            )
            for i in range(n)
        ]  # fmt: skip

    allowed = {"numpy:cpu": ["A", "B"]}
    b = _Batches(cells("p", 400) + cells("q", 400), slots=4, target=1.0)
    first = b.take("A", allowed)
    assert first is not None and len(first) == FIRST and first[0].candidate.name == "p"
    other = b.take("B", allowed)  # B starts the pair no worker has
    assert other is not None and other[0].candidate.name == "q"
    b.measured(first, 0.04 * len(first))  # 40 ms a cell: 25 a second
    again = b.take("A", allowed)
    assert again is not None and again[0].candidate.name == "p" and len(again) == 25
    b.measured(other, 0.001 * len(other))  # 1 ms a cell: a fair share bounds it
    big = b.take("B", allowed)
    assert big is not None and len(big) == -(-(800 - FIRST * 2 - 25) // 4)
    b.put_back(again)  # A died under it: the pair has no worker, A's cells come first
    back = b.take("B", allowed)
    assert back is not None and back[0].candidate.name == "q"  # B's own pair first
    back = b.take("C", {"numpy:cpu": ["C"]})
    assert back is not None and [s.key for s in back[:25]] == [s.key for s in again]
    assert b.home[("p", "numpy:cpu")] == "C"
    assert b.take("D", allowed) is None  # D may run none of them


def test_routes_and_schedulers_that_cannot_be_used_are_plan_errors(tmp_path, monkeypatch):
    import conformance.execution._distributed as d

    monkeypatch.setattr(d, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(PlanError, match="needs --scheduler"):
        run(_config(tmp_path, "x", routes={"numpy:cpu": "fake"}), log=lambda s: None)
    with pytest.raises(PlanError, match="does not have"):
        run(_config(tmp_path, "x", scheduler="local:1", routes={"cupy:cuda": "cuda"}))
    with pytest.raises(PlanError, match="tcp://host:8786"):
        run(_config(tmp_path, "x", scheduler="somewhere"), log=lambda s: None)
    with pytest.raises(PlanError, match="local:N"):
        run(_config(tmp_path, "x", scheduler="local:0"), log=lambda s: None)
    with pytest.raises(PlanError, match="isolated"):
        run(_config(tmp_path, "x", scheduler="local:1", isolation="none"), log=lambda s: None)
    with pytest.raises(PlanError, match="cannot reach"):
        run(_config(tmp_path, "x", scheduler="tcp://127.0.0.1:9"), log=lambda s: None)


def _agents_of(c: _Cluster, wait: float = 10.0) -> list[int]:
    """The agents whose parent is one of ``c``'s workers, once none is left or after
    ``wait`` seconds."""
    workers = {p.pid for p in c.workers.values()}
    deadline = time.monotonic() + wait
    while True:
        left = [a for a, parent in _remote_processes().items() if parent in workers]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _remote_processes() -> dict[int, int]:
    """The agents running on this machine: {pid: parent's pid}."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                ppid = int((d / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if b"conformance.execution._remote" in cmd:
                out[int(d.name)] = ppid
    return out


@pytest.mark.extended
def test_a_cluster_left_without_workers_stops_the_sweep_for_a_resume(tmp_path, monkeypatch):
    """The only worker killed mid-sweep: the cells no worker is left to run are no
    errors of the candidate's (they were recorded as such, and a resume kept them). The
    sweep stops with a plan error that says so; the cells that finished are kept, and
    --resume on a new worker runs the rest: the table a local sweep gives."""
    monkeypatch.setenv("CONFORMANCE_SANDBOX_WRITABLE", str(tmp_path / "cluster"))
    c = _start_cluster(tmp_path / "cluster", {"A": ""})
    try:
        monkeypatch.setenv("CONFORMANCE_TEST_DELAY", "0.3")
        cfg = _config(
            tmp_path, "dist", candidates=[candidate(f"{H}:where_am_i_slowly")],
            backends=[backend("numpy:cpu")], scheduler=c.address,
            families=[family("dominant"), family("specials"), family("normal")],
        )  # fmt: skip
        result: dict[str, Any] = {}

        def sweep() -> None:
            try:
                result["table"] = run(cfg, log=lambda s: None)
            except PlanError as exc:
                result["error"] = str(exc)

        t = threading.Thread(target=sweep)
        t.start()
        deadline = time.monotonic() + 120
        while not (c.where.exists() and c.where.read_text().split()):
            assert time.monotonic() < deadline, "no cell started on the cluster"
            time.sleep(0.05)
        c.workers["A"].send_signal(signal.SIGKILL)
        c.workers["A"].wait(10)
        t.join(300)
        assert not t.is_alive(), "the sweep did not stop"
        assert "table" not in result
        assert "no worker left that can run numpy:cpu" in result["error"]
        assert "run again with --resume" in result["error"]
        c.stop()
        (tmp_path / "cluster" / "scheduler.json").unlink(missing_ok=True)  # (the same paths:
        # the sandbox described alike, so the same judge as the local sweep)
        c = _start_cluster(tmp_path / "cluster", {"B": ""})
        monkeypatch.setenv("CONFORMANCE_TEST_DELAY", "0")
        again = dataclasses.replace(cfg, scheduler=c.address, resume=True)
        table = run(again, log=lambda s: None)
        assert len(table) == 3 and (table.status == "pass").all(), table[["family", "reason"]]
        local = run(
            _config(tmp_path, "local", candidates=cfg.candidates, backends=cfg.backends,
                    families=cfg.families),
            log=lambda s: None,
        )  # fmt: skip
        pd.testing.assert_frame_equal(local.drop(columns="seconds"), table.drop(columns="seconds"))
    finally:
        c.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.extended
def test_a_worker_killed_mid_sweep_loses_nothing(tmp_path, monkeypatch):
    """SIGKILL to the worker running the first batch, once the candidate has been
    called there: its batch runs on the other worker, the table is complete and equal
    to a local sweep's, and nothing the killed worker started is left running."""
    monkeypatch.setenv("CONFORMANCE_SANDBOX_WRITABLE", str(tmp_path / "cluster"))
    c = _start_cluster(tmp_path / "cluster", {"A": "", "B": ""})
    try:
        monkeypatch.setenv("CONFORMANCE_TEST_DELAY", "0.2")
        cfg = _config(
            tmp_path, "dist", candidates=[candidate(f"{H}:where_am_i_slowly")],
            backends=[backend("numpy:cpu")], scheduler=c.address,
            families=[family("dominant"), family("specials")],
        )  # fmt: skip
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(table=run(cfg, log=lambda s: None)))
        t.start()
        deadline = time.monotonic() + 120
        first = ""
        while not first and time.monotonic() < deadline:
            time.sleep(0.05)
            text = c.where.read_text() if c.where.exists() else ""
            first = text.split()[0] if text.split() else ""
        assert first, "no cell started on the cluster"
        c.workers[first].send_signal(signal.SIGKILL)
        c.workers[first].wait(10)
        t.join(300)
        assert not t.is_alive(), "the sweep did not finish"
        table = result["table"]
        other = ({"A", "B"} - {first}).pop()
        assert other in c.where.read_text().split()  # the batch ran again there
        assert len(table) == 2 and (table.status == "pass").all(), table[["family", "reason"]]
        monkeypatch.setenv("CONFORMANCE_TEST_DELAY", "0")
        local = run(
            _config(tmp_path, "local", candidates=cfg.candidates, backends=cfg.backends,
                    families=cfg.families),
            log=lambda s: None,
        )  # fmt: skip
        pd.testing.assert_frame_equal(local.drop(columns="seconds"), table.drop(columns="seconds"))
        # the killed worker's agent died with it, the other's ended with the sweep (the
        # agents in /proc whose parent is another process are other clusters')
        assert _agents_of(c) == []
    finally:
        c.stop()
