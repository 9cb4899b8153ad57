"""softmax and logsumexp: validation, namespace detection and dispatch, as
log_softmax's entry point does (impl/_delegation.py).

Every namespace runs the same algorithm (impl/_functions.py; with weights,
impl/_weighted.py on the host), so the results are the same bits everywhere:
NumPy and array-api-strict eagerly, PyTorch with its derivatives (an
autograd.Function), JAX eagerly or under ``jax.jit`` with a custom JVP (the rare
undecided outputs through ``jax.pure_callback``), Dask lazily with each slice in one
block (the reduced axes rechunked whole), CuPy with the host's exact step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import array_api_compat as compat

from . import _functions
from ._complex import complex_logsumexp, is_complex
from ._delegation import (
    _fast,
    _float_dtype,
    _has_zero_size,
    _is_bfloat16,
    _normalize_axis,
    _size,
    _slice_size,
    _wide_dtype,
)
from ._fpenv import default_env
from ._functions import decide_on_host, decide_rows, logsumexp_generic, softmax_generic

__all__ = ["logsumexp", "softmax"]


def _prepare(x: Any, axis: Any, function: str) -> tuple[Any, Any, tuple[int, ...], int | None]:
    if not compat.is_array_api_obj(x):
        import numpy as np

        x = np.asarray(x)
    xp = compat.array_namespace(x)
    x = _float_dtype(xp, x, function)
    axes = _normalize_axis(axis, x.ndim)
    return xp, x, axes, _slice_size(x, axes)


def softmax(x: Any, axis: Any = None) -> Any:
    """exp(x) / sum(exp(x)) over ``axis``, correctly rounded in x's format.

    The signature and semantics of ``scipy.special.softmax`` (docs/specification.md,
    "softmax"); any array-API array or array_like, the result of x's shape, dtype,
    namespace and device (a NumPy scalar for 0-d NumPy input)."""
    # the common calls straight to the kernel (not in the tests that force the exact step)
    kind = type(x)
    if kind.__module__ == "numpy" and _functions._err_scale == 1.0:
        out = _fast("_numpy", "last_axis_softmax")(x, axis)
        if out is not None:
            return out
    elif kind.__module__ == "torch" and kind.__name__ == "Tensor" and _functions._err_scale == 1.0:
        out = _fast("_torch", "last_axis_softmax_torch")(x, axis)
        if out is not None:
            return out
    xp, x, axes, n = _prepare(x, axis, "softmax")
    if _has_zero_size(x):
        return xp.astype(x, x.dtype, copy=True)
    return _dispatch(xp, x, axes, n, "softmax")


def logsumexp(
    a: Any, axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False
) -> Any:
    """log of the absolute value of ``sum(b * exp(a))`` over ``axis``, correctly
    rounded, and with ``return_sign`` the sum's sign (+1, 0, -1 or NaN).

    The signature and semantics of ``scipy.special.logsumexp`` (docs/specification.md,
    "logsumexp"): a and b broadcast together, and axis counts the broadcast shape's
    axes; the result has a's dtype, or with b the dtype they promote to (integers and
    bool to the namespace's default float); the reduced axes dropped, or kept with
    size 1 under ``keepdims``. Complex a or b: log S with its principal argument, as
    SciPy defines it, computed but not certified (impl/_complex.py)."""
    xp, a, b = _operands(a, b)
    axes = _normalize_axis(axis, a.ndim)
    if is_complex(xp, a.dtype):
        on = _dask_complex if compat.is_dask_namespace(xp) else complex_logsumexp
        value, sign = on(xp, a, b, axes, return_sign)
        return _reduced(xp, value, sign, axes, keepdims, return_sign)
    n = _slice_size(a, axes)
    if b is not None:
        value, sign = _weighted(xp, a, b, axes)
        if not return_sign:  # a negative sum has no logarithm
            value = xp.where(sign < 0, xp.full_like(value, math.nan), value)
    elif _has_zero_size(a) and n == 0:
        shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
        dev = compat.device(a)
        value = xp.full(shape, -math.inf, dtype=a.dtype, device=dev)
        sign = xp.zeros(shape, dtype=a.dtype, device=dev)
    elif _has_zero_size(a):
        shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
        value = xp.empty(shape, dtype=a.dtype, device=compat.device(a))
        sign = xp.empty(shape, dtype=a.dtype, device=compat.device(a))
    else:
        value, sign = _dispatch(xp, a, axes, n, "logsumexp")
    return _reduced(xp, value, sign, axes, keepdims, return_sign)


def _reduced(
    xp: Any, value: Any, sign: Any, axes: tuple[int, ...], keepdims: bool, return_sign: bool
) -> Any:
    """logsumexp's answer from (value, sign) with the reduced axes kept."""
    if not keepdims:
        value = _squeeze(xp, value, axes)
        sign = None if sign is None else _squeeze(xp, sign, axes)
    if compat.is_numpy_namespace(xp) and value.ndim == 0:
        value = value[()]
        sign = None if sign is None else sign[()]
    return (value, sign) if return_sign else value


