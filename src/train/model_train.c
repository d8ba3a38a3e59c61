/* model_train.c — the training driver of the one decoder layer (model/layer.c): weight and
 * gradient views over the fp32 parameters, per-layer activations, the loss and the backward.
 * Reads top to bottom in data-flow order: views and workspace, the step. */
#include "train/model_train.h"

#include "core/error.h"
#include "core/mem.h"
#include "model/layer.h"
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/ops_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct moec_tmodel {
    moec_tparams *tp;
    moec_hparams hp;              /* the model's, with the caller's loss-coefficient overrides */
    int B, S, BS;
    moec_model wv, gv;            /* weight and gradient views (F32) of tp->w, tp->g */
    moec_layer_acts *acts;        /* [n_layer] */
    float *x_final, *xnf, *rstdf; /* [BS, d] output of the last layer, normed, [BS] */
    float *logits;                /* [BS, V] (dlogits in place in the backward) */
    float *rope_cos, *rope_sin;   /* [S, hd/2] */
    int32_t *pos, *inp, *tgt;     /* [BS] */
    float *dx;                    /* [BS, d] */
    moec_layer_grad_scratch gs;
    int32_t *counts;              /* [n_layer, E] (E = the router width: FFN then zero-computation experts) */
    moec_tlayer_stats *lstats;    /* [n_layer] */
    const int64_t *global_counts; /* [n_layer, E] or NULL */
    int64_t global_tokens;
    moec_rng noise;
    int noise_on;
    int64_t route_step; /* 0-based optimizer step of the following steps (moec_tmodel_set_step) */
    moec_rng serve_rng; /* evaluation draws of random serving rules (THOR), reseeded every step */
    float *pair_p;      /* [2V] the pair step's softmax rows (moec_tmodel_pair_step) */
    uint8_t *psr_mask;            /* [n_layer, E] ReXMoE PSR masks of the current step (NULL: none) */
    moec_route_opts *psr_opts;    /* [n_layer] */
    int psr_on;
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
    if (m->acts)
        for (int il = 0; il < m->hp.n_layer; il++) moec_layer_acts_free(&m->acts[il]);
    free(m->acts);
    moec_model_free_tables(&m->wv);
    moec_model_free_tables(&m->gv);
    free(m->counts);
    free(m->lstats);
    free(m->psr_mask);
    free(m->psr_opts);
    free(m->pos); /* inp and tgt live in the same block */
    free(m->pair_p);
    free(m);
}

size_t moec_tmodel_bytes(const moec_tmodel *m) {
    size_t b = m->bytes;
    for (int il = 0; il < m->hp.n_layer; il++) b += moec_layer_acts_bytes(&m->acts[il]);
    return b;
}

/* Binds every parameter (grad = 0) or gradient (grad = 1) buffer into a weight view. */
static void bind_view(moec_model *v, const moec_tparams *tp, int grad) {
    float *base = grad ? tp->g : tp->w;
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *sp = &tp->specs[i];
        float *p = base + tp->offset[i];
        const moec_mat mat = {p, MOEC_DTYPE_F32, sp->shape[0], sp->shape[1]};
        moec_model_bind(v, sp, mat, p);
    }
    if (v->hp.tie_embeddings) v->output = v->tok_embd;
}

