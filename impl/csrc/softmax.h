/* csrc/softmax.h: the softmax writers. softmax_rows: float64 rows, from combine_rows'
 * per-row sums (the accurate ones: _functions._softmax_sums), each output rounded, with
 * a flag where its rounding is not proven. softmax_f32_rows: float32, float16 and
 * bfloat16 rows in one call, on log_softmax's passes (below). Uses kind_of and holds
 * (bindings.h), SLICE_VALUES and answer_of (blocks.h).
 *
 * float64 (softmax_row_f64) in double-double: d = x - m exactly (TwoSum), y = d - L
 * with L's two words, |y - exact| <= delta + 2^-100 (|d| + |L|) (the low words' sum,
 * two roundings of at most 2^-51 (|d| + |L|) each, then Fast2Sum); the exp (exp_dd_parts,
 * dd_math.h, within EXP_DD_REL = 2^-66; where that leaves the output open, exp_dd2,
 * rounding.h, within 2^-86) gives (hi + lo) 2^K, so the output is within eps = e_y
 * (1 + 2^-40) + the exp's bound of it relatively, and 2^-1074 more where lo's scaling
 * leaves the normal range. A normal result r = hi + lo (Fast2Sum, |lo| <= half an
 * ulp) is proven where lo +- err stays inside the midpoints around r (the one below a
 * power of two a quarter ulp away); a subnormal one is rounded on the 2^-1074 grid
 * (nearbyint of the scaled value) and proven where the scaled fraction +- err stays
 * inside (-1/2, 1/2). y below -746 gives 0: e^y < 2^-1076, under half the least
 * subnormal. */

/* A row's L (two words), its bound delta and its maximum, from its combine_rows values:
 * a row whose T was below 2^-960 (redo) takes L = 0 within 2^-959 */
typedef struct {
    double l_hi, l_lo, delta, m;
} row_l;

static inline row_l
row_l_of(const double *s)
{
    if (s[5] != 0.0) {
        return (row_l){0.0, 0.0, 0x1p-959, s[4]};
    }
    return (row_l){s[0], s[1], s[6], s[4]};
}

/* exp(y) for y = (y_hi, y_lo) within e_y of the exact exponent, rounded to float64 in
 * *r: 1 where that rounding is not proven (the bound above with exp within rel). slow
 * picks the exp: exp_dd2 (within 2^-86: EXP_DD2_REL with room) or exp_dd_parts (within
 * EXP_DD_REL). bound_scale scales the bound (the test that weakens it). */
INLINE int
softmax_out_f64(double y_hi, double y_lo, double e_y, int slow, double *r)
{
    int64_t K;
    dd e;
    if (slow) {
        e = exp_dd2(y_hi, y_lo, &K);
    }
    else {
        exp_dd_parts(y_hi, y_lo, &e.hi, &e.lo, &K);
    }
    double eps = (e_y * (1.0 + 0x1p-40) + (slow ? 0x1p-86 : EXP_DD_REL)) * bound_scale;
    int u = !(e_y < 0x1p-40);
    /* normalised (exp_dd_parts' low word holds up to 2^-16 of the value): |v.lo| is at
     * most half an ulp of v.hi, exactly the same sum */
    dd v = fast_two_sum(e.hi, e.lo);
    if (K >= -1021) {
        /* normal (v.hi in [0.7, 2), the result above 2^-1022): the test on hi + lo
         * before the scaling, whose rounding then scales exactly */
        double err = eps * v.hi * (1.0 + 0x1p-50);
        uint64_t b = double_to_bits(v.hi);
        double ulp = bits_to_double(((b >> 52) - 52) << 52);
        int pow2 = (b & 0xFFFFFFFFFFFFFull) == 0;
        double below = pow2 ? 0.25 * ulp : 0.5 * ulp;
        u |= !(v.lo + err < 0.5 * ulp && v.lo - err > -below);
        *r = v.hi * pow2i(K);
    }
    else { /* below 2^-1021, where float64's spacing is 2^-1074: that grid */
        double sh = ldexp(v.hi, (int)K + 1074), sl = ldexp(v.lo, (int)K + 1074);
        double nr = nearbyint(sh);
        double frac = (sh - nr) + sl; /* sh - nr exact (Sterbenz) */
        /* sh on a half-integer rounds to even, which may be the far side of sh + sl */
        if (frac > 0.5 || frac < -0.5) {
            nr += frac > 0.0 ? 1.0 : -1.0;
            frac = (sh - nr) + sl; /* |sh - nr| <= 1.5 on sh's grid: exact */
        }
        double err = (eps * sh + 0x1p-60) * (1.0 + 0x1p-50);
        u |= !(fabs(frac) + err < 0.5);
        *r = ldexp(nr, -1074);
    }
    return u;
}

