"""Input families: named, seeded, deterministic generators of adversarial inputs.

A family builds a list of cases for a format and a profile ("quick" for CI, "full" for
the published report). The same cases go to every candidate and backend: the seed of a
family depends only on its name, the format and the profile, so the oracle runs once
per case and its answer is cached by a content hash of the input.

Most families are 2-D blocks of rows reduced over the last axis (one XLA compilation
and one oracle call per block); ``shapes`` and ``specials`` cover the rest of the
contract (0-d, empty, axis None, negative and tuple axes, transposed input, length-1
slices, every special-value case of docs/specification.md).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from reference import FORMATS, Format

from . import _exhaustive as _exhaustive_f32
from . import _weights
from ._case import Case
from ._corpus import corpus_row, load_corpus
from ._functions import DEFAULT_FUNCTION
from ._peers import (
    SCIPY_SUITE_BACKENDS,
    opinfo_annotate,
    opinfo_cases,
    opinfo_check,
    opinfo_unavailable,
    scipy_suite_check,
    scipy_suite_unavailable,
    suite_cases,
)

__all__ = [
    "DEFAULT_FAMILIES", "FAMILIES", "PROFILES", "Case", "Family", "expand", "families", "family",
    "family_inputs", "neg_ln_smallest",
]  # fmt: skip

PROFILES = ("quick", "full")
_ALL = tuple(FORMATS)


@dataclass(frozen=True)
class Family:
    """A named generator of cases. The peers' suites add hooks: ``unavailable`` (why
    the family cannot run here: its cells are ``not run``), ``check`` (run in the
    worker beside the calls: findings that fail the cell) and ``annotate`` (run in the
    supervisor on the answers and the oracle's results: notes of the cell). An
    ``optional`` family runs only where asked for by name. A ``per_function`` family's
    inputs depend on the function (a peer's samples for its own function): its build
    takes ``function=`` as a keyword."""

    name: str
    doc: str
    build: Callable[..., list[Case]] = field(repr=False)  # (fmt, profile, rng)
    dtypes: tuple[str, ...] = _ALL
    param: str = ""  # what Case.params holds, if anything
    optional: bool = False
    unavailable: Callable[[], str | None] | None = field(default=None, repr=False)
    # check(spec, fn, cases) -> (findings, notes), in the worker, after the calls
    check: Callable[..., tuple[list[str], list[str]]] | None = field(default=None, repr=False)
    annotate: Callable[..., list[str]] | None = field(default=None, repr=False)
    suite: bool = False  # no inputs of its own: the check is the cell
    backends: tuple[str, ...] = ()  # the backends it applies to (empty: every one)
    # a stream of input blocks (the exhaustive float32 family, _exhaustive.Chunk): the
    # worker sends each block's answers as it has them, and the supervisor's scoring
    # processes judge them block by block (they are too many to hold at once)
    stream: Any = field(default=None, repr=False)
    # parts(selection) -> the families (cells) a name stands for: "exhaustive-f32:0-15"
    parts: Callable[[str], list[Family]] | None = field(default=None, repr=False)
    # the functions its inputs are for (the weighted families are logsumexp's)
    functions: tuple[str, ...] = ("log_softmax", "softmax", "logsumexp")
    per_function: bool = False  # build(fmt, profile, rng, function=...)
    # the keywords its cases pass besides axis (b, return_sign): only candidates that
    # take them all are swept on it
    keywords: tuple[str, ...] = ()

    def applies_to(self, backend: Any) -> bool:
        return not self.backends or backend.name in self.backends

    def why_not(self) -> str | None:
        """None where the family can run here, else why not (never raises)."""
        if self.unavailable is None:
            return None
        try:
            return self.unavailable()
        except Exception as exc:
            return f"family {self.name}: {type(exc).__name__}: {exc}"

    def cases(
        self, dtype: str, profile: str = "quick", function: str = DEFAULT_FUNCTION
    ) -> list[Case]:
        """The inputs of a format and profile; ``function`` matters only to a
        ``per_function`` family (the others give every function the same inputs)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; known: {list(PROFILES)}")
        if dtype not in self.dtypes:
            raise ValueError(f"family {self.name!r} has no {dtype} inputs")
        seed = zlib.crc32(f"{self.name}|{dtype}|{profile}".encode())
        rng = np.random.default_rng(seed)
        if self.per_function:
            if function not in self.functions:
                raise ValueError(f"family {self.name!r} has no {function} inputs")
            return self.build(FORMATS[dtype], profile, rng, function=function)
        return self.build(FORMATS[dtype], profile, rng)


def _cast(fmt: Format, a: ArrayLike) -> NDArray[Any]:
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float64).astype(fmt.dtype)


def _ulp(fmt: Format, v: float) -> float:
    """The spacing of fmt's numbers at |v| (normal range)."""
    e = math.frexp(abs(v))[1] - 1 if v else fmt.emin
    return math.ldexp(1.0, max(e, fmt.emin) - fmt.precision + 1)


def neg_ln_smallest(fmt: Format) -> float:
    """-ln of the smallest positive subnormal: beyond this gap exp(-d) rounds to 0."""
    return -fmt.qmin * math.log(2.0)


def _q(profile: str, quick: int, full: int) -> int:
    return quick if profile == "quick" else full


# -- families -------------------------------------------------------------------------


def _normal(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows, n = _q(profile, 16, 256), _q(profile, 64, 1024)
    return [Case(_cast(fmt, rng.standard_normal((rows, n))), -1, f"{rows}x{n}")]


def _wide(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows, n = _q(profile, 16, 256), _q(profile, 64, 1024)
    return [Case(_cast(fmt, rng.uniform(-50, 50, (rows, n))), -1, f"{rows}x{n} in [-50, 50]")]


def _gaps(fmt: Format, count: int) -> NDArray[np.float64]:
    """Gaps from 1 past -ln(eps) to past -ln(smallest subnormal), geometric, with
    the two thresholds and their neighbours included."""
    end = 1.15 * neg_ln_smallest(fmt)
    ln_eps = -math.log(fmt.eps)
    marks = [ln_eps - 1, ln_eps, ln_eps + 1, -fmt.emin * math.log(2.0), neg_ln_smallest(fmt)]
    return np.unique(np.r_[np.geomspace(1.0, end, count), marks])


def _dominant(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    n = _q(profile, 8, 16)
    gaps = _gaps(fmt, _q(profile, 40, 400))
    jitter = 1.0 + rng.random((gaps.size, n - 1)) * 1e-3
    x = np.c_[np.zeros(gaps.size), -gaps[:, None] * jitter]
    x = _cast(fmt, x)
    return [Case(x, -1, f"{gaps.size} gaps", params=tuple(float(g) for g in gaps))]


def _dominant_many(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    sizes = [1000] if profile == "quick" else [1000, 10000, 100000]
    ln_eps = -math.log(fmt.eps)
    gaps = sorted({round(ln_eps * f, 3) for f in (0.5, 1.0, 1.5)} | {neg_ln_smallest(fmt) - 8})
    cases = []
    for n in sizes:
        x = -np.asarray(gaps)[:, None] - rng.random((len(gaps), n)) * 2.0
        x[:, 0] = 0.0
        cases.append(Case(_cast(fmt, x), -1, f"1 + {n - 1} tiny terms", params=tuple(gaps)))
    return cases


def _ties(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    n = _q(profile, 16, 64)
    ks = [2, 3, 7, n // 2, n]
    x = rng.standard_normal((len(ks), n)) - 3.0
    for r, k in enumerate(ks):
        x[r, rng.permutation(n)[:k]] = 1.5
    return [Case(_cast(fmt, x), -1, f"k in {ks}")]


def _near_ties(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows, n = _q(profile, 8, 64), 8
    tops = _cast(fmt, rng.uniform(-4, 4, rows)).astype(np.float64)
    x = np.empty((rows, n))
    for r, t in enumerate(tops):
        x[r] = t - rng.integers(0, 5, n) * _ulp(fmt, t)
    return [Case(_cast(fmt, x), -1, "within 4 ulps of the maximum")]


def _offset(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows, n = _q(profile, 4, 32), 16
    offsets = [v for v in (1e4, 1e7, 1e30, 1e300) if v < fmt.max_finite]
    offsets.append(fmt.max_finite * 0.75)
    cases = []
    for c in offsets:
        step = _ulp(fmt, c)
        x = c + step * rng.integers(-16, 17, (rows, n))
        if step <= 0.25:  # spread of order one as well (the class of PyTorch issue 38839)
            x = np.r_[x, c + rng.standard_normal((rows, n))]
        cases.append(Case(_cast(fmt, x), -1, f"offset {c:.3g}"))
    return cases


def _saturating(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    big = fmt.max_finite
    rows = [
        [big, -big, big * 0.5, -big * 0.75],
        [big, big, -big, -big],
        [-big, -big * 0.5, -big * 0.25, -big],
        [big, big * (1 - 2 * fmt.eps), 0.0, -big],
    ]
    if profile == "full":
        rows += (rng.choice([-1.0, 1.0], (28, 4)) * big * rng.uniform(0.5, 1, (28, 4))).tolist()
    return [Case(_cast(fmt, rows), -1, "near +-max finite")]


def _subnormal(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows, n = _q(profile, 8, 64), 8
    tiny = math.ldexp(1.0, fmt.qmin)
    x = rng.integers(-(2**8), 2**8, (rows, n)) * tiny
    x[:, -1] = 0.0
    mixed = np.r_[[0.0, tiny, -tiny, 1.0, -1e-3, 2.0**-20, tiny * 7, -tiny * 3]][None, :]
    return [Case(_cast(fmt, np.r_[x, mixed]), -1, "subnormal entries")]


def _long(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    n = _q(profile, 1 << 14, 1 << 20)
    return [Case(_cast(fmt, rng.standard_normal((2, n)) * 4), -1, f"2 rows of {n}")]


def _llm(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    vocabs = [32000] if profile == "quick" else [32000, 128000]
    cases = []
    for v in vocabs:
        x = rng.standard_normal((2, v)) * 2.5 - 4.0
        for r in range(2):  # a few large logits: peaked next-token distributions
            x[r, rng.permutation(v)[:4]] = rng.uniform(10, 25, 4)
        cases.append(Case(_cast(fmt, x), -1, f"vocabulary {v}"))
    return cases


# Row lengths where the peers' kernels change paths: PyTorch's softmax disagrees with
# itself across 1024/2048 (pytorch/pytorch#123911), and on CUDA float64 rows of 517
# summed to 0.70 (#143644); 1238 is the other length named with them
DISPATCH_NAMED = (517, 1238)


def dispatch_lengths() -> list[int]:
    """n-1, n and n+1 for every power of two n from 1 to 4096, and for 517 and 1238."""
    centres = [1 << k for k in range(13)] + list(DISPATCH_NAMED)
    return sorted({m for c in centres for m in (c - 1, c, c + 1) if m >= 1})


def _peaked(fmt: Format, rng: np.random.Generator, rows: int, n: int) -> NDArray[Any]:
    """Normal rows (sd 2) with one dominant entry each, in [10, 11): the sum of the
    others is of the dominant term's order at a few thousand entries, so its
    accumulation shows in every answer."""
    x = rng.standard_normal((rows, n)) * 2.0
    x[np.arange(rows), rng.integers(0, n, rows)] = 10.0 + rng.random(rows)
    return _cast(fmt, x)


def _dispatch_shapes(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    """Per row length: 2 rows contiguous; many rows (2^16 elements, 16 to 1024 rows);
    16 slices reduced over axis 0 (a stride of 16 between a slice's entries); 2 rows as
    a transposed view. The quick profile, four inputs (each shape costs JAX a
    compilation per candidate and mode: six took 207 of a 506 s sweep): 2 rows at 1025
    and 2049, above the two thresholds; many rows at 517; strided at 1238."""
    cases = []

    def few(n: int) -> None:
        cases.append(Case(_peaked(fmt, rng, 2, n), -1, f"n={n}: 2 rows"))

    def many(n: int) -> None:
        rows = min(1024, max(16, (1 << 16) // n))
        cases.append(Case(_peaked(fmt, rng, rows, n), -1, f"n={n}: {rows} rows"))

    def strided(n: int) -> None:
        x = np.ascontiguousarray(_peaked(fmt, rng, 16, n).T)
        cases.append(Case(x, 0, f"n={n}: axis 0 of ({n}, 16), stride 16"))

    def view(n: int) -> None:
        x = _peaked(fmt, rng, 2, n)
        cases.append(Case(x, -1, f"n={n}: 2 rows, a transposed view", transposed=True))

    if profile == "quick":
        for n in (1025, 2049):
            few(n)
        many(517)
        strided(1238)
        return cases
    for n in dispatch_lengths():
        few(n)
        many(n)
        strided(n)
        view(n)
    return cases


_INF, _NAN = math.inf, math.nan
SPECIAL_ROWS = {
    "nan": [1.0, _NAN, 3.0, -_INF],
    "neg-inf-entries": [0.0, -_INF, -1.0, -_INF],
    "all-neg-inf": [-_INF, -_INF, -_INF, -_INF],
    "one-pos-inf": [1.0, _INF, -_INF, 2.0],
    "several-pos-inf": [_INF, 0.0, _INF, -_INF],
    "lone-finite": [-_INF, 3.0, -_INF, -_INF],
}


def _specials(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    rows = _cast(fmt, list(SPECIAL_ROWS.values()))
    singles = _cast(fmt, [[_NAN], [_INF], [-_INF], [2.5]])
    return [
        Case(rows, -1, "special rows: " + ", ".join(SPECIAL_ROWS)),
        Case(singles, -1, "length-1 slices: nan, +inf, -inf, finite"),
    ]


def _shapes(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    def r(*shape: int) -> NDArray[Any]:
        return _cast(fmt, rng.standard_normal(shape) * 3)

    return [
        Case(_cast(fmt, 1.5), None, "0-d"),
        Case(r(0), -1, "empty (0,)"),
        Case(r(3, 0), 1, "empty (3, 0), axis 1"),
        Case(r(3, 4), None, "(3, 4), axis None"),
        Case(r(3, 4, 5), -2, "(3, 4, 5), axis -2"),
        Case(r(3, 4, 5), (0, 2), "(3, 4, 5), axis (0, 2)"),
        Case(r(5, 6), 1, "(5, 6) transposed view, axis 1", transposed=True),
        Case(r(2, 3, 4, 5), (1, 3), "(2, 3, 4, 5), axis (1, 3)"),
    ]


def _exhaustive(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    bits = np.arange(1 << 16, dtype=np.uint16).view(np.int16)
    v = bits.view(fmt.dtype)
    with np.errstate(invalid="ignore"):  # NaN patterns, cast to float64 to be dropped
        v = v[np.isfinite(v.astype(np.float64))]
    if profile == "quick":
        v = v[::64]
    x = np.stack([np.zeros(v.size, dtype=fmt.dtype), v], axis=1)
    return [Case(x, -1, f"[0, v] for {v.size} finite v")]


def _corpus(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    cases = []
    for e in load_corpus():
        if e["dtype"] == fmt.name:
            label = f"found by search on {e['candidate']} {e['backend']}: {e['ulp']} ULP"
            cases.append(Case(corpus_row(e)[None, :], -1, label))
    return cases


def _no_cases(fmt: Format, profile: str, rng: np.random.Generator) -> list[Case]:
    return []  # a family with parts, or a stream of blocks


@functools.cache
def _f32_chunk(k: int) -> Family:
    """Chunk k of exhaustive-f32: a family (a cell) of its own, a stream of blocks."""
    return Family(
        f"{_exhaustive_f32.NAME}:{k:03d}",
        _exhaustive_f32.chunk_doc(k),
        _no_cases,
        dtypes=("float32",),
        optional=True,
        stream=_exhaustive_f32.Chunk(k),  # scored for each cell's function
    )


def _f32_chunks(selection: str) -> list[Family]:
    return [_f32_chunk(k) for k in _exhaustive_f32.parse_chunks(selection)]


FAMILIES: tuple[Family, ...] = (
    Family("normal", "standard normal rows", _normal),
    Family("wide", "uniform rows in [-50, 50]", _wide),
    Family(
        "dominant",
        "one maximum, the others at gap d swept from 1 past -ln(eps) to past "
        "-ln(smallest subnormal)",
        _dominant,
        param="d",
    ),
    Family("dominant-many", "one maximum and 10^3..10^5 tiny terms", _dominant_many, param="d"),
    Family("ties", "k equal maxima", _ties),
    Family("near-ties", "entries within a few ulps of the maximum", _near_ties),
    Family("offset", "a common offset of 1e4 .. near the largest finite value", _offset),
    Family("saturating", "values near +-max finite, where x - max overflows", _saturating),
    Family("subnormal", "subnormal entries", _subnormal),
    Family("long", "long rows (2^14 quick, 2^20 full)", _long),
    Family("llm", "LLM logits, vocabulary 32000 and 128000, peaked", _llm),
    Family(
        "dispatch-shapes",
        "row lengths n-1, n, n+1 around every power of two to 4096 and 517, 1238 (the "
        "peers' dispatch thresholds): few rows and many, contiguous and strided (quick: "
        "4 of them)",
        _dispatch_shapes,
    ),
    Family("specials", "NaN and +-inf: every case of the specification", _specials),
    Family(
        "weights",
        "logsumexp's b: positive, a negative weight at the maximum, negative sums, near "
        "and exact cancellation, over the exponent range, zeros",
        _weights.weights,
        functions=("logsumexp",),
        keywords=("b",),
    ),
    Family(
        "weight-specials",
        "logsumexp's b with NaN and +-inf in a and b: every weighted case of the specification",
        _weights.weight_specials,
        functions=("logsumexp",),
        keywords=("b",),
    ),
    Family(
        "return-sign",
        "the weights family's classes with return_sign=True: the sign scored too",
        _weights.return_sign,
        functions=("logsumexp",),
        keywords=("b", "return_sign"),
    ),
    Family(
        "sign-specials",
        "the special slices with return_sign=True, [+inf] and [-inf] among them",
        _weights.sign_specials,
        functions=("logsumexp",),
        keywords=("b", "return_sign"),
    ),
    Family("shapes", "0-d, empty, axis None/negative/tuple, transposed, 4-d", _shapes),
    Family(
        "exhaustive",
        "[0, v] for every finite v (quick: every 64th)",
        _exhaustive,
        dtypes=("float16", "bfloat16"),
    ),
    Family(
        "corpus",
        "the worst inputs found by `python -m conformance search`, replayed "
        "(conformance/data/worst_cases.jsonl)",
        _corpus,
    ),
    Family(
        "torch-opinfo",
        "PyTorch's own OpInfo samples of the function (log_softmax and softmax: both "
        "variants, with_dtype's in float64; logsumexp: its dims and keepdim), judged by "
        "the oracle and by torch's assert_close; gradcheck on torch backends. Asked for by "
        "name",
        opinfo_cases,
        optional=True,
        unavailable=opinfo_unavailable,
        check=opinfo_check,
        annotate=opinfo_annotate,
        per_function=True,
    ),
    Family(
        "scipy-suite",
        "SciPy's own test class of the function (TestLogSoftmax, TestSoftmax, "
        "TestLogSumExp, from the installed scipy) calling the candidate, with and without "
        "SCIPY_ARRAY_API, on the backend's namespace. Asked for by name",
        suite_cases,
        dtypes=("float64",),
        optional=True,
        unavailable=scipy_suite_unavailable,
        check=scipy_suite_check,
        suite=True,
        backends=tuple(SCIPY_SUITE_BACKENDS),
    ),
    Family(
        _exhaustive_f32.NAME,
        "[0, v] for every one of the 2^32 float32 bit patterns, in 256 cells of 2^24 "
        "(exhaustive-f32:K, K = 0..255, or J-K: some of them), for each function, scored "
        "against the oracle's certified pairs. Asked for by name",
        _no_cases,
        dtypes=("float32",),
        optional=True,
        parts=_f32_chunks,
    ),
)
DEFAULT_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if not f.optional)


def family(name: str) -> Family:
    """The family of a name; a part of one is named ``parent:selection``
    (``exhaustive-f32:017``) and must name one part."""
    base, colon, sel = name.partition(":")
    for f in FAMILIES:
        if f.name == base and colon and f.parts is not None:
            parts = f.parts(sel)
            if len(parts) != 1:
                raise KeyError(f"{name!r} names {len(parts)} families, not one")
            return parts[0]
        if f.name == name:
            return f
    raise KeyError(f"unknown family {name!r}; known: {[f.name for f in FAMILIES]}")


def families(name: str) -> list[Family]:
    """The families a name of ``--families`` stands for: one, or the parts a family
    with parts has (all of them, or those ``parent:selection`` names)."""
    base, _, sel = name.partition(":")
    for f in FAMILIES:
        if f.name == base and f.parts is not None:
            return f.parts(sel)
    return [family(name)]


def expand(fams: Any) -> list[Family]:
    """Families with their parts in place of a family that has parts."""
    out: list[Family] = []
    for f in fams:
        for g in f.parts("") if f.parts is not None else [f]:
            if g not in out:
                out.append(g)
    return out


def family_inputs(
    profile: str = "quick", formats: tuple[str, ...] = _ALL, function: str = DEFAULT_FUNCTION
) -> list[tuple[str, str, list[Case]]]:
    """(family, format, cases) for every family of FAMILIES that can run here, is not
    optional (the peers' suites: asked for by name) and serves ``function``, in each
    of ``formats`` it has: the inputs a default sweep gives each candidate of that
    function (benchmarks and tests that run impl over them; logsumexp's include the
    cases with weights and return_sign)."""
    out = []
    for fam in FAMILIES:
        if fam.optional or fam.why_not() is not None or function not in fam.functions:
            continue
        for fmt in formats:
            if fmt in fam.dtypes:
                cases = fam.cases(fmt, profile, function)
                if cases:
                    out.append((fam.name, fmt, cases))
    return out
