"""The peers' own test suites as families: PyTorch's OpInfo samples (torch-opinfo) and
SciPy's test classes (scipy-suite), for each function, on candidates that pass and fail
them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conformance import RunConfig, backend, candidate, family, run
from conformance._runner import plan
from conformance.functions._candidates import Candidate
from conformance.functions._functions import FUNCTIONS
from conformance.reporting._report import peer_suite_details, peer_suites, write_report

H = "conformance.tests._helpers"


def _sweep(tmp_path: Path, name: str, cands: list[Any], backends: list[str],
           dtypes: list[str], fams: list[Any]) -> pd.DataFrame:  # fmt: skip
    cfg = RunConfig(
        [c if isinstance(c, Candidate) else candidate(c) for c in cands],
        [backend(b) for b in backends], dtypes, fams,
        jobs=2, results=tmp_path / name, cache=tmp_path / "cache", progress=False,
    )  # fmt: skip
    return run(cfg, log=lambda s: None)


def _row(t: pd.DataFrame, cand: str, b: str, dtype: str, function: str = "log_softmax",
         fam: str | None = None) -> pd.Series:  # fmt: skip
    sel = (t.candidate == cand) & (t.backend == b) & (t.dtype == dtype)
    sel &= t.function == function
    if fam is not None:
        sel &= t.family == fam
    (i,) = t.index[sel]
    return t.loc[i]


def test_the_peers_suites_serve_every_function():
    names = [f.name for f in FUNCTIONS]
    for fam in ("scipy-suite", "torch-opinfo"):
        assert family(fam).functions == tuple(names)
    cfg = RunConfig(
        [candidate("scipy", f) for f in names], [backend("numpy:cpu")], ["float64"],
        [family("scipy-suite"), family("torch-opinfo")],
    )  # fmt: skip
    cells = {(s.function, s.family.name) for s in plan(cfg)}
    assert cells == {(f, fam) for f in names for fam in ("scipy-suite", "torch-opinfo")}
    # the OpInfo samples depend on the function: each function's cells have their own
    units = {s.unit for s in plan(cfg) if s.family.name == "torch-opinfo"}
    assert {u[2] for u in units} == set(names)
    assert {s.unit for s in plan(cfg) if s.family.name == "scipy-suite"} == {
        ("scipy-suite", "float64", "")
    }


@pytest.fixture(scope="module")
def opinfo() -> Any:
    pytest.importorskip("torch")
    fam = family("torch-opinfo")
    why = fam.why_not()
    if why:
        pytest.skip(why)
    return fam


def test_opinfo_samples_are_torchs_own(opinfo):
    """Every sample of both OpInfos, each format; with_dtype's in float64 widened."""
    cases = opinfo.cases("float16")
    assert [c.x.shape for c in cases] == [(5,), (5, 5), (5, 5), (5, 5), (5, 10, 5), (5, 0, 0), ()]
    assert [c.axis for c in cases] == [0, 0, 1, -1, 2, -1, 0]
    f64 = opinfo.cases("float64")
    assert len(f64) == 7 + 4 * 7 and sum("with_dtype" in c.label for c in f64) == 28
    assert {str(c.x.dtype) for c in f64} == {"float64"}
    assert opinfo.cases("float16")[1].x.tobytes() == cases[1].x.tobytes()  # seeded


def test_opinfo_samples_of_softmax_and_logsumexp(opinfo):
    """softmax's OpInfos sample as log_softmax's do (both variants); logsumexp's
    samples carry dims and keepdim: one dim is the candidate's int axis, two a tuple,
    and a keepdim sample is scored on the reduced shape."""
    lsm, sm = opinfo.cases("float16"), opinfo.cases("float16", "quick", "softmax")
    assert [(c.x.shape, c.axis) for c in sm] == [(c.x.shape, c.axis) for c in lsm]
    assert len(opinfo.cases("float64", "quick", "softmax")) == 7 + 4 * 7
    lse = opinfo.cases("float16", "quick", "logsumexp")
    assert [c.x.shape for c in lse] == [(), (5, 5), (5, 5), (5, 5), (5, 5)]
    assert [c.axis for c in lse] == [0, 1, 1, -2, (0, 1)]
    assert "keepdim=True" in lse[1].label and "keepdim=False" in lse[2].label
    # float32 and float64 add torch's large inputs, in [1e3, 2e3) and [1e6, 2e6)
    f64 = opinfo.cases("float64", "quick", "logsumexp")
    assert len(f64) == 15 and {str(c.x.dtype) for c in f64} == {"float64"}
    assert 1e6 <= f64[14].x.min() and f64[14].x.max() < 2e6
    with pytest.raises(ValueError, match="no softplus inputs"):
        opinfo.cases("float64", "quick", "softplus")


