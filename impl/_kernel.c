/* Row kernels for impl's NumPy, PyTorch CPU, JAX CPU and Dask paths: log_softmax over
 * contiguous rows of float32 or float64 values (finite, or -inf next to finite ones),
 * two or three passes over each row, no temporaries. Rows with a NaN or a +inf, and
 * rows of -inf only, are left to the caller's special-value rules.
 *
 * float32 rows (float16/bfloat16 arrive as float32, exactly): d = x - max is exact
 * in double; exp(d) = 2^(k/4) times a degree-6 polynomial (relative error < 2^-37),
 * summed in eight double lanes; out = d - log1p(T) is rounded once to the output
 * (float32, or double for a later cast to a narrower format).
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
 * for x86-64-v3 (AVX2 and FMA) and picked at load time.
 */
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
#define CHUNK 256

/* ln2/64 = C1 + C2 + C3 (C1 has 32 significant bits: k * C1 is exact for |k| < 2^21),
 * 64/ln2 rounded, and 2^(j/64) = TAB_HI[j] + TAB_LO[j]; checked against mpmath by
 * impl/tests/test_kernel.py. */
static const double C1 = 0x1.62e42ff000000p-7;
static const double C2 = -0x1.718432a1b0e26p-41;
static const double C3 = -0x1.9ff0342542fc3p-96;
static const double INV_C = 0x1.71547652b82fep+6;
static const double SHIFTER = 0x1.8p52; /* adding it rounds to an integer */

static const double TAB_HI[64] = {
    0x1.0000000000000p+0,
    0x1.02c9a3e778061p+0,
    0x1.059b0d3158574p+0,
    0x1.0874518759bc8p+0,
    0x1.0b5586cf9890fp+0,
    0x1.0e3ec32d3d1a2p+0,
    0x1.11301d0125b51p+0,
    0x1.1429aaea92de0p+0,
    0x1.172b83c7d517bp+0,
    0x1.1a35beb6fcb75p+0,
    0x1.1d4873168b9aap+0,
    0x1.2063b88628cd6p+0,
    0x1.2387a6e756238p+0,
    0x1.26b4565e27cddp+0,
    0x1.29e9df51fdee1p+0,
    0x1.2d285a6e4030bp+0,
    0x1.306fe0a31b715p+0,
    0x1.33c08b26416ffp+0,
    0x1.371a7373aa9cbp+0,
    0x1.3a7db34e59ff7p+0,
    0x1.3dea64c123422p+0,
    0x1.4160a21f72e2ap+0,
    0x1.44e086061892dp+0,
    0x1.486a2b5c13cd0p+0,
    0x1.4bfdad5362a27p+0,
    0x1.4f9b2769d2ca7p+0,
    0x1.5342b569d4f82p+0,
    0x1.56f4736b527dap+0,
    0x1.5ab07dd485429p+0,
    0x1.5e76f15ad2148p+0,
    0x1.6247eb03a5585p+0,
    0x1.6623882552225p+0,
    0x1.6a09e667f3bcdp+0,
    0x1.6dfb23c651a2fp+0,
    0x1.71f75e8ec5f74p+0,
    0x1.75feb564267c9p+0,
    0x1.7a11473eb0187p+0,
    0x1.7e2f336cf4e62p+0,
    0x1.82589994cce13p+0,
    0x1.868d99b4492edp+0,
    0x1.8ace5422aa0dbp+0,
    0x1.8f1ae99157736p+0,
    0x1.93737b0cdc5e5p+0,
    0x1.97d829fde4e50p+0,
    0x1.9c49182a3f090p+0,
    0x1.a0c667b5de565p+0,
    0x1.a5503b23e255dp+0,
    0x1.a9e6b5579fdbfp+0,
    0x1.ae89f995ad3adp+0,
    0x1.b33a2b84f15fbp+0,
    0x1.b7f76f2fb5e47p+0,
    0x1.bcc1e904bc1d2p+0,
    0x1.c199bdd85529cp+0,
    0x1.c67f12e57d14bp+0,
    0x1.cb720dcef9069p+0,
    0x1.d072d4a07897cp+0,
    0x1.d5818dcfba487p+0,
    0x1.da9e603db3285p+0,
    0x1.dfc97337b9b5fp+0,
    0x1.e502ee78b3ff6p+0,
    0x1.ea4afa2a490dap+0,
    0x1.efa1bee615a27p+0,
    0x1.f50765b6e4540p+0,
    0x1.fa7c1819e90d8p+0,
};
static const double TAB_LO[64] = {
    0x0.0p+0,
    -0x1.19083535b085dp-56,
    0x1.d73e2a475b465p-55,
    0x1.186be4bb284ffp-57,
    0x1.8a62e4adc610bp-54,
    0x1.03a1727c57b53p-59,
    -0x1.6c51039449b3ap-54,
    -0x1.32fbf9af1369ep-54,
    -0x1.19041b9d78a76p-55,
    0x1.e5b4c7b4968e4p-55,
    0x1.e016e00a2643cp-54,
    0x1.dc775814a8495p-55,
    0x1.9b07eb6c70573p-54,
    0x1.2bd339940e9d9p-55,
    0x1.612e8afad1255p-55,
    0x1.0024754db41d5p-54,
    0x1.6f46ad23182e4p-55,
    0x1.32721843659a6p-54,
    -0x1.63aeabf42eae2p-54,
    -0x1.5e436d661f5e3p-56,
    0x1.ada0911f09ebcp-55,
    -0x1.ef3691c309278p-58,
    0x1.89b7a04ef80d0p-59,
    0x1.3c1a3b69062f0p-56,
    0x1.d4397afec42e2p-56,
    -0x1.4b309d25957e3p-54,
    -0x1.07abe1db13cadp-55,
    0x1.9bb2c011d93adp-54,
    0x1.6324c054647adp-54,
    0x1.ba6f93080e65ep-54,
    -0x1.383c17e40b497p-54,
    -0x1.bb60987591c34p-54,
    -0x1.bdd3413b26456p-54,
    -0x1.bbe3a683c88abp-57,
    -0x1.16e4786887a99p-55,
    -0x1.0245957316dd3p-54,
    -0x1.41577ee04992fp-55,
    0x1.05d02ba15797ep-56,
    -0x1.d4c1dd41532d8p-54,
    -0x1.fc6f89bd4f6bap-54,
    0x1.6e9f156864b27p-54,
    0x1.5cc13a2e3976cp-55,
    -0x1.75fc781b57ebcp-57,
    -0x1.d185b7c1b85d1p-54,
    0x1.c7c46b071f2bep-56,
    -0x1.359495d1cd533p-54,
    -0x1.d2f6edb8d41e1p-54,
    0x1.0fac90ef7fd31p-54,
    0x1.7a1cd345dcc81p-54,
    -0x1.2805e3084d708p-57,
    -0x1.5584f7e54ac3bp-56,
    0x1.23dd07a2d9e84p-55,
    0x1.11065895048ddp-55,
    0x1.2884dff483cadp-54,
    0x1.503cbd1e949dbp-56,
    -0x1.cbc3743797a9cp-54,
    0x1.2ed02d75b3707p-55,
    0x1.c2300696db532p-54,
    -0x1.1a5cd4f184b5cp-54,
    0x1.39e8980a9cc8fp-55,
    -0x1.e9c23179c2893p-54,
    0x1.dc7f486a4b6b0p-54,
    0x1.9d3e12dd8a18bp-54,
    0x1.74853f3a5931ep-55,
};

/* float32 kernel: exp(d) = 2^(k/4) * exp(r), |r| <= ln2/8, for d in [-700, 0];
 * relative error < 2^-37 (degree 6, the Taylor remainder), which keeps a float32
 * result within 0.5 + 2^-13 ULP before its one rounding. ln2/4 = L4_HI + L4_LO, L4_HI
 * with 40 bits (k * L4_HI exact for |k| < 2^13). Four table entries fit one AVX2
 * register. */
static const double L4_HI = 0x1.62e42fefa4000p-3;
static const double L4_LO = -0x1.8432a1b0e2634p-45;
static const double INV_L4 = 0x1.71547652b82fep+2;
static const double EXP2_4[4] = {
    0x1.0000000000000p+0, 0x1.306fe0a31b715p+0, 0x1.6a09e667f3bcdp+0, 0x1.ae89f995ad3adp+0,
};

static inline double
bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t
double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* The integer k held by ks = k + SHIFTER (|k| < 2^50), without a float-to-int
 * conversion (which AVX2 lacks for 64-bit lanes, and the loops must vectorize) */
static inline int64_t
shifted_int(double ks)
{
    return (int64_t)(double_to_bits(ks) - double_to_bits(SHIFTER));
}

/* 2^k for -1022 <= k <= 1023 */
static inline double
pow2i(int64_t k)
{
    return bits_to_double((uint64_t)(k + 1023) << 52);
}

