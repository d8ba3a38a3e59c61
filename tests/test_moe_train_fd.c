/* test_moe_train_fd.c — finite-difference check of the training MoE layer (moe/moe_train.h),
 * and the properties that do not need PyTorch:
 *  - d(total)/d(x), d/d(router), d/d(one expert's gate, up, down), and d/d(shared expert gate
 *    weight and one shared matrix), total = Σ y·G + L_aux + L_z with large coefficients so
 *    the two losses weigh in; two tiny cases (renorm without shared expert; no renorm with a
 *    shared expert). Central differences in fp32, eps = 1e-3, losses summed in double;
 *    inputs are redrawn until every token's k-th and (k+1)-th logits are 0.05 apart, so no
 *    step crosses a top-k boundary (a step moves a logit by at most ~1e-3 · 2);
 *    tolerance: max|fd − analytic| <= 2e-2 · max|analytic| per tensor (fp32 round-off of the
 *    loss, ~1e-6 relative, divided by 2·eps gives ~1e-3 of the gradient scale; 2e-2 leaves
 *    margin while a missing term — aux, z, renorm, shared gate — moves the gradient by far more);
 *  - the backward accumulates: a second forward+backward doubles the gradients (1e-6 rel.);
 *  - results do not depend on the OpenMP thread count (1 vs 2, bit-identical) and repeat
 *    bit-identically at a fixed thread count, on a case large enough for the parallel loops
 *    to engage (OpenBLAS's own sgemm does round differently at 1 and 2 BLAS threads: that is
 *    reported, not checked here);
 *  - bad configurations are refused with MOEC_ERR_INVALID_ARG. */
#include "moe/moe_train.h"
#include "test_util.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ a layer instance */

typedef struct {
    moec_moe_cfg cfg;
    int T;
    float *mem;                       /* every array below */
    size_t n;                         /* floats in mem */
    float *x, *G;                     /* [T, d] input and upstream gradient */
    float *router;                    /* [E, d] */
    float *gate[64], *up[64], *down[64]; /* [ff, d], [ff, d], [d, ff] */
    float *sh_gate, *sh_up, *sh_down, *sh_gate_w;
} layer;

/* carves the layer's arrays from one buffer; with fill, random values */
static void layer_init(layer *L, const moec_moe_cfg *cfg, int T) {
    L->cfg = *cfg;
    L->T = T;
    const size_t d = (size_t)cfg->d, E = (size_t)cfg->n_expert, ff = (size_t)cfg->ff, fs = (size_t)cfg->ff_shared;
    L->n = 2 * (size_t)T * d + E * d + 3 * E * ff * d + 3 * fs * d + d;
    L->mem = calloc(L->n, sizeof(float));
    float *q = L->mem;
    L->x = q, q += (size_t)T * d;
    L->G = q, q += (size_t)T * d;
    L->router = q, q += E * d;
    for (size_t e = 0; e < E; e++) {
        L->gate[e] = q, q += ff * d;
        L->up[e] = q, q += ff * d;
        L->down[e] = q, q += ff * d;
    }
    L->sh_gate = q, q += fs * d;
    L->sh_up = q, q += fs * d;
    L->sh_down = q, q += fs * d;
    L->sh_gate_w = q, q += d;
}

static void layer_params(const layer *L, moec_moe_params *p) {
    p->router = L->router;
    p->gate = (const float *const *)L->gate;
    p->up = (const float *const *)L->up;
    p->down = (const float *const *)L->down;
    p->sh_gate = L->sh_gate;
    p->sh_up = L->sh_up;
    p->sh_down = L->sh_down;
    p->sh_gate_w = L->sh_gate_w;
}

static void layer_grads(layer *L, moec_moe_grads *g) {
    g->router = L->router;
    g->gate = L->gate;
    g->up = L->up;
    g->down = L->down;
    g->sh_gate = L->sh_gate;
    g->sh_up = L->sh_up;
    g->sh_down = L->sh_down;
    g->sh_gate_w = L->sh_gate_w;
}

