"""Hostile candidates, written as a package into a directory of the test's own (a
module with a syntax error cannot live in this repository): each does one thing a
harness must survive, at import or when called."""

from __future__ import annotations

import platform
import textwrap
from pathlib import Path

__all__ = ["AT_IMPORT", "CALLS", "CHEATS", "write_package"]

# FE_UPWARD in the C library's encoding
_UPWARD = {"x86_64": 0x800, "amd64": 0x800, "aarch64": 0x400000, "arm64": 0x400000}.get(
    platform.machine().lower(), 0x800
)

_CALLS = f"""
import ctypes, ctypes.util, os, signal, subprocess, sys, threading, time
import numpy as np


def segfault(x, axis=None):
    os.kill(os.getpid(), signal.SIGSEGV)


def exits(x, axis=None):
    os._exit(5)


def hang_with_child(x, axis=None):
    subprocess.Popen(["sleep", "611"])  # inherits the worker's stdout
    time.sleep(600)


def rounding_up(x, axis=None):
    import impl

    ctypes.CDLL(ctypes.util.find_library("m")).fesetround({_UPWARD})
    return impl.log_softmax(x, axis=axis)


def leftover_threads(x, axis=None):
    threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon
    return None


def returns_none(x, axis=None):
    return None


def returns_str(x, axis=None):
    return "not an array"


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message")


def bad_message(x, axis=None):
    raise _Unprintable()


def huge_allocation(x, axis=None):
    import impl

    scratch = np.empty(3 << 30, np.uint8)  # 3 GiB of address space, never touched
    return impl.log_softmax(x, axis=axis) + 0 * scratch[0]


def big_endian(x, axis=None):
    import impl

    out = np.asarray(impl.log_softmax(x, axis=axis))
    return out.astype(out.dtype.newbyteorder(">"))


def detached_daemon(x, axis=None):
    import impl

    pid = os.fork()
    if pid == 0:  # fork, setsid, fork: the grandchild belongs to no one
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "613"])
        os._exit(0)
    os.waitpid(pid, 0)
    return impl.log_softmax(x, axis=axis)


def lazy_torch(x, axis=None):
    import impl
    import torch  # first imported here, after the worker's snapshot

    return impl.log_softmax(x, axis=axis)


def returns_object(x, axis=None):
    out = np.empty(np.shape(x), dtype=object)
    out[...] = 0.0
    return out

"""

# written to cheat: each returns impl's answers, so that only its attack can fail it
_CHEATS = """

def _impl(x, axis):
    import impl

    return impl.log_softmax(x, axis=axis)


def _connections():
    import gc
    from multiprocessing.connection import Connection

    return [o for o in gc.get_objects() if isinstance(o, Connection)]


def _cell_key():
    f = sys._getframe()
    while f is not None:
        spec = f.f_locals.get("spec")
        if hasattr(spec, "key"):
            return spec.key
        f = f.f_back
    return ""


def forges_files(x, axis=None):
    # Rewrites every file below the results and cache directories (other candidates'
    # cells, the oracle's answers) and plants one in each directory.
    for root in os.environ.get("CHEAT_PATHS", "").split(os.pathsep):
        for where, _, files in os.walk(root or "/nonexistent"):
            for name in files:
                try:
                    with open(os.path.join(where, name), "r+b") as fh:
                        data = fh.read()
                        fh.seek(0)
                        fh.write(data.replace(b"pass", b"fail").replace(b"fail", b"pass"))
                        fh.write(b"forged")
                except OSError:
                    pass
            try:
                with open(os.path.join(where, "planted"), "w") as fh:
                    fh.write("x")
            except OSError:
                pass
    return _impl(x, axis)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("CHEAT_MARK", "/nonexistent/x"),))


def pickles_code(x, axis=None):
    # Sends a pickle that runs a command wherever it is loaded.
    for c in _connections():
        try:
            c.send(("done", _cell_key(), _Evil()))
        except Exception:
            pass
    return _impl(x, axis)


def floods_the_pipe(x, axis=None):
    # Says it is still importing, forever.
    from conformance.execution._wire import pack

    while True:
        for c in _connections():
            c.send_bytes(pack("phase", what="importing the candidate"))


def extra_outputs(x, axis=None):
    # A result of the cell with a thousand answers, before the real one.
    from conformance.backends._invoke import encode
    from conformance.execution._wire import pack

    enc = encode(np.zeros((2, 2), np.float32))
    for c in _connections():
        c.send_bytes(pack("done", [enc] * 1000, key=_cell_key(), findings=[], notes=[],
                          error=None, seconds=0.0, host="forged", signs=0))
    return _impl(x, axis)


def signals_others(x, axis=None):
    # SIGUSR1 to the supervisor, SIGKILL to the fork server's other children.
    import signal

    for pid in os.environ.get("CHEAT_PIDS", "").split(","):
        try:
            os.kill(int(pid), signal.SIGUSR1)
        except (OSError, ValueError):
            pass
    server = os.getppid()
    for d in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{d}/stat").read()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == server and int(d) != os.getpid():
                os.kill(int(d), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
    return _impl(x, axis)


def closes_fds(x, axis=None):
    # Closes every file descriptor above the standard ones (the worker's connection
    # among them), then hangs.
    os.closerange(3, 4096)
    time.sleep(600)


def opens_a_socket(x, axis=None):
    # Connects to a TCP port of this machine.
    import socket

    try:
        s = socket.create_connection(("127.0.0.1", int(os.environ["CHEAT_PORT"])), timeout=2)
        s.sendall(b"cheat")
        s.close()
    except (OSError, KeyError, ValueError):
        pass
    return _impl(x, axis)
"""

AT_IMPORT = {
    "hostile_exit": "import os\nos._exit(3)\n",
    # sets the rounding mode when imported, and computes under it
    "hostile_rounds_at_import": (
        "import ctypes, ctypes.util\n"
        f"ctypes.CDLL(ctypes.util.find_library('m')).fesetround({_UPWARD})\n"
        "import numpy as np\n"
        "def f(x, axis=None):\n"
        "    m = np.max(x, axis=axis, keepdims=True)\n"
        "    return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))\n"
    ),
    "hostile_hang": "import time\ntime.sleep(600)\n",
    "hostile_syntax": "def f(x, axis=None):\n    return x +\n",
}
CALLS = (
    "segfault", "exits", "hang_with_child", "rounding_up", "leftover_threads",
    "returns_none", "returns_str", "returns_object", "bad_message", "lazy_torch",
    "detached_daemon", "big_endian", "huge_allocation",
)  # fmt: skip
CHEATS = (
    "forges_files", "pickles_code", "floods_the_pipe", "extra_outputs", "signals_others",
    "opens_a_socket", "closes_fds",
)  # fmt: skip


def write_package(root: Path) -> list[str]:
    """The hostile modules under ``root`` (put it on sys.path); their targets."""
    (root / "hostile").mkdir(parents=True, exist_ok=True)
    (root / "hostile" / "__init__.py").write_text("")
    (root / "hostile" / "calls.py").write_text(textwrap.dedent(_CALLS) + _CHEATS)
    for name, text in AT_IMPORT.items():
        (root / f"{name}.py").write_text(text)
    return [f"{m}:f" for m in AT_IMPORT] + [f"hostile.calls:{c}" for c in (*CALLS, *CHEATS)]
