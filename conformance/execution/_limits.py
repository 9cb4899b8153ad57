"""A worker's own limits, set when it starts (from the supervisor's ``--memory``) and
read when a cell's reason is written. A module of its own: the worker (_worker) sets
them and the cell (_cell) reads them, and neither imports the other's way."""

from __future__ import annotations

__all__ = ["limit_memory", "memory_limit", "physical_memory"]

_memory_limit = 0  # this worker's address-space limit in bytes (0: none)


def limit_memory(text: str) -> None:
    """RLIMIT_AS to ``text`` bytes (the supervisor's --memory), where given: an
    allocation past it fails in the worker (NumPy's MemoryError), which the cell
    reports as an error of the memory limit, instead of the kernel's OOM killer picking
    any process of the machine."""
    global _memory_limit
    try:
        limit = int(text)
    except ValueError:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _memory_limit = limit
    except (ImportError, ValueError, OSError):
        pass


def memory_limit() -> int:
    """This worker's address-space limit in bytes (0: none)"""
    return _memory_limit


def physical_memory() -> int:
    """The machine's physical memory in bytes; 0 where it does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0
