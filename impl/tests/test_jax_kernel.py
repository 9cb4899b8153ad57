"""JAX on CPU: the row kernels as an XLA FFI custom call (impl/_jax.py). The same
kernels as the NumPy path, so the same bits; the special rows filled by the handler;
float16 and bfloat16 without x64 through the float32 kernels; derivatives; vmap;
subnormal results despite XLA's flush to zero."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import impl
import reference
from impl._numpy import compiled_kernels

jax = pytest.importorskip("jax")
jnp = jax.numpy

pytestmark = pytest.mark.skipif(compiled_kernels() is None, reason="impl/_kernel.c not built")


@pytest.fixture(params=[True, False], ids=["x64", "nox64"])
def x64(request):
    with jax.enable_x64(request.param):
        yield request.param


def _dtypes(x64: bool) -> list[str]:
    return ["float32", "float64"] if x64 else ["float32"]


def test_the_kernel_is_registered_for_cpu():
    from impl._jax import cpu_kernel_registered

    assert cpu_kernel_registered()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7, 300), -1), ((300, 7), 0), ((4, 5, 6), (0, 2)), ((3, 4, 5), None), ((1, 70000), 1)],
)
def test_same_bits_as_the_numpy_path(x64, jit, shape, axis):
    rng = np.random.default_rng(3)
    fn = jax.jit(impl.log_softmax, static_argnames="axis") if jit else impl.log_softmax
    for dt in _dtypes(x64):
        x = (rng.standard_normal(shape) * 30).astype(dt)
        x.flat[::11] = 0.0  # ties with the maximum in some slices
        got = np.asarray(fn(jnp.asarray(x), axis=axis))
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, impl.log_softmax(x, axis=axis))


def test_rows_with_specials_are_filled_by_the_handler(x64):
    """Rows with a NaN, a +inf or only -inf: the FFI handler writes the specification's
    special values itself; the same bits as the NumPy path, finite rows beside them
    untouched."""
    inf, nan = math.inf, math.nan
    rows = [
        [0.0, -40.0, 1.0, 2.0], [1.0, nan, 2.0, inf], [1.0, -inf, 2.0, 0.5],
        [inf, 0.0, 1.0, -inf], [inf, inf, 1.0, -inf], [-inf, -inf, -inf, -inf],
        [nan, nan, nan, nan], [-inf, 3.0, -inf, -inf],
    ]  # fmt: skip
    fn = jax.jit(impl.log_softmax, static_argnames="axis")
    for dt in _dtypes(x64):
        x = np.array(rows, dtype=dt)
        got = np.asarray(fn(jnp.asarray(x), axis=1))
        np.testing.assert_array_equal(got, impl.log_softmax(x, axis=1))
        res = reference.evaluate(x, axis=1)
        special = ~np.isfinite(res.expected)
        np.testing.assert_array_equal(got[special], res.expected[special])
        assert (res.ulp_error(got) <= 0.5).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_formats_without_x64_take_the_float32_kernels(dtype):
    """Widened exactly, the kernels' float32 result rounded to odd, then to nearest:
    one correct rounding (within 0.5 ULP), subnormal outputs included (XLA's flush to
    zero does not reach them)."""
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((40, 300)) * 8).astype(np_dtype)
    x[:, 0] = 0.0
    x[::4, 1:] = -95.0 if dtype == "bfloat16" else -20.0  # subnormal outputs at the max
    x[1::4, 1:] = x[1::4, 1:] - 20.0
    x = x.astype(np_dtype)
    fn = jax.jit(impl.log_softmax, static_argnames="axis")
    with jax.enable_x64(False):
        xj = jnp.asarray(x)
        assert "impl_log_softmax" in fn.lower(xj, axis=1).as_text()
        got = np.asarray(fn(xj, axis=1))
    assert got.dtype == x.dtype
    res = reference.evaluate(x, axis=1)
    assert res.ulp_error(got).max() <= 0.5
    tiny = np.abs(res.expected[::4, 0].astype(np.float64))
    smallest_normal = 2.0**-126 if dtype == "bfloat16" else 2.0**-14
    assert (tiny > 0).all() and (tiny < smallest_normal).all()


def test_odd_output_is_the_kernels_result_rounded_to_odd():
    """The handler's uint32 output for float32 rows: the NumPy path's correctly
    rounded-to-odd float32 results (rows(..., odd=1)), bit for bit, subnormal and exact
    results included; each is the oracle's float32 result or, where that is inexact,
    its neighbour with an odd last bit (and the float64 output holds the same value)."""
    from impl._jax import _FFI_TARGET, cpu_kernel_registered

    assert cpu_kernel_registered()
    rng = np.random.default_rng(14)
    x = (rng.standard_normal((64, 257)) * 30).astype(np.float32)
    x[:8, 0], x[:8, 1:] = 0.0, -100.0 - rng.random((8, 256)).astype(np.float32)
    # (above: float32 subnormal outputs at the maximum)
    x[8:16] = np.round(x[8:16])  # many exact differences
    odd = np.empty(x.shape, np.float32)
    assert compiled_kernels().rows(x, odd, x.shape[1], 1, 1) == 0
    wide = np.empty(x.shape, np.float64)
    assert compiled_kernels().rows(x, wide, x.shape[1], 1) == 0
    np.testing.assert_array_equal(wide, odd.astype(np.float64))
    nearest = reference.log_softmax(x, axis=1)
    differs = odd.view(np.uint32) != nearest.view(np.uint32)
    assert differs.any() and (~differs).any()
    assert (odd.view(np.uint32)[differs] & 1).all()
    assert (np.abs(odd.view(np.int32)[differs] - nearest.view(np.int32)[differs]) == 1).all()
    assert (np.abs(odd[:8, 0]) < 2.0**-126).all() and odd[:8, 0].all()
    call = jax.ffi.ffi_call(_FFI_TARGET, jax.ShapeDtypeStruct(x.shape, jnp.uint32))
    np.testing.assert_array_equal(np.asarray(jax.jit(call)(jnp.asarray(x))), odd.view(np.uint32))


def _round_exact(v: float, dtype: str) -> float:
    """v rounded to nearest even in dtype, subnormals included: the oracle's own
    exact rounding."""
    from fractions import Fraction

    if not math.isfinite(v):
        return v
    q = Fraction(v)
    return reference.FORMATS[dtype].round_dyadic(q.numerator, 1 - q.denominator.bit_length())[0]


@pytest.mark.parametrize(("dtype", "p", "emin"), [("float16", 11, -14), ("bfloat16", 8, -126)])
def test_float64_results_are_rounded_once_to_the_narrow_formats(dtype, p, emin):
    """XLA converts float64 to float16 and bfloat16 through float32 (two roundings:
    1 + 2**-11 + 2**-40 becomes 1.0 in float16); the x64 path's cast rounds once."""
    from impl._jax import _subnormal_safe_cast

    rng = np.random.default_rng(13)
    lo = -30 if dtype == "bfloat16" else -9
    v = rng.standard_normal(3000) * 10.0 ** rng.uniform(lo, 4, 3000)
    halfway = [1 + 2.0**-p + s * 2.0**-40 for s in (1, -1)]  # just off a midpoint
    v = np.concatenate([v, halfway, [-(2.0**emin) * 0.75, 0.0, math.inf]])
    with jax.enable_x64(True):
        cast = jax.jit(lambda a: _subnormal_safe_cast(a, getattr(jnp, dtype)))
        got = np.asarray(cast(jnp.asarray(v))).astype(np.float64)
    want = np.array([_round_exact(float(x), dtype) for x in v])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_subnormal_results_survive_xla_flush_to_zero(dtype):
    """XLA runs its CPU threads with FTZ/DAZ; the custom call clears them while the
    kernels run, on its second thread too (rows shared, or one long row's passes).
    Exact results -1e-323 (float64) and -3.3e-39 (float32) would
    otherwise come back as -0.0."""
    gaps = {"float64": (744.0, 740.0, 720.0), "float32": (89.3, 95.0, 103.5)}[dtype]
    few = np.array([[0.0, -g, -g - 0.5] for g in gaps], dtype=dtype)
    many = np.tile(few, (11000, 1))  # enough work (>= 2**15 entries) for a second thread
    long = np.concatenate([[0.0], np.full(33000, -gaps[0])]).astype(dtype)[None, :]
    fn = jax.jit(impl.log_softmax, static_argnames="axis")
    for x in (few, many, long):
        with jax.enable_x64(True):
            got = np.asarray(fn(jnp.asarray(x), axis=-1))
        assert (got[:, 0] != 0).all()
        assert reference.ulp_error(got, x, axis=-1).max() <= 0.5


def test_vmap_matches_each_slice(x64):
    x = np.random.default_rng(4).standard_normal((5, 6, 40)).astype(np.float32)
    got = jax.jit(jax.vmap(lambda a: impl.log_softmax(a, axis=-1)))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), impl.log_softmax(x, axis=-1))


def test_derivatives_are_log_softmax_derivatives(x64):
    dt = "float64" if x64 else "float32"
    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 8)).astype(dt))
    w = jnp.arange(8.0, dtype=dt)

    def loss(f: Any) -> Any:
        return lambda a: (f(a, axis=1) * w).sum()

    want = jax.grad(loss(jax.nn.log_softmax))(x)
    tol = 1e-12 if x64 else 1e-5

    def close(got: Any, want: Any) -> None:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)

    close(jax.grad(loss(impl.log_softmax))(x), want)
    close(jax.jit(jax.grad(loss(impl.log_softmax)))(x), want)
    col = x[:, 0]
    want_jac = jax.jacfwd(lambda a: jax.nn.log_softmax(a, axis=0))(col)
    got_jac = jax.jacfwd(lambda a: impl.log_softmax(a, axis=0))(col)
    close(got_jac, want_jac)
