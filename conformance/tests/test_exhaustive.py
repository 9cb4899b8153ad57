"""The exhaustive float32 family: its chunks as families, its measurement against the
exact engine pair by pair, its self-check, and a chunk as a cell of a sweep."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reference
from conformance import RunConfig, backend, candidate, run
from conformance._candidates import Candidate
from conformance._exhaustive import CHUNK_BITS, N_CHUNKS, measure_range, pairs_of
from conformance._families import families, family

H = "conformance.tests._helpers"


def _scipy(x: Any) -> Any:
    scipy_special = pytest.importorskip("scipy.special")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return np.asarray(scipy_special.log_softmax(x, axis=-1))


def _impl(x: Any) -> Any:
    import impl

    return np.asarray(impl.log_softmax(x, axis=-1))


def _nan_to_zero(x: Any) -> Any:
    """impl, but 0 where the answer is NaN: a special mismatch at every NaN pair."""
    out = _impl(x)
    return np.where(np.isnan(out), np.float32(0), out)


def test_the_family_is_256_chunks_of_2_24_each_a_cell():
    chunks = families("exhaustive-f32")
    assert len(chunks) == N_CHUNKS == 256 and len({f.name for f in chunks}) == 256
    assert chunks[17].name == "exhaustive-f32:017" and "0x11000000..0x11ffffff" in chunks[17].doc
    assert family("exhaustive-f32:17") is chunks[17]
    assert [f.name for f in families("exhaustive-f32:3-4+9")] == [
        "exhaustive-f32:003", "exhaustive-f32:004", "exhaustive-f32:009"
    ]  # fmt: skip
    assert all(f.dtypes == ("float32",) and f.optional for f in chunks)
    for bad in ("exhaustive-f32:256", "exhaustive-f32:5-3", "exhaustive-f32:x"):
        with pytest.raises(KeyError, match="chunks are"):
            families(bad)
    with pytest.raises(KeyError, match="names 2 families"):
        family("exhaustive-f32:1-2")
    assert 1 << CHUNK_BITS == 2**24


# ranges with every kind of pair: saturating ones (v near -20: SciPy's 9e6 ULP), near
# 1 (rounding), the largest finite values and +inf, NaNs of both signs, the
# smallest subnormals around +-0
RANGES = [0xC1A00000, 0x3F8FE000, 0x7F7FFF00, 0x7FBFFF00, 0xFF7FFF00, 0xFFFFF800, 0x0, 0x80000000]


@pytest.mark.parametrize("fn", [_scipy, _impl, _nan_to_zero], ids=["scipy", "impl", "nan-to-0"])
@pytest.mark.parametrize("lo", RANGES, ids=[f"{r:#010x}" for r in RANGES])
def test_the_measurement_is_the_exact_engines_pair_by_pair(fn, lo):
    """Counts exact, max ULP the exact engine's (within 2**-20 ULP: see the module),
    special mismatches and the fraction correctly rounded as the oracle's scoring."""
    n = 2048
    m = measure_range(fn, lo, lo + n, block=700)  # blocks that do not divide the range
    bits = np.arange(lo, lo + n, dtype=np.uint64).astype(np.uint32)
    x = pairs_of(bits)
    got = fn(x)
    res = reference.evaluate(x, -1)
    err, cr = res.ulp_error(got), res.correctly_rounded(got)
    counts = json.loads(m["counts"])
    assert counts["pairs"] == counts["pairs_scored"] == n == m["n_inputs"]
    assert counts["pairs_not_correctly_rounded"] == int((~cr.all(axis=1)).sum())
    assert counts["elements_not_correctly_rounded"] == int((~cr).sum())
    assert m["frac_correctly_rounded"] == cr.mean()
    assert m["special_mismatches"] == sum(label == "other" for _, label in res.semantics(got))
    assert m["max_ulp"] == pytest.approx(float(err.max()), rel=0, abs=2.0**-20)
    assert counts["oracle_certified"] + counts["oracle_exact_engine"] == n
    assert m["mean_ulp"] == pytest.approx(float(err.mean()), rel=1e-6, abs=2.0**-20)
    assert sum(json.loads(m["hist"])) == 2 * n
    if m["max_ulp"] > 0.5:  # the worst pair reproduces
        b = int(m["worst_where"].split("bits ")[-1], 16)
        worst = reference.evaluate(pairs_of(np.array([b], dtype=np.uint32)), -1)
        assert (
            float(worst.ulp_error(fn(pairs_of(np.array([b], dtype=np.uint32)))).max())
            == (m["worst_ulp"])
        )


def test_a_nan_answer_that_is_not_nan_is_a_special_mismatch():
    lo = 0x7FC00000  # quiet NaNs
    m = measure_range(_nan_to_zero, lo, lo + 100)
    assert m["special_mismatches"] == 100 and m["max_ulp"] == float("inf")


def test_a_wrong_oracle_in_the_worker_fails_its_self_check(monkeypatch):
    """A worker whose certified path was changed under it (here: its float64 values
    scaled by 1 + 2**-20) refuses to score."""
    import reference._pairs as pairs

    real = pairs._values
    monkeypatch.setattr(pairs, "_values", lambda vd: real(vd) * (1 + 2.0**-20))
    with pytest.raises(RuntimeError, match="self-check failed"):
        measure_range(_impl, 0x3F800000, 0x3F800000 + 4096)


