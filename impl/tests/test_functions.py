"""impl.softmax and impl.logsumexp: the oracle's bits on every path, the exact step,
the semantics of SciPy's signatures, and the derivatives."""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import impl
import reference
from conformance import BACKENDS
from conformance.backends._invoke import invoke
from conformance.functions._families import family_inputs

from . import device_paths
from .test_rounding import _adversarial_rows, _float64_rows

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
FORMATS = ("float16", "bfloat16", "float32", "float64")


def _bits_equal(got: Any, want: Any) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    g = np.ascontiguousarray(got).reshape(-1).view(UINT[got.dtype.itemsize])
    w = np.ascontiguousarray(want).reshape(-1).view(UINT[want.dtype.itemsize])
    nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
    return bool(((g == w) | nan.reshape(-1)).all())


def _lse(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    return impl.logsumexp(x, axis=axis, b=b, return_sign=return_sign)


def _oracle(function: str, x: np.ndarray, axis: Any) -> np.ndarray:
    if function == "softmax":
        return np.asarray(reference.softmax(x, axis=axis))
    return np.asarray(reference.logsumexp(x, axis=axis))


def _rows(dtype: str) -> np.ndarray:
    f = reference.FORMATS[dtype]
    if dtype == "float64":
        return _float64_rows(np.random.default_rng(17), 120, 6)
    rows = _adversarial_rows(np.random.default_rng(11), dtype)
    with np.errstate(over="ignore"):
        extra = np.array(
            [[0.0, -40.0, -40.0, -40.0], [0.0, -92.0, -100.0, -1e4], [5.0, 5.0, 5.0, 5.0]]
        ).astype(f.dtype)
    return np.concatenate([rows, extra])


# (label, backend, softmax, logsumexp)
PATHS = [
    ("numpy", "numpy:cpu", impl.softmax, _lse),
    ("torch", "torch:cpu", impl.softmax, _lse),
    ("jax jit", "jax:cpu:jit", impl.softmax, _lse),
    ("jax without x64", "jax:cpu:nox64", impl.softmax, _lse),
    ("dask", "dask:cpu", impl.softmax, _lse),
    ("array-api-strict", "array_api_strict:cpu", impl.softmax, _lse),
    ("array-api-strict, no float64", "array_api_strict:no_float64", impl.softmax, _lse),
    ("torch, GPU path", "torch:cpu", device_paths.softmax, device_paths.logsumexp),
    ("jax jit, GPU path", "jax:cpu:jit", device_paths.softmax, device_paths.logsumexp),
    ("jax without x64, GPU path", "jax:cpu:jit:nox64", device_paths.softmax,
     device_paths.logsumexp),
]  # fmt: skip
# XLA compiles the double-word algorithm for each shape (the GPU paths: 5 to 30 s a
# shape here): the extended tier
_SLOW = {"jax jit, GPU path", "jax without x64, GPU path"}
_PARAMS = [pytest.param(p, id=p[0], marks=[pytest.mark.extended] if p[0] in _SLOW else [])
           for p in PATHS]  # fmt: skip


def _backend(name: str) -> Any:
    b = next(b for b in BACKENDS if b.name == name)
    why = b.probe()
    if why:
        pytest.skip(why)
    return b


@pytest.mark.parametrize("path", _PARAMS)
def test_every_path_gives_the_oracles_bits(path):
    """Rows with x - max on a midpoint of the output's grid, rows of one dominant
    entry, subnormal results, ties, in every format the backend has: softmax and
    logsumexp bit for bit the oracle's."""
    label, name, softmax, logsumexp = path
    b = _backend(name)
    wrong = []
    for dtype in FORMATS:
        if dtype not in b.dtypes:
            continue
        x = _rows(dtype)
        for function, fn in (("softmax", softmax), ("logsumexp", logsumexp)):
            got = np.asarray(b.run(fn, x, axis=-1))
            if not _bits_equal(got, _oracle(function, x, -1)):
                wrong.append(f"{function} {dtype}")
    assert not wrong, f"{label}: {wrong}"


@pytest.mark.parametrize("name", ["numpy:cpu", "torch:cpu", "dask:cpu", "array_api_strict:cpu"])
def test_every_familys_inputs_give_the_oracles_bits(name):
    """The quick profile of every family that serves the function, as the sweep
    calls the candidate (invoke): the oracle's bits, on the eager paths."""
    b = _backend(name)
    wrong = []
    cases = 0
    inputs = [("softmax", *f) for f in family_inputs("quick", function="softmax")]
    inputs += [("logsumexp", *f) for f in family_inputs("quick", function="logsumexp")]
    for function_of, family, fmt, fam_cases in inputs:
        if fmt not in b.dtypes or family in ("exhaustive-f32",):
            continue
        for case in fam_cases[:3]:
            if case.keywords:  # logsumexp's weights and sign: its value and its sign
                findings: list[str] = []
                signs: list[Any] = []
                got = invoke(_lse, b, case, findings, signs)
                cases += 1
                res = reference.evaluate_logsumexp(
                    case.x, case.axis, b=case.b, return_sign=case.return_sign
                )
                ok = got is not None and _bits_equal(got, res.expected)
                if case.return_sign:
                    ok = ok and signs[0] is not None and _bits_equal(signs[0], res.sign)
                if not ok:
                    wrong.append(f"logsumexp {family} {fmt} {case.label} {findings}")
                continue
            for function, fn in (("softmax", impl.softmax), ("logsumexp", _lse)):
                if function != function_of:
                    continue
                findings = []
                got = invoke(fn, b, case, findings)
                cases += 1
                if got is None or not _bits_equal(got, _oracle(function, case.x, case.axis)):
                    wrong.append(f"{function} {family} {fmt} {case.label} {findings}")
    assert cases > 40, cases
    assert not wrong, wrong[:6]


def test_the_second_tier_decides_log_probabilities():
    """logsumexp of log-probabilities lies near 0, where float64's exp and log1p
    (2^-50) leave every slice open: the precise core decides them before decimal
    arithmetic would (4.3 s for these 200 rows in float32, every slice exact)."""
    from impl import _exact

    x = np.random.default_rng(0).normal(size=(200, 1000)).astype(np.float32)
    lp = impl.log_softmax(x, axis=-1)
    before = _exact.stats["slices"]
    assert _bits_equal(impl.logsumexp(lp, axis=-1), reference.logsumexp(lp, axis=-1))
    assert _exact.stats["slices"] == before


def test_the_exact_step_decides_every_output_it_is_given(monkeypatch):
    """With the bounds scaled up by 2^60 the rounding test leaves every output open:
    the exact step (impl/_exact.py) decides all of them, bit for bit the oracle's,
    and it ran."""
    from impl import _functions, _host

    monkeypatch.setattr(_functions, "_err_scale", 2.0**60)
    for dtype in FORMATS:
        x = _rows(dtype)[:40]
        before = _host.fixes
        assert _bits_equal(impl.softmax(x, axis=-1), reference.softmax(x, axis=-1)), dtype
        assert _bits_equal(impl.logsumexp(x, axis=-1), reference.logsumexp(x, axis=-1)), dtype
        assert _host.fixes >= before + 2, "the exact step never ran"


def _bound_ratios(dtype: Any, wide: Any) -> tuple[float, float]:
    """max |exact - (hi + lo)| / err over softmax's and logsumexp's double-words
    (impl/_functions.py: softmax_dw, logsumexp_dw) on rows at three scales, some with
    one dominant entry; exact values from mpmath at 300 bits."""
    import mpmath

    from impl._functions import logsumexp_dw, softmax_dw

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(48, 16)) * rng.choice([1, 10, 100], (48, 1))).astype(dtype)
    x[::4, 1:] -= 60
    D = softmax_dw(np, x, (1,), 16, wide)
    hi, lo, err = logsumexp_dw(np, x, (1,), 16, wide)
    worst = [0.0, 0.0]
    with mpmath.workprec(300):
        for i, row in enumerate(x):
            vals = [mpmath.mpf(float(v)) for v in row]
            m = max(vals)
            S = mpmath.fsum(mpmath.exp(v - m) for v in vals)
            for j, v in enumerate(vals):
                if D.sub[i, j] or D.err[i, j] == 0:
                    continue  # (rounded once to the subnormal grid: tested by bits)
                got = mpmath.mpf(float(D.hi[i, j])) + mpmath.mpf(float(D.lo[i, j]))
                e = abs(mpmath.exp(v - m) / S - got) / mpmath.mpf(float(D.err[i, j]))
                worst[0] = max(worst[0], float(e))
            got = mpmath.mpf(float(hi[i, 0])) + mpmath.mpf(float(lo[i, 0]))
            e = abs(m + mpmath.log(S) - got) / mpmath.mpf(float(err[i, 0]))
            worst[1] = max(worst[1], float(e))
    return worst[0], worst[1]


