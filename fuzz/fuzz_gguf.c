/* fuzz_gguf.c — one GGUF file from memory (moec_gguf_open_memory): header, metadata of every
 * type, tensor infos, alignment, data bounds. Every accepted key and tensor is looked up again by
 * name, numeric arrays are read at both ends, and every tensor of a type moec converts has its
 * first and last block converted to fp32, so an offset or length that escaped validation reads
 * out of bounds under ASan. */
#include "fuzz_util.h"
#include "io/ggml_types.h"
#include "io/gguf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moec_gguf g;
    moec_error err = {0};
    if (moec_gguf_open_memory(&g, data, size, "fuzz.gguf", &err) != MOEC_OK) {
        if (!err.msg[0]) abort(); /* every error has a message */
        return 0;
    }
    volatile double sink = 0;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        const moec_gguf_kv *kv = &g.kv[i];
        if (moec_gguf_find_kv(&g, kv->key) == NULL) abort();
        if (kv->type == MOEC_GGUF_ARRAY && kv->n > 0 && kv->arr_type != MOEC_GGUF_STRING &&
            kv->arr_type != MOEC_GGUF_ARRAY)
            sink += moec_gguf_arr_f64(kv, 0) + moec_gguf_arr_f64(kv, kv->n - 1);
        if (kv->strs) {
            const uint64_t n = kv->type == MOEC_GGUF_STRING ? 1 : kv->n;
            for (uint64_t j = 0; j < n; j++)
                if (kv->strs[j].len) sink += (unsigned char)kv->strs[j].s[0] + (unsigned char)kv->strs[j].s[kv->strs[j].len - 1];
        }
    }
    float tmp[256];
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const moec_gguf_tensor *t = &g.tensors[i];
        if (moec_gguf_find_tensor(&g, t->name) == NULL) abort();
        moec_ggml_layout tr;
        if (!moec_ggml_type_layout(t->type, &tr) || !tr.has_dtype || t->numel < tr.block || tr.block > 256) continue;
        const int64_t n_blocks = t->numel / tr.block;
        moec_to_f32(tmp, t->data, tr.dtype, (size_t)tr.block);
        moec_to_f32(tmp, (const unsigned char *)t->data + (size_t)(n_blocks - 1) * tr.bytes, tr.dtype, (size_t)tr.block);
        sink += tmp[0];
    }
    (void)sink;
    moec_gguf_close(&g);
    return 0;
}
