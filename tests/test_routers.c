/* test_routers.c — the router registry, every router's forward/backward, and the balancing
 * losses (src/moe/router.c, src/moe/routers/, src/moe/balance.c).
 *
 * 1. Table-driven over the registry: every router returned by moec_router_at must have a row
 *    in g_rows (a router without one fails the test); a row lists configurations, and each
 *    configuration goes through the same generic checks: check() accepts it, the slot layout
 *    (token, chosen == expert, distinct experts per token, finite weights), the k override, an
 *    expert mask that leaves one selectable expert (every token gets one expert and one empty
 *    slot), and a central finite-difference check of the backward (∂L/∂z for
 *    L = Σ_s g_s·w_s + Σ G⊙P) with a dropped slot (expert −1, chosen ≥ 0: its dweight must be
 *    ignored) and a token with zero experts (all its slots MOEC_NO_EXPERT).
 * 2. The spec's one-line checks on hand-made logits (MOE_SPECS §1, §2, §4, §5).
 * 3. The balancing losses: closed forms, scope identities, finite differences of the backwards.
 *
 * Finite differences: fp32 forward, central difference with step H on one logit at a time, the
 * loss of the perturbed token summed in double. Tolerance |fd − analytic| <= FD_ATOL +
 * FD_RTOL·|analytic|: fp32 rounding of O(1) weights is ~1e-7, divided by 2H = 2e-3 gives ~1e-4
 * of noise; the truncation error H²/6·|f'''| is ~1e-6. A coordinate whose perturbation changes
 * the selection is skipped (the function is not differentiable there); more than 2% skipped
 * fails. Exits 1 on any failure; ends with `N passed, M failed`. */
#include "moe/balance.h"
#include "moe/router.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define MAXT 256
#define MAXE 32
#define MAXK 8
#define FD_H 1e-3f
#define FD_ATOL 5e-4
#define FD_RTOL 2e-3

/* ------------------------------------------------------------------ helpers */

typedef struct {
    int32_t token[MAXT * MAXK], expert[MAXT * MAXK], chosen[MAXT * MAXK];
    float weight[MAXT * MAXK];
    moec_routing r;
} routing_buf;

static float g_scratch[MAXT * MAXE + 2 * MAXE];

static moec_routing *rb_init(routing_buf *b) {
    b->r = (moec_routing){0, 0, 0, MAXT * MAXK, b->token, b->expert, b->weight, b->chosen};
    return &b->r;
}

static void route(const moec_router_cfg *c, const float *bias, const float *z, int T, const moec_route_opts *o,
                  routing_buf *b, float *probs) {
    if (moec_router_scratch_floats(c, T) > (int64_t)(sizeof g_scratch / sizeof g_scratch[0])) {
        fprintf(stderr, "FAIL: test scratch too small for T = %d, E = %d\n", T, c->n_expert);
        exit(1);
    }
    c->router->forward(c, bias, z, T, o, rb_init(b), probs, g_scratch);
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* logits with well-separated values per token: a random permutation of a spaced grid plus
 * noise, so that no selection decision is within a finite-difference step of a tie */
static void spaced_logits(float *z, int T, int E, float spread) {
    for (int t = 0; t < T; t++) {
        float *zt = z + (size_t)t * E;
        for (int e = 0; e < E; e++) zt[e] = spread * ((float)e / (float)E - 0.5f) + 0.01f * frand();
        for (int e = E - 1; e > 0; e--) { /* Fisher–Yates with the test RNG */
            int j = (int)((frand() + 1.f) * 0.5f * (float)(e + 1));
            if (j > e) j = e;
            const float tmp = zt[e];
            zt[e] = zt[j];
            zt[j] = tmp;
        }
    }
}

/* ------------------------------------------------------------------ generic checks per router */

typedef struct {
    const char *name;
    moec_router_cfg cfg;
    int use_bias_state; /* pass a random bias [E] as state */
} router_case;

/* slot layout and value sanity of a token-choice style routing */
static void check_layout(const char *name, const moec_router_cfg *c, const moec_routing *r, int T, int k) {
    CHECK(r->T == T && r->E == c->n_expert && r->n_slots == T * k, "%s: T/E/n_slots %d %d %d", name, r->T, r->E,
          r->n_slots);
    int bad = 0;
    for (int s = 0; s < r->n_slots; s++) {
        bad += r->token[s] != s / k;
        bad += r->chosen[s] != r->expert[s];
        bad += r->expert[s] < MOEC_NO_EXPERT || r->expert[s] >= c->n_expert;
        bad += !isfinite(r->weight[s]) || r->weight[s] < 0.f;
        for (int j = s - s % k; j < s; j++) bad += r->expert[s] >= 0 && r->expert[j] == r->expert[s];
    }
    CHECK(bad == 0, "%s: %d slot layout errors", name, bad);
}

typedef struct {
    int kill_token;  /* token whose slots all become MOEC_NO_EXPERT (chosen too), -1 = none */
    int drop_slot;   /* slot whose expert becomes -1 while chosen stays, -1 = none */
} fd_mods;

static void apply_mods(moec_routing *r, int k, const fd_mods *m) {
    if (m->kill_token >= 0)
        for (int j = 0; j < k; j++) {
            r->expert[m->kill_token * k + j] = MOEC_NO_EXPERT;
            r->chosen[m->kill_token * k + j] = MOEC_NO_EXPERT;
        }
    if (m->drop_slot >= 0) r->expert[m->drop_slot] = MOEC_NO_EXPERT;
}

/* L_t = Σ_{slots of t with expert >= 0} g_s·w_s + Σ_e G[t, e]·P[t, e], in double */
static double token_loss(const moec_routing *r, const float *probs, const float *g, const float *G, int t, int k,
                         int E) {
    double L = 0.0;
    for (int j = 0; j < k; j++) {
        const int s = t * k + j;
        if (r->expert[s] >= 0) L += (double)g[s] * r->weight[s];
    }
    for (int e = 0; e < E; e++) L += (double)G[t * E + e] * probs[t * E + e];
    return L;
}

static int same_choice(const moec_routing *a, const moec_routing *b, int t, int k) {
    for (int j = 0; j < k; j++)
        if (a->chosen[t * k + j] != b->chosen[t * k + j]) return 0;
    return 1;
}

/* Finite-difference check of c->router->backward; returns the max |fd − analytic| */
static double fd_router(const char *name, const moec_router_cfg *c, const float *bias, const float *z0, int T,
                        const moec_route_opts *o, const fd_mods *m) {
    const int E = c->n_expert, k = o && o->k > 0 ? o->k : c->k;
    static float z[MAXT * MAXE], probs[MAXT * MAXE], G[MAXT * MAXE], dl[MAXT * MAXE], g[MAXT * MAXK];
    static routing_buf base, pert;
    memcpy(z, z0, (size_t)T * E * sizeof *z);
    for (int i = 0; i < T * k; i++) g[i] = frand();
    for (int i = 0; i < T * E; i++) G[i] = frand();
    route(c, bias, z, T, o, &base, probs);
    apply_mods(&base.r, k, m);
    /* the dropped slot's dweight is nonzero on purpose: the backward must ignore it */
    c->router->backward(c, bias, z, T, &base.r, g, G, dl, g_scratch);

    double maxerr = 0.0;
    int skipped = 0, bad = 0;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            const float z_save = z[t * E + e];
            double Lp, Lm;
            z[t * E + e] = z_save + FD_H;
            route(c, bias, z, T, o, &pert, probs);
            apply_mods(&pert.r, k, m);
            int same = same_choice(&base.r, &pert.r, t, k);
            Lp = token_loss(&pert.r, probs, g, G, t, k, E);
            z[t * E + e] = z_save - FD_H;
            route(c, bias, z, T, o, &pert, probs);
            apply_mods(&pert.r, k, m);
            same &= same_choice(&base.r, &pert.r, t, k);
            Lm = token_loss(&pert.r, probs, g, G, t, k, E);
            z[t * E + e] = z_save;
            if (!same) {
                skipped++;
                continue;
            }
            const double fd = (Lp - Lm) / (2.0 * (double)FD_H), an = dl[t * E + e], err = fabs(fd - an);
            if (err > maxerr) maxerr = err;
            if (err > FD_ATOL + FD_RTOL * fabs(an)) {
                if (bad++ < 3) fprintf(stderr, "  %s: token %d expert %d: fd %.6g analytic %.6g\n", name, t, e, fd, an);
            }
        }
    CHECK(bad == 0, "%s: %d finite-difference mismatches (max err %.3g)", name, bad, maxerr);
    CHECK(skipped * 50 <= T * E, "%s: %d of %d coordinates changed the selection", name, skipped, T * E);
    return maxerr;
}

