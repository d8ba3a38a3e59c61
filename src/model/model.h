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
    float *router_bias;                  /* [E] aux-loss-free selection bias (router state), NULL if none */
    float *router_scale;                 /* [E] learnable per-expert weight scale (MoGE router_scale), NULL if none */
    moec_ffn *experts;                   /* [E] */
    const moec_ffn **expert_ptrs;        /* [E] pointers into experts, the grouped stage's input */
    int has_shared;
    moec_ffn shared;                     /* Qwen2-MoE shared expert */
    moec_mat shared_gate;                /* [1, d]; data NULL = ungated shared expert */
    /* expert kinds and depth routers (xkind; moe/moe.c) */
    moec_mat gate_map;                   /* MoE++ gating residual W_g [E_r, E_r]; data NULL = none (first MoE layer) */
    moec_mat const_w[MOEC_MAX_CONST_EXPERTS];     /* MoE++ constant experts: W_c [2, d] */
    const float *const_v[MOEC_MAX_CONST_EXPERTS]; /* and v [d] */
    moec_mat router_proj;                /* RMoE W1 [r, d]; the router is then W2 [E_r, r] */
    moec_mat rnn_w_ih, rnn_w_hh;         /* RMoE's one GRU cell [3r, r] (the same in every layer) */
    const float *rnn_b_ih, *rnn_b_hh;    /* [3r] */
    moec_mat router_iter[MOEC_MAX_COE_ITERS]; /* Chain-of-Experts: router of iteration t >= 1 ([0] unused) */
    const float *hash_table;             /* [V] hash router's balanced table (model.hash_table, every layer); NULL if none */
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

/* The weight view: moec_model's tables (tok_embd, output, out_norm, layers) are filled by
 * moec_model_bind from any source — the mmapped checkpoint, or the trainer's F32 master weights
 * and gradients — so one forward reads them all. */
#include "model/tensors.h"
/* Allocates m->layers and the expert tables for m->hp (m zeroed otherwise). */
moec_status moec_model_alloc_tables(moec_model *m, moec_error *err);
/* Frees what moec_model_alloc_tables allocated. */
void moec_model_free_tables(moec_model *m);
/* Binds one tensor to its role: mat for matrices, vec (fp32) for vectors. */
void moec_model_bind(moec_model *m, const moec_tensor_spec *sp, moec_mat mat, float *vec);

#endif