@pytest.mark.parametrize(
    ("dtype", "wide"),
    [(np.float16, np.float64), (np.float32, np.float64), (np.float64, np.float64),
     (np.float32, np.float32)],
    ids=["float16 in float64", "float32 in float64", "float64", "float32 without float64"],
)  # fmt: skip
def test_the_bounds_hold_and_a_weakened_one_is_caught(dtype, wide):
    """The rounding test is only as good as the bound it is given: every error is
    within it, and the bound is tight enough that one 2^8 times smaller would be
    exceeded here (measured: the worst error is 2^-1.3 to 2^-4.9 of the bound)."""
    for function, ratio in zip(("softmax", "logsumexp"), _bound_ratios(dtype, wide), strict=True):
        assert ratio <= 1.0, (function, ratio)
        assert ratio > 2.0**-8, (function, ratio)


def test_weighted_logsumexp_gives_the_oracles_bits():
    """Weights of both signs, cancellation down to 1e-300, zero weights, ties
    merged, in every format; and the value and sign of SciPy's regressions."""
    rng = np.random.default_rng(8)
    for dtype in FORMATS:
        f = reference.FORMATS[dtype]
        a = (rng.normal(size=(60, 5)) * rng.choice([1.0, 10.0, 100.0], (60, 1))).astype(f.dtype)
        b = rng.normal(size=(60, 5)).astype(f.dtype)
        b[::5, 2] = 0
        a[1::5, 1] = a[1::5, 0]
        b[1::5, 1] = -b[1::5, 0]  # a tie whose weights cancel exactly
        got = impl.logsumexp(a, axis=-1, b=b, return_sign=True)
        want = reference.logsumexp(a, axis=-1, b=b, return_sign=True)
        assert _bits_equal(got[0], want[0]) and _bits_equal(got[1], want[1]), dtype
    a = np.array([0.0, 1e-300])
    value, sign = impl.logsumexp(a, b=np.array([1.0, -1.0]), return_sign=True)
    assert (value, sign) == (-690.7755278982137, -1.0)
    a = np.array([3.06409428, 0.37251854, 3.87471931])
    b = np.array([1.88190708, 2.84174795, -0.85016884])
    assert impl.logsumexp(a, b=b) == 1.2452165157907387  # scipy/scipy#22903
    assert impl.logsumexp(np.array([np.inf]), return_sign=True) == (np.inf, 1.0)  # #23548
    assert impl.logsumexp(np.array([0.0, -40.0])) == 4.248354255291589e-18  # #18295


