/* test_moe.c — the grouped expert stage (routers: test_routers.c; the MoE layer: test_moe_layer.c):
 *  - moec_ffn_grouped equals per-row SwiGLU FFNs computed naively (1e-5 relative). */
#include "moe/experts.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

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
    test_grouped();
    return test_finish("test_moe");
}
