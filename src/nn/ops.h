/* ops.h — the inference-side kernels: KV-cache attention, SwiGLU, softmax, RoPE tables. The
 * ops shared with training (RMSNorm, RoPE application, batch attention) and their backward passes
 * are in nn/ops_train.h. Shapes are row-major, fp32. */
#ifndef MOEC_NN_OPS_H
#define MOEC_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Fills the RoPE cos/sin tables [n_ctx, hd/2] for positions [0, n_ctx) (Hugging Face
 * rotate-half convention; moec_rope_pos in nn/ops_train.h applies them, for inference and
 * training alike; nn/rope.h builds scaled tables). */
void moec_rope_tables(float *cos_tab, float *sin_tab, int n_ctx, int hd, float theta);

/* out[i] = silu(gate[i]) * up[i] over n elements (SwiGLU). out may alias gate. */
void moec_swiglu(float *out, const float *gate, const float *up, int64_t n);

/* In-place softmax over n values; returns nothing, numerically stable. */
void moec_softmax(float *x, int n);

/* Causal attention for T queries at positions pos0..pos0+T-1 against a KV cache that already
 * holds positions [0, pos0+T):
 *   q    [T, n_head, hd]         out [T, n_head, hd]
 *   kc   [n_head_kv, n_ctx, hd]  vc  [n_head_kv, n_ctx, hd]
 * window > 0: a query at position p sees keys (p - window, p] only (transformers' sliding
 * window: itself and window - 1 before it); 0 = all of [0, p].
 * scratch: n_scratch rows of n_ctx floats, one per thread; threads over (head, query) on at
 * most n_scratch threads of the pool. */
void moec_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_head,
                    int n_head_kv, int hd, int n_ctx, int window, float *scratch, int n_scratch);

#endif
