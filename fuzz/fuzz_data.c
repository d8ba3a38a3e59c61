/* fuzz_data.c — a token data directory: meta.json, train-00000.bin and val-00000.bin (one
 * input, files separated by FZ_SEP), opened with moec_data_open; a directory that opens is
 * read through every accessor (documents, domains, windows, evaluation windows), so any table
 * that escaped validation reads out of bounds under ASan. */
#include "fuzz_util.h"
#include "train/data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *names[3] = {"meta.json", "train-00000.bin", "val-00000.bin"};
    const uint8_t *part[3];
    size_t len[3];
    int n = fz_split(data, size, part, len, 3);
    for (int i = 0; i < 3; i++) fz_put(names[i], part[i], i < n ? len[i] : SIZE_MAX);
    moec_data_reader *r = NULL;
    moec_error err = {0};
    if (moec_data_open(&r, fz_dir(), &err) != MOEC_OK) {
        if (!err.msg[0]) abort();
        return 0;
    }
    int32_t tok[17];
    for (int s = 0; s < 2; s++) {
        const moec_data_split sp = s ? MOEC_DATA_VAL : MOEC_DATA_TRAIN;
        for (uint32_t d = 0; d < moec_data_n_docs(r, sp) && d < 64; d++) {
            uint64_t first, nt;
            int32_t dom;
            if (moec_data_doc(r, sp, d, &first, &nt, &dom, &err)) abort();
            if (nt > 0 && moec_data_read(r, sp, first, nt < 17 ? nt : 17, tok, &err)) abort();
        }
        for (int32_t dom = -1; dom < moec_data_n_domains(r); dom++) {
            uint32_t nd;
            moec_data_domain_docs(r, sp, dom, &nd);
            moec_data_domain_n_tokens(r, sp, dom);
            const uint64_t nw = moec_data_eval_n_windows(r, sp, dom, 16);
            int32_t nv;
            for (uint64_t w = 0; w < nw && w < 4; w++)
                if (moec_data_eval_window(r, sp, dom, 16, w, tok, &nv, &err)) abort();
        }
        for (uint64_t c = 0; c < 4 && moec_data_n_windows(r, sp, 16) > 0; c++)
            if (moec_data_window(r, sp, 16, c % 2 ? MOEC_DATA_SHUFFLE : MOEC_DATA_SEQUENTIAL, 7, c, tok, &err))
                abort();
    }
    moec_data_close(r);
    return 0;
}
