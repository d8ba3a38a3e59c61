/* router.h — the router seam. Each router is one file under src/moe/routers/ exposing one
 * moec_router (a table of functions); the registry (moe/router.c) looks routers up by the name
 * a config.json gives ("moec_router", default "topk"). Everything after `route` — dispatch,
 * capacity, experts, combine, balancing losses — is shared by every router.
 *
 * A router maps fp32 logits z [T, E] (= x · W_rᵀ) to a moec_routing, plus the per-token
 * probabilities P [T, E] that the load-balancing losses use (balance.h). Its backward maps
 * ∂L/∂weight [n_slots] and ∂L/∂P [T, E] back to ∂L/∂z. A stateful router (the aux-loss-free
 * selection bias) updates its state once per optimizer step from the step's expert counts. */
#ifndef MOEC_MOE_ROUTER_H
#define MOEC_MOE_ROUTER_H

#include "moe/routing.h"
#include "moec.h"

#include <stddef.h>
#include <stdint.h>

#define MOEC_MAX_CONST_EXPERTS 8 /* MoE++ uses 2 */
#define MOEC_MAX_COE_ITERS 8     /* Chain-of-Experts uses 2 */

typedef enum { MOEC_SCORE_SOFTMAX = 0, MOEC_SCORE_SIGMOID } moec_score_func;
typedef enum { MOEC_GROUP_SCORE_MAX = 0, MOEC_GROUP_SCORE_TOP2_SUM } moec_group_score;
typedef enum { MOEC_LBL_MICRO_BATCH = 0, MOEC_LBL_SEQUENCE, MOEC_LBL_GLOBAL_BATCH } moec_lbl_scope;
typedef enum { MOEC_DROP_POSITION = 0, MOEC_DROP_PROBS } moec_drop_policy;

/* Routing and balancing configuration of one model (config.json; docs/routers.md lists every
 * key, formula, source and default). */
