/* hf_files.c — see hf_files.h. The config is the user's config.json with transformers'
 * defaults filled in (the same defaults moec reads it with), the keys transformers 5 writes,
 * and keys sorted as its save_pretrained sorts them. */
#include "train/hf_files.h"

#include "core/error.h"
#include "io/file.h"
#include "model/hparams.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ small cJSON helpers */

static int put(cJSON *obj, const char *key, cJSON *item) {
    if (!item) return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return 0;
    }
    return 1;
}

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return j && !cJSON_IsNull(j) ? j : NULL;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Sorts the keys of every object in the tree (json.dumps(sort_keys=True)). 0 on OOM. */
static int sort_keys(cJSON *obj) {
    size_t n = 0;
    for (cJSON *it = obj->child; it; it = it->next) {
        if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && !sort_keys(it)) return 0;
        n++;
    }
    if (!cJSON_IsObject(obj) || n < 2) return 1;
    cJSON **v = malloc(n * sizeof *v);
    if (!v) return 0;
    n = 0;
    for (cJSON *it = obj->child; it; it = it->next) v[n++] = it;
    qsort(v, n, sizeof *v, cmp_key);
    for (size_t i = 0; i < n; i++) {
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
        v[i]->prev = i ? v[i - 1] : v[n - 1]; /* cJSON keeps the tail in the head's prev */
    }
    obj->child = v[0];
    free(v);
    return 1;
}

/* Keys whose values transformers 5 types as float: its strict config validation rejects an
 * integer there, and cJSON would print 0.0 as 0. */
static const char *const FLOAT_KEYS[] = {"attention_dropout", "initializer_range", "rms_norm_eps",
                                         "router_aux_loss_coef", "router_jitter_noise", "clip_qkv", "rope_theta",
                                         "factor", "attention_factor", "beta_fast", "beta_slow", "mscale",
                                         "mscale_all_dim", "low_freq_factor", "high_freq_factor",
                                         "partial_rotary_factor"};

static int is_float_key(const char *k) {
    for (size_t i = 0; k && i < sizeof FLOAT_KEYS / sizeof FLOAT_KEYS[0]; i++)
        if (!strcmp(k, FLOAT_KEYS[i])) return 1;
    return 0;
}

/* Numbers under float keys become raw JSON text that always has a '.' or an exponent, with
 * the shortest digits that read back to the same double (as Python's repr). 0 on OOM. */
static int floats_as_floats(cJSON *obj) {
    for (cJSON *it = obj->child, *next; it; it = next) {
        next = it->next;
        if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
            if (!floats_as_floats(it)) return 0;
            continue;
        }
        if (!cJSON_IsNumber(it) || !is_float_key(it->string)) continue;
        char buf[40];
        if (it->valuedouble == floor(it->valuedouble) && fabs(it->valuedouble) < 1e15)
            snprintf(buf, sizeof buf, "%.1f", it->valuedouble);
        else
            for (int prec = 1; prec <= 17; prec++) {
                snprintf(buf, sizeof buf, "%.*g", prec, it->valuedouble);
                if (strtod(buf, NULL) == it->valuedouble) break;
            }
        if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
        cJSON *raw = cJSON_CreateRaw(buf);
        if (!raw || !cJSON_ReplaceItemInObjectCaseSensitive(obj, it->string, raw)) { /* keeps the key */
            cJSON_Delete(raw);
            return 0;
        }
    }
    return 1;
}

static char *print_sorted(cJSON *root) {
    if (!sort_keys(root) || !floats_as_floats(root)) return NULL;
    return cJSON_Print(root);
}

/* The string of token `id` in a tokenizer.json (added tokens first, then the BPE vocabulary);
 * borrowed from tok, NULL if absent. */
static const char *token_content(const cJSON *tok, int32_t id) {
    if (!tok || id < 0) return NULL;
    for (const cJSON *it = get(tok, "added_tokens") ? get(tok, "added_tokens")->child : NULL; it; it = it->next) {
        const cJSON *i = get(it, "id"), *c = get(it, "content");
        if (cJSON_IsNumber(i) && i->valuedouble == id && cJSON_IsString(c)) return c->valuestring;
    }
    const cJSON *model = get(tok, "model");
    for (const cJSON *it = get(model, "vocab") ? get(model, "vocab")->child : NULL; it; it = it->next)
        if (cJSON_IsNumber(it) && it->valuedouble == id) return it->string;
    return NULL;
}

/* ------------------------------------------------------------------ config.json */

/* rope_parameters as transformers 5 writes it: the dict (from rope_parameters or the legacy
 * rope_scaling) with rope_type and rope_theta; the legacy keys go, except a top-level
 * rope_theta equal to it, kept for transformers 4 readers. */
