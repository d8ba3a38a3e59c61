/* test_thor.c — THOR (src/moe/routers/thor.c) and its two-pass consistency loss
 * (moec_tmodel_pair_step, src/train/model_train.c) on a tiny model (2 layers, d 16, 4 experts,
 * vocab 64, B 2 × S 8), weights from moec_tparams_init:
 *
 * 1. Routing: a training call sends every token to one expert (shared by the batch) drawn
 *    uniformly (chi-square over 4000 calls); serving level "token" draws per token, "sequence" one
 *    expert per sequence of seq_len tokens; the checks refuse k ≠ 1 and gate losses.
 * 2. MOE_SPECS §12's check: with the same stream in both passes the symmetric KL is exactly 0,
 *    and the pair step's gradient equals a single step's (½(CE + CE) = CE) to 1e-6 relative.
 * 3. With independent streams (the consistency term > 0): the gradient of the pair loss
 *    ½(CE1 + CE2) + (α/4)·mean symKL, α = 5, against central finite differences on 40 random
 *    parameters (h = 1e-2 on O(0.1) weights; the routing depends only on the streams, so the loss
 *    is smooth in the weights): |fd − g| <= 2e-4 + 2e-2·|g| (the loss is a float sum; the fd noise
 *    is ~1e-7/2h·O(1) = 5e-6, well inside).
 * 4. Label smoothing 0.1 in the pair step: with the same stream its smoothed CE and gradient equal a
 *    single smoothed step's (1e-6), and the gradient moves from the unsmoothed pair's.
 * Exits 1 on any failure; ends with `N passed, M failed`. */
#include "core/error.h"
#include "core/rng.h"
#include "model/hparams.h"
#include "moe/router.h"
#include "moe/routers/routers.h"
#include "test_util.h"
#include "train/model_train.h"
#include "train/params.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define B 2
#define S 8

static const char *CONFIG =
    "{\"architectures\":[\"MixtralForCausalLM\"],\"model_type\":\"mixtral\",\"vocab_size\":64,\"hidden_size\":16,"
    "\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
    "\"head_dim\":8,\"num_local_experts\":4,\"num_experts_per_tok\":1,\"max_position_embeddings\":64,"
    "\"rope_theta\":10000.0,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":false,\"router_aux_loss_coef\":0.0,"
    "\"router_z_loss_coef\":0.0,\"moec_router\":\"thor\",\"moec_consistency_alpha\":5.0}";

#define T 16
static void test_routing(void) {
    const int E = 4;
    moec_router_cfg c = moec_router_cfg_default(E, 1, 0);
    c.router = moec_router_find("thor");
    CHECK(c.router && c.router->two_pass && c.router->stochastic, "thor registered, two-pass, stochastic");
    if (!c.router) return;
    c.router->defaults(&c);
    c.aux_coef = 0.f;
    moec_error err = {0};
    CHECK(c.router->check(&c, &err) == MOEC_OK, "thor check: %s", err.msg);
    int32_t tok[T], ex[T], ch[T];
    float w[T], probs[T * 4], scratch[T * 4 + 8], z[T * 4] = {0};
    moec_routing r = {0, 0, 0, T, tok, ex, w, ch};
    moec_rng rng;
    moec_rng_seed(&rng, 3);
    int hist[4] = {0}, shared = 1;
    for (int i = 0; i < 4000; i++) {
        moec_route_opts o = {.rng = &rng, .train = 1};
        c.router->forward(&c, NULL, z, T, &o, &r, probs, scratch);
        for (int t = 1; t < T; t++) shared &= ex[t] == ex[0] && w[t] == 1.f;
        hist[ex[0]]++;
    }
    double chi = 0;
    for (int e = 0; e < E; e++) chi += (hist[e] - 1000.0) * (hist[e] - 1000.0) / 1000.0;
    CHECK(shared, "thor training: one expert for the whole batch, weight 1");
    CHECK(chi < 16.3, "thor training: uniform over experts (chi2 %.2f, 3 dof, p = 0.001 at 16.3)", chi); /* χ²₃ */
    /* serving: per token varies within a call; per sequence constant within seq_len, varies across */
    moec_rng sr;
    moec_rng_seed(&sr, 9);
    moec_route_opts o0 = {.serve_rng = &sr};
    c.router->forward(&c, NULL, z, T, &o0, &r, probs, scratch);
    int distinct = 0;
    for (int t = 1; t < T; t++) distinct += ex[t] != ex[t - 1];
    CHECK(distinct >= 4, "thor level token: experts vary over tokens (%d changes)", distinct);
    c.thor_level = 1;
    int across = 0, within = 0;
    for (int i = 0; i < 20; i++) {
        moec_route_opts o1 = {.serve_rng = &sr, .seq_len = 4};
        c.router->forward(&c, NULL, z, T, &o1, &r, probs, scratch);
        for (int t = 0; t < T; t++) within += ex[t] != ex[t - t % 4];
        for (int q = 1; q < 4; q++) across += ex[q * 4] != ex[0];
    }
    CHECK(within == 0 && across > 20, "thor level sequence: one expert per sequence (%d breaks), varies across (%d)",
          within, across);
    moec_router_cfg c2 = c;
    c2.k = 2;
    CHECK(c.router->check(&c2, &err) != MOEC_OK, "thor: k = 2 refused");
    c2 = c;
    c2.aux_coef = 0.01f;
    CHECK(c.router->check(&c2, &err) != MOEC_OK, "thor: a load-balancing loss is refused");
}

