/* test_xkind.c — the expert kinds and the layer-to-layer routing carry of the MoE layer
 * (moe/moe.h) on hand-made inputs: the one-line checks of MOE_SPECS §7 (+ its addendum) and §9.
 * x_t is the unit vector e_t, so router logits z[t, e] = W_r[e, t] are chosen per token.
 *
 *  - AdaMoE null experts (2 FFN + 2 null, top-2, renormalised): a token whose top-2 are both
 *    null gets y = 0 exactly; FFN0 + null gets y = 1.0 · FFN0(x) (renormalised among the true
 *    experts); FFN0 + FFN1 gets the softmax-renormalised mix; stats: n_true 3, n_zero_compute 3,
 *    n_dropped 0 (null picks are not drops). With moec_null_renorm off, FFN0 + null weighs
 *    FFN0 by its raw renormalised-over-both probability (< 1).
 *  - MoE++ (2 FFN + constant + copy + zero): copy + zero → y = x exactly; constant + copy →
 *    w_c (a1 x + a2 v) + w_copy x with [a1, a2] = softmax(W_c x); copy + FFN0 → g x + g' FFN0(x).
 *  - the gating residual: carry out = W_r x + W_g · carry_in, and = W_r x without a carry in.
 *  - RMoE with every GRU weight and bias 0: r = z = 1/2, n = 0, so h' = h_prev / 2 exactly, and
 *    logits = W2 h'.
 *  - the inference workspace (keep = 0: grouped kernels, alternating carry buffers) gives the
 *    training workspace's y and carry.
 *  - ReXMoE Progressive Scaling Routing (§26): pool sizes and masks (see test_rex_psr).
 * References are computed here in double; tolerance 1e-5 relative (both fp32 paths). */
#include "moe/moe.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define D 4
#define T 3
#define FF 3
#define MAXER 8
#define F32(p, r, c) ((moec_mat){(p), MOEC_DTYPE_F32, (r), (c)})

typedef struct {
    moec_hparams hp;
    int E, Er;
    float x[T * D], router[MAXER * D];
    float gate[2][FF * D], up[2][FF * D], down[2][D * FF];
    float cw[2 * D], cv[D];
    float gmap[MAXER * MAXER];
    float proj[D * D], wih[3 * D * D], whh[3 * D * D], bih[3 * D], bhh[3 * D];
    moec_ffn ex[2];
    const moec_ffn *eptr[2];
    moec_layer L;
} layer;

static void setup(layer *P, int n_const, int n_copy, int n_null, int k, int rnn) {
    memset(P, 0, sizeof *P);
    P->E = 2;
    P->Er = 2 + n_const + n_copy + n_null;
    moec_hparams *hp = &P->hp;
    hp->n_embd = D, hp->n_expert = 2, hp->n_expert_used = k, hp->n_ff_expert = FF;
    hp->n_layer = 1, hp->layer_moe[0] = 1, hp->norm_topk_prob = 1;
    hp->route = moec_router_cfg_default(P->Er, k, 1);
    hp->route.n_const = n_const, hp->route.n_copy = n_copy, hp->route.n_null = n_null;
    hp->route.rnn_dim = rnn;
    hp->route.gate_residual = !rnn;
    hp->route.aux_coef = 0.f, hp->route.z_coef = 0.f;
    for (int t = 0; t < T; t++) P->x[t * D + t] = 1.f;
    for (int e = 0; e < 2; e++) {
        for (int i = 0; i < FF * D; i++) P->gate[e][i] = frand(), P->up[e][i] = frand(), P->down[e][i] = frand();
        P->ex[e] = (moec_ffn){F32(P->gate[e], FF, D), F32(P->up[e], FF, D), F32(P->down[e], D, FF)};
        P->eptr[e] = &P->ex[e];
    }
    for (int i = 0; i < 2 * D; i++) P->cw[i] = frand();
    for (int i = 0; i < D; i++) P->cv[i] = frand();
    for (int i = 0; i < P->Er * P->Er; i++) P->gmap[i] = frand();
    P->L = (moec_layer){.is_moe = 1, .router = F32(P->router, P->Er, rnn ? rnn : D), .experts = P->ex,
                        .expert_ptrs = P->eptr};
    if (n_const) P->L.const_w[0] = F32(P->cw, 2, D), P->L.const_v[0] = P->cv;
    P->L.gate_map = F32(P->gmap, P->Er, P->Er);
    if (rnn) {
        P->L.gate_map = (moec_mat){NULL, MOEC_DTYPE_F32, 0, 0};
        P->L.router_proj = F32(P->proj, rnn, D);
        P->L.rnn_w_ih = F32(P->wih, 3 * rnn, rnn), P->L.rnn_w_hh = F32(P->whh, 3 * rnn, rnn);
        P->L.rnn_b_ih = P->bih, P->L.rnn_b_hh = P->bhh;
    }
}

