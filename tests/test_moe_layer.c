/* test_moe_layer.c — the one MoE layer (moe/moe.h) driven with F32 weight views (training
 * mode, keep = 1), router "topk", checked without PyTorch:
 *
 *  - finite differences of the whole layer: d(total)/d(x), d/d(router), d/d(one used expert's
 *    gate, up, down), d/d(shared expert gate weight, shared gate, shared down), for
 *    total = Σ y·G + L_aux + L_z with large coefficients so the losses weigh in; renorm on and
 *    off, with and without a (gated / ungated) shared expert, top-1. Central differences in
 *    fp32, eps = 1e-3, losses summed in double. Inputs are redrawn until every token's k-th
 *    and (k+1)-th router logits are >= 0.05 apart (a step moves a logit by ~1e-3 · 2, so no
 *    step crosses a top-k boundary); with the probs drop policy also until, for every
 *    over-full expert, the C-th and (C+1)-th largest weights are >= 0.01 apart (a step moves a
 *    weight by < 1e-3), so no step changes which slots are dropped.
 *    Tolerance: max|fd − analytic| <= 2e-2 · max|analytic| per tensor (fp32 round-off of the
 *    loss, ~1e-6 relative, over 2·eps is ~1e-3 of the gradient scale; a missing term — aux,
 *    z, renorm, shared gate, jitter factor — moves the gradient by far more);
 *  - the losses against closed forms computed here in double from x and the router (micro-
 *    batch, sequence and global-batch LBL, z-loss; rel. 1e-5), and the top-k choice against a
 *    sort done here;
 *  - the backward accumulates: a second forward+backward doubles the gradients (1e-6 rel.);
 *  - capacity and dropping (MOE_SPECS §1): every token routed to expert 0 → exactly
 *    C = ceil(T·k/E·CF) of its slots kept (n_dropped, slots: expert −1 where dropped, chosen
 *    still 0); position policy keeps the first C slots, probs policy the C largest weights;
 *    a token whose slots were all dropped gets y = shared expert only (or exactly 0), kept
 *    tokens y = w·E0(x) (+ shared), both against a double-precision reference (1e-5 rel.);
 *    dropped slots get no gradient (exact zeros); FD with drops (both policies);
 *  - per-request k (opts->k < cfg k): one slot per token, C from the call's k, FD; a token
 *    with zero experts (expert_mask all zero: every slot without an expert, y = shared only,
 *    FD) and with fewer selectable experts than k (mask with one expert, k = 2);
 *  - LBL scopes: sequence (call.seq_len) and global batch (call.global_counts/global_tokens):
 *    value against the closed form and FD of the total incl. the LBL; global scope: one call of
 *    8 tokens == two calls of 4 at loss scale 1/2 (loss, router and input gradients);
 *  - router variants on the same checks: softmax over the top-k logits (Mixtral) and sigmoid
 *    scores with routed scaling (P = s/Σs in the closed form);
 *  - router jitter (cfg jitter > 0, call.jitter_rng re-seeded before each forward): FD with the
 *    same noise in every evaluation, and the noise does change the routing weights;
 *  - the load-balancing loss at all-zero logits is α (Megatron normalisation, MOE_SPECS §1),
 *    also with a per-request k;
 *  - MoGE (router moge): the LBL at zero logits is α under a k override below the group count
 *    (its k is the router's slots per token), and the router_scale stage (weights × scale[e];
 *    d/d router_scale and d/d router by FD);
 *  - the thread count (1, 2, 3) does not change anything, bit for bit, the GEMMs included,
 *    and runs repeat bit-identically, on a case large enough for the parallel loops to engage;
 *  - bad arguments to moec_moe_ws_new (d = 0, route.n_expert != n_expert, a NULL router, ...):
 *    MOEC_ERR_INVALID_ARG, a message, *out NULL. */
#include "core/rng.h"
#include "core/threads.h"
#include "moe/moe.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define MAXE 16
#define F32(p, r, c) ((moec_mat){(p), MOEC_DTYPE_F32, (r), (c)})

/* ------------------------------------------------------------------ a layer instance */

/* Parameters (or, for a gradient instance, gradients) of one MoE layer in one buffer, the
 * input x and upstream gradient G in front, and the moec_layer view over them. Never copied
 * by value (the view points into the struct). */
typedef struct {
    moec_hparams hp;
    int T, d, E, k, ff, fs, gated;
    float *mem;
    size_t n;      /* floats in mem */
    size_t n_par;  /* floats from router to the end (the parameter part) */
    float *x, *G;  /* [T, d] */
    float *router; /* [E, d] */
    float *gate[MAXE], *up[MAXE], *down[MAXE];
    float *sh_gate, *sh_up, *sh_down, *sh_gw;
    moec_ffn ex[MAXE];
    const moec_ffn *eptr[MAXE];
    moec_layer L;
} lay;

static void lay_init(lay *P, int T, int d, int E, int k, int ff, int fs, int gated, int renorm) {
    memset(P, 0, sizeof *P);
    P->T = T, P->d = d, P->E = E, P->k = k, P->ff = ff, P->fs = fs, P->gated = gated && fs > 0;
    moec_hparams *hp = &P->hp;
    hp->n_embd = d, hp->n_expert = E, hp->n_expert_used = k, hp->n_ff_expert = ff, hp->n_ff_shared = fs;
    hp->n_layer = 1, hp->layer_moe[0] = 1, hp->norm_topk_prob = renorm;
    hp->route = moec_router_cfg_default(E, k, renorm);
    hp->route.aux_coef = 0.5f;
    hp->route.z_coef = 0.05f;
    const size_t sd = (size_t)d, sff = (size_t)ff, sfs = (size_t)fs;
    P->n_par = (size_t)E * sd + 3 * (size_t)E * sff * sd + 3 * sfs * sd + sd;
    P->n = 2 * (size_t)T * sd + P->n_par;
    P->mem = calloc(P->n, sizeof(float));
    float *q = P->mem;
    P->x = q, q += (size_t)T * sd;
    P->G = q, q += (size_t)T * sd;
    P->router = q, q += (size_t)E * sd;
    for (int e = 0; e < E; e++) {
        P->gate[e] = q, q += sff * sd;
        P->up[e] = q, q += sff * sd;
        P->down[e] = q, q += sff * sd;
        P->ex[e] = (moec_ffn){F32(P->gate[e], ff, d), F32(P->up[e], ff, d), F32(P->down[e], d, ff)};
        P->eptr[e] = &P->ex[e];
    }
    P->sh_gate = q, q += sfs * sd;
    P->sh_up = q, q += sfs * sd;
    P->sh_down = q, q += sfs * sd;
    P->sh_gw = q, q += sd;
    P->L = (moec_layer){.is_moe = 1, .router = F32(P->router, E, d), .experts = P->ex, .expert_ptrs = P->eptr};
    if (fs) {
        P->L.has_shared = 1;
        P->L.shared = (moec_ffn){F32(P->sh_gate, fs, d), F32(P->sh_up, fs, d), F32(P->sh_down, d, fs)};
        P->L.shared_gate = P->gated ? F32(P->sh_gw, 1, d) : (moec_mat){NULL, MOEC_DTYPE_F32, 1, d};
    }
}

/* a gradient instance shaped like P (zeroed) */
static void lay_like(lay *Gr, const lay *P) {
    lay_init(Gr, P->T, P->d, P->E, P->k, P->ff, P->fs, P->gated, P->hp.norm_topk_prob);
    Gr->hp = P->hp;
}

