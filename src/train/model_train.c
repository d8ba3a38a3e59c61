/* model_train.c — see model_train.h. Reads top to bottom in data-flow order: workspace,
 * forward of one layer, backward of one layer, the whole step. */
#include "train/model_train.h"

#include "core/error.h"
#include "moe/moe_train.h"
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/ops_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ workspace */

typedef struct {
    float *x;                  /* [BS, d] layer input (residual stream) */
    float *xn1, *rstd1;        /* [BS, d], [BS] */
    float *q, *k, *v;          /* [BS, qd], [BS, kvd] ×2: projections (+bias) */
    float *qn, *kn;            /* QK-normed (alias q, k when the arch has no QK norm) */
    float *rstd_q, *rstd_k;    /* [BS*H], [BS*Hkv] */
    float *qr, *kr;            /* after clip_qkv (OLMoE) and RoPE */
    float *vc;                 /* v after clip_qkv (aliases v without clipping) */
    float *probs;              /* [B, H, S, S] */
    float *att;                /* [BS, qd] */
    float *x2;                 /* [BS, d] after the attention residual */
    float *xn2, *rstd2;        /* [BS, d], [BS] */
    float *hg, *hu, *h;        /* dense MLP: [BS, ff] gate, up, silu(gate)*up */
    moec_moe_cache *moe;
    moec_moe_cfg moe_cfg;
    moec_moe_params mp;
    moec_moe_grads mg;
    const float **pg, **pu, **pd; /* [E] expert weight pointers */
    float **gg, **gu, **gd;       /* [E] expert gradient pointers */
} layer_ws;

struct moec_tmodel {
    moec_tparams *tp;
    int B, S, BS;
    float aux_coef, z_coef;
    layer_ws *L;
    float *x_final, *xnf, *rstdf; /* [BS, d] output of the last layer, normed, [BS] */
    float *logits;                /* [BS, V] (dlogits in place in the backward) */
    float *rope_cos, *rope_sin;   /* [S, hd/2] */
    int32_t *pos, *inp, *tgt;     /* [BS] */
    /* backward scratch */
    float *dx, *dx2, *dxn, *dq, *dk, *dv, *dqn, *dkn, *datt, *dh, *dhg, *dhu, *ffn_out;
    int32_t *counts;              /* [n_layer, E] */
    void **allocs;
    int n_allocs;
    size_t bytes;
};

static float *falloc(moec_tmodel *m, size_t n) {
    void **na = realloc(m->allocs, (size_t)(m->n_allocs + 1) * sizeof *na);
    if (!na) return NULL;
    m->allocs = na;
    float *p = calloc(n ? n : 1, sizeof(float));
    if (p) {
        m->allocs[m->n_allocs++] = p;
        m->bytes += n * sizeof(float);
    }
    return p;
}

void moec_tmodel_free(moec_tmodel *m) {
    if (!m) return;
    for (int i = 0; i < m->n_allocs; i++) free(m->allocs[i]);
    free(m->allocs);
    if (m->L)
        for (int il = 0; il < m->tp->hp.n_layer; il++) {
            moec_moe_cache_free(m->L[il].moe);
            free(m->L[il].pg);
            free(m->L[il].pu);
            free(m->L[il].pd);
            free(m->L[il].gg);
            free(m->L[il].gu);
            free(m->L[il].gd);
        }
    free(m->L);
    free(m->counts);
    free(m->pos); /* inp and tgt live in the same block */
    free(m);
}

size_t moec_tmodel_bytes(const moec_tmodel *m) {
    size_t b = m->bytes;
    for (int il = 0; il < m->tp->hp.n_layer; il++)
        if (m->L[il].moe) b += moec_moe_cache_bytes(m->L[il].moe);
    return b;
}

#define P(role, il, e) moec_tparams_find(tp, 0, role, il, e)
#define G(role, il, e) moec_tparams_find(tp, 1, role, il, e)

