/* optim.h — AdamW with decoupled weight decay exactly as torch.optim.AdamW (default
 * amsgrad=False, maximize=False), the learning-rate schedule (linear warmup + cosine decay to
 * lr_min), and global-norm gradient clipping. fp32 state; deterministic. */
#ifndef MOEC_TRAIN_OPTIM_H
#define MOEC_TRAIN_OPTIM_H

#include "core/cpu.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float beta1, beta2, eps, weight_decay;
} moec_adamw_cfg;

/* One update of n parameters at step t (1-based): w *= 1 - lr·wd (when decay); m, v moments;
 * w -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps). */
void moec_adamw_update(float *w, const float *g, float *m, float *v, size_t n, int64_t t, float lr, int decay,
                       const moec_adamw_cfg *cfg);
/* For tests: the same with kernel family isa (the CPU must have it); every family gives the same bits. */
void moec_adamw_update_isa(moec_isa isa, float *w, const float *g, float *m, float *v, size_t n, int64_t t, float lr,
                           int decay, const moec_adamw_cfg *cfg);

/* lr at step t (0-based): linear warmup from lr_max/warmup to lr_max over `warmup` steps, then
 * cosine from lr_max to lr_min at step `total`. */
float moec_lr_at(int64_t t, int64_t warmup, int64_t total, float lr_max, float lr_min);

/* Global L2 norm of g (accumulated in double); if max_norm > 0 and the norm exceeds it, scales
 * g by max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_. Returns the norm before
 * clipping (non-finite if any gradient is). */
double moec_clip_grad_norm(float *g, size_t n, float max_norm);

#endif
