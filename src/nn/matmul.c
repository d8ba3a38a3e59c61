/* matmul.c — the dot-product kernel behind every linear layer: tiles of 4 weight rows × 2
 * tokens held in registers, weights widened to fp32 in registers (bf16: shift, f16: F16C).
 * Runtime dispatch picks the family core/cpu.c names (AVX-512, AVX2+FMA, or the portable scalar
 * loop, the oracle). Quantized weights (Q8_0, Q4_0) multiply 8-bit activation blocks with exact
 * integer dot products (numerics in nn/kernels/matmul_impl.h); the AVX-512 family is in
 * nn/kernels/matmul_avx512.c. */
#include "nn/matmul.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "nn/kernels/matmul_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOEC_X86 1
#endif

/* ------------------------------------------------------------------ shared */

float moec_mm_load_scalar(const void *w, moec_dtype t, int64_t i) {
    uint16_t h;
    switch (t) {
    case MOEC_DTYPE_F32: {
        float f;
        memcpy(&f, (const char *)w + 4 * i, 4);
        return f;
    }
    case MOEC_DTYPE_BF16: memcpy(&h, (const char *)w + 2 * i, 2); return moec_bf16_to_f32(h);
    case MOEC_DTYPE_F16: memcpy(&h, (const char *)w + 2 * i, 2); return moec_f16_to_f32(h);
    default: MOEC_ASSERT(!"moec_mm_load_scalar: not a float format"); return 0.f;
    }
}
#define load_scalar moec_mm_load_scalar

void moec_mm_quantize_x(moec_xq8 *dst, const float *x, int64_t K) {
    for (int64_t b = 0; b < K / MOEC_QBLOCK; b++) {
        const float *xb = x + b * MOEC_QBLOCK;
        float amax = 0.f;
        for (int i = 0; i < MOEC_QBLOCK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        int32_t sum = 0;
        for (int i = 0; i < MOEC_QBLOCK; i++) {
            /* |xb[i] * id| <= 127 up to one rounding, so the clamp only guards against it */
            float q = nearbyintf(xb[i] * id);
            q = q > 127.f ? 127.f : q < -127.f ? -127.f : q;
            dst[b].q[i] = (int8_t)q;
            sum += dst[b].q[i];
        }
        dst[b].d = d;
        dst[b].sum = sum;
    }
}


static void quantize_into(moec_xq8 *dst, const float *x, int64_t ldx, int64_t K, int T) {
    void (*quantize)(moec_xq8 *, const float *, int64_t) = moec_mm_quantize_x;
#ifdef MOEC_X86
    if (moec_cpu_isa() == MOEC_ISA_AVX512) quantize = moec_mm_quantize_x_avx512;
    else if (moec_cpu_isa() == MOEC_ISA_AVX2) quantize = moec_mm_quantize_x_avx2;
#endif
    const int64_t nb = K / MOEC_QBLOCK;
    for (int t = 0; t < T; t++) quantize(dst + (size_t)t * (size_t)nb, x + (size_t)t * (size_t)ldx, K);
}

size_t moec_matmul_act_row_bytes(int64_t K) { return (size_t)(K / MOEC_QBLOCK) * sizeof(moec_xq8); }

void moec_matmul_prepare_act(moec_xq8 *dst, const float *x, int64_t ldx, int64_t K, int T) {
    MOEC_ASSERT(K % MOEC_QBLOCK == 0);
    quantize_into(dst, x, ldx, K, T);
}

moec_xq8 *moec_mm_quantize_rows(const float *x, int64_t ldx, int64_t K, int T) {
    const int64_t nb = K / MOEC_QBLOCK;
    const size_t n = (size_t)nb * (size_t)T;
    moec_xq8 *xq = moec_scratch(MOEC_SCRATCH_MM_XQ, n * sizeof(moec_xq8));
    if (!xq) return NULL;
    quantize_into(xq, x, ldx, K, T);
    return xq;
}

static moec_xq8 *quantize_rows_or_die(const float *x, int64_t ldx, int64_t K, int T) {
    moec_xq8 *xq = moec_mm_quantize_rows(x, ldx, K, T);
    if (!xq) {
        fprintf(stderr, "moec: matmul: out of memory for %d quantized activation rows of %lld\n", T, (long long)K);
        exit(1);
    }
    return xq;
}

/* ------------------------------------------------------------------ scalar */

/* The oracle's block dot: Σ_b (d_w · d_x) · Σ_i q_w q_x, the blocks in order. */
static float qdot_scalar(const char *wr, moec_dtype t, const moec_xq8 *xq, int64_t nb) {
    float acc = 0.f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        uint16_t dh;
        if (t == MOEC_DTYPE_Q8_0) {
            const moec_block_q8_0 *blk = (const moec_block_q8_0 *)(const void *)(wr + (size_t)b * sizeof *blk);
            memcpy(&dh, &blk->d, 2);
            for (int i = 0; i < MOEC_QBLOCK; i++) isum += (int32_t)blk->qs[i] * xq[b].q[i];
        } else {
            const moec_block_q4_0 *blk = (const moec_block_q4_0 *)(const void *)(wr + (size_t)b * sizeof *blk);
            memcpy(&dh, &blk->d, 2);
            for (int i = 0; i < MOEC_QBLOCK / 2; i++) {
                isum += ((int32_t)(blk->qs[i] & 15) - 8) * xq[b].q[i];
                isum += ((int32_t)(blk->qs[i] >> 4) - 8) * xq[b].q[i + MOEC_QBLOCK / 2];
            }
        }
        acc += (moec_f16_to_f32(dh) * xq[b].d) * (float)isum;
    }
    return acc;
}

