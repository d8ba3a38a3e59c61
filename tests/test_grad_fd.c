/* test_grad_fd.c — finite-difference checks of every dense training backward (nn/ops_train.h,
 * nn/linear.h) on tiny sizes, plus the contracts PyTorch cannot check for us:
 *  - for L = Σ y·g with random g (for cross-entropy L = dscale·loss), each input element is
 *    moved by ±1e-2 and the central difference (L+ - L-) / 2e-2, with L summed in double from
 *    the fp32 outputs, is compared with the analytic gradient. Tolerance: max|analytic -
 *    numeric| <= 1e-2 · max|numeric| per tensor (fp32 rounding of L contributes ~1e-5
 *    absolute, the O(eps²) truncation ~1e-4 relative on these smooth functions);
 *  - backward accumulates: a second call adds the same gradient again (1e-6 relative);
 *  - attention, RMSNorm and cross-entropy are bit-identical with 1, 2 and 3 threads;
 *  - edge cases: RMSNorm dw = NULL, embedding padding id -1, cross-entropy with every target
 *    ignored (loss 0, zero gradient), with a target >= V (NaN) and in place (dlogits ==
 *    logits, as the trainer calls it), logsumexp of huge and of -inf values, attention
 *    probabilities causal and normalised (1e-6). */
#include "core/threads.h"
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/ops_train.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define FD_EPS 1e-2f /* finite-difference step */
#define FD_TOL 1e-2  /* relative to the tensor's max |numeric gradient| */
#define ACC_TOL 1e-6 /* second backward call == 2x the first, relative */

static void fill(float *x, int n, float scale) {
    for (int i = 0; i < n; i++) x[i] = scale * frand();
}

