/* routers/common.c — pieces the softmax-probability routers share (routers.h): the per-token
 * softmax and its backward, in the same arithmetic as routers/topk.c (fp32 values, double sums),
 * and the backward of "weight = P[t, e] of the chosen expert" over a whole routing. */
#include "moe/routers/routers.h"

#include "core/error.h"

#include <math.h>
#include <stddef.h>

void moec_router_softmax_row(const float *z, int E, float *s) {
    float m = z[0];
    for (int e = 1; e < E; e++) m = z[e] > m ? z[e] : m;
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        s[e] = expf(z[e] - m);
        sum += s[e];
    }
    const float inv = (float)(1.0 / sum);
    for (int e = 0; e < E; e++) s[e] *= inv;
}

void moec_router_softmax_backward_row(const float *s, int E, float *d) {
    double pd = 0.0;
    for (int e = 0; e < E; e++) pd += (double)s[e] * d[e];
    for (int e = 0; e < E; e++) d[e] = s[e] * (d[e] - (float)pd);
}

void moec_router_prob_weights_backward(const moec_router_cfg *c, const float *logits, int T, const moec_routing *r,
                                       const float *dweight, const float *dprobs, float scale, float *dlogits,
                                       float *s) {
    const int E = c->n_expert;
    for (size_t i = 0; i < (size_t)T * E; i++) dlogits[i] = dprobs ? dprobs[i] : 0.f;
    /* ∂/∂P[t, e] of every slot that kept its expert (a dropped slot's weight reached nothing) */
    for (int q = 0; q < r->n_slots; q++)
        if (r->expert[q] >= 0 && r->chosen[q] >= 0)
            dlogits[(size_t)r->token[q] * E + r->chosen[q]] += dweight[q] * scale;
    for (int t = 0; t < T; t++) {
        moec_router_softmax_row(logits + (size_t)t * E, E, s);
        moec_router_softmax_backward_row(s, E, dlogits + (size_t)t * E);
    }
}

moec_status moec_router_check_common(const moec_router_cfg *c, const char *name, moec_error *err) {
    const int E = c->n_expert;
    if (E < 1 || c->k < 1 || c->k > E)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: need 1 <= k <= n_expert (got k = %d, n_expert = %d)", name,
                        c->k, E);
    if (!(c->routed_scaling > 0.f) || !isfinite(c->routed_scaling))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: routed_scaling_factor must be finite and > 0", name);
    if (!(c->aux_coef >= 0.f) || !(c->z_coef >= 0.f) || !isfinite(c->aux_coef) || !isfinite(c->z_coef))
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router %s: router_aux_loss_coef and router_z_loss_coef must be finite and >= 0", name);
    if (c->aux_scope != MOEC_LBL_MICRO_BATCH && c->aux_scope != MOEC_LBL_SEQUENCE &&
        c->aux_scope != MOEC_LBL_GLOBAL_BATCH)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: unknown moec_aux_loss_scope", name);
    if (!(c->jitter >= 0.f && c->jitter < 1.f))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: router_jitter_noise must be in [0, 1)", name);
    if (!(c->capacity_factor >= 0.f) || !isfinite(c->capacity_factor))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: moec_capacity_factor must be finite and >= 0", name);
    if (c->drop_policy != MOEC_DROP_POSITION && c->drop_policy != MOEC_DROP_PROBS)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router %s: moec_drop_policy must be position or probs", name);
    if (c->use_bias || c->n_group > 1 || c->topk_softmax || c->score != MOEC_SCORE_SOFTMAX)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router %s: scoring_func, topk_method, moec_topk_softmax belong to router topk (softmax scores only here)",
                        name);
    return MOEC_OK;
}