/* token t's router logits (x_t = e_t: column t of W_r) */
static void set_logits(layer *P, int t, const float *z) {
    for (int e = 0; e < P->Er; e++) P->router[e * D + t] = z[e];
}

static void ffn_ref(const layer *P, int e, const float *x, double *out) {
    double h[FF];
    for (int f = 0; f < FF; f++) {
        double g = 0, u = 0;
        for (int i = 0; i < D; i++) g += (double)P->gate[e][f * D + i] * x[i], u += (double)P->up[e][f * D + i] * x[i];
        h[f] = g / (1 + exp(-g)) * u;
    }
    for (int i = 0; i < D; i++) {
        out[i] = 0;
        for (int f = 0; f < FF; f++) out[i] += (double)P->down[e][i * FF + f] * h[f];
    }
}

static double max_rel(const float *y, const double *ref, int n) {
    double mx = 1e-30, diff = 0;
    for (int i = 0; i < n; i++) {
        mx = fmax(mx, fabs(ref[i]));
        diff = fmax(diff, fabs(y[i] - ref[i]));
    }
    return diff / mx;
}

/* y [T, D] and stats of one forward; keep chooses the training or the inference workspace */
static void run(layer *P, int keep, const float *carry_in, float *y, moec_moe_stats *st, float *carry_out) {
    moec_moe_ws *ws = NULL;
    moec_error err = {0};
    CHECK(moec_moe_ws_new(&ws, &P->hp, T, keep, &err) == MOEC_OK, "ws: %s", err.msg);
    if (!ws) return;
    moec_moe_call call = {.carry_in = carry_in};
    moec_moe_forward(ws, &P->hp, &P->L, y, P->x, T, &call, st);
    const int C = moec_moe_carry_dim(&P->hp);
    if (carry_out && C) memcpy(carry_out, moec_moe_carry(ws), (size_t)T * C * sizeof(float));
    moec_moe_ws_free(ws);
}

static void softmax_d(const float *z, int n, double *p) {
    double m = z[0], s = 0;
    for (int i = 1; i < n; i++) m = fmax(m, z[i]);
    for (int i = 0; i < n; i++) s += p[i] = exp(z[i] - m);
    for (int i = 0; i < n; i++) p[i] /= s;
}

