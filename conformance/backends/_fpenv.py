"""The calling thread's floating-point environment: its rounding mode and control bits
(x87 control word and MXCSR on x86-64, FPCR on AArch64), read and restored through the
C library. A candidate that leaves them changed would change every later computation in
its process, the harness's own scoring included."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["FPENVS", "FPEnv", "capture", "environment", "guarded", "unavailable"]

# The environments a sweep can run its calls in (``run --fpenv``): the C library's
# default, and flush-to-zero with denormals-are-zero, as torch.set_flush_denormal(True)
# and XLA's CPU threads set it. The oracle is the same in both.
FPENVS = ("default", "ftz")

_ROUNDING = {
    "x86_64": {0x000: "to nearest", 0x400: "downward", 0x800: "upward", 0xC00: "toward zero"},
    "aarch64": {
        0x000000: "to nearest",
        0x400000: "upward",
        0x800000: "downward",
        0xC00000: "toward zero",
    },
}
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(
    platform.machine().lower(), platform.machine().lower()
)
_SIZE = 64  # bytes: larger than fenv_t on every platform here


def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m") or ("libm.so.6" if sys.platform == "linux" else None)
    try:
        lib = ctypes.CDLL(name)
        lib.fegetround.restype = ctypes.c_int
        lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
        return lib
    except (OSError, AttributeError):
        return None


_LIB = _libm()


def _control(raw: bytes) -> tuple[int, ...]:
    """The control part of fenv_t (status flags, raised by ordinary arithmetic, left
    out), by the C library's layout."""
    le = int.from_bytes
    if sys.platform == "linux" and _ARCH == "x86_64":  # glibc: cw at 0, mxcsr at 28
        return (le(raw[0:2], "little"), le(raw[28:32], "little") & ~0x3F)
    if sys.platform == "darwin" and _ARCH == "x86_64":  # cw at 0, mxcsr at 4
        return (le(raw[0:2], "little"), le(raw[4:8], "little") & ~0x3F)
    if sys.platform == "linux" and _ARCH == "aarch64":  # glibc: fpcr at 0
        return (le(raw[0:4], "little"),)
    if sys.platform == "darwin" and _ARCH == "aarch64":  # fpsr at 0, fpcr at 8
        return (le(raw[8:16], "little"),)
    return ()


@dataclass(frozen=True)
class FPEnv:
    """A snapshot: the rounding mode, the control bits and the raw fenv_t to restore."""

    rounding: int
    control: tuple[int, ...]
    raw: bytes

    def differences(self, other: FPEnv) -> list[str]:
        """What changed from ``self`` to ``other``, in words (empty when nothing)."""
        out = []
        if other.rounding != self.rounding:
            names = _ROUNDING.get(_ARCH, {})
            a = names.get(self.rounding, hex(self.rounding))
            b = names.get(other.rounding, hex(other.rounding))
            out.append(f"rounding mode {a} -> {b}")
        if other.control != self.control and not out:
            was = "/".join(hex(v) for v in self.control)
            now = "/".join(hex(v) for v in other.control)
            out.append(f"control bits {was} -> {now}")
            if _ARCH == "x86_64" and len(other.control) == 2:
                if other.control[1] & 0x8000 and not self.control[1] & 0x8000:
                    out[-1] += " (flush-to-zero on)"
                if other.control[1] & 0x40 and not self.control[1] & 0x40:
                    out[-1] += " (denormals-are-zero on)"
        return out

    def restore(self) -> None:
        if _LIB is not None and self.raw:
            buf = ctypes.create_string_buffer(self.raw, _SIZE)
            _LIB.fesetenv(buf)


def capture() -> FPEnv:
    """The calling thread's floating-point environment now."""
    if _LIB is None:
        return FPEnv(0, (), b"")
    buf = ctypes.create_string_buffer(_SIZE)
    _LIB.fegetenv(buf)
    return FPEnv(int(_LIB.fegetround()), _control(buf.raw), buf.raw)


@contextlib.contextmanager
def guarded(findings: list[str]) -> Iterator[None]:
    """Whatever runs inside leaves the floating-point environment as it found it: a
    change is undone at once and recorded in ``findings``."""
    env = capture()
    try:
        yield
    finally:
        changed = env.differences(capture())
        if changed:
            env.restore()
            findings.append("left the floating-point environment changed: " + ", ".join(changed))


# Where each platform's fenv_t keeps the flush bits: (byte offset, width, bits): x86-64's
# MXCSR (FTZ 0x8000, DAZ 0x40) in glibc's and Darwin's layouts, AArch64's FPCR (FZ,
# bit 24)
_FLUSH = {
    ("linux", "x86_64"): (28, 4, 0x8040),
    ("darwin", "x86_64"): (4, 4, 0x8040),
    ("linux", "aarch64"): (0, 4, 1 << 24),
    ("darwin", "aarch64"): (8, 8, 1 << 24),
}


def unavailable(name: str) -> str | None:
    """None where the environment ``name`` can be set here, else why not."""
    if name not in FPENVS:
        return f"unknown floating-point environment {name!r}; known: {', '.join(FPENVS)}"
    if name == "ftz" and (_LIB is None or (sys.platform, _ARCH) not in _FLUSH):
        return f"flush-to-zero cannot be set on {sys.platform} {_ARCH} from here"
    return None


@contextlib.contextmanager
def environment(name: str) -> Iterator[None]:
    """The calling thread in the environment ``name`` while inside, as it was after:
    ``ftz`` sets flush-to-zero and denormals-are-zero in its control register, and
    torch's own switch where torch is imported (torch's threads take it from there)."""
    why = unavailable(name)
    if why is not None:
        raise RuntimeError(why)
    if name == "default":
        yield
        return
    before = capture()
    at, width, bits = _FLUSH[(sys.platform, _ARCH)]
    raw = bytearray(before.raw)
    word = int.from_bytes(raw[at : at + width], "little") | bits
    raw[at : at + width] = word.to_bytes(width, "little")
    torch = sys.modules.get("torch")
    flush = getattr(torch, "set_flush_denormal", None)
    try:
        assert _LIB is not None
        _LIB.fesetenv(ctypes.create_string_buffer(bytes(raw), _SIZE))
        if flush is not None:
            flush(True)
        yield
    finally:
        if flush is not None:
            flush(False)
        before.restore()
