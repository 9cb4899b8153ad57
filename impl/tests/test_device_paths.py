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

CELLS = ("torch:cpu", "jax:cpu:jit", "jax:cpu:jit:nox64")


def _params() -> list[Any]:
    out = []
    for b in BACKENDS:
        if b.name in CELLS:
            out += [pytest.param(b, d, id=f"{b.name}-{d}") for d in b.dtypes]
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
    """The forcing reaches both switches (else the test above judges the CPU paths)."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from impl import _jax, _torch

    with device_paths.gpu_paths():
        assert not _torch._on_numpy(torch.ones(2))
        assert not _jax.cpu_kernel_registered()
        out = jax.jit(device_paths.log_softmax).lower(jax.numpy.ones((2, 3))).as_text()
    assert _jax._FFI_TARGET not in out
    cpu = jax.jit(impl.log_softmax).lower(jax.numpy.ones((2, 3))).as_text()
    assert _jax._FFI_TARGET in cpu
