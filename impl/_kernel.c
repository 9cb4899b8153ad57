/* Row kernels for impl's NumPy, PyTorch CPU, JAX CPU and Dask paths: log_softmax over
 * contiguous rows of float32 or float64 values (finite, or -inf next to finite ones),
 * two or three passes over each row, no temporaries. Rows with a NaN or a +inf, and
 * rows of -inf only, are left to the caller's special-value rules.
 *
 * float32 rows (float16/bfloat16 arrive as float32, exactly): exp(d) = 2^(k/4) times a
 * degree-6 polynomial (relative error < 2^-36.88), summed in eight double lanes;
 * out = (x - max) - log1p(T) with x - max and the subtraction kept exact (TwoSum),
 * rounded to the output (float32, or float32 rounded to odd for a later rounding to a
 * narrower format) where the fast path's error bound decides it, and otherwise from
 * L recomputed in accurate double-double (rounding.h): correctly rounded.
 *
 * float64 rows: d = x - max is kept as an exact double-double (TwoSum); each
 * exp(d_hi + d_lo) is table driven (2^(j/64) in double-double, Cody-Waite ln2/64
 * in three parts, a degree-6 polynomial) with a relative error near 2^-62 and is
 * summed as double-double; L = log1p(T) gets one Newton step on the double-double
 * exp; out = (d_hi + d_lo) - (L_hi + L_lo) is rounded once. When T is below 2^-960
 * (one maximum, every other entry more than 660 below it) the sum is redone relative
 * to the second largest entry, so that no term is rounded on the subnormal grid.
 *
 * Every function is compiled without contraction (-ffp-contract=off): the
 * error-free transformations need the rounding the code spells out; fma() is
 * called where a fused product is meant. On x86-64 the hot loops are also built
 * for x86-64-v3 (AVX2 and FMA), and the passes have AVX2 and AVX-512 variants; the
 * widest the CPU runs is picked at load time, and every path gives the same bits.
 *
 * Layout: this file is the one translation unit, a unity build of the pieces in csrc/
 * (every function static, the compiler sees one file), included in this order; each
 * says at its top what it holds and what it uses:
 *   common.h       includes, HOT, the lane count
 *   dd_math.h      scalar math: the float32 exp, the double-double exp and log1p,
 *                  2^k, their tables
 *   rounding.h     correct rounding of float32 rows: the fast path's bound, the
 *                  rounding test, the slow path (accurate double-double)
 *   passes.h       portable row passes: maxima, sums, writes, rows_f32/rows_f64
 *   passes_avx2.h  their AVX2 variants; it and passes_avx512.h each include
 *     lanes_dd.h   the double-double steps lane by lane, written once for any width
 *   passes_avx512.h  the float32 passes' AVX-512 variants, and use_path(), which
 *                  picks the path (the widest the CPU runs, or LOG_SOFTMAX_KERNELS)
 *   threads.h      the thread pool: blocks of rows, or segments of one long row
 *   bindings.h     argument checks and the general Python functions
 *   blocks.h       the Dask path's block passes and their Python functions
 *   softmax.h      the narrow formats' softmax writer (softmax_rows)
 *   ffi.h          the XLA FFI handler for JAX on CPU
 * The module's method table and PyInit__kernel stay here, after them.
 */
#include "csrc/common.h"
#include "csrc/dd_math.h"
#include "csrc/rounding.h"
#include "csrc/passes.h"
#include "csrc/passes_avx2.h"
#include "csrc/passes_avx512.h"
#include "csrc/threads.h"
#include "csrc/bindings.h"
#include "csrc/blocks.h"
#include "csrc/softmax.h"
#include "csrc/ffi.h"

static PyMethodDef methods[] = {
    {"ffi_handler", py_ffi_handler, METH_NOARGS, ffi_handler_doc},
    {"set_threads", py_set_threads, METH_VARARGS, set_threads_doc},
    {"use", py_use, METH_VARARGS, use_doc},
    {"paths", py_paths, METH_NOARGS, paths_doc},
    {"rows", py_rows, METH_VARARGS, rows_doc},
    {"rows_narrow", py_rows_narrow, METH_VARARGS, rows_narrow_doc},
    {"rows_at", py_rows_at, METH_VARARGS, rows_at_doc},
    {"set_per_thread", py_set_per_thread, METH_VARARGS, set_per_thread_doc},
    {"spawn_ns", py_spawn_ns, METH_VARARGS, spawn_ns_doc},
    {"partial", py_partial, METH_VARARGS, partial_doc},
    {"write", py_write, METH_VARARGS, write_doc},
    {"bound_f32", py_bound_f32, METH_VARARGS, bound_f32_doc},
    {"exact_l_f32", py_exact_l_f32, METH_VARARGS, exact_l_f32_doc},
    {"bound_f64", py_bound_f64, METH_VARARGS, bound_f64_doc},
    {"exp_dd2", py_exp_dd2, METH_VARARGS, exp_dd2_doc},
    {"log1p_dd2", py_log1p_dd2, METH_VARARGS, log1p_dd2_doc},
    {"exact_l_f64", py_exact_l_f64, METH_VARARGS, exact_l_f64_doc},
    {"stats", py_stats, METH_VARARGS, stats_doc},
    {"set_bound_scale", py_set_bound_scale, METH_VARARGS, set_bound_scale_doc},
    {"log1p_dd", py_log1p_dd, METH_VARARGS, log1p_dd_doc},
    {"combine_rows", py_combine_rows, METH_VARARGS, combine_rows_doc},
    {"partial_rows", py_partial_rows, METH_VARARGS, partial_rows_doc},
    {"write_rows", py_write_rows, METH_VARARGS, write_rows_doc},
    {"exact_rows", py_exact_rows, METH_VARARGS, exact_rows_doc},
    {"softmax_rows", py_softmax_rows, METH_VARARGS, softmax_rows_doc},
    {"softmax_out_f64", py_softmax_out_f64, METH_VARARGS, softmax_out_f64_doc},
    {"exact_l_from", py_exact_l_from, METH_VARARGS, exact_l_from_doc},
    {"note_slow", py_note_slow, METH_VARARGS, note_slow_doc},
    {"tiny_log", py_tiny_log, METH_VARARGS, tiny_log_doc},
    {"exp_dd", py_exp_dd, METH_VARARGS, exp_dd_doc},
    {"exp_short", py_exp_short, METH_VARARGS, exp_short_doc},
    {"exp_mid", py_exp_mid, METH_VARARGS, exp_mid_doc},
    {"softmax_f32_rows", py_softmax_f32_rows, METH_VARARGS, softmax_f32_rows_doc},
    {"constants", py_constants, METH_NOARGS, constants_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "impl._kernel",
    "Compiled row kernels for impl's NumPy path (see impl/_kernel.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernel(void)
{
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
#endif
    /* the widest path, or the one LOG_SOFTMAX_KERNELS names (a path this machine
     * lacks, or an unknown name, is a ValueError that says which it runs: not an
     * ImportError, which impl would take for a build without the kernels) */
    const char *want = getenv("LOG_SOFTMAX_KERNELS");
    if (want != NULL && want[0] != '\0') {
        if (!use_path(want)) {
            PyErr_Format(PyExc_ValueError,
                         "LOG_SOFTMAX_KERNELS=%s: no such code path on this machine (it runs "
                         "%s; the paths are avx512, avx2 and scalar)", want, best_path());
            return NULL;
        }
    }
    else {
        use_path(best_path());
    }
    return PyModule_Create(&module);
}
