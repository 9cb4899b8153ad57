/* csrc/passes_avx2.h: the AVX2 and FMA variants of passes.h's maxima, sums and large
 * writes (built where HAVE_AVX2_PATH: GCC or Clang on x86-64), the same operations
 * lane by lane, so the same bits; then avx2_available() and use_avx2(), which set
 * passes.h's function pointers to one path or the other. Uses common.h, dd_math.h and
 * passes.h; calls no Python API. use_avx2() is called by bindings.h (use) and by
 * PyInit__kernel in _kernel.c. */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256d
v_set(double v)
{
    return _mm256_set1_pd(v);
}

/* lanes_dd.h's steps on four lanes: the v_ functions */
#define LN(f) v_##f
#define LATTR AVX2
#define LV __m256d
#define LVI __m256i
#define LSET(v) v_set(v)
#define LZERO() _mm256_setzero_pd()
#define LADD _mm256_add_pd
#define LSUB _mm256_sub_pd
#define LMUL _mm256_mul_pd
#define LDIV _mm256_div_pd
#define LFMADD _mm256_fmadd_pd
#define LFMSUB _mm256_fmsub_pd
#define LFNMADD _mm256_fnmadd_pd
#define LFLOOR _mm256_floor_pd
#define LCASTI _mm256_castpd_si256
#define LCASTD _mm256_castsi256_pd
#define LSUB64 _mm256_sub_epi64
#define LAND64 _mm256_and_si256
#define LSRL64 _mm256_srli_epi64
#define LSLL64 _mm256_slli_epi64
#define LSET64 _mm256_set1_epi64x
#define LLOOKUP(tab, j) _mm256_i64gather_pd(tab, j, 8)
#define LSELECT_LT(x, c, a, b) _mm256_blendv_pd(a, b, _mm256_cmp_pd(x, c, _CMP_LT_OQ))
#include "lanes_dd.h"

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
    __m256d q = v_set(1.0 / 5040.0);
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 720.0));
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 120.0));
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 24.0));
    q = _mm256_fmadd_pd(q, rh, v_set(1.0 / 6.0));
    q = _mm256_fmadd_pd(q, rh, v_set(0.5));
    q = _mm256_mul_pd(q, _mm256_mul_pd(rh, rh));
    __m256d ql = _mm256_add_pd(_mm256_fmadd_pd(rl, _mm256_add_pd(rh, q), rl), q);
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

/* write_f32 on the AVX2 path: rounding to nearest into float32 goes to
 * write_f32_near_avx2; the rest (to odd, and into float64 for float16 and bfloat16
 * outputs) four entries at a time, with the rounding test in a cheap form on v = ((x - m) - L_hi) - L_lo in double (three roundings: within
 * 2^-51 |v| of (x - m) - L, as |x - m| <= |v|): the exact value lies within
 * tol = delta + 2^-51 |v| of v. Where |v| is in float32's normal range, v's 29 low
 * bits (those float32 drops) give its distance, in units of ulp(v), to the float32
 * grid: `low` above the truncation T, 2^29 - low below T's successor, |low - 2^28|
 * from the midpoint between them, and low + 2^27 from the midpoint below T where T is
 * a power of two (the grid halves there). To nearest: where no midpoint lies within
 * tol, v's rounding is the answer. To odd: where no float32 does, the exact value is
 * none, and its rounding to odd is T with the last bit set. -inf entries give -inf.
 * A group with an entry this cannot settle goes through out_f32_checked entry by entry
 * (the full test); both give the correctly rounded answer wherever they settle, so the
 * same bits. One conversion to float32 per group: the loop is bound by them. */
/* filter_f32 on eight lanes, the same operations; returns the lanes it settles as a
 * mask of bits and their answers in *res */
