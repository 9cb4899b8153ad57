"""logsumexp's weights and return_sign in the matrix: the families, the call, the
sign's scoring, the planner, the oracle cache, and the gate naming the input class that
regressed (SciPy's two regressions, emulated by the candidates in _weighted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference
from conformance import RunConfig, backend, candidate, family, run
from conformance._runner import plan
from conformance.functions._candidates import Candidate, declared_keywords
from conformance.functions._families import Case
from conformance.reporting._gate import gate
from conformance.scoring._oracle_cache import OracleCache
from reference._logsumexp import LogSumExpResult

FAMILIES = ("weights", "weight-specials", "return-sign", "sign-specials")
DTYPES = ["float16", "bfloat16", "float32", "float64"]
HERE = "conformance.tests._weighted"


def _lse(name: str, target: str) -> Candidate:
    return Candidate(name, target, function="logsumexp", keywords=("b", "return_sign"))


def _sweep(tmp: Path, cands: list[Candidate], fams: tuple[str, ...], dtypes: list[str],
           name: str = "res") -> pd.DataFrame:  # fmt: skip
    cfg = RunConfig(
        candidates=cands, backends=[backend("numpy:cpu")], dtypes=dtypes,
        families=[family(f) for f in fams], isolation="none", results=tmp / name,
        cache=tmp / "cache", progress=False,
    )  # fmt: skip
    return run(cfg, log=lambda s: None)


def _failing(r: pd.Series) -> list[str]:
    return list(json.loads(r["counts"])["failing_inputs"])


def test_the_weighted_families_are_logsumexps_and_pass_b_and_return_sign():
    for name in FAMILIES:
        f = family(name)
        assert f.functions == ("logsumexp",) and "b" in f.keywords
        for dt in DTYPES:
            cases = f.cases(dt, "quick")
            assert cases and len({c.label for c in cases}) == len(cases)
            for c in cases:
                assert c.x.dtype == np.dtype(reference.FORMATS[dt].dtype)
                assert c.return_sign == ("return_sign" in f.keywords)
                assert set(c.keywords) <= set(f.keywords)
    labels = [c.label for c in family("weights").cases("float64")]
    assert any("#22903" in lab for lab in labels)
    assert any("#23548" in c.label for c in family("sign-specials").cases("float64"))
    with pytest.raises(ValueError, match="a case's b has x's shape"):
        Case(np.zeros((2, 3)), -1, "bad", b=np.zeros(3))


def test_impl_gives_the_oracles_bits_and_signs_on_every_weighted_family(tmp_path):
    table = _sweep(tmp_path, [candidate("impl", "logsumexp")], FAMILIES, DTYPES)
    assert len(table) == len(FAMILIES) * len(DTYPES)
    for r in table.itertuples():
        assert r.status == "pass", (r.family, r.dtype, r.reason)
        assert r.frac_correctly_rounded == 1.0  # a bit comparison, not ulp <= 0.5
        counts = json.loads(r.counts)
        assert counts["failing_inputs"] == []
        if r.family in ("return-sign", "sign-specials"):
            assert counts["signs"] > 0 and counts["wrong_signs"] == 0


def test_weight_and_sign_defects_are_caught(tmp_path):
    cands = [
        _lse("ignores", f"{HERE}:ignores_weights"),
        _lse("sign1", f"{HERE}:sign_always_one"),
        _lse("nosign", f"{HERE}:no_sign"),
        _lse("mutates", f"{HERE}:modifies_weights"),
    ]
    table = _sweep(tmp_path, cands, ("weights", "return-sign"), ["float64"])
    by = {(r.candidate, r.family): r for _, r in table.iterrows()}
    ign = by["ignores", "weights"]
    assert ign.status == "fail" and "positive weights" in _failing(ign)
    s1 = by["sign1", "return-sign"]
    assert s1.status == "fail" and "a wrong sign in" in s1.reason
    assert "a negative weight at the maximum, negative sum" in _failing(s1)
    assert json.loads(s1.counts)["wrong_signs"] > 0
    ns = by["nosign", "return-sign"]
    assert ns.status == "fail" and "expected (value, sign) with return_sign=True" in ns.reason
    mu = by["mutates", "weights"]
    assert mu.status == "fail" and "modified its input" in mu.reason


def test_a_weighted_family_runs_on_the_candidates_that_take_weights(tmp_path):
    cfg = RunConfig(
        candidates=[candidate("torch", "logsumexp"), candidate("scipy", "logsumexp")],
        backends=[backend("torch:cpu")], dtypes=["float32"],
        families=[family("weights"), family("normal")],
    )  # fmt: skip
    got = {(s.candidate.name, s.family.name) for s in plan(cfg)}
    assert got == {("torch", "normal"), ("scipy", "normal"), ("scipy", "weights")}
    mod = tmp_path / "lsemod.py"
    mod.write_text(
        "def weighted(a, axis=None, b=None, return_sign=False): ...\n"
        "def plain(a, axis=None): ...\n"
        "def anything(a, axis=None, **kw): ...\n"
        "alias = plain\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert declared_keywords("lsemod:weighted") == ("b", "return_sign")
        assert declared_keywords("lsemod:plain") == ()
        assert declared_keywords("lsemod:anything") == ("b", "return_sign")
        assert declared_keywords("lsemod:alias") == ()  # the source does not say
        assert candidate("lsemod:weighted", "logsumexp").keywords == ("b", "return_sign")
    finally:
        sys.path.remove(str(tmp_path))


def test_the_oracle_cache_keeps_weights_and_the_sign(tmp_path):
    x = np.array([[0.0, 1.0, 2.0]])
    plain = Case(x, -1, "p")
    weighted = Case(x, -1, "w", b=np.array([[1.0, -3.0, 0.5]]))
    signed = Case(x, -1, "s", b=weighted.b, return_sign=True)
    keys = {OracleCache.key(c, "logsumexp") for c in (plain, weighted, signed)}
    assert len(keys) == 3
    cache = OracleCache(tmp_path)
    first = cache.get(signed, "logsumexp")
    again = cache.get(signed, "logsumexp")  # read back from disk
    want = reference.evaluate_logsumexp(x, -1, b=weighted.b, return_sign=True)
    assert np.array_equal(again.expected, want.expected)
    assert isinstance(again, LogSumExpResult) and isinstance(first, LogSumExpResult)
    assert again.sign is not None and first.sign is not None and want.sign is not None
    assert np.array_equal(again.sign, want.sign) and np.array_equal(first.sign, [-1.0])
    assert np.isnan(cache.get(weighted, "logsumexp").expected[0])  # S < 0, no sign asked
    assert cache.rejected == []


def test_the_gate_names_the_input_class_of_scipy_22903(tmp_path):
    """SciPy 1.14.1 -> 1.15.2 on the weights family: both fail the cancellation
    classes; 1.15.2 also gives NaN where the maximum's weight is negative. The gate
    fails and names that class (float32: computed in float64, the class passes before)."""
    fams, dts = ("weights",), ["float32"]
    old = _sweep(tmp_path, [_lse("scipy", f"{HERE}:cancels_in_float64")], fams, dts, "old")
    new = _sweep(tmp_path, [_lse("scipy", f"{HERE}:nan_at_negative_max_weight")], fams, dts,
                 "new")  # fmt: skip
    assert old.iloc[0].status == "fail"  # cancellation, before the regression too
    base = tmp_path / "baseline.json"
    assert gate(old, base, update=True).ok
    res = gate(new, base)
    assert not res.ok
    text = "\n".join(res.worse)
    assert "a negative weight at the maximum, positive sum (scipy/scipy#22903)" in _failing(
        new.iloc[0]
    )
    assert not any("#22903" in lab for lab in _failing(old.iloc[0]))
    newly = next(line for line in text.splitlines() if "newly failing inputs:" in line)
    assert "#22903" in newly


def test_the_gate_names_the_input_class_of_scipy_23548(tmp_path):
    """SciPy 1.15.0 -> 1.16.0 on the sign-specials family: 1.15.0 gives the sign 1 for
    [-inf] (0 is exact), 1.16.0 fixes that and gives NaN for [+inf]. Both fail, with
    the same max ULP and one wrong sign: only the failing inputs tell them apart."""
    fams, dts = ("sign-specials",), ["float64"]
    old = _sweep(tmp_path, [_lse("scipy", f"{HERE}:sign_one_when_empty")], fams, dts, "old")
    new = _sweep(tmp_path, [_lse("scipy", f"{HERE}:sign_nan_at_inf")], fams, dts, "new")
    assert (old.iloc[0].status, new.iloc[0].status) == ("fail", "fail")
    assert old.iloc[0].max_ulp == new.iloc[0].max_ulp
    base = tmp_path / "baseline.json"
    assert gate(old, base, update=True).ok
    res = gate(new, base)
    assert not res.ok
    assert "newly failing inputs: [+inf], no weights" in "\n".join(res.worse)
    # the baseline records the labels; a baseline without them is not compared on them
    data = json.loads(base.read_text())
    (entry,) = next(iter(data["cells"].values())).values()
    assert any("[-inf]" in lab for lab in entry["failing_inputs"])
    for plats in data["cells"].values():
        for e in plats.values():
            del e["failing_inputs"]
    base.write_text(json.dumps(data))
    assert gate(new, base).ok