static int write_rope(cJSON *root, const moec_hparams *hp) {
    const cJSON *src = get(root, "rope_parameters");
    if (!src) src = get(root, "rope_scaling");
    cJSON *rp = src ? cJSON_Duplicate(src, 1) : cJSON_CreateObject();
    if (!rp) return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(rp, "type");
    int ok = put(rp, "rope_type", cJSON_CreateString(moec_rope_type_name(hp->rope.type))) &&
             put(rp, "rope_theta", cJSON_CreateNumber(hp->rope.theta));
    if (ok && hp->rope.type != MOEC_ROPE_DEFAULT && hp->rope.type != MOEC_ROPE_LINEAR &&
        hp->rope.type != MOEC_ROPE_DYNAMIC)
        ok = put(rp, "original_max_position_embeddings", cJSON_CreateNumber(hp->rope.orig_max_pos));
    if (!ok) {
        cJSON_Delete(rp);
        return 0;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "rope_scaling");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "original_max_position_embeddings");
    return put(root, "rope_parameters", rp) && put(root, "rope_theta", cJSON_CreateNumber(hp->rope.theta));
}

static moec_status make_config(moec_hf_files *out, const moec_hparams *hp, const char *text, size_t len,
                               const char *path, int32_t eot_id, moec_error *err) {
    const moec_arch *a = hp->arch;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return moec_err(err, MOEC_ERR_FORMAT, "%s: config.json is not valid JSON", path);
    /* moec's data has no BOS and pads nothing: a special id the run's config does not name is
     * null, not transformers' class default (Mixtral's bos 1, OLMoE's pad 1 are other tokens
     * in moec's vocabulary) */
    int ok = 1;
    if (!cJSON_GetObjectItemCaseSensitive(root, "bos_token_id")) ok = put(root, "bos_token_id", cJSON_CreateNull());
    if (ok && !cJSON_GetObjectItemCaseSensitive(root, "pad_token_id")) ok = put(root, "pad_token_id", cJSON_CreateNull());
    ok = ok && moec_hparams_apply_defaults(root, a);
    cJSON *archs = cJSON_CreateArray();
    if (archs && !cJSON_AddItemToArray(archs, cJSON_CreateString(a->hf_class))) {
        cJSON_Delete(archs);
        archs = NULL;
    }
    if (ok) ok = put(root, "architectures", archs); /* put owns archs from here, also when it fails */
    else cJSON_Delete(archs);
    ok = ok && put(root, "model_type", cJSON_CreateString(a->model_type));
    /* the checkpoint holds fp32 master weights; transformers 5 writes "dtype" */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
    ok = ok && put(root, "dtype", cJSON_CreateString("float32"));
    ok = ok && put(root, "transformers_version", cJSON_CreateString(MOEC_HF_TRANSFORMERS_VERSION));
    ok = ok && write_rope(root, hp);
    /* both spellings of the expert count, equal: transformers 5 writes qwen3_moe's under
     * num_local_experts (its attribute_map), transformers 4 reads num_experts */
    ok = ok && put(root, a->key_n_expert, cJSON_CreateNumber(hp->n_expert));
    if (ok && a->alias_n_expert) ok = put(root, a->alias_n_expert, cJSON_CreateNumber(hp->n_expert));
    if (ok && a->reads_head_dim) ok = put(root, "head_dim", cJSON_CreateNumber(hp->head_dim));
    if (ok && a->swa == MOEC_SWA_LAYER_TYPES) { /* transformers 5 writes the resolved list */
        cJSON *lt = cJSON_CreateArray();
        for (int i = 0; ok && lt && i < hp->n_layer; i++)
            ok = cJSON_AddItemToArray(lt, cJSON_CreateString(hp->layer_swa[i] ? "sliding_attention" : "full_attention"));
        if (ok) ok = put(root, "layer_types", lt);
        else cJSON_Delete(lt);
    }
    if (ok && !get(root, "eos_token_id") && eot_id >= 0) ok = put(root, "eos_token_id", cJSON_CreateNumber(eot_id));
    if (ok) out->config = print_sorted(root);
    cJSON_Delete(root);
    if (!ok || !out->config) return moec_err(err, MOEC_ERR_OOM, "out of memory writing config.json");
    moec_hparams back;
    moec_status st = moec_hparams_parse(&back, out->config, strlen(out->config), path, err);
    if (st) return st;
    /* the same model (every hyper-parameter, routing and expert kinds included); the special ids
     * may differ by design: bos/pad the config does not name are null, eos may come from eot_id */
    if (!moec_hparams_same(hp, &back))
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: moec cannot write this config back as transformers would (the completed config.json reads as another model)", path);
    return MOEC_OK;
}

/* ------------------------------------------------------------------ tokenizer and generation */

