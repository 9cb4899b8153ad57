"""Special values, dtypes, shapes, axes, devices, laziness and errors of
impl.log_softmax, on every backend installed here."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import impl
import reference
from conformance import BACKENDS, Backend
from conformance.functions._families import (
    SPECIAL_ROWS,  # the specification's special cases, one list
)

inf, nan = math.inf, math.nan


def _assert_close(got: np.ndarray, x: np.ndarray, axis, b: Backend) -> None:
    """Specials exactly the canonical ones; finite values near the oracle. Accuracy
    budgets are test_accuracy's business (float32-only cells miss theirs by up to ~2
    ULP, listed there), so this allows 4 ULP: a sanity bound for semantics."""
    res = reference.evaluate(x, axis=axis)
    want = res.expected
    assert got.dtype == want.dtype and got.shape == want.shape
    special = ~np.isfinite(want)
    np.testing.assert_array_equal(got[special], want[special])
    assert (res.ulp_error(got) <= 4.0).all()


def _available(b: Backend) -> Backend:
    why = b.probe()
    if why:
        pytest.skip(why)
    return b


@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
@pytest.mark.parametrize("case", list(SPECIAL_ROWS))
def test_special_values_are_canonical(b, case):
    _available(b)
    dtype = "float32" if "float32" in b.dtypes else b.dtypes[0]
    x = np.array([SPECIAL_ROWS[case]] * 3, dtype=dtype)
    got = b.run(impl.log_softmax, x, axis=-1)
    _assert_close(got, x, -1, b)


SIGNED_ZERO_ROWS = [  # one shape: one compilation per dtype under jax.jit
    [1.0, -inf, -inf],  # T = 0: the maximum's output is exactly 0, +0
    [0.0, -800.0, -inf],  # T = e^-800 > 0 (0 in float64): -0
    [0.0, -1e300, -inf],
    [0.0, -746.0, -inf],
    [2.0, 2.0, -inf],
]


@pytest.mark.parametrize("paths", ["cpu", "gpu"])
@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
def test_signed_zero_at_the_maximum(b, paths):
    """The maximum's output is -log1p(T): +0 where T = 0 (every other entry -inf),
    -0 where T > 0 however far it underflows, as the correctly rounded value. Before:
    -0 for the first (the float32 kernels counted e^-700 for a -inf), +0 for the
    others where the float64 sum underflowed (kernels, Dask's split axis, the generic
    algorithm, torch's fused path). "gpu": the paths of GPU devices, on the CPU."""
    _available(b)
    from . import device_paths

    fn = device_paths.log_softmax if paths == "gpu" else impl.log_softmax
    for dtype in b.dtypes:
        with np.errstate(over="ignore"):  # -800 is -inf in float16
            x = np.array(SIGNED_ZERO_ROWS).astype(reference.FORMATS[dtype].dtype)
        want = reference.evaluate(x, axis=1).expected.astype(np.float64)
        got = b.run(fn, x, axis=1).astype(np.float64)
        np.testing.assert_array_equal(got, want, err_msg=dtype)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=dtype)


@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
def test_length_one_slices(b):
    _available(b)
    x = np.array([[inf], [-inf], [nan], [2.0]], dtype="float32")
    got = b.run(impl.log_softmax, x, axis=-1)
    np.testing.assert_array_equal(got, [[0.0], [0.0], [nan], [0.0]])


@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
def test_axes_and_shapes(b):
    _available(b)
    dtype = "float32"
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(dtype)
    for axis in [None, 0, -1, (0, 2), (2, 0), (-1, -3)]:
        _assert_close(b.run(impl.log_softmax, x, axis=axis), x, axis, b)
    xt = x.transpose(2, 0, 1)  # transposed, non-contiguous input
    _assert_close(b.run(impl.log_softmax, xt, axis=1), xt, 1, b)


@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
def test_empty(b):
    _available(b)
    for shape in [(0,), (3, 0), (0, 3)]:
        got = b.run(impl.log_softmax, np.ones(shape, "float32"), axis=-1)
        assert got.shape == shape and got.dtype == np.float32


