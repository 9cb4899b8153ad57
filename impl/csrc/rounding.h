/* csrc/rounding.h: correct rounding of the float32 rows' results (float32, and
 * float16/bfloat16 through a float32 rounded to odd). Three pieces:
 *   - the fast path's error bound: L = log1p(T) from the float32 kernel's sum, and a
 *     bound delta on |L - L_true| (bound_f32);
 *   - the rounding test: y = (x - m) - L rounded to the output, and whether the
 *     interval y +- delta holds one answer only (round_f32_checked);
 *   - the slow path, for the rare rows where it does not: L recomputed in accurate
 *     double-double (exp_dd2, expm1_dd2, log1p_dd2; relative error within 2^-86),
 *     with its own bound, and the test again (exact_f32).
 * float64 rows the same way (bound_f64, out_f64_checked, exact_L_f64), with L from
 * the double-double sum and log1p_dd2 on the fast path.
 * The proofs of the bounds are in docs/impl.md ("Correct rounding"). Uses common.h
 * and dd_math.h; calls no Python API. Called by passes.h, threads.h and bindings.h. */

/* The fast path's bounds. exp_short: the degree-6 Taylor remainder at |r| <= ln2/8 is
 * 2^-36.88 relative, its roundings add under 2^-49; measured max 2^-36.891
 * (impl/tests/test_rounding.py checks the measured figure against this bound). libm's
 * log1p: within 1 ULP (glibc's documented bound; 2 taken). */
/* The float32 rows' sums run in blocks of SUM_BLOCK entries (partial_f32_*) */
#define SUM_BLOCK 2048
#define EXP_SHORT_REL 0x1.6a09e667f3bcdp-37 /* 2^-36.5 */
#define LOG1P_REL 0x1p-51
#define U53 0x1p-53
/* The slow path's: exp_dd2 measured within 2^-94.0 relatively, log1p_dd2 within
 * 2^-90.5 (impl/tests/test_rounding.py holds both to those figures); each taken 8
 * times larger */
#define EXP_DD2_REL 0x1p-91
#define LOG1P_DD2_REL 0x1p-87
/* The float64 rows' terms (exp_term, dd_math.h): the Taylor remainder r^8/8! at
 * |r| <= ln2/128 is 2^-75.3, the low part's product rl (rh + q) keeps rl's terms to
 * 2^-44 2^-23 (|rl| <= ulp(700)); the roundings of q rh^2, ql and lo, about 2^-69
 * each, dominate: measured within 2^-67.3 relatively for d in [-700, 0] (40,000
 * points, half with r at the ends of its range: test_float64_bounds_hold...);
 * taken as 2^-66. (Before the rl q term and r^7/7!, 2^-60.1 near -700, 2^-64.0 in
 * [-64, 0], and taken as 2^-62.) */
#define EXP_DD_REL 0x1p-66

/* A multiplier on the fast path's bound, 1 except in the test that checks a weakened
 * bound is caught (set_bound_scale) */
static double bound_scale = 1.0;

/* How often the slow path ran, and how often even it could not decide, per format
 * (F32: float32 rows, which the narrow formats take too; F64), for stats(); atomic:
 * the threads share them */
enum { F32 = 0, F64 = 1 };
enum { ST_ROWS = 0, ST_SLOW_ROWS = 1, ST_SLOW_ELEMS = 2, ST_UNDECIDED = 3, ST_EXACT_ROWS = 4 };
static uint64_t slow_stat[2][5];

static inline void
stat_add(uint64_t *c, uint64_t v)
{
    if (v) {
        __atomic_fetch_add(c, v, __ATOMIC_RELAXED);
    }
}

typedef struct {
    double hi, lo, delta; /* L = hi + lo, within delta of log1p(T) */
} lbound;

/* ---- the rounding test ---- */

static inline float
bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* y = (x - m) - L as three doubles: y = s + e + el exactly but for L's own error and
 * el's rounding (s = fl(d - L_hi), e + el = the rest in double-double), for d = x - m
 * = dh + dl exactly (TwoSum). Keeping el matters where the higher parts sit exactly on
 * a rounding boundary (d on a midpoint, L far below its last bit): its sign decides. */
typedef struct {
    double s, e, el, dh, dl;
} parts3;

