/* qwen3_moe.c — Qwen3-MoE (HF Qwen3MoeForCausalLM): like Qwen2-MoE without the shared expert,
 * with per-head RMSNorm on q and k (before RoPE), explicit head_dim, norm_topk_prob. */
#include "model/arch.h"

extern const moec_arch moec_arch_qwen3_moe;
const moec_arch moec_arch_qwen3_moe = {
    .model_type = "qwen3_moe",
    .hf_class = "Qwen3MoeForCausalLM",
    /* optional fields and their defaults in transformers 5.24's config class (sizes excluded:
     * moec requires those); config.json is read as if these were present */
    .hf_defaults =
        "{\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":null,"
        "\"decoder_sparse_step\":1,\"eos_token_id\":null,\"hidden_act\":\"silu\","
        "\"initializer_range\":0.02,\"intermediate_size\":6144,\"max_position_embeddings\":32768,"
        "\"mlp_only_layers\":[],\"norm_topk_prob\":false,\"num_experts_per_tok\":8,"
        "\"num_key_value_heads\":4,\"output_router_logits\":false,\"pad_token_id\":null,"
        "\"rms_norm_eps\":1e-06,\"router_aux_loss_coef\":0.001,\"sliding_window\":4096,"
        "\"tie_word_embeddings\":false,\"use_cache\":true,\"use_sliding_window\":false}",
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
