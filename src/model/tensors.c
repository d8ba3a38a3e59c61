/* tensors.c — see tensors.h. */
#include "model/tensors.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct {
    moec_tensor_spec *out;  /* fill this array, or */
    moec_tensor_visit_fn fn; /* call this on each spec until it returns nonzero */
    void *ctx;
    int stopped;
    int64_t n;
    uint64_t n_elems; /* sum of numel; overflow is set if it does not fit in 64 bits */
    int overflow;
} lister;

static void add(lister *l, moec_tensor_role role, int layer, int expert, int64_t rows, int64_t cols, const char *fmt,
                ...) __attribute__((format(printf, 7, 8)));
static void add(lister *l, moec_tensor_role role, int layer, int expert, int64_t rows, int64_t cols, const char *fmt,
                ...) {
    const int64_t numel = rows * (cols ? cols : 1);
    if (__builtin_add_overflow(l->n_elems, (uint64_t)numel, &l->n_elems)) l->overflow = 1;
    moec_tensor_spec tmp;
    if (l->out || (l->fn && !l->stopped)) {
        moec_tensor_spec *s = l->out ? &l->out[l->n] : &tmp;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->name, sizeof s->name, fmt, ap);
        va_end(ap);
        s->role = role;
        s->layer = layer;
        s->expert = expert;
        s->n_dims = cols ? 2 : 1;
        s->shape[0] = rows;
        s->shape[1] = cols;
        s->numel = numel;
        if (l->fn && l->fn(s, l->ctx)) l->stopped = 1;
    }
    l->n++;
}

