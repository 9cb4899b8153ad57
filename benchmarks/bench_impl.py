"""impl.log_softmax against its peers, side by side in one run: medians and ratios.

    python benchmarks/bench_impl.py [--repeat 15] [--threads N] [--no-dask-scale]

Threads, in a table of their own: impl in NumPy with one thread, two, and every core
this process may run on (``impl.set_num_threads``), beside SciPy (one thread) and
``x.copy()`` (the memory traffic a log_softmax cannot go below: one read, one write),
timed in alternation in one run. ``--threads`` sets the threads of impl and torch in
the tables of peers (default: every core the process may run on, as torch and XLA
use).

Shapes (reducing the last axis): float32 (128, 32768), (4096, 1024), (1, 4194304) and
float64 (1024, 1024). NumPy: impl vs scipy.special.log_softmax. PyTorch CPU: impl vs
torch.nn.functional.log_softmax. JAX under jit: impl vs jax.nn.log_softmax.

Dask, in a table of its own: impl on a chunked array (whole slices per block, or the
reduced axis split in four) against impl on the same data in NumPy, at the shapes
above and at 16 times their size (256 MB), where Dask's fixed cost per computation
(graph, scheduler: milliseconds here) no longer dominates: the throughput. ``persist``
computes every output block and keeps them as Dask's blocks; ``compute`` also gathers
them into one NumPy array. ``x + 0`` (persisted) is the floor of any Dask computation
on those blocks: one layer of tasks, each writing a new block. ``x - max`` (persisted:
``x - x.max(axis=-1, keepdims=True)``) is the floor of any computation that needs a
reduction over the reduced axis before it writes: two passes over the blocks, the
Dask graph of a split axis.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import impl

SHAPES = [
    ((128, 32768), "float32"),
    ((4096, 1024), "float32"),
    ((1, 4194304), "float32"),
    ((1024, 1024), "float64"),
]


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


_faults: list[float] = []  # per call, of each function of the last _interleaved_ms


def _interleaved_ms(fns: list[Callable[[], Any]], repeat: int, rounds: int = 3) -> list[float]:
    """Median ms of each function, timed in alternating rounds (this machine's speed
    drifts by tens of percent over seconds; alternating puts all under the same
    drift). Each round starts with an untimed call, so that none pays for another's
    threads still spinning (OpenMP, XLA) when it starts. The minor page faults per
    timed call of each are left in _faults: memory the allocator maps afresh on every
    call (here 0.85 ms per MB) moves a median by up to 2x from one process to the next,
    on either side of a pair."""
    ts: list[list[float]] = [[] for _ in fns]
    faults = [0] * len(fns)
    per_round = max(1, -(-repeat // rounds))
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            fn()  # warm: imports, jit compilation, allocator, the other's threads
            f0 = _minor_faults()
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                ts[i].append(time.perf_counter() - t)
            faults[i] += _minor_faults() - f0
    _faults[:] = [f / (rounds * per_round) for f in faults]
    return [statistics.median(t) * 1e3 for t in ts]


def _paired_ms(
    ours: Callable[[], Any], peer: Callable[[], Any], repeat: int
) -> tuple[float, float, float, float]:
    """Medians of ours and peer, and their page faults per call"""
    a, b = _interleaved_ms([ours, peer], repeat)
    return a, b, _faults[0], _faults[1]


# Dask: (shape, dtype) at the benchmark's size and at 16 times it, each with whole
# slices per block (four blocks of rows; sixteen at scale, and four for float64 too:
# Dask's cost per task is a fixed 0.25 ms or so here) and the reduced axis split in
# four besides
DASK_CASES = [
    ((128, 32768), "float32", 4),
    ((4096, 1024), "float32", 4),
    ((1, 4194304), "float32", 1),
    ((1024, 1024), "float64", 4),
]
DASK_SCALED = [
    ((2048, 32768), "float32", 16),
    ((65536, 1024), "float32", 16),
    ((16384, 1024), "float64", 16),
    ((16384, 1024), "float64", 4),  # the same in blocks four times larger
]


def _dask_rows(repeat: int, scale: bool) -> list[tuple[str, str, str, list[float]]]:
    import dask.array as da

    rng = np.random.default_rng(1)
    out = []
    cases = DASK_CASES + (DASK_SCALED if scale else [])
    for shape, dt, row_blocks in cases:
        x = rng.standard_normal(shape).astype(dt)
        big = x.nbytes > 64 << 20
        for layout, split in (("rows", 1), ("split axis", 4)):
            if shape[0] == 1 and split == 1:
                continue  # one slice in one block is the NumPy path in one task
            chunks = (shape[0] // row_blocks, shape[1] // split)
            d = da.from_array(x, chunks=chunks)
            ms = _interleaved_ms(
                [
                    lambda x=x: impl.log_softmax(x, axis=-1),
                    lambda d=d: impl.log_softmax(d, axis=-1).persist(),
                    lambda d=d: impl.log_softmax(d, axis=-1).compute(),
                    lambda d=d: (d + 0).persist(),
                    lambda d=d: (d - d.max(axis=-1, keepdims=True)).persist(),
                ],
                max(3, repeat // 3) if big else repeat,
            )
            out.append((layout, f"{dt} {shape}", str(chunks), ms))
    return out


def _thread_rows(repeat: int) -> list[tuple[str, list[int], list[float]]]:
    """Per shape: impl with 1, 2 and every core's threads, SciPy, and x.copy()."""
    import scipy.special

    from impl._threads import available_cores

    counts = sorted({1, 2, available_cores()})
    rng = np.random.default_rng(2)
    out = []
    for shape, dt in SHAPES:
        x = rng.standard_normal(shape).astype(dt)

        def ours(x: Any = x, k: int = 1) -> Any:
            impl.set_num_threads(k)
            return impl.log_softmax(x, axis=-1)

        fns = [lambda k=k: ours(k=k) for k in counts]
        fns += [lambda x=x: scipy.special.log_softmax(x, axis=-1), lambda x=x: x.copy()]
        out.append((f"{dt} {shape}", counts, _interleaved_ms(fns, repeat)))
    impl.set_num_threads(None)
    return out


