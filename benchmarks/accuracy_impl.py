"""Max ULP error per dtype and input family, impl vs scipy.special.log_softmax, in
NumPy, scored by the oracle on the seeded adversarial rows of the oracle's own tests.

    python benchmarks/accuracy_impl.py [--seeds 6]

(The conformance runner supersedes this with the full families on every backend.)
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.special

import impl
import reference
from reference import FORMATS
from reference.tests._corpus import rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=6)
    args = p.parse_args()
    worst: dict[tuple[str, str, str], float] = {}
    for name, fmt in FORMATS.items():
        for seed in range(args.seeds):
            for label, row in rows(fmt, seed=seed, n=16):
                fam = label.split("-")[0]
                res = reference.evaluate(row)
                with np.errstate(all="ignore"):
                    peer = scipy.special.log_softmax(
                        row.astype(np.float32 if name == "bfloat16" else row.dtype)
                    )
                for cand, out in (("impl", impl.log_softmax(row)), ("scipy", peer)):
                    err = float(res.ulp_error(np.asarray(out).astype(row.dtype)).max())
                    key = (name, fam, cand)
                    worst[key] = max(worst.get(key, 0.0), err)
    fams = sorted({k[1] for k in worst})
    print(f"{'dtype':<9} {'candidate':<6} " + " ".join(f"{f:>10}" for f in fams))
    for name in FORMATS:
        for cand in ("impl", "scipy"):
            cells = " ".join(f"{worst[(name, f, cand)]:>10.3g}" for f in fams)
            print(f"{name:<9} {cand:<6} {cells}")


if __name__ == "__main__":
    main()
