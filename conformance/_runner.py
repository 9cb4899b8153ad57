"""The matrix runner.

A sweep plans every cell (candidate x backend x dtype x family), records the cells
that cannot run (backend unavailable, dtype unsupported) as ``not run`` with the
reason, fills the oracle cache for every input first (in parallel, each input once),
then runs the cells in worker processes.

Isolation: the cells of one backend run in a worker process of their own, one after
another, reporting each start and result over a pipe. A worker
that dies (segfault, out of memory) or overruns the per-cell timeout is killed; the
cell it was running is recorded as ``error`` with the reason and its remaining cells
go to a new worker. Only the parent writes results: one JSON file per cell, written
atomically, so a sweep killed at any point loses nothing that finished, and
``resume=True`` runs only the cells that have no file yet. The table (Parquet and
CSV) and the run fingerprint are written from the cell files at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ._backends import Backend
from ._candidates import Candidate
from ._cell import COLUMNS, Budgets, CellSpec, OracleCache, not_run, run_cell
from ._families import Family

__all__ = ["RunConfig", "default_cache_dir", "load_table", "plan", "run", "write_table"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "log-softmax-conformance" / "oracle"


@dataclass
class RunConfig:
    candidates: Sequence[Candidate]
    backends: Sequence[Backend]
    dtypes: Sequence[str]
    families: Sequence[Family]
    profile: str = "quick"
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    results: Path = Path("results")
    resume: bool = False
    timeout: float = 300.0
    cache: Path = field(default_factory=default_cache_dir)
    budgets: Budgets = field(default_factory=Budgets.load)
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise


def plan(cfg: RunConfig) -> list[CellSpec]:
    """Every applicable cell, in a stable order."""
    cells = []
    for c in cfg.candidates:
        for b in cfg.backends:
            if not c.applies_to(b):
                continue
            for dt in cfg.dtypes:
                for f in cfg.families:
                    if dt in f.dtypes:
                        cells.append(CellSpec(c, b, dt, f, cfg.profile))
    return cells


def _file_name(spec: CellSpec) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.key)[:80]
    digest = hashlib.sha1(spec.key.encode()).hexdigest()[:10]
    return f"{readable}-{digest}.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_writable(results: Path) -> None:
    try:
        (results / "cells").mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"results directory {str(results)!r} is not writable: {exc}"
        ) from None


# -- the oracle pre-pass ----------------------------------------------------------------


def _fill_cache(args: tuple[str, str, str, str]) -> int:
    fam_name, dtype, profile, cache_dir = args
    from ._families import family

    cache = OracleCache(cache_dir)
    done = 0
    for case in family(fam_name).cases(dtype, profile):
        if not cache.has(case):
            cache.get(case)
            done += 1
    return done


def _oracle_pass(cells: list[CellSpec], cfg: RunConfig, log: Callable[[str], None]) -> None:
    units = sorted({(s.family.name, s.dtype) for s in cells})
    missing = []
    cache = OracleCache(cfg.cache)
    for fam_name, dtype in units:
        fam = next(s.family for s in cells if s.family.name == fam_name)
        if not all(cache.has(c) for c in fam.cases(dtype, cfg.profile)):
            missing.append((fam_name, dtype, cfg.profile, str(cfg.cache)))
    if not missing:
        return
    t = time.perf_counter()
    jobs = max(1, min(cfg.jobs, len(missing)))
    if jobs == 1:
        n = sum(_fill_cache(m) for m in missing)
    else:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            n = sum(pool.map(_fill_cache, missing))
    log(f"oracle: {n} inputs evaluated in {time.perf_counter() - t:.1f}s (cache {cfg.cache})")


# -- workers ----------------------------------------------------------------------------


@dataclass
class _Task:
    cells: list[CellSpec]


def _worker(conn: Connection, cells: list[CellSpec], cache_dir: str, budgets: Budgets) -> None:
    """Runs cells one by one: ("start", key) then ("done", key, record) for each."""
    os.environ.setdefault("SCIPY_ARRAY_API", "1")
    if any(s.backend.library == "jax" for s in cells):
        _persistent_xla_cache(Path(cache_dir) / "xla")
    parent = os.getppid()
    cache = OracleCache(cache_dir)
    for spec in cells:
        if os.getppid() != parent:  # the sweep was killed: stop, the rerun resumes
            return
        conn.send(("start", spec.key))
        rec = run_cell(spec, cache, budgets)
        conn.send(("done", spec.key, rec))
    conn.send(("exit",))


def _persistent_xla_cache(path: Path) -> None:
    """XLA's compilations on disk beside the oracle's answers: a second sweep loads
    them instead of compiling every shape of every candidate again."""
    try:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception:  # no JAX or an older one: the cells say so themselves
        pass


@dataclass
class _Running:
    proc: Any
    conn: Connection
    cells: list[CellSpec]
    current: str | None = None
    since: float = 0.0
    done: set[str] = field(default_factory=set)


class _Progress:
    def __init__(self, total: int, already: int, enabled: bool | None) -> None:
        self.total, self.done = total, already
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.new = 0

    def update(self, rec: dict[str, Any] | None, current: str = "") -> None:
        if rec is not None:
            self.done += 1
            self.new += 1
        el = time.perf_counter() - self.t0
        eta = el / self.new * (self.total - self.done) if self.new else float("nan")
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
            print(
                f"[{self.done}/{self.total}] {rec['candidate']} {rec['backend']} {rec['dtype']} "
                f"{rec['family']}: {rec['status']} {ulp_s} ({rec['seconds']:.1f}s)",
                flush=True,
            )

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _tasks(cells: list[CellSpec]) -> list[_Task]:
    """One task per backend: a worker imports one library, once."""
    groups: dict[str, list[CellSpec]] = {}
    for s in cells:
        groups.setdefault(s.backend.name, []).append(s)
    # costly tasks first, so that the pool stays busy to the end (per-cell costs
    # measured on CPU: JAX compiles, Dask schedules, torch and NumPy just run)
    weight = {"jax": 3.0, "dask": 1.5, "torch": 1.2}
    return sorted(
        (_Task(g) for g in groups.values()),
        key=lambda t: -len(t.cells) * weight.get(t.cells[0].backend.library, 1.0),
    )


def _run_cells(
    cells: list[CellSpec], cfg: RunConfig, commit: Callable[[dict[str, Any]], None],
    progress: _Progress,
) -> None:  # fmt: skip
    ctx = mp.get_context("spawn")
    pending = _tasks(cells)
    running: list[_Running] = []

    def start(task: _Task) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker, args=(child_conn, task.cells, str(cfg.cache), cfg.budgets),
            daemon=True,
        )  # fmt: skip
        proc.start()
        child_conn.close()
        running.append(_Running(proc, parent_conn, task.cells))

    def fail_current(r: _Running, reason: str) -> None:
        spec = next(s for s in r.cells if s.key == r.current)
        rec = spec.base_record()
        rec.update(status="error", reason=reason, seconds=time.perf_counter() - r.since)
        commit(rec)
        progress.update(rec)
        rest = [s for s in r.cells if s.key not in r.done and s.key != r.current]
        if rest:
            pending.insert(0, _Task(rest))

    def finish(r: _Running) -> None:
        running.remove(r)
        with contextlib.suppress(OSError):
            r.conn.close()

    try:
        while pending or running:
            while pending and len(running) < max(1, cfg.jobs):
                start(pending.pop(0))
            ready = wait([r.conn for r in running], timeout=0.5)
            for r in list(running):
                if r.conn in ready:
                    try:
                        msg = r.conn.recv()
                    except (EOFError, OSError):
                        r.proc.join(5)
                        code = r.proc.exitcode
                        if r.current is not None:
                            why = (
                                f"worker died: signal {-code}" if code is not None and code < 0
                                else f"worker exited with code {code}"
                            )  # fmt: skip
                            fail_current(r, f"{why} while running this cell")
                        else:
                            rest = [s for s in r.cells if s.key not in r.done]
                            if rest:
                                pending.insert(0, _Task(rest))
                        finish(r)
                        continue
                    if msg[0] == "start":
                        r.current, r.since = msg[1], time.perf_counter()
                        progress.update(None, msg[1])
                    elif msg[0] == "done":
                        commit(msg[2])
                        r.done.add(msg[1])
                        r.current = None
                        progress.update(msg[2])
                    elif msg[0] == "exit":
                        r.proc.join(5)
                        finish(r)
                elif r.current is not None and time.perf_counter() - r.since > cfg.timeout:
                    r.proc.kill()
                    r.proc.join(5)
                    fail_current(r, f"timeout: no result after {cfg.timeout:g}s")
                    finish(r)
    finally:
        for r in running:
            r.proc.kill()


# -- the sweep --------------------------------------------------------------------------


def run(cfg: RunConfig, log: Callable[[str], None] | None = None) -> Any:
    """Run the sweep; returns the results table (a pandas DataFrame)."""
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    results = Path(cfg.results)
    _check_writable(results)
    cells_dir = results / "cells"
    cells = plan(cfg)
    if not cfg.resume:
        shutil.rmtree(cells_dir, ignore_errors=True)
        cells_dir.mkdir(parents=True)
    existing = {p.name for p in cells_dir.glob("*.json")}
    todo = [s for s in cells if _file_name(s) not in existing]
    say(
        f"{len(cells)} cells ({len(cells) - len(todo)} already done), profile {cfg.profile}, "
        f"{cfg.jobs} jobs, results in {results}"
    )

    names = {s.key: _file_name(s) for s in cells}

    def commit(rec: dict[str, Any]) -> None:
        key = "|".join(
            [rec["candidate"], rec["backend"], rec["dtype"], rec["family"], rec["profile"]]
        )
        _write_atomic(cells_dir / names[key], json.dumps(rec, sort_keys=True))

    # cells that cannot run: probed here, recorded without a worker
    runnable = []
    probes: dict[str, str | None] = {}
    for s in todo:
        if s.backend.name not in probes:
            probes[s.backend.name] = s.backend.probe()
        why = probes[s.backend.name]
        if why is None and s.dtype not in s.backend.dtypes:
            why = f"{s.backend.name} has no {s.dtype}"
        if why is not None:
            commit(not_run(s, why))
        else:
            runnable.append(s)
    _write_atomic(results / "fingerprint.json", json.dumps(fingerprint(cfg), indent=2))
    if runnable:
        _oracle_pass(runnable, cfg, say)
        progress = _Progress(len(cells), len(cells) - len(runnable), cfg.progress)
        try:
            _run_cells(runnable, cfg, commit, progress)
        finally:
            progress.close()
    table = load_table(results)
    planned = {_file_name(s) for s in cells}
    table = table[[n in planned for n in table["_file"]]].drop(columns="_file")
    write_table(table, results)
    return table


def _records(results: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in sorted((results / "cells").glob("*.json")):
        yield p.name, json.loads(p.read_text())


def load_table(results: str | os.PathLike[str]) -> Any:
    """The table of every cell file under ``results`` (with a ``_file`` column)."""
    import pandas as pd

    rows = []
    for name, rec in _records(Path(results)):
        rec["_file"] = name
        rows.append(rec)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "_file"])
    order = ["candidate", "backend", "dtype", "family"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def write_table(table: Any, results: str | os.PathLike[str]) -> None:
    """results.parquet and results.csv, each written atomically."""
    results = Path(results)
    for name, write in (
        ("results.parquet", lambda p: table.to_parquet(p, index=False)),
        ("results.csv", lambda p: table.to_csv(p, index=False)),
    ):
        tmp = results / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, results / name)


def fingerprint(cfg: RunConfig) -> dict[str, Any]:
    from ._fingerprint import environment

    return {
        "environment": environment([b.library for b in cfg.backends]),
        "run": {
            "profile": cfg.profile,
            "candidates": [c.name for c in cfg.candidates],
            "backends": [b.name for b in cfg.backends],
            "dtypes": list(cfg.dtypes),
            "families": [f.name for f in cfg.families],
            "jobs": cfg.jobs,
            "timeout_s": cfg.timeout,
            "budgets": {
                "source": cfg.budgets.source,
                "default": cfg.budgets.default,
                "max_ulp": cfg.budgets.max_ulp,
            },
        },
    }