typedef struct {
    const struct moec_router *router; /* from the registry ("moec_router") */
    int32_t n_expert, k;        /* E routed experts, k experts per token (the k_max of the slots) */
    /* token-choice family (routers/topk.c) */
    moec_score_func score;      /* "scoring_func": softmax (default) | sigmoid (DeepSeek-V3) */
    int topk_softmax;           /* "moec_topk_softmax": softmax over the k selected logits
                                   (Mixtral's formula) instead of softmax over all then top-k */
    int norm_topk_prob;         /* "norm_topk_prob": divide the k weights by their sum */
    float routed_scaling;       /* "routed_scaling_factor": weights × this (default 1) */
    int32_t n_group, topk_group;/* "n_group", "topk_group": group-limited top-k (1, 1 = off) */
    moec_group_score group_score; /* "moec_group_score": max (DeepSeek-V2) | top2_sum (V3) */
    int use_bias;               /* "topk_method": "noaux_tc" — selection by s + b, weights by s */
    float bias_rate;            /* "moec_bias_update_rate": u of b_i += u·sign(c̄ − c_i) (1e-3) */
    /* balancing, capacity, noise (shared by every router; moe/moe.c, moe/balance.c) */
    float aux_coef;             /* "router_aux_loss_coef": α, Megatron normalisation (1·α at balance) */
    moec_lbl_scope aux_scope;   /* "moec_aux_loss_scope": micro_batch | sequence | global_batch */
    float z_coef;               /* "router_z_loss_coef" */
    float jitter;               /* "router_jitter_noise": router input × U(1−ε, 1+ε) in training */
    float capacity_factor;      /* "moec_capacity_factor": 0 = dropless; C = ceil(T·k/E · CF) */
    moec_drop_policy drop_policy; /* "moec_drop_policy": position (first C slots) | probs (top-C weights) */
    /* serving a non-causal router (expert choice): the causal router decoding uses instead */
    const struct moec_router *decode_router; /* "moec_decode_router" (NULL = none: serving is refused) */
    /* per-router parameters (docs/routers.md; each router's `defaults` sets its own) */
    float top_p;                /* top-p (routers/topp.c): "moec_top_p" threshold p, in (0, 1) */
    float entropy_coef;         /* top-p: "moec_entropy_loss_coef" β of β·mean_t H(P_t) */
    float ec_capacity;          /* expert choice: "moec_ec_capacity" c, C = ceil(T·c/E) tokens per expert */
    uint64_t hash_seed;         /* hash: "moec_hash_seed" of the fixed id → expert table */
    int hash_balanced;          /* hash: "moec_hash_table": "random" (0: H from the seed) | "balanced" (1: the
                                   stored table model.hash_table, built from training-token frequencies) */
    float tau_max, tau_min;     /* EvoMoE: "moec_tau_max", "moec_tau_min" */
    int64_t tau_steps;          /* EvoMoE: "moec_tau_steps" D of the schedule */
    int tau_linear;             /* EvoMoE: "moec_tau_schedule": exp (0) | linear (1) */
    int64_t hard_after;         /* EvoMoE: "moec_hard_gumbel_after": soft before this step, hard from it (-1: hard) */
    int thor_level;             /* THOR: "moec_thor_inference": 0 token | 1 sequence */
    float consistency_alpha;    /* THOR: "moec_consistency_alpha" α of the two-pass consistency loss */
    /* expert kinds and depth routers (xkind; moe/moe.c, docs/routers.md). The router's width n_expert
     * is the FFN experts followed by the zero-computation ones, in this index order:
     *   [FFN 0..n_ffn-1 | n_const constant | n_copy copy | n_null null (zero)]   (MoE++'s order) */
    int32_t n_const;            /* "moec_constant_experts": MoE++ a1·x + a2·v, [a1, a2] = softmax(W_c x) */
    int32_t n_copy;             /* "moec_copy_experts": MoE++ output x */
    int32_t n_null;             /* "moec_null_experts": AdaMoE null / MoE++ zero expert, output 0 */
    int null_renorm;            /* "moec_null_renorm" (default true): null picks weigh 0, the other picks are
                                   divided by their sum (AdaMoE; MoE++'s default gating path) */
    int gate_residual;          /* "moec_gate_residual": MoE++ logits_l += W_g^l · logits_{l-1} */
    int32_t rnn_dim;            /* "moec_router_rnn_dim": RMoE GRU over depth, state width (0 = off) */
    /* Chain-of-Experts (model/layer.c): the FFN block is x_0 = rmsnorm(x2), x_{t+1} = [x_t +] MoE_t(x_t)
     * for t < coe_iters, output x_C [+ x2]; experts shared by the iterations, a router per iteration */
    int32_t coe_iters;          /* "moec_coe_iterations" C (0 = a plain MoE block) */
    int coe_inner_residual;     /* "moec_coe_inner_residual" (default true) */
    int coe_outer_residual;     /* "moec_coe_outer_residual" (default false, as CoE's code) */
    int coe_shared_gate;        /* "moec_coe_shared_gate": one router for every iteration (CoE use_igate = false) */
    /* ReXMoE (MOE_SPECS §26): layer l routes over the experts of its group of rex_reuse adjacent
     * layers {g·r .. g·r + r − 1}, g = ⌊l/r⌋ (the experts are shared, not copied: each layer stores its
     * own N and the group's layers point at them); the FFN part of the router width is r·N */
    int32_t rex_reuse;          /* "moec_rex_reuse_frequency" r (1 = off) */
    int32_t rex_psr_start;      /* "moec_rex_psr_start" t_s, "moec_rex_psr_end" t_e: Progressive Scaling */
    int32_t rex_psr_end;        /*   Routing; t_e = 0: off (the whole pool from step 0) */
    /* a learnable per-expert scale of the slot weights (MoGE's router_scale, MOE_SPECS §11):
     * w = w_router · s[e], s ∈ R^{n_expert} initialised to 1, trained by AdamW (moe/moe.c) */
    int router_scale;           /* "moec_router_scale" (default false: checkpoints without it load) */
} moec_router_cfg;

/* ReXMoE PSR: the candidate pool size N_t at optimizer step t (N = FFN experts per layer):
 * N for t <= t_s, floor((1 + (r−1)(t − t_s)/(t_e − t_s))·N) for t_s < t <= t_e, r·N after. */
