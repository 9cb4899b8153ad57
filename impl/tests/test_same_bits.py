"""The same bits everywhere: on every family's inputs of the quick profile, in every
format each backend has, impl's output is the oracle's correctly rounded value bit
for bit on every path, so the paths agree with each other bit for bit:

- NumPy on one thread and on two, on the AVX-512, the AVX2 and the portable kernels;
- PyTorch CPU tensors, JAX eager and under ``jax.jit``, Dask with every axis split
  into about three chunks (the reduced axis too);
- the generic algorithm: array-api-strict with float64 and without it, and the GPU
  paths of PyTorch and JAX (x64 and not) run on the CPU (impl/tests/device_paths.py).

NaN is compared as NaN (its sign and payload are not part of the contract:
docs/specification.md). Dask over CuPy blocks is the one path left out: its graph
has no host step yet (docs/impl.md, "Correct rounding").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import impl
import reference
from conformance import BACKENDS, Backend
from conformance.backends._invoke import invoke
from conformance.functions._families import family_inputs

from . import device_paths

_kernel = pytest.importorskip("impl._kernel")

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@contextlib.contextmanager
def _numpy(threads: int, path: str) -> Iterator[None]:
    try:
        before = _kernel.use(path)
    except ValueError:
        pytest.skip(f"this CPU has no {path} kernels")
    impl.set_num_threads(threads)
    try:
        yield
    finally:
        impl.set_num_threads(None)
        _kernel.use(before)


# (label, backend, the candidate, a context to run it in)
_Variant = tuple[str, str, Callable[..., Any], Callable[[], Any]]
VARIANTS: list[_Variant] = [
    ("numpy, 1 thread, avx512", "numpy:cpu", impl.log_softmax, lambda: _numpy(1, "avx512")),
    ("numpy, 2 threads, avx512", "numpy:cpu", impl.log_softmax, lambda: _numpy(2, "avx512")),
    ("numpy, 1 thread, avx2", "numpy:cpu", impl.log_softmax, lambda: _numpy(1, "avx2")),
    ("numpy, 2 threads, avx2", "numpy:cpu", impl.log_softmax, lambda: _numpy(2, "avx2")),
    ("numpy, 2 threads, portable", "numpy:cpu", impl.log_softmax, lambda: _numpy(2, "scalar")),
    ("torch", "torch:cpu", impl.log_softmax, contextlib.nullcontext),
    ("jax eager", "jax:cpu", impl.log_softmax, contextlib.nullcontext),
    ("jax jit", "jax:cpu:jit", impl.log_softmax, contextlib.nullcontext),
    ("dask, every axis split", "dask:cpu", impl.log_softmax, contextlib.nullcontext),
    ("array-api-strict", "array_api_strict:cpu", impl.log_softmax, contextlib.nullcontext),
    ("array-api-strict, no float64", "array_api_strict:no_float64", impl.log_softmax,
     contextlib.nullcontext),
    ("torch, GPU path", "torch:cpu", device_paths.log_softmax, contextlib.nullcontext),
    ("jax jit, GPU path", "jax:cpu:jit", device_paths.log_softmax, contextlib.nullcontext),
    ("jax jit without x64, GPU path", "jax:cpu:jit:nox64", device_paths.log_softmax,
     contextlib.nullcontext),
]  # fmt: skip


def _backend(name: str) -> Backend:
    b = next(b for b in BACKENDS if b.name == name)
    why = b.probe()
    if why:
        pytest.skip(why)
    return b


_ORACLE: dict[tuple[str, tuple[int, ...], str, bytes], np.ndarray] = {}


def _oracle(case: Any) -> np.ndarray:
    key = (case.x.dtype.str, case.x.shape, repr(case.axis), case.x.tobytes())
    if key not in _ORACLE:
        _ORACLE[key] = reference.log_softmax(case.x, axis=case.axis)
    return _ORACLE[key]


def _mismatches(got: np.ndarray, want: np.ndarray) -> int:
    g = np.ascontiguousarray(got).view(UINT[got.dtype.itemsize])
    w = np.ascontiguousarray(want).view(UINT[want.dtype.itemsize])
    both_nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    return int(((g != w) & ~both_nan).sum())


# JAX compiles a program for each shape (jit 25 s, its GPU paths 80 s and 170 s
# here), and eager JAX dispatches op by op (21 s): the extended tier, which CI runs
_SLOW = {"jax eager", "jax jit", "jax jit, GPU path", "jax jit without x64, GPU path"}
_PARAMS = [pytest.param(v, id=v[0], marks=[pytest.mark.extended] if v[0] in _SLOW else [])
           for v in VARIANTS]  # fmt: skip


@pytest.mark.parametrize("variant", _PARAMS)
def test_every_path_gives_the_oracles_bits_on_every_familys_inputs(variant):
    label, name, fn, context = variant
    b = _backend(name)
    wrong = []
    cases = 0
    for family, fmt, fam_cases in family_inputs("quick"):
        if fmt not in b.dtypes:
            continue
        for case in fam_cases:
            want = _oracle(case)
            findings: list[str] = []
            with context():
                got = invoke(fn, b, case, findings)
            cases += 1
            if got is None:
                wrong.append(f"{family} {fmt} {case.label}: {findings}")
                continue
            assert got.dtype == want.dtype and got.shape == want.shape, (family, case.label)
            n = _mismatches(got, want)
            if n:
                wrong.append(f"{family} {fmt} {case.label}: {n} of {got.size} outputs")
    assert cases > 20, cases
    assert not wrong, f"{label}: " + "; ".join(wrong[:8])
