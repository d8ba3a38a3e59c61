/* qwen2_moe.c — Qwen1.5/Qwen2-MoE (HF Qwen2MoeForCausalLM): softmax over all experts, top-k,
 * renormalised only if norm_topk_prob; a shared expert scaled by sigmoid(shared_expert_gate·x);
 * q/k/v biases iff qkv_bias (default true); explicit head_dim; a sliding window on the layers
 * layer_types names; dense layers via mlp_only_layers / decoder_sparse_step. */
#include "model/arch.h"

extern const moec_arch moec_arch_qwen2_moe;
const moec_arch moec_arch_qwen2_moe = {
    .model_type = "qwen2_moe",
    .hf_class = "Qwen2MoeForCausalLM",
    /* optional fields and their defaults in transformers 5.24's config class (sizes excluded:
     * moec requires those); config.json is read as if these were present */
    .hf_defaults =
        "{\"attention_dropout\":0.0,\"bos_token_id\":null,\"decoder_sparse_step\":1,"
        "\"eos_token_id\":null,\"hidden_act\":\"silu\",\"initializer_range\":0.02,"
        "\"intermediate_size\":5632,\"max_position_embeddings\":32768,\"max_window_layers\":28,"
        "\"mlp_only_layers\":[],\"norm_topk_prob\":false,\"num_experts_per_tok\":4,"
        "\"num_key_value_heads\":16,\"output_router_logits\":false,\"pad_token_id\":null,"
        "\"qkv_bias\":true,\"rms_norm_eps\":1e-06,\"router_aux_loss_coef\":0.001,"
        "\"shared_expert_intermediate_size\":5632,\"sliding_window\":4096,"
        "\"tie_word_embeddings\":false,\"use_cache\":true,\"use_sliding_window\":false}",
    .key_n_expert = "num_experts",
    .key_ff_expert = "moe_intermediate_size",
    .key_ff_shared = "shared_expert_intermediate_size",
    .has_dense_layers = 1,
    .swa = MOEC_SWA_LAYER_TYPES,
    .rope_theta_default = 1e4,
    .reads_head_dim = 1,
    .key_sliding_on = "use_sliding_window",
    .qk_norm = MOEC_QK_NORM_NONE,
    .attn_bias = MOEC_ATTN_BIAS_QKV,
    .topk_norm = MOEC_TOPK_NORM_CONFIG,
    .norm_topk_default = 0,
    .moe_block = "mlp",
    .expert_gate = "gate_proj",
    .expert_up = "up_proj",
    .expert_down = "down_proj",
    .shared_expert = "shared_expert",
    .shared_expert_gate = "shared_expert_gate",
};
