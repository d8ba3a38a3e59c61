/* layer.c — the one decoder layer (see layer.h): activations, forward, backward. */
#include "model/layer.h"

#include "core/error.h"
#include "core/mem.h"
#include "moe/experts.h"
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/ops_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ activations */

typedef struct {
    float **ptr;
    size_t n;
} fspan;

/* The spans of one layer's activations; n = 0 spans stay NULL (or alias, set after). */
static int layer_spans(fspan *tab, moec_layer_acts *a, const moec_hparams *hp, int il, int T, int B, int S,
                       int with_probs) {
    const size_t t = (size_t)T, d = (size_t)hp->n_embd, H = (size_t)hp->n_head, Hkv = (size_t)hp->n_head_kv;
    const size_t qd = H * (size_t)hp->head_dim, kvd = Hkv * (size_t)hp->head_dim;
    const int qkn = hp->arch->qk_norm != MOEC_QK_NORM_NONE, head = hp->arch->qk_norm == MOEC_QK_NORM_HEAD;
    int any_dense = 0;
    for (int i = 0; i < hp->n_layer; i++) any_dense |= !hp->layer_moe[i];
    const size_t ff = (il < 0 ? any_dense : !hp->layer_moe[il]) ? (size_t)hp->n_ff_dense : 0;
    int n = 0;
    tab[n++] = (fspan){&a->x, t * d};
    tab[n++] = (fspan){&a->xn1, t * d};
    tab[n++] = (fspan){&a->rstd1, t};
    tab[n++] = (fspan){&a->q, t * qd};
    tab[n++] = (fspan){&a->k, t * kvd};
    tab[n++] = (fspan){&a->v, t * kvd};
    tab[n++] = (fspan){&a->qn, qkn ? t * qd : 0};
    tab[n++] = (fspan){&a->kn, qkn ? t * kvd : 0};
    tab[n++] = (fspan){&a->rstd_q, qkn ? t * (head ? H : 1) : 0};
    tab[n++] = (fspan){&a->rstd_k, qkn ? t * (head ? Hkv : 1) : 0};
    tab[n++] = (fspan){&a->qr, t * qd};
    tab[n++] = (fspan){&a->kr, t * kvd};
    tab[n++] = (fspan){&a->vc, hp->clip_qkv > 0 ? t * kvd : 0};
    tab[n++] = (fspan){&a->probs, with_probs ? (size_t)B * H * (size_t)S * (size_t)S : 0};
    tab[n++] = (fspan){&a->att, t * qd};
    tab[n++] = (fspan){&a->x2, t * d};
    tab[n++] = (fspan){&a->xn2, t * d};
    tab[n++] = (fspan){&a->rstd2, t};
    tab[n++] = (fspan){&a->ffn_out, t * d};
    tab[n++] = (fspan){&a->hg, t * ff};
    tab[n++] = (fspan){&a->hu, t * ff};
    tab[n++] = (fspan){&a->h, t * ff};
    const int moe_here = il < 0 ? 1 : hp->layer_moe[il];
    const size_t C = hp->n_expert > 0 && moe_here ? (size_t)hp->route.coe_iters : 0;
    tab[n++] = (fspan){&a->coe_x, C ? (C + 1) * t * d : 0};
    return n;
}

size_t moec_layer_acts_bytes(const moec_layer_acts *a) {
    if (!a || !a->mem) return 0;
    size_t b = a->bytes + moec_moe_ws_bytes(a->moe);
    for (int t = 1; t < MOEC_MAX_COE_ITERS; t++) b += moec_moe_ws_bytes(a->moe_iter[t]);
    return b;
}

