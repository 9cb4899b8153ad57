"""The sweep's cells on a Dask distributed cluster (``run --scheduler``).

``--scheduler tcp://host:port`` uses a running ``dask scheduler`` and its workers;
``--scheduler local`` or ``local:N`` starts a ``distributed.LocalCluster`` of N worker
processes (default: ``--jobs``, the cores this process may use) for the run and stops
it after. Without the flag the sweep runs on the local process pool, and nothing here
is imported (``distributed`` is an optional extra).

- **What runs where.** The client (the process that runs the sweep) plans, fills the
  oracle cache (each input once, on its own cores, before any cell runs), scores every
  cell's outputs and writes the results, exactly as a local sweep: the answers never
  travel, the candidates' outputs do. A streamed family (the exhaustive float32
  chunks) is scored on the worker's host, by the scoring processes of the supervisor
  there, and its measurement travels instead. So a distributed
  sweep's table is the local sweep's, cell for cell.
- **Isolation.** A task never runs a candidate in the Dask worker's process: it hands
  its batch to the worker's agent (``conformance.execution._remote``, started at the worker's
  first task and kept), which runs the cells under the same supervisor as the local
  pool, its workers forked from a fork server that holds the sweep's libraries (a
  crash or a hang costs the cell, not the agent). The agents end with the sweep.
- **Batches.** Each worker thread has ``IN_FLIGHT`` batches at a time. A batch holds
  cells of one (candidate, backend) pair, about ``BATCH_SECONDS`` of them
  (``CONFORMANCE_BATCH_SECONDS``) at the pair's cost per cell measured on its batches
  so far, and never more than a fair share of what is left.
- **Devices as resources.** A cell on a GPU backend (``torch:cuda``, ``jax:gpu``,
  ``cupy:cuda``) asks for the worker resource ``cuda`` (``dask worker ADDRESS
  --resources "cuda=1"``). Every worker probes every backend of the sweep at the start
  (each in a process of its own); a cell goes to the workers that have its resource
  and whose probe passed. A backend no worker has the resource for is ``not run: no
  worker with cuda`` with the workers and their resources; one whose probe failed on
  every worker that could take it is ``not run`` with the probes' reasons.
- **Lost workers.** A worker that dies (``kill -9``) while it runs a batch loses
  nothing: the batch goes to another worker (up to ``RETRIES`` times); cells left with
  no worker that may run them fail with that reason, and the sweep goes on.
- **Records.** Each row carries the host that measured it; the fingerprint lists each
  worker: its host, resources, Python, versions, recorded environment and probes.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..backends._backends import Backend
from ._cell import CellSpec, Raw

__all__ = [
    "Cluster", "SchedulerError", "connect", "parse_routes", "parse_scheduler", "resources_for",
]  # fmt: skip

BATCH_SECONDS = 1.0  # what a batch should take (CONFORMANCE_BATCH_SECONDS)
FIRST = 4  # cells in a pair's first batch, before its cost is measured
IN_FLIGHT = 2  # batches a worker thread has at once: one running, one waiting
RETRIES = 2  # times a batch goes to another worker after its worker died
# the checks of the workers (one every 2 s or more, each waiting for the connection's
# own timeout) in a row that the scheduler may leave unanswered before it counts as lost
ANSWERS_LOST = 10
CONNECT_TIMEOUT = 20.0  # seconds to reach the scheduler
_GPU_DEVICES = ("cuda", "gpu")


class SchedulerError(ValueError):
    """A --scheduler that cannot be used: said before any cell runs."""


def parse_scheduler(arg: str) -> tuple[str, int | str | None]:
    """("local", N or None) or ("address", the address)."""
    if arg == "local" or arg.startswith("local:"):
        n_s = arg.partition(":")[2]
        if not n_s:
            return "local", None
        try:
            n = int(n_s)
        except ValueError:
            n = 0
        if n < 1:
            raise SchedulerError(f"--scheduler {arg}: local:N needs a number of workers >= 1")
        return "local", n
    if "://" not in arg:
        raise SchedulerError(
            f"--scheduler {arg!r}: give a scheduler's address (tcp://host:8786) or local[:N]"
        )
    return "address", arg


def resources_for(b: Backend, routes: dict[str, str] | None = None) -> dict[str, float]:
    """The worker resources a cell on ``b`` needs: ``routes[b.name]`` where the sweep
    names one (``--resource torch:cpu=bigmem``), else ``cuda`` on a GPU backend."""
    if routes and b.name in routes:
        return {routes[b.name]: 1}
    return {"cuda": 1} if b.device in _GPU_DEVICES else {}


def parse_routes(items: list[str] | None) -> dict[str, str]:
    """``--resource BACKEND=RESOURCE`` (repeated) as {backend: resource}."""
    out: dict[str, str] = {}
    for item in items or []:
        name, eq, res = item.partition("=")
        if not eq or not name.strip() or not res.strip():
            raise SchedulerError(f"--resource {item!r}: give BACKEND=RESOURCE, e.g. jax:cpu=bigmem")
        out[name.strip()] = res.strip()
    return out


def _local_resources() -> dict[str, float]:
    """A local cluster's workers offer ``cuda`` where this host shows an NVIDIA device."""
    return {"cuda": 1} if os.path.exists("/dev/nvidia0") else {}


