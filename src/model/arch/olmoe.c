/* olmoe.c — OLMoE (HF OlmoeForCausalLM): softmax over all experts, top-k, norm_topk_prob
 * (false in released checkpoints); RMSNorm over the full q and k projections; optional clip_qkv. */
#include "model/arch.h"

extern const moec_arch moec_arch_olmoe;
const moec_arch moec_arch_olmoe = {
    .model_type = "olmoe",
    .hf_class = "OlmoeForCausalLM",
    /* optional fields and their defaults in transformers 5.24's config class (sizes excluded:
     * moec requires those); config.json is read as if these were present */
    .hf_defaults =
        "{\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":null,\"clip_qkv\":null,"
        "\"eos_token_id\":50279,\"hidden_act\":\"silu\",\"initializer_range\":0.02,"
        "\"max_position_embeddings\":4096,\"norm_topk_prob\":false,\"num_experts_per_tok\":8,"
        "\"output_router_logits\":false,\"pad_token_id\":1,\"rms_norm_eps\":1e-05,"
        "\"router_aux_loss_coef\":0.01,\"tie_word_embeddings\":false,\"use_cache\":true}",
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
