/* linear.h — fp32 linear layer for training, forward and backward, on nn/gemm.h (moec_gemm):
 *   y = x · Wᵀ + b          x [T, K], W [N, K] (Hugging Face Linear layout), b [N] or NULL
 *   dx += dy · W            dW += dyᵀ · x            db += Σ_t dy
 * Backward accumulates (+=) so that shared weights and gradient accumulation just work.
 * Inference on stored bf16/f16 weights uses nn/matmul.h instead. */
#ifndef MOEC_NN_LINEAR_H
#define MOEC_NN_LINEAR_H

#include "nn/gemm.h"

/* Precision of the products of moec_linear_forward and moec_linear_backward (and so of
 * moec_linear on F32 weights: training): MOEC_MATMUL_FP32 (moec_gemm, the default) or
 * MOEC_MATMUL_BF16 (moec_gemm_bf16: operands rounded to bf16, fp32 accumulation; mixed-precision
 * training). Process-wide: the trainer sets it for a run (`moec train --matmul bf16`) and
 * restores it after; set it only while no product runs. Routers and MoE++'s constant-expert
 * gates stay fp32 whatever it says (moe/moe.c switches to FP32 around them when it is not):
 * their logits pick the experts, and low-precision routers destabilise MoE training (Switch
 * Transformer's "selective precision"). Being process-wide, BF16 suits one training run per
 * process (the CLI's case): two models running products at once while it is BF16 would see
 * each other's router switches. */
typedef enum { MOEC_MATMUL_FP32 = 0, MOEC_MATMUL_BF16 = 1 } moec_matmul_precision;
moec_matmul_precision moec_matmul_precision_set(moec_matmul_precision p); /* returns the previous one */
moec_matmul_precision moec_matmul_precision_get(void);

/* The product of the current precision, moec_gemm or moec_gemm_bf16 (nn/gemm.h's signature):
 * what moec_linear_* multiply with, and training's attention products (Q Kᵀ, P V and their
 * backward, nn/ops_train.c) too; the softmax and its backward stay fp32. */
typedef void (*moec_gemm_fn)(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
                             const float *B, int ldb, float beta, float *C, int ldc);
moec_gemm_fn moec_matmul_gemm(void);

/* y [T, N] = x [T, K] · W[N, K]ᵀ (+ b). Overwrites y. Row strides: ldx for x, ldy for y. */
void moec_linear_forward(float *y, int ldy, const float *x, int ldx, const float *W, const float *b, int T, int K,
                         int N);

/* dx [T, K] += dy [T, N] · W;  dW [N, K] += dyᵀ · x;  db [N] += Σ_t dy[t].
 * Any of dx, dW, db may be NULL (not wanted). Row strides as in the forward (lddx for dx). */
void moec_linear_backward(float *dx, int lddx, float *dW, float *db, const float *dy, int lddy, const float *x,
                          int ldx, const float *W, int T, int K, int N);

/* The linear op of the one forward: y [T, W.rows] (row stride ldy) = x [T, W.cols] (row
 * stride ldx) · Wᵀ + b for a weight view of any dtype. F32 weights with enough rows go to moec_gemm
 * (training's master weights); everything else, and every stored BF16/F16 weight, to moec's
 * kernels (nn/matmul.h), which widen in registers. */
#include "nn/matmul.h"
void moec_linear(float *y, int ldy, const float *x, int ldx, const moec_mat *W, const float *b, int T);

#endif
