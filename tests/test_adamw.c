/* test_adamw.c — the optimizer's SIMD loops (every family this CPU has; the others are skipped
 * with a message):
 *   - moec_adamw_update gives the bits of the scalar formula, torch's single-tensor AdamW
 *     operation by operation (train/optim.c) on g · gscale (torch's clip g.mul_(coef) first), on
 *     lengths with every tail, with and without weight decay and clipping, at a first and a late
 *     step; moments and weights all compared;
 *   - moec_grad_norm gives the same bits in every family and at 1 and 2 threads, within 1e-12 of
 *     a float64 sum in index order, and is non-finite when one gradient is; moec_clip_coef is
 *     torch's factor. */
#include "core/threads.h"
#include "core/cpu.h"
#include "train/optim.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void check_grad_norm(void) {
    static const size_t lens[] = {0, 1, 15, 16, 17, 65535, 65536, 65537, 1000003};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        const size_t n = lens[li];
        float *g = malloc((n ? n : 1) * 4);
        double ref = 0.0;
        for (size_t i = 0; i < n; i++) {
            g[i] = frand() * (i % 11 ? 1e-3f : 30.f);
            ref += (double)g[i] * g[i];
        }
        ref = sqrt(ref);
        moec_threads_set(1);
        const double oracle = moec_grad_norm_isa(MOEC_ISA_SCALAR, g, n);
        CHECK(fabs(oracle - ref) <= 1e-12 * ref, "grad norm n=%zu: %.17g, float64 in order %.17g", n, oracle, ref);
        for (int isa = 0; isa < MOEC_ISA_COUNT; isa++) {
            if (!moec_cpu_has_isa((moec_isa)isa)) continue;
            for (int th = 1; th <= 2; th++) {
                moec_threads_set(th);
                const double v = moec_grad_norm_isa((moec_isa)isa, g, n);
                CHECK(!memcmp(&v, &oracle, sizeof v), "grad norm n=%zu %s %d threads: %.17g, scalar %.17g", n,
                      moec_isa_name((moec_isa)isa), th, v, oracle);
            }
        }
        if (n > 20) {
            g[n / 2] = NAN;
            CHECK(!isfinite(moec_grad_norm(g, n)), "grad norm n=%zu with a NaN is finite", n);
            g[n / 2] = INFINITY;
            CHECK(!isfinite(moec_grad_norm(g, n)), "grad norm n=%zu with an inf is finite", n);
        }
        free(g);
    }
    moec_threads_set(0);
    CHECK(moec_clip_coef(10.0, 1.f) == (float)(1.0 / (10.0 + 1e-6)), "clip factor at norm 10, max 1");
    CHECK(moec_clip_coef(0.5, 1.f) == 1.f && moec_clip_coef(10.0, 0.f) == 1.f && moec_clip_coef(NAN, 1.f) == 1.f,
          "no clipping below max_norm, with max_norm 0, or for a non-finite norm");
}

int main(void) {
    for (int isa = 0; isa < MOEC_ISA_COUNT; isa++) {
        if (!moec_cpu_has_isa((moec_isa)isa)) {
            printf("test_adamw: SKIP %s: this CPU lacks it\n", moec_isa_name((moec_isa)isa));
            continue;
        }
    const moec_adamw_cfg cfg = {0.9f, 0.95f, 1e-8f, 0.1f};
    static const size_t lens[] = {1, 7, 8, 15, 16, 17, 33, 1000, 70001};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (int decay = 0; decay < 2; decay++)
            for (int64_t t = 1; t <= 1000; t += 999)
                for (int clip = 0; clip < 2; clip++) {
                const float gscale = clip ? 0.3719f : 1.f;
                const size_t n = lens[li];
                float *w = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
                float *w2 = malloc(n * 4), *m2 = malloc(n * 4), *v2 = malloc(n * 4);
                for (size_t i = 0; i < n; i++) {
                    w[i] = frand();
                    g[i] = frand() * (i % 3 ? 1e-3f : 10.f);
                    m[i] = frand() * 0.01f;
                    v[i] = fabsf(frand()) * 1e-4f * (float)(i % 5);
                }
                memcpy(w2, w, n * 4);
                memcpy(m2, m, n * 4);
                memcpy(v2, v, n * 4);
                const float lr = 3e-4f;
                moec_adamw_update_isa((moec_isa)isa, w, g, gscale, m, v, n, t, lr, decay, &cfg);
                /* the formula, as optim.c states it */
                const double bc1 = 1.0 - pow(cfg.beta1, (double)t), bc2 = 1.0 - pow(cfg.beta2, (double)t);
                const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
                const float shrink = decay ? 1.f - lr * cfg.weight_decay : 1.f;
                int same = 1;
                for (size_t i = 0; i < n; i++) {
                    const float gi = g[i] * gscale;
                    float p = w2[i] * shrink;
                    float mi = m2[i] * cfg.beta1 + gi * (1.f - cfg.beta1);
                    float vi = v2[i] * cfg.beta2 + (1.f - cfg.beta2) * gi * gi;
                    float denom = sqrtf(vi) / bc2_sqrt + cfg.eps;
                    float wi = p - step_size * (mi / denom);
                    same &= !memcmp(&wi, &w[i], 4) && !memcmp(&mi, &m[i], 4) && !memcmp(&vi, &v[i], 4);
                }
                CHECK(same, "%s n=%zu decay=%d t=%lld gscale=%g: the scalar formula's bits", moec_isa_name((moec_isa)isa),
                      n, decay, (long long)t, gscale);
                free(w); free(g); free(m); free(v); free(w2); free(m2); free(v2);
            }
    }
    check_grad_norm();
    return test_finish("test_adamw");
}
