"""The compiled kernels of the NumPy path: their constants against mpmath, their exp
and log1p against mpmath, the AVX2 and portable code paths bit for bit, the
segmented and Dask paths against the row kernel, and the pure-NumPy fallback used
where the kernels were not built."""

from __future__ import annotations

import math
import os
import sys

import mpmath
import numpy as np
import pytest

import impl
import reference
from impl import _numpy
from reference import FORMATS
from reference.tests._corpus import rows

K = pytest.importorskip("impl._kernel", reason="impl was built without its C kernels")


def _rel(got: mpmath.mpf, want: mpmath.mpf) -> float:
    return float(abs(got - want) / abs(want))


def _significant_bits(v: float) -> int:
    mant = int(math.frexp(v)[0] * 2**53)
    return 53 - ((mant & -mant).bit_length() - 1)


def test_constants_match_mpmath():
    c = K.constants()
    with mpmath.workprec(300):
        ln2 = mpmath.log(2)
        assert abs(sum(mpmath.mpf(v) for v in c["ln2_64"]) - ln2 / 64) < mpmath.mpf(2) ** -150
        assert abs(sum(mpmath.mpf(v) for v in c["ln2_4"]) - ln2 / 4) < mpmath.mpf(2) ** -95
        # the high parts have few significant bits: k * hi is exact for the k that occur
        assert _significant_bits(c["ln2_64"][0]) <= 32
        assert _significant_bits(c["ln2_4"][0]) <= 40
        assert c["inv_ln2_64"] == float(64 / ln2) and c["inv_ln2_4"] == float(4 / ln2)
        for j, (hi, lo) in enumerate(c["exp2_j64"]):
            exact = mpmath.power(2, mpmath.mpf(j) / 64)
            assert hi == float(exact) and abs(mpmath.mpf(hi) + lo - exact) < exact * 2.0**-105
        for j, v in enumerate(c["exp2_j4"]):
            assert v == float(mpmath.power(2, mpmath.mpf(j) / 4))


def test_exp_dd_is_good_to_2_pow_minus_60():
    rng = np.random.default_rng(1)
    args = np.concatenate([rng.uniform(-746, 0, 400), rng.uniform(-1, 1, 100), [0.0, -745.0]])
    worst = 0.0
    with mpmath.workprec(200):
        for h in args:
            lo = float(h) * 2.0**-54 * rng.uniform(-1, 1)
            eh, el, k = K.exp_dd(float(h), lo)
            got = (mpmath.mpf(eh) + mpmath.mpf(el)) * mpmath.mpf(2) ** k
            worst = max(worst, _rel(got, mpmath.exp(mpmath.mpf(float(h)) + mpmath.mpf(lo))))
    assert worst < 2.0**-60, worst


def test_exp_short_is_good_to_2_pow_minus_36():
    """float32 results need T to about 2**-34 relative for 0.501 ULP; the degree-6
    polynomial on |r| <= ln2/8 gives 2**-37 (its Taylor remainder)."""
    worst = 0.0
    with mpmath.workprec(120):
        for d in np.concatenate([np.linspace(-700, 0, 701), -np.logspace(-12, 2.8, 300)]):
            worst = max(worst, _rel(mpmath.mpf(K.exp_short(float(d))), mpmath.exp(float(d))))
    assert worst < 2.0**-36, worst


def test_log1p_dd_is_good_to_2_pow_minus_58():
    rng = np.random.default_rng(2)
    worst = 0.0
    with mpmath.workprec(200):
        for t in np.concatenate([10.0 ** rng.uniform(-300, 7, 300), [0.0, 1e-30, 2**-30, 1.0]]):
            tl = float(t) * 2.0**-55
            lh, ll = K.log1p_dd(float(t), tl)
            want = mpmath.log1p(mpmath.mpf(float(t)) + mpmath.mpf(tl))
            if want:
                worst = max(worst, _rel(mpmath.mpf(lh) + mpmath.mpf(ll), want))
            else:
                assert lh == 0.0 and ll == 0.0
    assert worst < 2.0**-58, worst


def _vector_paths() -> tuple[str, ...]:
    """The vector code paths this CPU runs (AVX-512, AVX2), the widest first"""
    return tuple(p for p in K.paths() if p != "scalar")


