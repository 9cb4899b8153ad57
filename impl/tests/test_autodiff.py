"""Derivatives of impl.log_softmax in PyTorch (autograd) and JAX (jvp, grad), on the
CPU paths, on the GPU devices' paths forced on the CPU, and on a GPU where there is
one: log_softmax's own derivative, dx - softmax(x) sum(dx) (forward) and
g - softmax(x) sum(g) (reverse), against the libraries' log_softmax differentiated in
float64 on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest

import impl

from . import device_paths

DTYPES = ["float64", "float32", "float16", "bfloat16"]
# |impl's gradient - float64 reference| allowed: a few roundings of the narrow format
# on gradients of size up to ~6 (weights 0..6 below)
TOL = {"float64": 1e-13, "float32": 5e-6, "float16": 2e-2, "bfloat16": 1.5e-1}
PATHS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "cpu": contextlib.nullcontext,
    "gpu path": device_paths.gpu_paths,
    "gpu": contextlib.nullcontext,  # on the device itself
}


def _torch_device(torch: Any, path: str) -> str:
    if path != "gpu":
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return "cuda"


def _jax_device(jax: Any, path: str) -> Any:
    if path != "gpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("no JAX gpu device")


def _input() -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 7)) * 3
    x[0, 2] = -np.inf  # softmax 0 there: its gradient is its weight
    x[1] = [5.0, 5.0, -60.0, 0.0, 1.0, -1.0, 5.0]  # ties and a saturating entry
    x[2, 0] = 1e4  # one dominant entry
    return x


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_backward(dtype: str, path: str):
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype)
    device = _torch_device(torch, path)
    x0 = _input()
    w = torch.arange(7.0, dtype=torch.float64)
    x = torch.tensor(x0, dtype=tdt, device=device, requires_grad=True)
    with PATHS[path]():
        y = impl.log_softmax(x, axis=-1)
    assert y.dtype == tdt and y.requires_grad and y.device == x.device
    (y * w.to(tdt).to(device)).sum().backward()
    xr = torch.tensor(x.detach().double().cpu().numpy(), requires_grad=True)
    (torch.log_softmax(xr, dim=-1) * w).sum().backward()
    assert x.grad is not None and x.grad.dtype == tdt
    err = (x.grad.double().cpu() - xr.grad).abs().max().item()
    assert err <= TOL[dtype], err


@pytest.mark.parametrize("path", list(PATHS))
def test_torch_gradcheck_and_second_order(path: str):
    torch = pytest.importorskip("torch")
    device = _torch_device(torch, path)
    x = torch.tensor(
        np.random.default_rng(2).standard_normal((3, 5)), device=device, requires_grad=True
    )
    with PATHS[path]():
        for axis in [1, (0, 1), None]:
            fn = lambda v, axis=axis: impl.log_softmax(v, axis=axis)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (x,))
            assert torch.autograd.gradgradcheck(fn, (x,))


def test_torch_requires_grad_under_no_grad():
    torch = pytest.importorskip("torch")
    x = torch.tensor([[0.0, -40.0]], requires_grad=True)
    with torch.no_grad():
        y = impl.log_softmax(x, axis=-1)
    assert not y.requires_grad
    assert y[0, 0].item() == np.float32(-4.248354255291589e-18)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("dtype", "x64"), [(d, True) for d in DTYPES] + [(d, False) for d in DTYPES[1:]]
)
def test_jax_grad(dtype: str, x64: bool, path: str):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    device = _jax_device(jax, path)
    x0 = _input()
    w = np.arange(7.0)
    with jax.enable_x64(True):
        cpu = jax.devices("cpu")[0]
        ref = np.asarray(
            jax.grad(lambda v: (jax.nn.log_softmax(v, axis=-1) * w).sum())(jax.device_put(x0, cpu))
        )
    with jax.enable_x64(x64), PATHS[path]():
        jdt = getattr(jnp, dtype)
        xj = jax.device_put(jnp.asarray(x0).astype(jdt), device)
        wj = jax.device_put(jnp.asarray(w).astype(jdt), device)
        g = jax.jit(jax.grad(lambda v: (impl.log_softmax(v, axis=-1) * wj).sum()))(xj)
    assert g.dtype == jdt and g.devices() == {device}
    err = np.abs(np.asarray(g).astype(np.float64) - ref).max()
    assert err <= TOL[dtype], err


@pytest.mark.parametrize("path", list(PATHS))
def test_jax_derivatives_of_first_and_second_order(path: str):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    device = _jax_device(jax, path)
    with jax.enable_x64(True), PATHS[path]():
        x = jax.device_put(np.random.default_rng(3).standard_normal((3, 5)), device)
        for axis in [1, (0, 1), None]:
            fn = lambda v, axis=axis: impl.log_softmax(v, axis=axis)  # noqa: E731
            check_grads(fn, (x,), order=2, modes=("fwd", "rev"))  # type: ignore[no-untyped-call]
