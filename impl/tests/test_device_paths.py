"""The paths that GPU devices take (impl/tests/device_paths.py), forced on the CPU and
judged by the oracle on small adversarial rows with the targets of test_accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import impl
from conformance import BACKENDS, Backend
from reference import FORMATS

from . import device_paths
from .test_accuracy import FAMILIES, _budget, _family_blocks, _oracle

CELLS = ("torch:cpu", "jax:cpu:jit", "jax:cpu:jit:nox64", "dask:cpu")


def _params() -> list[Any]:
    out = []
    for b in BACKENDS:
        if b.name in CELLS:
            # JAX without x64 (bfloat16 and float16 in float32, 40 s here) in the slow
            # tier: test_rounding.py holds its bits on the same inputs' hardest cases
            for d in b.dtypes:
                marks = [pytest.mark.slow] if b.name.endswith("nox64") else []
                if b.name.startswith("dask") and d == "float64":  # 26 s: the host's fix
                    marks = [pytest.mark.extended]
                # 19 s (XLA compiling the float64 core and its rounding test for each
                # shape): test_rounding.py holds JAX's float64 GPU path in the default tier
                if b.name == "jax:cpu:jit" and d == "float64":
                    marks = [pytest.mark.extended]
                out.append(pytest.param(b, d, id=f"{b.name}-{d}", marks=marks))
    return out


@pytest.mark.parametrize(("b", "dtype"), _params())
def test_gpu_paths_on_cpu(b: Backend, dtype: str):
    why = b.probe()
    if why:
        pytest.skip(why)
    budget = _budget(b, dtype)
    worst: dict[str, float] = {}
    for family in FAMILIES:
        for block in _family_blocks(FORMATS[dtype], family):
            got = b.run(device_paths.log_softmax, block, axis=-1)
            assert got.dtype == block.dtype
            err = _oracle(block).ulp_error(got)
            worst[family] = max(worst.get(family, 0.0), float(np.max(err)))
    over = {f: e for f, e in worst.items() if e > budget}
    assert not over, f"max ULP over {budget} by family: {over}"


def test_gpu_paths_are_the_other_paths():
    """The forcing reaches every switch (else the test above judges the CPU paths)."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    da = pytest.importorskip("dask.array")
    from impl import _jax, _torch

    x = da.ones((2, 6), chunks=(1, 3))
    with device_paths.gpu_paths():
        assert not _torch._on_numpy(torch.ones(2))
        # the common call's shortcut to the kernels too
        assert _torch.last_axis_rows_torch(torch.ones(2, 3), -1) is None
        assert not _jax.cpu_kernel_registered()
        out = jax.jit(device_paths.log_softmax).lower(jax.numpy.ones((2, 3))).as_text()
        generic = impl.log_softmax(x, axis=1)
    assert _jax._FFI_TARGET not in out
    cpu = jax.jit(impl.log_softmax).lower(jax.numpy.ones((2, 3))).as_text()
    assert _jax._FFI_TARGET in cpu
    assert "partial_block" not in str(dict(generic.dask))
    assert "partial_block" in str(dict(impl.log_softmax(x, axis=1).dask))


# Rows whose exact results lie within 2**-24 (relative) of a rounding midpoint of the
# narrow format, found by search: a float64 result rounded to float32 first and then
# to the narrow format rounds twice and misses by one (ml_dtypes' bfloat16 conversion
# from float64 and torch's float16 and bfloat16 ones go through float32)
ROUND_ONCE = {
    "bfloat16": [
        [0.80859375, 1.9609375, 2.5, 2.546875],
        [-6.78125, 0.01483154296875, 3.796875, -5.40625],
        [-1.9765625, -1.640625, -2.296875, -3.625],
    ],
    "float16": [
        [1.3291015625, -1.77734375, 5.1484375, 0.62353515625],
        [-3.783203125, -3.158203125, -0.392822265625, -1.67578125],
    ],
}


@pytest.mark.parametrize("gpu_path", [False, True], ids=["cpu path", "gpu path"])
@pytest.mark.parametrize("dtype", list(ROUND_ONCE))
@pytest.mark.parametrize("name", ["numpy:cpu", "torch:cpu", "dask:cpu", "jax:cpu:jit"])
def test_narrow_results_are_rounded_once(name: str, dtype: str, gpu_path: bool):
    b = next(b for b in BACKENDS if b.name == name)
    why = b.probe()
    if why:
        pytest.skip(why)
    x = np.array(ROUND_ONCE[dtype], dtype=np.float64).astype(FORMATS[dtype].dtype)
    fn = device_paths.log_softmax if gpu_path else impl.log_softmax
    got = b.run(fn, x, axis=-1)
    assert _oracle(x).ulp_error(got).max() <= 0.5
    # also with the reduced axis split over Dask chunks, and with a NaN row (the
    # generic algorithm's cast)
    if name == "dask:cpu":
        split = b.run(lambda v, axis: fn(v.rechunk((1, 2)), axis=axis), x, axis=-1)
        assert _oracle(x).ulp_error(split).max() <= 0.5
    xn = np.concatenate([x, np.full((1, 4), np.nan, x.dtype)])
    got = b.run(fn, xn, axis=-1)
    assert _oracle(xn).ulp_error(got)[:-1].max() <= 0.5 and np.isnan(got[-1]).all()


def test_narrow_results_are_rounded_once_without_kernels(monkeypatch):
    from impl import _numpy

    monkeypatch.setattr(_numpy, "_kernel", None)
    for dtype, rows in ROUND_ONCE.items():
        x = np.array(rows, dtype=np.float64).astype(FORMATS[dtype].dtype)
        assert _oracle(x).ulp_error(impl.log_softmax(x, axis=-1)).max() <= 0.5
