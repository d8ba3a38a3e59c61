/* routers/moge.c — MoGE, Mixture of Grouped Experts (Pangu Pro MoE; MOE_SPECS §11, vllm-ascend
 * pangu_group8_topk): the E experts form G = "n_group" contiguous groups (one per device), and
 * every token takes its top-(k/G) experts inside EVERY group.
 *
 *   P = softmax(z) over all E                            = probs
 *   per group g: the stable top-(k/G) of P[g·E/G .. (g+1)·E/G)
 *   weight = P[t, e] · routed_scaling  (no renormalisation, as the reference)
 *
 * So each group receives exactly T·k/G token-slots per call: the group (device) imbalance is 0
 * by construction, whatever the router learns. Slot t·k + g·(k/G) + j: group by group, in
 * descending P within a group. A masked expert is never chosen; a group with fewer selectable
 * experts than k/G leaves slots without an expert.
 *
 * The reference's learnable per-expert `router_scale` (w = P · router_scale[e], initialised to 1) is
 * the MoE layer's shared router_scale stage (config "moec_router_scale", on in configs/routers/
 * moge.json; moe/router.h moec_routing_scale), applied to the weights this file writes. The
 * load-balancing loss is the shared one (Pangu's global auxiliary loss details are [MEM]); its k is
 * this router's slots per token (moge_call_k), so f sums to 1 under a k override too. */
#include "moe/routers/routers.h"

#include "core/error.h"

#include <math.h>
#include <stddef.h>

static moec_status moge_check(const moec_router_cfg *c, moec_error *err) {
    /* n_group is this router's own key here, not the group-limited top-k of router topk */
    moec_router_cfg t = *c;
    t.n_group = 1;
    moec_status st = moec_router_check_common(&t, "moge", err);
    if (st) return st;
    const int E = c->n_expert, G = c->n_group;
    if (G < 1 || E % G || c->k % G)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router moge: n_group %d must divide both n_expert %d and num_experts_per_tok %d", G, E, c->k);
    return MOEC_OK;
}

/* a k override keeps the per-group structure: k_eff/G per group (rounded down, at least 1) */
static int32_t moge_call_k(const moec_router_cfg *c, int32_t k) {
    const int32_t kg = k / c->n_group;
    return (kg < 1 ? 1 : kg) * c->n_group;
}

static void moge_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias;
    const int E = c->n_expert, G = c->n_group, n = E / G;
    const int k = moge_call_k(c, opts && opts->k > 0 ? opts->k : c->k), kg = k / G;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(T >= 0 && k <= c->k && (int64_t)T * k <= r->cap);
    float *S = probs ? probs : scratch;
    r->T = T;
    r->E = E;
    r->n_slots = T * k;
    for (int t = 0; t < T; t++) {
        float *s = S + (size_t)t * E;
        moec_router_softmax_row(logits + (size_t)t * E, E, s);
        for (int g = 0; g < G; g++) {
            const size_t q0 = (size_t)t * k + (size_t)g * kg;
            int32_t *ex = r->expert + q0;
            moec_topk(s + (size_t)g * n, n, kg, mask ? mask + (size_t)g * n : NULL, ex);
            for (int j = 0; j < kg; j++) {
                const int e = ex[j] + g * n;
                const int ok = !mask || mask[e];
                ex[j] = ok ? e : MOEC_NO_EXPERT;
                r->chosen[q0 + j] = ex[j];
                r->token[q0 + j] = t;
                r->weight[q0 + j] = ok ? s[e] * c->routed_scaling : 0.f;
            }
        }
    }
}

static void moge_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                          const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                          float *scratch) {
    (void)bias;
    moec_router_prob_weights_backward(c, logits, T, r, dweight, dprobs, c->routed_scaling, dlogits, scratch);
}

static int32_t moge_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_moge = {
    .name = "moge",
    .doc = "MoGE grouped experts: top-(k/G) inside each of n_group contiguous groups, raw softmax weights; "
           "equal load per group",
    .check = moge_check,
    .forward = moge_forward,
    .backward = moge_backward,
    .state_size = moge_state_size,
    .call_k = moge_call_k,
};