void moec_mm_rows_scalar(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                         int T, int64_t n0, int64_t n1, const moec_xq8 *given) {
    const int64_t K = W->cols;
    const size_t rb = moec_row_bytes(W->dtype, K);
    if (moec_dtype_info(W->dtype)->quantized) {
        const moec_xq8 *xq = given ? given : quantize_rows_or_die(x, ldx, K, T);
        const int64_t nb = K / MOEC_QBLOCK;
        for (int64_t n = n0; n < n1; n++)
            for (int t = 0; t < T; t++)
                out[(size_t)t * (size_t)N + (size_t)n] =
                    qdot_scalar((const char *)W->data + (size_t)n * rb, W->dtype, xq + (size_t)t * (size_t)nb, nb) +
                    (bias ? bias[n] : 0.f);
        return;
    }
    for (int64_t n = n0; n < n1; n++) {
        const char *wr = (const char *)W->data + (size_t)n * rb;
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * (size_t)ldx;
            float acc = 0.f;
            for (int64_t k = 0; k < K; k++) acc += xr[k] * load_scalar(wr, W->dtype, k);
            out[(size_t)t * (size_t)N + (size_t)n] = acc + (bias ? bias[n] : 0.f);
        }
    }
}
#define rows_scalar moec_mm_rows_scalar

void moec_matmul_naive(float *out, const float *x, const moec_mat *W, const float *bias, int T) {
    rows_scalar(out, W->rows, x, W->cols, W, bias, T, 0, W->rows, NULL);
}

/* ------------------------------------------------------------------ AVX2 */

#ifdef MOEC_X86
#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

AVX2_FN static inline __m256 load8(const void *p, moec_dtype t) {
    if (t == MOEC_DTYPE_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    if (t == MOEC_DTYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    return _mm256_loadu_ps((const float *)p);
}

AVX2_FN static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* moec_mm_quantize_x with 8 lanes, bit for bit (as moec_mm_quantize_x_avx512): the same max of
 * |x|, d and 1/d in scalar fp32, round half to even, the same clamp. */
AVX2_FN void moec_mm_quantize_x_avx2(moec_xq8 *dst, const float *x, int64_t K) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
    for (int64_t b = 0; b < K / MOEC_QBLOCK; b++) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + b * MOEC_QBLOCK + 8 * j);
            m = _mm256_max_ps(m, _mm256_and_ps(v[j], absmask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4], sum = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[j], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
            sum = _mm256_add_epi32(sum, q[j]);
        }
        /* int32 → int8 (no saturation happens: |q| <= 127); packs interleave 128-bit lanes, the
         * permute puts the 32 bytes back in order */
        const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(void *)dst[b].q, _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        dst[b].d = d;
        dst[b].sum = _mm_cvtsi128_si32(s4);
    }
}

/* 4 weight rows × NT tokens (NT = 1 or 2), K multiple of 8 handled in SIMD, tail scalar.
 * The dtype switch is hoisted by making the dtype a compile-time constant per instance. */