static double g_fd_max_router;

static void generic_case(const moec_router *rt, const router_case *rc) {
    const moec_router_cfg *c = &rc->cfg;
    const int E = c->n_expert, T = 24;
    moec_error err = {0};
    CHECK(c->router == rt, "%s: case built for another router", rc->name);
    CHECK(rt->check(c, &err) == MOEC_OK, "%s: check rejected a valid config: %s", rc->name, err.msg);
    const int32_t ss = rt->state_size(c);
    CHECK(ss == (c->use_bias ? E : 0), "%s: state_size %d", rc->name, ss);

    float bias[MAXE], z[MAXT * MAXE], probs[MAXT * MAXE];
    for (int e = 0; e < E; e++) bias[e] = 0.05f * frand();
    const float *b = rc->use_bias_state ? bias : NULL;
    spaced_logits(z, T, E, 6.f);
    static routing_buf rb;

    /* plain forward: layout, probabilities sum to 1 per token */
    route(c, b, z, T, NULL, &rb, probs);
    check_layout(rc->name, c, &rb.r, T, c->k);
    double worst = 0.0;
    for (int t = 0; t < T; t++) {
        double s = 0.0;
        for (int e = 0; e < E; e++) s += probs[t * E + e];
        worst = fmax(worst, fabs(s - 1.0));
    }
    CHECK(worst < 1e-5, "%s: probabilities sum to 1 ± %.3g", rc->name, worst);
    int empty = 0;
    for (int s = 0; s < rb.r.n_slots; s++) empty += rb.r.expert[s] < 0;
    CHECK(empty == 0, "%s: %d empty slots without a mask", rc->name, empty);

    /* k override: k_eff = 1 gives T slots, the first pick of the full-k call */
    routing_buf r1;
    moec_route_opts o1 = {.k = 1, .expert_mask = NULL};
    float probs1[MAXT * MAXE];
    route(c, b, z, T, NULL, &rb, probs);
    route(c, b, z, T, &o1, &r1, probs1);
    check_layout(rc->name, c, &r1.r, T, 1);
    int diff = 0;
    for (int t = 0; t < T; t++) diff += r1.r.expert[t] != rb.r.expert[t * c->k];
    CHECK(diff == 0, "%s: k override 1 picks another first expert on %d tokens", rc->name, diff);

    /* mask: one selectable expert (and with groups, it is in some group) → one expert per token,
     * the other slots MOEC_NO_EXPERT with weight 0 */
    uint8_t mask[MAXE];
    const int keep = E - 3;
    for (int e = 0; e < E; e++) mask[e] = e == keep;
    moec_route_opts om = {.k = 0, .expert_mask = mask};
    route(c, b, z, T, &om, &rb, probs);
    check_layout(rc->name, c, &rb.r, T, c->k);
    int wrong = 0;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < c->k; j++) {
            const int s = t * c->k + j;
            wrong += j == 0 ? rb.r.expert[s] != keep : rb.r.expert[s] != MOEC_NO_EXPERT || rb.r.weight[s] != 0.f;
        }
    CHECK(wrong == 0, "%s: mask with one selectable expert: %d wrong slots", rc->name, wrong);

    /* backward by finite differences: plain; a dropped slot and a token with zero experts; k
     * override 1; the one-expert mask */
    spaced_logits(z, T, E, 6.f);
    const fd_mods none = {-1, -1}, mods = {5, 2 * c->k + 1};
    double e1 = fd_router(rc->name, c, b, z, T, NULL, &none);
    double e2 = fd_router(rc->name, c, b, z, T, NULL, &mods);
    double e3 = fd_router(rc->name, c, b, z, T, &o1, &none);
    double e4 = fd_router(rc->name, c, b, z, T, &om, &none);
    const double e = fmax(fmax(e1, e2), fmax(e3, e4));
    g_fd_max_router = fmax(g_fd_max_router, e);
    printf("  %-22s FD max |err| %.2e (plain %.1e, drop+empty %.1e, k=1 %.1e, mask %.1e)\n", rc->name, e, e1, e2,
           e3, e4);

    /* the dropped slot's own gradient is zero: dweight of a slot with expert < 0 is ignored.
     * Compare the backward with dweight there = 7 and = 0. */
    {
        static float dl_a[MAXT * MAXE], dl_b[MAXT * MAXE], g[MAXT * MAXK];
        route(c, b, z, T, NULL, &rb, probs);
        apply_mods(&rb.r, c->k, &mods);
        for (int i = 0; i < T * c->k; i++) g[i] = frand();
        g[mods.drop_slot] = 7.f;
        rt->backward(c, b, z, T, &rb.r, g, NULL, dl_a, g_scratch);
        g[mods.drop_slot] = 0.f;
        rt->backward(c, b, z, T, &rb.r, g, NULL, dl_b, g_scratch);
        CHECK(!memcmp(dl_a, dl_b, (size_t)T * E * sizeof *dl_a), "%s: a dropped slot's dweight leaked", rc->name);
        /* the empty token gets no gradient through weights: with dprobs NULL its row is 0 */
        double mx = 0.0;
        for (int i = 0; i < E; i++) mx = fmax(mx, fabs(dl_a[mods.kill_token * E + i]));
        CHECK(mx == 0.0, "%s: a token with zero experts has gradient %.3g", rc->name, mx);
    }
}

