"""Dask path.

Where every slice lies inside one block (no reduced axis is split over chunks), each
block goes through the NumPy path (and its compiled kernels) in its own task.

Where a reduced axis is split, the same kernels run block by block, reading a 2-D
block of a larger array in place, in two passes over the data. The first takes each
block's maxima m_b and partial sums S_b relative to them on one visit to each row,
with the count k_b of maximal entries and of special values (per slice and block: a
small array). The kernels combine these per block of slices into the maximum m and
L = log1p(T), T = sum_b exp(m_b - m) (S_b + [m_b < m] k_b) + (k - 1): in float64 for
the narrow formats, in double-double for float64 (exp in double-words, 2^-66), with a
bound on L's error. The second pass writes the output under the rounding test, and
counts per slice the outputs it leaves open; slices with NaN or +inf get the
special-value answers. For the slices with an open output (rare), a slow pass sums
each block again in accurate double-double (exact_rows), combines those sums to L
with the slow path's bound (exact_l_from) and writes the slice again: correctly
rounded, as the row kernels are (docs/impl.md, "Correct rounding"). float64 slices
whose terms would all be subnormal are summed relative to their second largest entry,
as in the NumPy path. The graph has one layer of tasks per pass and small ones
between: no task holds more than its block and the small per-slice arrays.
Blocks of other libraries (CuPy), or a build without the kernels, take the generic
algorithm.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from ._dfloat import fast_two_sum, two_sum
from ._numpy import (
    _as_rows,
    _from_rows,
    _wide_out,
    compiled_kernels,
    empty_out,
    log_softmax_numpy,
    round_narrow,
)

__all__ = ["log_softmax_dask", "round_narrow_dask"]

_TINY_T = 2.0**-960  # below it, a float64 sum is redone relative to its second entry
# (the kernels' threshold too: impl/csrc/passes.h, rows_f64; impl/csrc/blocks.h, combine_row)

# per slice and block: sum hi, sum lo, count of maxima, counts of +inf and NaN, the
# count of entries (the slice's length is the blocks' sum: Dask may not know it before
# it computes, after boolean indexing, say); for blocks whose sum is below _TINY_T:
# c_b (the gap of the block's second largest entry, else -inf) and the block's sum
# relative to it, hi and lo; the block's own maximum, which its sums are relative to
# (impl/csrc/blocks.h: partial_rows)
_PARTS = 10
# per slice: L hi, L lo, count of +inf, the special answer (NaN; or a slice of one
# entry), the maximum, whether the float64 sum was redone, the bound on L's error, and
# the slice's length (impl/csrc/blocks.h: combine_rows)
_SLICE = 8
# per slice and block, from the slow pass: its accurate sum hi and lo, and its count
# of entries at the slice's maximum (NaN where the slice needs no slow pass)
_EXACT = 3


def _quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A task of the split path, run with NumPy's floating-point errors ignored:
    tasks run on Dask's threads, which the caller's errstate does not reach, and
    their scalar arithmetic (m_b - m between blocks far apart) may overflow on the
    way to a right answer."""

    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet


def log_softmax_dask(x: Any, axes: tuple[int, ...]) -> Any | None:
    """The Dask graph for NumPy blocks (the row kernels per block, or the split
    reduced axis's blocks combined); for other blocks (CuPy's) whose slices lie whole
    in a block, impl's own call on each block, on the blocks' namespace (CuPy: the
    generic algorithm with its host step, correctly rounded); None for the rest, which
    the generic algorithm on the Dask array takes."""
    meta = getattr(x, "_meta", None)
    whole = all(len(x.chunks[a]) == 1 for a in axes)
    if type(meta) is not np.ndarray:
        if whole and meta is not None and not any(math.isnan(c) for c in x.shape):
            return x.map_blocks(_native_block, axes=axes, dtype=x.dtype, meta=meta)
        return None
    if whole:
        return x.map_blocks(_whole_block, axes=axes, dtype=x.dtype, meta=x._meta)
    if compiled_kernels() is None or x.ndim == 0:
        return None
    return _split(x, axes)


def _native_block(b: Any, axes: tuple[int, ...]) -> Any:
    from ._delegation import log_softmax

    return log_softmax(b, axis=axes)


def round_narrow_dask(v: Any, dtype: Any) -> Any:
    """The generic algorithm's last rounding, on a Dask array: round_narrow on NumPy
    blocks (ml_dtypes' own conversion of float64 to bfloat16 rounds twice)."""
    if isinstance(getattr(v, "_meta", None), np.ndarray):
        return v.map_blocks(round_narrow, dtype, dtype=dtype)
    return v.astype(dtype)


def _whole_block(b: Any, axes: tuple[int, ...]) -> Any:
    n = math.prod(b.shape[a] for a in axes) if axes else 1
    return np.asarray(log_softmax_numpy(b, axes, n, serial=True))