#define DEFINE_TILE(NAME, DT)                                                                                  \
    AVX2_FN static void NAME(float *out, const float *x, int64_t ldx, const void *w, int64_t K, int64_t N, int T, int64_t n, \
                             int64_t nr, const float *bias) {                                                  \
        const size_t es = moec_dtype_info(DT)->block_bytes, rs = (size_t)K * es;                                           \
        const char *w0 = (const char *)w + (size_t)n * rs;                                                     \
        const char *w1 = nr > 1 ? w0 + rs : w0, *w2 = nr > 2 ? w0 + 2 * rs : w0, *w3 = nr > 3 ? w0 + 3 * rs : w0; \
        const int64_t K8 = K & ~(int64_t)7;                                                                    \
        int t = 0;                                                                                             \
        for (; t + 2 <= T; t += 2) {                                                                           \
            const float *xa = x + (size_t)t * (size_t)ldx, *xb = xa + ldx;                                         \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;    \
            for (int64_t k = 0; k < K8; k += 8) {                                                              \
                __m256 xv = _mm256_loadu_ps(xa + k), yv = _mm256_loadu_ps(xb + k);                             \
                __m256 v0 = load8(w0 + k * es, DT), v1 = load8(w1 + k * es, DT);                               \
                a0 = _mm256_fmadd_ps(v0, xv, a0);                                                              \
                b0 = _mm256_fmadd_ps(v0, yv, b0);                                                              \
                a1 = _mm256_fmadd_ps(v1, xv, a1);                                                              \
                b1 = _mm256_fmadd_ps(v1, yv, b1);                                                              \
                __m256 v2 = load8(w2 + k * es, DT), v3 = load8(w3 + k * es, DT);                               \
                a2 = _mm256_fmadd_ps(v2, xv, a2);                                                              \
                b2 = _mm256_fmadd_ps(v2, yv, b2);                                                              \
                a3 = _mm256_fmadd_ps(v3, xv, a3);                                                              \
                b3 = _mm256_fmadd_ps(v3, yv, b3);                                                              \
            }                                                                                                  \
            float ra[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                                            \
            float rb[4] = {hsum(b0), hsum(b1), hsum(b2), hsum(b3)};                                            \
            const char *wr[4] = {w0, w1, w2, w3};                                                              \
            for (int r = 0; r < nr; r++) {                                                                     \
                for (int64_t k = K8; k < K; k++) {                                                             \
                    float wv = load_scalar(wr[r], DT, k);                                                      \
                    ra[r] += wv * xa[k];                                                                       \
                    rb[r] += wv * xb[k];                                                                       \
                }                                                                                              \
                float bv = bias ? bias[n + r] : 0.f;                                                           \
                out[(size_t)t * (size_t)N + (size_t)(n + r)] = ra[r] + bv;                                     \
                out[(size_t)(t + 1) * (size_t)N + (size_t)(n + r)] = rb[r] + bv;                               \
            }                                                                                                  \
        }                                                                                                      \
        for (; t < T; t++) {                                                                                   \
            const float *xa = x + (size_t)t * (size_t)ldx;                                                     \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                        \
            for (int64_t k = 0; k < K8; k += 8) {                                                              \
                __m256 xv = _mm256_loadu_ps(xa + k);                                                           \
                a0 = _mm256_fmadd_ps(load8(w0 + k * es, DT), xv, a0);                                          \
                a1 = _mm256_fmadd_ps(load8(w1 + k * es, DT), xv, a1);                                          \
                a2 = _mm256_fmadd_ps(load8(w2 + k * es, DT), xv, a2);                                          \
                a3 = _mm256_fmadd_ps(load8(w3 + k * es, DT), xv, a3);                                          \
            }                                                                                                  \
            float ra[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                                            \
            const char *wr[4] = {w0, w1, w2, w3};                                                              \
            for (int r = 0; r < nr; r++) {                                                                     \
                for (int64_t k = K8; k < K; k++) ra[r] += load_scalar(wr[r], DT, k) * xa[k];                   \
                out[(size_t)t * (size_t)N + (size_t)(n + r)] = ra[r] + (bias ? bias[n + r] : 0.f);             \
            }                                                                                                  \
        }                                                                                                      \
    }

DEFINE_TILE(tile_bf16, MOEC_DTYPE_BF16)
DEFINE_TILE(tile_f16, MOEC_DTYPE_F16)
DEFINE_TILE(tile_f32, MOEC_DTYPE_F32)

/* ---- packed path for many tokens (prefill, well-filled experts) -----------------------
 * A panel of 16 weight rows is widened to fp32 once and transposed to [K][16]; then a 6×16
 * register tile (12 accumulators) runs over all tokens: per k, 2 panel loads, 6 broadcasts of
 * x, 12 FMAs. The panel (16·K floats) stays in L2 while x streams. */

#define PANEL MOEC_MM_PANEL
#define MR 6
#define PACKED_MIN_T MOEC_MM_PACKED_MIN_T

float *moec_mm_panel_scratch(size_t n) { return moec_scratch(MOEC_SCRATCH_MM_PANEL, n * sizeof(float)); }

AVX2_FN static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* P[k*16 + j] = W[n + j][k] for j < nr, 0 for nr <= j < 16. */
AVX2_FN void moec_mm_pack_panel(float *P, const moec_mat *W, int64_t n, int nr) {
    const int64_t K = W->cols, K8 = K & ~(int64_t)7;
    const size_t es = moec_dtype_info(W->dtype)->block_bytes, rs = (size_t)K * es;
    const char *base = (const char *)W->data + (size_t)n * rs;
    for (int64_t k = 0; k < K8; k += 8)
        for (int j0 = 0; j0 < PANEL; j0 += 8) {
            __m256 r[8];
            for (int j = 0; j < 8; j++)
                r[j] = j0 + j < nr ? load8(base + (size_t)(j0 + j) * rs + (size_t)k * es, W->dtype) : _mm256_setzero_ps();
            transpose8(r);
            for (int kk = 0; kk < 8; kk++) _mm256_store_ps(P + (size_t)(k + kk) * PANEL + j0, r[kk]);
        }
    for (int64_t k = K8; k < K; k++)
        for (int j = 0; j < PANEL; j++)
            P[(size_t)k * PANEL + j] = j < nr ? load_scalar(base + (size_t)j * rs, W->dtype, k) : 0.f;
}

/* out[t+i][n..n+nr) = x[t+i] · panel, for i < M (M ≤ 6 is a compile-time constant per call). */
AVX2_FN static inline __attribute__((always_inline)) void kernel_6x16(float *out, int64_t ldo, const float *x,
                                                                      int64_t ldx, const float *P, int64_t K, int M,
                                                                      int nr, const float *bias) {
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        const __m256 b0 = _mm256_load_ps(P + (size_t)k * PANEL), b1 = _mm256_load_ps(P + (size_t)k * PANEL + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            if (i < M) {
                const __m256 a = _mm256_broadcast_ss(x + (size_t)i * ldx + k);
                c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
                c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
            }
        }
    }
    __m256 bv0 = _mm256_setzero_ps(), bv1 = bv0;
    float tmp[PANEL];
    if (bias) {
        for (int j = 0; j < PANEL; j++) tmp[j] = j < nr ? bias[j] : 0.f;
        bv0 = _mm256_loadu_ps(tmp);
        bv1 = _mm256_loadu_ps(tmp + 8);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        if (i < M) {
            float *o = out + (size_t)i * ldo;
            if (nr == PANEL) {
                _mm256_storeu_ps(o, _mm256_add_ps(c[i][0], bv0));
                _mm256_storeu_ps(o + 8, _mm256_add_ps(c[i][1], bv1));
            } else {
                _mm256_storeu_ps(tmp, _mm256_add_ps(c[i][0], bv0));
                _mm256_storeu_ps(tmp + 8, _mm256_add_ps(c[i][1], bv1));
                for (int j = 0; j < nr; j++) o[j] = tmp[j];
            }
        }
    }
}

AVX2_FN static void rows_packed(float *P, float *out, int64_t N, const float *x, int64_t ldx,
                                const moec_mat *W, const float *bias, int T, int64_t n0, int64_t n1) {
    const int64_t K = W->cols;
    for (int64_t n = n0; n < n1; n += PANEL) {
        const int nr = (int)(n1 - n < PANEL ? n1 - n : PANEL);
        moec_mm_pack_panel(P, W, n, nr);
        const float *bn = bias ? bias + n : NULL;
        int t = 0;
        for (; t + MR <= T; t += MR)
            kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 6, nr, bn);
        switch (T - t) {
        case 5: kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 5, nr, bn); break;
        case 4: kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 4, nr, bn); break;
        case 3: kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 3, nr, bn); break;
        case 2: kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 2, nr, bn); break;
        case 1: kernel_6x16(out + (size_t)t * N + n, N, x + (size_t)t * ldx, ldx, P, K, 1, nr, bn); break;
        default: break;
        }
    }
}