@pytest.mark.extended
def test_opinfo_judges_softmax_and_logsumexp_candidates(opinfo, tmp_path):
    """The oracle's own softmax and logsumexp pass every sample; torch's assert_close
    is taken against torch's function of the cell (softmax, torch.logsumexp); torch's
    logsumexp passes gradcheck on its samples."""
    cands = [
        Candidate("oracle", "reference:softmax", ("numpy",), function="softmax"),
        Candidate("oracle", "reference:logsumexp", ("numpy",), function="logsumexp"),
        candidate("torch", "logsumexp"),
    ]
    t = _sweep(tmp_path, "r", cands, ["numpy:cpu", "torch:cpu"], ["float32", "float64"],
               [opinfo])  # fmt: skip
    for fn, n in (("softmax", {"float32": 7, "float64": 35}), ("logsumexp", {"float32": 15})):
        for dt, count in n.items():
            r = _row(t, "oracle", "numpy:cpu", dt, fn)
            assert r.status == "pass" and r.max_ulp <= 0.5, r.reason
            assert r.n_inputs == count
            assert f"torch's assert_close: {count} of {count} samples pass" in r.notes
    r = _row(t, "torch", "torch:cpu", "float64", "logsumexp")
    assert r.n_inputs == 15
    assert "gradcheck and gradgradcheck, forward and backward AD: 15 of 15 samples pass" in (
        r.notes
    )


@pytest.mark.extended
def test_the_oracle_decides_where_torchs_assert_close_is_wrong(opinfo, tmp_path):
    """impl passes the oracle on every sample; torch's assert_close rejects two
    float16 samples, where torch's own expected value is the one far off. torch's
    kernel fails the oracle; gradcheck runs on torch float64 and passes impl."""
    t = _sweep(tmp_path, "r", ["impl", "torch.nn.functional"], ["torch:cpu"],
               ["float16", "float64"], [opinfo])  # fmt: skip
    ours = _row(t, "impl", "torch:cpu", "float16")
    assert ours.status == "pass" and ours.max_ulp <= 0.5
    assert (
        "torch's assert_close: 5 of 7" in ours.notes or "torch's assert_close: 4 of 7" in ours.notes
    )
    assert "rejects OpInfo sample" in ours.notes and "torch's expected value" in ours.notes
    peer = _row(t, "torch.nn.functional", "torch:cpu", "float16")
    assert peer.status == "fail" and peer.max_ulp > 100
    assert "torch's assert_close: 7 of 7 samples pass" in peer.notes
    f64 = _row(t, "impl", "torch:cpu", "float64")
    assert f64.status == "pass", f64.reason
    assert "gradcheck and gradgradcheck, forward and backward AD: 7 of 7 samples pass" in f64.notes
    out = tmp_path / "report"
    write_report(tmp_path / "r", out)
    readme = (out / "README.md").read_text()
    assert (
        "## Peers' suites" in readme and "| `impl` | torch-opinfo | 2 | 0 | 0 | 0 | - |" in readme
    )


def test_gradcheck_fails_a_candidate_with_a_wrong_derivative(opinfo, tmp_path):
    t = _sweep(tmp_path, "r", [f"{H}:detached_normaliser"], ["torch:cpu"], ["float64"], [opinfo])
    (rec,) = t.to_dict("records")
    assert rec["status"] == "fail"
    assert rec["reason"].count("gradcheck failed on OpInfo sample") >= 4, rec["reason"]
    assert "of 7 samples pass" in rec["notes"] and "7 of 7" not in rec["notes"]


