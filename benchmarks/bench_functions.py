"""impl.softmax and impl.logsumexp: how often the exact step runs, and what they cost
beside their peers, measured side by side in one run.

    python benchmarks/bench_functions.py [--repeat 15] [--profile quick|full]

First, per format, over every family's inputs (the sweep's) and over random rows:
the calls, the calls whose rounding test left an output open (decided on the host in
exact arithmetic: impl/_exact.py), and the slices so decided. Then medians of
interleaved timings, in ms, at a few shapes, for NumPy arrays (impl against
scipy.special) and CPU tensors (impl against torch's own), with the ratios.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import impl
from conformance.functions._families import family_inputs


def _exact_rates(profile: str) -> list[tuple[str, str, int, int, int]]:
    """(function, format, calls, calls with an open output, slices decided exactly)"""
    from impl import _exact, _host

    rows = []
    rng = np.random.default_rng(0)
    randoms = {
        fmt: (rng.normal(size=(256, 1000)) * 4).astype(dt)
        for fmt, dt in (("float32", np.float32), ("float64", np.float64), ("float16", np.float16))
    }
    for function, fn in (("softmax", impl.softmax), ("logsumexp", impl.logsumexp)):
        tally: dict[str, list[int]] = {}
        for _, fmt, cases in family_inputs(profile, function=function):
            for c in cases:
                t = tally.setdefault(fmt, [0, 0, 0])
                f0, s0 = _host.fixes, _exact.stats["slices"]
                kw = {k: getattr(c, k) for k in c.keywords}  # logsumexp's b, return_sign
                with np.errstate(all="ignore"):
                    fn(c.x, axis=c.axis, **kw)
                t[0] += 1
                t[1] += _host.fixes - f0
                t[2] += _exact.stats["slices"] - s0
        for fmt, x in randoms.items():
            t = tally.setdefault(f"{fmt}, random rows", [0, 0, 0])
            f0, s0 = _host.fixes, _exact.stats["slices"]
            fn(x, axis=-1)
            t[0] += 1
            t[1] += _host.fixes - f0
            t[2] += _exact.stats["slices"] - s0
        rows += [(function, fmt, *t) for fmt, t in tally.items()]
    return rows


def _interleaved(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Median ms of each, the calls alternating (after a warm-up call each)."""
    for f in fns:
        f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def _speed(repeat: int) -> list[tuple[str, str, str, float, float]]:
    import scipy.special

    try:
        import torch
    except ImportError:
        torch = None
    rows = []
    for shape in [(64, 1000), (128, 32768), (32, 50257)]:
        for dt in (np.float32, np.float64):
            x = np.random.default_rng(1).normal(size=shape).astype(dt)
            label = f"{np.dtype(dt).name} {shape}"
            pairs: list[tuple[str, str, Any, Callable[..., Any], Callable[..., Any]]] = [
                ("softmax", "numpy", x, impl.softmax, scipy.special.softmax),
                ("logsumexp", "numpy", x, impl.logsumexp, scipy.special.logsumexp),
            ]
            if torch is not None:
                t = torch.from_numpy(x)
                pairs += [
                    ("softmax", "torch", t, impl.softmax, torch.softmax),
                    ("logsumexp", "torch", t, impl.logsumexp, torch.logsumexp),
                ]
            for function, arrays, arg, mine, peer in pairs:
                kw = "dim" if arrays == "torch" else "axis"
                a, b = _interleaved(
                    [
                        functools.partial(mine, arg, axis=-1),
                        functools.partial(peer, arg, **{kw: -1}),
                    ],
                    repeat,
                )
                rows.append((function, arrays, label, a, b))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--profile", choices=["quick", "full"], default="quick")
    args = p.parse_args()
    print("| function | inputs | calls | calls with an open output | slices decided exactly |")
    print("|---|---|---|---|---|")
    for function, fmt, calls, opened, slices in _exact_rates(args.profile):
        print(f"| {function} | {fmt} | {calls} | {opened} | {slices} |")
    print()
    print("| function | arrays | shape | impl (ms) | peer (ms) | impl / peer |")
    print("|---|---|---|---|---|---|")
    for function, arrays, label, a, b in _speed(args.repeat):
        peer = "scipy.special" if arrays == "numpy" else "torch"
        print(f"| {function} | {arrays} ({peer}) | {label} | {a:.3g} | {b:.3g} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
