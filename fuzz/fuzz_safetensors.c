/* fuzz_safetensors.c — one safetensors file from memory: header JSON, dtypes, shapes, offsets
 * (moec_st_open_buffer); every accepted tensor is looked up by name and its first elements
 * converted to fp32, so an offset that escaped validation reads out of bounds under ASan. */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moec_st_set set;
    moec_error err = {0};
    if (moec_st_open_buffer(&set, data, size, "fuzz.safetensors", &err) == MOEC_OK) {
        float tmp[64];
        for (int i = 0; i < set.n_tensors; i++) {
            const moec_st_tensor *t = &set.tensors[i];
            if (moec_st_find(&set, t->name) != t) abort();
            const moec_dtype_traits *tr = moec_dtype_info(t->dtype);
            const size_t blk = (size_t)tr->block; /* quantized: whole blocks only */
            size_t n = (size_t)t->numel < 64 ? (size_t)t->numel : 64;
            moec_to_f32(tmp, t->data, t->dtype, n / blk * blk);
            if (t->numel > 0) { /* the last element (block) too */
                const uint8_t *last = (const uint8_t *)t->data + t->nbytes - tr->block_bytes;
                moec_to_f32(tmp, last, t->dtype, blk);
            }
        }
        moec_st_close(&set);
    } else if (!err.msg[0]) {
        abort(); /* every error has a message */
    }
    return 0;
}