def test_numpy_zero_d_is_a_scalar_like_scipy():
    out = impl.log_softmax(np.float64(3.0))
    assert isinstance(out, np.float64) and out == 0.0
    assert np.isnan(impl.log_softmax(np.float32(nan)))
    assert isinstance(impl.log_softmax(np.float32(1.0)), np.float32)


def test_lists_integers_and_bools_promote_to_default_float():
    out = impl.log_softmax([0, -40])
    assert out.dtype == np.float64 and out[0] == reference.log_softmax(np.array([0.0, -40.0]))[0]
    assert impl.log_softmax(np.array([True, False])).dtype == np.float64


def test_torch_integer_promotes_to_torch_default_float():
    torch = pytest.importorskip("torch")
    out = impl.log_softmax(torch.tensor([1, 2, 3]))
    assert out.dtype == torch.get_default_dtype()


def test_torch_meta_tensors_give_meta_results():
    """Tensors without data (shape inference) give a result without data, as torch's
    own log_softmax does; before, a RuntimeError from Tensor.item()"""
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.empty(3, 4, 5, device="meta", dtype=dtype, requires_grad=True)
        for axis in (1, (0, 2), None):
            out = impl.log_softmax(x, axis=axis)
            assert out.device.type == "meta" and out.dtype == dtype and out.shape == x.shape


def test_errors():
    x = np.ones((2, 3))
    with pytest.raises(np.exceptions.AxisError):
        impl.log_softmax(x, axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        impl.log_softmax(x, axis=(1, -1))
    with pytest.raises(TypeError, match="axis must be"):
        impl.log_softmax(x, axis=1.5)
    with pytest.raises(TypeError, match="complex"):
        impl.log_softmax(np.ones(3, np.complex128))
    for flag in (True, False, np.True_, (0, True)):  # NumPy and SciPy refuse bools as axes
        with pytest.raises(TypeError, match="axis must be"):
            impl.log_softmax(x, axis=flag)
    with pytest.raises(np.exceptions.AxisError):
        impl.log_softmax(np.array(1.5), axis=(0,))  # a tuple: NumPy's rule too
    with pytest.raises(np.exceptions.AxisError):
        impl.log_softmax(np.array(1.5), axis=1)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "int4", "uint4"])
def test_ml_dtypes_formats_it_does_not_compute_are_named(name):
    import ml_dtypes

    if not hasattr(ml_dtypes, name):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {name}")
    x = np.ones(3, dtype=getattr(ml_dtypes, name))
    with pytest.raises(TypeError, match=f"does not support dtype {name}: it takes float16"):
        impl.log_softmax(x)


@pytest.mark.parametrize("b", BACKENDS, ids=[b.name for b in BACKENDS])
def test_zero_d_takes_axis_0_and_minus_1_like_scipy(b):
    """scipy.special.log_softmax(np.array(1.5), axis=0) is 0.0 (NumPy's reductions take
    axis 0 or -1 of a 0-d array), and torch's dim=0 on a 0-d tensor is 0: before, an
    AxisError on every backend."""
    _available(b)
    for axis in (0, -1):
        for v in (1.5, -np.inf):
            x = np.array(v, np.float32)
            got = b.run(impl.log_softmax, x, axis=axis)
            want = reference.log_softmax(x, axis=axis)
            assert np.asarray(got).shape == () and np.asarray(got).dtype == np.float32
            assert got == want == 0.0


@pytest.mark.parametrize("name", ["numpy:cpu", "torch:cpu"])
def test_input_not_modified(name):
    b = _available(next(b for b in BACKENDS if b.name == name))
    x = np.array([[0.0, -40.0, np.inf], [1.0, -np.inf, 2.0]])
    xb = b.from_numpy(x)
    impl.log_softmax(xb, axis=-1)
    np.testing.assert_array_equal(b.to_numpy(xb), x)


