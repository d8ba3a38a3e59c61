/* routing.h — the routing result: what the `route` stage hands to dispatch and combine, what
 * routing traces record, and what per-request routing options act on.
 *
 * A flat list of slots. Slot s sends token[s] to expert[s] with combine weight weight[s].
 * Nothing here assumes k slots per token: a token may own 0..k_max slots, an expert-choice
 * router may list slots expert by expert, and expert[s] == MOEC_NO_EXPERT marks a slot that
 * carries no expert (the router gave the token fewer experts, or capacity dropped it). A slot
 * without an expert contributes nothing to its token's output (the token keeps its residual)
 * and receives no gradient.
 *
 * Token-choice routers write slot s = t·k + j for j < k (k = the effective k of the call, see
 * moec_route_opts), in descending-score order within a token. */
#ifndef MOEC_MOE_ROUTING_H
#define MOEC_MOE_ROUTING_H

#include "core/rng.h"

#include <stdint.h>

#define MOEC_NO_EXPERT (-1)

typedef struct {
    int32_t T, E;     /* tokens and experts of the call */
    int32_t n_slots;  /* slots in use, <= cap */
    int32_t cap;      /* slots allocated (token-choice: T_max · k_max) */
    int32_t *token;   /* [cap] token of each slot, in [0, T) */
    int32_t *expert;  /* [cap] expert in [0, E), or MOEC_NO_EXPERT */
    float *weight;    /* [cap] combine weight (ignored where expert < 0) */
    int32_t *chosen;  /* [cap] the router's choice before capacity dropping (== expert when
                         nothing was dropped); what load-balancing counts and bias updates see */
} moec_routing;

/* Per-request options of the route stage (inference controls, also usable in training).
 * Zeroed = the model's defaults. */
typedef struct {
    int32_t k;                   /* > 0: experts per token for this call, <= the router's k_max */
    const uint8_t *expert_mask;  /* [E] 0 = expert not selectable; NULL = all (routers that
                                    support masks honour it; see docs/routers.md) */
    /* the call's context, filled by the MoE layer from its moec_moe_call (not by requests) */
    const int32_t *token_ids;    /* [T] token ids of the call (hash routing); NULL = unknown */
    int32_t seq_len;             /* tokens per sequence (batch mode), 0 = T is one sequence */
    int64_t step;                /* optimizer step of a training call (schedules: EvoMoE τ) */
    int train;                   /* a training step */
    moec_rng *rng;               /* random stream of a training call (stochastic routers); NULL otherwise */
    moec_rng *serve_rng;         /* serving/evaluation stream of routers whose serving rule is random
                                    (THOR): continues over the tokens; NULL = none */
    moec_rng *seq_rng;           /* the same for per-sequence draws: a decode session passes a copy of
                                    its sequence's state each chunk, so layer i draws alike in every chunk */
    const float *hash_table;     /* [V] hash routing's stored table (expert ids as floats), set by the MoE layer
                                    from the model (moec_layer.hash_table); NULL = the seed's random table */
} moec_route_opts;

#endif
