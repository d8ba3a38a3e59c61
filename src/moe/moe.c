/* moe.c — the one MoE layer: route → dispatch (+ capacity) → experts → combine, its backward,
 * and the balancing losses. See moe.h for the contract. Reads top to bottom in data-flow order:
 * workspace, the four forward stages, the backward. */
#include "moe/moe.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "moe/experts.h"
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Loops below this much work run on the calling thread; above it, tasks of about this much. */
#define BIG_WORK (1 << 15)

/* ------------------------------------------------------------------ workspace */

struct moec_moe_ws {
    int keep, max_T, d, E, k_max, ff, fs, ff_max;
    int n_ffn;         /* FFN experts: groups 0..n_ffn-1 of the E = router width (moe/router.h) */
    int n_rowed;       /* experts that get rows: FFN, constant and copy (null experts get none) */
    int carry_dim;     /* width of the layer-to-layer routing carry (0 = none) */
    int rnn;           /* RMoE: state width r (router = W2 · GRU(W1 x, h_prev)) */
    int n_const, n_copy;
    int T;             /* tokens of the pending forward (keep); 0 = none */
    int k_eff;         /* slots per token of the pending forward (the call's k as its router routes it) */
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
    int32_t *expert_order; /* [E] training: experts with rows, largest first */
    int32_t *cap_idx;  /* [N] capacity (probs policy) sort scratch */
    /* experts */
    float *xg, *eo;    /* [N, d] gathered inputs, expert outputs */
    float *hg, *hu;    /* [N, ff_max] gate / up pre-activations (keep) or grouped scratch */
    float *act;        /* [N, ff] (keep) */
    /* shared expert */
    float *so;         /* [T, d] */
    float *sg, *su, *sact; /* [T, fs] (keep) */
    float *ssig;       /* [T] */
    /* expert kinds */
    float *wraw;       /* [N] the router's weights before the null renormalisation (keep) */
    float *wsum;       /* [T] Σ of a token's non-null raw weights (0: only null picks) */
    float *cst_a;      /* [N, 2] constant experts' [a1, a2] per row */
    float *wpre;       /* [N] the router's weights before router_scale (keep) */
    /* layer-to-layer routing carry */
    float *carry[2];   /* [T, carry_dim] this forward's carry out (alternating when !keep) */
    int flip;
    const float *carry_last; /* the last forward's carry out */
    const float *carry_in_used; /* the forward's carry in (zeros when the call had none) */
    float *zeros;      /* [T, carry_dim] the carry of "no previous MoE layer" */
    float *dcarry;     /* [T, carry_dim] ∂ℓ/∂carry_in (keep) */
    /* RMoE router: x' = W1 x [T, r], GRU gates [T, 3r] (r, z, n after the forward), W_hn h + b_hn [T, r] */
    float *rx, *rg, *rghn, *rd1, *rd3, *rd3h;
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
    if (max_T < 1 || hp->n_expert < 1 || rc->k < 1 || rc->k > rc->n_expert || hp->n_embd < 1 || hp->n_ff_expert < 1 ||
        hp->n_ff_shared < 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "moe workspace: need tokens, d, ff >= 1, 1 <= k <= experts, shared ff >= 0 (got %d, %d, %d, %d, %d, "
                        "%d)", max_T, hp->n_embd, hp->n_ff_expert, rc->k, hp->n_expert, hp->n_ff_shared);
    const int rex = rc->rex_reuse > 1 ? rc->rex_reuse : 1; /* ReXMoE: the router sees the group's r·N experts */
    if (!rc->router || moec_router_n_ffn(rc) != hp->n_expert * rex)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe workspace: routing config is not this model's (%s, %d experts vs %d)",
                        rc->router ? rc->router->name : "no router", moec_router_n_ffn(rc), hp->n_expert * rex);
    const int64_t max_slots = moec_router_max_slots(rc, max_T); /* the router's bound (router.h) */
    if (max_slots > INT32_MAX / 2 || max_slots < 1 || (int64_t)max_T * rc->n_expert > INT32_MAX / 2)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe workspace: %d tokens x %d experts is too large", max_T,
                        rc->n_expert);
    moec_moe_ws *w = calloc(1, sizeof *w);
    if (!w) return moec_err(err, MOEC_ERR_OOM, "moe workspace: out of memory");
    w->keep = keep;
    w->max_T = max_T;
    w->d = hp->n_embd;
    w->E = rc->n_expert;
    w->n_ffn = hp->n_expert * rex;
    w->n_rowed = rc->n_expert - rc->n_null;
    w->carry_dim = moec_moe_carry_dim(hp);
    w->rnn = rc->rnn_dim;
    w->n_const = rc->n_const;
    w->n_copy = rc->n_copy;
    w->k_max = rc->k;
    w->ff = hp->n_ff_expert;
    w->fs = hp->n_ff_shared;
    w->ff_max = w->ff > w->fs ? w->ff : w->fs;
    const size_t T = (size_t)max_T, E = (size_t)w->E, N = (size_t)max_slots, d = (size_t)w->d;
    const size_t ffm = (size_t)w->ff_max, fs = (size_t)w->fs, F = sizeof(float), I = sizeof(int32_t);
    size_t Nd = 0, Nff = 0, Tfs = 0, Td = 0, TE = 0, TC = 0, Tr = 0;
    const int64_t rs = moec_router_scratch_floats(rc, max_T);
    int ok = mul_ok(N, d, &Nd) && mul_ok(N, ffm, &Nff) && mul_ok(T, fs, &Tfs) && mul_ok(T, d, &Td) &&
             mul_ok(T, E, &TE) && mul_ok(T, (size_t)w->carry_dim, &TC) && mul_ok(T, (size_t)w->rnn, &Tr) &&
             Tr <= SIZE_MAX / 4 && rs >= 0;
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
        {(void **)&w->expert_order, keep ? E : 0, I},
        {(void **)&w->xg, Nd, F},                  {(void **)&w->eo, Nd, F},
        {(void **)&w->hg, Nff, F},                 {(void **)&w->hu, Nff, F},
        {(void **)&w->act, keep ? Nff : 0, F},     {(void **)&w->so, shared ? Td : 0, F},
        {(void **)&w->sg, keep ? Tfs : 0, F},      {(void **)&w->su, keep ? Tfs : 0, F},
        {(void **)&w->sact, keep ? Tfs : 0, F},    {(void **)&w->ssig, shared ? T : 0, F},
        {(void **)&w->wraw, rc->n_null ? N : 0, F}, {(void **)&w->wsum, rc->n_null ? T : 0, F},
        {(void **)&w->cst_a, rc->n_const ? 2 * N : 0, F},
        {(void **)&w->wpre, keep && rc->router_scale ? N : 0, F},
        {(void **)&w->carry[0], TC, F},            {(void **)&w->carry[1], keep ? 0 : TC, F},
        {(void **)&w->zeros, TC, F},               {(void **)&w->dcarry, keep ? TC : 0, F},
        {(void **)&w->rx, Tr, F},                  {(void **)&w->rg, 3 * Tr, F},
        {(void **)&w->rghn, Tr, F},                {(void **)&w->rd1, keep ? Tr : 0, F},
        {(void **)&w->rd3, keep ? 3 * Tr : 0, F},  {(void **)&w->rd3h, 3 * Tr, F},
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
    if (w->zeros) memset(w->zeros, 0, TC * F);
    if (!w->carry[1]) w->carry[1] = w->carry[0];
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
 * expert of the others (their chosen stays). Builds the token → slots map for the combine. Null
 * experts get no rows and no capacity (they cost nothing): their slots have row -1, like drops. */
