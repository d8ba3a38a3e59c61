/* matmul_avx512.c — the AVX-512 family (F, BW, VL, DQ; VNNI where present) of nn/matmul.c, with
 * the same numerics as the scalar oracle up to fp32 summation order:
 *  - few tokens (decode): 4 weight rows at a time streamed once, widened to 16 fp32 lanes in
 *    registers (bf16: the even/odd split, 32 weights per load and two integer ops; f16: vcvtph2ps),
 *    the next 4 rows prefetched, K tails by masked loads;
 *  - many tokens (prefill): the AVX2 family's fp32 panel of 16 rows (moec_mm_pack_panel), reused by
 *    a 12-token × 16-row register tile (12 zmm accumulators, x broadcast from memory);
 *  - Q8_0 / Q4_0: the activation blocks of moec_mm_quantize_rows, two blocks per zmm, vpdpbusd
 *    (unsigned × signed, exact int32) with the weights made unsigned (Q8_0: q + 128; Q4_0: the raw
 *    nibbles) and the offset removed by starting each accumulator at -offset · Σ q_x. Without VNNI
 *    the AVX2 integer kernels run (the family does not require it). */
#if defined(__x86_64__) || defined(__i386__)
#include "core/cpu.h"
#include "core/error.h"
#include "core/mem.h"
#include "nn/kernels/matmul_impl.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/* Per-thread scratch for the per-call activation layouts below. */
static void *scratch(size_t bytes) {
    void *p = moec_scratch(MOEC_SCRATCH_MM_LAYOUT, bytes);
    if (!p) {
        fprintf(stderr, "moec: matmul: out of memory for %zu bytes of scratch\n", bytes);
        exit(1);
    }
    return p;
}

static inline __mmask16 tail16(int64_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }
static inline __mmask32 tail32(int64_t left) { return left >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << left) - 1); }

/* ------------------------------------------------------------------ floats, few tokens */

/* f32 / f16: 4 rows × each token in turn (the 4 rows stay in L1 after the first token). */
#define DEFINE_DOT4(NAME, DT, ES)                                                                              \
    AVX512_FN static void NAME(float *out, int64_t N, const float *x, int64_t ldx, const char *w0, size_t rs,  \
                               int64_t K, int T, int64_t n, int nr, const float *bias) {                       \
        const char *w1 = nr > 1 ? w0 + rs : w0, *w2 = nr > 2 ? w0 + 2 * rs : w0, *w3 = nr > 3 ? w0 + 3 * rs : w0; \
        for (int t = 0; t < T; t++) {                                                                          \
            const float *xt = x + (size_t)t * (size_t)ldx;                                                     \
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                        \
            for (int64_t k = 0; k < K; k += 16) {                                                              \
                const __mmask16 m = tail16(K - k);                                                             \
                const size_t o = (size_t)k * (ES);                                                             \
                if (t == 0) {                                                                                  \
                    _mm_prefetch(w0 + 4 * rs + o, _MM_HINT_T0);                                                \
                    _mm_prefetch(w1 + 4 * rs + o, _MM_HINT_T0);                                                \
                    _mm_prefetch(w2 + 4 * rs + o, _MM_HINT_T0);                                                \
                    _mm_prefetch(w3 + 4 * rs + o, _MM_HINT_T0);                                                \
                }                                                                                              \
                const __m512 xv = _mm512_maskz_loadu_ps(m, xt + k);                                            \
                a0 = _mm512_fmadd_ps(LOAD16(w0 + o, m), xv, a0);                                               \
                a1 = _mm512_fmadd_ps(LOAD16(w1 + o, m), xv, a1);                                               \
                a2 = _mm512_fmadd_ps(LOAD16(w2 + o, m), xv, a2);                                               \
                a3 = _mm512_fmadd_ps(LOAD16(w3 + o, m), xv, a3);                                               \
            }                                                                                                  \
            const float r[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),  \
                                _mm512_reduce_add_ps(a3)};                                                     \
            for (int i = 0; i < nr; i++)                                                                       \
                out[(size_t)t * (size_t)N + (size_t)(n + i)] = r[i] + (bias ? bias[n + i] : 0.f);             \
        }                                                                                                      \
    }

#define LOAD16(p, m) _mm512_maskz_loadu_ps((m), (const float *)(const void *)(p))
DEFINE_DOT4(dot4_f32, MOEC_DTYPE_F32, 4)
#undef LOAD16
#define LOAD16(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (p)))
DEFINE_DOT4(dot4_f16, MOEC_DTYPE_F16, 2)
#undef LOAD16

