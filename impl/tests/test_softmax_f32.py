"""softmax on NumPy's one-call path for float32, float16 and bfloat16 (impl/csrc/
softmax.h: softmax_f32_rows): its exp within its bound, the oracle's bits from every
tier (the fast one, the float64 kernel's L, the accurate L) on every code path, and
the fast tier's rate of open outputs."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import impl
import reference

from .test_rounding import _adversarial_rows

K = pytest.importorskip("impl._kernel")


FORMATS = ["float32", "float16", "bfloat16"]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def _rows(dtype: str = "float32") -> np.ndarray:
    rng = np.random.default_rng(23)
    rows = _adversarial_rows(rng, dtype).astype(np.float32)
    n = rows.shape[1]
    extra = np.full((7, n), -np.inf, np.float32)
    extra[0, :2] = [0.0, -40.0]  # SciPy's [0, -40]: 1 - 4.2e-18 and e^-40
    extra[1, :3] = [0.0, -103.0, -104.5]  # outputs at the subnormals and below
    extra[2, :] = 5.0  # ties throughout
    extra[3, 0] = 1.0  # one finite entry
    extra[4, :2] = [3.4e38, -3.4e38]  # x - m far beyond the exponent range
    extra[5, :] = rng.normal(size=n) * 30
    extra[6, :2] = [0.0, -10.4]  # float16's subnormal outputs
    with np.errstate(over="ignore"):
        return np.concatenate([rows, extra]).astype(reference.FORMATS[dtype].dtype)


def test_exp_mid_is_within_its_bound():
    """exp_mid (the writer's exp: degree 8 on |r| <= ln2/8) within EXP_MID_REL = 2^-48
    over [-105, 0], densely and around the reduction's boundaries, and the bound not
    vacuous (the worst error above 2^-56)"""
    q = np.log(2.0) / 4
    zs = np.concatenate([
        np.linspace(-105.0, 0.0, 20001), -np.logspace(-15, 2.02, 2000),
        (np.arange(-484, 1) + 0.5) * q, (np.arange(-484, 1) + 0.5) * q * (1 - 2.0**-40),
    ])  # fmt: skip
    worst = 0.0
    with mpmath.workprec(120):
        for z in zs:
            e = mpmath.exp(float(z))
            worst = max(worst, float(abs((mpmath.mpf(K.exp_mid(float(z))) - e) / e)))
    assert 2.0**-56 < worst < 2.0**-48, worst


@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("scale", [1.0, 2.0**24, 2.0**70])
def test_every_tier_gives_the_oracles_bits(scale, dtype):
    """The bounds scaled up 2^24 leave every output of the fast tier open, for the
    float64 kernel's L to decide; scaled 2^70, that L's bound (scaled alike) leaves them
    open too, for the accurate L: every output is still the oracle's, bit for bit."""
    x = _rows(dtype)
    want = reference.softmax(x, axis=-1)
    old = K.set_bound_scale(scale)
    K.stats(True)
    try:
        got = impl.softmax(x, axis=-1)
    finally:
        K.set_bound_scale(old)
    seen = K.stats(False)["float32"]
    assert got.dtype == x.dtype
    assert np.array_equal(_bits(got), _bits(want))
    if scale > 1.0:
        assert seen["slow_rows"] >= len(x) - 8  # every regular row with a term
    assert (seen["exact_rows"] > 0) == (scale > 2.0**60), seen


@pytest.mark.parametrize("dtype", FORMATS)
def test_the_oracles_bits_on_every_path(dtype):
    """On every code path (AVX-512, AVX2, portable) and thread count: the oracle's bits
    on long rows, masked ones and the adversarial ones."""
    rng = np.random.default_rng(4)
    dt = reference.FORMATS[dtype].dtype
    xs = [_rows(dtype), (rng.normal(size=(40, 1000)) * 5).astype(dt)]
    x = rng.normal(size=(9, 4099)).astype(dt)
    x[:, ::5] = -np.inf
    xs.append(x)
    want = [reference.softmax(x, axis=-1) for x in xs]
    before = K.use("scalar")
    try:
        for path in K.paths():
            K.use(path)
            for threads in (1, 2):
                impl.set_num_threads(threads)
                for x, w in zip(xs, want, strict=True):
                    got = impl.softmax(x, axis=-1)
                    assert np.array_equal(_bits(got), _bits(w)), (path, threads, x.shape)
    finally:
        impl.set_num_threads(None)
        K.use(before)


def test_the_fast_tier_rarely_leaves_an_output_open():
    """The fast tier's L comes from exp_mid's terms (2^-48): on rows of 1,024 standard
    normal logits it leaves an output open in under 1% of the rows (with exp_short's
    2^-36.5 terms it was 22%: 223 of 1,024), and every row is counted"""
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    K.stats(True)
    out = impl.softmax(x, axis=-1)
    seen = K.stats(False)["float32"]
    assert seen["rows"] >= 1024
    assert seen["slow_rows"] <= 10, seen
    assert np.all(np.abs(out.sum(axis=-1, dtype=np.float64) - 1.0) < 1e-4)


def test_the_common_call_goes_straight_to_the_kernel(monkeypatch):
    """A small C-contiguous float32 NumPy array over its last axis skips the general
    path (_numpy.last_axis_softmax); special rows, other axes, other formats and views
    go the general way; every answer is the oracle's, bit for bit."""
    from impl import _numpy

    taken: list[bool] = []
    real = _numpy.last_axis_softmax

    def counted(x, axis):
        out = real(x, axis)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(_numpy, "last_axis_softmax", counted)
    monkeypatch.setitem(impl._delegation._FAST, "last_axis_softmax", counted)
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(64, 1000)) * 5).astype(np.float32)
    special = x[:4, :10].copy()
    special[1, 3] = np.nan
    special[2, :] = -np.inf
    cases = [
        (x, -1, True), (x[:, :7].copy(), 1, True), (x[0], None, True),
        (x[:3, :9].reshape(3, 3, 3).copy(), -1, True), (x[:3, :9].reshape(3, 3, 3), -1, False),
        (special, -1, False), (x[:8, :20], 0, False), (x[:, ::2], -1, False),
        (x.astype(np.float64)[:4], -1, False), (x[:4].astype(np.float16), -1, False),
    ]  # fmt: skip
    for arr, axis, fast in cases:
        taken.clear()
        got = impl.softmax(arr, axis=axis)
        want = reference.softmax(arr, axis=axis)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        g = np.ascontiguousarray(got).view(np.uint64 if got.itemsize == 8 else _bits(got).dtype)
        w = np.ascontiguousarray(want).view(g.dtype)
        nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
        assert ((g == w) | nan).all(), (arr.shape, axis)
        assert taken == [fast] or (not fast and not any(taken)), (arr.shape, axis, taken)


