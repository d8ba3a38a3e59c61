/* session.h — one sequence's state: the KV cache, RoPE tables and the activations of a forward
 * pass (allocated once at session creation; nothing is allocated per token). */
#ifndef MOEC_INFER_SESSION_H
#define MOEC_INFER_SESSION_H

#include "model/layer.h"
#include "model/model.h"

/* Tokens processed per forward chunk: bounds scratch memory for long prompts. */
#define MOEC_UBATCH 256

struct moec_session {
    moec_model *m;
    int32_t n_ctx, n_past;
    float *k_cache, *v_cache;   /* [n_layer, n_head_kv, n_ctx, head_dim] each */
    float *rope_cos, *rope_sin; /* [n_ctx, head_dim/2] */
    float *att_scratch;         /* [n_threads, n_ctx] */
    float *xn, *rstd;           /* [UB, d], [UB]: the final norm */
    int32_t *pos;               /* [UB] positions of the chunk */
    moec_layer_acts acts;       /* one set of layer activations for MOEC_UBATCH tokens, shared by all layers */
    moec_route_opts route_opts; /* per-request routing options (k, expert mask) */
    moec_rng serve_rng;         /* random serving rules (THOR): continues over the session's tokens */
    moec_rng seq_rng;           /* ... per sequence: its state at the sequence's start (reset) */
    int64_t *expert_counts;     /* [n_layer, E] tokens routed to each expert since the last reset of counts */
    void *block;                /* the single allocation the cache, tables and scratch point into */
    size_t block_bytes;
};

/* The model forward over one chunk of T <= MOEC_UBATCH tokens at positions n_past.. (model/forward.c).
 * Writes logits [T, V] when all_logits, else [V] for the last token only; logits may be NULL. */
void moec_forward_chunk(moec_session *s, const int32_t *ids, int T, float *logits, int all_logits);

#endif
