/* hparams.c — config.json → moec_hparams for every supported model_type. */
#include "model/hparams.h"

#include "core/error.h"
#include "io/file.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const cJSON *root;
    const char *path;
    moec_error *err;
} cfg;

static int is_null_or_absent(const cJSON *j) { return !j || cJSON_IsNull(j); }

/* Integer field; required unless a default is given (has_def). */
static moec_status get_int(cfg *c, const char *key, int has_def, long def, long lo, long hi, int32_t *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (is_null_or_absent(j)) {
        if (!has_def) return moec_err(c->err, MOEC_ERR_FORMAT, "%s: missing field \"%s\"", c->path, key);
        *out = (int32_t)def;
        return MOEC_OK;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < (double)lo ||
        j->valuedouble > (double)hi)
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be an integer in [%ld, %ld]", c->path, key, lo, hi);
    *out = (int32_t)j->valuedouble;
    return MOEC_OK;
}

static moec_status get_float(cfg *c, const char *key, double def, double lo, double hi, float *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (is_null_or_absent(j)) {
        *out = (float)def;
        return MOEC_OK;
    }
    if (!cJSON_IsNumber(j) || !(j->valuedouble > lo) || !(j->valuedouble <= hi))
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be a number in (%g, %g]", c->path, key, lo, hi);
    *out = (float)j->valuedouble;
    return MOEC_OK;
}

static moec_status get_bool(cfg *c, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (is_null_or_absent(j)) {
        *out = def;
        return MOEC_OK;
    }
    if (!cJSON_IsBool(j)) return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be true or false", c->path, key);
    *out = cJSON_IsTrue(j);
    return MOEC_OK;
}

static moec_status unsupported(cfg *c, const char *key, const char *why) {
    return moec_err(c->err, MOEC_ERR_UNSUPPORTED, "%s: \"%s\" %s is not supported by moec", c->path, key, why);
}

static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return is_null_or_absent(j) ? NULL : j;
}

static int json_equal(const cJSON *a, const cJSON *b) { return cJSON_Compare(a, b, 1); }

/* Two spellings of one hyper-parameter (transformers' attribute_map, or a legacy key next to
 * its transformers-5 home): either may be present; both present must agree. */
static moec_status inconsistent(cfg *c, const char *a, const char *b) {
    return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s\" and \"%s\" are both set and disagree; keep one", c->path, a, b);
}

/* An integer under `key`, or under `alias` (transformers' attribute_map) when key is absent. */
static moec_status get_int_alias(cfg *c, const char *key, const char *alias, long lo, long hi, int32_t *out) {
    const cJSON *k = field(c->root, key), *a = alias ? field(c->root, alias) : NULL;
    if (k && a && !json_equal(k, a)) return inconsistent(c, key, alias);
    return get_int(c, k || !a ? key : alias, 0, 0, lo, hi, out);
}

/* ------------------------------------------------------------------ RoPE parameters */

/* An optional number inside the rope dict `r` (called `where` in messages). */
static moec_status rope_num(cfg *c, const cJSON *r, const char *where, const char *key, double def, double lo,
                            double *out) {
    const cJSON *j = field(r, key);
    if (!j) {
        *out = def;
        return MOEC_OK;
    }
    if (!cJSON_IsNumber(j) || !(j->valuedouble > lo) || !isfinite(j->valuedouble))
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s.%s\" must be a number > %g", c->path, where, key, lo);
    *out = j->valuedouble;
    return MOEC_OK;
}

/* rope_theta + rope_parameters (transformers 5) or rope_scaling (older), resolved the way
 * transformers' standardize_rope_params does: the dict's own rope_theta, else the top-level
 * one, else the config class's default; original_max_position_embeddings from the dict, else
 * the top level, else max_position_embeddings. */
