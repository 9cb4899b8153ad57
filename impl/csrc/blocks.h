/* csrc/blocks.h: the Dask path (impl/_dask.py), block by block: a block's rows read in
 * place (rows_view, prefetch_row); the first pass, partial_rows (special_counts_* for
 * the special rows); the second, write_rows (special_row_* for the special slices);
 * and the per-slice combination between them, combine_rows (combine_row). Uses
 * dd_math.h, passes.h and bindings.h's checks; special_counts_* and special_row_* are
 * also used by ffi.h. The Python functions are listed in _kernel.c's method table. */

/* x as rows of n float32 or float64 entries: C-contiguous, or 2-D with contiguous
 * rows of length n a fixed stride apart (a block of a larger array, read in place).
 * Sets the kind ('f' or 'd'), the row count and the stride in entries; returns -1 with
 * a ValueError set and nothing held otherwise. */
static int
rows_view(PyObject *xo, Py_ssize_t n, Py_buffer *x, int *kx, Py_ssize_t *nrows,
          Py_ssize_t *stride)
{
    if (PyObject_GetBuffer(xo, x, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        return -1;
    }
    *kx = kind_of(x);
    Py_ssize_t size = x->itemsize ? x->itemsize : 1;
    const char *problem = NULL;
    if (*kx == 0 || n <= 0) {
        problem = "x must be float32 or float64 rows of length n > 0, native and aligned";
    }
    else if (PyBuffer_IsContiguous(x, 'C')) {
        Py_ssize_t count = x->len / size;
        if (count % n != 0) {
            problem = "x must be float32 or float64 rows of length n > 0";
        }
        *nrows = count / n;
        *stride = n;
    }
    else if (x->ndim == 2 && x->shape[1] == n && x->strides[1] == size &&
             x->strides[0] % size == 0) {
        *nrows = x->shape[0];
        *stride = x->strides[0] / size;
    }
    else {
        problem = "x must be C-contiguous, or 2-D with contiguous rows of length n";
    }
    if (problem) {
        PyBuffer_Release(x);
        PyErr_SetString(PyExc_ValueError, problem);
        return -1;
    }
    return 0;
}

/* Rows of a block read in place lie a stride apart, each in pages of its own once
 * rows are 1 KB or so: the hardware prefetcher starts over on every row. The first
 * lines of the row PREFETCH_AHEAD rows on are requested while this one is worked on
 * (over float32 (65536, 1024) in blocks of (4096, 256): the partial pass from 180-198
 * ms to 120-140, the output pass from 117-143 ms to 78-94; 4 rows ahead measured the
 * same). */
#define PREFETCH_ROW_BYTES 2048
#define PREFETCH_AHEAD 2 /* rows */
static inline void
prefetch_row(const void *row, size_t bytes)
{
#if defined(__SSE2__)
    const char *p = row;
    size_t end = bytes < PREFETCH_ROW_BYTES ? bytes : PREFETCH_ROW_BYTES;
    for (size_t i = 0; i < end; i += 64) {
        _mm_prefetch(p + i, _MM_HINT_T0);
    }
#else
    (void)row;
    (void)bytes;
#endif
}

/* A special row of a block (a NaN, a +inf, or -inf only): its counts of +inf and
 * NaN, and its maximum as NumPy gives it (NaN where there is a NaN) */
#define DEFINE_SPECIAL_COUNTS(NAME, T)                                                     \
    static void NAME(const T *x, Py_ssize_t n, double *v)                                  \
    {                                                                                      \
        double pinf = 0.0, nan = 0.0, m = -INFINITY;                                       \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            pinf += x[i] == (T)INFINITY;                                                   \
            nan += x[i] != x[i];                                                           \
            m = (double)x[i] > m ? (double)x[i] : m;                                       \
        }                                                                                  \
        v[3] = pinf;                                                                       \
        v[4] = nan;                                                                        \
        v[9] = nan > 0.0 ? NAN : m;                                                        \
    }

DEFINE_SPECIAL_COUNTS(special_counts_f32, float)
DEFINE_SPECIAL_COUNTS(special_counts_f64, double)