static void layer_random(layer *L, float router_scale) {
    const moec_moe_cfg *c = &L->cfg;
    const size_t d = (size_t)c->d, ff = (size_t)c->ff, fs = (size_t)c->ff_shared;
    for (size_t i = 0; i < (size_t)L->T * d; i++) L->x[i] = frand(), L->G[i] = frand();
    for (size_t i = 0; i < (size_t)c->n_expert * d; i++) L->router[i] = router_scale * frand();
    for (int e = 0; e < c->n_expert; e++)
        for (size_t i = 0; i < ff * d; i++) {
            L->gate[e][i] = 0.5f * frand();
            L->up[e][i] = 0.5f * frand();
            L->down[e][i] = 0.5f * frand();
        }
    for (size_t i = 0; i < fs * d; i++) {
        L->sh_gate[i] = 0.5f * frand();
        L->sh_up[i] = 0.5f * frand();
        L->sh_down[i] = 0.5f * frand();
    }
    for (size_t i = 0; i < d; i++) L->sh_gate_w[i] = 0.5f * frand();
}

/* smallest gap, over tokens, between the k-th and (k+1)-th router logit (double) */
static double min_topk_gap(const layer *L) {
    const int d = L->cfg.d, E = L->cfg.n_expert, K = L->cfg.top_k;
    double worst = 1e30;
    for (int t = 0; t < L->T; t++) {
        double z[64];
        for (int e = 0; e < E; e++) {
            double s = 0;
            for (int i = 0; i < d; i++) s += (double)L->router[e * d + i] * L->x[t * d + i];
            z[e] = s;
        }
        /* sort descending (E is tiny) */
        for (int a = 0; a < E; a++)
            for (int b = a + 1; b < E; b++)
                if (z[b] > z[a]) {
                    double tmp = z[a];
                    z[a] = z[b], z[b] = tmp;
                }
        if (K < E && z[K - 1] - z[K] < worst) worst = z[K - 1] - z[K];
    }
    return worst;
}

/* total = Σ y·G + L_aux + L_z, in double */
static double total_loss(const layer *L, moec_moe_cache *c, float *y) {
    moec_moe_params p;
    layer_params(L, &p);
    float aux, z;
    moec_moe_forward_train(y, L->x, L->T, &L->cfg, &p, c, &aux, &z, NULL);
    double s = (double)aux + z;
    for (size_t i = 0; i < (size_t)L->T * L->cfg.d; i++) s += (double)y[i] * L->G[i];
    return s;
}

/* ------------------------------------------------------------------ finite differences */

/* compares an analytic gradient ga [n] of the parameter/input array v [n] with central
 * differences over every entry */
static void fd_check(const char *what, layer *L, moec_moe_cache *c, float *y, float *v, const float *ga, size_t n) {
    const float eps = 1e-3f;
    double max_err = 0, max_g = 0;
    for (size_t i = 0; i < n; i++) {
        const float v0 = v[i];
        v[i] = v0 + eps;
        const double lp = total_loss(L, c, y);
        v[i] = v0 - eps;
        const double lm = total_loss(L, c, y);
        v[i] = v0;
        const double fd = (lp - lm) / (2.0 * eps);
        max_err = fmax(max_err, fabs(fd - ga[i]));
        max_g = fmax(max_g, fabs(ga[i]));
    }
    /* 2e-2 relative to the tensor's largest gradient, see the file comment */
    CHECK(max_g > 1e-4 && max_err <= 2e-2 * max_g, "%s: max|fd - analytic| = %.3g, max|analytic| = %.3g", what,
          max_err, max_g);
    printf("  %-22s max|fd - analytic| = %.3g  (max|grad| %.3g, rel %.2e)\n", what, max_err, max_g,
           max_g > 0 ? max_err / max_g : 0.0);
}