static void lay_free(lay *P) { free(P->mem); }

static void lay_random(lay *P, float router_scale) {
    const size_t d = (size_t)P->d, ff = (size_t)P->ff, fs = (size_t)P->fs;
    for (size_t i = 0; i < (size_t)P->T * d; i++) P->x[i] = frand(), P->G[i] = frand();
    for (size_t i = 0; i < (size_t)P->E * d; i++) P->router[i] = router_scale * frand();
    for (int e = 0; e < P->E; e++)
        for (size_t i = 0; i < ff * d; i++) {
            P->gate[e][i] = 0.5f * frand();
            P->up[e][i] = 0.5f * frand();
            P->down[e][i] = 0.5f * frand();
        }
    for (size_t i = 0; i < fs * d; i++) {
        P->sh_gate[i] = 0.5f * frand();
        P->sh_up[i] = 0.5f * frand();
        P->sh_down[i] = 0.5f * frand();
    }
    for (size_t i = 0; i < d; i++) P->sh_gw[i] = 0.5f * frand();
}

/* ------------------------------------------------------------------ one evaluation context */

typedef struct {
    lay *P;
    moec_moe_ws *ws;
    moec_moe_call call;
    moec_route_opts opts;
    int use_opts;
    moec_rng rng;       /* jitter noise, re-seeded from seed before every forward */
    uint64_t seed;
    float *y;           /* [T, d] */
    moec_moe_stats st;
} ctx;

static int ctx_init(ctx *c, lay *P, int losses) {
    memset(c, 0, sizeof *c);
    c->P = P;
    c->call.losses = losses;
    c->call.train = 1; /* a training step: capacity applies (inference is dropless; checked below) */
    c->seed = 4711;
    c->y = calloc((size_t)P->T * P->d, sizeof(float));
    moec_error err = {0};
    moec_status s = moec_moe_ws_new(&c->ws, &P->hp, P->T, 1, &err);
    CHECK(s == MOEC_OK && c->ws, "workspace: %s", err.msg);
    return s == MOEC_OK;
}

static void ctx_free(ctx *c) {
    moec_moe_ws_free(c->ws);
    free(c->y);
}

static void forward(ctx *c) {
    lay *P = c->P;
    if (c->P->hp.route.jitter > 0.f) {
        moec_rng_seed(&c->rng, c->seed);
        c->call.jitter_rng = &c->rng;
    }
    c->call.opts = c->use_opts ? &c->opts : NULL;
    memset(&c->st, 0, sizeof c->st);
    moec_moe_forward(c->ws, &P->hp, &P->L, c->y, P->x, P->T, &c->call, &c->st);
}

/* total = Σ y·G + L_aux + L_z, in double */
static double total(ctx *c) {
    forward(c);
    double s = c->st.aux + c->st.z;
    for (size_t i = 0; i < (size_t)c->P->T * c->P->d; i++) s += (double)c->y[i] * c->P->G[i];
    return s;
}

/* forward + backward into Gr (gradients) and dx (both accumulate) */
static void grads(ctx *c, lay *Gr, float *dx) {
    forward(c);
    moec_moe_backward(c->ws, &c->P->hp, &c->P->L, &Gr->L, dx, c->P->G, c->P->x, c->P->T, 1.f);
}

/* ------------------------------------------------------------------ references (double) */

/* the router input of the next forward: x, or x ⊙ the jitter noise moe.c draws from the re-seeded
 * stream (1 − ε + 2ε·u, in row-major order) */
static void router_input(const ctx *c, double *xr) {
    const lay *P = c->P;
    const size_t n = (size_t)P->T * P->d;
    const float eps = P->hp.route.jitter;
    moec_rng r;
    moec_rng_seed(&r, c->seed);
    for (size_t i = 0; i < n; i++) {
        float f = 1.f;
        if (eps > 0.f) f = 1.f - eps + 2.f * eps * moec_rng_uniform(&r);
        xr[i] = (double)(P->x[i] * f);
    }
}

/* logits z [T, E] in double */
static void ref_logits(const ctx *c, double *z) {
    const lay *P = c->P;
    double *xr = malloc((size_t)P->T * P->d * sizeof *xr);
    router_input(c, xr);
    for (int t = 0; t < P->T; t++)
        for (int e = 0; e < P->E; e++) {
            double s = 0;
            for (int i = 0; i < P->d; i++) s += (double)P->router[e * P->d + i] * xr[t * P->d + i];
            z[t * P->E + e] = s;
        }
    free(xr);
}

/* indices of v [n] sorted by value, descending, ties to the lower index; mask may be NULL */
static int sorted_idx(const double *v, int n, const uint8_t *mask, int *idx) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!mask || mask[i]) idx[m++] = i;
    for (int a = 0; a < m; a++)
        for (int b = a + 1; b < m; b++)
            if (v[idx[b]] > v[idx[a]] || (v[idx[b]] == v[idx[a]] && idx[b] < idx[a])) {
                int t = idx[a];
                idx[a] = idx[b], idx[b] = t;
            }
    return m;
}

static int k_eff(const ctx *c) { return c->use_opts && c->opts.k > 0 ? c->opts.k : c->P->k; }

/* smallest gap, over tokens, between the k-th and (k+1)-th selectable router logit */
static double min_topk_gap(const ctx *c) {
    const lay *P = c->P;
    const int E = P->E, K = k_eff(c);
    double *z = malloc((size_t)P->T * E * sizeof *z), worst = 1e30;
    ref_logits(c, z);
    const uint8_t *mask = c->use_opts ? c->opts.expert_mask : NULL;
    for (int t = 0; t < P->T; t++) {
        int idx[MAXE];
        const int m = sorted_idx(z + t * E, E, mask, idx);
        if (K < m) worst = fmin(worst, z[t * E + idx[K - 1]] - z[t * E + idx[K]]);
    }
    free(z);
    return worst;
}

/* after a forward: smallest gap, over experts with more chosen slots than C, between their
 * C-th and (C+1)-th largest weight (1e30 when no expert is over capacity) */
static double min_drop_gap(const ctx *c, int64_t C) {
    const moec_routing *r = c->st.routing;
    double worst = 1e30;
    for (int e = 0; e < c->P->E; e++) {
        double w[512];
        int n = 0, idx[512];
        for (int s = 0; s < r->n_slots && n < 512; s++)
            if (r->chosen[s] == e) w[n++] = r->weight[s];
        if (n <= C) continue;
        /* simple selection sort of n <= 512 weights (tiny cases only) */
        for (int i = 0; i < n; i++) idx[i] = i;
        for (int a = 0; a <= (int)C; a++)
            for (int b = a + 1; b < n; b++)
                if (w[idx[b]] > w[idx[a]]) {
                    int t = idx[a];
                    idx[a] = idx[b], idx[b] = t;
                }
        worst = fmin(worst, w[idx[C - 1]] - w[idx[C]]);
    }
    return worst;
}

static int64_t capacity_of(const ctx *c) {
    const float cf = c->P->hp.route.capacity_factor;
    if (!(cf > 0.f)) return 0;
    int64_t C = (int64_t)ceil((double)c->P->T * k_eff(c) / c->P->E * cf);
    return C < 1 ? 1 : C;
}

/* the LBL and z-loss of the last forward in closed form: P = softmax of the double logits,
 * counts from the routing's chosen experts (checked against a sort separately) */