AVX2 static inline int
v_filter_f32(__m256 xv, __m256 CH, __m256 NCH, __m256 CL, __m256 K, __m256 *res)
{
    const __m256 ABS = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX));
    const __m256 NINF = _mm256_set1_ps(-INFINITY);
    __m256 s = _mm256_sub_ps(xv, CH);
    __m256 bb = _mm256_sub_ps(s, xv);
    __m256 se = _mm256_add_ps(_mm256_sub_ps(xv, _mm256_sub_ps(s, bb)), _mm256_sub_ps(NCH, bb));
    __m256 e = _mm256_sub_ps(se, CL);
    __m256 v = _mm256_add_ps(s, e);
    __m256 b2 = _mm256_sub_ps(v, s);
    __m256 r2 = _mm256_add_ps(_mm256_sub_ps(s, _mm256_sub_ps(v, b2)), _mm256_sub_ps(e, b2));
    __m256 av = _mm256_and_ps(v, ABS);
    __m256 pred = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_castps_si256(av), _mm256_set1_epi32(1)));
    __m256 half = _mm256_mul_ps(_mm256_sub_ps(av, pred), _mm256_set1_ps(0.5f));
    __m256 slack = _mm256_add_ps(_mm256_mul_ps(_mm256_and_ps(e, ABS), _mm256_set1_ps(0x1p-23f)), K);
    __m256 tot = _mm256_add_ps(_mm256_and_ps(r2, ABS), slack);
    __m256 ninf = _mm256_cmp_ps(xv, NINF, _CMP_EQ_OQ);
    __m256 ok = _mm256_or_ps(_mm256_cmp_ps(tot, half, _CMP_LT_OQ), ninf);
    *res = _mm256_blendv_ps(v, NINF, ninf);
    return _mm256_movemask_ps(ok);
}

/* write_f32's rounding to nearest into float32 on the AVX2 path: filter_f32 on eight
 * lanes, two vectors a step; a lane it leaves goes to out_f32_checked, as in the
 * portable loop */
AVX2 static Py_ssize_t
write_f32_near_avx2(const float *x, float *o, Py_ssize_t n, float m, lbound L)
{
    f32_filter c = filter_consts(m, L);
    const __m256 CH = _mm256_set1_ps(c.ch), NCH = _mm256_set1_ps(-c.ch);
    const __m256 CL = _mm256_set1_ps(c.cl), K = _mm256_set1_ps(c.k);
    double md = (double)m;
    Py_ssize_t i = 0, unsure = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 r0, r1;
        int k0 = v_filter_f32(_mm256_loadu_ps(x + i), CH, NCH, CL, K, &r0);
        int k1 = v_filter_f32(_mm256_loadu_ps(x + i + 8), CH, NCH, CL, K, &r1);
        _mm256_storeu_ps(o + i, r0);
        _mm256_storeu_ps(o + i + 8, r1);
        int open = (~(k0 | (k1 << 8))) & 0xffff;
        while (open) {
            int l = __builtin_ctz(open);
            open &= open - 1;
            int u = 0;
            o[i + l] = out_f32_checked(x[i + l], md, L.hi, L.lo, L.delta, 0, &u);
            unsure += u;
        }
    }
    return unsure + write_f32_near_portable(x + i, o + i, n - i, m, L);
}