static inline parts3
split_y(double x, double m, double Lh, double Ll)
{
    dd d = two_sum(x, -m);
    dd s = two_sum(d.hi, -Lh);
    dd w = two_sum(s.lo, d.lo);
    return (parts3){s.hi, w.hi, w.lo - Ll, d.hi, d.lo};
}

/* y (split_y's parts, y <= 0) rounded to float32, to nearest (odd = 0) or to odd
 * (odd = 1), where the exact value lies within delta of s + e + el. In magnitudes:
 * |y| = a + ea + eal, F = a rounded to nearest in float32, and rho = |y| - F = p + pl
 * (p + pl = (a - F) + ea exactly, a - F being exact). Midpoints lie hu above F and hd
 * below; the margins (p - hu) + pl and (p + hd) + pl are exact but for one rounding
 * each, which keeps their sign. lpos: L > 0 for certain, so |y| > |d| strictly: no
 * boundary at or below |d| is crossed, and one at |d| is crossed upward (an entry far
 * below the maximum: y = d - 1e-300 is not d). *unsure is set where the bounds leave
 * two answers possible; the answer returned is then the one for the computed parts.
 * Without branches, so that the loops over it vectorize. */
static inline float
round_f32_checked(parts3 y, double delta, int lpos, int odd, int *unsure)
{
    double sg = y.s <= 0.0 ? -1.0 : 1.0;
    double a = fabs(y.s), ea = sg * y.e, eal = sg * y.el;
    float fa = (float)a;
    double F = (double)fa;
    uint32_t ua;
    memcpy(&ua, &fa, sizeof ua);
    int inf = ua >= 0x7f800000u;
    /* the float32 magnitudes around F (2^128 past FLT_MAX; -2^-149 below 0) */
    double up = ua == 0x7f7fffffu ? 0x1p128 : (double)bits_to_float(ua + 1);
    double dn = ua == 0 ? -0x1p-149 : (double)bits_to_float(ua - 1);
    dd pp = two_sum(a - F, ea);
    double pl = pp.lo + eal;
    double hu = (up - F) * 0.5, hd = (F - dn) * 0.5;
    /* |d| - F and |d| - (F + hu), their signs right: -dh - F is exact where it is
     * small (Sterbenz), and |dl| <= ulp(dh) / 2 cannot flip a nonzero one */
    double g = (-y.dh - F) - y.dl;
    double gu = ((-y.dh - F) - hu) - y.dl;
    uint32_t r;
    int bad;
    if (odd) {
        /* y lies strictly between F and its neighbour on the side of rho: the one of
         * the two with an odd last bit */
        double m0 = pp.hi + pl;
        double tol = delta + 0x1p-52 * (fabs(m0) + fabs(pl));
        int above = (lpos && g >= 0.0) || m0 > 0.0;
        uint32_t side = above ? ua + 1 : ua - 1;
        r = (ua & 1u) || (m0 == 0.0 && !lpos) ? ua : side;
        bad = fabs(m0) <= tol && delta > 0.0 && !(lpos && g >= 0.0);
    }
    else {
        double mu = (pp.hi - hu) + pl, md = (pp.hi + hd) + pl;
        double tu = delta + 0x1p-52 * (fabs(mu) + fabs(pl));
        double td = delta + 0x1p-52 * (fabs(md) + fabs(pl));
        int up_sure = lpos && gu >= 0.0;   /* |y| > |d| >= F + hu */
        int floor_ok = lpos && g + hd >= 0.0; /* |y| > F - hd */
        r = ua + (uint32_t)(mu > 0.0 || up_sure) - (uint32_t)(md < 0.0 && !floor_ok);
        bad = (fabs(mu) <= tu && !up_sure) || (fabs(md) <= td && !floor_ok);
    }
    r = inf ? ua : r; /* beyond 2^128 - 2^103: +-inf, as the plain conversion */
    bad = inf ? 0 : bad;
    *unsure |= bad;
    return bits_to_float(r | (signbit(y.s) ? 0x80000000u : 0u));
}

/* One output of a float32 row: y = (x - m) - L */
static inline float
out_f32_checked(float x, double md, double Lh, double Ll, double delta, int odd, int *unsure)
{
    parts3 y = split_y((double)x, md, Lh, Ll);
    if (!(fabs(y.s) <= DBL_MAX)) { /* x = -inf: -inf */
        return (float)y.s;
    }
    return round_f32_checked(y, delta, Lh > 0.0, odd, unsure);
}

