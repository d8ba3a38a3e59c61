/* test_moe.c — the route and dispatch stages and the grouped expert stage:
 *  - softmax over all → top-k → renormalise equals softmax over the top-k logits (≤ 1e-6,
 *    MOE_SPECS §2 test); without renorm the weights are the plain probabilities;
 *  - top-k picks the k largest, in descending order, ties to the lower index;
 *  - dispatch groups rows by expert, stable in token order, with an expert that gets no token
 *    and one that gets every token; row_of inverts row_src;
 *  - moec_ffn_grouped equals per-row SwiGLU FFNs computed naively (1e-5 relative). */
#include "moe/dispatch.h"
#include "moe/experts.h"
#include "moe/router.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static void test_router(void) {
    enum { T = 50, E = 16, K = 4 };
    float logits[T * E], l2[T * E], w[T * K], wn[T * K];
    int32_t ids[T * K], ids2[T * K];
    for (int i = 0; i < T * E; i++) logits[i] = 3.f * frand();
    memcpy(l2, logits, sizeof logits);
    float orig[T * E];
    memcpy(orig, logits, sizeof logits);
    moec_route_softmax_topk(logits, T, E, K, 1, ids, wn);
    moec_route_softmax_topk(l2, T, E, K, 0, ids2, w);
    for (int t = 0; t < T; t++) {
        const float *z = orig + t * E;
        /* the k largest logits, by brute force */
        for (int j = 0; j < K; j++) {
            int e = ids[t * K + j], rank = 0;
            for (int f = 0; f < E; f++) rank += z[f] > z[e];
            CHECK(rank == j, "token %d slot %d has rank %d", t, j, rank);
            CHECK(ids2[t * K + j] == e, "renorm changed the selection");
        }
        /* softmax over the top-k logits */
        double mx = z[ids[t * K]], s = 0, sall = 0;
        for (int j = 0; j < K; j++) s += exp(z[ids[t * K + j]] - mx);
        for (int f = 0; f < E; f++) sall += exp(z[f] - mx);
        for (int j = 0; j < K; j++) {
            double want = exp(z[ids[t * K + j]] - mx) / s, want_p = exp(z[ids[t * K + j]] - mx) / sall;
            CHECK(fabs(wn[t * K + j] - want) <= 1e-6, "renorm weight %g vs %g", wn[t * K + j], want);
            CHECK(fabs(w[t * K + j] - want_p) <= 1e-6, "plain weight %g vs %g", w[t * K + j], want_p);
        }
    }
    /* ties: all-equal logits pick experts 0..k-1 in order, weights 1/E (plain) */
    float zeros[E] = {0};
    int32_t tid[K];
    float tw[K];
    moec_route_softmax_topk(zeros, 1, E, K, 0, tid, tw);
    for (int j = 0; j < K; j++) {
        CHECK(tid[j] == j, "tie order: slot %d got expert %d", j, tid[j]);
        CHECK(fabsf(tw[j] - 1.f / E) <= 1e-7, "uniform weight %g", tw[j]);
    }
}

static void test_dispatch(void) {
    enum { T = 7, K = 2, E = 5 };
    /* expert 0 gets every token (slot 0), expert 3 gets none */
    int32_t ids[T * K] = {0, 1, 0, 2, 0, 4, 0, 1, 0, 2, 0, 4, 0, 1};
    int32_t counts[E], offsets[E + 1], row_src[T * K], row_of[T * K];
    moec_dispatch d = {counts, offsets, row_src, row_of};
    moec_dispatch_build(&d, ids, T, K, E);
    CHECK(counts[0] == T && counts[3] == 0 && counts[1] == 3 && counts[2] == 2 && counts[4] == 2, "counts");
    CHECK(offsets[0] == 0 && offsets[E] == T * K, "offsets ends");
    for (int e = 0; e < E; e++) {
        CHECK(offsets[e + 1] - offsets[e] == counts[e], "offsets/counts of %d", e);
        for (int r = offsets[e]; r < offsets[e + 1]; r++) {
            CHECK(ids[row_src[r]] == e, "row %d in the block of expert %d holds expert %d", r, e, ids[row_src[r]]);
            if (r > offsets[e]) CHECK(row_src[r] > row_src[r - 1], "not stable in token order");
        }
    }
    for (int a = 0; a < T * K; a++) CHECK(row_src[row_of[a]] == a, "row_of is not the inverse at %d", a);
}

static void naive_ffn(float *out, const float *x, const float *g, const float *u, const float *dw, int d, int ff) {
    float *h = malloc((size_t)ff * 4);
    for (int i = 0; i < ff; i++) {
        double a = 0, b = 0;
        for (int k = 0; k < d; k++) {
            a += (double)g[i * d + k] * x[k];
            b += (double)u[i * d + k] * x[k];
        }
        h[i] = (float)(a / (1 + exp(-a)) * b);
    }
    for (int o = 0; o < d; o++) {
        double s = 0;
        for (int i = 0; i < ff; i++) s += (double)dw[o * ff + i] * h[i];
        out[o] = (float)s;
    }
    free(h);
}

static void test_grouped(void) {
    enum { d = 24, ff = 70, E = 4, R = 9 }; /* ff > 64 so experts span two work slices */
    float *wg[E], *wu[E], *wd[E];
    moec_ffn ffn[E];
    const moec_ffn *ptrs[E];
    for (int e = 0; e < E; e++) {
        wg[e] = malloc(ff * d * 4);
        wu[e] = malloc(ff * d * 4);
        wd[e] = malloc(ff * d * 4);
        for (int i = 0; i < ff * d; i++) {
            wg[e][i] = 0.3f * frand();
            wu[e][i] = 0.3f * frand();
            wd[e][i] = 0.3f * frand();
        }
        ffn[e].gate = (moec_mat){wg[e], MOEC_DTYPE_F32, ff, d};
        ffn[e].up = (moec_mat){wu[e], MOEC_DTYPE_F32, ff, d};
        ffn[e].down = (moec_mat){wd[e], MOEC_DTYPE_F32, d, ff};
        ptrs[e] = &ffn[e];
    }
    int32_t off[E + 1] = {0, 3, 3, 8, 9}; /* expert 1 empty */
    float x[R * d], y[R * d], want[d], hg[R * ff], hu[R * ff];
    int32_t items[E + 2];
    for (int i = 0; i < R * d; i++) x[i] = frand();
    moec_ffn_grouped(y, x, ptrs, off, E, d, ff, hg, hu, items);
    double worst = 0;
    for (int e = 0; e < E; e++)
        for (int r = off[e]; r < off[e + 1]; r++) {
            naive_ffn(want, x + r * d, wg[e], wu[e], wd[e], d, ff);
            for (int o = 0; o < d; o++) worst = fmax(worst, fabs(want[o] - y[r * d + o]) / (fabs(want[o]) + 1e-3));
        }
    CHECK(worst <= 1e-4, "grouped ffn rel err %g", worst);
    for (int e = 0; e < E; e++) {
        free(wg[e]);
        free(wu[e]);
        free(wd[e]);
    }
}

int main(void) {
    test_router();
    test_dispatch();
    test_grouped();
    return test_finish("test_moe");
}
