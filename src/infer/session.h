/* session.h — one sequence's state: the KV cache, RoPE tables and the scratch buffers of a
 * forward pass (allocated once at session creation; nothing is allocated per token). */
#ifndef MOEC_INFER_SESSION_H
#define MOEC_INFER_SESSION_H

#include "model/model.h"
#include "moe/dispatch.h"

/* Tokens processed per forward chunk: bounds scratch memory for long prompts. */
#define MOEC_UBATCH 256

struct moec_session {
    moec_model *m;
    int32_t n_ctx, n_past;
    float *k_cache, *v_cache; /* [n_layer, n_head_kv, n_ctx, head_dim] each */
    float *rope_cos, *rope_sin; /* [n_ctx, head_dim/2] */
    /* scratch, sized for MOEC_UBATCH tokens */
    float *x, *xn;            /* [UB, d] residual stream, normed input */
    float *q, *k, *v, *att;   /* [UB, H*hd], [UB, Hkv*hd] ×2, [UB, H*hd] */
    float *ffn_out;           /* [UB, d] */
    float *att_scratch;       /* [n_threads, n_ctx] */
    float *router;            /* [UB, E] */
    int32_t *topk_ids;        /* [UB, k] */
    float *topk_w;            /* [UB, k] */
    moec_dispatch disp;
    float *xg, *yg;           /* [UB*k, d] rows grouped by expert: inputs, outputs */
    float *h_gate, *h_up;     /* [max(UB*k, UB), ff_max] */
    int32_t *items;           /* [E + 2] */
    float *gate_scalar;       /* [UB] */
    int32_t ff_max;
    void *block;              /* the single allocation all of the above point into */
};

/* The model forward over one chunk of T <= MOEC_UBATCH tokens at positions n_past.. (model/forward.c).
 * Writes logits [T, V] when all_logits, else [V] for the last token only; logits may be NULL. */
void moec_forward_chunk(moec_session *s, const int32_t *ids, int T, float *logits, int all_logits);

#endif
