/* model_train.h — the generic MoE transformer's training forward and backward (fp32), on the
 * parameters of train/params.h: one micro-batch of B sequences × S tokens, next-token
 * cross-entropy plus each MoE layer's load-balancing and z losses. Same architecture semantics
 * as the inference forward: both drive the one decoder layer (model/layer.c); gradients
 * accumulate into tp->g. */
#ifndef MOEC_TRAIN_MODEL_TRAIN_H
#define MOEC_TRAIN_MODEL_TRAIN_H

#include "train/params.h"

typedef struct moec_tmodel moec_tmodel;

/* Per MoE layer, per micro-batch (zeros for dense layers). */
typedef struct {
    int64_t tokens;      /* tokens routed */
    int64_t assigned;    /* slots that chose an expert (before capacity) */
    int64_t dropped;     /* of those, dropped by capacity */
    double entropy_sum;  /* Σ_t entropy of the router's probabilities (nats) */
    int64_t true_assigned; /* slots that chose an FFN expert (not a null/copy/constant one), before capacity */
} moec_tlayer_stats;

typedef struct {
    double ce;        /* mean next-token cross-entropy over the valid targets */
    int64_t n_targets; /* valid targets in the micro-batch */
    double aux, z;    /* load-balancing and z losses summed over MoE layers (coefficients applied) */
    const int32_t *expert_counts; /* [n_layer, E] tokens per expert in this micro-batch (borrowed; 0 rows for dense
                                     layers); E = hp->route.n_expert, the router width (FFN experts first) */
    const moec_tlayer_stats *layers; /* [n_layer] (borrowed) */
} moec_tstep;

/* Workspace (activations, caches, scratch) for micro-batches of B × S tokens. aux_coef / z_coef
 * >= 0 override the config's router_aux_loss_coef / router_z_loss_coef (Megatron normalisation);
 * < 0 keeps the config's. */
moec_status moec_tmodel_new(moec_tmodel **out, moec_tparams *tp, int B, int S, float aux_coef, float z_coef,
                            moec_error *err);
void moec_tmodel_free(moec_tmodel *m); /* accepts NULL */
size_t moec_tmodel_bytes(const moec_tmodel *m);
/* The hparams the model trains with (the config's, with the overrides). Borrowed. */
const moec_hparams *moec_tmodel_hparams(const moec_tmodel *m);
/* Global-batch LBL: counts [n_layer, E] of the whole optimizer step and its token count, used by
 * the following steps until changed (NULL: each micro-batch's own counts). Borrowed. */
void moec_tmodel_set_global_counts(moec_tmodel *m, const int64_t *counts, int64_t tokens);
/* Router jitter noise (config router_jitter_noise) for the following steps: on = 1 draws it from
 * this seed (the trainer derives the seed from the run seed, the step and the micro-batch, so a
 * resumed run draws the same noise); on = 0 (the default; evaluation) turns it off. */
void moec_tmodel_set_noise(moec_tmodel *m, int on, uint64_t seed);
/* The optimizer step (0-based) the following steps belong to, the one place routing learns it:
 * routers with a schedule follow it (EvoMoE's τ; evaluation's serving draws are seeded by it),
 * and with train = 1 ReXMoE's Progressive Scaling Routing (config moec_rex_psr_*) masks the
 * candidates that step leaves out of each layer's pool (moe/router.h moec_rex_mask, drawn from
 * seed, step + 1 and the layer only), so a resumed run continues both exactly. train = 0 (the
 * default; evaluation and inference) routes over the whole pool. Step 0 by default. */
void moec_tmodel_set_step(moec_tmodel *m, int64_t step, int train, uint64_t seed);

/* Label smoothing ε of the following training steps (default: the config's moec_label_smoothing;
 * 0 = off). A step with backward then optimises and reports as ce the label-smoothed
 * cross-entropy (1 − ε)·CE + ε·mean_v(−ln p_v), torch's cross_entropy(label_smoothing=ε); a step
 * without backward (evaluation) always reports the plain CE. */
void moec_tmodel_set_label_smoothing(moec_tmodel *m, float eps);

/* THOR's two passes (router two_pass; routers/thor.c): the same micro-batch through m1 and m2
 * (two workspaces on the same parameters, each with its own noise stream, set by the caller) and
 *   loss = ½(CE1 + CE2) + (α/4) · mean over valid targets of Σ_v (p1 − p2)(ln p1 − ln p2)
 *          + ½(aux1 + aux2) + ½(z1 + z2),
 * half THOR's CE1 + CE2 + α·½·symKL; with backward the CE terms are label-smoothed (m1's ε; THOR's
 * preset sets moec_label_smoothing 0.1, as the paper's recipe). With backward, adds scale · ∂loss
 * into tp->g (both passes).
 * out: m1's routing statistics, ce = ½(CE1 + CE2), aux includes the consistency term. */
moec_status moec_tmodel_pair_step(moec_tmodel *m1, moec_tmodel *m2, const int32_t *tokens, float scale, float alpha,
                                  int backward, moec_tstep *out, moec_error *err);


/* tokens [B, S + 1]: inputs are tokens[:, :S], targets tokens[:, 1:]. n_valid [B] (or NULL =
 * all S + 1) limits row b to its first n_valid[b] tokens: later targets are ignored (padding of
 * evaluation windows). Runs the forward and, if backward, the backward of
 * loss = ce + aux + z  scaled by `scale` (1/accumulation steps), adding into tp->g.
 * Token ids must be in [0, n_vocab) (checked: MOEC_ERR_INVALID_ARG). A step with backward is a
 * training step: the routing capacity factor applies to it only (evaluation is dropless). */
moec_status moec_tmodel_step(moec_tmodel *m, const int32_t *tokens, const int32_t *n_valid, float scale,
                             int backward, moec_tstep *out, moec_error *err);

/* The logits [B·S, V] of the last step with backward = 0 (a step with backward overwrites them
 * with their gradient). Borrowed, valid until the next step. */
const float *moec_tmodel_logits(const moec_tmodel *m);

#endif
