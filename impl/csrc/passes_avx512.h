/* csrc/passes_avx512.h: the AVX-512 variants (AVX512F, DQ, BW and VL) of passes.h's
 * hot passes: float32's maximum, sum and write rounded to nearest, float64's sum (its
 * c = 0 loop) and writes, softmax's float32 sum and writer, and the slow path's sums
 * (their terms on eight lanes, added in the AVX2 path's four): the same operations lane by lane on vectors of eight
 * doubles or sixteen floats, so the same bits as the AVX2 and the portable paths. The
 * sums keep their lanes: entry i in lane i % 8, added in the entries' order, as
 * partial_f32_scalar and partial_f64_scalar do. Then avx512_available() and
 * use_path(), which picks a path by name. Uses common.h, dd_math.h, rounding.h,
 * passes.h and passes_avx2.h; calls no Python API. use_path() is called by
 * bindings.h (use) and by PyInit__kernel in _kernel.c. */

#ifdef HAVE_AVX2_PATH
#define HAVE_AVX512_PATH 1

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

AVX512 static inline __m512d
z_set(double v)
{
    return _mm512_set1_pd(v);
}

AVX512 static float
max_f32_avx512(const float *x, Py_ssize_t n)
{
    __m512 a0 = _mm512_set1_ps(-INFINITY), a1 = a0;
    __mmask16 nan = 0;
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_max_ps(v0, a0); /* keeps the accumulator where the entry is NaN */
        a1 = _mm512_max_ps(v1, a1);
        nan |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q);
    }
    float acc[16], m = -INFINITY;
    int any_nan = nan != 0;
    _mm512_storeu_ps(acc, _mm512_max_ps(a0, a1));
    for (int l = 0; l < 16; l++) {
        m = acc[l] > m ? acc[l] : m;
    }
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        any_nan |= x[i] != x[i];
    }
    return (!any_nan && m - m == 0) ? m : (float)NAN;
}

/* v_terms_f32's terms (term_f32: exp_short, 0 for d = 0 and -inf; with mid, exp_mid's,
 * the same steps after two more) on `ways` vectors of eight lanes, step by step, each added to *B where it is kept (a dropped lane adds
 * nothing, as adding +0 to B >= +0 does). The table 2^(j/4) twice over fills one
 * register, so that k's three low bits pick 2^((k mod 4)/4); 2^floor(k/4) is applied
 * by scalef (exact: the products stay normal for d >= -700). */
