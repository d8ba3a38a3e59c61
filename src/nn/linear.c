/* linear.c — see linear.h. The products are nn/gemm.c's: packed, blocked, parallel over moec's
 * pool, and the same bits whatever the thread count or SIMD family. */
#include "nn/linear.h"

#include "core/threads.h"

#include "nn/gemm.h"
#include <stdatomic.h>
#include <string.h>

static _Atomic int g_precision; /* moec_matmul_precision */

moec_matmul_precision moec_matmul_precision_set(moec_matmul_precision p) {
    return (moec_matmul_precision)atomic_exchange(&g_precision, (int)p);
}

moec_matmul_precision moec_matmul_precision_get(void) { return (moec_matmul_precision)atomic_load(&g_precision); }

moec_gemm_fn moec_matmul_gemm(void) {
    return atomic_load_explicit(&g_precision, memory_order_relaxed) ? moec_gemm_bf16 : moec_gemm;
}

void moec_linear_forward(float *y, int ldy, const float *x, int ldx, const float *W, const float *b, int T, int K,
                         int N) {
    if (T <= 0 || N <= 0) return;
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * ldy, b, (size_t)N * sizeof(float));
    moec_matmul_gemm()(MOEC_NO_TRANS, MOEC_TRANS, T, N, K, 1.f, x, ldx, W, K, b ? 1.f : 0.f, y, ldy);
}

void moec_linear_backward(float *dx, int lddx, float *dW, float *db, const float *dy, int lddy, const float *x,
                          int ldx, const float *W, int T, int K, int N) {
    if (T <= 0 || N <= 0) return;
    const moec_gemm_fn gemm = moec_matmul_gemm();
    if (dx) gemm(MOEC_NO_TRANS, MOEC_NO_TRANS, T, K, N, 1.f, dy, lddy, W, K, 1.f, dx, lddx);
    if (dW) gemm(MOEC_TRANS, MOEC_NO_TRANS, N, K, T, 1.f, dy, lddy, x, ldx, 1.f, dW, K);
    if (db)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) db[n] += dy[(size_t)t * lddy + n];
}

/* Rows from which moec_gemm beats the register-tiled kernel on F32 weights (prefill/training). */
#define SGEMM_MIN_ROWS 16

typedef struct {
    float *y;
    int ldy, ldx, T;
    const float *x, *b;
    const moec_mat *W;
} rows_job;

static void rows_task(void *p, int64_t n0, int64_t n1, int tid) {
    const rows_job *j = p;
    (void)tid;
    moec_matmul_rows(j->y, j->ldy, j->x, j->ldx, j->W, j->b, j->T, n0, n1);
}

void moec_linear(float *y, int ldy, const float *x, int ldx, const moec_mat *W, const float *b, int T) {
    if (T <= 0) return;
    /* (in bf16 precision every F32 product goes through moec_linear_forward, as the backward's do) */
    if (W->dtype == MOEC_DTYPE_F32 && (T >= SGEMM_MIN_ROWS || moec_matmul_precision_get() == MOEC_MATMUL_BF16)) {
        moec_linear_forward(y, ldy, x, ldx, (const float *)W->data, b, T, (int)W->cols, (int)W->rows);
        return;
    }
    if (ldy == W->rows && ldx == W->cols) {
        moec_matmul(y, x, W, b, T);
        return;
    }
    rows_job j = {y, ldy, ldx, T, x, b, W};
    moec_parallel_range(W->rows, 64, rows_task, &j);
}