static router_case mk(const char *name, moec_router_cfg c) { return (router_case){name, c, c.use_bias}; }

/* The row of routers/topk.c: one configuration per scheme of MOE_SPECS §1–§4 */
static int topk_cases(router_case *out) {
    int n = 0;
    moec_router_cfg c;
    c = moec_router_cfg_default(8, 2, 0); /* Switch/GShard style, Qwen1.5/DeepSeekMoE (no renorm) */
    out[n++] = mk("softmax", c);
    c = moec_router_cfg_default(8, 2, 1); /* Qwen3-MoE / HF Mixtral */
    out[n++] = mk("softmax+renorm", c);
    c = moec_router_cfg_default(8, 2, 0);
    c.topk_softmax = 1; /* Mixtral's formula */
    out[n++] = mk("topk_softmax", c);
    c = moec_router_cfg_default(16, 4, 1);
    c.routed_scaling = 2.f;
    out[n++] = mk("softmax+renorm+scale", c);
    c = moec_router_cfg_default(16, 3, 0); /* DeepSeek-V2 group_limited_greedy */
    c.n_group = 4, c.topk_group = 2, c.routed_scaling = 1.5f;
    out[n++] = mk("softmax+groups(max)", c);
    c = moec_router_cfg_default(16, 4, 1);
    c.score = MOEC_SCORE_SIGMOID, c.routed_scaling = 2.5f;
    out[n++] = mk("sigmoid+renorm", c);
    c = moec_router_cfg_default(16, 4, 0);
    c.score = MOEC_SCORE_SIGMOID;
    out[n++] = mk("sigmoid", c);
    c = moec_router_cfg_default(16, 4, 1); /* DeepSeek-V3 */
    c.score = MOEC_SCORE_SIGMOID, c.routed_scaling = 2.5f, c.n_group = 4, c.topk_group = 2;
    c.group_score = MOEC_GROUP_SCORE_TOP2_SUM, c.use_bias = 1;
    out[n++] = mk("v3(sigmoid+bias+top2)", c);
    c = moec_router_cfg_default(16, 4, 1);
    c.use_bias = 1;
    out[n++] = mk("softmax+bias", c);
    c = moec_router_cfg_default(32, 8, 1);
    c.topk_softmax = 1, c.n_group = 8, c.topk_group = 3, c.group_score = MOEC_GROUP_SCORE_TOP2_SUM;
    c.routed_scaling = 1.25f;
    out[n++] = mk("topk_softmax+groups", c);
    return n;
}

typedef struct {
    const char *router;
    int (*cases)(router_case *out);
} router_row;

/* One row per router in the registry. A row without cases names routers whose layout is not
 * token-choice (slots expert by expert, 0..E per token, no gate): tests/test_routers_ext.c checks
 * them (semantics, finite differences) and fails for a registry router it does not cover. */
static const router_row g_rows[] = {
    {"topk", topk_cases},
    {"expert_choice", NULL}, {"topp", NULL}, {"moge", NULL}, {"hash", NULL}, {"thor", NULL}, {"evomoe", NULL},
};