def test_dask_stays_lazy_and_chunked():
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.random.default_rng(0).standard_normal((6, 30)), chunks=(2, 10))
    out = impl.log_softmax(x, axis=1)
    assert isinstance(out, da.Array) and out.chunks == x.chunks
    assert (reference.ulp_error(out.compute(), x.compute(), axis=1) <= 1.0).all()


def _assert_rounded(got: np.ndarray, x: np.ndarray, axis) -> None:
    """Specials exactly the canonical ones, finite values correctly rounded"""
    res = reference.evaluate(x, axis=axis)
    want = res.expected
    assert got.dtype == want.dtype and got.shape == want.shape
    special = ~np.isfinite(want)
    np.testing.assert_array_equal(got[special], want[special])
    assert res.ulp_error(got).max() <= 0.5


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("chunks", [(2, 3), (6, 8), (1, 1)])
def test_dask_unknown_chunk_sizes(dtype, chunks):
    """Sizes Dask learns only when it computes (boolean indexing): whole slices per
    block or the reduced axis split, that axis of unknown size or the other, special
    rows among them. Before: a TypeError from compute() wherever the unknown axis was
    reduced."""
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(0).standard_normal((6, 8)) * 30
    x[1] = -inf
    x[2, 3] = nan
    x[3, :2] = inf
    x[4, 5] = inf
    x[5, 0] = 800.0
    x = x.astype(dtype)
    keep = da.from_array(np.array([True, True, False, True, True, True]), chunks=chunks[0])
    d = da.from_array(x, chunks=chunks)[keep]
    assert math.isnan(d.shape[0])
    for arr, axis in [(d, 0), (d, 1), (d, None), (d.T, -1), (d.T, 0)]:
        out = impl.log_softmax(arr, axis=axis)
        assert isinstance(out, da.Array)
        _assert_rounded(out.compute(), arr.compute(), axis)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunks", [(2, 1), (4, 2), (1, 1)])
def test_dask_slices_of_one_entry(dtype, chunks):
    """A reduced axis that turns out to hold one entry (0, or NaN at a NaN; -inf alone
    is not "all -inf"), over blocks some of which are empty; and one known to hold
    one, split with empty chunks (before: NaN for the -inf)."""
    da = pytest.importorskip("dask.array")
    y = np.array([[inf, 5.0], [-inf, 5.0], [nan, 5.0], [2.0, 5.0]], dtype=dtype)
    d = da.from_array(y, chunks=chunks)
    one = d[:, da.from_array(np.array([True, False]), chunks=chunks[1])]
    for arr, axis in [(one, 1), (one.T, 0)]:
        got = impl.log_softmax(arr, axis=axis).compute()
        np.testing.assert_array_equal(got.ravel(), [0.0, 0.0, nan, 0.0])
    known = da.from_array(y[:, :1], chunks=((2, 2), (1,))).rechunk(((2, 2), (0, 1, 0)))
    got = impl.log_softmax(known, axis=1).compute()
    np.testing.assert_array_equal(got.ravel(), [0.0, 0.0, nan, 0.0])


def test_dask_unknown_sizes_on_the_generic_path_say_so(monkeypatch):
    """Without the kernels, a split reduced axis takes the generic algorithm, whose
    table look-ups reshape: unknown sizes are a clear error there, not a crash in
    compute(). Whole slices per block need no kernels."""
    da = pytest.importorskip("dask.array")
    import impl._dask

    monkeypatch.setattr(impl._dask, "compiled_kernels", lambda: None)
    x = np.random.default_rng(0).standard_normal((6, 8))
    keep = da.from_array(np.ones(6, bool), chunks=2)
    d = da.from_array(x, chunks=(2, 3))[keep]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        impl.log_softmax(d, axis=0)
    whole = da.from_array(x, chunks=(2, 8))[keep]
    _assert_rounded(impl.log_softmax(whole, axis=1).compute(), x, 1)
    _assert_rounded(impl.log_softmax(d.compute_chunk_sizes(), axis=0).compute(), x, 0)


