/* test_matmul.c — every matmul kernel family this CPU has (scalar, AVX2, AVX-512; a family it
 * lacks is skipped with a message) against the scalar oracle, for all five weight formats, odd
 * shapes (K not a multiple of 8 or 16 for the float formats, an odd number of 32-blocks for the
 * quantized ones, rows not a multiple of 4, 1..70 tokens), bias, and strided row slices; the
 * oracle itself is checked against a double-precision loop over the dequantized weights.
 * Tolerances: float formats 1e-5 relative to Σ|x·w| (fp32 reassociation only). Quantized formats:
 * a family against the oracle 1e-5 relative (the integer block dots are exact, only the fp32 sum
 * of the block terms is reordered); the oracle against the exact product within the activation
 * quantization bound Σ_blocks (max|x_b| / 254) Σ|w_b| (nn/kernels/matmul_impl.h), plus 1e-5. */
#include "core/cpu.h"
#include "core/dtype.h"
#include "nn/kernels/matmul_impl.h"
#include "nn/matmul.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static uint16_t g_scale_f16[64]; /* f16 codes of k/1024, k = 1..64 (exact in f16) */

static uint16_t f16_of(float f) { /* exact values only: a search over the positive codes */
    for (uint32_t c = 0; c < 0x7c00; c++)
        if (moec_f16_to_f32((uint16_t)c) == fabsf(f)) return (uint16_t)(c | (f < 0 ? 0x8000u : 0u));
    return 0;
}

static unsigned urand(unsigned n) { return (unsigned)((frand() + 1.f) * 0.5f * (float)n) % n; }

/* Random weights of n elements (n a multiple of the block) in w, and their fp32 values in wf. */
static void make_weights(void *w, moec_dtype t, float *wf, size_t n) {
    if (t == MOEC_DTYPE_Q8_0 || t == MOEC_DTYPE_Q4_0) {
        const size_t bb = moec_dtype_info(t)->block_bytes;
        for (size_t b = 0; b < n / MOEC_QBLOCK; b++) {
            unsigned char *blk = (unsigned char *)w + b * bb;
            uint16_t d = g_scale_f16[urand(64)];
            if (urand(2)) d |= 0x8000; /* negative scales are legal in ggml files */
            memcpy(blk, &d, 2);
            /* every byte value, -128 included (ggml never writes it; a file may) */
            for (size_t i = 2; i < bb; i++) blk[i] = (unsigned char)urand(256);
        }
        moec_to_f32(wf, w, t, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        uint16_t h;
        if (t == MOEC_DTYPE_BF16) {
            h = moec_f32_to_bf16(v);
            memcpy((char *)w + 2 * i, &h, 2);
            wf[i] = moec_bf16_to_f32(h);
        } else if (t == MOEC_DTYPE_F16) {
            h = f16_of((float)(int)(v * 1024.f) / 1024.f); /* k/1024 is exact in f16 */
            memcpy((char *)w + 2 * i, &h, 2);
            wf[i] = moec_f16_to_f32(h);
        } else {
            memcpy((char *)w + 4 * i, &v, 4);
            wf[i] = v;
        }
    }
}

/* One shape: the oracle against double precision, then every family and the threaded entry
 * point against the oracle. */
static void check_shape(moec_dtype dt, int K, int N, int T) {
    const int quant = moec_dtype_info(dt)->quantized;
    void *w = malloc(moec_row_bytes(dt, K) * (size_t)N);
    float *wf = malloc((size_t)N * K * 4), *x = malloc((size_t)T * K * 4), *bias = malloc((size_t)N * 4);
    float *y = malloc((size_t)T * N * 4), *y0 = malloc((size_t)T * N * 4), *tol = malloc((size_t)T * N * 4);
    make_weights(w, dt, wf, (size_t)N * K);
    for (int i = 0; i < T * K; i++) x[i] = frand() * (i % 7 == 0 ? 4.f : 1.f); /* a few large ones per block */
    for (int i = 0; i < N; i++) bias[i] = frand();
    moec_mat W = {w, dt, N, K};
    moec_matmul_naive(y0, x, &W, bias, T);
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double ref = bias[n], mag = fabs(bias[n]), qbound = 0;
            for (int k = 0; k < K; k++) {
                ref += (double)x[t * K + k] * wf[n * K + k];
                mag += fabs((double)x[t * K + k] * wf[n * K + k]);
            }
            if (quant)
                for (int b = 0; b < K / MOEC_QBLOCK; b++) {
                    double amax = 0, wsum = 0;
                    for (int i = 0; i < MOEC_QBLOCK; i++) {
                        amax = fmax(amax, fabs(x[t * K + b * MOEC_QBLOCK + i]));
                        wsum += fabs(wf[n * K + b * MOEC_QBLOCK + i]);
                    }
                    qbound += amax / 254. * wsum;
                }
            tol[t * N + n] = (float)(1e-5 * (mag + qbound)); /* the family-vs-oracle tolerance */
            const double e = fabs(y0[t * N + n] - ref) - qbound;
            worst = fmax(worst, e / (mag + 1e-30));
        }
    CHECK(worst <= 1e-5, "oracle %s K=%d N=%d T=%d: rel err beyond the bound %.3g", moec_dtype_name(dt), K, N, T, worst);

    for (int isa = 0; isa < MOEC_ISA_COUNT; isa++) {
        if (!moec_cpu_has_isa((moec_isa)isa)) continue;
        memset(y, 0, (size_t)T * N * 4);
        moec_matmul_rows_isa((moec_isa)isa, y, N, x, K, &W, bias, T, 0, N);
        double e = 0;
        for (int i = 0; i < T * N; i++) e = fmax(e, fabs(y[i] - y0[i]) / tol[i]);
        CHECK(e <= 1, "%s %s K=%d N=%d T=%d: %.3g x the tolerance", moec_isa_name((moec_isa)isa), moec_dtype_name(dt),
              K, N, T, e);
        /* a strided slice [n0, n1) with ldo > N and ldx > K matches, and leaves the rest alone */
        if (N >= 4) {
            const int ldx = K + 3, ldo = N + 5, n0 = 1, n1 = N - 1;
            float *xs = calloc((size_t)T * ldx, 4), *ys = calloc((size_t)T * ldo, 4);
            for (int t = 0; t < T; t++) memcpy(xs + t * ldx, x + t * K, (size_t)K * 4);
            moec_matmul_rows_isa((moec_isa)isa, ys, ldo, xs, ldx, &W, bias, T, n0, n1);
            double es = 0;
            int untouched = 1;
            for (int t = 0; t < T; t++) {
                for (int n = n0; n < n1; n++) es = fmax(es, fabs(ys[t * ldo + n] - y0[t * N + n]) / tol[t * N + n]);
                untouched &= ys[t * ldo] == 0.f && ys[t * ldo + N - 1] == 0.f;
            }
            CHECK(es <= 1 && untouched, "%s strided slice %s K=%d N=%d T=%d: %.3g x the tolerance",
                  moec_isa_name((moec_isa)isa), moec_dtype_name(dt), K, N, T, es);
            free(xs);
            free(ys);
        }
    }
    /* the threaded entry point with the default family */
    moec_matmul(y, x, &W, bias, T);
    double e = 0;
    for (int i = 0; i < T * N; i++) e = fmax(e, fabs(y[i] - y0[i]) / tol[i]);
    CHECK(e <= 1, "moec_matmul %s K=%d N=%d T=%d: %.3g x the tolerance", moec_dtype_name(dt), K, N, T, e);
    free(w);
    free(wf);
    free(x);
    free(bias);
    free(y);
    free(y0);
    free(tol);
}

