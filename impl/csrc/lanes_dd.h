/* csrc/lanes_dd.h: dd_math.h's double-double steps lane by lane, written once for any
 * vector width and included by each vector path after it defines the width's
 * operations: passes_avx2.h (four lanes, the v_ functions) and passes_avx512.h (eight
 * lanes, the z_ functions). Both paths run the same operations in the same order, so
 * each lane's bits are the scalar code's and each other's.
 *
 * What the includer defines (undefined again at the end of this file):
 *   LN(f)                 the function's name on this path (v_##f, z_##f)
 *   LATTR                 the target attribute (AVX2, AVX512)
 *   LV, LVI               the vector of doubles, of 64-bit integers
 *   LSET(v), LZERO()      every lane v, every lane 0
 *   LADD LSUB LMUL LDIV   lane-wise arithmetic, rounded once
 *   LFMADD(a, b, c)       a b + c; LFMSUB a b - c; LFNMADD -(a b) + c; rounded once
 *   LFLOOR(x)             floor
 *   LCASTI(x), LCASTD(i)  the bits as integers, as doubles
 *   LSUB64 LAND64         64-bit integer subtraction, and
 *   LSRL64(i, s), LSLL64  64-bit logical shifts by a constant
 *   LSET64(v)             every 64-bit lane v
 *   LLOOKUP(tab, j)       tab[j] lane by lane, j in [0, 63]
 *   LSELECT_LT(x, c, a, b)  b in the lanes where x < c (ordered), a elsewhere */

/* x - m = hi + *lo exactly (TwoSum; nm = -m) */
LATTR static inline LV
LN(two_diff)(LV x, LV m, LV nm, LV *lo)
{
    LV hi = LSUB(x, m);
    LV bb = LSUB(hi, x);
    *lo = LADD(LSUB(x, LSUB(hi, bb)), LSUB(nm, bb));
    return hi;
}

/* two_sum */
LATTR static inline LV
LN(two_sum)(LV a, LV b, LV *lo)
{
    LV s = LADD(a, b);
    LV bb = LSUB(s, a);
    *lo = LADD(LSUB(a, LSUB(s, bb)), LSUB(b, bb));
    return s;
}

/* fast_two_sum (|a| >= |b| or a = 0) */
LATTR static inline LV
LN(fast_two_sum)(LV a, LV b, LV *lo)
{
    LV s = LADD(a, b);
    *lo = LSUB(b, LSUB(s, a));
    return s;
}

/* acc_dd */
LATTR static inline void
LN(acc_dd)(LV *AH, LV *AL, LV eh, LV el)
{
    LV s = LADD(*AH, eh);
    LV sb = LSUB(s, *AH);
    LV err = LADD(LSUB(*AH, LSUB(s, sb)), LSUB(eh, sb));
    *AH = s;
    *AL = LADD(*AL, LADD(err, el));
}

/* dd_add */
LATTR static inline LV
LN(dd_add)(LV ah, LV al, LV bh, LV bl, LV *lo)
{
    LV se, s = LN(two_sum)(ah, bh, &se);
    LV te, t = LN(two_sum)(al, bl, &te);
    se = LADD(se, t);
    s = LN(fast_two_sum)(s, se, &se);
    se = LADD(se, te);
    return LN(fast_two_sum)(s, se, lo);
}

/* dd_mul */
LATTR static inline LV
LN(dd_mul)(LV ah, LV al, LV bh, LV bl, LV *lo)
{
    LV p = LMUL(ah, bh);
    LV e = LFMSUB(ah, bh, p);
    e = LADD(e, LADD(LMUL(ah, bl), LMUL(al, bh)));
    return LN(fast_two_sum)(p, e, lo);
}

/* 2^Kf for integral Kf in [-1022, 1023] held in a double */
LATTR static inline LV
LN(pow2)(LV Kf)
{
    LV biased = LADD(Kf, LSET(SHIFTER + 1023.0));
    LVI e = LSUB64(LCASTI(biased), LCASTI(LSET(SHIFTER)));
    return LCASTD(LSLL64(e, 52));
}