/* One regular float64 row (the bound above): the outputs, correctly rounded where
 * their flag is 0; returns how many are open. Each output is tried with the sum's exp
 * (exp_dd_parts, within 2^-66: about one output in 2^12 is left open by it) and, where
 * that leaves it open, again with exp_dd2. An output proven by either is the correctly
 * rounded one, so the bits do not depend on which decided it. */
HOT static Py_ssize_t
softmax_row_f64(const double *x, Py_ssize_t n, const double *s, double *o,
                unsigned char *open)
{
    row_l rl = row_l_of(s);
    double l_hi = rl.l_hi, l_lo = rl.l_lo, m = rl.m, delta = rl.delta;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double xi = x[i];
        int u = 0;
        double r = 0.0;
        dd d = two_sum(xi, -m);
        if (xi != -INFINITY && d.hi > -746.0) {
            dd t = two_sum(d.hi, -l_hi);
            dd y = fast_two_sum(t.hi, t.lo + (d.lo - l_lo));
            double e_y = delta + (fabs(d.hi) + l_hi) * 0x1p-100;
            if (y.hi > -746.0 && softmax_out_f64(y.hi, y.lo, e_y, 0, &r)) {
                u = softmax_out_f64(y.hi, y.lo, e_y, 1, &r);
            }
        }
        o[i] = r;
        open[i] = (unsigned char)u;
        k += u;
    }
    return k;
}

/* ---- float32, float16 and bfloat16 rows: the fast path (softmax_f32_rows) ----
 *
 * float16 and bfloat16 rows are widened to float32 (exact) a row at a time, and their
 * outputs rounded to the format's p bits (round_p, in the tests below: both ends of
 * each interval) and stored back exactly; the rest is float32's.
 *
 * From log_softmax's passes: m = max_f32, T = partial_f32_mid plus k - 1 (exp_mid's
 * terms), L = log1p(T) within delta (bound_f32_terms). Each output is exp(z), z =
 * (x - m) - L_hi in double (L_lo = 0 there), by exp_mid (below), within EXP_MID_REL.
 * z is within e_z = delta + 2^-52 (|d| + |z|) of the exact (x - m) - L (d = x - m and z
 * rounded once each), which exp turns into e_z (1 + 2^-30) relatively for e_z < 2^-30;
 * so v = exp_mid(z) is within err = (e_z (1 + 2^-30) + EXP_MID_REL) v (1 + 2^-50) of
 * the exact output, and v's rounding to float32 is proven where v - err and v + err,
 * each widened by 2^-52 v against its own rounding, round to one float32 (rounding is
 * monotonic). z < -105 gives 0, proven: the exact value is below e^-104.9, under half
 * the least float32 subnormal (2^-150); -inf entries are such. A row with an output
 * left open takes L again from medium_L_f32 (the float64 kernel's sum: delta about
 * 2^-60), then, where that leaves one, exact_L_f32 (about 2^-100), and its open
 * outputs alone are recomputed from z in double-double (TwoSum of x and -m, then of L's
 * words) by exp_dd2 (within 2^-86), and proven by the same test; what the exact L
 * leaves open is flagged for the caller. Outputs proven at any tier are the correctly
 * rounded ones, so the bits do not depend on which tier decided them, nor on the code
 * path. The sum and the first tier's writer are passes.h's partial_f32_mid and
 * softmax_write_f32 (AVX-512 variants in passes_avx512.h, the same operations lane by
 * lane). */

/* The later tiers: the open outputs of a row recomputed with L (within L.delta) in
 * double-double; returns how many stay open */
static Py_ssize_t
softmax_redo_f32(const float *x, float *o, unsigned char *open, Py_ssize_t n, float m,
                 lbound L, int p, int emin)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!open[i]) {
            continue;
        }
        dd d = two_sum((double)x[i], -(double)m);
        dd t = two_sum(d.hi, -L.hi);
        dd z = fast_two_sum(t.hi, t.lo + (d.lo - L.lo));
        /* the low words' sum: two roundings of at most 2^-51 (|d| + |L|) each */
        double e_z = L.delta + (fabs(d.hi) + fabs(L.hi)) * 0x1p-100;
        int64_t K;
        dd e = exp_dd2(z.hi, z.lo, &K); /* z > -105: 2^K normal, the product exact */
        double v = (e.hi + e.lo) * pow2i(K);
        double err = ((e_z * (1.0 + 0x1p-30) + 0x1p-86) * (1.0 + 0x1p-50) + 0x1p-52) * v;
        int u;
        if (p == 24) {
            u = (float)(v - err) != (float)(v + err);
            o[i] = (float)v;
        }
        else {
            double a = round_p(v - err, p, emin);
            u = a != round_p(v + err, p, emin);
            o[i] = (float)a;
        }
        u |= !(e_z < 0x1p-30);
        open[i] = (unsigned char)u;
        k += u;
    }
    return k;
}