static void list_all(const moec_hparams *hp, lister *lp) {
    lister l = *lp;
    const moec_arch *a = hp->arch;
    const int64_t d = hp->n_embd, hd = hp->head_dim, qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    add(&l, MOEC_T_EMBED, -1, -1, hp->n_vocab, d, "model.embed_tokens.weight");
    const moec_router_cfg *rc = &hp->route;
    const int64_t E_r = rc->n_expert, r = rc->rnn_dim; /* router width: FFN + zero-computation experts */
    if (hp->n_expert > 0 && r > 0) { /* RMoE: one GRU cell over depth, shared by every MoE layer */
        add(&l, MOEC_T_RNN_W_IH, -1, -1, 3 * r, r, "model.router_rnn.weight_ih");
        add(&l, MOEC_T_RNN_W_HH, -1, -1, 3 * r, r, "model.router_rnn.weight_hh");
        add(&l, MOEC_T_RNN_B_IH, -1, -1, 3 * r, 0, "model.router_rnn.bias_ih");
        add(&l, MOEC_T_RNN_B_HH, -1, -1, 3 * r, 0, "model.router_rnn.bias_hh");
    }
    if (hp->n_expert > 0 && rc->hash_balanced) /* one table for every MoE layer, as the random one */
        add(&l, MOEC_T_HASH_TABLE, -1, -1, hp->n_vocab, 0, "model.hash_table");
    int seen_moe = 0;
    for (int il = 0; il < hp->n_layer && !l.stopped; il++) {
        const char *p = "model.layers";
        add(&l, MOEC_T_ATTN_NORM, il, -1, d, 0, "%s.%d.input_layernorm.weight", p, il);
        add(&l, MOEC_T_WQ, il, -1, qd, d, "%s.%d.self_attn.q_proj.weight", p, il);
        add(&l, MOEC_T_WK, il, -1, kvd, d, "%s.%d.self_attn.k_proj.weight", p, il);
        add(&l, MOEC_T_WV, il, -1, kvd, d, "%s.%d.self_attn.v_proj.weight", p, il);
        add(&l, MOEC_T_WO, il, -1, d, qd, "%s.%d.self_attn.o_proj.weight", p, il);
        if (hp->qkv_bias) {
            add(&l, MOEC_T_BQ, il, -1, qd, 0, "%s.%d.self_attn.q_proj.bias", p, il);
            add(&l, MOEC_T_BK, il, -1, kvd, 0, "%s.%d.self_attn.k_proj.bias", p, il);
            add(&l, MOEC_T_BV, il, -1, kvd, 0, "%s.%d.self_attn.v_proj.bias", p, il);
        }
        if (hp->o_bias) add(&l, MOEC_T_BO, il, -1, d, 0, "%s.%d.self_attn.o_proj.bias", p, il);
        if (a->qk_norm != MOEC_QK_NORM_NONE) {
            const int full = a->qk_norm == MOEC_QK_NORM_FULL;
            add(&l, MOEC_T_Q_NORM, il, -1, full ? qd : hd, 0, "%s.%d.self_attn.q_norm.weight", p, il);
            add(&l, MOEC_T_K_NORM, il, -1, full ? kvd : hd, 0, "%s.%d.self_attn.k_norm.weight", p, il);
        }
        add(&l, MOEC_T_FFN_NORM, il, -1, d, 0, "%s.%d.post_attention_layernorm.weight", p, il);
        if (!hp->layer_moe[il]) {
            const int64_t ff = hp->n_ff_dense;
            add(&l, MOEC_T_MLP_GATE, il, -1, ff, d, "%s.%d.mlp.gate_proj.weight", p, il);
            add(&l, MOEC_T_MLP_UP, il, -1, ff, d, "%s.%d.mlp.up_proj.weight", p, il);
            add(&l, MOEC_T_MLP_DOWN, il, -1, d, ff, "%s.%d.mlp.down_proj.weight", p, il);
            continue;
        }
        const char *mb = a->moe_block;
        const int64_t ff = hp->n_ff_expert;
        if (r > 0) add(&l, MOEC_T_ROUTER_PROJ, il, -1, r, d, "%s.%d.%s.gate.proj.weight", p, il, mb);
        add(&l, MOEC_T_ROUTER, il, -1, E_r, r > 0 ? r : d, "%s.%d.%s.gate.weight", p, il, mb);
        for (int t = 1; !rc->coe_shared_gate && t < rc->coe_iters; t++) /* CoE: a router per iteration */
            add(&l, MOEC_T_ROUTER_ITER, il, t, E_r, d, "%s.%d.%s.gate.iterations.%d.weight", p, il, mb, t);
        if (hp->route.use_bias) /* aux-loss-free selection bias: a buffer, not trained by AdamW (HF DeepSeek-V3 name) */
            add(&l, MOEC_T_ROUTER_BIAS, il, -1, E_r, 0, "%s.%d.%s.gate.e_score_correction_bias", p, il, mb);
        if (rc->router_scale) /* MoGE: vllm-ascend pangu_moe.py PanguProMoESparseMoeBlock.router_scale, ones((1, E)) */
            add(&l, MOEC_T_ROUTER_SCALE, il, -1, 1, E_r, "%s.%d.%s.router_scale", p, il, mb);
        if (rc->gate_residual && seen_moe) /* MoE++ gate_map: from the previous MoE layer's logits */
            add(&l, MOEC_T_GATE_MAP, il, -1, E_r, E_r, "%s.%d.%s.gate_map.weight", p, il, mb);
        seen_moe = 1;
        for (int j = 0; j < rc->n_const; j++) {
            add(&l, MOEC_T_CONST_W, il, j, 2, d, "%s.%d.%s.constant_experts.%d.weight", p, il, mb, j);
            add(&l, MOEC_T_CONST_V, il, j, d, 0, "%s.%d.%s.constant_experts.%d.v", p, il, mb, j);
        }
        if (!l.out && !l.fn) { /* counting only: the experts' 3 same-sized tensors in bulk, O(layers) not O(experts) */
            uint64_t per = 0;
            const uint64_t k = 3 * (uint64_t)hp->n_expert;
            if (__builtin_mul_overflow(k, (uint64_t)(ff * d), &per) || __builtin_add_overflow(l.n_elems, per, &l.n_elems))
                l.overflow = 1;
            l.n += (int64_t)k;
        }
        for (int e = 0; e < hp->n_expert && !l.stopped && (l.out || l.fn); e++) {
            add(&l, MOEC_T_EXP_GATE, il, e, ff, d, "%s.%d.%s.experts.%d.%s.weight", p, il, mb, e, a->expert_gate);
            add(&l, MOEC_T_EXP_UP, il, e, ff, d, "%s.%d.%s.experts.%d.%s.weight", p, il, mb, e, a->expert_up);
            add(&l, MOEC_T_EXP_DOWN, il, e, d, ff, "%s.%d.%s.experts.%d.%s.weight", p, il, mb, e, a->expert_down);
        }
        if (a->shared_expert && hp->n_ff_shared > 0) {
            const int64_t fs = hp->n_ff_shared;
            const char *se = a->shared_expert;
            add(&l, MOEC_T_SH_GATE, il, -1, fs, d, "%s.%d.%s.%s.gate_proj.weight", p, il, mb, se);
            add(&l, MOEC_T_SH_UP, il, -1, fs, d, "%s.%d.%s.%s.up_proj.weight", p, il, mb, se);
            add(&l, MOEC_T_SH_DOWN, il, -1, d, fs, "%s.%d.%s.%s.down_proj.weight", p, il, mb, se);
            if (hp->shared_gate)
                add(&l, MOEC_T_SH_GATE_W, il, -1, 1, d, "%s.%d.%s.%s.weight", p, il, mb, a->shared_expert_gate);
        }
    }
    add(&l, MOEC_T_OUT_NORM, -1, -1, d, 0, "model.norm.weight");
    if (!hp->tie_embeddings) add(&l, MOEC_T_LM_HEAD, -1, -1, hp->n_vocab, d, "lm_head.weight");
    *lp = l;
}

int64_t moec_model_tensor_specs(const moec_hparams *hp, moec_tensor_spec *specs) {
    lister l = {.out = specs};
    list_all(hp, &l);
    return l.n;
}

int moec_model_tensor_total(const moec_hparams *hp, int64_t *n_tensors, uint64_t *n_elems) {
    lister l = {0};
    list_all(hp, &l);
    *n_tensors = l.n;
    *n_elems = l.n_elems;
    return !l.overflow;
}

int moec_model_tensor_visit(const moec_hparams *hp, moec_tensor_visit_fn fn, void *ctx) {
    lister l = {.fn = fn, .ctx = ctx};
    list_all(hp, &l);
    return l.stopped;
}
