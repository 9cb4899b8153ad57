"""The matrix runner.

A sweep plans every cell (candidate x backend x dtype x family) and checks the plan
before it touches anything; takes the results directory for itself (a lock, a marker);
probes each backend in a process of its own and records the cells that cannot run as
``not run`` with the reason; fills the oracle cache for every input (in parallel, each
input once); then runs the cells in isolated workers (``_isolation``) and scores what
they send back here, against the oracle. Each cell is written to its own file as it
finishes, so a sweep killed at any point loses nothing that finished; ``resume=True``
keeps the finished cells whose judge (``_judge``) is unchanged and runs the rest. The
table (Parquet and CSV) and the fingerprint are written from the cell files at the end.

With ``scheduler`` set, the probes and the cells run on a Dask cluster's workers
(``_distributed``); the plan, the oracle, the scoring and the results stay here, so the
table is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends._backends import Backend
from .execution._cell import CellSpec, Raw, failed, not_run
from .execution._limits import physical_memory
from .functions._candidates import Candidate
from .functions._families import Case, Family, expand
from .functions._functions import DEFAULT_FUNCTION, uid
from .scoring._budgets import Budgets
from .scoring._judge import candidate_digest, cell_judge, closure_digest, inputs_digest
from .scoring._oracle_cache import OracleCache
from .scoring._results import ResultsDir, cell_file_name, record_key, table_from
from .scoring._score import score

__all__ = [
    "ISOLATION",
    "PlanError",
    "RunConfig",
    "default_cache_dir",
    "load_table",
    "plan",
    "run",
]

ISOLATION = ("worker", "cell", "none")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "log-softmax-conformance" / "oracle"


def default_jobs() -> int:
    """The cores this process may run on (affinity and cgroup CPU sets included)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


class PlanError(ValueError):
    """A sweep that would run nothing, or could not: said before anything is touched."""


@dataclass
class RunConfig:
    candidates: Sequence[Candidate]
    backends: Sequence[Backend]
    dtypes: Sequence[str]
    families: Sequence[Family]
    profile: str = "quick"
    jobs: int = field(default_factory=default_jobs)
    results: Path = Path("results")
    resume: bool = False
    timeout: float = 300.0
    cache: Path = field(default_factory=default_cache_dir)
    budgets: Budgets = field(default_factory=Budgets.load)
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    isolation: str = "worker"  # "worker": one per candidate x backend; "cell"; "none"
    scheduler: str | None = None  # a Dask scheduler's address, or "local[:N]" (_distributed)
    routes: dict[str, str] = field(default_factory=dict)  # backend -> worker resource
    # bytes of address space per worker (RLIMIT_AS); None: default_memory(jobs); 0: none
    memory: int | None = None
    require_sandbox: bool = False  # refuse to run where the workers cannot be sandboxed
    # the floating-point environments the calls run in (_fpenv.FPENVS): each cell once
    # per environment
    fpenvs: Sequence[str] = ("default",)


_GIB = 1 << 30