/* The AVX-512 and AVX2 activation quantizers equal the scalar one byte for byte: random rows,
 * rows of exact rounding ties (x * id = k + 0.5), zeros, tiny and huge values. */
static void test_quantize_x(void) {
#if defined(__x86_64__) || defined(__i386__)
    static const struct {
        moec_isa isa;
        const char *name;
        void (*fn)(moec_xq8 *, const float *, int64_t);
    } fams[] = {{MOEC_ISA_AVX512, "avx512", moec_mm_quantize_x_avx512}, {MOEC_ISA_AVX2, "avx2", moec_mm_quantize_x_avx2}};
    for (size_t f = 0; f < sizeof fams / sizeof *fams; f++) {
        if (!moec_cpu_has_isa(fams[f].isa)) {
            printf("activation quantizer %s: SKIPPED (this CPU lacks it)\n", fams[f].name);
            continue;
        }
        enum { K = 32 * 8 };
        float x[K];
        moec_xq8 a[K / 32], b[K / 32];
        int bad = 0;
        for (int rep = 0; rep < 400; rep++) {
            const float scale = rep % 4 == 0 ? 1e-30f : rep % 4 == 1 ? 1e30f : 1.f;
            for (int i = 0; i < K; i++) {
                const int blk = i / 32, j = i % 32;
                if (blk == 0) x[i] = 0.f;                                                 /* an all-zero block */
                else if (blk == 1) x[i] = j == 0 ? 127.f : (float)((j * 7 + rep) % 254 - 127) + 0.5f; /* ties (d = 1) */
                else if (blk == 2) x[i] = j == 5 ? -0.25f * 127.f : 0.25f * (float)((j * 3 + rep) % 200 - 100) + 0.125f;
                else x[i] = frand() * scale;
            }
            memset(a, 0x55, sizeof a);
            memset(b, 0x55, sizeof b);
            moec_mm_quantize_x(a, x, K);
            fams[f].fn(b, x, K);
            for (int blk = 0; blk < K / 32; blk++)
                bad += memcmp(a[blk].q, b[blk].q, 32) != 0 || a[blk].d != b[blk].d || a[blk].sum != b[blk].sum;
        }
        CHECK(bad == 0, "%s activation quantizer differs from the scalar one in %d blocks", fams[f].name, bad);
        printf("activation quantizer %s: tested\n", fams[f].name);
    }
#endif
}

int main(void) {
    test_quantize_x();
    for (int k = 1; k <= 64; k++) g_scale_f16[k - 1] = f16_of((float)k / 1024.f);
    printf("cpu: %s\n", moec_cpu_features_string());
    for (int isa = 0; isa < MOEC_ISA_COUNT; isa++)
        printf("family %s: %s\n", moec_isa_name((moec_isa)isa),
               moec_cpu_has_isa((moec_isa)isa) ? "tested" : "SKIPPED (this CPU lacks it)");
    const int Kf[] = {8, 13, 31, 64, 100}, Kq[] = {32, 96, 320};
    const int Ns[] = {1, 4, 7, 33};
    const int Ts[] = {1, 2, 3, 9, 70};
    for (int dt = 0; dt < MOEC_DTYPE_COUNT; dt++) {
        const int quant = moec_dtype_info((moec_dtype)dt)->quantized;
        const int *Ks = quant ? Kq : Kf;
        const size_t nk = quant ? sizeof Kq / sizeof *Kq : sizeof Kf / sizeof *Kf;
        for (size_t ki = 0; ki < nk; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
                for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) check_shape((moec_dtype)dt, Ks[ki], Ns[ni], Ts[ti]);
    }
    printf("default kernel: %s\n", moec_matmul_kernel_name());
    return test_finish("test_matmul");
}
