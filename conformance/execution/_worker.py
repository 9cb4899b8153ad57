"""The worker process: one candidate on one backend, its cells one after another.

A worker is forked from a preloaded server (see ``_isolation``), so that it starts in a
few milliseconds in the same state as every other worker. It leads its own process
group (the supervisor kills the group, and whatever the candidate started, at a
timeout), writes its standard output and error to a log file of its own (a child the
candidate leaves behind holds that file, never the supervisor's terminal), and ends with
``os._exit`` (threads the candidate left running cannot keep it alive).

Protocol, over one duplex connection: the supervisor sends ``("cell", spec)`` or
``("stop",)``; the worker answers in the data-only format of ``_wire`` (nothing it
sends is unpickled): ``hello`` once, then per cell ``phase`` while it imports the
candidate, ``start``, ``block`` for each block of a streamed family's answers, and
``done`` with the cell's outputs and findings, and ``retire`` when the candidate
changed the process in a way the next cell must not inherit.
"""

from __future__ import annotations

import faulthandler
import functools
import hashlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..backends import _fpenv
from ..backends._backends import Backend
from ..functions._candidates import Candidate, missing_function
from . import _limits, _sandbox
from ._cell import CellSpec, Raw, execute, load_error
from ._wire import MAX_FRAME, ProtocolError, clip, pack, unpack

__all__ = [
    "PassFd", "adopt_orphans", "candidates_probe_main", "die_with_parent", "exit_with_parent",
    "guard_fork_server", "library_info", "loaded_files", "probe_main", "worker_main",
]  # fmt: skip


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False elsewhere or where it fails"""
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        return int(ctypes.CDLL(None).prctl(option, value)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """SIGKILL to this process when its parent dies (Linux; elsewhere nothing)."""
    _prctl(_PR_SET_PDEATHSIG, 9)


def adopt_orphans() -> None:
    """This process becomes the child subreaper of its subtree (Linux): a process a
    descendant detaches (fork, setsid, fork) is reparented here, not to init, so that
    the guard after each cell sees it and kill_tree reaches it."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def exit_with_parent(code: int, before: Callable[[], None] | None = None) -> None:
    """Exit with ``code`` (after ``before``) when the parent process dies, even by
    SIGKILL: PR_SET_PDEATHSIG sends SIGTERM (Linux; elsewhere nothing). The signal also
    comes when the thread that started this process ends while the parent lives on;
    then the parent is the same, and nothing happens."""
    if sys.platform != "linux":
        return
    import signal

    parent = os.getppid()

    def stop(signum: int, frame: Any) -> None:
        if os.getppid() == parent:
            return
        if before is not None:
            before()
        os._exit(code)

    signal.signal(signal.SIGTERM, stop)
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:  # the parent died before the request took
        stop(int(signal.SIGTERM), None)


def guard_fork_server() -> None:
    """In the fork server (from _preload): when the sweep that started it dies, even by
    SIGKILL, it kills every process below it (the workers, what they started, and the
    daemons they detached, which it adopts as subreaper) and exits. Before, a hanging
    worker held the server's liveness pipe open, and the server waited for it while
    the worker waited for the server's death: both, and their children, outlived a
    kill -9 of run."""
    adopt_orphans()
    exit_with_parent(0, lambda: _kill(_children(os.getpid())))