static void dispatch(moec_moe_ws *w, int T, int64_t C, moec_drop_policy policy) {
    moec_routing *r = &w->r;
    const int E = w->E, n = r->n_slots, nr = w->n_rowed;
#define HAS_ROW(e) ((e) >= 0 && (e) < nr)
    if (C > 0) {
        /* per expert, the slots in slot order */
        memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
        for (int s = 0; s < n; s++)
            if (HAS_ROW(r->expert[s])) w->ecount[r->expert[s]]++;
        w->offsets[0] = 0;
        for (int e = 0; e < E; e++) w->offsets[e + 1] = w->offsets[e] + w->ecount[e];
        memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
        for (int s = 0; s < n; s++)
            if (HAS_ROW(r->expert[s])) w->cap_idx[w->offsets[r->expert[s]] + w->ecount[r->expert[s]]++] = s;
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
            if (HAS_ROW(r->expert[s])) w->ecount[r->expert[s]]++;
        }
    w->offsets[0] = 0;
    for (int e = 0; e < E; e++) w->offsets[e + 1] = w->offsets[e] + w->ecount[e];
    memset(w->ecount, 0, (size_t)E * sizeof *w->ecount);
    for (int s = 0; s < n; s++) {
        const int e = r->expert[s];
        if (!HAS_ROW(e)) {
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
#undef HAS_ROW
}

/* ------------------------------------------------------------------ experts (keep: F32, moec_gemm) */

static void ffn_forward_keep(float *out, float *hg, float *hu, float *act, const float *x, int n, int d, int f,
                             const moec_ffn *W) {
    moec_linear_forward(hg, f, x, d, f32(&W->gate), NULL, n, d, f);
    moec_linear_forward(hu, f, x, d, f32(&W->up), NULL, n, d, f);
    moec_swiglu(act, hg, hu, (int64_t)n * f);
    moec_linear_forward(out, d, act, f, f32(&W->down), NULL, n, f, d);
}

/* In place: g ← ∂/∂g, u ← ∂/∂u given da = ∂/∂(silu(g)·u). */
typedef struct {
    float *g, *u;
    const float *da;
} swiglu_back_job;

static void swiglu_back_range(void *job, int64_t i0, int64_t i1, int tid) {
    const swiglu_back_job *j = job;
    float *g = j->g, *u = j->u;
    const float *da = j->da;
    (void)tid;
    moec_vswiglu_back(g + i0, u + i0, da + i0, g + i0, u + i0, i1 - i0, 0);
}

static void swiglu_backward_inplace(float *g, float *u, const float *da, int64_t n) {
    swiglu_back_job j = {g, u, da};
    moec_parallel_range(n, moec_grain(n, 1, BIG_WORK), swiglu_back_range, &j);
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

/* Training's experts side by side: with at least two experts per thread, each expert runs whole
 * on one thread (its GEMMs then pack their weights once, where slicing one expert's GEMM over
 * the threads packs them once per slice; the slices run in the same order either way, so the
 * results are the same bit for bit); with fewer, one expert after another, each GEMM sliced. */
typedef struct {
    moec_moe_ws *w;
    const moec_layer *L, *G;
    int d, want_dx;
    int32_t *order; /* experts with rows, largest first (claimed in this order: the big ones start early) */
} keep_job;

static void keep_forward_item(void *job, int64_t i, int tid) {
    const keep_job *j = job;
    moec_moe_ws *w = j->w;
    const int e = j->order ? j->order[i] : (int)i, n = w->offsets[e + 1] - w->offsets[e], d = j->d;
    (void)tid;
    if (!n) return;
    const size_t r0 = (size_t)w->offsets[e];
    ffn_forward_keep(w->eo + r0 * d, w->hg + r0 * w->ff, w->hu + r0 * w->ff, w->act + r0 * w->ff, w->xg + r0 * d, n,
                     d, w->ff, j->L->expert_ptrs[e]);
}

static void keep_backward_item(void *job, int64_t i, int tid) {
    const keep_job *j = job;
    moec_moe_ws *w = j->w;
    const int e = j->order ? j->order[i] : (int)i, n = w->offsets[e + 1] - w->offsets[e], d = j->d, ff = w->ff;
    (void)tid;
    if (!n) return;
    const size_t r0 = (size_t)w->offsets[e];
    float *dout = w->eo + r0 * d;
    /* through expert_ptrs: with ReXMoE a group's layers share experts, and their gradients add up */
    ffn_backward_keep(j->want_dx ? dout : NULL, j->G ? j->G->expert_ptrs[e] : NULL, dout, w->hg + r0 * ff,
                      w->hu + r0 * ff, w->act + r0 * ff, w->xg + r0 * d, n, d, ff, j->L->expert_ptrs[e], 1);
}

static void experts_run(keep_job *j, moec_task_fn fn) {
    moec_moe_ws *w = j->w;
    int32_t *order = w->expert_order, n = 0;
    for (int e = 0; e < w->n_ffn; e++)
        if (w->offsets[e + 1] > w->offsets[e]) order[n++] = e;
    if (n < 2 * moec_threads_count()) {
        for (int e = 0; e < w->n_ffn; e++) fn(j, e, 0);
        return;
    }
    for (int a = 1; a < n; a++) { /* insertion sort by rows, descending; ties by expert index */
        const int32_t e = order[a], ne = w->offsets[e + 1] - w->offsets[e];
        int b = a;
        for (; b > 0 && w->offsets[order[b - 1] + 1] - w->offsets[order[b - 1]] < ne; b--) order[b] = order[b - 1];
        order[b] = e;
    }
    j->order = order;
    moec_parallel_for(n, fn, j);
}

/* ------------------------------------------------------------------ expert kinds (no GEMM) */

/* Null renormalisation (AdaMoE; MoE++'s default gating path): a token's null picks weigh 0 and
 * each other pick c·w/S, S = Σ of the token's non-null weights, c = routed_scaling (a scaling
 * still applies). A token whose picks are all null gets weight 0 everywhere: MoE output 0. Runs
 * before dispatch (expert == chosen). */
static void null_renorm_forward(moec_moe_ws *w, int T, float c) {
    moec_routing *r = &w->r;
    const int nr = w->n_rowed, n = r->n_slots;
    memset(w->wsum, 0, (size_t)T * sizeof *w->wsum);
    for (int s = 0; s < n; s++) {
        w->wraw[s] = r->weight[s];
        if (r->expert[s] >= 0 && r->expert[s] < nr) w->wsum[r->token[s]] += r->weight[s];
    }
    for (int s = 0; s < n; s++) {
        const int e = r->expert[s];
        if (e < 0) continue;
        const float S = w->wsum[r->token[s]];
        r->weight[s] = e < nr && S > 0.f ? c * w->wraw[s] / S : 0.f;
    }
}

/* dweight ← ∂ℓ/∂(router weight) given ∂ℓ/∂(renormalised weight): for a non-null pick i of a token,
 * (c/S)(dw'_i − Σ_j dw'_j u_j), u_j = w_j / S over the token's non-null picks (the choice before
 * capacity: a dropped pick was in S); null picks get 0. */
static void null_renorm_backward(moec_moe_ws *w, int T, float c) {
    const moec_routing *r = &w->r;
    const int nr = w->n_rowed;
    for (int t = 0; t < T; t++) {
        const float S = w->wsum[t];
        double dot = 0;
        for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
            const int s = w->tok_slot[i], e = r->chosen[s];
            if (e >= 0 && e < nr && S > 0.f) dot += (double)w->dweight[s] * (w->wraw[s] / S);
        }
        for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
            const int s = w->tok_slot[i], e = r->chosen[s];
            w->dweight[s] = e >= 0 && e < nr && S > 0.f ? (float)(c / S * (w->dweight[s] - dot)) : 0.f;
        }
    }
}

/* Routers in fp32 whatever moec_matmul_precision_get says (nn/linear.h); FP32 is never
 * written when it is already set, so concurrent inference sessions never race on it. */
static moec_matmul_precision router_precision_enter(void) {
    const moec_matmul_precision p = moec_matmul_precision_get();
    if (p != MOEC_MATMUL_FP32) moec_matmul_precision_set(MOEC_MATMUL_FP32);
    return p;
}
static void router_precision_leave(moec_matmul_precision p) {
    if (p != MOEC_MATMUL_FP32) moec_matmul_precision_set(p);
}

/* Copy and constant experts on their rows of xg → eo: copy gives x; constant j gives
 * a1·x + a2·v_j with [a1, a2] = softmax(W_c,j · x) (kept in cst_a for the backward). */
static void zero_compute_forward(moec_moe_ws *w, const moec_layer *L) {
    const int d = w->d;
    /* W_c is a gate (its backward below is fp32 loops): fp32 like the routers */
    const moec_matmul_precision prec = router_precision_enter();
    for (int j = 0; j < w->n_const; j++) {
        const int e = w->n_ffn + j, r0 = w->offsets[e], n = w->offsets[e + 1] - r0;
        if (!n) continue;
        float *a = w->cst_a + 2 * (size_t)r0;
        moec_linear(a, 2, w->xg + (size_t)r0 * d, d, &L->const_w[j], NULL, n);
        const float *v = L->const_v[j];
        for (int i = 0; i < n; i++) {
            float *ai = a + 2 * (size_t)i;
            const float m = fmaxf(ai[0], ai[1]), e0 = expf(ai[0] - m), e1 = expf(ai[1] - m);
            ai[0] = e0 / (e0 + e1);
            ai[1] = e1 / (e0 + e1);
            const float *x = w->xg + (size_t)(r0 + i) * d;
            float *o = w->eo + (size_t)(r0 + i) * d;
            for (int k = 0; k < d; k++) o[k] = ai[0] * x[k] + ai[1] * v[k];
        }
    }
    router_precision_leave(prec);
    const int c0 = w->offsets[w->n_ffn + w->n_const], c1 = w->offsets[w->n_rowed];
    if (c1 > c0) memcpy(w->eo + (size_t)c0 * d, w->xg + (size_t)c0 * d, (size_t)(c1 - c0) * d * sizeof(float));
}

/* Backward of zero_compute_forward: on entry eo rows hold g = ∂ℓ/∂(expert output); on return
 * ∂ℓ/∂xg (copy rows: g itself); W_c and v gradients into G. */
static void zero_compute_backward(moec_moe_ws *w, const moec_layer *L, const moec_layer *G) {
    const int d = w->d;
    for (int j = 0; j < w->n_const; j++) {
        const int e = w->n_ffn + j, r0 = w->offsets[e], n = w->offsets[e + 1] - r0;
        const float *Wc = f32(&L->const_w[j]), *v = L->const_v[j];
        float *dWc = G ? grad_of(&G->const_w[j]) : NULL, *dv = G ? (float *)G->const_v[j] : NULL;
        for (int i = 0; i < n; i++) {
            const float *a = w->cst_a + 2 * (size_t)(r0 + i), *x = w->xg + (size_t)(r0 + i) * d;
            float *g = w->eo + (size_t)(r0 + i) * d;
            double da0 = 0, da1 = 0;
            for (int k = 0; k < d; k++) {
                da0 += (double)g[k] * x[k];
                da1 += (double)g[k] * v[k];
            }
            const double m = a[0] * da0 + a[1] * da1;
            const float dc0 = (float)(a[0] * (da0 - m)), dc1 = (float)(a[1] * (da1 - m));
            for (int k = 0; k < d; k++) {
                if (dv) dv[k] += a[1] * g[k];
                if (dWc) {
                    dWc[k] += dc0 * x[k];
                    dWc[d + k] += dc1 * x[k];
                }
                g[k] = a[0] * g[k] + dc0 * Wc[k] + dc1 * Wc[d + k];
            }
        }
    }
}

/* ------------------------------------------------------------------ routing carry and RMoE */

int moec_moe_carry_dim(const moec_hparams *hp) {
    const moec_router_cfg *rc = &hp->route;
    if (hp->n_expert <= 0) return 0;
    return rc->rnn_dim > 0 ? rc->rnn_dim : rc->gate_residual ? rc->n_expert : 0;
}

const float *moec_moe_carry(const moec_moe_ws *ws) { return ws->carry_dim ? ws->carry_last : NULL; }

const float *moec_moe_dcarry(const moec_moe_ws *ws) { return ws->dcarry; }

static float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

/* RMoE's GRU cell (PyTorch's equations and gate order r, z, n) on x' = rx [T, r] and h [T, r]:
 *   r = σ(W_ir x' + b_ir + W_hr h + b_hr), z = σ(W_iz x' + b_iz + W_hz h + b_hz),
 *   n = tanh(W_in x' + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h  → hout.
 * Keeps r, z, n in rg and W_hn h + b_hn in rghn. */
static void gru_forward(moec_moe_ws *w, const moec_layer *L, const float *h, float *hout, int T) {
    const int r = w->rnn;
    moec_linear(w->rg, 3 * r, w->rx, r, &L->rnn_w_ih, L->rnn_b_ih, T);
    moec_linear(w->rd3h, 3 * r, h, r, &L->rnn_w_hh, L->rnn_b_hh, T);
    for (int t = 0; t < T; t++) {
        float *gi = w->rg + (size_t)t * 3 * r;
        const float *gh = w->rd3h + (size_t)t * 3 * r, *hp = h + (size_t)t * r;
        float *ho = hout + (size_t)t * r, *ghn = w->rghn + (size_t)t * r;
        for (int i = 0; i < r; i++) {
            const float rr = sigmoidf(gi[i] + gh[i]), z = sigmoidf(gi[r + i] + gh[r + i]);
            const float n = tanhf(gi[2 * r + i] + rr * gh[2 * r + i]);
            ghn[i] = gh[2 * r + i];
            gi[i] = rr;
            gi[r + i] = z;
            gi[2 * r + i] = n;
            ho[i] = (1.f - z) * n + z * hp[i];
        }
    }
}

/* Backward of gru_forward: dh [T, r] = ∂ℓ/∂h' in, ∂ℓ/∂x' out (in place); dhprev [T, r] = ∂ℓ/∂h
 * (overwritten); GRU gradients into G (shared by every layer: they add up). */
static void gru_backward(moec_moe_ws *w, const moec_layer *L, const moec_layer *G, const float *h, float *dh,
                         float *dhprev, int T) {
    const int r = w->rnn;
    for (int t = 0; t < T; t++) {
        const float *g = w->rg + (size_t)t * 3 * r, *ghn = w->rghn + (size_t)t * r, *hp = h + (size_t)t * r;
        const float *dho = dh + (size_t)t * r;
        float *di = w->rd3 + (size_t)t * 3 * r, *dg = w->rd3h + (size_t)t * 3 * r, *dp = dhprev + (size_t)t * r;
        for (int i = 0; i < r; i++) {
            const float rr = g[i], z = g[r + i], n = g[2 * r + i];
            const float dn = dho[i] * (1.f - z), dz = dho[i] * (hp[i] - n);
            const float dnp = dn * (1.f - n * n), drp = dnp * ghn[i] * rr * (1.f - rr), dzp = dz * z * (1.f - z);
            di[i] = dg[i] = drp;
            di[r + i] = dg[r + i] = dzp;
            di[2 * r + i] = dnp;
            dg[2 * r + i] = dnp * rr;
            dp[i] = dho[i] * z;
        }
    }
    memset(dh, 0, (size_t)T * r * sizeof *dh);
    moec_linear_backward(dh, r, G ? grad_of(&G->rnn_w_ih) : NULL, G ? (float *)G->rnn_b_ih : NULL, w->rd3, 3 * r, w->rx,
                         r, f32(&L->rnn_w_ih), T, r, 3 * r);
    moec_linear_backward(dhprev, r, G ? grad_of(&G->rnn_w_hh) : NULL, G ? (float *)G->rnn_b_hh : NULL, w->rd3h, 3 * r,
                         h, r, f32(&L->rnn_w_hh), T, r, 3 * r);
}

/* Router logits [T, E] of the router input xin, with the routing carry: MoE++ adds W_g · carry_in
 * (the previous MoE layer's post-residual logits) and passes the result on; RMoE runs
 * logits = W2 · GRU(W1 · xin, carry_in) and passes the GRU state on. */
static void route_logits(moec_moe_ws *w, const moec_layer *L, const float *xin, int T, const float *carry_in) {
    const moec_matmul_precision prec = router_precision_enter();
    const int d = w->d, E = w->E;
    w->carry_in_used = carry_in ? carry_in : w->zeros;
    float *cout = w->carry_dim ? w->carry[w->flip] : NULL;
    if (w->rnn) {
        moec_linear(w->rx, w->rnn, xin, d, &L->router_proj, NULL, T);
        gru_forward(w, L, w->carry_in_used, cout, T);
        moec_linear(w->logits, E, cout, w->rnn, &L->router, NULL, T);
    } else {
        moec_linear(w->logits, E, xin, d, &L->router, NULL, T);
        if (carry_in && L->gate_map.data) {
            moec_linear(w->probs, E, carry_in, E, &L->gate_map, NULL, T); /* probs: scratch until the router */
            for (size_t i = 0; i < (size_t)T * E; i++) w->logits[i] += w->probs[i];
        }
        if (cout) memcpy(cout, w->logits, (size_t)T * E * sizeof(float));
    }
    if (cout) {
        w->carry_last = cout;
        if (!w->keep) w->flip ^= 1; /* the next layer sharing this workspace reads this one */
    }
    router_precision_leave(prec);
}

/* dW += dyᵀ · xin and dx += ∂/∂x of y = xin · Wᵀ, xin = x or the jittered x ⊙ noise. */
static void router_input_backward(moec_moe_ws *w, const moec_mat *W, float *dW, const float *dy, int N, const float *x,
                                  float *dx, int T) {
    const int d = w->d;
    /* xr (the jittered input) is still the forward's: dW needs it, then it is free scratch */
    const float *xin = w->jittered ? w->xr : x;
    moec_linear_backward(NULL, 0, dW, NULL, dy, N, xin, d, f32(W), T, d, N);
    if (dx && !w->jittered) {
        moec_linear_backward(dx, d, NULL, NULL, dy, N, NULL, d, f32(W), T, d, N);
    } else if (dx) {
        float *dxr = w->xr; /* ∂/∂x̃, then ⊙ noise into dx */
        memset(dxr, 0, (size_t)T * d * sizeof(float));
        moec_linear_backward(dxr, d, NULL, NULL, dy, N, NULL, d, f32(W), T, d, N);
        for (size_t i = 0; i < (size_t)T * d; i++) dx[i] += dxr[i] * w->noise[i];
    }
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

/* ------------------------------------------------------------------ row loops (thread pool) */

/* The per-row loops of the forward and backward: each writes its own rows (or slots) only, so
 * they run as tasks of about BIG_WORK in any order with the same result. */
typedef struct {
    moec_moe_ws *w;
    const float *x, *dy;
    float *y, *dx;
    int d, gated;
} moe_job;

static void moe_loop(moe_job *j, int64_t n, moec_range_fn fn) {
    moec_parallel_range(n, moec_grain(n, j->d, BIG_WORK), fn, j);
}

/* xg[row] = x[token of row] */
static void gather_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const moe_job *j = job;
    const moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t row = r0; row < r1; row++)
        memcpy(w->xg + (size_t)row * d, j->x + (size_t)w->r.token[w->row_src[row]] * d, (size_t)d * sizeof(float));
}

