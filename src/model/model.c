/* model.c — opening a checkpoint: config → hparams, safetensors → weights table with every
 * tensor's name, dtype and shape checked against what the config implies. Missing and
 * unexpected tensors are errors that name the tensor. */
#include "model/model.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/read_bandwidth.h"
#include "core/threads.h"
#include "model/gguf_model.h"
#include "model/tensors.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moec_model_params moec_model_default_params(void) {
    moec_model_params p = {0};
    return p;
}

/* ------------------------------------------------------------------ binding */

static void fmt_shape(char *buf, size_t cap, const int64_t *s, int n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Finds the spec's tensor and checks its shape is exactly what the config implies. */
static moec_status find_checked(moec_model *m, const moec_tensor_spec *sp, moec_st_tensor **out, moec_error *err) {
    moec_st_tensor *t = moec_st_find(&m->st, sp->name);
    if (!t)
        return moec_err(err, MOEC_ERR_FORMAT, "missing tensor '%s' (required by %s config)", sp->name,
                        m->hp.arch->model_type);
    int ok = t->n_dims == sp->n_dims;
    for (int i = 0; ok && i < sp->n_dims; i++) ok = t->shape[i] == sp->shape[i];
    if (!ok) {
        char have[128], want[128];
        fmt_shape(have, sizeof have, t->shape, t->n_dims);
        fmt_shape(want, sizeof want, sp->shape, sp->n_dims);
        /* attention projections: say which config fields made the shape, head_dim above all */
        const int attn = strstr(sp->name, "self_attn.") != NULL;
        return moec_err(err, MOEC_ERR_FORMAT, "tensor '%s' has shape %s but config.json implies %s%s", sp->name, have,
                        want, attn ? " (from num_attention_heads / num_key_value_heads x head_dim)" : "");
    }
    t->used = 1;
    *out = t;
    return MOEC_OK;
}

void moec_model_bind(moec_model *m, const moec_tensor_spec *sp, moec_mat mat, float *vec) {
    moec_layer *L = sp->layer >= 0 ? &m->layers[sp->layer] : NULL;
    switch (sp->role) {
    case MOEC_T_EMBED: m->tok_embd = mat; break;
    case MOEC_T_OUT_NORM: m->out_norm = vec; break;
    case MOEC_T_LM_HEAD: m->output = mat; break;
    case MOEC_T_ATTN_NORM: L->attn_norm = vec; break;
    case MOEC_T_FFN_NORM: L->ffn_norm = vec; break;
    case MOEC_T_WQ: L->wq = mat; break;
    case MOEC_T_WK: L->wk = mat; break;
    case MOEC_T_WV: L->wv = mat; break;
    case MOEC_T_WO: L->wo = mat; break;
    case MOEC_T_BQ: L->bq = vec; break;
    case MOEC_T_BK: L->bk = vec; break;
    case MOEC_T_BV: L->bv = vec; break;
    case MOEC_T_BO: L->bo = vec; break;
    case MOEC_T_Q_NORM: L->q_norm = vec; break;
    case MOEC_T_K_NORM: L->k_norm = vec; break;
    case MOEC_T_MLP_GATE: L->dense.gate = mat; break;
    case MOEC_T_MLP_UP: L->dense.up = mat; break;
    case MOEC_T_MLP_DOWN: L->dense.down = mat; break;
    case MOEC_T_ROUTER: L->router = mat; L->is_moe = 1; break;
    case MOEC_T_ROUTER_BIAS: L->router_bias = vec; break;
    case MOEC_T_ROUTER_SCALE: L->router_scale = vec; break;
    case MOEC_T_EXP_GATE: L->experts[sp->expert].gate = mat; break;
    case MOEC_T_EXP_UP: L->experts[sp->expert].up = mat; break;
    case MOEC_T_EXP_DOWN: L->experts[sp->expert].down = mat; break;
    case MOEC_T_SH_GATE: L->shared.gate = mat; L->has_shared = 1; break;
    case MOEC_T_SH_UP: L->shared.up = mat; break;
    case MOEC_T_SH_DOWN: L->shared.down = mat; break;
    case MOEC_T_SH_GATE_W: L->shared_gate = mat; break;
    case MOEC_T_GATE_MAP: L->gate_map = mat; break;
    case MOEC_T_CONST_W: L->const_w[sp->expert] = mat; break;
    case MOEC_T_CONST_V: L->const_v[sp->expert] = vec; break;
    case MOEC_T_ROUTER_PROJ: L->router_proj = mat; break;
    case MOEC_T_ROUTER_ITER: L->router_iter[sp->expert] = mat; break;
    /* RMoE's GRU is one cell for the whole model: every layer sees it (gradients accumulate) */
    case MOEC_T_RNN_W_IH: for (int i = 0; i < m->hp.n_layer; i++) m->layers[i].rnn_w_ih = mat; break;
    case MOEC_T_RNN_W_HH: for (int i = 0; i < m->hp.n_layer; i++) m->layers[i].rnn_w_hh = mat; break;
    case MOEC_T_RNN_B_IH: for (int i = 0; i < m->hp.n_layer; i++) m->layers[i].rnn_b_ih = vec; break;
    case MOEC_T_RNN_B_HH: for (int i = 0; i < m->hp.n_layer; i++) m->layers[i].rnn_b_hh = vec; break;
    case MOEC_T_HASH_TABLE: for (int i = 0; i < m->hp.n_layer; i++) m->layers[i].hash_table = vec; break;
    default: MOEC_ASSERT(0 && "unhandled tensor role");
    }
}

moec_status moec_model_alloc_tables(moec_model *m, moec_error *err) {
    const moec_hparams *hp = &m->hp;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    size_t n_exp = (size_t)hp->n_layer * (size_t)hp->n_expert;
    /* ReXMoE: layer l's expert table is its group's r·N experts (shared, not copied) */
    const int r = hp->n_expert > 0 && hp->route.rex_reuse > 1 ? hp->route.rex_reuse : 1;
    m->expert_pool = calloc(n_exp + 1, sizeof *m->expert_pool);
    m->expert_ptr_pool = calloc(n_exp * (size_t)r + 1, sizeof *m->expert_ptr_pool);
    if (!m->layers || !m->expert_pool || !m->expert_ptr_pool) {
        moec_model_free_tables(m);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (int il = 0; il < hp->n_layer; il++) {
        m->layers[il].experts = m->expert_pool + (size_t)il * hp->n_expert;
        m->layers[il].expert_ptrs = m->expert_ptr_pool + (size_t)il * hp->n_expert * (size_t)r;
    }
    for (int il = 0; il < hp->n_layer; il++) { /* pool order: [layer g·r experts 0..N−1, layer g·r + 1 ..., ...] */
        const int first = il / r * r;
        for (int e = 0; e < hp->n_expert * r; e++)
            m->layers[il].expert_ptrs[e] = &m->layers[first + e / hp->n_expert].experts[e % hp->n_expert];
    }
    return MOEC_OK;
}

void moec_model_free_tables(moec_model *m) {
    free(m->layers);
    free(m->expert_pool);
    free(m->expert_ptr_pool);
    m->layers = NULL;
    m->expert_pool = NULL;
    m->expert_ptr_pool = NULL;
}

/* Binds every tensor of the model's spec list to its role. Vectors (norm weights, biases) are
 * copied to fp32 into m->small; matrices stay in the mapped file. */
static moec_status bind_all(moec_model *m, moec_error *err) {
    const moec_hparams *hp = &m->hp;
    const int64_t n = moec_model_tensor_specs(hp, NULL);
    moec_tensor_spec *specs = malloc((size_t)n * sizeof *specs);
    if (!specs) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    moec_model_tensor_specs(hp, specs);
    size_t n_small = 0;
    for (int64_t i = 0; i < n; i++)
        if (moec_tensor_is_vector(&specs[i])) n_small += (size_t)specs[i].numel;
    m->small = malloc(n_small * sizeof(float) + 1);
    if (!m->small) {
        free(specs);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    float *small = m->small;
    moec_status st = MOEC_OK;
    for (int64_t i = 0; i < n && !st; i++) {
        const moec_tensor_spec *sp = &specs[i];
        moec_st_tensor *t = NULL;
        if ((st = find_checked(m, sp, &t, err))) break;
        const float *vec = NULL;
        if (moec_tensor_is_vector(sp)) {
            moec_to_f32(small, t->data, t->dtype, (size_t)sp->numel);
            vec = small;
            small += sp->numel;
        }
        const moec_mat mat = {t->data, t->dtype, sp->shape[0], sp->shape[1]};
        moec_model_bind(m, sp, mat, (float *)vec);
    }
    free(specs);
    if (st) return st;
    if (hp->tie_embeddings) m->output = m->tok_embd;
    /* a stored hash table routes by its entries: each must be an expert */
    if (hp->n_layer > 0 && m->layers[0].hash_table &&
        (st = moec_router_hash_table_check(m->layers[0].hash_table, hp->n_vocab, hp->route.n_expert, err)))
        return st;
    /* everything in the checkpoint must have a role */
    for (int i = 0; i < m->st.n_tensors; i++) {
        const moec_st_tensor *t = &m->st.tensors[i];
        if (t->used || strstr(t->name, "rotary_emb.inv_freq")) continue; /* old HF checkpoints carry RoPE buffers */
        return moec_err(err, MOEC_ERR_FORMAT, "unexpected tensor '%s' in checkpoint (not used by %s with this config.json)",
                        t->name, hp->arch->model_type);
    }
    return MOEC_OK;
}

/* Checks every tensor of the spec list (presence, shape) without building anything: run before
 * the config-sized tables, so a checkpoint that does not match an absurd config.json names the
 * first wrong tensor instead of failing on memory the config asks for. */
typedef struct {
    moec_model *m;
    moec_error *err;
    moec_status st;
} precheck_ctx;

static int precheck_one(const moec_tensor_spec *sp, void *vctx) {
    precheck_ctx *c = vctx;
    moec_st_tensor *t = NULL;
    c->st = find_checked(c->m, sp, &t, c->err);
    return c->st != MOEC_OK;
}

/* ------------------------------------------------------------------ info */

static int64_t mat_bytes(const moec_mat *w) {
    return w->data ? w->rows * (int64_t)moec_row_bytes(w->dtype, w->cols) : 0;
}

static int64_t ffn_bytes(const moec_ffn *f) { return mat_bytes(&f->gate) + mat_bytes(&f->up) + mat_bytes(&f->down); }

/* Weight bytes of one decode step: everything but the embedding table's other rows and the
 * experts a token does not use (a layer's k experts counted at the mean size of its experts). */
static int64_t active_bytes(const moec_model *m) {
    const moec_hparams *hp = &m->hp;
    int64_t b = (int64_t)m->st.data_bytes;
    if (m->output.data != m->tok_embd.data && m->tok_embd.rows > 0)
        b -= mat_bytes(&m->tok_embd) / m->tok_embd.rows * (m->tok_embd.rows - 1);
    for (int il = 0; il < hp->n_layer; il++) {
        const moec_layer *L = &m->layers[il];
        if (!L->is_moe || !L->experts || hp->n_expert <= 0) continue;
        int64_t all = 0;
        for (int e = 0; e < hp->n_expert; e++) all += ffn_bytes(&L->experts[e]);
        b -= all - all / hp->n_expert * hp->n_expert_used;
    }
    return b;
}

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
    in->n_route_expert = moec_hparams_n_route(hp);
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
    if (hp->n_expert > 0) moec_router_describe(&hp->route, in->routing, sizeof in->routing);
    in->shared_expert_gated = hp->shared_gate;
    for (int i = 0; i < hp->n_eos; i++) in->eos_token_ids[i] = hp->eos_ids[i];
    in->n_ctx_max = hp->n_ctx_max;
    in->rope_type = moec_rope_type_name(hp->rope.type);
    in->sliding_window = hp->sliding_window;
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
    size_t all = 0, o = 0;
    for (int t = 0; t < MOEC_DTYPE_COUNT; t++) all += bytes_by_dtype[t];
    in->weight_formats[0] = 0;
    for (int k = 0; k < MOEC_DTYPE_COUNT && all; k++) { /* largest share first */
        int b = -1;
        for (int t = 0; t < MOEC_DTYPE_COUNT; t++)
            if (bytes_by_dtype[t] && (b < 0 || bytes_by_dtype[t] > bytes_by_dtype[b])) b = t;
        if (b < 0) break;
        const int n = snprintf(in->weight_formats + o, sizeof in->weight_formats - o, "%s%s %.0f%%", o ? ", " : "",
                               moec_dtype_name((moec_dtype)b), 100.0 * (double)bytes_by_dtype[b] / (double)all);
        if (n < 0 || (size_t)n >= sizeof in->weight_formats - o) break;
        o += (size_t)n;
        bytes_by_dtype[b] = 0;
    }
    in->n_params_total = total;
    int n_moe = 0;
    for (int i = 0; i < hp->n_layer; i++) n_moe += hp->layer_moe[i];
    in->n_layer_moe = n_moe;
    const int64_t per_expert = 3 * (int64_t)hp->n_embd * hp->n_ff_expert;
    in->n_params_active = total - (int64_t)n_moe * (hp->n_expert - hp->n_expert_used) * per_expert;
    in->n_bytes_weights = (int64_t)m->st.data_bytes;
    in->n_bytes_active = active_bytes(m);
}

/* ------------------------------------------------------------------ open / close */

moec_status moec_model_open(moec_model **out, const char *dir, const moec_model_params *params, moec_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return moec_err(err, MOEC_ERR_IO, "cannot open model directory %s: %s", dir, strerror(errno));
    const int is_gguf = S_ISREG(sb.st_mode); /* a file is read as GGUF; its parser names what is wrong */
    if (!S_ISDIR(sb.st_mode) && !is_gguf)
        return moec_err(err, MOEC_ERR_IO, "model path %s is neither a directory nor a file (give the checkpoint directory or a .gguf)", dir);
    moec_model *m = calloc(1, sizeof *m);
    if (!m) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    moec_status st;
    if (is_gguf) {
        st = moec_gguf_model_load(&m->gguf, &m->hp, &m->st, dir, err);
    } else {
        st = moec_hparams_load(&m->hp, dir, err);
        if (!st) st = moec_st_open_dir(&m->st, dir, err);
    }
    if (st) {
        moec_model_close(m);
        return st;
    }
    precheck_ctx pc = {m, err, MOEC_OK};
    moec_model_tensor_visit(&m->hp, precheck_one, &pc);
    if (pc.st) {
        moec_model_close(m);
        return pc.st;
    }
    if ((st = moec_model_alloc_tables(m, err))) {
        moec_model_close(m);
        return st;
    }
    st = bind_all(m, err);
    if (st) {
        moec_model_close(m);
        return st;
    }
    int nt = params && params->n_threads > 0 ? params->n_threads : 0;
    if (nt <= 0) nt = moec_threads_default();
    m->n_threads = nt;
    fill_info(m);
    if (m->gguf) { /* the file's bytes (tensors are used in place, so the formats are the file's) */
        m->info.n_bytes_weights = moec_gguf_model_bytes(m->gguf);
        m->info.add_bos_token = moec_gguf_model_add_bos(m->gguf);
    }
    *out = m;
    return MOEC_OK;
}

void moec_model_close(moec_model *m) {
    if (!m) return;
    moec_st_close(&m->st);
    moec_gguf_model_free(m->gguf);
    moec_model_free_tables(m);
    free(m->small);
    free(m);
}

const moec_model_info *moec_model_get_info(const moec_model *m) { return &m->info; }

moec_status moec_model_read_bandwidth(const moec_model *m, double *gb_per_s, moec_error *err) {
    *gb_per_s = 0;
    const int n = m->st.n_tensors;
    const void **ptr = malloc((size_t)(n > 0 ? n : 1) * sizeof *ptr);
    size_t *len = malloc((size_t)(n > 0 ? n : 1) * sizeof *len);
    if (!ptr || !len) {
        free(ptr);
        free(len);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        ptr[i] = m->st.tensors[i].data;
        len[i] = m->st.tensors[i].nbytes;
    }
    moec_threads_set(m->n_threads);
    unsigned long long sink;
    *gb_per_s = moec_read_bandwidth(ptr, len, n, &sink);
    free(ptr);
    free(len);
    return MOEC_OK;
}

static char system_info[384];
static pthread_once_t system_info_once = PTHREAD_ONCE_INIT;

static void system_info_fill(void) {
    snprintf(system_info, sizeof system_info, "cpu: %s | kernels: %s", moec_cpu_features_string(),
             moec_isa_name(moec_cpu_isa()));
}

const char *moec_system_info(void) {
    pthread_once(&system_info_once, system_info_fill);
    return system_info;
}