/* The cheap first test of a float32 output rounded to nearest, in float32 arithmetic
 * (eight lanes to a vector on AVX2, no conversions). Per row, C = m + L is held as
 * ch + cl (two floats) and k bounds, rounded up, the rest: delta, the part of C that
 * ch + cl drop (2^-48 |C| at most) and an absolute 2^-100 (roundings near the
 * subnormals, even with flush-to-zero set). Per entry:
 *   x - ch = s + se exactly (TwoSum), e = fl(se - cl) (within 2^-24 |e|),
 *   r = fl(s + e), r2 = (s + e) - r exactly (TwoSum),
 * so |y - r - r2| <= slack = fl(2^-23 |e| + k) (the product exact but below 2^-126,
 * where it is under k's 2^-100 anyway; the sum rounds down by 2^-24 at most, and k
 * already holds a factor 1 + 2^-20). y lies strictly inside r's rounding interval
 * where |r2| + slack, rounded (monotonic: it reaches a float32 bound only if the exact
 * sum does), is below half the gap from |r| to its predecessor, the smaller of r's two
 * gaps: r is the correctly rounded y. r = 0, an infinity or a NaN anywhere (x - ch
 * overflowing, x = -inf) fail the test; -inf entries are settled apart. Where the test
 * fails, out_f32_checked decides (both the portable and the AVX2 loops do exactly
 * this, so the same bits and the same count of undecided outputs). */
typedef struct {
    float ch, cl, k;
} f32_filter;

static inline f32_filter
filter_consts(float m, lbound L)
{
    dd C = two_sum((double)m, L.hi);
    double cll = C.lo + L.lo;            /* within 2^-53 |cll| */
    float ch = (float)C.hi;
    double rem = ((double)C.hi - (double)ch) + cll; /* the bracket exact; 2^-53 |rem| */
    float cl = (float)rem;
    double k = L.delta + fabs(rem - (double)cl) + 0x1p-51 * (fabs(rem) + fabs(cll)) + 0x1p-100;
    k *= 1.0 + 0x1p-20;
    float kf = (float)k;
    kf = (double)kf < k ? nextafterf(kf, INFINITY) : kf;
    return (f32_filter){ch, cl, kf};
}

static inline uint32_t
float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* 1 and *r where the test settles x's output, 0 where out_f32_checked must */
static inline int
filter_f32(float x, f32_filter c, float *r)
{
    float s = x - c.ch;
    float bb = s - x;
    float se = (x - (s - bb)) + (-c.ch - bb);
    float e = se - c.cl;
    float v = s + e;
    float b2 = v - s;
    float r2 = (s - (v - b2)) + (e - b2);
    float av = fabsf(v);
    float gap = av - bits_to_float(float_to_bits(av) - 1u);
    float slack = fabsf(e) * 0x1p-23f + c.k;
    *r = x == -INFINITY ? x : v;
    return (fabsf(r2) + slack < gap * 0.5f) || x == -INFINITY;
}

/* ---- the fast path's bound ---- */

/* L = log1p(T) for the float32 kernel's T (the sum of exp_short over the entries below
 * the maximum, in double, plus k - 1) of a row of n entries, and its bound. T's error:
 * each term within EXP_SHORT_REL relatively, or (clamped below d = -700) within
 * exp(-700) < 2^-1009 absolutely; the sum's roundings within gamma(n / 8 + 64)
 * (eight lanes, up to 32 segments, the tie count; gamma(j) = j u / (1 - j u)).
 * log1p's error in L is that error divided by 1 + T, plus libm's own. */
static inline lbound
bound_f32_more(double T, Py_ssize_t n, double more);

static inline lbound
bound_f32(double T, Py_ssize_t n)
{
    return bound_f32_more(T, n, 0.0);
}

static inline lbound bound_f32_terms(double T, Py_ssize_t n, double term_rel, double more);

/* bound_f32 where T carries `more` relative error besides (the Dask path's blocks:
 * the scaling of each block's sum, and their sum) */
static inline lbound
bound_f32_more(double T, Py_ssize_t n, double more)
{
    return bound_f32_terms(T, n, EXP_SHORT_REL, more);
}

/* bound_f32_more for terms within term_rel relatively (exp_short's EXP_SHORT_REL, or
 * the softmax writer's exp_mid), summed as partial_f32 sums them */
