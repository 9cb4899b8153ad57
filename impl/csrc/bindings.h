/* csrc/bindings.h: the checks of buffers and arguments (holds, kind_of, get_buffers,
 * pair_buffers, out_kind_of, odd_check) and the module's general Python functions:
 * rows, partial, write, log1p_dd, tiny_log, exp_dd, exp_short, constants and use.
 * Uses dd_math.h, passes.h, passes_avx2.h (use_avx2) and threads.h; its checks are
 * also used by blocks.h. The functions are listed in _kernel.c's method table. */

/* ---- Python bindings: buffers in, GIL released while the loops run ---- */

/* Whether total == a * b, without forming the product (it could overflow: rows a
 * stride 0 apart cost no memory, and nb is the caller's word) */
static inline int
holds(Py_ssize_t total, Py_ssize_t a, Py_ssize_t b)
{
    return a ? total % a == 0 && total / a == b : total == 0;
}

/* 'f' for a float32 buffer, 'd' for a float64 one, 0 for anything else: another
 * format, the other byte order, or an address not a multiple of the item size (the
 * loops load whole numbers) */
static int
kind_of(Py_buffer *b)
{
    if (b->itemsize <= 0 || (uintptr_t)b->buf % (uintptr_t)b->itemsize != 0) {
        return 0;
    }
    const char *f = b->format ? b->format : "B";
    size_t len = strlen(f);
    if (len == 2) { /* a byte order: only the native one ('@', '=', or named) */
        const uint16_t probe = 1;
        int little = *(const unsigned char *)&probe == 1;
        char o = f[0];
        if (!(o == '@' || o == '=' || o == (little ? '<' : '>') || (!little && o == '!'))) {
            return 0;
        }
    }
    else if (len != 1) {
        return 0;
    }
    char c = f[len - 1];
    if (c == 'f' && b->itemsize == 4) {
        return 'f';
    }
    if (c == 'd' && b->itemsize == 8) {
        return 'd';
    }
    return 0;
}