def test_generic_algorithm_with_unknown_slice_length():
    """n=None (a shape that does not say): the special values decided per slice,
    lazily, slices of one entry included, as with n given"""
    xps = pytest.importorskip("array_api_strict")
    from impl._generic import log_softmax_generic

    rows = np.array([SPECIAL_ROWS[case] for case in SPECIAL_ROWS])
    for x, axis in [(rows, 1), (rows[:, :1], 1), (rows.T, 0)]:
        for dtype in ("float32", "float64"):
            xa = xps.asarray(x.astype(dtype))
            n = x.shape[axis]
            known = log_softmax_generic(xps, xa, (axis,), n, xps.float64)
            unknown = log_softmax_generic(xps, xa, (axis,), None, xps.float64)
            np.testing.assert_array_equal(np.asarray(unknown), np.asarray(known))


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_other_byte_order(dtype):
    """Arrays in the other byte order give the result in the native one (as NumPy's
    arithmetic does), correctly rounded. Before: the float64 ones went to the
    kernels through a float32 conversion, 9e9 ULP off."""
    x = np.random.default_rng(0).standard_normal((5, 7)) * 20
    x[0, 0] = 800.0
    native = x.astype(dtype)
    swapped = native.astype(native.dtype.newbyteorder("S"))
    for axis in [1, 0, None]:
        got = impl.log_softmax(swapped, axis=axis)
        assert got.dtype.isnative
        _assert_rounded(got, native, axis)
    da = pytest.importorskip("dask.array")
    for chunks in [(5, 7), (2, 3)]:
        out = impl.log_softmax(da.from_array(swapped, chunks=chunks), axis=1)
        assert out.dtype == native.dtype
        _assert_rounded(out.compute(), native, 1)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_unaligned_input(dtype):
    """An array at an address that is no multiple of its item size (a view into
    bytes) is copied for the kernels, which load whole numbers; Dask blocks of it too"""
    x = np.random.default_rng(0).standard_normal((4, 16)) * 10
    size = np.dtype(dtype).itemsize
    raw = np.zeros(x.size * size + 1, np.uint8)
    unaligned = raw[1:].view(dtype).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    for axis in [1, 0, None]:
        _assert_rounded(impl.log_softmax(unaligned, axis=axis), unaligned.copy(), axis)
    da = pytest.importorskip("dask.array")
    out = impl.log_softmax(da.from_array(unaligned, chunks=(2, 5)), axis=1)
    _assert_rounded(out.compute(), unaligned.copy(), 1)


def _long_double_ulp_error(got: np.ndarray, x: np.ndarray) -> float:
    """Largest error of got (long double) over rows of x, in long double ULP, from
    mpmath at 320 bits: (x - m) - log1p(T) with T summed apart from the maximum."""
    import mpmath as mp

    def exact(v: Any) -> Any:
        a, b = v.as_integer_ratio()
        return mp.mpf(a) / b

    fi = np.finfo(np.longdouble)
    tiny = exact(fi.smallest_subnormal)
    worst = mp.mpf(0)
    with mp.workprec(320):
        for r in range(x.shape[0]):
            row = [exact(v) for v in x[r]]
            m = max(row)
            k = sum(v == m for v in row)
            log1p_T = mp.log1p(mp.fsum(mp.exp(v - m) for v in row if v != m) + (k - 1))
            for j, v in enumerate(row):
                t = (v - m) - log1p_T
                ulp = max(mp.mpf(2) ** (int(mp.floor(mp.log(abs(t), 2))) - fi.nmant), tiny)
                worst = max(worst, abs(exact(got[r, j]) - t) / ulp)
    return float(worst)


