/* routers/topk.c — the token-choice family (MOE_SPECS §1–§4, docs/routers.md): every token
 * picks its k_eff best experts by score.
 *
 *   scores      s = softmax(z) over all E (default) | sigmoid(z) ("scoring_func": "sigmoid")
 *   selection   v = s (+ b, the aux-loss-free bias, when use_bias); masked experts −inf;
 *               group-limited: keep the topk_group best of n_group contiguous groups (group
 *               score = max v, or the sum of the top-2 v), the others −inf; then the stable
 *               top-k of v (ties to the lower index). A pick whose v is −inf (nothing
 *               selectable left) becomes a slot without an expert.
 *   weights     a_j = s_j of the picks, or with topk_softmax the softmax over the picks' logits
 *               (Mixtral); norm_topk_prob: a_j / (Σ a + 1e-20); then × routed_scaling, always
 *               (after the optional renormalisation: DeepSeek-V3's order; DeepSeek-V2 scales only
 *               when it does not renormalise — set routed_scaling = 1 with norm_topk_prob to get
 *               V2's renormalised form).
 *   probs       softmax: P = softmax(z) (also with topk_softmax); sigmoid: P = s / Σ_j s_j per
 *               token (DeepSeek-V3's sequence-wise balance loss). The expert mask does not
 *               change P.
 *
 * The selection (top-k, groups, bias, mask) is piecewise constant and has no gradient; the
 * backward is exact through the weights (renormalisation, scaling, topk_softmax, softmax or
 * sigmoid) and through P. The bias is state (moec_router.update), never a parameter.
 *
 * Not here: capacity, dropping, jitter and the balancing losses (shared by every router:
 * moe/moe.c, moe/balance.c). Serial over tokens: the scores are O(T·E), small next to the
 * experts, and a fixed order keeps the result bit-reproducible. */
#include "moe/routers/routers.h"

#include "core/error.h"

#include <math.h>
#include <stddef.h>

#define RENORM_EPS 1e-20 /* DeepSeek-V3 (HF) adds it to the sum of the selected weights */

/* ------------------------------------------------------------------ check */

static moec_status topk_check(const moec_router_cfg *c, moec_error *err) {
    const int E = c->n_expert;
    if (E < 1 || c->k < 1 || c->k > E)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: need 1 <= k <= n_expert (got k = %d, n_expert = %d)",
                        c->k, E);
    if (c->score != MOEC_SCORE_SOFTMAX && c->score != MOEC_SCORE_SIGMOID)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: scoring_func must be softmax or sigmoid");
    if (c->topk_softmax && c->score != MOEC_SCORE_SOFTMAX)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router topk: moec_topk_softmax needs scoring_func softmax (it is a softmax over the chosen logits)");
    if (!(c->routed_scaling > 0.f) || !isfinite(c->routed_scaling))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: routed_scaling_factor must be finite and > 0 (got %g)",
                        (double)c->routed_scaling);
    if (c->n_group < 1 || E % c->n_group)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: n_group %d must be >= 1 and divide n_expert %d",
                        c->n_group, E);
    if (c->topk_group < 1 || c->topk_group > c->n_group)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: topk_group %d must be in [1, n_group = %d]",
                        c->topk_group, c->n_group);
    if (c->n_group > 1 && c->k > c->topk_group * (E / c->n_group))
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router topk: k = %d exceeds the %d experts of the topk_group = %d kept groups (n_group %d)",
                        c->k, c->topk_group * (E / c->n_group), c->topk_group, c->n_group);
    if (c->group_score != MOEC_GROUP_SCORE_MAX && c->group_score != MOEC_GROUP_SCORE_TOP2_SUM)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: moec_group_score must be max or top2_sum");
    if (c->n_group > 1 && c->group_score == MOEC_GROUP_SCORE_TOP2_SUM && E / c->n_group < 2)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router topk: moec_group_score top2_sum needs >= 2 experts per group (n_expert %d, n_group %d)",
                        E, c->n_group);
    if (!(c->bias_rate >= 0.f) || !isfinite(c->bias_rate))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: moec_bias_update_rate must be finite and >= 0 (got %g)",
                        (double)c->bias_rate);
    if (!(c->aux_coef >= 0.f) || !(c->z_coef >= 0.f) || !isfinite(c->aux_coef) || !isfinite(c->z_coef))
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router topk: router_aux_loss_coef and router_z_loss_coef must be finite and >= 0");
    if (c->aux_scope != MOEC_LBL_MICRO_BATCH && c->aux_scope != MOEC_LBL_SEQUENCE &&
        c->aux_scope != MOEC_LBL_GLOBAL_BATCH)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "router topk: moec_aux_loss_scope must be micro_batch, sequence or global_batch");
    if (!(c->jitter >= 0.f && c->jitter < 1.f))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: router_jitter_noise must be in [0, 1) (got %g)",
                        (double)c->jitter);
    if (!(c->capacity_factor >= 0.f) || !isfinite(c->capacity_factor))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: moec_capacity_factor must be finite and >= 0 (0 = dropless)");
    if (c->drop_policy != MOEC_DROP_POSITION && c->drop_policy != MOEC_DROP_PROBS)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "router topk: moec_drop_policy must be position or probs");
    /* use_bias with softmax scores is accepted (selection by p + b); Megatron ignores the bias
     * on its softmax path, and the paper's softmax variant uses another update rule (docs). */
    return MOEC_OK;
}