moec_status moec_tmodel_new(moec_tmodel **out, moec_tparams *tp, int B, int S, float aux_coef, float z_coef,
                            moec_error *err) {
    *out = NULL;
    const moec_hparams *thp = &tp->hp;
    if (B < 1 || S < 1 || (int64_t)B * S > (1 << 24))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "batch %d x sequence %d is out of range", B, S);
    if (S > thp->max_pos)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "sequence length %d exceeds max_position_embeddings %d", S, thp->max_pos);
    moec_tmodel *m = calloc(1, sizeof *m);
    if (!m) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    m->tp = tp;
    m->hp = *thp;
    if (aux_coef >= 0.f) m->hp.route.aux_coef = aux_coef;
    if (z_coef >= 0.f) m->hp.route.z_coef = z_coef;
    const moec_hparams *hp = &m->hp;
    m->B = B;
    m->S = S;
    m->BS = B * S;
    m->wv.hp = m->gv.hp = m->hp;
    moec_status st;
    if ((st = moec_model_alloc_tables(&m->wv, err)) || (st = moec_model_alloc_tables(&m->gv, err))) {
        moec_tmodel_free(m);
        return st;
    }
    bind_view(&m->wv, tp, 0);
    bind_view(&m->gv, tp, 1);
    const size_t BS = (size_t)m->BS, d = (size_t)hp->n_embd, hd = (size_t)hp->head_dim;
    const size_t qd = (size_t)hp->n_head * hd, kvd = (size_t)hp->n_head_kv * hd;
    const size_t E = hp->n_expert > 0 ? (size_t)hp->route.n_expert : 1;
    m->acts = calloc((size_t)hp->n_layer, sizeof *m->acts);
    m->counts = calloc((size_t)hp->n_layer * E, sizeof *m->counts);
    m->lstats = calloc((size_t)hp->n_layer, sizeof *m->lstats);
    if (!m->acts || !m->counts || !m->lstats) goto oom;
    if (hp->n_expert > 0 && hp->route.rex_psr_end > 0) {
        m->psr_mask = calloc((size_t)hp->n_layer * E, 1);
        m->psr_opts = calloc((size_t)hp->n_layer, sizeof *m->psr_opts);
        if (!m->psr_mask || !m->psr_opts) goto oom;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        if ((st = moec_layer_acts_new(&m->acts[il], hp, il, m->BS, B, S, 1, 1, err))) {
            moec_tmodel_free(m);
            return st;
        }
        /* every layer's activations are alike: refuse a run whose layers cannot all fit before
         * the next ones are allocated and touched (each allocation is checked on its own too) */
        size_t all = 0;
        if (il == 0 && (!moec_size_muladd(&all, moec_layer_acts_bytes(&m->acts[0]), (size_t)hp->n_layer) ||
                        (st = moec_mem_check(all, "training activations", err)))) {
            if (!st) st = moec_err(err, MOEC_ERR_OOM, "training activations: size overflows");
            moec_tmodel_free(m);
            return st;
        }
    }
    const size_t V = (size_t)hp->n_vocab, ff = (size_t)hp->n_ff_dense, wide = qd > d ? qd : d;
    moec_layer_grad_scratch *g = &m->gs;
    if (!(m->x_final = falloc(m, BS * d)) || !(m->xnf = falloc(m, BS * d)) || !(m->rstdf = falloc(m, BS)) ||
        !(m->logits = falloc(m, BS * V)) || !(m->rope_cos = falloc(m, (size_t)S * hd / 2)) ||
        !(m->rope_sin = falloc(m, (size_t)S * hd / 2)) || !(m->dx = falloc(m, BS * d)) ||
        !(g->dx2 = falloc(m, BS * d)) || !(g->dxn = falloc(m, BS * d)) || !(g->dq = falloc(m, BS * wide)) ||
        !(g->dk = falloc(m, BS * kvd)) || !(g->dv = falloc(m, BS * kvd)) || !(g->datt = falloc(m, BS * wide)) ||
        !(g->dqn = falloc(m, BS * wide)) || !(g->dkn = falloc(m, BS * kvd)) || !(g->dh = falloc(m, BS * ff)) ||
        !(g->dhg = falloc(m, BS * ff)) || !(g->dhu = falloc(m, BS * ff)) ||
        !(g->dprobs = falloc(m, BS * (size_t)S * (size_t)hp->n_head)))
        goto oom;
    m->pos = calloc(BS * 3, sizeof *m->pos);
    if (!m->pos) goto oom;
    m->inp = m->pos + BS;
    m->tgt = m->pos + 2 * BS;
    for (size_t t = 0; t < BS; t++) m->pos[t] = (int32_t)(t % (size_t)S);
    if (moec_rope_fill(m->rope_cos, m->rope_sin, S, hp->head_dim, &hp->rope)) goto oom;
    *out = m;
    return MOEC_OK;
oom:
    moec_tmodel_free(m);
    return moec_err(err, MOEC_ERR_OOM, "out of memory for training activations (batch %d x seq %d)", B, S);
}

const moec_hparams *moec_tmodel_hparams(const moec_tmodel *m) { return &m->hp; }

const float *moec_tmodel_logits(const moec_tmodel *m) { return m->logits; }

void moec_tmodel_set_global_counts(moec_tmodel *m, const int64_t *counts, int64_t tokens) {
    m->global_counts = counts;
    m->global_tokens = tokens;
}


void moec_tmodel_set_noise(moec_tmodel *m, int on, uint64_t seed) {
    if (on) moec_rng_seed(&m->noise, seed);
    m->noise_on = on;
}

void moec_tmodel_set_label_smoothing(moec_tmodel *m, float eps) { m->hp.label_smoothing = eps; }