#define Z_WAYS 4
AVX512 static inline void
z_terms(const __m512d *d, __m512d *B, int ways, int mid)
{
    __m512d ks[Z_WAYS], kf[Z_WAYS], r[Z_WAYS], p[Z_WAYS];
    const __m512d tab = _mm512_setr_pd(EXP2_4[0], EXP2_4[1], EXP2_4[2], EXP2_4[3], EXP2_4[0],
                                       EXP2_4[1], EXP2_4[2], EXP2_4[3]);
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        __m512d dc = _mm512_max_pd(d[q], z_set(-700.0));
        ks[q] = _mm512_fmadd_pd(dc, z_set(INV_L4), z_set(SHIFTER));
        kf[q] = _mm512_sub_pd(ks[q], z_set(SHIFTER));
        r[q] = _mm512_fnmadd_pd(kf[q], z_set(L4_LO), _mm512_fnmadd_pd(kf[q], z_set(L4_HI), dc));
        /* exp_mid's two extra steps first; exp_short starts at 1/720 */
        __m512d p0 = mid ? _mm512_fmadd_pd(_mm512_fmadd_pd(z_set(1.0 / 40320.0), r[q],
                                                           z_set(1.0 / 5040.0)),
                                           r[q], z_set(1.0 / 720.0))
                         : z_set(1.0 / 720.0);
        p[q] = _mm512_fmadd_pd(p0, r[q], z_set(1.0 / 120.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm512_fmadd_pd(p[q], r[q], z_set(1.0 / 24.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm512_fmadd_pd(p[q], r[q], z_set(1.0 / 6.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm512_fmadd_pd(p[q], r[q], z_set(0.5));
        /* ks's low mantissa bits are k's (ks = 1.5 2^52 + k) */
        ks[q] = _mm512_permutexvar_pd(_mm512_castpd_si512(ks[q]), tab);
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm512_fmadd_pd(p[q], r[q], z_set(1.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        p[q] = _mm512_fmadd_pd(p[q], r[q], z_set(1.0));
    }
#pragma GCC unroll 4
    for (int q = 0; q < ways; q++) {
        __m512d v = _mm512_scalef_pd(_mm512_mul_pd(p[q], ks[q]), _mm512_mul_pd(kf[q], z_set(0.25)));
        __mmask8 drop = _mm512_cmp_pd_mask(d[q], _mm512_add_pd(d[q], d[q]), _CMP_EQ_OQ);
        *B = _mm512_mask_add_pd(*B, (__mmask8)~drop, *B, v);
    }
}

AVX512 static inline void
z_partial_f32(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max, int mid)
{
    const __m512 M16 = _mm512_set1_ps(m);
    const __m256 M8 = _mm256_set1_ps(m);
    const __m512d MD = z_set((double)m);
    __m512d A = _mm512_setzero_pd();
    Py_ssize_t count = 0, i = 0;
    /* entry i in lane i % 8, each lane's terms added in the entries' order in blocks of
     * SUM_BLOCK, as partial_f32_scalar does */
    while (i + 8 <= n) {
        Py_ssize_t end = n - i >= SUM_BLOCK ? i + SUM_BLOCK : i + (n - i) / 8 * 8;
        __m512d B = _mm512_setzero_pd();
        for (; i + 8 * Z_WAYS <= end; i += 8 * Z_WAYS) {
            __m512d d[Z_WAYS];
#pragma GCC unroll 4
            for (int q = 0; q < Z_WAYS; q += 2) {
                __m512 X = _mm512_loadu_ps(x + i + 8 * q);
                count += __builtin_popcount(_mm512_cmp_ps_mask(X, M16, _CMP_EQ_OQ));
                d[q] = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(X)), MD);
                d[q + 1] = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(X, 1)), MD);
            }
            z_terms(d, &B, Z_WAYS, mid);
        }
        for (; i < end; i += 8) {
            __m256 X = _mm256_loadu_ps(x + i);
            count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(X, M8, _CMP_EQ_OQ)));
            __m512d d[1] = {_mm512_sub_pd(_mm512_cvtps_pd(X), MD)};
            z_terms(d, &B, 1, mid);
        }
        A = _mm512_add_pd(A, B);
    }
    double acc[8];
    _mm512_storeu_pd(acc, A);
    double md = (double)m;
    for (; i < n; i++) {
        acc[0] += term_quarter(x[i], md, mid);
        count += x[i] == m;
    }
    *sum = finish_lanes8(acc);
    *at_max = count;
}

AVX512 static void
partial_f32_avx512(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    z_partial_f32(x, n, m, sum, at_max, 0);
}

AVX512 static void
partial_f32_mid_avx512(const float *x, Py_ssize_t n, float m, double *sum, Py_ssize_t *at_max)
{
    z_partial_f32(x, n, m, sum, at_max, 1);
}

/* exp_mid on eight lanes (z_terms' steps with mid, its table in a register), for the
 * softmax writer */
AVX512 static inline __m512d
z_exp_mid(__m512d z)
{
    const __m512d tab = _mm512_setr_pd(EXP2_4[0], EXP2_4[1], EXP2_4[2], EXP2_4[3], EXP2_4[0],
                                       EXP2_4[1], EXP2_4[2], EXP2_4[3]);
    __m512d dc = _mm512_max_pd(z, z_set(-700.0));
    __m512d ks = _mm512_fmadd_pd(dc, z_set(INV_L4), z_set(SHIFTER));
    __m512d kf = _mm512_sub_pd(ks, z_set(SHIFTER));
    __m512d r = _mm512_fnmadd_pd(kf, z_set(L4_LO), _mm512_fnmadd_pd(kf, z_set(L4_HI), dc));
    __m512d p = _mm512_fmadd_pd(z_set(1.0 / 40320.0), r, z_set(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, z_set(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, z_set(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, z_set(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, z_set(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, z_set(0.5));
    p = _mm512_fmadd_pd(p, r, z_set(1.0));
    p = _mm512_fmadd_pd(p, r, z_set(1.0));
    __m512d t = _mm512_permutexvar_pd(_mm512_castpd_si512(ks), tab);
    return _mm512_scalef_pd(_mm512_mul_pd(p, t), _mm512_mul_pd(kf, z_set(0.25)));
}

/* round_p on eight lanes (P1 = p - 1, EMIN = emin), the same operations */
AVX512 static inline __m512d
z_round_p(__m512d v, __m512i P1, __m512i EMIN)
{
    __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(_mm512_castpd_si512(v), 52),
                                 _mm512_set1_epi64(1023));
    __m512i q = _mm512_sub_epi64(_mm512_max_epi64(e, EMIN), P1);
    __m512i cb = _mm512_or_si512(_mm512_slli_epi64(_mm512_add_epi64(q, _mm512_set1_epi64(52 + 1023)), 52),
                                 _mm512_set1_epi64(INT64_C(1) << 51));
    __m512d c = _mm512_castsi512_pd(cb);
    return _mm512_sub_pd(_mm512_add_pd(v, c), c);
}

/* softmax_write_f32_portable on eight lanes: its operations, tests and flags; returns
 * the mask of open lanes and the outputs in *out */
AVX512 static inline __mmask8
z_softmax_write8(__m256 X, __m512d MD, __m512d LH, __m512d DELTA, __m512i P1, __m512i EMIN,
                 int narrow, __m256 *out)
{
    __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(X), MD);
    __m512d z = _mm512_sub_pd(d, LH);
    __m512d v = z_exp_mid(z);
    __m512d e_z = _mm512_add_pd(DELTA, _mm512_mul_pd(_mm512_add_pd(_mm512_abs_pd(d),
                                                                  _mm512_abs_pd(z)),
                                                    z_set(0x1p-52)));
    __m512d f = _mm512_add_pd(_mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(e_z, z_set(1.0 + 0x1p-30)),
                                                          z_set(EXP_MID_REL)),
                                            z_set(1.0 + 0x1p-50)),
                              z_set(0x1p-52));
    __m512d err = _mm512_mul_pd(f, v);
    __mmask8 u;
    __m256 r;
    if (narrow) {
        __m512d a = z_round_p(_mm512_sub_pd(v, err), P1, EMIN);
        __m512d b = z_round_p(_mm512_add_pd(v, err), P1, EMIN);
        u = _mm512_cmp_pd_mask(a, b, _CMP_NEQ_UQ);
        r = _mm512_cvtpd_ps(a);
    }
    else {
        __m256 a = _mm512_cvtpd_ps(_mm512_sub_pd(v, err)), b = _mm512_cvtpd_ps(_mm512_add_pd(v, err));
        u = _mm256_cmp_ps_mask(a, b, _CMP_NEQ_UQ);
        r = _mm512_cvtpd_ps(v);
    }
    __mmask8 zero = _mm512_cmp_pd_mask(z, z_set(-105.0), _CMP_LT_OQ);
    u |= _mm512_cmp_pd_mask(e_z, z_set(0x1p-30), _CMP_NLT_UQ);
    *out = _mm256_maskz_mov_ps((__mmask8)~zero, r);
    return u & (__mmask8)~zero;
}

AVX512 static Py_ssize_t
softmax_write_f32_avx512(const float *x, float *o, unsigned char *open, Py_ssize_t n, float m,
                         double Lh, double delta, int p, int emin)
{
    const __m512d MD = z_set((double)m), LH = z_set(Lh), DELTA = z_set(delta);
    const __m512i P1 = _mm512_set1_epi64(p - 1), EMIN = _mm512_set1_epi64(emin);
    const int narrow = p != 24;
    Py_ssize_t i = 0, k = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 o0, o1;
        unsigned u0 = z_softmax_write8(_mm256_loadu_ps(x + i), MD, LH, DELTA, P1, EMIN, narrow, &o0);
        unsigned u1 =
            z_softmax_write8(_mm256_loadu_ps(x + i + 8), MD, LH, DELTA, P1, EMIN, narrow, &o1);
        _mm256_storeu_ps(o + i, o0);
        _mm256_storeu_ps(o + i + 8, o1);
        __mmask16 u = (__mmask16)(u0 | (u1 << 8));
        _mm_storeu_si128((__m128i *)(open + i), _mm_maskz_set1_epi8(u, 1));
        k += __builtin_popcount(u);
    }
    return k + softmax_write_f32_portable(x + i, o + i, open + i, n - i, m, Lh, delta, p, emin);
}

/* filter_f32 on sixteen lanes, the same operations; returns the lanes it settles as a
 * mask and their answers in *res */
AVX512 static inline __mmask16
z_filter_f32(__m512 xv, __m512 CH, __m512 NCH, __m512 CL, __m512 K, __m512 *res)
{
    const __m512 NINF = _mm512_set1_ps(-INFINITY);
    __m512 s = _mm512_sub_ps(xv, CH);
    __m512 bb = _mm512_sub_ps(s, xv);
    __m512 se = _mm512_add_ps(_mm512_sub_ps(xv, _mm512_sub_ps(s, bb)), _mm512_sub_ps(NCH, bb));
    __m512 e = _mm512_sub_ps(se, CL);
    __m512 v = _mm512_add_ps(s, e);
    __m512 b2 = _mm512_sub_ps(v, s);
    __m512 r2 = _mm512_add_ps(_mm512_sub_ps(s, _mm512_sub_ps(v, b2)), _mm512_sub_ps(e, b2));
    __m512 av = _mm512_abs_ps(v);
    __m512 pred = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_castps_si512(av), _mm512_set1_epi32(1)));
    __m512 half = _mm512_mul_ps(_mm512_sub_ps(av, pred), _mm512_set1_ps(0.5f));
    __m512 slack = _mm512_add_ps(_mm512_mul_ps(_mm512_abs_ps(e), _mm512_set1_ps(0x1p-23f)), K);
    __m512 tot = _mm512_add_ps(_mm512_abs_ps(r2), slack);
    __mmask16 ninf = _mm512_cmp_ps_mask(xv, NINF, _CMP_EQ_OQ);
    *res = _mm512_mask_blend_ps(ninf, v, NINF);
    return _mm512_cmp_ps_mask(tot, half, _CMP_LT_OQ) | ninf;
}