def default_memory(jobs: int) -> int:
    """A worker's share of the machine's memory: its physical memory over the jobs, and
    4 GiB at least (the backend libraries a worker has imported map 1 to 3 GiB of
    address space before a cell runs); 0 (no limit) where the machine does not say."""
    total = physical_memory()
    return max(total // max(1, jobs), 4 * _GIB) if total else 0


def memory_of(cfg: RunConfig) -> int:
    return default_memory(cfg.jobs) if cfg.memory is None else max(0, cfg.memory)


def plan(cfg: RunConfig) -> list[CellSpec]:
    """Every applicable cell, in a stable order. A family whose cases pass keywords
    (logsumexp's b, return_sign) runs on the candidates that take them."""
    cells = []
    for c in cfg.candidates:
        for b in cfg.backends:
            if not c.applies_to(b):
                continue
            for dt in cfg.dtypes:
                for f in expand(cfg.families):
                    if (
                        dt in f.dtypes and f.applies_to(b) and c.function in f.functions
                        and set(f.keywords) <= set(c.keywords)
                    ):  # fmt: skip
                        for env in cfg.fpenvs:
                            cells.append(CellSpec(c, b, dt, f, cfg.profile, env))
    return cells


def check_plan(cfg: RunConfig, cells: list[CellSpec]) -> list[str]:
    """PlanError for a plan of no cells (with why); notes for candidates left out."""
    if cfg.isolation not in ISOLATION:
        raise PlanError(f"isolation {cfg.isolation!r}: choose one of {', '.join(ISOLATION)}")
    if cfg.scheduler is not None:
        from .execution._distributed import SchedulerError, parse_scheduler

        if cfg.isolation == "none":
            raise PlanError("--scheduler runs cells isolated on the workers: not --isolation none")
        try:
            parse_scheduler(cfg.scheduler)
        except SchedulerError as exc:
            raise PlanError(str(exc)) from None
        unknown = sorted(set(cfg.routes) - {b.name for b in cfg.backends})
        if unknown:
            raise PlanError(f"--resource names backends the sweep does not have: {unknown}")
    elif cfg.routes:
        raise PlanError("--resource routes cells to Dask workers: it needs --scheduler")
    if not cfg.timeout > 0:
        raise PlanError(f"the timeout must be > 0 seconds, got {cfg.timeout}")
    from .backends._fpenv import unavailable

    for env in cfg.fpenvs:
        if (why := unavailable(env)) is not None:
            raise PlanError(why)
    notes = []
    names = [b.name for b in cfg.backends]
    for c in cfg.candidates:
        if not any(c.applies_to(b) for b in cfg.backends):
            notes.append(
                f"candidate {c.uid} runs only on {', '.join(c.libraries)} backends, and none "
                f"of {', '.join(names)} is one: it has no cells"
            )
    if not any(dt in f.dtypes for dt in cfg.dtypes for f in cfg.families):
        notes.append(
            f"families {', '.join(f.name for f in cfg.families)} have no inputs in "
            f"{', '.join(cfg.dtypes)}"
        )
    if not cells:
        raise PlanError("the sweep has no cells: " + ("; ".join(notes) or "nothing was chosen"))
    return notes


# -- the oracle pre-pass ----------------------------------------------------------------


def _fill_cache(args: tuple[str, str, str, str, str]) -> int:
    fn, fam_name, dtype, profile, cache_dir = args
    from .functions._families import family

    cache = OracleCache(cache_dir)
    for case in family(fam_name).cases(dtype, profile, fn):
        cache.get(case, fn)
    return len(cache.rejected)


def _oracle_pass(
    units: dict[tuple[str, str, str], list[Case]], cfg: RunConfig, say: Callable[[str], None]
) -> None:
    """The oracle's answers for every (function, family, dtype) the cells need, those
    the cache lacks computed in parallel first."""
    cache = OracleCache(cfg.cache)
    missing = [
        (fn, fam, dtype, cfg.profile, str(cfg.cache))
        for (fn, fam, dtype), cases in sorted(units.items())
        if not all(cache.valid(c, fn) for c in cases)
    ]
    if not missing:
        return
    t = time.perf_counter()
    jobs = max(1, min(cfg.jobs, len(missing)))
    if jobs == 1:
        rejected = sum(_fill_cache(m) for m in missing)
    else:
        from .execution._isolation import without_main

        # the pool's processes start within map (spawn: without the caller's script)
        with (
            ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool,
            without_main(),
        ):
            rejected = sum(pool.map(_fill_cache, missing))
    say(
        f"oracle: {len(missing)} input groups computed in {time.perf_counter() - t:.1f}s "
        f"(cache {cfg.cache})"
        + (f"; {rejected} cache entries failed their check and were recomputed" if rejected else "")
    )


# -- progress -------------------------------------------------------------------------------


class _Progress:
    """The progress bar (or log lines), with an ETA from what the finished cells cost:
    a family's cells cost what its finished ones did (families differ by 100x: the
    corpus against shapes), a family with none finished the mean over all."""

    def __init__(
        self, total: int, already: int, enabled: bool | None, pending: list[str] | None = None
    ) -> None:
        self.total, self.done = total, already
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.new = 0
        self.pending: dict[str, int] = {}
        for fam in pending or []:
            self.pending[fam] = self.pending.get(fam, 0) + 1
        self.cost: dict[str, list[float]] = {}

    def eta(self, elapsed: float) -> float:
        """Seconds left: the elapsed time scaled by the cost of the cells left over the
        cost of the cells done (which also counts the parallel workers)."""
        spent = [c for costs in self.cost.values() for c in costs]
        if not spent:
            return float("nan")
        done = sum(spent)
        if not done > 0:
            return elapsed / self.new * (self.total - self.done)
        mean = done / len(spent)
        left = sum(
            n * (sum(self.cost[f]) / len(self.cost[f]) if self.cost.get(f) else mean)
            for f, n in self.pending.items()
        )
        return elapsed * left / done

    def update(self, rec: dict[str, Any] | None, current: str = "") -> None:
        if rec is not None:
            self.done += 1
            self.new += 1
            fam = str(rec.get("family"))
            if self.pending.get(fam, 0) > 0:
                self.pending[fam] -= 1
            self.cost.setdefault(fam, []).append(float(rec.get("seconds") or 0.0))
        el = time.perf_counter() - self.t0
        eta = self.eta(el)
        if self.tty:
            width = 30
            fill = int(width * self.done / max(1, self.total))
            line = (
                f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                f"ETA {eta:5.0f}s  {current[:60]:<60}"
            )
            sys.stderr.write(line)
            sys.stderr.flush()
        elif rec is not None:
            ulp = rec.get("max_ulp")
            ulp_s = "-" if ulp is None else f"{ulp:.3g} ULP"
            who = uid(rec.get("function", DEFAULT_FUNCTION), rec["candidate"])
            env = "" if rec.get("fpenv", "default") == "default" else f" {rec['fpenv']}"
            print(
                f"[{self.done}/{self.total}] {who} {rec['backend']} {rec['dtype']} "
                f"{rec['family']}{env}: {rec['status']} {ulp_s} ({rec['seconds']:.1f}s)",
                flush=True,
            )

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _priority(cells: list[CellSpec]) -> list[CellSpec]:
    """Costly (candidate, backend) pairs first, so that the pool stays busy to the end
    (per-cell costs measured on CPU: JAX compiles, Dask schedules, torch and NumPy
    just run); the cells of a pair stay in plan order."""
    weight = {"jax": 3.0, "dask": 1.5, "torch": 1.2}
    groups: dict[tuple[str, str], list[CellSpec]] = {}
    for s in cells:
        groups.setdefault((s.candidate.uid, s.backend.name), []).append(s)
    ordered = sorted(groups.values(), key=lambda g: -len(g) * weight.get(g[0].backend.library, 1.0))
    return [s for g in ordered for s in g]


# -- the sweep --------------------------------------------------------------------------


def _in_process_probes(backends: list[Backend]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    from .execution._worker import library_info

    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for b in backends:
        why = b.probe()
        out[b.name] = (why, library_info(b) if why is None else {})
    return out


def run(cfg: RunConfig, log: Callable[[str], None] | None = None) -> Any:
    """Run the sweep; returns the results table (a pandas DataFrame). Raises PlanError
    and ResultsError (with what to do) before any cell runs."""
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if cfg.require_sandbox:
        from .execution._sandbox import abi, describe

        if cfg.isolation == "none" or abi() == 0:
            why = "--isolation none" if cfg.isolation == "none" else describe()
            raise PlanError(f"--require-sandbox: the workers cannot be sandboxed here: {why}")
    cells = plan(cfg)
    for note in check_plan(cfg, cells):
        say(f"note: {note}")
    rd = ResultsDir(cfg.results)
    rd.check_usable()
    with contextlib.ExitStack() as held:
        # A directory another run holds is refused at once, before the candidates'
        # probe (seconds); a new one is not created before it, so that a missing
        # function writes nothing
        early = rd.path.is_dir()
        if early:
            held.enter_context(rd.lock(exclusive=True))
        closures = _closures(cfg, cells)
        if not early:
            held.enter_context(rd.lock(exclusive=True))
        for note in rd.prepare(fresh=not cfg.resume):
            say(f"note: {note}")
        if cfg.scheduler is None:
            return _sweep(cfg, cells, rd, say, None, closures)
        from .execution._distributed import SchedulerError, connect

        try:
            with connect(cfg.scheduler, cfg.routes, cfg.jobs) as cluster:
                return _sweep(cfg, cells, rd, say, cluster, closures)
        except SchedulerError as exc:
            raise PlanError(str(exc)) from None


def not_run_here(unrun: dict[str, int]) -> str:
    """The cells that cannot run here, in one line: '1,294 not run here: 1,240 (no CUDA
    device), 54 (...)', the most common reasons first."""
    top = sorted(unrun.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{n:,} ({why})" for why, n in top[:4]]
    more = f", and {len(top) - 4} other reasons" if len(top) > 4 else ""
    return f"{sum(unrun.values()):,} not run here: " + ", ".join(parts) + more


def plural(n: int, noun: str) -> str:
    """'1 worker', '2 workers' (the run's header said '1 workers')"""
    return f"{n} {noun}{'s' * (n != 1)}"


def _closures(cfg: RunConfig, cells: list[CellSpec]) -> dict[str, str]:
    """Each candidate's import closure, as a digest (_judge.closure_digest), from a
    probe that imports it the way its workers will (sandboxed, in a process of its
    own; in this process with --isolation none). PlanError, in one line, for a
    candidate whose module imports but has no such function: its every cell would be
    an error."""
    names = {s.candidate.uid for s in cells}
    cands = [c for c in cfg.candidates if c.uid in names]
    probes: dict[str, tuple[str | None, bool, list[str]]] = {}
    if cfg.isolation == "none":
        from .execution._worker import loaded_files

        for c in cands:
            try:
                c.load()
                probes[c.uid] = (None, True, loaded_files())
            except Exception as exc:
                probes[c.uid] = (f"import: {type(exc).__name__}: {exc}", False, [])
    else:
        from .execution._isolation import probe_candidates, start_server

        if cfg.scheduler is None:  # the server the sweep will use, its libraries loading
            start_server({s.backend.library for s in cells})
        with tempfile.TemporaryDirectory(prefix="conformance-candidates-") as d:
            probes = probe_candidates(cands, cfg.timeout, Path(d))
    absent = [
        f"{name}: {why.split(': ', 2)[-1]}"
        for name, (why, _, _) in probes.items()
        if why is not None and why.startswith("function: ")
    ]
    if absent:
        raise PlanError("no such function: " + "; ".join(absent))
    return {
        name: closure_digest(files) if why is None else f"not imported: {why}"
        for name, (why, _, files) in probes.items()
    }


@dataclass
class _Sweep:
    """What the steps of one sweep share: its configuration and cells, where its records
    go, and what the steps before found."""

    cfg: RunConfig
    cells: list[CellSpec]
    rd: ResultsDir
    say: Callable[[str], None]
    cluster: Any  # the Dask cluster (_distributed), or None for the local pool
    names: dict[str, str] = field(default_factory=dict)  # cell key -> its file's name
    # each family's inputs, made once (by CellSpec.unit)
    units: dict[tuple[str, str, str], list[Case]] = field(default_factory=dict)
    platform: dict[str, str] = field(default_factory=dict)  # backend -> what computes
    judges: dict[str, str] = field(default_factory=dict)  # cell key -> its judge
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> record

    def commit(self, rec: dict[str, Any]) -> None:
        """Record a cell: its judge and platform, its own file, and the run's tally."""
        rec["judge"] = self.judges[record_key(rec)]
        rec["platform"] = self.platform.get(rec["backend"], "")
        self.rd.write_cell(rec)
        self.done[cell_file_name(record_key(rec))] = rec


def _sweep(
    cfg: RunConfig, cells: list[CellSpec], rd: ResultsDir, say: Callable[[str], None],
    cluster: Any, closures: dict[str, str],
) -> Any:  # fmt: skip
    """The sweep's pipeline, step by step: plan the cells' inputs, probe the backends,
    judge each cell and fingerprint the run, keep what a resume may keep, record the
    cells that cannot run here, execute and score the others, and write the table."""
    started = time.time()
    if cfg.isolation != "none" and cluster is None:
        from .execution._isolation import start_server

        # the fork server imports the libraries while this process works
        start_server({s.backend.library for s in cells})
    sw = _Sweep(cfg, cells, rd, say, cluster)
    _plan_inputs(sw)
    probes, allowed, setting, sandbox = _probe_backends(sw)
    _judge_cells(sw, closures, setting, sandbox)
    fp = _write_fingerprint(sw, probes, setting, sandbox)
    todo = _resume(sw, fp)
    runnable = _record_not_run(sw, todo, probes)
    if runnable:
        _execute_and_score(sw, runnable, allowed)
    return _write_table(sw, fp, started)


def _plan_inputs(sw: _Sweep) -> None:
    """Each cell's file name, and each family's inputs (made once, for every cell that
    shares them)."""
    sw.names = {s.key: cell_file_name(s.key) for s in sw.cells}
    for s in sw.cells:
        if s.unit not in sw.units:
            sw.units[s.unit] = s.cases()


def _probe_backends(
    sw: _Sweep,
) -> tuple[dict[str, tuple[str | None, dict[str, Any]]], dict[str, list[str]], dict[str, Any], str]:
    """Probe the sweep's backends (on every worker of a cluster, in processes of their
    own locally, in this process with --isolation none): the probes (backend -> why it
    cannot run, or None, and what it says of itself), the workers allowed each backend
    on a cluster, the settings every verdict depends on, and the sandbox the cells
    run in. The platform each backend computes on goes to ``sw.platform``."""
    from .execution._fingerprint import settings

    cfg, cluster = sw.cfg, sw.cluster
    isolated = cfg.isolation != "none"
    setting = settings()
    allowed: dict[str, list[str]] = {}
    backends = list({s.backend.name: s.backend for s in sw.cells}.values())
    if cluster is not None:
        cluster.probe(backends, cfg.timeout)
        probes, allowed = cluster.choose(backends)
        differ = cluster.environment_differences(setting["environment"])
        if differ:  # part of every verdict: a resume elsewhere reruns these cells
            envs = sorted({json.dumps(e, sort_keys=True) for e in differ.values()})
            setting = {**setting, "workers_environment": envs}
            for addr, env in differ.items():
                sw.say(
                    f"note: worker {addr} runs with {env or 'no recorded settings'} where this "
                    f"process has {setting['environment'] or 'none'}: its cells are judged "
                    "under the workers' settings"
                )
    elif isolated:
        from .execution._isolation import probe

        probes = probe(backends, cfg.timeout, sw.rd.logs)
    else:
        probes = _in_process_probes(backends)
    sw.platform = {name: info.get("platform", "") for name, (_, info) in probes.items()}
    from .execution._sandbox import describe

    sandbox = describe() if isolated else "none (isolation none)"
    if cluster is not None:
        sandbox = "; ".join(sorted(set(cluster.sandboxes()))) or sandbox
    return probes, allowed, setting, sandbox


def _judge_cells(
    sw: _Sweep, closures: dict[str, str], setting: dict[str, Any], sandbox: str
) -> None:
    """Each cell's judge (_judge.cell_judge): what its verdict depends on, as a digest,
    into ``sw.judges``."""
    cfg = sw.cfg
    digests = {u: inputs_digest(cases) for u, cases in sw.units.items()}
    # the candidate's package, and every module it loads (its import closure)
    cand_digests = {
        c.uid: candidate_digest(c) + "|" + closures.get(c.uid, "") for c in cfg.candidates
    }

    def judge(s: CellSpec) -> str:
        return cell_judge(
            setting, s.key, cfg.budgets.for_dtype(s.dtype), digests[s.unit],
            cand_digests[s.candidate.uid], sw.platform[s.backend.name],
            # as given (the default memory follows --jobs, which must not change a
            # verdict); a verdict reached without the sandbox is not one reached with it
            {"timeout": cfg.timeout, "memory": cfg.memory, "sandbox": sandbox},
        )  # fmt: skip

    sw.judges = {s.key: judge(s) for s in sw.cells}


def _write_fingerprint(
    sw: _Sweep, probes: dict[str, tuple[str | None, dict[str, Any]]], setting: dict[str, Any],
    sandbox: str,
) -> dict[str, Any]:  # fmt: skip
    """The run's fingerprint (what ran, where, with which settings), written before any
    cell runs; returned for the last step to complete."""
    from .execution._fingerprint import environment

    cfg = sw.cfg
    fp: dict[str, Any] = {
        "environment": environment(probes, setting),
        "run": {
            "profile": cfg.profile,
            "fpenvs": list(cfg.fpenvs),
            "candidates": [c.uid for c in cfg.candidates],
            "backends": [b.name for b in cfg.backends],
            "dtypes": list(cfg.dtypes),
            "families": [f.name for f in cfg.families],
            "jobs": cfg.jobs,
            "memory_per_worker": memory_of(cfg),
            "timeout_s": cfg.timeout,
            "isolation": cfg.isolation,
            "sandbox": sandbox,
            "budgets": {
                "source": cfg.budgets.source,
                "default": cfg.budgets.default,
                "max_ulp": cfg.budgets.max_ulp,
            },
            "settings": setting,
            "cells": [sw.names[s.key] for s in sw.cells],
        },
    }
    if sw.cluster is not None:
        from .execution._distributed import fingerprint

        fp["cluster"] = fingerprint(sw.cluster)
    sw.rd.write_fingerprint(fp)
    return fp


def _resume(sw: _Sweep, fp: dict[str, Any]) -> list[CellSpec]:
    """With --resume, the finished cells whose judge is unchanged go to ``sw.done``
    (damaged and stale ones are said and rerun); the cells left to do, announced."""
    cfg, cells, names, say = sw.cfg, sw.cells, sw.names, sw.say
    if cfg.resume:
        good, bad = sw.rd.read_cells(names.values())
        stale = 0
        by_name = {names[s.key]: s for s in cells}
        for name, rec in good.items():
            if rec["judge"] == sw.judges[by_name[name].key]:
                sw.done[name] = rec
            else:
                stale += 1
        if bad:
            shown = ", ".join(Path(f).name for f, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
            say(f"{len(bad)} damaged cell files are recomputed ({shown})")
        if stale:
            say(
                f"{stale} finished cells were judged under other settings (budgets, oracle, "
                "versions, platform, inputs or code) and are rerun"
            )
    todo = [s for s in cells if names[s.key] not in sw.done]
    where = (
        plural(cfg.jobs, "job")
        if sw.cluster is None
        else f"{plural(len(sw.cluster.workers), 'worker')} of {fp['cluster']['scheduler']}"
    )
    say(
        f"{len(cells)} cells ({len(cells) - len(todo)} already done), profile {cfg.profile}, "
        f"{where}, isolation {cfg.isolation}, results in {sw.rd.path}"
    )
    return todo


def _record_not_run(
    sw: _Sweep, todo: list[CellSpec], probes: dict[str, tuple[str | None, dict[str, Any]]]
) -> list[CellSpec]:
    """Record the cells that cannot run here as ``not run`` with the reason (the
    backend's probe, a dtype it lacks, a family unavailable here); the others, to run."""
    unavailable = {f.name: f.why_not() for f in sw.cfg.families}
    runnable = []
    unrun: dict[str, int] = {}  # why -> cells
    for s in todo:
        why = probes[s.backend.name][0]
        if why is None and s.dtype not in s.backend.dtypes:
            why = f"{s.backend.name} has no {s.dtype}"
        if why is None:
            why = unavailable[s.family.name]
        if why is not None:
            sw.commit(not_run(s, why))
            unrun[why] = unrun.get(why, 0) + 1
        else:
            runnable.append(s)
    if unrun:  # counted apart: the progress counts the cells that run
        sw.say(not_run_here(unrun))
    return runnable


def _execute_and_score(sw: _Sweep, runnable: list[CellSpec], allowed: dict[str, list[str]]) -> None:
    """Fill the oracle cache for the runnable cells' inputs, then execute them (on the
    cluster, or in the local pool's isolated workers) and score and record each one
    here as its data comes back."""
    cfg = sw.cfg
    _oracle_pass(
        {(s.function, s.family.name, s.dtype): sw.units[s.unit] for s in runnable},
        cfg,
        sw.say,
    )
    progress = _Progress(len(runnable), 0, cfg.progress, [s.family.name for s in runnable])
    cache = OracleCache(cfg.cache)

    def on_result(spec: CellSpec, raw: Raw | None, reason: str | None) -> None:
        if raw is None:
            rec = failed(spec, reason or "no result")
        else:
            rec = score(
                spec,
                raw,
                sw.units[spec.unit],
                cache.get,
                cfg.budgets,
                cache.recompute,
            )
        sw.commit(rec)
        progress.update(rec)

    try:
        if sw.cluster is not None:
            sw.cluster.execute(
                _priority(runnable), allowed, cfg.timeout, on_result,
                lambda s: progress.update(None, s.key), fresh=cfg.isolation == "cell",
            )  # fmt: skip
        else:
            _execute(_priority(runnable), cfg, sw.rd, on_result, progress)
    finally:
        progress.close()
    if cache.rejected:
        sw.say(f"{len(cache.rejected)} oracle cache entries failed their check and were recomputed")


def _write_table(sw: _Sweep, fp: dict[str, Any], started: float) -> Any:
    """The table from every cell's record, written with the fingerprint completed (its
    wall time and end); a cell with no record is the harness's fault and raises."""
    names = sw.names
    missing = [s.key for s in sw.cells if names[s.key] not in sw.done]
    if missing:  # a cell with no result is a fault of the harness, never a silent gap
        raise RuntimeError(f"{len(missing)} cells have no result: {missing[:3]}")
    table = table_from(sw.done[names[s.key]] for s in sw.cells)
    sw.rd.write_table(table)
    fp["run"]["wall_s"] = round(time.time() - started, 1)  # this invocation's, resumed or not
    fp["run"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sw.rd.write_fingerprint(fp)
    return table


def _execute(
    cells: list[CellSpec], cfg: RunConfig, rd: ResultsDir,
    on_result: Callable[[CellSpec, Raw | None, str | None], None], progress: _Progress,
) -> None:  # fmt: skip
    if cfg.isolation == "none":
        from .execution._cell import execute, load_error

        loaded: dict[str, Any] = {}
        for s in cells:
            progress.update(None, s.key)
            if s.candidate.uid not in loaded:
                try:
                    loaded[s.candidate.uid] = s.candidate.load()
                except Exception as exc:
                    loaded[s.candidate.uid] = load_error(s, exc)
            fn = loaded[s.candidate.uid]
            on_result(s, Raw(error=fn) if isinstance(fn, str) else execute(s, fn), None)
        return
    from .execution._isolation import supervise

    supervise(
        cells, jobs=cfg.jobs, timeout=cfg.timeout, log_dir=rd.logs, memory=memory_of(cfg),
        on_result=on_result,
        on_start=lambda s: progress.update(None, s.key), fresh_per_cell=cfg.isolation == "cell",
    )  # fmt: skip


def load_table(results: str | os.PathLike[str]) -> Any:
    """The table of a finished run (raises ResultsError naming what cannot be used)."""
    from .scoring._results import load_results

    return load_results(results)[0]
