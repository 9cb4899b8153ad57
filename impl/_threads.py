"""How many threads impl's NumPy path (and its JAX kernel) may use.

By default, every core this process may run on: its CPU affinity and cgroup CPU set
(``os.process_cpu_count`` where Python has it, else ``os.sched_getaffinity``), not the
machine's count. ``LOG_SOFTMAX_NUM_THREADS`` in the environment overrides that at the
first call; ``set_num_threads`` overrides both at run time (``None``: back to the
default), as ``threadpoolctl`` and ``torch.set_num_threads`` do. Work is shared only
where each thread gets enough of it: ``min_per_thread`` elements, measured once per
process (a thread's start and join against the kernels' time per element), or
``LOG_SOFTMAX_MIN_PER_THREAD``; Dask's tasks stay serial. The results are bit for bit
the same for any count.
"""

from __future__ import annotations

import operator
import os
import threading

__all__ = ["ENV", "PER_THREAD_ENV", "available_cores", "get_num_threads", "min_per_thread",
           "set_num_threads"]  # fmt: skip

ENV = "LOG_SOFTMAX_NUM_THREADS"
PER_THREAD_ENV = "LOG_SOFTMAX_MIN_PER_THREAD"
# A thread is started only for work worth this many times its start and join
_WORTH = 4
# (a start measured while other threads spin, as torch's and XLA's pools do after
# their work, can be several times its quiet cost: the cap keeps such a measurement
# from leaving large calls on one thread)
_PER_THREAD_RANGE = (1 << 14, 1 << 18)
_lock = threading.Lock()
_chosen: int | None = None  # set_num_threads
_from_env: int | None = None  # read once


def available_cores() -> int:
    """The cores this process may run on (affinity and cgroup CPU sets included)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this OS
        return os.cpu_count() or 1


def _check(n: object, where: str) -> int:
    try:
        if isinstance(n, bool):
            raise TypeError
        k = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{where}: the number of threads is an integer >= 1, got {n!r}") from None
    if k < 1:
        raise ValueError(f"{where}: the number of threads is an integer >= 1, got {k}")
    return k


def _env() -> int | None:
    global _from_env
    if _from_env is None:
        text = os.environ.get(ENV, "").strip()
        if text:
            try:
                value: object = int(text)
            except ValueError:
                value = text
            _from_env = _check(value, f"{ENV}={text!r}")
        else:
            _from_env = 0
    return _from_env or None


def get_num_threads() -> int:
    """The threads a call may use: set_num_threads's count, else LOG_SOFTMAX_NUM_THREADS,
    else every core this process may run on."""
    return _chosen or _env() or available_cores()


def set_num_threads(n: int | None) -> None:
    """Use at most ``n`` threads per call from now on (``None``: the default again)."""
    global _chosen
    with _lock:
        _chosen = None if n is None else _check(n, "set_num_threads")
    _tell_kernels()


def _tell_kernels() -> None:
    from ._numpy import compiled_kernels

    kernels = compiled_kernels()
    if kernels is not None and hasattr(kernels, "set_threads"):
        kernels.set_threads(get_num_threads())


_per_thread: int | None = None


def min_per_thread() -> int:
    """The elements a thread must have for a call to start it: LOG_SOFTMAX_MIN_PER_THREAD
    (an integer >= 1024), else measured at the first call: _WORTH times a thread's
    start and join (the best of 20) over the kernels' time per element (float32 rows
    of 4,096, the best of 5), within 2**14 to 2**18; the kernels are told. About a
    millisecond, once; 2**14 where there are no kernels."""
    global _per_thread
    if _per_thread is not None:
        return _per_thread
    from ._numpy import compiled_kernels

    kernels = compiled_kernels()
    with _lock:
        if _per_thread is None:
            text = os.environ.get(PER_THREAD_ENV, "").strip()
            if text:
                try:
                    n = int(text)
                except ValueError:
                    n = 0
                if n < 1024:
                    raise ValueError(f"{PER_THREAD_ENV}={text!r}: an integer >= 1024, please")
            elif kernels is None:
                n = 1 << 14
            else:
                n = _measure(kernels)
            if kernels is not None:
                kernels.set_per_thread(n)
            _per_thread = n
    return _per_thread


def _measure(kernels: object) -> int:
    import time

    import numpy as np

    x = np.linspace(-8.0, 8.0, 16 * 4096, dtype=np.float32).reshape(16, 4096)
    out = np.empty_like(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter_ns()
        kernels.rows(x, out, 4096, 1)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter_ns() - t)
    per_element = max(best / x.size, 0.05)
    spawn = float(kernels.spawn_ns(20))  # type: ignore[attr-defined]
    lo, hi = _PER_THREAD_RANGE
    return int(min(max(_WORTH * spawn / per_element, lo), hi))
