"""The run fingerprint: what ran, where, with which versions and flags."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from typing import Any

__all__ = ["environment"]

_DISTS = [
    "numpy", "scipy", "mpmath", "gmpy2", "python-flint", "ml_dtypes", "array-api-compat",
    "array-api-strict", "torch", "jax", "jaxlib", "dask", "cupy-cuda12x", "pandas",
    "log-softmax-conformance",
]  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(libraries: list[str]) -> dict[str, Any]:
    """Versions, CPU, devices and flags; only libraries in ``libraries`` are imported
    (to ask for their devices and flags)."""
    import reference

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "versions": {d: v for d in _DISTS if (v := _version(d)) is not None},
        "oracle": reference.engine_info(),
        "devices": {},
        "flags": {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "SCIPY_ARRAY_API": "1 (set in every worker)",
        },
    }
    if "torch" in libraries:
        try:
            torch = importlib.import_module("torch")
            env["flags"]["torch_threads"] = torch.get_num_threads()
            env["flags"]["torch_tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
            env["flags"]["torch_tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
            if torch.cuda.is_available():
                env["devices"]["torch"] = [
                    torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
                ]
        except Exception as exc:  # a broken install is recorded, not fatal
            env["devices"]["torch"] = f"unavailable: {type(exc).__name__}: {exc}"
    if "jax" in libraries:
        try:
            jax = importlib.import_module("jax")
            env["devices"]["jax"] = [str(d) for d in jax.devices()]
            env["flags"]["jax_enable_x64"] = "per cell (x64 cells on, nox64 cells off)"
        except Exception as exc:
            env["devices"]["jax"] = f"unavailable: {type(exc).__name__}: {exc}"
    if "cupy" in libraries:
        try:
            cupy = importlib.import_module("cupy")
            n = cupy.cuda.runtime.getDeviceCount()
            env["devices"]["cupy"] = [
                cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(n)
            ]
        except Exception as exc:
            env["devices"]["cupy"] = f"unavailable: {type(exc).__name__}: {exc}"
    return env
