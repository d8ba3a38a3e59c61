/* mixtral.c — Mixtral (HF MixtralForCausalLM): w = softmax over the top-k router logits,
 * experts w1 (gate) / w3 (up) / w2 (down) under block_sparse_moe, no biases, no QK norm. */
#include "model/arch.h"

extern const moec_arch moec_arch_mixtral;
const moec_arch moec_arch_mixtral = {
    .model_type = "mixtral",
    .key_n_expert = "num_local_experts",
    .key_ff_expert = "intermediate_size",
    .reads_head_dim = 1,
    .alias_n_expert = "num_experts",
    .swa = MOEC_SWA_ALL,
    .rope_theta_default = 1e6,
    .key_sliding_on = NULL,
    .qk_norm = MOEC_QK_NORM_NONE,
    .attn_bias = MOEC_ATTN_BIAS_NONE,
    .topk_norm = MOEC_TOPK_NORM_ALWAYS,
    .moe_block = "block_sparse_moe",
    .expert_gate = "w1",
    .expert_up = "w3",
    .expert_down = "w2",
};