class PassFd:
    """An open file descriptor handed to a process that multiprocessing starts: it is
    duplicated into the child as the child's connections are (the fork server receives
    it over its socket). A worker writes its log through one, opened by the
    supervisor, so that neither the fork server nor the worker needs the right to
    open anything in the results directory."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        from multiprocessing.reduction import DupFd

        return (_fd_of, (DupFd(self.fd),))


def _fd_of(dup: Any) -> int:
    return int(dup.detach())


def _start(log: PassFd | int, where: tuple[str, list[str], dict[str, str]] | None = None) -> None:
    """Own process group, output to the log, tracebacks of fatal signals into it; the
    supervisor's working directory, import path and environment as they are now (the
    fork server has those of the moment it started)."""
    try:
        if hasattr(os, "setsid"):
            os.setsid()
    except OSError:  # already a group leader
        pass
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server's handler is its own
    die_with_parent()  # the fork server, which dies with the sweep
    adopt_orphans()
    if where is not None:
        cwd, path, env = where
        try:
            os.chdir(cwd)
        except OSError:
            pass
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(env)
    _limits.limit_memory(os.environ.pop("CONFORMANCE_WORKER_MEMORY", ""))
    fd = log.fd if isinstance(log, PassFd) else log
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable(file=sys.stderr, all_threads=True)


def scratch_of(root: str, pid: int) -> str:
    """A worker's own directory beneath the sweep's sandbox root: its TMPDIR, the one
    place it may write (removed by the supervisor when the worker ends)."""
    return os.path.join(root, f"worker-{pid}")


def _enter_sandbox(root: str, cand: Candidate, b: Backend | None) -> str | None:
    """The worker's own sandbox layer (see _sandbox), before the candidate is
    imported: writes only beneath its scratch directory and its candidate's compile
    caches (XLA's, CuPy's, CUDA's, Triton's: per candidate, so that one cannot plant a
    compiled kernel another loads). None, or why it could not be applied."""
    if not root:
        return None
    scratch = scratch_of(root, os.getpid())
    caches = os.path.join(root, "caches", hashlib.sha256(cand.uid.encode()).hexdigest()[:16])
    try:
        os.makedirs(scratch, exist_ok=True)
        os.makedirs(caches, exist_ok=True)
    except OSError as exc:
        return f"the worker's scratch directory could not be made: {exc}"
    os.environ.update(
        TMPDIR=scratch, XDG_CACHE_HOME=caches, CUPY_CACHE_DIR=os.path.join(caches, "cupy"),
        CUDA_CACHE_PATH=os.path.join(caches, "cuda"),
        TRITON_CACHE_DIR=os.path.join(caches, "triton"),
    )  # fmt: skip
    tempfile.tempdir = None  # tempfile reads TMPDIR again
    if b is not None and b.library == "jax":
        _persistent_xla_cache(os.path.join(caches, "xla"))
    try:
        _sandbox.restrict([scratch, caches, *_sandbox.extra_writable()])
    except OSError as exc:
        return f"the worker's sandbox could not be applied: {exc}"
    return None


def _finish(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


# -- what a candidate must leave as it found it -------------------------------------------


def _library_state() -> dict[str, Any]:
    """Process-wide settings of the loaded libraries that change later results."""
    s: dict[str, Any] = {"numpy errstate": dict(sorted(np.geterr().items()))}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            s["torch threads"] = torch.get_num_threads()
            s["torch default dtype"] = str(torch.get_default_dtype())
            s["torch deterministic"] = torch.are_deterministic_algorithms_enabled()
            s["torch float32 matmul precision"] = torch.get_float32_matmul_precision()
        except Exception:
            pass
    jax = sys.modules.get("jax")
    if jax is not None:
        for name in (
            "jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
            "jax_disable_jit", "jax_numpy_dtype_promotion",
        ):  # fmt: skip
            try:
                s[name] = getattr(jax.config, name)
            except Exception:
                pass
    dask = sys.modules.get("dask")
    if dask is not None and hasattr(dask, "config"):
        try:
            s["dask scheduler"] = repr(dask.config.get("scheduler", None))
        except Exception:
            pass
    return s


# The settings' values in a library as it is imported, for a library that the
# candidate imports only when called (absent from the snapshot): a change is judged
# against these, not against its absence
_DEFAULTS: dict[str, Any] = {
    "torch default dtype": "torch.float32",
    "torch deterministic": False,
    "torch float32 matmul precision": "highest",
    "jax_disable_jit": False,
    "jax_numpy_rank_promotion": "allow",
    "jax_default_matmul_precision": None,
    "jax_numpy_dtype_promotion": "standard",
    "jax_enable_x64": os.environ.get("JAX_ENABLE_X64", "").lower() in ("1", "true", "yes"),
}


class _Guard:
    """The process as the worker left it before the first cell; after each cell, what
    the candidate changed (findings, where the change is a defect of the candidate, and
    the reason to retire the worker)."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.state = _library_state()

    def check(self, raw: Raw) -> str | None:
        changed = []
        state = _library_state()
        for k in state.keys() - self.state.keys():  # a library imported since
            self.state[k] = _DEFAULTS.get(k, state[k])
        for k in sorted(set(state) | set(self.state)):
            if state.get(k) != self.state.get(k):
                changed.append(f"{k} {self.state.get(k)!r} -> {state.get(k)!r}")
        if state["numpy errstate"] != self.state["numpy errstate"]:
            np.seterr(**self.state["numpy errstate"])
            raw.findings.append("left NumPy's floating-point error handling changed")
        env = dict(os.environ)
        if env != self.environ:
            keys = sorted(k for k in {*env, *self.environ} if env.get(k) != self.environ.get(k))
            changed.append(f"environment variables {', '.join(keys[:5])}")
        kids = _children(os.getpid())
        if kids:
            _kill(kids)
            raw.notes.append(f"left {len(kids)} child processes running (killed)")
        if changed:
            why = "changed " + "; ".join(changed)
            raw.notes.append(f"worker retired: {why}")
            return why
        return None


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    try:
        parents: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat", "rb") as f:
                        stat = f.read()
                    fields = stat[stat.rindex(b")") + 2 :].split()
                    if fields[0] != b"Z":  # zombies are dead already
                        parents[int(d)] = int(fields[1])
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        return []
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _kill(pids: list[int]) -> None:
    import signal

    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