/* ---- bf16, few tokens (decode): the even/odd trick ------------------------------------
 * 16 bf16 weights loaded as 8 uint32 pairs give their even elements as fp32 by `<< 16` and
 * their odd elements by `& 0xffff0000`: one load and two integer ops per 16 weights, versus
 * two widening loads and two shifts. x is pre-split into [even 8 | odd 8] per 16 columns.
 * Decode is bound by memory bandwidth only once the conversion is this cheap. */

static float *xsplit_buffer(size_t n) { return moec_scratch(MOEC_SCRATCH_MM_XSPLIT, n * sizeof(float)); }

AVX2_FN static void tile_bf16_eo(float *out, const float *xs, const float *x, const void *w, int64_t K, int64_t N,
                                 int64_t n, int64_t nr, const float *bias, size_t pf) {
    const size_t rs = (size_t)K * 2;
    const char *w0 = (const char *)w + (size_t)n * rs;
    const char *w1 = nr > 1 ? w0 + rs : w0, *w2 = nr > 2 ? w0 + 2 * rs : w0, *w3 = nr > 3 ? w0 + 3 * rs : w0;
    const int64_t K16 = K & ~(int64_t)15;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
#define EO_ROW(wr, e, o)                                                            \
    {                                                                               \
        const __m256i v = _mm256_loadu_si256((const __m256i *)((wr) + 2 * k));      \
        e = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, e); \
        o = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi)), xo, o);  \
    }
    for (int64_t k = 0; k < K16; k += 16) {
        /* the next tile's rows follow these four: start their stream early (pf = 0 at the slice's end) */
        _mm_prefetch(w0 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w1 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w2 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w3 + pf + 2 * k, _MM_HINT_T0);
        const __m256 xe = _mm256_load_ps(xs + k), xo = _mm256_load_ps(xs + k + 8);
        EO_ROW(w0, e0, o0)
        EO_ROW(w1, e1, o1)
        EO_ROW(w2, e2, o2)
        EO_ROW(w3, e3, o3)
    }