class _AgentProcess:
    """A Dask worker's handle on one agent (``conformance.execution._remote serve``): the pipes to
    it, its log."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="conformance-agent-log-")
        self.log = Path(self.dir.name, "log")
        jobs_r, jobs_w = os.pipe()
        answers_r, answers_w = os.pipe()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conformance.execution._remote", "serve", str(jobs_r),
                 str(answers_w)],
                pass_fds=(jobs_r, answers_w), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        os.close(jobs_r)
        os.close(answers_w)
        self.jobs = Connection(jobs_w, readable=False)
        self.answers = Connection(answers_r, writable=False)

    def ask(self, kind: str, job: dict[str, Any]) -> tuple[Any, float]:
        try:
            self.jobs.send((kind, job))
            status, answer, seconds = self.answers.recv()
        except (EOFError, OSError):
            self.close()
            from ._worker import log_tail

            raise RuntimeError(
                f"conformance.execution._remote exited with code {self.proc.returncode}: "
                f"{log_tail(self.log)}"
            ) from None
        if status != "ok":
            raise RuntimeError(f"conformance.execution._remote {kind}: {answer}")
        return answer, seconds

    def close(self) -> None:
        for c in (self.jobs, self.answers):
            c.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_idle_agents: list[_AgentProcess] = []  # this Dask worker's agents, between tasks
_agents_lock = threading.Lock()


def _on_worker(kind: str, job: dict[str, Any]) -> tuple[Any, float]:
    """A Dask task: the job answered by one of this worker's agents (started at its
    first task; one per task running at once), with the agent's seconds for it."""
    with _agents_lock:
        agent = _idle_agents.pop() if _idle_agents else None
    if agent is not None and agent.proc.poll() is not None:
        agent.close()  # died between tasks (with what it held)
        agent = None
    if agent is None:
        agent = _AgentProcess()
    answer = agent.ask(kind, job)  # a dead agent is dropped, not returned
    with _agents_lock:
        _idle_agents.append(agent)
    return answer


@atexit.register
def _close_agents() -> None:
    """This Dask worker's agents, ended (each exits when its pipe closes)."""
    with _agents_lock:
        while _idle_agents:
            _idle_agents.pop().close()


Pair = tuple[str, str]  # (candidate, backend)


