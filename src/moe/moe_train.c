/* moe_train.c — fp32 MoE layer for training: forward with a cache, exact backward, router
 * losses. See moe_train.h for the math and the contract. Not the inference block
 * (model/forward.c), which reads stored bf16/f16 weights through moe/experts.h. */
#include "moe/moe_train.h"

#include "core/error.h"
#include "moe/dispatch.h"
#include "moe/router.h"
#include "nn/linear.h"
#include "nn/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row loops: OpenMP over disjoint outputs when the work is worth waking threads for; nothing
 * (and no unknown-pragma warning) in a build without OpenMP. */
#define PRAGMA_(x) _Pragma(#x)
#ifdef _OPENMP
#define PARALLEL_FOR_IF(cond) PRAGMA_(omp parallel for schedule(static) if (cond))
#else
#define PARALLEL_FOR_IF(cond)
#endif

/* ------------------------------------------------------------------ cache */

struct moec_moe_cache {
    moec_moe_cfg cfg;
    int max_T;
    int T; /* tokens of the pending forward; 0 = nothing to backpropagate */
    size_t bytes;
    void *mem; /* one allocation; every array below points into it */
    float *prob;  /* [T, E] softmax(z) over all experts */
    float *dz;    /* [T, E] backward scratch: ∂/∂z */
    float *lse;   /* [T] logsumexp_j z[t, j] */
    float *w;     /* [T, k] combine weights (after renorm) */
    float *dw;    /* [T, k] backward scratch: ∂/∂w */
    int32_t *ids; /* [T, k] selected experts, descending weight */
    moec_dispatch disp; /* counts [E], offsets [E+1], row_src [T*k], row_of [T*k] */
    float *xg;    /* [T*k, d] inputs gathered by expert */
    float *hg;    /* [T*k, ff] gate pre-activations; backward: ∂/∂ of them */
    float *hu;    /* [T*k, ff] up pre-activations;   backward: ∂/∂ of them */
    float *eo;    /* [T*k, d] expert outputs; backward: w·dy rows, then ∂/∂xg */
    float *act;   /* [max(T*k*ff, T*ff_shared)] scratch: silu(hg)·hu, then its gradient */
    float *sg;    /* [T, ff_shared] shared-expert gate pre-activations (then ∂) */
    float *su;    /* [T, ff_shared] shared-expert up pre-activations (then ∂) */
    float *so;    /* [T, d] shared-expert output; backward: sigmoid · dy */
    float *ssig;  /* [T] sigmoid(x · w_sg); backward: ∂/∂ of the gate logit */
};

/* a·b in size_t, or 0 with *ok cleared on overflow */
static size_t mul_sz(size_t a, size_t b, int *ok) {
    if (a && b > SIZE_MAX / a) {
        *ok = 0;
        return 0;
    }
    return a * b;
}

