/* fuzz_config.c — config.json -> hparams (every model_type), then what the trainer derives from
 * it: the tensor list with its overflow-checked size, and (when it fits the 4 MB memory cap)
 * the parameter buffers, whose offset table must place every tensor inside them: the first and
 * last float of each tensor are written, so a size that wrapped (the bug this guards) writes
 * out of bounds here. Small models are also initialised (moec_tparams_init) for its coverage;
 * initialising every model up to the cap with Gaussian noise was 60 % of the time (~800
 * exec/s) and checked nothing the two writes per tensor do not. */
#include "fuzz_util.h"
#include "model/hparams.h"
#include "model/tensors.h"
#include "train/params.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* tighter than the other harnesses: every config that fits is allocated and initialised,
     * and a wrapped size (the bug this guards) is tiny anyway */
    setenv("MOEC_MEM_LIMIT", "4194304", 1);
    return 0;
}

/* The first 4096 specs of the list: every role, layer kind and expert tensor appears in them
 * (the list repeats per layer and per expert); walking up to a million names per input spent
 * seconds formatting names that test nothing new. */
static int check_spec(const moec_tensor_spec *s, void *ctx) {
    int *n = ctx;
    if (s->shape[0] < 1 || s->shape[1] < 0 || s->numel < 1 || !s->name[0]) abort();
    return ++*n >= 4096;
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
    int n_seen = 0;
    moec_model_tensor_visit(&hp, check_spec, &n_seen);
    moec_tparams tp;
    if (moec_tparams_new(&tp, &hp, &err) == MOEC_OK) {
        for (int64_t i = 0; i < tp.n_tensors; i++) {
            const size_t first = tp.offset[i], n = (size_t)tp.specs[i].numel;
            if (n < 1 || first > tp.n_floats || n > tp.n_floats - first) abort();
            tp.w[first] = tp.g[first] = 1.f;
            tp.w[first + n - 1] = tp.g[first + n - 1] = 1.f;
        }
        if (tp.n_floats <= 4096) moec_tparams_init(&tp, 1, 0.02f);
        moec_tparams_free(&tp);
    }
    return 0;
}