#undef EO_ROW
    float r[4] = {hsum(_mm256_add_ps(e0, o0)), hsum(_mm256_add_ps(e1, o1)), hsum(_mm256_add_ps(e2, o2)),
                  hsum(_mm256_add_ps(e3, o3))};
    const char *wr[4] = {w0, w1, w2, w3};
    for (int i = 0; i < nr; i++) {
        for (int64_t k = K16; k < K; k++) r[i] += load_scalar(wr[i], MOEC_DTYPE_BF16, k) * x[k];
        out[n + i] = r[i] + (bias ? bias[n + i] : 0.f);
    }
    (void)N;
}

#define TOKEN_CHUNK 64 /* tokens per pass over a tile of weight rows (their x rows stay in L2) */

/* ---- quantized weights (Q8_0, Q4_0) × 8-bit activation blocks ---------------------------
 * Per block: 32 signed weights (Q4_0 unpacked to q - 8), |w| × sign(x, w) in vpmaddubsw (exact:
 * |w| ≤ 128, |x| ≤ 127, pairs ≤ 32512), pairs summed to 8 int32 lanes, converted, and one FMA
 * with d_w · d_x. 4 weight rows per tile; the tile stays in L1 while the tokens go by. */

AVX2_FN static inline __m256i q4_unpack(const char *qs) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)qs);
    const __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(15));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

AVX2_FN static inline __m256i qload(const char *blk, moec_dtype t) {
    return t == MOEC_DTYPE_Q8_0 ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2)) : q4_unpack(blk + 2);
}

AVX2_FN static inline float qscale(const char *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return _cvtsh_ss(h);
}

/* the 8 lanes of d_w · d_x · (w · x) for one block; aw = |w| */
AVX2_FN static inline __m256 qdot8w(__m256i w, __m256i aw, float dw, __m256i x, float dx) {
    const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1))), _mm256_set1_ps(dw * dx));
}

AVX2_FN static inline __m256 qdot8(const char *blk, moec_dtype t, __m256i x, float dx) {
    const __m256i w = qload(blk, t);
    return qdot8w(w, _mm256_sign_epi8(w, w), qscale(blk), x, dx);
}