/* bf16: 32 weights per load as 16 uint32 pairs; `<< 16` gives the even ones as fp32 and
 * `& 0xffff0000` the odd ones, against x split per 32 columns into [even 16 | odd 16]. */
AVX512_FN static void dot4_bf16(float *out, int64_t N, const float *xs, int64_t K, const char *w0, size_t rs,
                                int64_t n, int nr, const float *bias, size_t pf) {
    const char *w1 = nr > 1 ? w0 + rs : w0, *w2 = nr > 2 ? w0 + 2 * rs : w0, *w3 = nr > 3 ? w0 + 3 * rs : w0;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
#define EO_ROW(wr, e, o)                                                                    \
    {                                                                                       \
        const __m512i v = _mm512_maskz_loadu_epi16(m, (wr) + 2 * k);                        \
        e = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xe, e);         \
        o = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), xo, o);          \
    }
    for (int64_t k = 0; k < K; k += 32) {
        const __mmask32 m = tail32(K - k);
        _mm_prefetch(w0 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w1 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w2 + pf + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w3 + pf + 2 * k, _MM_HINT_T0);
        const __m512 xe = _mm512_load_ps(xs + k), xo = _mm512_load_ps(xs + k + 16);
        EO_ROW(w0, e0, o0)
        EO_ROW(w1, e1, o1)
        EO_ROW(w2, e2, o2)
        EO_ROW(w3, e3, o3)
    }
#undef EO_ROW
    const float r[4] = {_mm512_reduce_add_ps(_mm512_add_ps(e0, o0)), _mm512_reduce_add_ps(_mm512_add_ps(e1, o1)),
                        _mm512_reduce_add_ps(_mm512_add_ps(e2, o2)), _mm512_reduce_add_ps(_mm512_add_ps(e3, o3))};
    for (int i = 0; i < nr; i++) out[n + i] = r[i] + (bias ? bias[n + i] : 0.f);
    (void)N;
}

AVX512_FN static void rows_few(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                               const float *bias, int T, int64_t n0, int64_t n1) {
    const int64_t K = W->cols;
    const size_t rs = moec_row_bytes(W->dtype, K);
    const int64_t Kp = (K + 31) & ~(int64_t)31;
    float *xs;
    if (W->dtype == MOEC_DTYPE_BF16 && !(xs = moec_scratch(MOEC_SCRATCH_MM_LAYOUT, (size_t)Kp * sizeof(float)))) {
        moec_mm_rows_avx2(out, N, x, ldx, W, bias, T, n0, n1, NULL); /* no memory for the split: no split */
        return;
    }
    if (W->dtype == MOEC_DTYPE_BF16) {
        const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
        for (int t = 0; t < T; t++) { /* one token at a time: few tokens means the rows come from memory once */
            const float *xt = x + (size_t)t * (size_t)ldx;
            for (int64_t k = 0; k < Kp; k += 32) { /* [even 16 | odd 16] of each 32 columns, zero past K */
                const __m512 a = _mm512_maskz_loadu_ps(tail16(K - k), xt + k);
                const __m512 b = _mm512_maskz_loadu_ps(K - k > 16 ? tail16(K - k - 16) : 0, xt + k + 16);
                _mm512_store_ps(xs + k, _mm512_permutex2var_ps(a, ev, b));
                _mm512_store_ps(xs + k + 16, _mm512_permutex2var_ps(a, od, b));
            }
            /* the next 4 rows are prefetched while these stream, but not past the slice: the rows
             * after it are another task's, maybe on another core */
            for (int64_t n = n0; n < n1; n += 4)
                dot4_bf16(out + (size_t)t * (size_t)N, N, xs, K, (const char *)W->data + (size_t)n * rs, rs, n,
                          (int)(n1 - n < 4 ? n1 - n : 4), bias, n + 4 < n1 ? 4 * rs : 0);
        }
        return;
    }
    for (int64_t n = n0; n < n1; n += 4) {
        const char *w0 = (const char *)W->data + (size_t)n * rs;
        const int nr = (int)(n1 - n < 4 ? n1 - n : 4);
        if (W->dtype == MOEC_DTYPE_F16) dot4_f16(out, N, x, ldx, w0, rs, K, T, n, nr, bias);
        else dot4_f32(out, N, x, ldx, w0, rs, K, T, n, nr, bias);
    }
}

