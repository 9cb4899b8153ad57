"""Threads: every core the process may run on by default, an override by environment
variable and by function, and the same bits for any count."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import impl
from impl._threads import ENV, PER_THREAD_ENV, available_cores

COUNTS = (1, 2, 3, 5, 16)


@pytest.fixture(autouse=True)
def _default_threads():
    """The default count after each test; and the fewest elements a thread may have,
    so that the calls below share their work on any machine (the measured threshold
    could keep them on one thread)"""
    from impl import _threads

    before = _threads.min_per_thread()
    _kernel = pytest.importorskip("impl._kernel")
    _kernel.set_per_thread(1 << 12)
    _threads._per_thread = 1 << 12
    yield
    impl.set_num_threads(None)
    _kernel.set_per_thread(before)
    _threads._per_thread = before


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("float32", (256, 4096)),  # blocks of rows
        ("float64", (512, 2048)),
        ("float32", (1, 1 << 20)),  # one long row: segments of each pass
        ("float64", (1, 1 << 19)),
        ("float16", (300, 2048)),  # widened block by block
        ("bfloat16", (2, 1 << 18)),  # long narrow rows in segments
    ],
)
def test_the_result_is_the_same_for_any_number_of_threads(dtype, shape):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 30).astype(
        ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    )
    x.reshape(-1)[::997] = -np.inf  # masked entries ride along
    outs = {}
    for k in COUNTS:
        impl.set_num_threads(k)
        outs[k] = _bits(impl.log_softmax(x, axis=-1))
    assert len(set(outs.values())) == 1


def test_the_jax_kernel_gives_the_same_bits_for_any_number_of_threads():
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(3).standard_normal((64, 8192)).astype(np.float32)
    outs = []
    for k in (1, 4):
        impl.set_num_threads(k)
        f = jax.jit(lambda a: impl.log_softmax(a, axis=-1))
        outs.append(_bits(np.asarray(f(jax.numpy.asarray(x)))))
    assert outs[0] == outs[1]


def test_defaults_overrides_and_errors():
    assert impl.get_num_threads() == available_cores()
    impl.set_num_threads(3)
    assert impl.get_num_threads() == 3
    impl.set_num_threads(None)
    assert impl.get_num_threads() == available_cores()
    for bad in (0, -1):
        with pytest.raises(ValueError, match="integer >= 1"):
            impl.set_num_threads(bad)
    for wrong in (True, 1.5, "2"):
        with pytest.raises(TypeError, match="integer >= 1"):
            impl.set_num_threads(wrong)  # type: ignore[arg-type]


def _in_child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=120,
    )  # fmt: skip


def test_the_environment_variable_sets_the_default():
    r = _in_child("import impl; print(impl.get_num_threads())", **{ENV: "3"})
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr
    r = _in_child("import impl; impl.get_num_threads()", **{ENV: "many"})
    assert r.returncode == 1 and f"{ENV}='many'" in r.stderr and "integer >= 1" in r.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_default_is_the_cores_the_process_may_run_on():
    """Not the machine's count: a process pinned to one core uses one thread."""
    code = "import os, impl; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
        "print(impl.get_num_threads(), os.cpu_count())"  # fmt: skip
    r = _in_child(code)
    assert r.returncode == 0, r.stderr
    threads, machine = map(int, r.stdout.split())
    assert threads == 1 and machine >= 1


def test_the_elements_a_thread_needs_are_measured_or_set():
    """Measured once per process (a thread's start and join against the kernels' time
    per element), within 2**14 to 2**18; LOG_SOFTMAX_MIN_PER_THREAD overrides it, and a
    bad value is an error naming the variable."""
    code = "from impl._threads import min_per_thread; print(min_per_thread())"
    r = _in_child(code)
    assert r.returncode == 0, r.stderr
    assert 1 << 14 <= int(r.stdout) <= 1 << 18
    r = _in_child(code, **{PER_THREAD_ENV: "5000"})
    assert r.returncode == 0 and r.stdout.strip() == "5000", r.stderr
    r = _in_child(code, **{PER_THREAD_ENV: "12"})
    assert r.returncode == 1 and f"{PER_THREAD_ENV}='12'" in r.stderr