# -- the worker ---------------------------------------------------------------------------


def _persistent_xla_cache(path: str) -> None:
    """XLA's compilations on disk, in the candidate's cache directory under the sweep's
    scratch root: a later worker of the same candidate (after a retirement or a crash)
    loads them instead of compiling every shape again. They last as long as the sweep's
    process: a cache that outlived it would be one that every candidate could write."""
    try:
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception:  # no JAX or an older one: the cells say so themselves
        pass


def _warm(b: Backend) -> None:
    """The backend's own lazy start (thread pools, the XLA client) before the first
    cell, so that the guard's snapshot includes it and timings exclude it."""
    x = np.zeros(4, dtype=np.float32)
    with b.context():
        b.to_numpy(b.from_numpy(x))


def worker_main(
    conn: Any, cand: Candidate, b: Backend, root: str, log: PassFd | int,
    where: tuple[str, list[str], dict[str, str]] | None = None,
) -> NoReturn:  # fmt: skip
    code = 0
    try:
        _start(log, where)
        os.environ.setdefault("SCIPY_ARRAY_API", "1")
        failure: str | None = _enter_sandbox(root, cand, b)
        say = _sayer(conn)
        say("hello", pid=os.getpid())
        fn: Callable[..., Any] | None = None
        guard: _Guard | None = None
        at_import: list[str] = []
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the supervisor is gone
                break
            if msg[0] != "cell":
                break
            spec: CellSpec = msg[1]
            if guard is None:
                say("phase", what="importing the candidate")
                env = _fpenv.capture()  # before the import: a module may change it there
                try:
                    if failure is None:
                        fn = cand.load()
                except (Exception, SystemExit) as exc:
                    failure = load_error(spec, exc)
                changed = env.differences(_fpenv.capture())
                if changed:  # undone, and a finding of every cell this worker runs
                    env.restore()
                    at_import.append(
                        "changed the floating-point environment when imported: "
                        + ", ".join(changed)
                    )
                say("phase", what="starting the backend")
                try:
                    _warm(b)
                except Exception as exc:
                    reason = f"backend {b.name} failed to start: {type(exc).__name__}: {exc}"
                    failure = failure or reason
                guard = _Guard()
            say("start", key=spec.key)
            if failure is not None or fn is None:
                raw = Raw(error=failure or "no candidate")
            else:
                raw = execute(spec, fn, functools.partial(_send_block, say, spec.key))
            raw.findings[:0] = at_import
            why = guard.check(raw)
            say(
                "done", raw.outputs + raw.signs, key=spec.key, findings=clip(raw.findings),
                notes=clip(raw.notes), error=None if raw.error is None else clip(raw.error),
                seconds=raw.seconds, host=clip(raw.host), signs=len(raw.signs),
            )  # fmt: skip
            if why is not None:
                say("retire", why=clip(why))
                break
    except BaseException:
        traceback.print_exc()
        code = 70
    _finish(code)


def _send_block(say: Callable[..., None], key: str, i: int, enc: Any) -> None:
    say("block", [enc], key=key, index=i)


def _sayer(conn: Any) -> Callable[..., None]:
    def say(kind: str, arrays: Any = None, **fields: Any) -> None:
        conn.send_bytes(pack(kind, arrays, **fields))

    return say


# -- probes -------------------------------------------------------------------------------


def _stdlib() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(
        os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths
    )