/* ------------------------------------------------------------------ shared pieces */

/* s [E] of one token: softmax(z) or sigmoid(z), fp32 with a double sum */
static void scores(const moec_router_cfg *c, const float *z, int E, float *s) {
    if (c->score == MOEC_SCORE_SIGMOID) {
        for (int e = 0; e < E; e++) s[e] = 1.f / (1.f + expf(-z[e]));
        return;
    }
    moec_router_softmax_row(z, E, s);
}

/* Pre-scale weights of one token's k slots from its picks ex [k] (< 0: no expert): a [k] before
 * and wn [k] after the optional renormalisation; returns the renormalisation denominator S
 * (1 without it). Forward and backward both call this, so they see the same numbers. */
static float slot_weights(const moec_router_cfg *c, const float *z, const float *s, const int32_t *ex, int k,
                          float *a, float *wn) {
    if (c->topk_softmax) {
        float m = -INFINITY;
        for (int j = 0; j < k; j++)
            if (ex[j] >= 0 && z[ex[j]] > m) m = z[ex[j]];
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            a[j] = ex[j] >= 0 ? expf(z[ex[j]] - m) : 0.f;
            sum += a[j];
        }
        const float inv = sum > 0.0 ? (float)(1.0 / sum) : 0.f;
        for (int j = 0; j < k; j++) a[j] *= inv;
    } else {
        for (int j = 0; j < k; j++) a[j] = ex[j] >= 0 ? s[ex[j]] : 0.f;
    }
    float S = 1.f;
    if (c->norm_topk_prob) {
        double sum = 0.0;
        for (int j = 0; j < k; j++) sum += a[j];
        S = (float)(sum + RENORM_EPS);
    }
    for (int j = 0; j < k; j++) wn[j] = c->norm_topk_prob ? a[j] / S : a[j];
    return S;
}

/* Group-limited selection on v [E]: experts outside the topk_group best groups → −inf. A group's
 * score is its max, or the sum of its two largest finite values (one if it has only one; −inf if
 * none); the ranking is stable (ties to the lower group). */