PyDoc_STRVAR(partial_rows_doc,
"partial_rows(x, n, parts)\n\n"
"The Dask path's first pass over a block: for each length-n row of x (C-contiguous,\n"
"or 2-D with contiguous rows a stride apart), parts (float64, C-contiguous, 10 per\n"
"row) gets {partial(row, m) hi, lo and count, counts of +inf and NaN, n, -inf, 0,\n"
"0, m} with m the row's maximum, taken on the same visit. A row with a NaN or a\n"
"+inf, or of -inf only, gets no sum: its counts, and its maximum as NumPy gives it.");

static PyObject *
py_partial_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *po;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OnO", &xo, &n, &po)) {
        return NULL;
    }
    Py_buffer x, p;
    int kx;
    Py_ssize_t nrows, stride;
    if (rows_view(xo, n, &x, &kx, &nrows, &stride) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(po, &p, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (kind_of(&p) != 'd' || !holds(p.len, nrows, 80)) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&p);
        PyErr_SetString(PyExc_ValueError, "parts must be float64, 10 values per row");
        return NULL;
    }
    double *pv = p.buf;
    size_t row_bytes = (size_t)n * x.itemsize;
    Py_ssize_t step = stride * x.itemsize; /* bytes; negative for rows in reverse */
    KERNEL_BEGIN
    for (Py_ssize_t r = 0; r < nrows; r++) {
        if (stride != n && r + PREFETCH_AHEAD < nrows) {
            prefetch_row((const char *)x.buf + (r + PREFETCH_AHEAD) * step, row_bytes);
        }
        const void *row = (const char *)x.buf + r * step;
        double *v = pv + 10 * r;
        dd sum = {0.0, 0.0};
        Py_ssize_t k = 0;
        double m = kx == 'f' ? (double)max_f32(row, n) : max_f64(row, n);
        v[3] = v[4] = 0.0;
        v[5] = (double)n; /* the slice's entries in this block */
        v[9] = m;
        if (isnan(m)) { /* not the kernels' row: no sum */
            if (kx == 'f') {
                special_counts_f32(row, n, v);
            }
            else {
                special_counts_f64(row, n, v);
            }
        }
        else if (kx == 'f') {
            partial_f32(row, n, (float)m, &sum.hi, &k);
        }
        else {
            partial_f64(row, n, m, 0.0, &sum, &k);
        }
        v[0] = sum.hi;
        v[1] = sum.lo;
        v[2] = (double)k;
        v[6] = -INFINITY;
        v[7] = v[8] = 0.0;
    }
    KERNEL_END
    PyBuffer_Release(&x);
    PyBuffer_Release(&p);
    Py_RETURN_NONE;
}

/* A special slice's answer, beside its count of +inf: all NaN (it holds a NaN or is
 * -inf only), or, for slices of one entry (the Dask path, whose slices may turn out
 * to be of one entry), 0 but at a NaN. ANSWER_NEGATIVE is no special slice: the
 * usual outputs, but T > 0 (a finite entry below the maximum), so that a 0 written
 * at the maximum, where T underflowed, is -0: its exact value is negative. */
enum { ANSWER_NAN = 1, ANSWER_ONE_ENTRY = 2, ANSWER_NEGATIVE = 3 };

/* Values per slice between combine_rows and write_rows (impl/_dask.py's _SLICE) */
#define SLICE_VALUES 8

/* The answer held in a float64 slot: one of the codes, NaN for any other nonzero
 * value (compared, not converted: a NaN or a huge value in the slot is no int) */
static inline int
answer_of(double a)
{
    return a == (double)ANSWER_ONE_ENTRY  ? ANSWER_ONE_ENTRY
           : a == (double)ANSWER_NEGATIVE ? ANSWER_NEGATIVE
           : a != 0.0                     ? ANSWER_NAN
                                          : 0;
}

/* A special slice's outputs (docs/specification.md, Special values): NaN for
 * ANSWER_NAN; one entry's answer for ANSWER_ONE_ENTRY; else, with p entries +inf, 0 at
 * the +inf (p = 1) or NaN (p > 1), -inf elsewhere */