static void test_adamoe(void) {
    layer P;
    setup(&P, 0, 0, 2, 2, 0);
    P.hp.route.gate_residual = 0;
    const float z0[] = {0, 0, 3, 2}, z1[] = {3, 0, 2, 0}, z2[] = {2, 1.5f, 0, 0};
    set_logits(&P, 0, z0), set_logits(&P, 1, z1), set_logits(&P, 2, z2);
    for (int keep = 1; keep >= 0; keep--) {
        float y[T * D];
        moec_moe_stats st = {0};
        run(&P, keep, NULL, y, &st, NULL);
        double ref[T * D];
        for (int i = 0; i < D; i++) ref[i] = 0;
        ffn_ref(&P, 0, P.x + D, ref + D); /* FFN0 + null: weight exactly 1 */
        double a[D], b[D], p[4];
        ffn_ref(&P, 0, P.x + 2 * D, a), ffn_ref(&P, 1, P.x + 2 * D, b);
        softmax_d(z2, 4, p);
        for (int i = 0; i < D; i++) ref[2 * D + i] = (p[0] * a[i] + p[1] * b[i]) / (p[0] + p[1]);
        int zero = 1;
        for (int i = 0; i < D; i++) zero &= y[i] == 0.f;
        CHECK(zero, "AdaMoE (keep %d): a token whose top-2 are null has output exactly 0", keep);
        CHECK(max_rel(y + D, ref + D, D) <= 1e-5, "AdaMoE (keep %d): FFN0 + null = 1.0 x FFN0(x): rel %.2e", keep,
              max_rel(y + D, ref + D, D));
        CHECK(max_rel(y, ref, T * D) <= 1e-5, "AdaMoE (keep %d): layer output: rel %.2e", keep, max_rel(y, ref, T * D));
        CHECK(st.n_true == 3 && st.n_true_chosen == 3 && st.n_zero_compute == 3 && st.n_dropped == 0 &&
                  st.n_assigned == 6,
              "AdaMoE stats: true %lld chosen %lld zero-compute %lld dropped %lld assigned %lld", (long long)st.n_true,
              (long long)st.n_true_chosen, (long long)st.n_zero_compute, (long long)st.n_dropped,
              (long long)st.n_assigned);
    }
    /* without the null renormalisation the null pick keeps its share of the weight */
    P.hp.route.null_renorm = 0;
    float y[T * D];
    run(&P, 1, NULL, y, NULL, NULL);
    double f0[D], p[4];
    ffn_ref(&P, 0, P.x + D, f0);
    softmax_d(z1, 4, p);
    double ref[D];
    for (int i = 0; i < D; i++) ref[i] = p[0] / (p[0] + p[2]) * f0[i];
    CHECK(max_rel(y + D, ref, D) <= 1e-5, "AdaMoE without null renorm: FFN0 weighs p0/(p0+p_null): rel %.2e",
          max_rel(y + D, ref, D));
}

static void test_moepp(void) {
    layer P; /* experts: 0, 1 FFN; 2 constant; 3 copy; 4 zero */
    setup(&P, 1, 1, 1, 2, 0);
    const float z0[] = {0, 0, 0, 3, 2}, z1[] = {0, 0, 2.5f, 2, 0}, z2[] = {1.5f, 0, 0, 2, 0};
    set_logits(&P, 0, z0), set_logits(&P, 1, z1), set_logits(&P, 2, z2);
    for (int keep = 1; keep >= 0; keep--) {
        float y[T * D], carry[T * MAXER];
        moec_moe_stats st = {0};
        run(&P, keep, NULL, y, &st, carry);
        int same = 1;
        for (int i = 0; i < D; i++) same &= y[i] == P.x[i];
        CHECK(same, "MoE++ (keep %d): copy + zero expert gives exactly 1.0 x x", keep);
        double ref[T * D], p[5];
        /* constant + copy */
        softmax_d(z1, 5, p);
        const float *x1 = P.x + D;
        double c[2] = {0, 0};
        for (int i = 0; i < D; i++) c[0] += (double)P.cw[i] * x1[i], c[1] += (double)P.cw[D + i] * x1[i];
        const double m = fmax(c[0], c[1]), e0 = exp(c[0] - m), e1 = exp(c[1] - m);
        const double a1 = e0 / (e0 + e1), a2 = e1 / (e0 + e1), wc = p[2] / (p[2] + p[3]), wy = p[3] / (p[2] + p[3]);
        for (int i = 0; i < D; i++) ref[D + i] = wc * (a1 * x1[i] + a2 * P.cv[i]) + wy * x1[i];
        /* copy + FFN0 */
        softmax_d(z2, 5, p);
        double f0[D];
        ffn_ref(&P, 0, P.x + 2 * D, f0);
        for (int i = 0; i < D; i++) ref[2 * D + i] = (p[3] * P.x[2 * D + i] + p[0] * f0[i]) / (p[0] + p[3]);
        for (int i = 0; i < D; i++) ref[i] = P.x[i];
        CHECK(max_rel(y + D, ref + D, D) <= 1e-5, "MoE++ (keep %d): constant + copy: rel %.2e", keep,
              max_rel(y + D, ref + D, D));
        CHECK(max_rel(y, ref, T * D) <= 1e-5, "MoE++ (keep %d): layer output: rel %.2e", keep, max_rel(y, ref, T * D));
        CHECK(st.n_true == 1 && st.n_zero_compute == 5 && st.n_dropped == 0, "MoE++ stats: true %lld zero-compute %lld",
              (long long)st.n_true, (long long)st.n_zero_compute);
        /* the first MoE layer passes on its plain logits */
        double cm = 0;
        for (int t = 0; t < T; t++)
            for (int e = 0; e < 5; e++) cm = fmax(cm, fabs(carry[t * 5 + e] - P.router[e * D + t]));
        CHECK(cm == 0, "MoE++ (keep %d): carry out of a first layer = its logits (max diff %.2e)", keep, cm);
        /* with a carry in: logits = W_r x + W_g carry_in, passed on */
        float cin[T * 5], cout[T * 5];
        for (int i = 0; i < T * 5; i++) cin[i] = frand();
        run(&P, keep, cin, y, NULL, cout);
        double refc[T * 5];
        for (int t = 0; t < T; t++)
            for (int e = 0; e < 5; e++) {
                refc[t * 5 + e] = P.router[e * D + t];
                for (int j = 0; j < 5; j++) refc[t * 5 + e] += (double)P.gmap[e * 5 + j] * cin[t * 5 + j];
            }
        CHECK(max_rel(cout, refc, T * 5) <= 1e-5, "MoE++ (keep %d): gating residual W_r x + W_g logits_prev: rel %.2e",
              keep, max_rel(cout, refc, T * 5));
    }
}