static void ref_losses(const ctx *c, double *aux, double *zl) {
    const lay *P = c->P;
    /* f_i = c_i / (N·k) with the k the call routes with (a per-request k changes it) */
    const int T = P->T, E = P->E, K = c->use_opts && c->opts.k > 0 ? c->opts.k : P->k;
    const moec_router_cfg *rc = &P->hp.route;
    double *z = malloc((size_t)T * E * sizeof *z), *p = malloc((size_t)T * E * sizeof *p);
    ref_logits(c, z);
    double zs = 0;
    for (int t = 0; t < T; t++) {
        double m = z[t * E];
        for (int e = 1; e < E; e++) m = fmax(m, z[t * E + e]);
        double s = 0;
        for (int e = 0; e < E; e++) s += exp(z[t * E + e] - m);
        if (rc->score == MOEC_SCORE_SIGMOID) { /* P = s / Σ s (DeepSeek-V3's sequence-wise loss) */
            double ss = 0;
            for (int e = 0; e < E; e++) ss += 1 / (1 + exp(-z[t * E + e]));
            for (int e = 0; e < E; e++) p[t * E + e] = 1 / (1 + exp(-z[t * E + e])) / ss;
        } else {
            for (int e = 0; e < E; e++) p[t * E + e] = exp(z[t * E + e] - m) / s;
        }
        const double lse = m + log(s);
        zs += lse * lse;
    }
    *zl = rc->z_coef * zs / T;
    const moec_routing *r = c->st.routing;
    const int L = rc->aux_scope == MOEC_LBL_SEQUENCE ? (c->call.seq_len > 0 ? c->call.seq_len : T) : T;
    double acc = 0;
    for (int t0 = 0; t0 < T; t0 += L) {
        double cnt[MAXE] = {0}, Pm[MAXE] = {0}, nf = L;
        for (int s = 0; s < r->n_slots; s++)
            if (r->chosen[s] >= 0 && r->token[s] >= t0 && r->token[s] < t0 + L) cnt[r->chosen[s]]++;
        if (rc->aux_scope == MOEC_LBL_GLOBAL_BATCH) {
            for (int e = 0; e < E; e++) cnt[e] = (double)c->call.global_counts[e];
            nf = (double)c->call.global_tokens;
        }
        for (int t = t0; t < t0 + L; t++)
            for (int e = 0; e < E; e++) Pm[e] += p[t * E + e] / L;
        double s = 0;
        for (int e = 0; e < E; e++) s += cnt[e] / (nf * K) * Pm[e];
        acc += rc->aux_coef * E * s;
    }
    *aux = acc / (T / L);
    free(z);
    free(p);
}

/* SwiGLU FFN of one row in double: out [d] = down(silu(gate x) ⊙ up x) */
static void ref_ffn(double *out, const float *x, const float *g, const float *u, const float *dn, int d, int f) {
    double h[256];
    for (int j = 0; j < f; j++) {
        double a = 0, b = 0;
        for (int i = 0; i < d; i++) a += (double)g[j * d + i] * x[i], b += (double)u[j * d + i] * x[i];
        h[j] = a / (1 + exp(-a)) * b;
    }
    for (int i = 0; i < d; i++) {
        double s = 0;
        for (int j = 0; j < f; j++) s += (double)dn[i * f + j] * h[j];
        out[i] = s;
    }
}

/* y of token t in double from the routing of the last forward: Σ kept slots w·E(x) + shared */
static void ref_y(const ctx *c, int t, double *yt) {
    const lay *P = c->P;
    const int d = P->d;
    const float *xt = P->x + (size_t)t * d;
    double o[256];
    for (int i = 0; i < d; i++) yt[i] = 0;
    const moec_routing *r = c->st.routing;
    for (int s = 0; s < r->n_slots; s++) {
        const int e = r->expert[s];
        if (r->token[s] != t || e < 0) continue;
        ref_ffn(o, xt, P->gate[e], P->up[e], P->down[e], d, P->ff);
        for (int i = 0; i < d; i++) yt[i] += (double)r->weight[s] * o[i];
    }
    if (P->fs) {
        ref_ffn(o, xt, P->sh_gate, P->sh_up, P->sh_down, d, P->fs);
        double g = 1;
        if (P->gated) {
            double a = 0;
            for (int i = 0; i < d; i++) a += (double)P->sh_gw[i] * xt[i];
            g = 1 / (1 + exp(-a));
        }
        for (int i = 0; i < d; i++) yt[i] += g * o[i];
    }
}

/* ------------------------------------------------------------------ checks */

/* central differences of total over every entry of v [n] against ga [n] */
static void fd_check(const char *what, ctx *c, float *v, const float *ga, size_t n) {
    const float eps = 1e-3f;
    double max_err = 0, max_g = 0;
    for (size_t i = 0; i < n; i++) {
        const float v0 = v[i];
        v[i] = v0 + eps;
        const double lp = total(c);
        v[i] = v0 - eps;
        const double lm = total(c);
        v[i] = v0;
        const double fd = (lp - lm) / (2.0 * eps);
        max_err = fmax(max_err, fabs(fd - ga[i]));
        max_g = fmax(max_g, fabs(ga[i]));
    }
    /* 2e-2 relative to the tensor's largest gradient, see the file comment */
    CHECK(max_g > 1e-4 && max_err <= 2e-2 * max_g, "%s: max|fd - analytic| = %.3g, max|analytic| = %.3g", what,
          max_err, max_g);
    printf("  %-24s max|fd - analytic| = %.3g  (max|grad| %.3g, rel %.2e)\n", what, max_err, max_g,
           max_g > 0 ? max_err / max_g : 0.0);
}

/* the routing of the last forward: k_eff slots per token in token order, chosen = the top-k of
 * the double logits (selectable experts; none left → MOEC_NO_EXPERT), expert = chosen or −1
 * (dropped), counts = chosen per expert */
static void check_routing(ctx *c, const char *name) {
    const lay *P = c->P;
    const moec_routing *r = c->st.routing;
    const int T = P->T, E = P->E, K = k_eff(c);
    CHECK(r && r->n_slots == T * K, "%s: %d slots, want %d", name, r ? r->n_slots : -1, T * K);
    if (!r || r->n_slots != T * K) return;
    double *z = malloc((size_t)T * E * sizeof *z);
    ref_logits(c, z);
    const uint8_t *mask = c->use_opts ? c->opts.expert_mask : NULL;
    int bad = 0, bad_exp = 0;
    int64_t cnt[MAXE] = {0}, assigned = 0, kept = 0;
    for (int t = 0; t < T; t++) {
        int idx[MAXE];
        const int m = sorted_idx(z + t * E, E, mask, idx);
        for (int j = 0; j < K; j++) {
            const int s = t * K + j, want = j < m ? idx[j] : MOEC_NO_EXPERT;
            bad += r->token[s] != t || r->chosen[s] != want;
            bad_exp += r->expert[s] != r->chosen[s] && r->expert[s] != MOEC_NO_EXPERT;
            if (r->chosen[s] >= 0) cnt[r->chosen[s]]++, assigned++;
            kept += r->expert[s] >= 0;
        }
    }
    CHECK(bad == 0, "%s: %d slots differ from the top-%d of the logits", name, bad, K);
    CHECK(bad_exp == 0, "%s: %d slots with an expert other than their choice", name, bad_exp);
    for (int e = 0; e < E; e++) CHECK(c->st.counts[e] == cnt[e], "%s: counts[%d] %lld, want %lld", name, e,
                                      (long long)c->st.counts[e], (long long)cnt[e]);
    CHECK(c->st.n_assigned == assigned && c->st.n_dropped == assigned - kept, "%s: assigned %lld dropped %lld, want %lld %lld",
          name, (long long)c->st.n_assigned, (long long)c->st.n_dropped, (long long)assigned, (long long)(assigned - kept));
    /* capacity: at most C kept per expert; with drops, exactly C kept by the policy */
    const int64_t C = capacity_of(c);
    for (int e = 0; C > 0 && e < E; e++) {
        int64_t k_e = 0;
        for (int s = 0; s < r->n_slots; s++) k_e += r->expert[s] == e;
        const int64_t want = cnt[e] < C ? cnt[e] : C;
        CHECK(k_e == want, "%s: expert %d keeps %lld slots, want min(chosen %lld, C %lld)", name, e, (long long)k_e,
              (long long)cnt[e], (long long)C);
    }
    free(z);
}