moec_status moec_moe_cache_new(moec_moe_cache **out, const moec_moe_cfg *cfg, int max_T, moec_error *err) {
    *out = NULL;
    if (cfg->d < 1 || cfg->n_expert < 1 || cfg->ff < 1 || max_T < 1 || cfg->ff_shared < 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "moe cache: need d, n_expert, ff, max_T >= 1 and ff_shared >= 0 (got %d, %d, %d, %d, %d)",
                        cfg->d, cfg->n_expert, cfg->ff, max_T, cfg->ff_shared);
    if (cfg->top_k < 1 || cfg->top_k > cfg->n_expert)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe cache: top_k %d outside [1, n_expert = %d]", cfg->top_k,
                        cfg->n_expert);
    if ((int64_t)max_T * cfg->top_k > INT32_MAX || (int64_t)max_T * cfg->n_expert > INT32_MAX)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe cache: max_T %d too large for %d experts (top-%d)", max_T,
                        cfg->n_expert, cfg->top_k);
    moec_moe_cache *c = calloc(1, sizeof *c);
    if (!c) return moec_err(err, MOEC_ERR_OOM, "moe cache: out of memory");
    c->cfg = *cfg;
    c->max_T = max_T;

    const size_t T = (size_t)max_T, E = (size_t)cfg->n_expert, k = (size_t)cfg->top_k, d = (size_t)cfg->d,
                 ff = (size_t)cfg->ff, fs = (size_t)cfg->ff_shared, N = T * k;
    int ok = 1;
    size_t n_act = mul_sz(N, ff, &ok), n_sact = mul_sz(T, fs, &ok);
    /* size table and pointer table: one allocation, each array 64-byte aligned */
    struct {
        void **ptr;
        size_t n, size;
    } tab[] = {
        {(void **)&c->prob, T * E, sizeof(float)},      {(void **)&c->dz, T * E, sizeof(float)},
        {(void **)&c->lse, T, sizeof(float)},           {(void **)&c->w, N, sizeof(float)},
        {(void **)&c->dw, N, sizeof(float)},            {(void **)&c->ids, N, sizeof(int32_t)},
        {(void **)&c->disp.counts, E, sizeof(int32_t)}, {(void **)&c->disp.offsets, E + 1, sizeof(int32_t)},
        {(void **)&c->disp.row_src, N, sizeof(int32_t)}, {(void **)&c->disp.row_of, N, sizeof(int32_t)},
        {(void **)&c->xg, mul_sz(N, d, &ok), sizeof(float)},
        {(void **)&c->hg, n_act, sizeof(float)},        {(void **)&c->hu, n_act, sizeof(float)},
        {(void **)&c->eo, mul_sz(N, d, &ok), sizeof(float)},
        {(void **)&c->act, n_act > n_sact ? n_act : n_sact, sizeof(float)},
        {(void **)&c->sg, n_sact, sizeof(float)},       {(void **)&c->su, n_sact, sizeof(float)},
        {(void **)&c->so, fs ? T * d : 0, sizeof(float)}, {(void **)&c->ssig, fs ? T : 0, sizeof(float)},
    };
    const size_t n_tab = sizeof tab / sizeof tab[0];
    size_t total = 0;
    for (size_t i = 0; i < n_tab && ok; i++) {
        size_t b = mul_sz(tab[i].n, tab[i].size, &ok);
        b = (b + 63) & ~(size_t)63;
        if (b > SIZE_MAX - total) ok = 0;
        else total += b;
    }
    if (!ok) {
        free(c);
        return moec_err(err, MOEC_ERR_INVALID_ARG, "moe cache: size overflows for max_T %d", max_T);
    }
    /* +63: malloc guarantees less than 64-byte alignment */
    c->mem = malloc(total + 63);
    if (!c->mem) {
        free(c);
        return moec_err(err, MOEC_ERR_OOM, "moe cache: out of memory (%zu bytes for max_T %d)", total, max_T);
    }
    char *base = (char *)(((uintptr_t)c->mem + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < n_tab; i++) {
        *tab[i].ptr = tab[i].n ? base : NULL;
        base += (tab[i].n * tab[i].size + 63) & ~(size_t)63;
    }
    c->bytes = total + 63 + sizeof *c;
    *out = c;
    return MOEC_OK;
}

void moec_moe_cache_free(moec_moe_cache *c) {
    if (!c) return;
    free(c->mem);
    free(c);
}

size_t moec_moe_cache_bytes(const moec_moe_cache *c) { return c ? c->bytes : 0; }

static int cfg_same(const moec_moe_cfg *a, const moec_moe_cfg *b) {
    return a->d == b->d && a->n_expert == b->n_expert && a->top_k == b->top_k && a->ff == b->ff &&
           a->ff_shared == b->ff_shared && a->renorm == b->renorm;
}

/* ------------------------------------------------------------------ SwiGLU backward */

/* In place, n elements: given a = silu(g)·u and da (∂/∂a), writes g ← ∂/∂g, u ← ∂/∂u.
 *   ∂a/∂u = silu(g);  ∂a/∂g = u · σ(g) · (1 + g·(1 − σ(g)))  (silu'(g) = σ + g·σ·(1 − σ)) */
static void swiglu_backward_inplace(float *g, float *u, const float *da, int64_t n) {
    PARALLEL_FOR_IF(n >= (1 << 15))
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i], s = 1.f / (1.f + expf(-gi));
        const float dsilu = s * (1.f + gi * (1.f - s));
        g[i] = da[i] * u[i] * dsilu;
        u[i] = da[i] * gi * s;
    }
}

/* ------------------------------------------------------------------ SwiGLU FFN on a row block */

/* out [n, d] = down( silu(x·gateᵀ) ⊙ x·upᵀ ), keeping the pre-activations hg, hu [n, f] and
 * using act [n, f] as scratch. */
