/* router.h — the `route` stage of the MoE layer: router logits → per-token (expert, weight)
 * pairs. Routers compute in fp32. This issue has the softmax top-k family (Mixtral, Qwen,
 * OLMoE); the router zoo of MOE_SPECS.md plugs in here as further route functions. */
#ifndef MOEC_MOE_ROUTER_H
#define MOEC_MOE_ROUTER_H

#include <stdint.h>

/* For each of T tokens: p = softmax(logits[t]) over E experts, take the k largest p (ties go
 * to the lower expert index), and if renorm, divide them by their sum (= softmax over the
 * top-k logits). ids [T, k] in descending-weight order, weights [T, k].
 * logits [T, E] is overwritten with p. */
void moec_route_softmax_topk(float *logits, int T, int E, int k, int renorm, int32_t *ids, float *weights);

#endif