static void check_losses(ctx *c, const char *name) {
    double aux, zl;
    ref_losses(c, &aux, &zl);
    CHECK(fabs(c->st.aux - aux) <= 1e-5 * fabs(aux) + 1e-9, "%s: aux %.9g, closed form %.9g", name, c->st.aux, aux);
    CHECK(fabs(c->st.z - zl) <= 1e-5 * fabs(zl) + 1e-9, "%s: z %.9g, closed form %.9g", name, c->st.z, zl);
}

/* analytic gradients of the last setup (Gr, dx zeroed here), then FD of every checked tensor */
static void fd_all(ctx *c, const char *name) {
    lay *P = c->P, Gr;
    lay_like(&Gr, P);
    const size_t Td = (size_t)P->T * P->d, d = (size_t)P->d, ff = (size_t)P->ff, fs = (size_t)P->fs;
    float *dx = calloc(Td, sizeof *dx);
    grads(c, &Gr, dx);
    check_routing(c, name);
    if (c->call.losses) check_losses(c, name);
    /* an expert with kept rows for the expert-weight check */
    int ex = -1;
    for (int s = 0; s < c->st.routing->n_slots && ex < 0; s++) ex = c->st.routing->expert[s];
    fd_check("dx", c, P->x, dx, Td);
    fd_check("d router", c, P->router, Gr.router, (size_t)P->E * d);
    if (ex >= 0) {
        fd_check("d gate[used expert]", c, P->gate[ex], Gr.gate[ex], ff * d);
        fd_check("d up[used expert]", c, P->up[ex], Gr.up[ex], ff * d);
        fd_check("d down[used expert]", c, P->down[ex], Gr.down[ex], ff * d);
    }
    if (fs) {
        if (P->gated) fd_check("d shared gate weight", c, P->sh_gw, Gr.sh_gw, d);
        fd_check("d shared gate", c, P->sh_gate, Gr.sh_gate, fs * d);
        fd_check("d shared down", c, P->sh_down, Gr.sh_down, fs * d);
    }

    /* accumulation: one more forward + backward on the same grads doubles them */
    lay G2;
    lay_like(&G2, P);
    memcpy(G2.mem, Gr.mem, Gr.n * sizeof(float));
    float *dx2 = malloc(Td * sizeof *dx2);
    memcpy(dx2, dx, Td * sizeof *dx2);
    grads(c, &G2, dx2);
    double worst = 0, gmax = 0;
    for (size_t i = 2 * Td; i < Gr.n; i++) {
        worst = fmax(worst, fabs(G2.mem[i] - 2.0 * Gr.mem[i]));
        gmax = fmax(gmax, fabs(Gr.mem[i]));
    }
    for (size_t i = 0; i < Td; i++) worst = fmax(worst, fabs(dx2[i] - 2.0 * dx[i]));
    /* 1e-6 relative: the two backward passes are identical, only the += rounds */
    CHECK(worst <= 1e-6 * gmax + 1e-7, "%s: backward does not accumulate: %g", name, worst);
    free(dx2);
    lay_free(&G2);
    free(dx);
    lay_free(&Gr);
}

/* redraws P until the top-k (and, with the probs policy, the drop) margins hold */
static void draw(ctx *c, float router_scale) {
    int tries = 0;
    for (;;) {
        lay_random(c->P, router_scale);
        int ok = min_topk_gap(c) >= 0.05;
        if (ok && c->P->hp.route.capacity_factor > 0.f && c->P->hp.route.drop_policy == MOEC_DROP_PROBS) {
            forward(c);
            ok = min_drop_gap(c, capacity_of(c)) >= 0.01;
        }
        if (ok || ++tries >= 2000) break;
    }
    CHECK(tries < 2000, "no draw with clear margins");
}

/* ------------------------------------------------------------------ finite-difference cases */

typedef struct {
    const char *name;
    int T, E, k, fs, gated, renorm;
    float cf;
    moec_drop_policy policy;
    moec_lbl_scope scope;
    int seq_len;
    int opt_k;            /* per-request k (0 = none) */
    const uint8_t *mask;  /* per-request expert mask */
    float jitter;
    int need_drops;       /* the case must drop slots */
    uint64_t seed;
    int variant;          /* 0 softmax; 1 topk_softmax (Mixtral); 2 sigmoid, routed scaling 2.5 */
} fd_case;

static void run_fd_case(const fd_case *fc) {
    printf("%s\n", fc->name);
    g_rng = fc->seed;
    lay P;
    lay_init(&P, fc->T, 8, fc->E, fc->k, 6, fc->fs, fc->gated, fc->renorm);
    P.hp.route.capacity_factor = fc->cf;
    P.hp.route.drop_policy = fc->policy;
    P.hp.route.aux_scope = fc->scope;
    P.hp.route.jitter = fc->jitter;
    if (fc->variant == 1) P.hp.route.topk_softmax = 1;
    if (fc->variant == 2) P.hp.route.score = MOEC_SCORE_SIGMOID, P.hp.route.routed_scaling = 2.5f;
    ctx c;
    if (!ctx_init(&c, &P, 1)) {
        lay_free(&P);
        return;
    }
    c.call.seq_len = fc->seq_len;
    if (fc->opt_k || fc->mask) {
        c.use_opts = 1;
        c.opts.k = fc->opt_k;
        c.opts.expert_mask = fc->mask;
    }
    int64_t gcounts[MAXE];
    if (fc->scope == MOEC_LBL_GLOBAL_BATCH) {
        /* the whole step: this call's tokens and 2·T more, routed unevenly */
        for (int e = 0; e < fc->E; e++) gcounts[e] = 0;
        c.call.global_counts = gcounts;
        c.call.global_tokens = 3 * fc->T;
    }
    draw(&c, 1.0f);
    if (fc->scope == MOEC_LBL_GLOBAL_BATCH) {
        forward(&c);
        int64_t extra = 2 * (int64_t)fc->T * fc->k;
        for (int e = 0; e < fc->E; e++) gcounts[e] = c.st.counts[e];
        for (int e = 0; e < fc->E && extra > 0; e++) {
            const int64_t add = e == fc->E - 1 ? extra : extra * (e + 1) / (fc->E + 2);
            gcounts[e] += add;
            extra -= add;
        }
    }
    if (fc->need_drops) {
        forward(&c);
        CHECK(c.st.n_dropped > 0, "%s: no slot was dropped", fc->name);
        printf("  dropped %lld of %lld slots (C = %lld)\n", (long long)c.st.n_dropped, (long long)c.st.n_assigned,
               (long long)capacity_of(&c));
    }
    if (fc->jitter > 0.f) {
        /* the noise is applied: weights differ from a forward without it */
        forward(&c);
        float w0[512];
        const int ns = c.st.routing->n_slots < 512 ? c.st.routing->n_slots : 512;
        memcpy(w0, c.st.routing->weight, (size_t)ns * sizeof(float));
        moec_rng *keep = c.call.jitter_rng;
        P.hp.route.jitter = 0.f; /* forward() then leaves the rng alone */
        c.call.jitter_rng = NULL;
        forward(&c);
        int differ = 0;
        for (int s = 0; s < ns; s++) differ += w0[s] != c.st.routing->weight[s];
        CHECK(differ > 0, "%s: router jitter did not change any weight", fc->name);
        P.hp.route.jitter = fc->jitter;
        c.call.jitter_rng = keep;
        /* and the same seed gives the same forward */
        forward(&c);
        differ = 0;
        for (int s = 0; s < ns; s++) differ += w0[s] != c.st.routing->weight[s];
        CHECK(differ == 0, "%s: the same jitter seed gave other weights", fc->name);
    }
    fd_all(&c, fc->name);
    ctx_free(&c);
    lay_free(&P);
}

