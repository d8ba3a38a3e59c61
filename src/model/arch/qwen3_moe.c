/* qwen3_moe.c — Qwen3-MoE (HF Qwen3MoeForCausalLM): like Qwen2-MoE without the shared expert,
 * with per-head RMSNorm on q and k (before RoPE), explicit head_dim, norm_topk_prob. */
#include "model/arch.h"

extern const moec_arch moec_arch_qwen3_moe;
const moec_arch moec_arch_qwen3_moe = {
    .model_type = "qwen3_moe",
    .key_n_expert = "num_experts",
    .key_ff_expert = "moe_intermediate_size",
    .has_dense_layers = 1,
    .reads_head_dim = 1,
    .alias_n_expert = "num_local_experts",
    .swa = MOEC_SWA_ALL,
    .rope_theta_default = 1e4,
    .key_sliding_on = "use_sliding_window",
    .qk_norm = MOEC_QK_NORM_HEAD,
    .attn_bias = MOEC_ATTN_BIAS_CONFIG_ALL,
    .topk_norm = MOEC_TOPK_NORM_CONFIG,
    .norm_topk_default = 0,
    .moe_block = "mlp",
    .expert_gate = "gate_proj",
    .expert_up = "up_proj",
    .expert_down = "down_proj",
};
