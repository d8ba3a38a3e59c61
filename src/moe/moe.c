/* moe.c — the one MoE layer: route → dispatch (+ capacity) → experts → combine, its backward,
 * and the balancing losses. See moe.h for the contract. Reads top to bottom in data-flow order:
 * workspace, the four forward stages, the backward. */
#include "moe/moe.h"

#include "core/error.h"
#include "core/mem.h"
#include "moe/experts.h"
#include "nn/linear.h"
#include "nn/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRAGMA_(x) _Pragma(#x)
#ifdef _OPENMP
#define PARALLEL_FOR_IF(cond) PRAGMA_(omp parallel for schedule(static) if (cond))
#else
#define PARALLEL_FOR_IF(cond)
#endif
#define BIG_WORK (1 << 15)

/* ------------------------------------------------------------------ workspace */

struct moec_moe_ws {
    int keep, max_T, d, E, k_max, ff, fs, ff_max;
    int T;             /* tokens of the pending forward (keep); 0 = none */
    int k_eff;         /* experts per token of the pending forward (the call's k) */
    int jittered;      /* the pending forward's router input was x ⊙ noise (xr), not x */
    int losses;        /* the pending forward computed losses */
    const moec_router *router; /* the router the pending forward ran (the model's or its decode router) */
    moec_moe_call call;
    size_t bytes;
    void *mem;
    /* route */
    float *noise;      /* [T, d] jitter factors (keep) */
    float *xr;         /* [T, d] router input when jittered */
    float *logits;     /* [T, E] */
    float *probs;      /* [T, E] */
    float *dprobs;     /* [T, E] */
    float *dlogits;    /* [T, E] */
    float *lse;        /* [T] */
    float *rscratch;   /* router scratch */
    moec_routing r;    /* [N] slots */
    float *dweight;    /* [N] */
    int64_t *counts;   /* [E] chosen, before capacity */
    /* dispatch */
    int32_t *ecount;   /* [E] kept rows per expert */
    int32_t *offsets;  /* [E + 1] */
    int32_t *row_src;  /* [N] row → slot */
    int32_t *row_of;   /* [N] slot → row, -1 = no row */
    int32_t *tok_off;  /* [T + 1] token → its slots (CSR, slot order) */
    int32_t *tok_slot; /* [N] */
    int32_t *items;    /* [E + 2] grouped-kernel work items */
    int32_t *cap_idx;  /* [N] capacity (probs policy) sort scratch */
    /* experts */
    float *xg, *eo;    /* [N, d] gathered inputs, expert outputs */
    float *hg, *hu;    /* [N, ff_max] gate / up pre-activations (keep) or grouped scratch */
    float *act;        /* [N, ff] (keep) */
    /* shared expert */
    float *so;         /* [T, d] */
    float *sg, *su, *sact; /* [T, fs] (keep) */
    float *ssig;       /* [T] */
};

typedef struct {
    void **ptr;
    size_t n, size;
} span;