def test_the_builds_depends_are_the_headers_kernel_c_includes():
    """pyproject's depends rebuild the extension when a piece changes: every header
    _kernel.c includes, itself or through another header, is listed, and nothing else"""
    import pathlib
    import re
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():  # impl copied out (.ci/sanitize.sh)
        pytest.skip("not run from a source checkout")
    ext = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    depends = set(ext["ext-modules"][0]["depends"])
    source = (root / "impl" / "_kernel.c").read_text()
    included = {f"impl/{h}" for h in re.findall(r'#include "(csrc/[^"]+)"', source)}
    for h in sorted(included):  # a header's own includes lie beside it in csrc/
        text = (root / h).read_text()
        included |= {f"impl/csrc/{i}" for i in re.findall(r'#include "([^"/]+)"', text)}
    on_disk = {f"impl/csrc/{p.name}" for p in (root / "impl" / "csrc").glob("*.h")}
    assert depends == included == on_disk


def test_paths_the_widest_first_and_chosen_at_import():
    paths = K.paths()
    assert paths[-1] == "scalar"
    assert list(paths) == [p for p in ("avx512", "avx2", "scalar") if p in paths]
    prev = K.use(paths[0])
    try:
        assert prev == paths[0]  # the widest, unless LOG_SOFTMAX_KERNELS said otherwise
        assert K.use("scalar") == paths[0]
        with pytest.raises(ValueError, match="no code path 'sse9' on this machine"):
            K.use("sse9")
        assert K.use(paths[0]) == "scalar"  # a refused name changed nothing
    finally:
        K.use(prev)


@pytest.mark.parametrize("name", ["scalar", "avx2", "nonsense"])
def test_the_kernels_path_from_the_environment(name):
    """LOG_SOFTMAX_KERNELS picks the path at import; a name this machine does not run
    fails the import with a ValueError naming the paths (not an ImportError, which
    impl would take for a build without the kernels and fall back silently)"""
    import subprocess
    import sys

    code = "import impl._kernel as K; print(K.use('scalar'))"
    env = {**os.environ, "LOG_SOFTMAX_KERNELS": name}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if name in K.paths():
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == name
    else:
        assert proc.returncode != 0
        assert "ValueError: LOG_SOFTMAX_KERNELS=" in proc.stderr
        assert "the paths are avx512, avx2 and scalar" in proc.stderr


@pytest.mark.skipif(not _vector_paths(), reason="this CPU has no AVX2 and FMA")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vector_and_portable_paths_agree_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(n).astype(dtype) * s for n, s in ((1, 1), (7, 3), (1003, 30))]
    xs += [rng.standard_normal(n).astype(dtype) * 5 for n in (8, 31, 32, 33, 65, 4099)]
    x = rng.standard_normal(517).astype(dtype)
    x[::5] = x.max()  # ties
    xs.append(x)
    xs.append(np.concatenate([[0.0], rng.uniform(-800, -700, 299)]).astype(dtype))
    # terms dropped below e^-745.5 next to ordinary ones (float64: the c = 0 fast loop)
    xs.append(np.concatenate([[0.0], rng.uniform(-20, 0, 101), np.full(50, -1e4)]).astype(dtype))
    x = rng.standard_normal(1001).astype(dtype)
    x[::7] = -np.inf  # masked logits
    xs.append(x)
    prev = K.use("scalar")
    try:
        for x in xs:
            m = float(x.max())
            shifts = [0.0, -700.0] if dtype == "float64" else [0.0]
            for c in shifts:
                K.use("scalar")
                s = K.partial(x, m, c)
                for path in _vector_paths():
                    K.use(path)
                    a = K.partial(x, m, c)
                    assert a == s, (path, x.size, c, a, s)
        for x in xs:  # whole rows: the maxima and the writes too
            K.use("scalar")
            want = impl.log_softmax(x)
            for path in _vector_paths():
                K.use(path)
                np.testing.assert_array_equal(impl.log_softmax(x), want, err_msg=path)
    finally:
        K.use(prev)


