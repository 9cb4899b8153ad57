"""The exhaustive float32 family: the pair ``[0, v]`` for every one of the 2**32 float32
bit patterns v (every finite value, both infinities, every NaN), reduced over its two
entries. Its outputs, -log1p(exp(-|v|)) and -|v| - log1p(exp(-|v|)), are the saturating
region this project exists for.

The 2**32 values are split into ``N_CHUNKS`` chunks of 2**24 consecutive bit patterns;
each chunk is a family of its own, ``exhaustive-f32:K`` (K = 0 .. 255, the top byte of
v's bits), so each is a cell: it resumes, and cells spread over workers. ``--families
exhaustive-f32`` stands for every chunk, ``exhaustive-f32:0-15`` for some.

A chunk is a stream (:class:`Chunk`): the worker calls the candidate on its blocks of
``BLOCK`` pairs, one after another (through the same ``invoke`` as every family: the
backend's arrays, the output checks, the floating-point guard), and sends each block's
answers to the supervisor as it has them. The worker scores nothing: a candidate runs
in that process and could change the scorer. The supervisor hands each block to a pool
of scoring processes of its own (no candidate code runs there; :func:`score_block`),
which compute the correctly rounded answer of each pair with the oracle's certified
path (``reference.log_softmax_pairs``: every pair it cannot certify goes to the exact
engine) and compare them; the blocks' tallies are merged in order
(:func:`summarize`):

- *pairs not correctly rounded* and *elements not correctly rounded* are exact counts
  (a comparison with the correctly rounded value);
- the ULP error of each element is measured against the float64 values of
  ``reference.pair_values`` (within 2**-44 relatively of the exact ones: within 2**-20
  ULP of the exact error), for the histogram and the mean; an element correctly
  rounded counts at most 0.5 ULP, one that is not at least 0.5;
- the ``TOP`` worst pairs of the chunk (by that measure, and by the absolute error) are
  measured again by the exact engine: the cell's max ULP, max absolute error and worst
  pair are the exact engine's (where pairs tie within 2**-20 ULP, as many correctly
  rounded ones near 0.5 do, the max is exact for the pair reported and within 2**-20
  ULP of the range's);
- pairs with v = NaN must give NaN at both entries, and v = +-inf one of the
  specification's accepted answers (the exact engine's special slices); anything else
  is a special mismatch;
- before the first block is scored, ``SELF_CHECK`` pairs of the chunk drawn at random
  (seeded by the chunk) are computed by the exact engine as well and must agree bit for
  bit with the certified path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

import reference

from ._invoke import Encoded, decode

__all__ = [
    "BLOCK",
    "CHUNK_BITS",
    "NAME",
    "N_CHUNKS",
    "Chunk",
    "chunk_doc",
    "measure_range",
    "pairs_of",
    "parse_chunks",
    "score_block",
    "summarize",
]  # fmt: skip

NAME = "exhaustive-f32"
CHUNK_BITS = 24
N_CHUNKS = 1 << (32 - CHUNK_BITS)
BLOCK = 1 << 20  # pairs a call (8 MiB of input): memory, not speed
TOP = 8
SELF_CHECK = 64

# the histogram's bins (as the other families': [0, 2^-8), powers of two, [2^64, inf])
_N_BINS = 74
_F32 = reference.FORMATS["float32"]
_FMAX = float(np.finfo(np.float64).max)


def parse_chunks(selection: str) -> list[int]:
    """The chunks a selection names: "" (all), "K", "J-K", joined by "+"."""
    if not selection:
        return list(range(N_CHUNKS))
    out: list[int] = []
    for part in selection.split("+"):
        lo_s, _, hi_s = part.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s or lo_s)
        except ValueError:
            raise KeyError(
                f"{NAME}:{selection}: chunks are numbers 0..{N_CHUNKS - 1}, as K, J-K or J-K+L"
            ) from None
        if not 0 <= lo <= hi < N_CHUNKS:
            raise KeyError(f"{NAME}:{selection}: chunks are 0..{N_CHUNKS - 1}, J <= K")
        out += [k for k in range(lo, hi + 1) if k not in out]
    return out


def chunk_doc(k: int) -> str:
    lo = k << CHUNK_BITS
    return f"[0, v] for the float32 bits {lo:#010x}..{lo + (1 << CHUNK_BITS) - 1:#010x}"


@dataclass(frozen=True)
class Chunk:
    """Chunk k as a stream of blocks: what the worker calls the candidate on, block by
    block, and how the supervisor's scorers judge each block's answers."""

    k: int

    @property
    def label(self) -> str:
        return f"{NAME}:{self.k:03d}"

    @property
    def n_blocks(self) -> int:
        return -(-(1 << CHUNK_BITS) // BLOCK)

    def bits(self, i: int) -> NDArray[np.uint32]:
        lo = (self.k << CHUNK_BITS) + i * BLOCK
        hi = min((self.k + 1) << CHUNK_BITS, lo + BLOCK)
        return np.arange(lo, hi, dtype=np.uint64).astype(np.uint32)

    def inputs(self, i: int) -> NDArray[np.float32]:
        return pairs_of(self.bits(i))

    def score(self, i: int, enc: Encoded | None) -> tuple[_Tally, list[str]]:
        return score_block(self.k, i, enc)

    def summary(
        self, parts: Sequence[tuple[_Tally, list[str]]]
    ) -> tuple[dict[str, Any], list[str]]:
        return summarize(self.k, parts)


def score_block(k: int, i: int, enc: Encoded | None) -> tuple[_Tally, list[str]]:
    """Block i of chunk k, answered ``enc`` (None: not answered): its tally and the
    findings about the answer (a wrong shape or dtype). Runs in a scoring process."""
    c = Chunk(k)
    if i == 0:
        lo = k << CHUNK_BITS
        _self_check(lo, lo + (1 << CHUNK_BITS), k)
    t, findings = _Tally(), list[str]()
    bits = c.bits(i)
    _tally(t, bits, pairs_of(bits), None if enc is None else decode(enc), findings)
    return t, findings


def summarize(
    k: int, parts: Sequence[tuple[_Tally, list[str]]]
) -> tuple[dict[str, Any], list[str]]:
    """The record fields of chunk k from its blocks' tallies (in block order), and their
    findings."""
    t, findings = _Tally(), []
    for part, said in parts:
        t.merge(part)
        findings += said
    return _summary(t, 1 << CHUNK_BITS), findings


def pairs_of(bits: NDArray[np.uint32]) -> NDArray[np.float32]:
    """The inputs [0, v] of the given float32 bit patterns, shape (n, 2)."""
    x = np.zeros((bits.size, 2), dtype=np.float32)
    x[:, 1] = bits.view(np.float32)
    return x


def _ulp32(y: NDArray[np.float64]) -> NDArray[np.float64]:
    e = np.frexp(y)[1].astype(np.int64) - 1  # floor(log2 |y|); frexp(0) gives 0
    e = np.where(y == 0, _F32.emin, e)
    return np.ldexp(1.0, (np.maximum(e, _F32.emin) - (_F32.precision - 1)).astype(np.int32))


def _bins(err: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts per bin: [0, 2^-8), [2^k, 2^(k+1)) for k = -8 .. 63, [2^64, inf]."""
    fe = np.frexp(err)[1]  # err in [2^(fe-1), 2^fe); frexp(inf) is (inf, 0)
    j = np.minimum(np.maximum(fe + 8, 0), _N_BINS - 1)
    j[err < 2.0**-8] = 0
    j[np.isinf(err)] = _N_BINS - 1
    return np.bincount(j, minlength=_N_BINS)