static int mul_ok(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

moec_status moec_moe_ws_new(moec_moe_ws **out, const moec_hparams *hp, int max_T, int keep, moec_error *err) {
    *out = NULL;
    const moec_router_cfg *rc = &hp->route;
    if (max_T < 1 || hp->n_expert < 1 || rc->k < 1 || rc->k > hp->n_expert || hp->n_embd < 1 || hp->n_ff_expert < 1 ||
        hp->n_ff_shared < 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "moe workspace: need tokens, d, ff >= 1, 1 <= k <= experts, shared ff >= 0 (got %d, %d, %d, %d, %d, "
                        "%d)", max_T, hp->n_embd, hp->n_ff_expert, rc->k, hp->n_expert, hp->n_ff_shared);
    if (!rc->router || rc->n_expert != hp->n_expert)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe workspace: routing config is not this model's (%s, %d experts vs %d)",
                        rc->router ? rc->router->name : "no router", rc->n_expert, hp->n_expert);
    const int64_t max_slots = moec_router_max_slots(rc, max_T); /* the router's bound (router.h) */
    if (max_slots > INT32_MAX / 2 || max_slots < 1 || (int64_t)max_T * hp->n_expert > INT32_MAX / 2)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe workspace: %d tokens x %d experts is too large", max_T,
                        hp->n_expert);
    moec_moe_ws *w = calloc(1, sizeof *w);
    if (!w) return moec_err(err, MOEC_ERR_OOM, "moe workspace: out of memory");
    w->keep = keep;
    w->max_T = max_T;
    w->d = hp->n_embd;
    w->E = hp->n_expert;
    w->k_max = rc->k;
    w->ff = hp->n_ff_expert;
    w->fs = hp->n_ff_shared;
    w->ff_max = w->ff > w->fs ? w->ff : w->fs;
    const size_t T = (size_t)max_T, E = (size_t)w->E, N = (size_t)max_slots, d = (size_t)w->d;
    const size_t ffm = (size_t)w->ff_max, fs = (size_t)w->fs, F = sizeof(float), I = sizeof(int32_t);
    size_t Nd = 0, Nff = 0, Tfs = 0, Td = 0, TE = 0;
    const int64_t rs = moec_router_scratch_floats(rc, max_T);
    int ok = mul_ok(N, d, &Nd) && mul_ok(N, ffm, &Nff) && mul_ok(T, fs, &Tfs) && mul_ok(T, d, &Td) &&
             mul_ok(T, E, &TE) && rs >= 0;
    /* inference needs a row block of T for the shared expert's grouped pass */
    if (Nff < T * ffm) Nff = T * ffm;
    const int jitter = keep && rc->jitter > 0.f, shared = fs > 0;
    span tab[] = {
        {(void **)&w->noise, jitter ? Td : 0, F},  {(void **)&w->xr, jitter ? Td : 0, F},
        {(void **)&w->logits, TE, F},              {(void **)&w->probs, TE, F},
        {(void **)&w->dprobs, keep ? TE : 0, F},   {(void **)&w->dlogits, keep ? TE : 0, F},
        {(void **)&w->lse, T, F},                  {(void **)&w->rscratch, (size_t)rs + 1, F},
        {(void **)&w->r.token, N, I},              {(void **)&w->r.expert, N, I},
        {(void **)&w->r.weight, N, F},             {(void **)&w->r.chosen, N, I},
        {(void **)&w->dweight, keep ? N : 0, F},   {(void **)&w->counts, E, sizeof(int64_t)},
        {(void **)&w->ecount, E, I},               {(void **)&w->offsets, E + 1, I},
        {(void **)&w->row_src, N, I},              {(void **)&w->row_of, N, I},
        {(void **)&w->tok_off, T + 1, I},          {(void **)&w->tok_slot, N, I},
        {(void **)&w->items, E + 2, I},            {(void **)&w->cap_idx, N, I},
        {(void **)&w->xg, Nd, F},                  {(void **)&w->eo, Nd, F},
        {(void **)&w->hg, Nff, F},                 {(void **)&w->hu, Nff, F},
        {(void **)&w->act, keep ? Nff : 0, F},     {(void **)&w->so, shared ? Td : 0, F},
        {(void **)&w->sg, keep ? Tfs : 0, F},      {(void **)&w->su, keep ? Tfs : 0, F},
        {(void **)&w->sact, keep ? Tfs : 0, F},    {(void **)&w->ssig, shared ? T : 0, F},
    };
    const size_t n_tab = sizeof tab / sizeof tab[0];
    size_t total = 0;
    for (size_t i = 0; i < n_tab && ok; i++) {
        size_t b = 0;
        ok = mul_ok(tab[i].n, tab[i].size, &b);
        b = (b + 63) & ~(size_t)63;
        if (b > SIZE_MAX - total) ok = 0;
        else total += b;
    }
    if (!ok) {
        free(w);
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe workspace: size overflows for %d tokens", max_T);
    }
    moec_status cst = moec_mem_check(total, "MoE workspace", err);
    if (cst) {
        free(w);
        return cst;
    }
    w->mem = aligned_alloc(64, total ? total : 64);
    if (!w->mem) {
        free(w);
        return moec_err(err, MOEC_ERR_OOM, "moe workspace: out of memory (%zu MB for %d tokens)", total >> 20, max_T);
    }
    char *p = w->mem;
    for (size_t i = 0; i < n_tab; i++) {
        *tab[i].ptr = tab[i].n ? p : NULL;
        p += (tab[i].n * tab[i].size + 63) & ~(size_t)63;
    }
    w->r.cap = (int32_t)N;
    w->bytes = total + sizeof *w;
    *out = w;
    return MOEC_OK;
}