def test_long_double():
    """NumPy's long double keeps its dtype and its precision: x87's 80-bit format (or
    binary128) computed in itself, a few of its ULP off on saturating rows where
    SciPy is 1e19 ULP off; float64's path where long double is float64. Before: 2**33
    of its ULP off (the kernels' float32 conversion)."""
    ld = np.longdouble
    rng = np.random.default_rng(0)
    rows = {
        "normal": rng.standard_normal((6, 30)),
        "dominant": [[0.0, -g] + [-g - 3.0] * 4 for g in (20, 45.5, 100, 700, 11000, 11350)],
        "wide": rng.standard_normal((6, 30)) * 1e3,
        "offset": rng.standard_normal((6, 30)) + 1e6,
    }
    for family, values in rows.items():
        x = np.array(values, dtype=ld)
        got = impl.log_softmax(x, axis=1)
        assert got.dtype == ld
        if np.finfo(ld).nmant == np.finfo(np.float64).nmant:
            want = impl.log_softmax(x.astype(np.float64), axis=1)
            np.testing.assert_array_equal(got, want.astype(ld))
        else:  # measured: at most 2.4
            assert _long_double_ulp_error(got, x) <= 4.0, family
    x = np.array([[0.0, -inf, nan], [inf, 1.0, 2.0], [-inf, -inf, -inf]], dtype=ld)
    np.testing.assert_array_equal(
        impl.log_softmax(x, axis=1), [[nan] * 3, [0.0, -inf, -inf], [nan] * 3]
    )
    assert impl.log_softmax(ld(3.0)) == 0.0 and impl.log_softmax(ld(3.0)).dtype == ld


def test_strict_device_is_kept():
    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device("device1")
    out = impl.log_softmax(xps.asarray([[0.0, -40.0]], device=dev), axis=1)
    assert out.device == dev


@pytest.mark.parametrize("name", ["no_x64", "no_float64"])
def test_strict_devices_without_64_bit_types(name):
    """array-api-strict's devices without float64 (and, "no_x64", without int64):
    float32 computed in float32, counts in the device's default integer. Before, on
    "no_x64" every call failed: an int32 sum promotes to int64 there."""
    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device(name)
    x = np.array(
        [[0.0, -40.0, 3.0, inf], [1.0, -inf, 2.0, 0.0], [0.0, -1e30, -20.0, -inf]], np.float32
    )
    out = impl.log_softmax(xps.asarray(x, device=dev), axis=1)
    assert out.device == dev
    got = np.asarray(out.to_device(xps.Device("CPU_DEVICE")))
    res = reference.evaluate(x, axis=1)
    np.testing.assert_array_equal(
        got[~np.isfinite(res.expected)], res.expected[~np.isfinite(res.expected)]
    )
    assert res.ulp_error(got).max() <= 1.0  # no wider format: the specification's 1 ULP
    promoted = impl.log_softmax(xps.asarray([1, 2, 3], device=dev))
    assert promoted.dtype == xps.float32 and promoted.device == dev


def test_torch_tensors_with_the_negative_bit():
    """torch's lazy negation (x.conj().imag) gives views with the negative bit set,
    which have no .numpy(); before, a RuntimeError"""
    torch = pytest.importorskip("torch")
    z = torch.tensor([1 + 0j, 2 - 3j, 0 + 1j])
    x = z.conj().imag
    assert x.is_neg()
    got = impl.log_softmax(x)
    np.testing.assert_array_equal(got.numpy(), impl.log_softmax(x.resolve_neg()).numpy())
    assert reference.ulp_error(got.numpy(), x.resolve_neg().numpy(), axis=None).max() <= 0.5


