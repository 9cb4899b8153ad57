#!/usr/bin/env bash
# The GPU cells, as one command on a lent GPU machine (after benchmarks/gpu_prepare.sh
# here; carry .whl):
#
#     bash benchmarks/gpu_check.sh          # writes under $OUT
#
# 1. the hardware and library versions (hardware.txt);
# 2. impl's tests on the GPU backends: accuracy against the oracle, the semantics and
#    the derivatives (pytest-gpu.txt);
# 3. the quick sweep of every candidate on torch:cuda, jax:gpu[:jit] and cupy:cuda,
#    then the full profile if time is left (results-quick.csv, results-full.csv and
#    their logs), to be merged into the published report with
#    `python -m conformance report`.
# Each step has its own time limit so that one slow step cannot take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name a folder for the results}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
# The project from the working tree; impl's C kernels are not built (the GPU paths do
# not use them; NumPy cells there take the pure-NumPy blocks).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
GPU_BACKENDS=torch:cuda,jax:gpu,jax:gpu:jit,cupy:cuda
JOBS=${JOBS:-8}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 - <<'EOF'
import platform
print("python", platform.python_version())
for name in ("numpy", "torch", "jax", "jaxlib", "cupy", "mpmath", "array_api_compat"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:  # recorded, not fatal
        print(name, "not importable:", exc)
import torch
print("torch.cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import jax
print("jax devices", jax.devices())
EOF
    python3 -m conformance list
} > "$OUT/hardware.txt" 2>&1

timeout 150 python3 -m pytest -p no:cacheprovider -q -rs \
    impl/tests/test_accuracy.py impl/tests/test_semantics.py impl/tests/test_autodiff.py \
    -k "(cuda or gpu or cupy) and not path" \
    > "$OUT/pytest-gpu.txt" 2>&1
echo "pytest exit $?" >> "$OUT/pytest-gpu.txt"

timeout 150 python3 -m conformance run --profile quick --jobs "$JOBS" --no-progress \
    --backends "$GPU_BACKENDS" --results /tmp/results-quick > "$OUT/sweep-quick.txt" 2>&1
echo "sweep exit $?" >> "$OUT/sweep-quick.txt"
cp /tmp/results-quick/results.csv "$OUT/results-quick.csv" 2>/dev/null

timeout 200 python3 -m conformance run --profile full --jobs "$JOBS" --no-progress \
    --backends "$GPU_BACKENDS" --results /tmp/results-full > "$OUT/sweep-full.txt" 2>&1
echo "sweep exit $?" >> "$OUT/sweep-full.txt"
cp /tmp/results-full/results.csv "$OUT/results-full.csv" 2>/dev/null
ls -l "$OUT"