/* ------------------------------------------------------------------ floats, many tokens */

#define MR512 12

/* out[i][0..nr) = x[i] · panel (+ bias) for i < M (a compile-time constant per call site). */
AVX512_FN static inline __attribute__((always_inline)) void kernel_12x16(float *out, int64_t ldo, const float *x,
                                                                         int64_t ldx, const float *P, int64_t K,
                                                                         int M, int nr, const float *bias) {
    __m512 c[MR512];
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) c[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        const __m512 b = _mm512_load_ps(P + (size_t)k * MOEC_MM_PANEL);
#pragma GCC unroll 12
        for (int i = 0; i < MR512; i++)
            if (i < M) c[i] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)i * (size_t)ldx + (size_t)k]), b, c[i]);
    }
    const __mmask16 m = tail16(nr);
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++)
        if (i < M) _mm512_mask_storeu_ps(out + (size_t)i * (size_t)ldo, m, _mm512_add_ps(c[i], bv));
}

AVX512_FN static void rows_packed(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                                  const float *bias, int T, int64_t n0, int64_t n1, float *P) {
    const int64_t K = W->cols;
    for (int64_t n = n0; n < n1; n += MOEC_MM_PANEL) {
        const int nr = (int)(n1 - n < MOEC_MM_PANEL ? n1 - n : MOEC_MM_PANEL);
        moec_mm_pack_panel(P, W, n, nr);
        const float *bn = bias ? bias + n : NULL;
        int t = 0;
        for (; t + MR512 <= T; t += MR512)
            kernel_12x16(out + (size_t)t * (size_t)N + n, N, x + (size_t)t * (size_t)ldx, ldx, P, K, MR512, nr, bn);
#define REM(m)                                                                                                    \
    case m: kernel_12x16(out + (size_t)t * (size_t)N + n, N, x + (size_t)t * (size_t)ldx, ldx, P, K, m, nr, bn); break;
        switch (T - t) {
            REM(11) REM(10) REM(9) REM(8) REM(7) REM(6) REM(5) REM(4) REM(3) REM(2) REM(1)
        default: break;
        }
#undef REM
    }
}

/* ------------------------------------------------------------------ Q8_0 / Q4_0 with VNNI */

/* One token's activations laid out for two blocks per zmm: q (64 bytes per pair, the odd last
 * block's partner zero), the scales [d_2p ×8 | d_2p+1 ×8], and the starting accumulators
 * [-off·Σq_2p, 0 ×7 | -off·Σq_2p+1, 0 ×7]. */
typedef struct {
    int8_t *q;
    float *d;
    int32_t *acc0;
} xpairs;

static xpairs layout_pairs(const moec_xq8 *xq, int64_t nb, int T, int32_t off) {
    const int64_t np = (nb + 1) / 2;
    const size_t per = (size_t)np * (64 + 64 + 64);
    char *base = scratch(per * (size_t)T);
    xpairs L = {(int8_t *)(void *)base, (float *)(void *)(base + (size_t)T * (size_t)np * 64),
                (int32_t *)(void *)(base + (size_t)T * (size_t)np * 128)};
    memset(base, 0, per * (size_t)T);
    for (int t = 0; t < T; t++)
        for (int64_t b = 0; b < nb; b++) {
            const moec_xq8 *blk = xq + (size_t)t * (size_t)nb + b;
            const size_t p = (size_t)t * (size_t)np + (size_t)(b / 2), h = (size_t)(b % 2);
            memcpy(L.q + p * 64 + h * 32, blk->q, 32);
            for (int j = 0; j < 8; j++) L.d[p * 16 + h * 8 + (size_t)j] = blk->d;
            L.acc0[p * 16 + h * 8] = -off * blk->sum;
        }
    return L;
}

/* A pair of blocks (2p, 2p+1; the second absent at an odd row end) as one zmm of unsigned bytes
 * in the activation layout [block 2p | block 2p+1] (Q8_0: q + 128; Q4_0: per block the 16 low
 * nibbles, then the 16 high ones, as ggml packs them) and their two fp16 scales as
 * [d_2p ×8 | d_2p+1 ×8] fp32. The blocks' bytes are word aligned (34 and 18 bytes), so one
 * vpermw gathers the scales, and for Q4_0 the nibble bytes twice over, out of one (masked) load:
 * ~10 ops a pair instead of ~17 with scalar scale loads and broadcasts. Masked loads do not
 * fault past a row's end. */
