/* moec.h — the public API of moec, a Mixture-of-Experts engine.
 *
 * Narrow on purpose: opaque handles, plain params structs, status codes. The CLI and any
 * future server depend on this header only, never on tensor internals (src/).
 *
 * Errors: every fallible call returns a moec_status and, when `err` is non-NULL, writes a
 * one-line message into it. The library never exits the process.
 * Ownership: "caller frees" / "borrowed" is stated on every returned pointer.
 */
#ifndef MOEC_H
#define MOEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum {
    MOEC_OK = 0,
    MOEC_ERR_IO,          /* a file could not be opened, read, mapped or written */
    MOEC_ERR_FORMAT,      /* a file is malformed (bad header, offsets, JSON, shape, dtype) */
    MOEC_ERR_UNSUPPORTED, /* a well-formed input asks for a feature moec does not have */
    MOEC_ERR_INVALID_ARG, /* a caller-supplied value is out of range (token id, flag) */
    MOEC_ERR_OOM,         /* an allocation failed */
    MOEC_ERR_CONTEXT_FULL /* the session's KV cache has no room for more tokens */
} moec_status;

#define MOEC_ERROR_MSG_MAX 512

/* Per-call error context: the message of the last failure, one line, no trailing newline. */
typedef struct {
    moec_status status;
    char msg[MOEC_ERROR_MSG_MAX];
} moec_error;

/* A short name for a status ("io error", "format error", ...). Borrowed, static. */
const char *moec_status_name(moec_status s);

/* ---------------------------------------------------------------- model */

typedef struct moec_model moec_model;

typedef struct {
    int32_t n_threads; /* 0 = number of cores */
} moec_model_params;

moec_model_params moec_model_default_params(void);

/* Opens a Hugging Face checkpoint directory (config.json + model.safetensors or shards with
 * model.safetensors.index.json), or a GGUF file (llama.cpp's format: architectures llama with
 * experts, qwen2moe, qwen3moe, olmoe; tensors F32, F16, BF16, Q8_0 or Q4_0, used in
 * place). Weights are mmapped read-only. On success *out owns the model (free with
 * moec_model_close). */
moec_status moec_model_open(moec_model **out, const char *dir, const moec_model_params *params,
                            moec_error *err);
void moec_model_close(moec_model *model); /* accepts NULL */

typedef struct {
    const char *model_type;   /* borrowed: "mixtral", "qwen2_moe", ... */
    const char *weight_dtype; /* borrowed: dominant storage dtype, "BF16" / "F16" / "F32" / "Q8_0" / "Q4_0" */
    char weight_formats[96];  /* every storage dtype with its share of the weight bytes: "Q4_0 71%, F32 29%" */
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim;
    int32_t n_expert, n_expert_used, n_ff_expert, n_ff_dense, n_ff_shared;
    int32_t n_layer_moe;      /* layers with a routed MoE block; the rest are dense */
    int32_t max_position_embeddings;
    int64_t n_params_total;   /* every parameter in the checkpoint */
    int64_t n_params_active;  /* parameters one token touches (top-k experts, no unused experts) */
    int64_t n_bytes_weights;  /* bytes of tensor data across all safetensors files */
    int64_t n_bytes_active;   /* weight bytes one decode step reads: every tensor but the unused experts,
                                 and one row of the embedding table (untied) */
    float rope_theta, rms_norm_eps;
    int32_t norm_topk_prob, tie_word_embeddings, attention_bias, qk_norm, shared_expert;
    int32_t n_threads;        /* threads forward passes use */
    int32_t bos_token_id;     /* -1 if none */
    int32_t n_eos, eos_token_ids[8]; /* from config.json eos_token_id (int or list) */
    int32_t n_ctx_max;        /* longest session: max_position_embeddings (x factor for "dynamic" RoPE) */
    const char *rope_type;    /* borrowed: "default", "linear", "dynamic", "yarn", "llama3" */
    int32_t sliding_window;   /* 0 = none; else keys per query in the layers that use it */
    char routing[192];        /* how tokens pick experts, e.g. "topk: softmax over all experts, top-2, renormalised" */
    int32_t shared_expert_gated; /* 1: the shared expert is sigmoid-gated (Qwen2-MoE), 0: added unweighted */
    int32_t add_bos_token;    /* 1: prompts start with bos_token_id by default (GGUF tokenizer.ggml.add_bos_token) */
    int32_t n_route_expert;   /* router width: the FFN experts a layer routes over (n_expert, or r x n_expert with
                                 ReXMoE), then the zero-computation (constant, copy, null) experts; 1 if dense */
} moec_model_info;