static int
get_buffers(PyObject *xo, PyObject *oo, Py_buffer *x, Py_buffer *o)
{
    if (PyObject_GetBuffer(xo, x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (oo != NULL &&
        PyObject_GetBuffer(oo, o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(x);
        return -1;
    }
    return 0;
}

/* x and out for the row kernels: C-contiguous, x float32 or float64, out float32 or
 * float64 (float64 for float64 x), as many elements as x, and, with has_rows, rows of
 * n > 0. Returns the element count, or -1 with the buffers released and a ValueError
 * set. */
static Py_ssize_t
pair_buffers(PyObject *xo, PyObject *oo, int has_rows, Py_ssize_t n, Py_buffer *x, Py_buffer *o,
             int *kx, int *ko)
{
    if (get_buffers(xo, oo, x, o) < 0) {
        return -1;
    }
    *kx = kind_of(x);
    *ko = kind_of(o);
    Py_ssize_t count = x->len / (x->itemsize ? x->itemsize : 1);
    const char *problem = NULL;
    if (has_rows && (n <= 0 || count % n != 0)) {
        problem = "row length must be positive and divide the buffer";
    }
    else if (*kx == 0 || *ko == 0 || (*kx == 'd' && *ko != 'd')) {
        problem = "x must be float32 or float64 and out float32/float64 (float64 for float64 x), "
                  "native and aligned";
    }
    else if (o->len / o->itemsize != count) {
        problem = "x and out must have the same number of elements";
    }
    if (problem) {
        PyBuffer_Release(x);
        PyBuffer_Release(o);
        PyErr_SetString(PyExc_ValueError, problem);
        return -1;
    }
    return count;
}

/* The output kind for an out buffer of kind ko ('f' or 'd'), odd: rounded to odd */
static inline int
out_kind_of(int ko, int odd)
{
    return ko == 'd' ? OUT_F64 : odd ? OUT_F32_ODD : OUT_F32;
}

static const char ODD_PROBLEM[] = "odd=1 needs float32 x and a float32 out";

/* odd needs float32 x and out; else a ValueError, the buffers released, -1 */
static int
odd_check(int odd, int kx, int ko, Py_buffer *x, Py_buffer *o)
{
    if (odd && (kx != 'f' || ko != 'f')) {
        PyBuffer_Release(x);
        PyBuffer_Release(o);
        PyErr_SetString(PyExc_ValueError, ODD_PROBLEM);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(rows_narrow_doc,
"rows_narrow(x, out, n, fmt) -> int\n\n"
"log_softmax of each length-n row of x (2-byte items, C-contiguous: float16 for fmt 1,\n"
"bfloat16 for fmt 2) into out (the same): each row widened to float32 (exact), its\n"
"outputs rounded to odd in float32 and then to nearest in the format (one rounding).\n"
"Rows with a NaN or a +inf, and rows of -inf only, are left untouched; returns how many\n"
"there were.");

static PyObject *
py_rows_narrow(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo;
    Py_ssize_t n;
    int fmt;
    if (!PyArg_ParseTuple(args, "OOni", &xo, &oo, &n, &fmt)) {
        return NULL;
    }
    Py_buffer x, o;
    if (PyObject_GetBuffer(xo, &x, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(oo, &o, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_ssize_t rows = n > 0 ? x.len / (2 * n) : 0;
    int ok = n > 0 && (fmt == SM_F16 || fmt == SM_BF16) && x.itemsize == 2 && o.itemsize == 2 &&
             x.len == rows * n * 2 && o.len == x.len;
    float *buf = ok ? PyMem_RawMalloc(2 * (size_t)n * sizeof(float)) : NULL;
    Py_ssize_t skipped = 0;
    if (buf != NULL) {
        KERNEL_BEGIN
        for (Py_ssize_t r = 0; r < rows; r++) {
            narrow_to_f32((const uint16_t *)x.buf + r * n, buf, n, fmt);
            int32_t bad = 0;
            rows_f32(buf, buf + n, OUT_F32_ODD, 1, n, &bad);
            if (bad) {
                skipped++;
                continue;
            }
            f32_round_narrow(buf + n, (uint16_t *)o.buf + r * n, n, fmt);
        }
        KERNEL_END
    }
    PyMem_RawFree(buf);
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "rows_narrow needs rows of length n > 0 of 2-byte "
                                          "items (fmt 1: float16, 2: bfloat16), out the same");
        return NULL;
    }
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    return PyLong_FromSsize_t(skipped);
}

PyDoc_STRVAR(rows_doc,
"rows(x, out, n, threads=1, odd=0) -> int\n\n"
"log_softmax of each length-n row of the C-contiguous buffer x (float32 or float64)\n"
"into out (float32 or float64 for float32 x; float64 for float64 x). Rows with a NaN\n"
"or a +inf, and rows of -inf only, are left untouched; returns how many there were.\n"
"threads=k shares the rows (or the passes of one long row) among up to k threads\n"
"(float32 into float32 and float64 into float64), each with at least 2**15\n"
"elements; the result is the same for any k. odd=1 (float32 x and out): the\n"
"results rounded to odd, for a caller that rounds them to a narrower format.");

static PyObject *
py_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo;
    Py_ssize_t n;
    int threads = 1, odd = 0;
    if (!PyArg_ParseTuple(args, "OOn|ii", &xo, &oo, &n, &threads, &odd)) {
        return NULL;
    }
    Py_buffer x, o;
    int kx, ko;
    Py_ssize_t count = pair_buffers(xo, oo, 1, n, &x, &o, &kx, &ko);
    if (count < 0) {
        return NULL;
    }
    if (odd_check(odd, kx, ko, &x, &o) < 0) {
        return NULL;
    }
    Py_ssize_t skipped;
    KERNEL_BEGIN
    row_job job = {.x = x.buf, .out = o.buf, .nrows = count / n, .n = n, .f64 = kx == 'd',
                   .out_kind = out_kind_of(ko, odd)};
    if (threads >= 2 && (kx == 'd' || ko == 'f')) {
        skipped = rows_threads(&job, threads);
    }
    else {
        skipped = rows_one_thread(&job);
    }
    KERNEL_END
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    return PyLong_FromSsize_t(skipped);
}

PyDoc_STRVAR(set_per_thread_doc,
"set_per_thread(n) -> int\n\n"
"The elements a thread must have to be started (n >= 1024); returns the value before.");

static PyObject *
py_set_per_thread(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) {
        return NULL;
    }
    if (n < 1024) {
        PyErr_SetString(PyExc_ValueError, "set_per_thread needs n >= 1024");
        return NULL;
    }
    return PyLong_FromSsize_t(__atomic_exchange_n(&per_thread, n, __ATOMIC_RELAXED));
}

static void *
nothing(void *arg)
{
    return arg;
}

PyDoc_STRVAR(spawn_ns_doc,
"spawn_ns(reps) -> float\n\n"
"The least time, in ns, that starting and joining one thread that does nothing took\n"
"over reps tries (the GIL released): what sharing a call's work costs a thread.");

static PyObject *
py_spawn_ns(PyObject *self, PyObject *args)
{
    int reps;
    if (!PyArg_ParseTuple(args, "i", &reps)) {
        return NULL;
    }
    double best = -1.0;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < (reps < 1 ? 1 : reps); i++) {
        struct timespec a, b;
        pthread_t t;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (pthread_create(&t, NULL, nothing, NULL) != 0) {
            break;
        }
        pthread_join(t, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
        if (best < 0 || ns < best) {
            best = ns;
        }
    }
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(best);
}

PyDoc_STRVAR(rows_at_doc,
"rows_at(x_address, out_address, nrows, n, f64) -> int\n\n"
"rows(x, out, n) on one thread for memory given by address: nrows rows of n > 0\n"
"float64 (f64=1) or float32 (f64=0) entries at x_address, C-contiguous and aligned,\n"
"their results into as many entries of the same format at out_address. For the\n"
"small calls of a caller whose arrays have no buffer interface (PyTorch tensors);\n"
"the caller keeps both alive and guarantees their layout. Returns how many rows\n"
"were left untouched, as rows() does.");

static PyObject *
py_rows_at(PyObject *self, PyObject *args)
{
    unsigned long long xa, oa;
    Py_ssize_t nrows, n;
    int f64;
    if (!PyArg_ParseTuple(args, "KKnnp", &xa, &oa, &nrows, &n, &f64)) {
        return NULL;
    }
    size_t align = f64 ? sizeof(double) : sizeof(float);
    if (n <= 0 || nrows < 0 || xa == 0 || oa == 0 || xa % align || oa % align) {
        PyErr_SetString(PyExc_ValueError,
                        "rows_at needs n > 0, nrows >= 0 and non-null aligned addresses");
        return NULL;
    }
    Py_ssize_t skipped;
    KERNEL_BEGIN
    row_job job = {.x = (const void *)(uintptr_t)xa, .out = (void *)(uintptr_t)oa,
                   .nrows = nrows, .n = n, .f64 = f64, .out_kind = f64 ? OUT_F64 : OUT_F32};
    skipped = rows_one_thread(&job);
    KERNEL_END
    return PyLong_FromSsize_t(skipped);
}

PyDoc_STRVAR(partial_doc,
"partial(x, m, c=0.0) -> (hi, lo, count)\n\n"
"For one segment of a row: the sum over entries below m of exp((x - m) - c), as a\n"
"double-double for float64 x (lo = 0.0 for float32; c must be 0 there), and the\n"
"count of entries equal to m.");

static PyObject *
py_partial(PyObject *self, PyObject *args)
{
    PyObject *xo;
    double m, c = 0.0;
    if (!PyArg_ParseTuple(args, "Od|d", &xo, &m, &c)) {
        return NULL;
    }
    Py_buffer x;
    if (get_buffers(xo, NULL, &x, NULL) < 0) {
        return NULL;
    }
    int kx = kind_of(&x);
    const char *problem = NULL;
    if (kx == 0 || x.len == 0) {
        problem = "x must be a non-empty float32 or float64 buffer, native and aligned";
    }
    else if (!(c <= 0.0) || (kx == 'f' && c != 0.0)) {
        problem = "the shift c must be <= 0 (and 0 for float32)";
    }
    if (problem) {
        PyBuffer_Release(&x);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_ssize_t count = x.len / x.itemsize, k = 0;
    dd s = {0.0, 0.0};
    KERNEL_BEGIN
    if (kx == 'f') {
        partial_f32((const float *)x.buf, count, (float)m, &s.hi, &k);
    }
    else {
        partial_f64((const double *)x.buf, count, m, c, &s, &k);
    }
    KERNEL_END
    PyBuffer_Release(&x);
    return Py_BuildValue("ddn", s.hi, s.lo, k);
}

PyDoc_STRVAR(write_doc,
"write(x, out, m, l_hi, l_lo, odd=0, delta=0.0) -> int\n\n"
"out = (x - m) - (l_hi + l_lo), rounded once, for one segment of a row; odd=1 as in\n"
"rows(). delta bounds the error of l_hi + l_lo (bound_f32, exact_l_f32 for float32\n"
"x), and the result is the count of outputs that bound leaves undecided.");

static PyObject *
py_write(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo;
    double m, lh, ll, delta = 0.0;
    int odd = 0;
    if (!PyArg_ParseTuple(args, "OOddd|id", &xo, &oo, &m, &lh, &ll, &odd, &delta)) {
        return NULL;
    }
    if (!(delta >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "delta must be a number >= 0");
        return NULL;
    }
    Py_buffer x, o;
    int kx, ko;
    Py_ssize_t count = pair_buffers(xo, oo, 0, 0, &x, &o, &kx, &ko);
    if (count < 0) {
        return NULL;
    }
    if (odd_check(odd, kx, ko, &x, &o) < 0) {
        return NULL;
    }
    Py_ssize_t unsure = 0;
    lbound L = {lh, ll, delta};
    KERNEL_BEGIN
    if (kx == 'f') {
        unsure = write_f32((const float *)x.buf, o.buf, out_kind_of(ko, odd), count, (float)m, L);
    }
    else {
        unsure = write_f64((const double *)x.buf, (double *)o.buf, count, m, L);
    }
    KERNEL_END
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    return PyLong_FromSsize_t(unsure);
}

PyDoc_STRVAR(bound_f32_doc,
"bound_f32(T, n) -> (l_hi, l_lo, delta)\n\n"
"L = log1p(T) for the sum T of a float32 row of n entries (partial()'s sums plus k - 1)\n"
"and the bound delta on its error (impl/csrc/rounding.h).");

static PyObject *
py_bound_f32(PyObject *self, PyObject *args)
{
    double T;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "dn", &T, &n)) {
        return NULL;
    }
    unsigned int csr = fp_enter();
    lbound b = bound_f32(T, n);
    fp_leave(csr);
    return Py_BuildValue("ddd", b.hi, b.lo, b.delta);
}

/* exact_l_f32 and exact_l_f64: one contiguous row of the format, its maximum m */
static PyObject *
exact_l_of(PyObject *args, int f64)
{
    PyObject *xo;
    double m;
    if (!PyArg_ParseTuple(args, "Od", &xo, &m)) {
        return NULL;
    }
    Py_buffer x;
    if (PyObject_GetBuffer(xo, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    Py_ssize_t size = f64 ? 8 : 4;
    if (x.itemsize != size || x.format == NULL || strcmp(x.format, f64 ? "d" : "f") != 0) {
        PyBuffer_Release(&x);
        PyErr_Format(PyExc_TypeError, "exact_l_%s needs a contiguous %s row",
                     f64 ? "f64" : "f32", f64 ? "float64" : "float32");
        return NULL;
    }
    lbound b;
    KERNEL_BEGIN
    b = f64 ? exact_L_f64((const double *)x.buf, x.len / size, m)
            : exact_L_f32((const float *)x.buf, x.len / size, (float)m);
    KERNEL_END
    PyBuffer_Release(&x);
    stat_add(&slow_stat[f64 ? F64 : F32][ST_SLOW_ROWS], 1);
    return Py_BuildValue("ddd", b.hi, b.lo, b.delta);
}

PyDoc_STRVAR(exact_l_f32_doc,
"exact_l_f32(row, m) -> (l_hi, l_lo, delta)\n\n"
"The slow path's L = log1p(T) of one float32 row with maximum m, in accurate\n"
"double-double, and its bound (impl/csrc/rounding.h).");

static PyObject *
py_exact_l_f32(PyObject *self, PyObject *args)
{
    return exact_l_of(args, 0);
}

PyDoc_STRVAR(exact_l_f64_doc,
"exact_l_f64(row, m) -> (l_hi, l_lo, delta)\n\n"
"The slow path's L = log1p(T) of one float64 row with maximum m, and its bound.");

static PyObject *
py_exact_l_f64(PyObject *self, PyObject *args)
{
    return exact_l_of(args, 1);
}

PyDoc_STRVAR(bound_f64_doc,
"bound_f64(t_hi, t_lo, n) -> (l_hi, l_lo, delta)\n\n"
"L = log1p(T) for the double-double sum T of a float64 row of n entries (partial()'s\n"
"sums plus k - 1), as the fast path computes it, and the bound delta on its error.");

static PyObject *
py_bound_f64(PyObject *self, PyObject *args)
{
    double th, tl;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "ddn", &th, &tl, &n)) {
        return NULL;
    }
    unsigned int csr = fp_enter();
    lbound b = bound_f64((dd){th, tl}, n);
    fp_leave(csr);
    return Py_BuildValue("ddd", b.hi, b.lo, b.delta);
}

PyDoc_STRVAR(exp_dd2_doc,
"exp_dd2(hi, lo) -> (hi, lo, K)\n\n"
"The slow path's exp: exp(hi + lo) = 2**K * (hi + lo), for hi in [-746, 710].");

static PyObject *
py_exp_dd2(PyObject *self, PyObject *args)
{
    double h, l;
    if (!PyArg_ParseTuple(args, "dd", &h, &l)) {
        return NULL;
    }
    if (!(h >= -746.0 && h <= 710.0)) {
        PyErr_SetString(PyExc_ValueError, "exp_dd2 needs hi in [-746, 710]");
        return NULL;
    }
    int64_t K;
    unsigned int csr = fp_enter();
    dd e = exp_dd2(h, l, &K);
    fp_leave(csr);
    return Py_BuildValue("ddL", e.hi, e.lo, (long long)K);
}

PyDoc_STRVAR(log1p_dd2_doc,
"log1p_dd2(hi, lo) -> (hi, lo)\n\nThe slow path's log1p of a non-negative double-double.");

static PyObject *
py_log1p_dd2(PyObject *self, PyObject *args)
{
    double h, l;
    if (!PyArg_ParseTuple(args, "dd", &h, &l)) {
        return NULL;
    }
    if (!(h >= 0.0) || !isfinite(h)) {
        PyErr_SetString(PyExc_ValueError, "log1p_dd2 needs a finite hi >= 0");
        return NULL;
    }
    unsigned int csr = fp_enter();
    dd r = log1p_dd2(h, l);
    fp_leave(csr);
    return Py_BuildValue("dd", r.hi, r.lo);
}

PyDoc_STRVAR(stats_doc,
"stats(reset=False) -> dict\n\n"
"How often the slow path ran since import (or the last reset), per format of the rows\n"
"('float32', which the narrow formats take too, and 'float64'): rows (rows written by\n"
"rows(), and long rows), slow_rows (rows recomputed on the slow path),\n"
"slow_elements (outputs the fast path's bound left undecided), undecided (outputs\n"
"the slow path's bound left undecided too: none expected), exact_rows (float32 rows\n"
"the middle path, the float64 kernel's sum, left to the accurate one).");

static PyObject *
py_stats(PyObject *self, PyObject *args)
{
    int reset = 0;
    if (!PyArg_ParseTuple(args, "|p", &reset)) {
        return NULL;
    }
    static const char *names[5] = {"rows", "slow_rows", "slow_elements", "undecided",
                                   "exact_rows"};
    static const char *formats[2] = {"float32", "float64"};
    PyObject *d = PyDict_New();
    for (int f = 0; d != NULL && f < 2; f++) {
        PyObject *e = PyDict_New();
        for (int k = 0; e != NULL && k < 5; k++) {
            uint64_t v = reset ? __atomic_exchange_n(&slow_stat[f][k], 0, __ATOMIC_RELAXED)
                               : __atomic_load_n(&slow_stat[f][k], __ATOMIC_RELAXED);
            PyObject *n = PyLong_FromUnsignedLongLong((unsigned long long)v);
            if (n == NULL || PyDict_SetItemString(e, names[k], n) < 0) {
                Py_XDECREF(n);
                Py_CLEAR(e);
                break;
            }
            Py_DECREF(n);
        }
        if (e == NULL || PyDict_SetItemString(d, formats[f], e) < 0) {
            Py_XDECREF(e);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(e);
    }
    return d;
}

PyDoc_STRVAR(set_bound_scale_doc,
"set_bound_scale(s) -> float\n\n"
"Multiplies the fast path's error bound by s (1 by default) and returns the previous\n"
"factor. For the test that a weakened bound is caught: s < 1 is not safe.");

static PyObject *
py_set_bound_scale(PyObject *self, PyObject *args)
{
    double v;
    if (!PyArg_ParseTuple(args, "d", &v)) {
        return NULL;
    }
    if (!(v >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "the scale must be a number >= 0");
        return NULL;
    }
    double old = bound_scale;
    bound_scale = v;
    return PyFloat_FromDouble(old);
}

PyDoc_STRVAR(log1p_dd_doc,
"log1p_dd(hi, lo) -> (hi, lo)\n\nlog1p of a non-negative double-double, relative error near 2^-60.");

static PyObject *
py_log1p_dd(PyObject *self, PyObject *args)
{
    double h, l;
    if (!PyArg_ParseTuple(args, "dd", &h, &l)) {
        return NULL;
    }
    if (!(h >= 0.0) || !isfinite(h)) {
        PyErr_SetString(PyExc_ValueError, "log1p_dd needs a finite, non-negative argument");
        return NULL;
    }
    unsigned int csr = fp_enter();
    dd r = log1p_dd(h, l);
    fp_leave(csr);
    return Py_BuildValue("dd", r.hi, r.lo);
}

PyDoc_STRVAR(tiny_log_doc,
"tiny_log(c, s_hi, s_lo) -> float\n\n"
"log1p(T) for T = exp(c) * (s_hi + s_lo) below 2**-960 (c <= -600): T itself,\n"
"correctly rounded also where it is subnormal; 0.0 for c < -2000.");

static PyObject *
py_tiny_log(PyObject *self, PyObject *args)
{
    double c, sh, sl;
    if (!PyArg_ParseTuple(args, "ddd", &c, &sh, &sl)) {
        return NULL;
    }
    if (!(c <= 0.0) || !(sh >= 0.0) || !isfinite(sh)) {
        PyErr_SetString(PyExc_ValueError, "tiny_log needs c <= 0 and a finite s_hi >= 0");
        return NULL;
    }
    dd S = {sh, sl};
    unsigned int csr = fp_enter();
    double r = tiny_log1p(c, S);
    fp_leave(csr);
    return PyFloat_FromDouble(r);
}

PyDoc_STRVAR(exp_dd_doc,
"exp_dd(hi, lo) -> (hi, lo, K)\n\nexp(hi + lo) = 2**K * (hi + lo), for hi in [-746, 709].");

static PyObject *
py_exp_dd(PyObject *self, PyObject *args)
{
    double h, l;
    if (!PyArg_ParseTuple(args, "dd", &h, &l)) {
        return NULL;
    }
    if (!(h >= -746.0 && h <= 709.0)) {
        PyErr_SetString(PyExc_ValueError, "exp_dd needs -746 <= hi <= 709");
        return NULL;
    }
    int64_t K;
    unsigned int csr = fp_enter();
    dd r = exp_dd_scaled(h, l, &K);
    fp_leave(csr);
    return Py_BuildValue("ddL", r.hi, r.lo, (long long)K);
}

PyDoc_STRVAR(exp_short_doc, "exp_short(d) -> float\n\nThe float32 kernel's exp, for -700 <= d <= 0.");

static PyObject *
py_exp_short(PyObject *self, PyObject *args)
{
    double d;
    if (!PyArg_ParseTuple(args, "d", &d)) {
        return NULL;
    }
    return PyFloat_FromDouble(exp_short(d));
}

PyDoc_STRVAR(constants_doc,
"constants() -> dict\n\nThe kernel's constants, for checking against mpmath.");

static PyObject *
py_constants(PyObject *self, PyObject *unused)
{
    PyObject *tab = PyList_New(64);
    if (tab == NULL) {
        return NULL;
    }
    for (int j = 0; j < 64; j++) {
        PyObject *pair = Py_BuildValue("dd", TAB_HI[j], TAB_LO[j]);
        if (pair == NULL) {
            Py_DECREF(tab);
            return NULL;
        }
        PyList_SET_ITEM(tab, j, pair);
    }
    PyObject *tab4 = PyList_New(4);
    if (tab4 == NULL) {
        Py_DECREF(tab);
        return NULL;
    }
    for (int j = 0; j < 4; j++) {
        PyList_SET_ITEM(tab4, j, PyFloat_FromDouble(EXP2_4[j]));
    }
    return Py_BuildValue("{s:(ddd),s:d,s:N,s:(dd),s:d,s:N}", "ln2_64", C1, C2, C3, "inv_ln2_64",
                         INV_C, "exp2_j64", tab, "ln2_4", L4_HI, L4_LO, "inv_ln2_4", INV_L4,
                         "exp2_j4", tab4);
}

PyDoc_STRVAR(use_doc,
"use(path) -> str\n\n"
"Select the code path of the maxima, the sums and the large writes: 'avx512' (where\n"
"the CPU has AVX512F and AVX512DQ), 'avx2' (AVX2 and FMA) or 'scalar'; returns the\n"
"previous one. paths() lists those this machine runs. Every path gives the same\n"
"bits; tests check it.");

static PyObject *
py_use(PyObject *self, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) {
        return NULL;
    }
    const char *prev = current_path;
    if (!use_path(name)) {
        PyErr_Format(PyExc_ValueError, "no code path %R on this machine (it runs %s)",
                     PyTuple_GET_ITEM(args, 0), best_path());
        return NULL;
    }
    return PyUnicode_FromString(prev);
}

PyDoc_STRVAR(paths_doc,
"paths() -> tuple[str, ...]\n\n"
"The code paths this build runs on this machine, the widest first (use() takes any).");

static PyObject *
py_paths(PyObject *self, PyObject *unused)
{
    PyObject *out = PyTuple_New(0);
    for (int p = 0; out != NULL && p < N_PATHS; p++) {
        if (path_available(p)) {
            PyObject *name = PyUnicode_FromString(PATHS[p]);
            if (name == NULL || _PyTuple_Resize(&out, PyTuple_GET_SIZE(out) + 1) < 0) {
                Py_XDECREF(name);
                return NULL;
            }
            PyTuple_SET_ITEM(out, PyTuple_GET_SIZE(out) - 1, name);
        }
    }
    return out;
}