@pytest.mark.parametrize("name", ["torch:cpu", "jax:cpu", "dask:cpu", "array_api_strict:cpu"])
def test_weighted_logsumexp_on_every_backend(name):
    b = _backend(name)
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20, 6)) * 20
    w = rng.normal(size=(20, 6))

    got = b.run(impl.logsumexp, a, axis=-1, b=w)  # (w goes to the backend as a does)
    assert _bits_equal(got, reference.logsumexp(a, axis=-1, b=w))


_NAMESPACES = ["numpy:cpu", "torch:cpu", "jax:cpu", "dask:cpu", "array_api_strict:cpu"]


@pytest.mark.parametrize("name", _NAMESPACES)
def test_logsumexp_broadcasts_a_and_b_together(name):
    """As SciPy does (TestLogSumExp.test_logsumexp_b_shape): a and b broadcast to one
    shape, and axis counts its axes; impl took only a b that broadcast to a's shape."""
    bk = _backend(name)
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 1, 2, 1)) * 10
    b = rng.normal(size=(3, 1, 5))
    full_a, full_b = np.broadcast_arrays(a, b)
    for axis in (None, 1, (0, 3), -1):
        value, sign = bk.run(impl.logsumexp, a, axis=axis, b=b, return_sign=True)
        want = reference.logsumexp(full_a, axis=axis, b=full_b, return_sign=True)
        assert _bits_equal(value, want[0]), axis
        assert _bits_equal(sign, want[1]), axis
    with pytest.raises(ValueError, match=r"a of shape \(2, 3\) and b of shape \(2,\) do not"):
        bk.run(impl.logsumexp, np.zeros((2, 3)), b=np.ones(2))