moec_status moec_layer_acts_new(moec_layer_acts *a, const moec_hparams *hp, int il, int T, int B, int S, int keep,
                                int with_probs, moec_error *err) {
    memset(a, 0, sizeof *a);
    fspan tab[32];
    const int n = layer_spans(tab, a, hp, il, T, B, S, with_probs);
    size_t total = 64; /* room to align the base */
    for (int i = 0; i < n; i++) {
        if (tab[i].n > (SIZE_MAX / 8) / sizeof(float))
            return moec_err(err, MOEC_ERR_INVALID_ARG, "layer activations overflow for %d tokens", T);
        total += (tab[i].n * sizeof(float) + 63) & ~(size_t)63;
    }
    moec_status cst = moec_mem_check(total, "layer activations", err);
    if (cst) return cst;
    /* calloc: zeroed without touching the pages up front (large blocks come from mmap) */
    a->mem = calloc(1, total);
    if (!a->mem) return moec_err(err, MOEC_ERR_OOM, "out of memory for activations (%d tokens, %zu MB)", T, total >> 20);
    a->bytes = total;
    char *p = (char *)(((uintptr_t)a->mem + 63) & ~(uintptr_t)63);
    for (int i = 0; i < n; i++) {
        *tab[i].ptr = tab[i].n ? (float *)p : NULL;
        p += (tab[i].n * sizeof(float) + 63) & ~(size_t)63;
    }
    if (!a->qn) a->qn = a->q;
    if (!a->kn) a->kn = a->k;
    if (!a->vc) a->vc = a->v;
    int moe = 0;
    for (int i = 0; i < hp->n_layer; i++) moe |= hp->layer_moe[i] && (il < 0 || i == il);
    if (moe) {
        moec_status st = moec_moe_ws_new(&a->moe, hp, T, keep, err);
        /* Chain-of-Experts: the training backward needs every iteration's activations */
        for (int t = 1; !st && keep && t < hp->route.coe_iters; t++) st = moec_moe_ws_new(&a->moe_iter[t], hp, T, keep, err);
        if (!st && hp->route.coe_iters > 0) {
            a->coe_counts = calloc((size_t)moec_hparams_n_route(hp), sizeof *a->coe_counts);
            if (!a->coe_counts) st = moec_err(err, MOEC_ERR_OOM, "out of memory for Chain-of-Experts counts");
        }
        if (st) {
            moec_layer_acts_free(a);
            return st;
        }
    }
    return MOEC_OK;
}