static void test_fd(const char *name, int E, int K, int renorm, int ff_shared, uint64_t seed) {
    printf("%s\n", name);
    g_rng = seed;
    const moec_moe_cfg cfg = {.d = 8, .n_expert = E, .top_k = K, .ff = 6, .ff_shared = ff_shared,
                              .renorm = renorm, .aux_coef = 0.5f, .z_coef = 0.05f};
    const int T = 6;
    layer L, G;
    layer_init(&L, &cfg, T);
    layer_init(&G, &cfg, T);
    int tries = 0;
    do layer_random(&L, 1.0f);
    while (min_topk_gap(&L) < 0.05 && ++tries < 1000);
    CHECK(tries < 1000, "no draw without near-ties");
    moec_moe_cache *c = NULL;
    moec_error err = {0};
    CHECK(moec_moe_cache_new(&c, &cfg, T, &err) == MOEC_OK, "cache: %s", err.msg);
    if (!c) return;
    float *y = calloc((size_t)T * cfg.d, sizeof *y), *dx = calloc((size_t)T * cfg.d, sizeof *dx);

    /* analytic: gradients into G's arrays (zeroed by calloc) */
    moec_moe_params p;
    moec_moe_grads g;
    layer_params(&L, &p);
    layer_grads(&G, &g);
    int32_t counts[64];
    float aux, z;
    moec_moe_forward_train(y, L.x, T, &cfg, &p, c, &aux, &z, counts);
    moec_moe_backward(dx, &g, L.G, 1.f, 1.f, L.x, T, &cfg, &p, c);
    int sum = 0;
    for (int e = 0; e < E; e++) sum += counts[e];
    CHECK(sum == T * K, "counts sum to %d, want %d", sum, T * K);
    /* pick an expert that has tokens for the expert-weight check */
    int ex = 0;
    while (counts[ex] == 0) ex++;

    const size_t d = (size_t)cfg.d, ff = (size_t)cfg.ff, fs = (size_t)cfg.ff_shared;
    fd_check("dx", &L, c, y, L.x, dx, (size_t)T * d);
    fd_check("d router", &L, c, y, L.router, G.router, (size_t)E * d);
    fd_check("d gate[used expert]", &L, c, y, L.gate[ex], G.gate[ex], ff * d);
    fd_check("d up[used expert]", &L, c, y, L.up[ex], G.up[ex], ff * d);
    fd_check("d down[used expert]", &L, c, y, L.down[ex], G.down[ex], ff * d);
    if (fs) {
        fd_check("d shared gate weight", &L, c, y, L.sh_gate_w, G.sh_gate_w, d);
        fd_check("d shared gate", &L, c, y, L.sh_gate, G.sh_gate, fs * d);
        fd_check("d shared down", &L, c, y, L.sh_down, G.sh_down, fs * d);
    }

    /* accumulation: one more forward + backward on the same grads doubles them */
    {
        layer G2;
        layer_init(&G2, &cfg, T);
        memcpy(G2.mem, G.mem, G.n * sizeof(float));
        float *dx2 = malloc((size_t)T * d * sizeof *dx2);
        memcpy(dx2, dx, (size_t)T * d * sizeof *dx2);
        moec_moe_grads g2;
        layer_grads(&G2, &g2);
        moec_moe_forward_train(y, L.x, T, &cfg, &p, c, NULL, NULL, NULL);
        moec_moe_backward(dx2, &g2, L.G, 1.f, 1.f, L.x, T, &cfg, &p, c);
        double worst = 0, gmax = 0;
        for (size_t i = 2 * (size_t)T * d; i < G.n; i++) { /* parameter part of the buffers */
            worst = fmax(worst, fabs(G2.mem[i] - 2.0 * G.mem[i]));
            gmax = fmax(gmax, fabs(G.mem[i]));
        }
        for (size_t i = 0; i < (size_t)T * d; i++) worst = fmax(worst, fabs(dx2[i] - 2.0 * dx[i]));
        /* 1e-6 relative: the two backward passes are identical, only the += rounds */
        CHECK(worst <= 1e-6 * gmax + 1e-7, "backward does not accumulate: %g", worst);
        free(dx2);
        free(G2.mem);
    }
    free(y);
    free(dx);
    free(L.mem);
    free(G.mem);
    moec_moe_cache_free(c);
}

/* ------------------------------------------------------------------ thread-count invariance */

/* forward + backward of one case; returns a buffer: y, losses, counts, dx, all grads */
static float *run_all(const layer *L, size_t *n_out) {
    const moec_moe_cfg *cfg = &L->cfg;
    const size_t Td = (size_t)L->T * cfg->d;
    layer G;
    layer_init(&G, cfg, L->T);
    moec_moe_cache *c = NULL;
    if (moec_moe_cache_new(&c, cfg, L->T, NULL) != MOEC_OK) return NULL;
    const size_t n = Td + 2 + (size_t)cfg->n_expert + G.n;
    float *out = calloc(n, sizeof *out);
    moec_moe_params p;
    moec_moe_grads g;
    layer_params(L, &p);
    layer_grads(&G, &g);
    int32_t counts[64];
    moec_moe_forward_train(out, L->x, L->T, cfg, &p, c, out + Td, out + Td + 1, counts);
    for (int e = 0; e < cfg->n_expert; e++) out[Td + 2 + e] = (float)counts[e];
    moec_moe_backward(G.x, &g, L->G, 1.f, 1.f, L->x, L->T, cfg, &p, c);
    memcpy(out + Td + 2 + cfg->n_expert, G.mem, G.n * sizeof(float));
    free(G.mem);
    moec_moe_cache_free(c);
    *n_out = n;
    return out;
}

