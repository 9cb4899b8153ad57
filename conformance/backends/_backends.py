"""Backend cells: a library, a device and an execution mode, as data.

Each cell probes its availability without raising (``probe()`` returns None or the
reason it cannot run), moves NumPy arrays there bit for bit (bfloat16 and float16
included) and back, and runs a function the way that backend is used (eagerly, under
``jax.jit``, or as a lazy Dask graph computed at the end). Nothing is imported until a
cell is probed or used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

__all__ = ["BACKENDS", "Backend", "backend"]

_ALL = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class Backend:
    """One cell of the backend axis, e.g. ``torch:cuda`` or ``jax:cpu:jit``."""

    name: str
    library: str
    device: str
    mode: str = "eager"
    dtypes: tuple[str, ...] = _ALL
    x64: bool = True  # JAX only: run with jax_enable_x64

    # -- availability ----------------------------------------------------------
    def probe(self) -> str | None:
        """None when the cell can run here, else why not (never raises)."""
        try:
            return _PROBES[self.library](self)
        except Exception as exc:  # a broken install is a reason, not a crash
            return f"{type(exc).__name__}: {exc}"

    # -- transfer --------------------------------------------------------------
    def from_numpy(self, a: NDArray[Any]) -> Any:
        """The same values on this backend and device, bit for bit."""
        # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
        return _FROM[self.library](self, a if a.flags.c_contiguous else a.copy(order="C"))

    def to_numpy(self, a: Any) -> NDArray[Any]:
        return _TO[self.library](self, a)

    # -- execution -------------------------------------------------------------
    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Configuration the cell runs under (JAX's x64 flag)."""
        if self.library == "jax":
            import jax

            with jax.enable_x64(self.x64):
                yield
        else:
            yield

    def run(self, fn: Callable[..., Any], x: NDArray[Any], **kwargs: Any) -> Any:
        """``fn(x_on_backend, **kwargs)``, executed the backend's way, back in NumPy.
        Keyword arguments that are NumPy arrays (logsumexp's ``b``) go to the backend
        as x does (None ones are left out); a tuple result (``return_sign``) comes back
        as a tuple of arrays."""
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        static = {k: v for k, v in kwargs.items() if k not in arrays and v is not None}
        with self.context():
            xb = self.from_numpy(x)
            on = [self.from_numpy(v) for v in arrays.values()]
            if self.mode == "jit":
                out = _jitted(fn, tuple(sorted(static.items())), tuple(arrays))(xb, *on)
            else:
                out = fn(xb, **static, **dict(zip(arrays, on, strict=True)))
            if isinstance(out, tuple):
                return tuple(self.to_numpy(o) for o in out)
            return self.to_numpy(out)


@functools.lru_cache(maxsize=64)
def _jitted(
    fn: Callable[..., Any], kwargs: tuple[tuple[str, Any], ...], traced: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """One jitted wrapper per (function, static keyword arguments): XLA compiles once
    per input shape and dtype instead of once per call. ``traced`` names the keyword
    arguments that are arrays (logsumexp's ``b``): they follow x as positional
    arguments of the wrapper."""
    import jax

    def call(a: Any, *arrays: Any) -> Any:
        return fn(a, **dict(kwargs), **dict(zip(traced, arrays, strict=True)))

    return jax.jit(call)


# --- numpy ---------------------------------------------------------------------
def _probe_numpy(b: Backend) -> str | None:
    return None


# --- array-api-strict -------------------------------------------------------------
def _probe_strict(b: Backend) -> str | None:
    try:
        xp = importlib.import_module("array_api_strict")
    except ImportError:
        return "array-api-strict is not installed"
    if _strict_device(b) in xp.__array_namespace_info__().devices():
        return None
    return f"no device {b.device}"


def _strict_device(b: Backend) -> Any:
    import array_api_strict as xp

    return xp.Device("CPU_DEVICE" if b.device == "cpu" else b.device)


def _from_strict(b: Backend, a: NDArray[Any]) -> Any:
    import array_api_strict as xp

    return xp.asarray(a, device=_strict_device(b))


def _to_strict(b: Backend, a: Any) -> NDArray[Any]:
    import array_api_strict as xp

    if a.device != _strict_device(b):
        raise AssertionError(f"result on {a.device}, input was on {_strict_device(b)}")
    return np.asarray(xp.asarray(a, device=xp.Device("CPU_DEVICE")))


# --- torch -----------------------------------------------------------------------
def _probe_torch(b: Backend) -> str | None:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return "torch is not installed"
    if b.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _from_torch(b: Backend, a: NDArray[Any]) -> Any:
    import torch

    if a.dtype == ml_dtypes.bfloat16:
        t = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a.copy())
    return t.to(b.device)


