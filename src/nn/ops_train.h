/* ops_train.h — the dense transformer ops for training, fp32 (attention's products in the
 * precision of nn/linear.h's moec_matmul_gemm), row-major: a forward that keeps
 * what its backward needs, and the backward beside it (llm.c layout). Every backward
 * accumulates (+=) into its gradient buffers, so shared weights and gradient accumulation
 * need no extra pass; callers zero gradients once per step.
 *
 * Not here: linear layers (nn/linear.h), the MoE route/dispatch/experts path (moe/), the
 * optimizer, and inference on the KV-cache layout (nn/ops.h). These kernels do not allocate
 * and cannot fail: shapes and indices are the caller's contract (stated per function), the
 * trainer checks them once when it builds a batch.
 *
 * Threads: moec's pool over disjoint outputs only; every reduction runs in a fixed order, so the
 * results are bit-identical for any thread count. Call from outside a parallel region. */
#ifndef MOEC_NN_OPS_TRAIN_H
#define MOEC_NN_OPS_TRAIN_H

#include <stdint.h>

/* ---------------------------------------------------------------------------------------------
 * RMSNorm: y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps), rows of length n.
 * Serves the hidden-size norms (rows = T, n = d) and both QK-norm kinds (per head: rows = T*H,
 * n = head_dim; full projection: rows = T, n = H*head_dim). */

/* y [rows, n], rstd [rows] (cached for the backward), x [rows, n], w [n]. y may alias x. */
void moec_rmsnorm_forward_train(float *y, float *rstd, const float *x, const float *w, int rows, int n, float eps);

/* dx [rows, n] += dL/dx;  dw [n] += dL/dw (dw may be NULL);  dy [rows, n] upstream; x and w as
 * given to the forward, rstd [rows] from it. dx must not alias dy or x. */
void moec_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                           int rows, int n);

/* ---------------------------------------------------------------------------------------------
 * RoPE with per-token positions (Hugging Face rotate-half, the tables of moec_rope_tables).
 * Sequences packed in a batch restart at position 0, hence pos [T] rather than a start.
 * Contract: 0 <= pos[t] < n_ctx of the tables; hd even. */

/* In place on x [T, n_heads, hd]; cos_tab, sin_tab [n_ctx, hd/2]; pos [T]. */
void moec_rope_pos(float *x, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                   const int32_t *pos);

/* In place on dx [T, n_heads, hd]: holds dL/d(output) on entry, dL/d(input) on return (the
 * rotation is orthogonal: the backward is the rotation by -angle). Not accumulating: add the
 * result into a gradient buffer yourself if the input had other uses. */
void moec_rope_backward(float *dx, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                        const int32_t *pos);

/* ---------------------------------------------------------------------------------------------
 * Causal grouped-query attention over B independent sequences of S tokens, scale 1/sqrt(hd).
 * Query head h reads KV head h / (H / Hkv) (Hugging Face repeat_kv). Contract: H % Hkv == 0.
 *   q, out [B*S, H*hd]     k, v [B*S, Hkv*hd]     (token-major, heads contiguous per token)
 *   probs  [B, H, S, S]    softmax rows, upper triangle (key > query) exactly 0 */

/* Overwrites out and probs. Threads over (sequence, head). */
void moec_attention_forward_train(float *out, float *probs, const float *q, const float *k, const float *v, int B,
                                  int S, int H, int Hkv, int hd);

/* dq [B*S, H*hd] += ..., dk, dv [B*S, Hkv*hd] += ...; dout [B*S, H*hd] upstream; q, k, v and
 * probs as in the forward (the output is not needed: the softmax backward takes Σ P dP). dprobs: scratch of probs' shape [B, H, S, S] (overwritten).
 * Threads over (sequence, KV head), the group's query heads looped inside in order, so dk/dv of
 * a KV head have one writer. */
void moec_attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout, const float *q,
                             const float *k, const float *v, const float *probs, int B, int S, int H, int Hkv, int hd);

/* ---------------------------------------------------------------------------------------------
 * SwiGLU h = silu(gate) * up (forward: moec_swiglu in nn/ops.h). */

/* dgate, dup [n] += ...; dh [n] upstream; gate, up [n] the forward's inputs. */
void moec_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, int64_t n);

/* ---------------------------------------------------------------------------------------------
 * Token embedding. Contract: ids[t] < V (rows of W). A negative id (padding) gives a zero row
 * and no gradient. */

/* x [T, d] = W [V, d] rows ids [T]. Overwrites x. */
void moec_embedding_forward(float *x, const float *W, const int32_t *ids, int T, int d);

/* dW [V, d] rows ids[t] += dx [T, d] row t, in token order (repeated ids add up). */
void moec_embedding_backward(float *dW, const float *dx, const int32_t *ids, int T, int d);

/* ---------------------------------------------------------------------------------------------
 * Losses. */

/* log(Σ exp(x[i])) over n values, max-subtracted, summed in double. n <= 0 or all -inf: -inf. */
float moec_logsumexp(const float *x, int n);

/* Mean cross-entropy of logits [T, V] against targets [T] over the rows whose target is not
 * negative (-1 is the ignore index), computed in double and returned as float. Returns 0 when
 * every target is ignored, and NaN when some target is >= V (a caller bug the trainer's
 * non-finite-loss check then reports; such rows get zero gradient).
 * dlogits [T, V] (may be NULL, or logits itself: in place) is overwritten with
 *   dscale * (softmax(logits[t]) - onehot(targets[t])) / n_valid   for valid rows, 0 otherwise,
 * i.e. the gradient of dscale * loss. Threads over fixed row blocks; the loss sums in a fixed
 * order. */
float moec_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int T, int V, float dscale);

#endif