/* write_f32's rounding to nearest into float32 on sixteen lanes, two vectors a step; a
 * lane the filter leaves goes to out_f32_checked, as in the other loops, and the last
 * n % 32 entries to the AVX2 loop */
AVX512 static Py_ssize_t
write_f32_near_avx512(const float *x, float *o, Py_ssize_t n, float m, lbound L)
{
    f32_filter c = filter_consts(m, L);
    const __m512 CH = _mm512_set1_ps(c.ch), NCH = _mm512_set1_ps(-c.ch);
    const __m512 CL = _mm512_set1_ps(c.cl), K = _mm512_set1_ps(c.k);
    double md = (double)m;
    Py_ssize_t i = 0, unsure = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 r0, r1;
        unsigned k0 = z_filter_f32(_mm512_loadu_ps(x + i), CH, NCH, CL, K, &r0);
        unsigned k1 = z_filter_f32(_mm512_loadu_ps(x + i + 16), CH, NCH, CL, K, &r1);
        _mm512_storeu_ps(o + i, r0);
        _mm512_storeu_ps(o + i + 16, r1);
        uint32_t open = ~(k0 | (k1 << 16));
        while (open) {
            int l = __builtin_ctz(open);
            open &= open - 1;
            int u = 0;
            o[i + l] = out_f32_checked(x[i + l], md, L.hi, L.lo, L.delta, 0, &u);
            unsure += u;
        }
    }
    return unsure + write_f32_near_avx2(x + i, o + i, n - i, m, L);
}

