/* gguf_export.c — `moec export gguf`: a Hugging Face checkpoint → a GGUF file llama.cpp runs.
 * Metadata keys, tensor names, q/k permutation and type choices follow llama.cpp's
 * convert_hf_to_gguf.py (see docs/formats.md); models llama.cpp's architectures cannot express
 * are refused with the reason. The vocabulary comes from tokenizer.json (byte-level BPE, written
 * as tokenizer.ggml.model "gpt2"). Not a general converter: no SentencePiece export yet. */
#include "core/error.h"
#include "io/ggml_types.h"
#include "io/gguf.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "moec.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moec_gguf_export_params moec_gguf_export_default_params(void) {
    moec_gguf_export_params p = {MOEC_EXPORT_BF16, NULL, 0};
    return p;
}

/* ------------------------------------------------------------------ what llama.cpp can express */

static moec_status check_compatible(const moec_hparams *hp, const moec_gguf_arch *ga, moec_error *err) {
    const char *mt = hp->arch->model_type;
    const moec_router_cfg *rc = &hp->route; /* expert kinds and depth routers (docs/routers.md) */
    if (hp->n_expert > 0 && (rc->n_const || rc->n_copy || rc->n_null || rc->gate_residual || rc->rnn_dim ||
                             rc->coe_iters || rc->rex_reuse > 1))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s with zero-computation experts, a routing carry, Chain-of-Experts or ReXMoE: llama.cpp has "
                        "none of them", mt);
    if (hp->n_expert > 0 && (rc->router_scale || rc->hash_balanced))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s with a router_scale (moec_router_scale) or a stored hash table (moec_hash_table): llama.cpp has "
                        "no such tensor", mt);
    for (int i = 0; i < hp->n_layer; i++)
        if (!hp->layer_moe[i])
            return moec_err(err, MOEC_ERR_UNSUPPORTED,
                            "%s layer %d is a dense MLP (mlp_only_layers / decoder_sparse_step): llama.cpp's %s has MoE layers only",
                            mt, i, ga->gguf_arch);
    if (hp->norm_topk_prob != ga->norm_topk)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s with norm_topk_prob=%s: llama.cpp's %s always uses %s", mt,
                        hp->norm_topk_prob ? "true" : "false", ga->gguf_arch,
                        ga->norm_topk ? "renormalised top-k weights" : "un-normalised top-k weights");
    const int full_q = (int64_t)hp->n_head * hp->head_dim == hp->n_embd;
    if (!strcmp(mt, "qwen2_moe")) {
        if (hp->n_ff_shared <= 0)
            return moec_err(err, MOEC_ERR_UNSUPPORTED, "qwen2_moe without a shared expert: llama.cpp's qwen2moe requires one");
        if (!full_q)
            return moec_err(err, MOEC_ERR_UNSUPPORTED, "qwen2_moe with heads x head_dim != hidden_size: not in llama.cpp's qwen2moe");
    }
    if (!strcmp(mt, "olmoe")) {
        if (hp->n_head_kv != hp->n_head)
            return moec_err(err, MOEC_ERR_UNSUPPORTED,
                            "olmoe with num_key_value_heads (%d) != num_attention_heads (%d): llama.cpp's olmoe k_norm is [hidden]",
                            hp->n_head_kv, hp->n_head);
        if (hp->clip_qkv > 0)
            return moec_err(err, MOEC_ERR_UNSUPPORTED, "olmoe with clip_qkv: llama.cpp's olmoe does not clip");
        if (!full_q) return moec_err(err, MOEC_ERR_UNSUPPORTED, "olmoe with heads x head_dim != hidden_size");
    }
    if ((!strcmp(mt, "qwen3_moe") || !strcmp(mt, "olmoe")) && (hp->qkv_bias || hp->o_bias))
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s with attention_bias=true: llama.cpp's %s has no attention biases", mt,
                        ga->gguf_arch);
    return MOEC_OK;
}

/* ------------------------------------------------------------------ tokenizer.json → tokenizer.ggml.* */