def _to_torch(b: Backend, t: Any) -> NDArray[Any]:
    import torch

    if t.device.type != b.device:
        raise AssertionError(f"result on {t.device}, input was on {b.device}")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return np.asarray(t.view(torch.int16).numpy()).view(ml_dtypes.bfloat16)
    return np.asarray(t.numpy())


# --- jax -------------------------------------------------------------------------
def _probe_jax(b: Backend) -> str | None:
    try:
        jax = importlib.import_module("jax")
    except ImportError:
        return "jax is not installed"
    platform = "gpu" if b.device == "gpu" else "cpu"
    try:
        jax.devices(platform)
    except RuntimeError:
        return f"no JAX {platform} device"
    return None


def _from_jax(b: Backend, a: NDArray[Any]) -> Any:
    import jax

    dev = jax.devices("gpu" if b.device == "gpu" else "cpu")[0]
    if a.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise TypeError("float64 needs jax_enable_x64")
    return jax.device_put(a, dev)


def _to_jax(b: Backend, a: Any) -> NDArray[Any]:
    return np.asarray(a)


# --- dask ------------------------------------------------------------------------
def _probe_dask(b: Backend) -> str | None:
    try:
        importlib.import_module("dask.array")
    except ImportError:
        return "dask is not installed"
    return None


def _from_dask(b: Backend, a: NDArray[Any]) -> Any:
    import dask.array as da

    # split every axis into about three chunks: reductions must cross chunk borders
    chunks = tuple(max(1, -(-s // 3)) for s in a.shape)
    return da.from_array(a, chunks=chunks)


def _to_dask(b: Backend, a: Any) -> NDArray[Any]:
    import dask.array as da

    if not isinstance(a, da.Array):
        raise AssertionError(f"expected a lazy dask array, got {type(a).__name__}")
    return np.asarray(a.compute())


# --- cupy ------------------------------------------------------------------------
def _probe_cupy(b: Backend) -> str | None:
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return "cupy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except Exception:
        return "no CUDA device"
    return None


def _from_cupy(b: Backend, a: NDArray[Any]) -> Any:
    import cupy

    return cupy.asarray(a)


def _to_cupy(b: Backend, a: Any) -> NDArray[Any]:
    return np.asarray(a.get())


_PROBES: dict[str, Callable[[Backend], str | None]] = {
    "numpy": _probe_numpy,
    "array_api_strict": _probe_strict,
    "torch": _probe_torch,
    "jax": _probe_jax,
    "dask": _probe_dask,
    "cupy": _probe_cupy,
}
_FROM: dict[str, Callable[[Backend, NDArray[Any]], Any]] = {
    "numpy": lambda b, a: a.copy(),
    "array_api_strict": _from_strict,
    "torch": _from_torch,
    "jax": _from_jax,
    "dask": _from_dask,
    "cupy": _from_cupy,
}
_TO: dict[str, Callable[[Backend, Any], NDArray[Any]]] = {
    "numpy": lambda b, a: np.asarray(a),
    "array_api_strict": _to_strict,
    "torch": _to_torch,
    "jax": _to_jax,
    "dask": _to_dask,
    "cupy": _to_cupy,
}

BACKENDS: tuple[Backend, ...] = (
    Backend("numpy:cpu", "numpy", "cpu"),
    Backend("array_api_strict:cpu", "array_api_strict", "cpu", dtypes=("float32", "float64")),
    Backend(
        "array_api_strict:device1", "array_api_strict", "device1", dtypes=("float32", "float64")
    ),
    Backend("array_api_strict:no_float64", "array_api_strict", "no_float64", dtypes=("float32",)),
    Backend("torch:cpu", "torch", "cpu"),
    Backend("torch:cuda", "torch", "cuda"),
    Backend("jax:cpu", "jax", "cpu"),
    Backend("jax:cpu:jit", "jax", "cpu", mode="jit"),
    Backend("jax:cpu:nox64", "jax", "cpu", dtypes=("float16", "bfloat16", "float32"), x64=False),
    Backend(
        "jax:cpu:jit:nox64",
        "jax",
        "cpu",
        mode="jit",
        dtypes=("float16", "bfloat16", "float32"),
        x64=False,
    ),
    Backend("jax:gpu", "jax", "gpu"),
    Backend("jax:gpu:jit", "jax", "gpu", mode="jit"),
    Backend("cupy:cuda", "cupy", "cuda"),
    Backend("dask:cpu", "dask", "cpu"),
)


def backend(name: str) -> Backend:
    for b in BACKENDS:
        if b.name == name:
            return b
    raise KeyError(f"unknown backend {name!r}; known: {[b.name for b in BACKENDS]}")
