#!/usr/bin/env bash
# Run here, before lending a GPU machine its one command (benchmarks/gpu_check.sh).
# That machine has Python 3.12 with torch, JAX (CUDA), CuPy, NumPy, SciPy, mpmath,
# pandas, pyarrow, matplotlib, hypothesis and ml_dtypes, and no network: what the
# project needs beyond those travels as wheels in .whl/ (git-ignored locally, named
# in the run's carry). About 16 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for spec in array-api-compat==1.16.0 array-api-strict==2.6.1 dask==2026.8.0 partd==1.4.2 \
    locket==1.0.0 toolz==1.1.0 cloudpickle==3.1.3 gmpy2==2.3.2 python-flint==0.9.0; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
du -sh .whl