/* y[t] = Σ over t's slots in slot order of weight · eo[row] (thread-independent sums) */
static void combine_rows(void *job, int64_t t0, int64_t t1, int tid) {
    const moe_job *j = job;
    const moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t t = t0; t < t1; t++) {
        float *yr = j->y + (size_t)t * d;
        memset(yr, 0, (size_t)d * sizeof *yr);
        for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
            const int s = w->tok_slot[i], row = w->row_of[s];
            if (row < 0) continue;
            const float ws = w->r.weight[s];
            const float *er = w->eo + (size_t)row * d;
            for (int c = 0; c < d; c++) yr[c] += ws * er[c];
        }
    }
}

/* y[t] += g[t] · so[t], g = sigmoid(gate logit) or 1; ssig ← g */
static void shared_rows(void *job, int64_t t0, int64_t t1, int tid) {
    const moe_job *j = job;
    moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t t = t0; t < t1; t++) {
        const float g = j->gated ? 1.f / (1.f + expf(-w->ssig[t])) : 1.f;
        w->ssig[t] = g;
        float *yr = j->y + (size_t)t * d;
        const float *sr = w->so + (size_t)t * d;
        for (int c = 0; c < d; c++) yr[c] += g * sr[c];
    }
}

/* dweight[s] = dy[token] · eo[row] */
static void dweight_slots(void *job, int64_t s0, int64_t s1, int tid) {
    const moe_job *j = job;
    moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t s = s0; s < s1; s++) {
        const int row = w->row_of[s];
        float acc = 0.f;
        if (row >= 0) {
            const float *dyr = j->dy + (size_t)w->r.token[s] * d, *er = w->eo + (size_t)row * d;
            for (int c = 0; c < d; c++) acc += dyr[c] * er[c];
        }
        w->dweight[s] = acc;
    }
}

