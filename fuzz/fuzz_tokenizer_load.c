/* fuzz_tokenizer_load.c — tokenizer.json (model, normalizer, pre-tokenizer, decoder, added
 * tokens) through moec_tokenizer_load; a tokenizer that loads must then encode and decode a
 * fixed multilingual text and report every token's bytes without error paths crashing. */
#include "fuzz_util.h"
#include "moec.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_put("tokenizer.json", data, size);
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", fz_dir());
    moec_tokenizer *tok = NULL;
    moec_error err = {0};
    if (moec_tokenizer_load(&tok, path, &err) != MOEC_OK) {
        if (!err.msg[0]) abort();
        return 0;
    }
    static const char text[] = "Hello, w\xc3\xb6rld! 123 \xe4\xbd\xa0\xe5\xa5\xbd <|endoftext|>  \t\n x";
    int32_t *ids = NULL;
    size_t n = 0;
    if (moec_tokenizer_encode(tok, text, sizeof text - 1, &ids, &n, &err) == MOEC_OK) {
        char *out = NULL;
        size_t len = 0;
        if (moec_tokenizer_decode(tok, ids, n, 0, &out, &len, &err) == MOEC_OK && out[len] != 0) abort();
        free(out);
        free(ids);
    }
    const int32_t nv = moec_tokenizer_n_vocab(tok);
    char buf[64];
    for (int32_t id = 0; id < nv && id < 512; id++) moec_tokenizer_token_bytes(tok, id, buf, sizeof buf);
    moec_tokenizer_free(tok);
    return 0;
}