int32_t moec_rex_pool_size(const moec_router_cfg *c, int32_t n_per_layer, int64_t step);
/* The PSR mask of one layer at one step, mask [c->n_expert]: r·N − N_t random FFN candidates 0
 * (never selected, their scores in effect 0), everything else 1. One mask per layer per step, a
 * function of (seed, step, layer) only (so a resumed run draws the same). */
void moec_rex_mask(const moec_router_cfg *c, int32_t n_per_layer, int64_t step, uint64_t seed, int layer,
                   uint8_t *mask);

/* FFN experts of a routing configuration (the rest of its width needs no GEMM). */
static inline int32_t moec_router_n_ffn(const moec_router_cfg *c) { return c->n_expert - c->n_const - c->n_copy - c->n_null; }

typedef struct moec_router {
    const char *name; /* config.json "moec_router" */
    const char *doc;  /* one line for `moec info` and docs/routers.md */
    /* Checks a parsed cfg for what this router supports; one clear line on error. */
    moec_status (*check)(const moec_router_cfg *cfg, moec_error *err);
    /* logits [T, E] → r (r->cap >= T · k_eff), probs [T, E] for the balancing losses (may be NULL).
     * bias [E]: the router's state (NULL when it has none). k_eff = opts->k if > 0, else cfg->k.
     * scratch: at least moec_router_scratch_floats(cfg, T) floats. Does not allocate. */
    void (*forward)(const moec_router_cfg *cfg, const float *bias, const float *logits, int T,
                    const moec_route_opts *opts, moec_routing *r, float *probs, float *scratch);
    /* Backward of the last forward on the same logits and r: dlogits [T, E] is OVERWRITTEN with
     * ∂L/∂z given dweight [r->n_slots] (∂L/∂weight, 0 for slots without an expert) and dprobs
     * [T, E] (∂L/∂probs; may be NULL = 0). */
    void (*backward)(const moec_router_cfg *cfg, const float *bias, const float *logits, int T,
                     const moec_routing *r, const float *dweight, const float *dprobs, float *dlogits,
                     float *scratch);
    /* Per optimizer step: state [E] updated from counts [E] (assignments per expert over the
     * whole step, before capacity). NULL for stateless routers. */
    void (*update)(const moec_router_cfg *cfg, float *bias, const int64_t *counts);
    /* Size of the router state in floats (0 = none); saved in the checkpoint. */
    int32_t (*state_size)(const moec_router_cfg *cfg);
    /* ---- optional (NULL / 0 = the token-choice behaviour above); /work issue 10 seam ---- */
    /* Slots a routing of T tokens may use (NULL: T · cfg->k). */
    int64_t (*max_slots)(const moec_router_cfg *cfg, int T);
    /* Scratch floats for T tokens (NULL: T·E + 2E). A training workspace keeps the scratch
     * untouched between a forward and its backward, so a router may keep there what its backward
     * needs (none does today: EvoMoE's backward goes through P and the weights only). */
    int64_t (*scratch_floats)(const moec_router_cfg *cfg, int T);
    /* The router's own loss on probs [T, E] (top-p: the routing entropy), coefficient applied.
     * dprobs == NULL: returns it; else dprobs += dscale · ∂L/∂probs (returns 0). */
    double (*loss)(const moec_router_cfg *cfg, const float *probs, int T, float dscale, float *dprobs);
    /* Sets this router's defaults in cfg (after moec_router_cfg_default, before the keys). */
    void (*defaults)(moec_router_cfg *cfg);
    /* Slots per token a call that asks for k experts (k_eff, see forward) is routed with, when the
     * router changes it (MoGE rounds to a multiple of its groups). NULL: k_eff. */
    int32_t (*call_k)(const moec_router_cfg *cfg, int32_t k_eff);
    int non_causal; /* a token's routing depends on other tokens: training only (decode_router to serve) */
    int stochastic; /* draws random numbers in training: the caller passes opts->rng (resume-exact seed) */
    int two_pass;   /* training runs each micro-batch twice with independent streams and adds the
                       consistency loss α·(symmetric KL of the two passes' next-token distributions) (THOR) */
} moec_router;

/* The registry. NULL if no router has that name. */
const moec_router *moec_router_find(const char *name);
/* Number of routers and the i-th one (for tests and docs). */
int moec_router_count(void);
const moec_router *moec_router_at(int i);
/* Comma-separated names, for error messages. */
const char *moec_router_list(void);