#define DEFINE_SPECIAL_ROW(NAME, T, O)                                                     \
    static void NAME(const T *x, O *o, Py_ssize_t n, double n_pinf, int answer)            \
    {                                                                                      \
        O at_inf = n_pinf == 1.0 ? (O)0.0 : (O)NAN;                                        \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            o[i] = answer == ANSWER_NAN         ? (O)NAN                                   \
                   : answer == ANSWER_ONE_ENTRY ? (x[i] != x[i] ? (O)NAN : (O)0.0)         \
                   : x[i] == (T)INFINITY        ? at_inf                                   \
                                                : -(O)INFINITY;                            \
        }                                                                                  \
    }

DEFINE_SPECIAL_ROW(special_row_f32, float, float)
DEFINE_SPECIAL_ROW(special_row_f32_wide, float, double)
DEFINE_SPECIAL_ROW(special_row_f64, double, double)

PyDoc_STRVAR(write_rows_doc,
"write_rows(x, out, n, slices, odd=0, unsure=None)\n\n"
"The Dask path's second pass over a block: write() for each length-n row of x\n"
"(C-contiguous, or 2-D with contiguous rows a stride apart) into the C-contiguous\n"
"out, with slices (float64, C-contiguous, 8 per row as combine_rows gives them: L hi,\n"
"L lo, count of +inf, special answer, m, redo, delta, n); a slice with a +inf or a\n"
"special answer gets the special values. odd=1 as in rows(). unsure (float64, one\n"
"per row) gets the count of outputs the rounding test left open under delta.");

