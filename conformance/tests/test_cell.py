"""One cell, scored: statuses, findings and the reproducer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conformance import Budgets, Candidate, CellSpec, OracleCache, backend, family, run_cell

H = "conformance.tests._helpers"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return OracleCache(tmp_path_factory.mktemp("oracle"))


def _cell(target: str, fam: str, cache, dtype="float32", b="numpy:cpu", budgets=None):
    spec = CellSpec(Candidate(target, target), backend(b), dtype, family(fam), "quick")
    return run_cell(spec, cache, budgets or Budgets.load())


def test_impl_passes_and_naive_fails_the_dominant_family_with_a_reproducer(cache):
    ok = _cell("impl:log_softmax", "dominant", cache)
    assert ok["status"] == "pass" and ok["max_ulp"] <= 0.5 and ok["reason"] == ""
    assert ok["frac_correctly_rounded"] > 0.99
    curve = json.loads(ok["curve"])
    assert len(curve) == len(family("dominant").cases("float32")[0].params)
    bad = _cell(f"{H}:naive_log_softmax", "dominant", cache)
    assert bad["status"] == "fail" and bad["max_ulp"] > 1e6
    assert "ULP > 4" in bad["reason"]
    # the reproducer: the slice in hex, expected and got, and where it came from
    row = [float.fromhex(h) for h in json.loads(bad["worst_input"])]
    assert row[0] == 0.0 and len(row) == 8
    assert bad["worst_expected"] != bad["worst_got"]
    assert bad["worst_where"].startswith("conformance.family('dominant')")


def test_special_value_semantics_are_recorded(cache):
    rec = _cell("impl:log_softmax", "specials", cache)
    sem = json.loads(rec["semantics"])
    assert sem["one +inf"] == "limit" and sem["nan"] == "nan-propagating"
    assert rec["special_mismatches"] == 0 and rec["status"] == "pass"


def test_findings_raise_wrong_dtype_mutation(cache):
    raised = _cell(f"{H}:raising", "normal", cache)
    assert raised["status"] == "error" and "always raises" in raised["reason"]
    wrong = _cell(f"{H}:wrong_dtype", "normal", cache)
    assert wrong["status"] == "fail" and "returned float64 for float32" in wrong["reason"]
    assert wrong["out_dtype"] == "float64"
    mutated = _cell(f"{H}:mutating", "normal", cache)
    assert mutated["status"] == "fail" and "modified its input" in mutated["reason"]
    missing = _cell("no_such_module_xyz:f", "normal", cache)
    assert missing["status"] == "error" and "cannot load" in missing["reason"]


def test_budgets_decide_pass_and_fail(cache, tmp_path):
    strict = tmp_path / "b.toml"
    strict.write_text("[default]\nmax_ulp = 0.1\n")
    rec = _cell("impl:log_softmax", "normal", cache, budgets=Budgets.load(strict))
    assert rec["status"] == "fail" and "> 0.1" in rec["reason"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nmax_ulp = -1\n")
    with pytest.raises(ValueError, match=">= 0"):
        Budgets.load(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Budgets.load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("default = 3\n", "default", "expected a table"),
        ('[max_ulp]\nfloat32 = "abc"\n', "max_ulp.float32", "expected a number"),
        ("[max_ulp]\nfloat32 = true\n", "max_ulp.float32", "expected a number"),
        ("[max_ulp]\nfloat128 = 1.0\n", "max_ulp.float128", "unknown dtype"),
        ("max_ulp = 4\n", "max_ulp", "expected a table"),
        ("[default]\nmax_ulps = 4\n", "default.max_ulps", "unknown key"),
        ("budget = 4\n", "budget", "unknown key"),
        ("[max_ulp]\nfloat32 = nan\n", "max_ulp.float32", ">= 0"),
    ],
)
def test_a_bad_budgets_file_names_the_file_the_key_and_what_was_expected(
    tmp_path, text, key, expected
):
    f = tmp_path / "budgets.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as info:
        Budgets.load(f)
    msg = str(info.value)
    assert str(f) in msg and key in msg and expected in msg, msg
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--budgets", str(f), "--results",
         str(tmp_path / "res")], capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("helper", "text"),
    [
        ("returns_none", "returned NoneType, expected an array"),
        ("returns_str", "returned str, expected an array"),
        ("returns_object", "returned an object array, expected numbers"),
        ("returns_ints", "returned int64 for float32 input"),
    ],
)
def test_a_return_that_is_not_a_float_array_is_a_finding(cache, helper, text):
    rec = _cell(f"{H}:{helper}", "normal", cache)
    assert rec["status"] == "fail" and text in rec["reason"], rec["reason"]


def test_the_oracle_cache_is_keyed_by_content(cache):
    (case,) = family("normal").cases("float32")
    first = cache.get(case)
    assert cache.has(case)
    again = cache.get(case)
    np.testing.assert_array_equal(first.expected, again.expected)
    other = family("normal").cases("float64")[0]
    assert OracleCache.key(case) != OracleCache.key(other)


def test_transposed_and_zero_d_inputs_reach_the_candidate_as_such(cache):
    rec = _cell("impl:log_softmax", "shapes", cache)
    assert rec["status"] == "pass", rec["reason"]
