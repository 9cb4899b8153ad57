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
- **Isolation.** A task never runs a candidate in the Dask worker's process: it starts
  ``conformance._remote`` on the worker's host, which runs its cells under the same
  supervisor as the local pool (a crash or a hang costs the cell).
- **Devices as resources.** A cell on a GPU backend (``torch:cuda``, ``jax:gpu``,
  ``cupy:cuda``) asks for the worker resource ``cuda`` (``dask worker ADDRESS
  --resources "cuda=1"``). Every worker probes every backend of the sweep at the start
  (each in a process of its own); a cell goes to the workers that have its resource
  and whose probe passed. A backend no worker has the resource for is ``not run: no
  worker with cuda`` with the workers and their resources; one whose probe failed on
  every worker that could take it is ``not run`` with the probes' reasons.
- **Lost workers.** A worker that dies (``kill -9``) while it runs a batch loses
  nothing: the scheduler gives the batch to another worker (Dask's own retry, up to
  ``distributed.scheduler.allowed-failures`` times); a batch left with no worker that
  may run it fails its cells with that reason, and the sweep goes on.
- **Records.** Each row carries the host that measured it; the fingerprint lists each
  worker: its host, resources, Python, versions, recorded environment and probes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._backends import Backend
from ._cell import CellSpec, Raw

__all__ = [
    "Cluster", "SchedulerError", "connect", "parse_routes", "parse_scheduler", "resources_for",
]  # fmt: skip

BATCH = 16  # cells of one (candidate, backend) a task: one Python start per batch
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


def _on_worker(kind: str, job: dict[str, Any]) -> Any:
    """A Dask task: ``conformance._remote`` in a process of its own, its answer."""
    with tempfile.TemporaryDirectory(prefix="conformance-task-") as d:
        inp, outp, log = Path(d, "in.pkl"), Path(d, "out.pkl"), Path(d, "log")
        inp.write_bytes(pickle.dumps(job))
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conformance._remote", kind, str(inp), str(outp)],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            code = proc.wait()
        if code != 0 or not outp.exists():
            from ._worker import log_tail

            tail = log_tail(log)
            raise RuntimeError(f"conformance._remote {kind} exited with code {code}: {tail}")
        return pickle.loads(outp.read_bytes())


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

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()

    def alive(self) -> dict[str, dict[str, Any]]:
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def probe(self, backends: list[Backend], timeout: float) -> dict[str, dict[str, Any]]:
        """Every worker's host information and probes of ``backends``."""
        workers = self.alive()
        if not workers:
            raise SchedulerError(f"the scheduler at {self.address} has no workers")
        job = {"backends": backends, "timeout": timeout}
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
                info = fut.result(timeout=timeout + 60)
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
        """Every cell to the cluster in batches; ``on_result`` for each, here."""
        from distributed import wait

        batches: list[list[CellSpec]] = []
        groups: dict[tuple[str, str], list[CellSpec]] = {}
        for s in cells:
            groups.setdefault((s.candidate.name, s.backend.name), []).append(s)
        for g in groups.values():
            batches += [g[i : i + BATCH] for i in range(0, len(g), BATCH)]
        pending: dict[Any, list[CellSpec]] = {}
        for batch in batches:
            b = batch[0].backend
            fut = self.client.submit(
                _on_worker, "cells", {"cells": batch, "timeout": timeout, "fresh": fresh},
                workers=allowed[b.name], allow_other_workers=False,
                resources=resources_for(b, self.routes) or None, pure=False,
            )  # fmt: skip
            pending[fut] = batch
            for s in batch:
                on_submit(s)
        while pending:
            try:
                try:
                    done = wait(list(pending), timeout=2.0, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = set()
                    self._abandon_unrunnable(pending, allowed, on_result)
            except OSError as exc:  # the scheduler went away: what finished is kept
                raise SchedulerError(
                    f"lost the scheduler at {self.address} ({type(exc).__name__}: {exc}); "
                    f"{len(pending)} batches had no result: run again with --resume"
                ) from None
            for fut in done:
                batch = pending.pop(fut)
                self._collect(fut, batch, on_result)

    @staticmethod
    def _collect(
        fut: Any, batch: list[CellSpec],
        on_result: Callable[[CellSpec, Raw | None, str | None], None],
    ) -> None:  # fmt: skip
        by_key = {s.key: s for s in batch}
        try:
            answers = fut.result()
        except Exception as exc:
            why = f"lost on the cluster: {type(exc).__name__}: {exc}".strip()
            for s in batch:
                on_result(s, None, why[:500])
            return
        for key, raw, reason in answers:
            spec = by_key.pop(key, None)
            if spec is not None:
                on_result(spec, raw if isinstance(raw, Raw) else None, reason)
        for s in by_key.values():
            on_result(s, None, "the worker's batch sent no result for this cell")

    def _abandon_unrunnable(
        self, pending: dict[Any, list[CellSpec]], allowed: dict[str, list[str]],
        on_result: Callable[[CellSpec, Raw | None, str | None], None],
    ) -> None:  # fmt: skip
        alive = set(self.alive())
        for fut, batch in list(pending.items()):
            if fut.done():
                continue
            if not alive & set(allowed[batch[0].backend.name]):
                fut.cancel()
                del pending[fut]
                why = (
                    f"no worker left that can run {batch[0].backend.name} "
                    f"(it could run on {', '.join(allowed[batch[0].backend.name])})"
                )
                for s in batch:
                    on_result(s, None, why)


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
