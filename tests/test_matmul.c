/* test_matmul.c — the SIMD matmul against the scalar oracle (moec_matmul_naive, itself checked
 * against a double-precision loop) for every weight dtype, odd shapes (K not a multiple of 8,
 * rows not a multiple of 4, 1..9 tokens), bias, and strided row slices.
 * Tolerance: 1e-5 relative to Σ|x·w| (fp32 reassociation only). */
#include "core/dtype.h"
#include "nn/matmul.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static void make_weights(void *w, moec_dtype t, float *wf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        uint16_t h;
        if (t == MOEC_DTYPE_BF16) {
            h = moec_f32_to_bf16(v);
            memcpy((char *)w + 2 * i, &h, 2);
            wf[i] = moec_bf16_to_f32(h);
        } else if (t == MOEC_DTYPE_F16) {
            /* values k/1024 are exact in f16 */
            int k = (int)(v * 1024.f);
            float f = (float)k / 1024.f;
            /* encode f16 by search over the 16-bit space near the value: simple and exact */
            uint16_t best = 0;
            for (uint32_t c = 0; c < 0x7c00; c++) {
                if (moec_f16_to_f32((uint16_t)c) == fabsf(f)) {
                    best = (uint16_t)c;
                    break;
                }
            }
            if (f < 0) best |= 0x8000;
            memcpy((char *)w + 2 * i, &best, 2);
            wf[i] = moec_f16_to_f32(best);
        } else {
            memcpy((char *)w + 4 * i, &v, 4);
            wf[i] = v;
        }
    }
}

int main(void) {
    const int Ks[] = {8, 13, 64, 100};
    const int Ns[] = {1, 4, 7, 33};
    const int Ts[] = {1, 2, 3, 9, 70};
    for (int dt = 0; dt <= MOEC_DTYPE_BF16; dt++) { /* the float formats */
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
                for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
                    const int K = Ks[ki], N = Ns[ni], T = Ts[ti];
                    void *w = malloc((size_t)N * K * 4);
                    float *wf = malloc((size_t)N * K * 4), *x = malloc((size_t)T * K * 4);
                    float *bias = malloc((size_t)N * 4), *y = malloc((size_t)T * N * 4), *y0 = malloc((size_t)T * N * 4);
                    make_weights(w, (moec_dtype)dt, wf, (size_t)N * K);
                    for (int i = 0; i < T * K; i++) x[i] = frand();
                    for (int i = 0; i < N; i++) bias[i] = frand();
                    moec_mat W = {w, (moec_dtype)dt, N, K};
                    moec_matmul(y, x, &W, bias, T);
                    moec_matmul_naive(y0, x, &W, bias, T);
                    double worst = 0;
                    for (int t = 0; t < T; t++)
                        for (int n = 0; n < N; n++) {
                            double ref = bias[n], mag = fabs(bias[n]);
                            for (int k = 0; k < K; k++) {
                                ref += (double)x[t * K + k] * wf[n * K + k];
                                mag += fabs((double)x[t * K + k] * wf[n * K + k]);
                            }
                            double e1 = fabs(y[t * N + n] - ref) / (mag + 1e-30);
                            double e2 = fabs(y0[t * N + n] - ref) / (mag + 1e-30);
                            worst = fmax(worst, fmax(e1, e2));
                        }
                    CHECK(worst <= 1e-5, "dtype %s K=%d N=%d T=%d rel err %.3g", moec_dtype_name((moec_dtype)dt), K, N,
                          T, worst);
                    /* a strided slice [n0, n1) with ldo > N and ldx > K matches the full result */
                    if (N >= 4) {
                        const int ldx = K + 3, ldo = N + 5, n0 = 1, n1 = N - 1;
                        float *xs = calloc((size_t)T * ldx, 4), *ys = calloc((size_t)T * ldo, 4);
                        for (int t = 0; t < T; t++) memcpy(xs + t * ldx, x + t * K, (size_t)K * 4);
                        moec_matmul_rows(ys, ldo, xs, ldx, &W, bias, T, n0, n1);
                        double e = 0;
                        int untouched = 1;
                        for (int t = 0; t < T; t++) {
                            for (int n = n0; n < n1; n++) e = fmax(e, fabs(ys[t * ldo + n] - y[t * N + n]));
                            untouched &= ys[t * ldo] == 0.f && ys[t * ldo + N - 1] == 0.f;
                        }
                        CHECK(e <= 1e-5 && untouched, "strided slice dtype %d K=%d N=%d T=%d err %.3g", dt, K, N, T, e);
                        free(xs);
                        free(ys);
                    }
                    free(w);
                    free(wf);
                    free(x);
                    free(bias);
                    free(y);
                    free(y0);
                }
    }
    printf("kernel: %s\n", moec_matmul_kernel_name());
    return test_finish("test_matmul");
}
