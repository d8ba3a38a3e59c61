/* routers/hash.c — Hash layers (Roller et al. 2021; MOE_SPECS §12): a fixed lookup table from the
 * vocabulary to the experts; no learned gate, no loss.
 *
 *   expert(t) = H[id_t],  weight = 1 (no gate scaling);  one slot per token (num_experts_per_tok 1)
 *   "moec_hash_table": "random" (default): H[v] = mix64(mix64(seed) ^ v) mod E  (seed "moec_hash_seed")
 *                      "balanced": H = the stored tensor model.hash_table [V], built by the trainer
 *                      from the training split's token counts (moec_router_hash_balanced below)
 *
 * The random table is the paper's randint(0, E) per vocabulary id, computed on the fly instead of
 * stored (the checkpoint needs nothing beyond its config); the balanced one is the paper's greedy
 * assignment of frequent tokens to the least-loaded expert, stored so serving uses the very table
 * training used. Either way the same id maps to the same expert in any context. The token ids come from the call context
 * (moec_route_opts.token_ids, filled by the MoE layer from moec_moe_call). A masked expert leaves
 * its tokens without an expert (they keep the residual).
 *
 * probs = the one-hot of the assignment (its entropy, the gate_entropy metric, is 0: routing is
 * deterministic). The router weights W_r stay in the layer (the format has them) but get no
 * gradient, and the balancing and z losses are refused: there is no gate for them to train. Not
 * implemented: the paper's bigram and MultiHash variants. */
#include "moe/routers/routers.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
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

/* ids by descending count, ties to the lower id: a stable merge sort (no qsort: its order on ties
 * is unspecified, and the table must be a function of the counts) */
static void sort_ids(int32_t *a, int32_t *tmp, int32_t n, const uint64_t *c) {
    for (int32_t w = 1; w < n; w *= 2) {
        for (int32_t lo = 0; lo < n; lo += 2 * w) {
            const int32_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int32_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) tmp[o++] = c[a[j]] > c[a[i]] ? a[j++] : a[i++];
            while (i < mid) tmp[o++] = a[i++];
            while (j < hi) tmp[o++] = a[j++];
        }
        memcpy(a, tmp, (size_t)n * sizeof *a);
    }
}

int moec_router_hash_balanced(const uint64_t *counts, int32_t V, int32_t E, float *table) {
    int32_t *ids = malloc((size_t)V * 2 * sizeof *ids);
    uint64_t *load = calloc((size_t)E, sizeof *load);
    int64_t *n_ids = calloc((size_t)E, sizeof *n_ids);
    if (!ids || !load || !n_ids) {
        free(ids), free(load), free(n_ids);
        return 0;
    }
    for (int32_t v = 0; v < V; v++) ids[v] = v;
    sort_ids(ids, ids + V, V, counts);
    for (int32_t i = 0; i < V; i++) { /* O(V·E): a one-off at the start of a run */
        int32_t best = 0;
        for (int32_t e = 1; e < E; e++)
            if (load[e] < load[best] || (load[e] == load[best] && n_ids[e] < n_ids[best])) best = e;
        const int32_t v = ids[i];
        table[v] = (float)best;
        load[best] += counts[v];
        n_ids[best]++;
    }
    free(ids), free(load), free(n_ids);
    return 1;
}

moec_status moec_router_hash_table_check(const float *table, int64_t V, int32_t E, moec_error *err) {
    for (int64_t v = 0; v < V; v++)
        if (!(table[v] >= 0.f && table[v] < (float)E && table[v] == floorf(table[v])))
            return moec_err(err, MOEC_ERR_FORMAT, "model.hash_table: entry %lld is %g, not an expert in [0, %d)",
                            (long long)v, (double)table[v], E);
    return MOEC_OK;
}

static void hash_forward(const moec_router_cfg *c, const float *bias, const float *logits, int T,
                         const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch) {
    (void)bias, (void)logits, (void)scratch;
    const int E = c->n_expert;
    const uint8_t *mask = opts ? opts->expert_mask : NULL;
    MOEC_ASSERT(opts && opts->token_ids); /* both drivers (forward.c, model_train.c) pass them */
    /* a configured balanced table must be there: routing by the random one instead would be silent */
    MOEC_ASSERT(!c->hash_balanced || opts->hash_table);
    MOEC_ASSERT(T >= 0 && T <= r->cap);
    r->T = T;
    r->E = E;
    r->n_slots = T;
    if (probs) memset(probs, 0, (size_t)T * E * sizeof *probs);
    for (int t = 0; t < T; t++) {
        const int32_t id = opts->token_ids[t];
        const int e = opts->hash_table ? (int)opts->hash_table[id] : moec_router_hash_expert(c->hash_seed, id, E);
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
