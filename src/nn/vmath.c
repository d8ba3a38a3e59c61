/* vmath.c — see vmath.h. libm's expf was ~7 % of a bf16 training step (softmax rows of the
 * attention and the loss, SwiGLU forward and backward), one call per element. */
#include "nn/vmath.h"

#include "core/error.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------ scalar oracle */

static double exp_sum_scalar(float *y, const float *x, float shift, int64_t i0, int64_t n) {
    double s = 0.0;
    for (int64_t i = i0; i < n; i++) {
        const float e = expf(x[i] - shift);
        if (y) y[i] = e;
        s += (double)e;
    }
    return s;
}

static void swiglu_scalar(float *out, const float *gate, const float *up, int64_t i0, int64_t n) {
    for (int64_t i = i0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.f + expf(-g)) * up[i];
    }
}

static void swiglu_back_scalar(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                               int64_t i0, int64_t n, int acc) {
    for (int64_t i = i0; i < n; i++) {
        const float g = gate[i], u = up[i], d = dh[i], s = 1.f / (1.f + expf(-g));
        const float dg = d * u * s * (1.f + g * (1.f - s)), du = d * g * s;
        dgate[i] = acc ? dgate[i] + dg : dg;
        dup[i] = acc ? dup[i] + du : du;
    }
}

#if defined(__x86_64__)
/* exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 in two parts (|r| <= ln 2 / 2), exp(r)
 * by Cephes' expf polynomial. x is clamped to [-104, 89] first (max/min with the constant first:
 * a NaN x passes through to the result), beyond which expf is 0 or +inf anyway. */
#define EXP_LO -104.f
#define EXP_HI 89.f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define LOG2E 1.44269504088896341f
#define EXP_POLY(FMA, SET1, r)                                                                                   \
    FMA(FMA(FMA(FMA(FMA(SET1(1.9875691500e-4f), r, SET1(1.3981999507e-3f)), r, SET1(8.3334519073e-3f)), r,       \
                SET1(4.1665795894e-2f)),                                                                         \
            r, SET1(1.6666665459e-1f)),                                                                          \
        r, SET1(5.0000001201e-1f))

#define AVX512_FN __attribute__((target("avx512f")))
#define AVX2_FN __attribute__((target("avx2,fma")))

AVX512_FN static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    const __m512 p = EXP_POLY(_mm512_fmadd_ps, _mm512_set1_ps, r);
    const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(y, n); /* y 2^n, overflowing to inf and rounding to subnormals as IEEE */
}

AVX2_FN static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    const __m256 p = EXP_POLY(_mm256_fmadd_ps, _mm256_set1_ps, r);
    const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    /* 2^n as 2^a 2^b with a = floor(n / 2), b = n - a, both normal for n in [-150, 129] */
    const __m256i ni = _mm256_cvtps_epi32(n), a = _mm256_srai_epi32(ni, 1), b = _mm256_sub_epi32(ni, a);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 pa = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(a, bias), 23));
    const __m256 pb = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(b, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, pa), pb);
}

