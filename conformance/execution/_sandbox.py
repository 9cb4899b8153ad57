"""The workers' sandbox: Linux Landlock, applied by a process to itself, unprivileged.

A process that calls :func:`restrict` can from then on (and so can everything it
starts):

- read every file it could read before (a candidate imports what it likes);
- write, create, remove, rename or truncate files only beneath the directories it
  names, plus a few device files (``/dev/null`` and the like, and the GPUs' nodes,
  which CUDA opens for writing); files it had open before keep working (a worker's log
  and its connection to the supervisor);
- neither bind nor connect a TCP socket (Landlock ABI 4 and later);
- neither signal nor connect an abstract Unix socket of a process outside its own
  sandbox (ABI 6): the supervisor, the fork server and other workers are out of reach,
  as they are for ``ptrace`` and ``/proc/<pid>/mem`` under every ABI.

Landlock stacks: the fork server restricts itself once (writes beneath the sweep's
scratch root only), and each worker adds a layer of its own (writes beneath its own
scratch directory only). What a kernel's ABI lacks is left out and said so by
:func:`describe`; where there is no Landlock at all (macOS, Linux before 5.13, or
Landlock disabled) nothing is restricted and the sweep records ``sandbox: none``.

What Landlock does not cover, in ABI 7: UDP and other non-TCP sockets, and connecting
to a Unix socket by its path. (The fork server's path socket is reachable from a
worker; what it starts carries the server's own sandbox, not the worker's.)

A small ctypes layer, not a binding from the package index: the interface is three
system calls and three structures, stable since Linux 5.13, and the harness must not
depend on a package that may be absent or lag behind the kernel's ABI.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable

__all__ = ["WRITABLE_ENV", "abi", "describe", "extra_writable", "restrict"]

# directories every worker may write besides its own (os.pathsep between them): for a
# candidate that keeps files of its own somewhere; every candidate of the sweep can
# write there too, so it is part of the sandbox's description (and of each verdict)
WRITABLE_ENV = "CONFORMANCE_SANDBOX_WRITABLE"

# system call numbers: the same on every architecture (the generic table)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# filesystem rights (linux/landlock.h) and the ABI that introduced them
_FS_WRITE = {
    "write_file": (1 << 1, 1),
    "remove_dir": (1 << 4, 1),
    "remove_file": (1 << 5, 1),
    "make_char": (1 << 6, 1),
    "make_dir": (1 << 7, 1),
    "make_reg": (1 << 8, 1),
    "make_sock": (1 << 9, 1),
    "make_fifo": (1 << 10, 1),
    "make_block": (1 << 11, 1),
    "make_sym": (1 << 12, 1),
    "refer": (1 << 13, 2),
    "truncate": (1 << 14, 3),
    "ioctl_dev": (1 << 15, 5),
}
_NET_TCP = ((1 << 0) | (1 << 1), 4)  # bind and connect
_SCOPE = ((1 << 0) | (1 << 1), 6)  # abstract Unix sockets and signals
# device files a library may open for writing: the null devices and the GPUs' nodes
_DEVICES = ("null", "zero", "full", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "kfd", "dri")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_abi: int | None = None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none."""
    global _abi
    if _abi is None:
        _abi = 0
        if sys.platform == "linux" and os.environ.get("CONFORMANCE_SANDBOX", "") != "off":
            try:
                v = _libc().syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
                _abi = max(0, int(v))
            except (OSError, AttributeError):
                _abi = 0
    return _abi


def extra_writable() -> list[str]:
    """The directories of CONFORMANCE_SANDBOX_WRITABLE, as absolute paths."""
    return [os.path.abspath(p) for p in os.environ.get(WRITABLE_ENV, "").split(os.pathsep) if p]


def describe() -> str:
    """What the sandbox is on this machine, for the fingerprint and the report."""
    v = abi()
    if v == 0:
        why = (
            "switched off by CONFORMANCE_SANDBOX=off"
            if os.environ.get("CONFORMANCE_SANDBOX", "") == "off"
            else f"no Landlock on {platform.system()} {platform.release()}"
        )
        return f"none ({why})"
    parts = ["files"]
    if v >= _NET_TCP[1]:
        parts.append("tcp")
    if v >= _SCOPE[1]:
        parts.append("signals")
    extra = extra_writable()
    also = f"; also writable: {', '.join(extra)}" if extra else ""
    return f"landlock abi {v}: " + ", ".join(parts) + also


def _write_rights(v: int) -> int:
    return sum(bit for bit, since in _FS_WRITE.values() if since <= v)


def restrict(writable: Iterable[str | os.PathLike[str]]) -> bool:
    """Restrict this process (and what it starts) as the module's docstring says, with
    writes allowed beneath each of ``writable`` (directories or files that exist).
    False where there is no Landlock (nothing was restricted); an error of the kernel
    otherwise raises OSError."""
    v = abi()
    if v == 0:
        return False
    libc = _libc()
    rights = _write_rights(v)
    attr = _RulesetAttr(rights, _NET_TCP[0] if v >= _NET_TCP[1] else 0,
                        _SCOPE[0] if v >= _SCOPE[1] else 0)  # fmt: skip
    size = ctypes.sizeof(_RulesetAttr) if v >= _SCOPE[1] else 16 if v >= _NET_TCP[1] else 8
    fd = int(libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"landlock_create_ruleset: {os.strerror(e)}")
    try:
        paths = [os.fspath(p) for p in writable]
        paths += [f"/dev/{d}" for d in _DEVICES]
        try:
            paths += [f"/dev/{d}" for d in os.listdir("/dev") if d.startswith("nvidia")]
        except OSError:
            pass
        for p in dict.fromkeys(paths):
            try:
                pfd = os.open(p, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # absent here: nothing to allow
            try:
                is_dir = os.path.isdir(p)
                # rights on a file are the file's: no creating or removing beneath it
                allowed = rights if is_dir else rights & ((1 << 1) | (1 << 14) | (1 << 15))
                rule = _PathBeneath(allowed, pfd)
                if libc.syscall(_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"landlock_add_rule {p}: {os.strerror(e)}")
            finally:
                os.close(pfd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(e)}")
        if libc.syscall(_RESTRICT_SELF, fd, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"landlock_restrict_self: {os.strerror(e)}")
    finally:
        os.close(fd)
    return True