@pytest.mark.skipif(len(_vector_paths()) < 2, reason="this CPU has no AVX-512")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_slow_paths_sums_agree_on_the_vector_paths(dtype):
    """The slow path's L (exact_l_f32, exact_l_f64): the AVX-512 sums compute eight
    terms a step and add them to the AVX2 path's four lanes in its order, so the same
    (hi, lo, delta) on every length (the steps of eight, the step of four left over,
    the portable tail), with ties, masked entries and terms below the normal range.
    (The portable sum runs in one lane: its L differs in the last bits of lo, within
    the same bound.)"""
    rng = np.random.default_rng(8)
    exact_l = K.exact_l_f64 if dtype == "float64" else K.exact_l_f32
    xs = [rng.standard_normal(n).astype(dtype) * 3 for n in range(1, 41)]
    xs += [(rng.standard_normal(n) * s).astype(dtype) for n, s in ((1001, 40), (4099, 1))]
    x = rng.standard_normal(517).astype(dtype)
    x[::5] = x.max()
    x[1::7] = -np.inf
    xs.append(x)
    xs.append(np.concatenate([[0.0], rng.uniform(-750, -700, 299)]).astype(dtype))
    prev = K.use("scalar")
    try:
        for x in xs:
            got = {}
            for path in _vector_paths():
                K.use(path)
                got[path] = exact_l(x, float(x.max()))
            assert len(set(got.values())) == 1, (x.size, got)
    finally:
        K.use(prev)


def _round_to_odd(x: np.ndarray, m: float, L: float) -> np.ndarray:
    """(x - m) - L, exactly, rounded to odd in float32: the float32 itself where it is
    one, else the one of its two float32 neighbours with an odd last bit; infinities
    from 2^128 - 2^103 on, as the plain conversion gives them."""
    from fractions import Fraction

    out = np.empty(x.shape, np.float32)
    big = Fraction(2**128 - 2**103)
    for i, xi in enumerate(x.astype(np.float64)):
        q = Fraction(float(xi)) - Fraction(m) - Fraction(L)
        if q == 0:  # an exact zero takes IEEE's sign, as the subtractions give it
            out[i] = np.float32((xi - m) - L)
            continue
        if abs(q) >= big:
            out[i] = np.float32(np.inf) if q > 0 else np.float32(-np.inf)
            continue
        with np.errstate(over="ignore"):
            f = np.float32(float(q))
        if not np.isfinite(f):
            f = np.float32(np.copysign(np.finfo(np.float32).max, float(q)))
        if Fraction(float(f)) == q:
            out[i] = f
            continue
        g = np.nextafter(f, np.float32(np.inf if Fraction(float(f)) < q else -np.inf))
        out[i] = f if f.view(np.int32) & 1 else g
    return out


@pytest.mark.parametrize("path", ["avx512", "avx2", "scalar"])
def test_writes_rounded_to_odd(path):
    """odd=1 (float32 in and out): (x - m) - L, exactly (L exact: delta = 0), rounded
    to odd, on both code paths, over every binade of float32, subnormal results, zero,
    overflow and specials. (Rounding the float64 difference to odd instead, as the
    kernels did, rounds twice: 1.5 - 1e-300 gave 1.5.)"""
    if path not in K.paths():
        pytest.skip(f"this CPU has no {path} path")
    rng = np.random.default_rng(12)
    xs = [
        (rng.standard_normal(1003) * 30).astype(np.float32),
        (rng.uniform(-1, 1, 4001) * 2.0 ** rng.integers(-149, 128, 4001)).astype(np.float32),
        np.array([3.4e38, -3.4e38, 1e-30, 0, -0.0, 1.5, 1e-45, 1.1754942e-38], np.float32),
    ]
    cases = [(0.0, 0.0), (1.0, 2.0**-30), (-3.4e38, 1e38), (0.0, 1e-300), (2.5, 0.1)]
    prev = K.use(path)
    try:
        for x in xs:
            for m, L in cases:
                got = np.empty_like(x)
                K.write(x, got, m, L, 0.0, 1)
                m32 = float(np.float32(m))  # the kernels take m in x's format
                want = _round_to_odd(x, m32, L)
                np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
        x = np.array([np.inf, -np.inf, np.nan, 1.0], np.float32)  # as the conversion gives
        got = np.empty_like(x)
        K.write(x, got, 0.0, 0.0, 0.0, 1)
        np.testing.assert_array_equal(got[:2], x[:2])
        assert np.isnan(got[2]) and got[3] == 1.0
        with pytest.raises(ValueError, match="odd=1 needs float32"):
            K.write(x, np.empty(4), 0.0, 0.0, 0.0, 1)
    finally:
        K.use(prev)