def _promotions(name: str) -> list[tuple[str, str, str]]:
    """(a's dtype, b's dtype, the result's) as SciPy 1.17's logsumexp gives them:
    the namespace's own promotion, the floating dtypes' (with the default float)
    where it has none, the default float where neither is floating."""
    if name == "torch:cpu":
        return [("float32", "int32", "float32"), ("int32", "int64", "float32"),
                ("int64", "float64", "float64"), ("float16", "int8", "float16"),
                ("int64", "float16", "float16")]  # fmt: skip
    if name == "array_api_strict:cpu":
        return [("int64", "int64", "float64"), ("float32", "int64", "float64"),
                ("int32", "float32", "float64"), ("float32", "float32", "float32")]  # fmt: skip
    return [("int32", "float32", "float64"), ("float32", "int32", "float64"),
            ("int64", "int64", "float64"), ("float16", "int8", "float16"),
            ("int8", "float16", "float16"), ("float32", "bool", "float32")]  # fmt: skip


@pytest.mark.parametrize("name", ["numpy:cpu", "torch:cpu", "array_api_strict:cpu", "dask:cpu"])
def test_logsumexp_promotes_a_and_b_as_scipy_does(name):
    """The dtypes of TestLogSumExp.test_dtypes_ab, test_logsumexp_sign and _b_zero:
    array-api-strict's integer weights raised ("int64 cannot be type promoted"), and
    an integer a became the default float before it met b's dtype (torch's int64 a
    with float16 b computed in float32, NumPy's int8 a with float16 b in float64)."""
    bk = _backend(name)
    for da, db, want in _promotions(name):
        a = np.array([2, 1, 0]).astype(da)
        b = np.array([1, -1, 3]).astype(db)
        value, sign = bk.run(impl.logsumexp, a, b=b, return_sign=True)
        assert value.dtype == want, (da, db, value.dtype)
        ref = reference.logsumexp(a.astype(want), b=b.astype(want), return_sign=True)
        assert _bits_equal(value, ref[0]) and _bits_equal(sign, ref[1])


def _mp_logsumexp(a: np.ndarray, b: np.ndarray | None) -> complex:
    import mpmath

    with mpmath.workprec(300):
        ws = [1] * len(a) if b is None else b
        s = mpmath.fsum(
            mpmath.mpc(w) * mpmath.exp(mpmath.mpc(z)) for z, w in zip(a, ws, strict=True)
        )
        return complex(mpmath.log(s))


def test_complex_logsumexp_as_scipy_defines_it():
    """Complex a or b (TestLogSumExp's complex tests): log S with its principal
    argument, within a few ULP of the exact value (not certified: outside the
    specification), in (-pi, pi]; under return_sign the real log|S| and the phase."""
    rng = np.random.default_rng(21)
    rows = rng.normal(size=(200, 7)) * 30 + 1j * rng.normal(size=(200, 7)) * 10
    weights = rng.normal(size=(200, 7)) + 1j * rng.normal(size=(200, 7))
    for b in (None, weights.real, weights):
        got = impl.logsumexp(rows, axis=1, b=b)
        assert got.dtype == np.complex128
        for i in range(0, 200, 7):
            want = _mp_logsumexp(rows[i], None if b is None else b[i])
            assert abs(got[i] - want) <= 8 * 2.0**-52 * max(abs(want), 1.0), (i, got[i], want)
    assert (np.abs(np.imag(got)) <= np.pi).all()
    value, phase = impl.logsumexp(rows, axis=1, b=weights, return_sign=True)
    assert value.dtype == np.float64 and phase.dtype == np.complex128
    np.testing.assert_allclose(np.abs(phase), 1.0, rtol=1e-15)
    np.testing.assert_allclose(phase * np.exp(value), np.exp(got), rtol=1e-13)
    # complex64 computes in complex128 and rounds once: within a float32 ULP or two
    got64 = impl.logsumexp(rows.astype(np.complex64), axis=1)
    assert got64.dtype == np.complex64
    want64 = impl.logsumexp(rows.astype(np.complex64).astype(np.complex128), axis=1)
    np.testing.assert_array_equal(got64, want64.astype(np.complex64))
    # a small imaginary part keeps its relative accuracy (scipy/scipy#21709)
    tiny = impl.logsumexp(np.array([0, 2.2204460492503132e-17j]))
    assert tiny == 0.6931471805599453 + 1.1102230246251566e-17j
    # a zero weight removes its entry, NaN included; a sum of zero is -inf, phase 0
    got = impl.logsumexp(np.array([1j, np.nan]), b=np.array([1, 0]))
    np.testing.assert_allclose(got, 1j, atol=2.0**-52)
    value, phase = impl.logsumexp(np.array([0j, 0j]), b=np.array([1, -1]), return_sign=True)
    assert value == -np.inf and phase == 0
    # the negative real axis: the argument pi, not -pi
    assert impl.logsumexp(np.array([complex(0, np.pi)])).imag == np.pi
    # infinities: the unshifted formula's answer, as SciPy gives it (scipy/scipy#22601)
    specials = [-np.inf, np.inf, complex(-np.inf, 1.0), complex(np.inf, -0.0),
                complex(np.inf, np.inf), complex(np.inf, 2.3562)]  # fmt: skip
    for x in specials:
        for y in specials:
            z = np.array([x, y], dtype=np.complex128)
            with np.errstate(all="ignore"):
                want = np.log(np.sum(np.exp(z)))
            np.testing.assert_array_equal(impl.logsumexp(z), want, err_msg=str(z))


