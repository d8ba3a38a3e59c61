/* ggml_types.h — the tensor types of ggml / GGUF files: block size and bytes per block of every
 * type a GGUF file can name (so the reader can lay out and bounds-check any file), and the one
 * place where moec converts them: F32/F16/BF16/Q8_0 → fp32 (dequantization) and fp32 → the
 * types `moec export gguf` writes (F32, F16, BF16, Q8_0).
 *
 * Deliberately not a kernel library: moec's matmuls have no Q8_0 path yet, so Q8_0 weights are
 * dequantized to fp32 at load (src/model/gguf_model.c calls moec_ggml_to_f32). A quantized
 * kernel would read the blocks described here directly. */
#ifndef MOEC_IO_GGML_TYPES_H
#define MOEC_IO_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* ggml_type numbers as stored in GGUF tensor infos (ggml.h); gaps are removed types. */
enum {
    MOEC_GGML_F32 = 0,
    MOEC_GGML_F16 = 1,
    MOEC_GGML_Q8_0 = 8,
    MOEC_GGML_BF16 = 30,
};

#define MOEC_GGML_QK8_0 32 /* Q8_0 block: fp16 scale d, then 32 int8 q; value = d * q */

typedef struct {
    const char *name; /* NULL for a number that is not a ggml type */
    int64_t block;    /* elements per block */
    size_t bytes;     /* bytes per block */
} moec_ggml_traits;

/* Traits of a ggml type number, or NULL if the number names no type. Borrowed, static. */
const moec_ggml_traits *moec_ggml_type_traits(uint32_t type);

/* 1 for the types moec_ggml_to_f32 converts (F32, F16, BF16, Q8_0). */
int moec_ggml_type_readable(uint32_t type);

/* Converts n elements (n a multiple of the type's block) of a readable type at src (any
 * alignment) to fp32. */
void moec_ggml_to_f32(float *dst, const void *src, uint32_t type, size_t n);

/* Converts n fp32 values to F32, F16, BF16 or Q8_0 (n a multiple of 32 for Q8_0) into dst, which
 * holds n / block * bytes bytes. Rounding as ggml's reference quantizers and gguf-py: F16 and
 * BF16 round to nearest even; Q8_0 d = max|x| / 127 stored as F16, q = round(x / d). */
void moec_ggml_from_f32(void *dst, const float *src, uint32_t type, size_t n);

/* IEEE half from fp32, round to nearest even (NaN stays NaN, overflow to inf). */
uint16_t moec_f32_to_f16(float f);

#endif