@pytest.mark.skipif(not _vector_paths(), reason="this CPU has no AVX2 and FMA")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_outputs_streamed_give_the_same_bits(dtype):
    """Outputs of 4 MB and more per thread are written with non-temporal stores on the
    vector paths: the same bits as the portable writes, an unaligned output included,
    rows shared or one long row's passes split between two threads."""
    rng = np.random.default_rng(9)
    n = 1_300_003 if dtype == "float64" else 2_600_003
    long_row = (rng.standard_normal((1, n)) * 20).astype(dtype)
    rows = (rng.standard_normal((3, n // 2)) * 20).astype(dtype)
    prev = K.use("scalar")
    try:
        for x, threads in ((long_row, 2), (rows, 1), (rows, 2)):
            got = {}
            for path in K.paths():
                K.use(path)
                buf = np.empty(x.size + 1, dtype)
                out = buf[1:].reshape(x.shape)  # not 32-byte aligned
                assert K.rows(x, out, x.shape[1], threads) == 0
                got[path] = out
            for path in _vector_paths():
                np.testing.assert_array_equal(got[path], got["scalar"])
    finally:
        K.use(prev)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_threads_give_the_same_bits(dtype):
    """threads=2 shares blocks of rows, or the segments of each pass of one long row,
    with a second thread: a row count that is no multiple of the block, a segment of
    -inf only, and rows the kernels leave to the caller, the same as on one thread."""
    rng = np.random.default_rng(8)
    one_long = rng.standard_normal((1, 70001)) * 20
    one_long[0, 5] = -np.inf
    inf_tail = one_long.copy()
    inf_tail[0, 60000:] = -np.inf  # its last segments hold -inf only
    nan_tail = one_long.copy()
    nan_tail[0, -3] = np.nan
    tiny = np.concatenate([[0.0], -720.0 - rng.random(40000) * 30])[None, :]
    many = rng.standard_normal((1001, 37)) * 20
    many[[3, 500, 1000], [0, 7, 36]] = [np.nan, np.inf, np.nan]
    cases = [
        (rng.standard_normal((64, 1000)) * 20, 0),
        (one_long, 0),
        (inf_tail, 0),
        (nan_tail, 1),
        (tiny, 0),
        (one_long[:, :100], 0),
        (many, 3),
    ]
    for x, skipped in cases:
        x = x.astype(dtype)
        a, b = np.zeros_like(x), np.zeros_like(x)
        assert K.rows(x, a, x.shape[1], 2) == K.rows(x, b, x.shape[1], 1) == skipped
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_passes_read_blocks_in_place(dtype):
    """partial_rows and write_rows read a block of a larger array in place (rows a
    stride apart), with the same bits as its contiguous copy. partial_rows takes each
    row's maximum on the same visit, and for a row with a NaN, a +inf or -inf only,
    its counts and NumPy's maximum instead of a sum; write_rows gives the special
    values of the slices that have them."""
    rng = np.random.default_rng(11)
    big = (rng.standard_normal((40, 300)) * 20).astype(dtype)
    big[3, 150] = np.nan
    big[5, 120] = np.inf
    big[6, 130:132] = np.inf
    big[7, 100:200] = -np.inf  # the block's part of row 7: -inf only
    big[9, 110] = -np.inf
    block = big[:, 100:200]  # rows of 100, 300 apart
    assert not block.flags.c_contiguous
    copy = np.ascontiguousarray(block)
    got, want = np.empty((40, 10)), np.empty((40, 10))
    K.partial_rows(block, 100, got)
    K.partial_rows(copy, 100, want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 9], copy.max(axis=1).astype(np.float64))
    special = [3, 5, 6, 7]
    assert (got[special, :3] == 0).all()
    assert got[special, 3:5].tolist() == [[0, 1], [1, 0], [2, 0], [0, 0]]
    assert (got[:, 5] == 100).all()  # each slice's entries in the block
    assert (got[:, 6] == -np.inf).all() and (got[:, 7:9] == 0).all()
    for r in (0, 9):  # a sum relative to the row's maximum, as partial() gives it
        hi, lo, k = K.partial(copy[r], float(copy[r].max()))
        assert got[r, :3].tolist() == [hi, lo, k] and got[r, 3:5].tolist() == [0, 0]
    # per slice: L hi, L lo, count of +inf, special answer (1: NaN), m, (not read)
    slices = np.zeros((40, 8))  # combine_rows: 8 values per slice
    slices[:, 0] = np.log1p(np.maximum(got[:, 0] + got[:, 2] - 1, 0))
    slices[:, 4] = got[:, 9]
    slices[special, 2:4] = [[0, 1], [1, 0], [2, 0], [0, 1]]
    a, b = np.empty_like(copy), np.empty_like(copy)
    K.write_rows(block, a, 100, slices)
    K.write_rows(copy, b, 100, slices)
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[[3, 7]]).all() and np.isnan(a[6, 30:32]).all()
    assert a[5, 20] == 0 and (np.delete(a[5], 20) == -np.inf).all()
    assert (np.delete(a[6], [30, 31]) == -np.inf).all() and a[9, 10] == -np.inf
    # answer 2, slices of one entry (combine_rows' where the blocks hold one in all):
    # 0, NaN at a NaN, whatever the entry
    one = slices.copy()
    one[[3, 7, 8], 2:4] = 0, 2
    c = np.empty_like(copy)
    K.write_rows(block, c, 100, one)
    assert np.isnan(c[3, 50]) and (np.delete(c[3], 50) == 0).all() and (c[[7, 8]] == 0).all()
    # any other nonzero answer (not made by combine_rows) reads as NaN, NaN itself too
    one[[7, 8], 3] = 1e300, np.nan
    K.write_rows(block, c, 100, one)
    assert np.isnan(c[[7, 8]]).all()
    wide = np.empty(copy.shape)
    if dtype == "float32":  # float64 output of float32 rows, for the narrow formats:
        K.write_rows(block, wide, 100, slices)  # the float32 rounded to odd, widened
        odd = np.empty_like(copy)
        K.write_rows(block, odd, 100, slices, 1)
        np.testing.assert_array_equal(wide, odd.astype(np.float64))
        differs = odd.view(np.int32) != a.view(np.int32)
        assert (np.abs(odd.view(np.int32) - a.view(np.int32)) <= 1).all()
        assert (odd.view(np.int32)[differs] & 1).all()
    # rows in reverse (a negative stride), as Dask gives for x[::-1]
    back, want_back = np.empty((40, 10)), np.empty((40, 10))
    K.partial_rows(block[::-1], 100, back)
    K.partial_rows(copy[::-1].copy(), 100, want_back)
    np.testing.assert_array_equal(back, want_back)
    c, d = np.empty_like(copy), np.empty_like(copy)
    K.write_rows(block[::-1], c, 100, slices[::-1].copy())
    K.write_rows(copy[::-1].copy(), d, 100, slices[::-1].copy())
    np.testing.assert_array_equal(c, d)
    with pytest.raises(ValueError, match="contiguous rows"):
        K.partial_rows(big[:, ::2], 150, got)
    with pytest.raises(ValueError, match="10 values per row"):
        K.partial_rows(block, 100, got[:, :9].copy())
    with pytest.raises(ValueError, match="8 values per row"):
        K.write_rows(block, a, 100, slices[:, :5].copy())


_LINUX = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="huge pages are advised on Linux only"
)


