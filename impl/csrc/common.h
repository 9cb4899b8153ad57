/* csrc/common.h: the includes, HOT (the hot loops also built for x86-64-v3, picked at
 * load time) and the lane counts. The first piece of impl/_kernel.c's unity build.
 * Like every file in csrc/, it is valid only included from impl/_kernel.c, in its
 * order: no include guards, and each piece uses the pieces included before it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

#define LANES 8