/* One regular row; returns the count of outputs left open for the caller */
static Py_ssize_t
softmax_row_f32(const float *x, float *o, unsigned char *open, Py_ssize_t n, float m, int p,
                int emin)
{
    double T;
    Py_ssize_t k;
    partial_f32_mid(x, n, m, &T, &k);
    T += (double)(k - 1);
    lbound L = bound_f32_terms(T, n, EXP_MID_REL, 0.0);
    Py_ssize_t left = softmax_write_f32(x, o, open, n, m, L.hi, L.delta, p, emin);
    if (left) {
        Py_ssize_t first = left;
        left = softmax_redo_f32(x, o, open, n, m, medium_L_f32(x, n, m), p, emin);
        if (left) {
            left = softmax_redo_f32(x, o, open, n, m, exact_L_f32(x, n, m), p, emin);
            stat_add(&slow_stat[F32][ST_EXACT_ROWS], 1);
        }
        stat_add(&slow_stat[F32][ST_SLOW_ROWS], 1);
        stat_add(&slow_stat[F32][ST_SLOW_ELEMS], (uint64_t)first);
        stat_add(&slow_stat[F32][ST_UNDECIDED], (uint64_t)left);
    }
    return left;
}

PyDoc_STRVAR(softmax_f32_rows_doc,
"softmax_f32_rows(x, n, out, opened, fmt=0) -> int\n\n"
"softmax over each length-n row of x (C-contiguous) into out (x's shape and format),\n"
"correctly rounded where opened (uint8, x's shape) gets 0; 1 where the exact step must\n"
"decide (opened None: the flags are not kept; call again with a buffer where the\n"
"count returned is not 0). fmt 0: float32 buffers; 1: float16, 2: bfloat16, as uint16 buffers (each row\n"
"widened exactly to float32, its outputs rounded to the format's grid and stored\n"
"exactly). Rows with a NaN, a +inf or no finite entry are left to the caller: out NaN,\n"
"opened 0. Returns the count of open outputs.");