static const uint8_t mask_none[4] = {0, 0, 0, 0};
static const uint8_t mask_one[4] = {0, 0, 1, 0};

static const fd_case fd_cases[] = {
    {"renorm, top-2 of 4, no shared expert", 6, 4, 2, 0, 0, 1, 0, 0, 0, 0, 0, NULL, 0, 0, 12345, 0},
    {"no renorm, top-2 of 5, gated shared expert", 6, 5, 2, 7, 1, 0, 0, 0, 0, 0, 0, NULL, 0, 0, 999, 0},
    {"top-1 of 3, renorm (weights are 1)", 6, 3, 1, 0, 0, 1, 0, 0, 0, 0, 0, NULL, 0, 0, 4242, 0},
    {"renorm, top-2 of 4, ungated shared expert", 6, 4, 2, 5, 0, 1, 0, 0, 0, 0, 0, NULL, 0, 0, 31337, 0},
    {"capacity 0.75, position policy, renorm, shared", 8, 4, 2, 5, 1, 1, 0.75f, MOEC_DROP_POSITION, 0, 0, 0, NULL, 0, 1, 71, 0},
    {"capacity 0.75, position policy, no renorm", 8, 4, 2, 0, 0, 0, 0.75f, MOEC_DROP_POSITION, 0, 0, 0, NULL, 0, 1, 72, 0},
    {"capacity 0.75, probs policy, renorm", 8, 4, 2, 0, 0, 1, 0.75f, MOEC_DROP_PROBS, 0, 0, 0, NULL, 0, 1, 73, 0},
    {"capacity 0.5, probs policy, no renorm, shared", 8, 4, 2, 5, 1, 0, 0.5f, MOEC_DROP_PROBS, 0, 0, 0, NULL, 0, 1, 74, 0},
    {"per-request k = 1 of cfg k = 3, renorm", 6, 5, 3, 0, 0, 1, 0, 0, 0, 0, 1, NULL, 0, 0, 81, 0},
    {"per-request k = 1 of 2, capacity 1, no renorm", 8, 4, 2, 0, 0, 0, 1.0f, MOEC_DROP_POSITION, 0, 0, 1, NULL, 0, 0, 82, 0},
    {"expert mask none: every token has zero experts, shared", 6, 4, 2, 5, 1, 1, 0, 0, 0, 0, 0, mask_none, 0, 0, 83, 0},
    {"expert mask one expert, k = 2: one empty slot per token", 6, 4, 2, 0, 0, 1, 0, 0, 0, 0, 0, mask_one, 0, 0, 84, 0},
    {"sequence-scope LBL (2 sequences of 3)", 6, 4, 2, 0, 0, 1, 0, 0, MOEC_LBL_SEQUENCE, 3, 0, NULL, 0, 0, 91, 0},
    {"sequence-scope LBL (3 sequences of 2), no renorm", 6, 4, 2, 5, 1, 0, 0, 0, MOEC_LBL_SEQUENCE, 2, 0, NULL, 0, 0, 92, 0},
    {"global-scope LBL (step of 3 micro-batches)", 6, 4, 2, 0, 0, 1, 0, 0, MOEC_LBL_GLOBAL_BATCH, 0, 0, NULL, 0, 0, 93, 0},
    {"router jitter 0.5, renorm", 6, 4, 2, 0, 0, 1, 0, 0, 0, 0, 0, NULL, 0.5f, 0, 101, 0},
    {"router jitter 0.3, no renorm, shared, capacity 0.75", 8, 4, 2, 5, 1, 0, 0.75f, MOEC_DROP_POSITION, 0, 0, 0, NULL,
     0.3f, 1, 102, 0},
    {"softmax over the top-k logits (Mixtral), capacity 0.75", 8, 4, 2, 0, 0, 1, 0.75f, MOEC_DROP_POSITION, 0, 0, 0, NULL,
     0, 1, 111, 1},
    {"sigmoid scores, renorm, routed scaling 2.5, shared", 6, 5, 2, 5, 1, 1, 0, 0, 0, 0, 0, NULL, 0, 0, 112, 2},
    {"sigmoid scores, no renorm, routed scaling 2.5, seq LBL", 6, 4, 2, 0, 0, 0, 0, 0, MOEC_LBL_SEQUENCE, 3, 0, NULL, 0, 0,
     113, 2},
};

/* ------------------------------------------------------------------ capacity: all on expert 0 */

/* every token's best expert is 0 (x[:, 0] in [0.75, 1.25], router row 0 = (8, 0, ..)), with
 * k = 2 also every second choice is expert 1 (row 1 = (5, 0, ..): z0 − z1 >= 2.25, z1 >= 3.75);
 * the other logits stay below 0.3·(1.25 + 7) < 2.5 */
static void all_to_expert0(lay *P, int two) {
    lay_random(P, 0.3f);
    for (int t = 0; t < P->T; t++) P->x[t * P->d] = 1.f + 0.25f * frand();
    for (int i = 0; i < P->d; i++) P->router[i] = i == 0 ? 8.f : 0.f;
    if (two)
        for (int i = 0; i < P->d; i++) P->router[P->d + i] = i == 0 ? 5.f : 0.f;
}