static cJSON *str_or_null(const char *s) { return s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

/* The (first, for a list) id of a special-token key of the completed config; -1 when it is none
 * or no token of the vocabulary (a huge number cast to int32 was undefined behaviour). */
static int32_t first_id(const cJSON *j, int32_t n_vocab) {
    if (cJSON_IsArray(j)) j = j->child;
    return cJSON_IsNumber(j) && j->valuedouble >= 0 && j->valuedouble < n_vocab ? (int32_t)j->valuedouble : -1;
}

static moec_status make_tok_gen(moec_hf_files *out, const moec_hparams *hp, const char *tokenizer_path,
                                const char *template_source, moec_error *err) {
    cJSON *cfg = cJSON_Parse(out->config);
    if (!cfg) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    const int32_t bos = first_id(get(cfg, "bos_token_id"), hp->n_vocab);
    const int32_t eos = first_id(get(cfg, "eos_token_id"), hp->n_vocab);
    int32_t pad = first_id(get(cfg, "pad_token_id"), hp->n_vocab);
    if (pad < 0) pad = eos; /* generate() pads with eos when there is no pad token */
    moec_status st = MOEC_OK;
    cJSON *gen = cJSON_CreateObject(), *tc = NULL, *tok = NULL;
    int ok = gen && put(gen, "_from_model_config", cJSON_CreateTrue());
    if (ok && bos >= 0) ok = put(gen, "bos_token_id", cJSON_CreateNumber(bos));
    if (ok && get(cfg, "eos_token_id")) ok = put(gen, "eos_token_id", cJSON_Duplicate(get(cfg, "eos_token_id"), 1));
    if (ok && pad >= 0) ok = put(gen, "pad_token_id", cJSON_CreateNumber(pad));
    ok = ok && put(gen, "transformers_version", cJSON_CreateString(MOEC_HF_TRANSFORMERS_VERSION));
    if (ok) out->generation_config = print_sorted(gen);
    ok = ok && out->generation_config;
    if (ok && tokenizer_path) {
        char *text = NULL;
        size_t len = 0;
        if ((st = moec_file_read_all(tokenizer_path, &text, &len, err))) goto done;
        tok = cJSON_ParseWithLength(text, len);
        free(text);
        if (!tok) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: not valid JSON", tokenizer_path);
            goto done;
        }
        if ((st = moec_json_check(tok, tokenizer_path, err))) goto done;
        const char *eos_s = token_content(tok, eos), *bos_s = token_content(tok, bos), *pad_s = token_content(tok, pad);
        /* a chat template travels from the tokenizer_config.json of the tokenizer's source */
        cJSON *src = NULL;
        if (template_source && access(template_source, R_OK) == 0) {
            char *t = NULL;
            size_t n = 0;
            if (!moec_file_read_all(template_source, &t, &n, NULL)) src = cJSON_ParseWithLength(t, n);
            free(t);
            if (src && moec_json_check(src, template_source, NULL)) { /* ambiguous: no template, as for bad JSON */
                cJSON_Delete(src);
                src = NULL;
            }
        }
        const cJSON *chat = get(src, "chat_template");
        tc = cJSON_CreateObject();
        ok = tc && put(tc, "tokenizer_class", cJSON_CreateString("PreTrainedTokenizerFast")) &&
             put(tc, "bos_token", str_or_null(bos_s)) && put(tc, "eos_token", str_or_null(eos_s)) &&
             put(tc, "pad_token", str_or_null(pad_s)) && put(tc, "unk_token", cJSON_CreateNull()) &&
             put(tc, "clean_up_tokenization_spaces", cJSON_CreateFalse()) &&
             put(tc, "model_max_length", cJSON_CreateNumber(hp->max_pos)) &&
             put(tc, "add_bos_token", cJSON_CreateFalse()) && put(tc, "add_eos_token", cJSON_CreateFalse());
        if (ok && cJSON_IsString(chat)) ok = put(tc, "chat_template", cJSON_CreateString(chat->valuestring));
        cJSON_Delete(src);
        if (ok) out->tokenizer_config = print_sorted(tc);
        ok = ok && out->tokenizer_config;
    }
    if (!ok) st = moec_err(err, MOEC_ERR_OOM, "out of memory writing tokenizer and generation configs");
done:
    cJSON_Delete(tok);
    cJSON_Delete(tc);
    cJSON_Delete(gen);
    cJSON_Delete(cfg);
    return st;
}

moec_status moec_hf_files_make(moec_hf_files *out, const char *config_text, size_t config_len, const char *config_path,
                               const char *tokenizer_path, int32_t eot_id, const char *template_source,
                               moec_error *err) {
    memset(out, 0, sizeof *out);
    moec_hparams hp;
    moec_status st = moec_hparams_parse(&hp, config_text, config_len, config_path, err);
    if (!st) st = make_config(out, &hp, config_text, config_len, config_path, eot_id, err);
    if (!st) st = make_tok_gen(out, &hp, tokenizer_path, template_source, err);
    return st;
}

void moec_hf_files_free(moec_hf_files *f) {
    if (!f) return;
    cJSON_free(f->config);
    cJSON_free(f->tokenizer_config);
    cJSON_free(f->generation_config);
    memset(f, 0, sizeof *f);
}
