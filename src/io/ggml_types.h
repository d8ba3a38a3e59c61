/* ggml_types.h — the tensor types of ggml / GGUF files. The types moec computes with (F32, F16,
 * BF16, Q8_0, Q4_0) are core/dtype's formats, bit for bit the same layout: their traits, ggml
 * number, quantizer and dequantizer live there (moec_dtype_info, moec_from_f32, moec_to_f32), and
 * a GGUF tensor of one of them is used in place. This file only adds the layouts (block size,
 * bytes per block) of the other ggml types, so the reader can lay out and bounds-check any file
 * and name what it refuses. */
#ifndef MOEC_IO_GGML_TYPES_H
#define MOEC_IO_GGML_TYPES_H

#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

/* ggml_type numbers as stored in GGUF tensor infos (ggml.h); gaps are removed types. */
enum {
    MOEC_GGML_F32 = 0,
    MOEC_GGML_F16 = 1,
    MOEC_GGML_Q4_0 = 2,
    MOEC_GGML_Q8_0 = 8,
    MOEC_GGML_BF16 = 30,
};

typedef struct {
    const char *name; /* "Q4_K", ... */
    int64_t block;    /* elements per block */
    size_t bytes;     /* bytes per block */
    int has_dtype;    /* 1 when moec computes with the type: dtype is set */
    moec_dtype dtype;
} moec_ggml_layout;

/* Layout of a ggml type number into *out; 0 if the number names no ggml type. */
int moec_ggml_type_layout(uint32_t type, moec_ggml_layout *out);

/* The ggml type number of a moec dtype. */
static inline uint32_t moec_ggml_type_of(moec_dtype t) { return moec_dtype_info(t)->ggml_type; }

#endif
