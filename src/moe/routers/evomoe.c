/* routers/evomoe.c — EvoMoE's dense-to-sparse gate (Nie et al. 2021; MOE_SPECS §13,
 * codecaution/EvoMoE fairseq/modules/moe/topkgate.py): in training, a Gumbel-softmax gate whose
 * temperature falls with the training step, so routing starts dense and ends top-1.
 *
 * Training rule (a call with a random stream, opts->rng: the trainer's training and counting
 * passes, seeded from the run seed, the step and the micro-batch):
 *   τ_t = max(τ_max · exp(ln(τ_min/τ_max) · t/D), τ_min)      ("moec_tau_schedule": "exp", default)
 *       | max(τ_max − t·(τ_max − τ_min)/D, τ_min)               ("linear")
 *   g = softmax((z + G)/τ_t),  G_e = −log(−log U_e), U_e ∈ (0, 1) (T·E draws per call, always)
 *   soft phase (t < "moec_hard_gumbel_after"): every selectable expert with g_e > 0.001, in
 *     expert order;  hard phase (from that step; −1 = from the start, the code's default): the
 *     selectable argmax of g (one expert)
 *   weight = P[t, e] · routed_scaling, P = softmax(z) (the code's default combine weights; the
 *     use_gumbel_gates variant, weights = g, is not implemented)
 * Inference rule (no random stream: serving, evaluation): top-k_eff of P with weights P (the
 * model's k; EvoMoE uses k = 1, capacity E: nothing dropped).
 *
 * t is the optimizer step of the call (opts->step, from the trainer): τ is a pure function of the
 * step, so a resumed run continues the schedule exactly; there is no other state. The selection is
 * piecewise constant in z (the gate g only selects), so the backward flows through P only, and the
 * load-balancing loss (HF's α, k = 1) is EvoMoE's E²·mean_i(me_i·ce_i) with ce the selection. */
#include "moe/routers/routers.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stddef.h>

#define SOFT_THRESHOLD 0.001f /* topkgate.py: experts with gate > 1e-3 pass in the soft phase */

static moec_status evo_check(const moec_router_cfg *c, moec_error *err) {
    moec_status st = moec_router_check_common(c, "evomoe", err);
    if (st) return st;
    if (!(c->tau_max > 0.f && c->tau_min > 0.f && c->tau_min <= c->tau_max) || !isfinite(c->tau_max))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router evomoe: need 0 < moec_tau_min <= moec_tau_max (got %g, %g)",
                        (double)c->tau_min, (double)c->tau_max);
    if (c->tau_steps < 1)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router evomoe: moec_tau_steps must be >= 1");
    if (c->hard_after < -1)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router evomoe: moec_hard_gumbel_after must be >= -1 (-1 = hard from the start)");
    return MOEC_OK;
}

double moec_router_evomoe_tau(const moec_router_cfg *c, int64_t step) {
    const double tmax = c->tau_max, tmin = c->tau_min, x = (double)step / (double)c->tau_steps;
    const double tau = c->tau_linear ? tmax - x * (tmax - tmin) : tmax * exp(log(tmin / tmax) * x);
    return tau > tmin ? tau : tmin;
}

/* slots: the soft phase may keep all E experts of a token */
static int64_t evo_max_slots(const moec_router_cfg *c, int T) { return (int64_t)T * c->n_expert; }

static int64_t evo_scratch(const moec_router_cfg *c, int T) { return (int64_t)T * c->n_expert + 2 * c->n_expert; }

static float gumbel(moec_rng *rng) {
    /* U in (0, 1): the 24-bit uniform shifted by half a step, so log never sees 0 or 1 */
    const double u = ((double)moec_rng_uniform(rng) * 16777216.0 + 0.5) / 16777216.0;
    return (float)-log(-log(u));
}

static void evo_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                        const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias;
    const int E = c->n_expert;
    const int k = opts && opts->k > 0 ? opts->k : c->k;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    moec_rng *rng = opts ? opts->rng : NULL;
    MOEC_ASSERT(T >= 0 && k >= 1 && k <= c->k && (int64_t)T * E <= r->cap);
    float *S = probs ? probs : scratch, *g = scratch + (size_t)T * E;
    const float tau = rng ? (float)moec_router_evomoe_tau(c, opts->step) : 1.f;
    const int soft = rng && c->hard_after >= 0 && opts->step < c->hard_after;
    int n = 0;
    r->T = T;
    r->E = E;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        float *s = S + (size_t)t * E;
        moec_router_softmax_row(z, E, s);
        int m = 0;
        if (!rng) { /* inference: top-k of P */
            moec_topk(s, E, k, mask, r->expert + n);
            for (int j = 0; j < k; j++) {
                const int e = r->expert[n + j];
                if (mask && !mask[e]) break;
                m++;
            }
        } else {
            for (int e = 0; e < E; e++) g[e] = (z[e] + gumbel(rng)) / tau;
            if (soft) {
                moec_router_softmax_row(g, E, g);
                for (int e = 0; e < E; e++)
                    if (g[e] > SOFT_THRESHOLD && (!mask || mask[e])) r->expert[n + m++] = e;
            } else {
                moec_topk(g, E, 1, mask, r->expert + n);
                m = !mask || mask[r->expert[n]];
            }
        }
        for (int j = 0; j < m; j++) {
            r->token[n + j] = t;
            r->chosen[n + j] = r->expert[n + j];
            r->weight[n + j] = s[r->expert[n + j]] * c->routed_scaling;
        }
        if (m == 0) { /* nothing selectable (masks; or no gate above the threshold) */
            r->token[n] = t;
            r->expert[n] = r->chosen[n] = MOEC_NO_EXPERT;
            r->weight[n] = 0.f;
            m = 1;
        }
        n += m;
    }
    r->n_slots = n;
}

static void evo_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T, const moec_routing *r,
                         const float *dweight, const float *dprobs, float *dlogits, float *scratch) {
    (void)bias;
    moec_router_prob_weights_backward(c, logits, T, r, dweight, dprobs, c->routed_scaling, dlogits, scratch);
}

static int32_t evo_state_size(const moec_router_cfg *c) {
    (void)c;
    return 0;
}

const moec_router moec_router_evomoe = {
    .name = "evomoe",
    .doc = "EvoMoE dense-to-sparse gate: Gumbel-softmax selection with a step-driven temperature (soft: g > 1e-3, "
           "then hard top-1) in training, top-k of softmax when serving",
    .check = evo_check,
    .forward = evo_forward,
    .backward = evo_backward,
    .state_size = evo_state_size,
    .max_slots = evo_max_slots,
    .scratch_floats = evo_scratch,
    .stochastic = 1,
};