static void test_registry(void) {
    const int n = moec_router_count();
    CHECK(n >= 1, "empty registry");
    for (int i = 0; i < n; i++) {
        const moec_router *rt = moec_router_at(i);
        CHECK(rt && rt->name && rt->doc && rt->check && rt->forward && rt->backward && rt->state_size,
              "router %d incomplete", i);
        if (!rt) continue;
        CHECK(moec_router_find(rt->name) == rt, "find(%s)", rt->name);
        CHECK(strstr(moec_router_list(), rt->name) != NULL, "list lacks %s", rt->name);
        const router_row *row = NULL;
        for (size_t j = 0; j < sizeof g_rows / sizeof g_rows[0]; j++)
            if (!strcmp(g_rows[j].router, rt->name)) row = &g_rows[j];
        CHECK(row != NULL, "router %s has no row in g_rows: add its cases", rt->name);
        if (!row) continue;
        if (!row->cases) {
            printf("router %s: tested in test_routers_ext\n", rt->name);
            continue;
        }
        router_case cases[32];
        const int nc = row->cases(cases);
        CHECK(nc >= 1, "router %s: no cases", rt->name);
        printf("router %s: %d configurations\n", rt->name, nc);
        for (int j = 0; j < nc; j++) generic_case(rt, &cases[j]);
    }
    char names[512] = "";
    for (int i = 0; i < n; i++) {
        if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
        strncat(names, moec_router_at(i)->name, sizeof names - strlen(names) - 1);
    }
    CHECK(!strcmp(names, moec_router_list()), "moec_router_list() \"%s\" is not the table's \"%s\"",
          moec_router_list(), names);
    CHECK(moec_router_at(n) == NULL && moec_router_at(-1) == NULL, "at() out of range");
    CHECK(moec_router_find("no-such-router") == NULL && moec_router_find(NULL) == NULL, "find(unknown)");
    const moec_router_cfg d = moec_router_cfg_default(8, 2, 1);
    CHECK(d.router == moec_router_find("topk") && d.score == MOEC_SCORE_SOFTMAX && d.routed_scaling == 1.f &&
              d.n_group == 1 && d.topk_group == 1 && !d.use_bias && d.bias_rate == 1e-3f && d.aux_coef == 0.01f &&
              d.aux_scope == MOEC_LBL_MICRO_BATCH && d.z_coef == 0.001f && d.capacity_factor == 0.f &&
              d.norm_topk_prob == 1 && d.n_expert == 8 && d.k == 2,
          "defaults");
    CHECK(moec_router_scratch_floats(&d, 10) == 10 * 8 + 16, "scratch size");
}

/* ------------------------------------------------------------------ check() */

static void test_check(void) {
    const moec_router *rt = moec_router_find("topk");
    moec_error err;
    struct {
        const char *what;
        moec_router_cfg c;
    } bad[16];
    int n = 0;
    moec_router_cfg c;
    c = moec_router_cfg_default(8, 9, 1), bad[n].what = "k > E", bad[n++].c = c;
    c = moec_router_cfg_default(8, 0, 1), bad[n].what = "k = 0", bad[n++].c = c;
    c = moec_router_cfg_default(10, 2, 1), c.n_group = 4, c.topk_group = 2, bad[n].what = "E % n_group", bad[n++].c = c;
    c = moec_router_cfg_default(16, 2, 1), c.n_group = 4, c.topk_group = 5, bad[n].what = "topk_group > n_group",
    bad[n++].c = c;
    c = moec_router_cfg_default(16, 5, 1), c.n_group = 4, c.topk_group = 1, bad[n].what = "k > kept experts",
    bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.score = MOEC_SCORE_SIGMOID, c.topk_softmax = 1,
    bad[n].what = "topk_softmax with sigmoid", bad[n++].c = c;
    c = moec_router_cfg_default(8, 1, 1), c.n_group = 8, c.topk_group = 2, c.group_score = MOEC_GROUP_SCORE_TOP2_SUM,
    bad[n].what = "top2_sum with 1 expert per group", bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.routed_scaling = 0.f, bad[n].what = "routed_scaling 0", bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.bias_rate = -1.f, bad[n].what = "negative bias rate", bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.aux_coef = -1.f, bad[n].what = "negative aux coef", bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.jitter = 1.f, bad[n].what = "jitter 1", bad[n++].c = c;
    c = moec_router_cfg_default(8, 2, 1), c.capacity_factor = -1.f, bad[n].what = "negative CF", bad[n++].c = c;
    for (int i = 0; i < n; i++) {
        memset(&err, 0, sizeof err);
        const moec_status st = rt->check(&bad[i].c, &err);
        CHECK(st == MOEC_ERR_INVALID_ARG && err.msg[0] && !strchr(err.msg, '\n'), "check accepted %s", bad[i].what);
    }
    /* allowed: bias with softmax scores (documented: Megatron ignores it there) */
    c = moec_router_cfg_default(8, 2, 1), c.use_bias = 1;
    CHECK(rt->check(&c, &err) == MOEC_OK, "bias with softmax rejected");
    c = moec_router_cfg_default(256, 8, 1); /* DeepSeek-V3 */
    c.score = MOEC_SCORE_SIGMOID, c.n_group = 8, c.topk_group = 4, c.group_score = MOEC_GROUP_SCORE_TOP2_SUM;
    c.use_bias = 1, c.routed_scaling = 2.5f;
    CHECK(rt->check(&c, &err) == MOEC_OK, "DeepSeek-V3 config rejected: %s", err.msg);
}

/* ------------------------------------------------------------------ spec checks (hand-made) */

