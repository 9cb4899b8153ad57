/* csrc/passes.h: the portable row passes, float32 then float64: the maxima (max_*), the
 * sums (partial_*), the writes (write_*, streamed or not), whole rows (rows_f32,
 * rows_f64, row_f64_tiny), and the function pointers that passes_avx2.h's use_avx2()
 * points at the AVX2 variants. Uses common.h and dd_math.h; calls no Python API.
 * Called by passes_avx2.h, threads.h, bindings.h and blocks.h. */

/* The largest entry; NaN where the row is not the kernels' to do: a NaN in it, a +inf,
 * or every entry -inf. -inf entries next to finite ones are the kernels' (their terms
 * are 0 and their outputs -inf: masked logits). One body for both formats. */
#define DEFINE_MAX(NAME, T)                                                                \
    HOT static T NAME(const T *x, Py_ssize_t n)                                            \
    {                                                                                      \
        T acc[LANES], z[LANES];                                                            \
        Py_ssize_t i = 0;                                                                  \
        for (int l = 0; l < LANES; l++) {                                                  \
            acc[l] = x[0];                                                                 \
            z[l] = 0;                                                                      \
        }                                                                                  \
        for (; i + LANES <= n; i += LANES) {                                               \
            for (int l = 0; l < LANES; l++) {                                              \
                acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];                            \
                z[l] += (T)(x[i + l] != x[i + l]); /* counts the NaNs */                  \
            }                                                                              \
        }                                                                                  \
        T m = acc[0], zs = z[0];                                                           \
        for (int l = 1; l < LANES; l++) {                                                  \
            m = acc[l] > m ? acc[l] : m;                                                   \
            zs += z[l];                                                                    \
        }                                                                                  \
        for (; i < n; i++) {                                                               \
            m = x[i] > m ? x[i] : m;                                                       \
            zs += (T)(x[i] != x[i]);                                                       \
        }                                                                                  \
        return (zs == 0 && m - m == 0) ? m : (T)NAN; /* m - m: NaN for +-inf */            \
    }

DEFINE_MAX(max_f32_portable, float)
DEFINE_MAX(max_f64_portable, double)

typedef float (*max_f32_fn)(const float *, Py_ssize_t);
typedef double (*max_f64_fn)(const double *, Py_ssize_t);
static max_f32_fn max_f32 = max_f32_portable; /* or the AVX2 versions, at import */
static max_f64_fn max_f64 = max_f64_portable;

/* exp(x - m), 0 for x == m and for x = -inf (d == d + d holds for those two and no
 * other d here). Below d = -700 the term is exp(-700) < 1e-304: such terms change T
 * by less than n * 1e-304, which no float32 (or narrower) result resolves, and
 * leaving them saves a compare per entry. They keep T above 0, so the maximum's
 * -log1p(T) rounds to -0 as it should; a slice whose other entries are all -inf has
 * T = 0 and its maximum gets +0, the exact answer. */
static inline double
term_quarter(float x, double md, int mid)
{
    double d = (double)x - md;
    double v = exp_quarter(d, mid);
    return d == d + d ? 0.0 : v;
}

static inline double
term_f32(float x, double md)
{
    return term_quarter(x, md, 0);
}

