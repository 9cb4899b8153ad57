"""Running candidates where they cannot reach each other or the supervisor.

The model: every (candidate, backend) pair gets a worker process of its own, forked from
a server that has imported the harness and the backend libraries once
(:mod:`multiprocessing`'s forkserver, with ``conformance.execution._preload``). A worker runs the
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
- Nothing a worker sends is unpickled (``_wire``): a message that breaks the format ends
  the worker, and its cell is an ``error`` that says so. A cell's deadline is the
  supervisor's clock: it is renewed only when the worker moves on (a phase it had not
  reached, a block it had not sent), never by a message repeated.
- A streamed family's blocks (the exhaustive float32 chunks) are scored as they come by
  a pool of scoring processes the supervisor starts (``jobs`` of them; no candidate
  code runs there), and the cell's result goes out once the worker is done and every
  block is scored.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import multiprocessing as mp
import multiprocessing.forkserver
import os
import shutil
import signal
import sys
import tempfile
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..backends._backends import Backend
from . import _sandbox
from ._cell import CellSpec, Raw
from ._limits import physical_memory
from ._wire import MAX_FRAME, Message, ProtocolError, unpack
from ._worker import (
    PassFd,
    _children,
    _kill,
    candidates_probe_main,
    log_tail,
    probe_main,
    scratch_of,
    worker_main,
)  # fmt: skip

__all__ = [
    "Supervisor", "probe", "probe_candidates", "sandbox_root", "start_server", "supervise",
]  # fmt: skip

_PRELOAD = "conformance.execution._preload"
_PRELOAD_ENV = "CONFORMANCE_PRELOAD"  # the libraries _preload imports (server only)
MEMORY_ENV = "CONFORMANCE_WORKER_MEMORY"  # a worker's limit, in bytes (_worker._start)
_ROOT_ENV = "CONFORMANCE_SANDBOX_ROOT"  # where the server's sandbox allows writes (server only)
_root: str | None = None
_SETUP = ("importing the candidate", "starting the backend")
_server: tuple[str, frozenset[str]] | None = None  # (environment, libraries) it started with
_orphans: list[int] = []  # detached servers, reaped when they exit

OnResult = Callable[[CellSpec, Raw | None, str | None], None]


def _env_key() -> str:
    """The settings a sweep records from the environment (not the whole environment:
    pytest, for one, sets a variable per test)."""
    from ._fingerprint import recorded_environment

    return hashlib.sha256(json.dumps(recorded_environment(), sort_keys=True).encode()).hexdigest()


def sandbox_root() -> str:
    """This process's scratch root: the one directory the fork server and its workers
    may write beneath (each worker in a directory of its own, see _worker); made once,
    removed when the process exits."""
    global _root
    if _root is None or not os.path.isdir(_root):
        _root = tempfile.mkdtemp(prefix="conformance-")
        atexit.register(shutil.rmtree, _root, True)
    return _root


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
    root = sandbox_root()
    # the server's sandbox allows writes beneath the root (and the directories a user
    # added) alone: a server started for others is not this one
    key = _env_key() + root + os.environ.get(_sandbox.WRITABLE_ENV, "")
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    running = getattr(server, "_forkserver_pid", None) is not None
    if _server is not None and running:
        if key == _server[0] and want <= _server[1]:
            return
        _detach(server)
        want |= _server[1] if key == _server[0] else frozenset()
    ctx.set_forkserver_preload([_PRELOAD])
    old = {k: os.environ.get(k) for k in (_PRELOAD_ENV, _ROOT_ENV)}
    os.environ[_PRELOAD_ENV] = ",".join(sorted(want))
    os.environ[_ROOT_ENV] = root
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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


def _death(code: int | None, log: Path) -> str:
    """How a process ended, and what it last wrote to its log."""
    tail = log_tail(log)
    return _describe(code) + (f"; last output: {tail}" if tail else "")


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
    if pid is not None and _root is not None:
        shutil.rmtree(scratch_of(_root, pid), ignore_errors=True)
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


def _spawn(
    target: Callable[..., Any], args: tuple[Any, ...], log: Path, memory: int = 0,
    fresh: bool = False,
) -> tuple[Any, Any]:  # fmt: skip
    """A process running ``target(connection, *args, log's fd, where)``; its
    connection. The log file is opened here and handed over open. ``fresh``: a new
    interpreter (spawned), not a fork of the server with its preloaded libraries."""
    ctx = mp.get_context("spawn") if fresh else _context()
    env = {k: v for k, v in os.environ.items() if k not in (_PRELOAD_ENV, _ROOT_ENV)}
    if memory > 0:  # the worker limits its own address space (_worker._start)
        env[MEMORY_ENV] = str(memory)
    parent, child = ctx.Pipe(duplex=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    try:
        args = (child, *args, PassFd(fd), (os.getcwd(), list(sys.path), env))
        proc = ctx.Process(target=target, args=args, daemon=True)
        try:
            _start_process(proc)
        except Exception:
            # the server died (a library crashed it while preloading): once more
            # without the preload, each worker importing what it needs itself
            ctx.set_forkserver_preload([])
            proc = ctx.Process(target=target, args=args, daemon=True)
            _start_process(proc)
    finally:
        os.close(fd)
    child.close()
    return proc, parent


# -- probes -------------------------------------------------------------------------------


def _answers(
    running: dict[str, tuple[Any, Any, Path]], timeout: float, read: Callable[[Any], Any]
) -> dict[str, tuple[Any, str]]:
    """Each process's one answer (``read(connection)``; None where it sent none), and
    why there is none: its death (with its log's last lines) or the deadline. Each is
    killed with its children once it answered, died or ran past the deadline."""
    out: dict[str, tuple[Any, str]] = {}
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
                if answered and c.poll():
                    msg = read(c)
            except (EOFError, OSError, ProtocolError):
                pass
            code = kill_tree(p)  # done, dead or past the deadline: and its children
            c.close()
            del running[name]
            out[name] = (msg, _death(code, log) if answered else f"no answer after {timeout:g}s")
    return out


def probe(
    backends: Iterable[Backend], timeout: float, log_dir: Path
) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """For each backend, in a process of its own: None or why it cannot run here, and
    its library_info. A probe that crashes or hangs is that backend's reason."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = {}
    for b in backends:
        log = log_dir / f"probe-{_slug(b.name)}.log"
        running[b.name] = (*_spawn(probe_main, (b,), log), log)
    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for name, (msg, why) in _answers(running, timeout, lambda c: c.recv()).items():
        if msg is not None and msg[0] == "probe":
            out[name] = (msg[1], msg[2])
        else:
            out[name] = (f"probing {name}: {why.replace('worker', 'probe', 1)}", {})
    return out


def probe_candidates(
    cands: Iterable[Any], timeout: float, log_dir: Path
) -> dict[str, tuple[str | None, bool, list[str]]]:
    """For each candidate, imported in a sandboxed process of its own (as its workers
    will): (the import's error or None, whether its function was found, the files of
    the modules it loaded). One new interpreter, not the fork server, forks a child a
    candidate (_worker.candidates_probe_main): what a server preloaded for one sweep
    and not another (torch, and what torch imports) must not change a closure. A
    probe that dies or hangs says so as its error."""
    cands = list(cands)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "candidates-probe.log"
    proc, conn = _spawn(candidates_probe_main, (cands, sandbox_root(), timeout), log, fresh=True)
    out: dict[str, tuple[str | None, bool, list[str]]] = {}
    names = {c.uid for c in cands}
    deadline = time.monotonic() + timeout + 120  # and the interpreter's own start
    why = f"no answer after {timeout:g}s"
    try:
        while names - out.keys():
            ready = wait([conn, proc.sentinel], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                m = unpack(conn.recv_bytes(MAX_FRAME))
            except (EOFError, OSError, ProtocolError):
                why = _death(proc.exitcode, log)
                break
            f = m.fields
            if m.kind == "probed" and f["name"] in names:
                out[f["name"]] = (f["error"], bool(f["found"]), list(f["files"]))
    finally:
        kill_tree(proc)
        conn.close()
    for n in names - out.keys():
        out[n] = (f"import: {why}", False, [])
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
    reached: set[str] = field(default_factory=set)  # phases and blocks of this cell


@dataclass
class _Stream:
    """A streamed cell's blocks in the scoring pool, and the worker's result once done."""

    spec: CellSpec
    futures: dict[int, Any] = field(default_factory=dict)
    raw: Raw | None = None


_PER_STEP = 64  # messages read from one worker before the others get their turn
_BLOCK_BYTES = 3 * (8 << 20)  # a queued block of answers, in its copies (frame, pickle, pool)


def _queue_limit(jobs: int) -> int:
    """Blocks queued for the scorers: 8 a scorer (at 2 a scorer the workers waited on
    them, and the exhaustive family took 1.25 times as long here; at 8, 1.05 to 1.2),
    within an eighth of the machine's memory."""
    ram = physical_memory() or 8 << 30
    return max(2, min(8 * jobs, ram // 8 // _BLOCK_BYTES))


def _scorer_start() -> None:
    """A scoring process keeps the memory it frees (glibc's malloc): a block's scoring
    allocates about 44 MiB of temporaries, which glibc would otherwise map and unmap
    again for every block, a quarter of the time in page faults (measured here)."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: large blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: kept, not given back
        libc.mallopt(-2, 1 << 26)  # M_TOP_PAD
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Workers for (candidate, backend) pairs: ``add`` cells, ``run`` until each has a
    result. ``on_result(spec, raw, None)`` for a cell the worker answered,
    ``on_result(spec, None, reason)`` for one it could not. With ``keep_idle``, the
    workers of the ``keep_idle`` pairs used last are kept for the next ``add`` of their
    pair (the pytest plugin, a cluster's agent)."""

    def __init__(
        self, *, jobs: int, timeout: float, log_dir: Path, on_result: OnResult,
        on_start: Callable[[CellSpec], None] | None = None,
        keep_idle: int = 0, fresh_per_cell: bool = False,
        target: Callable[..., Any] = worker_main, memory: int = 0,
    ) -> None:  # fmt: skip
        self.target = target  # the worker's main (a test may give one that misbehaves)
        self.memory = memory  # bytes of address space per worker; 0: no limit
        self.jobs, self.timeout = max(1, jobs), timeout
        self.log_dir = log_dir
        self.on_result, self.on_start = on_result, on_start
        self.keep_idle, self.fresh_per_cell = keep_idle, fresh_per_cell
        self.pending: dict[tuple[str, str], deque[CellSpec]] = {}
        self.busy: dict[tuple[str, str], _Worker] = {}
        self.idle: dict[tuple[str, str], _Worker] = {}
        self.strikes: dict[tuple[str, str], int] = {}
        self.n_logs = 0
        self.streams: dict[str, _Stream] = {}
        self.queue_limit = _queue_limit(self.jobs)  # blocks queued for the scorers
        self.pool: Any = None  # the scoring processes, started at the first block
        self.wake_r, self.wake_w = os.pipe()  # a block scored wakes the loop
        os.set_blocking(self.wake_w, False)

    @staticmethod
    def _group(spec: CellSpec) -> tuple[str, str]:
        return (spec.candidate.uid, spec.backend.name)

    def add(self, cells: Iterable[CellSpec]) -> None:
        for s in cells:
            self.pending.setdefault(self._group(s), deque()).append(s)

    # -- life of a worker --------------------------------------------------------------
    def _start(self, g: tuple[str, str], spec: CellSpec) -> _Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.n_logs += 1
        log = self.log_dir / f"worker-{self.n_logs:04d}-{_slug(g[0])}-{_slug(g[1])}.log"
        proc, conn = _spawn(
            self.target, (spec.candidate, spec.backend, sandbox_root()), log, self.memory
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
        w.reached = set()
        try:
            w.conn.send(("cell", spec))
        except OSError:
            pass  # its death is seen by the loop

    def _resolve(self, spec: CellSpec, raw: Raw | None, reason: str | None) -> None:
        st = self.streams.pop(spec.key, None)
        if st is not None:  # the scores of its blocks are no longer wanted
            for f in st.futures.values():
                f.cancel()
        self.on_result(spec, raw, reason)

    # -- streamed cells ----------------------------------------------------------------
    def _pool(self) -> Any:
        if self.pool is None:
            from concurrent.futures import ProcessPoolExecutor

            # spawned, not forked from the workers' server: scorers are outside the
            # workers' sandbox (the pool's locks need /dev/shm) and share nothing with them
            with without_main():
                self.pool = ProcessPoolExecutor(
                    max_workers=self.jobs, mp_context=mp.get_context("spawn"),
                    initializer=_scorer_start,
                )  # fmt: skip
        return self.pool

    def _wake(self, _: Any) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:  # full: the loop is awake already
            pass

    def _block(self, w: _Worker, msg: Message) -> None:
        spec = w.current
        stream = None if spec is None else spec.family.stream
        i = msg.fields["index"]
        if spec is None or stream is None or msg.fields["key"] != spec.key:
            raise ProtocolError("a block outside a streamed cell")
        if not i < stream.n_blocks or f"block {i}" in w.reached:
            raise ProtocolError(f"block {i} of {stream.n_blocks}, or sent twice")
        w.reached.add(f"block {i}")
        w.last = time.monotonic()
        st = self.streams.setdefault(spec.key, _Stream(spec))
        with without_main():  # the pool spawns its processes as blocks come
            fut = self._pool().submit(stream.score, i, msg.arrays[0], spec.function)
        fut.add_done_callback(self._wake)
        st.futures[i] = fut

    def _streamed(self, w: _Worker, spec: CellSpec, raw: Raw) -> bool:
        """A streamed cell's worker is done: its result waits for its blocks' scores."""
        if spec.family.stream is None or raw.error is not None:
            return False
        st = self.streams.setdefault(spec.key, _Stream(spec))
        st.raw = raw
        return True

    def _scored(self) -> None:
        """Every streamed cell whose worker is done and whose blocks are all scored."""
        for st in list(self.streams.values()):
            if st.raw is None or not all(f.done() for f in st.futures.values()):
                continue
            stream, raw = st.spec.family.stream, st.raw
            try:
                fn = st.spec.function  # scored for the cell's function, never the worker's say
                parts = [
                    st.futures[i].result() if i in st.futures else stream.score(i, None, fn)
                    for i in range(stream.n_blocks)
                ]
                raw.summary, said = stream.summary(parts, fn)
                raw.findings += said
            except Exception as exc:  # the harness's own fault: said, never hidden
                raw.error = f"scoring failed: {type(exc).__name__}: {exc}"
            self._resolve(st.spec, raw, None)

    def _busy_scoring(self) -> bool:
        """Blocks waiting for a scorer beyond what the pool may queue: read no more for
        now (the workers wait at their next block)."""
        waiting = sum(not f.done() for st in self.streams.values() for f in st.futures.values())
        return waiting >= self.queue_limit

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

    def _progress(self, w: _Worker, what: str) -> None:
        """The deadline renews when the worker reaches what it had not reached."""
        if what not in w.reached:
            w.reached.add(what)
            w.last = time.monotonic()

    def _on_message(self, w: _Worker, msg: Message) -> None:
        kind, f = msg.kind, msg.fields
        if kind == "hello":
            self._progress(w, "hello")
            if w.phase == "starting":
                w.phase = "idle"
        elif kind == "phase":
            if w.current is None:
                raise ProtocolError("a phase outside a cell")
            self._progress(w, f"phase {f['what']}")
            w.phase = f["what"] if f["what"] in _SETUP else "an unknown phase"
        elif kind == "start":
            if w.current is None or f["key"] != w.current.key:
                raise ProtocolError("a start of a cell it was not given")
            self._progress(w, "start")
            w.phase = "running this cell"
            if self.on_start is not None and "started" not in w.reached:
                w.reached.add("started")
                self.on_start(w.current)
        elif kind == "block":
            self._block(w, msg)
        elif kind == "done":
            if w.current is None or f["key"] != w.current.key:
                raise ProtocolError("a result of a cell it was not given")
            spec, w.current, w.phase = w.current, None, "idle"
            w.last = time.monotonic()
            w.ran += 1
            self.strikes.pop(w.group, None)
            n_signs, n = f["signs"], len(msg.arrays)
            if n_signs and 2 * n_signs != n:
                raise ProtocolError(f"{n_signs} signs beside {n - n_signs} outputs")
            raw = Raw(
                outputs=msg.arrays[: n - n_signs], signs=msg.arrays[n - n_signs :],
                findings=f["findings"], error=f["error"], seconds=f["seconds"],
                notes=f["notes"], host=f["host"],
            )  # fmt: skip
            if not self._streamed(w, spec, raw):
                self._resolve(spec, raw, None)
            if self.fresh_per_cell:
                w.retiring = True
        elif kind == "retire":
            w.retiring = True

    def _read(self, w: _Worker) -> str | None:
        """Up to _PER_STEP of the worker's messages; why it must go, if it must."""
        try:
            for _ in range(_PER_STEP):
                if not w.conn.poll():
                    break
                try:
                    frame = w.conn.recv_bytes(MAX_FRAME)
                except OSError as exc:
                    if "bad message length" in str(exc):
                        raise ProtocolError(f"a message over {MAX_FRAME} bytes") from None
                    raise
                self._on_message(w, unpack(frame))
        except ProtocolError as exc:
            kill_tree(w.proc)
            return f"worker broke the protocol: {exc}"
        except (EOFError, OSError):
            # the connection ended: a worker that died, or one whose candidate closed
            # its file descriptors (then the kill below is not its cause)
            w.proc.join(1)
            code = w.proc.exitcode
            kill_tree(w.proc)
            if code is None:
                return "worker closed its connection to the supervisor (killed)"
            return _describe(code)
        return None

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
                    if self.keep_idle:
                        self.idle[g] = w  # the pairs used last are kept
                        while len(self.idle) > self.keep_idle:
                            self._stop(self.idle.pop(next(iter(self.idle))))
                    else:
                        self._stop(w)
        self._scored()
        if not self.busy and not self.streams:
            return
        paused = self._busy_scoring()  # the scorers are behind: the workers wait
        watch = [
            x
            for w in self.busy.values()
            for x in (w.proc.sentinel,) + (() if paused else (w.conn,))
        ]
        ready = wait([*watch, self.wake_r], timeout=0.5)
        if self.wake_r in ready:
            try:
                os.read(self.wake_r, 4096)
            except OSError:
                pass
        for w in list(self.busy.values()):
            if paused:
                w.last = time.monotonic()  # the harness's wait is not the candidate's time
            if w.conn in ready:
                why = self._read(w)
                if why is not None:
                    self._lost(w, why)
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
        while self.pending or self.busy or self.streams:
            self._step()

    def close(self) -> None:
        for w in [*self.busy.values(), *self.idle.values()]:
            kill_tree(w.proc)
            w.conn.close()
        self.busy.clear()
        self.idle.clear()
        self.streams.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.wake_r = self.wake_w = -1
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
