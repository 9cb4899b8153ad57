"""PyTorch path: finite float16/bfloat16/float32 input on a device with float64 runs
the short algorithm with torch's own fused, threaded kernels; everything else (float64,
specials, devices without float64) takes the generic algorithm."""

from __future__ import annotations

from typing import Any

__all__ = ["log_softmax_torch"]


def log_softmax_torch(x: Any, axes: tuple[int, ...], n: int) -> Any | None:
    import torch

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