AVX2 static Py_ssize_t
write_f32_avx2(const float *x, void *out, int out_kind, Py_ssize_t n, float m, lbound L)
{
    if (out_kind == OUT_F32) {
        return write_f32_near_avx2(x, (float *)out, n, m, L);
    }
    const __m256d MD = v_set((double)m), LH = v_set(L.hi), LL = v_set(L.lo);
    const __m256d DELTA = v_set(L.delta), REL = v_set(0x1p-51);
    const __m256d TINY = v_set(0x1p-126), BIG = v_set(FLT_MAX), NINF = v_set(-INFINITY);
    const __m256d ABS = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    const __m256i LOW = _mm256_set1_epi64x((INT64_C(1) << 29) - 1);
    const __m256i KEEP = _mm256_set1_epi64x(INT64_C(1) << 29);
    const __m256i MAGIC = _mm256_castpd_si256(v_set(0x1p52));
    const __m256i EXP = _mm256_set1_epi64x(INT64_C(0x7ff) << 52);
    const __m256i SCALE = _mm256_set1_epi64x((int64_t)((uint64_t)2098 << 52)); /* 2^(52 - e) */
    const __m256d P52 = v_set(0x1p52), P28 = v_set(0x1p28), P27 = v_set(0x1p27);
    const __m256d P29 = v_set(0x1p29);
    const int odd = out_kind != OUT_F32;
    double md = (double)m;
    Py_ssize_t i = 0, unsure = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d v = _mm256_sub_pd(_mm256_sub_pd(_mm256_sub_pd(xd, MD), LH), LL);
        __m256d av = _mm256_and_pd(v, ABS);
        __m256i bits = _mm256_castpd_si256(v);
        /* the low 29 bits as a double (exact), and tol in units of ulp(v) (times a
         * power of two: exact) */
        __m256d low = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, LOW), MAGIC)), P52);
        __m256d units = _mm256_castsi256_pd(_mm256_sub_epi64(SCALE, _mm256_and_si256(bits, EXP)));
        __m256d t = _mm256_mul_pd(_mm256_add_pd(DELTA, _mm256_mul_pd(av, REL)), units);
        __m256d normal = _mm256_and_pd(_mm256_cmp_pd(av, TINY, _CMP_GE_OQ),
                                       _mm256_cmp_pd(av, BIG, _CMP_LE_OQ));
        __m256d dist;
        __m128 res;
        if (odd) {
            dist = _mm256_min_pd(low, _mm256_sub_pd(P29, low));
            __m256i tr = _mm256_or_si256(_mm256_andnot_si256(LOW, bits), KEEP);
            res = _mm256_cvtpd_ps(_mm256_castsi256_pd(tr)); /* exact: T, last bit set */
        }
        else {
            dist = _mm256_min_pd(_mm256_and_pd(_mm256_sub_pd(low, P28), ABS),
                                 _mm256_add_pd(low, P27));
            res = _mm256_cvtpd_ps(v);
        }
        __m256d ok = _mm256_and_pd(normal, _mm256_cmp_pd(dist, t, _CMP_GT_OQ));
        __m256d ninf = _mm256_cmp_pd(xd, NINF, _CMP_EQ_OQ);
        ok = _mm256_or_pd(ok, ninf);
        res = _mm_blendv_ps(res, _mm_set1_ps(-INFINITY), _mm256_cvtpd_ps(ninf));
        if (_mm256_movemask_pd(ok) == 15) {
            if (out_kind == OUT_F64) {
                _mm256_storeu_pd((double *)out + i, _mm256_cvtps_pd(res));
            }
            else {
                _mm_storeu_ps((float *)out + i, res);
            }
            continue;
        }
        for (int l = 0; l < 4; l++) {
            int u = 0;
            float r = out_f32_checked(x[i + l], md, L.hi, L.lo, L.delta, odd, &u);
            unsure += u;
            if (out_kind == OUT_F64) {
                ((double *)out)[i + l] = (double)r;
            }
            else {
                ((float *)out)[i + l] = r;
            }
        }
    }
    for (; i < n; i++) {
        int u = 0;
        float r = out_f32_checked(x[i], md, L.hi, L.lo, L.delta, odd, &u);
        unsure += u;
        if (out_kind == OUT_F64) {
            ((double *)out)[i] = (double)r;
        }
        else {
            ((float *)out)[i] = r;
        }
    }
    return unsure;
}