static void ffn_forward(float *out, float *hg, float *hu, float *act, const float *x, int n, int d, int f,
                        const float *Wg, const float *Wu, const float *Wd) {
    moec_linear_forward(hg, f, x, d, Wg, NULL, n, d, f);
    moec_linear_forward(hu, f, x, d, Wu, NULL, n, d, f);
    moec_swiglu(act, hg, hu, (int64_t)n * f);
    moec_linear_forward(out, d, act, f, Wd, NULL, n, f, d);
}

/* Backward of ffn_forward, in two halves so that a caller may put dx over dout.
 * First half, for dout [n, d]: dWd += doutᵀ·act (if dWd), then hg, hu ← ∂/∂hg, ∂/∂hu (the
 * saved pre-activations are consumed); act [n, f] is scratch. dout is not read afterwards. */
static void ffn_backward_hidden(float *dWd, const float *dout, float *hg, float *hu, float *act, int n, int d, int f,
                                const float *Wd) {
    const int64_t nf = (int64_t)n * f;
    if (dWd) {
        moec_swiglu(act, hg, hu, nf); /* recomputed rather than saved: one T·k·ff array less */
        moec_linear_backward(NULL, 0, dWd, NULL, dout, d, act, f, Wd, n, f, d);
    }
    memset(act, 0, (size_t)nf * sizeof *act);
    moec_linear_backward(act, f, NULL, NULL, dout, d, NULL, f, Wd, n, f, d); /* act ← ∂/∂act */
    swiglu_backward_inplace(hg, hu, act, nf);
}

/* Second half: dWg += dhgᵀ·x, dWu += dhuᵀ·x, dx [n, d] (if non-NULL) += dhg·Wg + dhu·Wu. */
static void ffn_backward_input(float *dx, float *dWg, float *dWu, const float *dhg, const float *dhu, const float *x,
                               int n, int d, int f, const float *Wg, const float *Wu) {
    moec_linear_backward(dx, d, dWg, NULL, dhg, f, x, d, Wg, n, d, f);
    moec_linear_backward(dx, d, dWu, NULL, dhu, f, x, d, Wu, n, d, f);
}

/* ------------------------------------------------------------------ forward */

void moec_moe_forward_train(float *y, const float *x, int T, const moec_moe_cfg *cfg, const moec_moe_params *p,
                            moec_moe_cache *c, float *aux_loss, float *z_loss, int32_t *counts) {
    MOEC_ASSERT(cfg_same(cfg, &c->cfg));
    MOEC_ASSERT(T >= 1 && T <= c->max_T);
    const int d = cfg->d, E = cfg->n_expert, K = cfg->top_k, ff = cfg->ff, N = T * K;
    c->T = T;

    /* route: logits in fp32, logsumexp for the z-loss, then the inference router (softmax over
     * all E, top-k with ties to the lower index, optional renorm); prob ends up holding p */
    moec_linear_forward(c->prob, E, x, d, p->router, NULL, T, d, E);
    for (int t = 0; t < T; t++) {
        const float *z = c->prob + (size_t)t * E;
        float m = z[0];
        for (int e = 1; e < E; e++) m = z[e] > m ? z[e] : m;
        double s = 0.0;
        for (int e = 0; e < E; e++) s += exp((double)z[e] - m);
        c->lse[t] = m + (float)log(s);
    }
    moec_route_softmax_topk(c->prob, T, E, K, cfg->renorm, c->ids, c->w);

    /* dispatch: rows grouped by expert, stable in token order */
    moec_dispatch_build(&c->disp, c->ids, T, K, E);
    const int32_t *row_src = c->disp.row_src, *off = c->disp.offsets;
    PARALLEL_FOR_IF((int64_t)N * d >= (1 << 15))
    for (int r = 0; r < N; r++)
        memcpy(c->xg + (size_t)r * d, x + (size_t)(row_src[r] / K) * d, (size_t)d * sizeof(float));

    /* experts: each one's rows are contiguous; empty experts cost nothing */
    for (int e = 0; e < E; e++) {
        const int n = off[e + 1] - off[e];
        if (n == 0) continue;
        MOEC_ASSERT(p->gate[e] && p->up[e] && p->down[e]);
        const size_t r0 = (size_t)off[e];
        ffn_forward(c->eo + r0 * d, c->hg + r0 * ff, c->hu + r0 * ff, c->act + r0 * ff, c->xg + r0 * d, n, d, ff,
                    p->gate[e], p->up[e], p->down[e]);
    }

    /* combine: fixed slot order per token, so the sum does not depend on threads */
    PARALLEL_FOR_IF((int64_t)N * d >= (1 << 15))
    for (int t = 0; t < T; t++) {
        float *yr = y + (size_t)t * d;
        memset(yr, 0, (size_t)d * sizeof *yr);
        for (int j = 0; j < K; j++) {
            const float wj = c->w[t * K + j];
            const float *er = c->eo + (size_t)c->disp.row_of[t * K + j] * d;
            for (int i = 0; i < d; i++) yr[i] += wj * er[i];
        }
    }

    /* shared expert (Qwen2-MoE): y += sigmoid(x · w_sg) · S(x) */
    if (cfg->ff_shared > 0) {
        const int fs = cfg->ff_shared;
        ffn_forward(c->so, c->sg, c->su, c->act, x, T, d, fs, p->sh_gate, p->sh_up, p->sh_down);
        moec_linear_forward(c->ssig, 1, x, d, p->sh_gate_w, NULL, T, d, 1);
        PARALLEL_FOR_IF((int64_t)T * d >= (1 << 15))
        for (int t = 0; t < T; t++) {
            const float s = 1.f / (1.f + expf(-c->ssig[t]));
            c->ssig[t] = s;
            float *yr = y + (size_t)t * d;
            const float *sr = c->so + (size_t)t * d;
            for (int i = 0; i < d; i++) yr[i] += s * sr[i];
        }
    }

    /* losses and load: fixed-order sums (double), independent of threads */
    if (aux_loss) {
        double acc = 0.0;
        if (cfg->aux_coef != 0.f)
            for (int e = 0; e < E; e++) {
                double P = 0.0;
                for (int t = 0; t < T; t++) P += c->prob[(size_t)t * E + e];
                acc += (double)c->disp.counts[e] / ((double)T * K) * (P / T);
            }
        *aux_loss = (float)((double)cfg->aux_coef * E * acc);
    }
    if (z_loss) {
        double acc = 0.0;
        if (cfg->z_coef != 0.f)
            for (int t = 0; t < T; t++) acc += (double)c->lse[t] * c->lse[t];
        *z_loss = (float)((double)cfg->z_coef * acc / T);
    }
    if (counts) memcpy(counts, c->disp.counts, (size_t)E * sizeof *counts);
}

