"""Oracle throughput, measured side by side in one run (one process, one core).

    python benchmarks/bench_oracle.py [--rows 16] [--long] [--json out.json]

Rows of 1024 standard-normal float64 values: a plain mpmath loop at 128 bits (mpf
per element, exp, sum, log), the mpmath engine, the Arb engine, vectorized scoring from
cached oracle data, and (with --long) one row of 2**20 elements per engine.

Pairs, in a table of their own: float32 pairs [0, v] per second, the certified fast
path (``reference.log_softmax_pairs``, 2**22 pairs with v uniform over the float32
bit patterns, NaN and infinities included) beside the exact engine on the same kind
of pairs (``reference.log_softmax`` of rows [0, v]).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np

import reference
from reference import OracleResult, evaluate


def _best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def plain_mpmath_loop(x: np.ndarray) -> list[list[Any]]:
    """The straightforward oracle: mpf per element at 128 bits."""
    out = []
    with mpmath.workprec(128):
        for row in x:
            xs = [mpmath.mpf(v) for v in row.tolist()]
            m = max(xs)
            s = mpmath.fsum(mpmath.exp(v - m) for v in xs)
            L = mpmath.log(s)
            out.append([v - m - L for v in xs])
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pair_rates(rng: np.random.Generator, repeat: int) -> dict[str, float]:
    """float32 pairs [0, v] per second: the certified fast path and the exact engine."""
    v = rng.integers(0, 1 << 32, size=1 << 22, dtype=np.uint64).astype(np.uint32).view(np.float32)
    rows = np.stack([np.zeros(1 << 12, dtype=np.float32), v[: 1 << 12]], axis=1)
    reference.log_softmax_pairs(v[:1024])  # warm
    with np.errstate(invalid="ignore"):
        return {
            "certified fast path": v.size
            / _best_of(lambda: reference.log_softmax_pairs(v), repeat),
            "exact engine": len(rows) / _best_of(lambda: reference.log_softmax(rows, -1), repeat),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--long", action="store_true", help="also time one row of 2**20")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, 1024))
    n = x.size
    evaluate(x[:1], axis=-1, engine="arb")  # warm imports and constant caches
    evaluate(x[:1], axis=-1, engine="mpmath")

    rates: dict[str, float] = {}
    rates["plain mpmath loop, 128 bits"] = n / _best_of(lambda: plain_mpmath_loop(x), args.repeat)
    for eng in ("mpmath", "arb"):
        rates[f"oracle, {eng} engine"] = n / _best_of(
            lambda eng=eng: evaluate(x, axis=-1, engine=eng), args.repeat
        )

    res = evaluate(x, axis=-1)
    reps = (1 << 22) // n
    big = OracleResult(
        res.fmt,
        res.axis,
        np.tile(res.expected, (reps, 1)),
        np.tile(res.residual, (reps, 1)),
        np.tile(res.ulp_exp, (reps, 1)),
    )
    cand = np.tile(np.log(np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)), (reps, 1))
    rates["scoring from cached oracle data"] = cand.size / _best_of(
        lambda: big.ulp_error(cand), args.repeat
    )

    pairs = _pair_rates(rng, args.repeat)

    base = rates["plain mpmath loop, 128 bits"]
    info = reference.engine_info()
    cpu = _cpu_name()
    print(
        f"# oracle throughput, elements/s on one core ({cpu},"
        f" mpmath {info['mpmath']} backend={info['mpmath_backend']},"
        f" python-flint {info['python-flint']})"
    )
    print(f"# {args.rows} rows x 1024 standard-normal float64, best of {args.repeat}")
    print(f"{'what':<36} {'elements/s':>14} {'vs plain loop':>14}")
    for k, v in rates.items():
        print(f"{k:<36} {v:>14,.0f} {v / base:>13.1f}x")

    print()
    print(f"{'float32 pairs [0, v]':<36} {'pairs/s':>14} {'vs exact':>14}")
    for k, v in pairs.items():
        print(f"{k:<36} {v:>14,.0f} {v / pairs['exact engine']:>13.0f}x")

    seconds: dict[str, float] = {}
    if args.long:
        row = rng.standard_normal(1 << 20)
        for eng in ("arb", "mpmath"):
            seconds[f"one row of 2**20, {eng} engine"] = _best_of(
                lambda eng=eng: evaluate(row, engine=eng), 1
            )
        for k, v in seconds.items():
            print(f"{k:<36} {v:>13.2f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"rates": rates, "pairs": pairs, "seconds": seconds, "engine_info": info},
                fh, indent=2,
            )  # fmt: skip


if __name__ == "__main__":
    main()
