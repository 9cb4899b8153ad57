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
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* INLINE: inlined into each caller, HOT's clones included, so that their fma() is the
 * clone's instruction rather than a call into libm */
#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

#define LANES 8

/* The kernels' floating-point environment: IEEE arithmetic whatever the caller's
 * thread has set. XLA runs its CPU threads with subnormals flushed to zero (FTZ) and
 * read as zero (DAZ), torch.set_flush_denormal(True) sets both, and fesetround can
 * change the rounding direction: each would change the kernels' results (a subnormal
 * result is a correctly rounded one, and every bound assumes rounding to nearest).
 * fp_enter clears FTZ and DAZ and sets rounding to nearest, returning the caller's
 * state for fp_leave. Threads started in between inherit the state set
 * (pthread_create copies the floating-point environment). */
static inline unsigned int
fp_enter(void)
{
#if defined(__SSE2__)
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr & ~(0x8000u | 0x0040u | 0x6000u)); /* FTZ, DAZ, rounding control */
    return csr;
#else
    return 0;
#endif
}

static inline void
fp_leave(unsigned int csr)
{
#if defined(__SSE2__)
    _mm_setcsr(csr);
#else
    (void)csr;
#endif
}

/* Py_BEGIN_ALLOW_THREADS and Py_END_ALLOW_THREADS around the kernels' work, with
 * their floating-point environment set inside */
#define KERNEL_BEGIN                                                                       \
    Py_BEGIN_ALLOW_THREADS                                                                 \
    unsigned int kernel_csr_ = fp_enter();
#define KERNEL_END                                                                         \
    fp_leave(kernel_csr_);                                                                 \
    Py_END_ALLOW_THREADS
