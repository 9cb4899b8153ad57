"""NumPy path.

Finite input (the common case) goes to the compiled row kernels (``impl._kernel``):
each slice becomes a contiguous row. float32 and float64 rows go to the kernel in one
call, which shares them (or the passes of one long row) among its threads
(``impl.get_num_threads()``), the GIL released. float16 and bfloat16 rows are widened
to float32 (exactly) block by block, in blocks shared among the threads, and the
kernel's correctly rounded-to-odd float32 output (float64 holding it, for float16) is
rounded once more to the narrow format, which is one correct rounding; a narrow slice
longer than a block is split into segments, with three passes (max; partial sums;
output) each shared among the threads. The results do not depend on the number of
threads.

Where the kernel was not built (no C compiler at install time), the same blocks run
in NumPy: the short algorithm in float64 for the narrow formats and the generic
precise core for float64; there, input with NaN or infinities takes the generic
algorithm whole. With the kernels, -inf entries next to finite ones (masked logits)
stay in them, and the slices with a NaN, a +inf or of -inf only get their special
values from the generic algorithm, those slices alone; 0-d input takes it whole.
Warnings that adversarial input causes on purpose (overflow to -inf) are silenced.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._generic import log_softmax_generic
from ._threads import get_num_threads, min_per_thread

__all__ = ["compiled_kernels", "empty_out", "log_softmax_numpy"]


def _load_kernels() -> Any:
    try:
        from . import _kernel
    except ImportError:  # built without a C compiler: the NumPy blocks below
        return None
    return _kernel


_kernel: Any = _load_kernels()


def compiled_kernels() -> Any:
    """The compiled kernels (impl/_kernel.c), or None where they were not built."""
    return _kernel


_BLOCK = 1 << 16  # elements per work item of the kernel
_BLOCK_NUMPY = 1 << 15  # float64 elements per NumPy block: two buffers stay in L2
_LONG_SEGMENTS = 8  # segments of a long narrow row: fixed, so that bits never depend on threads

_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None
_pool_key = (-1, 0)  # (pid, threads) it was made for
_pool_lock = threading.Lock()


_serial = threading.local()  # set in callers that run in parallel already (Dask tasks)
_ROW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Below this many entries a call never shares its work, whatever the machine
# (_threads.min_per_thread is at least 2**14 a thread)
_TWO_THREADS = 2 << 14


def _map(fn: Callable[[Any], _T], items: Iterable[Any]) -> list[_T]:
    """fn over items on the shared threads (one pool per process: a forked child
    makes its own), each under the caller's floating-point error handling (NumPy's
    errstate belongs to the thread that sets it: without this, a float16 overflow
    in a cast on the pool warned the caller, who had asked for none)."""
    global _pool, _pool_key
    items = list(items)
    threads = min(get_num_threads(), len(items))
    if threads < 2 or getattr(_serial, "on", False):
        return [fn(i) for i in items]
    with _pool_lock:
        key = (os.getpid(), get_num_threads())
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[0] == key[0]:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(key[1], thread_name_prefix="impl")
            _pool_key = key
        pool = _pool
    state = np.geterr()

    def run(item: Any) -> _T:
        with np.errstate(**state):
            return fn(item)

    return list(pool.map(run, items))


def log_softmax_numpy(x: NDArray[Any], axes: tuple[int, ...], n: int, serial: bool = False) -> Any:
    """serial: no threads of its own (the caller runs several of these at once)."""
    if serial:
        _serial.on = True
        try:
            return log_softmax_numpy(x, axes, n)
        finally:
            _serial.on = False
    if x.size == 0:
        return x.copy()
    if x.dtype == np.longdouble:
        return _long_double(x, axes, n)
    with np.errstate(all="ignore"):
        out = None
        if x.ndim > 0 and n > 1:
            out = _blocked(x, axes, n)
        if out is None:
            out = log_softmax_generic(np, x, axes, n, np.float64, round_narrow)
    return out[()] if out.ndim == 0 else out


_F32 = (np.dtype(np.float32),)


def _plain_last_axis(x: Any, axis: Any, dtypes: tuple[Any, ...]) -> bool:
    """The common call's conditions (last_axis_rows', last_axis_softmax's): a native
    NumPy array (not a subclass) of one of ``dtypes``, C-contiguous and aligned, not
    empty, reduced over its last axis (or a 1-D array whole), with the kernels built."""
    if (
        type(x) is not np.ndarray
        or (type(axis) is not int and not (axis is None and x.ndim == 1))
        or _kernel is None
        or x.dtype not in dtypes
        or not x.flags.c_contiguous
        or not x.flags.aligned
        or x.ndim == 0
        or x.size == 0
    ):
        return False
    return axis is None or axis == -1 or axis == x.ndim - 1


def last_axis_rows(x: Any, axis: Any) -> Any:
    """The common call without the general path's checks: a native float32 or float64
    NumPy array (not a subclass), C-contiguous and aligned, not empty, reduced over its last axis
    (or a 1-D array whole), with the kernels built; None for anything else, which the
    general path then takes. The same kernels and results as that path: it saves its
    namespace detection, dtype checks and reshapes (about 20 us a call of the 25 at
    (1, 10))."""
    if not _plain_last_axis(x, axis, _ROW_DTYPES):
        return None
    return _rows_on_kernel(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def last_axis_softmax(x: Any, axis: Any) -> Any:
    """softmax's common call without the general path's checks: last_axis_rows'
    conditions, float32, and small enough for one thread (the general path shares
    larger calls among the threads); None for anything else, and where a row is
    special (a NaN, a +inf, no finite entry) or an output is left open (none so far),
    which the general path then takes from the start. The same kernel and results: it
    saves about 60 us a call of the general path's Python (namespace detection, dtype
    checks, the spans, the flags) at (64, 1000)."""
    if not _plain_last_axis(x, axis, _F32) or (
        x.size >= _TWO_THREADS and x.size >= 2 * min_per_thread()
    ):
        return None
    rows2d = x.reshape(-1, x.shape[-1])
    out = np.empty_like(rows2d)
    if _kernel.softmax_f32_rows(rows2d, rows2d.shape[1], out, None, 0):
        return None
    if np.isnan(out[:, 0]).any():
        return None
    return out.reshape(x.shape)


def _rows_on_kernel(rows2d: NDArray[Any]) -> NDArray[Any]:
    """float32 or float64 rows (C-contiguous, aligned) through the kernels in one call,
    which shares them (or one long row's passes) among its threads, the GIL released;
    the rows it declines get their special values (_fill_specials)."""
    small = rows2d.size < _TWO_THREADS or rows2d.size < 2 * min_per_thread()
    # a small output needs none of empty_out's alignment (its own checks cost 2 us)
    out = np.empty_like(rows2d) if small else empty_out(rows2d.shape, rows2d.dtype)
    # below two threads' worth (min_per_thread entries each) one thread: no need to
    # ask the machine (a system call) for the cores
    threads = 1 if small or getattr(_serial, "on", False) else get_num_threads()
    if _kernel.rows(rows2d, out, rows2d.shape[1], threads):
        _fill_specials(rows2d, out)
    return out


def _long_double(x: NDArray[Any], axes: tuple[int, ...], n: int) -> Any:
    """NumPy's long double: float64 by another name on some platforms (float64's
    path, exact both ways); else x87's 80-bit format or binary128, with no wider
    format to compute in and no kernels: d = x - max, T = the sum of exp(d) below
    the maximum plus (k - 1), d - log1p(T), all in long double (its own exp and
    log1p). Nothing saturates; the roundings of d and of the sum stay (a few ULP of
    long double, far below float64's)."""
    if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        out64 = log_softmax_numpy(x.astype(np.float64), axes, n)
        return np.asarray(out64).astype(np.longdouble)[()]
    with np.errstate(all="ignore"):
        out = log_softmax_generic(np, x, axes, n, np.longdouble)
    return out[()] if out.ndim == 0 else out


def _wide_out(dtype: Any) -> Any:
    """What the kernels write for a float16 or bfloat16 output, to be rounded once to
    it: float64 for float16 (NumPy converts float64 to float16 in one rounding, and
    faster than float32: 3.1 against 4.3 ns an entry here); float32 rounded to odd for
    bfloat16 (see round_narrow; 0.5 against 0.7 ns)."""
    return np.float32 if "bfloat16" in np.dtype(dtype).name else np.float64


def round_narrow(wide: NDArray[np.float64], dtype: Any) -> NDArray[Any]:
    """float64 values rounded once to ``dtype``. NumPy's float16 conversion rounds
    once; ml_dtypes' bfloat16 conversion from float64 goes through a float32 rounded to
    nearest, and rounds twice (1 + 2**-8 + 2**-40 becomes 1.0). bfloat16 is rounded
    here from a float32 rounded to odd (toward zero, the last bit set where inexact),
    which with 16 bits to spare makes the two roundings one."""
    dtype = np.dtype(dtype)
    if "bfloat16" not in dtype.name:
        return wide.astype(dtype, copy=False)
    f = wide.astype(np.float32)
    back = f.astype(np.float64)
    bits = f.view(np.int32)
    bits -= np.abs(back) > np.abs(wide)  # one ulp toward zero (overflow: FLT_MAX)
    bits |= back != wide
    return f.astype(dtype)


def _blocked(x: NDArray[Any], axes: tuple[int, ...], n: int) -> NDArray[Any] | None:
    """Slices as rows of a contiguous 2-D view; None where an entry is NaN or
    infinite (the kernels find out on their first pass)."""
    if _kernel is None and not np.isfinite(x).all():
        return None
    rows2d, perm = _as_rows(x, axes)
    out: NDArray[Any] | None
    if _kernel is None:
        out = _numpy_blocks(rows2d, n)
    elif rows2d.dtype in _ROW_DTYPES:
        out = _rows_on_kernel(rows2d)
    elif n > _BLOCK:
        out = _long_rows(rows2d)
    else:
        out = _kernel_rows(rows2d, n)
    if out is None:
        return None
    return _from_rows(out, x.shape, perm)


_HUGE_PAGE = 2 << 20
_HUGE_ADVISED = 4 << 20  # NumPy advises huge pages (Linux, madvise) from this size on


def empty_out(shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
    """np.empty; for an output of 2 MB and more on Linux, a view that starts at a 2 MB
    boundary inside an allocation of 4 MB and more. NumPy advises the kernel to back
    those with huge pages, which it can do only for the aligned 2 MB stretches inside
    them, and glibc's large allocations start 16 bytes past a 4 KB page. Aligned, a
    2 MB block is written to fresh memory with one page fault instead of 512 (2.5 to
    3.4 us each on the benchmark's VM). The address space before the start is never
    touched, so it takes no memory; past the end, at most one huge page is partly
    unused."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _HUGE_PAGE or not sys.platform.startswith("linux"):
        return np.empty(shape, dtype=dtype)
    raw = np.empty(max(nbytes + _HUGE_PAGE, _HUGE_ADVISED), dtype=np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    out: NDArray[Any] = raw[start : start + nbytes].view(dtype).reshape(shape)
    return out


def _as_rows(x: NDArray[Any], axes: tuple[int, ...]) -> tuple[NDArray[Any], list[int]]:
    """The slices of x over ``axes`` as the rows of a contiguous, aligned 2-D array (a
    copy only where x is not laid out that way already: the kernels load whole
    numbers), and the axis permutation used."""
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = kept + list(axes)
    n = math.prod(x.shape[a] for a in axes)
    nrows = math.prod(x.shape[a] for a in kept)  # not -1: either may be 0
    rows = np.transpose(x, perm).reshape(nrows, n)
    return np.require(rows, requirements=["C_CONTIGUOUS", "ALIGNED"]), perm


def _from_rows(rows2d: NDArray[Any], shape: tuple[int, ...], perm: list[int]) -> NDArray[Any]:
    """_as_rows undone: the rows back in an array of ``shape`` (a view)."""
    return np.transpose(rows2d.reshape([shape[p] for p in perm]), np.argsort(perm))


def _kernel_input(block: NDArray[Any]) -> NDArray[Any]:
    """float32 and float64 as they are; narrower formats widened exactly to float32."""
    return block if block.dtype in (np.float32, np.float64) else block.astype(np.float32)


def _kernel_rows(rows2d: NDArray[Any], n: int) -> NDArray[Any] | None:
    """float16 and bfloat16 rows: blocks of rows, each row widened and rounded back in
    the kernel (rows_narrow)."""
    out = empty_out(rows2d.shape, rows2d.dtype)
    per = max(1, _BLOCK // n)
    nrows = rows2d.shape[0]
    # at least one block per thread when there is enough work to share
    threads = get_num_threads()
    if nrows * n >= 2 * 4096 and nrows >= threads:
        per = min(per, -(-nrows // threads))

    fmt = 1 if rows2d.dtype == np.float16 else 2  # else bfloat16

    def work(r0: int) -> int:
        # widened, rounded to odd in float32 and then to the format, in the kernel
        skipped: int = _kernel.rows_narrow(
            rows2d[r0 : r0 + per].view(np.uint16), out[r0 : r0 + per].view(np.uint16), n, fmt
        )
        if skipped:
            _fill_specials(rows2d[r0 : r0 + per], out[r0 : r0 + per])
        return skipped

    _map(work, range(0, nrows, per))
    return out


def _fill_specials(rows2d: NDArray[Any], out: NDArray[Any]) -> None:
    """The rows the kernels declined (a NaN or a +inf, or -inf only) get their special
    values (docs/specification.md) from the generic algorithm, those rows alone: one
    such row no longer sends the whole array the generic way, whose float16, bfloat16
    and float32 results are not correctly rounded everywhere."""
    bad = np.isnan(rows2d).any(axis=1) | np.isposinf(rows2d).any(axis=1)
    bad |= np.isneginf(rows2d).all(axis=1)
    if bad.any():
        n = rows2d.shape[1]
        with np.errstate(all="ignore"):  # inf - inf on purpose
            out[bad] = log_softmax_generic(np, rows2d[bad], (1,), n, np.float64, round_narrow)


def _long_rows(rows2d: NDArray[Any]) -> NDArray[Any] | None:
    """float16 and bfloat16 slices longer than a block: each row in segments widened
    one at a time, three passes."""
    out = empty_out(rows2d.shape, rows2d.dtype)
    n = rows2d.shape[1]
    # a fixed number of segments (or blocks): the sums are combined in this order
    size = max(_BLOCK, -(-n // _LONG_SEGMENTS))
    segs = [(s, min(s + size, n)) for s in range(0, n, size)]
    for r in range(rows2d.shape[0]):
        row = rows2d[r]

        def seg_max(s: tuple[int, int], row: Any = row) -> float:
            return float(row[s[0] : s[1]].max())

        m = max(_map(seg_max, segs))
        if not math.isfinite(m):  # NaN propagates through max; +inf is the max
            _fill_specials(rows2d[r : r + 1], out[r : r + 1])
            continue

        def seg_partial(
            s: tuple[int, int], row: Any = row, m: float = m
        ) -> tuple[float, float, int]:
            parts: tuple[float, float, int] = _kernel.partial(_kernel_input(row[s[0] : s[1]]), m)
            return parts

        parts = _map(seg_partial, segs)
        k = sum(p[2] for p in parts)
        # L and its error bound; where the bound leaves an output undecided, L again
        # from the slow path (impl/csrc/rounding.h) and the row written again
        L = _kernel.bound_f32(math.fsum([p[0] for p in parts]) + (k - 1), n)

        def write(
            s: tuple[int, int], r: int = r, m: float = m, L: tuple[float, float, float] = L
        ) -> int:
            wide = np.empty(s[1] - s[0], dtype=_wide_out(out.dtype))
            odd = int(wide.dtype == np.float32)
            unsure: int = _kernel.write(_kernel_input(rows2d[r, s[0] : s[1]]), wide, m, *L[:2],
                                        odd, L[2])  # fmt: skip
            out[r, s[0] : s[1]] = wide  # one rounding
            return unsure

        if any(_map(write, segs)):
            exact: tuple[float, float, float] = _kernel.exact_l_f32(_kernel_input(row), m)
            _map(functools.partial(write, L=exact), segs)
    return out


# ---- without the compiled kernel ----


def _numpy_blocks(rows2d: NDArray[Any], n: int) -> NDArray[Any]:
    if n > _BLOCK_NUMPY and rows2d.dtype != np.float64:
        return _numpy_long_rows_narrow(rows2d)
    out = empty_out(rows2d.shape, rows2d.dtype)
    per = max(1, _BLOCK_NUMPY // n)
    kernel = _block_narrow if rows2d.dtype != np.float64 else _block_float64

    def work(r0: int) -> None:
        with np.errstate(all="ignore"):
            out[r0 : r0 + per] = round_narrow(kernel(rows2d[r0 : r0 + per]), out.dtype)

    _map(work, range(0, rows2d.shape[0], per))
    return out


def _block_narrow(xb: NDArray[Any]) -> NDArray[np.float64]:
    """float16/bfloat16/float32 rows, finite: d = x - m exact in float64, T without the
    maximal entries, one rounding at the end (by the caller)."""
    d = xb.astype(np.float64)
    d -= d.max(axis=1, keepdims=True)
    e = np.exp(d)
    at_max = d == 0.0
    e[at_max] = 0.0
    T = e.sum(axis=1, keepdims=True)
    T += np.count_nonzero(at_max, axis=1, keepdims=True) - 1.0
    d -= np.log1p(T)
    return d


def _block_float64(xb: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = log_softmax_generic(np, xb, (1,), xb.shape[1], np.float64)
    return out


def _numpy_long_rows_narrow(rows2d: NDArray[Any]) -> NDArray[Any]:
    """Narrow slices longer than a block, without the kernel: segments, three passes."""
    out = empty_out(rows2d.shape, rows2d.dtype)
    n = rows2d.shape[1]
    segs = [(s, min(s + _BLOCK_NUMPY, n)) for s in range(0, n, _BLOCK_NUMPY)]
    for r in range(rows2d.shape[0]):
        row = rows2d[r]
        m = float(row.max())

        def partial(seg: tuple[int, int], row: Any = row, m: float = m) -> tuple[float, int]:
            with np.errstate(all="ignore"):
                d = row[seg[0] : seg[1]].astype(np.float64)
                d -= m
                e = np.exp(d)
                at_max = d == 0.0
                e[at_max] = 0.0
                return float(e.sum()), int(np.count_nonzero(at_max))

        parts = _map(partial, segs)
        T = math.fsum(p[0] for p in parts) + (sum(p[1] for p in parts) - 1)
        L = float(np.log1p(T))

        def write(seg: tuple[int, int], r: int = r, m: float = m, L: float = L) -> None:
            with np.errstate(all="ignore"):
                d = rows2d[r, seg[0] : seg[1]].astype(np.float64)
                d -= m
                d -= L
                out[r, seg[0] : seg[1]] = round_narrow(d, out.dtype)

        _map(write, segs)
    return out
