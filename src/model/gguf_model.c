/* gguf_model.c — see gguf_model.h: the architecture/tensor-name table and the GGUF loader. */
#include "model/gguf_model.h"

#include "core/error.h"
#include "io/ggml_types.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the mapping */

static const moec_gguf_arch archs[] = {
    {.model_type = "mixtral", .gguf_arch = "llama", .permute_qk = 1, .norm_topk = 1, .output_required = 0},
    {.model_type = "qwen2_moe", .gguf_arch = "qwen2moe", .permute_qk = 0, .norm_topk = 0, .output_required = 1},
    {.model_type = "qwen3_moe", .gguf_arch = "qwen3moe", .permute_qk = 0, .norm_topk = 1, .output_required = 0},
    {.model_type = "olmoe", .gguf_arch = "olmoe", .permute_qk = 0, .norm_topk = 0, .output_required = 1},
};

const moec_gguf_arch *moec_gguf_arch_by_type(const char *model_type) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].model_type, model_type)) return &archs[i];
    return NULL;
}

const moec_gguf_arch *moec_gguf_arch_by_gguf(const char *gguf_arch, size_t len) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strlen(archs[i].gguf_arch) == len && !memcmp(archs[i].gguf_arch, gguf_arch, len)) return &archs[i];
    return NULL;
}

int moec_gguf_tensor_name(const moec_tensor_spec *sp, char *buf, size_t cap) {
    static const char *const base[MOEC_T_ROLE_COUNT] = {
        [MOEC_T_EMBED] = "token_embd.weight",       [MOEC_T_OUT_NORM] = "output_norm.weight",
        [MOEC_T_LM_HEAD] = "output.weight",         [MOEC_T_ATTN_NORM] = "attn_norm.weight",
        [MOEC_T_FFN_NORM] = "ffn_norm.weight",      [MOEC_T_WQ] = "attn_q.weight",
        [MOEC_T_WK] = "attn_k.weight",              [MOEC_T_WV] = "attn_v.weight",
        [MOEC_T_WO] = "attn_output.weight",         [MOEC_T_BQ] = "attn_q.bias",
        [MOEC_T_BK] = "attn_k.bias",                [MOEC_T_BV] = "attn_v.bias",
        [MOEC_T_BO] = "attn_output.bias",           [MOEC_T_Q_NORM] = "attn_q_norm.weight",
        [MOEC_T_K_NORM] = "attn_k_norm.weight",     [MOEC_T_MLP_GATE] = "ffn_gate.weight",
        [MOEC_T_MLP_UP] = "ffn_up.weight",          [MOEC_T_MLP_DOWN] = "ffn_down.weight",
        [MOEC_T_ROUTER] = "ffn_gate_inp.weight",    [MOEC_T_EXP_GATE] = "ffn_gate_exps.weight",
        [MOEC_T_EXP_UP] = "ffn_up_exps.weight",     [MOEC_T_EXP_DOWN] = "ffn_down_exps.weight",
        [MOEC_T_SH_GATE] = "ffn_gate_shexp.weight", [MOEC_T_SH_UP] = "ffn_up_shexp.weight",
        [MOEC_T_SH_DOWN] = "ffn_down_shexp.weight", [MOEC_T_SH_GATE_W] = "ffn_gate_inp_shexp.weight",
    };
    if (sp->role >= MOEC_T_ROLE_COUNT || !base[sp->role]) return 0; /* a role GGUF has no name for */
    int n = sp->layer >= 0 ? snprintf(buf, cap, "blk.%d.%s", sp->layer, base[sp->role])
                           : snprintf(buf, cap, "%s", base[sp->role]);
    return n > 0 && (size_t)n < cap;
}

