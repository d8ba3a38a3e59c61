/* routers/hash.c — Hash layers (Roller et al. 2021; MOE_SPECS §12): a fixed random lookup table
 * from the vocabulary to the experts; no learned gate, no loss.
 *
 *   expert(t) = H[id_t],  H[v] = mix64(mix64(seed) ^ v) mod E    (seed "moec_hash_seed", default 0)
 *   weight = 1 (no gate scaling);  one slot per token (num_experts_per_tok must be 1)
 *
 * H is the paper's "random" table (randint(0, E) per vocabulary id) computed on the fly instead of
 * stored: the same id maps to the same expert in any context, in training and serving alike, and
 * the checkpoint needs nothing beyond its config. The token ids come from the call context
 * (moec_route_opts.token_ids, filled by the MoE layer from moec_moe_call). A masked expert leaves
 * its tokens without an expert (they keep the residual).
 *
 * probs = the one-hot of the assignment (its entropy, the gate_entropy metric, is 0: routing is
 * deterministic). The router weights W_r stay in the layer (the format has them) but get no
 * gradient, and the balancing and z losses are refused: there is no gate for them to train. Not
 * implemented: the paper's balanced table (greedy over corpus token frequencies, [MEM]), bigram
 * and MultiHash variants. */
#include "moe/routers/routers.h"

#include "core/error.h"
#include "core/rng.h"

#include <stddef.h>
#include <string.h>

static moec_status hash_check(const moec_router_cfg *c, moec_error *err) {
    moec_status st = moec_router_check_common(c, "hash", err);
    if (st) return st;
    if (c->k != 1)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router hash: num_experts_per_tok must be 1 (one hashed expert per token; got %d)",
                        c->k);
    if (c->aux_coef != 0.f || c->z_coef != 0.f || c->jitter != 0.f)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router hash: has no learned gate, so router_aux_loss_coef, router_z_loss_coef and router_jitter_noise must be 0");
    return MOEC_OK;
}

static void hash_defaults(moec_router_cfg *c) {
    c->aux_coef = 0.f;
    c->z_coef = 0.f;
}

int32_t moec_router_hash_expert(uint64_t seed, int32_t id, int E) {
    return (int32_t)(moec_mix64(moec_mix64(seed) ^ (uint64_t)(uint32_t)id) % (uint64_t)E);
}

static void hash_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias, (void)logits, (void)scratch;
    const int E = c->n_expert;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(opts && opts->token_ids); /* both drivers (forward.c, model_train.c) pass them */
    MOEC_ASSERT(T >= 0 && T <= r->cap);
    r->T = T;
    r->E = E;
    r->n_slots = T;
    if (probs) memset(probs, 0, (size_t)T * E * sizeof *probs);
    for (int t = 0; t < T; t++) {
        const int e = moec_router_hash_expert(c->hash_seed, opts->token_ids[t], E);
        const int ok = !mask || mask[e];
        r->token[t] = t;
        r->expert[t] = r->chosen[t] = ok ? e : MOEC_NO_EXPERT;
        r->weight[t] = ok ? 1.f : 0.f;
        if (probs) probs[(size_t)t * E + e] = 1.f;
    }
}

static void hash_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                          const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                          float *scratch) {
    (void)bias, (void)logits, (void)r, (void)dweight, (void)dprobs, (void)scratch;
    memset(dlogits, 0, (size_t)T * c->n_expert * sizeof *dlogits); /* a constant gate */
}

static int32_t hash_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_hash = {
    .name = "hash",
    .doc = "hash layer: expert = a fixed random table of the token id, weight 1, no gate and no loss",
    .check = hash_check,
    .forward = hash_forward,
    .backward = hash_backward,
    .state_size = hash_state_size,
    .defaults = hash_defaults,
};