/* Label smoothing (torch.nn.functional.cross_entropy(label_smoothing=ε)): per valid row
 *   (1 − ε)·CE + ε·mean_v(−ln p_v) = CE + ε·(z_tgt − mean_v z_v),
 * the plain CE plus a term linear in the logits z. Returns Σ over valid rows of (z_tgt − mean_v z_v)
 * (in double, row order); smooth_grad adds that term's gradient g·ε·(onehot − 1/V) to dlogits. */
static double smooth_sum(const float *logits, const int32_t *tgt, int BS, int V) {
    double acc = 0;
    for (int t = 0; t < BS; t++) {
        if (tgt[t] < 0) continue;
        const float *l = logits + (size_t)t * V;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += l[v];
        acc += l[tgt[t]] - sum / V;
    }
    return acc;
}

static void smooth_grad(float *dlogits, const int32_t *tgt, int BS, int V, double g) {
    const float off = (float)(-g / V), on = (float)(g - g / V);
    for (int t = 0; t < BS; t++) {
        if (tgt[t] < 0) continue;
        float *d = dlogits + (size_t)t * V;
        for (int v = 0; v < V; v++) d[v] += v == tgt[t] ? on : off;
    }
}

void moec_tmodel_set_step(moec_tmodel *m, int64_t step, int train, uint64_t seed) {
    const moec_hparams *hp = &m->hp;
    m->route_step = step;
    m->psr_on = train && m->psr_mask;
    if (!m->psr_on) return;
    const size_t E = (size_t)hp->route.n_expert;
    for (int il = 0; il < hp->n_layer; il++) { /* PSR counts steps from 1 */
        moec_rex_mask(&hp->route, hp->n_expert, step + 1, seed, il, m->psr_mask + (size_t)il * E);
        m->psr_opts[il] = (moec_route_opts){.expert_mask = m->psr_mask + (size_t)il * E};
    }
}

/* ------------------------------------------------------------------ the step */

static void backward_from_logits(moec_tmodel *m, float scale);

moec_status moec_tmodel_step(moec_tmodel *m, const int32_t *tokens, const int32_t *n_valid, float scale,
                             int backward, moec_tstep *out, moec_error *err) {
    moec_tparams *tp = m->tp;
    const moec_hparams *hp = &m->hp;
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
    const size_t E = hp->n_expert > 0 ? (size_t)hp->route.n_expert : 1;
    memset(m->counts, 0, (size_t)hp->n_layer * E * sizeof *m->counts);
    double aux = 0, z = 0;
    moec_embedding_forward(m->acts[0].x, moec_tparams_find(tp, 0, MOEC_T_EMBED, -1, -1), m->inp, BS, d);
    /* the routing carry (moe.h): layer il reads the previous MoE layer's carry out, and its
     * backward reads the next MoE layer's ∂/∂carry_in, which that layer's backward fills first */
    int prev_moe = -1;
    for (int il = 0; il < hp->n_layer; il++) {
        if (il == 0) moec_rng_seed(&m->serve_rng, 0x7407 + (uint64_t)m->route_step); /* reproducible evaluation */
        int next_moe = il + 1;
        while (next_moe < hp->n_layer && !hp->layer_moe[next_moe]) next_moe++;
        const int carry = hp->layer_moe[il] && moec_moe_carry_dim(hp) > 0;
        const moec_moe_call call = {.opts = m->psr_on ? &m->psr_opts[il] : NULL, .losses = 1, .seq_len = S,
                                    .carry_in = carry && prev_moe >= 0 ? moec_moe_carry(m->acts[prev_moe].moe) : NULL,
                                    .dcarry_out = carry && backward && next_moe < hp->n_layer
                                                      ? moec_moe_dcarry(m->acts[next_moe].moe) : NULL,
                                    .global_counts = m->global_counts ? m->global_counts + (size_t)il * E : NULL,
                                    .global_tokens = m->global_tokens, .jitter_rng = m->noise_on ? &m->noise : NULL,
                                    .train = backward, .token_ids = m->inp, .step = m->route_step,
                                    .serve_rng = m->noise_on ? NULL : &m->serve_rng,
                                    .seq_rng = m->noise_on ? NULL : &m->serve_rng};
        const moec_layer_ctx c = {.T = BS, .pos = m->pos, .rope_cos = m->rope_cos, .rope_sin = m->rope_sin,
                                  .keep = 1, .B = B, .S = S, .moe_call = &call};
        moec_moe_stats st = {0};
        float *y = il + 1 < hp->n_layer ? m->acts[il + 1].x : m->x_final;
        moec_layer_forward(hp, &m->wv.layers[il], il, &m->acts[il], &c, y, &st);
        moec_tlayer_stats *ls = &m->lstats[il];
        memset(ls, 0, sizeof *ls);
        if (st.counts) {
            aux += st.aux;
            z += st.z;
            for (size_t e = 0; e < E; e++) m->counts[(size_t)il * E + e] = (int32_t)st.counts[e];
            ls->assigned = st.n_assigned;
            ls->dropped = st.n_dropped;
            ls->entropy_sum = st.entropy_sum;
            ls->tokens = BS;
            ls->true_assigned = st.n_true_chosen;
            prev_moe = il;
        }
    }
    moec_rmsnorm_forward_train(m->xnf, m->rstdf, m->x_final, m->wv.out_norm, BS, d, hp->rms_eps);
    moec_linear(m->logits, V, m->xnf, d, &m->wv.output, NULL, BS);
    /* label smoothing is a training objective: evaluation (no backward) reports the plain CE */
    const double eps = backward && n_targets ? hp->label_smoothing : 0.0;
    const double smooth = eps > 0 ? smooth_sum(m->logits, m->tgt, BS, V) : 0.0;
    /* dlogits overwrite the logits in place: the forward no longer needs them */
    float ce = moec_cross_entropy(backward ? m->logits : NULL, m->logits, m->tgt, BS, V, scale);
    if (eps > 0) {
        ce = (float)(ce + eps * smooth / (double)n_targets);
        smooth_grad(m->logits, m->tgt, BS, V, eps * scale / (double)n_targets);
    }
    if (out) {
        out->ce = ce;
        out->n_targets = n_targets;
        out->aux = aux;
        out->z = z;
        out->expert_counts = m->counts;
        out->layers = m->lstats;
    }
    if (!backward) return MOEC_OK;
    backward_from_logits(m, scale);
    return MOEC_OK;
}

