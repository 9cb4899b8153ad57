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


# float64 inputs of every shape: (shape, axes); an empty slice, 0-d with its axes,
# one and three dimensions with each axis, tuples and None
GRAD_CASES = [
    ((), 0),
    ((), -1),
    ((), None),
    ((0, 3), 1),
    ((3, 0), 1),
    ((5,), 0),
    ((5,), None),
    ((2, 3, 4), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), -1),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), None),
]


def _case_id(case: tuple[tuple[int, ...], Any]) -> str:
    return f"{case[0]}-axis{case[1]}"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
def test_torch_gradcheck_forward_backward_batched(case: tuple[tuple[int, ...], Any], path: str):
    torch = pytest.importorskip("torch")
    device = _torch_device(torch, path)
    shape, axis = case
    rng = torch.Generator().manual_seed(4)
    x = torch.randn(shape, dtype=torch.float64, generator=rng).to(device).requires_grad_()
    fn = lambda v: impl.log_softmax(v, axis=axis)  # noqa: E731
    modes = dict(check_forward_ad=True, check_backward_ad=True, check_batched_grad=True)
    with PATHS[path]():
        assert torch.autograd.gradcheck(fn, (x,), check_batched_forward_grad=True, **modes)
        assert torch.autograd.gradgradcheck(
            fn, (x,), check_fwd_over_rev=True, check_rev_over_rev=True, check_batched_grad=True
        )


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_forward_ad_dual_numbers(dtype: str, path: str):
    """The tangent of a dual number comes through (it was None: a zero derivative with
    no error), with and without requires_grad on the primal."""
    torch = pytest.importorskip("torch")
    fwAD = pytest.importorskip("torch.autograd.forward_ad")
    tdt = getattr(torch, dtype)
    device = _torch_device(torch, path)
    x0 = torch.tensor(_input())
    t0 = torch.tensor(np.random.default_rng(5).standard_normal(x0.shape))
    with fwAD.dual_level():
        ref = fwAD.unpack_dual(torch.log_softmax(fwAD.make_dual(x0, t0), dim=1)).tangent
    for requires_grad in (False, True):
        x = x0.to(tdt).to(device).requires_grad_(requires_grad)
        t = t0.to(tdt).to(device)
        with PATHS[path](), fwAD.dual_level():
            y = impl.log_softmax(fwAD.make_dual(x, t), axis=1)
            primal, tangent = fwAD.unpack_dual(y)
        assert tangent is not None, requires_grad
        assert tangent.dtype == tdt and tangent.device == x.device
        assert primal.dtype == tdt
        err = (tangent.double().cpu() - ref).abs().max().item()
        # the tangent is a weighted sum of size up to ~10 here
        assert err <= 2 * TOL[dtype], (requires_grad, err)


def _torch_func_compositions(
    torch: Any, f: Callable[[Any], Any], x: Any, f_takes_1d: bool
) -> dict[str, Any]:
    from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

    w = torch.linspace(-1.0, 2.0, x.shape[-1], dtype=x.dtype, device=x.device)
    t = torch.cos(torch.arange(x.numel(), dtype=x.dtype, device=x.device)).reshape(x.shape)
    loss = lambda v: (f(v) * w).sum()  # noqa: E731
    return {
        "grad": grad(loss)(x),
        "jvp": jvp(f, (x,), (t,))[1],
        "vjp": vjp(f, x)[1](t)[0],
        "vmap": vmap(f)(x),
        "vmap-in_dims=1": vmap(f, in_dims=1, out_dims=1)(x),
        "vmap(grad)": vmap(grad(loss))(x),
        "jacrev": jacrev(f)(x[0]),
        "jacfwd": jacfwd(f)(x[0]),
        "jacfwd(jacrev)": jacfwd(jacrev(lambda v: f(v).sum(-1)[0]))(x[0]),
        "grad(grad)": grad(lambda v: grad(loss)(v).pow(2).sum())(x),
        "vmap(vmap)": vmap(vmap(f))(x) if x.ndim >= 3 and f_takes_1d else None,
    }


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None])
def test_torch_func_transforms_agree_with_torch(axis: Any, path: str):
    """torch.func's grad, jvp, vjp, vmap and their compositions over impl agree with
    the same over torch's log_softmax to 1e-12 in float64 (they failed: no
    setup_context, and the kernels read a transform's storage-less wrapper)."""
    torch = pytest.importorskip("torch")
    device = _torch_device(torch, path)
    x = torch.tensor(np.random.default_rng(6).standard_normal((3, 4, 5)), device=device)

    def ref(v: Any) -> Any:
        dims = list(range(v.ndim)) if axis is None else axis
        return v - torch.logsumexp(v, dim=dims, keepdim=True)

    with PATHS[path]():
        got = _torch_func_compositions(
            torch, lambda v: impl.log_softmax(v, axis=axis), x, axis != (0, 1)
        )
    want = _torch_func_compositions(torch, ref, x, axis != (0, 1))
    for name, value in want.items():
        if value is None:
            continue
        assert got[name].shape == value.shape, name
        assert got[name].device == value.device, name
        err = (got[name] - value).abs().max().item()
        assert err <= 1e-12, (name, err)


def test_torch_vmap_over_zero_d_slices():
    """vmap of a 0-d call: each entry its own slice, derivative 0 (the sum over no axes
    must not become torch's sum over every dimension)."""
    torch = pytest.importorskip("torch")
    from torch.func import grad, jacrev, jvp, vmap

    x = torch.tensor([1.5, -2.0, 30.0, 0.0], dtype=torch.float64)
    f = lambda v: impl.log_softmax(v, axis=0)  # noqa: E731
    assert torch.equal(vmap(f)(x), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(vmap(grad(f))(x), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(vmap(jacrev(f))(x), torch.zeros(4, dtype=torch.float64))
    tangent = vmap(lambda v: jvp(f, (v,), (torch.ones_like(v),))[1])(x)
    assert torch.equal(tangent, torch.zeros(4, dtype=torch.float64))


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


# the GPU path emulated on the CPU compiles a second-order check of each mode and axis
# (28 s on 2 cores): slow tier; its first derivatives stay in the default tier
# (test_jax_grad), and on a device the "gpu" case runs in the default tier
@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p == "gpu path" else p for p in PATHS]
)
def test_jax_derivatives_of_first_and_second_order(path: str):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    device = _jax_device(jax, path)
    with jax.enable_x64(True), PATHS[path]():
        x = jax.device_put(np.random.default_rng(3).standard_normal((3, 5)), device)
        for axis in [1, (0, 1), None]:
            fn = lambda v, axis=axis: impl.log_softmax(v, axis=axis)  # noqa: E731
            check_grads(fn, (x,), order=2, modes=("fwd", "rev"))  # type: ignore[no-untyped-call]
