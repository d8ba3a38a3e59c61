/* dtype.c — scalar dtype conversions (the oracle; hot paths convert inside SIMD kernels). */
#include "core/dtype.h"

#include <math.h>

#include "core/error.h"

static const moec_dtype_traits k_traits[MOEC_DTYPE_COUNT] = {
    [MOEC_DTYPE_F32] = {"F32", 1, 4, 0, 0},
    [MOEC_DTYPE_F16] = {"F16", 1, 2, 0, 1},
    [MOEC_DTYPE_BF16] = {"BF16", 1, 2, 0, 30},
    [MOEC_DTYPE_Q8_0] = {"Q8_0", MOEC_QBLOCK, sizeof(moec_block_q8_0), 1, 8},
    [MOEC_DTYPE_Q4_0] = {"Q4_0", MOEC_QBLOCK, sizeof(moec_block_q4_0), 1, 2},
};

int moec_dtype_by_name(const char *s, moec_dtype *out) {
    for (int t = 0; t < MOEC_DTYPE_COUNT; t++)
        if (!strcmp(s, k_traits[t].name)) {
            *out = (moec_dtype)t;
            return 1;
        }
    return 0;
}

int moec_dtype_by_ggml(uint32_t ggml_type, moec_dtype *out) {
    for (int t = 0; t < MOEC_DTYPE_COUNT; t++)
        if (k_traits[t].ggml_type == ggml_type) {
            *out = (moec_dtype)t;
            return 1;
        }
    return 0;
}

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

uint16_t moec_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65536: inf */
    if (au < 0x38800000u) {
        /* subnormal half (or zero): value = m * 2^-24, m = round_even(|f| * 2^24) */
        float a;
        memcpy(&a, &au, 4);
        float m = nearbyintf(a * 16777216.0f); /* default rounding mode: to nearest even */
        return (uint16_t)(sign | (uint32_t)m);
    }
    /* normal: rebias the exponent, round the 23-bit mantissa to 10 bits, nearest even */
    uint32_t v = au - 0x38000000u; /* exponent 127 -> 15 */
    v += 0xfffu + ((v >> 13) & 1u);
    return (uint16_t)(sign | (v >> 13));
}

static void quantize_q8_0(unsigned char *o, const float *src, size_t n) {
    for (size_t b = 0; b < n / MOEC_QBLOCK; b++) {
        const float *x = src + b * MOEC_QBLOCK;
        moec_block_q8_0 blk;
        float amax = 0.0f;
        for (int j = 0; j < MOEC_QBLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        blk.d = moec_f32_to_f16(d);
        for (int j = 0; j < MOEC_QBLOCK; j++) blk.qs[j] = (int8_t)roundf(x[j] * id);
        memcpy(o + b * sizeof blk, &blk, sizeof blk);
    }
}

static void quantize_q4_0(unsigned char *o, const float *src, size_t n) {
    for (size_t b = 0; b < n / MOEC_QBLOCK; b++) {
        const float *x = src + b * MOEC_QBLOCK;
        moec_block_q4_0 blk;
        float amax = 0.0f, max = 0.0f; /* the signed value of largest magnitude sets the scale */
        for (int j = 0; j < MOEC_QBLOCK; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        blk.d = moec_f32_to_f16(d);
        for (int j = 0; j < MOEC_QBLOCK / 2; j++) {
            /* (int8_t) truncates toward zero after the +8.5 shift, as ggml does */
            const int8_t a = (int8_t)(x[j] * id + 8.5f), c = (int8_t)(x[j + MOEC_QBLOCK / 2] * id + 8.5f);
            const uint8_t lo = (uint8_t)(a < 15 ? a : 15), hi = (uint8_t)(c < 15 ? c : 15);
            blk.qs[j] = (uint8_t)(lo | (hi << 4));
        }
        memcpy(o + b * sizeof blk, &blk, sizeof blk);
    }
}

void moec_from_f32(void *dst, const float *src, moec_dtype t, size_t n) {
    unsigned char *o = dst;
    MOEC_ASSERT(n % (size_t)moec_dtype_info(t)->block == 0);
    switch (t) {
    case MOEC_DTYPE_F32: memcpy(dst, src, n * 4); break;
    case MOEC_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = moec_f32_to_f16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        break;
    case MOEC_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = moec_f32_to_bf16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        break;
    case MOEC_DTYPE_Q8_0: quantize_q8_0(o, src, n); break;
    case MOEC_DTYPE_Q4_0: quantize_q4_0(o, src, n); break;
    default: MOEC_ASSERT(!"unknown dtype");
    }
}