void moec_moe_ws_free(moec_moe_ws *ws) {
    if (!ws) return;
    free(ws->mem);
    free(ws);
}

size_t moec_moe_ws_bytes(const moec_moe_ws *ws) { return ws ? ws->bytes : 0; }

/* F32 data of a weight view (training keeps F32 master weights). */
static const float *f32(const moec_mat *m) {
    MOEC_ASSERT(m->dtype == MOEC_DTYPE_F32);
    return (const float *)m->data;
}
static float *grad_of(const moec_mat *g) { return g ? (float *)g->data : NULL; }

/* ------------------------------------------------------------------ dispatch (+ capacity) */

/* Stable merge sort of slot indices by descending weight (equal weights keep slot order):
 * the probs drop policy. tmp: n ints of scratch. No globals: MoE layers may run concurrently. */
static void sort_by_weight(int32_t *a, int32_t *tmp, int n, const float *w) {
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            const int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, o = lo;
            while (i < mid && j < hi) tmp[o++] = w[a[j]] > w[a[i]] ? a[j++] : a[i++];
            while (i < mid) tmp[o++] = a[i++];
            while (j < hi) tmp[o++] = a[j++];
        }
        memcpy(a, tmp, (size_t)n * sizeof *a);
    }
}

/* Groups slots by expert; with capacity C > 0, keeps at most C slots per expert and clears the
 * expert of the others (their chosen stays). Builds the token → slots map for the combine. */
static void dispatch(moec_moe_ws *w, int T, int64_t C, moec_drop_policy policy) {
    moec_routing *r = &w->r;
    const int E = w->E, n = r->n_slots;
    if (C > 0) {
        /* per expert, the slots in slot order */
        memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
        for (int s = 0; s < n; s++)
            if (r->expert[s] >= 0) w->ecount[r->expert[s]]++;
        w->offsets[0] = 0;
        for (int e = 0; e < E; e++) w->offsets[e + 1] = w->offsets[e] + w->ecount[e];
        memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
        for (int s = 0; s < n; s++)
            if (r->expert[s] >= 0) w->cap_idx[w->offsets[r->expert[s]] + w->ecount[r->expert[s]]++] = s;
        for (int e = 0; e < E; e++) {
            int32_t *sl = w->cap_idx + w->offsets[e];
            const int cnt = w->ecount[e];
            if (cnt <= C) continue;
            if (policy == MOEC_DROP_PROBS) sort_by_weight(sl, w->tok_slot, cnt, r->weight); /* tok_slot: free until the end */
            for (int i = (int)C; i < cnt; i++) r->expert[sl[i]] = MOEC_NO_EXPERT;
        }
    }
    /* counting sort of the kept slots by expert, stable in slot order */
    memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
    for (int s = 0; s < n; s++)
        if (r->expert[s] >= 0) {
            MOEC_ASSERT(r->expert[s] < E);
            w->ecount[r->expert[s]]++;
        }
    w->offsets[0] = 0;
    for (int e = 0; e < E; e++) w->offsets[e + 1] = w->offsets[e] + w->ecount[e];
    memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
    for (int s = 0; s < n; s++) {
        const int e = r->expert[s];
        if (e < 0) {
            w->row_of[s] = -1;
            continue;
        }
        const int row = w->offsets[e] + w->ecount[e]++;
        w->row_src[row] = s;
        w->row_of[s] = row;
    }
    /* token → slots, stable in slot order */
    memset(w->tok_off, 0, (size_t)(T + 1) * sizeof *w->tok_off);
    for (int s = 0; s < n; s++) {
        MOEC_ASSERT(r->token[s] >= 0 && r->token[s] < T);
        w->tok_off[r->token[s] + 1]++;
    }
    for (int t = 0; t < T; t++) w->tok_off[t + 1] += w->tok_off[t];
    /* cap_idx is free again: per-token fill cursors */
    int32_t *fill = w->cap_idx;
    memset(fill, 0, (size_t)T * sizeof *fill);
    for (int s = 0; s < n; s++) {
        const int t = r->token[s];
        w->tok_slot[w->tok_off[t] + fill[t]++] = s;
    }
}

