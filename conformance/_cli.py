"""python -m conformance: list what can run here, run a sweep."""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._runner import ISOLATION, PlanError, RunConfig, default_cache_dir, default_jobs, run
from .backends._backends import BACKENDS, backend
from .backends._fpenv import FPENVS
from .execution._cell import STATUSES
from .functions._candidates import BUILTIN, candidate, known_candidates
from .functions._families import DEFAULT_FAMILIES, FAMILIES, PROFILES, families
from .functions._functions import DEFAULT_FUNCTION, FUNCTIONS
from .scoring._budgets import Budgets
from .scoring._results import ResultsError

__all__ = ["main"]

DTYPES = ("float16", "bfloat16", "float32", "float64")


class UsageError(Exception):
    """A bad name or option: printed with the valid choices, exit status 2."""


def _names(arg: str | None, all_names: Sequence[str], what: str) -> list[str]:
    if arg is None:
        return list(all_names)
    out = [s.strip() for s in arg.split(",") if s.strip()]
    if not out:
        raise UsageError(f"--{what} is empty; choose from: {', '.join(all_names)}")
    return out


def _fpenvs(arg: str) -> list[str]:
    out = list(dict.fromkeys(_names(arg, FPENVS, "fpenv")))
    for e in out:
        if e not in FPENVS:
            raise UsageError(f"unknown --fpenv {e!r}; valid: {', '.join(FPENVS)}")
    return out


_SINGULAR = {
    "backends": "backend",
    "families": "family",
    "dtypes": "dtype",
    "functions": "function",
}


def _pick(arg: str | None, all_names: Sequence[str], what: str, lookup: Any) -> list[Any]:
    picked = []
    for name in _names(arg, all_names, what):
        try:
            picked.append(lookup(name))
        except KeyError as exc:
            known_base = ":" in name and name.partition(":")[0] in all_names
            raise UsageError(
                str(exc.args[0])
                if known_base and exc.args
                else f"unknown {_SINGULAR[what]} {name!r}; valid: {', '.join(all_names)}"
            ) from None
    return picked


def _list(args: argparse.Namespace) -> int:
    print("backends:")
    for b in BACKENDS:
        why = b.probe()
        state = "available" if why is None else f"not available: {why}"
        print(f"  {b.name:<30} {state}  [{', '.join(b.dtypes)}]")
    for fn in FUNCTIONS:
        print(f"{fn.name} candidates ({fn.doc}):")
        for c in known_candidates(fn.name):
            where = "all backends" if not c.libraries else ", ".join(c.libraries)
            print(f"  {c.name:<30} {c.doc} ({where})")
    print(f"  {'module:function':<30} any function fn(x, axis=None), of the sweep's function")
    print("families:")
    for f in FAMILIES:
        extra = "" if len(f.dtypes) == 4 else f" [{', '.join(f.dtypes)}]"
        extra += " (when named)" if f.optional else ""
        print(f"  {f.name:<30} {f.doc}{extra}")
    print(f"profiles: {', '.join(PROFILES)}")
    return 0


def _functions(arg: str | None) -> list[str]:
    names = [f.name for f in FUNCTIONS]
    picked = _names(arg, names, "functions")
    for name in picked:
        if name not in names:
            raise UsageError(f"unknown function {name!r}; valid: {', '.join(names)}")
    return list(dict.fromkeys(picked))


def _candidates(arg: str | None, functions: Sequence[str] = (DEFAULT_FUNCTION,)) -> list[Any]:
    """The candidates of each function: those named that it has (every built-in one by
    default). A name no function has is an error; "module:function" is a candidate of
    the one function the sweep names, or of log_softmax when it names several."""
    if arg is None:
        return [c for f in functions for c in BUILTIN if c.function == f]
    out = []
    specs = _names(arg, list(dict.fromkeys(c.name for c in BUILTIN)), "candidates")
    for spec in specs:
        fns = [f for f in functions if any(c.name == spec for c in known_candidates(f))]
        if ":" in spec:
            fns = [functions[0] if len(functions) == 1 else DEFAULT_FUNCTION]
        if not fns:
            known = ", ".join(dict.fromkeys(c.name for f in functions for c in known_candidates(f)))
            raise UsageError(
                f"unknown candidate {spec!r} for {', '.join(functions)}; valid: {known}, or "
                "module:function"
            )
        for f in fns:
            try:
                out.append(candidate(spec, f))
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                raise UsageError(f"candidate {spec!r}: {exc}") from None
    return out


