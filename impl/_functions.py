"""softmax and logsumexp (without weights) for any array-API namespace, built on
log_softmax's double-word computation (impl/_generic.py, ``log_parts``): for each
entry, y = x - m - L as hi + lo within a proven ``err``.

- softmax = exp(y). Narrow formats in float64: exp(hi) (1 + lo), within the
  namespace's exp (LIBM_ULP) and err relative. float64 (and float32 without float64):
  ``exp_parts`` of the double-word (2^-86 relative), scaled by 2^q and rounded once
  where the result is subnormal.
- logsumexp = m + L = m - y at a maximal entry (where x - m = 0 exactly), a TwoSum
  of m and -y's double-word.

Both are then tested against the output format's rounding boundaries as log_softmax
is (``rounding_open``), and the outputs the test leaves open are decided by ``fix``:
on eager namespaces the slice is copied to the host and decided in exact arithmetic
(impl/_exact.py). As for log_softmax, the algorithm is functional (no in-place
writes, no data-dependent control flow): it runs eagerly, under ``jax.jit`` and
lazily in Dask.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ._dfloat import const, exp_parts, fast_two_sum, fmt, pow2, two_sum
from ._generic import (
    _PRESCALE,
    LIBM_ULP,
    Parts,
    _format_name,
    _long_double,
    _overflow_threshold,
    _scale_once,
    log_parts,
    rounding_open,
    special_values,
    take_neighbour,
)

__all__ = ["decide_on_host", "logsumexp_generic", "softmax_generic"]

Fix = Callable[[Any, Any], Any]
Cast = Callable[[Any, Any], Any]

_err_scale = 1.0  # 1 but in the tests that weaken the bound or force the fix
# exp_parts' relative error (2^-86, its docstring; 2^-88.0 measured in
# impl/tests/test_rounding.py) with a margin, and float32's (2^-44)
_EXP_REL = {"float64": 2.0**-84, "float32": 2.0**-42}


def _wide_name(xp: Any, wide: Any) -> str:
    return "float64" if wide == xp.float64 else "float32"


def _proper(xp: Any, x: Any, finite: Any, axis: Any) -> Any:
    """Slices whose entries are all finite or -inf (with a finite one): the only ones
    the rounding test and the fix look at."""
    return xp.all(finite | (x == -math.inf), axis=axis, keepdims=True) & xp.any(
        finite, axis=axis, keepdims=True
    )


def softmax_generic(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    cast: Cast | None = None,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
    fix: Fix | None = None,
) -> Any:
    """softmax of a real floating ``x`` over ``axis`` (a tuple), computed in ``wide``
    and returned in x's dtype; the hooks as for log_softmax_generic."""
    out_dtype = x.dtype
    if not (wide == xp.float64 or wide == xp.float32):  # NumPy's long double
        return xp.exp(_long_double(xp, x, axis, n, wide))
    if n and fix is not None and wide is _np_float64() and getattr(xp, "__name__", "") == "numpy":
        got = _softmax_kernel(x, axis, n, cast, fix)
        if got is not None:
            return got
    D = softmax_dw(xp, x, axis, n, wide, scale2, opaque)
    P, hi, lo, err = D.parts, D.hi, D.lo, D.err
    out = xp.where(lo == 0, hi, hi + lo)
    narrow = (
        out
        if wide == out_dtype
        else (xp.astype(out, out_dtype) if cast is None else cast(out, out_dtype))
    )
    narrow = xp.where(x == -math.inf, xp.zeros_like(narrow), narrow)
    # the special slices: exp of log_softmax's special values (1 never is one)
    marker = xp.ones_like(narrow)
    special = special_values(xp, x, marker, axis, n)
    narrow = xp.where(special == 1, narrow, xp.exp(special))
    if fix is None:
        return narrow
    thr = float(xp.finfo(out_dtype).max) if wide == out_dtype else _overflow_threshold(out_dtype)
    open_, take = rounding_open(xp, hi, lo, out, narrow, err * _err_scale, out_dtype, thr)
    open_ = xp.where(D.sub, D.near, open_)
    proper = P.finite & _proper(xp, x, P.finite, axis)
    take = take & proper
    open_ = open_ & proper & ~take
    return fix(take_neighbour(xp, take, out, narrow, cast), open_)


