/* router_config.c — config.json → moec_router_cfg. Hugging Face's key names where HF has the
 * concept (scoring_func, topk_method, n_group, topk_group, routed_scaling_factor,
 * norm_topk_prob, router_jitter_noise, router_aux_loss_coef, router_z_loss_coef), moec_* keys
 * for the rest; every key, formula and default is in docs/routers.md. */
#include "core/error.h"
#include "moe/router.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

typedef struct {
    const cJSON *root;
    const char *path;
    moec_error *err;
} reader;

static const cJSON *item(const reader *r, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r->root, key);
    return j && !cJSON_IsNull(j) ? j : NULL;
}

static moec_status num(const reader *r, const char *key, double lo, double hi, float *out) {
    const cJSON *j = item(r, key);
    if (!j) return MOEC_OK;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return moec_err(r->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be a number in [%g, %g]", r->path, key, lo, hi);
    *out = (float)j->valuedouble;
    return MOEC_OK;
}

static moec_status integer(const reader *r, const char *key, long lo, long hi, int32_t *out) {
    const cJSON *j = item(r, key);
    if (!j) return MOEC_OK;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < (double)lo ||
        j->valuedouble > (double)hi)
        return moec_err(r->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be an integer in [%ld, %ld]", r->path, key, lo, hi);
    *out = (int32_t)j->valuedouble;
    return MOEC_OK;
}

static moec_status boolean(const reader *r, const char *key, int *out) {
    const cJSON *j = item(r, key);
    if (!j) return MOEC_OK;
    if (!cJSON_IsBool(j)) return moec_err(r->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be true or false", r->path, key);
    *out = cJSON_IsTrue(j);
    return MOEC_OK;
}

/* String key with a fixed set of values; *out = index into names. */
static moec_status choice(const reader *r, const char *key, const char *const *names, int n, int *out) {
    const cJSON *j = item(r, key);
    if (!j) return MOEC_OK;
    if (cJSON_IsString(j))
        for (int i = 0; i < n; i++)
            if (!strcmp(j->valuestring, names[i])) {
                *out = i;
                return MOEC_OK;
            }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    return moec_err(r->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be one of: %s", r->path, key, list);
}

moec_status moec_router_cfg_parse(moec_router_cfg *cfg, const cJSON *root, int32_t n_expert, int32_t k,
                                  int norm_topk_prob, const char *path, moec_error *err) {
    *cfg = moec_router_cfg_default(n_expert, k, norm_topk_prob);
    reader r = {root, path, err};
    moec_status st;
    const cJSON *name = item(&r, "moec_router");
    if (name) {
        const moec_router *rt = cJSON_IsString(name) ? moec_router_find(name->valuestring) : NULL;
        if (!rt)
            return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: \"moec_router\" must name a router (one of: %s)", path,
                            moec_router_list());
        cfg->router = rt;
    }
    if (cfg->router->defaults) cfg->router->defaults(cfg);
    /* expert kinds and depth routers (xkind): the router's width grows by the zero-computation
     * experts, which sit after the FFN experts (moe/router.h) */
    if ((st = integer(&r, "moec_constant_experts", 0, MOEC_MAX_CONST_EXPERTS, &cfg->n_const))) return st;
    if ((st = integer(&r, "moec_copy_experts", 0, 64, &cfg->n_copy))) return st;
    if ((st = integer(&r, "moec_null_experts", 0, 4096, &cfg->n_null))) return st;
    if ((st = boolean(&r, "moec_null_renorm", &cfg->null_renorm))) return st;
    if ((st = boolean(&r, "moec_gate_residual", &cfg->gate_residual))) return st;
    if ((st = integer(&r, "moec_router_rnn_dim", 0, 65536, &cfg->rnn_dim))) return st;
    if ((st = integer(&r, "moec_coe_iterations", 0, MOEC_MAX_COE_ITERS, &cfg->coe_iters))) return st;
    if ((st = boolean(&r, "moec_coe_inner_residual", &cfg->coe_inner_residual))) return st;
    if ((st = boolean(&r, "moec_coe_outer_residual", &cfg->coe_outer_residual))) return st;
    if ((st = boolean(&r, "moec_coe_shared_gate", &cfg->coe_shared_gate))) return st;
    if (cfg->coe_iters > 0 && (cfg->gate_residual || cfg->rnn_dim > 0))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: \"moec_coe_iterations\" does not combine with a routing carry between layers "
                        "(\"moec_gate_residual\", \"moec_router_rnn_dim\")", path);
    if ((st = integer(&r, "moec_rex_reuse_frequency", 1, 16, &cfg->rex_reuse))) return st;
    if ((st = integer(&r, "moec_rex_psr_start", 0, INT32_MAX, &cfg->rex_psr_start))) return st;
    if ((st = integer(&r, "moec_rex_psr_end", 0, INT32_MAX, &cfg->rex_psr_end))) return st;
    if (cfg->rex_psr_end > 0 && (cfg->rex_reuse < 2 || cfg->rex_psr_end <= cfg->rex_psr_start))
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: \"moec_rex_psr_end\" needs \"moec_rex_reuse_frequency\" >= 2 and must exceed \"moec_rex_psr_start\"",
                        path);
    if (cfg->rex_reuse > 1 && (int64_t)n_expert * cfg->rex_reuse > 4096) /* the PSR mask draws from a fixed table */
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"moec_rex_reuse_frequency\" x experts must be <= 4096", path);
    if (cfg->rex_reuse > 1 && k > n_expert)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: ReXMoE needs k <= the experts of one layer (PSR starts from N)", path);
    cfg->n_expert = n_expert * cfg->rex_reuse + cfg->n_const + cfg->n_copy + cfg->n_null;
    if (cfg->gate_residual && cfg->rnn_dim > 0)
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: \"moec_gate_residual\" and \"moec_router_rnn_dim\" both carry routing state between layers; "
                        "choose one", path);
    if (k > cfg->n_expert)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: %d experts per token but only %d selectable experts", path, k,
                        cfg->n_expert);
    static const char *const scores[] = {"softmax", "sigmoid"};
    static const char *const methods[] = {"greedy", "group_limited_greedy", "noaux_tc"};
    static const char *const gscores[] = {"max", "top2_sum"};
    static const char *const scopes[] = {"micro_batch", "sequence", "global_batch"};
    static const char *const drops[] = {"position", "probs"};
    int score = cfg->score, method = 0, gscore = -1, scope = cfg->aux_scope, drop = cfg->drop_policy;
    if ((st = choice(&r, "scoring_func", scores, 2, &score))) return st;
    if ((st = choice(&r, "topk_method", methods, 3, &method))) return st;
    if ((st = choice(&r, "moec_group_score", gscores, 2, &gscore))) return st;
    if ((st = choice(&r, "moec_aux_loss_scope", scopes, 3, &scope))) return st;
    if ((st = choice(&r, "moec_drop_policy", drops, 2, &drop))) return st;
    cfg->score = (moec_score_func)score;
    cfg->aux_scope = (moec_lbl_scope)scope;
    cfg->drop_policy = (moec_drop_policy)drop;
    cfg->use_bias = method == 2;
    /* group scores: DeepSeek-V2 (group_limited_greedy) takes the max, V3 (noaux_tc) the top-2 sum */
    cfg->group_score = gscore >= 0 ? (moec_group_score)gscore
                                   : method == 2 ? MOEC_GROUP_SCORE_TOP2_SUM : MOEC_GROUP_SCORE_MAX;
    if ((st = boolean(&r, "moec_topk_softmax", &cfg->topk_softmax))) return st;
    if ((st = num(&r, "routed_scaling_factor", 1e-6, 1e6, &cfg->routed_scaling))) return st;
    if ((st = integer(&r, "n_group", 1, n_expert, &cfg->n_group))) return st;
    if ((st = integer(&r, "topk_group", 1, n_expert, &cfg->topk_group))) return st;
    const int topk_family = cfg->router == moec_router_find("topk");
    if (topk_family && method == 0 && (cfg->n_group > 1 || cfg->topk_group > 1) && item(&r, "topk_method"))
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: \"n_group\"/\"topk_group\" need \"topk_method\" \"group_limited_greedy\" or \"noaux_tc\"",
                        path);
    if (method == 0 && topk_family) cfg->n_group = cfg->topk_group = 1; /* moge reads n_group as its own */
    if ((st = num(&r, "moec_bias_update_rate", 0.0, 1.0, &cfg->bias_rate))) return st;
    /* HF's key in HF's normalisation (k at balance): α here (1 at balance) = k · coefficient */
    float hf_aux = -1.f;
    if ((st = num(&r, "router_aux_loss_coef", 0.0, 1e3, &hf_aux))) return st;
    if (hf_aux >= 0.f) cfg->aux_coef = hf_aux * (float)k;
    if ((st = num(&r, "router_z_loss_coef", 0.0, 1e3, &cfg->z_coef))) return st;
    if ((st = num(&r, "router_jitter_noise", 0.0, 0.999, &cfg->jitter))) return st;
    if ((st = num(&r, "moec_capacity_factor", 0.0, 1e6, &cfg->capacity_factor))) return st;
    /* the issue-10 routers' own keys (docs/routers.md); read for every router, used by their own */
    const cJSON *dec = item(&r, "moec_decode_router");
    if (dec) {
        const moec_router *rt = cJSON_IsString(dec) ? moec_router_find(dec->valuestring) : NULL;
        if (!rt || rt->non_causal)
            return moec_err(err, MOEC_ERR_FORMAT,
                            "%s: \"moec_decode_router\" must name a causal router (\"topk\"; registered: %s)", path,
                            moec_router_list());
        cfg->decode_router = rt;
    }
    if ((st = num(&r, "moec_top_p", 0.0, 1.0, &cfg->top_p))) return st;
    if ((st = num(&r, "moec_entropy_loss_coef", 0.0, 1e3, &cfg->entropy_coef))) return st;
    if ((st = num(&r, "moec_ec_capacity", 0.0, 1e6, &cfg->ec_capacity))) return st;
    int32_t seed_i = (int32_t)cfg->hash_seed;
    if ((st = integer(&r, "moec_hash_seed", 0, 2147483647L, &seed_i))) return st;
    cfg->hash_seed = (uint64_t)seed_i;
    static const char *const hash_tables[] = {"random", "balanced"};
    if ((st = choice(&r, "moec_hash_table", hash_tables, 2, &cfg->hash_balanced))) return st;
    if (cfg->hash_balanced && cfg->router != moec_router_find("hash"))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"moec_hash_table\" is a key of \"moec_router\": \"hash\"", path);
    if ((st = num(&r, "moec_tau_max", 1e-6, 1e6, &cfg->tau_max))) return st;
    if ((st = num(&r, "moec_tau_min", 1e-6, 1e6, &cfg->tau_min))) return st;
    int32_t steps = (int32_t)cfg->tau_steps, hard = (int32_t)cfg->hard_after;
    if ((st = integer(&r, "moec_tau_steps", 1, 2147483647L, &steps))) return st;
    if ((st = integer(&r, "moec_hard_gumbel_after", -1, 2147483647L, &hard))) return st;
    cfg->tau_steps = steps;
    cfg->hard_after = hard;
    static const char *const tau_sched[] = {"exp", "linear"};
    if ((st = choice(&r, "moec_tau_schedule", tau_sched, 2, &cfg->tau_linear))) return st;
    static const char *const thor_levels[] = {"token", "sequence"};
    if ((st = choice(&r, "moec_thor_inference", thor_levels, 2, &cfg->thor_level))) return st;
    if ((st = num(&r, "moec_consistency_alpha", 0.0, 1e3, &cfg->consistency_alpha))) return st;
    if ((st = boolean(&r, "moec_router_scale", &cfg->router_scale))) return st;
    if (cfg->router->check && (st = cfg->router->check(cfg, err))) return st;
    if (cfg->decode_router && cfg->decode_router->check && (st = cfg->decode_router->check(cfg, err))) return st;
    return MOEC_OK;
}

