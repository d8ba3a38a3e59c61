/* dtype.c — scalar dtype conversions (the oracle; hot paths convert inside SIMD kernels). */
#include "core/dtype.h"

#include <math.h>

#include "core/error.h"

static const moec_dtype_traits k_traits[MOEC_DTYPE_COUNT] = {
    [MOEC_DTYPE_F32] = {"F32", 1, 4, 0},
    [MOEC_DTYPE_F16] = {"F16", 1, 2, 0},
    [MOEC_DTYPE_BF16] = {"BF16", 1, 2, 0},
    [MOEC_DTYPE_Q8_0] = {"Q8_0", MOEC_QBLOCK, sizeof(moec_block_q8_0), 1},
    [MOEC_DTYPE_Q4_0] = {"Q4_0", MOEC_QBLOCK, sizeof(moec_block_q4_0), 1},
};

const moec_dtype_traits *moec_dtype_info(moec_dtype t) {
    MOEC_ASSERT((unsigned)t < MOEC_DTYPE_COUNT);
    return &k_traits[t];
}

const char *moec_dtype_name(moec_dtype t) { return (unsigned)t < MOEC_DTYPE_COUNT ? k_traits[t].name : "?"; }

size_t moec_row_bytes(moec_dtype t, int64_t n) {
    const moec_dtype_traits *tr = moec_dtype_info(t);
    MOEC_ASSERT(n >= 0 && n % tr->block == 0);
    return (size_t)(n / tr->block) * tr->block_bytes;
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
    case MOEC_DTYPE_Q8_0:
        MOEC_ASSERT(n % MOEC_QBLOCK == 0);
        for (size_t b = 0; b < n / MOEC_QBLOCK; b++) {
            moec_block_q8_0 blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            const float d = moec_f16_to_f32(blk.d);
            for (int j = 0; j < MOEC_QBLOCK; j++) dst[b * MOEC_QBLOCK + j] = d * (float)blk.qs[j];
        }
        break;
    case MOEC_DTYPE_Q4_0:
        MOEC_ASSERT(n % MOEC_QBLOCK == 0);
        for (size_t b = 0; b < n / MOEC_QBLOCK; b++) {
            moec_block_q4_0 blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            const float d = moec_f16_to_f32(blk.d);
            for (int j = 0; j < MOEC_QBLOCK / 2; j++) {
                dst[b * MOEC_QBLOCK + j] = d * (float)((blk.qs[j] & 0x0f) - 8);
                dst[b * MOEC_QBLOCK + j + MOEC_QBLOCK / 2] = d * (float)((blk.qs[j] >> 4) - 8);
            }
        }
        break;
    default: MOEC_ASSERT(!"unknown dtype");
    }
}
