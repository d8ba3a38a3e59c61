/* matmul_impl.h — what the kernel families of nn/matmul.c share (internal, not an API): the row
 * function every family implements, the 8-bit activation blocks that the quantized weight
 * formats multiply with, and per-thread scratch.
 *
 * Quantized weights (Q8_0, Q4_0) use ggml's numerics: each activation row is quantized once per
 * call to blocks of 32 int8 with one fp32 scale (d = max|x| / 127, q = round-half-even(x / d)),
 * the block dot products are exact int32, and each block adds d_x · d_w · Σ q_x q_w in fp32.
 * Every family, the scalar oracle included, uses the same activation blocks (moec_mm_quantize_x),
 * so families differ only in the fp32 summation order of the per-block terms. The activation
 * quantization error is at most d_x / 2 per element: |y - x·w| ≤ Σ_blocks (d_x / 2) Σ |w|. */
#ifndef MOEC_NN_KERNELS_MATMUL_IMPL_H
#define MOEC_NN_KERNELS_MATMUL_IMPL_H

#include "nn/matmul.h"

#include <stddef.h>
#include <stdint.h>

/* 32 activations as int8 with their scale; sum = Σ q (for the unsigned×signed VNNI dot). */
struct moec_xq8 {
    float d;
    int32_t sum;
    int8_t q[32];
};

/* One family's unit of work: out[t*N + n] for n in [n0, n1), t < T (x rows ldx apart). xq: for
 * quantized W, x's rows already as activation blocks (row t at t * K/32), or NULL: the kernel
 * quantizes them into its thread's scratch. */
typedef void (*moec_mm_rows_fn)(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W,
                                const float *bias, int T, int64_t n0, int64_t n1, const moec_xq8 *xq);

/* dst[K/32] = the blocks of x[0..K) (K a multiple of 32): the scalar oracle, and the AVX-512 and
 * AVX2 versions (bit-identical on finite input; tests/test_matmul.c checks them), which
 * moec_mm_quantize_rows uses when the kernel family is theirs. */
void moec_mm_quantize_x(moec_xq8 *dst, const float *x, int64_t K);
#if defined(__x86_64__) || defined(__i386__)
void moec_mm_quantize_x_avx512(moec_xq8 *dst, const float *x, int64_t K);
void moec_mm_quantize_x_avx2(moec_xq8 *dst, const float *x, int64_t K);
#endif

/* The T rows of x quantized into this thread's scratch, row t at [t * K/32]; NULL when out of
 * memory (the callers abort with a message: there is no slower path without scratch). */
moec_xq8 *moec_mm_quantize_rows(const float *x, int64_t ldx, int64_t K, int T);

/* Per-thread fp32 scratch of n floats, 64-byte aligned (NULL when out of memory). */
float *moec_mm_panel_scratch(size_t n);

/* The packed path for many tokens (prefill): a panel of MOEC_MM_PANEL weight rows widened to fp32
 * once and transposed, P[k * MOEC_MM_PANEL + j] = W[n + j][k] (rows j >= nr are 0); float
 * formats only; needs AVX2 (every x86 family from AVX2 up uses it). */
#define MOEC_MM_PANEL 16
#define MOEC_MM_PACKED_MIN_T 8 /* below this many tokens packing is not amortised */
void moec_mm_pack_panel(float *P, const moec_mat *W, int64_t n, int nr);

/* Element i of a float-format row (the tails of the SIMD loops). */
float moec_mm_load_scalar(const void *w, moec_dtype t, int64_t i);

void moec_mm_rows_scalar(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                         int T, int64_t n0, int64_t n1, const moec_xq8 *xq);
#if defined(__x86_64__) || defined(__i386__)
void moec_mm_rows_avx2(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                       int T, int64_t n0, int64_t n1, const moec_xq8 *xq);
void moec_mm_rows_avx512(float *out, int64_t N, const float *x, int64_t ldx, const moec_mat *W, const float *bias,
                         int T, int64_t n0, int64_t n1, const moec_xq8 *xq);
#endif

#endif
