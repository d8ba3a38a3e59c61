/* test_vmath.c — nn/vmath's SIMD families (every one this CPU has; the others are skipped with a
 * message) against the scalar oracle (libm expf in the formulas' order):
 *   - exp on a dense sweep of [-110, 95] and on the special values: within 2 ulp of expf where
 *     expf >= FLT_MIN, within FLT_MIN absolute below (subnormals), inf / 0 / NaN where expf is;
 *   - the returned sum is the float64 sum of the values it wrote (to 1e-12), every tail length;
 *   - SwiGLU forward and backward (accumulating and not) within a few fp32 roundings of the oracle,
 *     gates up to ±100 included, every tail length; the in-place backward (outputs aliasing the
 *     inputs, as moe.c calls it) gives the bits of the out-of-place one. */
#include "nn/vmath.h"
#include "test_util.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

static int64_t ulp_dist(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

static void check_exp(moec_isa isa) {
    const char *name = moec_isa_name(isa);
    const int64_t n = 2000003; /* odd: a tail for every family */
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = -110.f + 205.f * (float)((double)i / (double)(n - 1));
    moec_vexp_sum_isa(isa, y, x, 0.f, n);
    int64_t worst = 0, bad = 0;
    float worst_x = 0.f;
    for (int64_t i = 0; i < n; i++) {
        const float r = expf(x[i]);
        int ok;
        if (isinf(r)) ok = isinf(y[i]) && y[i] > 0;
        else if (r < FLT_MIN) ok = fabsf(y[i] - r) <= FLT_MIN;
        else {
            const int64_t d = ulp_dist(y[i], r);
            if (d > worst) worst = d, worst_x = x[i];
            ok = d <= 2;
        }
        bad += !ok;
    }
    CHECK(bad == 0, "%s: %lld of %lld exp values out of bounds (worst %lld ulp at x = %.9g)", name, (long long)bad,
          (long long)n, (long long)worst, worst_x);
    printf("test_vmath: %s exp: worst %lld ulp (at x = %.9g) over %lld points\n", name, (long long)worst, worst_x,
           (long long)n);

    /* special values, and a shift (softmax rows subtract their max) */
    const float sp0[] = {-INFINITY, INFINITY, NAN, 0.f, -0.f, 88.72f, 88.73f, -87.33f, -103.9f, -104.5f, 1e30f, -1e30f};
    const int n0 = (int)(sizeof sp0 / sizeof *sp0), ns = 3 * n0 + 5; /* in full vectors and in the tail */
    float sp[64], ys[64];
    for (int i = 0; i < ns; i++) sp[i] = sp0[i % n0];
    moec_vexp_sum_isa(isa, ys, sp, 0.f, ns);
    CHECK(isnan(moec_vexp_sum_isa(isa, NULL, sp, 0.f, ns)), "%s: a sum over a NaN is not NaN", name);
    for (int i = 0; i < ns; i++) {
        const float r = expf(sp[i]);
        const int ok = isnan(r) ? isnan(ys[i])
                       : isinf(r) ? isinf(ys[i]) && ys[i] > 0
                       : r < FLT_MIN ? fabsf(ys[i] - r) <= FLT_MIN && ys[i] >= 0.f
                                     : ulp_dist(ys[i], r) <= 2;
        CHECK(ok, "%s: exp(%g) = %g, expf gives %g", name, sp[i], ys[i], r);
    }
    const float row[5] = {3.f, -INFINITY, 1.f, 2.5f, -20.f};
    float yr[5];
    const double s = moec_vexp_sum_isa(isa, yr, row, 3.f, 5);
    double ref = 0.0;
    for (int i = 0; i < 5; i++) ref += exp((double)row[i] - 3.0);
    CHECK(fabs(s - ref) <= 1e-6 * ref && yr[1] == 0.f && yr[0] == 1.f, "%s: shifted row: sum %.9g, float64 %.9g",
          name, s, ref);
    const double s_only = moec_vexp_sum_isa(isa, NULL, row, 3.f, 5);
    CHECK(s_only == s, "%s: the sum without outputs (y = NULL) %.17g differs from %.17g", name, s_only, s);
    /* a row of -inf only (a fully masked row's max): NaN as expf(-inf - -inf), padding lanes too */
    const float ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK(isnan(moec_vexp_sum_isa(isa, yr, ninf, -INFINITY, 3)), "%s: exp(-inf - -inf) sums to non-NaN", name);

    /* the sum, every tail, in place (y aliasing x) */
    static const int64_t lens[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 255, 256, 257, 8192, 100003};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        const int64_t m = lens[li];
        float *v = malloc((size_t)m * 4), *w = malloc((size_t)m * 4);
        for (int64_t i = 0; i < m; i++) v[i] = w[i] = 8.f * frand();
        const float shift = 2.f;
        const double sv = moec_vexp_sum_isa(isa, v, v, shift, m);
        double sd = 0.0;
        int64_t off = 0;
        for (int64_t i = 0; i < m; i++) {
            sd += (double)v[i];
            off += ulp_dist(v[i], expf(w[i] - shift)) > 2;
        }
        /* float64 sums of the same floats: they differ only by float64 rounding */
        CHECK(off == 0 && fabs(sv - sd) <= 1e-12 * sd, "%s: n %lld: %lld values off, sum %.17g, float64 %.17g", name,
              (long long)m, (long long)off, sv, sd);
        free(v);
        free(w);
    }
    free(x);
    free(y);
}

