"""impl.log_softmax against its peers, side by side in one run: medians and ratios.

    python benchmarks/bench_impl.py [--repeat 15] [--threads N] [--no-dask-scale]
                                    [--states-processes 3] [--only states|passes|targets]

Targets, in a table of their own (``--only targets``): impl on NumPy, on torch CPU
tensors and under jax.jit, beside torch's, jax.nn's and SciPy's log_softmax and
x.copy(), at the shapes models use and at (1, 10) (one call's fixed cost), on one
thread and on every core, as ratios measured side by side in one run.

Threads, in a table of their own: impl in NumPy with one thread, two, and every core
this process may run on (``impl.set_num_threads``), beside SciPy (one thread) and
``x.copy()`` (the memory traffic a log_softmax cannot go below: one read, one write),
timed in alternation in one run. ``--threads`` sets the threads of impl and torch in
the tables of peers (default: every core the process may run on, as torch and XLA
use).

Process states, in a table of their own: the same calls (impl with every core's
threads and with one, SciPy, x.copy()) timed in fresh processes of three kinds, run
in turn (bare, backends, after work, bare, ...; ``--states-processes`` of each):
``bare`` has imported NumPy, SciPy and impl only; ``backends`` has also imported
torch, JAX, Dask and array-api-strict and run an operation in each (their thread
pools exist); ``after work`` has then done what a long-lived process does before it:
the oracle on a few hundred rows, each backend's log_softmax on 64 MB, and a heap
churned by allocations from 1 KB to 64 MB freed in random order. Each row shows the
median over the processes with their range, the ratio to x.copy() in the same
process, and the page faults per call: what moves a process's speed is visible there.

Passes, in a table of their own: where impl's time goes on one thread, one float32 row
of 4194304 entries: its sum pass (an exp in double of every entry, summed in double
lanes: ``_kernel.partial``) and its write pass (``_kernel.write``) beside x.copy(),
NumPy's max (one read pass) and NumPy's own float32 exp, in ns per entry.

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


def _on_threads(x: Any, k: int) -> Any:
    """impl's log_softmax of x over its last axis on k threads."""
    impl.set_num_threads(k)
    return impl.log_softmax(x, axis=-1)


def _thread_rows(repeat: int) -> list[tuple[str, list[int], list[float]]]:
    """Per shape: impl with 1, 2 and every core's threads, SciPy, and x.copy()."""
    import scipy.special

    from impl._threads import available_cores

    counts = sorted({1, 2, available_cores()})
    rng = np.random.default_rng(2)
    out = []
    for shape, dt in SHAPES:
        x = rng.standard_normal(shape).astype(dt)

        fns = [lambda x=x, k=k: _on_threads(x, k) for k in counts]
        fns += [lambda x=x: scipy.special.log_softmax(x, axis=-1), lambda x=x: x.copy()]
        out.append((f"{dt} {shape}", counts, _interleaved_ms(fns, repeat)))
    impl.set_num_threads(None)
    return out


# The targets' shapes: the four above, a language model's vocabulary, a small batch,
# and one call's fixed cost
TARGET_SHAPES = [
    ((128, 32768), "float32"),
    ((4096, 1024), "float32"),
    ((1, 4194304), "float32"),
    ((32, 50257), "float32"),
    ((64, 1000), "float32"),
    ((1024, 1024), "float64"),
    ((1, 10), "float32"),
]


def _target_rows(repeat: int) -> list[tuple[str, int, dict[str, float]]]:
    """Per shape and thread count (1, and every core): impl on NumPy, on torch CPU
    tensors and under jax.jit (x64 on), beside torch.nn.functional.log_softmax,
    jax.nn.log_softmax under jax.jit, scipy.special.log_softmax and x.copy(), all in
    one alternating run. XLA's threads are not set per call: its rows are at every
    core."""
    import jax
    import jax.numpy as jnp
    import scipy.special
    import torch

    from impl._threads import available_cores

    rng = np.random.default_rng(3)
    out = []
    with jax.enable_x64(True):
        ours_j = jax.jit(lambda a: impl.log_softmax(a, axis=-1))
        peer_j = jax.jit(lambda a: jax.nn.log_softmax(a, axis=-1))
        for shape, dt in TARGET_SHAPES:
            x = rng.standard_normal(shape).astype(dt)
            t = torch.from_numpy(x.copy())
            a = jnp.asarray(x)
            for k in sorted({1, available_cores()}):
                impl.set_num_threads(k)
                torch.set_num_threads(k)
                names = ["impl numpy", "impl torch", "torch", "impl jax", "jax.nn", "scipy",
                         "copy"]  # fmt: skip
                fns = [
                    lambda x=x: impl.log_softmax(x, axis=-1),
                    lambda t=t: impl.log_softmax(t, axis=-1),
                    lambda t=t: torch.nn.functional.log_softmax(t, dim=-1),
                    lambda a=a: ours_j(a).block_until_ready(),
                    lambda a=a: peer_j(a).block_until_ready(),
                    lambda x=x: scipy.special.log_softmax(x, axis=-1),
                    lambda x=x: x.copy(),
                ]
                reps = repeat if x.size > 1000 else repeat * 20
                out.append((f"{dt} {shape}", k, dict(zip(names, _interleaved_ms(fns, reps),
                                                        strict=True))))  # fmt: skip
    impl.set_num_threads(None)
    return out