/* ------------------------------------------------------------------ experts (keep: F32, sgemm) */

static void ffn_forward_keep(float *out, float *hg, float *hu, float *act, const float *x, int n, int d, int f,
                             const moec_ffn *W) {
    moec_linear_forward(hg, f, x, d, f32(&W->gate), NULL, n, d, f);
    moec_linear_forward(hu, f, x, d, f32(&W->up), NULL, n, d, f);
    moec_swiglu(act, hg, hu, (int64_t)n * f);
    moec_linear_forward(out, d, act, f, f32(&W->down), NULL, n, f, d);
}

/* In place: g ← ∂/∂g, u ← ∂/∂u given da = ∂/∂(silu(g)·u). */
static void swiglu_backward_inplace(float *g, float *u, const float *da, int64_t n) {
    PARALLEL_FOR_IF(n >= BIG_WORK)
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i], s = 1.f / (1.f + expf(-gi));
        const float dsilu = s * (1.f + gi * (1.f - s));
        g[i] = da[i] * u[i] * dsilu;
        u[i] = da[i] * gi * s;
    }
}

/* Backward of ffn_forward_keep for dout [n, d]; dx [n, d] += (may be NULL; may alias dout: dout
 * is read only before dx is written); gradients into G (NULL entries skipped). Consumes hg, hu. */
static void ffn_backward_keep(float *dx, const moec_ffn *G, float *dout, float *hg, float *hu, float *act,
                              const float *x, int n, int d, int f, const moec_ffn *W, int dx_is_dout) {
    const int64_t nf = (int64_t)n * f;
    float *dWd = G ? grad_of(&G->down) : NULL;
    if (dWd) {
        moec_swiglu(act, hg, hu, nf); /* recomputed rather than saved */
        moec_linear_backward(NULL, 0, dWd, NULL, dout, d, act, f, f32(&W->down), n, f, d);
    }
    memset(act, 0, (size_t)nf * sizeof *act);
    moec_linear_backward(act, f, NULL, NULL, dout, d, NULL, f, f32(&W->down), n, f, d);
    swiglu_backward_inplace(hg, hu, act, nf);
    if (dx && dx_is_dout) memset(dx, 0, (size_t)n * d * sizeof *dx);
    moec_linear_backward(dx, d, G ? grad_of(&G->gate) : NULL, NULL, hg, f, x, d, f32(&W->gate), n, d, f);
    moec_linear_backward(dx, d, G ? grad_of(&G->up) : NULL, NULL, hu, f, x, d, f32(&W->up), n, d, f);
}

/* ------------------------------------------------------------------ forward */

/* The LBL configuration of a call. Global scope without the step's counts (no accumulation,
 * or inference): this call is the whole step. */
static moec_lbl_cfg lbl_cfg(const moec_moe_ws *w, const moec_router_cfg *rc, const moec_moe_call *call, int T) {
    moec_lbl_cfg lc = {rc->aux_coef, rc->aux_scope, call->seq_len > 0 ? call->seq_len : T, w->k_eff,
                       call->global_counts, call->global_tokens};
    if (!lc.global_counts) {
        lc.global_counts = w->counts;
        lc.global_tokens = T;
    }
    return lc;
}

