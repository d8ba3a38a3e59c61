/* hparams.h — hyper-parameters of the generic MoE transformer, read from a Hugging Face
 * config.json through the architecture's description. Unsupported features are errors that
 * name the config field; nothing is silently ignored. */
#ifndef MOEC_MODEL_HPARAMS_H
#define MOEC_MODEL_HPARAMS_H

#include "model/arch.h"
#include "moe/router.h"
#include "moec.h"
#include "nn/rope.h"

#include <stdint.h>

#define MOEC_MAX_LAYERS 1024

typedef struct {
    const moec_arch *arch;
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim;
    int32_t n_expert, n_expert_used;
    int32_t n_ff_expert, n_ff_dense, n_ff_shared;
    int shared_gate;     /* the shared expert has its sigmoid gate (config "moec_shared_expert_gate", default true) */
    int32_t max_pos;
    int norm_topk_prob;  /* renormalise the top-k weights to sum 1 */
    int tie_embeddings;
    int qkv_bias, o_bias;
    float clip_qkv;      /* 0 = off */
    float rope_theta, rms_eps;
    moec_rope_cfg rope;      /* rope_parameters / rope_scaling (+ rope_theta), resolved as transformers does */
    int32_t n_ctx_max;       /* longest session: max_position_embeddings (x factor for "dynamic" RoPE) */
    int32_t sliding_window;  /* keys per query in sliding-window layers (itself included); 0 = none */
    uint8_t layer_swa[MOEC_MAX_LAYERS]; /* 1 = this layer attends through the sliding window */
    int32_t bos_id;          /* -1 if config.json has none */
    int32_t n_eos, eos_ids[8];
    uint8_t layer_moe[MOEC_MAX_LAYERS]; /* 1 = routed MoE block, 0 = dense SwiGLU MLP */
    moec_router_cfg route;   /* routing and balancing (moe/router.h; moe/router_config.c reads it) */
    float label_smoothing;   /* training objective: "moec_label_smoothing" ε in [0, 1) of the label-smoothed
                                cross-entropy (train/model_train.h); 0 = plain CE; no effect on inference */
} moec_hparams;

/* Width of the router (and of every per-layer expert-count array): the FFN experts followed by
 * the zero-computation experts (moe/router.h); 1 for a dense model. */
static inline int32_t moec_hparams_n_route(const moec_hparams *hp) { return hp->n_expert > 0 ? hp->route.n_expert : 1; }

struct cJSON;
/* Adds to a parsed config.json object every optional field of arch->hf_defaults that it lacks
 * (absent keys only: an explicit null stays). Returns 0 on out-of-memory. */
int moec_hparams_apply_defaults(struct cJSON *root, const moec_arch *arch);

/* Parses config.json text (path is only used in messages). Fields it lacks take transformers'
 * defaults for the model_type (moec_hparams_apply_defaults). */
moec_status moec_hparams_parse(moec_hparams *hp, const char *json, size_t len, const char *path,
                               moec_error *err);
/* 1 when a and b are the same model: every hyper-parameter config.json sets but the special
 * token ids, which a rewritten config.json may change by design (train/hf_files.c). */
int moec_hparams_same(const moec_hparams *a, const moec_hparams *b);

/* Reads DIR/config.json. */
moec_status moec_hparams_load(moec_hparams *hp, const char *dir, moec_error *err);

#endif