static void test_rmoe(void) {
    layer P;
    setup(&P, 0, 0, 0, 2, D); /* GRU weights and biases all 0 */
    for (int i = 0; i < D * D; i++) P.proj[i] = frand();
    for (int i = 0; i < P.Er * D; i++) P.router[i] = frand();
    float cin[T * D], y[T * D], y0[T * D], cout[T * D], cout0[T * D];
    for (int i = 0; i < T * D; i++) cin[i] = frand();
    run(&P, 1, cin, y, NULL, cout);
    run(&P, 0, cin, y0, NULL, cout0);
    int half = 1, same = 1;
    for (int i = 0; i < T * D; i++) half &= cout[i] == 0.5f * cin[i], same &= cout0[i] == cout[i];
    CHECK(half, "RMoE: GRU weights 0 give h = h_prev / 2 exactly");
    CHECK(same, "RMoE: inference workspace carries the same state");
    double ry[T * D];
    for (int i = 0; i < T * D; i++) ry[i] = y[i];
    CHECK(max_rel(y0, ry, T * D) <= 1e-5, "RMoE: inference workspace output == training: rel %.2e",
          max_rel(y0, ry, T * D));
    /* the routing follows W2 h: with h_prev = e_0-like rows, the top expert is argmax of W2 h */
    moec_moe_ws *ws = NULL;
    moec_error err = {0};
    CHECK(moec_moe_ws_new(&ws, &P.hp, T, 1, &err) == MOEC_OK, "ws: %s", err.msg);
    moec_moe_call call = {.carry_in = cin};
    moec_moe_stats st = {0};
    moec_moe_forward(ws, &P.hp, &P.L, y, P.x, T, &call, &st);
    for (int t = 0; t < T; t++) {
        int best = 0;
        double bv = -1e30;
        for (int e = 0; e < P.Er; e++) {
            double v = 0;
            for (int i = 0; i < D; i++) v += (double)P.router[e * D + i] * 0.5 * cin[t * D + i];
            if (v > bv) bv = v, best = e;
        }
        CHECK(st.routing->expert[t * 2] == best, "RMoE: token %d top expert %d, W2 h says %d", t,
              st.routing->expert[t * 2], best);
    }
    moec_moe_ws_free(ws);
}