/* 4 rows × 2 tokens: each weight block loaded, unpacked and made absolute once for both. */
#define DEFINE_QTILE42(NAME, DT, BB)                                                                            \
    AVX2_FN static void NAME(float *out, int64_t N, const moec_xq8 *xq, int64_t nb, const char *w0, size_t rs,  \
                             int64_t n, int nr, const float *bias) {                                            \
        const char *wr[4] = {w0, nr > 1 ? w0 + rs : w0, nr > 2 ? w0 + 2 * rs : w0, nr > 3 ? w0 + 3 * rs : w0};  \
        const moec_xq8 *xa = xq, *xb = xq + nb;                                                                 \
        __m256 a[4], c[4];                                                                                      \
        for (int r = 0; r < 4; r++) a[r] = c[r] = _mm256_setzero_ps();                                          \
        for (int64_t b = 0; b < nb; b++) {                                                                      \
            const size_t o = (size_t)b * (BB);                                                                  \
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)xa[b].q);                      \
            const __m256i yv = _mm256_loadu_si256((const __m256i *)(const void *)xb[b].q);                      \
            for (int r = 0; r < 4; r++) {                                                                       \
                const __m256i w = qload(wr[r] + o, DT), aw = _mm256_sign_epi8(w, w);                            \
                const float dw = qscale(wr[r] + o);                                                             \
                a[r] = _mm256_add_ps(a[r], qdot8w(w, aw, dw, xv, xa[b].d));                                     \
                c[r] = _mm256_add_ps(c[r], qdot8w(w, aw, dw, yv, xb[b].d));                                     \
            }                                                                                                   \
        }                                                                                                       \
        for (int i = 0; i < nr; i++) {                                                                          \
            const float bv = bias ? bias[n + i] : 0.f;                                                          \
            out[(size_t)(n + i)] = hsum(a[i]) + bv;                                                             \
            out[(size_t)N + (size_t)(n + i)] = hsum(c[i]) + bv;                                                 \
        }                                                                                                       \
    }

DEFINE_QTILE42(qtile42_q8_0, MOEC_DTYPE_Q8_0, sizeof(moec_block_q8_0))
DEFINE_QTILE42(qtile42_q4_0, MOEC_DTYPE_Q4_0, sizeof(moec_block_q4_0))

#define DEFINE_QTILE(NAME, DT, BB)                                                                              \
    AVX2_FN static void NAME(float *out, int64_t N, const moec_xq8 *xq, int64_t nb, const char *w0, size_t rs, int T, \
                             int64_t n, int nr, const float *bias) {                                            \
        const char *w1 = nr > 1 ? w0 + rs : w0, *w2 = nr > 2 ? w0 + 2 * rs : w0, *w3 = nr > 3 ? w0 + 3 * rs : w0; \
        for (int t = 0; t < T; t++) {                                                                           \
            const moec_xq8 *xt = xq + (size_t)t * (size_t)nb;                                                   \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                         \
            for (int64_t b = 0; b < nb; b++) {                                                                  \
                const size_t o = (size_t)b * (BB);                                                              \
                if (t == 0) {                                                                                   \
                    _mm_prefetch(w0 + 4 * rs + o, _MM_HINT_T0);                                                 \
                    _mm_prefetch(w1 + 4 * rs + o, _MM_HINT_T0);                                                 \
                    _mm_prefetch(w2 + 4 * rs + o, _MM_HINT_T0);                                                 \
                    _mm_prefetch(w3 + 4 * rs + o, _MM_HINT_T0);                                                 \
                }                                                                                               \
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)xt[b].q);                  \
                const float dx = xt[b].d;                                                                       \
                a0 = _mm256_add_ps(a0, qdot8(w0 + o, DT, xv, dx));                                              \
                a1 = _mm256_add_ps(a1, qdot8(w1 + o, DT, xv, dx));                                              \
                a2 = _mm256_add_ps(a2, qdot8(w2 + o, DT, xv, dx));                                              \
                a3 = _mm256_add_ps(a3, qdot8(w3 + o, DT, xv, dx));                                              \
            }                                                                                                   \
            const float r[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                                        \
            for (int i = 0; i < nr; i++)                                                                        \
                out[(size_t)t * (size_t)N + (size_t)(n + i)] = r[i] + (bias ? bias[n + i] : 0.f);              \
        }                                                                                                       \
    }

DEFINE_QTILE(qtile_q8_0, MOEC_DTYPE_Q8_0, sizeof(moec_block_q8_0))
DEFINE_QTILE(qtile_q4_0, MOEC_DTYPE_Q4_0, sizeof(moec_block_q4_0))

