"""Running candidates where they cannot reach each other or the supervisor.

The model: every (candidate, backend) pair gets a worker process of its own, forked from
a server that has imported the harness and the backend libraries once
(:mod:`multiprocessing`'s forkserver, with ``conformance._preload``). A worker runs the
cells of its pair one after another; the supervisor (this module, in the process that
runs the sweep or pytest) sends it cells, enforces the timeout, and scores nothing
itself here: results go to a callback. No candidate code runs in the supervisor.

- A worker that dies (segfault, ``os._exit``, out of memory) or overruns the timeout is
  killed with its process group and every descendant; the cell it was running is an
  ``error`` with the exit status, the phase and the last lines of its log, and the rest
  of its cells go to a new worker.
- A worker that dies while importing its candidate fails all the pair's cells with that
  reason (an import is not retried cell by cell); one that dies before it runs anything
  gets one more try.
- A worker that reports that its candidate changed the process (the floating-point
  environment, NumPy's error handling, library settings, environment variables) is
  retired after that cell: the next cell starts in a fresh worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import multiprocessing.forkserver
import os
import signal
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ._backends import Backend
from ._cell import CellSpec, Raw
from ._worker import _children, _kill, log_tail, probe_main, worker_main

__all__ = ["Supervisor", "probe", "start_server", "supervise"]

_PRELOAD = "conformance._preload"
_PRELOAD_ENV = "CONFORMANCE_PRELOAD"  # the libraries _preload imports (server only)
MEMORY_ENV = "CONFORMANCE_WORKER_MEMORY"  # a worker's limit, in bytes (_worker._start)
_SETUP = ("importing the candidate", "starting the backend")
_server: tuple[str, frozenset[str]] | None = None  # (environment, libraries) it started with
_orphans: list[int] = []  # detached servers, reaped when they exit

OnResult = Callable[[CellSpec, Raw | None, str | None], None]


def _env_key() -> str:
    """The settings a sweep records from the environment (not the whole environment:
    pytest, for one, sets a variable per test)."""
    from ._fingerprint import recorded_environment

    return hashlib.sha256(json.dumps(recorded_environment(), sort_keys=True).encode()).hexdigest()


def _detach(server: Any) -> None:
    """Let the running fork server go without waiting for it: it exits once the
    workers it forked have (each holds its liveness pipe), and the next start makes a
    new one. (``ForkServer._stop`` waits, which deadlocks while a worker is alive.)"""
    fd = getattr(server, "_forkserver_alive_fd", None)
    pid = getattr(server, "_forkserver_pid", None)
    address = getattr(server, "_forkserver_address", None)
    if fd is None or pid is None:
        return
    server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
    os.close(fd)
    if isinstance(address, str) and not address.startswith("\0") and os.path.exists(address):
        os.unlink(address)
    _orphans.append(pid)


def _reap() -> None:
    for pid in list(_orphans):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _orphans.remove(pid)
        except ChildProcessError:
            _orphans.remove(pid)


def _context() -> Any:
    if "forkserver" not in mp.get_all_start_methods():  # no fork (Windows): spawn
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    if _server is None:
        ctx.set_forkserver_preload([_PRELOAD])
    return ctx


def start_server(libraries: Iterable[str] = ()) -> None:
    """Start the fork server now, with ``libraries`` (backend libraries) imported: it
    imports them while the caller works. A server started earlier is restarted when the
    environment changed since (workers must see the environment the sweep records) or
    when it lacks a library."""
    global _server
    ctx = _context()
    if ctx.get_start_method() != "forkserver":
        return
    _reap()
    want = frozenset(libraries)
    key = _env_key()
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    running = getattr(server, "_forkserver_pid", None) is not None
    if _server is not None and running:
        if key == _server[0] and want <= _server[1]:
            return
        _detach(server)
        want |= _server[1] if key == _server[0] else frozenset()
    ctx.set_forkserver_preload([_PRELOAD])
    old = os.environ.get(_PRELOAD_ENV)
    os.environ[_PRELOAD_ENV] = ",".join(sorted(want))
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if old is None:
            os.environ.pop(_PRELOAD_ENV, None)
        else:
            os.environ[_PRELOAD_ENV] = old
    _server = (key, want)


def _describe(code: int | None) -> str:
    if code is None:
        return "worker stopped answering"
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"worker died: signal {-code}{name}"
    return f"worker exited with code {code}"


def kill_tree(proc: Any) -> int | None:
    """Kill a worker, its process group and every descendant; its exit code."""
    pid = proc.pid
    if pid is not None:
        kids = _children(pid)
        kill = getattr(signal, "SIGKILL", signal.SIGTERM)
        try:
            if hasattr(os, "killpg") and os.getpgid(pid) == pid:
                os.killpg(pid, kill)
        except OSError:
            pass
        for p in [pid, *kids]:
            try:
                os.kill(p, kill)
            except OSError:
                pass
    proc.join(5)
    return proc.exitcode  # type: ignore[no-any-return]


@contextlib.contextmanager
def without_main() -> Iterator[None]:
    """Processes started inside do without the caller's ``__main__``: multiprocessing
    would run the main script again in each child (a script that starts a sweep at
    import would start one in every worker; ``python -`` has no file to run at all);
    the harness's children import what they need by module name."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _start_process(proc: Any) -> None:
    with without_main():
        proc.start()