static inline double
exp_short(double d)
{
    double dc = d < -700.0 ? -700.0 : d;
    double ks = fma(dc, INV_L4, SHIFTER);
    double kf = ks - SHIFTER;
    int64_t k = shifted_int(ks);
    double r = fma(-kf, L4_LO, fma(-kf, L4_HI, dc));
    double p = 1.0 / 720.0;
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    return (p * EXP2_4[k & 3]) * pow2i(k >> 2);
}

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
term_f32(float x, double md)
{
    double d = (double)x - md;
    double v = exp_short(d);
    return d == d + d ? 0.0 : v;
}

static inline double
finish_lanes8(const double acc[8])
{
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Sum of exp(x - m) over the entries below m in eight lanes (entry i in lane i % 8,
 * the last n % 8 in lane 0), and the count of entries equal to m */
HOT static void
partial_f32_scalar(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    double acc[LANES] = {0.0};
    double md = (double)m;
    Py_ssize_t count = 0, i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++) {
            acc[l] += term_f32(x[i + l], md);
            count += x[i + l] == m;
        }
    }
    for (; i < n; i++) {
        acc[0] += term_f32(x[i], md);
        count += x[i] == m;
    }
    *sum = finish_lanes8(acc);
    *at_max = count;
}

typedef void (*partial_f32_fn)(const float *, Py_ssize_t, float, double *, Py_ssize_t *);
static partial_f32_fn partial_f32 = partial_f32_scalar; /* or the AVX2 version, at import */

/* How rows of float32 input are written: float32 rounded to nearest, float64, or
 * float32 rounded to odd (for a caller that rounds again to a narrower format: with
 * two or more bits to spare, round-to-odd then round-to-nearest rounds once) */
enum { OUT_F32 = 0, OUT_F64 = 1, OUT_F32_ODD = 2 };

/* v rounded to float32, to odd: the neighbour with an odd last bit where v is not a
 * float32 (infinities and NaN as the plain conversion gives them). From the nearest
 * f: one step toward zero where f lies beyond v, then the last bit set where f is
 * not v; without branches, so that the loops over it vectorize. */
static inline float
round_odd_f32(double v)
{
    float f = (float)v;
    double b = (double)f;
    uint32_t u, finite = (uint32_t)(fabsf(f) <= FLT_MAX);
    memcpy(&u, &f, sizeof u);
    u -= finite & (uint32_t)(fabs(b) > fabs(v));
    u |= finite & (uint32_t)(b != v);
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The OUT_F32_ODD writes on the AVX2 path (set at import where the CPU has it) */
typedef void (*write_odd_fn)(const float *, float *, Py_ssize_t, float, double);
static write_odd_fn write_odd_f32 = NULL;

HOT static void
write_f32(const float *x, void *out, int out_kind, Py_ssize_t n, float m, double L)
{
    double md = (double)m;
    if (out_kind == OUT_F64) {
        double *o = (double *)out;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = ((double)x[i] - md) - L;
        }
    }
    else if (out_kind == OUT_F32_ODD && write_odd_f32 != NULL) {
        write_odd_f32(x, (float *)out, n, m, L);
    }
    else if (out_kind == OUT_F32_ODD) {
        float *o = (float *)out;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = round_odd_f32(((double)x[i] - md) - L);
        }
    }
    else {
        float *o = (float *)out;
        for (Py_ssize_t i = 0; i < n; i++) {
            o[i] = (float)(((double)x[i] - md) - L);
        }
    }
}

/* Large outputs are written with non-temporal stores (no read of the destination's
 * cache lines before writing them), where the CPU has AVX2; below this size the output
 * is better left in the cache for whoever reads it next. */
#define STREAM_MIN_BYTES ((size_t)4 << 20) /* per call: each thread's share */
typedef void (*stream_f32_fn)(const float *, float *, Py_ssize_t, float, double);
typedef void (*stream_f64_fn)(const double *, double *, Py_ssize_t, double, double, double);
static stream_f32_fn stream_f32 = NULL; /* set at import where the CPU has AVX2 */
static stream_f64_fn stream_f64 = NULL;

/* Non-temporal stores are weakly ordered: fenced before the thread reports back */
static inline void
stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/* Whether a call writing `bytes` of output streams them: float64, or float32 rounded
 * to nearest, 4 MB and more, where the AVX2 path is in use. A caller that streams
 * calls stream_fence() before it returns. */
static inline int
streams(int f64, int out_kind, size_t bytes)
{
    return (f64 ? stream_f64 != NULL : stream_f32 != NULL && out_kind == OUT_F32) &&
           bytes >= STREAM_MIN_BYTES;
}

/* One row's output, streamed or not (streams()) */
static void
write_row_f32(const float *x, void *out, int out_kind, Py_ssize_t n, float m, double L, int stream)
{
    if (stream) {
        stream_f32(x, (float *)out, n, m, L);
    }
    else {
        write_f32(x, out, out_kind, n, m, L);
    }
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
rows_f32(const float *x, void *out, int out_kind, Py_ssize_t nrows, Py_ssize_t n, int32_t *bad,
         int stream)
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
        write_row_f32(xr, orow, out_kind, n, m, log1p(T), stream);
    }
    return skipped;
}

/* ---- float64 ---- */

typedef struct {
    double hi, lo;
} dd;

static inline dd
two_sum(double a, double b)
{
    double s = a + b;
    double bb = s - a;
    double err = (a - (s - bb)) + (b - bb);
    return (dd){s, err};
}

/* exp(dh + dl) = 2^K * (hi + lo), hi + lo in [0.7, 1.5], relative error ~2^-62,
 * for dh in [-2000, 709] and |dl| <= ulp(dh) */
static inline void
exp_dd_parts(double dh, double dl, double *hi_out, double *lo_out, int64_t *K)
{
    double ks = fma(dh, INV_C, SHIFTER);
    double kf = ks - SHIFTER;
    int64_t k = shifted_int(ks);
    int64_t j = k & 63;
    *K = k >> 6; /* floor(k / 64): arithmetic shift */
    double r = fma(-kf, C1, dh); /* exact */
    /* r - kf (C2 + C3) + dl = rh + rl: rh rounded once, rl its error (r - rh is exact,
     * or off by less than 2^-74 where |r| < 2 |kf C2|) with the small parts */
    double rh = fma(-kf, C2, r);
    double rl = fma(-kf, C3, fma(-kf, C2, r - rh)) + dl;
    double q = 1.0 / 720.0;
    q = fma(q, rh, 1.0 / 120.0);
    q = fma(q, rh, 1.0 / 24.0);
    q = fma(q, rh, 1.0 / 6.0);
    q = fma(q, rh, 0.5);
    q = q * (rh * rh);
    double ql = fma(rl, rh, rl) + q; /* exp(rh + rl) = 1 + rh + ql */
    double th = TAB_HI[j], tl = TAB_LO[j];
    double P = th * rh;
    double pe2 = fma(th, rh, -P);
    double lo = fma(th, ql, pe2) + fma(tl, rh + ql, tl);
    double hi = th + P; /* |P| < th: Fast2Sum */
    lo += P - (hi - th);
    *hi_out = hi;
    *lo_out = lo;
}

static inline dd
exp_dd_scaled(double dh, double dl, int64_t *K)
{
    dd r;
    exp_dd_parts(dh, dl, &r.hi, &r.lo, K);
    return r;
}

/* Terms of the float64 sum: exp(d - c) for d = (dh, dl) below the shift c, in
 * double-double, scaled by 2^K exactly while normal (by two factors below 2^-1020). */
static inline void
exp_term(double dh, double dl, double *hi, double *lo)
{
    int64_t K;
    double dc = dh < -746.0 ? -746.0 : dh;
    double eh, el;
    exp_dd_parts(dc, dl, &eh, &el, &K);
    int64_t low = K < -1020;
    double s1 = pow2i(low ? K + 600 : K);
    double s2 = low ? 0x1p-600 : 1.0;
    *hi = (eh * s1) * s2;
    *lo = (el * s1) * s2;
}


