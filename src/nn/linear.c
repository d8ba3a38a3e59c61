/* linear.c — see linear.h. OpenBLAS sgemm does the arithmetic on one thread (core/threads.c
 * holds it there); big products are sliced over moec's own pool, so there is one pool. */
#include "nn/linear.h"

#include "core/threads.h"

#include <cblas.h>
#include <string.h>

/* Below this many multiply-adds one sgemm call is cheaper than waking threads. */
#define SLICE_MIN_WORK (1 << 18)

typedef struct {
    enum CBLAS_TRANSPOSE ta, tb;
    int M, N, K, lda, ldb, ldc, by_rows;
    float alpha, beta;
    const float *A, *B;
    float *C;
} sgemm_job;

static void sgemm_slice(void *p, int64_t i0, int64_t i1, int tid) {
    const sgemm_job *j = p;
    (void)tid;
    const int n = (int)(i1 - i0);
    if (j->by_rows) { /* rows i0..i1 of C come from rows of op(A) */
        const float *A = j->A + (j->ta == CblasNoTrans ? (size_t)i0 * j->lda : (size_t)i0);
        cblas_sgemm(CblasRowMajor, j->ta, j->tb, n, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
                    j->C + (size_t)i0 * j->ldc, j->ldc);
    } else { /* columns i0..i1 of C come from columns of op(B) */
        const float *B = j->B + (j->tb == CblasNoTrans ? (size_t)i0 : (size_t)i0 * j->ldb);
        cblas_sgemm(CblasRowMajor, j->ta, j->tb, j->M, n, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta,
                    j->C + i0, j->ldc);
    }
}

/* C[M, N] = alpha op(A) op(B) + beta C, row-major, sliced along C's longer side into at most 8
 * slices of a size fixed by the shape (not the thread count): each element is one sgemm's
 * dot product whatever the pool, so results do not depend on the thread count. */
static void sgemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    sgemm_job j = {ta, tb, M, N, K, lda, ldb, ldc, M >= N, alpha, beta, A, B, C};
    const int64_t len = j.by_rows ? M : N;
    int64_t grain = len;
    if ((int64_t)M * N * K >= SLICE_MIN_WORK) {
        grain = ((len + 7) / 8 + 15) / 16 * 16;
        if (grain < 64) grain = 64;
    }
    moec_parallel_range(len, grain, sgemm_slice, &j);
}

void moec_linear_forward(float *y, int ldy, const float *x, int ldx, const float *W, const float *b, int T, int K,
                         int N) {
    if (T <= 0 || N <= 0) return;
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * ldy, b, (size_t)N * sizeof(float));
    sgemm(CblasNoTrans, CblasTrans, T, N, K, 1.f, x, ldx, W, K, b ? 1.f : 0.f, y, ldy);
}

void moec_linear_backward(float *dx, int lddx, float *dW, float *db, const float *dy, int lddy, const float *x,
                          int ldx, const float *W, int T, int K, int N) {
    if (T <= 0 || N <= 0) return;
    if (dx) sgemm(CblasNoTrans, CblasNoTrans, T, K, N, 1.f, dy, lddy, W, K, 1.f, dx, lddx);
    if (dW) sgemm(CblasTrans, CblasNoTrans, N, K, T, 1.f, dy, lddy, x, ldx, 1.f, dW, K);
    if (db)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) db[n] += dy[(size_t)t * lddy + n];
}

/* Rows from which sgemm beats the register-tiled kernel on F32 weights (prefill/training). */
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
    if (W->dtype == MOEC_DTYPE_F32 && T >= SGEMM_MIN_ROWS) {
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