void moec_moe_forward(moec_moe_ws *w, const moec_hparams *hp, const moec_layer *L, float *y, const float *x, int T,
                      const moec_moe_call *call_in, moec_moe_stats *st) {
    static const moec_moe_call none;
    const moec_moe_call *call = call_in ? call_in : &none;
    const moec_router_cfg *rc = &hp->route;
    const int d = w->d, E = w->E;
    MOEC_ASSERT(T >= 1 && T <= w->max_T && L->is_moe);
    w->T = T;
    w->call = *call;
    w->losses = call->losses;

    /* route: fp32 logits, optionally of a jittered input */
    const float *xin = x;
    w->jittered = w->noise && call->jitter_rng;
    if (w->jittered) {
        const float eps = rc->jitter;
        for (size_t i = 0; i < (size_t)T * d; i++) {
            w->noise[i] = 1.f - eps + 2.f * eps * moec_rng_uniform(call->jitter_rng);
            w->xr[i] = x[i] * w->noise[i];
        }
        xin = w->xr;
    }
    moec_linear(w->logits, E, xin, d, &L->router, NULL, T);
    moec_route_opts opts = call->opts ? *call->opts : (moec_route_opts){0};
    if (opts.k <= 0 || opts.k > w->k_max) opts.k = opts.k > w->k_max ? w->k_max : 0;
    w->k_eff = opts.k > 0 ? opts.k : rc->k; /* f_i = c_i / (N·k) uses the k this call routes with */
    /* the call's context for the routers (routing.h) */
    opts.token_ids = call->token_ids;
    opts.seq_len = call->seq_len;
    opts.step = call->step;
    opts.train = call->train;
    opts.rng = call->jitter_rng;
    opts.serve_rng = call->serve_rng;
    opts.seq_rng = call->seq_rng;
    const moec_router *rt = moec_router_for_call(rc, call->causal);
    MOEC_ASSERT(!call->causal || !rt->non_causal); /* refused before: moec_router_check_servable */
    w->router = rt;
    rt->forward(rc, L->router_bias, w->logits, T, &opts, &w->r, w->probs, w->rscratch);
    moec_routing *r = &w->r;
    MOEC_ASSERT(r->n_slots >= 0 && r->n_slots <= r->cap);

    /* losses and load, from the router's choice before capacity */
    moec_routing_counts(r, E, 0, T, w->counts);
    double aux = 0, z = 0;
    if (call->losses && rc->aux_coef != 0.f) {
        const moec_lbl_cfg lc = lbl_cfg(w, rc, call, T);
        aux = moec_lbl_forward(&lc, w->probs, r, T, E);
    }
    if (call->losses && rc->z_coef != 0.f) z = moec_zloss_forward(rc->z_coef, w->logits, T, E, w->lse);
    double router_loss = 0; /* the router's own loss (top-p: routing entropy), counted in aux */
    if (call->losses && rt->loss) router_loss = rt->loss(rc, w->probs, T, 0.f, NULL);

    /* dispatch (+ capacity), gather */
    int64_t C = 0;
    if (rc->capacity_factor > 0.f && call->train) {
        const int k_eff = opts.k > 0 ? opts.k : rc->k;
        C = (int64_t)ceil((double)T * k_eff / E * rc->capacity_factor);
        if (C < 1) C = 1;
    }
    dispatch(w, T, C, rc->drop_policy);
    const int R = w->offsets[E];
    PARALLEL_FOR_IF((int64_t)R * d >= BIG_WORK)
    for (int row = 0; row < R; row++)
        memcpy(w->xg + (size_t)row * d, x + (size_t)r->token[w->row_src[row]] * d, (size_t)d * sizeof(float));

    /* experts */
    if (w->keep) {
        for (int e = 0; e < E; e++) {
            const int n = w->offsets[e + 1] - w->offsets[e];
            if (!n) continue;
            const size_t r0 = (size_t)w->offsets[e];
            ffn_forward_keep(w->eo + r0 * d, w->hg + r0 * w->ff, w->hu + r0 * w->ff, w->act + r0 * w->ff,
                             w->xg + r0 * d, n, d, w->ff, &L->experts[e]);
        }
    } else {
        moec_ffn_grouped(w->eo, w->xg, L->expert_ptrs, w->offsets, E, d, w->ff_max, w->hg, w->hu, w->items);
    }

    /* combine: each token's slots in slot order (thread-independent sums) */
    PARALLEL_FOR_IF((int64_t)T * d >= BIG_WORK)
    for (int t = 0; t < T; t++) {
        float *yr = y + (size_t)t * d;
        memset(yr, 0, (size_t)d * sizeof *yr);
        for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
            const int s = w->tok_slot[i], row = w->row_of[s];
            if (row < 0) continue;
            const float ws = r->weight[s];
            const float *er = w->eo + (size_t)row * d;
            for (int j = 0; j < d; j++) yr[j] += ws * er[j];
        }
    }

    /* shared expert: y += [sigmoid(x · w_sg)] · S(x) */
    if (L->has_shared) {
        if (w->keep) {
            ffn_forward_keep(w->so, w->sg, w->su, w->sact, x, T, d, w->fs, &L->shared);
        } else {
            const moec_ffn *sh = &L->shared;
            int32_t off[2] = {0, T};
            moec_ffn_grouped(w->so, x, &sh, off, 1, d, w->ff_max, w->hg, w->hu, w->items);
        }
        const int gated = L->shared_gate.data != NULL;
        if (gated) moec_linear(w->ssig, 1, x, d, &L->shared_gate, NULL, T);
        PARALLEL_FOR_IF((int64_t)T * d >= BIG_WORK)
        for (int t = 0; t < T; t++) {
            const float g = gated ? 1.f / (1.f + expf(-w->ssig[t])) : 1.f;
            w->ssig[t] = g;
            float *yr = y + (size_t)t * d;
            const float *sr = w->so + (size_t)t * d;
            for (int j = 0; j < d; j++) yr[j] += g * sr[j];
        }
    }

    if (st) {
        st->aux = aux + router_loss;
        st->router_loss = router_loss;
        st->z = z;
        st->counts = w->counts;
        int64_t assigned = 0;
        for (int e = 0; e < E; e++) assigned += w->counts[e];
        st->n_assigned = assigned;
        st->n_dropped = assigned - R;
        double ent = 0; /* a training metric: not worth T·E logs per inference step */
        for (size_t i = 0; call->losses && i < (size_t)T * E; i++) {
            const double p = w->probs[i];
            if (p > 0) ent -= p * log(p);
        }
        st->entropy_sum = ent;
        st->routing = r;
    }
}

