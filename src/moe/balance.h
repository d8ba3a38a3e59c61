/* balance.h — the balancing losses of the MoE layer, each a forward/backward pair, shared by
 * every router (they see a router only through its probabilities P [T, E] and its routing).
 *
 * Load-balancing loss (Switch/GShard form, Megatron normalisation: α at perfect balance):
 *   L = α · E · Σ_i f_i · P_i,   f_i = c_i / (N·k) with c_i the assignments to expert i (the
 *   router's choice before capacity; no gradient), P_i = (1/N) Σ_t P[t, i] over the same N tokens.
 *   scope micro_batch: N = the T tokens of the call;
 *         sequence:    per sequence of seq_len tokens, then the mean over sequences (DeepSeek
 *                      seq_aux, DeepSeek-V3's sequence-wise loss);
 *         global_batch: f from counts accumulated over the whole optimizer step (all micro-
 *                      batches; Qwen "Demons in the Detail"), P over the call's tokens; the caller
 *                      passes those step counts and the step's token count, so the loss and its
 *                      gradient do not depend on how the step is split into micro-batches.
 *   HF's load_balancing_loss_func uses f_i = c_i / N: HF value = k · this.
 * Router z-loss (ST-MoE): L_z = c_z · (1/T) Σ_t (logsumexp_j z[t, j])².
 *
 * Both forwards return the loss with the coefficient applied; the backwards ADD (+=) the
 * gradient of dscale · L. Sums run in a fixed order in double: thread-independent. */
#ifndef MOEC_MOE_BALANCE_H
#define MOEC_MOE_BALANCE_H

#include "moe/router.h"
#include "moe/routing.h"

#include <stdint.h>

typedef struct {
    float coef;             /* α; 0 = off */
    moec_lbl_scope scope;
    int32_t seq_len;        /* sequence scope: tokens per sequence (T % seq_len == 0) */
    int32_t k;              /* assignments per token at balance (the router's k) */
    const int64_t *global_counts; /* global scope: [E] counts over the whole step */
    int64_t global_tokens;  /* global scope: tokens of the whole step */
} moec_lbl_cfg;

/* Counts of r's chosen experts per expert [E] over tokens [t0, t1) (overwrites counts). */
void moec_routing_counts(const moec_routing *r, int E, int t0, int t1, int64_t *counts);

/* Batch MaxVio (Wang et al. 2024, Eq. 4): (max_i c_i − c̄) / c̄, c̄ = Σc / E (the load at
 * perfect balance); 0 when nothing was assigned. */
double moec_max_vio(const int64_t *counts, int E);

/* L (see above) of probs [T, E] and routing r. */
double moec_lbl_forward(const moec_lbl_cfg *c, const float *probs, const moec_routing *r, int T, int E);
/* dprobs [T, E] += dscale · ∂L/∂probs. */
void moec_lbl_backward(const moec_lbl_cfg *c, const moec_routing *r, int T, int E, float dscale, float *dprobs);

/* L_z of logits [T, E]; lse [T] receives logsumexp per token (kept for the backward). */
double moec_zloss_forward(float coef, const float *logits, int T, int E, float *lse);
/* dlogits [T, E] += dscale · ∂L_z/∂z = dscale · c_z · (2/T) · lse_t · softmax(z_t). */
void moec_zloss_backward(float coef, const float *logits, const float *lse, int T, int E, float dscale,
                         float *dlogits);

#endif