def _families(arg: str | None) -> list[Any]:
    """--families: names, where "default" stands for every family but the optional
    ones (the peers' suites); nothing given is "default"."""
    if arg is None:
        return list(DEFAULT_FAMILIES)
    names = [f.name for f in FAMILIES]
    out: list[Any] = []
    for name in _names(arg, ["default", *names], "families"):
        for f in (
            DEFAULT_FAMILIES if name == "default" else _pick(name, names, "families", families)[0]
        ):
            if f not in out:
                out.append(f)
    return out


def _routes(items: list[str] | None) -> dict[str, str]:
    if not items:
        return {}
    from .execution._distributed import SchedulerError, parse_routes

    try:
        return parse_routes(items)
    except SchedulerError as exc:
        raise UsageError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    cands = _candidates(args.candidates, _functions(args.functions))
    backends = _pick(args.backends, [b.name for b in BACKENDS], "backends", backend)
    dtypes = _names(args.dtypes, DTYPES, "dtypes")
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype {d!r}; valid: {', '.join(DTYPES)}")
    fams = _families(args.families)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    try:
        budgets = Budgets.load(args.budgets)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    cfg = RunConfig(
        candidates=cands, backends=backends, dtypes=dtypes, families=fams,
        profile=args.profile, jobs=args.jobs, results=Path(args.results), resume=args.resume,
        timeout=args.timeout, cache=Path(args.cache), budgets=budgets,
        progress=False if args.no_progress else None, isolation=args.isolation,
        scheduler=args.scheduler, routes=_routes(args.resource), memory=args.memory,
        require_sandbox=args.require_sandbox,
        fpenvs=_fpenvs(args.fpenv),
    )  # fmt: skip
    try:
        table = run(cfg)
    except (PlanError, ResultsError) as exc:
        raise UsageError(str(exc)) from None
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"{len(table)} cells: {summary}. Table: {Path(args.results) / 'results.parquet'}")
    for (fn, name), part in table.groupby(["function", "candidate"], sort=False):
        c = part["status"].value_counts().to_dict()
        print(f"  {fn} {name}: " + ", ".join(f"{c[k]} {k}" for k in STATUSES if c.get(k)))
    print("Report: python -m conformance report" + (
        f" --results {args.results}" if args.results != "results" else ""))  # fmt: skip
    return 0


def _budget_seconds(text: str) -> float:
    t = text.strip().lower()
    scale = 60.0 if t.endswith("m") else 1.0
    t = t.rstrip("ms")
    try:
        value = float(t) * scale
    except ValueError:
        raise UsageError(f"--budget takes seconds such as 60s or 2m, got {text!r}") from None
    if not value > 0:
        raise UsageError(f"--budget must be positive, got {text!r}")
    return value


