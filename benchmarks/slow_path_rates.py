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
double-double exp) against the fast path's whole call, in ns an entry, on one thread;
and float64 rows from 1,024 to 4,194,304 entries on each vector path: the longer the
row, the likelier one output is left open, which sends the whole row to the accurate
pass.

Then the generic algorithm (array-api-strict here; the GPU paths run it too), on the
same inputs: the outputs its rounding test left open, and the calls that had to go to
the host for them (``impl/_host.py``), on array-api-strict's CPU device (narrow formats
and float32 in float64, float64 in double-words) and on its device without float64
(float32 in double-words).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import impl
import reference
from conformance.functions._families import family_inputs


def _counts(kernel: Any, fmt: str) -> dict[str, int]:
    stats: dict[str, int] = kernel.stats()["float64" if fmt == "float64" else "float32"]
    return stats


def _family_rows(profile: str) -> list[tuple[str, str, dict[str, int]]]:
    from impl import _kernel

    out = []
    for name, fmt, cases in family_inputs(profile):
        _kernel.stats(True)
        with np.errstate(all="ignore"):
            for c in cases:
                impl.log_softmax(c.x, axis=c.axis)
        out.append((name, fmt, _counts(_kernel, fmt)))
    return out


def _generic_rows(profile: str) -> list[tuple[str, str, str, int, int, int, int]]:
    """(inputs, device, format, calls, calls that went to the host, outputs, outputs
    left open) for the generic algorithm on array-api-strict"""
    import array_api_strict as xps

    from impl import _delegation, _host

    tally = {"calls": 0, "open": 0}
    real = _host.host_fix

    def counting(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
        fix = real(xp, x, axes)

        def count(out: Any, open_: Any) -> Any:
            n = int(xp.sum(xp.astype(open_, xp.int32)))
            tally["calls"] += n > 0
            tally["open"] += n
            return out if fix is None or n == 0 else fix(out, open_)

        return count

    inputs = [(name, fmt, [(c.x, c.axis) for c in cases])
              for name, fmt, cases in family_inputs(profile, ("float32", "float64"))]  # fmt: skip
    rng = np.random.default_rng(2)
    for fmt in ("float32", "float64"):
        for scale in (1.0, 5.0, 30.0):
            xs = [(rng.standard_normal((256, 1024)) * scale).astype(fmt) for _ in range(4)]
            inputs.append((f"random (256, 1024) x 4, sd {scale:g}", fmt, [(x, -1) for x in xs]))
    out = []
    _delegation.host_fix = counting
    try:
        for name, fmt, cases in inputs:
            for device in ("CPU_DEVICE", "no_float64"):
                if device == "no_float64" and fmt == "float64":
                    continue
                tally.update(calls=0, open=0)
                size = 0
                with np.errstate(all="ignore"):
                    for x, axis in cases:
                        a = xps.asarray(x, device=xps.Device(device))
                        impl.log_softmax(a, axis=axis)
                        size += x.size
                out.append((name, device, fmt, len(cases), tally["calls"], size, tally["open"]))
    finally:
        _delegation.host_fix = real
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


def _by_length() -> list[tuple[str, int, float, float, int, int]]:
    """float64 log_softmax of 4,194,304 standard normal entries cut into rows of n, one
    thread, on each vector path: (path, n, ns an entry for the whole call, for the
    accurate pass alone over one row, slow rows, rows); medians of 5"""
    from impl import _kernel

    impl.set_num_threads(1)
    rng = np.random.default_rng(2)
    prev = _kernel.use("scalar")
    out = []
    try:
        for n in (1 << 10, 1 << 12, 1 << 16, 1 << 20, 1 << 22):
            x = rng.standard_normal(((1 << 22) // n, n))
            row, m = x[0], float(x[0].max())
            for path in [p for p in _kernel.paths() if p != "scalar"]:
                _kernel.use(path)
                whole, slow = [], []
                for _ in range(5):
                    _kernel.stats(True)
                    t = time.perf_counter()
                    impl.log_softmax(x, axis=-1)
                    whole.append(time.perf_counter() - t)
                    c = _kernel.stats(False)["float64"]
                    t = time.perf_counter()
                    _kernel.exact_l_f64(row, m)
                    slow.append(time.perf_counter() - t)
                out.append((path, n, sorted(whole)[2] * 1e9 / x.size,
                            sorted(slow)[2] * 1e9 / n, c["slow_rows"], c["rows"]))  # fmt: skip
    finally:
        _kernel.use(prev)
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
    print()
    print("float64 rows by length, one thread (ns an entry): the whole call, the accurate "
          "pass over one row, and the rows it ran on")  # fmt: skip
    print(f"{'path':<7} {'row length':>10} {'whole call':>10} {'accurate pass':>13} "
          f"{'slow rows':>12}")  # fmt: skip
    for path, n, whole, slow, n_slow, rows in _by_length():
        print(f"{path:<7} {n:>10,} {whole:>10.2f} {slow:>13.2f} {f'{n_slow} of {rows}':>12}")
    print()
    print("the generic algorithm on array-api-strict: calls that went to the host, and the "
          "outputs its rounding test left open")  # fmt: skip
    print(f"{'inputs':<42} {'device':<11} {'format':<8} {'calls':>6} {'to host':>8} "
          f"{'outputs':>9} {'open':>6}")  # fmt: skip
    for name, device, fmt, calls, hosted, size, n_open in _generic_rows(args.profile):
        print(f"{name:<42} {device:<11} {fmt:<8} {calls:>6} {hosted:>8} {size:>9} {n_open:>6}")


if __name__ == "__main__":
    main()
