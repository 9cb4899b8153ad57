"""What a sweep costs on a Dask cluster against the local process pool, side by side
in one run, each sweep in a process of its own:

    python benchmarks/bench_cluster.py overhead [--cells-from quick]
    python benchmarks/bench_cluster.py quick
    python benchmarks/bench_cluster.py exhaustive [--chunks 0-31]

- ``overhead``: impl on numpy:cpu over every quick family in float32 and float64, one
  cell a batch, on a local cluster of one worker against the local pool with one job.
  The seconds the cells' phase takes in each (``Cluster.execute`` against the pool's
  ``_execute``), and their difference per batch: what a batch costs on the cluster
  beyond its cells.
- ``quick``: the default sweep (every candidate on every backend here, quick profile)
  on the local pool against ``--scheduler local:2``: the wall time of each, and per
  1,000 cells.
- ``exhaustive``: impl on chunks of the exhaustive float32 family, ``local:1``
  against ``local:2``.

The oracle cache is filled once before any timed sweep, so no sweep pays for it.
Pass ``--repeat N`` for N rounds, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# runs in the sweep's process: times the cells' phase, one cell a batch where asked
_TIMED = """
import json, sys, time
import conformance.execution._distributed as d, conformance._runner as r
from conformance._cli import main
if {one_a_batch}:
    d.BATCH = d.FIRST = 1  # BATCH: the batch size of versions without the agent
spent = {{}}
def timed(obj, name):
    f = getattr(obj, name)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent["cells"] = time.perf_counter() - t
            b = getattr(a[0], "batches", None) if name == "execute" else None
            spent["batches"] = getattr(b, "taken", None)
    setattr(obj, name, g)
timed(d.Cluster, "execute")
timed(r, "_execute")
t = time.perf_counter()
code = main({argv!r})
spent["wall"] = time.perf_counter() - t
print("TIMED " + json.dumps(spent))
sys.exit(code)
"""


def sweep(argv: list[str], one_a_batch: bool = False) -> dict[str, float]:
    env = dict(os.environ)
    if one_a_batch:
        env["CONFORMANCE_BATCH_SECONDS"] = "1e-9"
    code = _TIMED.format(one_a_batch=one_a_batch, argv=[*argv, "--no-progress"])
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    line = [s for s in p.stdout.splitlines() if s.startswith("TIMED ")]
    if p.returncode not in (0, 1) or not line:
        raise SystemExit(f"sweep {' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out: dict[str, float] = json.loads(line[-1][6:])
    results = argv[argv.index("--results") + 1]
    out["cells_run"] = _cells_run(results)
    return out


def _cells_run(results: str) -> int:
    import pandas as pd

    t = pd.read_parquet(Path(results, "results.parquet"))
    return int((t.status != "not run").sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["overhead", "quick", "exhaustive"])
    ap.add_argument("--chunks", default="0-31", help="exhaustive-f32 chunks (default 0-31)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as d:
        cache = str(Path(d, "cache"))
        if args.what == "overhead":
            base = ["run", "--candidates", "impl", "--backends", "numpy:cpu", "--dtypes",
                    "float32,float64", "--cache", cache]  # fmt: skip
            sides = {"local pool, 1 job": ["--jobs", "1"], "local:1": ["--scheduler", "local:1"]}
        elif args.what == "quick":
            base = ["run", "--cache", cache]
            sides = {"local pool": [], "local:2": ["--scheduler", "local:2"]}
        else:
            chunks = f"exhaustive-f32:{args.chunks}"
            base = ["run", "--candidates", "impl", "--backends", "numpy:cpu", "--dtypes",
                    "float32", "--families", chunks, "--cache", cache]  # fmt: skip
            sides = {"local:1": ["--scheduler", "local:1"], "local:2": ["--scheduler", "local:2"]}
        sweep([*base, "--results", str(Path(d, "warm"))])  # the oracle cache, once
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
        for r in range(args.repeat):
            for name, extra in sides.items():
                res = str(Path(d, f"{name.replace(' ', '_')}-{r}"))
                rows[name].append(sweep([*base, *extra, "--results", res], args.what == "overhead"))
        head = "cells run | cells' phase (s) | wall (s) | s per 1,000 cells"
        print(f"| {args.what} | run | {head} |")
        print("|---|---|---|---|---|---|")
        for name, runs in rows.items():
            for i, x in enumerate(runs):
                per = 1000 * x["wall"] / max(1, x["cells_run"])
                print(f"| {name} | {i + 1} | {x['cells_run']} | {x['cells']:.1f} | "
                      f"{x['wall']:.1f} | {per:.1f} |")  # fmt: skip
        names = list(rows)
        for i in range(args.repeat):
            a, b = rows[names[0]][i], rows[names[1]][i]
            if args.what == "overhead":
                n = b.get("batches") or b["cells_run"]
                print(f"round {i + 1}: {n:g} batches; overhead per batch "
                      f"{1000 * (b['cells'] - a['cells']) / n:.0f} ms")  # fmt: skip
            else:
                print(f"round {i + 1}: wall {names[1]} / {names[0]} = {b['wall'] / a['wall']:.2f}")


if __name__ == "__main__":
    main()