/* The backward of the last forward, from m->logits holding ∂ℓ/∂logits; dloss scales the MoE
 * layers' own losses (aux, z). */
static void backward_from_logits(moec_tmodel *m, float scale) {
    const moec_hparams *hp = &m->hp;
    moec_tparams *tp = m->tp;
    const int B = m->B, S = m->S, BS = m->BS, d = hp->n_embd, V = hp->n_vocab;
    const float *w_out = (const float *)m->wv.output.data;
    float *gw_out = (float *)m->gv.output.data;
    memset(m->gs.dxn, 0, (size_t)BS * d * sizeof(float));
    moec_linear_backward(m->gs.dxn, d, gw_out, NULL, m->logits, V, m->xnf, d, w_out, BS, d, V);
    memset(m->dx, 0, (size_t)BS * d * sizeof(float));
    moec_rmsnorm_backward(m->dx, (float *)m->gv.out_norm, m->gs.dxn, m->x_final, m->wv.out_norm, m->rstdf, BS, d);
    for (int il = hp->n_layer - 1; il >= 0; il--) {
        const moec_layer_ctx c = {.T = BS, .pos = m->pos, .rope_cos = m->rope_cos, .rope_sin = m->rope_sin,
                                  .keep = 1, .B = B, .S = S};
        moec_layer_backward(hp, &m->wv.layers[il], &m->gv.layers[il], il, &m->acts[il], &c, m->dx, &m->gs, scale);
    }
    moec_embedding_backward(moec_tparams_find(tp, 1, MOEC_T_EMBED, -1, -1), m->dx, m->inp, BS, d);
}

/* ------------------------------------------------------------------ two passes (THOR) */

/* One row's ½·CE gradient and (α/4)·∂symKL/∂logits for both passes, in place; returns the row's
 * symmetric KL Σ_v (p1 − p2)(ln p1 − ln p2) and adds the label-smoothed CE (label smoothing ε; 0 =
 * plain) −(1 − ε)·ln p[tgt] − ε·mean_v ln p_v of each pass to ce1, ce2 (its gradient
 * p − (1 − ε)·onehot − ε/V).
 *   ∂/∂l1 Σ (p1 − p2)(ln p1 − ln p2) = p1 ⊙ (a − Σ p1·a) + p1 − p2,  a = ln p1 − ln p2, and
 *   symmetrically for l2 with −a. */