def loaded_files() -> list[str]:
    """Where this process's modules came from, outside the standard library: each
    file, except that a package installed in site-packages is its top-level folder
    (its distribution's version identifies it; see _judge.closure_digest)."""
    std = _stdlib()
    out: set[str] = set()
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if not isinstance(f, str) or not f:
            continue
        f = os.path.realpath(f)
        if f.startswith(std) and "site-packages" not in f and "dist-packages" not in f:
            continue
        parts = f.split(os.sep)
        for i, p in enumerate(parts):
            if p in ("site-packages", "dist-packages") and i + 1 < len(parts):
                f = os.sep.join(parts[: i + 2])
                break
        out.add(f)
    return sorted(out)


def _probe_one(w: int, cand: Candidate, root: str) -> NoReturn:
    """In a child of the candidates' probe: this candidate imported in a worker's
    sandbox; what it loaded, written to ``w`` (data only)."""
    code = 0
    try:
        os.setsid()
        error = _enter_sandbox(root, cand, None)
        found = 0
        if error is None:
            try:
                cand.load()
                found = 1
            except (Exception, SystemExit) as exc:
                what = "function" if missing_function(exc, cand.target) else "import"
                error = f"{what}: {type(exc).__name__}: {exc}"
        data = pack("candidate", error=None if error is None else clip(error), found=found,
                    files=clip(loaded_files()))  # fmt: skip
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
    except BaseException:
        traceback.print_exc()
        code = 70
    _finish(code)


def candidates_probe_main(
    conn: Any, cands: list[Candidate], root: str, timeout: float, log: PassFd | int,
    where: tuple[str, list[str], dict[str, str]] | None = None,
) -> NoReturn:  # fmt: skip
    """A new interpreter that has imported the harness alone: for each candidate, a
    child of its own (forked, sandboxed) imports it, and says whether that worked,
    whether the function is there, and the files of the modules loaded (its import
    closure, for the judge's digest). Being a new interpreter, not the fork server, it
    has not preloaded what one sweep's libraries pulled in and another's did not. A
    child past ``timeout`` is killed. One ``probed`` message a candidate."""
    import select
    import signal

    code = 0
    try:
        _start(log, where)
        os.environ.setdefault("SCIPY_ARRAY_API", "1")
        say = _sayer(conn)
        running: dict[int, tuple[int, Candidate, bytearray, float]] = {}
        for c in cands:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _probe_one(w, c, root)
            os.close(w)
            running[r] = (pid, c, bytearray(), time.monotonic() + timeout)
        while running:
            wait_s = max(0.0, min(d for *_, d in running.values()) - time.monotonic())
            ready, _, _ = select.select(list(running), [], [], wait_s)
            for r in list(running):
                pid, c, got, deadline = running[r]
                chunk = os.read(r, 1 << 20) if r in ready else None
                if chunk and len(got) + len(chunk) <= MAX_FRAME:
                    got += chunk
                    continue
                if chunk is None and time.monotonic() < deadline:
                    continue
                # ended (EOF), over the size, or past the deadline
                del running[r]
                os.close(r)
                late = chunk is None
                for kill, target in ((os.killpg, pid), (os.kill, pid)):
                    try:
                        kill(target, signal.SIGKILL)
                    except OSError:
                        pass
                _, status = os.waitpid(pid, 0)
                error, found, files = f"import: no answer after {timeout:g}s", 0, []
                if not late:
                    try:
                        m = unpack(bytes(got))
                        if m.kind != "candidate":
                            raise ProtocolError(m.kind)
                        error, found, files = (
                            m.fields["error"],
                            m.fields["found"],
                            m.fields["files"],
                        )
                    except ProtocolError:
                        why = os.waitstatus_to_exitcode(status)
                        error = f"import: the probe ended with {why} and no answer"
                say("probed", name=c.uid, error=error, found=found, files=files)
    except BaseException:
        traceback.print_exc()
        code = 70
    _finish(code)


def _isa() -> str:
    """The machine's vector instruction set, from the CPU's own flags (the names of
    XLA's --xla_cpu_max_isa)."""
    machine = platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    for name, level in (("avx512f", "AVX512"), ("avx2", "AVX2"), ("sve", "SVE"), ("asimd", "NEON")):
        if name in flags:
            return level
    return machine


