"""Worst-case search: Hypothesis, steered by ``target(ulp_error)``, looks for the rows
where a candidate is least accurate. The worst row of a search, when it beats the
cell's known worst error (the corpus's worst entry for that candidate, backend and
dtype), is appended to the corpus (conformance/data/worst_cases.jsonl: one JSON object per
line, the row in hex floats), which the ``corpus`` family replays in every sweep and
every test run.

The candidate is called in a worker of its own, as in a sweep (sandboxed, under the
same timeout, killed and replaced when it crashes or hangs): Hypothesis drives from
this process and scores each answer here, where no candidate code runs. An example
whose call raised, crashed or timed out counts as an infinite error."""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import reference
from reference import FORMATS, Format

from .backends._backends import Backend
from .backends._invoke import decode, invoke
from .functions._candidates import Candidate
from .functions._corpus import CORPUS, load_corpus
from .functions._families import Case, Family

__all__ = ["CORPUS", "SearchResult", "load_corpus", "search"]

STRATEGIES = ("rows", "dominant", "ties", "offset")


@dataclass
class SearchResult:
    ulp: float
    row: NDArray[Any] | None
    examples: int
    seconds: float
    saved: int
    known: float

    def reproducer(self, candidate: Candidate, dtype: str) -> str:
        if self.row is None:
            return "(no example ran)"
        hexes = [float(v).hex() for v in self.row.astype(np.float64)]
        cast = f".astype('{dtype}')" if dtype != "bfloat16" else ".astype(ml_dtypes.bfloat16)"
        return (
            f"import numpy as np, ml_dtypes\n"
            f"from conformance import candidate\n"
            f"x = np.array([float.fromhex(h) for h in {hexes!r}]){cast}\n"
            f"got = candidate({candidate.name!r}).load()(x, axis=-1)  # on the backend's array\n"
            f"import reference; print(reference.ulp_error(np.asarray(got), x).max())"
        )


def _strategies(fmt: Format, max_len: int) -> dict[str, Any]:
    from hypothesis import strategies as st

    width: Literal[16, 32, 64] = {"float16": 16, "bfloat16": 32, "float32": 32}.get(fmt.name, 64)  # type: ignore[assignment]
    big = float(fmt.max_finite)

    def cast(v: list[float]) -> NDArray[Any]:
        with np.errstate(over="ignore"):
            return np.asarray(v, dtype=np.float64).astype(fmt.dtype)

    finite = st.floats(-big, big, allow_nan=False, allow_subnormal=True, width=width)
    rows = st.lists(finite, min_size=1, max_size=max_len).map(cast)
    ln_tiny = -fmt.qmin * math.log(2.0)

    @st.composite
    def dominant(draw: Any) -> NDArray[Any]:
        n = draw(st.integers(2, min(max_len, 64)))
        gap = draw(st.floats(0.5, 1.2 * ln_tiny))
        jit = draw(st.lists(st.floats(0, 3), min_size=n - 1, max_size=n - 1))
        top = draw(st.floats(-100, 100))
        return cast([top] + [top - gap - j for j in jit])

    @st.composite
    def ties(draw: Any) -> NDArray[Any]:
        n = draw(st.integers(2, min(max_len, 64)))
        k = draw(st.integers(1, n))
        top = draw(st.floats(-50, 50))
        rest = draw(st.lists(st.floats(-60, 0), min_size=n - k, max_size=n - k))
        return cast([top] * k + [top + r for r in rest])

    @st.composite
    def offset(draw: Any) -> NDArray[Any]:
        n = draw(st.integers(2, min(max_len, 64)))
        c = draw(st.floats(1.0, big * 0.9))
        spacing = math.ldexp(1.0, math.frexp(c)[1] - fmt.precision)
        steps = draw(st.lists(st.integers(-64, 64), min_size=n, max_size=n))
        return cast([c + s * spacing for s in steps])

    return {"rows": rows, "dominant": dominant(), "ties": ties(), "offset": offset()}


class _BudgetSpent(Exception):
    pass


def _one_row(data: bytes, dtype: str, fmt: Format, profile: str, rng: Any) -> list[Case]:
    """A family's build for one searched row (picklable: it travels to the worker)."""
    x = np.frombuffer(data, dtype=FORMATS[dtype].dtype).copy()
    return [Case(x, -1, "search")]


