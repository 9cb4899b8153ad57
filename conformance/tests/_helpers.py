"""Candidates with known defects, for the runner's tests (importable by workers)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

from conformance.functions._candidates import naive_log_softmax

__all__ = [
    "crashing",
    "detached_normaliser",
    "dies_at_start",
    "flush_sensitive",
    "logsumexp_keepdims",
    "mutating",
    "naive_log_softmax",
    "plain_logsumexp",
    "raising",
    "returns_ints",
    "returns_none",
    "returns_object",
    "returns_str",
    "rounds_up_under_autograd",
    "skips_int_promotion",
    "sleepy",
    "slow_impl",
    "where_am_i",
    "where_am_i_slowly",
    "wrong_dtype",
]


def raising(x: Any, axis: Any = None) -> Any:
    raise RuntimeError("this candidate always raises")


def wrong_dtype(x: Any, axis: Any = None) -> Any:
    import impl

    return np.asarray(impl.log_softmax(x, axis=axis)).astype(np.float64)


def mutating(x: Any, axis: Any = None) -> Any:
    import impl

    out = impl.log_softmax(x, axis=axis)
    if isinstance(x, np.ndarray) and x.size:
        x.reshape(-1)[0] = 0.0
    return out


def crashing(x: Any, axis: Any = None) -> Any:
    """Dies like a segfaulting extension: SIGSEGV to its own process."""
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def sleepy(x: Any, axis: Any = None) -> Any:
    time.sleep(60)
    raise AssertionError("the runner's timeout should have stopped this")


def slow_impl(x: Any, axis: Any = None) -> Any:
    import impl

    time.sleep(float(os.environ.get("CONFORMANCE_TEST_DELAY", "0.05")))
    return impl.log_softmax(x, axis=axis)


def returns_none(x: Any, axis: Any = None) -> Any:
    return None


def returns_str(x: Any, axis: Any = None) -> Any:
    return "not an array"


def returns_object(x: Any, axis: Any = None) -> Any:
    out = np.empty(np.shape(x), dtype=object)
    out[...] = 0.0
    return out


def returns_ints(x: Any, axis: Any = None) -> Any:
    return np.zeros(np.shape(x), dtype=np.int64)


def dies_at_start(conn: Any, *args: Any) -> None:
    """A worker target that dies before it says hello (the supervisor's tests)."""
    os._exit(9)


def detached_normaliser(x: Any, axis: Any = None) -> Any:
    """Exact values, a wrong derivative: the normaliser is detached from autograd (its
    gradient dropped), so torch's gradcheck fails where the values pass."""
    import torch

    dims = list(range(x.ndim)) if axis is None else axis
    return x - torch.logsumexp(x, dim=dims, keepdim=True).detach()


def skips_int_promotion(x: Any, axis: Any = None) -> Any:
    """impl, except that integer input comes back as integers (SciPy's
    test_log_softmax_int_array fails on it)."""
    import impl

    a = np.asarray(x)
    if a.dtype.kind in "iu":
        return np.zeros_like(a)
    return impl.log_softmax(x, axis=axis)


def rounds_up_under_autograd(x: Any, axis: Any = None) -> Any:
    """impl, except that a call on a tensor that requires grad (as gradcheck makes)
    sets the rounding mode upward and leaves it so."""
    import ctypes
    import ctypes.util

    import impl

    if getattr(x, "requires_grad", False):
        ctypes.CDLL(ctypes.util.find_library("m")).fesetround(0x800)  # FE_UPWARD, x86
    return impl.log_softmax(x, axis=axis)


def where_am_i(x: Any, axis: Any = None) -> Any:
    """impl, and the name of the cluster worker it runs under (CONFORMANCE_TEST_WORKER)
    appended to the file CONFORMANCE_TEST_WHERE (the distributed tests)."""
    import impl

    where = os.environ.get("CONFORMANCE_TEST_WHERE")
    if where:
        with open(where, "a") as f:
            f.write(os.environ.get("CONFORMANCE_TEST_WORKER", "?") + "\n")
    return impl.log_softmax(x, axis=axis)


def which_processes(x: Any, axis: Any = None) -> Any:
    """where_am_i, writing ``worker:server:pid``: the cluster worker, the process that
    forked this one (the fork server) and this process."""
    import impl

    where = os.environ.get("CONFORMANCE_TEST_WHERE")
    if where:
        worker = os.environ.get("CONFORMANCE_TEST_WORKER", "?")
        with open(where, "a") as f:
            f.write(f"{worker}:{os.getppid()}:{os.getpid()}\n")
    return impl.log_softmax(x, axis=axis)


def where_am_i_slowly(x: Any, axis: Any = None) -> Any:
    """where_am_i after CONFORMANCE_TEST_DELAY seconds."""
    time.sleep(float(os.environ.get("CONFORMANCE_TEST_DELAY", "0.05")))
    return where_am_i(x, axis=axis)


def logsumexp_keepdims(x: Any, axis: Any = None) -> Any:
    """A logsumexp that keeps the reduced axes (SciPy's keepdims=True): wrong shape."""
    import reference

    return reference.logsumexp(np.asarray(x), axis=axis, keepdims=True)


def unnormalised_softmax(x: Any, axis: Any = None) -> Any:
    """exp(x), never divided by its sum: a softmax that SciPy's TestSoftmax fails."""
    import array_api_compat

    return array_api_compat.array_namespace(x).exp(x)


def flush_sensitive(x: Any, axis: Any = None) -> Any:
    """impl where subnormal arithmetic works, impl + 1 where it flushes: right in the
    default floating-point environment, wrong under flush-to-zero."""
    import impl

    tiny = np.array([5e-324]) * np.array([1.0])  # 0 under denormals-are-zero
    out = impl.log_softmax(x, axis=axis)
    return out if tiny[0] != 0 else out + 1


def plain_logsumexp(x: Any, axis: Any = None) -> Any:
    """SciPy's logsumexp as fn(x, axis) alone: no weights, no sign (the suites' calls
    with them are skipped for it)."""
    import scipy.special

    return scipy.special.logsumexp(x, axis=axis)