/* Largest x - m (high part) over the entries below m; -inf if none */
static double
second_f64(const double *x, Py_ssize_t n, double m)
{
    double best = -INFINITY;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (x[i] != m) {
            double d = x[i] - m;
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

/* One output: (x - m) - (Lh + Ll), rounded once; overflow gives -inf */
static inline double
out_f64(double x, double m, double Lh, double Ll)
{
    dd d = two_sum(x, -m);
    dd s = two_sum(d.hi, -Lh);
    double v = s.hi + (s.lo + (d.lo - Ll));
    return fabs(s.hi) <= DBL_MAX ? v : s.hi;
}

/* out = (x - m) - (L_hi + L_lo), rounded once; overflow gives -inf */
HOT static void
write_f64(const double *x, double *out, Py_ssize_t n, double m, double Lh, double Ll)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = out_f64(x[i], m, Lh, Ll);
    }
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

static inline void
acc_dd(double *ah, double *al, double h, double l)
{
    dd t = two_sum(*ah, h);
    *ah = t.hi;
    *al += t.lo + l;
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

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256d
v_set(double v)
{
    return _mm256_set1_pd(v);
}

/* 2^K for integral K in [-1022, 1023] held in a double */
AVX2 static inline __m256d
v_pow2(__m256d Kf)
{
    __m256d biased = _mm256_add_pd(Kf, v_set(SHIFTER + 1023.0));
    __m256i e = _mm256_sub_epi64(_mm256_castpd_si256(biased), _mm256_castpd_si256(v_set(SHIFTER)));
    return _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
}

/* x - m = hi + *lo exactly, lane by lane (TwoSum; nm = -m) */
AVX2 static inline __m256d
v_two_diff(__m256d x, __m256d m, __m256d nm, __m256d *lo)
{
    __m256d hi = _mm256_sub_pd(x, m);
    __m256d bb = _mm256_sub_pd(hi, x);
    *lo = _mm256_add_pd(_mm256_sub_pd(x, _mm256_sub_pd(hi, bb)), _mm256_sub_pd(nm, bb));
    return hi;
}

/* acc_dd, lane by lane */
AVX2 static inline void
v_acc_dd(__m256d *AH, __m256d *AL, __m256d eh, __m256d el)
{
    __m256d s = _mm256_add_pd(*AH, eh);
    __m256d sb = _mm256_sub_pd(s, *AH);
    __m256d err = _mm256_add_pd(_mm256_sub_pd(*AH, _mm256_sub_pd(s, sb)), _mm256_sub_pd(eh, sb));
    *AH = s;
    *AL = _mm256_add_pd(*AL, _mm256_add_pd(err, el));
}

/* exp_dd_parts on four lanes in two steps: the reduction (rh + rl, Kf = floor(k / 64)
 * and the table index j), then the rest from the table entries th + tl; hi + lo,
 * unscaled */
AVX2 static inline void
v_exp_reduce(__m256d a, __m256d al, __m256d *rh_out, __m256d *rl_out, __m256d *Kf_out,
             __m256i *j_out)
{
    __m256d ks = _mm256_fmadd_pd(a, v_set(INV_C), v_set(SHIFTER));
    __m256d kf = _mm256_sub_pd(ks, v_set(SHIFTER));
    __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(ks), _mm256_castpd_si256(v_set(SHIFTER)));
    *j_out = _mm256_and_si256(k, _mm256_set1_epi64x(63));
    *Kf_out = _mm256_floor_pd(_mm256_mul_pd(kf, v_set(1.0 / 64.0)));
    __m256d r = _mm256_fnmadd_pd(kf, v_set(C1), a);
    __m256d rh = _mm256_fnmadd_pd(kf, v_set(C2), r);
    __m256d rl = _mm256_fnmadd_pd(kf, v_set(C3), _mm256_fnmadd_pd(kf, v_set(C2), _mm256_sub_pd(r, rh)));
    *rl_out = _mm256_add_pd(rl, al);
    *rh_out = rh;
}

AVX2 static inline void
v_exp_finish(__m256d rh, __m256d rl, const int64_t jj[4], __m256d *hi_out, __m256d *lo_out)
{
    __m256d q = v_set(1.0 / 720.0);
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 120.0));
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 24.0));
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 6.0));
    q = _mm256_fmadd_pd(q, rh, v_set(0.5));
    q = _mm256_mul_pd(q, _mm256_mul_pd(rh, rh));
    __m256d ql = _mm256_add_pd(_mm256_fmadd_pd(rl, rh, rl), q);
    __m256d th = _mm256_setr_pd(TAB_HI[jj[0]], TAB_HI[jj[1]], TAB_HI[jj[2]], TAB_HI[jj[3]]);
    __m256d tl = _mm256_setr_pd(TAB_LO[jj[0]], TAB_LO[jj[1]], TAB_LO[jj[2]], TAB_LO[jj[3]]);
    __m256d P = _mm256_mul_pd(th, rh);
    __m256d pe2 = _mm256_fmsub_pd(th, rh, P);
    __m256d lo = _mm256_add_pd(_mm256_fmadd_pd(th, ql, pe2),
                               _mm256_fmadd_pd(tl, _mm256_add_pd(rh, ql), tl));
    __m256d hi = _mm256_add_pd(th, P);
    *lo_out = _mm256_add_pd(lo, _mm256_sub_pd(P, _mm256_sub_pd(hi, th)));
    *hi_out = hi;
}

AVX2 static inline void
v_exp_dd_parts(__m256d a, __m256d al, __m256d *hi_out, __m256d *lo_out, __m256d *Kf_out)
{
    __m256d rh, rl;
    __m256i j;
    int64_t jj[4];
    v_exp_reduce(a, al, &rh, &rl, Kf_out, &j);
    _mm256_storeu_si256((__m256i *)jj, j);
    v_exp_finish(rh, rl, jj, hi_out, lo_out);
}

/* DEFINE_MAX's contract on two vectors of lanes (V: __m256d or __m256; S: the
 * intrinsics' suffix, pd or ps; W: lanes per vector): maxpd keeps the accumulator
 * where the entry is NaN, and the NaNs are flagged on the side */
#define DEFINE_MAX_AVX2(NAME, T, V, S, W)                                                  \
    AVX2 static T NAME(const T *x, Py_ssize_t n)                                           \
    {                                                                                      \
        V a0 = _mm256_set1_##S(-INFINITY), a1 = a0, nan = _mm256_setzero_##S();           \
        Py_ssize_t i = 0;                                                                  \
        for (; i + 2 * (W) <= n; i += 2 * (W)) {                                           \
            V v0 = _mm256_loadu_##S(x + i), v1 = _mm256_loadu_##S(x + i + (W));            \
            a0 = _mm256_max_##S(v0, a0);                                                   \
            a1 = _mm256_max_##S(v1, a1);                                                   \
            nan = _mm256_or_##S(nan, _mm256_cmp_##S(v0, v1, _CMP_UNORD_Q));                \
        }                                                                                  \
        T acc[W], m = (T)-INFINITY;                                                        \
        int any_nan = _mm256_movemask_##S(nan);                                            \
        _mm256_storeu_##S(acc, _mm256_max_##S(a0, a1));                                    \
        for (int l = 0; l < (W); l++) {                                                    \
            m = acc[l] > m ? acc[l] : m;                                                   \
        }                                                                                  \
        for (; i < n; i++) {                                                               \
            m = x[i] > m ? x[i] : m;                                                       \
            any_nan |= x[i] != x[i];                                                       \
        }                                                                                  \
        return (!any_nan && m - m == 0) ? m : (T)NAN;                                      \
    }

DEFINE_MAX_AVX2(max_f64_avx2, double, __m256d, pd, 4)
DEFINE_MAX_AVX2(max_f32_avx2, float, __m256, ps, 8)

/* write_f32 (float output) and write_f64 with non-temporal stores: the same
 * operations lane by lane, so the same bits; scalar up to the first 32-byte boundary
 * and after the last */
AVX2 static void
stream_f32_avx2(const float *x, float *o, Py_ssize_t n, float m, double L)
{
    Py_ssize_t i = 0;
    while (i < n && ((uintptr_t)(o + i) & 31) != 0) {
        i++;
    }
    write_f32(x, o, OUT_F32, i, m, L); /* up to the first 32-byte boundary */
    const __m256d MD = v_set((double)m), LL = v_set(L);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        __m128 ra = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_sub_pd(a, MD), LL));
        __m128 rb = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_sub_pd(b, MD), LL));
        _mm256_stream_ps(o + i, _mm256_insertf128_ps(_mm256_castps128_ps256(ra), rb, 1));
    }
    write_f32(x + i, o + i, OUT_F32, n - i, m, L);
}

/* write_f32's OUT_F32_ODD loop, four lanes at a time. Where |v| lies in float32's
 * normal range, rounding to odd is a truncation of v's float64 pattern to float32's 24
 * bits with the last kept bit set where a dropped one was (the sticky bit), and the
 * conversion after it is exact: the same bits as round_odd_f32. Groups with a lane
 * outside that range (0, subnormal, beyond FLT_MAX, inf, NaN) take round_odd_f32
 * itself. The compiler's vectorization of the portable loop ran at 0.9 ns an entry
 * here, three times the plain float32 write. */
