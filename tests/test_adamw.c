/* test_adamw.c — moec_adamw_update's SIMD loops (every family this CPU has; the others are
 * skipped with a message) give the bits of the scalar formula, torch's single-tensor AdamW
 * operation by operation (train/optim.c), on lengths with every tail, with and without weight
 * decay, at a first and a late step; moments and weights all compared. */
#include "core/cpu.h"
#include "train/optim.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
            for (int64_t t = 1; t <= 1000; t += 999) {
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
                moec_adamw_update_isa((moec_isa)isa, w, g, m, v, n, t, lr, decay, &cfg);
                /* the formula, as optim.c states it */
                const double bc1 = 1.0 - pow(cfg.beta1, (double)t), bc2 = 1.0 - pow(cfg.beta2, (double)t);
                const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
                const float shrink = decay ? 1.f - lr * cfg.weight_decay : 1.f;
                int same = 1;
                for (size_t i = 0; i < n; i++) {
                    float p = w2[i] * shrink;
                    float mi = m2[i] * cfg.beta1 + g[i] * (1.f - cfg.beta1);
                    float vi = v2[i] * cfg.beta2 + (1.f - cfg.beta2) * g[i] * g[i];
                    float denom = sqrtf(vi) / bc2_sqrt + cfg.eps;
                    float wi = p - step_size * (mi / denom);
                    same &= !memcmp(&wi, &w[i], 4) && !memcmp(&mi, &m[i], 4) && !memcmp(&vi, &v[i], 4);
                }
                CHECK(same, "%s n=%zu decay=%d t=%lld: the scalar formula's bits", moec_isa_name((moec_isa)isa), n, decay,
                      (long long)t);
                free(w); free(g); free(m); free(v); free(w2); free(m2); free(v2);
            }
    }
    return test_finish("test_adamw");
}
