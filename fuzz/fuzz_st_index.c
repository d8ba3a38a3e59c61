/* fuzz_st_index.c — a sharded checkpoint: model.safetensors.index.json plus up to three shard
 * files (one input, files separated by FZ_SEP) in a temp dir, opened with moec_st_open_dir. */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[4] = {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                                   "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    const uint8_t *part[4];
    size_t len[4];
    int n = fz_split(data, size, part, len, 4);
    for (int i = 0; i < 4; i++) fz_put(names[i], part[i], i < n ? len[i] : SIZE_MAX);
    moec_st_set set;
    moec_error err = {0};
    if (moec_st_open_dir(&set, fz_dir(), &err) == MOEC_OK) {
        float tmp[8];
        for (int i = 0; i < set.n_tensors; i++) {
            const moec_st_tensor *t = &set.tensors[i];
            moec_to_f32(tmp, t->data, t->dtype, (size_t)t->numel < 8 ? (size_t)t->numel : 8);
        }
        moec_st_close(&set);
    } else if (!err.msg[0]) {
        abort();
    }
    return 0;
}