static PyObject *
py_softmax_f32_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo, *fo;
    Py_ssize_t n;
    int fmt = SM_F32;
    if (!PyArg_ParseTuple(args, "OnOO|i", &xo, &n, &oo, &fo, &fmt)) {
        return NULL;
    }
    Py_buffer x, o, f;
    if (PyObject_GetBuffer(xo, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(oo, &o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    /* opened None: the flags go to a scratch row (the caller asks again, with a buffer,
     * where any output is left open: none so far) */
    int flags = fo != Py_None;
    if (flags && PyObject_GetBuffer(fo, &f, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&o);
        return NULL;
    }
    Py_ssize_t size = fmt == SM_F32 ? 4 : 2;
    Py_ssize_t rows = n > 0 ? x.len / (size * n) : 0;
    int kinds = fmt == SM_F32 ? kind_of(&x) == 'f' && kind_of(&o) == 'f'
                              : (fmt == SM_F16 || fmt == SM_BF16) && x.itemsize == 2 &&
                                    o.itemsize == 2;
    int ok = n > 0 && kinds && x.len == rows * n * size && o.len == x.len &&
             (!flags || (f.len == rows * n && f.itemsize == 1));
    /* float32: 24 bits, emin -126; float16: 11, -14; bfloat16: 8, -126 */
    int p = fmt == SM_F16 ? 11 : fmt == SM_BF16 ? 8 : 24, emin = fmt == SM_F16 ? -14 : -126;
    float *buf = NULL;
    unsigned char *scratch = NULL;
    if (ok && fmt != SM_F32) {
        buf = PyMem_RawMalloc(2 * (size_t)n * sizeof(float));
        ok = buf != NULL ? 1 : -1;
    }
    if (ok == 1 && !flags) {
        scratch = PyMem_RawMalloc((size_t)n);
        ok = scratch != NULL ? 1 : -1;
    }
    Py_ssize_t open = 0;
    if (ok == 1) {
        unsigned char *fv = flags ? f.buf : NULL;
        KERNEL_BEGIN
        for (Py_ssize_t r = 0; r < rows; r++) {
            const float *xr;
            float *orow;
            if (fmt == SM_F32) {
                xr = (const float *)x.buf + r * n;
                orow = (float *)o.buf + r * n;
            }
            else {
                narrow_to_f32((const uint16_t *)x.buf + r * n, buf, n, fmt);
                xr = buf;
                orow = buf + n;
            }
            unsigned char *frow = flags ? fv + r * n : scratch;
            float m = max_f32(xr, n);
            if (isnan(m)) {
                for (Py_ssize_t i = 0; i < n; i++) {
                    orow[i] = NAN;
                    frow[i] = 0;
                }
            }
            else {
                open += softmax_row_f32(xr, orow, frow, n, m, p, emin);
            }
            if (fmt != SM_F32) {
                f32_round_narrow(orow, (uint16_t *)o.buf + r * n, n, fmt); /* exact */
            }
        }
        stat_add(&slow_stat[F32][ST_ROWS], (uint64_t)rows);
        KERNEL_END
    }
    PyMem_RawFree(buf);
    PyMem_RawFree(scratch);
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    if (flags) {
        PyBuffer_Release(&f);
    }
    if (ok < 0) {
        return PyErr_NoMemory();
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "softmax_f32_rows needs rows of length n > 0 (float32 "
                                          "for fmt 0, 2-byte items for fmt 1 and 2), out of x's "
                                          "format and size and uint8 opened of x's size");
        return NULL;
    }
    return PyLong_FromSsize_t(open);
}

PyDoc_STRVAR(exp_mid_doc,
"exp_mid(z) -> float\n\nThe float32 softmax writer's exp (within EXP_MID_REL = 2^-48 for\n"
"-700 <= z <= 0), for the tests.");

static PyObject *
py_exp_mid(PyObject *self, PyObject *args)
{
    double z;
    if (!PyArg_ParseTuple(args, "d", &z)) {
        return NULL;
    }
    return PyFloat_FromDouble(exp_mid(z));
}

PyDoc_STRVAR(softmax_out_f64_doc,
"softmax_out_f64(y_hi, y_lo, e_y, slow) -> (float, bool)\n\nexp(y_hi + y_lo), y within e_y of\n"
"the exact exponent, rounded to float64 by the float64 softmax writer's step (slow:\n"
"exp_dd2, else exp_dd_parts), and whether its rounding is left open, for the tests.");

static PyObject *
py_softmax_out_f64(PyObject *self, PyObject *args)
{
    double y_hi, y_lo, e_y, r = 0.0;
    int slow;
    if (!PyArg_ParseTuple(args, "dddp", &y_hi, &y_lo, &e_y, &slow)) {
        return NULL;
    }
    int u = softmax_out_f64(y_hi, y_lo, e_y, slow, &r);
    return Py_BuildValue("dO", r, u ? Py_True : Py_False);
}

PyDoc_STRVAR(softmax_rows_doc,
"softmax_rows(x, n, slices, out, opened) -> int\n\n"
"exp(x - m - L) for each length-n row of x (float64, C-contiguous) from slices\n"
"(float64, 8 per row as combine_rows gives them), into out (float64, x's shape),\n"
"rounded; opened (uint8, x's shape) gets 1 where the rounding is not proven. Rows with a +inf, NaN, a special answer or no finite maximum are left\n"
"to the caller: out NaN, opened 0. Returns the count of open outputs.");

static PyObject *
py_softmax_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *so, *oo, *fo;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OnOOO", &xo, &n, &so, &oo, &fo)) {
        return NULL;
    }
    Py_buffer x, s, o, f;
    if (PyObject_GetBuffer(xo, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(so, &s, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(oo, &o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&s);
        return NULL;
    }
    if (PyObject_GetBuffer(fo, &f, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&s);
        PyBuffer_Release(&o);
        return NULL;
    }
    Py_ssize_t rows = n > 0 ? x.len / (8 * n) : 0;
    int ok = n > 0 && kind_of(&x) == 'd' && kind_of(&s) == 'd' && kind_of(&o) == 'd' &&
             x.len == rows * n * 8 && o.len == x.len && f.len == rows * n && f.itemsize == 1 &&
             s.len == rows * SLICE_VALUES * 8;
    Py_ssize_t open = 0;
    if (ok) {
        const double *xv = x.buf, *sv = s.buf;
        double *ov = o.buf;
        unsigned char *fv = f.buf;
        KERNEL_BEGIN
        for (Py_ssize_t r = 0; r < rows; r++) {
            const double *sr = sv + SLICE_VALUES * r;
            int regular = isfinite(sr[4]) && isfinite(sr[0]) && sr[2] == 0.0 &&
                          (answer_of(sr[3]) == 0 || answer_of(sr[3]) == ANSWER_NEGATIVE ||
                           answer_of(sr[3]) == ANSWER_ONE_ENTRY);
            if (regular) {
                open += softmax_row_f64(xv + r * n, n, sr, ov + r * n, fv + r * n);
            }
            else {
                for (Py_ssize_t i = 0; i < n; i++) {
                    ov[r * n + i] = NAN;
                    fv[r * n + i] = 0;
                }
            }
        }
        KERNEL_END
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&s);
    PyBuffer_Release(&o);
    PyBuffer_Release(&f);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "softmax_rows needs float64 rows of length n > 0, 8 "
                                          "float64 slice values a row, float64 out and uint8 "
                                          "opened of x's size");
        return NULL;
    }
    return PyLong_FromSsize_t(open);
}
