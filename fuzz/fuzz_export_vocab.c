/* fuzz_export_vocab.c — the exporter's own tokenizer.json reader (moec export gguf: the
 * vocabulary, added tokens and merges as llama.cpp's tokenizer.ggml.* arrays) for a model of
 * 512 embedding rows, with and without a --tokenizer-pre override (the input's first byte picks).
 * What it reads must be complete: every id has a string of its recorded length, every merge too. */
#include "fuzz_util.h"
#include "model/gguf_export.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const int override = size > 0 && (data[0] & 1);
    fz_put("tokenizer.json", data, size);
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", fz_dir());
    moec_gguf_vocab v = {0};
    const char *pre = NULL;
    moec_error err = {0};
    const moec_status st = moec_gguf_vocab_read(path, 512, override ? "gpt2" : NULL, &v, &pre, &err);
    if (st != MOEC_OK) {
        if (!err.msg[0]) abort();
    } else {
        if (!pre || v.n != 512) abort();
        for (int32_t i = 0; i < v.n; i++)
            if (!v.tok[i] || strlen(v.tok[i]) != v.len[i] || v.type[i] < 1 || v.type[i] > 5) abort();
        for (size_t i = 0; i < v.n_merges; i++)
            if (!v.merges[i] || strlen(v.merges[i]) != v.mlen[i]) abort();
    }
    moec_gguf_vocab_free(&v);
    return 0;
}
