/* fuzz_train_state.c — train_state.json through moec_train_state_parse, against the settings
 * the seed generator's states were written with (fuzz/make_seeds.py); an accepted state must
 * hold in-range numbers (the bug it guards: out-of-range doubles cast to integers). */
#include "fuzz_util.h"
#include "train/trainer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moec_train_params p = moec_train_default_params();
    p.steps = 100; /* the values make_seeds.py writes */
    p.batch = 8;
    p.seq = 64;
    p.accum = 1;
    p.lr = 1e-3f;
    p.warmup = 10;
    p.seed = 1;
    p.lr_min = 1e-4f;
    p.aux_coef = 0.01f;
    p.z_coef = 0.001f;
    moec_train_state ts;
    moec_error err = {0};
    moec_status st = moec_train_state_parse((const char *)data, size, "train_state.json", &p, 0x1234abcdULL, &ts, &err);
    if (st == MOEC_OK) {
        if (ts.step < 0 || ts.step > p.steps || ts.adam_step < 0 || ts.adam_step > ts.step || ts.n_bad < 0) abort();
    } else if (!err.msg[0]) {
        abort();
    }
    return 0;
}