def test_a_candidate_that_answers_nothing_or_the_wrong_shape_is_unanswered():
    m = measure_range(lambda x: None, 0x3F800000, 0x3F800000 + 64)
    assert json.loads(m["counts"])["unanswered_pairs"] == 64 and m["n_inputs"] == 0
    m = measure_range(lambda x: x[:, :1], 0x3F800000, 0x3F800000 + 64)
    assert json.loads(m["counts"])["unanswered_pairs"] == 64


_PATCHES_THE_SCORER = """
import numpy as np
import conformance._exhaustive as E
import reference

# every pair scored correctly rounded, the self-check silenced, the oracle made its own
def _count(t, bits, v, got):
    t.pairs += bits.size


E._score_block.__code__ = _count.__code__
E._self_check = lambda *a: None
reference.log_softmax_pairs = lambda v, counts=None: f(np.stack([np.zeros_like(v), v], 1), -1)

def f(x, axis=None):
    with np.errstate(all="ignore"):
        e = np.exp(x)
        return np.log(e / e.sum(axis=axis, keepdims=True))
"""


@pytest.mark.extended  # three chunks of 2^24 pairs: 23 s here
def test_chunks_run_as_cells_of_a_sweep_and_their_figures_reach_the_report(tmp_path, monkeypatch):
    """The last chunk (negative values from -2**105 to -inf, and NaNs): impl passes;
    log(softmax) gives -inf where v is finite and fails; each record carries its
    counts and its host. The report sums the chunks in a section of its own (the
    per-family tables do not list them), from its own results or from --exhaustive.
    A candidate that patches the scorer where it runs (its worker) and answers as
    log(softmax) is counted as log(softmax): the supervisor's processes score."""
    (tmp_path / "patches_the_scorer.py").write_text(_PATCHES_THE_SCORER)
    monkeypatch.syspath_prepend(str(tmp_path))
    cheat = Candidate("patches_the_scorer:f", "patches_the_scorer:f")
    cfg = RunConfig(
        candidates=[candidate("impl"), candidate("log(softmax)"), cheat],
        backends=[backend("numpy:cpu")], dtypes=["float32", "float64"],
        families=[family("exhaustive-f32:255"), family("specials")], jobs=2,
        results=tmp_path / "r", cache=tmp_path / "cache", progress=False,
    )  # fmt: skip
    table = run(cfg, log=lambda s: None)
    _report_has_the_figures(tmp_path, table)
    table = table[table.family == "exhaustive-f32:255"].set_index("candidate")
    assert len(table) == 3  # float32 only
    forged = table.loc["patches_the_scorer:f"]
    assert forged.status == "fail" and forged.counts == table.loc["log(softmax)"].counts
    ours, naive = table.loc["impl"], table.loc["log(softmax)"]
    assert ours.status == "pass" and ours.max_ulp <= 0.5
    c = json.loads(ours.counts)
    assert c["pairs"] == 2**24 and c["pairs_not_correctly_rounded"] == 0
    assert ours.n_elements == 2**25 and ours.host
    assert naive.status == "fail" and json.loads(naive.counts)["pairs_not_correctly_rounded"] > 0


def _report_has_the_figures(tmp_path: Path, table: Any) -> None:
    from conformance._cli import main
    from conformance._report import write_report

    chunk = table[table.family == "exhaustive-f32:255"].set_index("candidate")
    bad = json.loads(chunk.loc["log(softmax)", "counts"])["pairs_not_correctly_rounded"]
    write_report(tmp_path / "r", tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Exhaustive float32" in readme
    assert (
        "impl (numpy:cpu): 0 of 16,777,216 pairs [0, v] not correctly rounded, max "
        f"{chunk.loc['impl', 'max_ulp']:.4g} ULP (incomplete: 1 of 256 chunks measured)"
    ) in readme
    assert f"log(softmax) (numpy:cpu): {bad:,} of 16,777,216 pairs" in readme
    page = (tmp_path / "out" / "exhaustive-f32.md").read_text()
    assert "`0xff" in page or "- worst pairs" in page
    html_page = (tmp_path / "out" / "index.html").read_text()
    assert "id='exhaustive'" in html_page
    support = (tmp_path / "out" / "candidates" / "impl.md").read_text()
    assert "exhaustive-f32:" not in support  # the chunks are not 256 rows of a table
    # the same results given again as --exhaustive (by a pattern) count once
    assert main(["report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o2"),
                 "--exhaustive", str(tmp_path / "?")]) == 0  # fmt: skip
    again = (tmp_path / "o2" / "README.md").read_text()
    assert "impl (numpy:cpu): 0 of 16,777,216 pairs" in again


def test_a_block_left_unanswered_or_in_another_dtype_fails_the_cell():
    """A candidate that answers one block of two with the wrong shape, or every block
    in float64: findings, and the cell fails (the answered half passed before)."""
    from conformance._budgets import Budgets
    from conformance._cell import CellSpec, Raw, score

    lo, n = 0x3F800000, 128

    def half(x):
        out = _impl(x)
        return out[:, :1] if x[0, 1] >= np.float32(1.0 + 64 * 2.0**-23) else out

    for fn, why in (
        (half, "64 of 128 pairs unanswered"),
        (lambda x: _impl(x).astype(np.float64), "returned float64 for float32"),
    ):
        findings: list[str] = []
        m = measure_range(fn, lo, lo + n, block=64, findings=findings)
        cell = CellSpec(candidate("impl"), backend("numpy:cpu"), "float32",
                        family("exhaustive-f32:063"), "quick")  # fmt: skip
        rec = score(cell, Raw(findings=findings, summary=m), [], reference.evaluate, Budgets.load())
        assert rec["status"] == "fail" and why in rec["reason"], rec["reason"]
