#!/bin/sh
# impl's kernels built with AddressSanitizer and UndefinedBehaviorSanitizer, and the
# impl tests that call them run on that build (tox -e sanitize; any report fails).
#
#   sh .ci/sanitize.sh WORKDIR [pytest arguments]
#
# The build is a copy of impl/ in WORKDIR: the source tree's own build (editable
# installs put it next to _kernel.c) stays as it is. Python is not instrumented, so
# leaks are not checked.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$1"
shift
rm -rf "$work/impl"
mkdir -p "$work"
cp -r "$root/impl" "$work/impl"
rm -f "$work"/impl/_kernel*.so
suffix="$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
# pyproject.toml's flags for impl._kernel, then the sanitizers'
flags="$(python -c 'import sys, tomllib
ext = tomllib.load(open(sys.argv[1], "rb"))["tool"]["setuptools"]["ext-modules"][0]
print(" ".join(ext["extra-compile-args"] + ext["extra-link-args"]))' "$root/pyproject.toml")"
# shellcheck disable=SC2086 # the flags are words
# -DIMPL_NO_FLOAT16: float16's conversions by the kernels' bit operations, which the
# regular build (with the compiler's _Float16) never runs
gcc -shared -fPIC $flags -DIMPL_NO_FLOAT16 \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g \
    -I"$include" "$work/impl/_kernel.c" -o "$work/impl/_kernel$suffix"

LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
cd "$work"
python -c "import impl._kernel as K, sys; assert K.__file__.startswith(sys.argv[1]), K.__file__" "$work"
# --capture=sys: the sanitizers write to file descriptor 2 and abort, which pytest's
# default capture (of the descriptors) would swallow
exec python -m pytest -c "$root/pyproject.toml" --rootdir "$root" -p no:cacheprovider -q \
    --capture=sys \
    impl/tests/test_kernel.py impl/tests/test_semantics.py impl/tests/test_accuracy.py \
    impl/tests/test_jax_kernel.py impl/tests/test_rounding.py impl/tests/test_functions.py \
    impl/tests/test_softmax_f32.py "$@"