AVX2_FN static void rows_q_avx2(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                                const float *bias, int T, int64_t n0, int64_t n1, const moec_xq8 *given) {
    const int64_t K = W->cols, nb = K / MOEC_QBLOCK;
    const size_t rs = moec_row_bytes(W->dtype, K);
    const moec_xq8 *xq = given ? given : quantize_rows_or_die(x, ldx, K, T);
    for (int t0 = 0; t0 < T; t0 += TOKEN_CHUNK) {
        const int tc = T - t0 < TOKEN_CHUNK ? T - t0 : TOKEN_CHUNK;
        for (int64_t n = n0; n < n1; n += 4) {
            const int nr = (int)(n1 - n < 4 ? n1 - n : 4);
            const char *w0 = (const char *)W->data + (size_t)n * rs;
            int t = t0;
            for (; t + 2 <= t0 + tc; t += 2) {
                float *o = out + (size_t)t * (size_t)N;
                if (W->dtype == MOEC_DTYPE_Q8_0) qtile42_q8_0(o, N, xq + (size_t)t * (size_t)nb, nb, w0, rs, n, nr, bias);
                else qtile42_q4_0(o, N, xq + (size_t)t * (size_t)nb, nb, w0, rs, n, nr, bias);
            }
            if (t < t0 + tc) { /* the odd token, and decode */
                float *o = out + (size_t)t * (size_t)N;
                if (W->dtype == MOEC_DTYPE_Q8_0) qtile_q8_0(o, N, xq + (size_t)t * (size_t)nb, nb, w0, rs, 1, n, nr, bias);
                else qtile_q4_0(o, N, xq + (size_t)t * (size_t)nb, nb, w0, rs, 1, n, nr, bias);
            }
        }
    }
}

/* Few tokens: dot-product tiles straight from the stored weights (memory-bound decode). */

AVX2_FN void moec_mm_rows_avx2(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                               const float *bias, int T, int64_t n0, int64_t n1, const moec_xq8 *xq) {
    const int64_t K = W->cols;
    if (moec_dtype_info(W->dtype)->quantized) {
        rows_q_avx2(out, N, x, ldx, W, bias, T, n0, n1, xq);
        return;
    }
    /* (without memory for a panel, the unpacked tiles below still work) */
    float *P;
    if (T >= PACKED_MIN_T && (P = moec_mm_panel_scratch((size_t)K * PANEL))) {
        rows_packed(P, out, N, x, ldx, W, bias, T, n0, n1);
        return;
    }
    float *xs;
    if (W->dtype == MOEC_DTYPE_BF16 && T == 1 && (xs = xsplit_buffer((size_t)K))) {
        /* one token at a time: the 4-row tile stays in L1 across the tokens */
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * (size_t)ldx;
            for (int64_t k = 0; k + 16 <= K; k += 16)
                for (int j = 0; j < 8; j++) {
                    xs[k + j] = xt[k + 2 * j];
                    xs[k + 8 + j] = xt[k + 2 * j + 1];
                }
            for (int64_t n = n0; n < n1; n += 4)
                tile_bf16_eo(out + (size_t)t * (size_t)N, xs, xt, W->data, K, N, n, n1 - n < 4 ? n1 - n : 4, bias,
                             n + 4 < n1 ? 4 * (size_t)K * 2 : 0);
        }
        return;
    }
    for (int t0 = 0; t0 < T; t0 += TOKEN_CHUNK) {
        int tc = T - t0 < TOKEN_CHUNK ? T - t0 : TOKEN_CHUNK;
        const float *xc = x + (size_t)t0 * (size_t)ldx;
        float *oc = out + (size_t)t0 * (size_t)N;
        for (int64_t n = n0; n < n1; n += 4) {
            int64_t nr = n1 - n < 4 ? n1 - n : 4;
            switch (W->dtype) {
            case MOEC_DTYPE_BF16: tile_bf16(oc, xc, ldx, W->data, K, N, tc, n, nr, bias); break;
            case MOEC_DTYPE_F16: tile_f16(oc, xc, ldx, W->data, K, N, tc, n, nr, bias); break;
            default: tile_f32(oc, xc, ldx, W->data, K, N, tc, n, nr, bias); break;
            }
        }
    }
}
#endif

/* ------------------------------------------------------------------ dispatch */

typedef moec_mm_rows_fn rows_fn;