/* the sums in float64 lanes: acc += the W floats of v */
AVX512_FN static inline void addd16(__m512d acc[2], __m512 v) {
    acc[0] = _mm512_add_pd(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    acc[1] = _mm512_add_pd(acc[1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
AVX512_FN static inline double hsumd16(const __m512d acc[2]) { return _mm512_reduce_add_pd(_mm512_add_pd(acc[0], acc[1])); }
AVX512_FN static inline void zerod16(__m512d acc[2]) { acc[0] = acc[1] = _mm512_setzero_pd(); }

AVX2_FN static inline void addd8(__m256d acc[2], __m256 v) {
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
AVX2_FN static inline double hsumd8(const __m256d acc[2]) {
    const __m256d s = _mm256_add_pd(acc[0], acc[1]);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
AVX2_FN static inline void zerod8(__m256d acc[2]) { acc[0] = acc[1] = _mm256_setzero_pd(); }

/* One family's loops; the last n % W elements go through the same vector code on a padded copy,
 * so every element gets the same arithmetic wherever it sits. */
#define VMATH_FAMILY(SUF, FN, W, VF, VD, EXP, LOAD, STORE, SET1, ADD, SUB, MUL, DIV, ADDD, HSUMD, ZEROD, ZERO)   \
    FN static double exp_sum_##SUF(float *y, const float *x, float shift, int64_t n) {                           \
        const VF sh = SET1(shift);                                                                               \
        VD acc[2];                                                                                               \
        ZEROD(acc);                                                                                              \
        int64_t i = 0;                                                                                           \
        for (; i + W <= n; i += W) {                                                                             \
            const VF e = EXP(SUB(LOAD(x + i), sh));                                                              \
            if (y) STORE(y + i, e);                                                                              \
            ADDD(acc, e);                                                                                        \
        }                                                                                                        \
        if (i < n) {                                                                                             \
            const int r = (int)(n - i);                                                                          \
            float b[W];                                                                                          \
            for (int k = 0; k < W; k++) b[k] = k < r ? x[i + k] : shift;                                         \
            STORE(b, EXP(SUB(LOAD(b), sh)));                                                                     \
            for (int k = 0; k < W; k++) {                                                                        \
                if (k < r) {                                                                                     \
                    if (y) y[i + k] = b[k];                                                                      \
                } else                                                                                           \
                    b[k] = 0.f;                                                                                  \
            }                                                                                                    \
            ADDD(acc, LOAD(b));                                                                                  \
        }                                                                                                        \
        return HSUMD(acc);                                                                                       \
    }                                                                                                            \
    FN static inline VF silu_##SUF(VF g, VF u) {                                                                 \
        const VF one = SET1(1.f);                                                                                \
        return MUL(DIV(g, ADD(one, EXP(SUB(ZERO(), g)))), u);                                                    \
    }                                                                                                            \
    FN static void swiglu_##SUF(float *out, const float *gate, const float *up, int64_t n) {                     \
        int64_t i = 0;                                                                                           \
        for (; i + W <= n; i += W) STORE(out + i, silu_##SUF(LOAD(gate + i), LOAD(up + i)));                     \
        if (i < n) {                                                                                             \
            const int r = (int)(n - i);                                                                          \
            float g[W], u[W];                                                                                    \
            for (int k = 0; k < W; k++) g[k] = k < r ? gate[i + k] : 0.f, u[k] = k < r ? up[i + k] : 0.f;       \
            STORE(g, silu_##SUF(LOAD(g), LOAD(u)));                                                              \
            for (int k = 0; k < r; k++) out[i + k] = g[k];                                                       \
        }                                                                                                        \
    }                                                                                                            \
    FN static inline void swiglu_back_v_##SUF(VF *dg, VF *du, VF d, VF g, VF u) {                                \
        const VF one = SET1(1.f), s = DIV(one, ADD(one, EXP(SUB(ZERO(), g))));                                   \
        *dg = MUL(MUL(MUL(d, u), s), ADD(one, MUL(g, SUB(one, s))));                                             \
        *du = MUL(MUL(d, g), s);                                                                                 \
    }                                                                                                            \
    FN static void swiglu_back_##SUF(float *dgate, float *dup, const float *dh, const float *gate,               \
                                     const float *up, int64_t n, int acc) {                                      \
        int64_t i = 0;                                                                                           \
        for (; i + W <= n; i += W) {                                                                             \
            VF dg, du;                                                                                           \
            swiglu_back_v_##SUF(&dg, &du, LOAD(dh + i), LOAD(gate + i), LOAD(up + i));                           \
            if (acc) {                                                                                         \
                dg = ADD(LOAD(dgate + i), dg);                                                                   \
                du = ADD(LOAD(dup + i), du);                                                                     \
            }                                                                                                    \
            STORE(dgate + i, dg);                                                                                \
            STORE(dup + i, du);                                                                                  \
        }                                                                                                        \
        if (i < n) {                                                                                             \
            const int r = (int)(n - i);                                                                          \
            float d[W], g[W], u[W];                                                                              \
            for (int k = 0; k < W; k++) {                                                                        \
                d[k] = k < r ? dh[i + k] : 0.f;                                                                  \
                g[k] = k < r ? gate[i + k] : 0.f;                                                                \
                u[k] = k < r ? up[i + k] : 0.f;                                                                  \
            }                                                                                                    \
            VF dg, du;                                                                                           \
            swiglu_back_v_##SUF(&dg, &du, LOAD(d), LOAD(g), LOAD(u));                                            \
            STORE(g, dg);                                                                                        \
            STORE(u, du);                                                                                        \
            for (int k = 0; k < r; k++) {                                                                        \
                dgate[i + k] = acc ? dgate[i + k] + g[k] : g[k];                                                 \
                dup[i + k] = acc ? dup[i + k] + u[k] : u[k];                                                     \
            }                                                                                                    \
        }                                                                                                        \
    }
VMATH_FAMILY(avx512, AVX512_FN, 16, __m512, __m512d, exp16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
             _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_div_ps, addd16, hsumd16, zerod16, _mm512_setzero_ps)
VMATH_FAMILY(avx2, AVX2_FN, 8, __m256, __m256d, exp8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
             _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_div_ps, addd8, hsumd8, zerod8, _mm256_setzero_ps)
#undef VMATH_FAMILY
#endif

/* ------------------------------------------------------------------ entry */

double moec_vexp_sum_isa(moec_isa isa, float *y, const float *x, float shift, int64_t n) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
#if defined(__x86_64__)
    if (isa == MOEC_ISA_AVX512) return exp_sum_avx512(y, x, shift, n);
    if (isa == MOEC_ISA_AVX2) return exp_sum_avx2(y, x, shift, n);
#endif
    return exp_sum_scalar(y, x, shift, 0, n);
}

void moec_vswiglu_isa(moec_isa isa, float *out, const float *gate, const float *up, int64_t n) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
#if defined(__x86_64__)
    if (isa == MOEC_ISA_AVX512) {
        swiglu_avx512(out, gate, up, n);
        return;
    }
    if (isa == MOEC_ISA_AVX2) {
        swiglu_avx2(out, gate, up, n);
        return;
    }
#endif
    swiglu_scalar(out, gate, up, 0, n);
}

void moec_vswiglu_back_isa(moec_isa isa, float *dgate, float *dup, const float *dh, const float *gate,
                           const float *up, int64_t n, int accumulate) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
#if defined(__x86_64__)
    if (isa == MOEC_ISA_AVX512) {
        swiglu_back_avx512(dgate, dup, dh, gate, up, n, accumulate);
        return;
    }
    if (isa == MOEC_ISA_AVX2) {
        swiglu_back_avx2(dgate, dup, dh, gate, up, n, accumulate);
        return;
    }
#endif
    swiglu_back_scalar(dgate, dup, dh, gate, up, 0, n, accumulate);
}

double moec_vexp_sum(float *y, const float *x, float shift, int64_t n) {
    return moec_vexp_sum_isa(moec_cpu_isa(), y, x, shift, n);
}

void moec_vswiglu(float *out, const float *gate, const float *up, int64_t n) {
    moec_vswiglu_isa(moec_cpu_isa(), out, gate, up, n);
}

void moec_vswiglu_back(float *dgate, float *dup, const float *dh, const float *gate, const float *up, int64_t n,
                       int accumulate) {
    moec_vswiglu_back_isa(moec_cpu_isa(), dgate, dup, dh, gate, up, n, accumulate);
}