def _split(x: Any, axes: tuple[int, ...]) -> Any:
    import dask.array as da

    xk = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)  # exact
    f64 = xk.dtype == np.float64
    ndim = x.ndim
    part_chunks = (
        *((1,) * len(ch) if a in axes else ch for a, ch in enumerate(x.chunks)),
        (_PARTS,),
    )
    parts = da.map_blocks(
        _partial_block,
        xk,
        axes=axes,
        f64=f64,
        new_axis=ndim,
        chunks=part_chunks,
        dtype=np.float64,
        meta=np.empty((0,) * (ndim + 1)),
    )
    # The partial sums of every block of a slice (a small array: _PARTS values per
    # slice and block) are joined per block of slices, concatenated along the reduced
    # axes, into _SLICE values per slice; each output block reads those of its slices.
    # blockwise contracts the indices that are not the output's.
    names = string.ascii_letters
    out_index = names[:ndim]
    kept_index = "".join(names[a] for a in range(ndim) if a not in axes)
    parts_index = "".join(names[ndim + a] if a in axes else names[a] for a in range(ndim))
    part, value = names[2 * ndim], names[2 * ndim + 1]
    per_slice = da.blockwise(
        _finish_block,
        kept_index + value,
        parts,
        parts_index + part,
        new_axes={value: _SLICE},
        concatenate=True,
        align_arrays=False,  # the kept axes' chunks are x's already
        axes=axes,
        f64=f64,
        dtype=np.float64,
        meta=np.empty((0,) * (ndim - len(axes) + 1)),
    )
    # The write, with the rounding test under each slice's bound: each task gives its
    # output block and, per slice, the count of outputs the test left open there
    written = da.blockwise(
        _write_block,
        out_index,
        xk,
        out_index,
        per_slice,
        kept_index + value,
        concatenate=True,
        align_arrays=False,
        axes=axes,
        out_dtype=x.dtype,
        dtype=x.dtype,
        meta=x._meta,
    )
    ones = {names[a]: 1 for a in axes}
    # The slow pass, for the slices with an output left open in any of their blocks
    # (none, mostly: then these tasks only look at the counts): each block's accurate
    # sum, then those of every block of a slice combined to L and the slice written
    # again. The first reads the counts of every block of its slices from the write's
    # results as they are (concatenate=False: lists of them, nested by reduced axis)
    opened_index = "".join(names[ndim + a] if a in axes else names[a] for a in range(ndim))
    exact = da.blockwise(
        _exact_block,
        out_index + part,
        xk,
        out_index,
        written,
        opened_index,
        per_slice,
        kept_index + value,
        concatenate=False,
        align_arrays=False,
        new_axes={part: _EXACT},
        adjust_chunks=ones,
        axes=axes,
        dtype=np.float64,
        meta=np.empty((0,) * (ndim + 1)),
    )
    return da.blockwise(
        _fix_block,
        out_index,
        written,
        out_index,
        xk,
        out_index,
        exact,
        opened_index + part,
        per_slice,
        kept_index + value,
        concatenate=True,
        align_arrays=False,
        axes=axes,
        out_dtype=x.dtype,
        dtype=x.dtype,
        meta=x._meta,
    )


def _block_rows(b: Any, axes: tuple[int, ...]) -> tuple[Any, list[int]]:
    """_as_rows, read in place where the block is 2-D with the last axis reduced and
    its rows contiguous (a block of a larger array: rows a stride apart), which the
    kernels take as they are."""
    if b.ndim == 2 and axes == (1,) and b.strides[1] == b.itemsize and b.flags.aligned:
        return b, [0, 1]
    return _as_rows(b, axes)


def _kernels() -> Any:
    kernels = compiled_kernels()
    assert kernels is not None  # the split path runs only with them built
    return kernels


@_quiet
def _partial_block(b: Any, axes: tuple[int, ...], f64: bool) -> Any:
    """Per slice of the block: its maximum m_b, the sum relative to it and the count
    of maximal entries, the counts of special values (the kernels' partial_rows, on
    one visit to each row), and (float64) the sum relative to the second largest
    entry where the first sum is below _TINY_T."""
    _kernel = _kernels()
    rows, perm = _block_rows(b, axes)
    out = np.empty((rows.shape[0], _PARTS))
    if rows.size:
        _kernel.partial_rows(rows, rows.shape[1], out)
    else:  # a block of no entries (chunks of size 0): it brings nothing to the sum
        out[:] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -np.inf, 0.0, 0.0, -np.inf]
    if f64:
        # rare: every term of the row in this block is below _TINY_T
        m = out[:, 9]
        for i in np.flatnonzero((out[:, 0] < _TINY_T) & np.isfinite(m)):
            below = rows[i][rows[i] < m[i]]
            if below.size:
                c_b = float(below.max()) - float(m[i])
                out[i, 6] = c_b
                if c_b >= -2000.0:
                    out[i, 7:9] = _kernel.partial(rows[i], float(m[i]), c_b)[:2]
    shape = [1 if a in axes else b.shape[a] for a in range(b.ndim)]
    return _unrows(out, shape, perm, _PARTS)