def _numpy_dispatch() -> list[str]:
    """NumPy's dispatch targets that this CPU enables (NPY_DISABLE_CPU_FEATURES applied)."""
    try:
        m = np._core._multiarray_umath  # type: ignore[attr-defined]
    except AttributeError:  # NumPy 1.x
        m = np.core._multiarray_umath  # type: ignore[attr-defined]
    return [t for t in getattr(m, "__cpu_dispatch__", []) if m.__cpu_features__.get(t)]


def _numpy_isa() -> str:
    on = _numpy_dispatch()
    return on[-1] if on else "baseline"


def library_info(b: Backend) -> dict[str, Any]:
    """What the backend's results may depend on: its platform tag (the instruction set
    or device the library computes with), its devices and flags."""
    libc, libc_version = platform.libc_ver()
    info: dict[str, Any] = {
        "devices": [],
        # the C library's exp and log: scalar tails of vector loops may call them
        "flags": {"numpy_dispatch": _numpy_dispatch(), "libc": f"{libc} {libc_version}".strip()},
    }
    parts = [f"numpy {_numpy_isa()}"]  # NumPy, array-api-strict, Dask: NumPy's loops
    if b.library == "torch":
        import torch

        # torch's CPU kernels give the same bits for any thread count and alignment
        # (conformance/tests/test_gate.py::test_torch_bits_follow_the_capability_alone);
        # the capability it dispatches to does (ATEN_CPU_CAPABILITY can lower it)
        info["flags"]["torch_threads"] = torch.get_num_threads()
        info["flags"]["torch_capability"] = torch.backends.cpu.get_cpu_capability()
        info["flags"]["aten_cpu_capability_env"] = os.environ.get("ATEN_CPU_CAPABILITY", "")
        if b.device == "cuda":
            n = torch.cuda.device_count()
            info["devices"] = [torch.cuda.get_device_name(i) for i in range(n)]
            cap = torch.cuda.get_device_capability(0)
            parts = [f"{info['devices'][0]} sm_{cap[0]}{cap[1]}", f"torch {torch.__version__}"]
            info["flags"]["torch_tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
            info["flags"]["torch_tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
        else:
            parts = [f"torch {torch.backends.cpu.get_cpu_capability()}"]
    elif b.library == "jax":
        import jax

        devs = jax.devices("gpu" if b.device == "gpu" else "cpu")
        info["devices"] = [str(d) for d in devs]
        if b.device == "gpu":
            parts = [getattr(devs[0], "device_kind", str(devs[0])), "xla"]
        else:
            flags = os.environ.get("XLA_FLAGS", "")
            isa = [f for f in flags.split() if f.startswith("--xla_cpu_max_isa=")]
            parts = ["xla " + (isa[-1].split("=", 1)[1].upper() if isa else _isa())]
    elif b.library == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["devices"] = [props["name"].decode()]
        parts = [f"{info['devices'][0]} sm_{props['major']}{props['minor']}", "cupy"]
    info["platform"] = "; ".join(parts)
    return info


def probe_main(
    conn: Any, b: Backend, log: PassFd | int,
    where: tuple[str, list[str], dict[str, str]] | None = None,
) -> NoReturn:  # fmt: skip
    """Whether ``b`` can run here (None or the reason), and its library_info."""
    code = 0
    try:
        _start(log, where)
        why = b.probe()
        info: dict[str, Any] = {}
        if why is None:
            try:
                info = library_info(b)
            except Exception as exc:
                info = {"platform": "", "error": f"{type(exc).__name__}: {exc}"}
        conn.send(("probe", why, info))
    except BaseException:
        traceback.print_exc()
        code = 70
    _finish(code)


def log_tail(path: str | os.PathLike[str], lines: int = 4) -> str:
    """What a worker last wrote, for the reason of a crash, as one line of text: the
    fatal error and the innermost frame where the interpreter reported one."""
    try:
        data = Path(path).read_bytes()[-20000:].decode("utf-8", "replace")
    except OSError:
        return ""
    text = [s.strip() for s in data.splitlines() if s.strip()]
    fatal = [i for i, s in enumerate(text) if s.startswith("Fatal Python error")]
    if fatal:
        i = fatal[-1]
        frame = next((s for s in text[i + 1 :] if s.startswith("File ")), "")
        return " | ".join(x for x in (text[i], frame) if x)[:400]
    tail = [s for s in text if not s.startswith("Extension modules:")][-lines:]
    return " | ".join(tail)[-400:]
