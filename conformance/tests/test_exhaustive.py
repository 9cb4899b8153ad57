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
from conformance.functions._candidates import Candidate
from conformance.functions._exhaustive import CHUNK_BITS, N_CHUNKS, measure_range, pairs_of
from conformance.functions._families import families, family

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
    # every function's: a cell is a chunk and a candidate (of one function)
    assert all(f.functions == ("log_softmax", "softmax", "logsumexp") for f in chunks)
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


# softmax's and logsumexp's candidates: impl, the naive forms (no max subtracted: inf or
# NaN where exp overflows, wrong bits near 1), and impl with one bit flipped at every
# 5th pair (the count known exactly) or NaN answers made 0
def _impl_of(function: str) -> Any:
    def call(x: Any) -> Any:
        import impl

        return np.asarray(getattr(impl, function)(x, axis=-1))

    return call


def _naive_of(function: str) -> Any:
    from conformance.functions import _candidates

    naive = getattr(_candidates, f"naive_{function}")

    def call(x: Any) -> Any:
        with np.errstate(all="ignore"):
            return np.asarray(naive(x, axis=-1))

    return call


def _flipped(x: Any, function: str) -> tuple[Any, int]:
    """impl's answer with the last bit of its first element flipped at every 5th pair
    whose answer is finite and not 0: (the answer, how many were flipped)."""
    out = _impl_of(function)(x).copy()
    first = out if out.ndim == 1 else out[:, 0]
    idx = np.arange(0, first.size, 5)
    idx = idx[np.isfinite(first[idx]) & (first[idx] != 0)]
    first.view(np.uint32)[idx] ^= np.uint32(1)
    return out, int(idx.size)


def _flip_of(function: str) -> Any:
    return lambda x: _flipped(x, function)[0]


def _nan_to_zero_of(function: str) -> Any:
    return lambda x: np.nan_to_num(_impl_of(function)(x), nan=0.0)


MAKERS = [_impl_of, _naive_of, _flip_of, _nan_to_zero_of]
# and v from -88 (softmax's smaller output subnormal in float32, near underflow)
RANGES_F = [*RANGES, 0xC2B00000]


@pytest.mark.parametrize("make", MAKERS, ids=["impl", "naive", "flip", "nan-to-0"])
@pytest.mark.parametrize("function", ["softmax", "logsumexp"])
@pytest.mark.parametrize("lo", RANGES_F, ids=[f"{r:#010x}" for r in RANGES_F])
def test_softmax_and_logsumexp_measurements_are_the_exact_engines(make, function, lo):
    """As for log_softmax: counts exact, max ULP the exact engine's, against each
    function's own oracle (logsumexp: one element a pair); impl has no pair that is not
    correctly rounded, the wrong candidates have exactly the pairs they got wrong."""
    from conformance.functions._functions import function as function_of

    fn = make(function)
    n = 2048
    m = measure_range(fn, lo, lo + n, function=function, block=700)
    bits = np.arange(lo, lo + n, dtype=np.uint64).astype(np.uint32)
    x = pairs_of(bits)
    got = fn(x)
    res = function_of(function).evaluate(x, -1)
    err, cr = res.ulp_error(got), res.correctly_rounded(got)
    cr2 = cr.reshape(n, -1)
    counts = json.loads(m["counts"])
    assert counts["pairs"] == counts["pairs_scored"] == n == m["n_inputs"]
    assert m["n_elements"] == got.size == (n if function == "logsumexp" else 2 * n)
    assert counts["pairs_not_correctly_rounded"] == int((~cr2.all(axis=1)).sum())
    assert counts["elements_not_correctly_rounded"] == int((~cr).sum())
    assert m["frac_correctly_rounded"] == cr.mean()
    assert m["special_mismatches"] == sum(label == "other" for _, label in res.semantics(got))
    assert m["max_ulp"] == pytest.approx(float(err.max()), rel=0, abs=2.0**-20)
    assert m["mean_ulp"] == pytest.approx(float(err.mean()), rel=1e-6, abs=2.0**-20)
    assert counts["oracle_certified"] + counts["oracle_exact_engine"] == n
    assert sum(json.loads(m["hist"])) == got.size
    if make is _impl_of:
        assert counts["pairs_not_correctly_rounded"] == 0 and m["max_ulp"] <= 0.5
    if make is _flip_of:
        flips = _flipped(x, function)[1]
        assert counts["pairs_not_correctly_rounded"] == flips
        assert counts["elements_not_correctly_rounded"] == flips
    if m["max_ulp"] > 0.5:  # the worst pair reproduces, by the function's exact engine
        b = np.array([int(m["worst_where"].split("bits ")[-1], 16)], dtype=np.uint32)
        worst = function_of(function).evaluate(pairs_of(b), -1)
        assert float(worst.ulp_error(fn(pairs_of(b))).max()) == m["worst_ulp"]


def test_the_naive_forms_are_caught_where_exp_overflows():
    """v from 88.7 up: exp(v) overflows in float32, naive softmax gives NaN (inf/inf),
    naive logsumexp +inf; every such pair counts, and the max ULP is infinite."""
    lo = 0x42B20000  # 89.0
    for function in ("softmax", "logsumexp"):
        m = measure_range(_naive_of(function), lo, lo + 1000, function=function)
        counts = json.loads(m["counts"])
        assert counts["pairs_not_correctly_rounded"] == 1000 and m["max_ulp"] == float("inf")
        assert m["special_mismatches"] == 0  # finite v: not a special slice