def _unrows(v: Any, shape: list[int], perm: list[int], width: int) -> Any:
    """Per-row values (rows in perm order, ``width`` per row) back to the block's
    layout, with the reduced axes of length 1 and a trailing axis of ``width``."""
    t_shape = [*(shape[p] for p in perm), width]
    inv = [*np.argsort(perm).tolist(), len(perm)]
    return np.transpose(v.reshape(t_shape), inv)


@_quiet
def _finish_block(pb: Any, axes: tuple[int, ...], f64: bool) -> Any:
    """Partial sums of every block of a slice (reduced axes whole here) to L, and
    the slice's special case: _SLICE values per slice, on the kept axes and a
    trailing axis. The kernels' combine_rows does it (impl/csrc/blocks.h says how), but
    for the float64 slices whose T is below _TINY_T, redone here."""
    _kernel = _kernels()
    ndim = pb.ndim - 1
    kept = [i for i in range(ndim) if i not in axes]
    perm = kept + list(axes) + [ndim]
    nk = math.prod(pb.shape[a] for a in kept)
    nb = math.prod(pb.shape[a] for a in axes)  # blocks per slice
    p = np.ascontiguousarray(np.transpose(pb, perm).reshape(nk, nb, _PARTS))
    res = np.empty((nk, _SLICE))
    _kernel.combine_rows(p, nb, f64, res)
    for i in np.flatnonzero(res[:, 5]):  # rare
        res[i, :2] = _tiny_log1p(p[i], res[i, 4]), 0.0
    return res.reshape([pb.shape[a] for a in kept] + [_SLICE])


def _tiny_log1p(blocks: Any, m: float) -> float:
    """log1p(T) of a float64 slice whose T is below _TINY_T (one maximal entry, in
    one block), from its blocks' partial sums and its maximum m. T = exp(c) S with
    c the largest of the terms' shifts and S = sum_j exp(c_j - c) S_j in
    double-double, products exact in rationals (this runs for a handful of slices at
    most): the block at the maximum brings its sum relative to its second largest
    entry (c_j = that entry's gap to m), each block below the maximum its S_b + k_b
    (c_j = m_b - m, kept exactly as a double-double)."""
    _kernel = _kernels()
    terms = []  # c_j as (hi, lo), S_j as (hi, lo)
    for j in range(blocks.shape[0]):
        m_b = float(blocks[j, 9])
        if m_b == m and blocks[j, 6] >= -2000.0:
            terms.append(((blocks[j, 6], 0.0), (blocks[j, 7], blocks[j, 8])))
        elif -np.inf < m_b < m:
            s = Fraction(blocks[j, 2]) + Fraction(blocks[j, 0]) + Fraction(blocks[j, 1])
            sh = float(s)
            terms.append((two_sum(np, m_b, -m), (sh, float(s - Fraction(sh)))))
    c = max((t[0][0] for t in terms), default=-np.inf)
    if not c >= -2000.0:  # also -inf: T is 0 in double
        return 0.0
    parts = []
    for (ch, cl), (s_hi, s_lo) in terms:
        if ch - c < -700.0:  # below 2**-1000 of the term at c: nothing in double
            continue
        gh, gl = _dd_sum([(ch, 0.0), (-c, 0.0), (cl, 0.0)])  # c_j - c, to 2^-106
        eh, el, K = _kernel.exp_dd(gh, gl)
        prod = (Fraction(eh) + Fraction(el)) * (Fraction(s_hi) + Fraction(s_lo)) * Fraction(2) ** K
        hi = float(prod)
        parts.append((hi, float(prod - Fraction(hi))))
    sh, sl = _dd_sum(parts)
    return float(_kernel.tiny_log(c, sh, sl))


@_quiet
def _write_block(b: Any, per_slice: Any, axes: tuple[int, ...], out_dtype: Any) -> tuple[Any, Any]:
    """per_slice: _finish_block's values for the slices of b. The kernels' write_rows
    writes the output, special values (docs/specification.md) too, with the rounding
    test under each slice's bound; returns the output block and, per slice (b's shape
    with the reduced axes of length 1), the count of outputs the test left open."""
    _kernel = _kernels()
    rows, perm = _block_rows(b, axes)
    shape = [1 if a in axes else b.shape[a] for a in range(b.ndim)]
    if rows.size == 0:  # chunks of size 0
        return np.empty(b.shape, dtype=out_dtype), np.zeros(shape)
    slices = np.ascontiguousarray(per_slice.reshape(-1, _SLICE))
    out, unsure = _write_rows(rows, slices, out_dtype)
    return _from_rows(out, b.shape, perm), _unrows(unsure, shape, perm, 1)[..., 0]