class SoftmaxDW(NamedTuple):
    """softmax before its last rounding: the exact value within ``err`` of hi + lo
    (where ``sub``: hi, rounded once to the working format's subnormal grid, and
    ``near`` says where that rounding is not proven)."""

    parts: Parts
    hi: Any
    lo: Any
    err: Any
    sub: Any
    near: Any


def softmax_dw(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
) -> SoftmaxDW:
    """exp of log_softmax's double-word, with its bound (module docstring)."""
    out_dtype = x.dtype
    P = log_parts(xp, x, axis, n, wide, scale2, opaque)
    name = _wide_name(xp, wide)
    f = fmt(name)
    zero = xp.zeros_like(P.hi)
    if wide == xp.float64 and out_dtype != wide:
        # exp(hi + lo) = exp(hi) (1 + lo + lo^2/2 ...): the namespace's exp (LIBM_ULP
        # ULP, each up to 2^-52 of the value), one product and one sum (2^-52), lo^2
        # (|lo| <= 2^-50 here) and y's own error
        hi = xp.where(P.finite, xp.exp(P.hi), zero)
        lo = zero
        v = hi + hi * P.lo
        err = (P.err + (2.0 * LIBM_ULP + 4.0) * 2.0**-53) * v
        hi = v
        sub = near = xp.zeros_like(hi, dtype=xp.bool)
        return SoftmaxDW(P, hi, lo, err, sub, near)
    else:
        # exp_parts of the double-word: its domain ends at -exp_domain, where every
        # result is 0 in every format (e^-176 < 2^-253 in float32, e^-2838 in float64)
        lim = const(xp, P.hi, -f.exp_domain)
        inside = P.finite & (P.hi >= lim)
        dh = xp.minimum(xp.where(inside, P.hi, lim), zero)
        dl = xp.where(inside, P.lo, zero)
        eh, el, q = exp_parts(xp, dh, dl, f)
        rel = P.err + _EXP_REL[name]
        s, near = _scale_once(xp, eh, el, q, f, _PRESCALE[name], scale2, rel)
        sub = s < math.ldexp(1.0, f.emin)
        scale = pow2(xp, q, eh, f)
        hi = xp.where(inside, xp.where(sub, s, eh * scale), zero)
        # lo * 2^q may lose bits below the normal range: 2^-(emin + p) covers them
        lo = xp.where(inside & ~sub, el * scale, zero)
        err = rel * hi + 2.0 * math.ldexp(1.0, f.emin - f.precision)
        err = xp.where(sub, const(xp, hi, 0.0), err)
    return SoftmaxDW(P, hi, lo, err, sub, near)


