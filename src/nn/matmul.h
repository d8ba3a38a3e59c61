/* matmul.h — y = x · Wᵀ (+ b) with W stored as in Hugging Face Linear layers: row-major
 * [out_features, in_features], in BF16, F16 or F32 (converted in registers, never copied) or in
 * the block formats Q8_0 / Q4_0 (in_features a multiple of 32; x is quantized to 8-bit blocks per
 * call, nn/kernels/matmul_impl.h), x and y in fp32. One kernel serves prefill (many rows) and decode (one row).
 * Not a general GEMM: W is always the transposed operand. */
#ifndef MOEC_NN_MATMUL_H
#define MOEC_NN_MATMUL_H

#include "core/cpu.h"
#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const void *data; /* borrowed (usually an mmap) */
    moec_dtype dtype;
    int64_t rows, cols; /* [out, in] */
} moec_mat;

/* out[t, n] = Σ_k x[t, k] · W[n, k] + bias[n], for t < T, n < W.rows. bias may be NULL.
 * Threads: tasks of output rows on the thread pool (core/threads.h). */
void moec_matmul(float *out, const float *x, const moec_mat *W, const float *bias, int T);

/* The same for one slice of output columns [n0, n1), on the calling thread only, with explicit
 * row strides (ldo for out, ldx for x, in floats): the unit of work of callers that spread many
 * matmuls over threads themselves (the MoE expert stage). */
void moec_matmul_rows(float *out, int64_t ldo, const float *x, int64_t ldx, const moec_mat *W,
                      const float *bias, int T, int64_t n0, int64_t n1);

/* Activations prepared once for quantized weights (Q8_0 / Q4_0 multiply 8-bit activation blocks):
 * a caller that multiplies the same rows by many matrices or in many slices (the expert stage)
 * quantizes them once instead of once per slice. moec_matmul does it itself. */
typedef struct moec_xq8 moec_xq8;
/* Bytes of one prepared row of K activations (K a multiple of 32). */
size_t moec_matmul_act_row_bytes(int64_t K);
/* Prepares T rows of x (ldx apart) into dst (T * moec_matmul_act_row_bytes(K) bytes, any
 * alignment of 4), row t at t * K/32 blocks. */
void moec_matmul_prepare_act(moec_xq8 *dst, const float *x, int64_t ldx, int64_t K, int T);
/* moec_matmul_rows with x's rows already prepared (xq; used only when W is quantized, may be NULL). */
void moec_matmul_rows_prepared(float *out, int64_t ldo, const float *x, int64_t ldx, const moec_xq8 *xq,
                               const moec_mat *W, const float *bias, int T, int64_t n0, int64_t n1);

/* The same with the kernel family isa (which this CPU must have) instead of the one moec_cpu_isa()
 * picks: how tests compare every family with the scalar oracle in one process. */
void moec_matmul_rows_isa(moec_isa isa, float *out, int64_t ldo, const float *x, int64_t ldx, const moec_mat *W,
                          const float *bias, int T, int64_t n0, int64_t n1);

/* Which kernel family is in use ("avx512", "avx2" or "scalar"; MOEC_ISA forces one, core/cpu.h). */
const char *moec_matmul_kernel_name(void);

/* Scalar oracle, for tests. */
void moec_matmul_naive(float *out, const float *x, const moec_mat *W, const float *bias, int T);

#endif
