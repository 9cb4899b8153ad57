"""The default floating-point environment for host computations in Python.

XLA runs its CPU threads with subnormal results flushed to zero and subnormal
operands read as zero (FTZ and DAZ), and ``torch.set_flush_denormal(True)`` sets both
on the caller's thread. NumPy arithmetic on such a thread flushes too: a float32
result of 1.1e-40 made in a ``jax.pure_callback`` comes back as 0. The compiled
kernels clear the bits themselves (impl/csrc/common.h, fp_enter); the host paths in
Python (softmax, logsumexp) run under ``default_env``: the C library's default
environment (round to nearest, no FTZ or DAZ), and the caller's restored after.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

__all__ = ["default_env"]

_SIZE = 64  # bytes: larger than fenv_t on every platform here


def _libm() -> ctypes.CDLL | None:
    if sys.platform != "linux":  # FE_DFL_ENV is (fenv_t *) -1 in glibc and musl
        return None
    name = ctypes.util.find_library("m") or "libm.so.6"
    try:
        lib = ctypes.CDLL(name)
        lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
        return lib
    except (OSError, AttributeError):
        return None


_LIB = _libm()
_DFL_ENV = ctypes.c_void_p(-1)


@contextlib.contextmanager
def default_env() -> Iterator[None]:
    """Run the body in the default floating-point environment (a no-op where the C
    library's is not reachable)."""
    if _LIB is None:
        yield
        return
    saved = ctypes.create_string_buffer(_SIZE)
    _LIB.fegetenv(saved)
    _LIB.fesetenv(_DFL_ENV)
    try:
        yield
    finally:
        _LIB.fesetenv(saved)