static size_t n_differ(const float *a, const float *b, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return diff;
}

static float *run_threads(const layer *L, int omp_threads, int blas_threads, size_t *n) {
#ifdef _OPENMP
    omp_set_num_threads(omp_threads);
#else
    (void)omp_threads;
#endif
    openblas_set_num_threads(blas_threads);
    return run_all(L, n);
}

static void test_threads(void) {
    g_rng = 77;
    /* N·d = 512·2·64 ≥ 2^15 so the OpenMP row loops run in parallel; sgemm sizes let
     * OpenBLAS thread too */
    const moec_moe_cfg cfg = {.d = 64, .n_expert = 8, .top_k = 2, .ff = 96, .ff_shared = 80, .renorm = 1,
                              .aux_coef = 0.01f, .z_coef = 0.001f};
    layer L;
    layer_init(&L, &cfg, 512);
    layer_random(&L, 0.5f);
    size_t n[4] = {0};
    /* this file's own loops: OpenMP thread count must not matter (OpenBLAS held at 1) */
    float *a = run_threads(&L, 1, 1, &n[0]), *b = run_threads(&L, 2, 1, &n[1]);
    /* same thread counts twice: bit-identical runs */
    float *c = run_threads(&L, 2, 2, &n[2]), *e = run_threads(&L, 2, 2, &n[3]);
    CHECK(a && b && c && e && n[0] == n[1] && n[1] == n[2] && n[2] == n[3], "run failed");
    if (a && b && c && e) {
        size_t d_omp = n_differ(a, b, n[0]), d_rep = n_differ(c, e, n[0]), d_blas = n_differ(b, c, n[0]);
        CHECK(d_omp == 0, "%zu of %zu values differ between 1 and 2 OpenMP threads", d_omp, n[0]);
        CHECK(d_rep == 0, "%zu of %zu values differ between two runs at 2 threads", d_rep, n[0]);
        printf("threads: OpenMP 1 vs 2: %zu differ; repeat at 2: %zu differ; of %zu values\n", d_omp, d_rep, n[0]);
        /* not checked: OpenBLAS's sgemm rounds differently at 1 and 2 threads (its own
         * partitioning), so moec_linear_* results depend on the BLAS thread count */
        printf("info: OpenBLAS 1 vs 2 threads: %zu of %zu values differ (sgemm, not this layer)\n", d_blas, n[0]);
    }
    free(a);
    free(b);
    free(c);
    free(e);
    free(L.mem);
}

/* ------------------------------------------------------------------ argument checks */

static void test_bad_args(void) {
    const moec_moe_cfg good = {.d = 8, .n_expert = 4, .top_k = 2, .ff = 6};
    moec_moe_cache *c = NULL;
    moec_error err = {0};
    CHECK(moec_moe_cache_new(&c, &good, 4, &err) == MOEC_OK && c, "good config refused: %s", err.msg);
    CHECK(moec_moe_cache_bytes(c) > 0, "cache has no size");
    moec_moe_cache_free(c);
    moec_moe_cache_free(NULL);
    moec_moe_cfg bad[5] = {good, good, good, good, good};
    bad[0].top_k = 5;      /* k > E */
    bad[1].top_k = 0;
    bad[2].d = 0;
    bad[3].ff_shared = -1;
    bad[4].n_expert = 0;
    for (int i = 0; i < 5; i++) {
        c = (moec_moe_cache *)&err; /* must be reset to NULL */
        moec_status s = moec_moe_cache_new(&c, &bad[i], 4, &err);
        CHECK(s == MOEC_ERR_INVALID_ARG && c == NULL, "bad config %d: status %d", i, (int)s);
    }
    c = (moec_moe_cache *)&err;
    CHECK(moec_moe_cache_new(&c, &good, 0, &err) == MOEC_ERR_INVALID_ARG && !c, "max_T 0 accepted");
    CHECK(moec_moe_cache_new(&c, &good, INT32_MAX, &err) == MOEC_ERR_INVALID_ARG && !c, "max_T overflow accepted");
}

int main(void) {
    test_fd("renorm, top-2 of 4, no shared expert", 4, 2, 1, 0, 12345);
    test_fd("no renorm, top-2 of 5, shared expert", 5, 2, 0, 7, 999);
    test_fd("top-1 of 3, renorm (weights are 1)", 3, 1, 1, 0, 4242);
    test_threads();
    test_bad_args();
    return test_finish("test_moe_train_fd");
}