static void test_capacity_case(int k, int opt_k, float cf, moec_drop_policy policy, int fs) {
    const int T = 8, E = 4, ke = opt_k ? opt_k : k;
    printf("capacity: all tokens on expert 0%s, k %d%s, CF %.2f, %s policy, %s\n", ke == 2 ? " (second: 1)" : "", k,
           opt_k ? " (per-request 1)" : "", cf, policy == MOEC_DROP_PROBS ? "probs" : "position",
           fs ? "gated shared expert" : "no shared expert");
    g_rng = 555 + (uint64_t)(k * 100 + opt_k * 10 + fs) + (uint64_t)(cf * 1000) + policy;
    lay P;
    lay_init(&P, T, 8, E, k, 6, fs, 1, 0); /* no renorm: the weights p_0 differ per token */
    P.hp.route.capacity_factor = cf;
    P.hp.route.drop_policy = policy;
    ctx c;
    if (!ctx_init(&c, &P, 0)) {
        lay_free(&P);
        return;
    }
    if (opt_k) c.use_opts = 1, c.opts.k = opt_k;
    all_to_expert0(&P, ke == 2);
    forward(&c);
    const moec_routing *r = c.st.routing;
    const int64_t C = (int64_t)ceil((double)T * ke / E * cf); /* MOE_SPECS §1, Megatron get_capacity */
    CHECK(C == capacity_of(&c) && C >= 1 && C < T, "test setup: C = %lld", (long long)C);
    CHECK(r->n_slots == T * ke, "slots %d, want %d", r->n_slots, T * ke);
    CHECK(c.st.n_assigned == (int64_t)T * ke, "assigned %lld, want %d", (long long)c.st.n_assigned, T * ke);
    CHECK(c.st.n_dropped == (int64_t)ke * (T - C), "n_dropped %lld, want %lld (C = %lld)", (long long)c.st.n_dropped,
          (long long)(ke * (T - C)), (long long)C);
    CHECK(c.st.counts[0] == T, "counts[0] = %lld before capacity, want %d", (long long)c.st.counts[0], T);
    {   /* not a training step (evaluation, inference): dropless */
        c.call.train = 0;
        forward(&c);
        CHECK(c.st.n_dropped == 0, "capacity outside training: %lld slots dropped, want 0", (long long)c.st.n_dropped);
        c.call.train = 1;
        forward(&c);
    }
    /* which slots of each over-full expert stay: position = the first C; probs = the C largest
     * weights (the weights are distinct: checked) */
    int kept_want[64] = {0};
    for (int j = 0; j < ke; j++) {
        int sl[64], n = 0;
        for (int t = 0; t < T; t++) sl[n++] = t * ke + j; /* expert j's slots, in slot order */
        if (policy == MOEC_DROP_PROBS) {
            for (int a = 0; a < n; a++)
                for (int b = a + 1; b < n; b++) {
                    CHECK(r->weight[sl[a]] != r->weight[sl[b]], "test setup: tied weights");
                    if (r->weight[sl[b]] > r->weight[sl[a]]) {
                        int t = sl[a];
                        sl[a] = sl[b], sl[b] = t;
                    }
                }
        }
        for (int i = 0; i < C; i++) kept_want[sl[i]] = 1;
    }
    int bad = 0;
    for (int s = 0; s < r->n_slots; s++) {
        const int j = s % ke;
        bad += r->token[s] != s / ke || r->chosen[s] != j || r->expert[s] != (kept_want[s] ? j : MOEC_NO_EXPERT);
    }
    CHECK(bad == 0, "%d slots differ from the expected kept/dropped pattern", bad);
    for (int s = 0; s < r->n_slots && bad; s++)
        fprintf(stderr, "  slot %d: token %d chosen %d expert %d weight %.4f (want expert %d)\n", s, r->token[s],
                r->chosen[s], r->expert[s], r->weight[s], kept_want[s] ? s % ke : -1);

    /* y: every token against the double reference of its kept slots (+ shared); a token whose
     * slots were all dropped gets exactly the shared-expert output, or exactly 0 */
    double err = 0, mx = 0;
    int n_empty = 0, nonzero_empty = 0;
    for (int t = 0; t < T; t++) {
        double yt[64];
        ref_y(&c, t, yt);
        int any = 0;
        for (int j = 0; j < ke; j++) any |= kept_want[t * ke + j];
        if (!any) {
            n_empty++;
            if (!fs)
                for (int i = 0; i < P.d; i++) nonzero_empty += c.y[t * P.d + i] != 0.f;
        }
        for (int i = 0; i < P.d; i++) {
            err = fmax(err, fabs(c.y[t * P.d + i] - yt[i]));
            mx = fmax(mx, fabs(yt[i]));
        }
    }
    /* position policy: tokens C.. lost every slot; probs: the set follows the weights (>= 1 here) */
    int n_empty_want = 0;
    for (int t = 0; t < T; t++) {
        int any = 0;
        for (int j = 0; j < ke; j++) any |= kept_want[t * ke + j];
        n_empty_want += !any;
    }
    CHECK(n_empty == n_empty_want && n_empty >= 1 && (policy == MOEC_DROP_PROBS || n_empty == T - C),
          "test setup: %d tokens lost every slot, want %d (T - C = %lld)", n_empty, n_empty_want, (long long)(T - C));
    CHECK(nonzero_empty == 0, "%d output values of fully dropped tokens are not 0", nonzero_empty);
    CHECK(mx > 0 && err <= 1e-5 * mx, "y vs reference: max|diff| %.3g, max|ref| %.3g", err, mx);
    printf("  C = %lld, dropped %lld; y vs double reference: max|diff| %.3g (max|y| %.3g)\n", (long long)C,
           (long long)c.st.n_dropped, err, mx);

    /* no gradient through a dropped slot: dy only on fully dropped tokens, no losses →
     * router and routed-expert gradients exactly 0 (and dx exactly 0 without a shared expert) */
    memset(P.G, 0, (size_t)T * P.d * sizeof(float));
    for (int t = 0; t < T; t++) {
        int any = 0;
        for (int j = 0; j < ke; j++) any |= kept_want[t * ke + j];
        if (!any)
            for (int i = 0; i < P.d; i++) P.G[t * P.d + i] = frand();
    }
    lay Gr;
    lay_like(&Gr, &P);
    float *dx = calloc((size_t)T * P.d, sizeof *dx);
    grads(&c, &Gr, dx);
    int nz = 0, nzx = 0;
    for (size_t i = 0; i < (size_t)E * P.d; i++) nz += Gr.router[i] != 0.f;
    for (int e = 0; e < E; e++)
        for (size_t i = 0; i < (size_t)P.ff * P.d; i++)
            nz += (Gr.gate[e][i] != 0.f) + (Gr.up[e][i] != 0.f) + (Gr.down[e][i] != 0.f);
    for (size_t i = 0; i < (size_t)T * P.d; i++) nzx += dx[i] != 0.f;
    CHECK(nz == 0, "%d router/expert gradient values are non-zero from dropped slots", nz);
    if (!fs) CHECK(nzx == 0, "%d dx values are non-zero from dropped slots", nzx);
    else {
        double sg = 0;
        for (size_t i = 0; i < (size_t)P.fs * P.d; i++) sg += fabs(Gr.sh_down[i]);
        CHECK(sg > 0, "the shared expert of dropped tokens got no gradient");
    }
    free(dx);
    lay_free(&Gr);
    ctx_free(&c);
    lay_free(&P);
}

/* ------------------------------------------------------------------ losses at zero logits */

/* all-zero router: P uniform, L_aux = α (Megatron normalisation, MOE_SPECS §1: f_i = c_i/(T·k)
 * with k the assignments each token made), L_z = c_z·(ln E)²; also with a per-request k */