static double pair_row(float *l1, float *l2, int tgt, int V, double g_ce, double g_kl, double eps, float *p1,
                       float *p2, double *ce1, double *ce2) {
    float m1 = l1[0], m2 = l2[0];
    for (int v = 1; v < V; v++) m1 = l1[v] > m1 ? l1[v] : m1, m2 = l2[v] > m2 ? l2[v] : m2;
    double s1 = 0, s2 = 0;
    for (int v = 0; v < V; v++) s1 += exp((double)l1[v] - m1), s2 += exp((double)l2[v] - m2);
    const double ls1 = m1 + log(s1), ls2 = m2 + log(s2);
    double kl = 0, pa1 = 0, pa2 = 0, sl1 = 0, sl2 = 0;
    for (int v = 0; v < V; v++) {
        const double lp1 = l1[v] - ls1, lp2 = l2[v] - ls2, q1 = exp(lp1), q2 = exp(lp2), a = lp1 - lp2;
        sl1 += lp1;
        sl2 += lp2;
        p1[v] = (float)q1;
        p2[v] = (float)q2;
        kl += (q1 - q2) * a;
        pa1 += q1 * a;
        pa2 -= q2 * a;
    }
    *ce1 -= (1 - eps) * (l1[tgt] - ls1) + eps * sl1 / V;
    *ce2 -= (1 - eps) * (l2[tgt] - ls2) + eps * sl2 / V;
    const double hot = 1 - eps, flat = eps / V;
    /* p1, p2 keep exp(ln p) in float for the CE and KL gradients; a is recomputed in double */
    for (int v = 0; v < V; v++) { /* l1[v], l2[v] are read before they are overwritten */
        const double q1 = p1[v], q2 = p2[v], a = (l1[v] - ls1) - (l2[v] - ls2);
        const double k1 = q1 * (a - pa1) + q1 - q2, k2 = q2 * (-a - pa2) + q2 - q1;
        l1[v] = (float)(g_ce * (q1 - hot * (v == tgt) - flat) + g_kl * k1);
        l2[v] = (float)(g_ce * (q2 - hot * (v == tgt) - flat) + g_kl * k2);
    }
    return kl;
}

moec_status moec_tmodel_pair_step(moec_tmodel *m1, moec_tmodel *m2, const int32_t *tokens, float scale, float alpha,
                                  int backward, moec_tstep *out, moec_error *err) {
    const moec_hparams *hp = &m1->hp;
    const int BS = m1->BS, V = hp->n_vocab;
    MOEC_ASSERT(m2->BS == BS && m2->hp.n_vocab == V && m1->tp == m2->tp);
    if (!m1->pair_p && !(m1->pair_p = malloc(2 * (size_t)V * sizeof(float))))
        return moec_err(err, MOEC_ERR_OOM, "out of memory for the consistency loss");
    moec_tstep o1, o2;
    moec_status st = moec_tmodel_step(m1, tokens, NULL, scale, 0, &o1, err);
    if (!st) st = moec_tmodel_step(m2, tokens, NULL, scale, 0, &o2, err);
    if (st) return st;
    int64_t n = 0;
    for (int t = 0; t < BS; t++) n += m1->tgt[t] >= 0;
    const double g_ce = n ? 0.5 * scale / (double)n : 0, g_kl = n ? 0.25 * alpha * scale / (double)n : 0;
    double ce1 = 0, ce2 = 0, kl = 0;
    for (int t = 0; t < BS; t++) {
        float *l1 = m1->logits + (size_t)t * V, *l2 = m2->logits + (size_t)t * V;
        if (m1->tgt[t] < 0) {
            memset(l1, 0, (size_t)V * sizeof *l1);
            memset(l2, 0, (size_t)V * sizeof *l2);
            continue;
        }
        kl += pair_row(l1, l2, m1->tgt[t], V, g_ce, g_kl, backward ? hp->label_smoothing : 0.0, m1->pair_p,
                       m1->pair_p + V, &ce1, &ce2);
    }
    if (out) {
        *out = o1;
        out->ce = n ? 0.5 * (ce1 + ce2) / (double)n : 0;
        out->aux = 0.5 * (o1.aux + o2.aux) + (n ? 0.25 * alpha * kl / (double)n : 0);
        out->z = 0.5 * (o1.z + o2.z);
    }
    if (backward) {
        backward_from_logits(m1, 0.5f * scale);
        backward_from_logits(m2, 0.5f * scale);
    }
    return MOEC_OK;
}
