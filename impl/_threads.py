"""How many threads impl's NumPy path (and its JAX kernel) may use.

By default, every core this process may run on: its CPU affinity and cgroup CPU set
(``os.process_cpu_count`` where Python has it, else ``os.sched_getaffinity``), not the
machine's count. ``LOG_SOFTMAX_NUM_THREADS`` in the environment overrides that at the
first call; ``set_num_threads`` overrides both at run time (``None``: back to the
default), as ``threadpoolctl`` and ``torch.set_num_threads`` do. Work is shared only
where each thread gets enough of it (2**14 elements); Dask's tasks stay serial. The
results are bit for bit the same for any count.
"""

from __future__ import annotations

import operator
import os
import threading

__all__ = ["ENV", "available_cores", "get_num_threads", "set_num_threads"]

ENV = "LOG_SOFTMAX_NUM_THREADS"
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