static void test_topk_ties(void) {
    const float v[6] = {1.f, 3.f, 3.f, 0.f, 3.f, -INFINITY};
    int32_t idx[6];
    moec_topk(v, 6, 3, NULL, idx);
    CHECK(idx[0] == 1 && idx[1] == 2 && idx[2] == 4, "ties to the lower index: %d %d %d", idx[0], idx[1], idx[2]);
    const uint8_t mask[6] = {1, 0, 1, 1, 1, 1};
    moec_topk(v, 6, 6, mask, idx);
    CHECK(idx[0] == 2 && idx[1] == 4 && idx[2] == 0 && idx[3] == 3 && idx[4] == 1 && idx[5] == 5,
          "mask and -inf last: %d %d %d %d %d %d", idx[0], idx[1], idx[2], idx[3], idx[4], idx[5]);

    /* all-equal logits: experts 0..k−1, weights 1/E (no renorm) or 1/k (renorm); probs 1/E */
    float z[2 * 8] = {0};
    for (int e = 0; e < 8; e++) z[8 + e] = 1.25f;
    float probs[16];
    routing_buf rb;
    for (int renorm = 0; renorm < 2; renorm++) {
        moec_router_cfg c = moec_router_cfg_default(8, 3, renorm);
        route(&c, NULL, z, 2, NULL, &rb, probs);
        int bad = 0;
        for (int s = 0; s < 6; s++) {
            bad += rb.r.expert[s] != s % 3;
            bad += fabsf(rb.r.weight[s] - (renorm ? 1.f / 3.f : 1.f / 8.f)) > 1e-7f;
        }
        for (int i = 0; i < 16; i++) bad += fabsf(probs[i] - 0.125f) > 1e-7f;
        CHECK(bad == 0, "all-equal logits (renorm %d): %d wrong", renorm, bad);
    }
}

static void test_softmax_topk_equivalence(void) {
    enum { T = 40, E = 16, K = 4 };
    float z[T * E], p1[T * E], p2[T * E];
    for (int i = 0; i < T * E; i++) z[i] = 4.f * frand();
    moec_router_cfg a = moec_router_cfg_default(E, K, 1), b = moec_router_cfg_default(E, K, 0);
    b.topk_softmax = 1;
    routing_buf ra, rb;
    route(&a, NULL, z, T, NULL, &ra, p1);
    route(&b, NULL, z, T, NULL, &rb, p2);
    double mx = 0.0;
    int same = 1;
    for (int s = 0; s < T * K; s++) {
        same &= ra.r.expert[s] == rb.r.expert[s];
        mx = fmax(mx, fabs(ra.r.weight[s] - rb.r.weight[s]));
    }
    CHECK(same && mx <= 1e-6, "softmax-all→top-k→renorm vs softmax over the top-k logits: max diff %.3g", mx);
    CHECK(!memcmp(p1, p2, sizeof p1), "topk_softmax changed the balance probabilities");
}

static void test_v3_reduces(void) {
    enum { T = 20, E = 16, K = 4 };
    float z[T * E], probs[T * E], bias[E] = {0};
    for (int i = 0; i < T * E; i++) z[i] = 3.f * frand();
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    c.score = MOEC_SCORE_SIGMOID, c.routed_scaling = 2.5f, c.use_bias = 1, c.group_score = MOEC_GROUP_SCORE_TOP2_SUM;
    routing_buf rb;
    route(&c, bias, z, T, NULL, &rb, probs);
    double mx = 0.0, mxsum = 0.0;
    int sel_bad = 0;
    for (int t = 0; t < T; t++) {
        double sum_s = 0.0, sum_w = 0.0, all = 0.0;
        for (int j = 0; j < K; j++) sum_s += sigm(z[t * E + rb.r.expert[t * K + j]]);
        for (int j = 0; j < K; j++) {
            const int e = rb.r.expert[t * K + j];
            int rank = 0;
            for (int f = 0; f < E; f++) rank += z[t * E + f] > z[t * E + e];
            sel_bad += rank != j;
            mx = fmax(mx, fabs(rb.r.weight[t * K + j] - 2.5 * sigm(z[t * E + e]) / sum_s));
            sum_w += rb.r.weight[t * K + j];
        }
        mxsum = fmax(mxsum, fabs(sum_w - 2.5));
        for (int e = 0; e < E; e++) all += sigm(z[t * E + e]);
        for (int e = 0; e < E; e++) mx = fmax(mx, fabs(probs[t * E + e] - sigm(z[t * E + e]) / all));
    }
    CHECK(sel_bad == 0 && mx < 1e-6 && mxsum < 1e-6,
          "V3 with b = 0, n_group = 1 is sigmoid top-k normalised × 2.5: %d wrong picks, max err %.3g, |Σw − 2.5| %.3g",
          sel_bad, mx, mxsum);
}

