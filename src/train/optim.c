/* optim.c — see optim.h. The update follows torch.optim.AdamW's single-tensor path operation
 * by operation, so a step matches PyTorch to fp32 rounding. */
#include "train/optim.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    float *w, *m, *v;
    const float *g;
    float gscale; /* the clipping factor (1: none), applied as torch's g.mul_(coef) before the step */
    float b1, b2, step_size, bc2_sqrt, shrink, eps;
    moec_isa isa;
} adamw_job;

/* One element, operation by operation as torch's single-tensor AdamW; the SIMD loops below do
 * the same IEEE operations in the same order (no fma), so every family gives the same bits. */
static inline void adamw_one(const adamw_job *j, int64_t i) {
    const float g = j->g[i] * j->gscale;
    float p = j->w[i] * j->shrink;
    float mi = j->m[i] * j->b1 + g * (1.f - j->b1);
    float vi = j->v[i] * j->b2 + (1.f - j->b2) * g * g;
    j->m[i] = mi;
    j->v[i] = vi;
    float denom = sqrtf(vi) / j->bc2_sqrt + j->eps;
    j->w[i] = p - j->step_size * (mi / denom);
}

#if defined(__x86_64__)
/* 16 (or 8) lanes of adamw_one; the scalar loop ran at ~12 cycles an element (sqrtss, two
 * divss: 13 % of a bf16 training step), these at the memory's speed. */
#define ADAMW_SIMD(NAME, TARGET, W, VF, LOAD, STORE, SET1, MUL, ADD, SUB, DIV, SQRT)                                \
    __attribute__((target(TARGET))) static int64_t NAME(const adamw_job *j, int64_t i0, int64_t i1) {              \
        const VF b1 = SET1(j->b1), c1 = SET1(1.f - j->b1), b2 = SET1(j->b2), c2 = SET1(1.f - j->b2);                \
        const VF sh = SET1(j->shrink), bc = SET1(j->bc2_sqrt), eps = SET1(j->eps), ss = SET1(j->step_size);        \
        const VF gs = SET1(j->gscale);                                                                             \
        int64_t i = i0;                                                                                            \
        for (; i + W <= i1; i += W) {                                                                              \
            const VF g = MUL(LOAD(j->g + i), gs), p = MUL(LOAD(j->w + i), sh);                                      \
            const VF mi = ADD(MUL(LOAD(j->m + i), b1), MUL(g, c1));                                                 \
            const VF vi = ADD(MUL(LOAD(j->v + i), b2), MUL(MUL(c2, g), g));                                         \
            STORE(j->m + i, mi);                                                                                   \
            STORE(j->v + i, vi);                                                                                   \
            const VF denom = ADD(DIV(SQRT(vi), bc), eps);                                                          \
            STORE(j->w + i, SUB(p, MUL(ss, DIV(mi, denom))));                                                      \
        }                                                                                                          \
        return i;                                                                                                  \
    }
ADAMW_SIMD(adamw_avx512, "avx512f", 16, __m512, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_mul_ps,
           _mm512_add_ps, _mm512_sub_ps, _mm512_div_ps, _mm512_sqrt_ps)
ADAMW_SIMD(adamw_avx2, "avx2", 8, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_mul_ps,
           _mm256_add_ps, _mm256_sub_ps, _mm256_div_ps, _mm256_sqrt_ps)
#undef ADAMW_SIMD
#endif

static void adamw_range(void *job, int64_t i0, int64_t i1, int tid) {
    const adamw_job *j = job;
    (void)tid;
    int64_t i = i0;
#if defined(__x86_64__)
    if (j->isa == MOEC_ISA_AVX512) i = adamw_avx512(j, i0, i1);
    else if (j->isa == MOEC_ISA_AVX2) i = adamw_avx2(j, i0, i1);
#endif
    for (; i < i1; i++) adamw_one(j, i);
}

void moec_adamw_update(float *w, const float *g, float gscale, float *m, float *v, size_t n, int64_t t, float lr,
                       int decay, const moec_adamw_cfg *cfg) {
    moec_adamw_update_isa(moec_cpu_isa(), w, g, gscale, m, v, n, t, lr, decay, cfg);
}

void moec_adamw_update_isa(moec_isa isa, float *w, const float *g, float gscale, float *m, float *v, size_t n,
                           int64_t t, float lr, int decay, const moec_adamw_cfg *cfg) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    /* torch computes the bias corrections and the step size in Python floats (double) */
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float shrink = decay ? 1.f - lr * cfg->weight_decay : 1.f;
    adamw_job j = {w, m, v, g, gscale, b1, b2, step_size, bc2_sqrt, shrink, cfg->eps, isa};
    moec_parallel_range((int64_t)n, moec_grain((int64_t)n, 1, 65536), adamw_range, &j);
}