def test_a_logsumexp_answer_of_two_elements_a_pair_is_unanswered():
    """logsumexp answers one element a pair: an (n, 2) answer (log_softmax's shape) is
    a finding, and its pairs unanswered; a softmax answer scored as log_softmax's is
    wrong everywhere (each function is judged by its own oracle)."""
    findings: list[str] = []
    m = measure_range(_impl, 0x3F800000, 0x3F800000 + 64, function="logsumexp",
                      findings=findings)  # fmt: skip
    assert json.loads(m["counts"])["unanswered_pairs"] == 64
    assert "logsumexp gives (64,)" in findings[0]
    m = measure_range(_impl_of("softmax"), 0x3F800000, 0x3F800000 + 64)
    assert json.loads(m["counts"])["pairs_not_correctly_rounded"] == 64


def test_the_self_check_is_the_functions(monkeypatch):
    """A certified path of softmax changed under the scorer fails its self-check; the
    same change leaves logsumexp's and log_softmax's alone."""
    import reference._pairs as pairs

    real = pairs._softmax_values
    monkeypatch.setattr(pairs, "_softmax_values", lambda vd: real(vd) * (1 + 2.0**-20))
    with pytest.raises(RuntimeError, match=r"self-check failed.*certified path of softmax"):
        measure_range(_impl_of("softmax"), 0x3F800000, 0x3F800000 + 4096, function="softmax")
    for function in ("logsumexp", "log_softmax"):
        measure_range(_impl_of(function), 0x3F800000, 0x3F800000 + 64, function=function)


def test_a_cell_scores_its_blocks_for_its_function(monkeypatch):
    """A chunk cell scored where it ran (no supervisor: _score.score) is scored for the
    cell's function: impl's softmax and logsumexp answers pass, and the same answers
    given to a cell of the other function do not (the wrong shape: unanswered)."""
    import conformance.functions._exhaustive as E
    from conformance.backends._invoke import encode
    from conformance.execution._cell import CellSpec, Raw
    from conformance.scoring._budgets import Budgets
    from conformance.scoring._score import score

    n = 4096
    monkeypatch.setattr(E, "BLOCK", n)  # block 0: the chunk's first n pairs, scored alone
    fam = family("exhaustive-f32:193")  # v from -8 down
    x = fam.stream.inputs(0)
    assert x.shape == (n, 2)
    for function, other in (("softmax", "logsumexp"), ("logsumexp", "softmax")):
        answer = encode(_impl_of(function)(x))
        for fn, ok in ((function, True), (other, False)):
            cell = CellSpec(candidate("impl", fn), backend("numpy:cpu"), "float32", fam, "quick")
            rec = score(cell, Raw(outputs=[answer]), [], reference.evaluate, Budgets.load())
            assert (rec["status"] == "pass") is ok, (function, fn, rec["reason"])
            c = json.loads(rec["counts"])
            assert rec["function"] == fn and c["pairs_scored"] == (n if ok else 0)
            if ok:
                assert c["pairs_not_correctly_rounded"] == 0 and rec["max_ulp"] <= 0.5
            else:
                assert f"{n} of {2**24} pairs unanswered" in rec["reason"]


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
import conformance.functions._exhaustive as E
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


@pytest.mark.extended  # four chunks of 2^24 pairs: 24 s here
def test_softmax_and_logsumexp_chunks_run_as_cells_of_a_sweep(tmp_path):
    """v from 32 to 128 (exp(v) overflows float32 from 88.7 on), through the
    supervisor's scorers: impl's softmax and logsumexp pass with every pair correctly
    rounded; the naive forms fail there with exactly the pairs past the overflow
    (naive softmax's inf / inf is NaN, naive logsumexp's log(inf) is inf). The report
    names each function's rows."""
    naive = {
        f: Candidate(f"conformance.functions._candidates:naive_{f}",
                     f"conformance.functions._candidates:naive_{f}", function=f)
        for f in ("softmax", "logsumexp")
    }  # fmt: skip
    cfg = RunConfig(
        candidates=[candidate("impl", "softmax"), candidate("impl", "logsumexp"), *naive.values()],
        backends=[backend("numpy:cpu")], dtypes=["float32"],
        families=[family("exhaustive-f32:066")], jobs=2,
        results=tmp_path / "r", cache=tmp_path / "cache", progress=False,
    )  # fmt: skip
    table = run(cfg, log=lambda s: None).set_index(["function", "candidate"])
    assert len(table) == 4
    over = int(np.float32(np.log(np.finfo(np.float32).max)).view(np.uint32)) + 1 - 0x42000000
    for f in ("softmax", "logsumexp"):
        ours, bad = table.loc[(f, "impl")], table.loc[(f, naive[f].name)]
        c = json.loads(ours.counts)
        assert ours.status == "pass" and ours.max_ulp <= 0.5
        assert c["pairs_not_correctly_rounded"] == 0
        assert ours.n_elements == (2**24 if f == "logsumexp" else 2**25)
        assert c["oracle_exact_engine"] < 1000
        b = json.loads(bad.counts)
        assert bad.status == "fail" and b["pairs_not_correctly_rounded"] >= 2**24 - over
    from conformance.reporting._report import write_report

    write_report(tmp_path / "r", tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "softmax/impl (numpy:cpu): 0 of 16,777,216 pairs [0, v]" in readme
    assert "logsumexp/impl (numpy:cpu): 0 of 16,777,216 pairs [0, v]" in readme
    page = (tmp_path / "out" / "exhaustive-f32.md").read_text()
    assert "| `logsumexp/impl` | logsumexp |" in page


def _report_has_the_figures(tmp_path: Path, table: Any) -> None:
    from conformance._cli import main
    from conformance.reporting._report import write_report

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
    from conformance.execution._cell import CellSpec, Raw
    from conformance.scoring._budgets import Budgets
    from conformance.scoring._score import score

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