AVX2 static void
write_odd_f32_avx2(const float *x, float *o, Py_ssize_t n, float m, double L)
{
    const __m256d MD = v_set((double)m), LL = v_set(L);
    const __m256d ABS = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    const __m256d TINY = v_set(0x1p-126), BIG = v_set(FLT_MAX);
    const __m256i DROP = _mm256_set1_epi64x((INT64_C(1) << 29) - 1); /* 53 - 24 bits */
    const __m256i KEEP = _mm256_set1_epi64x(INT64_C(1) << 29);
    const __m256i ZERO = _mm256_setzero_si256();
    double md = (double)m;
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_sub_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), MD), LL);
        __m256d a = _mm256_and_pd(v, ABS);
        __m256d normal = _mm256_and_pd(_mm256_cmp_pd(a, TINY, _CMP_GE_OQ),
                                       _mm256_cmp_pd(a, BIG, _CMP_LE_OQ));
        if (_mm256_movemask_pd(normal) != 15) {
            for (int l = 0; l < 4; l++) {
                o[i + l] = round_odd_f32(((double)x[i + l] - md) - L);
            }
            continue;
        }
        __m256i bits = _mm256_castpd_si256(v);
        __m256i exact = _mm256_cmpeq_epi64(_mm256_and_si256(bits, DROP), ZERO);
        bits = _mm256_or_si256(_mm256_andnot_si256(DROP, bits), _mm256_andnot_si256(exact, KEEP));
        _mm_storeu_ps(o + i, _mm256_cvtpd_ps(_mm256_castsi256_pd(bits)));
    }
    for (; i < n; i++) {
        o[i] = round_odd_f32(((double)x[i] - md) - L);
    }
}

AVX2 static void
stream_f64_avx2(const double *x, double *o, Py_ssize_t n, double m, double Lh, double Ll)
{
    Py_ssize_t i = 0;
    while (i < n && ((uintptr_t)(o + i) & 31) != 0) {
        i++;
    }
    write_f64(x, o, i, m, Lh, Ll); /* up to the first 32-byte boundary */
    const __m256d M = v_set(m), NM = v_set(-m), NLH = v_set(-Lh), LL = v_set(Ll);
    const __m256d BIG = v_set(DBL_MAX), ABS = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    for (; i + 4 <= n; i += 4) {
        __m256d xv = _mm256_loadu_pd(x + i);
        __m256d dl, dh = v_two_diff(xv, M, NM, &dl);
        /* two_sum(dh, -Lh) */
        __m256d sh = _mm256_add_pd(dh, NLH);
        __m256d bb = _mm256_sub_pd(sh, dh);
        __m256d sl = _mm256_add_pd(_mm256_sub_pd(dh, _mm256_sub_pd(sh, bb)), _mm256_sub_pd(NLH, bb));
        __m256d v = _mm256_add_pd(sh, _mm256_add_pd(sl, _mm256_sub_pd(dl, LL)));
        __m256d finite = _mm256_cmp_pd(_mm256_and_pd(sh, ABS), BIG, _CMP_LE_OQ);
        _mm256_stream_pd(o + i, _mm256_blendv_pd(sh, v, finite));
    }
    write_f64(x + i, o + i, n - i, m, Lh, Ll);
}

/* The c = 0 loop runs over blocks of C0_BLOCK entries in two passes: the first takes
 * the differences and reduces the arguments into a buffer of the block's, the second
 * finishes the exponentials and sums them. One vector's exponential in one loop is a
 * chain of dependent operations longer than the out-of-order window can overlap with
 * the next vector's; split in two, it can (15 to 20% fewer cycles per entry, measured
 * on AMD Zen). The operations, lanes and order are those of the portable loop. */
#define C0_BLOCK 128
typedef struct {
    double rh[C0_BLOCK], rl[C0_BLOCK], kf[C0_BLOCK], keep[C0_BLOCK];
    int64_t j[C0_BLOCK];
} c0_block;

/* The first pass on entries b to b + 3 of the block (x: the first of them) */
AVX2 static inline void
v_reduce_c0(const double *x, __m256d M, __m256d NM, c0_block *B, int b, __m256d *LOWBAND,
            Py_ssize_t *count)
{
    const __m256d ZERO = _mm256_setzero_pd(), FLOOR = v_set(-745.5), BAND = v_set(-706.0);
    __m256d dl, dh = v_two_diff(_mm256_loadu_pd(x), M, NM, &dl);
    __m256d at_max = _mm256_cmp_pd(dh, ZERO, _CMP_EQ_OQ);
    __m256d above = _mm256_cmp_pd(dh, FLOOR, _CMP_GE_OQ);
    __m256d keep = _mm256_andnot_pd(at_max, above);
    *LOWBAND = _mm256_or_pd(*LOWBAND, _mm256_and_pd(above, _mm256_cmp_pd(dh, BAND, _CMP_LT_OQ)));
    *count += __builtin_popcount(_mm256_movemask_pd(at_max));
    __m256d a = _mm256_blendv_pd(v_set(-700.0), dh, keep);
    __m256d rh, rl, Kf;
    __m256i j;
    v_exp_reduce(a, _mm256_and_pd(dl, keep), &rh, &rl, &Kf, &j);
    _mm256_store_pd(B->rh + b, rh);
    _mm256_store_pd(B->rl + b, rl);
    _mm256_store_pd(B->kf + b, Kf);
    _mm256_store_pd(B->keep + b, keep);
    _mm256_store_si256((__m256i *)(B->j + b), j);
}

/* The second pass on entries b to b + 3: their terms added to the lanes (AH, AL) */
AVX2 static inline void
v_sum_c0(const c0_block *B, int b, __m256d *AH, __m256d *AL)
{
    __m256d hi, lo, keep = _mm256_load_pd(B->keep + b);
    v_exp_finish(_mm256_load_pd(B->rh + b), _mm256_load_pd(B->rl + b), B->j + b, &hi, &lo);
    __m256d s1 = v_pow2(_mm256_load_pd(B->kf + b));
    __m256d eh = _mm256_and_pd(_mm256_mul_pd(hi, s1), keep);
    __m256d el = _mm256_and_pd(_mm256_mul_pd(lo, s1), keep);
    v_acc_dd(AH, AL, eh, el);
}

/* The sum for c = 0 where no term needs the two-step scaling (terms that do lie in
 * [e^-745.5, e^-706): then it returns 0 and the caller takes the general loop).
 * Bit-identical to the general loop otherwise: with c = 0, sh = dh and sl = dl
 * exactly, and the scaling is one exact multiplication. */
AVX2 static int
partial_f64_avx2_c0(const double *x, Py_ssize_t n, double m, dd *sum, Py_ssize_t *at_max)
{
    const __m256d M = v_set(m), NM = v_set(-m);
    __m256d AH0 = _mm256_setzero_pd(), AL0 = AH0, AH1 = AH0, AL1 = AH0, LOWBAND = AH0;
    Py_ssize_t count = 0, i = 0;
    c0_block B __attribute__((aligned(32)));
    while (i + DD_LANES <= n) {
        /* whole vectors of eight lanes; the last n % 8 entries after the loop */
        int nb = n - i >= C0_BLOCK ? C0_BLOCK : (int)((n - i) / DD_LANES * DD_LANES);
        for (int b = 0; b < nb; b += 4) {
            v_reduce_c0(x + i + b, M, NM, &B, b, &LOWBAND, &count);
        }
        for (int b = 0; b < nb; b += DD_LANES) {
            v_sum_c0(&B, b, &AH0, &AL0);
            v_sum_c0(&B, b + 4, &AH1, &AL1);
        }
        i += nb;
    }
    if (_mm256_movemask_pd(LOWBAND)) {
        return 0;
    }
    double ah[DD_LANES], al[DD_LANES];
    _mm256_storeu_pd(ah, AH0);
    _mm256_storeu_pd(ah + 4, AH1);
    _mm256_storeu_pd(al, AL0);
    _mm256_storeu_pd(al + 4, AL1);
    for (; i < n; i++) {
        double h, lo;
        term_f64(x[i], m, 0.0, &h, &lo);
        acc_dd(&ah[0], &al[0], h, lo);
        count += x[i] == m;
    }
    finish_sum(ah, al, sum);
    *at_max = count;
    return 1;
}