static inline lbound
bound_f32_terms(double T, Py_ssize_t n, double term_rel, double more)
{
    lbound b;
    b.hi = log1p(T);
    b.lo = 0.0;
    if (T == 0.0) { /* every other entry -inf: T is exactly 0, and so is L */
        b.delta = 0.0;
        return b;
    }
    /* additions a term passes through: SUM_BLOCK / 8 in its lane's block, one per
     * block after, the tail, the lanes' and the segments' combination (64) */
    double j = (double)(n < SUM_BLOCK ? n : SUM_BLOCK) / 8.0 + (double)(n / SUM_BLOCK) + 65.0;
    double gam = j * U53 / (1.0 - j * U53);
    double eT = (term_rel + gam + more) * (1.0 + term_rel) * T * (1.0 + gam) +
                (double)n * 0x1p-1009;
    double lo = T - eT > 0.0 ? T - eT : 0.0;
    b.delta = (eT / (1.0 + lo) + LOG1P_REL * b.hi) * (1.0 + 0x1p-40) * bound_scale;
    return b;
}

/* ---- the slow path: accurate double-double ---- */

static inline dd
fast_two_sum(double a, double b)
{
    double s = a + b;
    return (dd){s, b - (s - a)};
}

static inline dd
dd_add(dd a, dd b) /* relative error below 3u^2 for operands of one sign */
{
    dd s = two_sum(a.hi, b.hi);
    dd t = two_sum(a.lo, b.lo);
    s.lo += t.hi;
    s = fast_two_sum(s.hi, s.lo);
    s.lo += t.lo;
    return fast_two_sum(s.hi, s.lo);
}

static inline dd
dd_mul(dd a, dd b) /* relative error below 5u^2 */
{
    double p = a.hi * b.hi;
    double e = fma(a.hi, b.hi, -p);
    e += a.hi * b.lo + a.lo * b.hi;
    return fast_two_sum(p, e);
}

/* 1/i! for i = 2..13 as double-doubles */
static const double INV_FACT[12][2] = {
    {0x1.0000000000000p-1, 0x0.0p+0},
    {0x1.5555555555555p-3, 0x1.5555555555555p-57},
    {0x1.5555555555555p-5, 0x1.5555555555555p-59},
    {0x1.1111111111111p-7, 0x1.1111111111111p-63},
    {0x1.6c16c16c16c17p-10, -0x1.f49f49f49f49fp-65},
    {0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-73},
    {0x1.a01a01a01a01ap-16, 0x1.a01a01a01a01ap-76},
    {0x1.71de3a556c734p-19, -0x1.c154f8ddc6c00p-73},
    {0x1.27e4fb7789f5cp-22, 0x1.cbbc05b4fa99ap-76},
    {0x1.ae64567f544e4p-26, -0x1.c062e06d1f209p-80},
    {0x1.1eed8eff8d898p-29, -0x1.2aec959e14c06p-83},
    {0x1.6124613a86d09p-33, 0x1.f28e0cc748ebep-87},
};

/* The Taylor series of exp(r) - 1 to r^13/13! in double-double, for |r| <= ln2/128
 * (the remainder below 2^-115 relatively): a chain of twelve double-double steps,
 * used where a value near 0 must keep its relative accuracy (expm1_dd2) */
static dd
expm1_series(dd r)
{
    dd acc = {INV_FACT[11][0], INV_FACT[11][1]};
    for (int i = 10; i >= 0; i--) {
        acc = dd_add(dd_mul(acc, r), (dd){INV_FACT[i][0], INV_FACT[i][1]});
    }
    acc = dd_add(dd_mul(acc, r), (dd){1.0, 0.0});
    return dd_mul(acc, r);
}

/* 2^(i/4096) = TAB2_HI[i] + TAB2_LO[i] (to 2^-106), ln2/4096 = D1 + D2 + D3 (D1 with
 * 29 significant bits: k D1 is exact for |k| < 2^24; the three to 2^-139), checked
 * against mpmath by impl/tests/test_rounding.py */