def logsumexp_generic(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    cast: Cast | None = None,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
    fix: Fix | None = None,
) -> tuple[Any, Any]:
    """logsumexp of a real floating ``x`` over ``axis`` without weights, and its sign
    (1, 0 for -inf, NaN for NaN), both with the reduced axes kept (size 1)."""
    if n and fix is not None and wide is _np_float64() and getattr(xp, "__name__", "") == "numpy":
        got = _logsumexp_kernel(x, tuple(axis), n, cast, fix)
        if got is not None:
            value, sign = got
            return value, sign
    out_dtype = x.dtype
    finite = xp.isfinite(x)
    ninf_x = const(xp, x, -math.inf)
    if not (wide == xp.float64 or wide == xp.float32):  # NumPy's long double
        ls = _long_double(xp, x, axis, n, wide)
        m_in = xp.max(xp.where(finite, x, ninf_x), axis=axis, keepdims=True)
        at = finite & (x == m_in)
        y = xp.max(xp.where(at, ls, ninf_x), axis=axis, keepdims=True)
        narrow = xp.where(xp.isfinite(m_in), m_in - y, ninf_x)
    else:
        hi, lo, err = logsumexp_dw(xp, x, axis, n, wide, scale2, opaque)
        out = xp.where(lo == 0, hi, hi + lo)
        if wide == out_dtype:
            narrow = out
            thr = float(xp.finfo(out_dtype).max)
        else:
            narrow = xp.astype(out, out_dtype) if cast is None else cast(out, out_dtype)
            thr = _overflow_threshold(out_dtype)
    # the special slices (a zero-size slice never gets here: the callers answer it)
    has_nan = xp.any(xp.isnan(x), axis=axis, keepdims=True)
    has_pinf = xp.any(x == math.inf, axis=axis, keepdims=True)
    none = ~xp.any(finite, axis=axis, keepdims=True)
    nan = const(xp, narrow, math.nan)
    narrow = xp.where(none, const(xp, narrow, -math.inf), narrow)
    narrow = xp.where(has_pinf, const(xp, narrow, math.inf), narrow)
    narrow = xp.where(has_nan, nan, narrow)
    one = xp.ones_like(narrow)
    sign = xp.where(has_nan, nan, xp.where(none & ~has_pinf, xp.zeros_like(one), one))
    if fix is None or not (wide == xp.float64 or wide == xp.float32):
        return narrow, sign
    open_, take = rounding_open(xp, hi, lo, out, narrow, err * _err_scale, out_dtype, thr)
    proper = _proper(xp, x, finite, axis)
    take = take & proper
    narrow = take_neighbour(xp, take, out, narrow, cast)
    return fix(narrow, open_ & proper & ~take), sign


def logsumexp_dw(
    xp: Any,
    x: Any,
    axis: Any,
    n: int | None,
    wide: Any,
    scale2: Callable[[Any, Any], Any] | None = None,
    opaque: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, Any]:
    """m - y at a maximal entry, as hi + lo within err (module docstring); the axes
    kept. On NumPy with the compiled kernels, m + L from their per-row sums instead
    (``_kernel_dw``)."""
    if n and wide is _np_float64() and getattr(xp, "__name__", "") == "numpy":
        got = _kernel_dw(x, axis, n)
        if got is not None:
            return got
    P = log_parts(xp, x, axis, n, wide, scale2, opaque)
    name = _wide_name(xp, wide)
    p = fmt(name).precision
    ninf = const(xp, P.hi, -math.inf)
    at = P.finite & (x == P.m_in)
    # y at the maximal entries (all of them hold the same double-word): L = -y
    y_hi = xp.max(xp.where(at, P.hi, ninf), axis=axis, keepdims=True)
    y_lo = xp.max(xp.where(at, P.lo, ninf), axis=axis, keepdims=True)
    err = xp.max(xp.where(at, P.err, xp.zeros_like(P.err)), axis=axis, keepdims=True)
    has = xp.any(P.finite, axis=axis, keepdims=True)
    zero = xp.zeros_like(y_hi)
    # 0 - y: +0 where y is +-0 (then m + L = m + 0, and -0 + 0 = +0)
    L_hi = xp.where(has, zero - y_hi, zero)
    L_lo = xp.where(has, zero - y_lo, zero)
    m = xp.astype(P.m_in, wide)
    s, t = two_sum(xp, m, L_hi)
    hi, lo = fast_two_sum(s, t + L_lo)
    err = err + xp.abs(hi) * 2.0 ** -(2 * p - 3)
    return hi, lo, err


