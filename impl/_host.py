"""The generic algorithm's slow path: outputs its rounding test could not prove are
recomputed by the row kernels on the host, where the kernels are built.

The generic algorithm (impl/_generic.py) computes narrow formats in a wider one to
within a proven bound and tests every output against the narrow format's rounding
boundaries. An output within the bound of a boundary (about one in 2^40 for float32
outputs in float64; none seen in the families) could round either way: for those,
``host_fix`` copies the input to the host, runs the NumPy path's kernels (correctly
rounded: docs/impl.md, "Correct rounding") and takes their answer where the test
left one open. Eager namespaces only; JAX, which traces, calls the same kernels
through ``jax.pure_callback`` under a ``lax.cond`` (impl/_jax.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat as compat
import numpy as np

__all__ = ["fixes", "host_fix", "host_log_softmax"]

# Calls whose rounding test left an output open and that the host decided (a count,
# for the tests and the slow path's statistics)
fixes = 0


def host_log_softmax(x: Any, axes: tuple[int, ...]) -> np.ndarray:
    """The NumPy path on a host copy of ``x`` (a NumPy array of x's format)"""
    from ._numpy import log_softmax_numpy

    n = 1
    for a in axes:
        n *= int(x.shape[a])
    return np.asarray(log_softmax_numpy(x, axes, n))


def host_fix(xp: Any, x: Any, axes: tuple[int, ...]) -> Callable[[Any, Any], Any] | None:
    """The fix for the generic algorithm's open outputs on an eager namespace: None
    where the host has no kernels (a build without a compiler, whose NumPy path is
    the generic algorithm itself)."""
    from ._numpy import compiled_kernels

    if compiled_kernels() is None:
        return None

    def fix(out: Any, open_: Any) -> Any:
        global fixes
        if not bool(xp.any(open_)):
            return out
        fixes += 1
        fixed = _from_host(xp, host_log_softmax(_to_host(xp, x), axes), out)
        return xp.where(open_, fixed, out)

    return fix


def _to_host(xp: Any, x: Any) -> np.ndarray:
    if compat.is_torch_namespace(xp):
        t = x.detach().resolve_neg().cpu()
        if str(t.dtype) == "torch.bfloat16":
            import ml_dtypes
            import torch

            return np.asarray(t.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
        return np.asarray(t.numpy())
    if compat.is_cupy_namespace(xp):
        return np.asarray(x.get())
    if compat.is_array_api_strict_namespace(xp):
        return np.asarray(np.from_dlpack(x.to_device(xp.Device("CPU_DEVICE"))))
    return np.asarray(x)


def _from_host(xp: Any, a: np.ndarray, like: Any) -> Any:
    if compat.is_torch_namespace(xp):
        import torch

        # (np.require, not np.ascontiguousarray: that makes a 0-d array 1-d)
        a = np.require(a, requirements="C")
        if "bfloat16" in a.dtype.name:
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(a)
        return t.to(like.device)
    if compat.is_cupy_namespace(xp):
        return xp.asarray(a)
    return xp.asarray(a, device=compat.device(like))