static moec_status parse_rope(cfg *c, moec_hparams *hp) {
    moec_rope_cfg *rc = &hp->rope;
    const cJSON *rp = field(c->root, "rope_parameters"), *rs = field(c->root, "rope_scaling");
    if ((rp && !cJSON_IsObject(rp)) || (rs && !cJSON_IsObject(rs)))
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s\" must be an object or null", c->path,
                        rp && !cJSON_IsObject(rp) ? "rope_parameters" : "rope_scaling");
    const cJSON *r = rp ? rp : rs;
    const char *where = rp ? "rope_parameters" : "rope_scaling";
    if (rp && rs) { /* both: a config re-saved across versions; they must describe the same RoPE */
        const char *keys[] = {"rope_type", "factor", "original_max_position_embeddings", "low_freq_factor",
                              "high_freq_factor", "beta_fast", "beta_slow", "attention_factor"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            const cJSON *a = field(rp, keys[i]), *b = field(rs, keys[i]);
            if (!strcmp(keys[i], "rope_type")) {
                if (!a) a = field(rp, "type");
                if (!b) b = field(rs, "type");
            }
            if (a && b && !json_equal(a, b)) return inconsistent(c, "rope_parameters", "rope_scaling");
        }
    }
    /* nested per-layer-type parameters (Gemma-style) are not a thing for these MoE types */
    for (const cJSON *it = r ? r->child : NULL; it; it = it->next)
        if (cJSON_IsObject(it)) return unsupported(c, where, "with per-layer-type RoPE parameters");
    /* rope type: "rope_type", or the legacy "type" */
    const cJSON *t = field(r, "rope_type"), *tl = field(r, "type");
    if (t && tl && !json_equal(t, tl)) return inconsistent(c, "rope_type", "type");
    if (!t) t = tl;
    if (t && !cJSON_IsString(t)) return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s.rope_type\" must be a string", c->path, where);
    static const char *const names[] = {"default", "linear", "dynamic", "yarn", "llama3"};
    rc->type = MOEC_ROPE_DEFAULT;
    if (t) {
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(names[i], t->valuestring)) i++;
        if (i == sizeof names / sizeof names[0])
            return moec_err(c->err, MOEC_ERR_UNSUPPORTED,
                            "%s: \"%s.rope_type\" \"%s\" is not supported by moec (supported: default, linear, dynamic, "
                            "yarn, llama3)", c->path, where, t->valuestring);
        rc->type = (moec_rope_type)i;
    }
    /* theta */
    const cJSON *th_top = field(c->root, "rope_theta"), *th_in = field(r, "rope_theta");
    if (th_top && th_in && !json_equal(th_top, th_in)) return inconsistent(c, "rope_theta", "rope_parameters.rope_theta");
    cfg thc = {th_in ? r : c->root, c->path, c->err};
    moec_status st = get_float(&thc, "rope_theta", hp->arch->rope_theta_default, 0.0, 1e12, &hp->rope_theta);
    if (st) return st;
    rc->theta = th_in ? th_in->valuedouble : th_top ? th_top->valuedouble : hp->arch->rope_theta_default;
    const cJSON *prf = field(r, "partial_rotary_factor");
    if (prf && !(cJSON_IsNumber(prf) && prf->valuedouble == 1.0))
        return unsupported(c, "partial_rotary_factor", "other than 1.0");
    rc->max_pos = hp->max_pos;
    rc->attn_factor = -1;
    rc->truncate = 1;
    hp->n_ctx_max = hp->max_pos;
    if (rc->type == MOEC_ROPE_DEFAULT) return MOEC_OK;
    /* original context: the dict's, else the top level's, else max_position_embeddings */
    const cJSON *om_in = field(r, "original_max_position_embeddings"), *om_top = field(c->root, "original_max_position_embeddings");
    if (om_in && om_top && !json_equal(om_in, om_top))
        return inconsistent(c, "original_max_position_embeddings", "rope_parameters.original_max_position_embeddings");
    int32_t om = hp->max_pos;
    cfg omc = {om_in ? r : c->root, c->path, c->err};
    if ((st = get_int(&omc, "original_max_position_embeddings", 1, hp->max_pos, 1, 1L << 30, &om))) return st;
    rc->orig_max_pos = om;
    const int need_factor = rc->type != MOEC_ROPE_YARN;
    const cJSON *fj = field(r, "factor");
    if (need_factor && !fj)
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s.factor\" is required for rope_type \"%s\"", c->path, where,
                        moec_rope_type_name(rc->type));
    if ((st = rope_num(c, r, where, "factor", (double)hp->max_pos / om, 0.0, &rc->factor))) return st;
    if (rc->type == MOEC_ROPE_YARN) {
        if ((st = rope_num(c, r, where, "attention_factor", -1.0, 0.0, &rc->attn_factor))) return st;
        if ((st = rope_num(c, r, where, "mscale", 0.0, 0.0, &rc->mscale))) return st;
        if ((st = rope_num(c, r, where, "mscale_all_dim", 0.0, 0.0, &rc->mscale_all_dim))) return st;
        if ((st = rope_num(c, r, where, "beta_fast", 32.0, 0.0, &rc->beta_fast))) return st;
        if ((st = rope_num(c, r, where, "beta_slow", 1.0, 0.0, &rc->beta_slow))) return st;
        cfg rcfg = {r, c->path, c->err};
        if ((st = get_bool(&rcfg, "truncate", 1, &rc->truncate))) return st;
    }
    if (rc->type == MOEC_ROPE_LLAMA3) {
        if (!field(r, "low_freq_factor") || !field(r, "high_freq_factor"))
            return moec_err(c->err, MOEC_ERR_FORMAT,
                            "%s: \"%s.low_freq_factor\" and \"high_freq_factor\" are required for rope_type \"llama3\"",
                            c->path, where);
        if ((st = rope_num(c, r, where, "low_freq_factor", 0, 0.0, &rc->low_freq_factor))) return st;
        if ((st = rope_num(c, r, where, "high_freq_factor", 0, 0.0, &rc->high_freq_factor))) return st;
        if (!(rc->high_freq_factor > rc->low_freq_factor))
            return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"%s.high_freq_factor\" must exceed \"low_freq_factor\"",
                            c->path, where);
    }
    if (rc->type == MOEC_ROPE_DYNAMIC) { /* dynamic NTK exists to run past max_position_embeddings */
        const double n = floor((double)hp->max_pos * (rc->factor > 1 ? rc->factor : 1));
        hp->n_ctx_max = n > (double)(1L << 30) ? (int32_t)(1L << 30) : (int32_t)n;
    }
    return MOEC_OK;
}