/* Borrowed, valid while the model is open. */
const moec_model_info *moec_model_get_info(const moec_model *model);

/* The memory read bandwidth decode runs into: one pass over the model's weight bytes (the pages
 * decode reads, wherever they live) with the model's threads, 256-byte vector loads; GB/s (1e9). */
moec_status moec_model_read_bandwidth(const moec_model *model, double *gb_per_s, moec_error *err);

/* What this process runs on, for benchmark output: the CPU's vector features and the kernel family
 * in use, e.g. "cpu: avx2 fma f16c avx512f ... | kernels: avx512". Static storage. */
const char *moec_system_info(void);

/* ---------------------------------------------------------------- GGUF export */

typedef enum {
    MOEC_EXPORT_F32 = 0,
    MOEC_EXPORT_F16,
    MOEC_EXPORT_BF16,
    MOEC_EXPORT_Q8_0,
    MOEC_EXPORT_Q4_0
} moec_export_type;

typedef struct {
    moec_export_type type;     /* matrices; norms, biases and routers stay F32 (as llama.cpp's converter) */
    const char *tokenizer_pre; /* tokenizer.ggml.pre; NULL: detected from tokenizer.json */
    int32_t no_tokenizer;      /* 1: write no vocabulary (tokenizer.ggml.model = "none") */
} moec_gguf_export_params;

moec_gguf_export_params moec_gguf_export_default_params(void); /* BF16, detect, with tokenizer */

/* Writes the Hugging Face checkpoint in model_dir (with its tokenizer.json) as a GGUF file that
 * llama.cpp loads: metadata and tensor names as llama.cpp's convert_hf_to_gguf.py writes them
 * (see docs/formats.md). A model llama.cpp cannot express (dense layers, a top-k normalisation
 * its architecture does not use, ...) is MOEC_ERR_UNSUPPORTED naming the reason. The file is
 * written atomically. */
moec_status moec_export_gguf(const char *model_dir, const char *out_path, const moec_gguf_export_params *params,
                             moec_error *err);

/* ---------------------------------------------------------------- session (KV cache) */

typedef struct moec_session moec_session;

/* A session holds the KV cache for one sequence of at most n_ctx tokens
 * (0 = the model's max_position_embeddings, capped at 4096; at most info.n_ctx_max). Caller frees. */
moec_status moec_session_new(moec_session **out, moec_model *model, int32_t n_ctx, moec_error *err);
void moec_session_free(moec_session *s); /* accepts NULL */
int32_t moec_session_n_past(const moec_session *s);
void moec_session_reset(moec_session *s);

/* Runs n tokens after the ones already in the session (prefill when n > 1, decode when n == 1)
 * and appends them to the KV cache. Writes logits to `logits`:
 *   all_logits != 0: [n, n_vocab] (every position), else [n_vocab] (last position only).
 * logits may be NULL. Token ids are checked against the vocabulary. */
moec_status moec_session_forward(moec_session *s, const int32_t *ids, int32_t n, float *logits,
                                 int all_logits, moec_error *err);

/* Routing of the session's forwards (per-request MoE controls).
 * Experts per token for the following forwards: 1 <= k <= the model's num_experts_per_tok, or
 * 0 for the model's own k (fewer experts = less compute, usually a little higher loss). */