/* write_f64 on the AVX2 path, with non-temporal stores (stream) or not, four entries
 * at a time. y = s + e + el (split_y's parts), v = s + e rounded once, r = (s + e) - v
 * (exact), rr = r + el: y - v = rr within delta and the roundings of el and rr (2^-52
 * of |el| + |rr|). hs is half the gap to v's neighbour on rr's side (a quarter ulp
 * below a power of two). Where |rr| is below hs by more than that, v is the answer;
 * where it is above by more, the neighbour v + 2 hs sign(rr) (s + e on a midpoint, one
 * output in eight on rows of normal logits whose x, max and L lie on grids finer
 * than y's, and el past it). Any other lane takes out_f64_checked for its group: the
 * answers are the correctly rounded ones wherever either decides, and
 * out_f64_checked's everywhere else, so the same bits as the portable loop, and the
 * same count of undecided outputs. */
AVX2 static inline Py_ssize_t
write_f64_avx2_to(const double *x, double *o, Py_ssize_t n, double m, lbound L, int stream)
{
    Py_ssize_t i = 0;
    while (stream && i < n && ((uintptr_t)(o + i) & 31) != 0) {
        i++;
    }
    Py_ssize_t unsure = write_f64_portable(x, o, i, m, L); /* to the first 32-byte boundary */
    const __m256d M = v_set(m), NM = v_set(-m), NLH = v_set(-L.hi), LL = v_set(L.lo);
    const __m256d BIG = v_set(DBL_MAX), ABS = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    const __m256d SIGN = v_set(-0.0), HALF = v_set(0.5), TINY = v_set(0x1p-969);
    const __m256d DELTA = v_set(L.delta), U = v_set(0x1p-52);
    const __m256i EXP = _mm256_set1_epi64x(INT64_C(0x7ff) << 52);
    const __m256i MANT = _mm256_set1_epi64x((INT64_C(1) << 52) - 1);
    const __m256i E53 = _mm256_set1_epi64x(INT64_C(53) << 52);
    for (; i + 4 <= n; i += 4) {
        __m256d xv = _mm256_loadu_pd(x + i);
        __m256d dl, dh = v_two_diff(xv, M, NM, &dl);
        __m256d sl, sh = v_two_sum(dh, NLH, &sl);
        __m256d wl, e = v_two_sum(sl, dl, &wl);
        __m256d el = _mm256_sub_pd(wl, LL);
        __m256d v = _mm256_add_pd(sh, e);
        __m256d r = _mm256_sub_pd(e, _mm256_sub_pd(v, sh));
        __m256d rr = _mm256_add_pd(r, el);
        __m256d av = _mm256_and_pd(v, ABS), arr = _mm256_and_pd(rr, ABS);
        __m256d ael = _mm256_and_pd(el, ABS);
        __m256i vb = _mm256_castpd_si256(av);
        __m256d h = _mm256_castsi256_pd(_mm256_sub_epi64(_mm256_and_si256(vb, EXP), E53));
        /* toward zero from a power of two the gap halves: rr's sign against v's */
        __m256d pow2 = _mm256_castsi256_pd(
            _mm256_cmpeq_epi64(_mm256_and_si256(vb, MANT), _mm256_setzero_si256()));
        __m256d inward = _mm256_xor_pd(_mm256_and_pd(rr, SIGN), _mm256_and_pd(v, SIGN));
        __m256d down = _mm256_and_pd(pow2, _mm256_castsi256_pd(_mm256_cmpeq_epi64(
                                               _mm256_castpd_si256(inward),
                                               _mm256_castpd_si256(SIGN))));
        __m256d hs = _mm256_blendv_pd(h, _mm256_mul_pd(h, HALF), down);
        __m256d slack = _mm256_add_pd(DELTA, _mm256_mul_pd(U, _mm256_add_pd(arr, ael)));
        __m256d inside = _mm256_cmp_pd(_mm256_add_pd(arr, slack), hs, _CMP_LT_OQ);
        __m256d past = _mm256_cmp_pd(_mm256_sub_pd(arr, slack), hs, _CMP_GT_OQ);
        /* the neighbour on rr's side: v + 2 hs with rr's sign */
        __m256d step = _mm256_or_pd(_mm256_add_pd(hs, hs), _mm256_and_pd(rr, SIGN));
        __m256d res = _mm256_blendv_pd(v, _mm256_add_pd(v, step), past);
        __m256d ok = _mm256_and_pd(_mm256_cmp_pd(av, TINY, _CMP_GE_OQ),
                                   _mm256_or_pd(inside, past));
        __m256d finite = _mm256_cmp_pd(_mm256_and_pd(sh, ABS), BIG, _CMP_LE_OQ);
        res = _mm256_blendv_pd(sh, res, finite);
        ok = _mm256_or_pd(ok, _mm256_xor_pd(finite, _mm256_castsi256_pd(_mm256_set1_epi64x(-1))));
        if (_mm256_movemask_pd(ok) != 15) {
            double lane[4];
            for (int l = 0; l < 4; l++) {
                int u = 0;
                lane[l] = out_f64_checked(x[i + l], m, L.hi, L.lo, L.delta, &u);
                unsure += u;
            }
            res = _mm256_loadu_pd(lane);
        }
        if (stream) {
            _mm256_stream_pd(o + i, res);
        }
        else {
            _mm256_storeu_pd(o + i, res);
        }
    }
    return unsure + write_f64_portable(x + i, o + i, n - i, m, L);
}

