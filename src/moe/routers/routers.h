/* routers.h — the router objects of src/moe/routers/, for the registry (moe/router.c) only.
 * Adding a router: one file here defining one `const moec_router`, one line below, one entry
 * in the registry table (and its name in g_router_names), one row in tests/test_routers.c. */
#ifndef MOEC_MOE_ROUTERS_H
#define MOEC_MOE_ROUTERS_H

#include "moe/router.h"

extern const moec_router moec_router_topk;          /* routers/topk.c: the token-choice family */
extern const moec_router moec_router_expert_choice; /* routers/expert_choice.c: experts pick tokens (§6) */
extern const moec_router moec_router_topp;          /* routers/topp.c: dynamic top-p (§8) */
extern const moec_router moec_router_moge;          /* routers/moge.c: grouped experts (§11) */
extern const moec_router moec_router_hash;          /* routers/hash.c: fixed id → expert table (§12) */
extern const moec_router moec_router_thor;          /* routers/thor.c: stochastic experts (§12) */
extern const moec_router moec_router_evomoe;        /* routers/evomoe.c: dense-to-sparse gate (§13) */

/* Shared by the routers (routers/common.c): s = softmax(z) of one token, fp32 with a double sum;
 * and the softmax backward d ← s ⊙ (d − s·d) in place. */
void moec_router_softmax_row(const float *z, int E, float *s);
void moec_router_softmax_backward_row(const float *s, int E, float *d);
/* Backward of routers whose slot weight is scale · P[t, e] with P = softmax(z) (no
 * renormalisation): dlogits [T, E] ← ∂/∂z of Σ_q dweight[q]·weight[q] + Σ dprobs⊙P (dprobs may be
 * NULL). Slots without an expert (or dropped: expert < 0) give nothing. s: E floats of scratch. */
void moec_router_prob_weights_backward(const moec_router_cfg *c, const float *logits, int T, const moec_routing *r,
                                       const float *dweight, const float *dprobs, float scale, float *dlogits,
                                       float *s);

/* The hash router's table: the expert of token id under seed (routers/hash.c; tests use it). */
int32_t moec_router_hash_expert(uint64_t seed, int32_t id, int E);

/* EvoMoE's temperature at an optimizer step (routers/evomoe.c). */
double moec_router_evomoe_tau(const moec_router_cfg *c, int64_t step);

/* The checks every router of this directory shares (E, k, losses, jitter, capacity, and no
 * token-choice-only keys): one clear line naming the router. */
moec_status moec_router_check_common(const moec_router_cfg *c, const char *name, moec_error *err);

#endif