def _softmax_kernel(x: Any, axis: Any, n: int, cast: Cast | None, fix: Fix) -> Any:
    """softmax on NumPy by the compiled kernels. float32, float16 and bfloat16: one call
    a span of rows (_softmax_f32). float64: the per-row accurate sums (_softmax_sums),
    then the writer (impl/csrc/softmax.h: softmax_rows), which rounds each output in
    double-double with a flag where its rounding is not proven (its header proves the
    bound); the open outputs to ``fix``. Slices with NaN, +inf or no finite entry (the
    writers leave them) take the generic algorithm, on those slices alone. None where
    the kernels are not built."""
    import numpy as np

    from ._numpy import _as_rows, _map, compiled_kernels, empty_out

    kernels = compiled_kernels()
    name = _format_name(x.dtype)
    if kernels is None or name not in ("float16", "bfloat16", "float32", "float64"):
        return None
    rows, perm = _as_rows(x, tuple(axis))
    if name != "float64":
        return _softmax_f32(kernels, x, rows, perm, n, cast, fix, name)
    wide = np.ascontiguousarray(rows)
    out = empty_out(wide.shape, wide.dtype)
    opened = np.zeros(wide.shape, dtype=np.uint8)
    res = np.empty((len(wide), 8))

    def block(span: tuple[int, int]) -> None:
        """rows lo..hi: their sums and outputs (rows are independent: the bits are
        the same however the rows are cut)"""
        lo, hi = span
        res[lo:hi] = _softmax_sums(kernels, wide[lo:hi], n)
        kernels.softmax_rows(wide[lo:hi], n, res[lo:hi], out[lo:hi], opened[lo:hi])

    _map(block, _spans(len(wide), n))
    return _softmax_finish(x, rows, perm, out, opened, n, cast, fix)


def _softmax_f32(
    kernels: Any, x: Any, rows: Any, perm: Any, n: int, cast: Cast | None, fix: Fix, name: str
) -> Any:
    """softmax of float32 rows, and of float16's and bfloat16's (each row widened
    exactly to float32 in the kernel, its outputs rounded to the format's grid there and
    stored exactly), in one kernel call a span of rows (impl/csrc/softmax.h:
    softmax_f32_rows, on log_softmax's passes); the special slices by the generic
    algorithm and the open outputs to ``fix``, as _softmax_kernel does."""
    import numpy as np

    from ._numpy import _map, empty_out

    src = np.ascontiguousarray(rows)
    out = empty_out(src.shape, src.dtype)  # large: on huge pages, one fault per 2 MB
    left: list[int] = []
    fmt = {"float32": 0, "float16": 1, "bfloat16": 2}[name]
    xs, os_ = (src, out) if fmt == 0 else (src.view(np.uint16), out.view(np.uint16))

    def block(span: tuple[int, int]) -> None:
        lo, hi = span
        left.append(kernels.softmax_f32_rows(xs[lo:hi], n, os_[lo:hi], None, fmt))

    _map(block, _spans(len(src), n))
    opened = None  # every output proven: the usual case
    if sum(left) or _err_scale != 1.0:  # an output left open: once more, with its flags
        opened = np.zeros(src.shape, dtype=np.uint8)
        kernels.softmax_f32_rows(xs, n, os_, opened, fmt)
    return _softmax_finish(x, rows, perm, out, opened, n, cast, fix)


def _softmax_finish(
    x: Any, rows: Any, perm: Any, out: Any, opened: Any, n: int, cast: Cast | None, fix: Fix
) -> Any:
    """The kernels' softmax, finished: the slices the writers leave (NaN, +inf or no
    finite entry; their first output is NaN) by the generic algorithm, on those rows
    alone; then the outputs flagged in ``opened`` (None: every output proven) to
    ``fix``, every regular one where a test weakens the bound or forces the fix."""
    import numpy as np

    from ._numpy import _from_rows

    regular = ~np.isnan(out[:, 0].astype(np.float32))
    odd = np.flatnonzero(~regular)
    if odd.size:
        out[odd] = softmax_generic(np, rows[odd], (1,), n, np.float64, cast)
    shape = x.shape
    if opened is None:
        return _from_rows(out, shape, perm)
    open_ = opened.astype(bool)
    if _err_scale != 1.0:
        open_[regular] = True
    return fix(_from_rows(out, shape, perm), _from_rows(open_, shape, perm))


