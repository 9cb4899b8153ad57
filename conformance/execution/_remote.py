"""The agent a Dask worker keeps for a sweep: one process on the worker's host, started
at the worker's first task and reused by every task after, so that a batch of cells
costs what it costs on the local pool and not a Python start with every library
imported again.

A Dask task never runs a candidate in the worker's own process (a crash would take the
worker and every task on it; a daemonic worker cannot start the isolated workers
either). It hands its job to an agent, ``python -m conformance.execution._remote serve RFD WFD``,
over a pair of pipes, and waits for the answer. The agent holds what the local pool's
process holds:

- the **fork server** (``_isolation.start_server``), started once with every library of
  the sweep imported, from which each cell's worker is forked in milliseconds;
- a **supervisor** of one job, the same isolation as the local pool (a candidate that
  crashes or hangs costs its cell, and each worker is sandboxed beneath the agent's
  scratch root). It keeps the workers of the last few (candidate, backend) pairs idle,
  so the next batch of a pair starts in the same process;
- the **scoring processes** of the streamed family (the exhaustive float32 chunks).

Jobs:

- ``probe``: the backends probed by ``_isolation.probe`` (each in a process of its own),
  with this host's name, versions and recorded environment; the fork server starts
  meanwhile;
- ``cells``: the cells run by the supervisor. Each answer is ``(key, raw, reason)``;
  scoring is the client's.

Each answer comes with the agent's own seconds for the job, which the client uses to
size the next batches. The agent exits when its worker closes the pipe, and dies with
the worker's process (``PR_SET_PDEATHSIG`` on Linux, and a watch on its parent), its
fork server and every worker below it with it: a killed worker leaves nothing running.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import _sandbox

__all__ = ["KEEP_IDLE", "main"]

KEEP_IDLE = 4  # (candidate, backend) pairs whose idle worker the agent keeps


def _die_with_parent() -> None:
    """Exit when the worker's process does: by its death signal on Linux (which a
    worker's pool thread that ends also sends, and is then ignored), and by a watch on
    the parent anywhere."""
    from ._worker import exit_with_parent

    parent = os.getppid()
    exit_with_parent(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def host_info() -> dict[str, Any]:
    from ._fingerprint import settings

    s = settings()
    return {
        "host": socket.gethostname(),
        "python": s["python"],
        "machine": s["machine"],
        "versions": s["versions"],
        "environment": s["environment"],
        "cpu_count": os.cpu_count(),
        "sandbox": _sandbox.describe(),
    }


class _Agent:
    def __init__(self) -> None:
        self.scratch = tempfile.TemporaryDirectory(prefix="conformance-agent-")
        self.sup: Any = None

    def probe(self, job: dict[str, Any]) -> dict[str, Any]:
        from ._isolation import probe, start_server

        start_server(job.get("libraries", ()))  # imports while the probes run
        d = Path(self.scratch.name, "probes")
        d.mkdir(exist_ok=True)
        return {**host_info(), "probes": probe(job["backends"], job["timeout"], d)}

    def cells(self, job: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
        from ._isolation import Supervisor, kill_strays, start_server

        cells = job["cells"]
        start_server({*job.get("libraries", ()), *(s.backend.library for s in cells)})
        out: list[tuple[str, Any, str | None]] = []
        if self.sup is None:
            self.sup = Supervisor(
                jobs=1, timeout=job["timeout"], log_dir=Path(self.scratch.name, "logs"),
                on_result=lambda spec, raw, reason: None, keep_idle=KEEP_IDLE,
            )  # fmt: skip
        sup = self.sup
        sup.timeout, sup.fresh_per_cell = job["timeout"], job.get("fresh", False)
        sup.on_result = lambda spec, raw, reason: out.append((spec.key, raw, reason))
        try:
            sup.add(cells)
            sup.run()
        except BaseException:
            self.close()
            raise
        kill_strays()  # what a candidate left running, as each local supervisor does
        return out

    def close(self) -> None:
        if self.sup is not None:
            sup, self.sup = self.sup, None
            sup.close()


def serve(rfd: int, wfd: int) -> int:
    """Answer jobs from ``rfd`` on ``wfd`` until the worker closes the pipe: for each,
    ``("ok", answer, seconds)`` or ``("error", traceback text, seconds)``."""
    _die_with_parent()
    jobs, answers = Connection(rfd, writable=False), Connection(wfd, readable=False)
    agent = _Agent()
    try:
        while True:
            try:
                kind, job = jobs.recv()
            except EOFError:
                return 0
            t0 = time.perf_counter()
            try:
                answer: Any = agent.probe(job) if kind == "probe" else agent.cells(job)
                reply: tuple[str, Any, float] = ("ok", answer, time.perf_counter() - t0)
            except Exception:
                reply = ("error", traceback.format_exc(limit=8), time.perf_counter() - t0)
            answers.send(reply)
    finally:
        agent.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "serve":
        print("usage: python -m conformance.execution._remote serve RFD WFD", file=sys.stderr)
        return 2
    return serve(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