/* ReXMoE PSR (MOE_SPECS §26 test): r = 4, N = 64, t_s = 10k, t_e = 30k: N_t(20k) = 160, so exactly
 * 96 candidates are masked; N before t_s, r·N after t_e; masks are a function of (seed, step,
 * layer), differ between layers and steps; zero-computation experts are never masked. A masked
 * candidate is never selected, and the selected weights stay the full softmax values (the
 * paper's "scores set to 0, no renormalisation"). */
static void test_rex_psr(void) {
    moec_router_cfg c = moec_router_cfg_default(4 * 64 + 2, 8, 0);
    c.rex_reuse = 4, c.rex_psr_start = 10000, c.rex_psr_end = 30000, c.n_null = 2;
    CHECK(moec_rex_pool_size(&c, 64, 20000) == 160, "PSR N_t(20k) = %d, want 160", moec_rex_pool_size(&c, 64, 20000));
    CHECK(moec_rex_pool_size(&c, 64, 10000) == 64 && moec_rex_pool_size(&c, 64, 30001) == 256 &&
              moec_rex_pool_size(&c, 64, 30000) == 256 && moec_rex_pool_size(&c, 64, 1) == 64,
          "PSR N_t at the ends of the schedule");
    uint8_t m1[258], m2[258], m3[258], m4[258];
    moec_rex_mask(&c, 64, 20000, 42, 3, m1);
    moec_rex_mask(&c, 64, 20000, 42, 3, m2);
    moec_rex_mask(&c, 64, 20000, 42, 4, m3);
    moec_rex_mask(&c, 64, 20001, 42, 3, m4);
    int zeros = 0, extras = 1;
    for (int e = 0; e < 256; e++) zeros += !m1[e];
    for (int e = 256; e < 258; e++) extras &= m1[e];
    CHECK(zeros == 96 && extras, "PSR at 20k masks %d of 256 (want 96), null experts kept %d", zeros, extras);
    CHECK(!memcmp(m1, m2, sizeof m1) && memcmp(m1, m3, sizeof m1) && memcmp(m1, m4, sizeof m1),
          "PSR masks: a function of (seed, step, layer), not the same for other layers or steps");
    moec_rex_mask(&c, 64, 40000, 42, 3, m2);
    zeros = 0;
    for (int e = 0; e < 258; e++) zeros += !m2[e];
    CHECK(zeros == 0, "PSR after t_e masks nothing (%d masked)", zeros);
    /* a masked router forward: 2 tokens, a pool of 8 with k = 2, norm_topk_prob off */
    moec_router_cfg rc = moec_router_cfg_default(8, 2, 0);
    uint8_t mask[8] = {0, 1, 0, 1, 1, 1, 1, 1};
    float z[16] = {5, 4, 3, 2, 1, 0, -1, -2, 0, 1, 6, 2, 3, 0, 0, 0}, probs[16], scratch[64];
    int32_t tok[4], ex[4], ch[4];
    float wt[4];
    moec_routing r = {.cap = 4, .token = tok, .expert = ex, .weight = wt, .chosen = ch};
    const moec_route_opts opts = {.expert_mask = mask};
    rc.router->forward(&rc, NULL, z, 2, &opts, &r, probs, scratch);
    double p[8];
    for (int t = 0; t < 2; t++) {
        double m = -1e30, sum = 0;
        for (int e = 0; e < 8; e++) m = fmax(m, z[t * 8 + e]);
        for (int e = 0; e < 8; e++) sum += p[e] = exp(z[t * 8 + e] - m);
        const int want0 = t == 0 ? 1 : 4, want1 = t == 0 ? 3 : 3;
        CHECK(ex[2 * t] == want0 && ex[2 * t + 1] == want1, "PSR token %d picks %d %d, want %d %d (masked skipped)", t,
              ex[2 * t], ex[2 * t + 1], want0, want1);
        CHECK(fabs(wt[2 * t] - p[want0] / sum) < 1e-6 && fabs(wt[2 * t + 1] - p[want1] / sum) < 1e-6,
              "PSR token %d keeps the full softmax weights", t);
    }
}

int main(void) {
    test_rex_psr();
    test_adamoe();
    test_moepp();
    test_rmoe();
    return test_finish("test_xkind");
}