static void check_swiglu(moec_isa isa) {
    const char *name = moec_isa_name(isa);
    static const int64_t lens[] = {1, 3, 7, 8, 9, 15, 16, 17, 33, 1000, 4099};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        const int64_t n = lens[li];
        const size_t bytes = (size_t)n * 4;
        float *g = malloc(bytes), *u = malloc(bytes), *d = malloc(bytes);
        float *o = malloc(bytes), *oref = malloc(bytes);
        float *dg = malloc(bytes), *du = malloc(bytes), *dgr = malloc(bytes), *dur = malloc(bytes);
        float *dg0 = malloc(bytes), *du0 = malloc(bytes);
        for (int64_t i = 0; i < n; i++) {
            g[i] = frand() * (i % 7 == 3 ? 100.f : 6.f);
            u[i] = frand() * 2.f;
            d[i] = frand();
            dg0[i] = frand();
            du0[i] = frand();
        }
        moec_vswiglu_isa(isa, o, g, u, n);
        moec_vswiglu_isa(MOEC_ISA_SCALAR, oref, g, u, n);
        for (int pass = 0; pass < 2; pass++) { /* 0: overwrite, 1: accumulate onto dg0 / du0 */
            memcpy(dg, dg0, bytes);
            memcpy(du, du0, bytes);
            memcpy(dgr, dg0, bytes);
            memcpy(dur, du0, bytes);
            moec_vswiglu_back_isa(isa, dg, du, d, g, u, n, pass);
            moec_vswiglu_back_isa(MOEC_ISA_SCALAR, dgr, dur, d, g, u, n, pass);
            int64_t off = 0;
            for (int64_t i = 0; i < n; i++) {
                /* scales of the terms: 1 - σ(g) cancels in fp32 for large g, alike in both */
                const float base_g = pass ? fabsf(dg0[i]) : 0.f, base_u = pass ? fabsf(du0[i]) : 0.f;
                const float sg = fabsf(d[i] * u[i]) * (1.f + fabsf(g[i])) + base_g;
                const float su = fabsf(d[i] * g[i]) + base_u;
                off += fabsf(dg[i] - dgr[i]) > 4e-7f * sg + 1e-30f;
                off += fabsf(du[i] - dur[i]) > 4e-7f * su + 1e-30f;
                if (pass == 0) off += fabsf(o[i] - oref[i]) > 4e-7f * fabsf(g[i] * u[i]) + 1e-30f;
            }
            CHECK(off == 0, "%s: swiglu n %lld (%s): %lld values off the oracle", name, (long long)n,
                  pass ? "accumulate" : "overwrite", (long long)off);
        }
        /* in place: gate ← dgate, up ← dup, as moe.c's expert backward */
        float *gi = malloc(bytes), *ui = malloc(bytes);
        memcpy(gi, g, bytes);
        memcpy(ui, u, bytes);
        moec_vswiglu_back_isa(isa, dg, du, d, g, u, n, 0);
        moec_vswiglu_back_isa(isa, gi, ui, d, gi, ui, n, 0);
        CHECK(!memcmp(gi, dg, bytes) && !memcmp(ui, du, bytes), "%s: in-place swiglu backward n %lld differs", name,
              (long long)n);
        memcpy(gi, g, bytes);
        moec_vswiglu_isa(isa, gi, gi, u, n);
        CHECK(!memcmp(gi, o, bytes), "%s: in-place swiglu n %lld differs", name, (long long)n);
        memcpy(ui, u, bytes);
        moec_vswiglu_isa(isa, ui, g, ui, n);
        CHECK(!memcmp(ui, o, bytes), "%s: swiglu into up, n %lld, differs", name, (long long)n);
        free(gi);
        free(ui);
        free(g);
        free(u);
        free(d);
        free(o);
        free(oref);
        free(dg);
        free(du);
        free(dgr);
        free(dur);
        free(dg0);
        free(du0);
    }
}

/* Non-finite and huge gates give what the oracle gives (silu(+inf) = inf, silu(-inf) = -inf / inf = NaN,
 * NaN for NaN; the backward alike). */
static void check_swiglu_special(moec_isa isa) {
    const float g0[] = {INFINITY, -INFINITY, NAN, 0.f, -0.f, 1e30f, -1e30f, 100.f, -100.f};
    const int n0 = (int)(sizeof g0 / sizeof *g0), n = 3 * n0 + 5;
    float g[64], u[64], d[64], o[64], r[64], dg[64], du[64], dgr[64], dur[64];
    for (int i = 0; i < n; i++) g[i] = g0[i % n0], u[i] = 0.5f + (float)(i % 3), d[i] = 1.f - 0.25f * (float)(i % 4);
    moec_vswiglu_isa(isa, o, g, u, n);
    moec_vswiglu_isa(MOEC_ISA_SCALAR, r, g, u, n);
    moec_vswiglu_back_isa(isa, dg, du, d, g, u, n, 0);
    moec_vswiglu_back_isa(MOEC_ISA_SCALAR, dgr, dur, d, g, u, n, 0);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const float a[3] = {o[i], dg[i], du[i]}, b[3] = {r[i], dgr[i], dur[i]};
        for (int k = 0; k < 3; k++)
            bad += isnan(b[k]) ? !isnan(a[k]) : isinf(b[k]) ? a[k] != b[k] : fabsf(a[k] - b[k]) > 1e-6f * (1.f + fabsf(b[k]));
    }
    CHECK(!bad, "%s: swiglu with non-finite and huge gates: %d values unlike the oracle", moec_isa_name(isa), bad);
}

int main(void) {
    for (int isa = 0; isa < MOEC_ISA_COUNT; isa++) {
        if (!moec_cpu_has_isa((moec_isa)isa)) {
            printf("test_vmath: SKIP %s: this CPU lacks it\n", moec_isa_name((moec_isa)isa));
            continue;
        }
        check_exp((moec_isa)isa);
        check_swiglu((moec_isa)isa);
        check_swiglu_special((moec_isa)isa);
    }
    return test_finish("test_vmath");
}