/* ------------------------------------------------------------------ sliding-window attention */

static moec_status parse_sliding_window(cfg *c, moec_hparams *hp) {
    const moec_arch *a = hp->arch;
    const cJSON *sw = field(c->root, "sliding_window"), *lt = field(c->root, "layer_types");
    int on = 1;
    moec_status st;
    if (a->key_sliding_on && (st = get_bool(c, a->key_sliding_on, 0, &on))) return st;
    if (lt && (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != hp->n_layer))
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"layer_types\" must be a list of %d strings (one per layer)",
                        c->path, hp->n_layer);
    int any_sliding_type = 0, i = 0;
    for (const cJSON *it = lt ? lt->child : NULL; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || (strcmp(it->valuestring, "full_attention") && strcmp(it->valuestring, "sliding_attention")))
            return unsupported(c, "layer_types", "other than \"full_attention\" / \"sliding_attention\"");
        any_sliding_type |= !strcmp(it->valuestring, "sliding_attention");
    }
    if (a->swa == MOEC_SWA_REFUSED) {
        if (sw) return unsupported(c, "sliding_window", "(sliding-window attention) for this model_type");
        if (any_sliding_type) return unsupported(c, "layer_types", "\"sliding_attention\" for this model_type");
        return MOEC_OK;
    }
    if (a->swa == MOEC_SWA_ALL && any_sliding_type)
        return unsupported(c, "layer_types", "\"sliding_attention\" for this model_type (its sliding_window covers every layer)");
    if (!on || !sw) {
        if (any_sliding_type)
            return moec_err(c->err, MOEC_ERR_FORMAT, "%s: \"layer_types\" has \"sliding_attention\" layers but %s", c->path,
                            !sw ? "\"sliding_window\" is null" : "\"use_sliding_window\" is false");
        return MOEC_OK;
    }
    if ((st = get_int(c, "sliding_window", 0, 0, 1, 1L << 30, &hp->sliding_window))) return st;
    if (a->swa == MOEC_SWA_ALL) {
        for (int l = 0; l < hp->n_layer; l++) hp->layer_swa[l] = 1;
        return MOEC_OK;
    }
    /* MOEC_SWA_LAYER_TYPES: the list, else transformers' (5.x) default for Qwen2-MoE */
    if (lt) {
        i = 0;
        for (const cJSON *it = lt->child; it; it = it->next, i++) hp->layer_swa[i] = !strcmp(it->valuestring, "sliding_attention");
        return MOEC_OK;
    }
    int32_t mwl = 28;
    if ((st = get_int(c, "max_window_layers", 1, 28, 0, 1L << 30, &mwl))) return st;
    for (int l = 0; l < hp->n_layer; l++) hp->layer_swa[l] = (l + 1) % 2 && l < mwl;
    return MOEC_OK;
}

