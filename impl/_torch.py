"""PyTorch path.

CPU tensors run the NumPy path's compiled kernels on a zero-copy NumPy view
(bfloat16 through its 16-bit pattern), and the result comes back as a tensor without
a copy. On other devices the generic algorithm runs (narrow formats in float64 where
the device has it, with the rounding test, and the host's kernels for the outputs it
leaves open: impl/_host.py). The short algorithm in float64 with torch's fused
kernels, which ran here before, depends on the device's exp, sum and log1p and has
no bound to test against.

Where a derivative is asked for (an input that requires grad with grad mode on, a
forward-mode dual level, or a torch.func transform: grad, vjp, jvp, vmap), the call goes
through an autograd.Function whose forward pass is the same and whose derivatives are
log_softmax's own, from the output y (in float32 at least):

- reverse (backward, vjp): grad_x = g - softmax(x) sum(g) over each slice;
- forward (jvp): t_y = t - sum(softmax(x) t) over each slice;
- vmap: the batch dimension moved to the front and the slice's axes shifted by one.

Both derivative formulas are torch operations on y, so they are differentiable again
(gradgradcheck, jacfwd(jacrev(...))). The algorithm is never differentiated itself: its
in-place steps would refuse, and its roundings and masks have the wrong derivatives.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

# the fast path's kernels, imported with this module (an import in the call costs 1 us)
from ._numpy import _TWO_THREADS as _SMALL
from ._numpy import _fill_specials, _kernel, last_axis_rows, last_axis_softmax

__all__ = ["last_axis_rows_torch", "last_axis_softmax_torch", "log_softmax_torch"]


Generic = Callable[[Any, tuple[int, ...], int, Callable[[Any, Any], Any]], Any]


def log_softmax_torch(x: Any, axes: tuple[int, ...], n: int, generic: Generic) -> Any:
    """``generic(x, axes, n, cast)``: the generic algorithm, for what no fast path
    takes, with ``cast(values, dtype)`` rounding its float64 result to x's dtype."""
    import torch

    if _differentiated(torch, x):
        return _function(torch).apply(x, axes, n, generic)
    return _forward(torch, x, axes, n, generic)


def _plain_last_axis_torch(torch: Any, x: Any, axis: Any, dtypes: tuple[Any, ...]) -> bool:
    """The common call's conditions on torch (last_axis_rows_torch's,
    last_axis_softmax_torch's): a CPU tensor of one of ``dtypes``, contiguous, not a
    negative view, reduced over its last axis (or a 1-D tensor whole), with no
    derivative to be asked for, and the CPU kernels in use."""
    nd = x.dim()
    if (
        (type(axis) is not int and not (axis is None and nd == 1))
        or x.dtype not in dtypes
        or not x.is_cpu
        or not _cpu_kernels  # (impl/tests/device_paths.py clears it)
        or nd == 0
        or not x.is_contiguous()
        or x.is_neg()
        or _differentiated(torch, x)
    ):
        return False
    return axis is None or axis == -1 or axis == nd - 1


def last_axis_rows_torch(x: Any, axis: Any) -> Any:
    """The common call without the general path's checks: a float32 or float64 CPU
    tensor, contiguous, not empty, over its last axis, with no derivative to be asked
    for; None for anything else, which the general path then takes. Small tensors go
    to the kernels by address (``rows_at``: no NumPy view in, none out; about 2 us of
    the call at (1, 10)); larger ones through the NumPy path's kernels on a zero-copy
    view (last_axis_rows, threads and all), the result a tensor on the same memory.
    The same results as the general path."""
    torch = sys.modules["torch"]
    dtype = x.dtype
    if not _plain_last_axis_torch(torch, x, axis, (torch.float32, torch.float64)):
        return None
    size = x.numel()
    if size < _SMALL and size > 0 and _kernel is not None:
        n = x.size(-1)
        out = torch.empty_like(x)
        try:
            skipped = _kernel.rows_at(x.data_ptr(), out.data_ptr(), size // n, n,
                                      dtype is torch.float64)  # fmt: skip
        except ValueError:  # misaligned memory (torch.frombuffer at an odd offset)
            return None
        if skipped:  # rows with a NaN, a +inf or only -inf: their special values
            _fill_specials(x.detach().numpy().reshape(-1, n), out.numpy().reshape(-1, n))
        return out
    out = last_axis_rows(x.detach().numpy() if x.requires_grad else x.numpy(), axis)
    return None if out is None else torch.from_numpy(out)


def last_axis_softmax_torch(x: Any, axis: Any) -> Any:
    """softmax's common call on a CPU tensor: last_axis_rows_torch's conditions,
    float32, and _numpy.last_axis_softmax on a zero-copy view (None where that declines),
    the result a tensor on the same memory. The same results as the general path."""
    torch = sys.modules["torch"]
    if not _plain_last_axis_torch(torch, x, axis, (torch.float32,)):
        return None
    out = last_axis_softmax(x.detach().numpy() if x.requires_grad else x.numpy(), axis)
    return None if out is None else torch.from_numpy(out)


def _differentiated(torch: Any, x: Any) -> bool:
    """Whether a derivative of this call may be asked for: x requires grad with grad
    mode on, a forward-mode dual level is open, or x is a torch.func transform's
    wrapper (which has no storage for the kernels to read)."""
    if x.requires_grad and torch.is_grad_enabled():
        return True
    if torch.autograd.forward_ad._current_level >= 0:  # inside dual_level()
        return True
    global _is_wrapped
    if _is_wrapped is None:
        functorch = getattr(torch._C, "_functorch", None)
        _is_wrapped = functorch.is_functorch_wrapped_tensor if functorch else (lambda t: False)
    return bool(_is_wrapped(x))


