/* dtype.c — scalar dtype conversions (the oracle; hot paths convert inside SIMD kernels). */
#include "core/dtype.h"

#include <math.h>

const char *moec_dtype_name(moec_dtype t) {
    switch (t) {
    case MOEC_DTYPE_F32: return "F32";
    case MOEC_DTYPE_F16: return "F16";
    case MOEC_DTYPE_BF16: return "BF16";
    default: return "?";
    }
}

float moec_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void moec_to_f32(float *dst, const void *src, moec_dtype t, size_t n) {
    const unsigned char *p = src;
    switch (t) {
    case MOEC_DTYPE_F32: memcpy(dst, src, n * 4); break;
    case MOEC_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = moec_bf16_to_f32(h);
        }
        break;
    case MOEC_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = moec_f16_to_f32(h);
        }
        break;
    default: break;
    }
}
