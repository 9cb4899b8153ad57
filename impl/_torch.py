"""PyTorch path.

CPU tensors that need no autograd graph run the NumPy path's compiled kernels on a
zero-copy NumPy view (bfloat16 through its 16-bit pattern), and the result comes back
as a tensor without a copy. On other devices, finite float16/bfloat16/float32 input
runs the short algorithm in float64 with torch's own fused, threaded kernels; anything
else (float64, NaN or infinities, devices without float64) returns None and takes the
generic algorithm.
"""

from __future__ import annotations

from typing import Any

__all__ = ["log_softmax_torch"]


def log_softmax_torch(x: Any, axes: tuple[int, ...], n: int) -> Any | None:
    import torch

    if x.device.type == "cpu" and not x.requires_grad and str(x.dtype) in _NUMPY_VIEW:
        return _via_numpy(torch, x, axes, n)
    if (
        x.dtype not in (torch.float16, torch.bfloat16, torch.float32)
        or x.device.type == "mps"  # no float64 there
        or x.numel() == 0
        or n == 1
        or not bool(torch.isfinite(x).all())
    ):
        return None
    dims = list(axes)
    d = x.to(torch.float64)
    d -= d.amax(dim=dims, keepdim=True)
    at_max = d == 0.0
    e = d.exp().masked_fill_(at_max, 0.0)
    T = e.sum(dim=dims, keepdim=True)
    T += at_max.sum(dim=dims, keepdim=True) - 1
    d -= T.log1p_()
    return d.to(x.dtype)


# dtypes with a zero-copy NumPy view (by name: this module imports without torch)
_NUMPY_VIEW = {"torch.float16", "torch.float32", "torch.float64", "torch.bfloat16"}


def _via_numpy(torch: Any, x: Any, axes: tuple[int, ...], n: int) -> Any:
    import numpy as np

    from ._numpy import log_softmax_numpy

    if x.dtype == torch.bfloat16:
        import ml_dtypes

        arr = x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
        arr = x.numpy()
    out = np.asarray(log_softmax_numpy(arr, axes, n))
    if x.dtype == torch.bfloat16:
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(out)