void moec_gguf_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_head, int inverse) {
    const int64_t hd = n_rows / n_head, half = hd / 2;
    unsigned char *d = dst;
    const unsigned char *s = src;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                const int64_t hf = h * hd + j * half + i, ll = h * hd + 2 * i + j; /* HF row, llama.cpp row */
                const int64_t to = inverse ? hf : ll, from = inverse ? ll : hf;
                memcpy(d + (size_t)to * row_bytes, s + (size_t)from * row_bytes, row_bytes);
            }
}

/* ------------------------------------------------------------------ loading */

struct moec_gguf_model {
    moec_gguf g;
    void **bufs; /* converted tensors */
    size_t n_bufs;
    int64_t bytes;
    int add_bos;
};

void moec_gguf_model_free(moec_gguf_model *gm) {
    if (!gm) return;
    for (size_t i = 0; i < gm->n_bufs; i++) free(gm->bufs[i]);
    free(gm->bufs);
    moec_gguf_close(&gm->g);
    free(gm);
}

int64_t moec_gguf_model_bytes(const moec_gguf_model *gm) { return gm->bytes; }
int moec_gguf_model_add_bos(const moec_gguf_model *gm) { return gm->add_bos; }

static void *own(moec_gguf_model *gm, size_t n) {
    void **b = realloc(gm->bufs, (gm->n_bufs + 1) * sizeof *b);
    if (!b) return NULL;
    gm->bufs = b;
    void *p = malloc(n ? n : 1);
    if (p) gm->bufs[gm->n_bufs++] = p;
    return p;
}

typedef struct {
    moec_gguf *g;
    char key[160];
    moec_error *err;
    const char *arch;
} kctx;

static const char *K(kctx *k, const char *suffix) {
    snprintf(k->key, sizeof k->key, "%s.%s", k->arch, suffix);
    return k->key;
}

static moec_status get_i32(kctx *k, const char *suffix, int has_def, int64_t def, int64_t lo, int64_t hi, int32_t *out) {
    int64_t v;
    moec_status st = moec_gguf_get_int(k->g, K(k, suffix), has_def, def, lo, hi, &v, k->err);
    if (!st) *out = (int32_t)v;
    return st;
}

static const moec_gguf_tensor *layer_tensor(const moec_gguf *g, int il, const char *what) {
    char name[128];
    snprintf(name, sizeof name, "blk.%d.%s", il, what);
    return moec_gguf_find_tensor(g, name);
}

/* Refuses what llama.cpp's metadata can ask for and moec does not implement. */
static moec_status check_unsupported(kctx *k) {
    moec_gguf_str s;
    moec_status st = moec_gguf_get_str(k->g, K(k, "rope.scaling.type"), 1, &s, k->err);
    if (st) return st;
    if (s.s && !(s.len == 4 && !memcmp(s.s, "none", 4)))
        return moec_err(k->err, MOEC_ERR_UNSUPPORTED, "%s: %s = '%.*s' (scaled RoPE) is not supported by moec",
                        k->g->path, k->key, (int)s.len, s.s);
    double f;
    if ((st = moec_gguf_get_float(k->g, K(k, "rope.scaling.factor"), 1, 1.0, -1e30, 1e30, &f, k->err))) return st;
    if (f != 1.0 && f != 0.0)
        return moec_err(k->err, MOEC_ERR_UNSUPPORTED, "%s: %s = %g (scaled RoPE) is not supported by moec", k->g->path,
                        k->key, f);
    if (moec_gguf_find_kv(k->g, K(k, "attention.sliding_window")))
        return moec_err(k->err, MOEC_ERR_UNSUPPORTED, "%s: %s (sliding-window attention) is not supported by moec",
                        k->g->path, k->key);
    return MOEC_OK;
}

/* GGUF metadata → the config.json Hugging Face would have written, parsed by the one config
 * reader (moec_hparams_parse), so a GGUF model gets exactly the hparams, defaults and checks of
 * its checkpoint. Widths, tied embeddings, biases and dense layers come from the tensors. */
