/* router.c — the router registry, the default routing configuration, and the shared stable
 * top-k. The routers themselves live in routers/ (one file each); this file knows them only
 * through the table below. */
#include "moe/router.h"

#include "core/error.h"
#include "core/rng.h"
#include "moe/routers/routers.h"
#include "nn/ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ registry */

/* Adding a router: one entry here and its name in g_router_names below. */
static const moec_router *const g_routers[] = {
    &moec_router_topk, &moec_router_expert_choice, &moec_router_topp, &moec_router_moge,
    &moec_router_hash, &moec_router_thor, &moec_router_evomoe,
};
#define N_ROUTERS ((int)(sizeof g_routers / sizeof g_routers[0]))

int moec_router_count(void) { return N_ROUTERS; }

const moec_router *moec_router_at(int i) { return i >= 0 && i < N_ROUTERS ? g_routers[i] : NULL; }

const moec_router *moec_router_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < N_ROUTERS; i++)
        if (!strcmp(g_routers[i]->name, name)) return g_routers[i];
    return NULL;
}

/* Kept beside the table by hand so that it is a constant (no lazily built buffer to race on);
 * tests/test_routers.c checks it equals the table's names joined with ", ". */
static const char g_router_names[] = "topk, expert_choice, topp, moge, hash, thor, evomoe";

const char *moec_router_list(void) { return g_router_names; }

moec_router_cfg moec_router_cfg_default(int32_t n_expert, int32_t k, int norm_topk_prob) {
    moec_router_cfg c;
    memset(&c, 0, sizeof c);
    c.router = &moec_router_topk;
    c.n_expert = n_expert;
    c.k = k;
    c.score = MOEC_SCORE_SOFTMAX;
    c.topk_softmax = 0;
    c.norm_topk_prob = norm_topk_prob;
    c.routed_scaling = 1.f;
    c.n_group = 1;
    c.topk_group = 1;
    c.group_score = MOEC_GROUP_SCORE_MAX;
    c.use_bias = 0;
    c.bias_rate = 1e-3f;
    c.aux_coef = 0.01f;
    c.aux_scope = MOEC_LBL_MICRO_BATCH;
    c.z_coef = 0.001f;
    c.jitter = 0.f;
    c.capacity_factor = 0.f;
    c.drop_policy = MOEC_DROP_POSITION;
    c.decode_router = NULL;
    c.top_p = 0.4f;          /* Dynamic_MoE top_p_threshold */
    c.entropy_coef = 1e-4f;  /* β [MEM] */
    c.ec_capacity = (float)k; /* expert choice: c = k, the compute of top-k */
    c.hash_seed = 0;
    c.tau_max = 1.f;         /* EvoMoE code defaults */
    c.tau_min = 0.5f;
    c.tau_steps = 1;
    c.tau_linear = 0;
    c.hard_after = -1;
    c.thor_level = 0;
    c.consistency_alpha = 1.f; /* THOR code default (the IWSLT script: 5) */
    c.null_renorm = 1; /* no effect without null experts */
    c.coe_inner_residual = 1;
    c.rex_reuse = 1;
    return c;
}

static int64_t scratch_of(const moec_router *rt, const moec_router_cfg *cfg, int T) {
    if (rt && rt->scratch_floats) return rt->scratch_floats(cfg, T);
    return (int64_t)T * cfg->n_expert + 2 * (int64_t)cfg->n_expert;
}

static int64_t slots_of(const moec_router *rt, const moec_router_cfg *cfg, int T) {
    if (rt && rt->max_slots) return rt->max_slots(cfg, T);
    return (int64_t)T * cfg->k;
}

int64_t moec_router_scratch_floats(const moec_router_cfg *cfg, int T) {
    const int64_t a = scratch_of(cfg->router, cfg, T), b = cfg->decode_router ? scratch_of(cfg->decode_router, cfg, T) : 0;
    return a > b ? a : b;
}

int64_t moec_router_max_slots(const moec_router_cfg *cfg, int T) {
    const int64_t a = slots_of(cfg->router, cfg, T), b = cfg->decode_router ? slots_of(cfg->decode_router, cfg, T) : 0;
    return a > b ? a : b;
}