static void test_groups(void) {
    /* E = 8 in 4 groups of 2, topk_group = 1, k = 2, sigmoid scores, no renorm. Group 0 holds
     * the single best expert (0: z = 3, 1: z = −3); group 1 the best pair (2, 3: z = 2). Plain
     * top-2 picks {0, 2}; max keeps group 0 → {0, 1}; top2_sum keeps group 1 → {2, 3}. Token 1:
     * group 3 holds all the best experts; both rules pick {7, 6}. */
    const float z[16] = {3.f, -3.f, 2.f, 2.1f, 0.f, 0.5f, -1.f, -2.f, /* token 1 */ 0, 0.2f, 0.1f, 0.3f, 0, 0, 4.f, 5.f};
    float probs[16];
    routing_buf rb;
    moec_router_cfg c = moec_router_cfg_default(8, 2, 0);
    c.score = MOEC_SCORE_SIGMOID;
    route(&c, NULL, z, 2, NULL, &rb, probs);
    CHECK(rb.r.expert[0] == 0 && rb.r.expert[1] == 3, "plain top-2: %d %d", rb.r.expert[0], rb.r.expert[1]);
    c.n_group = 4, c.topk_group = 1, c.group_score = MOEC_GROUP_SCORE_MAX;
    route(&c, NULL, z, 2, NULL, &rb, probs);
    CHECK(rb.r.expert[0] == 0 && rb.r.expert[1] == 1, "group max: %d %d", rb.r.expert[0], rb.r.expert[1]);
    CHECK(rb.r.expert[2] == 7 && rb.r.expert[3] == 6, "group with all the best (max): %d %d", rb.r.expert[2],
          rb.r.expert[3]);
    CHECK(fabsf(rb.r.weight[1] - (float)sigm(-3.0)) < 1e-7f, "group max: weight of the weak in-group pick");
    c.group_score = MOEC_GROUP_SCORE_TOP2_SUM;
    route(&c, NULL, z, 2, NULL, &rb, probs);
    CHECK(rb.r.expert[0] == 3 && rb.r.expert[1] == 2, "group top2_sum: %d %d", rb.r.expert[0], rb.r.expert[1]);
    CHECK(rb.r.expert[2] == 7 && rb.r.expert[3] == 6, "group with all the best (top2): %d %d", rb.r.expert[2],
          rb.r.expert[3]);

    /* masking is −inf, not 0 (MOE_SPECS §2c note): the bias makes every s + b negative; group 0
     * (−0.77, −0.88) is kept and the others (−2) are masked. Filling them with 0.0, as HF does,
     * would let masked experts 2 and 3 win. */
    float bias[8] = {-1.5f, -1.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f};
    const float z2[8] = {1.f, 0.5f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    c = moec_router_cfg_default(8, 2, 1);
    c.score = MOEC_SCORE_SIGMOID, c.use_bias = 1, c.n_group = 4, c.topk_group = 1;
    route(&c, bias, z2, 1, NULL, &rb, probs);
    CHECK(rb.r.expert[0] == 0 && rb.r.expert[1] == 1, "-inf group masking with negative s + b: %d %d",
          rb.r.expert[0], rb.r.expert[1]);
}

static void test_bias(void) {
    enum { E = 8, K = 2 };
    const float z[E] = {2.f, 1.5f, 1.f, 0.5f, 0.f, -0.5f, -1.f, -1.5f};
    float probs[E], b0[E] = {0}, b1[E] = {0}, b2[E] = {0};
    routing_buf ra, rb;
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    c.score = MOEC_SCORE_SIGMOID, c.use_bias = 1;
    b1[5] = 0.5f; /* s_5 + 0.5 = 0.878 > s_1 = 0.818: expert 5 enters (after 0: 0.881), 1 leaves */
    route(&c, b0, z, 1, NULL, &ra, probs);
    route(&c, b1, z, 1, NULL, &rb, probs);
    CHECK(ra.r.expert[0] == 0 && ra.r.expert[1] == 1, "unbiased picks %d %d", ra.r.expert[0], ra.r.expert[1]);
    CHECK(rb.r.expert[0] == 0 && rb.r.expert[1] == 5, "bias changes the selection: %d %d", rb.r.expert[0],
          rb.r.expert[1]);
    const double s0 = sigm(2.0), s5 = sigm(-0.5);
    CHECK(fabs(rb.r.weight[0] - s0 / (s0 + s5)) < 1e-6 && fabs(rb.r.weight[1] - s5 / (s0 + s5)) < 1e-6,
          "weights from the scores only: %g %g", rb.r.weight[0], rb.r.weight[1]);
    b2[6] = 0.1f; /* does not change the set: identical weights */
    route(&c, b2, z, 1, NULL, &rb, probs);
    CHECK(rb.r.expert[0] == 0 && rb.r.expert[1] == 1 && rb.r.weight[0] == ra.r.weight[0] &&
              rb.r.weight[1] == ra.r.weight[1],
          "a bias that keeps the set keeps the weights");

    /* update sign rule: a router fixed to prefer expert 0 (z_0 = 8); the other experts share
     * the second slot evenly (cyclic logits). After n steps b_0 moved by −n·u. */
    enum { T = 14, STEPS = 30 };
    moec_router_cfg d = moec_router_cfg_default(E, K, 1);
    d.score = MOEC_SCORE_SIGMOID, d.use_bias = 1, d.bias_rate = 1e-3f;
    float zz[T * E], pz[T * E], bias[E] = {0};
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) zz[t * E + e] = e == 0 ? 8.f : -2.f + (float)(((e - 1) - t + 7 * 3) % 7) * 0.1f;
    int64_t counts[E];
    for (int n = 0; n < STEPS; n++) {
        route(&d, bias, zz, T, NULL, &rb, pz);
        moec_routing_counts(&rb.r, E, 0, T, counts);
        d.router->update(&d, bias, counts);
    }
    CHECK(counts[0] == T, "expert 0 chosen by every token (%lld)", (long long)counts[0]);
    CHECK(fabsf(bias[0] - (-STEPS * 1e-3f)) < 1e-6f, "b_0 = %g, want %g", bias[0], -STEPS * 1e-3);
    for (int e = 1; e < E; e++) CHECK(bias[e] > 0.f, "underloaded expert %d went down: %g", e, bias[e]);
    const int64_t flat[4] = {5, 5, 5, 5};
    float fb[4] = {0.25f, 0, 0, 0};
    moec_router_cfg f = moec_router_cfg_default(4, 1, 1);
    f.use_bias = 1;
    f.router->update(&f, fb, flat);
    CHECK(fb[0] == 0.25f && fb[1] == 0.f, "exactly average counts do not move the bias");
    f.use_bias = 0;
    CHECK(f.router->state_size(&f) == 0, "no state without the bias");
}

/* The bias balances a skewed router (MOE_SPECS §4 test, "loads converge"): fixed logits that
 * favour high experts; after the sign updates the batch MaxVio has fallen well below its start. */
static void test_bias_converges(void) {
    enum { T = 256, E = 8, K = 2, STEPS = 400 };
    static float z[T * E], probs[T * E];
    float bias[E] = {0};
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) z[t * E + e] = 0.4f * (float)e + frand();
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    c.score = MOEC_SCORE_SIGMOID, c.use_bias = 1, c.bias_rate = 2e-3f;
    static routing_buf rb;
    int64_t counts[E];
    route(&c, bias, z, T, NULL, &rb, probs);
    moec_routing_counts(&rb.r, E, 0, T, counts);
    const double v0 = moec_max_vio(counts, E);
    double vmin = v0;
    for (int n = 0; n < STEPS; n++) {
        c.router->update(&c, bias, counts);
        route(&c, bias, z, T, NULL, &rb, probs);
        moec_routing_counts(&rb.r, E, 0, T, counts);
        if (n >= STEPS - 50) vmin = fmin(vmin, moec_max_vio(counts, E)); /* it oscillates by ±u */
    }
    const double v1 = moec_max_vio(counts, E);
    printf("bias balancing: MaxVio %.3f -> %.3f (best of the last 50 steps %.3f)\n", v0, v1, vmin);
    CHECK(v0 > 1.0 && v1 < 0.15 && vmin < 0.1, "aux-loss-free bias does not balance: MaxVio %.3f -> %.3f", v0, v1);
}