/* exp_term of rounding.h's slow path (term_dd2): exp(dh + dl) by exp_dd2's steps,
 * scaled by 2^K exactly while normal (two factors below 2^-1020); the caller zeroes
 * the lanes to drop. dh in [-746, 0]. */
LATTR static inline LV
LN(exp_dd2_scaled)(LV dh, LV dl, LV *lo)
{
    LV ks = LFMADD(dh, LSET(INV_D), LSET(SHIFTER));
    LV kf = LSUB(ks, LSET(SHIFTER));
    LVI k = LSUB64(LCASTI(ks), LCASTI(LSET(SHIFTER)));
    LV Kf = LFLOOR(LMUL(kf, LSET(0x1p-12)));
    LVI j = LAND64(LSRL64(k, 6), LSET64(63));
    LVI i = LAND64(k, LSET64(63));
    LV r1 = LFNMADD(kf, LSET(D1), dh); /* exact */
    LV p2 = LMUL(kf, LSET(D2));
    LV p2l = LFMSUB(kf, LSET(D2), p2);
    LV rl, rh = LN(two_sum)(r1, LSUB(LZERO(), p2), &rl);
    rl = LADD(rl, LSUB(LSUB(dl, p2l), LMUL(kf, LSET(D3))));
    rh = LN(fast_two_sum)(rh, rl, &rl);
    LV sq = LMUL(rh, rh);
    LV sql = LADD(LFMSUB(rh, rh, sq), LMUL(LSET(2.0), LMUL(rh, rl)));
    /* c = r^3/6 (1 + r/4 (1 + r/5 (1 + r/6))), in exp_dd2's order */
    LV c = LADD(LSET(1.0), LDIV(rh, LSET(6.0)));
    c = LADD(LSET(1.0), LMUL(LMUL(rh, LSET(0.2)), c));
    c = LADD(LSET(1.0), LMUL(LMUL(rh, LSET(0.25)), c));
    c = LMUL(rh, c);
    c = LMUL(LMUL(c, sq), LSET(1.0 / 6.0));
    LV ql, qh = LN(dd_add)(LMUL(sq, LSET(0.5)), LMUL(sql, LSET(0.5)), c, LZERO(), &ql);
    LV eml, emh = LN(dd_add)(rh, rl, qh, ql, &eml);
    LV th = LLOOKUP(TAB_HI, j), tl = LLOOKUP(TAB_LO, j);
    LV uh = LLOOKUP(TAB2_HI, i), ul = LLOOKUP(TAB2_LO, i);
    LV Pl, Ph = LN(dd_mul)(th, tl, uh, ul, &Pl);
    LV Ql, Qh = LN(dd_mul)(Ph, Pl, emh, eml, &Ql);
    LV el, eh = LN(dd_add)(Ph, Pl, Qh, Ql, &el);
    /* 2^K, or 2^(K + 600) and 2^-600 below K = -1020 */
    LV s1 = LN(pow2)(LSELECT_LT(Kf, LSET(-1020.0), Kf, LADD(Kf, LSET(600.0))));
    LV s2 = LSELECT_LT(Kf, LSET(-1020.0), LSET(1.0), LSET(0x1p-600));
    *lo = LMUL(LMUL(el, s1), s2);
    return LMUL(LMUL(eh, s1), s2);
}

#undef LN
#undef LATTR
#undef LV
#undef LVI
#undef LSET
#undef LZERO
#undef LADD
#undef LSUB
#undef LMUL
#undef LDIV
#undef LFMADD
#undef LFMSUB
#undef LFNMADD
#undef LFLOOR
#undef LCASTI
#undef LCASTD
#undef LSUB64
#undef LAND64
#undef LSRL64
#undef LSLL64
#undef LSET64
#undef LLOOKUP
#undef LSELECT_LT