static inline double
finish_lanes8(const double acc[8])
{
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Sum of exp(x - m) over the entries below m in eight lanes (entry i in lane i % 8,
 * the last n % 8 in lane 0), and the count of entries equal to m. Each lane sums its
 * terms in blocks of SUM_BLOCK / 8 from zero and adds each block's sum to its total:
 * a term passes through at most SUM_BLOCK / 8 + n / SUM_BLOCK additions, not n / 8
 * (bound_f32's count; 2^-41.8 relative for a row of 4 million, 2^-34 without). */
static inline void
partial_f32_quarter(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max,
                    int mid)
{
    double acc[LANES] = {0.0};
    double md = (double)m;
    Py_ssize_t count = 0, i = 0;
    while (i + LANES <= n) {
        Py_ssize_t end = n - i >= SUM_BLOCK ? i + SUM_BLOCK : i + (n - i) / LANES * LANES;
        double part[LANES] = {0.0};
        for (; i < end; i += LANES) {
            for (int l = 0; l < LANES; l++) {
                part[l] += term_quarter(x[i + l], md, mid);
                count += x[i + l] == m;
            }
        }
        for (int l = 0; l < LANES; l++) {
            acc[l] += part[l];
        }
    }
    for (; i < n; i++) {
        acc[0] += term_quarter(x[i], md, mid);
        count += x[i] == m;
    }
    *sum = finish_lanes8(acc);
    *at_max = count;
}

HOT static void
partial_f32_scalar(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    partial_f32_quarter(x, n, m, sum, at_max, 0);
}

typedef void (*partial_f32_fn)(const float *, Py_ssize_t, float, double *, Py_ssize_t *);
static partial_f32_fn partial_f32 = partial_f32_scalar; /* or the AVX2 version, at import */

/* ---- float16 and bfloat16 rows ----
 *
 * Widened to float32 (exact), and back rounded to nearest even (f32_round_narrow):
 * exact for softmax's outputs, rounded to the format's grid already (and NaN for the
 * rows left to the caller); one correct rounding for log_softmax's float32 outputs
 * rounded to odd, with 13 or 16 bits to spare. */
static inline float
half_to_float(uint16_t h)
{
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float v = e == 0    ? (float)m * 0x1p-24f
              : e == 31 ? (m ? NAN : INFINITY)
                        : bits_to_float(((e + 112u) << 23) | (m << 13));
    return (h & 0x8000u) ? -v : v;
}

/* f rounded to nearest even in float16 (overflow to inf from 65520 up; the subnormal
 * grid 2^-24 below 2^-14), for compilers without _Float16 */
static inline uint16_t
half_rne(float f)
{
    uint32_t b = float_to_bits(f), a = b & 0x7fffffffu;
    uint16_t s = (uint16_t)((b >> 16) & 0x8000u);
    if (a >= 0x7f800000u) {
        return (uint16_t)(s | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
    }
    if (a >= 0x477ff000u) { /* 65520 and above */
        return (uint16_t)(s | 0x7c00u);
    }
    if (a >= 0x38800000u) { /* normal: round at bit 13, the carry into the exponent */
        uint32_t m = a + 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(s | ((m - 0x38000000u) >> 13));
    }
    /* k 2^-24, k to nearest even (2^24 f is exact; 1024 is the smallest normal's code) */
    return (uint16_t)(s | (uint16_t)lrintf(bits_to_float(a) * 0x1p24f));
}

enum { SM_F32 = 0, SM_F16 = 1, SM_BF16 = 2 };

/* The row conversions, one loop a format, each branch-free so that it vectorizes.
 * float16 by the compiler's _Float16 where it has one (F16C's conversions in the
 * x86-64-v3 and v4 clones, which round to nearest even as half_rne does), else by the
 * bit operations above. */
#if defined(__FLT16_MAX__) && !defined(IMPL_NO_FLOAT16) /* (-DIMPL_NO_FLOAT16: the bit operations, as .ci/sanitize.sh builds them) */
#define HAVE_FLOAT16 1
#endif

HOT static void
narrow_to_f32(const uint16_t *h, float *f, Py_ssize_t n, int fmt)
{
    if (fmt == SM_BF16) {
        for (Py_ssize_t i = 0; i < n; i++) {
            f[i] = bits_to_float((uint32_t)h[i] << 16);
        }
        return;
    }
#ifdef HAVE_FLOAT16
    const _Float16 *hf = (const _Float16 *)(const void *)h;
    for (Py_ssize_t i = 0; i < n; i++) {
        f[i] = (float)hf[i];
    }
#else
    for (Py_ssize_t i = 0; i < n; i++) {
        f[i] = half_to_float(h[i]);
    }
#endif
}

/* to nearest even (f32_to_narrow's exact values round to themselves) */
HOT static void
f32_round_narrow(const float *f, uint16_t *h, Py_ssize_t n, int fmt)
{
    if (fmt == SM_BF16) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t b = float_to_bits(f[i]);
            uint16_t nan = (uint16_t)((b >> 16) | 0x40u);
            uint16_t r = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
            h[i] = (b & 0x7fffffffu) > 0x7f800000u ? nan : r;
        }
        return;
    }
#ifdef HAVE_FLOAT16
    _Float16 *hf = (_Float16 *)(void *)h;
    for (Py_ssize_t i = 0; i < n; i++) {
        hf[i] = (_Float16)f[i];
    }
#else
    for (Py_ssize_t i = 0; i < n; i++) {
        h[i] = half_rne(f[i]);
    }
#endif
}

/* ---- softmax's float32 passes (softmax.h's softmax_f32_rows) ---- */

/* partial_f32_scalar's sum with exp_mid's terms (0 for d = 0 and -inf, as term_f32),
 * for the writer's L: within bound_f32_terms(T, n, EXP_MID_REL, 0), about 2^-45 for
 * rows of a thousand (the sum's roundings; the terms' 2^-48 after them), against
 * 2^-36.5 from partial_f32's exp_short, which left an output open in about a fifth of
 * the rows of 1,024 standard normal logits. The same lanes and order as
 * partial_f32_scalar; the compiler vectorizes it (the same bits on every path). */
HOT static void
partial_f32_mid_portable(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    partial_f32_quarter(x, n, m, sum, at_max, 1);
}

/* v >= 0 (finite, below 2^1000) rounded to nearest even at p significant bits, on the
 * grid of 2^(emin - p + 1) below 2^emin (the format's subnormals): adding and then
 * subtracting c = 1.5 2^(q + 52), 2^q being the last kept bit's weight, rounds once
 * (to nearest: fp_enter), ties to even (c is an even multiple of 2^q), and the
 * subtraction is exact. Branch-free, so that the loops over it vectorize. */
static inline double
round_p(double v, int p, int emin)
{
    int64_t e = (int64_t)(double_to_bits(v) >> 52) - 1023;
    int64_t q = (e > emin ? e : emin) - (p - 1);
    double c = bits_to_double((uint64_t)(q + 52 + 1023) << 52 | (UINT64_C(1) << 51));
    return (v + c) - c;
}

/* The first tier on one row: the outputs and their flags; returns how many are open.
 * Rounded to float32 (p = 24: the conversion), or to p bits with minimum normal
 * exponent emin (float16's 11 and -14, bfloat16's 8 and -126: round_p), held exactly
 * in float32 */
HOT static Py_ssize_t
softmax_write_f32_portable(const float *x, float *o, unsigned char *open, Py_ssize_t n,
                           float m, double Lh, double delta, int p, int emin)
{
    double md = (double)m;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = (double)x[i] - md;
        double z = d - Lh;
        double v = exp_mid(z);
        double e_z = delta + (fabs(d) + fabs(z)) * 0x1p-52;
        double err = ((e_z * (1.0 + 0x1p-30) + EXP_MID_REL) * (1.0 + 0x1p-50) + 0x1p-52) * v;
        int zero = z < -105.0;
        float r;
        int u;
        if (p == 24) {
            r = (float)v;
            u = (float)(v - err) != (float)(v + err);
        }
        else {
            double a = round_p(v - err, p, emin);
            r = (float)a;
            u = a != round_p(v + err, p, emin);
        }
        u = (u | !(e_z < 0x1p-30)) & !zero;
        o[i] = zero ? 0.0f : r;
        open[i] = (unsigned char)u;
        k += u;
    }
    return k;
}

