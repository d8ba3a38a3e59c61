/* moe_train.h — the MoE layer for training, fp32: a forward that caches what the backward
 * needs, the exact backward, and the two router losses (load balancing, z-loss).
 *
 * The pipeline is the inference one (route → dispatch → experts → combine, see
 * docs/architecture.md), run on fp32 master weights through nn/linear.h (OpenBLAS sgemm):
 *   z = x · W_rᵀ                       router logits                [T, E]
 *   p = softmax(z) over all E; top-k (ties to the lower index, moec_route_softmax_topk)
 *   w = p_sel, divided by Σ_sel p when cfg.renorm (Mixtral; Qwen/OLMoE: norm_topk_prob)
 *   y[t] = Σ_j w[t,j] · E_{id[t,j]}(x[t])   (+ sigmoid(x[t]·w_sg) · S(x[t]) with a shared expert)
 *   E_i(x) = W_down,i · (silu(W_gate,i x) ⊙ W_up,i x)        W_gate/W_up [ff, d], W_down [d, ff]
 * The backward runs through the same row map: each expert's rows are contiguous, so each
 * expert's backward is a few GEMMs on its rows; the combine backward walks each token's slots
 * in order. Gradients reach W_r through the weights w (and the two losses); the top-k
 * selection itself is piecewise constant and has no gradient.
 *
 * Losses (both returned already multiplied by their coefficient):
 *   load balancing (Switch form, Megatron normalisation):
 *     L_aux = aux_coef · E · Σ_i f_i · P_i,  f_i = count_i / (T·k) (no gradient),
 *                                            P_i = (1/T) Σ_t p[t,i] (gradient through softmax)
 *     This is aux_coef at perfectly uniform routing, whatever k is. Hugging Face's
 *     load_balancing_loss_func (Mixtral, Qwen2-MoE, OLMoE) uses f_i = count_i / T, which is
 *     exactly top_k times larger: HF-normalised value = top_k · L_aux (for logging), and an HF
 *     router_aux_loss_coef c corresponds to aux_coef = top_k · c here.
 *   router z-loss (ST-MoE): L_z = z_coef · (1/T) Σ_t (logsumexp_j z[t,j])².
 *   Both are over the T tokens of one call (one micro-batch); padding is the caller's business.
 *
 * This file is not: capacity / token dropping, router jitter, other routers of MOE_SPECS
 * (sigmoid, group-limited, bias-based balancing), reduced-precision weights, or the inference
 * path (moe/experts.h reads bf16/f16 weights from the mmapped file).
 *
 * Threads: OpenBLAS threads each GEMM; the row loops here are OpenMP over disjoint outputs;
 * every reduction has a fixed order, so results do not depend on the thread count. Call from
 * outside an OpenMP parallel region. */
#ifndef MOEC_MOE_MOE_TRAIN_H
#define MOEC_MOE_MOE_TRAIN_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int d;         /* model width */
    int n_expert;  /* E, routed experts */
    int top_k;     /* k, 1 <= k <= E */
    int ff;        /* routed expert width */
    int ff_shared; /* shared expert width (Qwen2-MoE); 0 = no shared expert */
    int renorm;    /* 1: top-k weights renormalised to sum 1 */
    float aux_coef; /* α of L_aux (Megatron normalisation, see above); 0 = off */
    float z_coef;   /* c_z of L_z; 0 = off */
} moec_moe_cfg;

/* Borrowed weights, Hugging Face Linear layout (row-major [out, in]). */
typedef struct {
    const float *router;            /* [E, d] */
    const float *const *gate;       /* [E] pointers, each [ff, d] */
    const float *const *up;         /* [E] pointers, each [ff, d] */
    const float *const *down;       /* [E] pointers, each [d, ff] */
    const float *sh_gate, *sh_up;   /* [ff_shared, d]; unused when ff_shared == 0 */
    const float *sh_down;           /* [d, ff_shared] */
    const float *sh_gate_w;         /* [1, d] shared-expert gate (sigmoid) */
} moec_moe_params;

/* Gradient buffers, same shapes as moec_moe_params; the backward ACCUMULATES (+=) into them.
 * Any pointer may be NULL (that gradient is not wanted); gate/up/down may be NULL arrays, or
 * arrays holding NULL entries. */
typedef struct {
    float *router;
    float *const *gate;
    float *const *up;
    float *const *down;
    float *sh_gate, *sh_up, *sh_down;
    float *sh_gate_w;
} moec_moe_grads;

/* Activations saved by the forward for the backward, plus the backward's scratch, sized for
 * up to max_T tokens: one cache per MoE layer whose backward is pending. Size in 4-byte words,
 * N = max_T·k: N·(2d + 3ff + 5) + 2·max_T·E + 2E + max_T, plus with a shared expert
 * max_T·(d + 2·ff_shared + 1) (and the act scratch grows to max_T·ff_shared if that exceeds
 * N·ff). moec_moe_cache_bytes gives the exact figure. */
typedef struct moec_moe_cache moec_moe_cache;

/* Allocates a cache for cfg and up to max_T tokens; *c is caller-owned (moec_moe_cache_free).
 * Returns MOEC_OK, MOEC_ERR_INVALID_ARG (a dimension out of range: d, E, ff, max_T < 1,
 * k outside [1, E], ff_shared < 0, sizes that overflow), or MOEC_ERR_OOM. */
moec_status moec_moe_cache_new(moec_moe_cache **c, const moec_moe_cfg *cfg, int max_T, moec_error *err);
/* Accepts NULL. */
void moec_moe_cache_free(moec_moe_cache *c);
/* Bytes held by the cache (for the trainer's memory report). */
size_t moec_moe_cache_bytes(const moec_moe_cache *c);

/* y [T, d] = MoE(x [T, d]); overwrites y (y must not alias x). 1 <= T <= max_T, and cfg must
 * have the dimensions the cache was made for (MOEC_ASSERT). Writes *aux_loss = L_aux and
 * *z_loss = L_z (already multiplied by their coefficients; 0 when the coefficient is 0) and
 * counts [E] = tokens routed to each expert (Σ counts = T·k); any of the three may be NULL.
 * Fills c for one moec_moe_backward call. */
void moec_moe_forward_train(float *y, const float *x, int T, const moec_moe_cfg *cfg, const moec_moe_params *p,
                            moec_moe_cache *c, float *aux_loss, float *z_loss, int32_t *counts);

/* Backward of the last forward on c, for a total loss ℓ(y) + daux·L_aux + dz·L_z:
 *   dx [T, d] += ∂/∂x (may be NULL), g += ∂/∂params, given dy [T, d] = ∂ℓ/∂y.
 * daux and dz are the factors the returned losses carry in the total loss (normally 1; the
 * coefficients are already inside L_aux and L_z). x, p and T must be those of the forward:
 * x must stay alive and unchanged between the two calls. The backward consumes the cache
 * (it reuses the saved activations as scratch): call it once per forward. */
void moec_moe_backward(float *dx, const moec_moe_grads *g, const float *dy, float daux, float dz, const float *x,
                       int T, const moec_moe_cfg *cfg, const moec_moe_params *p, moec_moe_cache *c);

#endif