def _squeeze(xp: Any, v: Any, axes: tuple[int, ...]) -> Any:
    if not axes:
        return v
    return xp.reshape(v, tuple(s for i, s in enumerate(v.shape) if i not in axes))


def _operands(a: Any, b: Any) -> tuple[Any, Any, Any]:
    """(xp, a, b) as logsumexp computes them, as SciPy's ``xp_promote(a, b,
    broadcast=True, force_floating=True)`` makes them: arrays of one namespace (array
    likes as NumPy arrays; b on a's device), broadcast together, in the dtype they
    promote to by the namespace's own rules, the floating ones' where those rules
    have none (array-api-strict's integers beside floats), the namespace's default
    float where neither is floating. Real dtypes the kernels do not take raise
    TypeError, as for log_softmax."""
    if not compat.is_array_api_obj(a):
        import numpy as np

        a = np.asarray(a)
    xp = compat.array_namespace(a)
    if b is None:
        return xp, a if is_complex(xp, a.dtype) else _float_dtype(xp, a, "logsumexp"), None
    if not compat.is_array_api_obj(b):
        if compat.is_numpy_namespace(xp) or compat.is_dask_namespace(xp):
            import numpy as np

            b = np.asarray(b)
        else:
            b = xp.asarray(b, device=compat.device(a))
    if compat.is_dask_namespace(xp):
        import dask.array as da

        b = da.asarray(b)
    elif not compat.is_numpy_namespace(xp) and compat.array_namespace(b) is not xp:
        b = xp.asarray(b, device=compat.device(a))
    dtype = _promoted(xp, a, b)
    shape = _broadcast_shape(a.shape, b.shape)
    a, b = xp.broadcast_to(a, shape), xp.broadcast_to(b, shape)
    a, b = xp.astype(a, dtype), xp.astype(b, dtype)
    if not is_complex(xp, dtype):
        a = _float_dtype(xp, a, "logsumexp")  # (an unsupported dtype raises here)
    return xp, a, b


def _broadcast_shape(sa: tuple[Any, ...], sb: tuple[Any, ...]) -> tuple[Any, ...]:
    """The shape a and b broadcast to; ValueError naming both where they do not."""
    import numpy as np

    try:
        return tuple(np.broadcast_shapes(tuple(sa), tuple(sb)))
    except ValueError:
        raise ValueError(
            f"a of shape {tuple(sa)} and b of shape {tuple(sb)} do not broadcast together"
        ) from None


def _promoted(xp: Any, a: Any, b: Any) -> Any:
    """The dtype a and b compute in (see _operands)."""
    kinds = [_is_bfloat16(d) or _floating(xp, d) for d in (a.dtype, b.dtype)]
    if not any(kinds):
        return _default_float(xp, a)
    try:
        return xp.result_type(a.dtype, b.dtype)
    except TypeError:  # no rule between them (array-api-strict's integer and float)
        floats = [d for d, k in zip((a.dtype, b.dtype), kinds, strict=True) if k]
        return xp.result_type(*floats, _default_float(xp, a))


def _floating(xp: Any, dtype: Any) -> bool:
    try:
        return bool(xp.isdtype(dtype, ("real floating", "complex floating")))
    except TypeError:  # ml_dtypes' float8 and int4: not dtypes to the namespace
        return False


def _default_float(xp: Any, a: Any) -> Any:
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=compat.device(a))["real floating"]


# -- the unweighted functions, per namespace ---------------------------------------


def _dispatch(xp: Any, x: Any, axes: tuple[int, ...], n: int | None, function: str) -> Any:
    if compat.is_numpy_namespace(xp):
        return _numpy(x, axes, n, function)
    if compat.is_torch_namespace(xp):
        return _torch(x, axes, n, function)
    if compat.is_jax_namespace(xp) and n is not None:
        return _jax(x, axes, n, function)
    if compat.is_dask_namespace(xp):
        return _dask(x, axes, function)
    return _eager(xp, x, axes, n, function)


