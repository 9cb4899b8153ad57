"""Imported once by the server that forks the workers (``_isolation``): the harness,
NumPy, SciPy and the backend libraries of the sweep, so that a worker starts in
milliseconds instead of importing them again. Nothing is initialised (no device, no thread pool of a
library), only imported; a library that fails to import is left to the workers, which
report it per cell."""

import importlib
import importlib.util
import os
import warnings

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before SciPy's first import
# Python 3.12+ warns at every fork of a process with threads (NumPy's BLAS pool): the
# server forks before any library runs, and the children never share those threads.
warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)

import conformance.execution._sandbox  # noqa: E402
import conformance.execution._worker  # noqa: E402  (numpy, ml_dtypes, reference, the harness)

# the server dies with the sweep, and takes every process below it along
conformance.execution._worker.guard_fork_server()
_root = os.environ.pop("CONFORMANCE_SANDBOX_ROOT", "")

# the libraries of the sweep's backends (set by the supervisor for this server only)
_MODULES = {
    "numpy": (),
    "array_api_strict": ("array_api_strict",),
    "torch": ("torch",),
    "jax": ("jax", "jax.numpy"),
    "dask": ("dask.array",),
    "cupy": ("cupy",),
}
_libs = os.environ.pop("CONFORMANCE_PRELOAD", "")
_names = ["scipy.special", "array_api_compat", "impl"]
for _lib in filter(None, _libs.split(",")):
    _names += _MODULES.get(_lib, ())
for _name in _names:
    try:
        if importlib.util.find_spec(_name.split(".")[0]) is not None:
            importlib.import_module(_name)
    except Exception:
        pass

# the server's own sandbox, after the imports (which may write their caches): what it
# forks writes beneath the sweep's scratch root alone, even a process that reaches the
# server's socket from a worker (each worker adds a narrower layer of its own)
if _root:
    try:
        conformance.execution._sandbox.restrict(
            [_root, *conformance.execution._sandbox.extra_writable()]
        )
    except OSError as _exc:  # the workers' own layers say so, cell by cell
        print(f"conformance: the fork server's sandbox failed: {_exc}", flush=True)