class _Tally:
    def __init__(self) -> None:
        self.pairs = self.pairs_bad = self.elems_bad = self.special = 0
        self.unanswered = 0
        self.oracle: dict[str, int] = {}
        self.hist = np.zeros(_N_BINS, dtype=np.int64)
        self.sum_err = 0.0
        self.n_err = 0
        self.semantics: dict[str, str] = {}
        # candidates for the worst: (estimate, bits, got0, got1), by ULP and by abs error
        self.top: list[tuple[float, int, float, float]] = []
        self.top_abs: list[tuple[float, int, float, float]] = []

    def merge(self, o: _Tally) -> None:
        """Add a later block's tally (the same as having scored its block here)."""
        self.pairs += o.pairs
        self.pairs_bad += o.pairs_bad
        self.elems_bad += o.elems_bad
        self.special += o.special
        self.unanswered += o.unanswered
        for name, n in o.oracle.items():
            self.oracle[name] = self.oracle.get(name, 0) + n
        self.hist += o.hist
        self.sum_err += o.sum_err
        self.n_err += o.n_err
        for case, label in o.semantics.items():
            if self.semantics.get(case) != "other":
                self.semantics[case] = label
        for mine, theirs in ((self.top, o.top), (self.top_abs, o.top_abs)):
            mine += theirs
            mine.sort(key=lambda e: (-e[0], e[1]))
            del mine[TOP:]

    @staticmethod
    def _keep(
        into: list[tuple[float, int, float, float]], score: NDArray[np.float64],
        bits: NDArray[np.uint32], got: NDArray[Any],
    ) -> None:  # fmt: skip
        n = min(TOP, score.size)
        if n == 0:
            return
        idx = np.argpartition(-score, n - 1)[:n]
        into += [(float(score[i]), int(bits[i]), float(got[i, 0]), float(got[i, 1])) for i in idx]
        into.sort(key=lambda t: (-t[0], t[1]))
        del into[TOP:]


