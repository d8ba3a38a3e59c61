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

/* One update of n parameters at step t (1-based) with the gradient g · gscale (gscale: the
 * clipping factor of moec_clip_coef, 1 for none; the product is torch's g.mul_(coef), so
 * clipping costs no pass of its own over g, which stays unscaled): w *= 1 - lr·wd (when decay);
 * m, v moments; w -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps). */
void moec_adamw_update(float *w, const float *g, float gscale, float *m, float *v, size_t n, int64_t t, float lr,
                       int decay, const moec_adamw_cfg *cfg);
/* For tests: the same with kernel family isa (the CPU must have it); every family gives the same bits. */
void moec_adamw_update_isa(moec_isa isa, float *w, const float *g, float gscale, float *m, float *v, size_t n,
                           int64_t t, float lr, int decay, const moec_adamw_cfg *cfg);

/* lr at step t (0-based): linear warmup from lr_max/warmup to lr_max over `warmup` steps, then
 * cosine from lr_max to lr_min at step `total`. */
float moec_lr_at(int64_t t, int64_t warmup, int64_t total, float lr_max, float lr_min);

/* Global L2 norm of g, accumulated in float64 in one fixed order (optim.c): the same bits for
 * every kernel family and thread count; non-finite if any gradient is. _isa: for tests. */
double moec_grad_norm(const float *g, size_t n);
double moec_grad_norm_isa(moec_isa isa, const float *g, size_t n);

/* torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) if max_norm > 0 and a
 * finite norm exceeds max_norm, else 1 (no clipping). */
float moec_clip_coef(double norm, float max_norm);

#endif
