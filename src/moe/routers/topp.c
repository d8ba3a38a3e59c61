/* routers/topp.c — dynamic top-p routing, "Harder Tasks Need More Experts" (Huang et al. 2024;
 * MOE_SPECS §8 and its addendum, ZhenweiAn/Dynamic_MoE top_p_sampling_batched_all_sequence):
 * a token takes the fewest experts whose probability mass exceeds p.
 *
 *   P = softmax(z)                                        = probs
 *   sort the selectable experts by P descending (stable), c_j = cumulative sum
 *   keep sorted positions 0..t, t = min{j : c_j > p}  (strict >: the expert that crosses p is
 *   kept, so at least one; if no c_j exceeds p, all selectable experts), at most k_eff of them
 *   weight = P[t, e] · routed_scaling  (raw: NOT renormalised, confirmed in the code)
 *
 * k_eff (the model's num_experts_per_tok, or the call's k) caps the experts per token; k = E is
 * the paper's uncapped rule. Slots are compact: a token's slots are contiguous, in descending P.
 *
 * The router's own loss (addendum: [2ND] form, [MEM] coefficient): the routing entropy
 *   L_d = β · (1/T) Σ_t H(P_t),  H(P) = −Σ_i P_i log P_i,  β = "moec_entropy_loss_coef" (1e-4)
 * minimised, so routing sharpens (fewer experts per token). The load-balancing loss is the shared
 * one (balance.h) over the dynamic counts; with HF's router_aux_loss_coef α (×k in moec's
 * normalisation) and k = E it is exactly the Switch form α·E·Σ_i (c_i/N)·P_i the paper names. */
#include "moe/routers/routers.h"

#include "core/error.h"

#include <math.h>
#include <stddef.h>

static moec_status topp_check(const moec_router_cfg *c, moec_error *err) {
    moec_status st = moec_router_check_common(c, "topp", err);
    if (st) return st;
    /* p >= 1 would keep every expert (the code's argmax over an all-false mask) */
    if (!(c->top_p > 0.f && c->top_p < 1.f))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topp: moec_top_p must be in (0, 1) (got %g)", (double)c->top_p);
    if (!(c->entropy_coef >= 0.f) || !isfinite(c->entropy_coef))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topp: moec_entropy_loss_coef must be finite and >= 0");
    return MOEC_OK;
}

static int64_t topp_max_slots(const moec_router_cfg *c, int T) { return (int64_t)T * c->k; }

static int64_t topp_scratch(const moec_router_cfg *c, int T) { return (int64_t)T * c->n_expert + 2 * c->n_expert; }

static void topp_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias;
    const int E = c->n_expert;
    const int k = opts && opts->k > 0 ? opts->k : c->k;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(T >= 0 && k >= 1 && k <= c->k && (int64_t)T * k <= r->cap);
    float *S = probs ? probs : scratch;
    int32_t *order = r->expert; /* each token's sorted experts land in its own slots */
    int n = 0;
    r->T = T;
    r->E = E;
    for (int t = 0; t < T; t++) {
        float *s = S + (size_t)t * E;
        moec_router_softmax_row(logits + (size_t)t * E, E, s);
        int32_t *ex = order + n;
        moec_topk(s, E, k, mask, ex);
        double cum = 0.0;
        int m = 0;
        while (m < k) {
            const int e = ex[m];
            if (mask && !mask[e]) break; /* only masked experts are left */
            m++;
            cum += s[e];
            if (cum > (double)c->top_p) break;
        }
        for (int j = 0; j < m; j++) {
            r->token[n + j] = t;
            r->chosen[n + j] = ex[j];
            r->weight[n + j] = s[ex[j]] * c->routed_scaling;
        }
        if (m == 0) { /* every expert masked: one slot without an expert keeps the token visible */
            r->token[n] = t;
            r->expert[n] = r->chosen[n] = MOEC_NO_EXPERT;
            r->weight[n] = 0.f;
            m = 1;
        }
        n += m;
    }
    r->n_slots = n;
}

static void topp_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                          const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                          float *scratch) {
    (void)bias;
    moec_router_prob_weights_backward(c, logits, T, r, dweight, dprobs, c->routed_scaling, dlogits, scratch);
}

/* β · mean_t H(P_t); ∂/∂P_i = −β/T · (log P_i + 1) (P_i = 0: the limit of P log P has slope → −∞,
 * but such an expert carries no mass: its term is left at 0) */
static double topp_loss(const moec_router_cfg *c, const float *probs, int T, float dscale, float *dprobs) {
    const int E = c->n_expert;
    if (c->entropy_coef == 0.f || T <= 0) return 0.0;
    if (dprobs) {
        const double g = -(double)dscale * c->entropy_coef / T;
        for (size_t i = 0; i < (size_t)T * E; i++)
            if (probs[i] > 0.f) dprobs[i] += (float)(g * (log((double)probs[i]) + 1.0));
        return 0.0;
    }
    double h = 0.0;
    for (size_t i = 0; i < (size_t)T * E; i++)
        if (probs[i] > 0.f) h -= (double)probs[i] * log((double)probs[i]);
    return (double)c->entropy_coef * h / T;
}

static int32_t topp_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_topp = {
    .name = "topp",
    .doc = "dynamic top-p: the fewest experts whose softmax mass exceeds p (at most k), raw weights, routing-entropy loss",
    .check = topp_check,
    .forward = topp_forward,
    .backward = topp_backward,
    .state_size = topp_state_size,
    .max_slots = topp_max_slots,
    .scratch_floats = topp_scratch,
    .loss = topp_loss,
};