/* Features moec does not implement: each must be absent, null, or its neutral value. */
static moec_status check_unsupported(cfg *c, const moec_hparams *hp) {
    const cJSON *j;
    j = cJSON_GetObjectItemCaseSensitive(c->root, "hidden_act");
    if (!is_null_or_absent(j) && !(cJSON_IsString(j) && !strcmp(j->valuestring, "silu")))
        return unsupported(c, "hidden_act", "other than \"silu\"");
    j = cJSON_GetObjectItemCaseSensitive(c->root, "partial_rotary_factor");
    if (!is_null_or_absent(j) && !(cJSON_IsNumber(j) && j->valuedouble == 1.0))
        return unsupported(c, "partial_rotary_factor", "other than 1.0");
    j = cJSON_GetObjectItemCaseSensitive(c->root, "clip_qkv");
    if (!hp->arch->has_clip_qkv && !is_null_or_absent(j)) return unsupported(c, "clip_qkv", "for this model_type");
    j = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    if (!is_null_or_absent(j)) return unsupported(c, "quantization_config", "(pre-quantized checkpoints)");
    return MOEC_OK;
}

int moec_hparams_apply_defaults(cJSON *root, const moec_arch *a) {
    cJSON *def = a->hf_defaults ? cJSON_Parse(a->hf_defaults) : NULL;
    if (a->hf_defaults && !def) return 0; /* out of memory: the literal (src/model/arch/) parses */
    int ok = 1;
    for (const cJSON *it = def ? def->child : NULL; it && ok; it = it->next) {
        if (cJSON_GetObjectItemCaseSensitive(root, it->string)) continue;
        cJSON *dup = cJSON_Duplicate(it, 1);
        ok = dup && cJSON_AddItemToObject(root, it->string, dup);
        if (!ok) cJSON_Delete(dup);
    }
    cJSON_Delete(def);
    return ok;
}