static const double TAB2_HI[64] = {
    0x1.0000000000000p+0, 0x1.000b175effdc7p+0, 0x1.00162f3904052p+0, 0x1.0021478e11ce6p+0,
    0x1.002c605e2e8cfp+0, 0x1.003779a95f959p+0, 0x1.0042936faa3d8p+0, 0x1.004dadb113da0p+0,
    0x1.0058c86da1c0ap+0, 0x1.0063e3a559473p+0, 0x1.006eff583fc3dp+0, 0x1.007a1b865a8cap+0,
    0x1.0085382faef83p+0, 0x1.00905554425d4p+0, 0x1.009b72f41a12bp+0, 0x1.00a6910f3b6fdp+0,
    0x1.00b1afa5abcbfp+0, 0x1.00bcceb7707ecp+0, 0x1.00c7ee448ee02p+0, 0x1.00d30e4d0c483p+0,
    0x1.00de2ed0ee0f5p+0, 0x1.00e94fd0398e0p+0, 0x1.00f4714af41d3p+0, 0x1.00ff93412315cp+0,
    0x1.010ab5b2cbd11p+0, 0x1.0115d89ff3a8bp+0, 0x1.0120fc089ff63p+0, 0x1.012c1fecd613bp+0,
    0x1.0137444c9b5b5p+0, 0x1.01426927f5278p+0, 0x1.014d8e7ee8d2fp+0, 0x1.0158b4517bb88p+0,
    0x1.0163da9fb3335p+0, 0x1.016f0169949edp+0, 0x1.017a28af25567p+0, 0x1.018550706ab62p+0,
    0x1.019078ad6a19fp+0, 0x1.019ba16628de2p+0, 0x1.01a6ca9aac5f3p+0, 0x1.01b1f44af9f9ep+0,
    0x1.01bd1e77170b4p+0, 0x1.01c8491f08f08p+0, 0x1.01d37442d5070p+0, 0x1.01de9fe280ac8p+0,
    0x1.01e9cbfe113efp+0, 0x1.01f4f8958c1c6p+0, 0x1.020025a8f6a35p+0, 0x1.020b533856324p+0,
    0x1.02168143b0281p+0, 0x1.0221afcb09e3ep+0, 0x1.022cdece68c4fp+0, 0x1.02380e4dd22adp+0,
    0x1.02433e494b755p+0, 0x1.024e6ec0da046p+0, 0x1.02599fb483385p+0, 0x1.0264d1244c719p+0,
    0x1.027003103b10ep+0, 0x1.027b357854772p+0, 0x1.0286685c9e059p+0, 0x1.02919bbd1d1d8p+0,
    0x1.029ccf99d720ap+0, 0x1.02a803f2d170dp+0, 0x1.02b338c811703p+0, 0x1.02be6e199c811p+0,
};
static const double TAB2_LO[64] = {
    0x0.0p+0, 0x1.ae8e38c59c72ap-54, -0x1.7b5d0d58ea8f4p-58, 0x1.4115cb6b16a8ep-54,
    -0x1.d7c96f201bb2fp-55, 0x1.84711d4c35e9fp-54, -0x1.0484245243777p-55,
    -0x1.4b237da2025f9p-54, -0x1.5e00e62d6b30dp-56, 0x1.a1d6cedbb9481p-54,
    -0x1.4acf197a00142p-54, -0x1.eaf2ea42391a5p-57, 0x1.da93f90835f75p-56,
    -0x1.6a79084ab093cp-55, 0x1.86364f8fbe8f8p-54, -0x1.82e8e14e3110ep-55,
    -0x1.4f6b2a7609f71p-55, -0x1.e1a258ea8f71bp-56, 0x1.4362ca5bc26f1p-56,
    0x1.095a56c919d02p-54, -0x1.406ac4e81a645p-57, 0x1.b5a6902767e09p-54,
    -0x1.91b2060859321p-54, 0x1.427068ab22306p-55, 0x1.c1d0660524e08p-54,
    -0x1.e7bdfb3204be8p-54, 0x1.843aa8b9cbbc6p-55, -0x1.34104ee7edae9p-56,
    -0x1.2b6aeb6176892p-56, 0x1.a8cd33b8a1bb3p-56, 0x1.2edc08e5da99ap-56,
    0x1.57ba2dc7e0c73p-55, 0x1.b61299ab8cdb7p-54, -0x1.90565902c5f44p-54,
    0x1.70fc41c5c2d53p-55, 0x1.4b9a6e145d76cp-54, -0x1.008eff5142bf9p-56,
    -0x1.77669f033c7dep-54, -0x1.09bb78eeead0ap-54, 0x1.371231477ece5p-54,
    0x1.5e7626621eb5bp-56, -0x1.bc72b100828a5p-54, -0x1.ce39cbbab8bbep-57,
    0x1.16996709da2e2p-55, -0x1.c11f5239bf535p-55, 0x1.e1d4eb5edc6b3p-55,
    -0x1.afb99946ee3f0p-54, -0x1.8f06d8a148a32p-54, -0x1.2bf310fc54eb6p-55,
    -0x1.c95a035eb4175p-54, -0x1.491793e46834dp-54, -0x1.3e8d0d9c49091p-56,
    -0x1.314aa16278aa3p-54, 0x1.48daf888e9651p-55, 0x1.56dc8046821f4p-55,
    0x1.45b42356b9d47p-54, -0x1.082ef51b61d7ep-56, 0x1.2106ed0920a34p-56,
    -0x1.fd4cf26ea5d0fp-54, -0x1.09f8775e78084p-54, 0x1.64cbba902ca27p-58,
    0x1.4383ef231d207p-54, 0x1.4a47a505b3a47p-54, 0x1.e47120223467fp-54,
};
static const double D1 = 0x1.62e42fe000000p-13;
static const double D2 = 0x1.f473de6af278fp-42;
static const double D3 = -0x1.8cff81a12a17ep-97;
static const double INV_D = 0x1.71547652b82fep+12;