typedef Py_ssize_t (*softmax_write_fn)(const float *, float *, unsigned char *, Py_ssize_t, float,
                                       double, double, int, int);
/* the AVX-512 versions where use_path() picks them */
static partial_f32_fn partial_f32_mid = partial_f32_mid_portable;
static softmax_write_fn softmax_write_f32 = softmax_write_f32_portable;

/* How rows of float32 input are written: float32 rounded to nearest, float64, or
 * float32 rounded to odd (for a caller that rounds again to a narrower format: with
 * two or more bits to spare, round-to-odd then round-to-nearest rounds once) */
enum { OUT_F32 = 0, OUT_F64 = 1, OUT_F32_ODD = 2 };

/* Non-temporal stores are weakly ordered: fenced before the thread reports back */
static inline void
stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/* y = (x - m) - L for each entry, rounded to the output once and correctly where the
 * bound L.delta decides it (round_f32_checked); returns how many it left undecided
 * (each written as the nearest to the fast path's value): the caller then recomputes
 * L on the slow path and writes the row again. OUT_F64 writes the float32 rounded to
 * odd, widened (exact), for a cast to float16 that then rounds once. */
/* Rounding to nearest into float32, entry by entry: filter_f32, and out_f32_checked for
 * what it leaves (the AVX2 loop's tail too) */