AVX2 static Py_ssize_t
stream_f64_avx2(const double *x, double *o, Py_ssize_t n, double m, lbound L)
{
    return write_f64_avx2_to(x, o, n, m, L, 1);
}

AVX2 static Py_ssize_t
write_f64_avx2(const double *x, double *o, Py_ssize_t n, double m, lbound L)
{
    return write_f64_avx2_to(x, o, n, m, L, 0);
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

/* The general loop (any c; terms in [e^-745.5, e^-706) scaled in two steps) */
AVX2 static void
partial_f64_avx2_general(const double *x, Py_ssize_t n, double m, double c, dd *sum,
                         Py_ssize_t *at_max)
{
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

AVX2 static void
partial_f64_avx2(const double *x, Py_ssize_t n, double m, double c, dd *sum, Py_ssize_t *at_max)
{
    if (c == 0.0 && partial_f64_avx2_c0(x, n, m, sum, at_max)) {
        return;
    }
    partial_f64_avx2_general(x, n, m, c, sum, at_max);
}
/* term_f32 (exp_short, and 0 for d = 0 and -inf) on `ways` vectors of four lanes at
 * once, step by step: one vector's exponential is a chain of about 25 dependent
 * operations, longer than the scheduler can overlap with the next vector's when they
 * come one after another; interleaved, each step offers `ways` independent operations
 * (a constant where it is called: the loops unroll). The table 2^(j/4) lives in one
 * register. */
#define SUM_WAYS 4
AVX2 static inline void
v_terms_f32(const __m256d *d, __m256d *t, int ways)
{
    __m256d ks[SUM_WAYS], kf[SUM_WAYS], r[SUM_WAYS], p[SUM_WAYS], s[SUM_WAYS];
    __m256i k[SUM_WAYS];
    const __m256 tab = _mm256_castpd_ps(_mm256_loadu_pd(EXP2_4));
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        __m256d dc = _mm256_max_pd(d[q], v_set(-700.0));
        ks[q] = _mm256_fmadd_pd(dc, v_set(INV_L4), v_set(SHIFTER));
        kf[q] = _mm256_sub_pd(ks[q], v_set(SHIFTER));
        k[q] = _mm256_sub_epi64(_mm256_castpd_si256(ks[q]), _mm256_castpd_si256(v_set(SHIFTER)));
        r[q] = _mm256_fnmadd_pd(kf[q], v_set(L4_LO), _mm256_fnmadd_pd(kf[q], v_set(L4_HI), dc));
        p[q] = _mm256_fmadd_pd(v_set(1.0 / 720.0), r[q], v_set(1.0 / 120.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm256_fmadd_pd(p[q], r[q], v_set(1.0 / 24.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm256_fmadd_pd(p[q], r[q], v_set(1.0 / 6.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm256_fmadd_pd(p[q], r[q], v_set(0.5));
        __m256i j2 = _mm256_slli_epi64(_mm256_and_si256(k[q], _mm256_set1_epi64x(3)), 1);
        __m256i idx = _mm256_or_si256(
            j2, _mm256_slli_epi64(_mm256_add_epi64(j2, _mm256_set1_epi64x(1)), 32));
        __m256i e = _mm256_srli_epi64(_mm256_add_epi64(k[q], _mm256_set1_epi64x(1023 * 4)), 2);
        s[q] = _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
        ks[q] = _mm256_castps_pd(_mm256_permutevar8x32_ps(tab, idx)); /* now 2^(j/4) */
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm256_fmadd_pd(p[q], r[q], v_set(1.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm256_fmadd_pd(p[q], r[q], v_set(1.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        __m256d v = _mm256_mul_pd(_mm256_mul_pd(p[q], ks[q]), s[q]);
        t[q] = _mm256_andnot_pd(_mm256_cmp_pd(d[q], _mm256_add_pd(d[q], d[q]), _CMP_EQ_OQ), v);
    }
}

AVX2 static void
partial_f32_avx2(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    const __m256 M8 = _mm256_set1_ps(m);
    const __m256d MD = v_set((double)m);
    __m256d A0 = _mm256_setzero_pd(), A1 = _mm256_setzero_pd();
    Py_ssize_t count = 0, i = 0;
    /* entry i in lane i % 8 (A0: lanes 0 to 3, A1: 4 to 7), each lane's terms added
     * in the entries' order in blocks of SUM_BLOCK, as partial_f32_scalar does */
    while (i + 8 <= n) {
        Py_ssize_t end = n - i >= SUM_BLOCK ? i + SUM_BLOCK : i + (n - i) / 8 * 8;
        __m256d B0 = _mm256_setzero_pd(), B1 = _mm256_setzero_pd();
        for (; i + 4 * SUM_WAYS <= end; i += 4 * SUM_WAYS) {
            __m256d d[SUM_WAYS], t[SUM_WAYS];
#pragma GCC unroll 4
            for (int q = 0; q < SUM_WAYS; q += 2) {
                __m256 X = _mm256_loadu_ps(x + i + 4 * q);
                count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(X, M8, _CMP_EQ_OQ)));
                d[q] = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(X)), MD);
                d[q + 1] = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(X, 1)), MD);
            }
            v_terms_f32(d, t, SUM_WAYS);
#pragma GCC unroll 4
            for (int q = 0; q < SUM_WAYS; q += 2) {
                B0 = _mm256_add_pd(B0, t[q]);
                B1 = _mm256_add_pd(B1, t[q + 1]);
            }
        }
        for (; i < end; i += 8) {
            __m256 X = _mm256_loadu_ps(x + i);
            count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(X, M8, _CMP_EQ_OQ)));
            __m256d d[2] = {_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(X)), MD),
                            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(X, 1)), MD)};
            __m256d t[2];
            v_terms_f32(d, t, 2);
            B0 = _mm256_add_pd(B0, t[0]);
            B1 = _mm256_add_pd(B1, t[1]);
        }
        A0 = _mm256_add_pd(A0, B0);
        A1 = _mm256_add_pd(A1, B1);
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

/* ---- the slow path's sums, four lanes (rounding.h's exact_sum_*) ---- */

/* The terms of four entries (as doubles) below m, and the lanes of the sum; the same
 * operations as term_dd2 lane by lane */
AVX2 static inline void
v_exact_step(__m256d xv, __m256d M, __m256d NM, __m256d *AH, __m256d *AL, __m256i *K)
{
    __m256d dl, dh = v_two_diff(xv, M, NM, &dl);
    __m256d keep = _mm256_and_pd(_mm256_cmp_pd(xv, M, _CMP_NEQ_OQ),
                                 _mm256_cmp_pd(dh, v_set(-746.0), _CMP_GE_OQ));
    __m256d at = _mm256_cmp_pd(xv, M, _CMP_EQ_OQ);
    *K = _mm256_sub_epi64(*K, _mm256_castpd_si256(at));
    /* dropped lanes computed on 0 (any value in range), then zeroed */
    dh = _mm256_and_pd(dh, keep);
    dl = _mm256_and_pd(dl, keep);
    __m256d el, eh = v_exp_dd2_scaled(dh, dl, &el);
    eh = _mm256_and_pd(eh, keep);
    el = _mm256_and_pd(el, keep);
    *AH = v_dd_add(*AH, *AL, eh, el, AL);
}

AVX2 static void
v_exact_finish(__m256d AH, __m256d AL, __m256i K, dd tail, Py_ssize_t ktail, dd *T,
               Py_ssize_t *k)
{
    double ah[4], al[4];
    int64_t kk[4];
    _mm256_storeu_pd(ah, AH);
    _mm256_storeu_pd(al, AL);
    _mm256_storeu_si256((__m256i *)kk, K);
    dd s = {0.0, 0.0};
    Py_ssize_t c = ktail;
    for (int l = 0; l < 4; l++) {
        s = dd_add(s, (dd){ah[l], al[l]});
        c += (Py_ssize_t)kk[l];
    }
    *T = dd_add(s, tail);
    *k = c;
}

AVX2 static void
exact_sum_f64_avx2(const double *x, Py_ssize_t n, double m, dd *T, Py_ssize_t *k)
{
    const __m256d M = v_set(m), NM = v_set(-m);
    __m256d AH = _mm256_setzero_pd(), AL = _mm256_setzero_pd();
    __m256i K = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v_exact_step(_mm256_loadu_pd(x + i), M, NM, &AH, &AL, &K);
    }
    dd tail;
    Py_ssize_t ktail;
    exact_sum_f64_portable(x + i, n - i, m, &tail, &ktail);
    v_exact_finish(AH, AL, K, tail, ktail, T, k);
}