/* shared expert backward: so ← g · dy (∂/∂S(x)), ssig ← ∂/∂ gate logit */
static void shared_back_rows(void *job, int64_t t0, int64_t t1, int tid) {
    const moe_job *j = job;
    moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t t = t0; t < t1; t++) {
        const float *dyr = j->dy + (size_t)t * d;
        float *sr = w->so + (size_t)t * d;
        const float g = w->ssig[t];
        float dot = 0.f;
        for (int c = 0; c < d; c++) {
            dot += dyr[c] * sr[c];
            sr[c] = g * dyr[c];
        }
        w->ssig[t] = dot * g * (1.f - g);
    }
}

/* eo[row] ← weight · dy[token] */
static void eo_back_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const moe_job *j = job;
    moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t row = r0; row < r1; row++) {
        const int s = w->row_src[row];
        const float ws = w->r.weight[s];
        const float *dyr = j->dy + (size_t)w->r.token[s] * d;
        float *er = w->eo + (size_t)row * d;
        for (int c = 0; c < d; c++) er[c] = ws * dyr[c];
    }
}

/* dx[t] += ∂/∂xg of t's slots, in slot order */
static void scatter_rows(void *job, int64_t t0, int64_t t1, int tid) {
    const moe_job *j = job;
    const moec_moe_ws *w = j->w;
    const int d = j->d;
    (void)tid;
    for (int64_t t = t0; t < t1; t++) {
        float *dxr = j->dx + (size_t)t * d;
        for (int i = w->tok_off[t]; i < w->tok_off[t + 1]; i++) {
            const int row = w->row_of[w->tok_slot[i]];
            if (row < 0) continue;
            const float *gr = w->eo + (size_t)row * d;
            for (int c = 0; c < d; c++) dxr[c] += gr[c];
        }
    }
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
    route_logits(w, L, xin, T, call->carry_in);
    moec_route_opts opts = call->opts ? *call->opts : (moec_route_opts){0};
    if (opts.k <= 0 || opts.k > w->k_max) opts.k = opts.k > w->k_max ? w->k_max : 0;
    /* the call's context for the routers (routing.h) */
    opts.token_ids = call->token_ids;
    opts.seq_len = call->seq_len;
    opts.step = call->step;
    opts.train = call->train;
    opts.rng = call->jitter_rng;
    opts.serve_rng = call->serve_rng;
    opts.seq_rng = call->seq_rng;
    opts.hash_table = L->hash_table;
    const moec_router *rt = moec_router_for_call(rc, call->causal);
    MOEC_ASSERT(!call->causal || !rt->non_causal); /* refused before: moec_router_check_servable */
    w->router = rt;
    w->k_eff = moec_router_call_k(rc, rt, opts.k); /* f_i = c_i / (N·k): the slots this call routes with */
    rt->forward(rc, L->router_bias, w->logits, T, &opts, &w->r, w->probs, w->rscratch);
    moec_routing *r = &w->r;
    MOEC_ASSERT(r->n_slots >= 0 && r->n_slots <= r->cap);
    if (L->router_scale) { /* MoGE: w · router_scale[e]; the tensor exists iff the config turns it on */
        MOEC_ASSERT(rc->router_scale && (!w->keep || w->wpre));
        moec_routing_scale(r, L->router_scale, w->wpre);
    }
    if (rc->n_null && rc->null_renorm) null_renorm_forward(w, T, rc->routed_scaling);

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
        C = (int64_t)ceil((double)T * w->k_eff / E * rc->capacity_factor);
        if (C < 1) C = 1;
    }
    dispatch(w, T, C, rc->drop_policy);
    const int R = w->offsets[E];
    moe_job job = {.w = w, .x = x, .y = y, .d = d};
    moe_loop(&job, R, gather_rows);

    /* experts: FFN groups, then the copy and constant experts (no GEMM; null experts have no rows) */
    if (w->keep) {
        keep_job kj = {.w = w, .L = L, .d = d};
        experts_run(&kj, keep_forward_item);
    } else {
        moec_ffn_grouped(w->eo, w->xg, L->expert_ptrs, w->offsets, w->n_ffn, d, w->ff_max, w->hg, w->hu, w->items);
    }
    if (w->n_rowed > w->n_ffn) zero_compute_forward(w, L);

    /* combine: each token's slots in slot order (thread-independent sums) */
    moe_loop(&job, T, combine_rows);

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
        job.gated = gated;
        moe_loop(&job, T, shared_rows);
    }

    if (st) {
        st->aux = aux + router_loss;
        st->router_loss = router_loss;
        st->z = z;
        st->counts = w->counts;
        int64_t assigned = 0;
        for (int e = 0; e < E; e++) assigned += w->counts[e];
        st->n_assigned = assigned;
        int64_t true_chosen = 0, null_chosen = 0;
        for (int e = 0; e < w->n_ffn; e++) true_chosen += w->counts[e];
        for (int e = w->n_rowed; e < E; e++) null_chosen += w->counts[e];
        st->n_dropped = assigned - R - null_chosen; /* null picks have no row and are not drops */
        st->n_true = w->offsets[w->n_ffn];
        st->n_true_chosen = true_chosen;
        st->n_zero_compute = assigned - true_chosen;
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
    moe_job job = {.w = w, .x = x, .dy = dy, .dx = dx, .d = d};
    moe_loop(&job, n, dweight_slots);

    if (rc->n_null && rc->null_renorm) null_renorm_backward(w, T, rc->routed_scaling);
    if (L->router_scale) moec_routing_scale_backward(r, L->router_scale, w->wpre, w->dweight, G ? G->router_scale : NULL);

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
    /* the routing carry: the next MoE layer's ∂ℓ/∂(this layer's carry out) joins here */
    const float *dco = w->call.dcarry_out;
    if (w->dcarry) memset(w->dcarry, 0, (size_t)T * w->carry_dim * sizeof(float));
    const moec_matmul_precision prec = router_precision_enter();
    if (w->rnn) { /* logits = W2 h, h = GRU(W1 x̃, h_prev) */
        const int rr = w->rnn;
        const float *h = w->carry_last;
        moec_linear_backward(NULL, 0, G ? grad_of(&G->router) : NULL, NULL, w->dlogits, E, h, rr, f32(&L->router), T,
                             rr, E);
        if (dco) memcpy(w->rd1, dco, (size_t)T * rr * sizeof(float));
        else memset(w->rd1, 0, (size_t)T * rr * sizeof(float));
        moec_linear_backward(w->rd1, rr, NULL, NULL, w->dlogits, E, NULL, rr, f32(&L->router), T, rr, E);
        gru_backward(w, L, G, w->carry_in_used, w->rd1, w->dcarry, T);
        router_input_backward(w, &L->router_proj, G ? grad_of(&G->router_proj) : NULL, w->rd1, rr, x, dx, T);
    } else {
        if (dco)
            for (size_t i = 0; i < (size_t)T * E; i++) w->dlogits[i] += dco[i];
        if (L->gate_map.data && w->call.carry_in) /* logits += W_g · carry_in */
            moec_linear_backward(w->dcarry, E, G ? grad_of(&G->gate_map) : NULL, NULL, w->dlogits, E, w->call.carry_in, E,
                                 f32(&L->gate_map), T, E, E);
        router_input_backward(w, &L->router, G ? grad_of(&G->router) : NULL, w->dlogits, E, x, dx, T);
    }
    router_precision_leave(prec);

    /* shared expert */
    if (L->has_shared) {
        const int gated = L->shared_gate.data != NULL;
        moe_loop(&job, T, shared_back_rows);
        if (gated)
            moec_linear_backward(dx, d, G ? grad_of(&G->shared_gate) : NULL, NULL, w->ssig, 1, x, d,
                                 f32(&L->shared_gate), T, d, 1);
        ffn_backward_keep(dx, G ? &G->shared : NULL, w->so, w->sg, w->su, w->sact, x, T, d, w->fs, &L->shared, 0);
    }

    /* expert outputs: eo[row] ← weight · dy[token] */
    const int R = w->offsets[E];
    moe_loop(&job, R, eo_back_rows);
    /* experts: ∂/∂xg overwrites each expert's own eo rows once they have been read */
    keep_job kj = {.w = w, .L = L, .G = G, .d = d, .want_dx = dx != NULL};
    experts_run(&kj, keep_backward_item);
    (void)ff;
    if (w->n_rowed > w->n_ffn) zero_compute_backward(w, L, G);
    /* scatter ∂/∂xg to tokens, each token's slots in slot order */
    if (dx) {
        moe_loop(&job, T, scatter_rows);
    }
}