/* exp(xh + xl) = 2^K * (hi + lo), hi + lo in [0.7, 1.5], for x in [-746, 710],
 * relative error within 2^-94 (measured): k = round(x 4096 / ln2) = 4096 K +
 * 64 j + i, r = x - k ln2/4096 in double-double (|r| <= ln2/8192 = 2^-13.5), exp(r) -
 * 1 = r + r^2/2 in double-double plus r^3/6 (1 + r/4 (1 + r/5 (1 + r/6))) in double
 * (that term is under 2^-42: its rounding under 2^-94; r^7/7! under 2^-107), and
 * 2^(j/64) 2^(i/4096) (1 + em1) in double-double. Five double-double operations in a
 * short chain: about a tenth of the series' time. */
static dd
exp_dd2(double xh, double xl, int64_t *K)
{
    double ks = fma(xh, INV_D, SHIFTER);
    double kf = ks - SHIFTER;
    int64_t k = shifted_int(ks);
    *K = k >> 12;
    double r1 = fma(-kf, D1, xh); /* exact */
    double p2 = kf * D2;
    double p2l = fma(kf, D2, -p2);
    dd r = two_sum(r1, -p2);
    r.lo += (xl - p2l) - kf * D3;
    r = fast_two_sum(r.hi, r.lo);
    double sq = r.hi * r.hi;
    double sql = fma(r.hi, r.hi, -sq) + 2.0 * r.hi * r.lo;
    double c = r.hi * (1.0 + r.hi * 0.25 * (1.0 + r.hi * 0.2 * (1.0 + r.hi / 6.0)));
    c = c * sq * (1.0 / 6.0);
    dd em1 = dd_add(r, dd_add((dd){sq * 0.5, sql * 0.5}, (dd){c, 0.0}));
    dd P = dd_mul((dd){TAB_HI[(k >> 6) & 63], TAB_LO[(k >> 6) & 63]},
                  (dd){TAB2_HI[k & 63], TAB2_LO[k & 63]});
    return dd_add(P, dd_mul(P, em1));
}

/* expm1(x) for x >= 0 in double-double, relatively accurate also near 0: the series
 * below 2^-5 (x itself the reduced argument: |x| < ln2/128 is not needed there, the
 * series' remainder at 2^-5 being under 2^-90 relatively), exp_dd2 - 1 above (which
 * loses under 2^5 of its accuracy to the subtraction) */
static dd
expm1_dd2(double x)
{
    if (x < 0x1p-5) {
        return expm1_series((dd){x, 0.0});
    }
    int64_t K;
    dd e = exp_dd2(x, 0.0, &K);
    double s = pow2i(K);
    e.hi *= s;
    e.lo *= s;
    return dd_add(e, (dd){-1.0, 0.0});
}

/* log1p(T) for T = th + tl >= 0: one Newton step for expm1(L) = T from libm's log1p,
 * L1 = L0 + (T - expm1(L0)) / (1 + expm1(L0)) (the step's own error is second order,
 * below 2^-100 L) */