static void group_limit(const moec_router_cfg *c, float *v, float *gs) {
    const int G = c->n_group, n = c->n_expert / G;
    for (int g = 0; g < G; g++) {
        const float *vg = v + (size_t)g * n;
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int i = 0; i < n; i++) {
            if (vg[i] > m1) {
                m2 = m1;
                m1 = vg[i];
            } else if (vg[i] > m2) {
                m2 = vg[i];
            }
        }
        if (c->group_score == MOEC_GROUP_SCORE_TOP2_SUM && m2 != -INFINITY) gs[g] = m1 + m2;
        else gs[g] = m1;
    }
    for (int g = 0; g < G; g++) {
        int rank = 0;
        for (int h = 0; h < G; h++) rank += gs[h] > gs[g] || (gs[h] == gs[g] && h < g);
        if (rank >= c->topk_group)
            for (int i = 0; i < n; i++) v[(size_t)g * n + i] = -INFINITY;
    }
}

/* ------------------------------------------------------------------ forward */

static void topk_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    const int E = c->n_expert;
    const int k = opts && opts->k > 0 ? opts->k : c->k;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(T >= 0 && k >= 1 && k <= c->k && k <= E);
    MOEC_ASSERT((int64_t)T * k <= r->cap);
    MOEC_ASSERT(!c->use_bias || bias);
    const float *b = c->use_bias ? bias : NULL;
    float *v = scratch + (size_t)T * E, *gs = v + E; /* [E] selection values, [E] group scores */
    r->T = T;
    r->E = E;
    r->n_slots = T * k;

    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;       /* (E) */
        float *s = scratch + (size_t)t * E;             /* (E) scores */
        scores(c, z, E, s);
        if (probs) {
            float *pr = probs + (size_t)t * E;
            if (c->score == MOEC_SCORE_SIGMOID) {
                double sum = 0.0;
                for (int e = 0; e < E; e++) sum += s[e];
                const float inv = (float)(1.0 / sum);
                for (int e = 0; e < E; e++) pr[e] = s[e] * inv;
            } else {
                for (int e = 0; e < E; e++) pr[e] = s[e];
            }
        }

        for (int e = 0; e < E; e++) v[e] = mask && !mask[e] ? -INFINITY : s[e] + (b ? b[e] : 0.f);
        if (c->n_group > 1) group_limit(c, v, gs);

        const int s0 = t * k;
        int32_t *ex = r->expert + s0;
        moec_topk(v, E, k, NULL, ex);
        for (int j = 0; j < k; j++) {
            if (v[ex[j]] == -INFINITY) ex[j] = MOEC_NO_EXPERT; /* nothing selectable was left */
            r->chosen[s0 + j] = ex[j];
            r->token[s0 + j] = t;
        }
        /* a, wn in the group-score row (free again): k <= E */
        slot_weights(c, z, s, ex, k, v, gs);
        for (int j = 0; j < k; j++) r->weight[s0 + j] = gs[j] * c->routed_scaling;
    }
}

/* ------------------------------------------------------------------ backward */

