/* linear.c — see linear.h. sgemm does the work; OpenBLAS threads it. Called from outside
 * OpenMP parallel regions. */
#include "nn/linear.h"

#include <cblas.h>
#include <string.h>

void moec_linear_forward(float *y, int ldy, const float *x, int ldx, const float *W, const float *b, int T, int K,
                         int N) {
    if (T <= 0 || N <= 0) return;
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * ldy, b, (size_t)N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.f, x, ldx, W, K, b ? 1.f : 0.f, y, ldy);
}

void moec_linear_backward(float *dx, int lddx, float *dW, float *db, const float *dy, int lddy, const float *x,
                          int ldx, const float *W, int T, int K, int N) {
    if (T <= 0 || N <= 0) return;
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, N, 1.f, dy, lddy, W, K, 1.f, dx, lddx);
    if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, T, 1.f, dy, lddy, x, ldx, 1.f, dW, K);
    if (db)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) db[n] += dy[(size_t)t * lddy + n];
}

/* Rows from which sgemm beats the register-tiled kernel on F32 weights (prefill/training). */
#define SGEMM_MIN_ROWS 16

void moec_linear(float *y, int ldy, const float *x, int ldx, const moec_mat *W, const float *b, int T) {
    if (T <= 0) return;
    if (W->dtype == MOEC_DTYPE_F32 && T >= SGEMM_MIN_ROWS) {
        moec_linear_forward(y, ldy, x, ldx, (const float *)W->data, b, T, (int)W->cols, (int)W->rows);
        return;
    }
    if (ldy == W->rows && ldx == W->cols) {
        moec_matmul(y, x, W, b, T);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t n0 = 0; n0 < W->rows; n0 += 64) {
        const int64_t n1 = n0 + 64 < W->rows ? n0 + 64 : W->rows;
        moec_matmul_rows(y, ldy, x, ldx, W, b, T, n0, n1);
    }
}