static dd
log1p_dd2(double th, double tl)
{
    if (th == 0.0) {
        return (dd){0.0, 0.0};
    }
    double L0 = log1p(th);
    dd E = expm1_dd2(L0);
    dd rho = dd_add((dd){th, tl}, (dd){-E.hi, -E.lo});
    double c = rho.hi / (1.0 + E.hi);
    return two_sum(L0, c);
}

/* exp(x - m) of one entry (a float32 one widened exactly) in accurate double-double,
 * 0 for x == m, for x = -inf and below 2^-1075; scaled exactly while normal */
static inline dd
term_dd2(double x, double m)
{
    if (x == m || !(x > -INFINITY)) {
        return (dd){0.0, 0.0};
    }
    dd d = two_sum(x, -m);
    if (!(d.hi >= -746.0)) {
        return (dd){0.0, 0.0};
    }
    int64_t K;
    dd e = exp_dd2(d.hi, d.lo, &K);
    int64_t low = K < -1020;
    double s1 = pow2i(low ? K + 600 : K);
    double s2 = low ? 0x1p-600 : 1.0;
    return (dd){(e.hi * s1) * s2, (e.lo * s1) * s2};
}

/* The slow path's sums: T = the sum of exp(x - m) over the entries below m in
 * accurate double-double, and k, the count of entries equal to m; the AVX2 versions
 * (passes_avx2.h) where the CPU has it, four lanes then combined in order */
typedef void (*exact_sum_f32_fn)(const float *, Py_ssize_t, float, dd *, Py_ssize_t *);
typedef void (*exact_sum_f64_fn)(const double *, Py_ssize_t, double, dd *, Py_ssize_t *);


/* L = log1p(T + k - 1) from the slow path's sum, and its bound: terms within
 * EXP_DD2_REL (or 2^-1074 absolutely, below the normal range), the double-double sum
 * within (n + 8) 2^-103, log1p_dd2 within LOG1P_DD2_REL */
static lbound
exact_L_from(dd T, Py_ssize_t k, Py_ssize_t n)
{
    T = dd_add(T, (dd){(double)(k - 1), 0.0});
    dd L = log1p_dd2(T.hi, T.lo);
    lbound b = {L.hi, L.lo, 0.0};
    if (T.hi > 0.0) {
        double rel = EXP_DD2_REL + ((double)n + 8.0) * 0x1p-103 + LOG1P_DD2_REL;
        b.delta = (rel * L.hi + (double)n * 0x1p-1073) * 1.01;
    }
    return b;
}

/* exact_sum_f32_portable and exact_sum_f64_portable, the pointers the AVX2 path may
 * replace (use_avx2), and exact_L_f32 and exact_L_f64: the slow path's L for a row of
 * the format (maximum m), and its bound */
#define DEFINE_EXACT(SUFFIX, T)                                                            \
    static void exact_sum_##SUFFIX##_portable(const T *x, Py_ssize_t n, T m, dd *sum,     \
                                               Py_ssize_t *k)                            \
    {                                                                                      \
        dd s = {0.0, 0.0};                                                                 \
        Py_ssize_t c = 0;                                                                  \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            s = dd_add(s, term_dd2((double)x[i], (double)m));                              \
            c += x[i] == m;                                                                \
        }                                                                                  \
        *sum = s;                                                                          \
        *k = c;                                                                            \
    }                                                                                      \
    static exact_sum_##SUFFIX##_fn exact_sum_##SUFFIX = exact_sum_##SUFFIX##_portable;     \
    static lbound exact_L_##SUFFIX(const T *x, Py_ssize_t n, T m)                          \
    {                                                                                      \
        dd sum;                                                                            \
        Py_ssize_t k;                                                                      \
        exact_sum_##SUFFIX(x, n, m, &sum, &k);                                             \
        return exact_L_from(sum, k, n);                                                    \
    }

DEFINE_EXACT(f32, float)
DEFINE_EXACT(f64, double)

/* ---- float64 rows ---- */

