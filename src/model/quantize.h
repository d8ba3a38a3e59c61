/* quantize.h — `moec quantize`: a checkpoint directory rewritten with its matrices in Q8_0 or
 * Q4_0 (the U8 block convention of docs/formats.md, "Quantized weights"), which moec loads and
 * runs with the quantized kernels. Policy (docs/formats.md): expert, shared-expert, dense-MLP and
 * attention matrices take the chosen type; token embeddings and lm_head take Q8_0 for both (the
 * output layer is the most sensitive one, as llama.cpp keeps it above Q4_0); routers (gate,
 * router projections, CoE/MoE++ extras, shared-expert gate, RMoE GRU) keep their dtype, or F32
 * with keep_router_f32; vectors (norms, biases) are F32. A matrix whose rows are not whole
 * 32-element blocks is an error (quantized rows are whole blocks). */
#ifndef MOEC_MODEL_QUANTIZE_H
#define MOEC_MODEL_QUANTIZE_H

#include "core/dtype.h"
#include "moec.h"

typedef struct {
    moec_dtype type;     /* MOEC_DTYPE_Q8_0 or MOEC_DTYPE_Q4_0 */
    int keep_router_f32; /* routers as F32 instead of their source dtype */
    int n_quantized;     /* out: matrices written quantized */
    int64_t bytes_in, bytes_out; /* out: tensor bytes before and after */
} moec_quantize_params;

/* Writes out_dir (which must not exist) from the checkpoint directory in_dir: config.json and the
 * tokenizer / generation files copied, model.safetensors quantized. Atomic: everything is written
 * into a temporary sibling directory that is renamed to out_dir last. */
moec_status moec_quantize_checkpoint(const char *in_dir, const char *out_dir, moec_quantize_params *p, moec_error *err);

#endif
