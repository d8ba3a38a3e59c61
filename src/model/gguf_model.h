/* gguf_model.h — GGUF ↔ moec's model: the one table of how architectures and tensor roles are
 * named in llama.cpp's GGUF files, the loader that turns a GGUF file into the same hparams and
 * tensor table a Hugging Face checkpoint gives (so src/model/model.c binds both the same way),
 * and the exporter (gguf_export.c).
 *
 * Mapping (llama.cpp's convert_hf_to_gguf.py): mixtral → "llama" with q/k rows permuted to
 * llama.cpp's interleaved RoPE; qwen2_moe → "qwen2moe"; qwen3_moe → "qwen3moe"; olmoe → "olmoe".
 * Experts are stacked in blk.N.ffn_{gate,up,down}_exps [E, rows, cols]. */
#ifndef MOEC_MODEL_GGUF_MODEL_H
#define MOEC_MODEL_GGUF_MODEL_H

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/hparams.h"
#include "model/tensors.h"
#include "moec.h"

typedef struct {
    const char *model_type; /* moec / HF */
    const char *gguf_arch;  /* general.architecture */
    int permute_qk;         /* llama.cpp's "llama" rotates adjacent pairs: HF q/k rows are permuted */
    int norm_topk;          /* llama.cpp renormalises the top-k weights (fixed per architecture) */
    int output_required;    /* llama.cpp's loader needs output.weight even when tied */
} moec_gguf_arch;

/* By model_type or by GGUF architecture name; NULL if not mapped. */
const moec_gguf_arch *moec_gguf_arch_by_type(const char *model_type);
const moec_gguf_arch *moec_gguf_arch_by_gguf(const char *gguf_arch, size_t len);

/* GGUF tensor name of a spec's role (experts: the stacked tensor). Returns 0 for a role the
 * mapping has no name for, or a name that does not fit. */
int moec_gguf_tensor_name(const moec_tensor_spec *sp, char *buf, size_t cap);

/* Undoes (inverse = 1) or applies llama.cpp's q/k permutation on rows of row_bytes bytes:
 * per head, rows [0, hd/2) and [hd/2, hd) are interleaved. src and dst do not overlap. */
void moec_gguf_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_head, int inverse);

/* What a GGUF-loaded model owns: the mapped file and buffers of un-permuted q/k tensors. */
typedef struct moec_gguf_model moec_gguf_model;

/* Opens path, fills *hp (as config.json would) and *st (tensors under their Hugging Face names,
 * pointing into the file in its own format (F32, F16, BF16, Q8_0, Q4_0: never dequantized) or into
 * *out's buffers: llama q/k rows
 * un-permuted). On success the caller owns *out (moec_gguf_model_free after moec_st_close). */
moec_status moec_gguf_model_load(moec_gguf_model **out, moec_hparams *hp, moec_st_set *st, const char *path,
                                 moec_error *err);
void moec_gguf_model_free(moec_gguf_model *gm); /* accepts NULL */

/* The file's tensor bytes, for moec_model_info. */
int64_t moec_gguf_model_bytes(const moec_gguf_model *gm);
/* tokenizer.ggml.add_bos_token (0 when absent, as for Hugging Face byte-level BPE). */
int moec_gguf_model_add_bos(const moec_gguf_model *gm);

#endif