@pytest.mark.extended
def test_the_checks_calls_are_guarded_like_the_others(opinfo, tmp_path):
    """A candidate that changes the rounding mode only inside gradcheck's calls: the
    change is a finding and is undone, as for any call of the candidate."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the helper sets x86's FE_UPWARD")
    t = _sweep(tmp_path, "r", [f"{H}:rounds_up_under_autograd"], ["torch:cpu"], ["float64"],
               [opinfo])  # fmt: skip
    (rec,) = t.to_dict("records")
    assert rec["status"] == "fail"
    assert "left the floating-point environment changed" in rec["reason"], rec["reason"]


def test_scipys_suite_without_pytest_is_not_run_rather_than_an_error(tmp_path, monkeypatch):
    """An environment with SciPy's tests but no pytest (tox's sweep-full had none):
    every scipy-suite cell was recorded as the candidate's error ("No module named
    pytest"); now the family is unavailable with that reason, and its cells not run."""
    import importlib.util

    from conformance.functions import _peers

    if _peers.scipy_suite_unavailable() is not None:
        pytest.skip(_peers.scipy_suite_unavailable() or "")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else real(name, *a)
    )
    _peers.scipy_suite_unavailable.cache_clear()
    try:
        why = family("scipy-suite").why_not()
        assert why == "scipy-suite: pytest is not installed (SciPy's tests run under it)"
        t = _sweep(tmp_path, "r", ["impl"], ["numpy:cpu"], ["float64"], [family("scipy-suite")])
        (rec,) = t.to_dict("records")
        assert rec["status"] == "not run" and rec["reason"] == why
    finally:
        monkeypatch.undo()
        _peers.scipy_suite_unavailable.cache_clear()


def test_a_family_that_cannot_run_here_is_not_run_with_its_reason(tmp_path):
    fam = dataclasses.replace(family("torch-opinfo"), unavailable=lambda: "no expecttest here")
    t = _sweep(tmp_path, "r", ["impl"], ["numpy:cpu"], ["float32"], [fam])
    (rec,) = t.to_dict("records")
    assert rec["status"] == "not run" and rec["reason"] == "no expecttest here"


@pytest.mark.extended
def test_scipy_suite_runs_scipys_tests_on_the_candidate(tmp_path):
    fam = family("scipy-suite")
    why = fam.why_not()
    if why:
        pytest.skip(why)
    t = _sweep(tmp_path, "r", ["impl", f"{H}:skips_int_promotion"],
               ["numpy:cpu", "array_api_strict:cpu"], ["float64"], [fam])  # fmt: skip
    ours = _row(t, "impl", "numpy:cpu", "float64")
    assert ours.status == "pass", ours.reason
    # both modes on NumPy, every test of the class ran
    assert "without SCIPY_ARRAY_API: 12 passed" in ours.notes
    assert "SCIPY_ARRAY_API=numpy: 12 passed" in ours.notes
    strict = _row(t, "impl", "array_api_strict:cpu", "float64")
    assert strict.status == "pass" and "SCIPY_ARRAY_API=array_api_strict: 10 passed" in strict.notes
    bad = _row(t, f"{H}:skips_int_promotion", "numpy:cpu", "float64")
    assert bad.status == "fail"
    # the two tests that pass integers: [1000, 1] as an array and as a list
    assert (
        "TestLogSoftmax::test_log_softmax_int_array[numpy]: AssertionError: dtypes do not match"
        in bad.reason
    )
    assert "without SCIPY_ARRAY_API: 10 passed, 2 failed" in bad.notes
    rows = peer_suites(t)
    by_candidate = {r[0]: r[1:6] for r in rows}
    assert by_candidate["impl"] == ["scipy-suite", "2", "0", "0", "0"]
    assert by_candidate[f"{H}:skips_int_promotion"] == ["scipy-suite", "0", "2", "0", "0"]
    assert any("test_log_softmax_int_array" in d for d in peer_suite_details(t))


@pytest.mark.extended
def test_scipy_suite_runs_testsoftmax_on_a_softmax(tmp_path):
    """A softmax cell runs SciPy's TestSoftmax: SciPy's own softmax passes it; exp(x)
    left unnormalised fails every test, each finding naming the class."""
    fam = family("scipy-suite")
    why = fam.why_not()
    if why:
        pytest.skip(why)
    bad = Candidate("exp", f"{H}:unnormalised_softmax", function="softmax")
    t = _sweep(tmp_path, "r", [candidate("scipy", "softmax"), bad], ["numpy:cpu"], ["float64"],
               [fam])  # fmt: skip
    ours = _row(t, "scipy", "numpy:cpu", "float64", "softmax")
    assert ours.status == "pass", ours.reason
    assert "scipy TestSoftmax without SCIPY_ARRAY_API: 5 passed" in ours.notes
    assert "scipy TestSoftmax SCIPY_ARRAY_API=numpy: 5 passed" in ours.notes
    assert "TestLogSoftmax" not in ours.notes
    r = _row(t, "exp", "numpy:cpu", "float64", "softmax")
    assert r.status == "fail"
    assert "without SCIPY_ARRAY_API: TestSoftmax::test_softmax_fixtures[numpy]" in r.reason
    assert "scipy TestSoftmax without SCIPY_ARRAY_API: 5 failed" in r.notes