moec_status moec_session_set_experts_per_token(moec_session *s, int32_t k, moec_error *err);
/* Tokens routed to each expert by the session's forwards since creation or the last clear:
 * [n_layer * n_route_expert] (the router's columns: FFN experts first, then constant, copy, null),
 * rows of dense layers 0. Borrowed, valid while the session lives. */
const int64_t *moec_session_expert_counts(const moec_session *s);
/* Bytes the session allocated: KV cache, tables and scratch activations (not the weights). */
size_t moec_session_memory_bytes(const moec_session *s);
void moec_session_clear_expert_counts(moec_session *s);

/* ---------------------------------------------------------------- sampler */

typedef struct {
    float temperature; /* <= 0: greedy (argmax) */
    int32_t top_k;     /* <= 0: off */
    float top_p;       /* >= 1: off */
    uint64_t seed;
} moec_sampler_params;

typedef struct moec_sampler moec_sampler;
moec_sampler_params moec_sampler_default_params(void);
moec_status moec_sampler_new(moec_sampler **out, const moec_sampler_params *p, int32_t n_vocab,
                             moec_error *err);
void moec_sampler_free(moec_sampler *s); /* accepts NULL */
/* Picks a token id from logits [n_vocab]. Deterministic for a given seed and call sequence. */
int32_t moec_sampler_sample(moec_sampler *s, const float *logits);

/* ---------------------------------------------------------------- tokenizer */

typedef struct moec_tokenizer moec_tokenizer;

/* Loads a Hugging Face tokenizer.json (BPE: byte-level as GPT-2/Qwen/OLMoE, or SentencePiece
 * style with byte fallback as Mixtral; see docs/tokenizer.md), or the vocabulary of a GGUF file
 * (tokenizer.ggml.*, byte-level BPE "gpt2" models; see docs/formats.md). Caller frees. A loaded tokenizer
 * is read-only: encode/decode may be called from several threads at once. */
moec_status moec_tokenizer_load(moec_tokenizer **out, const char *path, moec_error *err);
void moec_tokenizer_free(moec_tokenizer *tok); /* accepts NULL */

/* Encodes UTF-8 text (len bytes) as Hugging Face `tokenizers` does with
 * add_special_tokens=False: added/special tokens in the text are matched, the normalizer and
 * pre-tokenizer run, then BPE. *ids is malloc'ed (caller frees), *n_ids its length.
 * Text that is not valid UTF-8 is MOEC_ERR_INVALID_ARG. */
moec_status moec_tokenizer_encode(const moec_tokenizer *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n_ids, moec_error *err);

/* Decodes ids to UTF-8 (skip_special != 0 drops special tokens). An id outside [0, n_vocab) is
 * MOEC_ERR_INVALID_ARG (Hugging Face drops it silently). *text is malloc'ed and
 * NUL-terminated (caller frees); *len excludes the NUL. Invalid UTF-8 from partial byte
 * sequences is replaced by U+FFFD as Hugging Face does. */
moec_status moec_tokenizer_decode(const moec_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  int skip_special, char **text, size_t *len, moec_error *err);

/* Bytes of a single token as stored after byte-level decoding (no UTF-8 repair), for streaming
 * output. Position-dependent decoder steps (Strip, Metaspace dropping the first token's leading
 * space) are not applied: a streaming caller handles those itself. Writes up to cap bytes into buf; returns the token's byte length, or -1 if the id is
 * out of range. */
int32_t moec_tokenizer_token_bytes(const moec_tokenizer *tok, int32_t id, char *buf, size_t cap);

/* Largest token id + 1; can be smaller than a model's (padded) vocab_size. */
int32_t moec_tokenizer_n_vocab(const moec_tokenizer *tok);
/* Id of a token string (e.g. "<|endoftext|>"), or -1. */
int32_t moec_tokenizer_token_id(const moec_tokenizer *tok, const char *token);

#ifdef __cplusplus
}
#endif
#endif /* MOEC_H */