VNNI_FN static inline __attribute__((always_inline)) void wpair(const char *b0, int two, moec_dtype t, __m512i *u,
                                                               __m512 *dw) {
    if (t == MOEC_DTYPE_Q8_0) {
        /* scales at words 0 and 17; the quants at bytes 2..33 and 36..67 */
        const __m512i v = _mm512_maskz_loadu_epi16(two ? 0xffffffffu : 0x1ffffu, b0);
        const __m256i sidx = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17);
        *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_castsi256_si512(sidx), v)));
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)(const void *)(b0 + 2));
        const __m256i q1 = two ? _mm256_loadu_si256((const __m256i *)(const void *)(b0 + 36)) : _mm256_setzero_si256();
        *u = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1), _mm512_set1_epi8((char)0x80));
        return;
    }
    /* Q4_0: scales at words 0 and 9; the nibble bytes at words 1..8 and 10..17 */
    const __m512i v = _mm512_maskz_loadu_epi16(two ? 0x3ffffu : 0x1ffu, b0);
    static const uint16_t qw[32] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
                                    10, 11, 12, 13, 14, 15, 16, 17, 10, 11, 12, 13, 14, 15, 16, 17};
    const __m512i qidx = _mm512_loadu_si512((const void *)qw);
    const __m256i sidx = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9);
    const __m512i q = _mm512_permutexvar_epi16(qidx, v);
    /* the high nibbles into the second 16 bytes of each block; the masked-off partner is zero */
    *u = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xff00ff00u, q, 4), _mm512_set1_epi8(15));
    *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_castsi256_si512(sidx), v)));
}

/* One pair p of blocks of 4 rows against one token's activations (t, q, d, a0 of DEFINE_QDOT4). */
#define QDOT4_PAIR(DT, BB, p, two)                                                                             \
    {                                                                                                          \
        const __m512i xv = _mm512_load_si512((const void *)(q + (p) * 64));                                   \
        const __m512i acc0 = _mm512_load_si512((const void *)(a0 + (p) * 16));                                \
        const __m512 dx = _mm512_load_ps(d + (p) * 16);                                                        \
        for (int r = 0; r < 4; r++) {                                                                          \
            const char *b0 = wr[r] + (size_t)(2 * (p)) * (BB);                                                 \
            if (t == 0) _mm_prefetch(b0 + 4 * rs, _MM_HINT_T0);                                                \
            __m512i u;                                                                                         \
            __m512 dw;                                                                                         \
            wpair(b0, two, DT, &u, &dw);                                                                       \
            f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(acc0, u, xv)), _mm512_mul_ps(dw, dx), f[r]); \
        }                                                                                                      \
    }

#define DEFINE_QDOT4(NAME, DT, BB)                                                                             \
    VNNI_FN static void NAME(float *out, int64_t N, const xpairs *L, int64_t nb, const char *w0, size_t rs, int T, \
                             int64_t n, int nr, const float *bias) {                                           \
        const int64_t np = (nb + 1) / 2;                                                                       \
        const char *wr[4] = {w0, nr > 1 ? w0 + rs : w0, nr > 2 ? w0 + 2 * rs : w0, nr > 3 ? w0 + 3 * rs : w0}; \
        for (int t = 0; t < T; t++) {                                                                          \
            const int8_t *q = L->q + (size_t)t * (size_t)np * 64;                                              \
            const float *d = L->d + (size_t)t * (size_t)np * 16;                                               \
            const int32_t *a0 = L->acc0 + (size_t)t * (size_t)np * 16;                                         \
            __m512 f[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()}; \
            /* whole pairs with a constant mask, then the odd block at a row end */                            \
            for (int64_t p = 0; p < nb / 2; p++) QDOT4_PAIR(DT, BB, p, 1)                                       \
            if (nb & 1) QDOT4_PAIR(DT, BB, nb / 2, 0)                                                           \
            /* (constant indices keep f in registers across the pair loop) */                                \
            const float o4[4] = {_mm512_reduce_add_ps(f[0]), _mm512_reduce_add_ps(f[1]), _mm512_reduce_add_ps(f[2]), \
                                 _mm512_reduce_add_ps(f[3])};                                                  \
            for (int i = 0; i < nr; i++) out[(size_t)t * (size_t)N + (size_t)(n + i)] = o4[i] + (bias ? bias[n + i] : 0.f); \
        }                                                                                                      \
    }