/* One vector of partial_f64_avx2's general loop */
AVX2 static inline void
v_step(const double *x, __m256d M, __m256d NM, __m256d C, __m256d NC, __m256d *AH,
       __m256d *AL, Py_ssize_t *count)
{
    const __m256d ZERO = _mm256_setzero_pd(), FLOOR = v_set(-745.5);
    __m256d dl, dh = v_two_diff(_mm256_loadu_pd(x), M, NM, &dl);
    __m256d sh = _mm256_sub_pd(dh, C);
    __m256d bb = _mm256_sub_pd(sh, dh);
    __m256d sl = _mm256_add_pd(
        _mm256_add_pd(_mm256_sub_pd(dh, _mm256_sub_pd(sh, bb)), _mm256_sub_pd(NC, bb)), dl);
    __m256d at_max = _mm256_cmp_pd(dh, ZERO, _CMP_EQ_OQ);
    __m256d keep = _mm256_andnot_pd(at_max, _mm256_cmp_pd(sh, FLOOR, _CMP_GE_OQ));
    *count += __builtin_popcount(_mm256_movemask_pd(at_max));
    /* dropped lanes compute exp(-745.5) */
    __m256d a = _mm256_blendv_pd(FLOOR, sh, keep);
    __m256d al = _mm256_and_pd(sl, keep);
    __m256d hi, lo, Kf;
    v_exp_dd_parts(a, al, &hi, &lo, &Kf);
    /* exp_term's scaling */
    __m256d low = _mm256_cmp_pd(Kf, v_set(-1020.0), _CMP_LT_OQ);
    __m256d s1 = v_pow2(_mm256_blendv_pd(Kf, _mm256_add_pd(Kf, v_set(600.0)), low));
    __m256d s2 = _mm256_blendv_pd(v_set(1.0), v_set(0x1p-600), low);
    __m256d eh = _mm256_and_pd(_mm256_mul_pd(_mm256_mul_pd(hi, s1), s2), keep);
    __m256d el = _mm256_and_pd(_mm256_mul_pd(_mm256_mul_pd(lo, s1), s2), keep);
    v_acc_dd(AH, AL, eh, el);
}

AVX2 static void
partial_f64_avx2(const double *x, Py_ssize_t n, double m, double c, dd *sum, Py_ssize_t *at_max)
{
    if (c == 0.0 && partial_f64_avx2_c0(x, n, m, sum, at_max)) {
        return;
    }
    const __m256d M = v_set(m), NM = v_set(-m), C = v_set(c), NC = v_set(-c);
    __m256d AH0 = _mm256_setzero_pd(), AL0 = AH0, AH1 = AH0, AL1 = AH0;
    Py_ssize_t count = 0, i = 0;
    for (; i + DD_LANES <= n; i += DD_LANES) {
        v_step(x + i, M, NM, C, NC, &AH0, &AL0, &count);
        v_step(x + i + 4, M, NM, C, NC, &AH1, &AL1, &count);
    }
    double ah[DD_LANES], al[DD_LANES];
    _mm256_storeu_pd(ah, AH0);
    _mm256_storeu_pd(ah + 4, AH1);
    _mm256_storeu_pd(al, AL0);
    _mm256_storeu_pd(al + 4, AL1);
    for (; i < n; i++) {
        double h, lo;
        term_f64(x[i], m, c, &h, &lo);
        acc_dd(&ah[0], &al[0], h, lo);
        count += x[i] == m;
    }
    finish_sum(ah, al, sum);
    *at_max = count;
}
/* exp_short on four lanes; the table 2^(j/4) lives in one register */
AVX2 static inline __m256d
v_exp_short(__m256d d)
{
    __m256d dc = _mm256_max_pd(d, v_set(-700.0));
    __m256d ks = _mm256_fmadd_pd(dc, v_set(INV_L4), v_set(SHIFTER));
    __m256d kf = _mm256_sub_pd(ks, v_set(SHIFTER));
    __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(ks), _mm256_castpd_si256(v_set(SHIFTER)));
    __m256d r = _mm256_fnmadd_pd(kf, v_set(L4_LO), _mm256_fnmadd_pd(kf, v_set(L4_HI), dc));
    __m256d p = v_set(1.0 / 720.0);
    p = _mm256_fmadd_pd(p, r, v_set(1.0 / 120.0));
    p = _mm256_fmadd_pd(p, r, v_set(1.0 / 24.0));
    p = _mm256_fmadd_pd(p, r, v_set(1.0 / 6.0));
    p = _mm256_fmadd_pd(p, r, v_set(0.5));
    p = _mm256_fmadd_pd(p, r, v_set(1.0));
    p = _mm256_fmadd_pd(p, r, v_set(1.0));
    /* 2^(j/4), j = k & 3: a 32-bit permute picks the two halves of entry j */
    __m256i j2 = _mm256_slli_epi64(_mm256_and_si256(k, _mm256_set1_epi64x(3)), 1);
    __m256i idx = _mm256_or_si256(j2, _mm256_slli_epi64(_mm256_add_epi64(j2, _mm256_set1_epi64x(1)), 32));
    __m256 tab = _mm256_castpd_ps(_mm256_loadu_pd(EXP2_4));
    __m256d tj = _mm256_castps_pd(_mm256_permutevar8x32_ps(tab, idx));
    /* 2^(k >> 2), k >> 2 in [-253, 0]: the shift of k + 1023 * 4 is logical */
    __m256i e = _mm256_srli_epi64(_mm256_add_epi64(k, _mm256_set1_epi64x(1023 * 4)), 2);
    __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
    return _mm256_mul_pd(_mm256_mul_pd(p, tj), scale);
}

AVX2 static inline __m256d
v_term_f32(__m128 x, __m256d md)
{
    __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(x), md);
    __m256d v = v_exp_short(d);
    return _mm256_andnot_pd(_mm256_cmp_pd(d, _mm256_add_pd(d, d), _CMP_EQ_OQ), v); /* term_f32 */
}

AVX2 static void
partial_f32_avx2(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    const __m256 M8 = _mm256_set1_ps(m);
    const __m256d MD = v_set((double)m);
    __m256d A0 = _mm256_setzero_pd(), A1 = _mm256_setzero_pd();
    Py_ssize_t count = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 X = _mm256_loadu_ps(x + i);
        count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(X, M8, _CMP_EQ_OQ)));
        A0 = _mm256_add_pd(A0, v_term_f32(_mm256_castps256_ps128(X), MD));
        A1 = _mm256_add_pd(A1, v_term_f32(_mm256_extractf128_ps(X, 1), MD));
    }
    double acc[8];
    _mm256_storeu_pd(acc, A0);
    _mm256_storeu_pd(acc + 4, A1);
    double md = (double)m;
    for (; i < n; i++) {
        acc[0] += term_f32(x[i], md);
        count += x[i] == m;
    }
    *sum = finish_lanes8(acc);
    *at_max = count;
}
#endif

typedef void (*partial_f64_fn)(const double *, Py_ssize_t, double, double, dd *, Py_ssize_t *);
static partial_f64_fn partial_f64 = partial_f64_scalar;

/* log1p(T) for T = th + tl >= 0 as double-double, relative error ~2^-60 */
static dd
log1p_dd(double th, double tl)
{
    if (th < 0x1p-30) {
        double t2 = th * th;
        return two_sum(th, tl - t2 * 0.5 + t2 * th * (1.0 / 3.0));
    }
    double L0 = log1p(th);
    int64_t K;
    dd E = exp_dd_scaled(L0, 0.0, &K);
    double s = pow2i(K);
    E.hi *= s;
    E.lo *= s;
    dd a = two_sum(1.0, th);
    double rho = ((a.hi - E.hi) + a.lo) + (tl - E.lo);
    return two_sum(L0, rho / E.hi);
}

/* One row's output, streamed or not (streams()) */
static void
write_row_f64(const double *x, double *out, Py_ssize_t n, double m, double Lh, double Ll,
              int stream)
{
    if (stream) {
        stream_f64(x, out, n, m, Lh, Ll);
    }
    else {
        write_f64(x, out, n, m, Lh, Ll);
    }
}

/* -(2^K * (h + l)) correctly rounded, also where it is subnormal */
static double
neg_scaled(double h, double l, int64_t K)
{
    double s = h + l;
    double e = l - (s - h);
    double r = ldexp(s, (int)K);
    double back = ldexp(r, (int)-K); /* exact: r is s rounded to a coarser grid */
    double resid = (s - back) + e;
    double grid = ldexp(1.0, (int)(-1074 - K));
    if (r < 0x1p-1022 && fabs(resid) > 0.5 * grid) {
        r += resid > 0 ? 0x1p-1074 : -0x1p-1074;
    }
    return -r;
}

/* log1p(T) = T (to within 2^-960 relative) for T = exp(c) * S below 2^-960,
 * correctly rounded also where it is subnormal; 0 below c = -2000, where
 * T < n exp(-2000) is zero in double for any n */
static double
tiny_log1p(double c, dd S)
{
    if (c < -2000.0) {
        return 0.0;
    }
    int64_t K;
    dd ec = exp_dd_scaled(c, 0.0, &K);
    double P = ec.hi * S.hi;
    double pl = fma(ec.hi, S.hi, -P) + ec.hi * S.lo + ec.lo * S.hi;
    return -neg_scaled(P, pl, K);
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
    write_f64(x, out, n, m, tiny_log1p(c, S), 0.0);
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
        dd t = two_sum(T.hi, (double)(k - 1));
        dd L = log1p_dd(t.hi, t.lo + T.lo);
        write_row_f64(xr, orow, n, m, L.hi, L.lo, stream);
    }
    return skipped;
}

