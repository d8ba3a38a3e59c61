/* moe.h — the one MoE layer of inference, evaluation and training:
 *
 *   route     z = x̃ · W_rᵀ (fp32; x̃ = x ⊙ U(1−ε, 1+ε) with router jitter in training, else x)
 *             → the configured router (moe/router.h) → slots (token, expert, weight), probs
 *   dispatch  slots grouped by expert (counting sort, stable in slot order); with a capacity
 *             factor (training steps only), each expert keeps C = ceil(T·k/E · CF) slots (position: the first C in slot
 *             order; probs: the C largest weights) and the rest lose their expert (dropped:
 *             nothing is added to their token, which keeps its residual)
 *   experts   one SwiGLU FFN per non-empty expert on its contiguous rows; the zero-computation
 *             kinds without a GEMM: copy → x, constant → a1·x + a2·v; null experts get no rows
 *             (the router's columns: FFN experts, then constant, copy, null; moe/router.h)
 *   combine   y[t] = Σ over t's slots, in slot order, weight · expert_out   (+ shared expert,
 *             × sigmoid(x · w_sg) when it has a gate); with null experts the weights are first
 *             renormalised over the token's non-null picks (AdaMoE; moec_null_renorm)
 *
 * The router's logits may depend on the previous MoE layer through the routing carry (MoE++
 * gating residual, RMoE's GRU state over depth; see moec_moe_carry below).
 *
 * Weights arrive through the model's one weight view (moec_layer: moec_mat of any dtype). A
 * workspace made with keep = 1 saves what the backward needs (training: F32 master weights,
 * moec_gemm); keep = 0 reuses scratch (inference and evaluation: moec's grouped kernels on the
 * stored dtype). The backward sits beside the forward and runs the same slots backwards.
 *
 * Losses (balance.h) are computed when their coefficients are non-zero and the call asks for
 * them; they are returned with their coefficients applied. */
#ifndef MOEC_MOE_MOE_H
#define MOEC_MOE_MOE_H

#include "core/rng.h"
#include "model/model.h"
#include "moe/balance.h"
#include "moe/router.h"
#include "moe/routing.h"

#include <stddef.h>
#include <stdint.h>

typedef struct moec_moe_ws moec_moe_ws;

/* Workspace for MoE layers of hp for up to max_T tokens per call. keep = 1: training (one
 * workspace per layer; the forward's activations stay until its backward). */
moec_status moec_moe_ws_new(moec_moe_ws **out, const moec_hparams *hp, int max_T, int keep, moec_error *err);
void moec_moe_ws_free(moec_moe_ws *ws); /* accepts NULL */
size_t moec_moe_ws_bytes(const moec_moe_ws *ws);

/* What a call wants besides y. Zeroed = inference: model defaults, no losses, no noise. */
typedef struct {
    const moec_route_opts *opts; /* per-request routing options; NULL = defaults */
    int losses;                  /* compute the balancing losses (and keep what their backward needs) */
    int32_t seq_len;             /* tokens per sequence (sequence-scope LBL); 0 = T */
    const int64_t *global_counts;/* global-scope LBL: [E] counts of the whole step; NULL = this call's */
    int64_t global_tokens;       /* tokens of the whole step (global scope) */
    moec_rng *jitter_rng;        /* non-NULL and cfg jitter > 0: multiplicative router-input noise */
    int train;                   /* a training step: the capacity factor applies (inference and
                                    evaluation are dropless, so a token's output never depends on
                                    the other tokens of its batch) */
    /* the routers' call context (router.h, routing.h; issue 10) */
    const int32_t *token_ids;    /* [T] token ids of the call (hash routing); NULL = unknown */
    int64_t step;                /* optimizer step of a training call (EvoMoE's τ schedule) */
    int causal;                  /* decoding (forward.c): a non-causal router runs its decode router */
    moec_rng *serve_rng, *seq_rng; /* random serving rules (THOR), see moec_route_opts */
    /* layer-to-layer routing carry (MoE++ gating residual, RMoE GRU state; see below) */
    const float *carry_in;       /* [T, moec_moe_carry_dim]: the previous MoE layer's moec_moe_carry; NULL
                                    = this is the first MoE layer (no residual, h_0 = 0) */
    const float *dcarry_out;     /* training: ∂ℓ/∂(this layer's carry out) [T, carry_dim], which the next
                                    MoE layer's backward fills (moec_moe_dcarry) before this layer's
                                    backward reads it; NULL = nothing downstream uses the carry */
} moec_moe_call;

/* What a call reports (for metrics, traces and the trainer). */
typedef struct {
    double aux, z;            /* losses, coefficients applied (0 when not computed) */
    const int64_t *counts;    /* [E] the router's choices per expert, before capacity (borrowed) */
    int64_t n_assigned;       /* slots that chose an expert */
    int64_t n_dropped;        /* of those, dropped by capacity */
    double entropy_sum;       /* Σ over tokens of the entropy of probs (nats); 0 unless call->losses */
    const moec_routing *routing; /* the slots of this call (borrowed, valid until the next call) */
    double router_loss;       /* the router's own loss (top-p: entropy), coefficient applied; included in aux */
    /* expert kinds: counts is [router width] = FFN experts then constant, copy, null (router.h) */
    int64_t n_true;           /* slots computed by FFN experts (after capacity) */
    int64_t n_true_chosen;    /* slots that chose an FFN expert (before capacity) */
    int64_t n_zero_compute;   /* slots that chose a constant, copy or null expert (no GEMM) */
} moec_moe_stats;

/* y [T, d] = MoE(x [T, d]) with the weights of layer L (L->is_moe). Overwrites y (no alias
 * with x). st may be NULL. */
void moec_moe_forward(moec_moe_ws *ws, const moec_hparams *hp, const moec_layer *L, float *y, const float *x, int T,
                      const moec_moe_call *call, moec_moe_stats *st);

/* Backward of the last forward on ws (made with keep = 1): given dy [T, d] = ∂ℓ/∂y, adds
 * ∂/∂x into dx [T, d] (may be NULL) and ∂/∂weights into G (the gradient view of the layer:
 * F32 buffers shaped as L's weights; entries with NULL data are not wanted), for a total loss
 * ℓ(y) + dloss · (aux + z). x must be the forward's input, unchanged. Consumes the saved
 * activations: once per forward. */
void moec_moe_backward(moec_moe_ws *ws, const moec_hparams *hp, const moec_layer *L, const moec_layer *G, float *dx,
                       const float *dy, const float *x, int T, float dloss);

/* The layer-to-layer routing carry: per-token state that MoE layer l hands to the next MoE layer
 * (dense layers pass nothing and change nothing). It runs over DEPTH within one forward, so a
 * KV-cache decode needs no state across calls. Width moec_moe_carry_dim(hp): MoE++ gating
 * residual (moec_gate_residual) → the router width (post-residual logits); RMoE
 * (moec_router_rnn_dim r) → r (the GRU state); 0 = none. */
int moec_moe_carry_dim(const moec_hparams *hp);
/* This workspace's last forward's carry out [T, carry_dim] (NULL without a carry): valid until
 * this workspace's next forward but one (an inference workspace shared by all layers alternates
 * two buffers, so layer l+1 reads layer l's while writing its own). */
const float *moec_moe_carry(const moec_moe_ws *ws);
/* After moec_moe_backward (keep): ∂ℓ/∂carry_in [T, carry_dim], the previous MoE layer's
 * dcarry_out (zeros when the forward had no carry in). NULL without a carry. */
const float *moec_moe_dcarry(const moec_moe_ws *ws);

#endif