static moec_status fill_hparams(moec_gguf_model *gm, const moec_gguf_arch *ga, moec_hparams *hp, moec_error *err) {
    moec_gguf *g = &gm->g;
    kctx k = {g, {0}, err, ga->gguf_arch};
    moec_status st;
    const long width = 1L << 22;
    const moec_arch *arch = moec_arch_find(ga->model_type);
    MOEC_ASSERT(arch);
    int32_t n_embd, n_layer, n_head, n_head_kv, head_dim, vlen, rot, max_pos, n_expert, n_used;
    if ((st = get_i32(&k, "embedding_length", 0, 0, 1, 1 << 20, &n_embd))) return st;
    if ((st = get_i32(&k, "block_count", 0, 0, 1, MOEC_MAX_LAYERS, &n_layer))) return st;
    if ((st = get_i32(&k, "attention.head_count", 0, 0, 1, 1 << 16, &n_head))) return st;
    if ((st = get_i32(&k, "attention.head_count_kv", 1, n_head, 1, n_head, &n_head_kv))) return st;
    if ((st = get_i32(&k, "attention.key_length", 1, n_embd / n_head, 2, 1 << 16, &head_dim))) return st;
    if ((st = get_i32(&k, "attention.value_length", 1, head_dim, 1, 1 << 16, &vlen))) return st;
    if (vlen != head_dim)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: attention.value_length %d != key_length %d is not supported",
                        g->path, vlen, head_dim);
    if ((st = get_i32(&k, "rope.dimension_count", 1, head_dim, 1, 1 << 16, &rot))) return st;
    if (rot != head_dim)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: %s = %d < head dim %d (partial rotary) is not supported", g->path,
                        k.key, rot, head_dim);
    if (!arch->reads_head_dim && head_dim * n_head != n_embd)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: %s.attention.key_length %d != embedding_length / head_count for %s",
                        g->path, ga->gguf_arch, head_dim, ga->gguf_arch);
    if ((st = get_i32(&k, "context_length", 1, 4096, 1, 1L << 30, &max_pos))) return st;
    if ((st = get_i32(&k, "expert_count", 1, 0, 0, 1 << 16, &n_expert))) return st;
    if (n_expert == 0)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: %s has no experts (%s.expert_count missing or 0): moec runs MoE models",
                        g->path, ga->gguf_arch, ga->gguf_arch);
    if ((st = get_i32(&k, "expert_used_count", 0, 0, 1, n_expert, &n_used))) return st;
    double theta, eps, clamp;
    if ((st = moec_gguf_get_float(g, K(&k, "rope.freq_base"), 1, 10000.0, 1e-30, 1e12, &theta, err))) return st;
    if ((st = moec_gguf_get_float(g, K(&k, "attention.layer_norm_rms_epsilon"), 0, 0, 1e-30, 1.0, &eps, err))) return st;
    if ((st = moec_gguf_get_float(g, K(&k, "attention.clamp_kqv"), 1, 0.0, 0.0, 1e30, &clamp, err))) return st;
    if (clamp > 0 && !arch->has_clip_qkv)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: %s for %s is not supported by moec", g->path, k.key, ga->gguf_arch);
    if ((st = check_unsupported(&k))) return st;

    const moec_gguf_tensor *emb = moec_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", g->path);
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: token_embd.weight has %" PRId64 " rows (vocabulary)", g->path, emb->ne[1]);
    const int64_t n_vocab = emb->ne[1];
    const int qkv_bias = layer_tensor(g, 0, "attn_q.bias") != NULL;
    /* which layers are MoE, and the FFN widths, from the tensors themselves */
    int64_t ff_exp = 0, ff_dense = 0, ff_shared = 0;
    cJSON *root = cJSON_CreateObject(), *dense = cJSON_CreateArray(), *eos = cJSON_CreateArray();
    if (!root || !dense || !eos) {
        cJSON_Delete(root);
        cJSON_Delete(dense);
        cJSON_Delete(eos);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    /* every add is checked: a config built with a field missing would parse with its default */
    const int own_dense = cJSON_AddItemToObject(root, "mlp_only_layers", dense);
    const int own_eos = cJSON_AddItemToObject(root, "eos_token_id", eos);
    if (!own_dense || !own_eos) {
        if (!own_dense) cJSON_Delete(dense);
        if (!own_eos) cJSON_Delete(eos);
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    int ok = 1;
    for (int il = 0; il < n_layer && !st; il++) {
        const moec_gguf_tensor *r = layer_tensor(g, il, "ffn_gate_inp.weight");
        if (!r && !arch->has_dense_layers) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor 'blk.%d.ffn_gate_inp.weight' (%s layers are all MoE)",
                          g->path, il, ga->gguf_arch);
            break;
        }
        const char *gate = r ? "ffn_gate_exps.weight" : "ffn_gate.weight";
        const moec_gguf_tensor *t = layer_tensor(g, il, gate);
        if (!t) st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor 'blk.%d.%s'", g->path, il, gate);
        else if (t->ne[1] > width) st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' is implausibly wide", g->path, t->name);
        if (st) break;
        int64_t *ff = r ? &ff_exp : &ff_dense;
        if (!*ff) *ff = t->ne[1];
        if (!r) ok &= cJSON_AddItemToArray(dense, cJSON_CreateNumber(il)) != 0;
        const moec_gguf_tensor *sh = r && arch->key_ff_shared ? layer_tensor(g, il, "ffn_gate_shexp.weight") : NULL;
        if (sh && !ff_shared && sh->ne[1] <= width) ff_shared = sh->ne[1];
    }
    if (!st && !ff_exp) st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: no layer has experts", g->path);
    /* special tokens: bos, and as end-of-generation ids eos then eot / eom */
    int64_t bos = -1, id;
    if (!st) st = moec_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 1, -1, -1, INT32_MAX, &bos, err);
    static const char *const eog[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                      "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < sizeof eog / sizeof eog[0] && !st; i++) {
        if ((st = moec_gguf_get_int(g, eog[i], 1, -1, -1, INT32_MAX, &id, err))) break;
        if (id >= 0 && id < n_vocab) ok &= cJSON_AddItemToArray(eos, cJSON_CreateNumber((double)id)) != 0;
    }
    if (st) {
        cJSON_Delete(root);
        return st;
    }
    ok &= cJSON_AddStringToObject(root, "model_type", ga->model_type) != NULL;
    ok &= cJSON_AddNumberToObject(root, "vocab_size", (double)n_vocab) != NULL;
    ok &= cJSON_AddNumberToObject(root, "hidden_size", n_embd) != NULL;
    ok &= cJSON_AddNumberToObject(root, "num_hidden_layers", n_layer) != NULL;
    ok &= cJSON_AddNumberToObject(root, "num_attention_heads", n_head) != NULL;
    ok &= cJSON_AddNumberToObject(root, "num_key_value_heads", n_head_kv) != NULL;
    if (arch->reads_head_dim) ok &= cJSON_AddNumberToObject(root, "head_dim", head_dim) != NULL;
    ok &= cJSON_AddNumberToObject(root, "max_position_embeddings", max_pos) != NULL;
    ok &= cJSON_AddNumberToObject(root, arch->key_n_expert, n_expert) != NULL;
    ok &= cJSON_AddNumberToObject(root, "num_experts_per_tok", n_used) != NULL;
    ok &= cJSON_AddNumberToObject(root, arch->key_ff_expert, (double)ff_exp) != NULL;
    if (ff_dense) ok &= cJSON_AddNumberToObject(root, "intermediate_size", (double)ff_dense) != NULL;
    if (arch->key_ff_shared) ok &= cJSON_AddNumberToObject(root, arch->key_ff_shared, (double)ff_shared) != NULL;
    ok &= cJSON_AddNumberToObject(root, "decoder_sparse_step", 1) != NULL;
    ok &= cJSON_AddNumberToObject(root, "rope_theta", theta) != NULL;
    ok &= cJSON_AddNumberToObject(root, "rms_norm_eps", eps) != NULL;
    ok &= cJSON_AddBoolToObject(root, "tie_word_embeddings", moec_gguf_find_tensor(g, "output.weight") == NULL) != NULL;
    ok &= cJSON_AddStringToObject(root, "hidden_act", "silu") != NULL;
    if (arch->topk_norm == MOEC_TOPK_NORM_CONFIG) ok &= cJSON_AddBoolToObject(root, "norm_topk_prob", ga->norm_topk) != NULL;
    if (arch->attn_bias == MOEC_ATTN_BIAS_CONFIG_ALL) ok &= cJSON_AddBoolToObject(root, "attention_bias", qkv_bias) != NULL;
    if (arch->attn_bias == MOEC_ATTN_BIAS_QKV) ok &= cJSON_AddBoolToObject(root, "qkv_bias", qkv_bias) != NULL;
    if (clamp > 0) ok &= cJSON_AddNumberToObject(root, "clip_qkv", clamp) != NULL;
    if (bos >= 0 && bos < n_vocab) ok &= cJSON_AddNumberToObject(root, "bos_token_id", (double)bos) != NULL;
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    char where[4200];
    snprintf(where, sizeof where, "%s (metadata as config.json)", g->path);
    st = moec_hparams_parse(hp, json, strlen(json), where, err);
    free(json);
    if (!st && hp->head_dim != head_dim)
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: head dim %d from the metadata is not what %s implies (%d)", g->path,
                      head_dim, ga->model_type, hp->head_dim);
    return st;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const moec_st_tensor *)a)->name, ((const moec_st_tensor *)b)->name);
}