def _write_rows(rows: Any, slices: Any, out_dtype: Any) -> tuple[Any, Any]:
    """write_rows into a new array of out_dtype; and the counts of open outputs"""
    direct = np.dtype(out_dtype) == rows.dtype
    out = empty_out(rows.shape, rows.dtype if direct else _wide_out(out_dtype))
    unsure = np.zeros(rows.shape[0])
    # narrow formats (rows widened to float32): float64, or float32 rounded to odd,
    # then rounded to nearest in the narrow format, which is one rounding
    odd = int(not direct and out.dtype == np.float32)
    _kernels().write_rows(rows, out, rows.shape[1], slices, odd, unsure)
    if not direct:
        wide, out = out, empty_out(rows.shape, out_dtype)
        np.copyto(out, wide, casting="unsafe")
    return out, unsure


def _open_slices(counts: Any, axes: tuple[int, ...]) -> Any:
    """Per slice (in rows order), whether any of its blocks left an output open"""
    return np.asarray(counts).sum(axis=axes).reshape(-1) > 0


def _counts(written: Any, axes: tuple[int, ...], depth: int = 0) -> Any:
    """The open-output counts of _write_block's results for every block of some
    slices, given as lists nested one level per reduced axis (in axis order), joined
    into one array: b's shape with the reduced axes of length nb"""
    if isinstance(written, list):
        return np.concatenate([_counts(w, axes, depth + 1) for w in written], axis=axes[depth])
    return written[1]


@_quiet
def _exact_block(b: Any, written: Any, per_slice: Any, axes: tuple[int, ...]) -> Any:
    """The slow pass's sums over block b for its slices with an output left open
    (written: _write_block's results for every block of b's slices, as _counts takes
    them), relative to the slice's maximum: the kernels' exact_rows. NaN for the other
    slices."""
    shape = [1 if a in axes else b.shape[a] for a in range(b.ndim)]
    per_slice = per_slice[0]  # one block along the values' axis, in a list
    opened = _open_slices(_counts(written, axes), axes)
    out = np.full((opened.size, _EXACT), np.nan)
    if opened.any() and b.size:
        rows, perm = _block_rows(b, axes)
        slices = per_slice.reshape(-1, _SLICE)
        ms = np.ascontiguousarray(np.where(opened, slices[:, 4], np.nan))
        _kernels().exact_rows(rows, rows.shape[1], ms, out)
        return _unrows(out, shape, perm, _EXACT)
    kept = [i for i in range(b.ndim) if i not in axes]
    return _unrows(out, shape, kept + list(axes), _EXACT)


@_quiet
def _fix_block(
    written: Any, b: Any, exact: Any, per_slice: Any, axes: tuple[int, ...], out_dtype: Any
) -> Any:
    """The output block o that _write_block gave (written: o and its counts), with the
    slices the rounding test left open written again from the slow pass's L: the
    blocks' accurate sums (exact: every block's, the reduced axes whole) combined in
    double-double, L and its bound by exact_l_from."""
    o = written[0]
    ndim = b.ndim
    kept = [i for i in range(ndim) if i not in axes]
    nk = math.prod(exact.shape[a] for a in kept)
    nb = math.prod(exact.shape[a] for a in axes)
    e = np.transpose(exact, kept + list(axes) + [ndim]).reshape(nk, nb, _EXACT)
    opened = np.flatnonzero(~np.isnan(e[:, 0, 0]))
    if opened.size == 0 or b.size == 0:
        return o
    _kernel = _kernels()
    slices = np.array(per_slice.reshape(-1, _SLICE)[opened])
    for i, r in enumerate(opened):
        hi, lo = _dd_sum([(h, low) for h, low in e[r, :, :2].tolist()])
        k = int(e[r, :, 2].sum())
        slices[i, 0], slices[i, 1], slices[i, 6] = _kernel.exact_l_from(
            hi, lo, k, int(slices[i, 7])
        )
    rows, perm = _block_rows(b, axes)
    fixed, unsure = _write_rows(np.ascontiguousarray(rows[opened]), slices, out_dtype)
    _kernel.note_slow(rows.dtype == np.float64, opened.size, int(unsure.sum()))
    out_rows, _ = _as_rows(np.array(o), axes)  # a copy: o is another task's result
    out_rows[opened] = fixed
    return _from_rows(out_rows, b.shape, perm)


def _dd_sum(parts: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Double-double sum of double-double parts (TwoSum on the high parts), of
    floats or elementwise over NumPy arrays."""
    hi, lo = 0.0, 0.0
    for h, low in parts:
        hi, err = two_sum(np, hi, h)
        lo += err + low
    return fast_two_sum(hi, lo)