moec_status moec_hparams_parse(moec_hparams *hp, const char *json, size_t len, const char *path,
                               moec_error *err) {
    memset(hp, 0, sizeof *hp);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: config.json is not a valid JSON object", path);
    }
    cfg c = {root, path, err};
    moec_status st = MOEC_OK;
    /* such a config would be two models, and the rewritten config.json would keep both
     * (train/hf_files.c) */
    if ((st = moec_json_check(root, path, err))) goto done;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing string field \"model_type\"", path);
        goto done;
    }
    hp->arch = moec_arch_find(mt->valuestring);
    if (!hp->arch) {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: %s)", path,
                      mt->valuestring, moec_arch_list());
        goto done;
    }
    const moec_arch *a = hp->arch;
    if (!moec_hparams_apply_defaults(root, a)) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    /* bounds far above any real model, low enough that every product of two of them that the
     * kernels form in int arithmetic (e.g. n_head * head_dim, ff) stays below 2^31 */
    const long big = 1L << 30, width = 1L << 22;
    if ((st = get_int(&c, "vocab_size", 0, 0, 1, 1L << 24, &hp->n_vocab))) goto done;
    if ((st = get_int(&c, "hidden_size", 0, 0, 1, 1 << 20, &hp->n_embd))) goto done;
    if ((st = get_int(&c, "num_hidden_layers", 0, 0, 1, MOEC_MAX_LAYERS, &hp->n_layer))) goto done;
    if ((st = get_int(&c, "num_attention_heads", 0, 0, 1, 1 << 16, &hp->n_head))) goto done;
    if ((st = get_int(&c, "num_key_value_heads", 1, hp->n_head, 1, hp->n_head, &hp->n_head_kv))) goto done;
    if (hp->n_head % hp->n_head_kv) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                      path, hp->n_head, hp->n_head_kv);
        goto done;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (a->reads_head_dim && (st = get_int(&c, "head_dim", 1, hp->n_embd / hp->n_head, 2, 1 << 16, &hp->head_dim)))
        goto done;
    if (!a->reads_head_dim && field(root, "head_dim")) {
        int32_t hd = 0;
        if ((st = get_int(&c, "head_dim", 0, 0, 1, 1 << 16, &hd))) goto done;
        if (hd != hp->head_dim || hp->n_embd % hp->n_head) {
            st = unsupported(&c, "head_dim", "other than hidden_size / num_attention_heads for this model_type");
            goto done;
        }
    }
    if (!a->reads_head_dim && hp->n_embd % hp->n_head) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                      hp->n_embd, hp->n_head);
        goto done;
    }
    if (hp->head_dim < 1) { /* the default hidden_size / num_attention_heads when hidden < heads */
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: no \"head_dim\" and hidden_size %d / num_attention_heads %d is 0", path,
                      hp->n_embd, hp->n_head);
        goto done;
    }
    if (hp->head_dim % 2) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: head_dim %d must be even for RoPE", path, hp->head_dim);
        goto done;
    }
    if ((int64_t)hp->n_head * hp->head_dim > width) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: num_attention_heads x head_dim = %lld is implausibly large", path,
                      (long long)hp->n_head * hp->head_dim);
        goto done;
    }
    if ((st = get_int(&c, "max_position_embeddings", 1, 4096, 1, big, &hp->max_pos))) goto done;
    if ((st = get_int_alias(&c, a->key_n_expert, a->alias_n_expert, 0, 1 << 16, &hp->n_expert))) goto done;
    if ((st = get_int(&c, "num_experts_per_tok", 0, 0, 1, 1 << 16, &hp->n_expert_used))) goto done;
    if (hp->n_expert > 0 && hp->n_expert_used > hp->n_expert) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: num_experts_per_tok (%d) exceeds the number of experts (%d)", path,
                      hp->n_expert_used, hp->n_expert);
        goto done;
    }
    if ((st = get_int(&c, a->key_ff_expert, 0, 0, 1, width, &hp->n_ff_expert))) goto done;
    if (a->key_ff_shared && (st = get_int(&c, a->key_ff_shared, 1, 0, 0, width, &hp->n_ff_shared))) goto done;
    hp->shared_gate = 1; /* DeepSeekMoE adds its shared experts unweighted: "moec_shared_expert_gate": false */
    if (a->key_ff_shared && (st = get_bool(&c, "moec_shared_expert_gate", 1, &hp->shared_gate))) goto done;
    if ((st = parse_rope(&c, hp))) goto done;
    if ((st = get_float(&c, "rms_norm_eps", 1e-6, 0.0, 1.0, &hp->rms_eps))) goto done;
    if ((st = get_bool(&c, "tie_word_embeddings", 0, &hp->tie_embeddings))) goto done;
    hp->norm_topk_prob = 1;
    if (a->topk_norm == MOEC_TOPK_NORM_CONFIG &&
        (st = get_bool(&c, "norm_topk_prob", a->norm_topk_default, &hp->norm_topk_prob)))
        goto done;
    int bias = 0;
    if (a->attn_bias == MOEC_ATTN_BIAS_QKV && (st = get_bool(&c, "qkv_bias", 1, &hp->qkv_bias))) goto done;
    if (a->attn_bias == MOEC_ATTN_BIAS_CONFIG_ALL) {
        if ((st = get_bool(&c, "attention_bias", 0, &bias))) goto done;
        hp->qkv_bias = hp->o_bias = bias;
    } else if ((st = get_bool(&c, "attention_bias", 0, &bias)) || bias) {
        if (!st) st = unsupported(&c, "attention_bias", "= true for this model_type");
        goto done;
    }
    if (a->has_clip_qkv && (st = get_float(&c, "clip_qkv", 0.0, -1.0, 1e30, &hp->clip_qkv))) goto done;
    if (hp->clip_qkv < 0) hp->clip_qkv = 0;

    /* which layers are MoE */
    for (int i = 0; i < hp->n_layer; i++) hp->layer_moe[i] = hp->n_expert > 0;
    if (a->has_dense_layers) {
        int32_t step = 1;
        if ((st = get_int(&c, "decoder_sparse_step", 1, 1, 1, big, &step))) goto done;
        for (int i = 0; i < hp->n_layer; i++) hp->layer_moe[i] = hp->n_expert > 0 && (i + 1) % step == 0;
        const cJSON *mlp_only = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
        if (!is_null_or_absent(mlp_only) && !cJSON_IsArray(mlp_only)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: \"mlp_only_layers\" must be a list of layer indices", path);
            goto done;
        }
        for (const cJSON *it = mlp_only ? mlp_only->child : NULL; it; it = it->next) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= hp->n_layer ||
                it->valuedouble != floor(it->valuedouble)) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: \"mlp_only_layers\" entry is not a layer index in [0, %d)",
                              path, hp->n_layer);
                goto done;
            }
            hp->layer_moe[(int)it->valuedouble] = 0;
        }
        int any_dense = 0;
        for (int i = 0; i < hp->n_layer; i++) any_dense |= !hp->layer_moe[i];
        if (any_dense && (st = get_int(&c, "intermediate_size", 0, 0, 1, width, &hp->n_ff_dense))) goto done;
    } else if (hp->n_expert == 0) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: \"%s\" must be at least 1 for %s", path, a->key_n_expert, a->model_type);
        goto done;
    }
    /* special ids: bos_token_id (int), eos_token_id (int or list) */
    hp->bos_id = -1;
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (cJSON_IsNumber(bos) && bos->valuedouble >= 0 && bos->valuedouble < hp->n_vocab) hp->bos_id = (int32_t)bos->valuedouble;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(eos) && eos->valuedouble >= 0 && eos->valuedouble < hp->n_vocab)
        hp->eos_ids[hp->n_eos++] = (int32_t)eos->valuedouble;
    for (const cJSON *it = cJSON_IsArray(eos) ? eos->child : NULL; it && hp->n_eos < 8; it = it->next)
        if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < hp->n_vocab)
            hp->eos_ids[hp->n_eos++] = (int32_t)it->valuedouble;
    if ((st = parse_sliding_window(&c, hp))) goto done;
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "moec_label_smoothing");
    if (!is_null_or_absent(ls)) {
        if (!cJSON_IsNumber(ls) || !(ls->valuedouble >= 0.0 && ls->valuedouble < 1.0)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: \"moec_label_smoothing\" must be a number in [0, 1)", path);
            goto done;
        }
        hp->label_smoothing = (float)ls->valuedouble;
    }
    st = check_unsupported(&c, hp);
    if (!st && hp->n_expert > 0) st = moec_router_cfg_parse(&hp->route, root, hp->n_expert, hp->n_expert_used,
                                                           hp->norm_topk_prob, path, err);
    /* ReXMoE groups r adjacent layers: every layer must be MoE and r must divide the depth */
    if (!st && hp->n_expert > 0 && hp->route.rex_reuse > 1) {
        int all_moe = 1;
        for (int i = 0; i < hp->n_layer; i++) all_moe &= hp->layer_moe[i];
        if (!all_moe || hp->n_layer % hp->route.rex_reuse)
            st = moec_err(err, MOEC_ERR_UNSUPPORTED,
                          "%s: \"moec_rex_reuse_frequency\" %d needs every layer MoE and to divide num_hidden_layers %d",
                          path, hp->route.rex_reuse, hp->n_layer);
    }
