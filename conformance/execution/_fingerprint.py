"""The run fingerprint: what ran, where, with which versions and settings.

Everything here is read without importing a backend library: versions from package
metadata, the machine from the operating system, the settings from the environment.
What only a library can say (its devices, its instruction set, its thread count) comes
from the probes, which run in processes of their own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["DISTS", "environment", "harness_digest", "recorded_environment", "settings"]

DISTS = [
    "numpy", "scipy", "mpmath", "gmpy2", "python-flint", "ml_dtypes", "array-api-compat",
    "array-api-strict", "torch", "jax", "jaxlib", "dask", "cupy-cuda12x", "cupy-cuda13x",
    "pandas", "log-softmax-conformance",
]  # fmt: skip
# Settings a library reads from the environment that can change a result: instruction
# sets, thread counts, precision overrides, devices. Every variable with one of the
# prefixes is recorded too.
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SCIPY_ARRAY_API",
        "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "ATEN_CPU_CAPABILITY")  # fmt: skip
# conformance's folders of tests, not of the harness
_NOT_HARNESS = ("tests", "suite")
_PREFIXES = ("NPY_", "JAX_", "XLA_", "TORCH_", "DASK_", "CUPY_", "REFERENCE_")


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


def harness_digest() -> str:
    """A hash of the harness's and the oracle's own source: a cell judged by other code
    is not reused."""
    h = hashlib.sha256()
    harness = Path(__file__).resolve().parents[1]  # conformance/: its modules and rooms
    oracle = harness.parent / "reference"
    sources = {
        harness: [*harness.glob("*.py"),
                  *(f for f in harness.glob("*/*.py") if f.parent.name not in _NOT_HARNESS)],
        oracle: [*oracle.glob("*.py")],
    }  # fmt: skip
    for pkg, files in sources.items():
        for f in sorted(files):
            h.update(f.relative_to(pkg).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def recorded_environment() -> dict[str, str]:
    """The environment variables a sweep records (and that can change a result)."""
    return {k: v for k, v in sorted(os.environ.items()) if k in _ENV or k.startswith(_PREFIXES)}


def settings() -> dict[str, Any]:
    """What every cell's verdict depends on besides its own inputs and candidate."""
    import reference

    env = recorded_environment()
    return {
        "harness": harness_digest(),
        "oracle_version": reference.ORACLE_VERSION,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "versions": {d: v for d in DISTS if (v := _version(d)) is not None},
        "environment": env,
    }


def environment(
    probes: dict[str, tuple[str | None, dict[str, Any]]] | None = None,
    setting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Versions, CPU, devices and flags (devices and flags from ``probes``; ``setting``:
    what settings() returned, where the caller has it)."""
    import reference

    s = setting if setting is not None else settings()
    env: dict[str, Any] = {
        "python": s["python"],
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "versions": s["versions"],
        "oracle": {**reference.engine_info(), "version": reference.ORACLE_VERSION},
        "settings": s["environment"],
        "devices": {},
        "flags": {"SCIPY_ARRAY_API": "1 (set in every worker)"},
        "platforms": {},
    }
    for name, (why, info) in sorted((probes or {}).items()):
        if why is not None:
            continue
        if info.get("devices"):
            env["devices"][name] = info["devices"]
        for k, v in info.get("flags", {}).items():
            env["flags"][k] = v
        env["platforms"][name] = info.get("platform", "")
    return env