/* write_f32_avx2's rounding to odd (OUT_F32_ODD, and OUT_F64 for a float16 output) on
 * eight lanes: the same operations and tests lane by lane; a group with a lane they
 * leave takes out_f32_checked, as there; the last n % 8 entries the AVX2 loop's */
AVX512 static Py_ssize_t
write_f32_odd_avx512(const float *x, void *out, int out_kind, Py_ssize_t n, float m, lbound L)
{
    const __m512d MD = z_set((double)m), LH = z_set(L.hi), LL = z_set(L.lo);
    const __m512d DELTA = z_set(L.delta), REL = z_set(0x1p-51);
    const __m512d TINY = z_set(0x1p-126), BIG = z_set(FLT_MAX), NINF = z_set(-INFINITY);
    const __m512i LOW = _mm512_set1_epi64((INT64_C(1) << 29) - 1);
    const __m512i KEEP = _mm512_set1_epi64(INT64_C(1) << 29);
    const __m512i MAGIC = _mm512_castpd_si512(z_set(0x1p52));
    const __m512i EXP = _mm512_set1_epi64(INT64_C(0x7ff) << 52);
    const __m512i SCALE = _mm512_set1_epi64((int64_t)((uint64_t)2098 << 52)); /* 2^(52 - e) */
    const __m512d P52 = z_set(0x1p52), P29 = z_set(0x1p29);
    double md = (double)m;
    Py_ssize_t i = 0, unsure = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d xd = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        __m512d v = _mm512_sub_pd(_mm512_sub_pd(_mm512_sub_pd(xd, MD), LH), LL);
        __m512d av = _mm512_abs_pd(v);
        __m512i bits = _mm512_castpd_si512(v);
        __m512d low = _mm512_sub_pd(
            _mm512_castsi512_pd(_mm512_or_si512(_mm512_and_si512(bits, LOW), MAGIC)), P52);
        __m512d units = _mm512_castsi512_pd(_mm512_sub_epi64(SCALE, _mm512_and_si512(bits, EXP)));
        __m512d t = _mm512_mul_pd(_mm512_add_pd(DELTA, _mm512_mul_pd(av, REL)), units);
        __mmask8 normal = _mm512_cmp_pd_mask(av, TINY, _CMP_GE_OQ) &
                          _mm512_cmp_pd_mask(av, BIG, _CMP_LE_OQ);
        __m512d dist = _mm512_min_pd(low, _mm512_sub_pd(P29, low));
        __m512i tr = _mm512_or_si512(_mm512_andnot_si512(LOW, bits), KEEP);
        __m256 res = _mm512_cvtpd_ps(_mm512_castsi512_pd(tr)); /* exact: T, last bit set */
        __mmask8 ninf = _mm512_cmp_pd_mask(xd, NINF, _CMP_EQ_OQ);
        __mmask8 ok = (normal & _mm512_cmp_pd_mask(dist, t, _CMP_GT_OQ)) | ninf;
        res = _mm256_mask_blend_ps(ninf, res, _mm256_set1_ps(-INFINITY));
        if (ok != 0xff) {
            float lane[8];
            for (int l = 0; l < 8; l++) {
                int u = 0;
                lane[l] = out_f32_checked(x[i + l], md, L.hi, L.lo, L.delta, 1, &u);
                unsure += u;
            }
            res = _mm256_loadu_ps(lane);
        }
        if (out_kind == OUT_F64) {
            _mm512_storeu_pd((double *)out + i, _mm512_cvtps_pd(res));
        }
        else {
            _mm256_storeu_ps((float *)out + i, res);
        }
    }
    void *rest = out_kind == OUT_F64 ? (void *)((double *)out + i) : (void *)((float *)out + i);
    return unsure + write_f32_avx2(x + i, rest, out_kind, n - i, m, L);
}