_is_wrapped: Callable[[Any], Any] | None = None

# CPU tensors of the four formats run on the NumPy path's kernels (cleared by
# impl/tests/device_paths.py, which sends them down the GPU devices' paths)
_cpu_kernels = True


def _on_numpy(x: Any) -> bool:
    """Whether x runs on the NumPy path's kernels (CPU tensors of the four formats)."""
    return _cpu_kernels and bool(x.is_cpu) and x.dtype in _numpy_view()


def _numpy_view() -> frozenset[Any]:
    """The torch dtypes of _NUMPY_VIEW (str(dtype) costs a microsecond a call)."""
    global _numpy_view_dtypes
    if _numpy_view_dtypes is None:
        torch = sys.modules["torch"]
        _numpy_view_dtypes = frozenset(
            getattr(torch, name.split(".", 1)[1]) for name in _NUMPY_VIEW
        )
    return _numpy_view_dtypes


_numpy_view_dtypes: frozenset[Any] | None = None


def _forward(torch: Any, x: Any, axes: tuple[int, ...], n: int, generic: Generic) -> Any:
    if _on_numpy(x):
        return _via_numpy(torch, x, axes, n)
    if x.device.type == "meta":  # no data (shape inference): the result's metadata
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    return generic(x, axes, n, lambda v, dtype: _round_narrow(torch, v, dtype))


def _round_narrow(torch: Any, d: Any, dtype: Any) -> Any:
    """``d`` rounded once to ``dtype``."""
    if dtype in (torch.float16, torch.bfloat16) and d.dtype == torch.float64:
        return _round_to_odd_f32(torch, d).to(dtype)
    return d.to(dtype)


def _round_to_odd_f32(torch: Any, d: Any) -> Any:
    """float64 ``d`` in float32, rounded to odd: toward zero, and the last bit set
    where inexact. A narrow format (float16, bfloat16) rounded from there gets one
    correct rounding of d; torch's own conversion from float64 goes through a float32
    rounded to nearest, and rounds twice (1 + 2**-11 + 2**-40 becomes 1.0 in
    float16)."""
    f = d.to(torch.float32)
    back = f.to(torch.float64)
    bits = f.view(torch.int32)
    bits = bits - (back.abs() > d.abs()).to(torch.int32)  # one ulp toward zero
    bits = bits | (back != d).to(torch.int32)
    return bits.view(torch.float32)


@functools.cache
def _function(torch: Any) -> Any:
    """The autograd.Function (made once, at first use: this module imports without
    torch)."""

    class LogSoftmax(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(x: Any, axes: tuple[int, ...], n: int, generic: Generic) -> Any:
            return _forward(torch, x.detach(), axes, n, generic)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.axes = list(inputs[1])
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (out,) = ctx.saved_tensors
            return (
                _minus_weighted_sum(torch, g, out, ctx.axes, weight_first=False),
                None,
                None,
                None,
            )

        @staticmethod
        def jvp(ctx: Any, t: Any, *_: Any) -> Any:
            (out,) = ctx.saved_tensors
            return _minus_weighted_sum(torch, t, out, ctx.axes, weight_first=True)

        @staticmethod
        def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
            return _batched(LogSoftmax, in_dims, *args)

    return LogSoftmax


def _batched(
    function: Any,
    in_dims: tuple[Any, ...],
    x: Any,
    axes: tuple[int, ...],
    *rest: Any,
    pair: bool = False,
) -> Any:
    """The vmap rule of the autograd.Functions of log_softmax (above), softmax and
    logsumexp (impl/_api.py), whose one tensor argument is x: the batch dimension
    moved to the front and the slice's axes shifted by one. ``pair``: the function
    returns two tensors (logsumexp's value and sign), batched alike."""
    if in_dims[0] is None:  # only the other arguments are batched: none are tensors
        out, dim = function.apply(x, axes, *rest), None
    else:
        x = x.movedim(in_dims[0], 0)
        out, dim = function.apply(x, tuple(a + 1 for a in axes), *rest), 0
    return out, ((dim, dim) if pair else dim)


def _minus_weighted_sum(torch: Any, v: Any, out: Any, axes: list[int], weight_first: bool) -> Any:
    """log_softmax's derivatives from its output ``out`` (in float32 at least):
    ``v - softmax sum(v)`` (reverse, v the output's gradient) or
    ``v - sum(softmax v)`` (forward, v the input's tangent), over each slice."""
    w = torch.promote_types(out.dtype, torch.float32)
    vw = v.to(w)
    p = out.to(w).exp()

    def total(u: Any) -> Any:
        # no axes (a 0-d slice, or vmap's batch of them): each entry is its own slice;
        # torch's sum over dim=[] would sum over every dimension
        return u.sum(dim=axes, keepdim=True) if axes else u

    r = vw - total(p * vw) if weight_first else vw - p * total(vw)
    return r.to(v.dtype)


# dtypes with a zero-copy NumPy view (by name: this module imports without torch)
_NUMPY_VIEW = {"torch.float16", "torch.float32", "torch.float64", "torch.bfloat16"}


def _via_numpy(torch: Any, x: Any, axes: tuple[int, ...], n: int) -> Any:
    import numpy as np

    from ._numpy import log_softmax_numpy

    # a tensor that requires grad under no_grad has no .numpy(), nor a view with the
    # negative bit set (torch's lazy negation: x.conj().imag)
    x = x.detach().resolve_neg()
    if x.dtype == torch.bfloat16:
        import ml_dtypes

        arr = x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
        arr = x.numpy()
    out = np.asarray(log_softmax_numpy(arr, axes, n))
    if x.dtype == torch.bfloat16:
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(out)