@pytest.mark.parametrize("name", ["torch:cpu", "jax:cpu", "jax:cpu:jit", "jax:cpu:nox64",
                                  "dask:cpu", "array_api_strict:cpu"])  # fmt: skip
def test_complex_logsumexp_on_every_namespace(name):
    bk = _backend(name)
    rng = np.random.default_rng(22)
    a = rng.normal(size=(6, 5)) * 20 + 1j * rng.normal(size=(6, 5))
    b = rng.normal(size=(1, 5))
    if bk.library == "jax" and not bk.x64:  # complex64 and float32 in, complex64 out
        a, b = a.astype(np.complex64), b.astype(np.float32)
    want = impl.logsumexp(a.astype(np.complex128), axis=-1, b=b)
    got = bk.run(impl.logsumexp, a, axis=-1, b=b)
    rtol = 1e-14 if got.dtype == np.complex128 else 1e-6
    np.testing.assert_allclose(got, want, rtol=rtol)
    value, phase = bk.run(impl.logsumexp, a, axis=(0, 1), return_sign=True)
    w_value, w_phase = impl.logsumexp(a.astype(np.complex128), axis=(0, 1), return_sign=True)
    np.testing.assert_allclose(value, w_value, rtol=rtol)
    np.testing.assert_allclose(phase, w_phase, rtol=rtol)
    # a sum that cancels: -inf and phase 0, with no warning (Dask computes it later,
    # in a block)
    zero, w = np.zeros(2, a.dtype), np.array([1.0, -1.0], b.dtype)
    value, phase = bk.run(impl.logsumexp, zero, b=w, return_sign=True)
    assert value == -np.inf and phase == 0


def test_complex_logsumexp_is_differentiable_on_torch():
    torch = pytest.importorskip("torch")
    a = torch.tensor([[1 + 1j, 2 - 1j, -2 + 3j]], dtype=torch.complex128, requires_grad=True)
    torch.autograd.gradcheck(lambda t: impl.logsumexp(t, axis=-1), (a,))


def test_the_exact_step_alone():
    """impl/_exact.py against the oracle on random slices, and the values that are
    exactly rational (which would keep Ziv's loop going without their own rule)."""
    from impl import _exact

    rng = np.random.default_rng(2)
    for dtype in FORMATS:
        f = reference.FORMATS[dtype]
        for _ in range(20):
            x = (rng.normal(size=int(rng.integers(1, 6))) * 30).astype(f.dtype)
            row = [float(v) for v in x]
            got = np.array(_exact.softmax_slice(row, dtype), dtype=f.dtype)
            assert _bits_equal(got, reference.softmax(x)), (dtype, row)
            value, _ = _exact.logsumexp_slice(row, None, dtype)
            assert _bits_equal(np.array(value, f.dtype), reference.logsumexp(x)), (dtype, row)
    assert _exact.softmax_slice([2.0, 2.0, 2.0, -math.inf], "float64") == [1 / 3, 1 / 3, 1 / 3, 0]
    assert _exact.logsumexp_slice([-0.0], None, "float32") == (0.0, 1.0)
    assert math.copysign(1, _exact.logsumexp_slice([-0.0], None, "float32")[0]) == 1
    assert _exact.logsumexp_slice([1.5, 1.5], [2.0, -1.0], "float64") == (1.5, 1.0)
    assert _exact.logsumexp_slice([1.5, 1.5], [1.0, -1.0], "float64") == (-math.inf, 0.0)
    assert _exact.logsumexp_slice([0.0, -1e308], None, "float64") == (0.0, 1.0)
    # a zero whose sign only the far terms (below e^-10^6) give: it once looped to
    # 20,480 digits and raised
    for a, b, sign in (([0.0, -2e6], [1.0, -1.0], -1), ([0.0, -1e300, -2e300], [1, -0.5, 3], -1),
                       ([0.0, -2e6], [-1.0, 0.5], -1), ([0.0, -2e6], [1.0, 0.5], 1)):  # fmt: skip
        value, _ = _exact.logsumexp_slice(a, b, "float64")
        assert value == 0 and math.copysign(1, value) == sign, (a, b, value)
    tiny = Fraction(1, 2**1074)
    assert _exact.round_to(tiny / 3, "float64") == 0.0
    assert _exact.round_to(tiny * 3 / 2, "float64") == 2 * 2**-1074  # a tie: to even