static double dot_d(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Central differences of loss() over p[0..n), compared with the analytic gradient ga. */
static void fd_check(const char *what, double (*loss)(void *), void *ctx, float *p, const float *ga, int n) {
    double maxnum = 0, maxdiff = 0;
    for (int i = 0; i < n; i++) {
        const float orig = p[i];
        p[i] = orig + FD_EPS;
        const double lp = loss(ctx);
        p[i] = orig - FD_EPS;
        const double lm = loss(ctx);
        p[i] = orig;
        const double num = (lp - lm) / (2.0 * FD_EPS);
        if (fabs(num) > maxnum) maxnum = fabs(num);
        if (fabs(num - ga[i]) > maxdiff || !isfinite(ga[i])) maxdiff = isfinite(ga[i]) ? fabs(num - ga[i]) : INFINITY;
    }
    const double rel = maxdiff / (maxnum > 1e-6 ? maxnum : 1e-6);
    printf("  fd %-22s max|num|=%.3e rel_err=%.3e\n", what, maxnum, rel);
    CHECK(rel <= FD_TOL, "%s: rel_err %.3e > %.0e", what, rel, FD_TOL);
}

/* b == 2a within ACC_TOL (relative to max|a|). */
static void check_doubled(const char *what, const float *a, const float *b, int n) {
    double mx = 0, diff = 0;
    for (int i = 0; i < n; i++) {
        if (fabs(a[i]) > mx) mx = fabs(a[i]);
        if (fabs(b[i] - 2.0 * a[i]) > diff) diff = fabs(b[i] - 2.0 * a[i]);
    }
    CHECK(diff <= ACC_TOL * (mx > 1e-30 ? mx : 1e-30), "%s: second call did not accumulate (%.3e)", what, diff);
}

/* -------------------------------------------------------------------------------------- RMSNorm */
enum { RN_R = 3, RN_N = 5 };
typedef struct {
    float x[RN_R * RN_N], w[RN_N], g[RN_R * RN_N];
} rn_ctx;

static double rn_loss(void *vc) {
    rn_ctx *c = vc;
    float y[RN_R * RN_N], rstd[RN_R];
    moec_rmsnorm_forward_train(y, rstd, c->x, c->w, RN_R, RN_N, 1e-5f);
    return dot_d(y, c->g, RN_R * RN_N);
}

static void test_rmsnorm(void) {
    rn_ctx c;
    fill(c.x, RN_R * RN_N, 1.f);
    fill(c.w, RN_N, 1.f);
    fill(c.g, RN_R * RN_N, 1.f);
    float y[RN_R * RN_N], rstd[RN_R], dx[RN_R * RN_N] = {0}, dw[RN_N] = {0}, dx2[RN_R * RN_N] = {0};
    moec_rmsnorm_forward_train(y, rstd, c.x, c.w, RN_R, RN_N, 1e-5f);
    /* y = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps), in double */
    for (int r = 0; r < RN_R; r++) {
        double ss = 0;
        for (int i = 0; i < RN_N; i++) ss += (double)c.x[r * RN_N + i] * c.x[r * RN_N + i];
        const double s = 1.0 / sqrt(ss / RN_N + 1e-5);
        for (int i = 0; i < RN_N; i++)
            CHECK(fabs(y[r * RN_N + i] - c.x[r * RN_N + i] * s * c.w[i]) <= 1e-6 * (1 + fabs(y[r * RN_N + i])),
                  "rmsnorm forward [%d, %d]", r, i);
    }
    moec_rmsnorm_backward(dx, dw, c.g, c.x, c.w, rstd, RN_R, RN_N);
    fd_check("rmsnorm dx", rn_loss, &c, c.x, dx, RN_R * RN_N);
    fd_check("rmsnorm dw", rn_loss, &c, c.w, dw, RN_N);
    moec_rmsnorm_backward(dx2, NULL, c.g, c.x, c.w, rstd, RN_R, RN_N); /* dw not wanted */
    CHECK(memcmp(dx, dx2, sizeof dx) == 0, "dw = NULL changed dx");
    float dxa[RN_R * RN_N], dwa[RN_N];
    memcpy(dxa, dx, sizeof dx);
    memcpy(dwa, dw, sizeof dw);
    moec_rmsnorm_backward(dx, dw, c.g, c.x, c.w, rstd, RN_R, RN_N);
    check_doubled("rmsnorm dx", dxa, dx, RN_R * RN_N);
    check_doubled("rmsnorm dw", dwa, dw, RN_N);
}

/* ----------------------------------------------------------------------------------------- RoPE */
enum { RP_T = 4, RP_H = 2, RP_D = 6, RP_CTX = 8 };
typedef struct {
    float x[RP_T * RP_H * RP_D], g[RP_T * RP_H * RP_D], ct[RP_CTX * RP_D / 2], st[RP_CTX * RP_D / 2];
    int32_t pos[RP_T];
} rp_ctx;

static double rp_loss(void *vc) {
    rp_ctx *c = vc;
    float y[RP_T * RP_H * RP_D];
    memcpy(y, c->x, sizeof y);
    moec_rope_pos(y, RP_T, RP_H, RP_D, c->ct, c->st, c->pos);
    return dot_d(y, c->g, RP_T * RP_H * RP_D);
}

static void test_rope(void) {
    rp_ctx c = {.pos = {0, 1, 0, 5}};
    fill(c.x, RP_T * RP_H * RP_D, 1.f);
    fill(c.g, RP_T * RP_H * RP_D, 1.f);
    moec_rope_tables(c.ct, c.st, RP_CTX, RP_D, 100.f);
    float dx[RP_T * RP_H * RP_D];
    memcpy(dx, c.g, sizeof dx);
    moec_rope_backward(dx, RP_T, RP_H, RP_D, c.ct, c.st, c.pos);
    fd_check("rope dx", rp_loss, &c, c.x, dx, RP_T * RP_H * RP_D);
    /* rotate-half at each token's own position: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) */
    float a[RP_T * RP_H * RP_D];
    memcpy(a, c.x, sizeof a);
    moec_rope_pos(a, RP_T, RP_H, RP_D, c.ct, c.st, c.pos);
    for (int t = 0; t < RP_T; t++)
        for (int h = 0; h < RP_H; h++)
            for (int i = 0; i < RP_D / 2; i++) {
                const int o = (t * RP_H + h) * RP_D;
                const double ang = c.pos[t] / pow(100.0, 2.0 * i / RP_D), x1 = c.x[o + i], x2 = c.x[o + i + RP_D / 2];
                CHECK(fabs(a[o + i] - (x1 * cos(ang) - x2 * sin(ang))) <= 1e-5 &&
                          fabs(a[o + i + RP_D / 2] - (x2 * cos(ang) + x1 * sin(ang))) <= 1e-5,
                      "rope forward at token %d head %d pair %d", t, h, i);
            }
}

/* ------------------------------------------------------------------------------------ attention */
enum { AT_B = 2, AT_S = 3, AT_H = 4, AT_KV = 2, AT_D = 4 };
#define AT_NQ (AT_B * AT_S * AT_H * AT_D)
#define AT_NK (AT_B * AT_S * AT_KV * AT_D)
#define AT_NP (AT_B * AT_H * AT_S * AT_S)
typedef struct {
    float q[AT_NQ], k[AT_NK], v[AT_NK], g[AT_NQ];
} at_ctx;

static double at_loss(void *vc) {
    at_ctx *c = vc;
    float out[AT_NQ], probs[AT_NP];
    moec_attention_forward_train(out, probs, c->q, c->k, c->v, AT_B, AT_S, AT_H, AT_KV, AT_D);
    return dot_d(out, c->g, AT_NQ);
}

static void test_attention(void) {
    at_ctx c;
    fill(c.q, AT_NQ, 1.5f);
    fill(c.k, AT_NK, 1.5f);
    fill(c.v, AT_NK, 1.f);
    fill(c.g, AT_NQ, 1.f);
    float out[AT_NQ], probs[AT_NP], dprobs[AT_NP], dq[AT_NQ] = {0}, dk[AT_NK] = {0}, dv[AT_NK] = {0};
    moec_attention_forward_train(out, probs, c.q, c.k, c.v, AT_B, AT_S, AT_H, AT_KV, AT_D);
    int causal = 1;
    double worst_sum = 0;
    for (int r = 0; r < AT_B * AT_H * AT_S; r++) {
        const int i = r % AT_S;
        double s = 0;
        for (int j = 0; j < AT_S; j++) {
            if (j > i && probs[r * AT_S + j] != 0.f) causal = 0;
            s += probs[r * AT_S + j];
        }
        if (fabs(s - 1.0) > worst_sum) worst_sum = fabs(s - 1.0);
    }
    CHECK(causal, "probs has a nonzero entry above the diagonal");
    CHECK(worst_sum <= 1e-6, "probs rows sum to 1 within %.3e", worst_sum);
    moec_attention_backward(dq, dk, dv, dprobs, c.g, c.q, c.k, c.v, probs, AT_B, AT_S, AT_H, AT_KV, AT_D);
    fd_check("attention dq", at_loss, &c, c.q, dq, AT_NQ);
    fd_check("attention dk", at_loss, &c, c.k, dk, AT_NK);
    fd_check("attention dv", at_loss, &c, c.v, dv, AT_NK);
    float dqa[AT_NQ], dka[AT_NK], dva[AT_NK];
    memcpy(dqa, dq, sizeof dq);
    memcpy(dka, dk, sizeof dk);
    memcpy(dva, dv, sizeof dv);
    moec_attention_backward(dq, dk, dv, dprobs, c.g, c.q, c.k, c.v, probs, AT_B, AT_S, AT_H, AT_KV, AT_D);
    check_doubled("attention dq", dqa, dq, AT_NQ);
    check_doubled("attention dk", dka, dk, AT_NK);
    check_doubled("attention dv", dva, dv, AT_NK);
}

/* --------------------------------------------------------------------------------------- SwiGLU */
enum { SW_N = 9 };
typedef struct {
    float gate[SW_N], up[SW_N], g[SW_N];
} sw_ctx;

static double sw_loss(void *vc) {
    sw_ctx *c = vc;
    float h[SW_N];
    moec_swiglu(h, c->gate, c->up, SW_N);
    return dot_d(h, c->g, SW_N);
}

static void test_swiglu(void) {
    sw_ctx c;
    fill(c.gate, SW_N, 4.f);
    fill(c.up, SW_N, 1.f);
    fill(c.g, SW_N, 1.f);
    float dg[SW_N] = {0}, du[SW_N] = {0};
    moec_swiglu_backward(dg, du, c.g, c.gate, c.up, SW_N);
    fd_check("swiglu dgate", sw_loss, &c, c.gate, dg, SW_N);
    fd_check("swiglu dup", sw_loss, &c, c.up, du, SW_N);
    float dga[SW_N], dua[SW_N];
    memcpy(dga, dg, sizeof dg);
    memcpy(dua, du, sizeof du);
    moec_swiglu_backward(dg, du, c.g, c.gate, c.up, SW_N);
    check_doubled("swiglu dgate", dga, dg, SW_N);
    check_doubled("swiglu dup", dua, du, SW_N);
}

/* ------------------------------------------------------------------------------------ embedding */
enum { EM_V = 5, EM_D = 3, EM_T = 5 };
typedef struct {
    float W[EM_V * EM_D], g[EM_T * EM_D];
    int32_t ids[EM_T];
} em_ctx;

static double em_loss(void *vc) {
    em_ctx *c = vc;
    float x[EM_T * EM_D];
    moec_embedding_forward(x, c->W, c->ids, EM_T, EM_D);
    return dot_d(x, c->g, EM_T * EM_D);
}

static void test_embedding(void) {
    em_ctx c = {.ids = {1, 3, 1, -1, 4}}; /* a repeated id and a padding id */
    fill(c.W, EM_V * EM_D, 1.f);
    fill(c.g, EM_T * EM_D, 1.f);
    float dW[EM_V * EM_D] = {0}, x[EM_T * EM_D];
    moec_embedding_backward(dW, c.g, c.ids, EM_T, EM_D);
    fd_check("embedding dW", em_loss, &c, c.W, dW, EM_V * EM_D);
    moec_embedding_forward(x, c.W, c.ids, EM_T, EM_D);
    CHECK(x[3 * EM_D] == 0.f && x[3 * EM_D + 1] == 0.f && x[3 * EM_D + 2] == 0.f, "padding id gives a zero row");
    float dWa[EM_V * EM_D];
    memcpy(dWa, dW, sizeof dW);
    moec_embedding_backward(dW, c.g, c.ids, EM_T, EM_D);
    check_doubled("embedding dW", dWa, dW, EM_V * EM_D);
}

/* -------------------------------------------------------------------------------- cross-entropy */
enum { CE_T = 4, CE_V = 6 };
#define CE_DSCALE 0.7f
typedef struct {
    float z[CE_T * CE_V];
    int32_t tg[CE_T];
} ce_ctx;

static double ce_loss(void *vc) {
    ce_ctx *c = vc;
    return (double)CE_DSCALE * moec_cross_entropy(NULL, c->z, c->tg, CE_T, CE_V, CE_DSCALE);
}

static void test_cross_entropy(void) {
    ce_ctx c = {.tg = {2, -1, 5, 0}};
    fill(c.z, CE_T * CE_V, 2.f);
    float dz[CE_T * CE_V];
    const float loss = moec_cross_entropy(dz, c.z, c.tg, CE_T, CE_V, CE_DSCALE);
    /* the loss by hand, in double */
    double want = 0;
    for (int t = 0; t < CE_T; t++) {
        if (c.tg[t] < 0) continue;
        double s = 0;
        for (int j = 0; j < CE_V; j++) s += exp((double)c.z[t * CE_V + j]);
        want += log(s) - c.z[t * CE_V + c.tg[t]];
    }
    want /= 3;
    CHECK(fabs(loss - want) <= 1e-6 * fabs(want), "loss %.9g vs %.9g", loss, want);
    fd_check("cross-entropy dlogits", ce_loss, &c, c.z, dz, CE_T * CE_V);
    /* in place (dlogits == logits), as the trainer calls it: same loss and gradient, bitwise */
    float zi[CE_T * CE_V];
    memcpy(zi, c.z, sizeof zi);
    const float loss_in = moec_cross_entropy(zi, zi, c.tg, CE_T, CE_V, CE_DSCALE);
    CHECK(loss_in == loss && memcmp(zi, dz, sizeof zi) == 0, "in-place cross-entropy differs (loss %.9g vs %.9g)",
          loss_in, loss);
    int zero_row = 1;
    for (int j = 0; j < CE_V; j++) zero_row &= dz[CE_V + j] == 0.f;
    CHECK(zero_row, "ignored row has a nonzero gradient");

    /* every target ignored: loss 0, gradient 0 */
    int32_t none[CE_T] = {-1, -1, -1, -1};
    for (int i = 0; i < CE_T * CE_V; i++) dz[i] = 1.f;
    float l0 = moec_cross_entropy(dz, c.z, none, CE_T, CE_V, 1.f);
    int all_zero = 1;
    for (int i = 0; i < CE_T * CE_V; i++) all_zero &= dz[i] == 0.f;
    CHECK(l0 == 0.f && all_zero, "all-ignored: loss %g, zero gradient %d", l0, all_zero);
    /* a target outside the vocabulary: NaN, not a crash */
    int32_t bad[CE_T] = {0, CE_V, 1, 2};
    CHECK(isnan(moec_cross_entropy(dz, c.z, bad, CE_T, CE_V, 1.f)), "target >= V must give NaN");
    /* logsumexp: stable for huge values, -inf for empty / all -inf */
    float big[3] = {1e4f, 1e4f, -1e4f};
    CHECK(fabsf(moec_logsumexp(big, 3) - (1e4f + logf(2.f))) <= 1e-3f, "logsumexp(huge) = %g",
          moec_logsumexp(big, 3));
    float ninf[2] = {-INFINITY, -INFINITY};
    CHECK(isinf(moec_logsumexp(ninf, 2)) && moec_logsumexp(ninf, 2) < 0, "logsumexp(-inf) must be -inf");
    CHECK(isinf(moec_logsumexp(big, 0)) && moec_logsumexp(big, 0) < 0, "logsumexp of nothing must be -inf");
    /* huge logits: finite loss and gradient */
    float zh[CE_V] = {3e4f, -3e4f, 1e4f, 0.f, 2.9e4f, 5.f};
    int32_t th[1] = {4};
    float dzh[CE_V];
    float lh = moec_cross_entropy(dzh, zh, th, 1, CE_V, 1.f);
    CHECK(fabsf(lh - 1000.f) <= 1e-2f && isfinite(dzh[0]) && fabsf(dzh[4] + 1.f) <= 1e-6f, "huge logits: loss %g",
          lh);
}

/* --------------------------------------------------------------------------------------- linear */
enum { LN_T = 3, LN_K = 4, LN_N = 5, LN_LDX = 6 };
typedef struct {
    float x[LN_T * LN_LDX], W[LN_N * LN_K], b[LN_N], g[LN_T * LN_N];
} ln_ctx;

static double ln_loss(void *vc) {
    ln_ctx *c = vc;
    float y[LN_T * LN_N];
    moec_linear_forward(y, LN_N, c->x, LN_LDX, c->W, c->b, LN_T, LN_K, LN_N);
    return dot_d(y, c->g, LN_T * LN_N);
}

static void test_linear(void) {
    ln_ctx c;
    fill(c.x, LN_T * LN_LDX, 1.f);
    fill(c.W, LN_N * LN_K, 1.f);
    fill(c.b, LN_N, 1.f);
    fill(c.g, LN_T * LN_N, 1.f);
    float dx[LN_T * LN_LDX] = {0}, dW[LN_N * LN_K] = {0}, db[LN_N] = {0};
    moec_linear_backward(dx, LN_LDX, dW, db, c.g, LN_N, c.x, LN_LDX, c.W, LN_T, LN_K, LN_N);
    /* dx over the whole strided buffer: the padding columns have zero gradient both ways */
    fd_check("linear dx (ldx 6, K 4)", ln_loss, &c, c.x, dx, LN_T * LN_LDX);
    fd_check("linear dW", ln_loss, &c, c.W, dW, LN_N * LN_K);
    fd_check("linear db", ln_loss, &c, c.b, db, LN_N);
    float dxa[LN_T * LN_LDX], dWa[LN_N * LN_K], dba[LN_N];
    memcpy(dxa, dx, sizeof dx);
    memcpy(dWa, dW, sizeof dW);
    memcpy(dba, db, sizeof db);
    moec_linear_backward(dx, LN_LDX, dW, db, c.g, LN_N, c.x, LN_LDX, c.W, LN_T, LN_K, LN_N);
    check_doubled("linear dx", dxa, dx, LN_T * LN_LDX);
    check_doubled("linear dW", dWa, dW, LN_N * LN_K);
    check_doubled("linear db", dba, db, LN_N);
}

/* ------------------------------------------------------------------------- thread independence */
enum { TH_B = 2, TH_S = 32, TH_H = 4, TH_KV = 2, TH_D = 16, TH_CEV = 4000 };
#define TH_NQ (TH_B * TH_S * TH_H * TH_D)
#define TH_NK (TH_B * TH_S * TH_KV * TH_D)
#define TH_NP (TH_B * TH_H * TH_S * TH_S)

typedef struct {
    float out[TH_NQ], probs[TH_NP], dprobs[TH_NP], dq[TH_NQ], dk[TH_NK], dv[TH_NK]; /* attention */
    float y[TH_S * TH_CEV], rstd[TH_S], dx[TH_S * TH_CEV], dw[TH_CEV]; /* rmsnorm [S, CEV] */
    float dz[TH_S * TH_CEV], loss;                                     /* cross-entropy */
} th_out;

static void th_run(th_out *o, int nthreads, const float *q, const float *k, const float *v, const float *g,
                   const float *z, const int32_t *tg) {
    moec_threads_set(nthreads);
    memset(o, 0, sizeof *o);
    moec_attention_forward_train(o->out, o->probs, q, k, v, TH_B, TH_S, TH_H, TH_KV, TH_D);
    moec_attention_backward(o->dq, o->dk, o->dv, o->dprobs, g, q, k, v, o->probs, TH_B, TH_S, TH_H, TH_KV,
                            TH_D);
    /* rmsnorm on z (x, weight and upstream gradient all from z: only determinism matters) */
    moec_rmsnorm_forward_train(o->y, o->rstd, z, z, TH_S, TH_CEV, 1e-6f);
    moec_rmsnorm_backward(o->dx, o->dw, z, z, z, o->rstd, TH_S, TH_CEV);
    o->loss = moec_cross_entropy(o->dz, z, tg, TH_S, TH_CEV, 1.f);
}

static void test_threads(void) {
    static float q[TH_NQ], k[TH_NK], v[TH_NK], g[TH_NQ], z[TH_S * TH_CEV];
    static int32_t tg[TH_S];
    static th_out o1, o2;
    fill(q, TH_NQ, 1.f);
    fill(k, TH_NK, 1.f);
    fill(v, TH_NK, 1.f);
    fill(g, TH_NQ, 1.f);
    fill(z, TH_S * TH_CEV, 3.f);
    for (int t = 0; t < TH_S; t++) tg[t] = t % 5 == 4 ? -1 : (t * 131) % TH_CEV;
    th_run(&o1, 1, q, k, v, g, z, tg);
    for (int n = 2; n <= 3; n++) {
        th_run(&o2, n, q, k, v, g, z, tg);
        CHECK(memcmp(&o1, &o2, sizeof o1) == 0, "results with %d threads differ from 1 thread", n);
    }
    moec_threads_set(1);
}

int main(void) {
    test_rmsnorm();
    test_rope();
    test_attention();
    test_swiglu();
    test_embedding();
    test_cross_entropy();
    test_linear();
    test_threads();
    return test_finish("test_grad_fd");
}