def test_no_warnings_from_impls_threads_or_dasks_tasks():
    """pytest turns warnings into errors here (filterwarnings = error), in every
    thread. A float16 cast that overflows on impl's own threads (NumPy's errstate is
    per thread), and a float64 gap between Dask blocks that overflows in their
    combination (Dask's threads; and FloatingPointError under np.seterr raise with
    the synchronous scheduler), warned before."""
    x = np.tile(np.array([65504, -65504], np.float16), (4096, 1))
    np.testing.assert_array_equal(impl.log_softmax(x, axis=1)[0], [-0.0, -inf])
    long_row = np.concatenate([x[:, 0], x[:, 1]])[None, :]  # segments of one row
    assert impl.log_softmax(long_row, axis=1)[0, -1] == -inf
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(impl.log_softmax(torch.from_numpy(x), axis=1)[0], [-0.0, -inf])
    da = pytest.importorskip("dask.array")
    big = np.finfo(np.float64).max
    d = da.from_array(np.array([[big, -big], [-big, big]]), chunks=1)
    np.testing.assert_array_equal(impl.log_softmax(d, axis=1).compute()[:, 0], [0.0, -inf])
    with np.errstate(all="raise"):
        got = impl.log_softmax(d, axis=1).compute(scheduler="sync")
    assert got[0, 1] == -inf and got[1, 1] == 0.0


def test_import_impl_imports_no_backend():
    code = (
        "import sys, numpy as np, impl\n"
        "impl.log_softmax(np.array([0.0, -40.0]))\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'dask') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_jax_subnormal_outputs_survive_flush_to_zero(dtype, jit):
    """XLA on CPU flushes subnormal results; the x64 path builds them from bits.
    (Found by the conformance sweep's dominant family: -3.3e-39 came back as -0.0.)"""
    jax = pytest.importorskip("jax")
    x = np.array([[0.0, -g, -g] for g in (80.0, 89.3, 95.0, 103.5, 110.0)]).astype(
        np.dtype(dtype) if dtype != "bfloat16" else reference.FORMATS[dtype].dtype
    )
    fn = jax.jit(impl.log_softmax, static_argnames="axis") if jit else impl.log_softmax
    with jax.enable_x64(True):
        got = np.asarray(fn(jax.numpy.asarray(x), axis=-1))
    assert reference.ulp_error(got, x, axis=-1).max() <= 0.5


def test_where_impl_differs_from_scipy():
    """Every documented difference from scipy.special.log_softmax (docs/impl.md,
    "Where impl differs from SciPy"), held both ways: SciPy's answer as measured, and
    impl's. A SciPy release that changes one of these fails here, and the page is
    then out of date."""
    import warnings

    sp = pytest.importorskip("scipy.special")

    def scipy(x: np.ndarray, **kw: Any) -> Any:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return sp.log_softmax(x, **kw)

    # a slice of one entry, +-inf: SciPy NaN (inf - inf), impl 0 (the limit)
    for v in (inf, -inf):
        assert np.isnan(scipy(np.array([v]))).all()
        assert impl.log_softmax(np.array([v])).tolist() == [0.0]
    # empty slices: SciPy raises, impl returns the empty array
    with pytest.raises(ValueError):
        scipy(np.zeros((2, 0)), axis=1)
    assert impl.log_softmax(np.zeros((2, 0)), axis=1).shape == (2, 0)
    # small integers: SciPy float16/float32, uint8 and uint16 values wrapping to -inf;
    # impl float64, as NumPy's float functions take integers
    for dt, scipy_dt in ((np.int8, np.float16), (np.uint8, np.float16), (np.int16, np.float32),
                         (np.uint16, np.float32)):  # fmt: skip
        x = np.array([1, 2, 3], dt)
        assert scipy(x).dtype == scipy_dt
        got = impl.log_softmax(x)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, impl.log_softmax(x.astype(np.float64)))
    assert np.isneginf(scipy(np.array([1, 2, 3], np.uint8))).all()
    # bool: SciPy raises TypeError, impl takes it as 0 and 1 in float64
    with pytest.raises(TypeError):
        scipy(np.array([True, False]))
    np.testing.assert_array_equal(
        impl.log_softmax(np.array([True, False])), impl.log_softmax(np.array([1.0, 0.0]))
    )
    # complex: SciPy returns complex128, impl raises TypeError (log_softmax of real input)
    assert scipy(np.array([1 + 1j, 2 + 0j])).dtype == np.complex128
    with pytest.raises(TypeError, match="real input"):
        impl.log_softmax(np.array([1 + 1j, 2 + 0j]))
    # logsumexp's Python float weight beside float32 a: SciPy weak (float32), impl
    # float64 (as a list of floats is, in both)
    a32 = np.array([0.0, 1.0], np.float32)
    assert sp.logsumexp(a32, b=2.0).dtype == np.float32
    assert impl.logsumexp(a32, b=2.0).dtype == np.float64
    assert sp.logsumexp(a32, b=[2.0, 2.0]).dtype == impl.logsumexp(a32, b=[2.0, 2.0]).dtype