def _spawn(target: Callable[..., Any], args: tuple[Any, ...], memory: int = 0) -> tuple[Any, Any]:
    ctx = _context()
    env = {k: v for k, v in os.environ.items() if k != _PRELOAD_ENV}
    if memory > 0:  # the worker limits its own address space (_worker._start)
        env[MEMORY_ENV] = str(memory)
    args = (*args, (os.getcwd(), list(sys.path), env))
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    try:
        _start_process(proc)
    except Exception:
        # the server died (a library crashed it while preloading): once more without
        # the preload, each worker importing what it needs itself
        ctx.set_forkserver_preload([])
        proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        _start_process(proc)
    child.close()
    return proc, parent


# -- probes -------------------------------------------------------------------------------


def probe(
    backends: Iterable[Backend], timeout: float, log_dir: Path
) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """For each backend, in a process of its own: None or why it cannot run here, and
    its library_info. A probe that crashes or hangs is that backend's reason."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = {}
    for b in backends:
        log = log_dir / f"probe-{_slug(b.name)}.log"
        log.write_bytes(b"")
        running[b.name] = (*_spawn(probe_main, (b, str(log))), log)
    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while running:
        ready = wait(
            [x for p, c, _ in running.values() for x in (c, p.sentinel)],
            timeout=max(0.0, deadline - time.monotonic()),
        )
        for name, (p, c, log) in list(running.items()):
            answered = c in ready or p.sentinel in ready
            if not answered and time.monotonic() < deadline:
                continue
            msg = None
            try:
                msg = c.recv() if answered and c.poll() else None
            except (EOFError, OSError):
                pass
            code = kill_tree(p)  # done, dead or past the deadline: and its children
            c.close()
            del running[name]
            if msg is not None and msg[0] == "probe":
                out[name] = (msg[1], msg[2])
            elif not answered:
                out[name] = (f"probing {name}: no answer after {timeout:g}s", {})
            else:
                tail = log_tail(log)
                out[name] = (
                    f"probing {name}: {_describe(code).replace('worker', 'probe', 1)}"
                    + (f"; last output: {tail}" if tail else ""),
                    {},
                )
    return out


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)[:60]


# -- workers ------------------------------------------------------------------------------


@dataclass
class _Worker:
    group: tuple[str, str]
    proc: Any
    conn: Any
    log: Path
    phase: str = "starting"
    last: float = field(default_factory=time.monotonic)
    current: CellSpec | None = None
    ran: int = 0
    retiring: bool = False


class Supervisor:
    """Workers for (candidate, backend) pairs: ``add`` cells, ``run`` until each has a
    result. ``on_result(spec, raw, None)`` for a cell the worker answered,
    ``on_result(spec, None, reason)`` for one it could not. With ``keep_idle``, a
    pair's worker is kept for the next ``add`` of that pair (the pytest plugin)."""

    def __init__(
        self, *, jobs: int, timeout: float, log_dir: Path, xla_cache: Path,
        on_result: OnResult, on_start: Callable[[CellSpec], None] | None = None,
        keep_idle: int = 0, fresh_per_cell: bool = False,
        target: Callable[..., Any] = worker_main, memory: int = 0,
    ) -> None:  # fmt: skip
        self.target = target  # the worker's main (a test may give one that misbehaves)
        self.memory = memory  # bytes of address space per worker; 0: no limit
        self.jobs, self.timeout = max(1, jobs), timeout
        self.log_dir, self.xla_cache = log_dir, xla_cache
        self.on_result, self.on_start = on_result, on_start
        self.keep_idle, self.fresh_per_cell = keep_idle, fresh_per_cell
        self.pending: dict[tuple[str, str], deque[CellSpec]] = {}
        self.busy: dict[tuple[str, str], _Worker] = {}
        self.idle: dict[tuple[str, str], _Worker] = {}
        self.strikes: dict[tuple[str, str], int] = {}
        self.n_logs = 0

    @staticmethod
    def _group(spec: CellSpec) -> tuple[str, str]:
        return (spec.candidate.name, spec.backend.name)

    def add(self, cells: Iterable[CellSpec]) -> None:
        for s in cells:
            self.pending.setdefault(self._group(s), deque()).append(s)

    # -- life of a worker --------------------------------------------------------------
    def _start(self, g: tuple[str, str], spec: CellSpec) -> _Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.n_logs += 1
        log = self.log_dir / f"worker-{self.n_logs:04d}-{_slug(g[0])}-{_slug(g[1])}.log"
        log.write_bytes(b"")
        proc, conn = _spawn(
            self.target,
            (spec.candidate, spec.backend, str(log), str(self.xla_cache)),
            self.memory,
        )
        return _Worker(g, proc, conn, log)

    def _stop(self, w: _Worker) -> None:
        try:
            w.conn.send(("stop",))
        except OSError:
            pass
        w.proc.join(2)
        kill_tree(w.proc)  # and what the candidate left running
        w.conn.close()

    def _send(self, w: _Worker, spec: CellSpec) -> None:
        w.current, w.last = spec, time.monotonic()
        try:
            w.conn.send(("cell", spec))
        except OSError:
            pass  # its death is seen by the loop

    def _resolve(self, spec: CellSpec, raw: Raw | None, reason: str | None) -> None:
        self.on_result(spec, raw, reason)

    def _fail_group(self, g: tuple[str, str], first: CellSpec | None, reason: str) -> None:
        rest = self.pending.pop(g, deque())
        for s in ([first] if first is not None else []) + list(rest):
            self._resolve(s, None, reason)

    def _lost(self, w: _Worker, why: str) -> None:
        """A worker died or was killed: charge the cell it ran, or the pair."""
        self.busy.pop(w.group, None)
        if w.retiring and w.current is None:
            return
        tail = log_tail(w.log)
        detail = f"; last output: {tail}" if tail else ""
        if w.current is not None and w.phase in _SETUP:
            # an import or a backend that kills its worker kills the next one too
            target = w.current.candidate.target
            self._fail_group(w.group, w.current, f"{why} while {w.phase} ({target}){detail}")
        elif w.current is not None and w.phase == "running this cell":
            self._resolve(w.current, None, f"{why} while running this cell{detail}")
        else:
            # died before it began a cell: once more with a new worker, then never again
            n = self.strikes[w.group] = self.strikes.get(w.group, 0) + 1
            if w.current is not None:
                self.pending.setdefault(w.group, deque()).appendleft(w.current)
            if n >= 2:
                when = "before running any cell" if w.ran == 0 else "between cells"
                self._fail_group(w.group, None, f"{why} {when}, twice{detail}")

    def _on_message(self, w: _Worker, msg: Any) -> None:
        w.last = time.monotonic()
        kind = msg[0]
        if kind == "hello":
            w.phase = "idle"
        elif kind == "phase":
            w.phase = str(msg[1])
        elif kind == "start":
            w.phase = "running this cell"
            if self.on_start is not None and w.current is not None:
                self.on_start(w.current)
        elif kind == "done" and w.current is not None and msg[1] == w.current.key:
            spec, w.current, w.phase = w.current, None, "idle"
            w.ran += 1
            self.strikes.pop(w.group, None)
            raw = msg[2] if isinstance(msg[2], Raw) else None
            self._resolve(spec, raw, None if raw is not None else "worker sent no result")
            if self.fresh_per_cell:
                w.retiring = True
        elif kind == "retire":
            w.retiring = True

    def _step(self) -> None:
        # start workers for pairs with work, up to the job count
        for g in list(self.pending):
            if not self.pending.get(g):
                self.pending.pop(g, None)
                continue
            if g in self.busy:
                continue
            if len(self.busy) >= self.jobs:
                break
            w = self.idle.pop(g, None)
            if w is not None and not w.proc.is_alive():
                kill_tree(w.proc)
                w.conn.close()
                w = None
            if w is None:
                w = self._start(g, self.pending[g][0])
            self.busy[g] = w
        # hand out cells
        for g, w in list(self.busy.items()):
            if w.current is None and w.phase != "starting" and not w.retiring:
                q = self.pending.get(g)
                if q:
                    self._send(w, q.popleft())
                else:
                    del self.busy[g]
                    self.pending.pop(g, None)
                    if len(self.idle) < self.keep_idle:
                        self.idle[g] = w
                    else:
                        self._stop(w)
        if not self.busy:
            return
        ready = wait(
            [x for w in self.busy.values() for x in (w.conn, w.proc.sentinel)], timeout=0.5
        )
        for w in list(self.busy.values()):
            if w.conn in ready:
                try:
                    while w.conn.poll():
                        self._on_message(w, w.conn.recv())
                except (EOFError, OSError):
                    self._lost(w, _describe(kill_tree(w.proc)))
                    continue
            if w.proc.sentinel in ready and not w.conn.poll():
                self._lost(w, _describe(kill_tree(w.proc)))
                continue
            if w.retiring and w.current is None:
                self.busy.pop(w.group, None)
                kill_tree(w.proc)
                continue
            if (w.current is not None or w.phase == "starting") and (
                time.monotonic() - w.last > self.timeout
            ):
                kill_tree(w.proc)
                self._lost(w, f"timeout: no result after {self.timeout:g}s")

    def run(self) -> None:
        """Until every added cell has had its ``on_result``."""
        while self.pending or self.busy:
            self._step()

    def close(self) -> None:
        for w in [*self.busy.values(), *self.idle.values()]:
            kill_tree(w.proc)
            w.conn.close()
        self.busy.clear()
        self.idle.clear()
        kill_strays()


def kill_strays() -> int:
    """Kill what the fork server adopted (it is the subreaper of the workers: a
    process detached from a worker that died lands there) apart from its live
    workers; how many. Called when a supervisor closes, with its workers gone."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if not pid:
        return 0
    workers = {p.pid for p in multiprocessing.active_children() if p.pid is not None}
    theirs = {kid for w in workers for kid in _children(w)}
    strays = [kid for kid in _children(pid) if kid not in workers and kid not in theirs]
    _kill(strays)
    return len(strays)


def supervise(cells: Iterable[CellSpec], **kwargs: Any) -> None:
    """Every cell under a ``Supervisor(**kwargs)`` until each has had its
    ``on_result``; its workers are gone after, whatever happened."""
    sup = Supervisor(**kwargs)
    try:
        sup.add(cells)
        sup.run()
    finally:
        sup.close()