static void topk_backward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                          const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                          float *scratch) {
    (void)bias; /* selection only: no gradient */
    const int E = c->n_expert;
    MOEC_ASSERT(r->T == T && r->E == E && T >= 0);
    if (T == 0) return;
    MOEC_ASSERT(r->n_slots % T == 0);
    const int k = r->n_slots / T;
    MOEC_ASSERT(k >= 1 && k <= c->k);
    float *a = scratch + (size_t)T * E, *wn = a + E, *s = scratch;

    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        const int32_t *ex = r->chosen + (size_t)t * k; /* the weights were formed over the choice */
        float *d = dlogits + (size_t)t * E;            /* ∂/∂s (or ∂/∂P) first, then ∂/∂z in place */
        scores(c, z, E, s);
        const float S = slot_weights(c, z, s, ex, k, a, wn);

        /* ∂/∂a_j: through × routed_scaling and the renormalisation a/S (S = Σa + ε):
         * ∂wn_j/∂a_m = δ_jm/S − a_j/S², so ∂/∂a_m = (dw_m − Σ_j dw_j·wn_j)/S */
        float *da = wn; /* wn is read once, then overwritten: a [k] and da [k] fit the 2E row */
        double dot = 0.0;
        for (int j = 0; j < k; j++) {
            const int slot = t * k + j;
            const float dw = r->expert[slot] >= 0 && ex[j] >= 0 ? dweight[slot] * c->routed_scaling : 0.f;
            dot += (double)dw * wn[j];
            da[j] = dw;
        }
        if (c->norm_topk_prob)
            for (int j = 0; j < k; j++) da[j] = ex[j] >= 0 ? (da[j] - (float)dot) / S : 0.f;

        if (c->score == MOEC_SCORE_SIGMOID) {
            /* P = s/Σs: ∂/∂s_m = (dP_m − Σ_e dP_e·P_e)/Σs; then a_j = s_j; then s' = s(1 − s) */
            if (dprobs) {
                const float *dp = dprobs + (size_t)t * E;
                double sum = 0.0, pd = 0.0;
                for (int e = 0; e < E; e++) sum += s[e];
                for (int e = 0; e < E; e++) pd += (double)dp[e] * s[e];
                const float inv = (float)(1.0 / sum), pdp = (float)(pd / sum);
                for (int e = 0; e < E; e++) d[e] = (dp[e] - pdp) * inv;
            } else {
                for (int e = 0; e < E; e++) d[e] = 0.f;
            }
            for (int j = 0; j < k; j++)
                if (ex[j] >= 0) d[ex[j]] += da[j];
            for (int e = 0; e < E; e++) d[e] *= s[e] * (1.f - s[e]);
            continue;
        }

        /* softmax over all: ∂/∂p = dP (+ da at the picks unless topk_softmax), then
         * ∂/∂z = p ⊙ (∂/∂p − p·∂/∂p) */
        for (int e = 0; e < E; e++) d[e] = dprobs ? dprobs[(size_t)t * E + e] : 0.f;
        if (!c->topk_softmax)
            for (int j = 0; j < k; j++)
                if (ex[j] >= 0) d[ex[j]] += da[j];
        double pd = 0.0;
        for (int e = 0; e < E; e++) pd += (double)s[e] * d[e];
        for (int e = 0; e < E; e++) d[e] = s[e] * (d[e] - (float)pd);
        if (c->topk_softmax) {
            /* a = softmax over the picks' logits: ∂/∂z_m = a_m (da_m − Σ_j a_j da_j) */
            double qd = 0.0;
            for (int j = 0; j < k; j++) qd += (double)a[j] * da[j];
            for (int j = 0; j < k; j++)
                if (ex[j] >= 0) d[ex[j]] += a[j] * (da[j] - (float)qd);
        }
    }
}

/* ------------------------------------------------------------------ state */

/* Aux-loss-free bias (Wang et al. 2024, Megatron get_updated_expert_bias):
 * b_i += u · sign(c̄ − c_i), c̄ = mean count; compared as Σc − E·c_i in integers, so an exactly
 * average expert does not move. */
static void topk_update(const moec_router_cfg *c, float *bias, const int64_t *counts) {
    if (!c->use_bias) return;
    const int E = c->n_expert;
    int64_t total = 0;
    for (int e = 0; e < E; e++) total += counts[e];
    for (int e = 0; e < E; e++) {
        const int64_t diff = total - (int64_t)E * counts[e];
        bias[e] += diff > 0 ? c->bias_rate : diff < 0 ? -c->bias_rate : 0.f;
    }
}

static int32_t topk_state_size(const moec_router_cfg *c) { return c->use_bias ? c->n_expert : 0; }

const moec_router moec_router_topk = {
    .name = "topk",
    .doc = "token choice: softmax|sigmoid scores, top-k (group-limited, aux-loss-free bias), "
           "optional renormalisation, routed scaling",
    .check = topk_check,
    .forward = topk_forward,
    .backward = topk_backward,
    .update = topk_update,
    .state_size = topk_state_size,
};