static void test_zero_logits(int opt_k) {
    const int T = 6, E = 4, k = 2;
    lay P;
    lay_init(&P, T, 8, E, k, 6, 0, 0, 1);
    g_rng = 606;
    lay_random(&P, 0.f);
    ctx c;
    if (!ctx_init(&c, &P, 1)) {
        lay_free(&P);
        return;
    }
    if (opt_k) c.use_opts = 1, c.opts.k = opt_k;
    forward(&c);
    const double a = P.hp.route.aux_coef, zw = P.hp.route.z_coef * log(E) * log(E);
    CHECK(fabs(c.st.aux - a) <= 1e-6 * a, "all-zero logits%s: L_aux %.9g, want alpha = %.9g (%s)",
          opt_k ? ", per-request k = 1 of 2" : "", c.st.aux, a,
          opt_k ? "the LBL must normalise by the call's k, not the config's" : "Megatron normalisation");
    CHECK(fabs(c.st.z - zw) <= 1e-6 * zw, "all-zero logits: L_z %.9g, want c_z (ln E)^2 = %.9g", c.st.z, zw);
    printf("zero logits%s: L_aux %.6g (alpha %.6g), L_z %.6g (c_z ln^2 E %.6g)\n", opt_k ? " (k = 1 per request)" : "",
           c.st.aux, a, c.st.z, zw);
    ctx_free(&c);
    lay_free(&P);
}

/* ------------------------------------------------------------------ MoGE in the layer */

/* MoGE (router "moge", 2 groups) through the layer: (1) all-zero logits with a k override of 1,
 * below the group count, still give L_aux = α: the router routes one expert per group (2 slots per
 * token) and the LBL's k is those 2 slots (moec_router_call_k), so f sums to 1, not to 2;
 * (2) the router_scale stage (MOE_SPECS §11 step 4, w = P · router_scale[e]): each slot's weight is
 * the unscaled run's times router_scale[expert], and d total / d router_scale and d / d router by
 * central differences (total = Σ y·G + L_aux + L_z). */
static void test_moge_layer(void) {
    const int T = 6, E = 4, k = 2;
    lay P, Gr;
    lay_init(&P, T, 8, E, k, 6, 0, 0, 0);
    P.hp.route.router = moec_router_find("moge");
    P.hp.route.n_group = 2;
    P.hp.route.router_scale = 1; /* the workspace keeps the unscaled weights; bound only below */
    g_rng = 1111;
    lay_random(&P, 0.f);
    ctx c;
    if (!ctx_init(&c, &P, 1)) {
        lay_free(&P);
        return;
    }
    c.use_opts = 1, c.opts.k = 1;
    forward(&c);
    const double a = P.hp.route.aux_coef;
    CHECK(c.st.routing->n_slots == 2 * T && fabs(c.st.aux - a) <= 1e-6 * a,
          "moge, zero logits, k override 1 < 2 groups: %d slots, L_aux %.9g, want alpha = %.9g", c.st.routing->n_slots,
          c.st.aux, a);
    c.use_opts = 0;
    /* router_scale */
    lay_random(&P, 1.f);
    float w0[64], scale[MAXE], dscale[MAXE] = {0};
    forward(&c);
    const int n = c.st.routing->n_slots;
    memcpy(w0, c.st.routing->weight, (size_t)n * sizeof *w0);
    for (int e = 0; e < E; e++) scale[e] = 0.5f + (float)e * 0.3f;
    P.L.router_scale = scale;
    forward(&c);
    int bad = 0;
    for (int q = 0; q < n; q++) {
        const int e = c.st.routing->expert[q];
        bad += e < 0 || c.st.routing->weight[q] != w0[q] * scale[e];
    }
    CHECK(n == T * k && bad == 0, "moge router_scale: %d of %d slot weights are not P * router_scale[e]", bad, n);
    lay_like(&Gr, &P);
    Gr.L.router_scale = dscale;
    grads(&c, &Gr, NULL);
    fd_check("d router_scale (moge)", &c, scale, dscale, (size_t)E);
    fd_check("d router (moge, scaled)", &c, P.router, Gr.router, (size_t)E * P.d);
    ctx_free(&c);
    lay_free(&Gr);
    lay_free(&P);
}

/* ------------------------------------------------------------------ global LBL: split invariance */

/* Global-batch LBL (balance.h): with the step's counts passed in, one call on T tokens (loss
 * scale 1) and two calls on T/2 tokens each (scale 1/2, as gradient accumulation does) give the
 * same loss and the same router and input gradients (rel. 1e-5). Only the LBL is on (z off,
 * dy = 0), so nothing else contributes. */
static void test_global_split(void) {
    const int T = 8, h = T / 2;
    g_rng = 808;
    lay P;
    lay_init(&P, T, 8, 4, 2, 6, 0, 0, 1);
    P.hp.route.aux_scope = MOEC_LBL_GLOBAL_BATCH;
    P.hp.route.z_coef = 0.f;
    lay_random(&P, 1.0f);
    memset(P.G, 0, (size_t)T * P.d * sizeof(float));
    moec_moe_ws *w = NULL;
    moec_error err = {0};
    CHECK(moec_moe_ws_new(&w, &P.hp, T, 1, &err) == MOEC_OK, "workspace: %s", err.msg);
    if (!w) {
        lay_free(&P);
        return;
    }
    float *y = calloc((size_t)T * P.d, sizeof *y);
    int64_t gc[MAXE];
    moec_moe_call call = {.losses = 1, .global_counts = gc, .global_tokens = T};
    moec_moe_stats st;
    /* the step's counts: this batch's own */
    for (int e = 0; e < P.E; e++) gc[e] = 1;
    moec_moe_forward(w, &P.hp, &P.L, y, P.x, T, &call, &st);
    for (int e = 0; e < P.E; e++) gc[e] = st.counts[e];
    lay Gf, Gs;
    lay_like(&Gf, &P);
    lay_like(&Gs, &P);
    moec_moe_forward(w, &P.hp, &P.L, y, P.x, T, &call, &st);
    const double aux_full = st.aux;
    moec_moe_backward(w, &P.hp, &P.L, &Gf.L, Gf.x, P.G, P.x, T, 1.f);
    double aux_split = 0;
    for (int part = 0; part < 2; part++) {
        const size_t off = (size_t)part * h * P.d;
        moec_moe_forward(w, &P.hp, &P.L, y, P.x + off, h, &call, &st);
        aux_split += 0.5 * st.aux;
        moec_moe_backward(w, &P.hp, &P.L, &Gs.L, Gs.x + off, P.G + off, P.x + off, h, 0.5f);
    }
    double err_r = 0, mx_r = 0, err_x = 0, mx_x = 0;
    for (size_t i = 0; i < (size_t)P.E * P.d; i++) {
        err_r = fmax(err_r, fabs(Gs.router[i] - Gf.router[i]));
        mx_r = fmax(mx_r, fabs(Gf.router[i]));
    }
    for (size_t i = 0; i < (size_t)T * P.d; i++) {
        err_x = fmax(err_x, fabs(Gs.x[i] - Gf.x[i]));
        mx_x = fmax(mx_x, fabs(Gf.x[i]));
    }
    CHECK(fabs(aux_split - aux_full) <= 1e-6 * aux_full, "global LBL: split %.9g vs one call %.9g", aux_split, aux_full);
    CHECK(mx_r > 0 && err_r <= 1e-5 * mx_r, "global LBL: d router split vs one call: %.3g (max %.3g)", err_r, mx_r);
    CHECK(mx_x > 0 && err_x <= 1e-5 * mx_x, "global LBL: dx split vs one call: %.3g (max %.3g)", err_x, mx_x);
    printf("global LBL, 1 x 8 vs 2 x 4 tokens: aux %.9g vs %.9g; d router %.2e, dx %.2e (rel)\n", aux_full, aux_split,
           mx_r > 0 ? err_r / mx_r : 0.0, mx_x > 0 ? err_x / mx_x : 0.0);
    lay_free(&Gf);
    lay_free(&Gs);
    free(y);
    moec_moe_ws_free(w);
    lay_free(&P);
}