static void test_opts(void) {
    enum { T = 3, E = 8 };
    float z[T * E], probs[T * E];
    for (int i = 0; i < T * E; i++) z[i] = 2.f * frand();
    moec_router_cfg c = moec_router_cfg_default(E, 4, 1);
    c.routed_scaling = 2.f;
    routing_buf rb;
    moec_route_opts o = {.k = 1, .expert_mask = NULL};
    route(&c, NULL, z, T, &o, &rb, probs);
    CHECK(rb.r.n_slots == T, "k override: %d slots", rb.r.n_slots);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        int best = 0;
        for (int e = 1; e < E; e++) best = z[t * E + e] > z[t * E + best] ? e : best;
        bad += rb.r.expert[t] != best || rb.r.token[t] != t || fabsf(rb.r.weight[t] - 2.f) > 1e-6f;
    }
    CHECK(bad == 0, "k = 1 override: argmax with weight routed_scaling (%d wrong)", bad);
    uint8_t mask[E] = {0, 1, 1, 0, 1, 1, 1, 1};
    o = (moec_route_opts){.k = 0, .expert_mask = mask};
    route(&c, NULL, z, T, &o, &rb, probs);
    bad = 0;
    for (int s = 0; s < rb.r.n_slots; s++) bad += rb.r.expert[s] == 0 || rb.r.expert[s] == 3 || rb.r.expert[s] < 0;
    CHECK(bad == 0 && rb.r.n_slots == T * 4, "expert mask: %d slots on masked experts", bad);
    memset(mask, 0, sizeof mask);
    route(&c, NULL, z, T, &o, &rb, probs);
    bad = 0;
    for (int s = 0; s < rb.r.n_slots; s++) bad += rb.r.expert[s] != MOEC_NO_EXPERT || rb.r.weight[s] != 0.f;
    CHECK(bad == 0, "everything masked: every slot empty (%d wrong)", bad);
}

/* ------------------------------------------------------------------ balance */

static void test_balance_closed_forms(void) {
    enum { T = 16, E = 8, K = 2 };
    float z[T * E] = {0}, probs[T * E], lse[T];
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    routing_buf rb;
    route(&c, NULL, z, T, NULL, &rb, probs);
    moec_lbl_cfg l = {.coef = 0.01f, .scope = MOEC_LBL_MICRO_BATCH, .k = K};
    const double lbl = moec_lbl_forward(&l, probs, &rb.r, T, E);
    CHECK(fabs(lbl - 0.01) <= 1e-6 * 0.01, "LBL at zero logits = α (Megatron): %.9g", lbl);
    const double zl = moec_zloss_forward(0.001f, z, T, E, lse);
    CHECK(fabs(zl - 0.001 * log(8.0) * log(8.0)) <= 1e-6 * zl, "z-loss at zero logits = c_z (ln E)²: %.9g", zl);
    l.scope = MOEC_LBL_SEQUENCE, l.seq_len = 4;
    CHECK(fabs(moec_lbl_forward(&l, probs, &rb.r, T, E) - 0.01) <= 1e-8, "sequence LBL at zero logits = α");

    /* MaxVio: balanced 0; all T·K assignments on one expert → E − 1 */
    const int64_t bal[E] = {4, 4, 4, 4, 4, 4, 4, 4}, one[E] = {32, 0, 0, 0, 0, 0, 0, 0}, none[E] = {0};
    CHECK(moec_max_vio(bal, E) == 0.0 && fabs(moec_max_vio(one, E) - (E - 1)) < 1e-12 && moec_max_vio(none, E) == 0.0,
          "MaxVio");

    /* counts come from chosen, not expert (a dropped slot still counts), and skip chosen < 0 */
    int64_t cnt[E];
    rb.r.expert[0] = MOEC_NO_EXPERT;
    rb.r.chosen[1] = MOEC_NO_EXPERT;
    rb.r.expert[1] = MOEC_NO_EXPERT;
    moec_routing_counts(&rb.r, E, 0, T, cnt);
    CHECK(cnt[0] == T && cnt[1] == T - 1 && cnt[2] == 0, "counts from chosen: %lld %lld", (long long)cnt[0],
          (long long)cnt[1]);
    moec_routing_counts(&rb.r, E, 4, 8, cnt);
    CHECK(cnt[0] == 4 && cnt[1] == 4, "counts over a token range");
}

