/* params.h — trainable parameters: every tensor of the model (model/tensors.h) in one fp32
 * allocation with an offset table, plus same-shaped gradient and AdamW moment buffers.
 * Initialised like Hugging Face (normal(0, initializer_range) for matrices, 1 for norm weights,
 * 0 for biases), loaded from any checkpoint moec reads, and saved as HF safetensors. */
#ifndef MOEC_TRAIN_PARAMS_H
#define MOEC_TRAIN_PARAMS_H

#include "core/dtype.h"
#include "model/tensors.h"
#include "moec.h"

#include <stddef.h>

typedef struct {
    moec_hparams hp;
    int64_t n_tensors;
    moec_tensor_spec *specs; /* [n_tensors] */
    size_t *offset;          /* [n_tensors] first float of each tensor */
    size_t n_floats;
    float *w;                /* [n_floats] parameters (fp32 master weights) */
    float *g;                /* [n_floats] gradients */
} moec_tparams;

/* Lays out and allocates parameters and gradients (zeroed). A config whose sizes overflow is
 * MOEC_ERR_FORMAT; one that cannot fit in this machine is MOEC_ERR_OOM before allocating. */
moec_status moec_tparams_new(moec_tparams *tp, const moec_hparams *hp, moec_error *err);
void moec_tparams_free(moec_tparams *tp); /* accepts a zeroed struct */

/* Pointer to a tensor's parameters (grad = 0) or gradients (grad = 1); NULL if the model has
 * no such tensor. layer / expert are -1 where not applicable. */
float *moec_tparams_find(const moec_tparams *tp, int grad, moec_tensor_role role, int layer, int expert);

/* HF initialisation with the given std (config "initializer_range", usually 0.02). */
void moec_tparams_init(moec_tparams *tp, uint64_t seed, float std);

/* Loads the weights of a checkpoint directory (any dtype moec reads); names and shapes must
 * match exactly (the same checks as inference). */
moec_status moec_tparams_load(moec_tparams *tp, const char *dir, moec_error *err);

/* The same checks as moec_tparams_load without allocating anything config-sized: call it
 * before moec_tparams_new so a checkpoint that does not match its config names the first
 * missing or misshapen tensor instead of failing on memory the config asks for. */
moec_status moec_tparams_check_dir(const moec_hparams *hp, const char *dir, moec_error *err);

/* Writes DIR/model.safetensors (F32 or BF16) atomically. */
moec_status moec_tparams_save(const moec_tparams *tp, const float *data, const char *path, moec_dtype dtype,
                              moec_error *err);

/* 1 if weight decay applies to tensor i (matrices; not norms or biases). */
static inline int moec_tparams_decays(const moec_tparams *tp, int64_t i) { return !moec_tensor_is_vector(&tp->specs[i]); }

#endif