float moec_lr_at(int64_t t, int64_t warmup, int64_t total, float lr_max, float lr_min) {
    if (warmup > 0 && t < warmup) return lr_max * (float)(t + 1) / (float)warmup;
    if (total <= warmup) return lr_max;
    double p = (double)(t - warmup) / (double)(total - warmup);
    if (p > 1.0) p = 1.0;
    return (float)(lr_min + 0.5 * (lr_max - lr_min) * (1.0 + cos(3.14159265358979323846 * p)));
}

/* The gradient norm's fixed order: blocks of NORM_BLOCK elements, in each 16 float64
 * accumulators (element i into accumulator i % 16; a float's square is exact in float64, so
 * only the additions round), added 0..15, then the blocks' sums in block order. The SIMD
 * families keep the 16 accumulators in lanes, so every family and thread count gives the same
 * bits. It was one serial loop: ~4 % of a bf16 step on 2 threads. */
#define NORM_BLOCK 65536
#define NORM_LANES 16

static void norm_block_tail(double acc[NORM_LANES], const float *g, int64_t i, int64_t n) {
    for (; i < n; i++) acc[i % NORM_LANES] += (double)g[i] * (double)g[i];
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static int64_t norm_block_avx512(double acc[NORM_LANES], const float *g,
                                                                    int64_t n) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(g + i)), hi = _mm512_cvtps_pd(_mm256_loadu_ps(g + i + 8));
        a0 = _mm512_add_pd(a0, _mm512_mul_pd(lo, lo));
        a1 = _mm512_add_pd(a1, _mm512_mul_pd(hi, hi));
    }
    _mm512_storeu_pd(acc, a0);
    _mm512_storeu_pd(acc + 8, a1);
    return i;
}

__attribute__((target("avx2"))) static int64_t norm_block_avx2(double acc[NORM_LANES], const float *g, int64_t n) {
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int q = 0; q < 4; q++) {
            const __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(g + i + 4 * q));
            a[q] = _mm256_add_pd(a[q], _mm256_mul_pd(x, x));
        }
    for (int q = 0; q < 4; q++) _mm256_storeu_pd(acc + 4 * q, a[q]);
    return i;
}
#endif

typedef struct {
    const float *g;
    size_t n;
    double *part;
    moec_isa isa;
} norm_job;

static double norm_block(const norm_job *j, int64_t b) {
    const float *g = j->g + (size_t)b * NORM_BLOCK;
    const int64_t n = (int64_t)((j->n - (size_t)b * NORM_BLOCK) < NORM_BLOCK ? j->n - (size_t)b * NORM_BLOCK : NORM_BLOCK);
    double acc[NORM_LANES] = {0};
    int64_t i = 0;
#if defined(__x86_64__)
    if (j->isa == MOEC_ISA_AVX512) i = norm_block_avx512(acc, g, n);
    else if (j->isa == MOEC_ISA_AVX2) i = norm_block_avx2(acc, g, n);
#endif
    norm_block_tail(acc, g, i, n);
    double s = 0.0;
    for (int l = 0; l < NORM_LANES; l++) s += acc[l];
    return s;
}

static void norm_range(void *p, int64_t b0, int64_t b1, int tid) {
    const norm_job *j = p;
    (void)tid;
    for (int64_t b = b0; b < b1; b++) j->part[b] = norm_block(j, b);
}

double moec_grad_norm_isa(moec_isa isa, const float *g, size_t n) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
    const int64_t blocks = (int64_t)((n + NORM_BLOCK - 1) / NORM_BLOCK);
    /* grow-only per-thread scratch: the steady state of training allocates nothing */
    norm_job j = {g, n, moec_scratch(MOEC_SCRATCH_GRAD_NORM, (size_t)(blocks > 0 ? blocks : 1) * sizeof(double)), isa};
    double ss = 0.0;
    if (j.part) {
        moec_parallel_range(blocks, 1, norm_range, &j);
        for (int64_t b = 0; b < blocks; b++) ss += j.part[b];
    } else { /* no memory for the partial sums: the same order on this thread */
        for (int64_t b = 0; b < blocks; b++) ss += norm_block(&j, b);
    }
    return sqrt(ss);
}

double moec_grad_norm(const float *g, size_t n) { return moec_grad_norm_isa(moec_cpu_isa(), g, n); }

float moec_clip_coef(double norm, float max_norm) {
    if (max_norm > 0 && isfinite(norm) && norm > max_norm) return (float)(max_norm / (norm + 1e-6));
    return 1.f;
}