/* ------------------------------------------------------------------ backward */

void moec_moe_backward(moec_moe_ws *w, const moec_hparams *hp, const moec_layer *L, const moec_layer *G, float *dx,
                       const float *dy, const float *x, int T, float dloss) {
    const moec_router_cfg *rc = &hp->route;
    MOEC_ASSERT(w->keep && w->T > 0 && T == w->T);
    const int d = w->d, E = w->E, ff = w->ff;
    const moec_routing *r = &w->r;
    const int n = r->n_slots;
    w->T = 0;

    /* combine backward, weights: dweight[s] = dy[token] · expert_out[row] */
    PARALLEL_FOR_IF((int64_t)n * d >= BIG_WORK)
    for (int s = 0; s < n; s++) {
        const int row = w->row_of[s];
        float acc = 0.f;
        if (row >= 0) {
            const float *dyr = dy + (size_t)r->token[s] * d, *er = w->eo + (size_t)row * d;
            for (int j = 0; j < d; j++) acc += dyr[j] * er[j];
        }
        w->dweight[s] = acc;
    }

    /* router backward: weights and balancing loss → logits, + z-loss; then the router matmul */
    const int lbl_on = w->losses && rc->aux_coef != 0.f, z_on = w->losses && rc->z_coef != 0.f;
    const int own_on = w->losses && w->router->loss, aux_on = lbl_on || own_on;
    if (aux_on) memset(w->dprobs, 0, (size_t)T * E * sizeof(float));
    if (lbl_on) {
        const moec_lbl_cfg lc = lbl_cfg(w, rc, &w->call, T);
        moec_lbl_backward(&lc, r, T, E, dloss, w->dprobs);
    }
    if (own_on) w->router->loss(rc, w->probs, T, dloss, w->dprobs);
    w->router->backward(rc, L->router_bias, w->logits, T, r, w->dweight, aux_on ? w->dprobs : NULL, w->dlogits,
                        w->rscratch);
    if (z_on) moec_zloss_backward(rc->z_coef, w->logits, w->lse, T, E, dloss, w->dlogits);
    {
        /* xr (the jittered input) is still the forward's: dW_r needs it, then it is free scratch */
        const float *xin = w->jittered ? w->xr : x;
        moec_linear_backward(NULL, 0, G ? grad_of(&G->router) : NULL, NULL, w->dlogits, E, xin, d, f32(&L->router), T,
                             d, E);
        if (dx && !w->jittered) {
            moec_linear_backward(dx, d, NULL, NULL, w->dlogits, E, NULL, d, f32(&L->router), T, d, E);
        } else if (dx) {
            float *dxr = w->xr; /* ∂/∂x̃, then ⊙ noise into dx */
            memset(dxr, 0, (size_t)T * d * sizeof(float));
            moec_linear_backward(dxr, d, NULL, NULL, w->dlogits, E, NULL, d, f32(&L->router), T, d, E);
            for (size_t i = 0; i < (size_t)T * d; i++) dx[i] += dxr[i] * w->noise[i];
        }
    }

    /* shared expert */
    if (L->has_shared) {
        const int gated = L->shared_gate.data != NULL;
        PARALLEL_FOR_IF((int64_t)T * d >= BIG_WORK)
        for (int t = 0; t < T; t++) {
            const float *dyr = dy + (size_t)t * d;
            float *sr = w->so + (size_t)t * d;
            const float g = w->ssig[t];
            float dot = 0.f;
            for (int j = 0; j < d; j++) {
                dot += dyr[j] * sr[j];
                sr[j] = g * dyr[j]; /* so ← ∂/∂S(x) */
            }
            w->ssig[t] = dot * g * (1.f - g); /* ∂/∂ gate logit */
        }
        if (gated)
            moec_linear_backward(dx, d, G ? grad_of(&G->shared_gate) : NULL, NULL, w->ssig, 1, x, d,
                                 f32(&L->shared_gate), T, d, 1);
        ffn_backward_keep(dx, G ? &G->shared : NULL, w->so, w->sg, w->su, w->sact, x, T, d, w->fs, &L->shared, 0);
    }

    /* expert outputs: eo[row] ← weight · dy[token] */
    const int R = w->offsets[E];
    PARALLEL_FOR_IF((int64_t)R * d >= BIG_WORK)
    for (int row = 0; row < R; row++) {
        const int s = w->row_src[row];
        const float ws = r->weight[s];
        const float *dyr = dy + (size_t)r->token[s] * d;
        float *er = w->eo + (size_t)row * d;
        for (int j = 0; j < d; j++) er[j] = ws * dyr[j];
    }
    /* experts: ∂/∂xg overwrites each expert's own eo rows once they have been read */
    for (int e = 0; e < E; e++) {
        const int cnt = w->offsets[e + 1] - w->offsets[e];
        if (!cnt) continue;
        const size_t r0 = (size_t)w->offsets[e];
        float *dout = w->eo + r0 * d;
        ffn_backward_keep(dx ? dout : NULL, G ? &G->experts[e] : NULL, dout, w->hg + r0 * ff, w->hu + r0 * ff,
                          w->act + r0 * ff, w->xg + r0 * d, cnt, d, ff, &L->experts[e], 1);
    }
    /* scatter ∂/∂xg to tokens, each token's slots in slot order */
    if (dx) {
        PARALLEL_FOR_IF((int64_t)T * d >= BIG_WORK)
        for (int t = 0; t < T; t++) {
            float *dxr = dx + (size_t)t * d;
            for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
                const int row = w->row_of[w->tok_slot[i]];
                if (row < 0) continue;
                const float *gr = w->eo + (size_t)row * d;
                for (int j = 0; j < d; j++) dxr[j] += gr[j];
            }
        }
    }
}