/* L = log1p(T) for a float64 row's double-double T (the sum of exp_term over the
 * entries below the maximum, plus k - 1) and its bound. T is within rel_T T of the
 * exact sum: the terms within EXP_DD_REL, the double-double sum's roundings within
 * ((j^2 + 64) 2^-106) for j = n / 8 + 64 (each lane's low part gathers a rounding per
 * step, each under u times the n u T it can hold); plus n e^-64 2^-59 absolutely for
 * the terms below -64 and 2^-1074 each for those dropped below the subnormal range.
 * An error e in T moves log1p(T) by log1p(e / (1 + T)), at most e / (1 + T) (1 +
 * 2^-59) here: so rel_T reaches L as rel_T T / (1 + T), at most rel_T however large T
 * is (the bound once took rel_T L, which grows as log T: 7.5 times larger on a row of
 * 1,024 standard normal logits, 16 on one of 2^22). log1p_dd2 adds LOG1P_DD2_REL L.
 * The factor 1.01 covers the roundings of the bound's own arithmetic and T's error
 * inside T / (1 + T). */
static lbound
bound_f64(dd T, Py_ssize_t n)
{
    dd L = log1p_dd2(T.hi, T.lo);
    lbound b = {L.hi, L.lo, 0.0};
    if (T.hi > 0.0) {
        double j = (double)n / 8.0 + 64.0;
        double rel_T = EXP_DD_REL + (j * j + 64.0) * 0x1p-106;
        double share = T.hi / (1.0 + T.hi); /* T / (1 + T), in (0, 1] */
        b.delta = (rel_T * share + LOG1P_DD2_REL * L.hi + (double)n * 0x1p-151 +
                   (double)n * 0x1p-1073) * 1.01 * bound_scale;
    }
    return b;
}

/* bound_f64 of the sum T (over the entries below the maximum) plus k - 1, for k
 * entries at the maximum: the float64 rows' fast path, and the float32 rows' middle
 * path */
static lbound
bound_f64_sum(dd T, Py_ssize_t k, Py_ssize_t n)
{
    dd t = two_sum(T.hi, (double)(k - 1));
    return bound_f64((dd){t.hi, t.lo + T.lo}, n);
}

/* One float64 output: y = (x - m) - L rounded to nearest, from split_y's parts: v =
 * s + e rounded once (the fast answer), rho = |y| - |v| = p + pl in magnitudes (p the
 * TwoSum error of v, exact), midpoints h above |v| and hd below (h = ulp(v) / 2; a
 * quarter ulp below a power of two). The margins (p - h) + pl and (p + hd) + pl keep
 * their sign through their one rounding; where both exceed delta the answer is
 * certain: v, or its neighbour on the side a margin crossed (where pl breaks a tie
 * that p alone sits on). lpos as in round_f32_checked. Results below 2^-969 (a row
 * whose T underflows takes row_f64_tiny) are not tested: unsure. Overflow gives -inf. */
static inline double
out_f64_checked(double x, double m, double Lh, double Ll, double delta, int *unsure)
{
    parts3 y = split_y(x, m, Lh, Ll);
    if (!(fabs(y.s) <= DBL_MAX)) {
        return y.s;
    }
    dd q = two_sum(y.s, y.e);
    double v = q.hi;
    double sg = v <= 0.0 ? -1.0 : 1.0;
    double av = fabs(v), p = sg * q.lo, pl = sg * y.el; /* |y| - |v| = p + pl */
    uint64_t vb = double_to_bits(av);
    double h = bits_to_double((vb & ((uint64_t)0x7ff << 52)) - ((uint64_t)53 << 52));
    double hd = (vb & (((uint64_t)1 << 52) - 1)) == 0 ? h * 0.5 : h;
    double mu = (p - h) + pl, md = (p + hd) + pl;
    double tu = delta + 0x1p-52 * (fabs(mu) + fabs(pl));
    double td = delta + 0x1p-52 * (fabs(md) + fabs(pl));
    double g = (-y.dh - av) - y.dl;
    double gu = ((-y.dh - av) - h) - y.dl;
    int up_sure = Lh > 0.0 && gu >= 0.0;
    int floor_ok = Lh > 0.0 && g + hd >= 0.0;
    int64_t step = (int64_t)(mu > 0.0 || up_sure) - (int64_t)(md < 0.0 && !floor_ok);
    int ok = av >= 0x1p-969 && (fabs(mu) > tu || up_sure) && (fabs(md) > td || floor_ok);
    *unsure |= !ok && delta > 0.0;
    uint64_t sign = signbit(v) ? (uint64_t)1 << 63 : 0;
    return bits_to_double((uint64_t)((int64_t)vb + step) | sign);
}