AVX512 static Py_ssize_t
write_f32_avx512(const float *x, void *out, int out_kind, Py_ssize_t n, float m, lbound L)
{
    if (out_kind == OUT_F32) {
        return write_f32_near_avx512(x, (float *)out, n, m, L);
    }
    return write_f32_odd_avx512(x, out, out_kind, n, m, L);
}

/* ---- float64 ---- */

/* tab[j] for j in [0, 64), from registers: four two-register permutes (j's bits 0 to
 * 3), then j's bits 4 and 5 pick among them. Not gathers: as fast on AMD Zen 4 (1.75 to
 * 2.1 ns an entry either way, this loop), and gathers are microcoded slowly on Intel
 * CPUs with the Gather Data Sampling mitigation. */
AVX512 static inline __m512d
z_lookup64(const double *tab, __m512i j)
{
    __m512d p[4];
    for (int g = 0; g < 4; g++) {
        p[g] = _mm512_permutex2var_pd(_mm512_loadu_pd(tab + 16 * g), j,
                                      _mm512_loadu_pd(tab + 16 * g + 8));
    }
    __mmask8 b4 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(16));
    __mmask8 b5 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(32));
    return _mm512_mask_blend_pd(b5, _mm512_mask_blend_pd(b4, p[0], p[1]),
                                _mm512_mask_blend_pd(b4, p[2], p[3]));
}

/* lanes_dd.h's steps on eight lanes: the z_ functions */
#define LN(f) z_##f
#define LATTR AVX512
#define LV __m512d
#define LVI __m512i
#define LSET(v) z_set(v)
#define LZERO() _mm512_setzero_pd()
#define LADD _mm512_add_pd
#define LSUB _mm512_sub_pd
#define LMUL _mm512_mul_pd
#define LDIV _mm512_div_pd
#define LFMADD _mm512_fmadd_pd
#define LFMSUB _mm512_fmsub_pd
#define LFNMADD _mm512_fnmadd_pd
#define LFLOOR(x) _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define LCASTI _mm512_castpd_si512
#define LCASTD _mm512_castsi512_pd
#define LSUB64 _mm512_sub_epi64
#define LAND64 _mm512_and_si512
#define LSRL64 _mm512_srli_epi64
#define LSLL64 _mm512_slli_epi64
#define LSET64 _mm512_set1_epi64
#define LLOOKUP(tab, j) z_lookup64(tab, j)
#define LSELECT_LT(x, c, a, b) _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, c, _CMP_LT_OQ), a, b)
#include "lanes_dd.h"

/* partial_f64_avx2_c0's block on eight lanes: the first pass reduces the arguments
 * (v_exp_reduce's operations), the second finishes the exponentials (v_exp_finish's,
 * the table entries gathered) and sums them; 2^Kf is applied by scalef, exactly as
 * the multiplication by it rounds */
typedef struct {
    double rh[C0_BLOCK], rl[C0_BLOCK], kf[C0_BLOCK];
    int64_t j[C0_BLOCK];
    __mmask8 keep[C0_BLOCK / 8];
} z_block;