/* Pre-tokenizer regexes of tokenizer.json files and llama.cpp's names for them. */
static const struct {
    const char *name, *regex;
} pre_regexes[] = {
    {"qwen2", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static int jtype_is(const cJSON *o, const char *t) {
    const cJSON *j = jget(o, "type");
    return cJSON_IsString(j) && !strcmp(j->valuestring, t);
}

/* llama.cpp name of a byte-level pre-tokenizer, or NULL if not recognised. */
static const char *detect_pre(const cJSON *pre) {
    if (jtype_is(pre, "ByteLevel")) {
        const cJSON *r = jget(pre, "use_regex");
        return !r || cJSON_IsTrue(r) ? "gpt-2" : NULL;
    }
    if (!jtype_is(pre, "Sequence")) return NULL;
    const cJSON *seq = jget(pre, "pretokenizers");
    if (cJSON_GetArraySize(seq) != 2) return NULL;
    const cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    const cJSON *pat = jget(jget(split, "pattern"), "Regex");
    if (!jtype_is(split, "Split") || !cJSON_IsString(pat) || !jtype_is(bl, "ByteLevel") ||
        cJSON_IsTrue(jget(bl, "use_regex")))
        return NULL;
    for (size_t i = 0; i < sizeof pre_regexes / sizeof pre_regexes[0]; i++)
        if (!strcmp(pat->valuestring, pre_regexes[i].regex)) return pre_regexes[i].name;
    return NULL;
}


void moec_gguf_vocab_free(moec_gguf_vocab *v) {
    for (int32_t i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    for (size_t i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
    free(v->tok);
    free(v->len);
    free(v->type);
    free(v->merges);
    free(v->mlen);
}

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

/* id as JSON gave it: range-checked as a double before it becomes an integer (1e300 or 2.5 must
 * be refused, not cast) */
static moec_status set_tok(moec_gguf_vocab *v, double id_d, const char *s, int32_t type, const char *path,
                           moec_error *err) {
    if (!(id_d >= 0 && id_d < (double)v->n) || id_d != (double)(int64_t)id_d)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: token id %g is not an integer below the model's %d embedding rows",
                        path, id_d, v->n);
    const int64_t id = (int64_t)id_d;
    char *d = strdup(s);
    if (!d) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    free(v->tok[id]);
    v->tok[id] = d;
    v->len[id] = strlen(s);
    v->type[id] = type;
    return MOEC_OK;
}

moec_status moec_gguf_vocab_read(const char *path, int32_t n_vocab, const char *pre_override, moec_gguf_vocab *v,
                                 const char **pre_out, moec_error *err) {
    char *text = NULL;
    size_t n = 0;
    moec_status st = moec_file_read_all(path, &text, &n, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *model = jget(root, "model");
    const cJSON *jv = jget(model, "vocab"), *jm = jget(model, "merges");
    if (!cJSON_IsObject(model) || !cJSON_IsObject(jv) || !cJSON_IsArray(jm)) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not a tokenizer.json with model.vocab and model.merges", path);
    }
    if ((st = moec_json_check(root, path, err))) {
        cJSON_Delete(root);
        return st;
    }
    if (!jtype_is(model, "BPE") && jget(model, "type")) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: only BPE tokenizers are exported to GGUF", path);
    }
    if (cJSON_IsTrue(jget(model, "byte_fallback"))) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: SentencePiece-style (byte_fallback) tokenizers are not exported to GGUF yet (use --no-tokenizer)", path);
    }
    const char *pre = pre_override ? pre_override : detect_pre(jget(root, "pre_tokenizer"));
    if (!pre) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: pre_tokenizer is not one moec can name for llama.cpp (byte-level GPT-2, Qwen2, Llama-3): pass --tokenizer-pre NAME",
                        path);
    }
    *pre_out = pre;
    v->n = n_vocab;
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->len = calloc((size_t)n_vocab, sizeof *v->len);
    v->type = calloc((size_t)n_vocab, sizeof *v->type);
    const size_t nm = (size_t)cJSON_GetArraySize(jm);
    v->merges = calloc(nm + 1, sizeof *v->merges);
    v->mlen = calloc(nm + 1, sizeof *v->mlen);
    if (!v->tok || !v->len || !v->type || !v->merges || !v->mlen) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (const cJSON *it = jv->child; it && !st; it = it->next) {
        if (!cJSON_IsNumber(it)) st = moec_err(err, MOEC_ERR_FORMAT, "%s: vocab entry '%s' is not an id", path, it->string);
        else st = set_tok(v, it->valuedouble, it->string, TT_NORMAL, path, err);
    }
    const cJSON *added = jget(root, "added_tokens");
    for (const cJSON *it = cJSON_IsArray(added) ? added->child : NULL; it && !st; it = it->next) {
        const cJSON *id = jget(it, "id"), *c = jget(it, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: added_tokens entry without id and content", path);
            break;
        }
        st = set_tok(v, id->valuedouble, c->valuestring,
                     cJSON_IsTrue(jget(it, "special")) ? TT_CONTROL : TT_USER_DEFINED, path, err);
    }
    for (int32_t i = 0; i < v->n && !st; i++)
        if (!v->tok[i]) { /* ids the tokenizer does not use (padded embeddings): as the converter */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            st = set_tok(v, i, pad, TT_UNUSED, path, err);
        }
    for (const cJSON *it = jm->child; it && !st; it = it->next) {
        char *m = NULL;
        if (cJSON_IsString(it)) m = strdup(it->valuestring);
        else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                 cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            const char *a = cJSON_GetArrayItem(it, 0)->valuestring, *b = cJSON_GetArrayItem(it, 1)->valuestring;
            m = malloc(strlen(a) + strlen(b) + 2);
            if (m) sprintf(m, "%s %s", a, b);
        } else {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: merges entry %zu is neither \"a b\" nor [a, b]", path, v->n_merges);
            break;
        }
        if (!m) st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        else {
            v->merges[v->n_merges] = m;
            v->mlen[v->n_merges++] = strlen(m);
        }
    }
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------------ tensors */