static double pair_loss(moec_tmodel *m1, moec_tmodel *m2, const int32_t *tok, uint64_t s1, uint64_t s2, float alpha,
                        int backward, moec_tstep *out) {
    moec_error err = {0};
    moec_tmodel_set_noise(m1, 1, s1);
    moec_tmodel_set_noise(m2, 1, s2);
    moec_tstep o;
    if (moec_tmodel_pair_step(m1, m2, tok, 1.f, alpha, backward, &o, &err)) {
        fprintf(stderr, "FAIL: pair step: %s\n", err.msg);
        exit(1);
    }
    if (out) *out = o;
    return o.ce + o.aux + o.z;
}

static void test_pair(void) {
    char dir[] = "/tmp/moec_thor_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        CHECK(0, "write config");
        return;
    }
    fputs(CONFIG, f);
    fclose(f);
    moec_hparams hp;
    moec_tparams tp = {0};
    moec_tmodel *m1 = NULL, *m2 = NULL;
    moec_error err = {0};
    int ok = !moec_hparams_load(&hp, dir, &err) && !moec_tparams_new(&tp, &hp, &err);
    if (ok) moec_tparams_init(&tp, 7, 0.2f);
    ok = ok && !moec_tmodel_new(&m1, &tp, B, S, -1.f, -1.f, &err) && !moec_tmodel_new(&m2, &tp, B, S, -1.f, -1.f, &err);
    unlink(path);
    rmdir(dir);
    CHECK(ok, "tiny THOR model: %s", err.msg);
    if (!ok) return;
    int32_t tok[B * (S + 1)];
    for (int i = 0; i < B * (S + 1); i++) tok[i] = (i * 29 + 3) % 64;
    const size_t n = tp.n_floats;
    float *g_pair = malloc(n * sizeof *g_pair), *g_one = malloc(n * sizeof *g_one);

    /* same stream twice: KL 0 and the single-pass gradient */
    memset(tp.g, 0, n * sizeof *tp.g);
    moec_tstep o;
    pair_loss(m1, m2, tok, 11, 11, 5.f, 1, &o);
    memcpy(g_pair, tp.g, n * sizeof *tp.g);
    CHECK(o.aux == 0.0, "same experts in both passes: the consistency term is exactly 0 (got %g)", o.aux);
    memset(tp.g, 0, n * sizeof *tp.g);
    moec_tmodel_set_noise(m1, 1, 11);
    moec_tstep o1;
    CHECK(moec_tmodel_step(m1, tok, NULL, 1.f, 1, &o1, &err) == MOEC_OK, "single step");
    memcpy(g_one, tp.g, n * sizeof *tp.g);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += (double)(g_pair[i] - g_one[i]) * (g_pair[i] - g_one[i]), den += (double)g_one[i] * g_one[i];
    CHECK(sqrt(num / den) < 1e-6 && fabs(o.ce - o1.ce) < 1e-6, "same streams: pair gradient == single-step gradient (rel %.2e)",
          sqrt(num / den));

    /* label smoothing 0.1 (THOR's recipe; train/model_train.h): with the same stream the pair's smoothed
     * CE and gradient equal a single smoothed step's (whose gradient py_test_train_grad checks against
     * torch's cross_entropy(label_smoothing=0.1)), and differ from the unsmoothed pair's */
    moec_tmodel_set_label_smoothing(m1, 0.1f);
    moec_tmodel_set_label_smoothing(m2, 0.1f);
    float *g_ls = malloc(n * sizeof *g_ls);
    memset(tp.g, 0, n * sizeof *tp.g);
    moec_tstep ols, o1s;
    pair_loss(m1, m2, tok, 11, 11, 5.f, 1, &ols);
    memcpy(g_ls, tp.g, n * sizeof *tp.g);
    memset(tp.g, 0, n * sizeof *tp.g);
    moec_tmodel_set_noise(m1, 1, 11);
    CHECK(moec_tmodel_step(m1, tok, NULL, 1.f, 1, &o1s, &err) == MOEC_OK, "single smoothed step");
    num = den = 0;
    double moved = 0;
    for (size_t i = 0; i < n; i++) {
        num += (double)(g_ls[i] - tp.g[i]) * (g_ls[i] - tp.g[i]), den += (double)tp.g[i] * tp.g[i];
        moved += (double)(g_ls[i] - g_pair[i]) * (g_ls[i] - g_pair[i]);
    }
    CHECK(sqrt(num / den) < 1e-6 && fabs(ols.ce - o1s.ce) < 1e-6 && ols.ce != o.ce,
          "label smoothing 0.1, same streams: pair CE %.7g == single step %.7g (plain %.7g), gradient rel %.2e", ols.ce,
          o1s.ce, o.ce, sqrt(num / den));
    CHECK(sqrt(moved / den) > 1e-3, "label smoothing moves the pair gradient (rel %.2e)", sqrt(moved / den));
    moec_tmodel_set_label_smoothing(m1, 0.f);
    moec_tmodel_set_label_smoothing(m2, 0.f);
    free(g_ls);

    /* independent streams: find seeds whose passes differ (consistency > 0), then FD */
    uint64_t s2 = 12;
    for (; s2 < 40; s2++) {
        pair_loss(m1, m2, tok, 11, s2, 5.f, 0, &o);
        if (o.aux > 1e-6) break;
    }
    CHECK(o.aux > 1e-6, "some seed pair routes the two passes differently (consistency %g)", o.aux);
    memset(tp.g, 0, n * sizeof *tp.g);
    pair_loss(m1, m2, tok, 11, s2, 5.f, 1, &o);
    memcpy(g_pair, tp.g, n * sizeof *tp.g);
    int bad = 0;
    double worst = 0;
    uint64_t pick = 5;
    for (int j = 0; j < 40; j++) {
        pick = moec_mix64(pick);
        const size_t i = (size_t)(pick % n);
        const float save = tp.w[i], h = 1e-2f;
        tp.w[i] = save + h;
        const double lp = pair_loss(m1, m2, tok, 11, s2, 5.f, 0, NULL);
        tp.w[i] = save - h;
        const double lm = pair_loss(m1, m2, tok, 11, s2, 5.f, 0, NULL);
        tp.w[i] = save;
        const double fd = (lp - lm) / (2.0 * h), e = fabs(fd - g_pair[i]);
        worst = fmax(worst, e);
        if (e > 2e-4 + 2e-2 * fabs(g_pair[i]) && bad++ < 3)
            fprintf(stderr, "  param %zu: fd %.6g analytic %.6g\n", i, fd, (double)g_pair[i]);
    }
    CHECK(bad == 0, "pair loss gradient vs finite differences: %d mismatches (max %.2e)", bad, worst);
    printf("pair loss: consistency %.4g, FD max |err| %.2e over 40 parameters\n", o.aux, worst);
    free(g_pair);
    free(g_one);
    moec_tmodel_free(m1);
    moec_tmodel_free(m2);
    moec_tparams_free(&tp);
}

#undef T
int main(void) {
    test_routing();
    test_pair();
    return test_finish("test_thor");
}