def _search(args: argparse.Namespace) -> int:
    from ._search import search

    (cand,) = _candidates(args.candidate)
    (b,) = _pick(args.backend, [x.name for x in BACKENDS], "backends", backend)
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {args.dtype!r}; valid: {', '.join(DTYPES)}")
    seconds = _budget_seconds(args.budget)
    print(
        f"searching {cand.name} on {b.name} in {args.dtype} for {seconds:g}s "
        f"(strategy {args.strategy})",
        file=sys.stderr,
    )
    try:
        res = search(
            cand, b, args.dtype, seconds=seconds, examples=args.examples,
            strategy=args.strategy, corpus=args.corpus, seed=args.seed,
            log=lambda s: print(s, file=sys.stderr, flush=True), timeout=args.timeout,
        )  # fmt: skip
    except (RuntimeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(
        f"worst: {res.ulp:.6g} ULP after {res.examples} examples in {res.seconds:.1f}s "
        f"(known worst before: {res.known:.6g} ULP; {res.saved} input saved to the corpus)"
    )
    if res.row is not None:
        print(res.reproducer(cand, args.dtype))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .reporting._report import write_report

    # the published reports/ is written only on purpose (--out reports): a sweep's own
    # report goes beside its results, outside what git tracks
    out = Path(args.out) if args.out is not None else Path(args.results) / "report"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; the report is a directory of files")
    exhaustive: list[str] = []
    for item in args.exhaustive or []:
        if any(ch in item for ch in "*?["):  # a pattern: the directories it matches, if any
            found = sorted(p for p in glob.glob(item) if Path(p).is_dir())
            if not found:
                print(f"note: --exhaustive {item} matches no directory", file=sys.stderr)
            exhaustive += found
        else:
            exhaustive.append(item)
    try:
        files = write_report(args.results, out, exhaustive=exhaustive)
    except (FileNotFoundError, ResultsError) as exc:
        raise UsageError(str(exc)) from None
    print(f"{len(files)} files written under {out}: {out / 'README.md'}, {out / 'index.html'}")
    return 0


def _run_budgets(fp: dict[str, Any]) -> Any:
    """The budgets a run's cells were judged by, from its fingerprint (None: the
    default budgets, for results that predate the record)."""
    b = (fp.get("run") or {}).get("budgets")
    if not isinstance(b, dict) or not isinstance(b.get("max_ulp"), dict):
        return None
    try:
        return Budgets(
            {str(k): float(v) for k, v in b["max_ulp"].items()},
            float(b.get("default", 4.0)),
            str(b.get("source", "the run's fingerprint")),
        )
    except (TypeError, ValueError):
        raise ResultsError(f"the run's fingerprint holds unreadable budgets: {b!r}") from None


def _gate(args: argparse.Namespace) -> int:
    from .reporting._gate import GateInputError, gate
    from .scoring._results import load_results

    try:
        table, fp = load_results(args.results)
        res = gate(table, args.baseline, update=args.update, budgets=_run_budgets(fp))
    except (FileNotFoundError, ResultsError, GateInputError) as exc:
        raise UsageError(str(exc)) from None
    print(f"gate: {res.compared} cells compared with {args.baseline}")
    for line in res.worse:
        print(f"WORSE {line}")
    for line in res.platform:
        print(f"platform differs {line}")
    for line in res.better:
        print(f"better {line}")
    for line in res.known:
        print(f"known failure {line}")
    for line in res.stale:
        print(f"STALE expected failure {line}")
    if res.missing:
        shown = "; ".join(res.missing[:5]) + ("; ..." if len(res.missing) > 5 else "")
        print(
            f"{len(res.missing)} cells of the baseline for the swept backends, dtypes, "
            f"families and profiles are not in these results: {shown}"
        )
    if res.new:
        print(f"{len(res.new)} cells not in the baseline" + (" (added)" if args.update else ""))
    if res.ok and args.update:
        failing = sum(res.recorded_failing.values())
        detail = ", ".join(f"{n} {s}" for s, n in sorted(res.recorded_failing.items()))
        print(
            f"gate: {res.recorded} baseline entries written"
            + (
                f"; {failing} of them are failing cells ({detail}), recorded as the expected "
                "result: check that you mean to keep them"
                if failing else ""
            )
        )  # fmt: skip
    if res.ok:
        print("gate: pass" + (" (baseline updated)" if args.update else ""))
        return 0
    print(f"gate: FAIL, {len(res.worse)} cells worse than the baseline")
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the CLI reference of the docs is its help)."""
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Sweep functions x candidates x backends x dtypes x input families, "
        "scored by the oracle.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="backends (with availability), candidates, families")
    r = sub.add_parser("run", help="run a sweep and write the results table")
    r.add_argument("--functions", help="comma-separated: "
                   f"{', '.join(f.name for f in FUNCTIONS)} (default: all)")  # fmt: skip
    r.add_argument("--candidates", help="comma-separated names or module:function "
                   "(default: the built-in candidates of each function; module:function is "
                   "of the one function --functions names, else of log_softmax)")  # fmt: skip
    r.add_argument("--backends", help="comma-separated (default: all; absent ones are "
                   "recorded as not run)")  # fmt: skip
    r.add_argument("--dtypes", help=f"comma-separated (default: {','.join(DTYPES)})")
    r.add_argument("--families", help="comma-separated; 'default' stands for every family "
                   "but the peers' suites, which run when named (torch-opinfo, scipy-suite); "
                   "(default: default)")  # fmt: skip
    r.add_argument("--profile", choices=PROFILES, default="quick",
                   help="sizes and seeds per family (default: quick)")  # fmt: skip
    r.add_argument("--fpenv", default="default",
                   help="comma-separated floating-point environments the calls run in: "
                   "default, ftz (flush-to-zero and denormals-are-zero, as "
                   "torch.set_flush_denormal(True) and XLA set them); each cell runs once "
                   "per environment (default: default)")  # fmt: skip
    r.add_argument("--jobs", type=int, default=default_jobs(),
                   help="workers at a time (default: the cores this process may use)")  # fmt: skip
    r.add_argument("--results", default="results", help="results directory (default: results)")
    r.add_argument("--resume", action="store_true", help="keep finished cells, run the rest")
    r.add_argument("--timeout", type=float, default=300.0,
                   help="seconds per cell before its worker is killed (default: 300)")  # fmt: skip
    r.add_argument("--memory", type=_memory_arg, default=None,
                   help="address space per worker, e.g. 8G or 512M; 'none' for no limit "
                        "(default: the machine's memory over --jobs, 4G at least)")  # fmt: skip
    r.add_argument("--cache", default=str(default_cache_dir()),
                   help="oracle cache directory (default: %(default)s)")  # fmt: skip
    r.add_argument("--budgets", help="budgets TOML (default: conformance/data/budgets.toml)")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the cells on a Dask distributed cluster: a scheduler's address "
                   "(tcp://host:8786) or local[:N] (a local cluster of N workers for the run; "
                   "default: the local process pool)")  # fmt: skip
    r.add_argument("--resource", action="append", metavar="BACKEND=RESOURCE",
                   help="with --scheduler: run BACKEND's cells only on workers that have "
                   "RESOURCE (dask worker --resources RESOURCE=1); repeatable (default: GPU "
                   "backends need cuda, the others anything)")  # fmt: skip
    r.add_argument("--no-progress", action="store_true", help="log lines, no progress bar")
    r.add_argument("--require-sandbox", action="store_true",
                   help="refuse to run where the workers cannot be sandboxed (Landlock, "
                   "Linux 5.13 and later); without it, a run records 'sandbox: none'")  # fmt: skip
    r.add_argument(
        "--isolation", choices=ISOLATION, default="worker",
        help="worker: a process per candidate and backend (default); cell: a fresh process "
        "per cell; none: in this process, no timeout (for a debugger)",
    )  # fmt: skip
    s = sub.add_parser("search", help="search for a candidate's worst inputs; keep them")
    s.add_argument("--candidate", required=True, help="a built-in name or module:function")
    s.add_argument("--backend", default="numpy:cpu", help="(default: numpy:cpu)")
    s.add_argument("--dtype", default="float32", help="(default: float32)")
    s.add_argument("--budget", default="60s", help="time budget, e.g. 2m (default: 60s)")
    s.add_argument("--examples", type=int, help="stop after this many examples instead")
    s.add_argument(
        "--strategy",
        default="all",
        choices=("all", "rows", "dominant", "ties", "offset"),
        help="the kind of inputs searched (default: all)",
    )
    s.add_argument("--corpus", help="corpus file (default: conformance/data/worst_cases.jsonl)")
    s.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    s.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a call may take in its worker before it is killed and "
                   "counts as an infinite error (default: 60)")  # fmt: skip
    rp = sub.add_parser("report", help="Markdown, reST and HTML reports from a results table")
    rp.add_argument("--results", default="results",
                    help="results directory of a sweep (default: results)")  # fmt: skip
    rp.add_argument(
        "--out", default=None,
        help="output directory (default: RESULTS/report; the published report: --out reports)",
    )  # fmt: skip
    rp.add_argument("--exhaustive", action="append", metavar="RESULTS",
                    help="results of an exhaustive-f32 sweep whose figures join the report, "
                    "or a pattern ('results-exhaustive-*': the directories it matches, if "
                    "any); repeatable (default: only the chunk cells in --results)")  # fmt: skip
    g = sub.add_parser("gate", help="fail (exit 1) when any cell got worse than the baseline")
    g.add_argument("--results", default="results",
                   help="results directory of a sweep (default: results)")  # fmt: skip
    g.add_argument("--baseline", default="reports/baseline.json",
                   help="the baseline to compare with (default: %(default)s)")  # fmt: skip
    g.add_argument("--update", action="store_true",
                   help="ratchet: write improved and new cells into the baseline")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            return _report(args)
        if args.command == "gate":
            return _gate(args)
        if args.command == "list":
            return _list(args)
        if args.command == "search":
            return _search(args)
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun with --resume", file=sys.stderr)
        return 130


def _memory_arg(text: str) -> int:
    """--memory: bytes, with a K, M, G or T suffix (powers of 1024); none: no limit"""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t in ("NONE", "0"):
        return 0
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in scale:
            return int(float(t[:-1]) * scale[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--memory {text!r}: a size such as 8G or 512M, or 'none'"
        ) from None