const moec_router *moec_router_for_call(const moec_router_cfg *cfg, int causal) {
    if (causal && cfg->router && cfg->router->non_causal && cfg->decode_router) return cfg->decode_router;
    return cfg->router;
}

moec_status moec_router_check_servable(const moec_router_cfg *cfg, moec_error *err) {
    if (!cfg->router || !cfg->router->non_causal || cfg->decode_router) return MOEC_OK;
    return moec_err(err, MOEC_ERR_UNSUPPORTED,
                    "router %s is not causal (a token's experts depend on later tokens): moec can train this "
                    "checkpoint but not decode it (generate, logits, eval, serve); set \"moec_decode_router\": \"topk\" "
                    "in its config.json to decode with token choice over the same router weights",
                    cfg->router->name);
}

int32_t moec_router_call_k(const moec_router_cfg *cfg, const moec_router *rt, int32_t k) {
    if (k <= 0 || k > cfg->k) k = cfg->k;
    return rt && rt->call_k ? rt->call_k(cfg, k) : k;
}

/* ------------------------------------------------------------------ router_scale (MoGE) */

void moec_routing_scale(moec_routing *r, const float *scale, float *w_unscaled) {
    for (int s = 0; s < r->n_slots; s++) {
        if (w_unscaled) w_unscaled[s] = r->weight[s];
        if (r->expert[s] >= 0) r->weight[s] *= scale[r->expert[s]];
    }
}

void moec_routing_scale_backward(const moec_routing *r, const float *scale, const float *w_unscaled, float *dweight,
                                 float *dscale) {
    for (int s = 0; s < r->n_slots; s++) { /* slot order: the sums do not depend on threads */
        const int e = r->expert[s];
        if (e < 0) continue; /* no expert (or dropped): no gradient, as the router's backward */
        if (dscale) dscale[e] += dweight[s] * w_unscaled[s];
        dweight[s] *= scale[e];
    }
}

/* ------------------------------------------------------------------ ReXMoE progressive scaling */

int32_t moec_rex_pool_size(const moec_router_cfg *c, int32_t N, int64_t step) {
    const int64_t r = c->rex_reuse > 1 ? c->rex_reuse : 1, ts = c->rex_psr_start, te = c->rex_psr_end;
    if (te <= 0 || step > te) return (int32_t)(r * N);
    if (step <= ts) return N;
    /* floor in exact integer arithmetic: N + (r−1)·N·(t − t_s) / (t_e − t_s) */
    return (int32_t)(N + ((r - 1) * N * (step - ts)) / (te - ts));
}

void moec_rex_mask(const moec_router_cfg *c, int32_t N, int64_t step, uint64_t seed, int layer, uint8_t *mask) {
    const int32_t pool = (c->rex_reuse > 1 ? c->rex_reuse : 1) * N, keep = moec_rex_pool_size(c, N, step);
    for (int e = 0; e < c->n_expert; e++) mask[e] = 1;
    if (keep >= pool) return;
    moec_rng g;
    moec_rng_seed(&g, moec_mix64(seed ^ moec_mix64(0x5245584d6f45ull + (uint64_t)step * 4096u + (uint64_t)layer)));
    /* a uniform random subset of pool − keep candidates: the first entries of a partial Fisher–Yates */
    int32_t idx[4096];
    MOEC_ASSERT(pool <= 4096);
    for (int i = 0; i < pool; i++) idx[i] = i;
    for (int i = 0; i < pool - keep; i++) {
        const int j = i + (int)moec_rng_below(&g, (uint64_t)(pool - i));
        const int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        mask[idx[i]] = 0;
    }
}

/* ------------------------------------------------------------------ stable top-k */

/* Rank key: selectable finite values first (tier 1), then masked or -inf ones (tier 0); within
 * a tier larger values first. NaN compares false and so never displaces anything. */
static int tier(const float *v, const uint8_t *mask, int i) {
    return (!mask || mask[i]) && v[i] != -INFINITY && !isnan(v[i]);
}

static int better(const float *v, const uint8_t *mask, int a, int b) {
    const int ta = tier(v, mask, a), tb = tier(v, mask, b);
    if (ta != tb) return ta > tb;
    return v[a] > v[b];
}

