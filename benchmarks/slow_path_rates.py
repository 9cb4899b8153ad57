"""How often impl's slow path runs, per format, on the conformance families' inputs and
on random rows, and what it costs.

    python benchmarks/slow_path_rates.py [--profile quick|full]

impl's row kernels round each output correctly where the fast path's error bound
decides it, and recompute L on the slow path for the rows where it does not
(docs/impl.md, "Correct rounding"). For every family of the default sweep and every
format, this runs impl on NumPy over the family's inputs and prints the kernels'
counters (``impl._kernel.stats()``): rows, rows recomputed on the slow path, outputs
the fast path's bound left undecided, and outputs the slow path's left undecided too
(none expected). Then the cost of the accurate pass over a row (exact_l_*: the
double-double exp) against the fast path's whole call, in ns an entry, on one thread.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import impl
import reference
from conformance import FAMILIES

SKIP = {"exhaustive-f32", "torch-opinfo", "scipy-suite"}  # their own runs, or peers' data


def _counts(kernel: Any, fmt: str) -> dict[str, int]:
    stats: dict[str, int] = kernel.stats()["float64" if fmt == "float64" else "float32"]
    return stats


def _family_rows(profile: str) -> list[tuple[str, str, dict[str, int]]]:
    from impl import _kernel

    out = []
    for fam in FAMILIES:
        if fam.name in SKIP or fam.why_not() is not None:
            continue
        for fmt in reference.FORMATS:
            try:
                cases = fam.cases(fmt, profile)
            except Exception:  # a family without this format's inputs
                continue
            if not cases:
                continue
            _kernel.stats(True)
            with np.errstate(all="ignore"):
                for c in cases:
                    impl.log_softmax(c.x, axis=c.axis)
            out.append((fam.name, fmt, _counts(_kernel, fmt)))
    return out


def _random_rows() -> list[tuple[str, str, dict[str, int]]]:
    from impl import _kernel

    rng = np.random.default_rng(0)
    out = []
    for fmt in ("float16", "bfloat16", "float32", "float64"):
        dtype = reference.FORMATS[fmt].dtype
        for label, scale in (("normal logits, sd 5", 5.0), ("normal logits, sd 30", 30.0)):
            x = (rng.standard_normal((4096, 1024)) * scale).astype(dtype)
            _kernel.stats(True)
            impl.log_softmax(x, axis=-1)
            out.append((f"random (4096, 1024), {label}", fmt, _counts(_kernel, fmt)))
    return out


def _cost() -> list[tuple[str, float, float]]:
    from impl import _kernel

    impl.set_num_threads(1)
    rng = np.random.default_rng(1)
    out = []
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((256, 1024)) * 5).astype(dtype)
        m = x.max(axis=1)
        slow = _kernel.exact_l_f64 if dtype == np.float64 else _kernel.exact_l_f32

        def slow_pass(x: Any = x, m: Any = m, slow: Any = slow) -> None:
            for r in range(len(x)):
                slow(x[r], float(m[r]))

        def fast(x: Any = x) -> None:
            impl.log_softmax(x, axis=-1)

        ns = []
        for fn in (fast, slow_pass):
            fn()
            ts = []
            for _ in range(7):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            ns.append(sorted(ts)[3] * 1e9 / x.size)
        out.append((np.dtype(dtype).name, ns[0], ns[1]))
    impl.set_num_threads(None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", choices=["quick", "full"])
    args = p.parse_args()
    rows = _family_rows(args.profile) + _random_rows()
    print(f"impl's slow path on NumPy ({args.profile} profile's inputs, then random rows)")
    print(f"{'inputs':<42} {'format':<9} {'rows':>9} {'slow rows':>10} {'outputs':>8} "
          f"{'undecided':>9}")  # fmt: skip
    for name, fmt, c in rows:
        print(
            f"{name:<42} {fmt:<9} {c['rows']:>9} {c['slow_rows']:>10} {c['slow_elements']:>8} "
            f"{c['undecided']:>9}"
        )
    print()
    print("cost on one thread, rows of 1,024 (ns an entry): the fast path's whole call, "
          "and the accurate pass over a row")  # fmt: skip
    for name, fast, slow in _cost():
        print(f"{name:<9} fast {fast:>7.2f}   slow pass {slow:>7.2f}   ratio {slow / fast:>6.1f}x")


if __name__ == "__main__":
    main()