/* Default configuration: router "topk", softmax, no groups, no bias, micro-batch LBL
 * α = 0.01, z 0.001, dropless. n_expert, k and norm_topk_prob come from the model. */
moec_router_cfg moec_router_cfg_default(int32_t n_expert, int32_t k, int norm_topk_prob);

/* Reads the routing keys of a config.json object (docs/routers.md) into cfg, starting from
 * moec_router_cfg_default(n_expert, k, norm_topk_prob), and runs the router's check. */
struct cJSON;
moec_status moec_router_cfg_parse(moec_router_cfg *cfg, const struct cJSON *root, int32_t n_expert, int32_t k,
                                  int norm_topk_prob, const char *path, moec_error *err);

/* 1 when a and b route and balance alike: every field config.json sets (what a rewritten
 * config.json must keep; train/hf_files.c). */
int moec_router_cfg_same(const moec_router_cfg *a, const moec_router_cfg *b);

/* One line describing cfg's routing (for `moec info`), written into buf (NUL-terminated). */
void moec_router_describe(const moec_router_cfg *cfg, char *buf, size_t cap);

/* Scratch floats a router's forward/backward needs for T tokens: the router's scratch_floats, or
 * T·E (one score row per token) + 2E for selection; the max with the decode router's. */
int64_t moec_router_scratch_floats(const moec_router_cfg *cfg, int T);
/* Slots a routing of T tokens may use: the router's max_slots, or T·k; the max with the decode
 * router's. What a MoE workspace sizes its slot arrays with. */
int64_t moec_router_max_slots(const moec_router_cfg *cfg, int T);
/* The router a call runs: the decode router when the call decodes causally and the router is not
 * causal, else cfg->router. */
const struct moec_router *moec_router_for_call(const moec_router_cfg *cfg, int causal);
/* The load-balancing loss's k for a call of router rt asking for k experts (k <= 0: the model's
 * k): the router's slots per token for that call (call_k), so that f_i = c_i / (N·k) is the
 * fraction of the call's selected slots and sums to 1 when every slot has an expert. The MoE
 * layer and tests/tool_router both normalise with it. */
int32_t moec_router_call_k(const moec_router_cfg *cfg, const struct moec_router *rt, int32_t k);
/* The router_scale stage (cfg->router_scale): right after the router, each slot with an expert gets
 * weight · scale[expert]; w_unscaled [n_slots] (may be NULL) keeps the weights before. */
void moec_routing_scale(moec_routing *r, const float *scale, float *w_unscaled);
/* Its backward over the slots that still have an expert (a capacity drop has none): dscale [E] +=
 * dweight·w_unscaled (dscale may be NULL), then dweight ← dweight · scale[expert] (the router's ∂L/∂weight). */
void moec_routing_scale_backward(const moec_routing *r, const float *scale, const float *w_unscaled, float *dweight,
                                 float *dscale);
/* Refuses (one line) serving cfg causally: a non-causal router without a decode router. */
moec_status moec_router_check_servable(const moec_router_cfg *cfg, moec_error *err);

/* Hash routing's balanced table (Roller et al. 2021, MOE_SPECS §12 "balanced"): vocabulary ids
 * in descending count order (ties: lower id first), each given to the expert with the least load so
 * far — load = the summed counts of its ids, ties broken by fewer ids, then the lower index (so the
 * ids never seen spread evenly). table [V] receives the expert of each id as a float (the tensor
 * model.hash_table stores it so). Deterministic: a function of counts only. Returns 0 when out of memory. */
int moec_router_hash_balanced(const uint64_t *counts, int32_t V, int32_t E, float *table);
/* Checks a stored table [V]: every entry an integer expert in [0, E). One line naming the first bad id. */
moec_status moec_router_hash_table_check(const float *table, int64_t V, int32_t E, moec_error *err);

/* Stable top-k of v [n]: indices of the k largest values in descending order, ties to the
 * lower index; entries with mask[i] == 0 (mask may be NULL) and -inf values are never
 * chosen unless nothing else is left. Writes idx [k]. */
void moec_topk(const float *v, int n, int k, const uint8_t *mask, int32_t *idx);

#endif
