/* matmul.c — the dot-product kernel behind every linear layer: tiles of 4 weight rows × 2
 * tokens held in registers, weights widened to fp32 in registers (bf16: shift, f16: F16C).
 * Runtime dispatch picks AVX2+FMA when the CPU has it, else a portable scalar loop. */
#include "nn/matmul.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/threads.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOEC_X86 1
#endif

/* ------------------------------------------------------------------ scalar */

static float load_scalar(const void *w, moec_dtype t, int64_t i) {
    uint16_t h;
    switch (t) {
    case MOEC_DTYPE_F32: {
        float f;
        memcpy(&f, (const char *)w + 4 * i, 4);
        return f;
    }
    case MOEC_DTYPE_BF16: memcpy(&h, (const char *)w + 2 * i, 2); return moec_bf16_to_f32(h);
    case MOEC_DTYPE_F16: memcpy(&h, (const char *)w + 2 * i, 2); return moec_f16_to_f32(h);
    default: return 0.f;
    }
}

static void rows_scalar(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                        int T, int64_t n0, int64_t n1) {
    const int64_t K = W->cols;
    for (int64_t n = n0; n < n1; n++) {
        const char *wr = (const char *)W->data + (size_t)n * moec_row_bytes(W->dtype, K);
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * (size_t)ldx;
            float acc = 0.f;
            for (int64_t k = 0; k < K; k++) acc += xr[k] * load_scalar(wr, W->dtype, k);
            out[(size_t)t * (size_t)N + (size_t)n] = acc + (bias ? bias[n] : 0.f);
        }
    }
}

void moec_matmul_naive(float *out, const float *x, const moec_mat *W, const float *bias, int T) {
    rows_scalar(out, W->rows, x, W->cols, W, bias, T, 0, W->rows);
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

#define PANEL 16
#define MR 6
#define PACKED_MIN_T 8 /* below this, the dot-product tiles win: packing is not amortised */

static _Thread_local float *tl_panel;
static _Thread_local size_t tl_panel_cap;

static float *panel_buffer(size_t n) {
    if (n > tl_panel_cap) {
        free(tl_panel);
        tl_panel = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
        tl_panel_cap = tl_panel ? n : 0;
    }
    return tl_panel;
}

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
AVX2_FN static void pack_panel(float *P, const moec_mat *W, int64_t n, int nr) {
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

AVX2_FN static void rows_packed(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                                const float *bias, int T, int64_t n0, int64_t n1) {
    const int64_t K = W->cols;
    float *P = tl_panel;
    for (int64_t n = n0; n < n1; n += PANEL) {
        const int nr = (int)(n1 - n < PANEL ? n1 - n : PANEL);
        pack_panel(P, W, n, nr);
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

static _Thread_local float *tl_xsplit;
static _Thread_local size_t tl_xsplit_cap;

static float *xsplit_buffer(size_t n) {
    if (n > tl_xsplit_cap) {
        free(tl_xsplit);
        tl_xsplit = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
        tl_xsplit_cap = tl_xsplit ? n : 0;
    }
    return tl_xsplit;
}

AVX2_FN static void tile_bf16_eo(float *out, const float *xs, const float *x, const void *w, int64_t K, int64_t N,
                                 int64_t n, int64_t nr, const float *bias) {
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
        /* the next tile's rows follow these four: start their stream early */
        _mm_prefetch(w0 + 4 * rs + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w1 + 4 * rs + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w2 + 4 * rs + 2 * k, _MM_HINT_T0);
        _mm_prefetch(w3 + 4 * rs + 2 * k, _MM_HINT_T0);
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

/* Few tokens: dot-product tiles straight from the stored weights (memory-bound decode). */
#define TOKEN_CHUNK 64

AVX2_FN static void rows_avx2(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                              const float *bias, int T, int64_t n0, int64_t n1) {
    const int64_t K = W->cols;
    /* (without memory for a panel, the unpacked tiles below still work) */
    if (T >= PACKED_MIN_T && panel_buffer((size_t)K * PANEL)) {
        rows_packed(out, N, x, ldx, W, bias, T, n0, n1);
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
                tile_bf16_eo(out + (size_t)t * (size_t)N, xs, xt, W->data, K, N, n, n1 - n < 4 ? n1 - n : 4, bias);
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

typedef void (*rows_fn)(float *, int64_t, const float *, int64_t, const moec_mat *, const float *, int, int64_t,
                        int64_t);

static rows_fn pick(const char **name) {
#ifdef MOEC_X86
    if (moec_cpu_isa() >= MOEC_ISA_AVX2) { /* AVX-512 machines run the AVX2 kernels for now */
        *name = "avx2";
        return rows_avx2;
    }
#endif
    *name = "scalar";
    return rows_scalar;
}

static rows_fn g_rows;
static const char *g_name;
static pthread_once_t g_rows_once = PTHREAD_ONCE_INIT;

static void pick_once(void) { g_rows = pick(&g_name); }

/* Chosen once (pthread_once): expert threads call this concurrently on their first GEMM. */
static rows_fn get_rows(void) {
    pthread_once(&g_rows_once, pick_once);
    return g_rows;
}

const char *moec_matmul_kernel_name(void) {
    get_rows();
    return g_name;
}

void moec_matmul_rows(float *out, int64_t ldo, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                      int T, int64_t n0, int64_t n1) {
    MOEC_ASSERT(ldo >= n1 && ldx >= W->cols);
    if (n1 > n0 && T > 0) get_rows()(out, ldo, x, ldx, W, bias, T, n0, n1);
}

typedef struct {
    rows_fn f;
    float *out;
    const float *x;
    const moec_mat *W;
    const float *bias;
    int T;
} matmul_job;

static void matmul_task(void *p, int64_t n0, int64_t n1, int tid) {
    const matmul_job *j = p;
    (void)tid;
    j->f(j->out, j->W->rows, j->x, j->W->cols, j->W, j->bias, j->T, n0, n1);
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

void moec_matmul(float *out, const float *x, const moec_mat *W, const float *bias, int T) {
    matmul_job j = {get_rows(), out, x, W, bias, T};
    if (W->rows > 0 && T > 0) moec_parallel_range(W->rows, rows_per_task(W->rows, W->cols, T), matmul_task, &j);
}
