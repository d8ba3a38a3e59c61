/* layer.h — the one decoder layer of the generic MoE transformer, for inference, evaluation and
 * training, with its backward beside it:
 *
 *   n   = rmsnorm(x)
 *   q,k,v = n·W_{q,k,v}ᵀ (+ b);  QK-norm (none | per head | full projection);  clip_qkv;  RoPE
 *   x2  = x + o_proj(causal attention)          attention: KV cache (a session) or B sequences
 *                                               of S tokens with probabilities kept (training)
 *   y   = x2 + ffn(rmsnorm(x2))                 ffn = the MoE layer (moe/moe.h) or a dense SwiGLU
 *   Chain-of-Experts (MOE_SPECS §10): x_0 = rmsnorm(x2), x_{t+1} = [x_t +] MoE_t(x_t) for t < C
 *   (experts shared, router t per iteration), y = x_C [+ x2]   (inner / outer residual)
 *
 * Weights come through the one weight view (moec_layer); the linear op picks moec_gemm or moec's
 * kernels by dtype and shape. Activations live in a moec_layer_acts: one per layer when the
 * backward will run (keep), one shared by all layers otherwise. */
#ifndef MOEC_MODEL_LAYER_H
#define MOEC_MODEL_LAYER_H

#include "model/model.h"
#include "moe/moe.h"

typedef struct {
    float *x;               /* [T, d] layer input (kept in training) */
    float *xn1, *rstd1;     /* [T, d], [T] */
    float *q, *k, *v;       /* [T, qd], [T, kvd] ×2 */
    float *qn, *kn;         /* QK-normed (alias q, k when the arch has no QK norm) */
    float *rstd_q, *rstd_k; /* [T·H] or [T], [T·Hkv] or [T] */
    float *qr, *kr;         /* after clip_qkv and RoPE */
    float *vc;              /* v after clip_qkv (aliases v without clipping) */
    float *probs;           /* [B, H, S, S] attention probabilities (batch mode only) */
    float *att;             /* [T, qd] */
    float *x2;              /* [T, d] after the attention residual */
    float *xn2, *rstd2;     /* [T, d], [T] */
    float *ffn_out;         /* [T, d] */
    float *hg, *hu, *h;     /* dense MLP [T, ff_dense]: gate, up, silu(gate)·up */
    moec_moe_ws *moe;       /* MoE layers */
    /* Chain-of-Experts (hp->route.coe_iters = C > 0): the FFN block runs C MoE iterations */
    moec_moe_ws *moe_iter[MOEC_MAX_COE_ITERS]; /* training: iteration t >= 1's workspace ([0] = moe) */
    float *coe_x;           /* [C + 1, T, d] x_0 = rmsnorm(x2) .. x_C */
    int64_t *coe_counts;    /* [router width] the iterations' expert counts, summed */
    void *mem;              /* the one allocation the arrays above point into */
    size_t bytes;
} moec_layer_acts;

/* How a call sees positions and the past. */
typedef struct {
    int T;                        /* tokens of the call */
    const int32_t *pos;           /* [T] positions, for RoPE */
    const float *rope_cos, *rope_sin; /* moec_rope_tables */
    int keep;                     /* training: dense MLP keeps pre-activations (F32 weights) */
    /* batch mode (k_cache == NULL): B sequences of S tokens, T = B·S, causal within each */
    int B, S;
    /* cache mode: this layer's cache [Hkv, n_ctx, hd]; the call's tokens sit at n_past.. */
    float *k_cache, *v_cache;
    int n_past, n_ctx;
    float *att_scratch;           /* [att_rows, n_ctx]: one row per thread */
    int att_rows;
    const moec_moe_call *moe_call; /* routing options, losses (NULL = inference defaults) */
} moec_layer_ctx;

/* Allocates the activations of layer il (il < 0: any layer — one set shared by all) for T
 * tokens; with_probs: attention probabilities of B sequences × S tokens (training). keep = 1:
 * the MoE workspace keeps what the backward needs. *a is caller-owned (moec_layer_acts_free). */
moec_status moec_layer_acts_new(moec_layer_acts *a, const moec_hparams *hp, int il, int T, int B, int S, int keep,
                                int with_probs, moec_error *err);
void moec_layer_acts_free(moec_layer_acts *a); /* accepts a zeroed struct */
size_t moec_layer_acts_bytes(const moec_layer_acts *a);

/* y [T, d] = layer il (a->x). y may equal a->x in cache mode (inference updates the residual
 * stream in place); in keep mode it must be another buffer. st receives the MoE statistics. */
void moec_layer_forward(const moec_hparams *hp, const moec_layer *L, int il, moec_layer_acts *a,
                        const moec_layer_ctx *c, float *y, moec_moe_stats *st);

/* Backward scratch, [T, max(d, qd)] / [T, kvd] / [T, ff_dense] floats each (model_train.c owns it). */
typedef struct {
    float *dx2, *dxn, *dq, *dk, *dv, *dqn, *dkn, *datt, *dh, *dhg, *dhu;
    float *dprobs; /* [B, H, S, S]: the attention backward's dS */
} moec_layer_grad_scratch;

/* On entry dx = ∂L/∂(layer output); on return dx = ∂L/∂(layer input). Gradients of the
 * weights are added into G (the gradient view). dloss scales the MoE losses. Batch mode only. */
void moec_layer_backward(const moec_hparams *hp, const moec_layer *L, const moec_layer *G, int il,
                         moec_layer_acts *a, const moec_layer_ctx *c, float *dx, const moec_layer_grad_scratch *s,
                         float dloss);

#endif
