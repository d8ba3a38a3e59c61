/* olmoe.c — OLMoE (HF OlmoeForCausalLM): softmax over all experts, top-k, norm_topk_prob
 * (false in released checkpoints); RMSNorm over the full q and k projections; optional clip_qkv. */
#include "model/arch.h"

extern const moec_arch moec_arch_olmoe;
const moec_arch moec_arch_olmoe = {
    .model_type = "olmoe",
    .key_n_expert = "num_experts",
    .key_ff_expert = "intermediate_size",
    .alias_n_expert = "num_local_experts",
    .swa = MOEC_SWA_REFUSED,
    .rope_theta_default = 1e4,
    .key_sliding_on = NULL,
    .has_clip_qkv = 1,
    .qk_norm = MOEC_QK_NORM_FULL,
    .attn_bias = MOEC_ATTN_BIAS_CONFIG_ALL,
    .topk_norm = MOEC_TOPK_NORM_CONFIG,
    .norm_topk_default = 0,
    .moe_block = "mlp",
    .expert_gate = "gate_proj",
    .expert_up = "up_proj",
    .expert_down = "down_proj",
};
