"""impl.log_softmax against its peers, side by side in one run: medians and ratios.

    python benchmarks/bench_impl.py [--repeat 15] [--threads 2]

Shapes (reducing the last axis): float32 (128, 32768), (4096, 1024), (1, 4194304) and
float64 (1024, 1024). NumPy: impl vs scipy.special.log_softmax. PyTorch CPU: impl vs
torch.nn.functional.log_softmax. JAX under jit: impl vs jax.nn.log_softmax. Dask: impl
on a chunked array (row chunks; the reduced axis split in four) vs impl on the same
data in NumPy, and, as the floor of any Dask computation on those blocks, ``x + 0``
on the split chunks (one layer of tasks, then the blocks gathered into one array).
"""

from __future__ import annotations

import argparse
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


def _paired_ms(
    ours: Callable[[], Any], peer: Callable[[], Any], repeat: int, rounds: int = 3
) -> tuple[float, float]:
    """Medians of ours and peer, timed in alternating rounds (this machine's speed
    drifts by tens of percent over seconds; alternating puts both under the same
    drift). Each round starts with an untimed call, so that neither pays for the
    other's threads still spinning (OpenMP, XLA) when it starts."""
    ts: tuple[list[float], list[float]] = ([], [])
    per_round = max(1, -(-repeat // rounds))
    for _ in range(rounds):
        for fn, out in ((ours, ts[0]), (peer, ts[1])):
            fn()  # warm: imports, jit compilation, allocator, the other's threads
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
    return statistics.median(ts[0]) * 1e3, statistics.median(ts[1]) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float]] = []

    import scipy.special

    for shape, dt in SHAPES:
        x = rng.standard_normal(shape).astype(dt)
        label = f"{dt} {shape}"
        ours, peer = _paired_ms(
            lambda x=x: impl.log_softmax(x, axis=-1),
            lambda x=x: scipy.special.log_softmax(x, axis=-1),
            args.repeat,
        )
        rows.append(("numpy", label, ours, peer))

    try:
        import torch

        torch.set_num_threads(args.threads)
        for shape, dt in SHAPES:
            t = torch.from_numpy(rng.standard_normal(shape).astype(dt))
            ours, peer = _paired_ms(
                lambda t=t: impl.log_softmax(t, axis=-1),
                lambda t=t: torch.nn.functional.log_softmax(t, dim=-1),
                args.repeat,
            )
            rows.append(("torch cpu", f"{dt} {shape}", ours, peer))
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
                ours, peer = _paired_ms(
                    lambda a=a: f_ours(a).block_until_ready(),
                    lambda a=a: f_peer(a).block_until_ready(),
                    args.repeat,
                )
                rows.append(("jax jit", f"{dt} {shape}", ours, peer))
    except ImportError:
        pass

    try:
        import dask.array as da

        for shape, dt in SHAPES:
            x = rng.standard_normal(shape).astype(dt)

            def numpy_impl(x: Any = x) -> Any:
                return impl.log_softmax(x, axis=-1)

            # row chunks (each slice in one block), then the reduced axis split in 4
            for label, split in (("dask rows", 1), ("dask split axis", 4)):
                if shape[0] == 1 and split == 1:
                    continue  # one slice in one block is the NumPy path in one task
                chunks = (max(1, shape[0] // 4), shape[1] // split)
                d = da.from_array(x, chunks=chunks)
                ours, peer = _paired_ms(
                    lambda d=d: impl.log_softmax(d, axis=-1).compute(), numpy_impl, args.repeat
                )
                rows.append((f"{label} vs numpy", f"{dt} {shape}", ours, peer))
            floor, peer = _paired_ms(lambda d=d: (d + 0).compute(), numpy_impl, args.repeat)
            rows.append(("dask x + 0 vs numpy", f"{dt} {shape}", floor, peer))
    except ImportError:
        pass

    print(f"{'backend':<24} {'shape':<22} {'impl ms':>9} {'peer ms':>9} {'impl/peer':>10}")
    for backend, label, ours, peer in rows:
        print(f"{backend:<24} {label:<22} {ours:>9.2f} {peer:>9.2f} {ours / peer:>9.2f}x")


if __name__ == "__main__":
    main()