def _generic_for(function: str) -> Callable[..., Any]:
    return softmax_generic if function == "softmax" else logsumexp_generic


def _eager(
    xp: Any, x: Any, axes: tuple[int, ...], n: int | None, function: str, cast: Any = None
) -> Any:
    """The algorithm on an eager namespace, with the host's exact step."""
    import numpy as np

    fix = decide_on_host(xp, x, axes, function)
    with np.errstate(all="ignore"), default_env():
        return _generic_for(function)(xp, x, axes, n, _wide_dtype(xp, x), cast, fix=fix)


def _numpy(x: Any, axes: tuple[int, ...], n: int | None, function: str) -> Any:
    import numpy as np

    from ._numpy import round_narrow

    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    wide = np.longdouble if x.dtype == np.longdouble else np.float64
    fix = decide_on_host(np, x, axes, function)
    with np.errstate(all="ignore"), default_env():
        out = _generic_for(function)(np, x, axes, n, wide, round_narrow, fix=fix)
    if function == "softmax":
        return out[()] if out.ndim == 0 else out
    return out


# -- PyTorch: the same algorithm on the tensor's device, derivatives by hand --------


def _torch(x: Any, axes: tuple[int, ...], n: int | None, function: str) -> Any:
    import torch

    from ._torch import _differentiated

    if _differentiated(torch, x):  # backward, forward mode or a torch.func transform
        fn = _torch_function(torch, function)
        if function == "softmax":
            return fn.apply(x, axes, n)
        value, sign = fn.apply(x, axes, n)
        return value, sign
    return _torch_forward(torch, x.detach(), axes, n, function)


def _torch_forward(torch: Any, x: Any, axes: tuple[int, ...], n: int | None, function: str) -> Any:
    """On the tensor's device; CPU tensors on the NumPy path over a zero-copy view
    (torch's own threads would inherit a flush-to-zero that ``set_flush_denormal``
    set, where the host's computation clears it: impl/_fpenv.py)."""
    from ._host import _from_host, _to_host
    from ._torch import _round_narrow

    x = x.resolve_neg()
    xp = compat.array_namespace(x)
    if x.device.type == "cpu" and _torch_cpu_on_host:
        out = _numpy(_to_host(xp, x), axes, n, function)
        if function == "softmax":
            return _from_host(xp, _np_array(out), x)
        return _from_host(xp, _np_array(out[0]), x), _from_host(xp, _np_array(out[1]), x)
    return _eager(xp, x, axes, n, function, lambda v, d: _round_narrow(torch, v, d))


# CPU tensors compute on the host (True), or as other devices do (the tests of the
# GPU devices' paths set False: impl/tests/device_paths.py)
_torch_cpu_on_host = True


def _np_array(v: Any) -> Any:
    import numpy as np

    return np.asarray(v)