static void test_balance_scopes(void) {
    enum { T = 32, E = 8, K = 2, H = T / 2 };
    float z[T * E], probs[T * E];
    for (int i = 0; i < T * E; i++) z[i] = 2.f * frand();
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    routing_buf rb, rh;
    route(&c, NULL, z, T, NULL, &rb, probs);
    int64_t all[E];
    moec_routing_counts(&rb.r, E, 0, T, all);

    /* global: each half passes the whole step's counts and token count; (L_a + L_b)/2 = L_whole,
     * and the gradients of the halves (each × 1/2) equal the whole's */
    moec_lbl_cfg g = {.coef = 0.01f, .scope = MOEC_LBL_GLOBAL_BATCH, .k = K, .global_counts = all, .global_tokens = T};
    const double whole = moec_lbl_forward(&g, probs, &rb.r, T, E);
    float ph[H * E], dwhole[T * E] = {0}, dh[T * E] = {0};
    double halves = 0.0;
    for (int h = 0; h < 2; h++) {
        route(&c, NULL, z + h * H * E, H, NULL, &rh, ph);
        halves += moec_lbl_forward(&g, ph, &rh.r, H, E);
        moec_lbl_backward(&g, &rh.r, H, E, 0.5f, dh + h * H * E);
    }
    moec_lbl_backward(&g, &rb.r, T, E, 1.f, dwhole);
    double gd = 0.0;
    for (int i = 0; i < T * E; i++) gd = fmax(gd, fabs(dwhole[i] - dh[i]));
    CHECK(fabs(halves / 2 - whole) <= 1e-7 * whole, "global LBL: halves/2 %.9g vs whole %.9g", halves / 2, whole);
    CHECK(gd <= 1e-9, "global LBL gradients: halves vs whole differ by %.3g", gd);
    /* with the call's own counts it is the micro-batch loss (DP = GA = 1) */
    moec_lbl_cfg m = {.coef = 0.01f, .scope = MOEC_LBL_MICRO_BATCH, .k = K};
    CHECK(fabs(moec_lbl_forward(&m, probs, &rb.r, T, E) - whole) <= 1e-9, "global with own counts = micro");

    /* sequence: the mean of the per-sequence micro losses */
    moec_lbl_cfg s = {.coef = 0.01f, .scope = MOEC_LBL_SEQUENCE, .k = K, .seq_len = H};
    double mean = 0.0;
    for (int h = 0; h < 2; h++) {
        route(&c, NULL, z + h * H * E, H, NULL, &rh, ph);
        mean += moec_lbl_forward(&m, ph, &rh.r, H, E) / 2;
    }
    CHECK(fabs(moec_lbl_forward(&s, probs, &rb.r, T, E) - mean) <= 1e-9, "sequence LBL = mean of sequences");
    s.seq_len = T;
    CHECK(fabs(moec_lbl_forward(&s, probs, &rb.r, T, E) - whole) <= 1e-9, "one sequence = micro");
    m.coef = 0.f;
    CHECK(moec_lbl_forward(&m, probs, &rb.r, T, E) == 0.0, "coef 0 = off");
}

/* FD of the balance backwards: LBL w.r.t. probs (scopes), z-loss w.r.t. logits */
static void test_balance_fd(void) {
    enum { T = 24, E = 8, K = 2 };
    float z[T * E], probs[T * E], lse[T], d[T * E];
    for (int i = 0; i < T * E; i++) z[i] = 2.f * frand();
    moec_router_cfg c = moec_router_cfg_default(E, K, 1);
    routing_buf rb;
    route(&c, NULL, z, T, NULL, &rb, probs);
    rb.r.expert[3] = MOEC_NO_EXPERT; /* dropped: still counted */
    rb.r.expert[8] = rb.r.chosen[8] = MOEC_NO_EXPERT; /* not chosen: not counted */
    int64_t glob[E];
    moec_routing_counts(&rb.r, E, 0, T, glob);
    for (int e = 0; e < E; e++) glob[e] += 3 * e; /* other micro-batches of the step */
    const moec_lbl_scope scopes[3] = {MOEC_LBL_MICRO_BATCH, MOEC_LBL_SEQUENCE, MOEC_LBL_GLOBAL_BATCH};
    const float hp = 1e-2f; /* L is linear in P: the central difference is exact but for rounding */
    double worst = 0.0;
    for (int si = 0; si < 3; si++) {
        moec_lbl_cfg l = {.coef = 0.5f, .scope = scopes[si], .k = K, .seq_len = 6, .global_counts = glob,
                          .global_tokens = 3 * T};
        for (int i = 0; i < T * E; i++) d[i] = 0.25f; /* backward adds */
        moec_lbl_backward(&l, &rb.r, T, E, 2.f, d);
        int bad = 0;
        for (int i = 0; i < T * E; i++) {
            const float p0 = probs[i];
            probs[i] = p0 + hp;
            const double Lp = moec_lbl_forward(&l, probs, &rb.r, T, E);
            probs[i] = p0 - hp;
            const double Lm = moec_lbl_forward(&l, probs, &rb.r, T, E);
            probs[i] = p0;
            const double fd = 2.0 * (Lp - Lm) / (2.0 * hp) + 0.25, err = fabs(fd - d[i]);
            worst = fmax(worst, err);
            bad += err > 1e-5 + 1e-4 * fabs(fd);
        }
        CHECK(bad == 0, "LBL scope %d backward vs FD: %d mismatches", si, bad);
    }
    /* z-loss */
    const float cz = 0.1f;
    for (int i = 0; i < T * E; i++) d[i] = 0.f;
    moec_zloss_forward(cz, z, T, E, lse);
    moec_zloss_backward(cz, z, lse, T, E, 3.f, d);
    int bad = 0;
    double zworst = 0.0;
    float lse2[T];
    for (int i = 0; i < T * E; i++) {
        const float z0 = z[i];
        z[i] = z0 + FD_H;
        const double Lp = moec_zloss_forward(cz, z, T, E, lse2);
        z[i] = z0 - FD_H;
        const double Lm = moec_zloss_forward(cz, z, T, E, lse2);
        z[i] = z0;
        const double fd = 3.0 * (Lp - Lm) / (2.0 * (double)FD_H), err = fabs(fd - d[i]);
        zworst = fmax(zworst, err);
        bad += err > 1e-5 + 1e-3 * fabs(fd);
    }
    CHECK(bad == 0, "z-loss backward vs FD: %d mismatches (max %.3g)", bad, zworst);
    printf("balance FD: LBL max |err| %.2e, z-loss max |err| %.2e\n", worst, zworst);
}

int main(void) {
    test_registry();
    test_check();
    test_topk_ties();
    test_softmax_topk_equivalence();
    test_v3_reduces();
    test_groups();
    test_bias();
    test_bias_converges();
    test_opts();
    test_balance_closed_forms();
    test_balance_scopes();
    test_balance_fd();
    printf("router FD: max |err| %.2e over every configuration\n", g_fd_max_router);
    return test_finish("test_routers");
}