static PyObject *
py_write_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo, *so, *uo = Py_None;
    Py_ssize_t n;
    int odd = 0;
    if (!PyArg_ParseTuple(args, "OOnO|iO", &xo, &oo, &n, &so, &odd, &uo)) {
        return NULL;
    }
    Py_buffer x, o, sl, ub = {0};
    int kx, ko;
    Py_ssize_t nrows, stride;
    if (rows_view(xo, n, &x, &kx, &nrows, &stride) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(oo, &o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(so, &sl, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&o);
        return NULL;
    }
    ko = kind_of(&o);
    const char *problem = NULL;
    if (uo != Py_None) {
        if (PyObject_GetBuffer(uo, &ub, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
            PyBuffer_Release(&x);
            PyBuffer_Release(&o);
            PyBuffer_Release(&sl);
            return NULL;
        }
        if (kind_of(&ub) != 'd' || !holds(ub.len, nrows, 8)) {
            problem = "unsure must be float64, one value per row";
        }
    }
    if (ko == 0 || (kx == 'd' && ko != 'd') || !holds(o.len / o.itemsize, nrows, n)) {
        problem = "out must be C-contiguous float32 or float64 (float64 for float64 x), one "
                  "entry per entry of x's rows";
    }
    else if (kind_of(&sl) != 'd' || !holds(sl.len, nrows, SLICE_VALUES * 8)) {
        problem = "slices must be float64, 8 values per row";
    }
    else if (odd && (kx != 'f' || ko != 'f')) {
        problem = ODD_PROBLEM;
    }
    if (problem == NULL) {
        const double *sv = sl.buf;
        double *uv = ub.buf; /* NULL where not asked for */
        int out_kind = out_kind_of(ko, odd);
        size_t osize = out_size(kx == 'd', out_kind);
        size_t row_bytes = (size_t)n * x.itemsize;
        Py_ssize_t step = stride * x.itemsize;
        KERNEL_BEGIN
        for (Py_ssize_t r = 0; r < nrows; r++) {
            if (stride != n && r + PREFETCH_AHEAD < nrows) {
                prefetch_row((const char *)x.buf + (r + PREFETCH_AHEAD) * step, row_bytes);
            }
            const void *row = (const char *)x.buf + r * step;
            void *orow = (char *)o.buf + (size_t)(r * n) * osize;
            const double *v = sv + SLICE_VALUES * r;
            int answer = answer_of(v[3]);
            Py_ssize_t unsure = 0;
            if (uv) {
                uv[r] = 0.0;
            }
            if (v[2] > 0.0 || (answer != 0 && answer != ANSWER_NEGATIVE)) {
                if (kx == 'd') {
                    special_row_f64(row, orow, n, v[2], answer);
                }
                else if (out_kind == OUT_F64) {
                    special_row_f32_wide(row, orow, n, v[2], answer);
                }
                else {
                    special_row_f32(row, orow, n, v[2], answer);
                }
                continue;
            }
            /* the rounding test under the slice's bound v[6]; a slice whose float64
             * sum was redone (v[5]: T below 2^-960, its L from tiny_log) is not
             * tested (its outputs below 2^-969 never settle) */
            double delta = v[5] != 0.0 ? 0.0 : v[6];
            if (kx == 'f') {
                unsure = write_f32(row, orow, out_kind, n, (float)v[4], (lbound){v[0], v[1], delta});
            }
            else {
                unsure = write_f64(row, orow, n, v[4], (lbound){v[0], v[1], delta});
            }
            if (uv && v[5] == 0.0) {
                uv[r] = (double)unsure;
            }
            if (answer == ANSWER_NEGATIVE) {
                negative_zeros(orow, osize, n);
            }
        }
        KERNEL_END
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    PyBuffer_Release(&sl);
    if (uo != Py_None) {
        PyBuffer_Release(&ub);
    }
    if (problem) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The Dask path's per-slice combination of its blocks' partial sums (impl/_dask.py):
 * block j of a slice brings p[10 j ...] = {S hi, S lo, count at its maximum, counts of
 * +inf and NaN, its count of entries, three values for the float64 tiny case (read in
 * Python), its maximum m_j}, its sum S relative to m_j. With m the largest m_j, the blocks at m
 * bring S, those below it exp(m_j - m) (S + k_j), and log1p of T = that sum + (k - 1),
 * k the count of maximal entries of the slice. float32 slices in double (exp and
 * log1p from libm, 2^-52 against the 2^-36.5 of the terms); float64 in double-double,
 * exp(m_j - m) with m_j - m exact (TwoSum) by exp_dd (2^-66), the products exact but
 * for their last rounding (also on the subnormal grid: 2^-114 of a T of 2^-960 and
 * more). Per slice, res gets {L hi, L lo, count of +inf, the special answer (0: none,
 * ANSWER_NAN: a NaN, or -inf only; ANSWER_ONE_ENTRY: a slice of one entry;
 * ANSWER_NEGATIVE: a finite entry below the maximum, in a block below it or in the
 * maximum's own, with a sum or a second entry, c_b), m, 1 where the float64 sum is
 * to be redone (one maximal entry and T below 2^-960), the bound delta on L's error
 * (for write_rows' rounding test), and the slice's length n}. The
 * slice's length is the blocks' sum (Dask may not know it before); with no NaN, m is
 * -inf only where every entry is -inf (empty blocks bring -inf). */
static void
combine_row(const double *p, Py_ssize_t nb, int f64, double *res)
{
    double m = p[9];
    for (Py_ssize_t j = 1; j < nb; j++) {
        m = fmax(m, p[10 * j + 9]);
    }
    double k = 0.0, n_pinf = 0.0, n_nan = 0.0, n = 0.0;
    int below = 0; /* a finite entry below m: T > 0, though it may underflow */
    for (Py_ssize_t j = 0; j < nb; j++) {
        const double *b = p + 10 * j;
        k += b[9] == m ? b[2] : 0.0;
        n_pinf += b[3];
        n_nan += b[4];
        n += b[5];
        below |= (b[9] < m && b[9] > -INFINITY) || (b[9] == m && (b[0] > 0.0 || b[6] > -INFINITY));
    }
    dd L = {0.0, 0.0};
    double delta = 0.0;
    int redo = 0;
    if (!f64) {
        double T = 0.0;
        for (Py_ssize_t j = 0; j < nb; j++) {
            const double *b = p + 10 * j;
            if (b[9] == m) {
                T += b[0];
            }
            else if (b[9] < m && b[9] > -INFINITY) {
                T += exp(b[9] - m) * (b[0] + b[2]);
            }
        }
        /* each block's scaling: exp within 1 ULP, the sum S + k and the product
         * rounded once each; the blocks' sum and the k - 1 one rounding each; and
         * below exp(-708) up to 2^-1074 absolutely a block */
        double more = (4.0 + (double)nb) * 0x1p-52;
        lbound b = bound_f32_more(T + (k - 1.0), (Py_ssize_t)n, more);
        L.hi = b.hi;
        delta = b.delta + (double)nb * 0x1p-1070;
    }
    else {
        double hi = k - 1.0, lo = 0.0;
        for (Py_ssize_t j = 0; j < nb; j++) {
            const double *b = p + 10 * j;
            double ph = 0.0, pl = 0.0;
            if (b[9] == m) {
                ph = b[0];
                pl = b[1];
            }
            else if (b[9] < m && b[9] > -INFINITY) {
                dd g = two_sum(b[9], -m); /* m_j - m, exactly */
                if (g.hi > -1400.0) {     /* farther below: under 2^-2000, nothing */
                    dd S = two_sum(b[2], b[0]); /* S + k_j */
                    S.lo += b[1];
                    int64_t K;
                    dd E = exp_dd_scaled(g.hi, g.lo, &K);
                    ph = E.hi * S.hi;
                    pl = fma(E.hi, S.hi, -ph) + (E.hi * S.lo + E.lo * S.hi);
                    ph = ldexp(ph, (int)K);
                    pl = ldexp(pl, (int)K);
                }
            }
            dd t = two_sum(hi, ph);
            hi = t.hi;
            lo += t.lo + pl;
        }
        double th = hi + lo, tl = lo - (th - hi); /* Fast2Sum */
        if (th >= 0.0 && isfinite(th)) {
            /* bound_f64's bound for the blocks' sums, plus the scaling of those below
             * m: exp_dd within EXP_DD_REL, the products within 2^-104 and the blocks'
             * double-double sum within nb 2^-104 relatively, and each block's scaling
             * below the normal range 2^-1074 absolutely */
            lbound b = bound_f64((dd){th, tl}, (Py_ssize_t)n);
            L = (dd){b.hi, b.lo};
            delta = b.delta + ((EXP_DD_REL + ((double)nb + 2.0) * 0x1p-104) * L.hi +
                               (double)nb * 0x1p-1072) * 1.01 * bound_scale;
            redo = k == 1.0 && th < 0x1p-960;
        }
        else { /* a special slice: decided by the rules below */
            L.hi = NAN;
        }
    }
    res[0] = L.hi;
    res[1] = L.lo;
    res[2] = n_pinf;
    res[3] = n_nan > 0.0      ? ANSWER_NAN
             : n == 1.0       ? ANSWER_ONE_ENTRY
             : m == -INFINITY ? ANSWER_NAN
             : below          ? ANSWER_NEGATIVE
                              : 0;
    res[4] = m;
    res[5] = redo;
    res[6] = delta;
    res[7] = n;
}

PyDoc_STRVAR(combine_rows_doc,
"combine_rows(parts, nb, f64, res)\n\n"
"The Dask path's combination of the partial sums of the nb blocks of each slice:\n"
"parts (float64, C-contiguous, 10 values per slice and block), res\n"
"(float64, 8 per slice): L hi, L lo, count of +inf, special answer (1: NaN, 2: a\n"
"slice of one entry, 3: a finite entry below the maximum), maximum, redo, the bound\n"
"on L's error, the slice's length.");

static PyObject *
py_combine_rows(PyObject *self, PyObject *args)
{
    PyObject *po, *ro;
    Py_ssize_t nb;
    int f64;
    if (!PyArg_ParseTuple(args, "OnpO", &po, &nb, &f64, &ro)) {
        return NULL;
    }
    Py_buffer p, r;
    if (PyObject_GetBuffer(po, &p, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(ro, &r, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&p);
        return NULL;
    }
    Py_ssize_t rows = r.len / (SLICE_VALUES * 8); /* rows * 80 is no larger than a buffer */
    if (kind_of(&p) != 'd' || kind_of(&r) != 'd' || nb <= 0 || r.len != rows * SLICE_VALUES * 8 ||
        !holds(p.len, rows * 80, nb)) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&r);
        PyErr_SetString(PyExc_ValueError, "combine_rows needs float64 parts of 10 values per "
                                          "slice and block, and res of 8 per slice");
        return NULL;
    }
    const double *pv = p.buf;
    double *rv = r.buf;
    KERNEL_BEGIN
    for (Py_ssize_t i = 0; i < rows; i++) {
        combine_row(pv + i * nb * 10, nb, f64, rv + SLICE_VALUES * i);
    }
    KERNEL_END
    PyBuffer_Release(&p);
    PyBuffer_Release(&r);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(exact_rows_doc,
"exact_rows(x, n, ms, parts)\n\n"
"The Dask path's slow pass over a block, for the slices whose outputs write_rows left\n"
"open: for each length-n row r of x (as partial_rows takes it) with ms[r] not NaN,\n"
"parts[3 r ...] gets the slow path's sum of exp(x - ms[r]) over the entries below\n"
"ms[r] (the slice's maximum) in accurate double-double, hi and lo, and the count of\n"
"entries equal to it; NaN, NaN, 0 for the other rows. ms and parts float64.");

static PyObject *
py_exact_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *mo, *po;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OnOO", &xo, &n, &mo, &po)) {
        return NULL;
    }
    Py_buffer x, mb, p;
    int kx;
    Py_ssize_t nrows, stride;
    if (rows_view(xo, n, &x, &kx, &nrows, &stride) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(mo, &mb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (PyObject_GetBuffer(po, &p, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&mb);
        return NULL;
    }
    const char *problem = NULL;
    if (kind_of(&mb) != 'd' || !holds(mb.len, nrows, 8)) {
        problem = "ms must be float64, one value per row";
    }
    else if (kind_of(&p) != 'd' || !holds(p.len, nrows, 24)) {
        problem = "parts must be float64, 3 values per row";
    }
    if (problem == NULL) {
        const double *ms = mb.buf;
        double *pv = p.buf;
        Py_ssize_t step = stride * x.itemsize;
        KERNEL_BEGIN
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const void *row = (const char *)x.buf + r * step;
            double *v = pv + 3 * r;
            dd sum = {NAN, NAN};
            Py_ssize_t k = 0;
            if (!isnan(ms[r])) {
                if (kx == 'f') {
                    exact_sum_f32(row, n, (float)ms[r], &sum, &k);
                }
                else {
                    exact_sum_f64(row, n, ms[r], &sum, &k);
                }
                stat_add(&slow_stat[kx == 'f' ? F32 : F64][ST_EXACT_ROWS], 1);
            }
            v[0] = sum.hi;
            v[1] = sum.lo;
            v[2] = (double)k;
        }
        KERNEL_END
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&mb);
    PyBuffer_Release(&p);
    if (problem) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(exact_l_from_doc,
"exact_l_from(t_hi, t_lo, k, n) -> (l_hi, l_lo, delta)\n\n"
"L = log1p(T + k - 1) from the slow path's double-double sum T of a slice of n\n"
"entries, k of them at its maximum, and the bound on L's error (exact_L_from).");

static PyObject *
py_exact_l_from(PyObject *self, PyObject *args)
{
    double th, tl;
    Py_ssize_t k, n;
    if (!PyArg_ParseTuple(args, "ddnn", &th, &tl, &k, &n)) {
        return NULL;
    }
    unsigned int csr = fp_enter();
    lbound b = exact_L_from((dd){th, tl}, k, n);
    fp_leave(csr);
    return Py_BuildValue("(ddd)", b.hi, b.lo, b.delta);
}

PyDoc_STRVAR(note_slow_doc,
"note_slow(f64, rows, undecided)\n\n"
"Adds to stats() the Dask path's slow pass: rows written again from it, and the\n"
"outputs even it left open.");

static PyObject *
py_note_slow(PyObject *self, PyObject *args)
{
    int f64;
    Py_ssize_t rows, undecided;
    if (!PyArg_ParseTuple(args, "pnn", &f64, &rows, &undecided)) {
        return NULL;
    }
    if (rows < 0 || undecided < 0) {
        PyErr_SetString(PyExc_ValueError, "note_slow needs counts of 0 or more");
        return NULL;
    }
    stat_add(&slow_stat[f64 ? F64 : F32][ST_SLOW_ROWS], (uint64_t)rows);
    stat_add(&slow_stat[f64 ? F64 : F32][ST_UNDECIDED], (uint64_t)undecided);
    Py_RETURN_NONE;
}
