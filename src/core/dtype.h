/* dtype.h — the storage formats of weights, behind one traits table: elements per block, bytes
 * per block, and so the bytes of a row. Float formats (F32, F16, BF16) are blocks of one element;
 * the quantized ones (Q8_0, Q4_0) are ggml's blocks bit for bit (docs/formats.md), so a GGUF file's
 * Q8_0/Q4_0 tensors are used in place. Compute is fp32; kernels read the blocks directly
 * (src/nn/matmul.c), the scalar conversions here are the oracle. */
#ifndef MOEC_CORE_DTYPE_H
#define MOEC_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    MOEC_DTYPE_F32 = 0,
    MOEC_DTYPE_F16,
    MOEC_DTYPE_BF16,
    MOEC_DTYPE_Q8_0, /* 32 int8 with one fp16 scale: value = d * q */
    MOEC_DTYPE_Q4_0, /* 32 4-bit with one fp16 scale: value = d * (q - 8) */
    MOEC_DTYPE_COUNT
} moec_dtype;

typedef struct {
    const char *name;   /* "F32", "Q8_0", ... (the safetensors / GGUF spelling) */
    int64_t block;      /* elements per block */
    size_t block_bytes; /* bytes per block */
    int quantized;      /* 1 for the block formats with a scale */
    uint32_t ggml_type; /* the ggml_type number of the same layout in GGUF files (io/ggml_types.h) */
} moec_dtype_traits;

/* The moec dtype whose name is s ("Q8_0", ...) or whose ggml number is ggml_type; 0 if none. */
int moec_dtype_by_name(const char *s, moec_dtype *out);
int moec_dtype_by_ggml(uint32_t ggml_type, moec_dtype *out);

/* Traits of t; aborts on a value outside the enum (an unknown format never passes silently). */
const moec_dtype_traits *moec_dtype_info(moec_dtype t);
const char *moec_dtype_name(moec_dtype t);

/* Bytes of n elements of t; n must be a multiple of the block (rows of quantized weights are
 * whole blocks: readers check it when they load). */
size_t moec_row_bytes(moec_dtype t, int64_t n);

/* ggml's Q8_0 and Q4_0 blocks (ggml-common.h): the scale d is IEEE fp16. Q4_0 packs element j in
 * the low nibble of qs[j] and element j + 16 in the high nibble, for j < 16. */
#define MOEC_QBLOCK 32
typedef struct {
    uint16_t d;
    int8_t qs[MOEC_QBLOCK];
} moec_block_q8_0;
typedef struct {
    uint16_t d;
    uint8_t qs[MOEC_QBLOCK / 2];
} moec_block_q4_0;
_Static_assert(sizeof(moec_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(moec_block_q4_0) == 18, "Q4_0 block is 18 bytes");

static inline float moec_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round-to-nearest-even, NaN kept quiet (as torch does). */
static inline uint16_t moec_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float moec_f16_to_f32(uint16_t h);
/* IEEE half from fp32, round to nearest even (NaN stays NaN, overflow to inf): ggml's
 * GGML_FP32_TO_FP16 on F16C hardware, so quantized scales match llama.cpp's bit for bit. */
uint16_t moec_f32_to_f16(float f);

/* Converts n elements of t starting at src (any alignment) to fp32 (dequantizes; n a multiple of
 * the block). */
void moec_to_f32(float *dst, const void *src, moec_dtype t, size_t n);

/* Converts n fp32 values to t into dst (moec_row_bytes(t, n) bytes; n a multiple of the block):
 * the one quantizer. F16/BF16 round to nearest even; Q8_0 and Q4_0 are ggml's reference
 * quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref) bit for bit:
 *   Q8_0: d = max|x| / 127, q = roundf(x / d) (ties away from zero);
 *   Q4_0: m = the x of largest |x| (first one on ties), d = m / -8,
 *         q = min(15, (int8_t)(x / d + 8.5)) (truncation toward zero). */
void moec_from_f32(void *dst, const float *src, moec_dtype t, size_t n);

#endif