/* ---- Threads: blocks of rows, or segments of each pass of one long row ----
 *
 * The work is cut into blocks (of whole rows, or segments of one row) that the
 * threads take from a shared counter, so that a thread slowed down (the machine's
 * other work) leaves the rest to the others. Which thread computes a block does not
 * change its bits, and a long row's segments (a count fixed by the row's length, not
 * by the threads) are combined in their order: the result is the same for any number
 * of threads. */

#define BLOCK_BYTES ((size_t)256 << 10) /* input per block of rows: a cache's worth */
#define MAX_SEGS 32                     /* segments of one long row */
#define MAX_THREADS 256
#define PER_THREAD (1 << 14) /* elements a thread must have, to be worth starting */

/* The threads a call may use where the caller does not say (set_threads) */
static int default_threads = 1;

typedef struct {
    double m;
    dd sum;
    Py_ssize_t k;
} seg_part;

/* The whole work, shared by the threads */
typedef struct {
    const void *x;
    void *out;
    int32_t *bad; /* or NULL */
    Py_ssize_t nrows, n;
    int f64;
    int out_kind; /* float32 input: OUT_F32, or OUT_F32_ODD */
    int stream;   /* streams(): of the whole output, per thread */
    int nthreads; /* the threads the job runs on, the calling one included */
    Py_ssize_t per_block, nblocks;
    Py_ssize_t next; /* the next block to take (atomic) */
    /* one long row: the pass under way (0: max; 1: partial sums; 2: output) and
     * each segment's results */
    int phase;
    double m, Lh, Ll;
    seg_part seg[MAX_SEGS];
} row_job;

/* One thread's share: the rows it left to the caller */
typedef struct {
    row_job *job;
    Py_ssize_t skipped;
} worker;

static inline Py_ssize_t
take_block(row_job *j)
{
    return __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
}

/* rows_f32 or rows_f64 on nrows rows from row r0 */
static Py_ssize_t
some_rows(const row_job *j, Py_ssize_t r0, Py_ssize_t nrows)
{
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    size_t at = (size_t)(r0 * j->n);
    const char *x = (const char *)j->x + at * isize;
    char *out = (char *)j->out + at * out_size(j->f64, j->out_kind);
    int32_t *bad = j->bad ? j->bad + r0 : NULL;
    if (j->f64) {
        return rows_f64((const double *)x, (double *)out, nrows, j->n, bad, j->stream);
    }
    return rows_f32((const float *)x, out, j->out_kind, nrows, j->n, bad, j->stream);
}

/* Blocks of rows until none is left */
static void *
run_rows(void *arg)
{
    worker *w = (worker *)arg;
    row_job *j = w->job;
    for (Py_ssize_t b; (b = take_block(j)) < j->nblocks;) {
        Py_ssize_t r0 = b * j->per_block;
        Py_ssize_t nr = j->nrows - r0 < j->per_block ? j->nrows - r0 : j->per_block;
        w->skipped += some_rows(j, r0, nr);
    }
    if (j->stream) {
        stream_fence();
    }
    return NULL;
}

/* Segments of the long row's current pass until none is left */
static void *
run_segments(void *arg)
{
    row_job *j = ((worker *)arg)->job;
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    for (Py_ssize_t b; (b = take_block(j)) < j->nblocks;) {
        Py_ssize_t at = b * j->per_block;
        Py_ssize_t len = j->n - at < j->per_block ? j->n - at : j->per_block;
        const void *x = (const char *)j->x + (size_t)at * isize;
        void *out = (char *)j->out + (size_t)at * out_size(j->f64, j->out_kind);
        seg_part *p = &j->seg[b];
        if (j->phase == 0) {
            p->m = j->f64 ? max_f64((const double *)x, len) : (double)max_f32((const float *)x, len);
        }
        else if (j->phase == 1 && j->f64) {
            partial_f64((const double *)x, len, j->m, 0.0, &p->sum, &p->k);
        }
        else if (j->phase == 1) {
            double T;
            partial_f32((const float *)x, len, (float)j->m, &T, &p->k);
            p->sum = (dd){T, 0.0};
        }
        else if (j->f64) {
            write_row_f64((const double *)x, (double *)out, len, j->m, j->Lh, j->Ll, j->stream);
        }
        else {
            write_row_f32((const float *)x, out, j->out_kind, len, (float)j->m, j->Lh, j->stream);
        }
    }
    if (j->phase == 2 && j->stream) {
        stream_fence();
    }
    return NULL;
}

/* The whole job on the calling thread, its output streamed where it is large */
static Py_ssize_t
rows_one_thread(row_job *j)
{
    size_t out_bytes = (size_t)(j->nrows * j->n) * out_size(j->f64, j->out_kind);
    j->stream = streams(j->f64, j->out_kind, out_bytes);
    Py_ssize_t skipped = some_rows(j, 0, j->nrows);
    if (j->stream) {
        stream_fence();
    }
    return skipped;
}

/* Runs fn on j->nthreads workers of the job, the first on the calling thread and
 * each other on a thread of its own, from block 0; returns the rows they left to the
 * caller. A thread that cannot be started leaves its share to the others. */