DEFINE_QDOT4(qdot4_q8_0, MOEC_DTYPE_Q8_0, sizeof(moec_block_q8_0))
DEFINE_QDOT4(qdot4_q4_0, MOEC_DTYPE_Q4_0, sizeof(moec_block_q4_0))

/* Prefill: 4 rows × 4 tokens, so each weight pair is made unsigned once for 4 tokens and each
 * activation pair loaded once for 4 rows: 4 ops (vpdpbusd, convert, scale, FMA) per 64 MACs. */
/* One pair p of blocks of 4 rows against 4 tokens (wr, L, np, f of DEFINE_QTILE44). */
#define QTILE44_PAIR(DT, BB, p, two)                                                                           \
    {                                                                                                          \
        __m512i u[4];                                                                                          \
        __m512 dw[4];                                                                                          \
        for (int r = 0; r < 4; r++) wpair(wr[r] + (size_t)(2 * (p)) * (BB), two, DT, &u[r], &dw[r]);           \
        for (int j = 0; j < 4; j++) {                                                                          \
            const size_t o = (size_t)j * (size_t)np + (size_t)(p);                                             \
            const __m512i xv = _mm512_load_si512((const void *)(L->q + o * 64));                               \
            const __m512i acc0 = _mm512_load_si512((const void *)(L->acc0 + o * 16));                          \
            const __m512 dx = _mm512_load_ps(L->d + o * 16);                                                   \
            for (int r = 0; r < 4; r++)                                                                        \
                f[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(acc0, u[r], xv)),             \
                                          _mm512_mul_ps(dw[r], dx), f[r][j]);                                  \
        }                                                                                                      \
    }

#define DEFINE_QTILE44(NAME, DT, BB)                                                                           \
    VNNI_FN static void NAME(float *out, int64_t N, const xpairs *L, int64_t nb, const char *w0, size_t rs,    \
                             int64_t n, int nr, const float *bias) {                                           \
        const int64_t np = (nb + 1) / 2;                                                                       \
        const char *wr[4] = {w0, nr > 1 ? w0 + rs : w0, nr > 2 ? w0 + 2 * rs : w0, nr > 3 ? w0 + 3 * rs : w0}; \
        __m512 f[4][4];                                                                                        \
        for (int r = 0; r < 4; r++)                                                                            \
            for (int j = 0; j < 4; j++) f[r][j] = _mm512_setzero_ps();                                         \
        for (int64_t p = 0; p < nb / 2; p++) QTILE44_PAIR(DT, BB, p, 1)                                         \
        if (nb & 1) QTILE44_PAIR(DT, BB, nb / 2, 0)                                                             \
        float o16[4][4]; /* (constant indices keep f in registers across the pair loop) */                     \
        for (int r = 0; r < 4; r++)                                                                            \
            for (int j = 0; j < 4; j++) o16[r][j] = _mm512_reduce_add_ps(f[r][j]);                             \
        for (int j = 0; j < 4; j++)                                                                            \
            for (int i = 0; i < nr; i++) out[(size_t)j * (size_t)N + (size_t)(n + i)] = o16[i][j] + (bias ? bias[n + i] : 0.f); \
    }

DEFINE_QTILE44(qtile44_q8_0, MOEC_DTYPE_Q8_0, sizeof(moec_block_q8_0))
DEFINE_QTILE44(qtile44_q4_0, MOEC_DTYPE_Q4_0, sizeof(moec_block_q4_0))

/* L advanced by t tokens */
static xpairs pairs_at(const xpairs *L, int64_t np, int t) {
    const size_t o = (size_t)t * (size_t)np;
    return (xpairs){L->q + o * 64, L->d + o * 16, L->acc0 + o * 16};
}

#define TOKEN_CHUNK 64 /* tokens per pass over 4 weight rows (their activations stay in L2) */