typedef struct {
    uint32_t type;
    int n_src;
    const moec_st_tensor **src; /* n_src sources: 1, or the layer's experts in order */
    int64_t rows, cols;         /* of one source (cols = 0: a vector) */
    int permute_heads;          /* > 0: apply llama.cpp's q/k row permutation with this many heads */
} xtensor;

typedef struct {
    xtensor *t;
    int n;
    float *tmp, *tmp2; /* one source as fp32, and its permuted copy */
} xctx;

static moec_status fill(void *ctx, int i, void *dst, size_t nbytes, moec_error *err) {
    xctx *x = ctx;
    const xtensor *t = &x->t[i];
    const size_t numel = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
    moec_dtype dt;
    MOEC_ASSERT(moec_dtype_by_ggml(t->type, &dt)); /* export writes only moec's own formats */
    const size_t slice = moec_row_bytes(dt, (int64_t)numel);
    MOEC_ASSERT(slice * (size_t)t->n_src == nbytes);
    (void)err;
    for (int s = 0; s < t->n_src; s++) {
        moec_to_f32(x->tmp, t->src[s]->data, t->src[s]->dtype, numel);
        const float *f = x->tmp;
        if (t->permute_heads > 0) {
            moec_gguf_permute_rows(x->tmp2, x->tmp, t->rows, (size_t)t->cols * sizeof(float), t->permute_heads, 0);
            f = x->tmp2;
        }
        moec_from_f32((unsigned char *)dst + (size_t)s * slice, f, dt, numel);
    }
    return MOEC_OK;
}

static uint32_t matrix_type(moec_export_type t, int64_t cols) {
    switch (t) {
    case MOEC_EXPORT_F32: return MOEC_GGML_F32;
    case MOEC_EXPORT_F16: return MOEC_GGML_F16;
    case MOEC_EXPORT_Q8_0: return cols % MOEC_QBLOCK ? MOEC_GGML_F16 : MOEC_GGML_Q8_0; /* as gguf-py's fallback */
    case MOEC_EXPORT_Q4_0: return cols % MOEC_QBLOCK ? MOEC_GGML_F16 : MOEC_GGML_Q4_0;
    default: return MOEC_GGML_BF16;
    }
}

/* ------------------------------------------------------------------ metadata + driver */

#define TRY(x)                      \
    do {                            \
        if ((st = (x))) goto oom;   \
    } while (0)

static const char *arch_key(char *buf, size_t cap, const char *arch, const char *suffix) {
    snprintf(buf, cap, "%s.%s", arch, suffix);
    return buf;
}

