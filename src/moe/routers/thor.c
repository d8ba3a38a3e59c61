/* routers/thor.c — THOR, stochastic experts (Zuo et al. 2022, "Taming Sparsely Activated
 * Transformer with Stochastic Experts"; MOE_SPECS §12, microsoft/Stochastic-Mixture-of-Experts
 * thor/transformer_thor_layer.py): no router at all.
 *
 * Training (a call with the training stream opts->rng): ONE expert per layer per forward pass,
 * uniform, shared by the whole batch (the code's `random.randint` per layer per pass), weight 1.
 * The trainer runs every micro-batch twice with independent streams (`two_pass`) and adds the
 * consistency loss (src/train/model_train.c moec_tmodel_pair_step):
 *   code:  CE1 + CE2 + α·½ Σ_{non-pad t} Σ_v (p1 − p2)(log p1 − log p2)   (fairseq normalises by tokens)
 *   moec:  half of it, ½(CE1 + CE2) + (α/4)·mean_t Σ_v (p1 − p2)(log p1 − log p2)
 *          (same optimum and Adam steps; the CE in the log stays comparable with one-pass schemes
 *          and the gradient clip sees the same scale)
 * α = "moec_consistency_alpha" (code default 1.0; the IWSLT script uses 5.0).
 *
 * Serving and evaluation ("moec_thor_inference", the code's inference_level): "token" (0, the code
 * default) — a uniform random expert per token; "sequence" (1, the IWSLT script) — one per
 * sequence per layer. The code computes all experts and then picks; computing only the picked one
 * gives the same output. The draws come from opts->serve_rng / seq_rng (a session's stream: a
 * decode session keeps a sequence's experts over its chunks; a fixed-seed stream in evaluation,
 * so validation losses are reproducible). Without a stream (a bare MoE-layer call), expert
 * mix64(t) mod E (token order), deterministic.
 *
 * P is the one-hot of the assignment; no gradient reaches the router weights (which stay in the
 * layer format unused), and the balancing / z / jitter losses are refused. The label smoothing
 * (0.1) of the THOR recipe is the trainer's business and is not applied. */
#include "moe/routers/routers.h"

#include "core/error.h"
#include "core/rng.h"

#include <stddef.h>
#include <string.h>

static moec_status thor_check(const moec_router_cfg *c, moec_error *err) {
    moec_status st = moec_router_check_common(c, "thor", err);
    if (st) return st;
    if (c->k != 1)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router thor: num_experts_per_tok must be 1 (one sampled expert; got %d)",
                        c->k);
    if (c->aux_coef != 0.f || c->z_coef != 0.f || c->jitter != 0.f)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router thor: has no router, so router_aux_loss_coef, router_z_loss_coef and router_jitter_noise must be 0");
    if (!(c->consistency_alpha >= 0.f))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router thor: moec_consistency_alpha must be >= 0");
    return MOEC_OK;
}

static void thor_defaults(moec_router_cfg *c) { c->z_coef = 0.f; }

static int draw(moec_rng *rng, int E, uint64_t fallback) {
    return rng ? (int)moec_rng_below(rng, (uint64_t)E) : (int)(moec_mix64(fallback) % (uint64_t)E);
}

static void thor_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias, (void)logits, (void)scratch;
    const int E = c->n_expert;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(T >= 0 && T <= r->cap);
    r->T = T;
    r->E = E;
    r->n_slots = T;
    const int S = opts && opts->seq_len > 0 ? opts->seq_len : (T > 0 ? T : 1);
    const int train_e = opts && opts->rng ? draw(opts->rng, E, 0) : -1; /* the whole batch */
    moec_rng *seq = opts ? (opts->seq_rng ? opts->seq_rng : opts->serve_rng) : NULL;
    int e = 0;
    for (int t = 0; t < T; t++) {
        if (train_e >= 0) e = train_e;
        else if (c->thor_level == 1) {
            if (t % S == 0) e = draw(seq, E, (uint64_t)(t / S));
        } else {
            e = draw(opts ? opts->serve_rng : NULL, E, (uint64_t)t);
        }
        const int ok = !mask || mask[e];
        r->token[t] = t;
        r->expert[t] = r->chosen[t] = ok ? e : MOEC_NO_EXPERT;
        r->weight[t] = ok ? 1.f : 0.f;
    }
    if (probs) {
        memset(probs, 0, (size_t)T * E * sizeof *probs);
        for (int t = 0; t < T; t++)
            if (r->expert[t] >= 0) probs[(size_t)t * E + r->expert[t]] = 1.f;
    }
}

static void thor_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                          const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                          float *scratch) {
    (void)bias, (void)logits, (void)r, (void)dweight, (void)dprobs, (void)scratch;
    memset(dlogits, 0, (size_t)T * c->n_expert * sizeof *dlogits); /* no router */
}

static int32_t thor_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_thor = {
    .name = "thor",
    .doc = "THOR stochastic experts: one uniform expert per layer per pass (two passes, consistency loss); "
           "serves a random expert per token or sequence",
    .check = thor_check,
    .forward = thor_forward,
    .backward = thor_backward,
    .state_size = thor_state_size,
    .defaults = thor_defaults,
    .stochastic = 1,
    .two_pass = 1,
};