static Py_ssize_t
on_threads(void *(*fn)(void *), row_job *j)
{
    worker w[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    int started[MAX_THREADS];
    int nt = j->nthreads < 1 ? 1 : j->nthreads > MAX_THREADS ? MAX_THREADS : j->nthreads;
    j->next = 0;
    for (int i = 0; i < nt; i++) {
        w[i] = (worker){j, 0};
    }
    for (int i = 1; i < nt; i++) {
        started[i] = pthread_create(&t[i], NULL, fn, &w[i]) == 0;
    }
    fn(&w[0]);
    Py_ssize_t skipped = w[0].skipped;
    for (int i = 1; i < nt; i++) {
        if (started[i]) {
            pthread_join(t[i], NULL);
            skipped += w[i].skipped;
        }
    }
    return skipped;
}

/* One long row, each pass in segments shared by the threads; returns 1 where the
 * row is left to the caller (as rows_f32/rows_f64 would) */
static Py_ssize_t
long_row(row_job *j)
{
    Py_ssize_t per = (j->n + MAX_SEGS - 1) / MAX_SEGS;
    j->per_block = (per + 63) / 64 * 64; /* whole cache lines */
    j->nblocks = (j->n + j->per_block - 1) / j->per_block;
    j->phase = 0;
    on_threads(run_segments, j);
    double m = -INFINITY;
    for (Py_ssize_t i = 0; i < j->nblocks; i++) {
        if (isnan(j->seg[i].m)) {
            /* a segment with a special value, or of -inf only (which another may
             * make a row of the kernels'): the whole row decides, on one thread */
            j->stream = 0;
            return some_rows(j, 0, 1);
        }
        m = j->seg[i].m > m ? j->seg[i].m : m;
    }
    if (j->bad) {
        *j->bad = 0;
    }
    j->m = m;
    j->phase = 1;
    on_threads(run_segments, j);
    Py_ssize_t k = 0;
    dd T = {0.0, 0.0};
    for (Py_ssize_t i = 0; i < j->nblocks; i++) { /* in order: the same bits always */
        k += j->seg[i].k;
        acc_dd(&T.hi, &T.lo, j->seg[i].sum.hi, j->seg[i].sum.lo);
    }
    T = two_sum(T.hi, T.lo);
    j->Ll = 0.0;
    if (j->f64) {
        if (k == 1 && T.hi < 0x1p-960) {
            row_f64_tiny((const double *)j->x, (double *)j->out, j->n, m);
            return 0;
        }
        dd t = two_sum(T.hi, (double)(k - 1));
        dd L = log1p_dd(t.hi, t.lo + T.lo);
        j->Lh = L.hi;
        j->Ll = L.lo;
    }
    else {
        j->Lh = log1p(T.hi + (double)(k - 1));
    }
    j->phase = 2;
    on_threads(run_segments, j);
    return 0;
}

/* The rows over up to ``threads`` threads, as many as have PER_THREAD elements each
 * (so two threads from 2**15 elements, sixteen from 2**18):
 * blocks of rows, or, for one long row, segments of each pass. Returns the count of
 * rows left to the caller. */
static Py_ssize_t
rows_threads(row_job *j, int threads)
{
    Py_ssize_t total = j->nrows * j->n;
    Py_ssize_t worth = total / PER_THREAD;
    j->nthreads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    if (worth < j->nthreads) {
        j->nthreads = worth < 1 ? 1 : (int)worth;
    }
    if (j->nthreads < 2) {
        return rows_one_thread(j);
    }
    size_t isize = j->f64 ? sizeof(double) : sizeof(float);
    size_t out_bytes = (size_t)total * out_size(j->f64, j->out_kind);
    j->stream = streams(j->f64, j->out_kind, out_bytes / (size_t)j->nthreads);
    if (j->nrows == 1) {
        return long_row(j);
    }
    Py_ssize_t per = (Py_ssize_t)(BLOCK_BYTES / ((size_t)j->n * isize));
    Py_ssize_t want = 4 * (Py_ssize_t)j->nthreads; /* at least four blocks a thread */
    Py_ssize_t most = (j->nrows + want - 1) / want;
    j->per_block = per < 1 ? 1 : per > most ? most : per;
    j->nblocks = (j->nrows + j->per_block - 1) / j->per_block;
    return on_threads(run_rows, j);
}

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
    Py_BEGIN_ALLOW_THREADS
    row_job job = {.x = x.buf, .out = o.buf, .nrows = count / n, .n = n, .f64 = kx == 'd',
                   .out_kind = out_kind_of(ko, odd)};
    if (threads >= 2 && (kx == 'd' || ko == 'f')) {
        skipped = rows_threads(&job, threads);
    }
    else {
        skipped = rows_one_thread(&job);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
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
    Py_BEGIN_ALLOW_THREADS
    if (kx == 'f') {
        partial_f32((const float *)x.buf, count, (float)m, &s.hi, &k);
    }
    else {
        partial_f64((const double *)x.buf, count, m, c, &s, &k);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    return Py_BuildValue("ddn", s.hi, s.lo, k);
}

PyDoc_STRVAR(write_doc,
"write(x, out, m, l_hi, l_lo, odd=0)\n\n"
"out = (x - m) - (l_hi + l_lo), rounded once, for one segment of a row (float32 x\n"
"uses l_hi only; odd=1 as in rows()).");

static PyObject *
py_write(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo;
    double m, lh, ll;
    int odd = 0;
    if (!PyArg_ParseTuple(args, "OOddd|i", &xo, &oo, &m, &lh, &ll, &odd)) {
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
    Py_BEGIN_ALLOW_THREADS
    if (kx == 'f') {
        write_f32((const float *)x.buf, o.buf, out_kind_of(ko, odd), count, (float)m, lh);
    }
    else {
        write_f64((const double *)x.buf, (double *)o.buf, count, m, lh, ll);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
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
    dd r = log1p_dd(h, l);
    return Py_BuildValue("dd", r.hi, r.lo);
}

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
    Py_BEGIN_ALLOW_THREADS
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
    Py_END_ALLOW_THREADS
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

/* A special slice's outputs (DESIGN.md): NaN for ANSWER_NAN; one entry's answer for
 * ANSWER_ONE_ENTRY; else, with p entries +inf, 0 at the +inf (p = 1) or NaN (p > 1),
 * -inf elsewhere */
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
"write_rows(x, out, n, slices, odd=0)\n\n"
"The Dask path's second pass over a block: write() for each length-n row of x\n"
"(C-contiguous, or 2-D with contiguous rows a stride apart) into the C-contiguous\n"
"out, with slices (float64, C-contiguous, 6 per row: L hi, L lo, count of +inf,\n"
"special answer as combine_rows gives it, m, and one not read here); a slice with a\n"
"+inf or a special answer gets the special values. odd=1 as in rows().");

static PyObject *
py_write_rows(PyObject *self, PyObject *args)
{
    PyObject *xo, *oo, *so;
    Py_ssize_t n;
    int odd = 0;
    if (!PyArg_ParseTuple(args, "OOnO|i", &xo, &oo, &n, &so, &odd)) {
        return NULL;
    }
    Py_buffer x, o, sl;
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
    if (ko == 0 || (kx == 'd' && ko != 'd') || !holds(o.len / o.itemsize, nrows, n)) {
        problem = "out must be C-contiguous float32 or float64 (float64 for float64 x), one "
                  "entry per entry of x's rows";
    }
    else if (kind_of(&sl) != 'd' || !holds(sl.len, nrows, 48)) {
        problem = "slices must be float64, 6 values per row";
    }
    else if (odd && (kx != 'f' || ko != 'f')) {
        problem = ODD_PROBLEM;
    }
    if (problem == NULL) {
        const double *sv = sl.buf;
        int out_kind = out_kind_of(ko, odd);
        size_t osize = out_size(kx == 'd', out_kind);
        size_t row_bytes = (size_t)n * x.itemsize;
        Py_ssize_t step = stride * x.itemsize;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < nrows; r++) {
            if (stride != n && r + PREFETCH_AHEAD < nrows) {
                prefetch_row((const char *)x.buf + (r + PREFETCH_AHEAD) * step, row_bytes);
            }
            const void *row = (const char *)x.buf + r * step;
            void *orow = (char *)o.buf + (size_t)(r * n) * osize;
            const double *v = sv + 6 * r;
            int answer = answer_of(v[3]);
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
            if (kx == 'f') {
                write_f32(row, orow, out_kind, n, (float)v[4], v[0]);
            }
            else {
                write_f64(row, orow, n, v[4], v[0], v[1]);
            }
            if (answer == ANSWER_NEGATIVE) {
                negative_zeros(orow, osize, n);
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    PyBuffer_Release(&sl);
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
 * log1p from libm, 2^-52 against the 2^-37 of the terms); float64 in double-double,
 * exp(m_j - m) with m_j - m exact (TwoSum) by exp_dd (2^-62), the products exact but
 * for their last rounding (also on the subnormal grid: 2^-114 of a T of 2^-960 and
 * more). Per slice, res gets {L hi, L lo, count of +inf, the special answer (0: none,
 * ANSWER_NAN: a NaN, or -inf only; ANSWER_ONE_ENTRY: a slice of one entry;
 * ANSWER_NEGATIVE: a finite entry below the maximum, in a block below it or in the
 * maximum's own, with a sum or a second entry, c_b), m, and 1
 * where the float64 sum is to be redone: one maximal entry and T below 2^-960}. The
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
        L.hi = log1p(T + (k - 1.0));
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
            L = log1p_dd(th, tl);
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
}

PyDoc_STRVAR(combine_rows_doc,
"combine_rows(parts, nb, f64, res)\n\n"
"The Dask path's combination of the partial sums of the nb blocks of each slice:\n"
"parts (float64, C-contiguous, 10 values per slice and block), res\n"
"(float64, 6 per slice): L hi, L lo, count of +inf, special answer (1: NaN, 2: a\n"
"slice of one entry, 3: a finite entry below the maximum), maximum, redo.");

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
    Py_ssize_t rows = r.len / (6 * 8); /* rows * 80 is no larger than a buffer */
    if (kind_of(&p) != 'd' || kind_of(&r) != 'd' || nb <= 0 || r.len != rows * 6 * 8 ||
        !holds(p.len, rows * 80, nb)) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&r);
        PyErr_SetString(PyExc_ValueError, "combine_rows needs float64 parts of 10 values per "
                                          "slice and block, and res of 6 per slice");
        return NULL;
    }
    const double *pv = p.buf;
    double *rv = r.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        combine_row(pv + i * nb * 10, nb, f64, rv + 6 * i);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&p);
    PyBuffer_Release(&r);
    Py_RETURN_NONE;
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
    return PyFloat_FromDouble(tiny_log1p(c, S));
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
    dd r = exp_dd_scaled(h, l, &K);
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

/* Whether this build has the AVX2 path and this CPU runs it */
static int
avx2_available(void)
{
#ifdef HAVE_AVX2_PATH
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* The code path of the maxima, the sums and the large writes: AVX2 (on: where
 * avx2_available()) or portable */
static void
use_avx2(int on)
{
    partial_f64 = partial_f64_scalar;
    partial_f32 = partial_f32_scalar;
    max_f64 = max_f64_portable;
    max_f32 = max_f32_portable;
    stream_f64 = NULL;
    stream_f32 = NULL;
    write_odd_f32 = NULL;
#ifdef HAVE_AVX2_PATH
    if (on) {
        write_odd_f32 = write_odd_f32_avx2;
        partial_f64 = partial_f64_avx2;
        partial_f32 = partial_f32_avx2;
        max_f64 = max_f64_avx2;
        max_f32 = max_f32_avx2;
        stream_f64 = stream_f64_avx2;
        stream_f32 = stream_f32_avx2;
    }
#endif
}

PyDoc_STRVAR(use_doc,
"use(path) -> str\n\n"
"Select the code path of the maxima, the sums and the large writes, 'scalar' or\n"
"'avx2' (where the CPU has AVX2 and FMA); returns the previous one. Both give\n"
"bit-identical results; tests check it.");

static PyObject *
py_use(PyObject *self, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) {
        return NULL;
    }
    const char *prev = partial_f64 == partial_f64_scalar ? "scalar" : "avx2";
    if (strcmp(name, "scalar") == 0) {
        use_avx2(0);
    }
    else if (strcmp(name, "avx2") == 0 && avx2_available()) {
        use_avx2(1);
    }
    else {
        PyErr_Format(PyExc_ValueError, "no code path %R on this machine", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    return PyUnicode_FromString(prev);
}

/* ---- XLA FFI: the row kernels as a custom call for JAX on CPU ----
 *
 * impl/_jax.py registers ffi_handler() with jax.ffi.register_ffi_target and calls it
 * with one operand, x: float32 or float64, rank >= 1, row-major, the slices as its
 * last axis; and one result, out: x's shape and dtype, or uint32 for float32 x, which
 * asks for the float32 bits rounded to odd. Rows with a NaN or a +inf, or of -inf
 * only, get DESIGN.md's special values (special_row_*).
 *
 * The structs below declare the part of XLA's FFI C ABI (xla/ffi/api/c_api.h) that the
 * handler reads, with the layout that header gives them. XLA keeps that ABI stable
 * within an API major version and asks each handler, through the metadata extension,
 * which version it was written for. */

enum { FFI_API_MAJOR = 0, FFI_API_MINOR = 1 };
enum { FFI_EXT_METADATA = 1 };
enum { FFI_STAGE_EXECUTE = 3 };
enum { FFI_S32 = 4, FFI_U32 = 8, FFI_F32 = 11, FFI_F64 = 12 };
enum { FFI_ARG_BUFFER = 1 };
enum { FFI_INVALID_ARGUMENT = 3 };

typedef struct ffi_ext {
    size_t struct_size;
    int type;
    struct ffi_ext *next;
} ffi_ext;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} ffi_buffer;

typedef struct { /* the call frame's args and rets */
    size_t struct_size;
    ffi_ext *ext;
    int64_t size;
    int *types;
    void **items;
} ffi_list;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int64_t size;
    int *types;
    void **names;
    void **attrs;
} ffi_attrs;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    int major;
    int minor;
} ffi_version;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    const char *message;
    int code;
} ffi_error_args;

