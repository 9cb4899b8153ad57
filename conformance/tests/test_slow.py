"""The slow tier (pytest -m slow): full-size inputs and a longer worst-case search."""

from __future__ import annotations

import pytest

from conformance import FAMILIES, Budgets, CellSpec, OracleCache, backend, candidate, run_cell
from conformance._runner import default_cache_dir
from conformance._search import search

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_impl_passes_every_full_size_family_in_numpy(dtype):
    cache, budgets = OracleCache(default_cache_dir()), Budgets.load()
    for fam in FAMILIES:
        if dtype in fam.dtypes:
            spec = CellSpec(candidate("impl"), backend("numpy:cpu"), dtype, fam, "full")
            rec = run_cell(spec, cache, budgets)
            assert rec["status"] in ("pass", "not run"), (fam.name, rec["reason"])
            if rec["max_ulp"] is not None:
                assert rec["max_ulp"] <= (1.0 if dtype == "float64" else 0.501), fam.name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_long_search_finds_nothing_above_impls_targets(dtype, tmp_path):
    res = search(
        candidate("impl"), backend("numpy:cpu"), dtype, seconds=120,
        corpus=tmp_path / "corpus.jsonl", seed=1,
    )  # fmt: skip
    assert res.examples > 100
    assert res.ulp <= (1.0 if dtype == "float64" else 0.501), res.reproducer(
        candidate("impl"), dtype
    )
