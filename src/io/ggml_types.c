/* ggml_types.c — see ggml_types.h. The per-type table follows ggml's type_traits (and gguf-py's
 * GGML_QUANT_SIZES); conversions are scalar reference code, run once at load or export. */
#include "io/ggml_types.h"

#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const moec_ggml_traits traits[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},   [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},   [42] = {"Q2_0", 64, 18},
};

const moec_ggml_traits *moec_ggml_type_traits(uint32_t type) {
    if (type >= sizeof traits / sizeof traits[0] || !traits[type].name) return NULL;
    return &traits[type];
}

int moec_ggml_type_readable(uint32_t type) {
    return type == MOEC_GGML_F32 || type == MOEC_GGML_F16 || type == MOEC_GGML_BF16 || type == MOEC_GGML_Q8_0;
}

void moec_ggml_to_f32(float *dst, const void *src, uint32_t type, size_t n) {
    switch (type) {
    case MOEC_GGML_F32: moec_to_f32(dst, src, MOEC_DTYPE_F32, n); break;
    case MOEC_GGML_F16: moec_to_f32(dst, src, MOEC_DTYPE_F16, n); break;
    case MOEC_GGML_BF16: moec_to_f32(dst, src, MOEC_DTYPE_BF16, n); break;
    case MOEC_GGML_Q8_0: {
        const unsigned char *b = src;
        for (size_t i = 0; i < n / MOEC_GGML_QK8_0; i++, b += 34) {
            uint16_t h;
            memcpy(&h, b, 2);
            const float d = moec_f16_to_f32(h);
            for (int j = 0; j < MOEC_GGML_QK8_0; j++) dst[i * MOEC_GGML_QK8_0 + (size_t)j] = d * (float)(int8_t)b[2 + j];
        }
        break;
    }
    default: break;
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

void moec_ggml_from_f32(void *dst, const float *src, uint32_t type, size_t n) {
    unsigned char *o = dst;
    switch (type) {
    case MOEC_GGML_F32: memcpy(dst, src, n * 4); break;
    case MOEC_GGML_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = moec_f32_to_f16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        break;
    case MOEC_GGML_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = moec_f32_to_bf16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        break;
    case MOEC_GGML_Q8_0:
        for (size_t i = 0; i < n / MOEC_GGML_QK8_0; i++, o += 34) {
            const float *x = src + i * MOEC_GGML_QK8_0;
            float amax = 0.0f;
            for (int j = 0; j < MOEC_GGML_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            uint16_t h = moec_f32_to_f16(d);
            memcpy(o, &h, 2);
            for (int j = 0; j < MOEC_GGML_QK8_0; j++) o[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
        }
        break;
    default: break;
    }
}