AVX512 static inline void
z_reduce_c0(const double *x, __m512d M, __m512d NM, z_block *B, int b, __mmask8 *LOWBAND,
            Py_ssize_t *count)
{
    __m512d dl, dh = z_two_diff(_mm512_loadu_pd(x), M, NM, &dl);
    __mmask8 at_max = _mm512_cmp_pd_mask(dh, _mm512_setzero_pd(), _CMP_EQ_OQ);
    __mmask8 above = _mm512_cmp_pd_mask(dh, z_set(-745.5), _CMP_GE_OQ);
    __mmask8 keep = above & (__mmask8)~at_max;
    *LOWBAND |= above & _mm512_cmp_pd_mask(dh, z_set(-706.0), _CMP_LT_OQ);
    *count += __builtin_popcount(at_max);
    __m512d a = _mm512_mask_blend_pd(keep, z_set(-700.0), dh);
    __m512d ks = _mm512_fmadd_pd(a, z_set(INV_C), z_set(SHIFTER));
    __m512d kf = _mm512_sub_pd(ks, z_set(SHIFTER));
    __m512i k = _mm512_sub_epi64(_mm512_castpd_si512(ks), _mm512_castpd_si512(z_set(SHIFTER)));
    __m512d Kf = _mm512_roundscale_pd(_mm512_mul_pd(kf, z_set(1.0 / 64.0)),
                                      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(kf, z_set(C1), a);
    __m512d rh = _mm512_fnmadd_pd(kf, z_set(C2), r);
    __m512d rl = _mm512_fnmadd_pd(kf, z_set(C3), _mm512_fnmadd_pd(kf, z_set(C2), _mm512_sub_pd(r, rh)));
    _mm512_store_pd(B->rh + b, rh);
    _mm512_store_pd(B->rl + b, _mm512_add_pd(rl, _mm512_maskz_mov_pd(keep, dl)));
    _mm512_store_pd(B->kf + b, Kf);
    _mm512_store_si512((void *)(B->j + b), _mm512_and_si512(k, _mm512_set1_epi64(63)));
    B->keep[b / 8] = keep;
}

AVX512 static inline void
z_sum_c0(const z_block *B, int b, __m512d *AH, __m512d *AL)
{
    __m512d rh = _mm512_load_pd(B->rh + b), rl = _mm512_load_pd(B->rl + b);
    __m512i j = _mm512_load_si512((const void *)(B->j + b));
    __m512d q = z_set(1.0 / 5040.0);
    q = _mm512_fmadd_pd(q, rh, z_set(1.0 / 720.0));
    q = _mm512_fmadd_pd(q, rh, z_set(1.0 / 120.0));
    q = _mm512_fmadd_pd(q, rh, z_set(1.0 / 24.0));
    q = _mm512_fmadd_pd(q, rh, z_set(1.0 / 6.0));
    q = _mm512_fmadd_pd(q, rh, z_set(0.5));
    q = _mm512_mul_pd(q, _mm512_mul_pd(rh, rh));
    __m512d ql = _mm512_add_pd(_mm512_fmadd_pd(rl, _mm512_add_pd(rh, q), rl), q);
    __m512d th = z_lookup64(TAB_HI, j), tl = z_lookup64(TAB_LO, j);
    __m512d P = _mm512_mul_pd(th, rh);
    __m512d pe2 = _mm512_fmsub_pd(th, rh, P);
    __m512d lo = _mm512_add_pd(_mm512_fmadd_pd(th, ql, pe2),
                               _mm512_fmadd_pd(tl, _mm512_add_pd(rh, ql), tl));
    __m512d hi = _mm512_add_pd(th, P);
    lo = _mm512_add_pd(lo, _mm512_sub_pd(P, _mm512_sub_pd(hi, th)));
    __m512d Kf = _mm512_load_pd(B->kf + b);
    __mmask8 keep = B->keep[b / 8];
    __m512d eh = _mm512_maskz_scalef_pd(keep, hi, Kf);
    __m512d el = _mm512_maskz_scalef_pd(keep, lo, Kf);
    z_acc_dd(AH, AL, eh, el);
}

/* partial_f64_avx2_c0 on eight lanes (entry i in lane i % 8): the same bits, and 0
 * where a term needs the two-step scaling */
AVX512 static int
partial_f64_avx512_c0(const double *x, Py_ssize_t n, double m, dd *sum, Py_ssize_t *at_max)
{
    const __m512d M = z_set(m), NM = z_set(-m);
    __m512d AH = _mm512_setzero_pd(), AL = AH;
    __mmask8 LOWBAND = 0;
    Py_ssize_t count = 0, i = 0;
    z_block B __attribute__((aligned(64)));
    while (i + DD_LANES <= n) {
        int nb = n - i >= C0_BLOCK ? C0_BLOCK : (int)((n - i) / DD_LANES * DD_LANES);
        for (int b = 0; b < nb; b += DD_LANES) {
            z_reduce_c0(x + i + b, M, NM, &B, b, &LOWBAND, &count);
        }
        for (int b = 0; b < nb; b += DD_LANES) {
            z_sum_c0(&B, b, &AH, &AL);
        }
        i += nb;
    }
    if (LOWBAND) {
        return 0;
    }
    double ah[DD_LANES], al[DD_LANES];
    _mm512_storeu_pd(ah, AH);
    _mm512_storeu_pd(al, AL);
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

AVX512 static void
partial_f64_avx512(const double *x, Py_ssize_t n, double m, double c, dd *sum, Py_ssize_t *at_max)
{
    if (c == 0.0 && partial_f64_avx512_c0(x, n, m, sum, at_max)) {
        return;
    }
    partial_f64_avx2_general(x, n, m, c, sum, at_max);
}

/* ---- the slow path's sums (rounding.h's exact_sum_*): exp_dd2's terms on eight
 * lanes, accumulated in the AVX2 path's four lanes in its order, so the same sums ---- */

/* v_exact_step for eight entries: their terms on eight lanes, then the first four
 * and the last four added to the four lanes of the sum, as two AVX2 steps would */
AVX512 static inline void
z_exact_step(__m512d xv, __m512d M, __m512d NM, __m256d *AH, __m256d *AL, __m256i *K)
{
    __m512d dl, dh = z_two_diff(xv, M, NM, &dl);
    __mmask8 keep = _mm512_cmp_pd_mask(xv, M, _CMP_NEQ_OQ) &
                    _mm512_cmp_pd_mask(dh, z_set(-746.0), _CMP_GE_OQ);
    __mmask8 at = _mm512_cmp_pd_mask(xv, M, _CMP_EQ_OQ);
    *K = _mm256_add_epi64(*K, _mm256_add_epi64(
        _mm512_castsi512_si256(_mm512_maskz_set1_epi64(at, 1)),
        _mm512_extracti64x4_epi64(_mm512_maskz_set1_epi64(at, 1), 1)));
    /* dropped lanes computed on 0 (any value in range), then zeroed */
    dh = _mm512_maskz_mov_pd(keep, dh);
    dl = _mm512_maskz_mov_pd(keep, dl);
    __m512d el, eh = z_exp_dd2_scaled(dh, dl, &el);
    eh = _mm512_maskz_mov_pd(keep, eh);
    el = _mm512_maskz_mov_pd(keep, el);
    *AH = v_dd_add(*AH, *AL, _mm512_castpd512_pd256(eh), _mm512_castpd512_pd256(el), AL);
    *AH = v_dd_add(*AH, *AL, _mm512_extractf64x4_pd(eh, 1), _mm512_extractf64x4_pd(el, 1), AL);
}

AVX512 static void
exact_sum_f64_avx512(const double *x, Py_ssize_t n, double m, dd *T, Py_ssize_t *k)
{
    const __m512d M = z_set(m), NM = z_set(-m);
    __m256d AH = _mm256_setzero_pd(), AL = _mm256_setzero_pd();
    __m256i K = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        z_exact_step(_mm512_loadu_pd(x + i), M, NM, &AH, &AL, &K);
    }
    if (i + 4 <= n) { /* the AVX2 path's last step of four */
        v_exact_step(_mm256_loadu_pd(x + i), _mm256_set1_pd(m), _mm256_set1_pd(-m), &AH, &AL,
                     &K);
        i += 4;
    }
    dd tail;
    Py_ssize_t ktail;
    exact_sum_f64_portable(x + i, n - i, m, &tail, &ktail);
    v_exact_finish(AH, AL, K, tail, ktail, T, k);
}

AVX512 static void
exact_sum_f32_avx512(const float *x, Py_ssize_t n, float m, dd *T, Py_ssize_t *k)
{
    const __m512d M = z_set((double)m), NM = z_set(-(double)m);
    __m256d AH = _mm256_setzero_pd(), AL = _mm256_setzero_pd();
    __m256i K = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        z_exact_step(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), M, NM, &AH, &AL, &K);
    }
    if (i + 4 <= n) {
        v_exact_step(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_set1_pd((double)m),
                     _mm256_set1_pd(-(double)m), &AH, &AL, &K);
        i += 4;
    }
    dd tail;
    Py_ssize_t ktail;
    exact_sum_f32_portable(x + i, n - i, m, &tail, &ktail);
    v_exact_finish(AH, AL, K, tail, ktail, T, k);
}