typedef void *(*ffi_error_create)(ffi_error_args *);

typedef struct { /* the start of XLA_FFI_Api: only the error constructor is used */
    size_t struct_size;
    ffi_ext *ext;
    ffi_version version;
    const void *internal;
    ffi_error_create error_create;
} ffi_api;

typedef struct {
    size_t struct_size;
    ffi_ext *ext;
    const ffi_api *api;
    void *ctx;
    int stage;
    ffi_list args;
    ffi_list rets;
    ffi_attrs attrs;
    void *future;
} ffi_call_frame;

typedef struct {
    size_t struct_size;
    ffi_version version;
    uint32_t traits;
} ffi_metadata;

typedef struct {
    ffi_ext base;
    ffi_metadata *metadata;
} ffi_metadata_ext;

static void *
ffi_error(const ffi_call_frame *cf, const char *message)
{
    ffi_error_args a = {sizeof a, NULL, message, FFI_INVALID_ARGUMENT};
    return cf->api->error_create(&a);
}

/* DESIGN.md's special values for a row the kernels declined (a NaN, a +inf, or -inf
 * only), the row whole */
#define DEFINE_SPECIAL_WHOLE(NAME, T, COUNTS, ROW)                                         \
    static void NAME(const T *x, T *out, Py_ssize_t n)                                     \
    {                                                                                      \
        double v[10];                                                                      \
        COUNTS(x, n, v);                                                                   \
        ROW(x, out, n, v[3], v[4] > 0.0 || v[9] == -INFINITY ? ANSWER_NAN : 0);            \
    }

DEFINE_SPECIAL_WHOLE(special_whole_f32, float, special_counts_f32, special_row_f32)
DEFINE_SPECIAL_WHOLE(special_whole_f64, double, special_counts_f64, special_row_f64)

static void *
ffi_log_softmax(ffi_call_frame *cf)
{
    ffi_ext *e = cf->ext;
    if (e != NULL && e->type == FFI_EXT_METADATA) {
        ffi_metadata *md = ((ffi_metadata_ext *)e)->metadata;
        md->version = (ffi_version){sizeof(ffi_version), NULL, FFI_API_MAJOR, FFI_API_MINOR};
        md->traits = 0;
        return NULL;
    }
    if (cf->stage != FFI_STAGE_EXECUTE) {
        return NULL;
    }
    if (cf->args.size != 1 || cf->rets.size != 1 || cf->args.types[0] != FFI_ARG_BUFFER) {
        return ffi_error(cf, "impl_log_softmax: one operand and one result expected");
    }
    const ffi_buffer *x = (const ffi_buffer *)cf->args.items[0];
    const ffi_buffer *o = (const ffi_buffer *)cf->rets.items[0];
    /* out uint32 for float32 x: the float32 bits rounded to odd (impl/_jax.py rounds
     * them again to float16 or bfloat16) */
    int odd = x->dtype == FFI_F32 && o->dtype == FFI_U32;
    if ((x->dtype != FFI_F32 && x->dtype != FFI_F64) || (o->dtype != x->dtype && !odd) ||
        x->rank < 1 || o->rank != x->rank) {
        return ffi_error(cf, "impl_log_softmax: x float32/float64 of rank >= 1, out like x "
                             "(or uint32 for float32 x) expected");
    }
    Py_ssize_t nrows = 1;
    for (int64_t i = 0; i < x->rank; i++) {
        if (o->dims[i] != x->dims[i]) {
            return ffi_error(cf, "impl_log_softmax: the result's shape does not match x");
        }
        nrows *= i < x->rank - 1 ? x->dims[i] : 1;
    }
    Py_ssize_t n = x->dims[x->rank - 1];
    if (nrows == 0 || n == 0) {
        return NULL;
    }
    int32_t *bad = malloc((size_t)nrows * sizeof(int32_t));
    if (bad == NULL) {
        return ffi_error(cf, "impl_log_softmax: out of memory");
    }
    row_job job = {.x = x->data, .out = o->data, .bad = bad, .nrows = nrows, .n = n,
                   .f64 = x->dtype == FFI_F64, .out_kind = odd ? OUT_F32_ODD : OUT_F32};
#if defined(__SSE2__)
    /* XLA runs its CPU threads with subnormals flushed to zero (FTZ) and read as zero
     * (DAZ); the kernels need IEEE arithmetic (a subnormal result is a correctly
     * rounded one). Threads started here inherit the state set here. */
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr & ~(0x8000u | 0x0040u));
    rows_threads(&job, __atomic_load_n(&default_threads, __ATOMIC_RELAXED));
    _mm_setcsr(csr);
#else
    rows_threads(&job, __atomic_load_n(&default_threads, __ATOMIC_RELAXED));
#endif
    /* The rows the kernels declined are all special-valued: their outputs are exact */
    for (Py_ssize_t r = 0; r < nrows; r++) {
        if (bad[r]) {
            if (job.f64) {
                special_whole_f64((const double *)x->data + r * n, (double *)o->data + r * n, n);
            }
            else {
                special_whole_f32((const float *)x->data + r * n, (float *)o->data + r * n, n);
            }
        }
    }
    free(bad);
    return NULL;
}

PyDoc_STRVAR(ffi_handler_doc,
"ffi_handler() -> PyCapsule\n\n"
"The XLA FFI handler that runs the row kernels in a JAX program on CPU (see\n"
"impl/_jax.py), for jax.ffi.register_ffi_target.");

static PyObject *
py_ffi_handler(PyObject *self, PyObject *noargs)
{
    return PyCapsule_New((void *)ffi_log_softmax, NULL, NULL);
}

PyDoc_STRVAR(set_threads_doc,
"set_threads(k) -> None\n\n"
"The threads the XLA handler's calls may use (impl.set_num_threads sets it).");

static PyObject *
py_set_threads(PyObject *self, PyObject *args)
{
    int k;
    if (!PyArg_ParseTuple(args, "i", &k)) {
        return NULL;
    }
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "set_threads needs k >= 1");
        return NULL;
    }
    __atomic_store_n(&default_threads, k > MAX_THREADS ? MAX_THREADS : k, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"ffi_handler", py_ffi_handler, METH_NOARGS, ffi_handler_doc},
    {"set_threads", py_set_threads, METH_VARARGS, set_threads_doc},
    {"use", py_use, METH_VARARGS, use_doc},
    {"rows", py_rows, METH_VARARGS, rows_doc},
    {"partial", py_partial, METH_VARARGS, partial_doc},
    {"write", py_write, METH_VARARGS, write_doc},
    {"log1p_dd", py_log1p_dd, METH_VARARGS, log1p_dd_doc},
    {"combine_rows", py_combine_rows, METH_VARARGS, combine_rows_doc},
    {"partial_rows", py_partial_rows, METH_VARARGS, partial_rows_doc},
    {"write_rows", py_write_rows, METH_VARARGS, write_rows_doc},
    {"tiny_log", py_tiny_log, METH_VARARGS, tiny_log_doc},
    {"exp_dd", py_exp_dd, METH_VARARGS, exp_dd_doc},
    {"exp_short", py_exp_short, METH_VARARGS, exp_short_doc},
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
    use_avx2(avx2_available());
    return PyModule_Create(&module);
}