void moec_layer_acts_free(moec_layer_acts *a) {
    if (!a) return;
    free(a->mem);
    moec_moe_ws_free(a->moe);
    for (int t = 1; t < MOEC_MAX_COE_ITERS; t++) moec_moe_ws_free(a->moe_iter[t]);
    free(a->coe_counts);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------------ Chain-of-Experts */

/* The view of iteration t: the layer with iteration t's router (the experts are the same). */
static moec_layer coe_view(const moec_hparams *hp, const moec_layer *L, int t) {
    moec_layer v = *L;
    if (t > 0 && !hp->route.coe_shared_gate) v.router = L->router_iter[t];
    return v;
}

static moec_moe_ws *coe_ws(moec_layer_acts *a, int t) { return t > 0 && a->moe_iter[t] ? a->moe_iter[t] : a->moe; }

/* y = x_C [+ x2]: x_0 = xn2, x_{t+1} = [x_t +] MoE_t(x_t). st: the iterations' statistics summed
 * (counts into a->coe_counts; routing = the last iteration's). */
static void coe_forward(const moec_hparams *hp, const moec_layer *L, moec_layer_acts *a, const moec_layer_ctx *c,
                        float *y, moec_moe_stats *st) {
    const moec_router_cfg *rc = &hp->route;
    const int T = c->T, C = rc->coe_iters, E = moec_hparams_n_route(hp);
    const size_t nd = (size_t)T * hp->n_embd;
    memcpy(a->coe_x, a->xn2, nd * sizeof(float));
    moec_moe_stats sum = {0};
    memset(a->coe_counts, 0, (size_t)E * sizeof *a->coe_counts);
    for (int t = 0; t < C; t++) {
        const moec_layer Lt = coe_view(hp, L, t);
        const float *xt = a->coe_x + (size_t)t * nd;
        float *xn = a->coe_x + (size_t)(t + 1) * nd;
        moec_moe_stats s = {0};
        moec_moe_forward(coe_ws(a, t), hp, &Lt, xn, xt, T, c->moe_call, &s);
        if (rc->coe_inner_residual)
            for (size_t i = 0; i < nd; i++) xn[i] += xt[i];
        sum.aux += s.aux, sum.z += s.z, sum.entropy_sum += s.entropy_sum;
        sum.n_assigned += s.n_assigned, sum.n_dropped += s.n_dropped, sum.n_true += s.n_true;
        sum.n_true_chosen += s.n_true_chosen, sum.n_zero_compute += s.n_zero_compute;
        for (int e = 0; e < E; e++) a->coe_counts[e] += s.counts[e];
        sum.routing = s.routing;
    }
    sum.counts = a->coe_counts;
    if (st) *st = sum;
    const float *xc = a->coe_x + (size_t)C * nd;
    for (size_t i = 0; i < nd; i++) y[i] = (rc->coe_outer_residual ? a->x2[i] : 0.f) + xc[i];
}

/* Backward of coe_forward: dy = ∂ℓ/∂y; on return s->dxn = ∂ℓ/∂xn2 (the caller adds the outer
 * residual's dy into ∂ℓ/∂x2). */
static void coe_backward(const moec_hparams *hp, const moec_layer *L, const moec_layer *G, moec_layer_acts *a, int T,
                         const float *dy, const moec_layer_grad_scratch *s, float dloss) {
    const moec_router_cfg *rc = &hp->route;
    const int C = rc->coe_iters;
    const size_t nd = (size_t)T * hp->n_embd;
    const float *g = dy;
    float *buf[2] = {s->dxn, s->dx2};
    for (int t = C - 1; t >= 0; t--) {
        float *dst = buf[(C - 1 - t) & 1];
        if (rc->coe_inner_residual) memcpy(dst, g, nd * sizeof(float));
        else memset(dst, 0, nd * sizeof(float));
        const moec_layer Lt = coe_view(hp, L, t), Gt = coe_view(hp, G, t);
        moec_moe_backward(coe_ws(a, t), hp, &Lt, &Gt, dst, g, a->coe_x + (size_t)t * nd, T, dloss);
        g = dst;
    }
    if (g != s->dxn) memcpy(s->dxn, g, nd * sizeof(float));
}

/* ------------------------------------------------------------------ forward */

static void clamp_copy(float *y, const float *x, size_t n, float c) {
    for (size_t i = 0; i < n; i++) y[i] = fminf(fmaxf(x[i], -c), c);
}

void moec_layer_forward(const moec_hparams *hp, const moec_layer *L, int il, moec_layer_acts *a,
                        const moec_layer_ctx *c, float *y, moec_moe_stats *st) {
    const int T = c->T, d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const int qd = H * hd, kvd = Hkv * hd;
    const float eps = hp->rms_eps;
    /* attention block */
    moec_rmsnorm_forward_train(a->xn1, a->rstd1, a->x, L->attn_norm, T, d, eps);
    moec_linear(a->q, qd, a->xn1, d, &L->wq, L->bq, T);
    moec_linear(a->k, kvd, a->xn1, d, &L->wk, L->bk, T);
    moec_linear(a->v, kvd, a->xn1, d, &L->wv, L->bv, T);
    if (hp->arch->qk_norm == MOEC_QK_NORM_HEAD) { /* Qwen3: per head, weight [hd] */
        moec_rmsnorm_forward_train(a->qn, a->rstd_q, a->q, L->q_norm, T * H, hd, eps);
        moec_rmsnorm_forward_train(a->kn, a->rstd_k, a->k, L->k_norm, T * Hkv, hd, eps);
    } else if (hp->arch->qk_norm == MOEC_QK_NORM_FULL) { /* OLMoE: over the whole projection */
        moec_rmsnorm_forward_train(a->qn, a->rstd_q, a->q, L->q_norm, T, qd, eps);
        moec_rmsnorm_forward_train(a->kn, a->rstd_k, a->k, L->k_norm, T, kvd, eps);
    }
    if (hp->clip_qkv > 0) { /* OLMoE clamps q, k (after their norms) and v, before RoPE */
        clamp_copy(a->qr, a->qn, (size_t)T * qd, hp->clip_qkv);
        clamp_copy(a->kr, a->kn, (size_t)T * kvd, hp->clip_qkv);
        clamp_copy(a->vc, a->v, (size_t)T * kvd, hp->clip_qkv);
    } else {
        memcpy(a->qr, a->qn, (size_t)T * qd * sizeof(float));
        memcpy(a->kr, a->kn, (size_t)T * kvd * sizeof(float));
    }
    moec_rope_pos(a->qr, T, H, hd, c->rope_cos, c->rope_sin, c->pos);
    moec_rope_pos(a->kr, T, Hkv, hd, c->rope_cos, c->rope_sin, c->pos);
    if (c->k_cache) {
        /* append to the cache: [kv head][position][hd] keeps each head's keys contiguous */
        for (int t = 0; t < T; t++)
            for (int h = 0; h < Hkv; h++) {
                const size_t dst = ((size_t)h * c->n_ctx + (size_t)(c->n_past + t)) * hd;
                memcpy(c->k_cache + dst, a->kr + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
                memcpy(c->v_cache + dst, a->vc + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
            }
        moec_attention(a->att, a->qr, c->k_cache, c->v_cache, T, c->n_past, H, Hkv, hd, c->n_ctx,
                       hp->layer_swa[il] ? hp->sliding_window : 0, c->att_scratch, c->att_rows);
    } else {
        moec_attention_forward_train(a->att, a->probs, a->qr, a->kr, a->vc, c->B, c->S, H, Hkv, hd);
    }
    moec_linear(a->x2, d, a->att, qd, &L->wo, L->bo, T);
    for (size_t i = 0; i < (size_t)T * d; i++) a->x2[i] += a->x[i];
    /* FFN block */
    moec_rmsnorm_forward_train(a->xn2, a->rstd2, a->x2, L->ffn_norm, T, d, eps);
    if (L->is_moe && hp->route.coe_iters > 0) {
        coe_forward(hp, L, a, c, y, st);
        return;
    }
    if (L->is_moe) {
        moec_moe_forward(a->moe, hp, L, a->ffn_out, a->xn2, T, c->moe_call, st);
    } else if (c->keep) {
        const int ff = hp->n_ff_dense;
        moec_linear(a->hg, ff, a->xn2, d, &L->dense.gate, NULL, T);
        moec_linear(a->hu, ff, a->xn2, d, &L->dense.up, NULL, T);
        moec_swiglu(a->h, a->hg, a->hu, (int64_t)T * ff);
        moec_linear(a->ffn_out, d, a->h, ff, &L->dense.down, NULL, T);
    } else {
        const moec_ffn *f = &L->dense;
        int32_t off[2] = {0, T}, items[3];
        moec_ffn_grouped(a->ffn_out, a->xn2, &f, off, 1, d, hp->n_ff_dense, a->hg, a->hu, items);
    }
    for (size_t i = 0; i < (size_t)T * d; i++) y[i] = a->x2[i] + a->ffn_out[i];
}

/* ------------------------------------------------------------------ backward */

static float *gvec(const float *p) { return (float *)p; } /* gradient views hold writable buffers */
static float *gmat(const moec_mat *m) { return (float *)m->data; }
static const float *wmat(const moec_mat *m) {
    MOEC_ASSERT(m->dtype == MOEC_DTYPE_F32);
    return (const float *)m->data;
}

void moec_layer_backward(const moec_hparams *hp, const moec_layer *L, const moec_layer *G, int il,
                         moec_layer_acts *a, const moec_layer_ctx *c, float *dx, const moec_layer_grad_scratch *s,
                         float dloss) {
    (void)il;
    MOEC_ASSERT(!c->k_cache);
    const int T = c->T, d = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const int qd = H * hd, kvd = Hkv * hd;
    const size_t nd = (size_t)T * d;
    /* FFN: y = x2 + ffn(rmsnorm(x2)) */
    memset(s->dxn, 0, nd * sizeof(float));
    if (L->is_moe && hp->route.coe_iters > 0) {
        coe_backward(hp, L, G, a, T, dx, s, dloss);
        if (!hp->route.coe_outer_residual) memset(dx, 0, nd * sizeof(float)); /* y = x_C: x2 reaches y only through xn2 */
    } else if (L->is_moe) {
        moec_moe_backward(a->moe, hp, L, G, s->dxn, dx, a->xn2, T, dloss);
    } else {
        const int ff = hp->n_ff_dense;
        const size_t nf = (size_t)T * ff;
        memset(s->dh, 0, nf * sizeof(float));
        moec_linear_backward(s->dh, ff, gmat(&G->dense.down), NULL, dx, d, a->h, ff, wmat(&L->dense.down), T, ff, d);
        memset(s->dhg, 0, nf * sizeof(float));
        memset(s->dhu, 0, nf * sizeof(float));
        moec_swiglu_backward(s->dhg, s->dhu, s->dh, a->hg, a->hu, (int64_t)nf);
        moec_linear_backward(s->dxn, d, gmat(&G->dense.gate), NULL, s->dhg, ff, a->xn2, d, wmat(&L->dense.gate), T,
                             d, ff);
        moec_linear_backward(s->dxn, d, gmat(&G->dense.up), NULL, s->dhu, ff, a->xn2, d, wmat(&L->dense.up), T, d,
                             ff);
    }
    memcpy(s->dx2, dx, nd * sizeof(float));
    moec_rmsnorm_backward(s->dx2, gvec(G->ffn_norm), s->dxn, a->x2, L->ffn_norm, a->rstd2, T, d);
    /* attention: x2 = x + o_proj(attn(...)) */
    memset(s->datt, 0, (size_t)T * qd * sizeof(float));
    moec_linear_backward(s->datt, qd, gmat(&G->wo), gvec(G->bo), s->dx2, d, a->att, qd, wmat(&L->wo), T, qd, d);
    memset(s->dq, 0, (size_t)T * qd * sizeof(float));
    memset(s->dk, 0, (size_t)T * kvd * sizeof(float));
    memset(s->dv, 0, (size_t)T * kvd * sizeof(float));
    moec_attention_backward(s->dq, s->dk, s->dv, s->dprobs, s->datt, a->qr, a->kr, a->vc, a->probs, c->B, c->S,
                            H, Hkv, hd);
    moec_rope_backward(s->dq, T, H, hd, c->rope_cos, c->rope_sin, c->pos);
    moec_rope_backward(s->dk, T, Hkv, hd, c->rope_cos, c->rope_sin, c->pos);
    if (hp->clip_qkv > 0) { /* clamp passes the gradient only where its input was inside [-c, c] (as torch) */
        const float cl = hp->clip_qkv;
        for (size_t i = 0; i < (size_t)T * qd; i++)
            if (!(a->qn[i] >= -cl && a->qn[i] <= cl)) s->dq[i] = 0.f;
        for (size_t i = 0; i < (size_t)T * kvd; i++) {
            if (!(a->kn[i] >= -cl && a->kn[i] <= cl)) s->dk[i] = 0.f;
            if (!(a->v[i] >= -cl && a->v[i] <= cl)) s->dv[i] = 0.f;
        }
    }
    float *dq_lin = s->dq, *dk_lin = s->dk;
    if (hp->arch->qk_norm != MOEC_QK_NORM_NONE) {
        const int head = hp->arch->qk_norm == MOEC_QK_NORM_HEAD;
        memset(s->dqn, 0, (size_t)T * qd * sizeof(float));
        memset(s->dkn, 0, (size_t)T * kvd * sizeof(float));
        moec_rmsnorm_backward(s->dqn, gvec(G->q_norm), s->dq, a->q, L->q_norm, a->rstd_q, head ? T * H : T,
                              head ? hd : qd);
        moec_rmsnorm_backward(s->dkn, gvec(G->k_norm), s->dk, a->k, L->k_norm, a->rstd_k, head ? T * Hkv : T,
                              head ? hd : kvd);
        dq_lin = s->dqn;
        dk_lin = s->dkn;
    }
    memset(s->dxn, 0, nd * sizeof(float));
    moec_linear_backward(s->dxn, d, gmat(&G->wq), gvec(G->bq), dq_lin, qd, a->xn1, d, wmat(&L->wq), T, d, qd);
    moec_linear_backward(s->dxn, d, gmat(&G->wk), gvec(G->bk), dk_lin, kvd, a->xn1, d, wmat(&L->wk), T, d, kvd);
    moec_linear_backward(s->dxn, d, gmat(&G->wv), gvec(G->bv), s->dv, kvd, a->xn1, d, wmat(&L->wv), T, d, kvd);
    memcpy(dx, s->dx2, nd * sizeof(float));
    moec_rmsnorm_backward(dx, gvec(G->attn_norm), s->dxn, a->x, L->attn_norm, a->rstd1, T, d);
}