@_LINUX
@pytest.mark.parametrize(
    "shape, dtype", [((1024, 256), np.float64), ((4097, 256), np.float32), ((3, 2 << 20), np.uint8)]
)
def test_large_outputs_start_on_a_huge_page(shape, dtype):
    """Outputs of 2 MB and more start at a 2 MB boundary (the kernel can back them
    with huge pages whole); smaller ones are plain np.empty."""
    out = _numpy.empty_out(shape, dtype)
    assert out.shape == shape and out.dtype == dtype
    assert out.flags.c_contiguous and out.flags.writeable
    assert out.ctypes.data % (2 << 20) == 0
    small = _numpy.empty_out((shape[0] // 2, shape[1] // 2), dtype)
    assert small.base is None and small.shape == (shape[0] // 2, shape[1] // 2)


@_LINUX
def test_numpy_path_output_on_huge_pages_has_the_kernels_bits():
    x = np.random.default_rng(5).standard_normal((1024, 768)).astype(np.float32)  # 3 MB
    got = impl.log_softmax(x, axis=-1)
    assert got.ctypes.data % (2 << 20) == 0 and got.flags.c_contiguous
    want = np.empty_like(x)
    assert K.rows(x, want, 768, 1) == 0
    np.testing.assert_array_equal(got, want)


def test_kernel_rejects_bad_buffers():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="row length"):
        K.rows(x, np.empty_like(x), 4)
    with pytest.raises(ValueError, match="float64 for float64"):
        K.rows(x.astype(np.float64), np.empty_like(x), 3)
    with pytest.raises(ValueError, match="float32 or float64"):
        K.rows(x.astype(np.int32), np.empty_like(x), 3)
    swapped = x.astype(x.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))
    with pytest.raises(ValueError, match="float32 or float64"):  # not read as numbers
        K.rows(swapped, np.empty_like(x), 3)
    with pytest.raises(ValueError, match="float32 or float64"):
        K.partial_rows(swapped, 3, np.empty((2, 10)))
    # an address that is no multiple of the item size: refused, not loaded from
    raw = np.zeros(8 * 6 + 1, np.uint8)
    with pytest.raises(ValueError, match="aligned"):
        K.rows(raw[1:].view(np.float64).reshape(2, 3), np.empty((2, 3)), 3)
    with pytest.raises(ValueError, match="aligned"):
        K.partial(raw[1:].view(np.float64), 0.0)
    # sizes whose products overflow: refused (found by a sanitizer build, where they
    # read and wrote past the buffers)
    with pytest.raises(ValueError, match="10 values per"):
        K.combine_rows(np.zeros((1, 10)), 2**60 + 1, True, np.empty((1, 8)))
    many = np.lib.stride_tricks.as_strided(x[0, :1], shape=(2**60 + 1, 1), strides=(0, 4))
    with pytest.raises(ValueError, match="10 values per row"):
        K.partial_rows(many, 1, np.empty((1, 10)))
    with pytest.raises(ValueError, match="one entry per entry"):
        K.write_rows(many, np.empty((1, 1), np.float32), 1, np.empty((1, 8)))
    with pytest.raises(ValueError, match="shift"):
        K.partial(x[0], 0.0, -1.0)
    with pytest.raises(ValueError, match="non-negative"):
        K.log1p_dd(-1.0, 0.0)
    with pytest.raises(ValueError, match="10 values per"):
        K.combine_rows(np.zeros((4, 3, 10)), 2, True, np.empty((4, 8)))
    with pytest.raises(ValueError, match="10 values per"):
        K.combine_rows(np.zeros((4, 2, 10), np.float32), 2, True, np.empty((4, 8)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_with_a_special_value_are_left_to_the_caller(dtype):
    """NaN, +inf and all -inf rows are the caller's; -inf next to finite entries
    (masked logits) are the kernels': exp(-inf) = 0 in T, -inf out."""
    ninf = -np.inf
    x = np.array(
        [[0.0, 1.0, 2.0], [np.nan, 1.0, 0.0], [np.inf, 0.0, 0.0], [ninf, ninf, ninf],
         [ninf, 0.0, 1.0], [ninf, 5.0, ninf]],
        dtype=dtype,
    )  # fmt: skip
    out = np.full_like(x, 7.0)
    assert K.rows(x, out, 3) == 3
    assert (out[1:4] == 7.0).all()
    np.testing.assert_array_equal(out[[0, 4, 5]], impl.log_softmax(x[[0, 4, 5]], axis=1))
    assert out[4, 0] == ninf and out[5, 0] == ninf and out[5, 1] == 0.0
    assert reference.ulp_error(out[[0, 4, 5]], x[[0, 4, 5]], axis=1).max() <= 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_at_addresses_is_rows(dtype):
    """rows_at (the small PyTorch calls' entry: memory by address) gives rows()'s bits
    and count of rows left to the caller; a null or misaligned address, or n <= 0, is
    a ValueError, not a crash."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((7, 13)) * 30).astype(dtype)
    x[2, 3], x[5, :] = np.nan, -np.inf
    want, got = np.full_like(x, 7.0), np.full_like(x, 7.0)
    skipped = K.rows(x, want, 13)
    f64 = dtype == "float64"
    assert K.rows_at(x.ctypes.data, got.ctypes.data, 7, 13, f64) == skipped == 2
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    for args in ((0, got.ctypes.data, 7, 13, f64), (x.ctypes.data + 1, got.ctypes.data, 7, 13, f64),
                 (x.ctypes.data, got.ctypes.data, 7, 0, f64)):  # fmt: skip
        with pytest.raises(ValueError, match="rows_at needs"):
            K.rows_at(*args)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_long_rows_in_segments(dtype, monkeypatch):
    """Slices longer than a block: float16 in three segmented passes, float32 and
    float64 through the kernel's rows whole; a float64 slice whose terms are all
    subnormal is summed relative to its second entry."""
    monkeypatch.setattr(_numpy, "_BLOCK", 64)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 1000)) * 10
    x[1] = -720.0 - rng.random(1000) * 30
    x[1, 17] = 0.0
    x[2] = -6e4  # every other term is 0 in any format
    x[2, 3] = 0.0
    x = x.astype(dtype)
    got = impl.log_softmax(x, axis=-1)
    assert got.dtype == x.dtype
    assert reference.ulp_error(got, x, axis=-1).max() <= 0.5 + 2**-20


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_outputs_on_huge_pages_have_the_bits_of_small_ones(dtype):
    """Outputs of 2 MB and more (empty_out: a 2 MB aligned view of a larger
    allocation) hold what small ones (plain np.empty) hold, in every format: the
    NumPy path on all rows against 64 rows at a time, and Dask with the reduced axis
    split against the same column blocks cut into blocks of 64 rows."""
    da = pytest.importorskip("dask.array")
    x = (np.random.default_rng(8).standard_normal((2048, 2048)) * 8).astype(FORMATS[dtype].dtype)
    whole = impl.log_softmax(x, axis=-1)
    assert whole.dtype == x.dtype and whole.nbytes >= 8 << 20
    pieces = np.concatenate([impl.log_softmax(x[i : i + 64], axis=-1) for i in range(0, 2048, 64)])
    # compared as float64: NumPy's equality does not know ml_dtypes' bfloat16
    np.testing.assert_array_equal(whole.astype(np.float64), pieces.astype(np.float64))
    big = impl.log_softmax(da.from_array(x, chunks=(1024, 1024)), axis=-1).compute()
    small = impl.log_softmax(da.from_array(x, chunks=(64, 1024)), axis=-1).compute()
    assert big.dtype == x.dtype
    np.testing.assert_array_equal(big.astype(np.float64), small.astype(np.float64))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_dask_split_axis_matches_the_oracle(dtype):
    da = pytest.importorskip("dask.array")
    fmt = FORMATS[dtype]
    block = np.stack([r for _, r in rows(fmt, seed=5, n=16) if r.size == 16])
    block[0, 3] = np.inf
    block[1, 4] = np.nan
    block[2, :] = -np.inf
    block[3, 5] = -np.inf
    got = impl.log_softmax(da.from_array(block, chunks=(5, 5)), axis=-1).compute()
    res = reference.evaluate(block, axis=-1)
    special = ~np.isfinite(res.expected)
    # compared as float64: NumPy's NaN-aware equality does not know ml_dtypes' bfloat16
    np.testing.assert_array_equal(
        got[special].astype(np.float64), res.expected[special].astype(np.float64)
    )
    assert np.nanmax(res.ulp_error(got)) <= 0.5 + 2**-20


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_dask_split_axis_with_chunks_of_size_zero(dtype):
    """Chunks of size 0 (on the reduced axis or the kept one) bring nothing: the bits
    are those of the same blocks without them, special values included."""
    da = pytest.importorskip("dask.array")
    x = (np.random.default_rng(3).standard_normal((6, 10)) * 30).astype(FORMATS[dtype].dtype)
    x[0, 2] = np.inf
    x[1, 7] = np.nan
    x[2, :] = -np.inf
    x[3, 5:] = -np.inf
    want = impl.log_softmax(da.from_array(x, chunks=((3, 3), (5, 5))), axis=-1).compute()
    for chunks in [((3, 0, 3), (5, 0, 5)), ((0, 3, 3), (0, 5, 0, 5, 0)), ((6,), (0, 10))]:
        got = impl.log_softmax(da.from_array(x, chunks=chunks), axis=-1).compute()
        assert got.dtype == x.dtype
        # compared as float64: NumPy's NaN-aware equality does not know bfloat16
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    x3 = x.reshape(6, 2, 5)
    want = impl.log_softmax(da.from_array(x3, chunks=((6,), (1, 1), (2, 3))), axis=(1, 2))
    got = impl.log_softmax(da.from_array(x3, chunks=((6,), (1, 0, 1), (2, 0, 3))), axis=(1, 2))
    np.testing.assert_array_equal(
        got.compute().astype(np.float64), want.compute().astype(np.float64)
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dask_split_axis_blocks_relative_to_their_own_maxima(dtype):
    """Narrow formats sum each block relative to its own maximum: ties at the slice
    maximum in different blocks, a block of -inf only, a block far below the rest."""
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 24)) * 5
    x[0, [2, 13, 22]] = 9.0  # ties, three blocks
    x[1, 8:16] = -np.inf  # the middle block: -inf only
    x[2, :8] -= 80.0  # a block far below the maximum
    x[3, 16:] += 40.0  # the maximum in the last block, the rest dominated
    x[4] = -1e30  # all equal, all blocks
    x[5, 5] = 3e4  # one dominant entry
    x = x.astype(FORMATS[dtype].dtype)
    prev = K.use("scalar")  # the portable sums too: their -inf block sums are NaN
    try:
        for path in ("scalar", prev):
            K.use(path)
            got = impl.log_softmax(da.from_array(x, chunks=(4, 8)), axis=1).compute()
            assert got.dtype == x.dtype
            assert reference.ulp_error(got, x, axis=1).max() <= 0.5 + 2**-20
            assert (got[1, 8:16] == -np.inf).all()
    finally:
        K.use(prev)


def test_dask_split_axis_tiny_slices():
    """float64 slices whose every term is subnormal, their entries spread over blocks:
    T comes from the block at the maximum, summed relative to its second largest entry,
    and the blocks below it, summed relative to their own maxima and rescaled, with no
    pass of its own, and matches the NumPy path bit for bit."""
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(6)
    slices = []
    for gap in (670.0, 700.0, 740.0, 744.0, 800.0, 1500.0, 2100.0):
        r = np.concatenate([[0.0], -gap - rng.uniform(0, 30, 63)])
        rng.shuffle(r)
        slices.append(r)
    x = np.array(slices)
    for chunk in (8, 16, 64):
        got = impl.log_softmax(da.from_array(x, chunks=(3, chunk)), axis=1).compute()
        np.testing.assert_array_equal(got, impl.log_softmax(x, axis=1))
        assert reference.ulp_error(got, x, axis=1).max() <= 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_numpy_fallback_without_kernels(dtype, monkeypatch):
    """Where the C kernels were not built the NumPy blocks run: measured <= 0.5 ULP
    for the narrow formats and <= 1.5 ULP in float64 (dominant rows)."""
    monkeypatch.setattr(_numpy, "_kernel", None)
    fmt = FORMATS[dtype]
    worst = 0.0
    for _, row in rows(fmt, seed=6, n=16):
        got = impl.log_softmax(row)
        worst = max(worst, float(np.nanmax(reference.ulp_error(got, row))))
    assert worst <= (1.5 if dtype == "float64" else 0.501), worst


def test_the_dask_slow_pass_bindings_refuse_bad_arguments():
    """write_rows' unsure counts, exact_rows and note_slow: sizes and kinds checked
    with a message naming the problem, nothing read or written past a buffer."""
    K = pytest.importorskip("impl._kernel")
    x = np.zeros((3, 4), np.float32)
    slices = np.zeros((3, 8))
    with pytest.raises(ValueError, match="unsure must be float64, one value per row"):
        K.write_rows(x, np.empty((3, 4), np.float32), 4, slices, 0, np.empty(2))
    with pytest.raises(ValueError, match="unsure must be float64"):
        K.write_rows(x, np.empty((3, 4), np.float32), 4, slices, 0, np.empty(3, np.float32))
    with pytest.raises(ValueError, match="ms must be float64, one value per row"):
        K.exact_rows(x, 4, np.zeros(2), np.empty((3, 3)))
    with pytest.raises(ValueError, match="parts must be float64, 3 values per row"):
        K.exact_rows(x, 4, np.zeros(3), np.empty((3, 2)))
    with pytest.raises(ValueError, match="counts of 0 or more"):
        K.note_slow(True, -1, 0)
    # rows marked NaN get no sum; the others the slow path's, as exact_l_f32 takes it
    row = np.array([[0.0, -1.0, -2.0, 0.0]], np.float32)
    parts = np.empty((1, 3))
    K.exact_rows(row, 4, np.array([np.nan]), parts)
    assert np.isnan(parts[0, :2]).all() and parts[0, 2] == 0
    K.exact_rows(row, 4, np.array([0.0]), parts)
    assert parts[0, 2] == 2
    assert K.exact_l_from(parts[0, 0], parts[0, 1], 2, 4)[:2] == K.exact_l_f32(row[0], 0.0)[:2]
