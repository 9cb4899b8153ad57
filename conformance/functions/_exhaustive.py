"""The exhaustive float32 family: the pair ``[0, v]`` for every one of the 2**32 float32
bit patterns v (every finite value, both infinities, every NaN), reduced over its two
entries, for each function. log_softmax's outputs, -log1p(exp(-|v|)) and -|v| -
log1p(exp(-|v|)), are the saturating region this project exists for; softmax's are
1 / (1 + exp(-|v|)) and exp(-|v|) / (1 + exp(-|v|)) (the second through float32's
subnormals and underflow), logsumexp's one answer a pair max(0, v) + log1p(exp(-|v|)).

The 2**32 values are split into ``N_CHUNKS`` chunks of 2**24 consecutive bit patterns;
each chunk is a family of its own, ``exhaustive-f32:K`` (K = 0 .. 255, the top byte of
v's bits), so each is a cell: it resumes, and cells spread over workers. ``--families
exhaustive-f32`` stands for every chunk, ``exhaustive-f32:0-15`` for some.

A chunk is a stream (:class:`Chunk`), the same for every function (a cell is a chunk
and a candidate, and a candidate is of one function): the worker calls the candidate on
its blocks of ``BLOCK`` pairs, one after another (through the same ``invoke`` as every family: the
backend's arrays, the output checks, the floating-point guard), and sends each block's
answers to the supervisor as it has them. The worker scores nothing: a candidate runs
in that process and could change the scorer. The supervisor hands each block to a pool
of scoring processes of its own (no candidate code runs there; :func:`score_block`),
which compute the correctly rounded answer of each pair with the oracle's certified
path of the cell's function (``reference._pairs``: ``log_softmax_pairs``,
``softmax_pairs``, ``logsumexp_pairs``; every pair it cannot certify goes to the exact
engine) and compare them; the blocks' tallies are merged in order (:func:`summarize`).
The function is the cell's, handed to :meth:`Chunk.score` and :meth:`Chunk.summary` by
the supervisor (never by the worker, where the candidate runs); logsumexp's answer is
one element a pair (shape ``(n,)``), the others' two (``(n, 2)``):

- *pairs not correctly rounded* and *elements not correctly rounded* are exact counts
  (a comparison with the correctly rounded value);
- the ULP error of each element is measured against the float64 values of
  ``reference.pair_values(v, function)`` (within 2**-44 relatively of the exact ones: within 2**-20
  ULP of the exact error), for the histogram and the mean; an element correctly
  rounded counts at most 0.5 ULP, one that is not at least 0.5;
- the ``TOP`` worst pairs of the chunk (by that measure, and by the absolute error) are
  measured again by the exact engine: the cell's max ULP, max absolute error and worst
  pair are the exact engine's (where pairs tie within 2**-20 ULP, as many correctly
  rounded ones near 0.5 do, the max is exact for the pair reported and within 2**-20
  ULP of the range's);
- pairs with v = NaN must give NaN (at both entries), and v = +-inf one of the
  specification's accepted answers (the exact engine's special slices); anything else
  is a special mismatch (logsumexp has no special slices: its NaN, +inf and 0 are
  regular answers, and any other answer an infinite error);
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
from reference import _pairs

from ..backends._invoke import Encoded, decode

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
DEFAULT_FUNCTION = "log_softmax"  # where a caller names none (the scorers before softmax's)


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
class _Oracle:
    """A function's oracle for the pairs: its certified path, its exact engine, how
    many elements an answer has a pair (2, or logsumexp's 1), and whether a slice
    with NaN is one of its special slices (log_softmax's and softmax's: an answer
    other than NaN is a special mismatch; logsumexp's NaN is its regular answer, and
    any other an infinite error, as the exact engine scores it)."""

    pairs: Callable[..., NDArray[Any]]
    evaluate: Callable[[Any, Any], Any]
    columns: int
    nan_special: bool = True
    # softmax's outputs lie in binades the float64 values can leave (see _units)
    sigmoid: bool = False


def _oracle(function: str) -> _Oracle:
    # looked up at each call (reference._pairs' attributes: a test may replace them)
    if function == "log_softmax":
        return _Oracle(_pairs.log_softmax_pairs, reference.evaluate, 2)
    if function == "softmax":
        return _Oracle(_pairs.softmax_pairs, reference.evaluate_softmax, 2, sigmoid=True)
    if function == "logsumexp":
        return _Oracle(_pairs.logsumexp_pairs, reference.evaluate_logsumexp, 1, False)
    raise KeyError(f"{NAME} has no oracle for {function!r}")


def _answer_shape(function: str, n: int) -> tuple[int, ...]:
    return (n,) if _oracle(function).columns == 1 else (n, 2)


@dataclass(frozen=True)
class Chunk:
    """Chunk k as a stream of blocks: what the worker calls the candidate on, block by
    block, and how the supervisor's scorers judge each block's answers (for the cell's
    function, which the supervisor passes: the inputs are every function's)."""

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

    def score(
        self, i: int, enc: Encoded | None, function: str = DEFAULT_FUNCTION
    ) -> tuple[_Tally, list[str]]:
        return score_block(self.k, i, enc, function)

    def summary(
        self, parts: Sequence[tuple[_Tally, list[str]]], function: str = DEFAULT_FUNCTION
    ) -> tuple[dict[str, Any], list[str]]:
        return summarize(self.k, parts, function)


def score_block(
    k: int, i: int, enc: Encoded | None, function: str = DEFAULT_FUNCTION
) -> tuple[_Tally, list[str]]:
    """Block i of chunk k, answered ``enc`` (None: not answered) by a candidate of
    ``function``: its tally and the findings about the answer (a wrong shape or
    dtype). Runs in a scoring process."""
    c = Chunk(k)
    if i == 0:
        lo = k << CHUNK_BITS
        _self_check(lo, lo + (1 << CHUNK_BITS), k, function)
    t, findings = _Tally(), list[str]()
    bits = c.bits(i)
    got = None if enc is None else decode(enc)
    _tally(t, bits, pairs_of(bits), got, findings, function)
    return t, findings


def summarize(
    k: int, parts: Sequence[tuple[_Tally, list[str]]], function: str = DEFAULT_FUNCTION
) -> tuple[dict[str, Any], list[str]]:
    """The record fields of chunk k from its blocks' tallies (in block order), and their
    findings."""
    t, findings = _Tally(), []
    for part, said in parts:
        t.merge(part)
        findings += said
    return _summary(t, 1 << CHUNK_BITS, function), findings


def pairs_of(bits: NDArray[np.uint32]) -> NDArray[np.float32]:
    """The inputs [0, v] of the given float32 bit patterns, shape (n, 2)."""
    x = np.zeros((bits.size, 2), dtype=np.float32)
    x[:, 1] = bits.view(np.float32)
    return x


def _ulp32(y: NDArray[np.float64]) -> NDArray[np.float64]:
    e = np.frexp(y)[1].astype(np.int64) - 1  # floor(log2 |y|); frexp(0) gives 0
    e = np.where(y == 0, _F32.emin, e)
    return np.ldexp(1.0, (np.maximum(e, _F32.emin) - (_F32.precision - 1)).astype(np.int32))


def _units(y: NDArray[np.float64], v: NDArray[np.float32]) -> NDArray[np.float64]:
    """The ULP of each softmax output (shape (n, 2)) in the binade of its exact value,
    which the float64 value can leave by rounding onto a power of two: the larger
    entry's 1 / (1 + t) lies in [1/2, 1) (its float64 value is 1.0 from |v| > 37 on),
    the other's t / (1 + t) below 1/2 but for v = 0 (its float64 value is 1/2 for
    |v| < 2**-53). Elsewhere a float64 value within 2**-44 of a power of two is rare,
    and its ULP (the estimate's only) may be twice or half the exact one's."""
    larger = np.stack([v <= 0, v > 0], axis=1)
    small = np.where(v != 0, 0.5 - 2.0**-54, 0.5)[:, None]  # the largest double below 1/2
    return np.where(larger, _F32.eps / 2, _ulp32(np.minimum(y, small)))


def _bins(err: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts per bin: [0, 2^-8), [2^k, 2^(k+1)) for k = -8 .. 63, [2^64, inf]."""
    fe = np.frexp(err)[1]  # err in [2^(fe-1), 2^fe); frexp(inf) is (inf, 0)
    j = np.minimum(np.maximum(fe + 8, 0), _N_BINS - 1)
    j[err < 2.0**-8] = 0
    j[np.isinf(err)] = _N_BINS - 1
    return np.bincount(j, minlength=_N_BINS)


# a candidate for the worst: (estimate, bits, the pair's answer: two elements or one)
_Entry = tuple[float, int, tuple[float, ...]]


class _Tally:
    def __init__(self) -> None:
        self.pairs = self.pairs_bad = self.elems_bad = self.special = 0
        self.unanswered = 0
        self.oracle: dict[str, int] = {}
        self.hist = np.zeros(_N_BINS, dtype=np.int64)
        self.sum_err = 0.0
        self.n_err = 0
        self.semantics: dict[str, str] = {}
        # candidates for the worst, by ULP and by abs error
        self.top: list[_Entry] = []
        self.top_abs: list[_Entry] = []

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
        into: list[_Entry], score: NDArray[np.float64], bits: NDArray[np.uint32],
        got: NDArray[Any],
    ) -> None:  # fmt: skip
        """Keep the TOP highest scores (``got``: the answers, shape (n, columns))."""
        n = min(TOP, score.size)
        if n == 0:
            return
        idx = np.argpartition(-score, n - 1)[:n]
        into += [(float(score[i]), int(bits[i]), tuple(map(float, got[i]))) for i in idx]
        into.sort(key=lambda t: (-t[0], t[1]))
        del into[TOP:]


def measure_range(
    call: Callable[[NDArray[np.float32]], NDArray[Any] | None], lo: int, hi: int,
    *, function: str = DEFAULT_FUNCTION, block: int = BLOCK, seed: int = 0,
    findings: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Call ``call`` (a candidate of ``function``) on the pairs [0, v] for v's bits in
    [lo, hi), block by block, and score every output: the fields of a cell record (see
    the module's docstring). A wrong shape or dtype is a finding (appended to
    ``findings``), as in every family."""
    said = findings if findings is not None else []
    if not 0 <= lo < hi <= 1 << 32:
        raise ValueError(f"bits {lo:#x}..{hi:#x}: a range within 0..2**32 is needed")
    _oracle(function)  # a function it has no oracle for: KeyError before any call
    _self_check(lo, hi, seed, function)
    t = _Tally()
    for start in range(lo, hi, block):
        bits = np.arange(start, min(hi, start + block), dtype=np.uint64).astype(np.uint32)
        x = pairs_of(bits)
        _tally(t, bits, x, call(x.copy()), said, function)
    return _summary(t, hi - lo, function)


def _tally(
    t: _Tally, bits: NDArray[np.uint32], x: NDArray[np.float32], got: NDArray[Any] | None,
    said: list[str], function: str,
) -> None:  # fmt: skip
    """One block's answers into the tally; a wrong shape or dtype is a finding."""
    want = _answer_shape(function, bits.size)
    if got is not None and got.shape != want:
        said.append(
            f"returned shape {got.shape} for {x.shape} ({NAME})"
            if want == x.shape
            else f"returned shape {got.shape} for {x.shape} ({NAME}: {function} gives {want})"
        )
    if got is None or got.shape != want:
        t.unanswered += bits.size
        return
    if got.dtype != np.float32:
        said.append(f"returned {got.dtype} for float32 input")
        if got.dtype.kind not in "fV":
            t.unanswered += bits.size
            return
        with np.errstate(all="ignore"):
            got = got.astype(np.float64).astype(np.float32)
    _score_block(t, bits, x[:, 1], got, function)


def _self_check(lo: int, hi: int, seed: int, function: str = DEFAULT_FUNCTION) -> None:
    """SELF_CHECK pairs of the range (and its ends) by the exact engine and by the
    certified path: bit for bit the same, or the oracle cannot be trusted here."""
    rng = np.random.default_rng(seed)
    pick = np.unique(np.concatenate([rng.integers(lo, hi, SELF_CHECK), [lo, hi - 1]]))
    bits = pick.astype(np.uint32)
    v = bits.view(np.float32)
    fin = np.isfinite(v)
    if not fin.any():
        return
    o = _oracle(function)
    fast = o.pairs(v[fin]).reshape(-1, o.columns)
    exact = o.evaluate(pairs_of(bits[fin]), -1).expected.reshape(-1, o.columns)
    same = (fast.view(np.uint32) == exact.view(np.uint32)).all(axis=1)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise RuntimeError(
            f"the oracle's self-check failed in this worker: for v = {float(v[fin][i])!r} "
            f"({int(bits[fin][i]):#010x}) the certified path of {function} gives "
            f"{fast[i].tolist()} and the exact engine {exact[i].tolist()}; nothing was scored"
        )


def _score_block(
    t: _Tally, bits: NDArray[np.uint32], v: NDArray[np.float32], got: NDArray[np.float32],
    function: str = DEFAULT_FUNCTION,
) -> None:  # fmt: skip
    n = bits.size
    o = _oracle(function)
    cols = o.columns
    t.pairs += n
    expected = o.pairs(v, counts=t.oracle).reshape(n, cols)
    answer = got  # in the function's shape: (n, 2), or logsumexp's (n,)
    got = got.reshape(n, cols)
    nan_v, inf_v = np.isnan(v), np.isinf(v)
    fin = ~(nan_v | inf_v)
    all_fin = bool(fin.all())
    # columns, not reductions over an axis of two (NumPy's are slow there)
    sames, errs = [], []
    with np.errstate(all="ignore"):
        for col in range(cols):
            g, e = got[:, col], expected[:, col]
            sames.append((g == e) | (np.isnan(g) & np.isnan(e)))
            errs.append(np.zeros(n))
        eps = np.zeros(n)
        if not all_fin:
            # NaN in the slice: NaN at every entry, nothing else is accepted
            bad_nan = nan_v & ~np.isnan(got).all(axis=1)
            for err in errs:
                err[bad_nan] = np.inf
            eps[bad_nan] = np.inf
            if o.nan_special:
                t.special += int(bad_nan.sum())
        if inf_v.any():  # the specification's accepted answers, from the exact engine
            rows = np.flatnonzero(inf_v)
            res = o.evaluate(pairs_of(bits[rows]), -1)
            mine = answer[rows]
            e_inf = res.ulp_error(mine).reshape(-1, cols)
            ok_inf = res.correctly_rounded(mine).reshape(-1, cols)
            for col in range(cols):
                errs[col][rows], sames[col][rows] = e_inf[:, col], ok_inf[:, col]
            eps[rows] = res.abs_error_eps(mine).reshape(-1, cols).max(axis=1)
            for case, label in res.semantics(mine):
                if label == "other":
                    t.special += 1
                if t.semantics.get(case) != "other":
                    t.semantics[case] = label
        y = _pairs.pair_values(v if all_fin else v[fin], function).reshape(-1, cols)
        unit = _units(y, v if all_fin else v[fin]) if o.sigmoid else _ulp32(y)
        for col, err, same in zip(range(cols), errs, sames, strict=True):
            g = got[:, col] if all_fin else got[fin, col]
            g = g.astype(np.float64)
            d = np.abs(g - y[:, col])
            e = np.where(np.isfinite(g), np.minimum(d / unit[:, col], _FMAX), np.inf)
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
    good = sames[0].copy()
    for same in sames[1:]:
        good &= same
    t.pairs_bad += n - int(np.count_nonzero(good))
    t.elems_bad += cols * n - sum(int(np.count_nonzero(same)) for same in sames)
    for err in errs:
        t.hist += _bins(err)
        t.sum_err += float(np.sum(err))  # inf where any error is (as the other families')
        t.n_err += n
    worst = errs[0] if cols == 1 else np.maximum(errs[0], errs[1])
    t._keep(t.top, worst, bits, got)
    t._keep(t.top_abs, eps, bits, got)


def _exact(entries: list[_Entry], function: str) -> list[dict[str, Any]]:
    """Each entry's pair measured by the exact engine: its ULP error (the larger of its
    elements'), absolute error in eps, and the element that is worse."""
    if not entries:
        return []
    o = _oracle(function)
    bits = np.array([e[1] for e in entries], dtype=np.uint32)
    got = np.array([e[2] for e in entries], dtype=np.float32).reshape(
        _answer_shape(function, len(entries))
    )
    res = o.evaluate(pairs_of(bits), -1)
    k = len(entries)
    ulp = res.ulp_error(got).reshape(k, o.columns)
    eps = res.abs_error_eps(got).reshape(k, o.columns)
    expected, got = res.expected.reshape(k, o.columns), got.reshape(k, o.columns)
    out = []
    for i in range(k):
        j = int(np.argmax(ulp[i]))
        out.append({
            "ulp": float(ulp[i, j]), "eps": float(np.max(eps[i])), "bits": int(bits[i]),
            "expected": float(expected[i, j]), "got": float(got[i, j]),
        })  # fmt: skip
    return out


def _summary(t: _Tally, total: int, function: str = DEFAULT_FUNCTION) -> dict[str, Any]:
    answered = t.pairs
    cols = _oracle(function).columns
    out: dict[str, Any] = {
        "n_inputs": answered,
        "n_elements": cols * answered,
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
        worst = sorted(_exact(t.top, function), key=lambda w: (-w["ulp"], w["bits"]))
        worst_abs = _exact(t.top_abs, function)
        w = worst[0]
        out.update(
            max_ulp=w["ulp"],
            mean_ulp=t.sum_err / t.n_err,
            frac_correctly_rounded=1.0 - t.elems_bad / (cols * answered),
            max_abs_err_eps=max(x["eps"] for x in worst + worst_abs),
            worst_where=f"conformance.functions._exhaustive.pairs_of(np.array([{w['bits']:#010x}], "
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