AVX2 static void
exact_sum_f32_avx2(const float *x, Py_ssize_t n, float m, dd *T, Py_ssize_t *k)
{
    const __m256d M = v_set((double)m), NM = v_set(-(double)m);
    __m256d AH = _mm256_setzero_pd(), AL = _mm256_setzero_pd();
    __m256i K = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v_exact_step(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), M, NM, &AH, &AL, &K);
    }
    dd tail;
    Py_ssize_t ktail;
    exact_sum_f32_portable(x + i, n - i, m, &tail, &ktail);
    v_exact_finish(AH, AL, K, tail, ktail, T, k);
}

/* The code path of the maxima, the sums and the large writes: AVX2 (on: where
 * avx2_available()) or portable. GCC 12 takes the addresses of the target_clones
 * (HOT) functions below for those of locals once use_path() calls this: a false
 * -Wdangling-pointer, silenced here only. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
static void
use_avx2(int on)
{
    partial_f64 = partial_f64_scalar;
    partial_f32 = partial_f32_scalar;
    max_f64 = max_f64_portable;
    max_f32 = max_f32_portable;
    stream_f64 = NULL;
    write_f32_fast = NULL;
    write_f64_fast = NULL;
    exact_sum_f32 = exact_sum_f32_portable;
    exact_sum_f64 = exact_sum_f64_portable;
    partial_f32_mid = partial_f32_mid_portable;
    softmax_write_f32 = softmax_write_f32_portable;
#ifdef HAVE_AVX2_PATH
    if (on) {
        exact_sum_f32 = exact_sum_f32_avx2;
        exact_sum_f64 = exact_sum_f64_avx2;
        write_f32_fast = write_f32_avx2;
        write_f64_fast = write_f64_avx2;
        partial_f64 = partial_f64_avx2;
        partial_f32 = partial_f32_avx2;
        max_f64 = max_f64_avx2;
        max_f32 = max_f32_avx2;
        stream_f64 = stream_f64_avx2;
    }
#endif
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