def test_the_numpy_fast_path_gives_the_general_paths_bits():
    """A C-contiguous float32/float64 NumPy array over its last axis goes straight to
    the kernels (impl._numpy.last_axis_rows); its results, special rows included, are
    those of the general path (taken here by a non-contiguous copy of the input)."""
    from impl._numpy import last_axis_rows

    rng = np.random.default_rng(8)
    for dtype in ("float32", "float64"):
        x = (rng.normal(size=(40, 17)) * 30).astype(dtype)
        x[3, 2], x[5, 0], x[7] = nan, inf, -inf  # NaN, +inf, and a row of -inf only
        x[9, 1:] = -inf
        fast = last_axis_rows(x, -1)
        assert fast is not None
        general = impl.log_softmax(np.asfortranarray(x), axis=1)  # not C-contiguous
        np.testing.assert_array_equal(
            fast.view(np.uint8), np.ascontiguousarray(general).view(np.uint8)
        )
        np.testing.assert_array_equal(impl.log_softmax(x, axis=-1), fast)
        unaligned = np.frombuffer(b"\0" + x.tobytes(), dtype=dtype, offset=1).reshape(x.shape)
        for other in ((x, 0), (x, None), (x, True), (x.astype(np.float16), -1), (x[:, ::2], -1),
                      (unaligned, -1)):  # fmt: skip
            assert last_axis_rows(*other) is None, other[1]
    assert last_axis_rows(np.array([1.0, 2.0]), None) is not None


def test_the_torch_fast_path_gives_the_general_paths_bits():
    """A contiguous float32/float64 CPU tensor over its last axis, with no derivative
    to be asked for, goes straight to the kernels (impl._torch.last_axis_rows_torch);
    anything else takes the general path, with the same results."""
    torch = pytest.importorskip("torch")
    from impl._torch import last_axis_rows_torch

    rng = np.random.default_rng(9)
    # small tensors go by address (rows_at), large ones through NumPy views
    for dtype, shape in (("float32", (30, 9)), ("float64", (30, 9)), ("float32", (40, 1000))):
        x = torch.from_numpy((rng.normal(size=shape) * 30).astype(dtype))
        x[4, 1] = nan
        fast = last_axis_rows_torch(x, -1)
        assert fast is not None and fast.dtype == x.dtype
        general = impl.log_softmax(x.t().contiguous().t(), axis=1)  # not contiguous
        assert torch.equal(fast.isnan(), general.isnan())
        assert torch.equal(fast.nan_to_num(), general.nan_to_num())
        assert last_axis_rows_torch(x.requires_grad_(), -1) is None  # derivatives
        assert last_axis_rows_torch(x.detach()[:, ::2], -1) is None
        assert last_axis_rows_torch(x.detach(), 0) is None
        assert last_axis_rows_torch(x.detach().to(torch.float16), -1) is None
    # memory at an odd address (torch.frombuffer): the general path, the same bits
    raw = bytearray(8 * 11)
    odd = torch.frombuffer(raw, dtype=torch.float64, offset=1, count=10).reshape(1, 10)
    odd.copy_(torch.linspace(-3, 4, 10, dtype=torch.float64))
    assert odd.data_ptr() % 8 and last_axis_rows_torch(odd, -1) is None
    assert torch.equal(impl.log_softmax(odd, axis=-1), impl.log_softmax(odd.clone(), axis=-1))