/* ------------------------------------------------------------------ backward */

void moec_moe_backward(float *dx, const moec_moe_grads *g, const float *dy, float daux, float dz, const float *x,
                       int T, const moec_moe_cfg *cfg, const moec_moe_params *p, moec_moe_cache *c) {
    MOEC_ASSERT(cfg_same(cfg, &c->cfg));
    MOEC_ASSERT(c->T > 0 && T == c->T); /* a forward is pending, for these tokens */
    const int d = cfg->d, E = cfg->n_expert, K = cfg->top_k, ff = cfg->ff, N = T * K;
    const int32_t *row_of = c->disp.row_of, *row_src = c->disp.row_src, *off = c->disp.offsets;
    c->T = 0;

    /* combine backward, weights: dw[t, j] = dy[t] · expert_out[row] */
    PARALLEL_FOR_IF((int64_t)N * d >= (1 << 15))
    for (int a = 0; a < N; a++) {
        const float *dyr = dy + (size_t)(a / K) * d, *er = c->eo + (size_t)row_of[a] * d;
        float s = 0.f;
        for (int i = 0; i < d; i++) s += dyr[i] * er[i];
        c->dw[a] = s;
    }

    /* router backward, per token: w → p (renorm), + aux, softmax → z, + z-loss */
    {
        /* ∂L_aux/∂p[t, i] = α·E·f_i/T, with f_i = count_i/(T·k) held constant */
        const float aux_scale = daux * cfg->aux_coef * (float)E / ((float)T * (float)T * (float)K);
        const float z_scale = dz * cfg->z_coef * 2.f / (float)T;
        PARALLEL_FOR_IF((int64_t)T * E >= (1 << 14))
        for (int t = 0; t < T; t++) {
            const float *pr = c->prob + (size_t)t * E, *wr = c->w + (size_t)t * K, *dwr = c->dw + (size_t)t * K;
            const int32_t *id = c->ids + (size_t)t * K;
            float *dp = c->dz + (size_t)t * E; /* ∂/∂p first, then ∂/∂z in place */
            for (int e = 0; e < E; e++) dp[e] = aux_scale * (float)c->disp.counts[e];
            if (cfg->renorm) {
                /* w_j = p_j / S, S = Σ_sel p:  ∂/∂p_m = (dw_m − Σ_j dw_j·w_j) / S */
                float S = 0.f, dot = 0.f;
                for (int j = 0; j < K; j++) {
                    S += pr[id[j]];
                    dot += dwr[j] * wr[j];
                }
                for (int j = 0; j < K; j++) dp[id[j]] += (dwr[j] - dot) / S;
            } else {
                for (int j = 0; j < K; j++) dp[id[j]] += dwr[j];
            }
            float pdp = 0.f;
            for (int e = 0; e < E; e++) pdp += pr[e] * dp[e];
            const float zt = z_scale * c->lse[t]; /* ∂L_z/∂z = (2·c_z/T)·lse·softmax(z) */
            for (int e = 0; e < E; e++) dp[e] = pr[e] * (dp[e] - pdp + zt);
        }
        moec_linear_backward(dx, d, g ? g->router : NULL, NULL, c->dz, E, x, d, p->router, T, d, E);
    }

    /* shared expert: y += s·S(x), s = sigmoid(x·w_sg) */
    if (cfg->ff_shared > 0) {
        const int fs = cfg->ff_shared;
        PARALLEL_FOR_IF((int64_t)T * d >= (1 << 15))
        for (int t = 0; t < T; t++) {
            const float *dyr = dy + (size_t)t * d;
            float *sr = c->so + (size_t)t * d;
            const float s = c->ssig[t];
            float dot = 0.f;
            for (int i = 0; i < d; i++) {
                dot += dyr[i] * sr[i];
                sr[i] = s * dyr[i]; /* so ← ∂/∂S(x) */
            }
            c->ssig[t] = dot * s * (1.f - s); /* ∂/∂ gate logit */
        }
        moec_linear_backward(dx, d, g ? g->sh_gate_w : NULL, NULL, c->ssig, 1, x, d, p->sh_gate_w, T, d, 1);
        ffn_backward_hidden(g ? g->sh_down : NULL, c->so, c->sg, c->su, c->act, T, d, fs, p->sh_down);
        ffn_backward_input(dx, g ? g->sh_gate : NULL, g ? g->sh_up : NULL, c->sg, c->su, x, T, d, fs, p->sh_gate,
                           p->sh_up);
    }

    /* combine backward, expert outputs: eo[row] ← w · dy[t] (eo is no longer needed) */
    PARALLEL_FOR_IF((int64_t)N * d >= (1 << 15))
    for (int r = 0; r < N; r++) {
        const int a = row_src[r];
        const float wa = c->w[a];
        const float *dyr = dy + (size_t)(a / K) * d;
        float *er = c->eo + (size_t)r * d;
        for (int i = 0; i < d; i++) er[i] = wa * dyr[i];
    }

    /* experts: a few GEMMs on each expert's contiguous rows; ∂/∂xg goes into the expert's own
     * eo rows once its dout has been read for the last time */
    for (int e = 0; e < E; e++) {
        const int n = off[e + 1] - off[e];
        if (n == 0) continue;
        const size_t r0 = (size_t)off[e];
        float *dout = c->eo + r0 * d, *hg = c->hg + r0 * ff, *hu = c->hu + r0 * ff, *act = c->act + r0 * ff;
        const float *xg = c->xg + r0 * d;
        float *dWg = g && g->gate ? g->gate[e] : NULL, *dWu = g && g->up ? g->up[e] : NULL,
              *dWd = g && g->down ? g->down[e] : NULL;
        ffn_backward_hidden(dWd, dout, hg, hu, act, n, d, ff, p->down[e]);
        float *dxg = NULL;
        if (dx) { /* dout's rows are free now: ∂/∂xg overwrites them */
            dxg = dout;
            memset(dxg, 0, (size_t)n * d * sizeof *dxg);
        }
        ffn_backward_input(dxg, dWg, dWu, hg, hu, xg, n, d, ff, p->gate[e], p->up[e]);
    }

    /* scatter ∂/∂xg back to tokens, in slot order */
    if (dx) {
        PARALLEL_FOR_IF((int64_t)N * d >= (1 << 15))
        for (int t = 0; t < T; t++) {
            float *dxr = dx + (size_t)t * d;
            for (int j = 0; j < K; j++) {
                const float *gr = c->eo + (size_t)row_of[t * K + j] * d;
                for (int i = 0; i < d; i++) dxr[i] += gr[i];
            }
        }
    }
}