/* One spec → one moec_st_tensor viewing its GGUF tensor (or a row-permuted copy of it). */
static moec_status bind_spec(moec_gguf_model *gm, const moec_gguf_arch *ga, const moec_hparams *hp,
                             const moec_tensor_spec *sp, moec_st_tensor *out, uint8_t *used, moec_error *err) {
    const moec_gguf *g = &gm->g;
    char name[160];
    if (!moec_gguf_tensor_name(sp, name, sizeof name))
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: tensor '%s' (role %d) has no GGUF name in moec's mapping", g->path,
                        sp->name, (int)sp->role);
    const moec_gguf_tensor *t = moec_gguf_find_tensor(g, name);
    if (!t) return moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor '%s'", g->path, name);
    const int is_exp = sp->expert >= 0;
    int64_t want[MOEC_GGUF_MAX_DIMS] = {1, 1, 1, 1};
    want[0] = sp->n_dims == 2 ? sp->shape[1] : sp->shape[0];
    if (sp->n_dims == 2) want[1] = sp->shape[0];
    if (is_exp) want[2] = hp->n_expert;
    if (sp->role == MOEC_T_SH_GATE_W) want[1] = 1; /* [d] in llama.cpp, [1, d] in HF */
    for (int d = 0; d < MOEC_GGUF_MAX_DIMS; d++)
        if (t->ne[d] != want[d])
            return moec_err(err, MOEC_ERR_FORMAT,
                            "%s: tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "] but the metadata implies [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "] (ne, fastest first)",
                            g->path, name, t->ne[0], t->ne[1], t->ne[2], t->ne[3], want[0], want[1], want[2], want[3]);
    moec_ggml_layout tr;
    moec_ggml_type_layout(t->type, &tr); /* the reader refused unknown numbers */
    if (!tr.has_dtype)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: tensor '%s' is %s; moec reads F32, F16, BF16, Q8_0 and Q4_0 GGUF tensors",
                        g->path, name, tr.name);
    /* the reader checked ne[0] is whole blocks; vectors (norms, biases) are copied to fp32 by the
     * model, so only their element count must be whole blocks, which it is */
    used[t - g->tensors] = 1;
    const int64_t rows = sp->n_dims == 2 ? sp->shape[0] : 1;
    const size_t row_bytes = moec_row_bytes(tr.dtype, want[0]), slice = (size_t)rows * row_bytes;
    const unsigned char *src = (const unsigned char *)t->data + (is_exp ? (size_t)sp->expert * slice : 0);
    memset(out, 0, sizeof *out);
    const int permute = ga->permute_qk && (sp->role == MOEC_T_WQ || sp->role == MOEC_T_WK);
    if (permute) {
        const int nh = sp->role == MOEC_T_WQ ? hp->n_head : hp->n_head_kv;
        unsigned char *p = own(gm, slice);
        if (!p) return moec_err(err, MOEC_ERR_OOM, "out of memory");
        moec_gguf_permute_rows(p, src, rows, row_bytes, nh, 1);
        src = p;
    }
    out->name = strdup(sp->name);
    if (!out->name) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    out->dtype = tr.dtype; /* Q8_0 / Q4_0 too: the kernels read the blocks in place */
    out->n_dims = sp->n_dims;
    out->shape[0] = sp->shape[0];
    out->shape[1] = sp->n_dims == 2 ? sp->shape[1] : 0;
    out->numel = sp->numel;
    out->data = src;
    out->nbytes = moec_row_bytes(out->dtype, sp->numel);
    return MOEC_OK;
}