def _print_targets(rows: list[tuple[str, int, dict[str, float]]]) -> None:
    print("targets: impl against each library's own log_softmax, side by side (ms; ratios)")
    print(
        f"{'shape':<22} {'thr':>3} {'impl np':>8} {'torch':>8} {'jax.nn':>8} {'scipy':>8} "
        f"{'copy':>7} {'impl/torch':>10} {'impl/jax.nn':>11} {'impl/scipy':>10} {'impl/copy':>9}"
    )
    for label, k, ms in rows:
        print(
            f"{label:<22} {k:>3} {ms['impl numpy']:>8.3f} {ms['torch']:>8.3f} "
            f"{ms['jax.nn']:>8.3f} {ms['scipy']:>8.3f} {ms['copy']:>7.3f} "
            f"{ms['impl torch'] / ms['torch']:>9.2f}x {ms['impl jax'] / ms['jax.nn']:>10.2f}x "
            f"{ms['impl numpy'] / ms['scipy']:>9.2f}x {ms['impl numpy'] / ms['copy']:>8.2f}x"
        )


def _pass_rows(repeat: int) -> list[tuple[str, float]]:
    """ms of each pass of impl's float32 kernel on one thread, and of its neighbours."""
    from impl import _kernel

    x = np.random.default_rng(7).standard_normal(1 << 22).astype(np.float32)
    out = np.empty_like(x)
    m = float(x.max())
    hi, lo, _ = _kernel.partial(x, m)
    big_l = _kernel.log1p_dd(hi, lo)

    named: list[tuple[str, Callable[[], Any]]] = [
        ("x.copy() (into a buffer)", lambda: np.copyto(out, x)),
        ("NumPy max (one read)", lambda: x.max()),
        ("NumPy exp, float32", lambda: np.exp(x, out=out)),
        ("impl's sum pass", lambda: _kernel.partial(x, m)),
        ("impl's write pass", lambda: _kernel.write(x, out, m, *big_l)),
        ("impl, whole (1 thread)", lambda: _on_threads(x, 1)),
    ]
    ms = _interleaved_ms([f for _, f in named], repeat)
    impl.set_num_threads(None)
    return [(name, t) for (name, _), t in zip(named, ms, strict=True)]


# The process states (see the module's docstring), each prepared by _enter_state
STATES = ["bare", "backends", "after work"]
STATE_SHAPES = [((128, 32768), "float32"), ((1, 4194304), "float32")]