/* write_f64_avx2_to on eight lanes, the same operations and tests (masks for the
 * AVX2 path's lanes of all-ones); a group with a lane they leave takes
 * out_f64_checked, as there, so the same bits and the same count of undecided
 * outputs. Streamed stores start at a 64-byte boundary. */
AVX512 static inline Py_ssize_t
write_f64_avx512_to(const double *x, double *o, Py_ssize_t n, double m, lbound L, int stream)
{
    Py_ssize_t i = 0;
    while (stream && i < n && ((uintptr_t)(o + i) & 63) != 0) {
        i++;
    }
    Py_ssize_t unsure = write_f64_portable(x, o, i, m, L);
    const __m512d M = z_set(m), NM = z_set(-m), NLH = z_set(-L.hi), LL = z_set(L.lo);
    const __m512d BIG = z_set(DBL_MAX), HALF = z_set(0.5), TINY = z_set(0x1p-969);
    const __m512d DELTA = z_set(L.delta), U = z_set(0x1p-52), SIGN = z_set(-0.0);
    const __m512i EXP = _mm512_set1_epi64(INT64_C(0x7ff) << 52);
    const __m512i MANT = _mm512_set1_epi64((INT64_C(1) << 52) - 1);
    const __m512i E53 = _mm512_set1_epi64(INT64_C(53) << 52);
    const __m512i SIGNI = _mm512_set1_epi64(INT64_MIN);
    for (; i + 8 <= n; i += 8) {
        __m512d xv = _mm512_loadu_pd(x + i);
        __m512d dl, dh = z_two_diff(xv, M, NM, &dl);
        __m512d sl, sh = z_two_sum(dh, NLH, &sl);
        __m512d wl, e = z_two_sum(sl, dl, &wl);
        __m512d el = _mm512_sub_pd(wl, LL);
        __m512d v = _mm512_add_pd(sh, e);
        __m512d r = _mm512_sub_pd(e, _mm512_sub_pd(v, sh));
        __m512d rr = _mm512_add_pd(r, el);
        __m512d av = _mm512_abs_pd(v), arr = _mm512_abs_pd(rr), ael = _mm512_abs_pd(el);
        __m512i vb = _mm512_castpd_si512(av);
        __m512d h = _mm512_castsi512_pd(_mm512_sub_epi64(_mm512_and_si512(vb, EXP), E53));
        /* toward zero from a power of two the gap halves: rr's sign against v's */
        __mmask8 pow2 = _mm512_testn_epi64_mask(vb, MANT);
        __mmask8 inward = _mm512_test_epi64_mask(
            _mm512_xor_si512(_mm512_castpd_si512(rr), _mm512_castpd_si512(v)), SIGNI);
        __m512d hs = _mm512_mask_mul_pd(h, pow2 & inward, h, HALF);
        __m512d slack = _mm512_add_pd(DELTA, _mm512_mul_pd(U, _mm512_add_pd(arr, ael)));
        __mmask8 inside = _mm512_cmp_pd_mask(_mm512_add_pd(arr, slack), hs, _CMP_LT_OQ);
        __mmask8 past = _mm512_cmp_pd_mask(_mm512_sub_pd(arr, slack), hs, _CMP_GT_OQ);
        __m512d step = _mm512_or_pd(_mm512_add_pd(hs, hs), _mm512_and_pd(rr, SIGN));
        __m512d res = _mm512_mask_add_pd(v, past, v, step);
        __mmask8 ok = _mm512_cmp_pd_mask(av, TINY, _CMP_GE_OQ) & (inside | past);
        __mmask8 finite = _mm512_cmp_pd_mask(_mm512_abs_pd(sh), BIG, _CMP_LE_OQ);
        res = _mm512_mask_blend_pd(finite, sh, res);
        ok |= (__mmask8)~finite;
        if (ok != 0xff) {
            double lane[8];
            for (int l = 0; l < 8; l++) {
                int u = 0;
                lane[l] = out_f64_checked(x[i + l], m, L.hi, L.lo, L.delta, &u);
                unsure += u;
            }
            res = _mm512_loadu_pd(lane);
        }
        if (stream) {
            _mm512_stream_pd(o + i, res);
        }
        else {
            _mm512_storeu_pd(o + i, res);
        }
    }
    return unsure + write_f64_portable(x + i, o + i, n - i, m, L);
}

