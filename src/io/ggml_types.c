/* ggml_types.c — see ggml_types.h. The table follows ggml's type_traits (and gguf-py's
 * GGML_QUANT_SIZES) for the types moec does not compute with; moec's own come from core/dtype. */
#include "io/ggml_types.h"

typedef struct {
    const char *name; /* NULL for a number that is not a ggml type */
    int64_t block;
    size_t bytes;
} foreign;

static const foreign others[] = {
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},    [11] = {"Q3_K", 256, 110},
    [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},   [14] = {"Q6_K", 256, 210},
    [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66}, [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},  [20] = {"IQ4_NL", 32, 18},
    [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},   [23] = {"IQ4_XS", 256, 136},
    [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},        [26] = {"I32", 1, 4},
    [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},        [29] = {"IQ1_M", 256, 56},
    [34] = {"TQ1_0", 256, 54},  [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
    [40] = {"NVFP4", 64, 36},   [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

int moec_ggml_type_layout(uint32_t type, moec_ggml_layout *out) {
    moec_dtype t;
    if (moec_dtype_by_ggml(type, &t)) {
        const moec_dtype_traits *tr = moec_dtype_info(t);
        *out = (moec_ggml_layout){tr->name, tr->block, tr->block_bytes, 1, t};
        return 1;
    }
    if (type >= sizeof others / sizeof others[0] || !others[type].name) return 0;
    *out = (moec_ggml_layout){others[type].name, others[type].block, others[type].bytes, 0, MOEC_DTYPE_F32};
    return 1;
}
