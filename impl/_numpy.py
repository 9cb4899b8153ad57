"""NumPy path.

Finite input (the common case) is processed in cache-sized blocks of slices (or
segments of one long slice), two threads at a time (NumPy releases the GIL inside
ufuncs), so the temporaries are block-sized instead of full-size. Narrow formats use
the short algorithm in float64; float64 runs the generic precise core on each block.
Input with NaN or infinities, and 0-d input, take the generic algorithm whole.
Warnings that adversarial input causes on purpose (overflow to -inf) are silenced.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._generic import log_softmax_generic

__all__ = ["log_softmax_numpy"]

_BLOCK = 1 << 15  # float64 elements per block: two buffers stay in L2
_THREADS = min(2, os.cpu_count() or 1)


def log_softmax_numpy(x: NDArray[Any], axes: tuple[int, ...], n: int) -> Any:
    if x.size == 0:
        return x.copy()
    with np.errstate(all="ignore"):
        if x.ndim == 0 or n == 1 or not np.isfinite(x).all():
            out = log_softmax_generic(np, x, axes, n, np.float64)
        else:
            out = _blocked(x, axes, n)
    return out[()] if out.ndim == 0 else out


def _blocked(x: NDArray[Any], axes: tuple[int, ...], n: int) -> NDArray[Any]:
    """All-finite input: slices as rows of a 2-D view, processed in blocks of rows."""
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = kept + list(axes)
    rows2d = np.transpose(x, perm).reshape(-1, n)  # a copy only if not already rows
    if n > _BLOCK and x.dtype != np.float64:
        out = _long_rows_narrow(rows2d)
    else:
        out = _rows_in_blocks(rows2d, n)
    t_shape = [x.shape[p] for p in perm]
    return np.transpose(out.reshape(t_shape), np.argsort(perm))


def _rows_in_blocks(rows2d: NDArray[Any], n: int) -> NDArray[Any]:
    """Blocks of whole rows, shared between the threads."""
    out = np.empty(rows2d.shape, dtype=rows2d.dtype)
    rows_per_block = max(1, _BLOCK // n)
    starts = range(0, rows2d.shape[0], rows_per_block)
    kernel = _block_narrow if rows2d.dtype != np.float64 else _block_float64

    def work(r0: int) -> None:
        with np.errstate(all="ignore"):
            r1 = min(r0 + rows_per_block, rows2d.shape[0])
            out[r0:r1] = kernel(rows2d[r0:r1])

    if len(starts) > 1 and _THREADS > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(work, starts))
    else:
        for r0 in starts:
            work(r0)
    return out


def _block_narrow(xb: NDArray[Any]) -> NDArray[np.float64]:
    """float16/bfloat16/float32 rows, finite: d = x - m exact in float64, T without the
    maximal entries, one rounding at the end (by the caller's assignment)."""
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


def _long_rows_narrow(rows2d: NDArray[Any]) -> NDArray[Any]:
    """Slices longer than a block: each row in segments, three passes (max; sum of
    exp; output), the segments of a pass shared between the threads."""
    out = np.empty(rows2d.shape, dtype=rows2d.dtype)
    n = rows2d.shape[1]
    segs = [(s, min(s + _BLOCK, n)) for s in range(0, n, _BLOCK)]
    with ThreadPoolExecutor(_THREADS) as pool:
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

            parts = list(pool.map(partial, segs))
            # the few partial sums are added in float64 in a fixed order
            T = sum(p[0] for p in parts) + (sum(p[1] for p in parts) - 1)
            L = float(np.log1p(T))

            def write(seg: tuple[int, int], r: int = r, m: float = m, L: float = L) -> None:
                with np.errstate(all="ignore"):
                    d = rows2d[r, seg[0] : seg[1]].astype(np.float64)
                    d -= m
                    d -= L
                    out[r, seg[0] : seg[1]] = d

            list(pool.map(write, segs))
    return out