class _Batches:
    """The cells of a sweep cut into batches as the workers take them.

    - **Size.** A batch of a (candidate, backend) pair holds about ``target`` seconds
      of its cells, at the pair's cost per cell measured on its batches that came back
      (its first batch, before any measure, ``FIRST`` cells), and never more than a
      fair share of what is left, so that the workers finish together.
    - **Place.** A pair stays on the worker that started it (its workers' processes,
      their imports and JAX's compilations, are there); a worker with nothing of its
      own starts a pair no worker has, else shares the pair with the most cells left.
    """

    def __init__(self, cells: list[CellSpec], slots: int, target: float) -> None:
        self.groups: dict[Pair, deque[CellSpec]] = {}
        for s in cells:  # in the sweep's order: the costly pairs first
            self.groups.setdefault(_pair(s), deque()).append(s)
        self.left = len(cells)
        self.slots, self.target = max(1, slots), target
        self.cost: dict[Pair, tuple[float, int]] = {}  # seconds, cells
        self.home: dict[Pair, str] = {}  # the worker a pair runs on
        self.taken = 0  # batches

    def measured(self, batch: list[CellSpec], seconds: float) -> None:
        g = _pair(batch[0])
        t, n = self.cost.get(g, (0.0, 0))
        self.cost[g] = (t + seconds, n + len(batch))

    def size(self, g: Pair) -> int:
        fair = max(1, -(-self.left // self.slots))
        if g not in self.cost:
            return min(FIRST, fair)
        t, n = self.cost[g]
        return max(1, min(fair, int(self.target * n / max(t, 1e-6))))

    def put_back(self, batch: list[CellSpec]) -> None:
        """A batch whose worker died: first in its pair again, the pair homeless."""
        g = _pair(batch[0])
        q = self.groups.setdefault(g, deque())
        q.extendleft(reversed(batch))
        self.left += len(batch)
        self.home.pop(g, None)

    def take(self, worker: str, allowed: dict[str, list[str]]) -> list[CellSpec] | None:
        """The next batch for ``worker``, of a pair it is ``allowed`` to run."""
        open_ = [g for g, q in self.groups.items() if q and worker in allowed[g[1]]]
        g = (
            next((g for g in open_ if self.home.get(g) == worker), None)
            or next((g for g in open_ if g not in self.home), None)
            or max(open_, key=lambda g: len(self.groups[g]), default=None)
        )
        if g is None:
            return None
        q = self.groups[g]
        self.home.setdefault(g, worker)
        batch = [q.popleft() for _ in range(min(len(q), self.size(g)))]
        self.left -= len(batch)
        self.taken += 1
        if not q:
            del self.groups[g]
        return batch


def _pair(s: CellSpec) -> Pair:
    return (s.candidate.uid, s.backend.name)


def _lost_with_worker(fut: Any) -> bool:
    """A finished task whose result its worker took with it (Dask's KilledWorker)."""
    from distributed import KilledWorker

    if fut.status != "error":
        return False
    try:
        return isinstance(fut.exception(timeout=5), KilledWorker)
    except Exception:
        return True


def batch_seconds() -> float:
    """The time a batch should take: ``CONFORMANCE_BATCH_SECONDS``, else BATCH_SECONDS."""
    raw = os.environ.get("CONFORMANCE_BATCH_SECONDS", "")
    try:
        v = float(raw) if raw else BATCH_SECONDS
    except ValueError:
        raise SchedulerError(
            f"CONFORMANCE_BATCH_SECONDS={raw!r}: give the seconds a batch should take"
        ) from None
    if not v > 0:
        raise SchedulerError(f"CONFORMANCE_BATCH_SECONDS={raw!r}: give a number > 0")
    return v


class Cluster:
    """A connection to a scheduler (and the LocalCluster it may own)."""

    def __init__(
        self, arg: str, routes: dict[str, str] | None = None, local_workers: int = 1
    ) -> None:
        try:
            import dask
            import distributed
        except ImportError:
            raise SchedulerError(
                "--scheduler needs Dask distributed: pip install 'log-softmax-conformance"
                "[distributed]'"
            ) from None
        self.routes = dict(routes or {})
        kind, where = parse_scheduler(arg)
        self.local = None
        if kind == "local":
            import logging

            from ._isolation import without_main

            n = where if isinstance(where, int) else max(1, local_workers)
            # the workers in this process's environment, and this process's left as it
            # is (Dask's nannies set thread counts in both by default)
            saved = dict(os.environ)
            with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}), without_main():
                self.local = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                    resources=_local_resources() or None, silence_logs=logging.ERROR,
                )  # fmt: skip
            if dict(os.environ) != saved:
                os.environ.clear()
                os.environ.update(saved)
            address = self.local.scheduler_address
        else:
            address = str(where)
        try:
            self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            if self.local is not None:
                self.local.close()
            raise SchedulerError(f"--scheduler {arg}: cannot reach it: {exc}") from None
        self.address = address
        self.workers: dict[str, dict[str, Any]] = {}
        self.batches: _Batches | None = None  # the last execute's

    def close(self) -> None:
        """The workers' agents end with the sweep: a worker that outlives it holds no
        processes for it, and the next sweep's agents import that sweep's harness."""
        try:
            self.client.run(_close_agents)
        except Exception:  # a worker gone, or the scheduler: its agents went with it
            pass
        self.client.close()
        if self.local is not None:
            self.local.close()

    def alive(self) -> dict[str, dict[str, Any]]:
        """The workers the scheduler knows, asked of it now. Not
        ``Client.scheduler_info``: where its query fails (a timeout under load; it only
        logs the OSError) it returns the client's cached identity, which the client's
        periodic refresh fills with no workers at all, so every worker read as gone and
        a sweep stopped with "no worker left" while both of them ran. An OSError here
        is the caller's to weigh."""
        scheduler = self.client.scheduler
        if scheduler is None:  # the client is closed
            raise OSError("the client has no connection to the scheduler")
        info = self.client.sync(scheduler.identity, n_workers=-1)
        return dict(info["workers"])

    def probe(self, backends: list[Backend], timeout: float) -> dict[str, dict[str, Any]]:
        """Every worker's host information and probes of ``backends``."""
        workers = self.alive()
        if not workers:
            raise SchedulerError(f"the scheduler at {self.address} has no workers")
        job = {
            "backends": backends, "timeout": timeout,
            "libraries": sorted({b.library for b in backends}),
        }  # fmt: skip
        futures = {
            addr: self.client.submit(
                _on_worker, "probe", job, workers=[addr], allow_other_workers=False, pure=False
            )
            for addr in workers
        }
        out: dict[str, dict[str, Any]] = {}
        for addr, fut in futures.items():
            res = {k: float(v) for k, v in (workers[addr].get("resources") or {}).items()}
            try:
                info = fut.result(timeout=timeout + 60)[0]
            except Exception as exc:
                info = {"host": workers[addr].get("host", ""), "probes": {}, "error": str(exc)}
                for b in backends:
                    info["probes"][b.name] = (f"probing on {addr}: {exc}", {})
            out[addr] = {**info, "resources": res, "name": str(workers[addr].get("name", ""))}
        self.workers = out
        return out

    def sandboxes(self) -> list[str]:
        """The workers' sandboxes, as each describes its own (see _sandbox.describe)."""
        return [str(w.get("sandbox", "unknown")) for w in self.workers.values()]

    def environment_differences(self, mine: dict[str, str]) -> dict[str, dict[str, str]]:
        """The workers whose recorded environment (thread counts, ISA overrides) is not
        this process's: their cells may compute differently from a local sweep's."""
        return {
            a: w["environment"]
            for a, w in sorted(self.workers.items())
            if "environment" in w and w["environment"] != mine
        }

    def choose(
        self, backends: list[Backend]
    ) -> tuple[dict[str, tuple[str | None, dict[str, Any]]], dict[str, list[str]]]:
        """Per backend: (None or why no worker can run it, library_info from a worker
        that can), and the workers that may run its cells."""
        probes: dict[str, tuple[str | None, dict[str, Any]]] = {}
        allowed: dict[str, list[str]] = {}
        listing = "; ".join(
            f"{a} ({w.get('host', '')}: "
            + (", ".join(f"{k}={v:g}" for k, v in w["resources"].items()) or "no resources")
            + ")"
            for a, w in sorted(self.workers.items())
        )
        for b in backends:
            need = resources_for(b, self.routes)
            fit = [
                a for a, w in sorted(self.workers.items())
                if all(w["resources"].get(k, 0) >= v for k, v in need.items())
            ]  # fmt: skip
            if not fit:
                probes[b.name] = (f"no worker with {', '.join(need)} (workers: {listing})", {})
                continue
            ok = [a for a in fit if self.workers[a]["probes"].get(b.name, ("?", {}))[0] is None]
            allowed[b.name] = ok
            if ok:
                probes[b.name] = (None, self.workers[ok[0]]["probes"][b.name][1])
            else:
                whys = sorted({str(self.workers[a]["probes"][b.name][0]) for a in fit})
                why = "; ".join(whys) + f" (on each of the {len(fit)} workers that could run it)"
                probes[b.name] = (why, {})
        return probes, allowed

    def execute(
        self, cells: list[CellSpec], allowed: dict[str, list[str]], timeout: float,
        on_result: Callable[[CellSpec, Raw | None, str | None], None],
        on_submit: Callable[[CellSpec], None], fresh: bool = False,
    ) -> None:  # fmt: skip
        """Every cell to the cluster in batches (``_Batches``), each worker given
        ``IN_FLIGHT`` per thread at a time; ``on_result`` for each, here. A batch whose
        worker dies goes to another, up to ``RETRIES`` times. Cells that no live worker
        can take any more (every worker that could run their backend died or left) end
        the sweep with a SchedulerError, as a lost scheduler does: they are no result
        of the candidates', and what finished is kept for ``--resume``."""
        from distributed import wait

        libraries = sorted({s.backend.library for s in cells})
        info = self.alive()
        threads = {a: max(1, int(w.get("nthreads") or 1)) for a, w in info.items()}
        batches = _Batches(cells, IN_FLIGHT * sum(threads.values()), batch_seconds())
        pending: dict[Any, tuple[str, list[CellSpec]]] = {}  # future: (worker, batch)
        lost: dict[str, int] = {}  # cell: times its worker died under it
        checked = time.monotonic()

        def submit() -> None:
            for addr in sorted(threads):
                busy = sum(1 for w, _ in pending.values() if w == addr)
                for _ in range(IN_FLIGHT * threads[addr] - busy):
                    batch = batches.take(addr, allowed)
                    if batch is None:
                        break
                    b = batch[0].backend
                    job = {
                        "cells": batch, "timeout": timeout, "fresh": fresh,
                        "libraries": libraries,
                    }  # fmt: skip
                    fut = self.client.submit(
                        _on_worker, "cells", job, workers=[addr], allow_other_workers=False,
                        resources=resources_for(b, self.routes) or None, pure=False,
                    )  # fmt: skip
                    pending[fut] = (addr, batch)
                    for s in batch:
                        on_submit(s)

        def retry(fut: Any) -> None:
            """A batch its worker took with it: back to the queue, or failed after
            RETRIES."""
            fut.cancel()
            _, batch = pending.pop(fut)
            for s in batch:
                lost[s.key] = lost.get(s.key, 0) + 1
            if max(lost[s.key] for s in batch) <= RETRIES:
                batches.put_back(batch)
                return
            for s in batch:
                on_result(s, None, f"lost on the cluster: {lost[s.key]} workers died under it")

        unanswered = 0

        def check_workers() -> None:
            nonlocal unanswered
            try:
                now = set(self.alive())
            except OSError:  # no answer this time (a timeout under load): ask again
                unanswered += 1  # later; a scheduler silent for ANSWERS_LOST is gone
                if unanswered >= ANSWERS_LOST:
                    raise
                return
            unanswered = 0
            for addr in set(threads) - now:
                del threads[addr]
            for fut, (addr, _) in list(pending.items()):
                if addr not in now and not fut.done():
                    retry(fut)

        try:
            submit()
            while pending or (batches.left and threads):
                for fut in [f for f in pending if f.cancelled()]:
                    retry(fut)  # a result lost with its worker (Dask cancels it)
                try:
                    done = wait(list(pending), timeout=2.0, return_when="FIRST_COMPLETED").done
                except TimeoutError:  # an OSError: caught before the scheduler's below
                    done = set()
                except CancelledError:  # one was cancelled meanwhile: retried above
                    continue
                for fut in done:
                    if fut.cancelled() or _lost_with_worker(fut):
                        retry(fut)
                        continue
                    _, batch = pending.pop(fut)
                    seconds = self._collect(fut, batch, on_result)
                    if seconds is not None:
                        batches.measured(batch, seconds)
                if not done or time.monotonic() - checked > 2.0:
                    check_workers()
                    checked = time.monotonic()
                submit()
                if not pending and batches.left and threads:
                    break  # what is left may run on no live worker
        except OSError as exc:  # the scheduler went away: what finished is kept
            raise SchedulerError(
                f"lost the scheduler at {self.address} ({type(exc).__name__}: {exc}); "
                f"{sum(len(b) for _, b in pending.values()) + batches.left} cells had no "
                "result: run again with --resume"
            ) from None
        self.batches = batches
        left = [s for q in batches.groups.values() for s in q]
        if left:  # their workers died or left: the cells are not the candidates' errors
            names = sorted({s.backend.name for s in left})
            could = sorted({a for name in names for a in allowed[name]})
            raise SchedulerError(
                f"no worker left that can run {', '.join(names)} (the workers that could, "
                f"{', '.join(could)}, died or left the cluster); {len(left)} cells had no "
                "result: run again with --resume"
            )

    @staticmethod
    def _collect(
        fut: Any, batch: list[CellSpec],
        on_result: Callable[[CellSpec, Raw | None, str | None], None],
    ) -> float | None:  # fmt: skip
        """``on_result`` for each cell of a finished batch; the agent's seconds."""
        by_key = {s.key: s for s in batch}
        try:
            answers, seconds = fut.result()
        except Exception as exc:
            why = f"lost on the cluster: {type(exc).__name__}: {exc}".strip()
            for s in batch:
                on_result(s, None, why[:500])
            return None
        for key, raw, reason in answers:
            spec = by_key.pop(key, None)
            if spec is not None:
                on_result(spec, raw if isinstance(raw, Raw) else None, reason)
        for s in by_key.values():
            on_result(s, None, "the worker's batch sent no result for this cell")
        return float(seconds)


@contextmanager
def connect(
    arg: str, routes: dict[str, str] | None = None, local_workers: int = 1
) -> Iterator[Cluster]:
    c = Cluster(arg, routes, local_workers)
    try:
        yield c
    finally:
        c.close()


def fingerprint(cluster: Cluster) -> dict[str, Any]:
    return {
        "scheduler": "local" if cluster.local is not None else cluster.address,
        "workers": {
            addr: {k: v for k, v in w.items() if k != "probes"}
            | {"probes": {b: (why or "ok") for b, (why, _) in w["probes"].items()}}
            for addr, w in sorted(cluster.workers.items())
        },
    }
