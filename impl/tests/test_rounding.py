"""Correct rounding of impl's float32 rows (float32, float16 and bfloat16 results):
bits against the oracle, never `ulp_error <= 0.5` (a double rounding reads as 0.5).

The kernels' fast path carries a proven error bound; the rounding test sends the
outputs it cannot decide to the slow path (impl/csrc/rounding.h, docs/impl.md
"Correct rounding"). These tests hold the reproducers of double rounding and of the
fast exp's error, every float16 and bfloat16 pair, random float32 pairs and the
hardest float32 pair known, and check that a weakened bound is caught."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import impl
import reference
from conformance import BACKENDS, Backend

_kernel = pytest.importorskip("impl._kernel")

# Backends whose CPU path runs the row kernels (the others run the generic algorithm)
KERNEL_BACKENDS = [b for b in BACKENDS if b.name in ("numpy:cpu", "torch:cpu", "jax:cpu",
                                                     "jax:cpu:jit", "dask:cpu")]  # fmt: skip


def _run(b: Backend, x: np.ndarray) -> np.ndarray:
    """impl.log_softmax(x, axis=-1) on b. Dask with whole slices per block (chunks
    along the first axis only): that runs the row kernels block by block
    (test_dask_split_axis_is_correctly_rounded splits the reduced axis)."""
    if b.library == "dask":
        import dask.array as da

        lazy = da.from_array(x, chunks=(7, -1))  # type: ignore[no-untyped-call]
        return np.asarray(impl.log_softmax(lazy, axis=-1).compute())
    return np.asarray(b.run(impl.log_softmax, x, axis=-1))


UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _available(b: Backend) -> Backend:
    why = b.probe()
    if why:
        pytest.skip(why)
    return b


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(UINT[a.dtype.itemsize])


def _assert_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    g, w = _bits(np.asarray(got)), _bits(np.asarray(want))
    bad = np.argwhere(g != w)
    assert bad.size == 0, f"{what}: {len(bad)} outputs differ, first at {bad[0].tolist()}"


# The reproducers: x - max on a rounding midpoint of the output and log1p(T)
# vanishing in float64 (rounded twice: -40.0); the float32 kernel's exp missing by
# 2^-36.89 (0.50002 ULP at index 3); and a float32 pair far apart, whose x - max is
# not a double (2^30 - 2^-30 (1 + 2^-23), just below a float32 number)
REPRODUCERS = [
    ("float32", [2.0**-19, -40.0]),
    ("float16", [2.0**-6, -40.0]),
    ("bfloat16", [0.125, -40.0]),
    (
        "float32",
        [
            700.3890991210938,
            700.0830688476562,
            700.73779296875,
            717.4591064453125,
            700.3890991210938,
            700.3890991210938,
        ],
    ),
    ("float32", [2.0**30, -(2.0**-30) * (1 + 2.0**-23)]),
    ("float32", [2.0**30, 2.0**-30 * (1 + 2.0**-23)]),
    ("float16", [1024.0, 1.5 * 2.0**-10]),
    ("bfloat16", [2.0**100, -(2.0**-30)]),
]


@pytest.mark.parametrize("b", KERNEL_BACKENDS, ids=[b.name for b in KERNEL_BACKENDS])
def test_reproducers_are_correctly_rounded(b):
    _available(b)
    for dtype, row in REPRODUCERS:
        if dtype not in b.dtypes:
            continue
        x = np.array([row, row[::-1]], dtype=reference.FORMATS[dtype].dtype)
        want = reference.log_softmax(x, axis=-1)
        _assert_bits(_run(b, x), want, f"{b.name} {dtype} {row}")


@pytest.mark.parametrize("b", KERNEL_BACKENDS, ids=[b.name for b in KERNEL_BACKENDS])
def test_float64_zero_at_the_maximum_of_an_overflowing_row(b):
    """[1e308, -1e308]: x - max overflows to -inf, yet T = exp(-2e308) > 0, so the
    maximum's output is -0 (it was +0 on NumPy, torch and JAX)."""
    _available(b)
    if "float64" not in b.dtypes:
        pytest.skip("no float64")
    x = np.array([[1e308, -1e308], [-1e308, 1e308], [1e308, -math.inf]])
    got = _run(b, x)
    want = reference.log_softmax(x, axis=-1)
    _assert_bits(got, want, b.name)
    assert np.signbit(got[0, 0]) and not np.signbit(got[2, 0])


def _pairs(v: np.ndarray) -> np.ndarray:
    return np.stack([np.zeros_like(v), v], axis=1)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_every_narrow_pair_is_correctly_rounded(dtype):
    """[0, v] for all 65,536 v, as rows ([0, v]) and as columns, bit for bit the pair
    oracle (itself checked against the exact engine on every one of them)."""
    v = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dtype)
    want = reference.log_softmax_pairs(v)
    _assert_bits(impl.log_softmax(_pairs(v), axis=1), want, "rows")
    _assert_bits(impl.log_softmax(_pairs(v).T, axis=0), want.T, "columns")


