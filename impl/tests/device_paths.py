"""impl's functions on the code paths that GPU devices take, forced on the CPU, so
that the algorithms a GPU runs are judged by the oracle on any machine:

- PyTorch: the short algorithm in float64 with torch's fused kernels for finite
  float16/bfloat16/float32 input, the generic algorithm for the rest (as on CUDA);
- JAX: the generic algorithm in XLA, with and without x64 (as on a GPU, where no
  row kernel is registered; softmax and logsumexp: the algorithm in XLA, not the
  host);
- Dask: the generic algorithm on the Dask array (as for blocks of CuPy arrays).

Only the backends' own choices differ from the GPU; the arithmetic of the device is
the CPU's (XLA on CPU flushes subnormal results, which a GPU may not).

    python -m conformance run --candidates impl.tests.device_paths:log_softmax \\
        --backends torch:cpu,jax:cpu,jax:cpu:jit,jax:cpu:nox64,jax:cpu:jit:nox64,dask:cpu
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import impl
from impl import _api, _dask, _jax, _torch

__all__ = ["gpu_paths", "log_softmax", "logsumexp", "softmax"]


@contextlib.contextmanager
def gpu_paths() -> Iterator[None]:
    """Within: CPU tensors, CPU JAX arrays and Dask arrays of NumPy blocks take the
    paths of GPU devices (a Dask graph is built within, and may be computed after)."""
    saved = _torch._cpu_kernels, _jax.cpu_kernel_registered, _dask.log_softmax_dask
    _torch._cpu_kernels = False
    _jax.cpu_kernel_registered = lambda: False  # type: ignore[assignment]
    _dask.log_softmax_dask = lambda x, axes: None
    _api.jax_cpu_on_host = _api._torch_cpu_on_host = False
    try:
        yield
    finally:
        _torch._cpu_kernels, _jax.cpu_kernel_registered, _dask.log_softmax_dask = saved
        _api.jax_cpu_on_host = _api._torch_cpu_on_host = True


def log_softmax(x: Any, axis: Any = None) -> Any:
    """impl.log_softmax by the GPU devices' paths (a conformance candidate)."""
    with gpu_paths():
        return impl.log_softmax(x, axis=axis)


def softmax(x: Any, axis: Any = None) -> Any:
    """impl.softmax by the GPU devices' paths (JAX: the algorithm in XLA)."""
    with gpu_paths():
        return impl.softmax(x, axis=axis)


def logsumexp(x: Any, axis: Any = None) -> Any:
    """impl.logsumexp by the GPU devices' paths (JAX: the algorithm in XLA)."""
    with gpu_paths():
        return impl.logsumexp(x, axis=axis)
