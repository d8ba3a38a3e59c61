/* routers/expert_choice.c — Expert-Choice routing (Zhou et al. 2022; MOE_SPECS §6, flaxformer
 * ExpertsChooseMaskedRouter): every expert picks its own tokens.
 *
 *   S = softmax(z) [T, E] (per token, over experts)     = probs
 *   C = min(T, max(1, ceil(T · c / E)))                  tokens per expert ("moec_ec_capacity" c,
 *                                                         default the model's k: the compute of top-k)
 *   expert e takes the stable top-C of the column S[:, e] (ties to the lower token)
 *   slot e·C + j: token I_e[j], expert e, weight G_e[j] = S[I_e[j], e] · routed_scaling
 *
 * A token gets 0..E experts (0: only the residual passes). No load-balancing loss is needed (the
 * default router_aux_loss_coef is 0); each expert's load is exactly C by construction. Masked
 * experts (opts->expert_mask) pick nothing; the per-call k override does not apply (the count per
 * token is not the router's to set).
 *
 * Not causal: a token's experts depend on every other token of the call, so decoding
 * (moec generate / logits) is refused unless the config names a token-choice decode router
 * ("moec_decode_router": "topk") that serves the same W_r (moe/router.c, docs/routers.md).
 * Backward: the selection is piecewise constant; ∂/∂z flows through the weights S[t, e] and P. */
#include "moe/routers/routers.h"

#include "core/error.h"

#include <math.h>
#include <stddef.h>

static int64_t ec_capacity(const moec_router_cfg *c, int T) {
    int64_t C = (int64_t)ceil((double)T * c->ec_capacity / c->n_expert);
    if (C < 1) C = 1;
    return C > T ? T : C;
}

static moec_status ec_check(const moec_router_cfg *c, moec_error *err) {
    moec_status st = moec_router_check_common(c, "expert_choice", err);
    if (st) return st;
    if (!(c->ec_capacity > 0.f && c->ec_capacity <= (float)c->n_expert))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router expert_choice: moec_ec_capacity must be in (0, n_expert = %d] (got %g)",
                        c->n_expert, (double)c->ec_capacity);
    if (c->capacity_factor > 0.f)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router expert_choice: moec_capacity_factor does not apply (each expert takes exactly C tokens; "
                        "set moec_ec_capacity)");
    if (c->decode_router && c->decode_router->non_causal)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router expert_choice: moec_decode_router %s is not causal either",
                        c->decode_router->name);
    return MOEC_OK;
}

/* §6: no load-balancing loss (when the config has no router_aux_loss_coef; the model type's
 * template supplies one for Mixtral-style configs, so the preset sets 0 explicitly). Decoding through a token-choice router weights its picks by the
 * raw scores, as expert-choice training weights them (not renormalised, whatever the model type
 * says: Mixtral's would renormalise). */
static void ec_defaults(moec_router_cfg *c) {
    c->aux_coef = 0.f;
    c->norm_topk_prob = 0;
}

static int64_t ec_max_slots(const moec_router_cfg *c, int T) { return (int64_t)c->n_expert * ec_capacity(c, T); }

static int64_t ec_scratch(const moec_router_cfg *c, int T) { return (int64_t)T * c->n_expert + T + c->n_expert; }

static void ec_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                       const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias;
    const int E = c->n_expert;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    const int C = (int)ec_capacity(c, T);
    MOEC_ASSERT(T >= 1 && (int64_t)E * C <= r->cap);
    float *S = probs ? probs : scratch, *col = scratch + (size_t)T * E;
    for (int t = 0; t < T; t++) moec_router_softmax_row(logits + (size_t)t * E, E, S + (size_t)t * E);
    r->T = T;
    r->E = E;
    r->n_slots = E * C;
    for (int e = 0; e < E; e++) {
        int32_t *tok = r->token + (size_t)e * C;
        const int on = !mask || mask[e];
        for (int t = 0; t < T; t++) col[t] = S[(size_t)t * E + e];
        moec_topk(col, T, C, NULL, tok);
        for (int j = 0; j < C; j++) {
            const size_t q = (size_t)e * C + j;
            r->expert[q] = r->chosen[q] = on ? e : MOEC_NO_EXPERT;
            r->weight[q] = on ? col[tok[j]] * c->routed_scaling : 0.f;
        }
    }
}

static void ec_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T, const moec_routing *r,
                        const float *dweight, const float *dprobs, float *dlogits, float *scratch) {
    (void)bias;
    moec_router_prob_weights_backward(c, logits, T, r, dweight, dprobs, c->routed_scaling, dlogits, scratch);
}

static int32_t ec_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_expert_choice = {
    .name = "expert_choice",
    .doc = "expert choice: each expert takes its top-C tokens by softmax score (C = ceil(T·c/E)); training only, "
           "decodes through moec_decode_router",
    .check = ec_check,
    .forward = ec_forward,
    .backward = ec_backward,
    .state_size = ec_state_size,
    .max_slots = ec_max_slots,
    .scratch_floats = ec_scratch,
    .defaults = ec_defaults,
    .non_causal = 1,
};
