/* optim.c — see optim.h. The update follows torch.optim.AdamW's single-tensor path operation
 * by operation, so a step matches PyTorch to fp32 rounding. */
#include "train/optim.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/threads.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    float *w, *m, *v;
    const float *g;
    float b1, b2, step_size, bc2_sqrt, shrink, eps;
    moec_isa isa;
} adamw_job;

/* One element, operation by operation as torch's single-tensor AdamW; the SIMD loops below do
 * the same IEEE operations in the same order (no fma), so every family gives the same bits. */
static inline void adamw_one(const adamw_job *j, int64_t i) {
    float p = j->w[i] * j->shrink;
    float mi = j->m[i] * j->b1 + j->g[i] * (1.f - j->b1);
    float vi = j->v[i] * j->b2 + (1.f - j->b2) * j->g[i] * j->g[i];
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
        int64_t i = i0;                                                                                            \
        for (; i + W <= i1; i += W) {                                                                              \
            const VF g = LOAD(j->g + i), p = MUL(LOAD(j->w + i), sh);                                               \
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

void moec_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t t, float lr, int decay,
                       const moec_adamw_cfg *cfg) {
    moec_adamw_update_isa(moec_cpu_isa(), w, g, m, v, n, t, lr, decay, cfg);
}

void moec_adamw_update_isa(moec_isa isa, float *w, const float *g, float *m, float *v, size_t n, int64_t t, float lr,
                           int decay, const moec_adamw_cfg *cfg) {
    MOEC_ASSERT(moec_cpu_has_isa(isa));
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    /* torch computes the bias corrections and the step size in Python floats (double) */
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float shrink = decay ? 1.f - lr * cfg->weight_decay : 1.f;
    adamw_job j = {w, m, v, g, b1, b2, step_size, bc2_sqrt, shrink, cfg->eps, isa};
    moec_parallel_range((int64_t)n, moec_grain((int64_t)n, 1, 65536), adamw_range, &j);
}

float moec_lr_at(int64_t t, int64_t warmup, int64_t total, float lr_max, float lr_min) {
    if (warmup > 0 && t < warmup) return lr_max * (float)(t + 1) / (float)warmup;
    if (total <= warmup) return lr_max;
    double p = (double)(t - warmup) / (double)(total - warmup);
    if (p > 1.0) p = 1.0;
    return (float)(lr_min + 0.5 * (lr_max - lr_min) * (1.0 + cos(3.14159265358979323846 * p)));
}

double moec_clip_grad_norm(float *g, size_t n, float max_norm) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    double norm = sqrt(ss);
    if (max_norm > 0 && isfinite(norm) && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    return norm;
}
