/* tensors.h — the one list of a model's tensors: Hugging Face name, role, layer, expert and
 * shape, derived from hparams and the architecture description. The inference loader binds
 * checkpoints by it and the trainer lays out, initialises and saves parameters by it, so both
 * always agree on names and shapes. */
#ifndef MOEC_MODEL_TENSORS_H
#define MOEC_MODEL_TENSORS_H

#include "model/hparams.h"

#include <stdint.h>

typedef enum {
    MOEC_T_EMBED = 0, MOEC_T_OUT_NORM, MOEC_T_LM_HEAD,
    MOEC_T_ATTN_NORM, MOEC_T_FFN_NORM,
    MOEC_T_WQ, MOEC_T_WK, MOEC_T_WV, MOEC_T_WO, MOEC_T_BQ, MOEC_T_BK, MOEC_T_BV, MOEC_T_BO,
    MOEC_T_Q_NORM, MOEC_T_K_NORM,
    MOEC_T_MLP_GATE, MOEC_T_MLP_UP, MOEC_T_MLP_DOWN,
    MOEC_T_ROUTER, MOEC_T_ROUTER_BIAS, MOEC_T_EXP_GATE, MOEC_T_EXP_UP, MOEC_T_EXP_DOWN,
    MOEC_T_SH_GATE, MOEC_T_SH_UP, MOEC_T_SH_DOWN, MOEC_T_SH_GATE_W,
    /* expert kinds and depth routers (xkind) */
    MOEC_T_GATE_MAP,                     /* MoE++ gating residual W_g^l [E_r, E_r] */
    MOEC_T_CONST_W, MOEC_T_CONST_V,      /* MoE++ constant expert j: W_c [2, d], v [d] */
    MOEC_T_ROUTER_PROJ,                  /* RMoE W1^l [r, d] (the router W2^l is then [E_r, r]) */
    MOEC_T_RNN_W_IH, MOEC_T_RNN_W_HH,    /* RMoE GRU shared by all layers: [3r, r] each (r, z, n) */
    MOEC_T_RNN_B_IH, MOEC_T_RNN_B_HH,    /* [3r] each */
    MOEC_T_ROUTER_ITER,                  /* Chain-of-Experts: the router of iteration t >= 1 (expert = t) [E_r, d] */
    MOEC_T_ROUTER_SCALE,                 /* MoGE router_scale [1, E_r] (Pangu's shape; a vector to the code) */
    MOEC_T_HASH_TABLE,                   /* hash routing's balanced table [V]: expert of each id (fp32 integers) */
    MOEC_T_ROLE_COUNT
} moec_tensor_role;

typedef struct {
    char name[160];
    moec_tensor_role role;
    int32_t layer, expert; /* -1 when not applicable */
    int n_dims;            /* 1 (norms, biases) or 2 ([out, in]) */
    int64_t shape[2];
    int64_t numel;
} moec_tensor_spec;

/* Fills specs (if non-NULL, room for the returned count) and returns the number of tensors. */
int64_t moec_model_tensor_specs(const moec_hparams *hp, moec_tensor_spec *specs);

/* Number of tensors and of elements (sum of numel) without building the list; returns 0 if
 * the element count overflows 64 bits (a config no machine can hold), 1 otherwise. */
int moec_model_tensor_total(const moec_hparams *hp, int64_t *n_tensors, uint64_t *n_elems);

/* Calls fn on each spec in list order (the spec is borrowed for the call) until fn returns
 * nonzero; returns 1 if fn stopped the walk. Needs no memory for the list, so a checkpoint can
 * be checked against a config before anything config-sized is allocated. */
typedef int (*moec_tensor_visit_fn)(const moec_tensor_spec *spec, void *ctx);
int moec_model_tensor_visit(const moec_hparams *hp, moec_tensor_visit_fn fn, void *ctx);

/* 1 for vectors (norm weights, biases, and the router scale, [1, E] in Pangu's checkpoints): they
 * load as fp32, stay fp32 when quantized, initialise to 1 (0 for biases) and get no weight decay. */
static inline int moec_tensor_is_vector(const moec_tensor_spec *s) {
    return s->n_dims == 1 || s->role == MOEC_T_ROUTER_SCALE;
}

#endif