class _InWorker:
    """The candidate's calls, one cell per example, in a worker of its own (a
    Supervisor that keeps its worker between examples). Returns the answer as a plain
    array, or None where the call raised, crashed or timed out."""

    def __init__(self, cand: Candidate, b: Backend, dtype: str, timeout: float) -> None:
        from .execution._isolation import Supervisor, start_server

        start_server({b.library})
        self.cand, self.b, self.dtype = cand, b, dtype
        self.logs = tempfile.TemporaryDirectory(prefix="conformance-search-")
        self.answers: dict[str, tuple[Any, str | None]] = {}
        self.sup = Supervisor(
            jobs=1, timeout=timeout, log_dir=Path(self.logs.name), keep_idle=1,
            on_result=lambda spec, raw, reason: self.answers.__setitem__(spec.key, (raw, reason)),
        )  # fmt: skip

    def __call__(self, x: NDArray[Any]) -> NDArray[Any] | None:
        from .execution._cell import CellSpec

        build = functools.partial(_one_row, x.tobytes(), self.dtype)
        fam = Family("search", "one searched row", build, dtypes=(self.dtype,))
        spec = CellSpec(self.cand, self.b, self.dtype, fam, "quick")
        self.sup.add([spec])
        self.sup.run()
        raw, _ = self.answers.pop(spec.key, (None, "no answer"))
        if raw is None or raw.error is not None or not raw.outputs or raw.outputs[0] is None:
            return None
        return decode(raw.outputs[0])

    def close(self) -> None:
        self.sup.close()
        self.logs.cleanup()


def search(
    cand: Candidate,
    b: Backend,
    dtype: str,
    *,
    seconds: float = 60.0,
    examples: int | None = None,
    strategy: str = "all",
    max_len: int = 4096,
    corpus: str | os.PathLike[str] | None = None,
    seed: int | None = 0,
    log: Callable[[str], None] | None = None,
    timeout: float = 60.0,
    isolated: bool = True,
) -> SearchResult:
    """Search one candidate x backend x dtype for up to ``seconds`` (or ``examples``
    examples); append every input that beats the known worst to the corpus. Each call
    runs in a worker (``isolated``; in this process otherwise, for a debugger), killed
    after ``timeout`` seconds."""
    from hypothesis import HealthCheck, Phase, given, settings, target
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    why = b.probe()
    if why:
        raise RuntimeError(f"backend {b.name} cannot run here: {why}")
    if dtype not in b.dtypes:
        raise ValueError(f"backend {b.name} has no {dtype}; it has {list(b.dtypes)}")
    fmt = FORMATS[dtype]
    strats = _strategies(fmt, max_len)
    if strategy != "all" and strategy not in strats:
        raise ValueError(f"unknown strategy {strategy!r}; valid: all, {', '.join(strats)}")
    path = Path(corpus) if corpus is not None else CORPUS
    known = max(
        (
            float(e["ulp"])
            for e in load_corpus(path)
            if (e["candidate"], e["backend"], e["dtype"]) == (cand.name, b.name, dtype)
        ),
        default=0.0,
    )
    call: Callable[[NDArray[Any]], NDArray[Any] | None]
    worker: _InWorker | None = None
    if isolated:
        call = worker = _InWorker(cand, b, dtype, timeout)
    else:
        fn = cand.load()

        def call(x: NDArray[Any]) -> NDArray[Any] | None:
            try:
                return invoke(fn, b, Case(x, -1, "search"), [])
            except Exception:
                return None

    state: dict[str, Any] = {"best": known, "row": None, "worst": 0.0, "n": 0, "saved": 0}
    t0 = time.perf_counter()

    def score(x: NDArray[Any]) -> float:
        # raising, crashing or hanging on a finite row is the worst answer there is
        got = call(x)
        if got is None or got.shape != x.shape:
            return math.inf
        with np.errstate(all="ignore"):
            got = got.astype(np.float64).astype(x.dtype)
        return float(np.max(reference.evaluate(x).ulp_error(got)))

    def save(x: NDArray[Any], err: float, which: str) -> None:
        entry = {
            "candidate": cand.name,
            "backend": b.name,
            "dtype": dtype,
            "ulp": err if math.isfinite(err) else "inf",
            "strategy": which,
            "found": datetime.date.today().isoformat(),
            "input": [float(v).hex() for v in x.astype(np.float64)],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        state["saved"] += 1

    names = list(strats) if strategy == "all" else [strategy]
    labelled = st.one_of(*[strats[name].map(lambda x, name=name: (name, x)) for name in names])

    @settings(
        max_examples=examples if examples is not None else 10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.target],
        suppress_health_check=list(HealthCheck),
    )
    @given(labelled)
    def probe(item: tuple[str, NDArray[Any]]) -> None:
        if examples is None and time.perf_counter() - t0 > seconds:
            raise _BudgetSpent
        which, x = item
        err = score(x)
        state["n"] += 1
        target(min(math.log2(1.0 + err), 1e4) if not math.isnan(err) else 1e4)
        if err > state["worst"]:
            state["worst"], state["row"] = err, x
        if err > state["best"]:
            if log and not err <= state["best"] * 1.01:  # progress worth a line
                log(f"  {err:.4g} ULP ({which}, n={x.size})")
            state["best"], state["best_row"], state["best_which"] = err, x, which

    if seed is not None:
        probe = hseed(seed)(probe)
    try:
        probe()
    except _BudgetSpent:
        pass
    finally:
        if worker is not None:
            worker.close()
    if state.get("best_row") is not None:  # beat the known worst: kept in the corpus
        save(state["best_row"], state["best"], state["best_which"])
    return SearchResult(
        ulp=state["worst"],
        row=state["row"],
        examples=state["n"],
        seconds=time.perf_counter() - t0,
        saved=state["saved"],
        known=known,
    )