void moec_topk(const float *v, int n, int k, const uint8_t *mask, int32_t *idx) {
    if (k > n) k = n;
    /* insertion into a sorted list of at most k: O(n·k), no storage; scanning i upwards and
     * moving only on a strict `better` keeps ties in index order */
    int m = 0;
    for (int i = 0; i < n; i++) {
        int p;
        if (m < k) p = m++;
        else if (better(v, mask, i, idx[k - 1])) p = k - 1;
        else continue;
        while (p > 0 && better(v, mask, i, idx[p - 1])) {
            idx[p] = idx[p - 1];
            p--;
        }
        idx[p] = i;
    }
}

void moec_router_describe(const moec_router_cfg *c, char *buf, size_t cap) {
    if (!cap) return;
    size_t o = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (o < cap) {                                                                             \
            const int n_ = snprintf(buf + o, cap - o, __VA_ARGS__);                                \
            o = n_ > 0 ? o + (size_t)n_ : o;                                                       \
        }                                                                                          \
    } while (0)
    ADD("%s: ", c->router ? c->router->name : "?");
    const char *nm = c->router ? c->router->name : "";
    if (!strcmp(nm, "expert_choice"))
        ADD("each expert takes its top ceil(T*%g/%d) tokens; decodes with %s", (double)c->ec_capacity, c->n_expert,
            c->decode_router ? c->decode_router->name : "nothing (training only)");
    else if (!strcmp(nm, "topp"))
        ADD("fewest experts with softmax mass > %g (at most %d), entropy loss %g", (double)c->top_p, c->k,
            (double)c->entropy_coef);
    else if (!strcmp(nm, "moge"))
        ADD("top-%d in each of %d groups", c->k / (c->n_group > 0 ? c->n_group : 1), c->n_group);
    else if (!strcmp(nm, "hash")) {
        if (c->hash_balanced) ADD("fixed balanced token-id table (model.hash_table, from training-token counts)");
        else ADD("fixed random token-id table (seed %llu)", (unsigned long long)c->hash_seed);
    } else if (!strcmp(nm, "thor"))
        ADD("one uniform expert per layer per pass, consistency alpha %g; serves a random expert per %s",
            (double)c->consistency_alpha, c->thor_level ? "sequence" : "token");
    else if (!strcmp(nm, "evomoe"))
        ADD("Gumbel gate, tau %g -> %g over %lld steps (%s), hard from step %lld; serves top-%d", (double)c->tau_max,
            (double)c->tau_min, (long long)c->tau_steps, c->tau_linear ? "linear" : "exp", (long long)c->hard_after, c->k);
    if (c->router_scale) ADD(", weights x a learnable router_scale");
    if (strcmp(nm, "topk")) {
        if (o >= cap) buf[cap - 1] = 0;
        return;
    }
    if (c->topk_softmax) ADD("softmax over the top-%d logits", c->k);
    else ADD("%s, top-%d%s", c->score == MOEC_SCORE_SIGMOID ? "sigmoid scores" : "softmax over all experts", c->k,
             c->norm_topk_prob ? ", renormalised" : "");
    if (c->routed_scaling != 1.f) ADD(", x%g", (double)c->routed_scaling);
    if (c->n_group > 1)
        ADD(", %d groups keep %d (%s)", c->n_group, c->topk_group, c->group_score == MOEC_GROUP_SCORE_TOP2_SUM ? "top-2 sum" : "max");
    if (c->use_bias) ADD(", aux-loss-free selection bias");
    /* expert kinds and depth routers (xkind) */
    if (c->n_const || c->n_copy || c->n_null)
        ADD(", + %d constant / %d copy / %d null experts%s", c->n_const, c->n_copy, c->n_null,
            c->n_null && c->null_renorm ? " (null renorm)" : "");
    if (c->gate_residual) ADD(", gating residual");
    if (c->rnn_dim) ADD(", GRU router over depth (%d)", c->rnn_dim);
    if (c->coe_iters) ADD(", Chain-of-Experts x%d", c->coe_iters);
    if (c->rex_reuse > 1) ADD(", ReXMoE reuse x%d%s", c->rex_reuse, c->rex_psr_end > 0 ? " + PSR" : "");
    if (o >= cap) buf[cap - 1] = 0;
#undef ADD
}