def test_the_common_call_on_a_cpu_tensor():
    """A float32 CPU tensor over its last axis takes the same kernel (a zero-copy view,
    _torch.last_axis_softmax_torch): the oracle's bits, a tensor back; a tensor that
    requires grad keeps the general path and its derivative."""
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(2).normal(size=(64, 100)) * 5).astype(np.float32)
    t = torch.from_numpy(x.copy())
    got = impl.softmax(t, axis=-1)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert np.array_equal(_bits(got.numpy()), _bits(reference.softmax(x, axis=-1)))
    w = t.clone().requires_grad_(True)
    y = impl.softmax(w, axis=-1)
    y[:, 0].sum().backward()
    assert w.grad is not None and np.array_equal(_bits(y.detach().numpy()), _bits(got.numpy()))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_narrow_pair_through_the_kernels_conversions(dtype):
    """Every float16 and bfloat16 value v as the slice [0, v], through log_softmax's
    rows_narrow (widened in the kernel, rounded to odd, then to nearest there) and
    softmax's one-call path: the oracle's bits. The conversions are the compiler's
    _Float16 here, the bit operations where it has none (.ci/sanitize.sh builds those)."""
    dt = reference.FORMATS[dtype].dtype
    v = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dt)
    x = np.stack([np.zeros_like(v), v], axis=1)
    for fn, ref in ((impl.log_softmax, reference.log_softmax), (impl.softmax, reference.softmax)):
        got, want = fn(x, axis=-1), ref(x, axis=-1)
        nan = np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32))
        assert ((_bits(got) == _bits(want)) | nan).all(), fn.__name__
