/* arch.h — architectures as data. One generic MoE transformer runs every supported Hugging
 * Face model_type; each model_type is a small moec_arch description (a file in src/model/arch/):
 * which config.json keys hold which hyper-parameter, how its tensors are named, and its
 * routing / attention semantics. Adding an architecture = one file + one line in arch.c. */
#ifndef MOEC_MODEL_ARCH_H
#define MOEC_MODEL_ARCH_H

#include <stddef.h>

typedef enum {
    MOEC_QK_NORM_NONE = 0,
    MOEC_QK_NORM_HEAD, /* RMSNorm over each head's head_dim (Qwen3): weight [head_dim] */
    MOEC_QK_NORM_FULL  /* RMSNorm over the whole projection (OLMoE): weight [n_head*head_dim] */
} moec_qk_norm;

typedef enum {
    MOEC_ATTN_BIAS_NONE = 0,
    MOEC_ATTN_BIAS_QKV,       /* q, k, v biased iff config "qkv_bias" (default true), o never (Qwen2) */
    MOEC_ATTN_BIAS_CONFIG_ALL /* q, k, v, o biased iff config "attention_bias" (Qwen3, OLMoE) */
} moec_attn_bias;

typedef enum {
    MOEC_TOPK_NORM_ALWAYS = 0, /* softmax over the top-k logits (Mixtral) */
    MOEC_TOPK_NORM_CONFIG      /* config "norm_topk_prob" decides, with a per-arch default */
} moec_topk_norm;

typedef enum {
    MOEC_SWA_REFUSED = 0, /* a non-null "sliding_window" is refused (transformers ignores it in eager attention) */
    MOEC_SWA_ALL,         /* "sliding_window" (gated by key_sliding_on when set) applies to every layer */
    MOEC_SWA_LAYER_TYPES  /* per layer: config "layer_types", else transformers' default from max_window_layers */
} moec_swa;

typedef struct {
    const char *model_type;
    const char *hf_class;       /* transformers' *ForCausalLM class ("architectures") */
    const char *hf_defaults;    /* JSON object: transformers' defaults of the optional config fields */
    /* config.json keys */
    const char *key_n_expert;   /* "num_local_experts" / "num_experts" */
    const char *alias_n_expert; /* the other spelling transformers' attribute_map accepts (NULL: none) */
    const char *key_ff_expert;  /* "intermediate_size" / "moe_intermediate_size" */
    const char *key_ff_shared;  /* NULL if the arch has no shared expert */
    int reads_head_dim;         /* config "head_dim" is honoured (else head_dim = hidden / heads, as HF does) */
    int has_dense_layers;       /* reads mlp_only_layers + decoder_sparse_step (+ intermediate_size for dense MLPs) */
    const char *key_sliding_on; /* NULL: a non-null "sliding_window" is in force; else the bool key that enables it */
    moec_swa swa;               /* which layers a sliding window applies to */
    double rope_theta_default;  /* transformers' default_theta for the config class */
    int has_clip_qkv;
    moec_qk_norm qk_norm;
    moec_attn_bias attn_bias;
    moec_topk_norm topk_norm;
    int norm_topk_default;
    /* tensor names below "model.layers.N." */
    const char *moe_block;                   /* "block_sparse_moe" / "mlp" */
    const char *expert_gate, *expert_up, *expert_down; /* below "<moe_block>.experts.E." */
    const char *shared_expert;               /* below "<moe_block>.", NULL if none */
    const char *shared_expert_gate;          /* below "<moe_block>.", NULL if none */
} moec_arch;

/* NULL if model_type is not supported. */
const moec_arch *moec_arch_find(const char *model_type);
/* Comma-separated list of supported model types, for error messages. */
const char *moec_arch_list(void);

#endif