moec_status moec_tmodel_new(moec_tmodel **out, moec_tparams *tp, int B, int S, float aux_coef, float z_coef,
                            moec_error *err) {
    *out = NULL;
    const moec_hparams *hp = &tp->hp;
    if (B < 1 || S < 1 || (int64_t)B * S > (1 << 24))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "batch %d x sequence %d is out of range", B, S);
    if (S > hp->max_pos)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "sequence length %d exceeds max_position_embeddings %d", S, hp->max_pos);
    moec_tmodel *m = calloc(1, sizeof *m);
    if (!m) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    m->tp = tp;
    m->B = B;
    m->S = S;
    m->BS = B * S;
    m->aux_coef = aux_coef;
    m->z_coef = z_coef;
    const size_t BS = (size_t)m->BS, d = (size_t)hp->n_embd, hd = (size_t)hp->head_dim;
    const size_t H = (size_t)hp->n_head, Hkv = (size_t)hp->n_head_kv, qd = H * hd, kvd = Hkv * hd;
    const int qkn = hp->arch->qk_norm != MOEC_QK_NORM_NONE;
    size_t ff_max = (size_t)hp->n_ff_dense;
    m->L = calloc((size_t)hp->n_layer, sizeof *m->L);
    m->counts = calloc((size_t)hp->n_layer * (size_t)(hp->n_expert > 0 ? hp->n_expert : 1), sizeof *m->counts);
    if (!m->L || !m->counts) goto oom;
    for (int il = 0; il < hp->n_layer; il++) {
        layer_ws *L = &m->L[il];
        if (!(L->x = falloc(m, BS * d)) || !(L->xn1 = falloc(m, BS * d)) || !(L->rstd1 = falloc(m, BS)) ||
            !(L->q = falloc(m, BS * qd)) || !(L->k = falloc(m, BS * kvd)) || !(L->v = falloc(m, BS * kvd)) ||
            !(L->qr = falloc(m, BS * qd)) || !(L->kr = falloc(m, BS * kvd)) ||
            !(L->vc = hp->clip_qkv > 0 ? falloc(m, BS * kvd) : L->v) ||
            !(L->probs = falloc(m, (size_t)B * H * (size_t)S * (size_t)S)) || !(L->att = falloc(m, BS * qd)) ||
            !(L->x2 = falloc(m, BS * d)) || !(L->xn2 = falloc(m, BS * d)) || !(L->rstd2 = falloc(m, BS)))
            goto oom;
        if (qkn) {
            if (!(L->qn = falloc(m, BS * qd)) || !(L->kn = falloc(m, BS * kvd)) || !(L->rstd_q = falloc(m, BS * H)) ||
                !(L->rstd_k = falloc(m, BS * Hkv)))
                goto oom;
        } else {
            L->qn = L->q;
            L->kn = L->k;
        }
        if (!hp->layer_moe[il]) {
            size_t ff = (size_t)hp->n_ff_dense;
            if (!(L->hg = falloc(m, BS * ff)) || !(L->hu = falloc(m, BS * ff)) || !(L->h = falloc(m, BS * ff))) goto oom;
            continue;
        }
        const int E = hp->n_expert;
        L->moe_cfg = (moec_moe_cfg){(int)d, E, hp->n_expert_used, hp->n_ff_expert, hp->n_ff_shared,
                                    hp->norm_topk_prob, aux_coef, z_coef};
        moec_status st = moec_moe_cache_new(&L->moe, &L->moe_cfg, m->BS, err);
        if (st) {
            moec_tmodel_free(m);
            return st;
        }
        L->pg = calloc((size_t)E, sizeof *L->pg);
        L->pu = calloc((size_t)E, sizeof *L->pu);
        L->pd = calloc((size_t)E, sizeof *L->pd);
        L->gg = calloc((size_t)E, sizeof *L->gg);
        L->gu = calloc((size_t)E, sizeof *L->gu);
        L->gd = calloc((size_t)E, sizeof *L->gd);
        if (!L->pg || !L->pu || !L->pd || !L->gg || !L->gu || !L->gd) goto oom;
        for (int e = 0; e < E; e++) {
            L->pg[e] = P(MOEC_T_EXP_GATE, il, e);
            L->pu[e] = P(MOEC_T_EXP_UP, il, e);
            L->pd[e] = P(MOEC_T_EXP_DOWN, il, e);
            L->gg[e] = G(MOEC_T_EXP_GATE, il, e);
            L->gu[e] = G(MOEC_T_EXP_UP, il, e);
            L->gd[e] = G(MOEC_T_EXP_DOWN, il, e);
        }
        L->mp = (moec_moe_params){P(MOEC_T_ROUTER, il, -1), L->pg, L->pu, L->pd, P(MOEC_T_SH_GATE, il, -1),
                                  P(MOEC_T_SH_UP, il, -1), P(MOEC_T_SH_DOWN, il, -1), P(MOEC_T_SH_GATE_W, il, -1)};
        L->mg = (moec_moe_grads){G(MOEC_T_ROUTER, il, -1), L->gg, L->gu, L->gd, G(MOEC_T_SH_GATE, il, -1),
                                 G(MOEC_T_SH_UP, il, -1), G(MOEC_T_SH_DOWN, il, -1), G(MOEC_T_SH_GATE_W, il, -1)};
    }
    const size_t V = (size_t)hp->n_vocab;
    if (!(m->x_final = falloc(m, BS * d)) || !(m->xnf = falloc(m, BS * d)) || !(m->rstdf = falloc(m, BS)) ||
        !(m->logits = falloc(m, BS * V)) || !(m->rope_cos = falloc(m, (size_t)S * hd / 2)) ||
        !(m->rope_sin = falloc(m, (size_t)S * hd / 2)) || !(m->dx = falloc(m, BS * d)) ||
        !(m->dx2 = falloc(m, BS * d)) || !(m->dxn = falloc(m, BS * d)) || !(m->dq = falloc(m, BS * qd)) ||
        !(m->dk = falloc(m, BS * kvd)) || !(m->dv = falloc(m, BS * kvd)) || !(m->datt = falloc(m, BS * qd)) ||
        !(m->ffn_out = falloc(m, BS * d)) || !(m->dqn = falloc(m, BS * qd)) || !(m->dkn = falloc(m, BS * kvd)))
        goto oom;
    if (ff_max && (!(m->dh = falloc(m, BS * ff_max)) || !(m->dhg = falloc(m, BS * ff_max)) ||
                   !(m->dhu = falloc(m, BS * ff_max))))
        goto oom;
    m->pos = calloc(BS * 3, sizeof *m->pos);
    if (!m->pos) goto oom;
    m->inp = m->pos + BS;
    m->tgt = m->pos + 2 * BS;
    for (size_t t = 0; t < BS; t++) m->pos[t] = (int32_t)(t % (size_t)S);
    moec_rope_fill(m->rope_cos, m->rope_sin, S, hp->head_dim, &hp->rope);
    *out = m;
    return MOEC_OK;