AVX512 static Py_ssize_t
stream_f64_avx512(const double *x, double *o, Py_ssize_t n, double m, lbound L)
{
    return write_f64_avx512_to(x, o, n, m, L, 1);
}

AVX512 static Py_ssize_t
write_f64_avx512(const double *x, double *o, Py_ssize_t n, double m, lbound L)
{
    return write_f64_avx512_to(x, o, n, m, L, 0);
}
#endif

/* Whether this build has the AVX-512 path and this CPU (and its OS) runs it */
static int
avx512_available(void)
{
#ifdef HAVE_AVX512_PATH
    return avx2_available() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* The code paths, from the widest down: each gives the same bits */
static const char *const PATHS[] = {"avx512", "avx2", "scalar"};
#define N_PATHS 3
static const char *current_path = "scalar";

static int
path_available(int p)
{
    return p == 0 ? avx512_available() : p == 1 ? avx2_available() : 1;
}

/* Select the path named `name` for the maxima, the sums and the large writes; 0 (and
 * nothing changed) where the name is unknown or this machine lacks the path */
static int
use_path(const char *name)
{
    int p = 0;
    while (p < N_PATHS && strcmp(PATHS[p], name) != 0) {
        p++;
    }
    if (p == N_PATHS || !path_available(p)) {
        return 0;
    }
    use_avx2(p <= 1);
#ifdef HAVE_AVX512_PATH
    if (p == 0) {
        max_f32 = max_f32_avx512;
        partial_f32 = partial_f32_avx512;
        write_f32_fast = write_f32_avx512;
        partial_f32_mid = partial_f32_mid_avx512;
        softmax_write_f32 = softmax_write_f32_avx512;
        partial_f64 = partial_f64_avx512;
        write_f64_fast = write_f64_avx512;
        stream_f64 = stream_f64_avx512;
        exact_sum_f64 = exact_sum_f64_avx512;
        exact_sum_f32 = exact_sum_f32_avx512;
    }
#endif
    current_path = PATHS[p];
    return 1;
}

/* The widest path this machine runs */
static const char *
best_path(void)
{
    int p = 0;
    while (!path_available(p)) {
        p++;
    }
    return PATHS[p];
}
