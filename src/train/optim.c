/* optim.c — see optim.h. The update follows torch.optim.AdamW's single-tensor path operation
 * by operation, so a step matches PyTorch to fp32 rounding. */
#include "train/optim.h"

#include "core/threads.h"

#include <math.h>

typedef struct {
    float *w, *m, *v;
    const float *g;
    float b1, b2, step_size, bc2_sqrt, shrink, eps;
} adamw_job;

static void adamw_range(void *job, int64_t i0, int64_t i1, int tid) {
    const adamw_job *j = job;
    float *w = j->w, *m = j->m, *v = j->v;
    const float *g = j->g;
    const float b1 = j->b1, b2 = j->b2, step_size = j->step_size, bc2_sqrt = j->bc2_sqrt, shrink = j->shrink;
    (void)tid;
    for (int64_t i = i0; i < i1; i++) {
        float p = w[i] * shrink;
        float mi = m[i] * b1 + g[i] * (1.f - b1);
        float vi = v[i] * b2 + (1.f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + j->eps;
        w[i] = p - step_size * (mi / denom);
    }
}

void moec_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t t, float lr, int decay,
                       const moec_adamw_cfg *cfg) {
    const float b1 = cfg->beta1, b2 = cfg->beta2;
    /* torch computes the bias corrections and the step size in Python floats (double) */
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float shrink = decay ? 1.f - lr * cfg->weight_decay : 1.f;
    adamw_job j = {w, m, v, g, b1, b2, step_size, bc2_sqrt, shrink, cfg->eps};
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