static Py_ssize_t
write_f32_near_portable(const float *x, float *o, Py_ssize_t n, float m, lbound L)
{
    f32_filter c = filter_consts(m, L);
    double md = (double)m;
    Py_ssize_t unsure = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float r;
        if (!filter_f32(x[i], c, &r)) {
            int u = 0;
            r = out_f32_checked(x[i], md, L.hi, L.lo, L.delta, 0, &u);
            unsure += u;
        }
        o[i] = r;
    }
    return unsure;
}

typedef Py_ssize_t (*write_f32_fn)(const float *, void *, int, Py_ssize_t, float, lbound);
static write_f32_fn write_f32_fast = NULL; /* the AVX2 version, set at import */

HOT static Py_ssize_t
write_f32(const float *x, void *out, int out_kind, Py_ssize_t n, float m, lbound L)
{
    if (write_f32_fast != NULL) {
        return write_f32_fast(x, out, out_kind, n, m, L);
    }
    double md = (double)m;
    Py_ssize_t unsure = 0;
    if (out_kind == OUT_F64) {
        double *o = (double *)out;
        for (Py_ssize_t i = 0; i < n; i++) {
            int u = 0;
            o[i] = (double)out_f32_checked(x[i], md, L.hi, L.lo, L.delta, 1, &u);
            unsure += u;
        }
    }
    else if (out_kind == OUT_F32_ODD) {
        float *o = (float *)out;
        for (Py_ssize_t i = 0; i < n; i++) {
            int u = 0;
            o[i] = out_f32_checked(x[i], md, L.hi, L.lo, L.delta, 1, &u);
            unsure += u;
        }
    }
    else {
        unsure = write_f32_near_portable(x, (float *)out, n, m, L);
    }
    return unsure;
}

/* A float32 row written again from the slow path's L, after the fast path's bound
 * left `unsure` of its outputs undecided; the count of those the slow path's bound
 * leaves undecided too joins the statistics */
static lbound medium_L_f32(const float *x, Py_ssize_t n, float m);

