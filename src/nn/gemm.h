/* gemm.h — moec's fp32 GEMM (training's linear layers and attention):
 *   C[M, N] = alpha · op(A)[M, K] · op(B)[K, N] + beta · C     (row-major, op = as is or transposed)
 * the semantics of cblas_sgemm(CblasRowMajor, ...). beta = 0 never reads C (it may hold NaN).
 *
 * Why not OpenBLAS: sliced over moec's pool, every slice of an sgemm packs the shared operand
 * again (a 256-row expert GEMM packed its 1 MB weight 4 times), and results had to be kept
 * thread-count independent by fixing the slices. Here op(B) is packed once per call into the
 * caller's scratch, shared by every thread; each task packs only its own rows of op(A).
 *
 * Numerics: each C element is a sum over K in chunks of one fixed length (the chunk's dot
 * product in one fp32 accumulator by fma, k ascending, then C = beta C + alpha acc for the first
 * chunk and C += alpha acc for the others, each one fma). That order depends on K only, never on
 * the tiling, the thread count, the SIMD family or which thread computes what: results are
 * bit-identical at any thread count and on any x86 CPU. tests/test_gemm.c checks every family
 * against the scalar oracle bit for bit and the oracle against a float64 reference.
 *
 * Calls may nest (a call inside a pool task runs on that thread alone) and come from several
 * threads. Without memory for the packed operands it packs one register tile at a time on the
 * stack: slower, the same bits. */
#ifndef MOEC_NN_GEMM_H
#define MOEC_NN_GEMM_H

#include "core/cpu.h"

typedef enum { MOEC_NO_TRANS = 0, MOEC_TRANS = 1 } moec_trans;

/* lda, ldb, ldc: row strides of A, B, C as stored (A is [M, K] or, transposed, [K, M]). */
void moec_gemm(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* For tests and benchmarks: the same with kernel family isa (the CPU must have it), and with
 * the packed-operand scratch refused (no_scratch = 1: the on-stack path). */
void moec_gemm_isa(moec_isa isa, int no_scratch, moec_trans ta, moec_trans tb, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* The K chunk (the same for every family; sums are in k order within a chunk). */
int moec_gemm_kc(moec_isa isa);

/* The same product with both operands rounded to bf16 (nearest even) and fp32 accumulation:
 * mixed-precision training's matrix products. With AMX (moec_gemm_bf16_has_amx) on tiles:
 * each C element one fp32 sum over all of K, k ascending (denormal inputs and results flushed
 * to zero, as tdpbf16ps does), independent of the thread count; without, the rounded operands
 * through moec_gemm. The two agree to fp32 summation error, not bit for bit. */
void moec_gemm_bf16(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc);
int moec_gemm_bf16_has_amx(void);
/* For tests and benchmarks: amx = 1 forces the tile path (moec_gemm_bf16_has_amx() must be 1),
 * 0 the rounded-copy one. */
void moec_gemm_bf16_impl(int amx, moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc);

#endif