def _enter_state(state: str) -> None:
    """Bring this (fresh) process into ``state``."""
    if state == "bare":
        return
    import array_api_strict
    import dask.array as da
    import jax
    import jax.numpy as jnp
    import torch

    x = np.random.default_rng(3).standard_normal((256, 1024)).astype(np.float32)
    torch.nn.functional.log_softmax(torch.from_numpy(x), dim=-1)  # starts torch's threads
    jax.nn.log_softmax(jnp.asarray(x), axis=-1).block_until_ready()  # XLA's
    da.from_array(x, chunks=(64, 1024)).sum().compute()  # Dask's thread pool
    array_api_strict.asarray(x) + 1
    if state == "backends":
        return
    import reference
    from reference import FORMATS
    from reference.tests._corpus import rows

    for seed in range(4):  # the oracle (mpmath) on adversarial rows
        for fmt in FORMATS.values():
            for _, row in rows(fmt, seed=seed, n=16):
                reference.evaluate(row)
    big = np.random.default_rng(4).standard_normal((256, 65536)).astype(np.float32)
    for arr in (big, torch.from_numpy(big), jnp.asarray(big), da.from_array(big, (64, 65536))):
        out = impl.log_softmax(arr, axis=-1)
        if hasattr(out, "compute"):
            out.compute()
    torch.nn.functional.log_softmax(torch.from_numpy(big), dim=-1)
    jax.nn.log_softmax(jnp.asarray(big), axis=-1).block_until_ready()
    rng = np.random.default_rng(5)  # a churned heap: sizes from 1 KB to 64 MB
    held: list[np.ndarray] = []
    for size in np.exp(rng.uniform(np.log(1 << 10), np.log(64 << 20), 2000)).astype(int):
        held.append(np.ones(size // 8))
        if len(held) > 40:
            held.pop(int(rng.integers(len(held))))
    del held, big


def _state_worker(state: str, repeat: int) -> None:
    """Child process: enter the state, time the calls, print one JSON line per shape."""
    import json

    import scipy.special

    from impl._threads import available_cores

    _enter_state(state)
    rng = np.random.default_rng(6)
    every = available_cores()
    for shape, dt in STATE_SHAPES:
        x = rng.standard_normal(shape).astype(dt)

        fns = [
            lambda x=x: _on_threads(x, every),
            lambda x=x: _on_threads(x, 1),
            lambda x=x: scipy.special.log_softmax(x, axis=-1),
            lambda x=x: x.copy(),
        ]
        ms = _interleaved_ms(fns, repeat)
        print(json.dumps({"shape": f"{dt} {shape}", "ms": ms, "faults": list(_faults)}))


def _state_rows(repeat: int, processes: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (state, shape): the figures of each process, the states run in turn."""
    import json
    import subprocess
    import sys

    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(processes):
        for state in STATES:
            cmd = [sys.executable, __file__, "--state-worker", state, "--repeat", str(repeat)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"state {state!r}: exit {res.returncode}\n{res.stderr[-2000:]}")
            for line in res.stdout.splitlines():
                if line.startswith("{"):
                    rec = json.loads(line)
                    out.setdefault((state, rec["shape"]), []).append(rec)
    return out


def _print_states(states: dict[tuple[str, str], list[dict[str, Any]]], cores: int) -> None:
    def span(vals: list[float], fmt: str) -> str:
        med = statistics.median(vals)
        return f"{med:{fmt}} ({min(vals):{fmt}}-{max(vals):{fmt}})"

    n = len(next(iter(states.values())))
    print(f"process states: medians over {n} processes each (range); impl on {cores} threads")
    print(
        f"{'state':<11} {'shape':<22} {'impl ms':>19} {'copy ms':>19} {'impl/copy':>19} "
        f"{'1 thr/copy':>11} {'impl/scipy':>11} {'faults impl, scipy, copy':>25}"
    )
    for (state, label), recs in states.items():
        ours = [r["ms"][0] for r in recs]
        cp = [r["ms"][3] for r in recs]
        ratio = [r["ms"][0] / r["ms"][3] for r in recs]
        one = statistics.median(r["ms"][1] / r["ms"][3] for r in recs)
        sp = statistics.median(r["ms"][0] / r["ms"][2] for r in recs)
        fo = statistics.median(r["faults"][0] for r in recs)
        fs = statistics.median(r["faults"][2] for r in recs)
        fc = statistics.median(r["faults"][3] for r in recs)
        print(
            f"{state:<11} {label:<22} {span(ours, '.2f'):>19} {span(cp, '.2f'):>19} "
            f"{span(ratio, '.2f'):>19} {one:>10.2f}x {sp:>10.2f}x {fo:>8.0f} {fs:>7.0f} {fc:>8.0f}"
        )


def _print_passes(rows: list[tuple[str, float]]) -> None:
    n = 1 << 22
    copy = rows[0][1]
    print(f"one thread, float32 row of {n} entries")
    print(f"{'':<26} {'ms':>7} {'ns/entry':>9} {'/copy':>7}")
    for name, ms in rows:
        print(f"{name:<26} {ms:>7.3f} {ms * 1e6 / n:>9.3f} {ms / copy:>6.2f}x")


def main() -> None:
    from impl._threads import available_cores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument(
        "--threads", type=int, default=available_cores(),
        help="impl's and torch's threads in the tables of peers (default: every core)",
    )  # fmt: skip
    p.add_argument("--no-dask-scale", action="store_true", help="skip the Dask arrays of 256 MB")
    p.add_argument(
        "--states-processes", type=int, default=3,
        help="fresh processes per process state (0: skip that table)",
    )  # fmt: skip
    p.add_argument(
        "--only",
        choices=["states", "passes", "targets"],
        help="only the table of process states, of passes, or of targets",
    )
    p.add_argument("--state-worker", choices=STATES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.state_worker:
        return _state_worker(args.state_worker, args.repeat)
    if args.only == "passes":
        return _print_passes(_pass_rows(args.repeat))
    if args.only == "targets":
        return _print_targets(_target_rows(args.repeat))
    if args.only == "states" or args.states_processes > 0:
        states = _state_rows(args.repeat, max(1, args.states_processes))
        if args.only == "states":
            return _print_states(states, available_cores())
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float, float, float]] = []
    threads = _thread_rows(args.repeat)
    passes = _pass_rows(args.repeat)
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
    print()
    _print_passes(passes)
    if args.states_processes > 0:
        print()
        _print_states(states, available_cores())
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
