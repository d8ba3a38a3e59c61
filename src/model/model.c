/* model.c — opening a checkpoint: config → hparams, safetensors → weights table with every
 * tensor's name, dtype and shape checked against what the config implies. Missing and
 * unexpected tensors are errors that name the tensor. */
#include "model/model.h"

#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

moec_model_params moec_model_default_params(void) {
    moec_model_params p = {0};
    return p;
}

/* ------------------------------------------------------------------ binding */

typedef struct {
    moec_model *m;
    moec_error *err;
    float *small;   /* bump pointer into m->small; NULL during the sizing pass */
    size_t n_small; /* floats needed */
} binder;

static void fmt_shape(char *buf, size_t cap, const int64_t *s, int n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Finds tensor `name` and checks its shape is exactly dims[0..n). */
static moec_status find_checked(binder *b, const char *name, int n, const int64_t *dims, moec_st_tensor **out) {
    moec_st_tensor *t = moec_st_find(&b->m->st, name);
    if (!t)
        return moec_err(b->err, MOEC_ERR_FORMAT, "missing tensor '%s' (required by %s config)", name,
                        b->m->hp.arch->model_type);
    int ok = t->n_dims == n;
    for (int i = 0; ok && i < n; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        char have[128], want[128];
        fmt_shape(have, sizeof have, t->shape, t->n_dims);
        fmt_shape(want, sizeof want, dims, n);
        return moec_err(b->err, MOEC_ERR_FORMAT, "tensor '%s' has shape %s but config.json implies %s", name, have, want);
    }
    t->used = 1;
    *out = t;
    return MOEC_OK;
}

static moec_status bind_mat(binder *b, moec_mat *out, int64_t rows, int64_t cols, const char *fmt, ...)
    MOEC_PRINTF(5, 6);
static moec_status bind_mat(binder *b, moec_mat *out, int64_t rows, int64_t cols, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    moec_st_tensor *t;
    int64_t dims[2] = {rows, cols};
    moec_status st = find_checked(b, name, 2, dims, &t);
    if (st) return st;
    out->data = t->data;
    out->dtype = t->dtype;
    out->rows = rows;
    out->cols = cols;
    return MOEC_OK;
}

/* A 1-D vector (norm weight, bias) copied to fp32. */
static moec_status bind_vec(binder *b, const float **out, int64_t n, const char *fmt, ...) MOEC_PRINTF(4, 5);
static moec_status bind_vec(binder *b, const float **out, int64_t n, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (!b->small) { /* sizing pass */
        b->n_small += (size_t)n;
        *out = NULL;
        return MOEC_OK;
    }
    moec_st_tensor *t;
    moec_status st = find_checked(b, name, 1, &n, &t);
    if (st) return st;
    moec_to_f32(b->small, t->data, t->dtype, (size_t)n);
    *out = b->small;
    b->small += n;
    return MOEC_OK;
}

static moec_status bind_ffn(binder *b, moec_ffn *f, int64_t ff, const char *prefix) {
    const int64_t d = b->m->hp.n_embd;
    const moec_arch *a = b->m->hp.arch;
    moec_status st;
    int dense = strstr(prefix, ".experts.") == NULL;
    const char *g = dense ? "gate_proj" : a->expert_gate, *u = dense ? "up_proj" : a->expert_up,
               *dn = dense ? "down_proj" : a->expert_down;
    if ((st = bind_mat(b, &f->gate, ff, d, "%s.%s.weight", prefix, g))) return st;
    if ((st = bind_mat(b, &f->up, ff, d, "%s.%s.weight", prefix, u))) return st;
    return bind_mat(b, &f->down, d, ff, "%s.%s.weight", prefix, dn);
}

/* Binds (or, when b->small is NULL, only sizes) every tensor of the model. */
static moec_status bind_all(binder *b) {
    moec_model *m = b->m;
    const moec_hparams *hp = &m->hp;
    const moec_arch *a = hp->arch;
    const int64_t d = hp->n_embd, hd = hp->head_dim, qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    const int sizing = b->small == NULL;
    moec_status st;
#define TRY(x) \
    if ((st = (x))) return st
    for (int il = 0; il < hp->n_layer; il++) {
        moec_layer *L = &m->layers[il];
        char p[256];
        snprintf(p, sizeof p, "model.layers.%d", il);
        TRY(bind_vec(b, &L->attn_norm, d, "%s.input_layernorm.weight", p));
        TRY(bind_vec(b, &L->ffn_norm, d, "%s.post_attention_layernorm.weight", p));
        if (hp->qkv_bias) {
            TRY(bind_vec(b, &L->bq, qd, "%s.self_attn.q_proj.bias", p));
            TRY(bind_vec(b, &L->bk, kvd, "%s.self_attn.k_proj.bias", p));
            TRY(bind_vec(b, &L->bv, kvd, "%s.self_attn.v_proj.bias", p));
        }
        if (hp->o_bias) TRY(bind_vec(b, &L->bo, d, "%s.self_attn.o_proj.bias", p));
        if (a->qk_norm == MOEC_QK_NORM_HEAD) {
            TRY(bind_vec(b, &L->q_norm, hd, "%s.self_attn.q_norm.weight", p));
            TRY(bind_vec(b, &L->k_norm, hd, "%s.self_attn.k_norm.weight", p));
        } else if (a->qk_norm == MOEC_QK_NORM_FULL) {
            TRY(bind_vec(b, &L->q_norm, qd, "%s.self_attn.q_norm.weight", p));
            TRY(bind_vec(b, &L->k_norm, kvd, "%s.self_attn.k_norm.weight", p));
        }
        if (sizing) continue;
        TRY(bind_mat(b, &L->wq, qd, d, "%s.self_attn.q_proj.weight", p));
        TRY(bind_mat(b, &L->wk, kvd, d, "%s.self_attn.k_proj.weight", p));
        TRY(bind_mat(b, &L->wv, kvd, d, "%s.self_attn.v_proj.weight", p));
        TRY(bind_mat(b, &L->wo, d, qd, "%s.self_attn.o_proj.weight", p));
        L->is_moe = hp->layer_moe[il];
        if (!L->is_moe) {
            char q[300];
            snprintf(q, sizeof q, "%s.mlp", p);
            TRY(bind_ffn(b, &L->dense, hp->n_ff_dense, q));
            continue;
        }
        TRY(bind_mat(b, &L->router, hp->n_expert, d, "%s.%s.gate.weight", p, a->moe_block));
        for (int e = 0; e < hp->n_expert; e++) {
            char q[300];
            snprintf(q, sizeof q, "%s.%s.experts.%d", p, a->moe_block, e);
            TRY(bind_ffn(b, &L->experts[e], hp->n_ff_expert, q));
        }
        if (a->shared_expert && hp->n_ff_shared > 0) {
            char q[300];
            snprintf(q, sizeof q, "%s.%s.%s", p, a->moe_block, a->shared_expert);
            L->has_shared = 1;
            TRY(bind_ffn(b, &L->shared, hp->n_ff_shared, q));
            TRY(bind_mat(b, &L->shared_gate, 1, d, "%s.%s.%s.weight", p, a->moe_block, a->shared_expert_gate));
        }
    }
    TRY(bind_vec(b, &m->out_norm, d, "model.norm.weight"));
    if (sizing) return MOEC_OK;
    TRY(bind_mat(b, &m->tok_embd, hp->n_vocab, d, "model.embed_tokens.weight"));
    if (hp->tie_embeddings) m->output = m->tok_embd;
    else TRY(bind_mat(b, &m->output, hp->n_vocab, d, "lm_head.weight"));
#undef TRY
    /* everything in the checkpoint must have a role */
    for (int i = 0; i < m->st.n_tensors; i++) {
        const moec_st_tensor *t = &m->st.tensors[i];
        if (t->used || strstr(t->name, "rotary_emb.inv_freq")) continue; /* old HF checkpoints carry RoPE buffers */
        return moec_err(b->err, MOEC_ERR_FORMAT, "unexpected tensor '%s' in checkpoint (not used by %s with this config.json)",
                        t->name, a->model_type);
    }
    return MOEC_OK;
}

/* ------------------------------------------------------------------ info */

static void fill_info(moec_model *m) {
    const moec_hparams *hp = &m->hp;
    moec_model_info *in = &m->info;
    in->model_type = hp->arch->model_type;
    in->n_vocab = hp->n_vocab;
    in->n_embd = hp->n_embd;
    in->n_layer = hp->n_layer;
    in->n_head = hp->n_head;
    in->n_head_kv = hp->n_head_kv;
    in->head_dim = hp->head_dim;
    in->n_expert = hp->n_expert;
    in->n_expert_used = hp->n_expert_used;
    in->n_ff_expert = hp->n_ff_expert;
    in->n_ff_dense = hp->n_ff_dense;
    in->n_ff_shared = hp->n_ff_shared;
    in->max_position_embeddings = hp->max_pos;
    in->rope_theta = hp->rope_theta;
    in->rms_norm_eps = hp->rms_eps;
    in->norm_topk_prob = hp->norm_topk_prob;
    in->tie_word_embeddings = hp->tie_embeddings;
    in->attention_bias = hp->qkv_bias;
    in->qk_norm = hp->arch->qk_norm != MOEC_QK_NORM_NONE;
    in->shared_expert = hp->arch->shared_expert && hp->n_ff_shared > 0;
    in->n_threads = m->n_threads;
    in->bos_token_id = hp->bos_id;
    in->n_eos = hp->n_eos;
    for (int i = 0; i < hp->n_eos; i++) in->eos_token_ids[i] = hp->eos_ids[i];
    size_t bytes_by_dtype[MOEC_DTYPE_COUNT] = {0};
    int64_t total = 0;
    for (int i = 0; i < m->st.n_tensors; i++) {
        total += m->st.tensors[i].numel;
        bytes_by_dtype[m->st.tensors[i].dtype] += m->st.tensors[i].nbytes;
    }
    int best = 0;
    for (int t = 1; t < MOEC_DTYPE_COUNT; t++)
        if (bytes_by_dtype[t] > bytes_by_dtype[best]) best = t;
    in->weight_dtype = moec_dtype_name((moec_dtype)best);
    in->n_params_total = total;
    int n_moe = 0;
    for (int i = 0; i < hp->n_layer; i++) n_moe += hp->layer_moe[i];
    in->n_layer_moe = n_moe;
    const int64_t per_expert = 3 * (int64_t)hp->n_embd * hp->n_ff_expert;
    in->n_params_active = total - (int64_t)n_moe * (hp->n_expert - hp->n_expert_used) * per_expert;
    in->n_bytes_weights = (int64_t)m->st.data_bytes;
}

/* ------------------------------------------------------------------ open / close */

moec_status moec_model_open(moec_model **out, const char *dir, const moec_model_params *params, moec_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return moec_err(err, MOEC_ERR_IO, "cannot open model directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return moec_err(err, MOEC_ERR_IO, "model path %s is not a directory (give the checkpoint directory)", dir);
    moec_model *m = calloc(1, sizeof *m);
    if (!m) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    moec_status st = moec_hparams_load(&m->hp, dir, err);
    if (!st) st = moec_st_open_dir(&m->st, dir, err);
    if (st) {
        moec_model_close(m);
        return st;
    }
    const moec_hparams *hp = &m->hp;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    size_t n_exp = (size_t)hp->n_layer * (size_t)hp->n_expert;
    m->expert_pool = calloc(n_exp + 1, sizeof *m->expert_pool);
    m->expert_ptr_pool = calloc(n_exp + 1, sizeof *m->expert_ptr_pool);
    if (!m->layers || !m->expert_pool || !m->expert_ptr_pool) {
        moec_model_close(m);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (int il = 0; il < hp->n_layer; il++) {
        m->layers[il].experts = m->expert_pool + (size_t)il * hp->n_expert;
        m->layers[il].expert_ptrs = m->expert_ptr_pool + (size_t)il * hp->n_expert;
        for (int e = 0; e < hp->n_expert; e++) m->layers[il].expert_ptrs[e] = &m->layers[il].experts[e];
    }
    binder b = {m, err, NULL, 0};
    bind_all(&b); /* sizing pass: counts the floats of norms and biases */
    m->small = malloc(b.n_small * sizeof(float) + 1);
    if (!m->small) {
        moec_model_close(m);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    b.small = m->small;
    st = bind_all(&b);
    if (st) {
        moec_model_close(m);
        return st;
    }
    int nt = params && params->n_threads > 0 ? params->n_threads : 0;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_num_procs();
#else
    if (nt <= 0) nt = 1;
#endif
    m->n_threads = nt;
    fill_info(m);
    *out = m;
    return MOEC_OK;
}

void moec_model_close(moec_model *m) {
    if (!m) return;
    moec_st_close(&m->st);
    free(m->layers);
    free(m->expert_pool);
    free(m->expert_ptr_pool);
    free(m->small);
    free(m);
}

const moec_model_info *moec_model_get_info(const moec_model *m) { return &m->info; }