static rows_fn rows_of(moec_isa isa) {
    MOEC_ASSERT(isa >= 0 && isa < MOEC_ISA_COUNT);
#ifdef MOEC_X86
    if (isa == MOEC_ISA_AVX512) return moec_mm_rows_avx512;
    if (isa == MOEC_ISA_AVX2) return moec_mm_rows_avx2;
#endif
    return rows_scalar;
}

static rows_fn g_rows;
static pthread_once_t g_rows_once = PTHREAD_ONCE_INIT;

static void pick_once(void) { g_rows = rows_of(moec_cpu_isa()); }

/* Chosen once (pthread_once): expert threads call this concurrently on their first GEMM. */
static rows_fn get_rows(void) {
    pthread_once(&g_rows_once, pick_once);
    return g_rows;
}

const char *moec_matmul_kernel_name(void) { return moec_isa_name(moec_cpu_isa()); }

static void check_shape(const moec_mat *W) {
    /* rows of the block formats are whole blocks (the loaders check files; this checks callers) */
    MOEC_ASSERT(W->cols % moec_dtype_info(W->dtype)->block == 0);
}

void moec_matmul_rows(float *out, int64_t ldo, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                      int T, int64_t n0, int64_t n1) {
    MOEC_ASSERT(ldo >= n1 && ldx >= W->cols);
    check_shape(W);
    if (n1 > n0 && T > 0) get_rows()(out, ldo, x, ldx, W, bias, T, n0, n1, NULL);
}

void moec_matmul_rows_prepared(float *out, int64_t ldo, const float *x, int64_t ldx, const moec_xq8 *xq,
                               const moec_mat *W, const float *bias, int T, int64_t n0, int64_t n1) {
    MOEC_ASSERT(ldo >= n1 && ldx >= W->cols);
    check_shape(W);
    if (n1 > n0 && T > 0) get_rows()(out, ldo, x, ldx, W, bias, T, n0, n1, xq);
}

void moec_matmul_rows_isa(moec_isa isa, float *out, int64_t ldo, const float *x, int64_t ldx, const moec_mat *W,
                          const float *bias, int T, int64_t n0, int64_t n1) {
    MOEC_ASSERT(ldo >= n1 && ldx >= W->cols && moec_cpu_has_isa(isa));
    check_shape(W);
    if (n1 > n0 && T > 0) rows_of(isa)(out, ldo, x, ldx, W, bias, T, n0, n1, NULL);
}

typedef struct {
    rows_fn f;
    float *out;
    const float *x;
    const moec_mat *W;
    const float *bias;
    int T;
    const moec_xq8 *xq; /* quantized W: x's activation blocks, made once for every task */
} matmul_job;

static void matmul_task(void *p, int64_t n0, int64_t n1, int tid) {
    const matmul_job *j = p;
    (void)tid;
    j->f(j->out, j->W->rows, j->x, j->W->cols, j->W, j->bias, j->T, n0, n1, j->xq);
}

/* Output rows per task: a multiple of the 4-row tile (so each tile is computed the same way
 * whatever the split: results do not depend on the thread count), at most 64 rows, and at
 * least 4 tasks per thread where the matrix allows, so that a preempted thread holds up
 * little of the work. */
static int64_t rows_per_task(int64_t N, int64_t K, int T) {
    if ((int64_t)T * N * K < (1 << 16)) return N; /* not worth waking threads for */
    const int64_t per = (N + 4 * moec_threads_count() - 1) / (4 * moec_threads_count());
    const int64_t r = (per + 3) / 4 * 4;
    return r > 64 ? 64 : r;
}

/* The caller thread's prepared activations for moec_matmul (not the kernels' own scratch, which
 * the caller also uses when it runs a task). */

void moec_matmul(float *out, const float *x, const moec_mat *W, const float *bias, int T) {
    check_shape(W);
    if (W->rows <= 0 || T <= 0) return;
    const int64_t per = rows_per_task(W->rows, W->cols, T);
    matmul_job j = {get_rows(), out, x, W, bias, T, NULL};
    if (moec_dtype_info(W->dtype)->quantized && per < W->rows) { /* several tasks: quantize x once */
        const size_t n = (size_t)(W->cols / MOEC_QBLOCK) * (size_t)T;
        moec_xq8 *act = moec_scratch(MOEC_SCRATCH_MM_ACT, n * sizeof(moec_xq8));
        if (act) { /* without the memory, each task quantizes for itself */
            quantize_into(act, x, W->cols, W->cols, T);
            j.xq = act;
        }
    }
    moec_parallel_range(W->rows, per, matmul_task, &j);
}