moec_status moec_export_gguf(const char *model_dir, const char *out_path, const moec_gguf_export_params *params,
                             moec_error *err) {
    moec_gguf_export_params p = params ? *params : moec_gguf_export_default_params();
    moec_model *m = NULL;
    moec_gguf_writer *w = NULL;
    moec_gguf_vocab v = {0};
    xctx x = {0};
    const moec_st_tensor **srcs = NULL;
    moec_tensor_spec *specs = NULL;
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = 1;
    moec_status st = moec_model_open(&m, model_dir, &mp, err);
    if (st) return st;
    if (m->gguf) {
        st = moec_err(err, MOEC_ERR_INVALID_ARG, "%s is already a GGUF file (give a Hugging Face checkpoint directory)",
                      model_dir);
        goto done;
    }
    const moec_hparams *hp = &m->hp;
    const moec_gguf_arch *ga = moec_gguf_arch_by_type(hp->arch->model_type);
    if (!ga) {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "model_type %s has no llama.cpp architecture", hp->arch->model_type);
        goto done;
    }
    if ((st = check_compatible(hp, ga, err))) goto done;
    const char *pre = NULL;
    if (!p.no_tokenizer) {
        char tp[4096];
        if (!moec_path_join(tp, sizeof tp, model_dir, "tokenizer.json")) {
            st = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", model_dir);
            goto done;
        }
        FILE *f = fopen(tp, "rb");
        if (!f) {
            st = moec_err(err, MOEC_ERR_IO, "no tokenizer.json in %s (llama.cpp needs the vocabulary; --no-tokenizer writes a GGUF without one)",
                          model_dir);
            goto done;
        }
        fclose(f);
        if ((st = moec_gguf_vocab_read(tp, hp->n_vocab, p.tokenizer_pre, &v, &pre, err))) goto done;
    }
    if ((st = moec_gguf_writer_new(&w, err))) goto done;
    const char *A = ga->gguf_arch;
    char k[160];
    static const uint32_t file_type[] = {[MOEC_EXPORT_F32] = 0, [MOEC_EXPORT_F16] = 1, [MOEC_EXPORT_BF16] = 32,
                                         [MOEC_EXPORT_Q8_0] = 7, [MOEC_EXPORT_Q4_0] = 2}; /* llama_ftype */
    size_t dl = strlen(model_dir); /* general.name: the directory's last component */
    while (dl > 1 && model_dir[dl - 1] == '/') dl--;
    size_t b0 = dl;
    while (b0 > 0 && model_dir[b0 - 1] != '/') b0--;
    TRY(moec_gguf_set_str(w, "general.architecture", A, strlen(A)));
    TRY(moec_gguf_set_str(w, "general.name", model_dir + b0, dl - b0));
    TRY(moec_gguf_set_u32(w, "general.file_type", file_type[p.type]));
    TRY(moec_gguf_set_u32(w, "general.quantization_version", 2));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "vocab_size"), (uint32_t)hp->n_vocab));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "context_length"), (uint32_t)hp->max_pos));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "embedding_length"), (uint32_t)hp->n_embd));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "block_count"), (uint32_t)hp->n_layer));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "feed_forward_length"),
                          (uint32_t)(hp->n_ff_dense ? hp->n_ff_dense : hp->n_ff_expert)));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "attention.head_count"), (uint32_t)hp->n_head));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "attention.head_count_kv"), (uint32_t)hp->n_head_kv));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "attention.key_length"), (uint32_t)hp->head_dim));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "attention.value_length"), (uint32_t)hp->head_dim));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "rope.dimension_count"), (uint32_t)hp->head_dim));
    TRY(moec_gguf_set_f32(w, arch_key(k, sizeof k, A, "rope.freq_base"), hp->rope_theta));
    TRY(moec_gguf_set_f32(w, arch_key(k, sizeof k, A, "attention.layer_norm_rms_epsilon"), hp->rms_eps));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "expert_count"), (uint32_t)hp->n_expert));
    TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "expert_used_count"), (uint32_t)hp->n_expert_used));
    if (strcmp(A, "llama") && strcmp(A, "olmoe"))
        TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "expert_feed_forward_length"), (uint32_t)hp->n_ff_expert));
    if (hp->n_ff_shared > 0)
        TRY(moec_gguf_set_u32(w, arch_key(k, sizeof k, A, "expert_shared_feed_forward_length"),
                              (uint32_t)hp->n_ff_shared));
    if (p.no_tokenizer) {
        TRY(moec_gguf_set_str(w, "tokenizer.ggml.model", "none", 4));
    } else {
        TRY(moec_gguf_set_str(w, "tokenizer.ggml.model", "gpt2", 4));
        TRY(moec_gguf_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre)));
        TRY(moec_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, v.len, (size_t)v.n));
        TRY(moec_gguf_set_arr_num(w, "tokenizer.ggml.token_type", MOEC_GGUF_INT32, v.type, (size_t)v.n));
        TRY(moec_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges, v.mlen, v.n_merges));
        if (hp->bos_id >= 0) TRY(moec_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)hp->bos_id));
        if (hp->n_eos > 0) TRY(moec_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)hp->eos_ids[0]));
        TRY(moec_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 0)); /* as Hugging Face encodes byte-level BPE */
        TRY(moec_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0));
    }

    /* tensors: one per spec, except experts, stacked per layer and role */
    const int64_t n = moec_model_tensor_specs(hp, NULL);
    specs = malloc((size_t)n * sizeof *specs);
    x.t = calloc((size_t)n + 2, sizeof *x.t);
    srcs = calloc((size_t)n + 2, sizeof *srcs);
    if (!specs || !x.t || !srcs) goto oom_alloc;
    moec_model_tensor_specs(hp, specs);
    size_t n_srcs = 0, max_numel = 0;
    for (int64_t i = 0; i < n; i++) {
        const moec_tensor_spec *sp = &specs[i];
        if (sp->expert > 0) continue; /* gathered with expert 0 */
        xtensor *t = &x.t[x.n];
        t->src = &srcs[n_srcs];
        t->rows = sp->shape[0];
        t->cols = sp->n_dims == 2 ? sp->shape[1] : 0;
        const int n_src = sp->expert == 0 ? hp->n_expert : 1;
        int64_t j = i;
        for (int e = 0; e < n_src; e++) {
            /* expert e's spec of the same role and layer: the next one in the list */
            while (sp->expert == 0 && (specs[j].role != sp->role || specs[j].layer != sp->layer || specs[j].expert != e)) {
                j++;
                MOEC_ASSERT(j < n);
            }
            const moec_tensor_spec *se = &specs[j];
            const moec_st_tensor *s = moec_st_find(&m->st, se->name);
            MOEC_ASSERT(s);
            srcs[n_srcs++] = s;
        }
        t->n_src = n_src;
        const int vec = sp->n_dims == 1 || sp->role == MOEC_T_ROUTER || sp->role == MOEC_T_SH_GATE_W;
        t->type = vec ? MOEC_GGML_F32 : matrix_type(p.type, t->cols);
        if (ga->permute_qk && (sp->role == MOEC_T_WQ || sp->role == MOEC_T_WK))
            t->permute_heads = sp->role == MOEC_T_WQ ? hp->n_head : hp->n_head_kv;
        int64_t ne[3] = {t->cols ? t->cols : t->rows, t->cols ? t->rows : 1, n_src};
        int nd = sp->expert == 0 ? 3 : t->cols ? 2 : 1;
        if (sp->role == MOEC_T_SH_GATE_W) { /* [1, d] in HF, [d] in llama.cpp */
            ne[0] = t->cols;
            nd = 1;
        }
        char name[160];
        if (!moec_gguf_tensor_name(sp, name, sizeof name)) {
            st = moec_err(err, MOEC_ERR_UNSUPPORTED, "tensor '%s' has no GGUF equivalent in moec's mapping", sp->name);
            goto done;
        }
        if (moec_gguf_add_tensor(w, name, t->type, nd, ne) < 0) goto oom_alloc;
        const size_t numel = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
        if (numel > max_numel) max_numel = numel;
        x.n++;
    }
    if (hp->tie_embeddings && ga->output_required) { /* llama.cpp's loader needs output.weight */
        xtensor *t = &x.t[x.n];
        t->src = &srcs[n_srcs];
        srcs[n_srcs++] = moec_st_find(&m->st, "model.embed_tokens.weight");
        t->n_src = 1;
        t->rows = hp->n_vocab;
        t->cols = hp->n_embd;
        t->type = matrix_type(p.type, t->cols);
        int64_t ne[2] = {t->cols, t->rows};
        if (moec_gguf_add_tensor(w, "output.weight", t->type, 2, ne) < 0) goto oom_alloc;
        x.n++;
    }
    x.tmp = malloc(max_numel * sizeof(float) + 1);
    x.tmp2 = malloc(max_numel * sizeof(float) + 1);
    if (!x.tmp || !x.tmp2) goto oom_alloc;
    st = moec_gguf_write(w, out_path, fill, &x, err);
    goto done;
oom_alloc:
    st = MOEC_ERR_OOM;
oom:
    if (st == MOEC_ERR_OOM) moec_err(err, st, "out of memory building the GGUF file");
done:
    free(x.tmp);
    free(x.tmp2);
    free(x.t);
    free(srcs);
    free(specs);
    moec_gguf_vocab_free(&v);
    moec_gguf_writer_free(w);
    moec_model_close(m);
    return st;
}