def test_semantics():
    x = np.array([[1.0, 2.0, 3.0], [0.0, -np.inf, np.nan]])
    s = impl.softmax(x, axis=1)
    assert s.shape == x.shape and np.isnan(s[1]).all()
    assert impl.logsumexp(x, axis=1).shape == (2,)
    assert impl.logsumexp(x, axis=1, keepdims=True).shape == (2, 1)
    assert impl.logsumexp(x[:1]).shape == ()
    assert isinstance(impl.logsumexp(np.array([1.0, 2.0])), np.float64)
    value, sign = impl.logsumexp(np.array([-np.inf, -np.inf]), return_sign=True)
    assert value == -np.inf and sign == 0
    assert impl.logsumexp(np.zeros((0, 3)), axis=0).tolist() == [-np.inf] * 3
    assert impl.softmax(np.zeros((0, 3)), axis=0).shape == (0, 3)
    assert impl.softmax(np.array(3.0)) == 1.0
    # b: broadcasting, promotion, a clear error for shapes that do not match
    a32 = np.array([0.0, 1.0], np.float32)
    assert impl.logsumexp(a32, b=np.array([1.0, 1.0])).dtype == np.float64
    assert impl.logsumexp(a32, b=np.float32(2.0)).dtype == np.float32
    with pytest.raises(ValueError, match=r"a of shape \(2,\) and b of shape \(3,\) do not"):
        impl.logsumexp(a32, b=np.ones(3))
    with pytest.raises(TypeError, match="softmax is defined for real input"):
        impl.softmax(np.array([1j]))
    # weights: empty slices, tiny weights (2^-eb once overflowed its table), the
    # dtype integer and bool weights promote to
    assert impl.logsumexp(np.zeros(0), b=np.zeros(0)) == -np.inf
    assert impl.logsumexp(np.zeros((2, 0)), b=np.zeros((2, 0)), axis=1).tolist() == [-np.inf] * 2
    for b in ([5e-324], [1e-310]):
        got = impl.logsumexp(np.array([0.0]), b=np.array(b))
        assert got == reference.logsumexp(np.array([0.0]), b=np.array(b)), b
    assert impl.logsumexp(a32, b=np.array([1, 2], np.int8)).dtype == np.float32
    assert impl.logsumexp(a32, b=np.array([True, True])).dtype == np.float32
    value, sign = impl.logsumexp(np.array([0.0, 1.0]), b=np.array([1.0, -1.0]), return_sign=True)
    assert sign == -1 and np.isnan(impl.logsumexp(np.array([0.0, 1.0]), b=np.array([1.0, -1.0])))


