/* fuzz_config.c — config.json -> hparams (every model_type), then what the trainer derives from
 * it: the tensor list with its overflow-checked size, and (when it fits the memory cap) the
 * parameter buffers (under a 16 MB cap), initialised: a size that wrapped would write out of
 * bounds here. */
#include "fuzz_util.h"
#include "model/hparams.h"
#include "model/tensors.h"
#include "train/params.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* tighter than the other harnesses: every config that fits is allocated and initialised,
     * and a wrapped size (the bug this guards) is tiny anyway */
    setenv("MOEC_MEM_LIMIT", "16777216", 1);
    return 0;
}

static int check_spec(const moec_tensor_spec *s, void *ctx) {
    (void)ctx;
    if (s->shape[0] < 1 || s->shape[1] < 0 || s->numel < 1 || !s->name[0]) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moec_hparams hp;
    moec_error err = {0};
    if (moec_hparams_parse(&hp, (const char *)data, size, "config.json", &err) != MOEC_OK) {
        if (!err.msg[0]) abort();
        return 0;
    }
    if (hp.head_dim < 1 || hp.n_layer < 1 || hp.n_layer > MOEC_MAX_LAYERS || hp.n_head < 1) abort();
    int64_t n_tensors;
    uint64_t n_elems;
    if (!moec_model_tensor_total(&hp, &n_tensors, &n_elems)) return 0;
    if (n_tensors < 1000000) moec_model_tensor_visit(&hp, check_spec, NULL);
    moec_tparams tp;
    if (moec_tparams_new(&tp, &hp, &err) == MOEC_OK) {
        moec_tparams_init(&tp, 1, 0.02f);
        moec_tparams_free(&tp);
    }
    return 0;
}
