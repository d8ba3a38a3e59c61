/* test_gemm_bf16.c — moec_gemm_bf16 (nn/gemm.h), the AMX tile path (skipped with a message on a
 * CPU without AMX) and the rounded-copy path:
 *  - all four transpose combinations, shapes with every kind of edge (1, tile and block tails,
 *    K not a multiple of 32, several 32-row blocks), row strides larger than the rows, alpha and
 *    beta cases; against a float64 product of the bf16-rounded operands within
 *    (K + 2) · 2^-23 · (|alpha| Σ|a||b| + |beta c|) per element (fp32 summation error);
 *  - the result is not the fp32 product's: rounding to bf16 is really applied (≥ 1e-4 apart);
 *  - beta = 0 never reads C (C starts as NaN), the padding of C's rows is never written;
 *  - the AMX path is bit-identical at 1 and 2 threads. */
#include "core/dtype.h"
#include "core/threads.h"
#include "nn/gemm.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static float *fill(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static double r16(float x) { return (double)moec_bf16_to_f32(moec_f32_to_bf16(x)); }

/* max over elements of |got - ref| / bound; the padding of C's rows must be untouched */
static double check_one(int amx, moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, float beta,
                        double *vs_fp32) {
    const int pad = 3, lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    float *A = fill((size_t)(ta ? K : M) * lda), *B = fill((size_t)(tb ? N : K) * ldb), *C = fill((size_t)M * ldc);
    float *C0 = malloc((size_t)M * ldc * sizeof(float));
    if (beta == 0.f)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = NAN;
    memcpy(C0, C, (size_t)M * ldc * sizeof(float));
    moec_gemm_bf16_impl(amx, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0, diff32 = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0, ref32 = 0;
            for (int k = 0; k < K; k++) {
                const float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                ref += r16(a) * r16(b);
                ref32 += (double)a * b;
                mag += fabs(r16(a) * r16(b));
            }
            const double c0 = beta == 0.f ? 0 : C0[(size_t)i * ldc + j];
            const double want = alpha * ref + (beta == 0.f ? 0 : beta * c0);
            const double bound = (K + 2) * 1.1920929e-7 * (fabs(alpha) * mag + fabs(beta * c0)) + 1e-30;
            const double e = fabs(C[(size_t)i * ldc + j] - want) / bound;
            if (!(e <= worst)) worst = e != e ? 1e30 : e;
            const double d = fabs(alpha * (ref - ref32));
            if (d > diff32) diff32 = d;
        }
        for (int j = N; j < ldc; j++)
            if (memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float))) worst = 1e30;
    }
    if (vs_fp32 && diff32 > *vs_fp32) *vs_fp32 = diff32;
    free(A);
    free(B);
    free(C);
    free(C0);
    return worst;
}

static void test_path(int amx) {
    static const int shapes[][3] = {{1, 1, 1},    {5, 7, 3},     {16, 16, 32},  {33, 17, 65},  {32, 32, 31},
                                    {64, 48, 100}, {130, 70, 33}, {31, 129, 257}, {256, 128, 512}};
    static const float ab[][2] = {{1.f, 0.f}, {0.5f, 1.f}, {2.f, -1.5f}};
    double vs32 = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 4; t++)
            for (size_t c = 0; c < sizeof ab / sizeof *ab; c++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const double w = check_one(amx, (moec_trans)(t & 1), (moec_trans)(t >> 1), M, N, K, ab[c][0], ab[c][1],
                                           &vs32);
                CHECK(w <= 1.0, "%s ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: error %.3g of the bound",
                      amx ? "amx" : "rounded", t & 1, t >> 1, M, N, K, (double)ab[c][0], (double)ab[c][1], w);
            }
    CHECK(vs32 > 1e-4, "%s: the operands are rounded to bf16 (largest distance to the fp32 product %.3g)",
          amx ? "amx" : "rounded", vs32);
}

static void test_threads(void) {
    const int M = 300, N = 200, K = 300;
    float *A = fill((size_t)M * K), *B = fill((size_t)N * K);
    float *C1 = calloc((size_t)M * N, sizeof(float)), *C2 = calloc((size_t)M * N, sizeof(float));
    moec_threads_set(1);
    moec_gemm_bf16_impl(1, MOEC_NO_TRANS, MOEC_TRANS, M, N, K, 1.f, A, K, B, K, 0.f, C1, N);
    moec_threads_set(2);
    moec_gemm_bf16_impl(1, MOEC_NO_TRANS, MOEC_TRANS, M, N, K, 1.f, A, K, B, K, 0.f, C2, N);
    CHECK(!memcmp(C1, C2, (size_t)M * N * sizeof(float)), "amx: the same bits at 1 and 2 threads");
    /* a product the pool splits, with tails in M, N and K, transposed A */
    double w = check_one(1, MOEC_TRANS, MOEC_NO_TRANS, 300, 70, 333, 1.f, 1.f, NULL);
    CHECK(w <= 1.0, "amx at 2 threads, TN 300 x 70 x 333: error %.3g of the bound", w);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

int main(void) {
    moec_threads_set(2);
    test_path(0);
    if (moec_gemm_bf16_has_amx()) {
        test_path(1);
        test_threads();
    } else {
        printf("test_gemm_bf16: SKIP the AMX path: this CPU (or MOEC_ISA) has no AMX-BF16 (features: %s)\n",
               moec_cpu_features_string());
    }
    return test_finish("test_gemm_bf16");
}