done:
    cJSON_Delete(root);
    return st;
}

moec_status moec_hparams_load(moec_hparams *hp, const char *dir, moec_error *err) {
    char path[4096];
    if (!moec_path_join(path, sizeof path, dir, "config.json"))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir);
    char *text = NULL;
    size_t len = 0;
    moec_status st = moec_file_read_all(path, &text, &len, err);
    if (st) return st;
    st = moec_hparams_parse(hp, text, len, path, err);
    free(text);
    return st;
}

int moec_hparams_same(const moec_hparams *a, const moec_hparams *b) {
    return a->arch == b->arch && a->n_vocab == b->n_vocab && a->n_embd == b->n_embd && a->n_layer == b->n_layer &&
           a->n_head == b->n_head && a->n_head_kv == b->n_head_kv && a->head_dim == b->head_dim &&
           a->n_expert == b->n_expert && a->n_expert_used == b->n_expert_used && a->n_ff_expert == b->n_ff_expert &&
           a->n_ff_dense == b->n_ff_dense && a->n_ff_shared == b->n_ff_shared && a->shared_gate == b->shared_gate &&
           a->max_pos == b->max_pos && a->norm_topk_prob == b->norm_topk_prob &&
           a->tie_embeddings == b->tie_embeddings && a->qkv_bias == b->qkv_bias && a->o_bias == b->o_bias &&
           a->clip_qkv == b->clip_qkv && a->rope_theta == b->rope_theta && a->rms_eps == b->rms_eps &&
           !memcmp(&a->rope, &b->rope, sizeof a->rope) && a->n_ctx_max == b->n_ctx_max &&
           a->sliding_window == b->sliding_window && !memcmp(a->layer_swa, b->layer_swa, (size_t)a->n_layer) &&
           !memcmp(a->layer_moe, b->layer_moe, (size_t)a->n_layer) && moec_router_cfg_same(&a->route, &b->route) &&
           a->label_smoothing == b->label_smoothing;
}