def test_random_float32_pairs_and_the_hardest_known():
    rng = np.random.default_rng(20261206)
    v = rng.integers(0, 2**32, size=300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # the hardest float32 pair known (d - L at 2^-57.0 relative from a midpoint), and
    # the fast exp's worst (1.1e-4 ULP from one)
    hard = np.array([0x39EA41D0, 0xB9EA41D0, 0x41D36817, 0xC1D36817], np.uint32).view(np.float32)
    v = np.concatenate([hard, v])
    _assert_bits(impl.log_softmax(_pairs(v), axis=1), reference.log_softmax_pairs(v), "pairs")


def test_a_weakened_bound_is_caught():
    """With the fast path's bound scaled down to 0 its answer is trusted everywhere,
    and the pairs closest to a boundary come out wrong: the bound is what makes them
    right, and this test fails if the rounding test stops being consulted."""
    v32, v64 = HARD_F32, np.array(HARD_F64)
    for v, want in ((v32, reference.log_softmax_pairs(v32)),
                    (v64, reference.log_softmax(_pairs(v64), axis=1))):  # fmt: skip
        _assert_bits(impl.log_softmax(_pairs(v), axis=1), want, f"{v.dtype}, bound as proven")
        old = _kernel.set_bound_scale(0.0)
        try:
            got = impl.log_softmax(_pairs(v), axis=1)
        finally:
            _kernel.set_bound_scale(old)
        assert (_bits(got) != _bits(want)).any(), f"{v.dtype}: a bound of 0 went unnoticed"


def test_long_rows_take_the_slow_path_on_every_thread_count():
    """A row long enough to be cut into segments shared by threads, holding the
    hardest pair among masked (-inf) entries: the slow path recomputes the whole row,
    and the bits are the oracle's for any thread count."""
    n = 1 << 17
    for bits in (0x39EA41D0, 0x41D36817):
        v = np.array([bits], np.uint32).view(np.float32)[0]
        row = np.full(n, -np.inf, np.float32)
        row[0], row[n // 2 + 3] = 0.0, v
        want = reference.log_softmax_pairs(np.array([v]))[0]
        for threads in (1, 2, 3):
            old = impl.get_num_threads()
            impl.set_num_threads(threads)
            try:
                _kernel.stats(True)
                got = impl.log_softmax(row)
                slow = _kernel.stats()["float32"]["slow_rows"]
            finally:
                impl.set_num_threads(old)
            _assert_bits(got[[0, n // 2 + 3]], want, f"threads {threads}")
            assert np.isneginf(got[1]) and slow == 1


def test_the_bounds_hold():
    """The fast path's L is within its bound of log1p(T) on random rows, and the slow
    path's within its own; exp_short's error, measured densely, is within the bound
    rounding.h takes for it (2^-36.5), and above 2^-37 (the figure once claimed)."""
    import mpmath

    with mpmath.workprec(160):
        _check_bounds(mpmath)


def _check_bounds(mpmath: Any) -> None:
    rng = np.random.default_rng(5)
    worst = 0.0
    for d in np.concatenate([-rng.uniform(0, 700, 4000), -rng.uniform(0, 0.2, 4000)]):
        e = mpmath.exp(mpmath.mpf(float(d)))
        worst = max(worst, float(abs((mpmath.mpf(_kernel.exp_short(float(d))) - e) / e)))
    assert 2.0**-37 < worst < 2.0**-36.5
    for trial in range(60):
        n = int(rng.integers(2, 400))
        row = (rng.normal(size=n) * rng.choice([0.1, 3.0, 40.0])).astype(np.float32)
        m = float(row.max())
        T = mpmath.fsum(mpmath.exp(mpmath.mpf(float(x)) - m) for x in row) - 1
        L = mpmath.log1p(T)
        sh, _, k = _kernel.partial(row, m)
        fast = _kernel.bound_f32(sh + (k - 1), n)
        assert abs(mpmath.mpf(fast[0]) + fast[1] - L) <= fast[2], trial
        slow = _kernel.exact_l_f32(row, m)
        assert abs(mpmath.mpf(slow[0]) + slow[1] - L) <= slow[2], trial
        assert slow[2] < 2.0**-85 * float(L)


@pytest.mark.parametrize("b", KERNEL_BACKENDS, ids=[b.name for b in KERNEL_BACKENDS])
def test_adversarial_rows_are_correctly_rounded(b):
    """Rows whose x - max falls on a midpoint of the output, with other entries at
    every distance: the case double rounding hits (3 to 4% of a random adversarial
    search before), as bits, in every narrow format the backend has."""
    _available(b)
    rng = np.random.default_rng(11)
    for dtype in [d for d in ("float16", "bfloat16", "float32") if d in b.dtypes]:
        x = _adversarial_rows(rng, dtype)
        want = reference.log_softmax(x, axis=-1)
        _assert_bits(_run(b, x), want, f"{b.name} {dtype}")


def _adversarial_rows(rng: np.random.Generator, dtype: str) -> np.ndarray:
    """300 rows of 4 in dtype: x - max on a midpoint of the output's grid, the other
    entries at every distance"""
    f = reference.FORMATS[dtype]
    p = f.precision
    rows = []
    for _ in range(300):
        big = float(rng.choice([8.0, 40.0, 100.0, 1000.0]))
        e = math.floor(math.log2(big))
        mid = -big - 2.0 ** (e - p)  # a midpoint of the output's grid below -big
        top = 2.0 ** (e - p)
        rows.append([top, top + mid, top + mid * float(rng.uniform(0.5, 1.0)), top - 3.0])
    with np.errstate(over="ignore"):
        x = np.array(rows).astype(f.dtype)
    return np.asarray(x[np.isfinite(x.astype(np.float64)).all(axis=1)])


# ---- float64 ----


def _float64_rows(rng: np.random.Generator, nrows: int, n: int) -> np.ndarray:
    """Rows at every scale: logits of a few units, of tens, far apart (one entry
    dominating), and near-ties."""
    scale = rng.choice([0.01, 1.0, 30.0, 300.0], size=(nrows, 1))
    x = rng.normal(size=(nrows, n)) * scale
    x[::7, 1:] = x[::7, :1] - rng.uniform(30, 700, size=(len(x[::7]), n - 1))
    x[3::7, 1] = np.nextafter(x[3::7, 0], -np.inf)
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("b", KERNEL_BACKENDS, ids=[b.name for b in KERNEL_BACKENDS])
def test_float64_rows_are_correctly_rounded(b):
    _available(b)
    if "float64" not in b.dtypes:
        pytest.skip("no float64")
    x = _float64_rows(np.random.default_rng(17), 210, 6)
    want = reference.log_softmax(x, axis=-1)
    _assert_bits(_run(b, x), want, b.name)


def _split_dask(x: np.ndarray, chunks: Any, axis: Any = -1) -> np.ndarray:
    import dask.array as da

    lazy = da.from_array(x, chunks=chunks)  # type: ignore[no-untyped-call]
    return np.asarray(impl.log_softmax(lazy, axis=axis).compute())


# pairs whose float64 answer is wrong under a bound of 0 (a random search's, of 2M),
# and the hardest float32 pairs
HARD_F64 = [-1.631472862690675, -27.77302290422139, -11.529337494312028]
HARD_F32 = np.array([0x41D36817, 0xC1D36817, 0x39EA41D0], np.uint32).view(np.float32)


def test_dask_split_axis_is_correctly_rounded():
    """Dask with the reduced axis split over blocks: the blocks' sums are combined
    with a bound on L's error, the write tests every output under it, and the slices
    it leaves open are summed again on the slow path block by block and written
    again. Bits against the oracle: the adversarial rows in each narrow format, rows
    of every scale, the hardest pairs (which take the slow pass), a row a search of
    20,000 found wrong before, and three reduced axes out of three, split."""
    pytest.importorskip("dask.array")
    rng = np.random.default_rng(11)
    for dtype in ("float16", "bfloat16", "float32"):
        x = _adversarial_rows(rng, dtype)
        _assert_bits(_split_dask(x, (50, 1)), reference.log_softmax(x, axis=-1), dtype)
    x = _float64_rows(np.random.default_rng(17), 210, 6)
    _assert_bits(_split_dask(x, (30, 2)), reference.log_softmax(x, axis=-1), "float64")
    x = np.array([[5.500085080230128, 6.752437348092327, 10.620563940643141,
                   15.69290464868597, 4.166901514720963, -33.50049552198146]])  # fmt: skip
    _assert_bits(_split_dask(x, (1, 2)), reference.log_softmax(x, axis=-1), "the row")
    for v, fmt in ((np.array(HARD_F64), "float64"), (HARD_F32, "float32")):
        x = _pairs(v)
        _kernel.stats(True)
        got = _split_dask(x, (1, 1))
        stats = _kernel.stats()[fmt]
        _assert_bits(got, reference.log_softmax(x, axis=-1), f"hard pairs, {fmt}")
        assert stats["exact_rows"] >= 2 * len(v) and stats["undecided"] == 0, stats
    y = np.random.default_rng(3).standard_normal((6, 5, 9)).astype(np.float32)
    for axes in [(0, 2), (1,), (0, 1, 2)]:
        got = _split_dask(y, (2, 2, 4), axes)
        _assert_bits(got, reference.log_softmax(y, axis=axes), f"axes {axes}")


def test_dask_blocks_of_another_library_run_impls_own_call_per_block(monkeypatch):
    """Dask over blocks that are not NumPy's (CuPy's; here a NumPy subclass stands in),
    each slice whole in a block: every block goes through impl's own call on its
    namespace (for CuPy the generic algorithm with its host step), so the result is
    the oracle's bits. Before, the generic algorithm ran on the Dask array with no
    host step."""
    import dask.array as da

    from impl import _dask

    class Blocks(np.ndarray):
        pass

    seen = []
    real = _dask._native_block

    def spy(b: Any, axes: Any) -> Any:
        seen.append(type(b))
        return real(b, axes)

    monkeypatch.setattr(_dask, "_native_block", spy)
    for dtype in ("float32", "float64"):
        x = _adversarial_rows(np.random.default_rng(13), dtype) if dtype == "float32" else \
            _float64_rows(np.random.default_rng(13), 70, 6)  # fmt: skip
        lazy = da.from_array(x.view(Blocks), chunks=(16, -1), asarray=False)  # type: ignore[no-untyped-call]
        got = np.asarray(impl.log_softmax(lazy, axis=-1).compute())
        _assert_bits(got, reference.log_softmax(x, axis=-1), dtype)
    assert seen and all(t is Blocks for t in seen)


def test_dask_split_axis_weakened_bound_is_caught():
    """The Dask path's bound (combine_rows) is what makes the hardest float64 pairs
    right when split: scaled to 0, they come out wrong."""
    pytest.importorskip("dask.array")
    x = _pairs(np.array(HARD_F64))
    want = reference.log_softmax(x, axis=-1)
    _assert_bits(_split_dask(x, (1, 1)), want, "bound as proven")
    old = _kernel.set_bound_scale(0.0)
    try:
        got = _split_dask(x, (1, 1))
    finally:
        _kernel.set_bound_scale(old)
    assert (_bits(got) != _bits(want)).any(), "a bound of 0 went unnoticed"


def _softmax_midpoint_cases(rng: np.random.Generator) -> list[tuple[float, float, Any, float]]:
    """(y_hi, y_lo, the correctly rounded exp(y_hi + y_lo), eta): exponents whose exp lies
    eta relatively above a float64 rounding midpoint, for outputs across the normal
    range, just below powers of two (where the midpoint below is a quarter ulp away)
    and on the subnormal grid"""
    import mpmath

    cases = []
    normal = [float(v) for v in np.exp(-rng.uniform(0, 700, 40))]
    pow2 = [2.0 ** -int(k) for k in rng.integers(1, 1000, 8)]
    sub = [float(k) * 2.0**-1074 for k in rng.integers(1, 1 << 40, 8)]
    for r0 in normal + pow2 + sub:
        if r0 in pow2:  # the midpoint below a power of two
            mid = mpmath.mpf(r0) - mpmath.mpf(math.ulp(r0)) / 4
        else:
            mid = mpmath.mpf(r0) + mpmath.mpf(math.ulp(r0) if r0 >= 2.0**-1022 else 2.0**-1074) / 2
        for eta in (0.0, 2.0**-75, -(2.0**-75), 2.0**-70, -(2.0**-70), 2.0**-60, -(2.0**-60)):
            y = mpmath.log(mid * (1 + mpmath.mpf(eta)))
            y_hi = float(y)
            y_lo = float(y - y_hi)
            v = mpmath.exp(mpmath.mpf(y_hi) + y_lo)
            # rounded to nearest once: on the subnormal grid below 2^-1022 (float() of
            # an mpf rounds to 53 bits first there: twice)
            tiny = mpmath.mpf(2) ** -1074
            want = float(mpmath.nint(v / tiny) * tiny) if v < 2.0**-1022 else float(v)
            cases.append((y_hi, y_lo, want, eta))
    return cases


def test_float64_softmax_outputs_near_a_midpoint():
    """The float64 softmax writer's step (softmax_out_f64): the fast tier's exp
    (exp_dd_parts, 2^-66) leaves every output within 2^-70 of a rounding midpoint open,
    exp_dd2 (2^-86) decides all but the midpoints themselves, and what either proves is
    the correctly rounded value; with the bound taken as 0 (set_bound_scale), the fast
    tier proves wrong bits, so the bound is what keeps them right."""
    import mpmath

    with mpmath.workprec(300):
        cases = _softmax_midpoint_cases(np.random.default_rng(41))
    wrong_unbounded = 0
    for y_hi, y_lo, want, eta in cases:
        e_y = abs(y_hi) * 2.0**-104
        for slow in (False, True):
            r, open_ = _kernel.softmax_out_f64(y_hi, y_lo, e_y, slow)
            if not open_:
                assert r == want, (y_hi, y_lo, eta, slow)
            if abs(eta) <= 2.0**-70 and not slow:
                assert open_, (y_hi, eta)
            if abs(eta) >= 2.0**-75 and slow:
                assert not open_, (y_hi, eta)
        old = _kernel.set_bound_scale(0.0)
        try:
            r, open_ = _kernel.softmax_out_f64(y_hi, y_lo, e_y, False)
        finally:
            _kernel.set_bound_scale(old)
        wrong_unbounded += (not open_) and r != want
    assert len(cases) == 56 * 7
    assert wrong_unbounded > 0, "a bound of 0 went unnoticed"


def test_float64_bounds_hold_and_the_slow_path_decides():
    """bound_f64 (the fast path: double-double sum, log1p_dd2) and exact_l_f64 hold
    L within their bounds on random rows; exp_term's error, measured, is within the
    2^-66 taken for it; pairs near a float64 midpoint of the maximum's output take the
    slow path, and come out as the oracle's."""
    import mpmath

    with mpmath.workprec(200):
        rng = np.random.default_rng(23)
        worst = 0.0
        # d anywhere down to -746 (the sums' terms stop at -745.5, softmax's float64
        # outputs at -746), and d with r = d - k ln2/64 at the ends of its range
        ends = -(rng.integers(0, 64 * 746 // 45, 1500) + 0.5) * (math.log(2) / 64)
        for d in np.concatenate([-rng.uniform(0, 746, 1500), ends * (1 + 1e-12)]):
            d = float(d)
            dl = float(rng.uniform(-1, 1)) * math.ulp(d) / 2
            h, lo, K = _kernel.exp_dd(float(d), dl)
            e = mpmath.exp(mpmath.mpf(float(d)) + dl)
            got = (mpmath.mpf(h) + lo) * mpmath.mpf(2) ** K
            worst = max(worst, float(abs((got - e) / e)))
        assert worst < 2.0**-66.5, math.log2(worst)  # rounding.h's EXP_DD_REL: 2^-66
        for trial in range(40):
            n = int(rng.integers(2, 300))
            row = rng.normal(size=n) * float(rng.choice([0.1, 3.0, 40.0]))
            m = float(row.max())
            T = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - m) for v in row) - 1
            L = mpmath.log1p(T)
            th, tl, k = _kernel.partial(row, m)
            hi = th + (k - 1)
            fast = _kernel.bound_f64(hi, (th - (hi - (k - 1))) + tl, n)
            assert abs(mpmath.mpf(fast[0]) + fast[1] - L) <= fast[2], trial
            slow = _kernel.exact_l_f64(row, m)
            assert abs(mpmath.mpf(slow[0]) + slow[1] - L) <= slow[2], trial
            assert slow[2] < 2.0**-85 * float(L)
    # long rows, L up to 14: the fast bound holds against the accurate L, and does not
    # grow with L (T's error reaches L as rel_T T / (1 + T), under rel_T; it was taken
    # as rel_T L, 2^-62 at L = 14)
    for n, sd in ((1_000, 1.0), (50_000, 0.1), (1_000_000, 1.0)):
        row = np.random.default_rng(n).normal(size=n) * sd
        m = float(row.max())
        th, tl, k = _kernel.partial(row, m)
        hi = th + (k - 1)
        fast = _kernel.bound_f64(hi, (th - (hi - (k - 1))) + tl, n)
        slow = _kernel.exact_l_f64(row, m)
        gap = abs(mpmath.mpf(fast[0]) + fast[1] - (mpmath.mpf(slow[0]) + slow[1]))
        assert gap <= fast[2] - slow[2], (n, float(gap), fast[2])
        assert fast[2] < 2.0**-65, (n, fast[0], fast[2])
    # HARD_F64 (near a midpoint: the fast path's test leaves them open), random pairs
    v = np.concatenate([HARD_F64, -np.random.default_rng(29).uniform(0, 40, 4000)])
    x = _pairs(v)
    _kernel.stats(True)
    got = impl.log_softmax(x, axis=1)
    stats = _kernel.stats()["float64"]
    assert stats["slow_rows"] > 0 and stats["undecided"] == 0, stats
    _assert_bits(got, reference.log_softmax(x, axis=1), "pairs")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vector_and_portable_writes_agree_bit_for_bit(dtype):
    """The AVX-512 and AVX2 writes (a cheaper test first, the full one for the groups
    it leaves) and the portable loop give the same bits and the same count of
    undecided outputs, to nearest and to odd, on rows whose outputs sit on midpoints
    often (logits on a grid of 1/64) and on rows of random logits, under the fast
    path's bound."""
    paths = _kernel.paths()
    if len(paths) < 2:
        pytest.skip("this CPU has no vector path (AVX2 and FMA)")
    before = _kernel.use(paths[0])
    rng = np.random.default_rng(41)
    undecided = 0
    try:
        for trial in range(200):
            n = int(rng.integers(1, 400))
            x = rng.normal(size=n) * float(rng.choice([0.01, 1.0, 5.0, 30.0, 300.0]))
            if trial % 3 == 0:
                x = np.round(x * 64) / 64
            x = x.astype(dtype)
            m = float(x.max())
            th, tl, k = _kernel.partial(x, m)
            if dtype == "float64":
                L = _kernel.bound_f64(th + (k - 1), tl, n)
                odds = [0]
            else:
                L = _kernel.bound_f32(th + (k - 1), n)
                odds = [0, 1]
            for odd in odds:
                got = []
                for path in paths:
                    _kernel.use(path)
                    out = np.empty_like(x)
                    u = _kernel.write(x, out, m, L[0], L[1], odd, L[2])
                    got.append((_bits(out).tobytes(), u))
                assert all(g == got[-1] for g in got), (trial, odd)
                undecided += got[0][1]
    finally:
        _kernel.use(before)
    assert undecided > 0  # the undecided outputs were exercised too


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_long_rows_slow_path_in_segments_on_the_threads(dtype):
    """One row of 65,536 entries (a pair near a rounding boundary among masked ones),
    cut into segments shared by the threads: its slow path runs in the segments too
    (the middle path's sums for float32, the accurate ones for float64), and the
    outputs are the oracle's, bit for bit, on 1, 2 and 3 threads (1: the whole row on
    one thread, the other code path)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1 << 16).astype(dtype)
    # a pair on a rounding boundary among masked entries (random float64 logits rarely
    # send a row to the slow path since exp_term's 2^-66)
    x[:] = -np.inf
    if dtype == "float32":
        x[0], x[1000] = 0.0, np.array([0x39EA41D0], np.uint32).view(np.float32)[0]
    else:
        x[0], x[40000] = 0.0, -1.631472862690675
    want = reference.log_softmax(x)
    old = impl.get_num_threads()
    try:
        for threads in (1, 2, 3):
            impl.set_num_threads(threads)
            _kernel.stats(True)
            got = impl.log_softmax(x)
            stats = _kernel.stats()[dtype]
            _assert_bits(got, want, f"{dtype}, {threads} threads")
            assert stats["slow_rows"] == 1 and stats["undecided"] == 0, stats
    finally:
        impl.set_num_threads(old)


def _exact_round_f32(x: float, m: float, hi: float, lo: float) -> float:
    """(x - m) - (hi + lo), computed exactly and rounded once to float32 (to nearest,
    ties to even): Fraction arithmetic, then NumPy's conversion of the exact double
    pair (the rounding of a rational to float32 by hand)."""
    from fractions import Fraction

    y = Fraction(x) - Fraction(m) - Fraction(hi) - Fraction(lo)
    f = np.float32(float(y))  # float(y) rounds once to double: fix any double rounding
    for cand in (f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))):
        c = Fraction(float(cand))
        if abs(y - c) < abs(y - Fraction(float(f))) or (
            abs(y - c) == abs(y - Fraction(float(f))) and int(_bits(np.array([cand]))[0]) % 2 == 0
        ):
            f = cand
    return float(f)


@pytest.mark.parametrize("path", ["avx512", "avx2", "scalar"])
def test_every_output_the_write_settles_is_the_exact_rounding(path):
    """With L given exactly (hi + lo, delta 2^-80), every output the float32 write
    does not count as undecided is (x - m) - L rounded once, checked with Fractions:
    on entries placed within 2^-20 to 2^-60 ULP of a rounding midpoint (either side),
    exactly on one, on powers of two (where the grid halves), near the subnormals and
    near the overflow, and random ones. Each entry is written as a vector of 32 copies,
    so that the vector loops' lanes (filter_f32: 16 on AVX-512, 8 on AVX2) see it,
    not only the tails."""
    try:
        before = _kernel.use(path)
    except ValueError:
        pytest.skip(f"this CPU has no {path} path")
    from fractions import Fraction

    rng = np.random.default_rng(97)
    settled = undecided = 0
    try:
        for trial in range(1500):
            kind = trial % 6
            scale = rng.choice([0.0, 1.0, -3.5, 17.25, 1e-30, 1.5e38, -1e20])
            m = float(np.float32(scale * rng.uniform(0.5, 2)))
            if kind == 4:  # outputs near the subnormals: x = m, L tiny
                x = m
            else:
                x = float(np.float32(m - abs(rng.normal()) * 10.0 ** rng.integers(-6, 6)))
            # a target output r, and the midpoint next to it
            if kind == 3:
                r = -float(2.0 ** int(rng.integers(-20, 20)))
            elif kind == 4:
                r = -float(np.float32(2.0 ** -float(rng.integers(100, 149))))
            else:
                r = float(np.float32(x - m - abs(rng.normal()) * 3))
            r32 = np.float32(r)
            side = np.float32(-np.inf) if rng.random() < 0.5 else np.float32(np.inf)
            nb = np.nextafter(r32, side)
            mid = (Fraction(float(r32)) + Fraction(float(nb))) / 2
            away = float(rng.choice([-1, 1]) * 2.0 ** -float(rng.integers(20, 60)))
            eps = Fraction(0) if kind == 5 else Fraction(away)
            target = mid + eps * abs(Fraction(float(nb)) - Fraction(float(r32)))
            if kind == 2:
                target = Fraction(float(r32)) * Fraction(1 + rng.uniform(-1e-7, 1e-7))
            Lx = Fraction(x) - Fraction(m) - target
            if Lx <= 0 or not np.isfinite(float(Lx)):
                continue
            hi = float(Lx)
            lo = float(Lx - Fraction(hi))
            xs = np.full(32, x, np.float32)
            out = np.empty_like(xs)
            u = _kernel.write(xs, out, m, hi, lo, 0, 2.0**-80)
            assert u in (0, 32), (trial, u)
            if u:
                undecided += 1
                continue
            settled += 1
            want = _exact_round_f32(x, m, hi, lo)
            assert np.all(_bits(out) == _bits(np.full(32, want, np.float32))), (
                trial,
                x,
                m,
                hi,
                lo,
                out[0],
                want,
            )
    finally:
        _kernel.use(before)
    assert settled > 500 and undecided > 0, (settled, undecided)


# ---- the generic algorithm (array-api-strict, the GPU paths run on the CPU) ----

# (backend, dtypes): array-api-strict's float32 (computed in float64); the GPU paths
# of torch and JAX (impl/tests/device_paths.py), with x64 and without (bfloat16 and
# float16 then in float32)
GENERIC = [pytest.param(n, d, id=n, marks=[pytest.mark.extended] if n.endswith("nox64") else [])
           for n, d in (("array_api_strict:cpu", ("float32",)),
                        ("torch:cpu", ("float16", "bfloat16", "float32")),
                        ("jax:cpu:jit", ("float16", "bfloat16", "float32")),
                        ("jax:cpu:jit:nox64", ("float16", "bfloat16")))]  # fmt: skip


def _generic_run(name: str, x: np.ndarray, axis: Any = -1) -> np.ndarray:
    from . import device_paths

    b = next(b for b in BACKENDS if b.name == name)
    _available(b)
    return np.asarray(b.run(device_paths.log_softmax, x, axis=axis))


@pytest.mark.parametrize(("name", "dtypes"), GENERIC)
def test_the_generic_algorithm_is_correctly_rounded(name, dtypes):
    """Narrow formats on the generic algorithm: the precise core in the working
    format, the rounding test against the narrow format's boundaries, the host's
    kernels for what it leaves open. Bits against the oracle: the reproducers of
    double rounding, the adversarial rows, and every float16 and bfloat16 pair."""
    for dtype in dtypes:
        f = reference.FORMATS[dtype]
        for rdtype, row in REPRODUCERS:
            if rdtype == dtype:
                x = np.array([row, row[::-1]], dtype=f.dtype)
                _assert_bits(_generic_run(name, x), reference.log_softmax(x, axis=-1), f"{row}")
        x = _adversarial_rows(np.random.default_rng(11), dtype)
        _assert_bits(_generic_run(name, x), reference.log_softmax(x, axis=-1), "adversarial")
        if dtype in ("float16", "bfloat16"):
            v = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(f.dtype)
            got = _generic_run(name, _pairs(v))
            _assert_bits(got, reference.log_softmax_pairs(v), f"{dtype} pairs")
        else:
            v = np.concatenate([HARD_F32, np.random.default_rng(3).standard_normal(2000)])
            v = v.astype(np.float32)
            got = _generic_run(name, _pairs(v))
            _assert_bits(got, reference.log_softmax_pairs(v), "float32 pairs")


# the generic paths with float64 (the working format itself: the precise core in
# double-words, its rounding test against float64's own boundaries)
GENERIC64 = ["array_api_strict:cpu", "torch:cpu", "jax:cpu:jit"]


# (JAX's: 7 s of compiling, the extended tier; the host's fix of its float64 is held
# in the default tier by test_the_host_decides_what_the_generic_test_leaves_open)
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.extended] if "jax" in n else []) for n in GENERIC64],
)
def test_the_generic_algorithm_is_correctly_rounded_in_float64(name):
    """float64 on the generic algorithm: rows at every scale, the hardest known
    float64 pairs, and 64 rows of 1,024 normal logits, whose outputs within the
    precise core's 2^-74 of a rounding boundary the host decides. Before the test
    existed the precise core's result was taken as it was, and 1 of these outputs in
    about 3,000 was one ULP off."""
    rng = np.random.default_rng(29)
    for what, x in (
        ("rows", _float64_rows(rng, 210, 6)),
        ("pairs", _pairs(np.array(HARD_F64))),
        ("normal", rng.standard_normal((64, 1024)) * rng.choice([1.0, 5.0], (64, 1))),
    ):
        _assert_bits(_generic_run(name, x), reference.log_softmax(x, axis=-1), what)


@pytest.mark.parametrize(("name", "dtypes"), GENERIC)
def test_the_host_decides_what_the_generic_test_leaves_open(name, dtypes, monkeypatch):
    """With the generic algorithm's bound scaled up by 2^60 the test leaves every
    output open, and the host's kernels decide them: still bit for bit the oracle,
    and the fix ran."""
    from impl import _generic, _host, _jax

    def clear() -> None:  # the scale is traced into JAX's programs, outer ones too
        _jax._compiled.cache_clear()
        if "jax" in name:
            import jax

            jax.clear_caches()  # type: ignore[no-untyped-call]

    monkeypatch.setattr(_generic, "_err_scale", 2.0**60)
    clear()
    try:
        for dtype in (*dtypes, *(("float64",) if name in GENERIC64 else ())):
            x = _adversarial_rows(np.random.default_rng(12), dtype)
            before = _host.fixes
            got = _generic_run(name, x)
            _assert_bits(got, reference.log_softmax(x, axis=-1), dtype)
            assert _host.fixes > before, "the fix never ran"
            # a 0-d input keeps its shape through the host (it came back 1-d on torch)
            x0 = np.asarray(1.5, dtype=reference.FORMATS[dtype].dtype)
            got = _generic_run(name, x0, axis=None)
            assert got.shape == (), (dtype, got.shape)
            _assert_bits(got, reference.log_softmax(x0, axis=None), f"{dtype} 0-d")
    finally:
        monkeypatch.undo()
        clear()


def test_the_generic_rounding_test_tells_open_from_settled():
    """rounding_open on values placed by hand, float32 outputs from float64 (u: the
    ulp above 1): a value within the bound of a midpoint is open; one farther is
    settled; at a power of two the gap on the value's side counts;
    beyond the overflow threshold -inf is settled only where the bound keeps it
    there; in the subnormal range the subnormal spacing counts."""
    from impl._generic import _overflow_threshold, rounding_open

    u = 2.0**-23
    cases = [  # (v, err, open)
        (-(1 + 2.5 * u), 2.0**-50, True),  # on a midpoint
        (-(1 + 2.5 * u) - 2.0**-60, 2.0**-50, True),  # within the bound of one
        (-(1 + 2.25 * u), 2.0**-50, False),  # a quarter ulp from both
        (-1.0 - 0.26 * u, 2.0**-50, False),  # r = -1, outward: the gap above 1 counts
        (-1.0 - 0.5 * u, 2.0**-50, True),  # the midpoint above 1
        (-1.0 + 0.24 * u, 2.0**-50, False),  # r = -1, within the gap below's half
        (-1.0 + 0.25 * u, 2.0**-50, True),  # the midpoint below 1
        (-3.5e38, 2.0**-50, False),  # -inf, well beyond the threshold
        (-_overflow_threshold(np.float32), 2.0**-50, True),  # -inf, at the threshold
        (-1e-45, 2.0**-200, False),  # the smallest subnormal: 0.4e-45 from it
        (-1e-45, 2.0**-149, True),  # the same, with a bound past the midpoint
        (0.0, 2.0**-200, False),
    ]
    v = np.array([c[0] for c in cases])
    with np.errstate(over="ignore"):
        r = v.astype(np.float32)
    err = np.array([c[1] for c in cases])
    thr = _overflow_threshold(np.float32)
    got, take = rounding_open(np, v, np.zeros_like(v), v, r, err, np.float32, thr)
    assert got.tolist() == [c[2] for c in cases]
    assert not take.any()  # no low part: nothing lies past a midpoint
    # on a midpoint with a low part across it, either way: toward r (ties to even:
    # -(1 + 2u)), r is proven; away, the other neighbour is taken; a bound wider than
    # the low part leaves it open
    mid = np.full(3, -(1 + 2.5 * u))
    lo = np.array([2.0**-70, -(2.0**-70), 2.0**-70])
    bound = np.array([2.0**-80, 2.0**-80, 2.0**-60])
    got, take = rounding_open(np, mid, lo, mid, mid.astype(np.float32), bound, np.float32, thr)
    assert got.tolist() == [False, True, True] and take.tolist() == [False, True, False]
    # float64 outputs of the float64 core (r = hi + lo rounded to float64 itself), just
    # below a power of two: log2 |r| rounds up to the power's exponent there, and the
    # gap is the one above r (a quarter of it is settled; within the bound of its
    # midpoint is open); a lo that outweighs one ulp of hi and points back is
    # measured as |a + lo| (a quarter of the gap from r: settled; on the midpoint: open)
    below2 = -(2 - 2.0**-52)
    hi = np.array([below2, below2, -1.0, -1.0])
    lo = np.array([-0.25 * 2.0**-52, -(2.0**-53 - 2.0**-60), -1.25 * 2.0**-52, -1.5 * 2.0**-52])
    err = np.array([2.0**-80, 2.0**-58, 2.0**-80, 2.0**-80])
    r = hi + lo
    top = float(np.finfo(np.float64).max)
    got, take = rounding_open(np, hi, lo, r, r, err, np.float64, top)
    assert got.tolist() == [False, True, False, True] and not take.any()


def test_the_generic_cores_parts_hold_their_bounds():
    """exp_parts and log1p_dw in float64 against mpmath, within what ERR_REL in
    impl/_generic.py takes for them (2^-74 against measured 2^-88.0 and 2^-76.7)"""
    import mpmath

    from impl._dfloat import exp_parts, fmt, log1p_dw

    f = fmt("float64")
    rng = np.random.default_rng(1)
    dh = np.concatenate([-rng.uniform(0, 700, 600),
                         -(rng.integers(0, 10**6, 600) + 0.5) * math.log(2) / 1024])  # fmt: skip
    dl = rng.uniform(-1, 1, dh.size) * np.spacing(np.abs(dh)) / 2
    hi, lo, q = exp_parts(np, dh, dl, f)
    T = np.concatenate(
        [2.0 ** rng.uniform(-40, 50, 600), 2.0**-12 * (1 + rng.uniform(-0.01, 0.01, 300))]
    )
    tl = rng.uniform(-1, 1, T.size) * np.spacing(T) / 2
    h, L = log1p_dw(np, T, tl, f)
    with mpmath.workprec(200):
        e_worst = max(
            abs(
                (mpmath.mpf(hi[i]) + lo[i])
                * mpmath.mpf(2) ** int(q[i])
                / mpmath.exp(mpmath.mpf(dh[i]) + dl[i])
                - 1
            )
            for i in range(dh.size)
        )
        l_worst = max(
            abs((mpmath.mpf(h[i]) + L[i]) / mpmath.log1p(mpmath.mpf(T[i]) + tl[i]) - 1)
            for i in range(T.size)
        )
    assert e_worst < 2.0**-85 and l_worst < 2.0**-75.5, (math.log2(e_worst), math.log2(l_worst))


def test_the_namespaces_exp_and_log1p_are_within_the_ulps_taken():
    """The generic algorithm's bound for narrow formats takes the namespace's float64
    exp and log1p within LIBM_ULP (4) of float64's ULP: NumPy's, torch's and XLA's
    here, measured against mpmath on arguments across their range (exp's down to
    -700, log1p's from 2^-60 to 2^50), stay within half of it."""
    import mpmath

    from impl._generic import LIBM_ULP

    rng = np.random.default_rng(8)
    d = np.concatenate([-rng.uniform(0, 700, 400), -rng.uniform(0, 1, 200)])
    t = 2.0 ** rng.uniform(-60, 50, 400)
    fns: dict[str, Any] = {"numpy": (np.exp, np.log1p)}
    torch = pytest.importorskip("torch")
    fns["torch"] = (lambda a: torch.exp(torch.from_numpy(a)).numpy(),
                    lambda a: torch.log1p(torch.from_numpy(a)).numpy())  # fmt: skip
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        import jax.numpy as jnp

        fns["jax"] = (lambda a: np.asarray(jax.jit(jnp.exp)(jnp.asarray(a))),
                      lambda a: np.asarray(jax.jit(jnp.log1p)(jnp.asarray(a))))  # fmt: skip
        worst = {}
        with mpmath.workprec(120):
            for lib, (exp, log1p) in fns.items():
                for name, f, ref, args in (
                    ("exp", exp, mpmath.exp, d),
                    ("log1p", log1p, mpmath.log1p, t),
                ):
                    got = f(args)
                    ulps = [float(abs(mpmath.mpf(g) - ref(mpmath.mpf(a))) / np.spacing(abs(g)))
                            for g, a in zip(got.tolist(), args.tolist(), strict=True)]  # fmt: skip
                    worst[f"{lib} {name}"] = max(ulps)
    assert max(worst.values()) <= LIBM_ULP / 2, worst