/* ------------------------------------------------------------------ thread-count invariance */

/* forward + backward of one case; returns a buffer: y, losses, counts, n_dropped, dx, grads */
static float *run_all(lay *P, size_t *n_out) {
    const size_t Td = (size_t)P->T * P->d;
    lay Gr;
    lay_like(&Gr, P);
    ctx c;
    if (!ctx_init(&c, P, 1)) {
        lay_free(&Gr);
        return NULL;
    }
    const size_t n = Td + 3 + (size_t)P->E + Gr.n;
    float *out = calloc(n, sizeof *out);
    grads(&c, &Gr, Gr.x); /* dx into Gr's x slot */
    memcpy(out, c.y, Td * sizeof(float));
    out[Td] = (float)c.st.aux;
    out[Td + 1] = (float)c.st.z;
    out[Td + 2] = (float)c.st.n_dropped;
    for (int e = 0; e < P->E; e++) out[Td + 3 + e] = (float)c.st.counts[e];
    memcpy(out + Td + 3 + P->E, Gr.mem, Gr.n * sizeof(float));
    ctx_free(&c);
    lay_free(&Gr);
    *n_out = n;
    return out;
}

static size_t n_differ(const float *a, const float *b, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return diff;
}

static float *run_threads(lay *P, int threads, size_t *n) {
    moec_threads_set(threads);
    return run_all(P, n);
}

static void test_threads(void) {
    g_rng = 77;
    /* N·d = 512·2·64 >= 2^15 so the row loops run in parallel; capacity 1.0 so the
     * drop path runs; a gated shared expert; both losses */
    lay P;
    lay_init(&P, 512, 64, 8, 2, 96, 80, 1, 1);
    P.hp.route.aux_coef = 0.01f;
    P.hp.route.z_coef = 0.001f;
    P.hp.route.capacity_factor = 1.0f;
    lay_random(&P, 0.5f);
    size_t n[4] = {0};
    /* the pool's size must not matter, the GEMMs included (their sums do not depend on the tiling) */
    float *a = run_threads(&P, 1, &n[0]), *b = run_threads(&P, 2, &n[1]);
    /* more threads than cores, and the same count twice: bit-identical runs */
    float *c = run_threads(&P, 3, &n[2]), *e = run_threads(&P, 2, &n[3]);
    CHECK(a && b && c && e && n[0] == n[1] && n[1] == n[2] && n[2] == n[3], "run failed");
    if (a && b && c && e) {
        const size_t Td = (size_t)P.T * P.d;
        CHECK(a[Td + 2] > 0, "the thread case dropped nothing (%g)", a[Td + 2]);
        size_t d12 = n_differ(a, b, n[0]), d13 = n_differ(a, c, n[0]), d_rep = n_differ(b, e, n[0]);
        CHECK(d12 == 0, "%zu of %zu values differ between 1 and 2 threads", d12, n[0]);
        CHECK(d13 == 0, "%zu of %zu values differ between 1 and 3 threads", d13, n[0]);
        CHECK(d_rep == 0, "%zu of %zu values differ between two runs at 2 threads", d_rep, n[0]);
        printf("threads: 1 vs 2: %zu differ; 1 vs 3: %zu; repeat at 2: %zu; of %zu values (%g slots dropped)\n", d12,
               d13, d_rep, n[0], a[Td + 2]);
    }
    moec_threads_set(1);
    free(a);
    free(b);
    free(c);
    free(e);
    lay_free(&P);
}

/* ------------------------------------------------------------------ argument checks */

static void test_bad_args(void) {
    lay good;
    lay_init(&good, 4, 8, 4, 2, 6, 0, 0, 1);
    moec_moe_ws *w = NULL;
    moec_error err = {0};
    CHECK(moec_moe_ws_new(&w, &good.hp, 4, 1, &err) == MOEC_OK && w, "good config refused: %s", err.msg);
    CHECK(moec_moe_ws_bytes(w) > 0, "workspace has no size");
    moec_moe_ws_free(w);
    moec_moe_ws_free(NULL);
    CHECK(moec_moe_ws_bytes(NULL) == 0, "bytes of NULL");
    static const char *what[] = {"k > E", "k = 0", "d = 0", "ff_shared = -1", "E = 0", "route.n_expert != n_expert",
                                 "route.router NULL"};
    enum { N_BAD = sizeof what / sizeof what[0] };
    moec_hparams bad[N_BAD];
    for (int i = 0; i < N_BAD; i++) bad[i] = good.hp;
    bad[0].route.k = 5;
    bad[1].route.k = 0;
    bad[2].n_embd = 0;
    bad[3].n_ff_shared = -1;
    bad[4].n_expert = 0, bad[4].route.n_expert = 0;
    bad[5].route.n_expert = 8;  /* the router would write [T, 8] logits into [T, 4] buffers */
    bad[6].route.router = NULL; /* the forward would call through NULL */
    for (int i = 0; i < N_BAD; i++) {
        w = (moec_moe_ws *)&err; /* must be reset to NULL */
        err.msg[0] = 0;
        moec_status s = moec_moe_ws_new(&w, &bad[i], 4, 1, &err);
        CHECK(s == MOEC_ERR_INVALID_ARG && w == NULL && err.msg[0], "bad config %s: status %d, out %s, msg '%s'",
              what[i], (int)s, w ? "not NULL" : "NULL", err.msg);
        if (s == MOEC_OK && w && w != (moec_moe_ws *)&err) moec_moe_ws_free(w);
    }
    for (int keep = 0; keep <= 1; keep++) {
        w = (moec_moe_ws *)&err;
        err.msg[0] = 0;
        CHECK(moec_moe_ws_new(&w, &good.hp, 0, keep, &err) == MOEC_ERR_INVALID_ARG && !w && err.msg[0],
              "max_T 0 accepted");
        w = (moec_moe_ws *)&err;
        err.msg[0] = 0;
        CHECK(moec_moe_ws_new(&w, &good.hp, INT32_MAX, keep, &err) == MOEC_ERR_INVALID_ARG && !w && err.msg[0],
              "max_T overflow accepted");
    }
    lay_free(&good);
}

int main(void) {
    moec_threads_set(1);
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++) run_fd_case(&fd_cases[i]);
    for (int fs = 0; fs <= 5; fs += 5) {
        test_capacity_case(1, 0, 1.0f, MOEC_DROP_POSITION, fs);
        test_capacity_case(1, 0, 1.0f, MOEC_DROP_PROBS, fs);
        test_capacity_case(1, 0, 1.5f, MOEC_DROP_POSITION, fs);
        test_capacity_case(1, 0, 0.3f, MOEC_DROP_PROBS, fs);
        test_capacity_case(2, 0, 1.0f, MOEC_DROP_POSITION, fs);
        test_capacity_case(2, 0, 0.5f, MOEC_DROP_PROBS, fs);
        test_capacity_case(2, 0, 1.25f, MOEC_DROP_POSITION, fs);
        test_capacity_case(2, 1, 1.0f, MOEC_DROP_POSITION, fs);
    }
    test_global_split();
    test_zero_logits(0);
    test_zero_logits(1);
    test_moge_layer();
    test_threads();
    test_bad_args();
    return test_finish("test_moe_layer");
}
