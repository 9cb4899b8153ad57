"""What a Dask worker runs for a sweep, in a process of its own on the worker's host.

A Dask task does not run a candidate in the worker's own process (a crash would take
the worker and every task on it; a daemonic worker cannot start the isolated workers
either): it starts ``python -m conformance._remote KIND IN OUT``, which reads its job
from the pickle ``IN`` and writes the answer to ``OUT``:

- ``probe``: the backends probed by ``_isolation.probe`` (each in a process of its own),
  with this host's name, versions and recorded environment;
- ``cells``: cells run by an ``_isolation.Supervisor`` of one job, the same isolation as
  the local pool: a candidate that crashes or hangs costs its cell. Each answer is
  ``(key, raw, reason)``; scoring is the client's.

The process dies with the Dask worker that started it (``PR_SET_PDEATHSIG`` on Linux,
and a watch on its parent elsewhere), so a killed worker leaves nothing running.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import _sandbox

__all__ = ["main"]


def _die_with_parent() -> None:
    from ._worker import die_with_parent

    parent = os.getppid()
    die_with_parent()

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


def _probe(job: dict[str, Any]) -> dict[str, Any]:
    from ._isolation import probe

    with tempfile.TemporaryDirectory(prefix="conformance-probe-") as d:
        probes = probe(job["backends"], job["timeout"], Path(d))
    return {**host_info(), "probes": probes}


def _cells(job: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
    from ._isolation import start_server, supervise

    out: list[tuple[str, Any, str | None]] = []
    cells = job["cells"]
    start_server({s.backend.library for s in cells})
    with tempfile.TemporaryDirectory(prefix="conformance-cells-") as d:
        supervise(
            cells, jobs=1, timeout=job["timeout"], log_dir=Path(d),
            fresh_per_cell=job.get("fresh", False),
            on_result=lambda spec, raw, reason: out.append((spec.key, raw, reason)),
        )  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    kind, inp, outp = argv
    _die_with_parent()
    job = pickle.loads(Path(inp).read_bytes())
    answer = _probe(job) if kind == "probe" else _cells(job)
    tmp = Path(f"{outp}.tmp")
    tmp.write_bytes(pickle.dumps(answer))
    os.replace(tmp, outp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