static void
slow_row_f32(const float *x, void *out, int out_kind, Py_ssize_t n, float m, Py_ssize_t unsure)
{
    stream_fence(); /* the row's first writes may have been non-temporal */
    /* first the float64 kernel's sum (2^-62 a term, a few ns an entry), which leaves
     * a float32 output undecided about once in 2^36; then, for what it leaves, the
     * accurate one */
    lbound L = medium_L_f32(x, n, m);
    Py_ssize_t left = write_f32(x, out, out_kind, n, m, L);
    if (left) {
        L = exact_L_f32(x, n, m);
        left = write_f32(x, out, out_kind, n, m, L);
        stat_add(&slow_stat[F32][ST_EXACT_ROWS], 1);
    }
    stat_add(&slow_stat[F32][ST_SLOW_ROWS], 1);
    stat_add(&slow_stat[F32][ST_SLOW_ELEMS], (uint64_t)unsure);
    stat_add(&slow_stat[F32][ST_UNDECIDED], (uint64_t)left);
}

/* Large outputs are written with non-temporal stores (no read of the destination's
 * cache lines before writing them), where the CPU has AVX2; below this size the output
 * is better left in the cache for whoever reads it next. */
#define STREAM_MIN_BYTES ((size_t)4 << 20) /* per call: each thread's share */
typedef Py_ssize_t (*stream_f64_fn)(const double *, double *, Py_ssize_t, double, lbound);
static stream_f64_fn stream_f64 = NULL;

/* Whether a call writing `bytes` of output streams them: float64, 4 MB and more, where
 * the AVX2 path is in use (float32 rows take the checked writes, which do not stream).
 * A caller that streams calls stream_fence() before it returns. */
static inline int
streams(int f64, size_t bytes)
{
    return f64 && stream_f64 != NULL && bytes >= STREAM_MIN_BYTES;
}

/* Bytes per output entry */
static inline size_t
out_size(int f64, int out_kind)
{
    return f64 || out_kind == OUT_F64 ? sizeof(double) : sizeof(float);
}

/* Rows with a NaN or a +inf, and rows of -inf only, are left untouched and counted
 * (and, where bad is not NULL, marked there with 1; the other rows with 0). stream:
 * streams() of the whole call, which fences once at its end. */
static Py_ssize_t
rows_f32(const float *x, void *out, int out_kind, Py_ssize_t nrows, Py_ssize_t n, int32_t *bad)
{
    size_t osize = out_size(0, out_kind);
    Py_ssize_t skipped = 0;
    for (Py_ssize_t r = 0; r < nrows; r++) {
        const float *xr = x + r * n;
        void *orow = (char *)out + (size_t)(r * n) * osize;
        float m = max_f32(xr, n);
        if (bad) {
            bad[r] = isnan(m);
        }
        if (isnan(m)) {
            skipped++;
            continue;
        }
        double T;
        Py_ssize_t k;
        partial_f32(xr, n, m, &T, &k);
        T += (double)(k - 1);
        Py_ssize_t unsure = write_f32(xr, orow, out_kind, n, m, bound_f32(T, n));
        if (unsure) {
            slow_row_f32(xr, orow, out_kind, n, m, unsure);
        }
    }
    stat_add(&slow_stat[F32][ST_ROWS], (uint64_t)nrows);
    return skipped;
}

/* ---- float64 ---- */

/* Largest x - m (high part) over the entries below m; -inf if none. A finite entry
 * whose x - m overflows (1e308 - -1e308) counts as -DBL_MAX: its term is positive,
 * however small, and makes the maximum's output -0. */
static double
second_f64(const double *x, Py_ssize_t n, double m)
{
    double best = -INFINITY;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (x[i] != m) {
            double d = x[i] - m;
            d = d < -DBL_MAX && x[i] > -INFINITY ? -DBL_MAX : d;
            best = d > best ? d : best;
        }
    }
    return best;
}

/* One term of the float64 sum: exp((x - m) - c) as double-double, 0 for the maximal
 * entries (x == m, counted by the caller) and below 2^-1075. The vector version below
 * does the same operations in the same order, lane by lane. */