@pytest.mark.extended
def test_scipy_suite_runs_testlogsumexp_on_a_logsumexp(tmp_path):
    """A logsumexp cell runs SciPy's TestLogSumExp: keepdims=True reshapes the
    candidate's answer; a call with b= or return_sign= goes to a candidate that takes
    them (SciPy's adapter: every test runs, and passes) and skips its test for one that
    does not (fn(x, axis) alone); log(sum(exp(x))) overflows on [1000, 1000]."""
    fam = family("scipy-suite")
    why = fam.why_not()
    if why:
        pytest.skip(why)
    naive = Candidate(
        "naive", "conformance.functions._candidates:naive_logsumexp", function="logsumexp"
    )
    plain = Candidate("plain", "conformance.tests._helpers:plain_logsumexp", function="logsumexp")
    t = _sweep(tmp_path, "r", [candidate("scipy", "logsumexp"), naive, plain], ["numpy:cpu"],
               ["float64"], [fam])  # fmt: skip
    ours = _row(t, "scipy", "numpy:cpu", "float64", "logsumexp")
    assert ours.status == "pass", ours.reason
    assert "scipy TestLogSumExp without SCIPY_ARRAY_API: 389 passed" in ours.notes
    assert "takes no b=" not in ours.notes
    p = _row(t, "plain", "numpy:cpu", "float64", "logsumexp")
    assert p.status == "pass", p.reason
    assert "scipy TestLogSumExp without SCIPY_ARRAY_API: 336 passed, 53 skipped" in p.notes
    assert "takes no b=" in p.notes and "takes no return_sign=" in p.notes
    r = _row(t, "naive", "numpy:cpu", "float64", "logsumexp")
    assert r.status == "fail"
    assert "TestLogSumExp::test_logsumexp[numpy]" in r.reason


def test_the_logsumexp_adapter_keeps_dims_and_skips_what_fn_lacks():
    import numpy as np

    from conformance.functions._scipy_patch import logsumexp_adapter

    calls = []

    def fn(x, axis=None):
        calls.append(axis)
        return np.log(np.sum(np.exp(x), axis=axis))

    lse = logsumexp_adapter(fn)
    x = np.zeros((2, 3))
    assert lse(x, axis=-1, keepdims=True).shape == (2, 1)
    assert lse(x, axis=(0, 1), keepdims=True).shape == (1, 1)
    assert lse(x).shape == () and calls == [-1, (0, 1), None]
    with pytest.raises(pytest.skip.Exception, match="takes no b="):
        lse(x, b=x)
    with pytest.raises(pytest.skip.Exception, match="takes no return_sign="):
        lse(x, return_sign=True)

    def full(x, axis=None, b=None, keepdims=False, return_sign=False):
        return ("full", b is not None, keepdims, return_sign)

    assert logsumexp_adapter(full)(x, b=x, keepdims=True) == ("full", True, True, False)


def test_a_candidate_that_crashes_scipys_pytest_is_an_error_with_the_signal(tmp_path):
    fam = family("scipy-suite")
    why = fam.why_not()
    if why:
        pytest.skip(why)
    t = _sweep(tmp_path, "r", [f"{H}:crashing"], ["numpy:cpu"], ["float64"], [fam])
    (rec,) = t.to_dict("records")
    assert rec["status"] == "error"
    assert "SciPy's pytest died of signal 11" in rec["reason"], rec["reason"]
    assert "Segmentation fault" in rec["reason"]


def test_suites_run_only_when_named():
    from conformance import DEFAULT_FAMILIES

    names = {f.name for f in DEFAULT_FAMILIES}
    assert "scipy-suite" not in names and "torch-opinfo" not in names
    assert family("scipy-suite").applies_to(backend("torch:cpu"))
    assert not family("scipy-suite").applies_to(backend("jax:cpu:jit"))
