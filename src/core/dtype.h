/* dtype.h — storage dtypes of weights and their conversions to fp32 (compute is fp32). */
#ifndef MOEC_CORE_DTYPE_H
#define MOEC_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { MOEC_DTYPE_F32 = 0, MOEC_DTYPE_F16, MOEC_DTYPE_BF16, MOEC_DTYPE_COUNT } moec_dtype;

static inline size_t moec_dtype_size(moec_dtype t) { return t == MOEC_DTYPE_F32 ? 4 : 2; }
const char *moec_dtype_name(moec_dtype t);

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

/* Converts n elements of dtype t starting at src (any alignment) to fp32. */
void moec_to_f32(float *dst, const void *src, moec_dtype t, size_t n);

#endif