def measure_range(
    call: Callable[[NDArray[np.float32]], NDArray[Any] | None], lo: int, hi: int,
    *, block: int = BLOCK, seed: int = 0, findings: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Call ``call`` on the pairs [0, v] for v's bits in [lo, hi), block by block, and
    score every output: the fields of a cell record (see the module's docstring). A
    wrong shape or dtype is a finding (appended to ``findings``), as in every family."""
    said = findings if findings is not None else []
    if not 0 <= lo < hi <= 1 << 32:
        raise ValueError(f"bits {lo:#x}..{hi:#x}: a range within 0..2**32 is needed")
    _self_check(lo, hi, seed)
    t = _Tally()
    for start in range(lo, hi, block):
        bits = np.arange(start, min(hi, start + block), dtype=np.uint64).astype(np.uint32)
        x = pairs_of(bits)
        _tally(t, bits, x, call(x.copy()), said)
    return _summary(t, hi - lo)


def _tally(
    t: _Tally, bits: NDArray[np.uint32], x: NDArray[np.float32], got: NDArray[Any] | None,
    said: list[str],
) -> None:  # fmt: skip
    """One block's answers into the tally; a wrong shape or dtype is a finding."""
    if got is not None and got.shape != x.shape:
        said.append(f"returned shape {got.shape} for {x.shape} ({NAME})")
    if got is None or got.shape != x.shape:
        t.unanswered += bits.size
        return
    if got.dtype != np.float32:
        said.append(f"returned {got.dtype} for float32 input")
        if got.dtype.kind not in "fV":
            t.unanswered += bits.size
            return
        with np.errstate(all="ignore"):
            got = got.astype(np.float64).astype(np.float32)
    _score_block(t, bits, x[:, 1], got)


def _self_check(lo: int, hi: int, seed: int) -> None:
    """SELF_CHECK pairs of the range (and its ends) by the exact engine and by the
    certified path: bit for bit the same, or the oracle cannot be trusted here."""
    rng = np.random.default_rng(seed)
    pick = np.unique(np.concatenate([rng.integers(lo, hi, SELF_CHECK), [lo, hi - 1]]))
    bits = pick.astype(np.uint32)
    v = bits.view(np.float32)
    fin = np.isfinite(v)
    if not fin.any():
        return
    fast = reference.log_softmax_pairs(v[fin])
    exact = reference.evaluate(pairs_of(bits[fin]), -1).expected
    same = (fast.view(np.uint32) == exact.view(np.uint32)).all(axis=1)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise RuntimeError(
            f"the oracle's self-check failed in this worker: for v = {float(v[fin][i])!r} "
            f"({int(bits[fin][i]):#010x}) the certified path gives {fast[i].tolist()} and the "
            f"exact engine {exact[i].tolist()}; nothing was scored"
        )


def _score_block(
    t: _Tally, bits: NDArray[np.uint32], v: NDArray[np.float32], got: NDArray[np.float32]
) -> None:
    n = bits.size
    t.pairs += n
    expected = reference.log_softmax_pairs(v, counts=t.oracle)
    nan_v, inf_v = np.isnan(v), np.isinf(v)
    fin = ~(nan_v | inf_v)
    all_fin = bool(fin.all())
    # columns, not reductions over an axis of two (NumPy's are slow there)
    g0, g1 = got[:, 0], got[:, 1]
    with np.errstate(all="ignore"):
        same0 = (g0 == expected[:, 0]) | (np.isnan(g0) & np.isnan(expected[:, 0]))
        same1 = (g1 == expected[:, 1]) | (np.isnan(g1) & np.isnan(expected[:, 1]))
        err0, err1 = np.zeros(n), np.zeros(n)
        eps = np.zeros(n)
        if not all_fin:
            # NaN in the slice: NaN at both entries, nothing else is accepted
            bad_nan = nan_v & ~(np.isnan(g0) & np.isnan(g1))
            err0[bad_nan] = err1[bad_nan] = eps[bad_nan] = np.inf
            t.special += int(bad_nan.sum())
        if inf_v.any():  # the specification's accepted answers, from the exact engine
            rows = np.flatnonzero(inf_v)
            res = reference.evaluate(pairs_of(bits[rows]), -1)
            e_inf, ok_inf = res.ulp_error(got[rows]), res.correctly_rounded(got[rows])
            err0[rows], err1[rows] = e_inf[:, 0], e_inf[:, 1]
            same0[rows], same1[rows] = ok_inf[:, 0], ok_inf[:, 1]
            eps[rows] = res.abs_error_eps(got[rows]).max(axis=1)
            for case, label in res.semantics(got[rows]):
                if label == "other":
                    t.special += 1
                if t.semantics.get(case) != "other":
                    t.semantics[case] = label
        y = reference.pair_values(v if all_fin else v[fin])
        for col, err, same in ((0, err0, same0), (1, err1, same1)):
            g = got[:, col] if all_fin else got[fin, col]
            g = g.astype(np.float64)
            d = np.abs(g - y[:, col])
            e = np.where(np.isfinite(g), np.minimum(d / _ulp32(y[:, col]), _FMAX), np.inf)
            s = same if all_fin else same[fin]
            # exact facts bound the estimate: correctly rounded is <= 0.5 ULP, else >= 0.5
            e = np.where(s, np.minimum(e, 0.5), np.maximum(e, 0.5))
            a = np.where(np.isfinite(g), d / _F32.eps, np.inf)
            if all_fin:
                err[:] = e
                np.maximum(eps, a, out=eps)
            else:
                err[fin] = e
                eps[fin] = np.maximum(eps[fin], a)
    bad_pair = ~(same0 & same1)
    t.pairs_bad += int(np.count_nonzero(bad_pair))
    t.elems_bad += 2 * n - int(np.count_nonzero(same0)) - int(np.count_nonzero(same1))
    for err in (err0, err1):
        t.hist += _bins(err)
        t.sum_err += float(np.sum(err))  # inf where any error is (as the other families')
        t.n_err += n
    t._keep(t.top, np.maximum(err0, err1), bits, got)
    t._keep(t.top_abs, eps, bits, got)


def _exact(entries: list[tuple[float, int, float, float]]) -> list[dict[str, Any]]:
    """Each entry's pair measured by the exact engine: its ULP error (the larger of its
    two elements'), absolute error in eps, and the element that is worse."""
    if not entries:
        return []
    bits = np.array([e[1] for e in entries], dtype=np.uint32)
    got = np.array([[e[2], e[3]] for e in entries], dtype=np.float32)
    res = reference.evaluate(pairs_of(bits), -1)
    ulp, eps = res.ulp_error(got), res.abs_error_eps(got)
    out = []
    for i in range(len(entries)):
        j = int(np.argmax(ulp[i]))
        out.append({
            "ulp": float(ulp[i, j]), "eps": float(np.max(eps[i])), "bits": int(bits[i]),
            "expected": float(res.expected[i, j]), "got": float(got[i, j]),
        })  # fmt: skip
    return out


def _summary(t: _Tally, total: int) -> dict[str, Any]:
    answered = t.pairs
    out: dict[str, Any] = {
        "n_inputs": answered,
        "n_elements": 2 * answered,
        "special_mismatches": t.special,
        "semantics": json.dumps(t.semantics, sort_keys=True),
        "hist": json.dumps(t.hist.tolist()),
        "out_dtype": "float32",
    }
    counts: dict[str, Any] = {
        "pairs": total,
        "pairs_scored": answered,
        "pairs_not_correctly_rounded": t.pairs_bad,
        "elements_not_correctly_rounded": t.elems_bad,
        "special_mismatch_pairs": t.special,
        "unanswered_pairs": t.unanswered,
        "oracle_certified": t.oracle.get("fast", 0),
        "oracle_exact_engine": t.oracle.get("exact", 0),
    }
    if answered:
        worst = sorted(_exact(t.top), key=lambda w: (-w["ulp"], w["bits"]))
        worst_abs = _exact(t.top_abs)
        w = worst[0]
        out.update(
            max_ulp=w["ulp"],
            mean_ulp=t.sum_err / t.n_err,
            frac_correctly_rounded=1.0 - t.elems_bad / (2 * answered),
            max_abs_err_eps=max(x["eps"] for x in worst + worst_abs),
            worst_where=f"conformance._exhaustive.pairs_of(np.array([{w['bits']:#010x}], "
            f"dtype=np.uint32)): [0, v] with v's float32 bits {w['bits']:#010x}",
            worst_input=json.dumps(
                [(0.0).hex(), float(np.uint32(w["bits"]).view(np.float32)).hex()]
            ),
            worst_expected=w["expected"],
            worst_got=w["got"],
            worst_ulp=w["ulp"],
        )
        counts["worst"] = [
            {"bits": f"{x['bits']:#010x}", "ulp": x["ulp"]} for x in worst if x["ulp"] > 0.5
        ]
    out["counts"] = json.dumps(counts, sort_keys=True)
    return out