VNNI_FN static void rows_q_vnni(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                                const float *bias, int T, int64_t n0, int64_t n1, const moec_xq8 *given) {
    const int64_t K = W->cols, nb = K / MOEC_QBLOCK;
    const size_t rs = moec_row_bytes(W->dtype, K);
    const moec_xq8 *xq = given ? given : moec_mm_quantize_rows(x, ldx, K, T);
    if (!xq) {
        fprintf(stderr, "moec: matmul: out of memory for %d quantized activation rows of %lld\n", T, (long long)K);
        exit(1);
    }
    const xpairs L = layout_pairs(xq, nb, T, W->dtype == MOEC_DTYPE_Q8_0 ? 128 : 8);
    const int64_t np = (nb + 1) / 2;
    const int q8 = W->dtype == MOEC_DTYPE_Q8_0;
    for (int t0 = 0; t0 < T; t0 += TOKEN_CHUNK) {
        const int tc = T - t0 < TOKEN_CHUNK ? T - t0 : TOKEN_CHUNK;
        for (int64_t n = n0; n < n1; n += 4) {
            const int nr = (int)(n1 - n < 4 ? n1 - n : 4);
            const char *w0 = (const char *)W->data + (size_t)n * rs;
            int t = t0;
            for (; t + 4 <= t0 + tc; t += 4) {
                const xpairs Lt = pairs_at(&L, np, t);
                if (q8) qtile44_q8_0(out + (size_t)t * (size_t)N, N, &Lt, nb, w0, rs, n, nr, bias);
                else qtile44_q4_0(out + (size_t)t * (size_t)N, N, &Lt, nb, w0, rs, n, nr, bias);
            }
            if (t < t0 + tc) {
                const xpairs Lt = pairs_at(&L, np, t);
                if (q8) qdot4_q8_0(out + (size_t)t * (size_t)N, N, &Lt, nb, w0, rs, t0 + tc - t, n, nr, bias);
                else qdot4_q4_0(out + (size_t)t * (size_t)N, N, &Lt, nb, w0, rs, t0 + tc - t, n, nr, bias);
            }
        }
    }
}

/* ------------------------------------------------------------------ activation blocks */

/* moec_mm_quantize_x with 16 lanes, bit for bit: the same max of |x|, d = amax / 127 and
 * id = 1 / d in scalar fp32, q = round-half-even(x * id) (roundscale = nearbyintf in the
 * default rounding mode), the same clamp. The scalar loop (with fmaxf / nearbyintf calls) was
 * ~75 % of a quantized prefill (perf, bench-M Q8_0); this one is a few instructions a block. */
#define ROUND_NEAREST_EVEN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* an immediate, also at -O0 */
AVX512_FN void moec_mm_quantize_x_avx512(moec_xq8 *dst, const float *x, int64_t K) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512 hi = _mm512_set1_ps(127.f), lo = _mm512_set1_ps(-127.f);
    for (int64_t b = 0; b < K / MOEC_QBLOCK; b++) {
        const __m512 a = _mm512_loadu_ps(x + b * MOEC_QBLOCK), c = _mm512_loadu_ps(x + b * MOEC_QBLOCK + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(a, absmask), _mm512_and_ps(c, absmask)));
        const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        const __m512 vid = _mm512_set1_ps(id);
        const __m512 qa = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(_mm512_mul_ps(a, vid), ROUND_NEAREST_EVEN), lo), hi);
        const __m512 qc = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(_mm512_mul_ps(c, vid), ROUND_NEAREST_EVEN), lo), hi);
        const __m512i ia = _mm512_cvtps_epi32(qa), ic = _mm512_cvtps_epi32(qc);
        _mm_storeu_si128((__m128i *)(void *)dst[b].q, _mm512_cvtepi32_epi8(ia));
        _mm_storeu_si128((__m128i *)(void *)(dst[b].q + 16), _mm512_cvtepi32_epi8(ic));
        dst[b].d = d;
        dst[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(ia, ic));
    }
}

/* ------------------------------------------------------------------ entry */

void moec_mm_rows_avx512(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                         int T, int64_t n0, int64_t n1, const moec_xq8 *xq) {
    if (moec_dtype_info(W->dtype)->quantized) {
        if (moec_cpu_features_get()->avx512vnni) rows_q_vnni(out, N, x, ldx, W, bias, T, n0, n1, xq);
        else moec_mm_rows_avx2(out, N, x, ldx, W, bias, T, n0, n1, xq);
        return;
    }
    float *P;
    /* (without memory for a panel, the few-token tiles still work) */
    if (T >= MOEC_MM_PACKED_MIN_T && (P = moec_mm_panel_scratch((size_t)W->cols * MOEC_MM_PANEL))) {
        rows_packed(out, N, x, ldx, W, bias, T, n0, n1, P);
        return;
    }
    rows_few(out, N, x, ldx, W, bias, T, n0, n1);
}
#else
typedef int moec_matmul_avx512_none; /* (ISO C: no empty translation unit) */
#endif