def _spans(nrows: int, n: int) -> list[tuple[int, int]]:
    """Rows cut into one span per thread where each gets min_per_thread entries (the
    machine's measure, impl/_threads.py), else one span."""
    from ._threads import get_num_threads, min_per_thread

    parts = max(1, min(get_num_threads(), nrows, (nrows * n) // max(1, min_per_thread())))
    cuts = [nrows * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _softmax_sums(kernels: Any, rows: Any, n: int) -> Any:
    """combine_rows' values for float64 rows. float64's outputs need L to better than
    the fast sum's 2^-66 (which leaves an output in 2^9 open, and so nearly every long
    row): the slow path's accurate double-double sums (exact_rows; 25 ns an entry here,
    less than the writer) and L with its bound from them (exact_l_from, about 2^-100 of
    L), for every regular row."""
    import numpy as np

    res = _kernel_sums(kernels, rows, (1,), n)
    todo = np.isfinite(res[:, 4]) & np.isfinite(res[:, 0]) & (res[:, 2] == 0)
    sums = np.full((len(res), 3), np.nan)
    kernels.exact_rows(rows, n, np.ascontiguousarray(np.where(todo, res[:, 4], np.nan)), sums)
    for i in np.flatnonzero(todo).tolist():
        res[i, 0], res[i, 1], res[i, 6] = kernels.exact_l_from(
            float(sums[i, 0]), float(sums[i, 1]), int(sums[i, 2]), n
        )
        res[i, 5] = 0.0  # (the accurate sum is relative: no T below 2^-960 to redo)
    return res


def _np_float64() -> Any:
    import numpy as np

    return np.float64


# below it, a float64 row's T was not summed to a relative bound (impl/csrc/blocks.h,
# combine_row's redo; impl/_dask.py's _TINY_T)
_TINY_T = 2.0**-960


def _kernel_dw(x: Any, axis: Any, n: int) -> tuple[Any, Any, Any] | None:
    """logsumexp = m + L as hi + lo within err, from the compiled kernels' first pass:
    per row the maximum m and L = log1p(T), T = sum exp(x - m) - 1 + (k - 1), within
    their bound delta (impl/csrc/blocks.h: partial_rows, then combine_rows with one
    block a row; the Dask path's two calls). The one pass over the data replaces
    log_parts' per-entry double-words: the cost is the kernel's sum.

    - float64: L as a double-word within delta; m + L by TwoSum (exact) and t + L_lo
      (one rounding, below 2^-103 of the result) added to the bound. Rows whose T is below 2^-960
      (the kernels sum those again relative to their second entry; impl/_dask.py)
      take L < 2^-959 as their whole bound: hi = m, and a result near 0 (m tiny)
      goes to the exact step.
    - the narrow formats, widened exactly to float32: L in float64 within delta (L_lo
      0), m + L as the same TwoSum.
    - NaN and infinite entries, slices of -inf and single entries: their values are
      the caller's (logsumexp_generic's special answers); hi there is m or NaN, err 0
      (the rounding test looks at proper slices only).

    None where the kernels are not built or x is not a format they take."""

    from ._numpy import compiled_kernels

    kernels = compiled_kernels()
    name = _format_name(x.dtype)
    if kernels is None or name not in ("float16", "bfloat16", "float32", "float64"):
        return None
    axes = tuple(axis)
    res = _kernel_sums(kernels, x, axes, n)
    hi, lo, err, _ = _dw_of_sums(res)
    kept = tuple(1 if i in axes else x.shape[i] for i in range(x.ndim))
    # kept's order is x's: the rows' (kept axes first) flattened order is the same
    return hi.reshape(kept), lo.reshape(kept), err.reshape(kept)


def _dw_of_sums(res: Any) -> tuple[Any, Any, Any, Any]:
    """m + L as hi + lo within err from _kernel_sums' values (_kernel_dw's
    docstring), and which slices are regular: no NaN, no +inf, a finite entry."""
    import numpy as np

    L_hi, L_lo, m, delta = res[:, 0], res[:, 1], res[:, 4], res[:, 6]
    regular = np.isfinite(m) & np.isfinite(L_hi) & (res[:, 2] == 0)
    tiny = regular & (res[:, 5] != 0)
    L_hi = np.where(regular & ~tiny, L_hi, 0.0)
    L_lo = np.where(regular & ~tiny, L_lo, 0.0)
    delta = np.where(regular, np.where(tiny, 2.0**-959, delta), 0.0)
    s, t = two_sum(np, m, L_hi)
    hi, lo = fast_two_sum(s, t + L_lo)
    err = delta + np.abs(hi) * 2.0**-103  # TwoSum exact, then t + L_lo's one rounding
    return hi, lo, err, regular


def _logsumexp_kernel(
    x: Any, axes: tuple[int, ...], n: int, cast: Cast | None, fix: Fix
) -> tuple[Any, Any] | None:
    """logsumexp on NumPy from the kernels' per-row sums alone (_kernel_sums: one call
    over the data): the special slices found from those sums (NaN in the maximum, a
    count of +inf) and only their rows read again, instead of four passes of NumPy
    over x; the rest as logsumexp_generic does (its rounding test, the neighbour, the
    fix). None where the kernels are not built or x is not a format they take."""
    import numpy as np

    from ._numpy import _as_rows, compiled_kernels

    kernels = compiled_kernels()
    name = _format_name(x.dtype)
    if kernels is None or name not in ("float16", "bfloat16", "float32", "float64"):
        return None
    res = _kernel_sums(kernels, x, axes, n)
    hi, lo, err, regular = _dw_of_sums(res)
    out = np.where(lo == 0, hi, hi + lo)
    if name == "float64":
        narrow, thr = out.copy(), float(np.finfo(np.float64).max)
    else:
        narrow = out.astype(x.dtype) if cast is None else np.asarray(cast(out, x.dtype))
        thr = _overflow_threshold(x.dtype)
    sign = np.ones(len(res), dtype=narrow.dtype)
    odd = np.flatnonzero(~regular)
    if odd.size:  # NaN, +inf or no finite entry: logsumexp_generic's special answers
        rows, _ = _as_rows(x, axes)
        r = rows[odd]
        has_nan = np.isnan(r).any(axis=1)
        has_pinf = (r == math.inf).any(axis=1)
        none = ~np.isfinite(r).any(axis=1)
        v = narrow[odd]
        v = np.where(none, -math.inf, v)
        v = np.where(has_pinf, math.inf, v)
        narrow[odd] = np.where(has_nan, math.nan, v)
        sign[odd] = np.where(has_nan, math.nan, np.where(none & ~has_pinf, 0.0, 1.0))
    open_, take = rounding_open(np, hi, lo, out, narrow, err * _err_scale, x.dtype, thr)
    narrow = take_neighbour(np, take & regular, out, narrow, cast)
    kept = tuple(1 if i in axes else x.shape[i] for i in range(x.ndim))
    opened = (open_ & regular & ~take).reshape(kept)
    return fix(narrow.reshape(kept), opened), sign.reshape(kept)


def _kernel_sums(kernels: Any, x: Any, axes: tuple[int, ...], n: int) -> Any:
    """Per slice of x over ``axes`` (in the order of the kept axes' flattening), the
    kernels' combine_rows values: L hi, L lo, count of +inf, special answer, maximum,
    redone, delta, length (impl/_dask.py's _SLICE)."""
    import numpy as np

    from ._numpy import _as_rows, _kernel_input

    rows, _ = _as_rows(x, axes)
    rows = np.ascontiguousarray(_kernel_input(rows))
    nrows = rows.shape[0]
    parts = np.empty((nrows, 1, 10))
    kernels.partial_rows(rows, n, parts.reshape(nrows, 10))
    res = np.empty((nrows, 8))
    kernels.combine_rows(parts, 1, rows.dtype == np.float64, res)
    return res


def decide_on_host(
    xp: Any, x: Any, axes: tuple[int, ...], function: str
) -> Callable[[Any, Any], Any]:
    """The fix for an eager namespace: the slices with an open output copied to the
    host and decided in exact arithmetic (impl/_exact.py), the rest left as they
    are. ``open_`` has x's shape (softmax) or the reduced shape with the axes kept
    (logsumexp)."""

    def fix(out: Any, open_: Any) -> Any:
        if not bool(xp.any(open_)):
            return out
        import numpy as np

        from . import _host

        _host.fixes += 1
        xh = _host._to_host(xp, x)
        oh = np.asarray(_host._to_host(xp, out)).copy()
        mh = np.asarray(_host._to_host(xp, open_))
        decided = decide_rows(xh, oh, mh, axes, function)
        return xp.where(open_, _host._from_host(xp, decided, out), out)

    return fix


def decide_rows(x: Any, out: Any, open_: Any, axes: tuple[int, ...], function: str) -> Any:
    """``out`` (NumPy, of x's format) with the entries where ``open_`` decided exactly:
    softmax per entry, logsumexp per slice (``open_`` and ``out`` with the reduced
    axes kept)."""
    import numpy as np

    from ._exact import logsumexp_slice, softmax_slice

    name = _format_name(x.dtype)
    kept = [a for a in range(x.ndim) if a not in axes]
    perm = kept + list(axes)
    n = math.prod(x.shape[a] for a in axes)
    rows = np.transpose(x, perm).reshape(-1, n).astype(np.float64)
    res = np.array(np.transpose(out, perm), copy=True)
    flat = res.reshape(-1, n if function == "softmax" else 1)
    mask = np.array(np.transpose(open_, perm).reshape(flat.shape), copy=True)
    todo = np.flatnonzero(mask.any(axis=1))
    if name != "float64" and len(todo):
        # the second tier: narrow formats computed in float64 took the namespace's exp
        # and log1p (2^-50); the precise core in double-words (2^-74 relative) decides
        # most of what that left open, such as logsumexp of log-probabilities, whose
        # results lie near 0 (200 rows of 1,000 in float32: 4.3 s in decimal)
        with np.errstate(all="ignore"):
            values, still = _second_tier(rows[todo], function, x.dtype)
        decided = mask[todo] & ~still
        flat[todo] = np.where(decided, values, flat[todo])
        mask[todo] &= still
    for r in np.flatnonzero(mask.any(axis=1)):
        row = [float(v) for v in rows[r]]
        if function == "softmax":
            which = [int(i) for i in np.flatnonzero(mask[r])]
            flat[r, which] = softmax_slice(row, name, which)
        else:
            flat[r, 0] = logsumexp_slice(row, None, name)[0]
    back = flat.reshape(res.shape)
    inv = [perm.index(i) for i in range(x.ndim)]
    return np.transpose(back, inv)


def _second_tier(rows: Any, function: str, dtype: Any) -> tuple[Any, Any]:
    """softmax or logsumexp of float64 ``rows`` (exact copies of a narrow format's)
    by the precise core, rounded to ``dtype``: the values, and where the rounding test
    still leaves them open."""
    import numpy as np

    from ._numpy import round_narrow

    n = rows.shape[1]
    if function == "softmax":
        D = softmax_dw(np, rows, (1,), n, np.float64)
        hi, lo, err, unsure = D.hi, D.lo, D.err, D.sub & D.near
    else:
        hi, lo, err = logsumexp_dw(np, rows, (1,), n, np.float64)
        unsure = np.zeros(hi.shape, dtype=bool)
    out = np.where(lo == 0, hi, hi + lo)
    narrow = round_narrow(out, dtype)
    opened, take = rounding_open(
        np, hi, lo, out, narrow, err * _err_scale, dtype, _overflow_threshold(dtype)
    )
    narrow = take_neighbour(np, take, out, narrow, round_narrow)
    return narrow, (opened & ~take) | unsure