@functools.cache
def _torch_function(torch: Any, function: str) -> Any:
    """The autograd.Function of ``function`` (made once, at first use), with backward,
    forward-mode (jvp) and vmap rules, as log_softmax's (impl/_torch.py)."""
    from ._torch import _batched

    def total(u: Any, axes: list[int]) -> Any:
        return u.sum(dim=axes, keepdim=True) if axes else u

    def widened(*ts: Any) -> list[Any]:
        w = torch.promote_types(ts[0].dtype, torch.float32)
        return [t.to(w) for t in ts]

    class Softmax(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(x: Any, axes: tuple[int, ...], n: int | None) -> Any:
            return _torch_forward(torch, x.detach(), axes, n, "softmax")

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.axes = list(inputs[1])
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            # d softmax = s (dx - sum(s dx)); its adjoint s (g - sum(g s))
            (s,) = ctx.saved_tensors
            sw, gw = widened(s, g)
            return (sw * (gw - total(gw * sw, ctx.axes))).to(g.dtype), None, None

        @staticmethod
        def jvp(ctx: Any, t: Any, *_: Any) -> Any:
            (s,) = ctx.saved_tensors
            sw, tw = widened(s, t)
            return (sw * (tw - total(sw * tw, ctx.axes))).to(t.dtype)

        @staticmethod
        def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
            return _batched(Softmax, in_dims, *args)

    class LogSumExp(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(x: Any, axes: tuple[int, ...], n: int | None) -> Any:
            return _torch_forward(torch, x.detach(), axes, n, "logsumexp")

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.mark_non_differentiable(output[1])
            ctx.axes = list(inputs[1])
            ctx.save_for_backward(inputs[0], output[0])
            ctx.save_for_forward(inputs[0], output[0])

        @staticmethod
        def backward(ctx: Any, g: Any, _g_sign: Any) -> Any:
            # d logsumexp = sum(softmax(x) dx): the gradient g softmax(x)
            x, value = ctx.saved_tensors
            xw, vw, gw = widened(x, value, g)
            return (gw * torch.exp(xw - vw)).to(x.dtype), None, None

        @staticmethod
        def jvp(ctx: Any, t: Any, *_: Any) -> Any:
            x, value = ctx.saved_tensors
            xw, vw, tw = widened(x, value, t)
            return total(torch.exp(xw - vw) * tw, ctx.axes).to(t.dtype), None

        @staticmethod
        def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
            return _batched(LogSumExp, in_dims, *args, pair=True)

    return Softmax if function == "softmax" else LogSumExp


# -- JAX: compiled once per shape, a custom JVP ------------------------------------


def _jax(x: Any, axes: tuple[int, ...], n: int, function: str) -> Any:
    import jax

    xp = compat.array_namespace(x)
    wide = "float64" if _wide_dtype(xp, x) == xp.float64 else "float32"
    x64 = bool(jax.config.read("jax_enable_x64"))
    return _jax_compiled(axes, n, wide, x64, function, jax_cpu_on_host)(x)


# CPU devices compute on the host (True), or as other devices do (the tests of the
# GPU devices' paths set False: impl/tests/device_paths.py)
jax_cpu_on_host = True


@functools.lru_cache(maxsize=256)
def _jax_compiled(
    axes: tuple[int, ...], n: int, wide: str, x64: bool, function: str, host_cpu: bool
) -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    from ._jax import _opaque, _subnormal_safe_cast, _subnormal_safe_scale2, _to_bfloat16

    def run(x: Any) -> Any:
        xp = compat.array_namespace(x)
        working = getattr(jnp, wide)
        if wide == "float32" and x.dtype == jnp.bfloat16:
            cast: Any = _to_bfloat16
        else:
            cast = _subnormal_safe_cast if wide == "float64" else None
        fix = _jax_fix(x, axes, function)
        return _generic_for(function)(
            xp, x, axes, n, working, cast, _subnormal_safe_scale2, _opaque, fix
        )

    def on_cpu(x: Any) -> Any:
        return _jax_on_host(x, axes, function)

    def both(x: Any) -> Any:
        # CPU devices: the NumPy path on the host buffer (XLA would compile the
        # double-word algorithm, tens of seconds a shape); elsewhere the algorithm
        if not host_cpu:
            return run(x)
        return jax.lax.platform_dependent(x, cpu=on_cpu, default=run)

    if function == "softmax":

        @jax.custom_jvp
        def f(x: Any) -> Any:
            return both(x)

        @f.defjvp
        def _jvp(primals: Any, tangents: Any) -> Any:
            s = f(primals[0])
            t = tangents[0]
            w = jnp.promote_types(s.dtype, jnp.float32)
            sw, tw = s.astype(w), t.astype(w)
            return s, (sw * (tw - jnp.sum(sw * tw, axis=axes, keepdims=True))).astype(t.dtype)

        return jax.jit(f)

    @jax.custom_jvp
    def g(x: Any) -> Any:
        return both(x)

    @g.defjvp
    def _jvp_lse(primals: Any, tangents: Any) -> Any:
        x = primals[0]
        value, sign = g(x)
        t = tangents[0]
        w = jnp.promote_types(x.dtype, jnp.float32)
        p = jnp.exp(x.astype(w) - value.astype(w))
        dv = jnp.sum(p * t.astype(w), axis=axes, keepdims=True).astype(t.dtype)
        return (value, sign), (dv, jnp.zeros_like(sign))

    return jax.jit(g)


def _jax_on_host(x: Any, axes: tuple[int, ...], function: str) -> Any:
    """``function`` of x by the NumPy path, on the host (impl/_jax.py's ``on_host``);
    logsumexp's value and sign with the axes kept."""
    import jax

    from ._jax import on_host

    def run(xh: Any) -> Any:
        return _numpy(xh, axes, math.prod(xh.shape[a] for a in axes), function)

    if function == "softmax":
        return on_host(run, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
    kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    spec = jax.ShapeDtypeStruct(kept, x.dtype)
    return on_host(run, (spec, spec), x)


def _jax_fix(x: Any, axes: tuple[int, ...], function: str) -> Callable[[Any, Any], Any]:
    """The exact step under ``jax.jit``: the slices with an open output decided on the
    host (impl/_jax.py's ``fix_on_host``)."""
    import numpy as np

    from ._jax import fix_on_host

    def decide(xh: Any, oh: Any, mh: Any) -> Any:
        with default_env():  # (XLA's threads flush subnormals)
            return decide_rows(xh, np.array(oh), mh, axes, function)

    return fix_on_host(decide, x, with_result=True)


# -- Dask: each slice in one block ----------------------------------------------------


def _dask(x: Any, axes: tuple[int, ...], function: str) -> Any:
    _known_chunks(x, function)
    whole = x.rechunk({a: -1 for a in axes})
    if function == "softmax":
        return whole.map_blocks(_softmax_block, axes=axes, dtype=x.dtype, meta=x._meta)
    chunks = tuple((1,) if i in axes else c for i, c in enumerate(whole.chunks))
    value = whole.map_blocks(
        _logsumexp_block, axes=axes, part=0, chunks=chunks, dtype=x.dtype, meta=x._meta
    )
    sign = whole.map_blocks(
        _logsumexp_block, axes=axes, part=1, chunks=chunks, dtype=x.dtype, meta=x._meta
    )
    return value, sign


def _known_chunks(x: Any, function: str) -> None:
    """A Dask array's reduced axes are rechunked whole: its chunk sizes must be known."""
    if any(_size(s) is None for s in x.shape):
        raise ValueError(
            f"{function} of a Dask array with unknown chunk sizes (chunks={x.chunks}) "
            "needs them known: call x.compute_chunk_sizes() first"
        )


def _softmax_block(b: Any, axes: tuple[int, ...]) -> Any:
    return softmax(b, axis=axes)


def _logsumexp_block(b: Any, axes: tuple[int, ...], part: int) -> Any:
    return logsumexp(b, axis=axes, keepdims=True, return_sign=True)[part]


def _weighted_block(a: Any, b: Any, axes: tuple[int, ...], part: int) -> Any:
    return logsumexp(a, axis=axes, b=b, keepdims=True, return_sign=True)[part]


def _dask_complex(
    xp: Any, a: Any, b: Any, axes: tuple[int, ...], return_sign: bool
) -> tuple[Any, Any]:
    """Complex logsumexp of a Dask array: each slice in one block (the reduced axes
    rechunked whole), computed there by NumPy (its floating-point warnings silenced
    in the block, where the computation runs)."""
    import dask.array as da
    import numpy as np

    _known_chunks(a, "logsumexp")
    wa = a.rechunk({i: -1 for i in axes})
    args = [wa] if b is None else [wa, b.rechunk(wa.chunks)]
    chunks = tuple((1,) if i in axes else c for i, c in enumerate(wa.chunks))
    real = np.empty(0, a.dtype).real.dtype
    value = da.map_blocks(_complex_block, *args, axes=axes, part=0, sign=return_sign,
                          chunks=chunks, dtype=real if return_sign else a.dtype)  # fmt: skip
    if not return_sign:
        return value, None
    phase = da.map_blocks(_complex_block, *args, axes=axes, part=1, sign=True, chunks=chunks,
                          dtype=a.dtype)  # fmt: skip
    return value, phase


def _complex_block(a: Any, *b: Any, axes: tuple[int, ...], part: int, sign: bool) -> Any:
    import numpy as np

    return complex_logsumexp(np, a, b[0] if b else None, axes, sign)[part]


# -- with weights: on the host ------------------------------------------------------


def _weighted(xp: Any, a: Any, b: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """(value, sign) with the reduced axes kept."""
    if compat.is_dask_namespace(xp):
        _known_chunks(a, "logsumexp")
        wa = a.rechunk({i: -1 for i in axes})
        wb = b.rechunk(wa.chunks)
        chunks = tuple((1,) if i in axes else c for i, c in enumerate(wa.chunks))
        import dask.array as da

        out = [
            da.map_blocks(_weighted_block, wa, wb, axes=axes, part=k, chunks=chunks, dtype=a.dtype)
            for k in (0, 1)
        ]
        return out[0], out[1]
    if compat.is_jax_namespace(xp):
        value, sign = _jax_weighted(axes)(a, b)
        return value, sign
    if compat.is_torch_namespace(xp):
        import torch

        from ._torch import _differentiated

        if _differentiated(torch, a) or _differentiated(torch, b):
            value, sign = _torch_weighted_function(torch).apply(a, b, axes)
            return value, sign
    return _host_weighted(xp, a, b, axes)


def _host_weighted(xp: Any, a: Any, b: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    from . import _host

    if compat.is_torch_namespace(xp):
        a, b = a.detach().resolve_neg(), b.detach().resolve_neg()
    ah, bh = _host._to_host(xp, a), _host._to_host(xp, b)
    with default_env():
        value, sign = weighted_numpy(ah, bh, axes)
    return _host._from_host(xp, value, a), _host._from_host(xp, sign, a)


def weighted_numpy(a: Any, b: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """logsumexp of NumPy a with weights b (a's shape and dtype), the axes kept."""
    import numpy as np

    from ._weighted import weighted_rows

    shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
    n = math.prod(a.shape[i] for i in axes)
    if n == 0 or a.size == 0:  # empty sums, or no slices: -inf, sign 0
        empty = -np.inf if n == 0 else 0.0
        return np.full(shape, empty, a.dtype), np.zeros(shape, a.dtype)
    kept = [i for i in range(a.ndim) if i not in axes]
    perm = kept + list(axes)
    rows_a = np.transpose(a, perm).reshape(-1, n)
    rows_b = np.transpose(np.asarray(b), perm).reshape(-1, n)
    value, sign = weighted_rows(rows_a, rows_b, a.dtype)
    return value.reshape(shape), sign.reshape(shape)


@functools.cache
def _torch_weighted_function(torch: Any) -> Any:
    class WeightedLogSumExp(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(a: Any, b: Any, axes: tuple[int, ...]) -> Any:
            xp = compat.array_namespace(a)
            return _host_weighted(xp, a.detach(), b.detach(), axes)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.mark_non_differentiable(output[1])
            ctx.axes = list(inputs[2])
            ctx.save_for_backward(inputs[0], inputs[1], *output)
            ctx.save_for_forward(inputs[0], inputs[1], *output)

        @staticmethod
        def backward(ctx: Any, g: Any, _g_sign: Any) -> Any:
            # log|S|: d/da_i = b_i e^(a_i) / S, d/db_i = e^(a_i) / S, S = sign e^value
            a, b, value, sign = ctx.saved_tensors
            w = torch.promote_types(a.dtype, torch.float32)
            e = torch.exp(a.to(w) - value.to(w)) * sign.to(w) * g.to(w)
            return (e * b.to(w)).to(a.dtype), e.to(b.dtype), None

        @staticmethod
        def jvp(ctx: Any, ta: Any, tb: Any, _: Any) -> Any:
            a, b, value, sign = ctx.saved_tensors
            w = torch.promote_types(a.dtype, torch.float32)
            e = torch.exp(a.to(w) - value.to(w)) * sign.to(w)
            d = torch.zeros_like(e)
            if ta is not None:
                d = d + e * b.to(w) * ta.to(w)
            if tb is not None:
                d = d + e * tb.to(w)
            dv = d.sum(dim=ctx.axes, keepdim=True) if ctx.axes else d
            return dv.to(value.dtype), None

    return WeightedLogSumExp


def _jax_weighted(axes: tuple[int, ...]) -> Callable[[Any, Any], Any]:
    return _jax_weighted_compiled(axes)


@functools.lru_cache(maxsize=64)
def _jax_weighted_compiled(axes: tuple[int, ...]) -> Callable[[Any, Any], Any]:
    import jax
    import jax.numpy as jnp

    from ._jax import on_host

    def host(a: Any, b: Any) -> Any:
        with default_env():  # (XLA's threads flush subnormals)
            return weighted_numpy(a, b, axes)

    @jax.custom_jvp
    def f(a: Any, b: Any) -> Any:
        shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
        spec = jax.ShapeDtypeStruct(shape, a.dtype)
        return on_host(host, (spec, spec), a, b)

    @f.defjvp
    def _jvp(primals: Any, tangents: Any) -> Any:
        a, b = primals
        ta, tb = tangents
        value, sign = f(a, b)
        w = jnp.promote_types(a.dtype, jnp.float32)
        e = jnp.exp(a.astype(w) - value.astype(w)) * sign.astype(w)
        dv = jnp.sum(e * (b.astype(w) * ta.astype(w) + tb.astype(w)), axis=axes, keepdims=True)
        return (value, sign), (dv.astype(value.dtype), jnp.zeros_like(sign))

    return jax.jit(f)