oom:
    moec_tmodel_free(m);
    return moec_err(err, MOEC_ERR_OOM, "out of memory for training activations (batch %d x seq %d)", B, S);
}

/* ------------------------------------------------------------------ one layer */

static void add_into(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* x_out [BS, d] = layer(L->x) */
static void layer_forward(moec_tmodel *m, int il, float *x_out, double *aux, double *z) {
    moec_tparams *tp = m->tp;
    const moec_hparams *hp = &tp->hp;
    layer_ws *L = &m->L[il];
    const int BS = m->BS, d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const int qd = H * hd, kvd = Hkv * hd;
    const float eps = hp->rms_eps;
    moec_rmsnorm_forward_train(L->xn1, L->rstd1, L->x, P(MOEC_T_ATTN_NORM, il, -1), BS, d, eps);
    moec_linear_forward(L->q, qd, L->xn1, d, P(MOEC_T_WQ, il, -1), P(MOEC_T_BQ, il, -1), BS, d, qd);
    moec_linear_forward(L->k, kvd, L->xn1, d, P(MOEC_T_WK, il, -1), P(MOEC_T_BK, il, -1), BS, d, kvd);
    moec_linear_forward(L->v, kvd, L->xn1, d, P(MOEC_T_WV, il, -1), P(MOEC_T_BV, il, -1), BS, d, kvd);
    if (hp->arch->qk_norm == MOEC_QK_NORM_HEAD) {
        moec_rmsnorm_forward_train(L->qn, L->rstd_q, L->q, P(MOEC_T_Q_NORM, il, -1), BS * H, hd, eps);
        moec_rmsnorm_forward_train(L->kn, L->rstd_k, L->k, P(MOEC_T_K_NORM, il, -1), BS * Hkv, hd, eps);
    } else if (hp->arch->qk_norm == MOEC_QK_NORM_FULL) {
        moec_rmsnorm_forward_train(L->qn, L->rstd_q, L->q, P(MOEC_T_Q_NORM, il, -1), BS, qd, eps);
        moec_rmsnorm_forward_train(L->kn, L->rstd_k, L->k, P(MOEC_T_K_NORM, il, -1), BS, kvd, eps);
    }
    memcpy(L->qr, L->qn, (size_t)BS * qd * sizeof(float));
    memcpy(L->kr, L->kn, (size_t)BS * kvd * sizeof(float));
    if (hp->clip_qkv > 0) { /* OLMoE: clamp q, k (after their norms) and v, before RoPE */
        const float c = hp->clip_qkv;
        for (size_t i = 0; i < (size_t)BS * qd; i++) L->qr[i] = fminf(fmaxf(L->qr[i], -c), c);
        for (size_t i = 0; i < (size_t)BS * kvd; i++) {
            L->kr[i] = fminf(fmaxf(L->kr[i], -c), c);
            L->vc[i] = fminf(fmaxf(L->v[i], -c), c);
        }
    }
    moec_rope_pos(L->qr, BS, H, hd, m->rope_cos, m->rope_sin, m->pos);
    moec_rope_pos(L->kr, BS, Hkv, hd, m->rope_cos, m->rope_sin, m->pos);
    moec_attention_forward_train(L->att, L->probs, L->qr, L->kr, L->vc, m->B, m->S, H, Hkv, hd);
    moec_linear_forward(L->x2, d, L->att, qd, P(MOEC_T_WO, il, -1), P(MOEC_T_BO, il, -1), BS, qd, d);
    add_into(L->x2, L->x, (size_t)BS * d);
    moec_rmsnorm_forward_train(L->xn2, L->rstd2, L->x2, P(MOEC_T_FFN_NORM, il, -1), BS, d, eps);
    if (hp->layer_moe[il]) {
        float a = 0.f, zz = 0.f;
        moec_moe_forward_train(m->ffn_out, L->xn2, BS, &L->moe_cfg, &L->mp, L->moe, &a, &zz,
                               m->counts + (size_t)il * hp->n_expert);
        *aux += a;
        *z += zz;
    } else {
        const int ff = hp->n_ff_dense;
        moec_linear_forward(L->hg, ff, L->xn2, d, P(MOEC_T_MLP_GATE, il, -1), NULL, BS, d, ff);
        moec_linear_forward(L->hu, ff, L->xn2, d, P(MOEC_T_MLP_UP, il, -1), NULL, BS, d, ff);
        moec_swiglu(L->h, L->hg, L->hu, (int64_t)BS * ff);
        moec_linear_forward(m->ffn_out, d, L->h, ff, P(MOEC_T_MLP_DOWN, il, -1), NULL, BS, ff, d);
    }
    for (size_t i = 0; i < (size_t)BS * d; i++) x_out[i] = L->x2[i] + m->ffn_out[i];
}

/* On entry m->dx = dL/d(layer output); on return m->dx = dL/d(layer input). */
static void layer_backward(moec_tmodel *m, int il, float scale) {
    moec_tparams *tp = m->tp;
    const moec_hparams *hp = &tp->hp;
    layer_ws *L = &m->L[il];
    const int BS = m->BS, d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const int qd = H * hd, kvd = Hkv * hd;
    const size_t nd = (size_t)BS * d;
    /* FFN: x_out = x2 + ffn(rmsnorm(x2)) */
    memset(m->dxn, 0, nd * sizeof(float));
    if (hp->layer_moe[il]) {
        moec_moe_backward(m->dxn, &L->mg, m->dx, scale, scale, L->xn2, BS, &L->moe_cfg, &L->mp, L->moe);
    } else {
        const int ff = hp->n_ff_dense;
        const size_t nf = (size_t)BS * ff;
        memset(m->dh, 0, nf * sizeof(float));
        moec_linear_backward(m->dh, ff, G(MOEC_T_MLP_DOWN, il, -1), NULL, m->dx, d, L->h, ff,
                             P(MOEC_T_MLP_DOWN, il, -1), BS, ff, d);
        memset(m->dhg, 0, nf * sizeof(float));
        memset(m->dhu, 0, nf * sizeof(float));
        moec_swiglu_backward(m->dhg, m->dhu, m->dh, L->hg, L->hu, (int64_t)nf);
        moec_linear_backward(m->dxn, d, G(MOEC_T_MLP_GATE, il, -1), NULL, m->dhg, ff, L->xn2, d,
                             P(MOEC_T_MLP_GATE, il, -1), BS, d, ff);
        moec_linear_backward(m->dxn, d, G(MOEC_T_MLP_UP, il, -1), NULL, m->dhu, ff, L->xn2, d,
                             P(MOEC_T_MLP_UP, il, -1), BS, d, ff);
    }
    memcpy(m->dx2, m->dx, nd * sizeof(float));
    moec_rmsnorm_backward(m->dx2, G(MOEC_T_FFN_NORM, il, -1), m->dxn, L->x2, P(MOEC_T_FFN_NORM, il, -1), L->rstd2, BS,
                          d);
    /* attention: x2 = x + o_proj(attn(...)) */
    memset(m->datt, 0, (size_t)BS * qd * sizeof(float));
    moec_linear_backward(m->datt, qd, G(MOEC_T_WO, il, -1), G(MOEC_T_BO, il, -1), m->dx2, d, L->att, qd,
                         P(MOEC_T_WO, il, -1), BS, qd, d);
    memset(m->dq, 0, (size_t)BS * qd * sizeof(float));
    memset(m->dk, 0, (size_t)BS * kvd * sizeof(float));
    memset(m->dv, 0, (size_t)BS * kvd * sizeof(float));
    moec_attention_backward(m->dq, m->dk, m->dv, m->datt, L->qr, L->kr, L->vc, L->probs, m->B, m->S, H, Hkv, hd);
    moec_rope_backward(m->dq, BS, H, hd, m->rope_cos, m->rope_sin, m->pos);
    moec_rope_backward(m->dk, BS, Hkv, hd, m->rope_cos, m->rope_sin, m->pos);
    if (hp->clip_qkv > 0) { /* clamp passes the gradient only where its input was inside [-c, c] (as torch) */
        const float c = hp->clip_qkv;
        for (size_t i = 0; i < (size_t)BS * qd; i++)
            if (!(L->qn[i] >= -c && L->qn[i] <= c)) m->dq[i] = 0.f;
        for (size_t i = 0; i < (size_t)BS * kvd; i++) {
            if (!(L->kn[i] >= -c && L->kn[i] <= c)) m->dk[i] = 0.f;
            if (!(L->v[i] >= -c && L->v[i] <= c)) m->dv[i] = 0.f;
        }
    }
    float *dq_lin = m->dq, *dk_lin = m->dk;
    if (hp->arch->qk_norm != MOEC_QK_NORM_NONE) {
        const int head = hp->arch->qk_norm == MOEC_QK_NORM_HEAD;
        float *gq = m->dqn, *gk = m->dkn;
        memset(gq, 0, (size_t)BS * qd * sizeof(float));
        memset(gk, 0, (size_t)BS * kvd * sizeof(float));
        moec_rmsnorm_backward(gq, G(MOEC_T_Q_NORM, il, -1), m->dq, L->q, P(MOEC_T_Q_NORM, il, -1), L->rstd_q,
                              head ? BS * H : BS, head ? hd : qd);
        moec_rmsnorm_backward(gk, G(MOEC_T_K_NORM, il, -1), m->dk, L->k, P(MOEC_T_K_NORM, il, -1), L->rstd_k,
                              head ? BS * Hkv : BS, head ? hd : kvd);
        dq_lin = gq;
        dk_lin = gk;
    }
    memset(m->dxn, 0, nd * sizeof(float));
    moec_linear_backward(m->dxn, d, G(MOEC_T_WQ, il, -1), G(MOEC_T_BQ, il, -1), dq_lin, qd, L->xn1, d,
                         P(MOEC_T_WQ, il, -1), BS, d, qd);
    moec_linear_backward(m->dxn, d, G(MOEC_T_WK, il, -1), G(MOEC_T_BK, il, -1), dk_lin, kvd, L->xn1, d,
                         P(MOEC_T_WK, il, -1), BS, d, kvd);
    moec_linear_backward(m->dxn, d, G(MOEC_T_WV, il, -1), G(MOEC_T_BV, il, -1), m->dv, kvd, L->xn1, d,
                         P(MOEC_T_WV, il, -1), BS, d, kvd);
    memcpy(m->dx, m->dx2, nd * sizeof(float));
    moec_rmsnorm_backward(m->dx, G(MOEC_T_ATTN_NORM, il, -1), m->dxn, L->x, P(MOEC_T_ATTN_NORM, il, -1), L->rstd1, BS,
                          d);
}

/* ------------------------------------------------------------------ the step */

moec_status moec_tmodel_step(moec_tmodel *m, const int32_t *tokens, const int32_t *n_valid, float scale,
                             int backward, moec_tstep *out, moec_error *err) {
    moec_tparams *tp = m->tp;
    const moec_hparams *hp = &tp->hp;
    const int B = m->B, S = m->S, BS = m->BS, d = hp->n_embd, V = hp->n_vocab;
    for (int b = 0; b < B; b++)
        for (int s = 0; s <= S; s++) {
            int32_t id = tokens[(size_t)b * (S + 1) + s];
            if (id < 0 || id >= V)
                return moec_err(err, MOEC_ERR_INVALID_ARG, "token id %d is out of range [0, %d)", id, V);
            if (s < S) m->inp[b * S + s] = id;
            if (s > 0) m->tgt[b * S + s - 1] = n_valid && s >= n_valid[b] ? -1 : id;
        }
    int64_t n_targets = 0;
    for (int t = 0; t < BS; t++) n_targets += m->tgt[t] >= 0;
    double aux = 0, z = 0;
    memset(m->counts, 0, (size_t)hp->n_layer * (size_t)(hp->n_expert > 0 ? hp->n_expert : 1) * sizeof *m->counts);
    moec_embedding_forward(m->L[0].x, P(MOEC_T_EMBED, -1, -1), m->inp, BS, d);
    for (int il = 0; il < hp->n_layer; il++)
        layer_forward(m, il, il + 1 < hp->n_layer ? m->L[il + 1].x : m->x_final, &aux, &z);
    moec_rmsnorm_forward_train(m->xnf, m->rstdf, m->x_final, P(MOEC_T_OUT_NORM, -1, -1), BS, d, hp->rms_eps);
    const float *w_out = hp->tie_embeddings ? P(MOEC_T_EMBED, -1, -1) : P(MOEC_T_LM_HEAD, -1, -1);
    moec_linear_forward(m->logits, V, m->xnf, d, w_out, NULL, BS, d, V);
    /* dlogits overwrite the logits in place: the forward no longer needs them */
    float ce = moec_cross_entropy(backward ? m->logits : NULL, m->logits, m->tgt, BS, V, scale);
    if (out) {
        out->ce = ce;
        out->n_targets = n_targets;
        out->aux = aux;
        out->z = z;
        out->expert_counts = m->counts;
    }
    if (!backward) return MOEC_OK;
    float *gw_out = hp->tie_embeddings ? G(MOEC_T_EMBED, -1, -1) : G(MOEC_T_LM_HEAD, -1, -1);
    memset(m->dxn, 0, (size_t)BS * d * sizeof(float));
    moec_linear_backward(m->dxn, d, gw_out, NULL, m->logits, V, m->xnf, d, w_out, BS, d, V);
    memset(m->dx, 0, (size_t)BS * d * sizeof(float));
    moec_rmsnorm_backward(m->dx, G(MOEC_T_OUT_NORM, -1, -1), m->dxn, m->x_final, P(MOEC_T_OUT_NORM, -1, -1), m->rstdf,
                          BS, d);
    for (int il = hp->n_layer - 1; il >= 0; il--) layer_backward(m, il, scale);
    moec_embedding_backward(G(MOEC_T_EMBED, -1, -1), m->dx, m->inp, BS, d);
    return MOEC_OK;
}