static inline void
term_f64(double xi, double m, double c, double *hi, double *lo)
{
    double dh = xi - m;
    double bb = dh - xi;
    double dl = (xi - (dh - bb)) + (-m - bb);
    double sh = dh - c;
    bb = sh - dh;
    double sl = ((dh - (sh - bb)) + (-c - bb)) + dl;
    if (dh == 0.0 || !(sh >= -745.5)) {
        *hi = 0.0;
        *lo = 0.0;
        return;
    }
    exp_term(sh, sl, hi, lo);
}

/* out = (x - m) - (L_hi + L_lo), rounded once, correctly where L.delta decides it
 * (out_f64_checked); returns how many outputs it left undecided. Overflow gives
 * -inf. */
typedef Py_ssize_t (*write_f64_fn)(const double *, double *, Py_ssize_t, double, lbound);
static write_f64_fn write_f64_fast = NULL; /* the AVX2 version, set at import */

HOT static Py_ssize_t
write_f64_portable(const double *x, double *out, Py_ssize_t n, double m, lbound L)
{
    Py_ssize_t unsure = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int u = 0;
        out[i] = out_f64_checked(x[i], m, L.hi, L.lo, L.delta, &u);
        unsure += u;
    }
    return unsure;
}

static Py_ssize_t
write_f64(const double *x, double *out, Py_ssize_t n, double m, lbound L)
{
    return write_f64_fast != NULL ? write_f64_fast(x, out, n, m, L)
                                  : write_f64_portable(x, out, n, m, L);
}

/* A float64 row written again from the slow path's L (slow_row_f32's) */
static void
slow_row_f64(const double *x, double *out, Py_ssize_t n, double m, Py_ssize_t unsure)
{
    stream_fence(); /* the row's first writes may have been non-temporal */
    lbound L = exact_L_f64(x, n, m);
    Py_ssize_t left = write_f64(x, out, n, m, L);
    stat_add(&slow_stat[F64][ST_SLOW_ROWS], 1);
    stat_add(&slow_stat[F64][ST_SLOW_ELEMS], (uint64_t)unsure);
    stat_add(&slow_stat[F64][ST_UNDECIDED], (uint64_t)left);
}

/* A row's zeros made -0, for rows with an entry below the maximum: T > 0 there, so
 * the maximum's output (the only one that can be 0) is negative, however small */
static void
negative_zeros(void *out, size_t osize, Py_ssize_t n)
{
    if (osize == sizeof(double)) {
        double *o = out;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = o[i] == 0.0 ? -0.0 : o[i];
        }
    }
    else {
        float *o = out;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = o[i] == 0.0f ? -0.0f : o[i];
        }
    }
}

/* The float64 sums run in eight lanes: two AVX2 vectors, so that two independent
 * accumulations overlap */
#define DD_LANES 8

static void
finish_sum(const double ah[DD_LANES], const double al[DD_LANES], dd *sum)
{
    dd s = {0.0, 0.0};
    for (int l = 0; l < DD_LANES; l++) {
        acc_dd(&s.hi, &s.lo, ah[l], al[l]);
    }
    *sum = two_sum(s.hi, s.lo);
}

/* Sum over the entries below m of exp((x - m) - c), as double-double, in eight
 * lanes (entry i in lane i % 8, the last n % 8 entries in lane 0); the count of
 * entries equal to m. c = 0 or a (negative) shift. */
HOT static void
partial_f64_scalar(const double *x, Py_ssize_t n, double m, double c, dd *sum,
                   Py_ssize_t *at_max)
{
    double ah[DD_LANES] = {0.0}, al[DD_LANES] = {0.0};
    Py_ssize_t count = 0, i = 0;
    for (; i + DD_LANES <= n; i += DD_LANES) {
        for (int l = 0; l < DD_LANES; l++) {
            double h, lo;
            term_f64(x[i + l], m, c, &h, &lo);
            acc_dd(&ah[l], &al[l], h, lo);
            count += x[i + l] == m;
        }
    }
    for (; i < n; i++) {
        double h, lo;
        term_f64(x[i], m, c, &h, &lo);
        acc_dd(&ah[0], &al[0], h, lo);
        count += x[i] == m;
    }
    finish_sum(ah, al, sum);
    *at_max = count;
}