moec_status moec_gguf_model_load(moec_gguf_model **out, moec_hparams *hp, moec_st_set *st_set, const char *path,
                                 moec_error *err) {
    *out = NULL;
    memset(st_set, 0, sizeof *st_set);
    moec_gguf_model *gm = calloc(1, sizeof *gm);
    if (!gm) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    moec_status st = moec_gguf_open(&gm->g, path, err);
    moec_tensor_spec *specs = NULL;
    uint8_t *used = NULL;
    if (st) goto fail;
    const moec_gguf *g = &gm->g;
    moec_gguf_str a;
    if ((st = moec_gguf_get_str(g, "general.architecture", 0, &a, err))) goto fail;
    const moec_gguf_arch *ga = moec_gguf_arch_by_gguf(a.s, a.len);
    if (!ga) {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED,
                      "%s: GGUF architecture '%.*s' is not supported (moec reads llama with experts, qwen2moe, qwen3moe, olmoe)",
                      path, (int)(a.len > 64 ? 64 : a.len), a.s);
        goto fail;
    }
    if ((st = fill_hparams(gm, ga, hp, err))) goto fail;
    if ((st = moec_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 1, 0, &gm->add_bos, err))) goto fail;
    const int64_t n = moec_model_tensor_specs(hp, NULL);
    specs = malloc((size_t)n * sizeof *specs);
    used = calloc((size_t)g->n_tensors + 1, 1);
    st_set->tensors = calloc((size_t)n + 1, sizeof *st_set->tensors);
    if (!specs || !used || !st_set->tensors) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto fail;
    }
    moec_model_tensor_specs(hp, specs);
    for (int64_t i = 0; i < n; i++) {
        if ((st = bind_spec(gm, ga, hp, &specs[i], &st_set->tensors[i], used, err))) goto fail;
        st_set->n_tensors++;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!used[i]) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: unexpected tensor '%s' (not used by %s with this metadata)", path,
                          g->tensors[i].name, ga->gguf_arch);
            goto fail;
        }
    qsort(st_set->tensors, (size_t)st_set->n_tensors, sizeof *st_set->tensors, tensor_name_cmp);
    for (uint64_t i = 0; i < g->n_tensors; i++) gm->bytes += (int64_t)g->tensors[i].nbytes; /* for info */
    st_set->data_bytes = (size_t)gm->bytes;
    free(specs);
    free(used);
    *out = gm;
    return MOEC_OK;
fail:
    free(specs);
    free(used);
    moec_st_close(st_set);
    moec_gguf_model_free(gm);
    return st;
}
