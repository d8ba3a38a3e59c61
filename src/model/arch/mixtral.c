/* mixtral.c — Mixtral (HF MixtralForCausalLM): w = softmax over the top-k router logits,
 * experts w1 (gate) / w3 (up) / w2 (down) under block_sparse_moe, no biases, no QK norm. */
#include "model/arch.h"

extern const moec_arch moec_arch_mixtral;
const moec_arch moec_arch_mixtral = {
    .model_type = "mixtral",
    .hf_class = "MixtralForCausalLM",
    /* optional fields and their defaults in transformers 5.24's config class (sizes excluded:
     * moec requires those); config.json is read as if these were present */
    .hf_defaults =
        "{\"attention_dropout\":0.0,\"bos_token_id\":1,\"eos_token_id\":2,\"head_dim\":null,"
        "\"hidden_act\":\"silu\",\"initializer_range\":0.02,\"max_position_embeddings\":131072,"
        "\"num_experts_per_tok\":2,\"num_key_value_heads\":8,\"output_router_logits\":false,"
        "\"pad_token_id\":null,\"rms_norm_eps\":1e-05,\"router_aux_loss_coef\":0.001,"
        "\"router_jitter_noise\":0.0,\"sliding_window\":null,\"tie_word_embeddings\":false,"
        "\"use_cache\":true}",
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