def main() -> None:
    from impl._threads import available_cores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument(
        "--threads", type=int, default=available_cores(),
        help="impl's and torch's threads in the tables of peers (default: every core)",
    )  # fmt: skip
    p.add_argument("--no-dask-scale", action="store_true", help="skip the Dask arrays of 256 MB")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float, float, float]] = []
    threads = _thread_rows(args.repeat)
    impl.set_num_threads(args.threads)

    import scipy.special

    for shape, dt in SHAPES:
        x = rng.standard_normal(shape).astype(dt)
        label = f"{dt} {shape}"
        pair = _paired_ms(
            lambda x=x: impl.log_softmax(x, axis=-1),
            lambda x=x: scipy.special.log_softmax(x, axis=-1),
            args.repeat,
        )
        rows.append(("numpy", label, *pair))

    try:
        import torch

        torch.set_num_threads(args.threads)
        for shape, dt in SHAPES:
            t = torch.from_numpy(rng.standard_normal(shape).astype(dt))
            pair = _paired_ms(
                lambda t=t: impl.log_softmax(t, axis=-1),
                lambda t=t: torch.nn.functional.log_softmax(t, dim=-1),
                args.repeat,
            )
            rows.append(("torch cpu", f"{dt} {shape}", *pair))
    except ImportError:
        pass

    try:
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            f_ours = jax.jit(lambda a: impl.log_softmax(a, axis=-1))
            f_peer = jax.jit(lambda a: jax.nn.log_softmax(a, axis=-1))
            for shape, dt in SHAPES:
                a = jnp.asarray(rng.standard_normal(shape).astype(dt))
                pair = _paired_ms(
                    lambda a=a: f_ours(a).block_until_ready(),
                    lambda a=a: f_peer(a).block_until_ready(),
                    args.repeat,
                )
                rows.append(("jax jit", f"{dt} {shape}", *pair))
    except ImportError:
        pass

    dask_rows = []
    try:
        dask_rows = _dask_rows(args.repeat, not args.no_dask_scale)
    except ImportError:
        pass

    counts = threads[0][1]
    print(f"impl in NumPy by threads ({available_cores()} cores here), SciPy, x.copy(): ms")
    head = " ".join(f"{f'{k} thr':>8}" for k in counts)
    print(
        f"{'shape':<22} {head} {'scipy':>8} {'copy':>8} {'1 thr/scipy':>12} "
        f"{'all/scipy':>10} {'1/all':>7} {'all/copy':>9}"
    )
    for label, _, ms in threads:
        *ours, sp, cp = ms
        cells = " ".join(f"{v:>8.2f}" for v in ours)
        print(
            f"{label:<22} {cells} {sp:>8.2f} {cp:>8.2f} {ours[0] / sp:>11.2f}x "
            f"{ours[-1] / sp:>9.2f}x {ours[0] / ours[-1]:>6.2f}x {ours[-1] / cp:>8.2f}x"
        )
    print()
    print(f"peers, impl and torch on {args.threads} threads")
    print(
        f"{'backend':<10} {'shape':<22} {'impl ms':>9} {'peer ms':>9} {'impl/peer':>10} "
        f"{'faults/call impl, peer':>23}"
    )
    for backend, label, ours, peer, f_ours, f_peer in rows:
        print(
            f"{backend:<10} {label:<22} {ours:>9.2f} {peer:>9.2f} {ours / peer:>9.2f}x "
            f"{f_ours:>11.0f} {f_peer:>11.0f}"
        )
    if dask_rows:
        print()
        print(
            f"{'dask':<11} {'shape':<22} {'chunks':<14} {'numpy ms':>9} {'persist':>9} "
            f"{'compute':>9} {'x+0':>9} {'x - max':>9} {'persist/np':>10} {'compute/np':>10}"
        )
        for layout, label, chunks, (npy, pers, comp, floor, floor2) in dask_rows:
            print(
                f"{layout:<11} {label:<22} {chunks:<14} {npy:>9.2f} {pers:>9.2f} {comp:>9.2f} "
                f"{floor:>9.2f} {floor2:>9.2f} {pers / npy:>9.2f}x {comp / npy:>9.2f}x"
            )


if __name__ == "__main__":
    main()
