/* model.h — the loaded model: hyper-parameters, the mmapped checkpoint, and a weights table
 * that binds every tensor to its role in the generic MoE transformer. Internal to the library. */
#ifndef MOEC_MODEL_MODEL_H
#define MOEC_MODEL_MODEL_H

#include "io/safetensors.h"
#include "model/hparams.h"
#include "moe/experts.h"
#include "nn/matmul.h"

typedef struct {
    const float *attn_norm, *ffn_norm;   /* [d] */
    moec_mat wq, wk, wv, wo;             /* [H*hd, d], [Hkv*hd, d] ×2, [d, H*hd] */
    const float *bq, *bk, *bv, *bo;      /* NULL when the arch/config has none */
    const float *q_norm, *k_norm;        /* [hd] (per head) or [H*hd]/[Hkv*hd] (full); NULL if none */
    int is_moe;
    moec_ffn dense;                      /* dense layers only */
    moec_mat router;                     /* [E, d] */
    moec_ffn *experts;                   /* [E] */
    const moec_ffn **expert_ptrs;        /* [E] pointers into experts, the grouped stage's input */
    int has_shared;
    moec_ffn shared;                     /* Qwen2-MoE shared expert */
    moec_mat shared_gate;                /* [1, d] */
} moec_layer;

struct moec_model {
    moec_hparams hp;
    moec_st_set st;
    moec_model_info info;
    int n_threads;
    moec_mat tok_embd;   /* [V, d] */
    moec_mat output;     /* [V, d] (== tok_embd when tied) */
    const float *out_norm;
    moec_layer *layers;
    float *small;        /* one allocation: fp32 copies of every norm weight and bias */
    moec_ffn *expert_pool;
    const moec_ffn **expert_ptr_pool;
    struct moec_gguf_model *gguf; /* set when opened from a GGUF file: owns what st points into */
};

#endif
