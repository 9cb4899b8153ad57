"""Entry point: validation, namespace detection and dispatch to a backend fast path
or the array-API-generic algorithm."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import array_api_compat as compat

from ._generic import log_softmax_generic
from ._host import host_fix

__all__ = ["log_softmax"]


def _normalize_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    # The oracle has its own copy (reference._oracle.normalize_axis) on purpose: the
    # implementation under test and its judge share no code.
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        try:
            if isinstance(a, bool):  # an index to operator.index, never an axis
                raise TypeError
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"axis must be None, an integer or a tuple of integers, got {axis!r}"
            ) from None
        if ndim == 0 and a in (0, -1) and not isinstance(axis, tuple):
            # NumPy's reductions (and so SciPy, and torch's dim) take axis 0 or -1 of a
            # 0-d array as its one element
            return ()
        if not -ndim <= a < ndim:
            raise _axis_error(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in axis={axis!r}")
    return tuple(sorted(out))


def _axis_error(axis: int, ndim: int) -> Exception:
    try:
        from numpy.exceptions import AxisError

        return AxisError(axis, ndim)
    except ImportError:  # pragma: no cover - numpy is a dependency
        return IndexError(f"axis {axis} is out of bounds for array of dimension {ndim}")


def _wide_dtype(xp: Any, x: Any) -> Any:
    """float64 where the namespace and device have it, else float32."""
    info = xp.__array_namespace_info__()
    try:
        names = info.dtypes(device=compat.device(x), kind="real floating")
    except TypeError:  # namespaces whose info takes no device
        names = info.dtypes(kind="real floating")
    return xp.float64 if "float64" in names else xp.float32


def _float_dtype(xp: Any, x: Any, function: str = "log_softmax") -> Any:
    """The working input: real floating arrays as they are (in native byte order),
    integer and bool promoted to the namespace's default float; complex is a
    TypeError."""
    if not getattr(x.dtype, "isnative", True):
        # NumPy (and Dask) arrays of the other byte order: the result in the native
        # one, as NumPy's own arithmetic gives it (the kernels read native numbers)
        x = x.astype(x.dtype.newbyteorder("="))
    if _is_bfloat16(x.dtype):  # ml_dtypes' bfloat16 is not a NumPy dtype to isdtype
        return x
    try:
        kinds = [xp.isdtype(x.dtype, k) for k in ("complex floating", "real floating")]
        whole = xp.isdtype(x.dtype, ("integral", "bool"))
    except TypeError:  # ml_dtypes' float8 and int4: not dtypes to the namespace
        raise _unsupported(x.dtype, function) from None
    if kinds[0]:
        raise TypeError(f"{function} is defined for real input; got complex dtype {x.dtype}")
    if kinds[1]:
        return x
    if whole:
        info = xp.__array_namespace_info__()
        default = info.default_dtypes(device=compat.device(x))["real floating"]
        return xp.astype(x, default)
    raise _unsupported(x.dtype, function)


def _unsupported(dtype: Any, function: str = "log_softmax") -> TypeError:
    return TypeError(
        f"{function} does not support dtype {dtype}: it takes float16, bfloat16, float32, "
        "float64 (and NumPy's long double), or integer or bool input, which is computed in "
        "the default floating dtype"
    )


def _is_bfloat16(dtype: Any) -> bool:
    return "bfloat16" in str(dtype)


_FAST: dict[str, Any] = {}


def _fast(module: str, name: str) -> Any:
    """A fast path's function, imported at its first call (torch's only where torch is
    used) and kept: an import statement costs about a microsecond a call."""
    f = _FAST.get(name)
    if f is None:
        import importlib

        f = _FAST[name] = getattr(importlib.import_module(f"impl.{module}"), name)
    return f


def log_softmax(x: Any, axis: Any = None) -> Any:
    """Logarithm of softmax, accurate where ``d - log(sum(exp(d)))`` saturates.

    Parameters
    ----------
    x : array
        Any array-API array (NumPy, array-api-strict, CuPy, PyTorch, JAX, Dask) or
        array_like. Integer and bool input is promoted to the namespace's default
        floating dtype.
    axis : None, int or tuple of ints
        The axes over which each slice is normalised (None: all).

    Returns
    -------
    array
        Same shape, dtype, namespace and device as ``x`` (a NumPy scalar for 0-d NumPy
        input, as ``scipy.special.log_softmax`` does).
    """
    # the common calls straight to the kernels: a NumPy array or a CPU tensor over its
    # last axis (the same results as the path below, without its checks)
    kind = type(x)
    if kind.__module__ == "numpy":
        out = _fast("_numpy", "last_axis_rows")(x, axis)
        if out is not None:
            return out
    elif kind.__module__ == "torch" and kind.__name__ == "Tensor":
        out = _fast("_torch", "last_axis_rows_torch")(x, axis)
        if out is not None:
            return out
    if not compat.is_array_api_obj(x):
        import numpy as np

        x = np.asarray(x)
    xp = compat.array_namespace(x)
    x = _float_dtype(xp, x)
    axes = _normalize_axis(axis, x.ndim)
    n = _slice_size(x, axes)
    # NumPy, PyTorch and JAX shapes are integers: n is None only elsewhere
    if n is not None and compat.is_numpy_namespace(xp):
        from ._numpy import log_softmax_numpy

        return log_softmax_numpy(x, axes, n)
    if n is not None and compat.is_torch_namespace(xp):
        from ._torch import log_softmax_torch

        return log_softmax_torch(
            x, axes, n, lambda v, axes, n, cast: _generic(xp, v, axes, n, cast)
        )
    if compat.is_dask_namespace(xp) and not _has_zero_size(x):
        from ._dask import log_softmax_dask, round_narrow_dask

        out = log_softmax_dask(x, axes)
        if out is not None:
            return out
        if any(_size(s) is None for s in x.shape):
            raise ValueError(
                f"log_softmax of a Dask array with unknown chunk sizes (chunks={x.chunks}) "
                "needs them known here (blocks other than NumPy's, or a build without "
                "the compiled kernels): call x.compute_chunk_sizes() first"
            )
        return _generic(xp, x, axes, n, round_narrow_dask)
    if _has_zero_size(x):
        return xp.astype(x, x.dtype, copy=True)
    if compat.is_array_api_strict_namespace(xp):
        # eager NumPy underneath: silence the overflow that saturating input causes
        import numpy as np

        with np.errstate(all="ignore"):
            return log_softmax_generic(
                xp, x, axes, n, _wide_dtype(xp, x), fix=host_fix(xp, x, axes)
            )
    if n is not None and compat.is_jax_namespace(xp):
        from ._jax import log_softmax_jax

        return log_softmax_jax(xp, x, axes, n, _wide_dtype(xp, x))
    return log_softmax_generic(xp, x, axes, n, _wide_dtype(xp, x), fix=host_fix(xp, x, axes))


def _slice_size(x: Any, axes: tuple[int, ...]) -> int | None:
    """Entries per slice; None where the shape does not say (an array API shape may
    hold None, and a Dask array's NaN, for data-dependent sizes)."""
    sizes = [_size(x.shape[a]) for a in axes]
    known = [s for s in sizes if s is not None]
    return math.prod(known) if len(known) == len(sizes) else None


def _size(s: Any) -> int | None:
    try:
        return operator.index(s)
    except TypeError:
        return None


def _generic(
    xp: Any,
    x: Any,
    axes: tuple[int, ...],
    n: int | None,
    cast: Callable[[Any, Any], Any] | None,
) -> Any:
    """The generic algorithm with its last rounding ``cast``, for the paths that fall
    back to it (PyTorch's, Dask's); a zero-size x is copied. Eager namespaces get the
    host's kernels for the outputs its rounding test leaves open (impl/_host.py); Dask
    (blocks other than NumPy's) does not."""
    if _has_zero_size(x):
        return xp.astype(x, x.dtype, copy=True)
    fix = None if compat.is_dask_namespace(xp) else host_fix(xp, x, axes)
    return log_softmax_generic(xp, x, axes, n, _wide_dtype(xp, x), cast, fix=fix)


def _has_zero_size(x: Any) -> bool:
    return any(s == 0 for s in x.shape)  # unknown sizes (None, NaN) are not 0
