/* csrc/dd_math.h: the scalar arithmetic. The float32 kernel's exp (exp_short) and its
 * constants; the double-double type and its sums (two_sum, acc_dd); the float64 exp
 * (exp_dd_parts, exp_dd_scaled, exp_term) and its tables; log1p_dd, tiny_log1p; and
 * 2^k (pow2i). Uses common.h only; calls no Python API.
 * Called by passes.h, passes_avx2.h, threads.h, bindings.h and blocks.h. */

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
 * relative error < 2^-36.88 (degree 6: the Taylor remainder at |r| = ln2/8 is 2^-36.88,
 * the roundings add under 2^-49; rounding.h takes 2^-36.5 as its bound). ln2/4 = L4_HI + L4_LO, L4_HI
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

/* exp_short's and exp_mid's common body: the reduction d = k ln2/4 + r (clamped at
 * -700), a Taylor polynomial in r (degree 6, or 8 with mid: two more Horner steps
 * first, the rest the same), 2^((k mod 4)/4) by selects (which vectorize as blends;
 * an indexed load would be a gather) and 2^floor(k/4) exactly */
static inline double
exp_quarter(double d, int mid)
{
    double dc = d < -700.0 ? -700.0 : d;
    double ks = fma(dc, INV_L4, SHIFTER);
    double kf = ks - SHIFTER;
    int64_t k = shifted_int(ks);
    double r = fma(-kf, L4_LO, fma(-kf, L4_HI, dc));
    double p = mid ? fma(fma(1.0 / 40320.0, r, 1.0 / 5040.0), r, 1.0 / 720.0) : 1.0 / 720.0;
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    double t01 = (k & 1) ? EXP2_4[1] : EXP2_4[0], t23 = (k & 1) ? EXP2_4[3] : EXP2_4[2];
    return (p * ((k & 2) ? t23 : t01)) * pow2i(k >> 2);
}

static inline double
exp_short(double d)
{
    return exp_quarter(d, 0);
}

/* The softmax writer's exp, for z <= 0: exp_short's reduction and a degree-8
 * polynomial: the Taylor remainder r^9/9! e^r at |r| = ln2/8 is 2^-50.1, the reduction
 * (fma, L4 in two parts) and the eight Horner steps, the table entry and the product
 * add under 6 2^-53, and the scaling by 2^floor(k/4) is exact above z = -700 (clamped
 * there: the callers take z < -105 as 0). EXP_MID_REL = 2^-48 covers it with room;
 * test_exp_mid_is_within_its_bound measures it (2^-49.8). */
#define EXP_MID_REL 0x1p-48

static inline double
exp_mid(double z)
{
    return exp_quarter(z, 1);
}

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
INLINE void
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
    double q = 1.0 / 5040.0;
    q = fma(q, rh, 1.0 / 720.0);
    q = fma(q, rh, 1.0 / 120.0);
    q = fma(q, rh, 1.0 / 24.0);
    q = fma(q, rh, 1.0 / 6.0);
    q = fma(q, rh, 0.5);
    q = q * (rh * rh);
    double ql = fma(rl, rh + q, rl) + q; /* exp(rh + rl) = (1 + rh + q)(1 + rl) = 1 + rh + ql */
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

static inline void
acc_dd(double *ah, double *al, double h, double l)
{
    dd t = two_sum(*ah, h);
    *ah = t.hi;
    *al += t.lo + l;
}

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