def test_subnormal_results_survive_flush_to_zero():
    """XLA's threads and torch.set_flush_denormal(True) flush subnormal results: the
    host computations run in the default environment (impl/_fpenv.py)."""
    torch = pytest.importorskip("torch")
    x = np.array([[0.0, -92.0]], np.float32)
    want = reference.softmax(x, axis=-1)
    want_lse = reference.logsumexp(x, axis=-1)
    assert want[0, 1] != 0 and want_lse[0] != 0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        assert _bits_equal(impl.softmax(x, axis=-1), want)
        assert _bits_equal(impl.softmax(torch.from_numpy(x), axis=-1).numpy(), want)
        assert _bits_equal(impl.logsumexp(x, axis=-1), want_lse)
    finally:
        torch.set_flush_denormal(False)
    jnp = pytest.importorskip("jax.numpy")
    assert _bits_equal(np.asarray(impl.softmax(jnp.asarray(x), axis=-1)), want)
    # torch's own threads, started after the flag was set, inherit it: CPU tensors
    # compute on the host (49,500 of these outputs were 0 before)
    big = torch.zeros(1000, 100, dtype=torch.float64)
    big[:, 1:] = -720.0
    want = reference.softmax(big.numpy(), axis=1)
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(2)
    try:
        (big + 0).sum()  # (a large op: torch's pool starts now, flushing)
        assert _bits_equal(impl.softmax(big, axis=1).numpy(), want)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def test_derivatives():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: impl.softmax(t, axis=1), (x,))
    assert torch.autograd.gradcheck(lambda t: impl.logsumexp(t, axis=1), (x,))
    w = (torch.rand(3, 5, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, u: impl.logsumexp(t, axis=1, b=u), (x, w))
    # forward mode and vmap (they once gave zeros, and raised)
    t = torch.randn(3, 5, dtype=torch.float64)
    xd = x.detach()
    pairs = [
        (impl.softmax, torch.softmax),
        (impl.logsumexp, torch.logsumexp),
    ]
    for mine, theirs in pairs:

        def m1(u: Any, f: Any = mine) -> Any:
            return f(u, axis=1)

        def t1(u: Any, f: Any = theirs) -> Any:
            return f(u, dim=1)

        def rowwise(u: Any, f: Any = mine) -> Any:  # each row its own call, under vmap
            return f(u, axis=0)

        torch.testing.assert_close(torch.func.jvp(m1, (xd,), (t,)), torch.func.jvp(t1, (xd,), (t,)))
        torch.testing.assert_close(torch.func.jacfwd(m1)(xd), torch.func.jacfwd(t1)(xd))
        torch.testing.assert_close(torch.func.vmap(rowwise)(xd), t1(xd))
    assert torch.autograd.gradcheck(lambda t, u: impl.logsumexp(t, axis=1, b=u), (x, w),
                                    check_forward_ad=True)  # fmt: skip
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    v = jnp.asarray(np.random.default_rng(1).normal(size=(5,)).astype(np.float32))
    with contextlib.suppress(Exception):
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(
        jax.jacfwd(impl.softmax)(v), jax.jacfwd(jax.nn.softmax)(v), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        jax.grad(lambda t: impl.logsumexp(t))(v), jax.nn.softmax(v), rtol=1e-5, atol=1e-6
    )
    bw = jnp.asarray([1.0, -0.5, 2.0, 0.25, 1.0], dtype=jnp.float32)
    np.testing.assert_allclose(
        jax.grad(lambda t: impl.logsumexp(t, b=bw))(v),
        jax.grad(lambda t: jax.nn.logsumexp(t, b=bw))(v),
        rtol=1e-4,
        atol=1e-6,
    )


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """impl._functions.<name> counting its calls (skips where the kernels are not
    built: the path it names is theirs)."""
    from impl import _functions, _numpy

    if _numpy.compiled_kernels() is None:
        pytest.skip("the kernels are not built")
    calls: list[int] = []
    real = getattr(_functions, name)

    def counted(*a: Any) -> Any:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(_functions, name, counted)
    return calls


@pytest.mark.parametrize("dtype", list(FORMATS))
def test_logsumexp_on_numpy_sums_with_the_kernels(monkeypatch, dtype):
    """On NumPy with the compiled kernels, logsumexp is m + L from their one pass
    (impl/_functions.py: _logsumexp_kernel, the special slices found from the sums),
    and still the oracle's bits: ties, single entries, -0.0, specials, sums below
    2^-960 (float64's redone rows), results near 0 and near overflow, a 3-D array over
    a tuple of axes."""
    calls = _count_calls(monkeypatch, "_logsumexp_kernel")
    f = reference.FORMATS[dtype]
    big = f.max_finite
    rows = [
        [5.0, -1000.0], [0.0, -800.0], [0.0, -40.0], [2.0, 2.0, 2.0], [-0.0], [-0.0, -0.0],
        [1.0, np.nan], [np.inf, 0.0], [-np.inf, -np.inf], [-np.inf, 1.0], [big, big],
        [-big, 0.0], [1e-300, -1000.0], [-3.0, -3.0000001, -50.0],
        [np.nan, -np.inf], [np.inf, np.nan], [np.inf, -np.inf], [np.nan],
    ]  # fmt: skip
    x = np.full((len(rows), 3), -np.inf)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    x = x.astype(f.dtype)
    rng = np.random.default_rng(6)
    cube = (rng.normal(size=(3, 40, 5)) * 20).astype(f.dtype)
    for arr, axis in ((x, -1), (x[:, :1], -1), (cube, (0, 2)), (cube, None)):
        got = impl.logsumexp(arr, axis=axis)
        assert _bits_equal(got, reference.logsumexp(arr, axis=axis)), (dtype, axis)
    assert calls


@pytest.mark.parametrize("dtype", list(FORMATS))
def test_softmax_on_numpy_takes_the_kernels_writer(monkeypatch, dtype):
    """softmax on NumPy: the kernels' per-row sums and their writer (_softmax_kernel,
    impl/csrc/softmax.h); the oracle's bits on ties, single entries, far entries (T
    below 2^-960), specials, subnormal and zero outputs, results either side of the
    smallest normal, a tuple of axes."""
    calls = _count_calls(monkeypatch, "_softmax_kernel")
    f = reference.FORMATS[dtype]
    far = 0.9 * f.max_finite
    rows = [
        [5.0, -1000.0], [0.0, -100.0], [0.0, -16.0], [2.0, 2.0, 2.0], [-0.0], [1.0, np.nan],
        [np.inf, 0.0], [-np.inf, -np.inf], [-np.inf, 1.0], [far, -far], [0.0, -103.0, -87.0],
        [0.0, -708.3], [0.0, -708.5], [0.0, -744.0], [0.0, -745.2], [0.0, -700.0, -701.0],
    ]  # fmt: skip
    x = np.full((len(rows), 3), -np.inf)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    x = x.astype(f.dtype)
    rng = np.random.default_rng(9)
    cube = (rng.normal(size=(3, 40, 5)) * 30).astype(f.dtype)
    for arr, axis in ((x, -1), (cube, (0, 2)), (cube, None)):
        got = impl.softmax(arr, axis=axis)
        assert _bits_equal(got, reference.softmax(arr, axis=axis)), (dtype, axis)
    assert calls


def test_the_float64_softmax_writer_agrees_with_its_flags():
    """The compiled float64 writer (impl/csrc/softmax.h: softmax_rows, in
    double-double): each output it leaves closed is the oracle's bits, on rows whose
    outputs reach down into the subnormals, and few are left open. (The narrow formats'
    writer and its bound are test_softmax_f32.py's.)"""
    from impl import _functions, _numpy

    kernels = _numpy.compiled_kernels()
    if kernels is None:
        pytest.skip("the kernels are not built")
    rng = np.random.default_rng(12)
    x = (rng.normal(size=(24, 32)) * rng.choice([1.0, 10.0, 40.0], (24, 1))).astype(np.float32)
    x64 = x.astype(np.float64) * 20.0  # outputs down into the subnormals
    res = _functions._softmax_sums(kernels, x64, 32)
    out = np.empty_like(x64)
    opened = np.zeros(x64.shape, dtype=np.uint8)
    assert kernels.softmax_rows(x64, 32, res, out, opened) < 8
    want = reference.softmax(x64, axis=-1)
    assert _bits_equal(out[opened == 0], want[opened == 0])
    with pytest.raises(ValueError, match="float64 rows"):
        kernels.softmax_rows(x, 32, res, out, opened)


def test_float64_softmax_across_the_subnormal_boundary():
    """[0, -g] for g from 700 to 746 (outputs from 1e-304 down through the smallest
    normal, 2^-1022 at g = 708.4, to below half the least subnormal) and from 0 to
    40: the writer's two roundings (normal, and on the 2^-1074 grid) give the oracle's
    bits, and few outputs are left to the exact step."""
    from impl import _host

    g = np.r_[np.linspace(700.0, 746.0, 600), np.linspace(0.0, 40.0, 200)]
    x = np.stack([np.zeros_like(g), -g], axis=1)
    before = _host.fixes
    assert _bits_equal(impl.softmax(x, axis=-1), reference.softmax(x, axis=-1))
    assert _host.fixes - before <= 1  # one call: its open outputs decided together