typedef void (*partial_f64_fn)(const double *, Py_ssize_t, double, double, dd *, Py_ssize_t *);
static partial_f64_fn partial_f64 = partial_f64_scalar;

/* The middle path's L for a float32 row: its terms by the float64 kernel's exp
 * (exp_term, within EXP_DD_REL), over the row widened to double in chunks, each
 * chunk's sum (partial_f64's lanes) added in accurate double-double; log1p_dd2;
 * bound_f64's bound, which holds for lanes of n/8 terms and so for these shorter */
static void
medium_sum_f32(const float *x, Py_ssize_t n, float m, dd *T_out, Py_ssize_t *k_out)
{
    double buf[512];
    double md = (double)m;
    dd T = {0.0, 0.0};
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i += 512) {
        Py_ssize_t len = n - i < 512 ? n - i : 512;
        for (Py_ssize_t j = 0; j < len; j++) {
            buf[j] = (double)x[i + j];
        }
        dd s;
        Py_ssize_t kk;
        partial_f64(buf, len, md, 0.0, &s, &kk);
        T = dd_add(T, s);
        k += kk;
    }
    *T_out = T;
    *k_out = k;
}

static lbound
medium_L_f32(const float *x, Py_ssize_t n, float m)
{
    dd T;
    Py_ssize_t k;
    medium_sum_f32(x, n, m, &T, &k);
    return bound_f64_sum(T, k, n);
}

/* One row's output, streamed or not (streams()); the count write_f64 returns */
static Py_ssize_t
write_row_f64(const double *x, double *out, Py_ssize_t n, double m, lbound L, int stream)
{
    return stream ? stream_f64(x, out, n, m, L) : write_f64(x, out, n, m, L);
}

/* One float64 row whose T is below 2^-960: T = exp(c) * sum exp(d - c), c = the
 * second largest d. Where T > 0 (c finite) but log1p(T) rounds to 0, the maximum's
 * -log1p(T) is -0; write_f64 gives +0 there, the answer where T = 0 (c = -inf: the
 * other entries -inf). */
static void
row_f64_tiny(const double *x, double *out, Py_ssize_t n, double m)
{
    double c = second_f64(x, n, m);
    dd S = {0.0, 0.0};
    Py_ssize_t k;
    if (c >= -2000.0) {
        partial_f64(x, n, m, c, &S, &k);
    }
    /* tiny_log1p is correctly rounded; every output rounds once (no test) */
    write_f64(x, out, n, m, (lbound){tiny_log1p(c, S), 0.0, 0.0});
    if (c > -INFINITY) {
        negative_zeros(out, sizeof(double), n);
    }
}

/* rows_f32's contract */
static Py_ssize_t
rows_f64(const double *x, double *out, Py_ssize_t nrows, Py_ssize_t n, int32_t *bad, int stream)
{
    Py_ssize_t skipped = 0;
    for (Py_ssize_t r = 0; r < nrows; r++) {
        const double *xr = x + r * n;
        double *orow = out + r * n;
        double m = max_f64(xr, n);
        if (bad) {
            bad[r] = isnan(m);
        }
        if (isnan(m)) {
            skipped++;
            continue;
        }
        dd T;
        Py_ssize_t k;
        partial_f64(xr, n, m, 0.0, &T, &k);
        if (k == 1 && T.hi < 0x1p-960) {
            row_f64_tiny(xr, orow, n, m);
            continue;
        }
        Py_ssize_t unsure = write_row_f64(xr, orow, n, m, bound_f64_sum(T, k, n), stream);
        if (unsure) {
            slow_row_f64(xr, orow, n, m, unsure);
        }
    }
    stat_add(&slow_stat[F64][ST_ROWS], (uint64_t)nrows);
    return skipped;
}