int moec_router_cfg_same(const moec_router_cfg *a, const moec_router_cfg *b) {
#if UINTPTR_MAX == UINT64_MAX
    /* a field added to moec_router_cfg must be compared here too (hf_files.c writes configs that
     * lost one otherwise): update the size after adding it */
    _Static_assert(sizeof(moec_router_cfg) == 216, "moec_router_cfg changed: compare the new field below");
#endif
    return a->router == b->router && a->n_expert == b->n_expert && a->k == b->k && a->score == b->score &&
           a->topk_softmax == b->topk_softmax && a->norm_topk_prob == b->norm_topk_prob &&
           a->routed_scaling == b->routed_scaling && a->n_group == b->n_group && a->topk_group == b->topk_group &&
           a->group_score == b->group_score && a->use_bias == b->use_bias && a->bias_rate == b->bias_rate &&
           a->aux_coef == b->aux_coef && a->aux_scope == b->aux_scope && a->z_coef == b->z_coef &&
           a->jitter == b->jitter && a->capacity_factor == b->capacity_factor && a->drop_policy == b->drop_policy &&
           /* issue 10's routers */
           a->decode_router == b->decode_router && a->top_p == b->top_p && a->entropy_coef == b->entropy_coef &&
           a->ec_capacity == b->ec_capacity && a->hash_seed == b->hash_seed && a->hash_balanced == b->hash_balanced &&
           a->tau_max == b->tau_max && a->tau_min == b->tau_min && a->tau_steps == b->tau_steps &&
           a->tau_linear == b->tau_linear && a->hard_after == b->hard_after && a->thor_level == b->thor_level &&
           a->consistency_alpha == b->consistency_alpha &&
           /* expert kinds and depth routers */
           a->n_const == b->n_const && a->n_copy == b->n_copy && a->n_null == b->n_null &&
           a->null_renorm == b->null_renorm && a->gate_residual == b->gate_residual && a->rnn_dim == b->rnn_dim &&
           a->coe_iters == b->coe_iters && a->coe_inner_residual == b->coe_inner_residual &&
           a->coe_outer_residual == b->coe_outer_residual && a->coe_shared_gate == b->coe_shared_gate &&
           a->rex_reuse == b->rex_reuse && a->rex_psr_start == b->rex_psr_start && a->rex_psr_end == b->rex_psr_end &&
           a->router_scale == b->router_scale;
}
