/* hparams.c — config.json → moec_hparams for every supported model_type. */
#include "model/hparams.h"

#include "core/error.h"
#include "io/file.h"

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

/* Features moec does not implement: each must be absent, null, or its neutral value. */
static moec_status check_unsupported(cfg *c, const moec_hparams *hp) {
    const cJSON *j;
    j = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    if (!is_null_or_absent(j)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "rope_type");
        if (!t) t = cJSON_GetObjectItemCaseSensitive(j, "type");
        if (!(cJSON_IsString(t) && !strcmp(t->valuestring, "default")))
            return unsupported(c, "rope_scaling", "(scaled RoPE)");
    }
    j = cJSON_GetObjectItemCaseSensitive(c->root, "rope_parameters");
    if (!is_null_or_absent(j)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "rope_type");
        if (t && !(cJSON_IsString(t) && !strcmp(t->valuestring, "default")))
            return unsupported(c, "rope_parameters.rope_type", "other than \"default\"");
    }
    j = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    if (!is_null_or_absent(j)) {
        int on = 1;
        if (hp->arch->key_sliding_on) {
            moec_status st = get_bool(c, hp->arch->key_sliding_on, 0, &on);
            if (st) return st;
        }
        if (on) return unsupported(c, "sliding_window", "(sliding-window attention)");
    }
    j = cJSON_GetObjectItemCaseSensitive(c->root, "layer_types");
    for (const cJSON *it = j ? j->child : NULL; it; it = it->next)
        if (!cJSON_IsString(it) || strcmp(it->valuestring, "full_attention"))
            return unsupported(c, "layer_types", "other than \"full_attention\"");
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
    if ((st = get_int(&c, a->key_n_expert, 0, 0, 0, 1 << 16, &hp->n_expert))) goto done;
    if ((st = get_int(&c, "num_experts_per_tok", 0, 0, 1, 1 << 16, &hp->n_expert_used))) goto done;
    if (hp->n_expert > 0 && hp->n_expert_used > hp->n_expert) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: num_experts_per_tok (%d) exceeds the number of experts (%d)", path,
                      hp->n_expert_used, hp->n_expert);
        goto done;
    }
    if ((st = get_int(&c, a->key_ff_expert, 0, 0, 1, width, &hp->n_ff_expert))) goto done;
    if (a->key_ff_shared && (st = get_int(&c, a->key_ff_shared, 1, 0, 0, width, &hp->n_ff_shared))) goto done;
    if ((st = get_float(&c, "rope_theta", 10000.0, 0.0, 1e12, &hp->rope_theta))) goto done;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (cJSON_IsObject(rp) && cJSON_GetObjectItemCaseSensitive(rp, "rope_theta")) {
        cfg rc = {rp, path, err};
        if ((st = get_float(&rc, "rope_theta", 10000.0, 0.0, 1e12, &hp->rope_theta))) goto done;
    }
    if ((st = get_float(&c, "rms_norm_eps", 1e-6, 0.0, 1.0, &hp->rms_eps))) goto done;
    if ((st = get_bool(&c, "tie_word_embeddings", 0, &hp->tie_embeddings))) goto done;
    hp->norm_topk_prob = 1;
    if (a->topk_norm == MOEC_TOPK_NORM_CONFIG &&
        (st = get_bool(&c, "norm_topk_prob", a->norm_topk_default, &hp->norm_topk_prob)))
        goto done;
    int bias = 0;
    if (a->attn_bias == MOEC_ATTN_BIAS_QKV) hp->qkv_bias = 1;
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
    st = check_unsupported(&c, hp);
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
