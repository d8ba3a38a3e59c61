/* fuzz_bpe_train.c — `moec tokenizer train` on a hostile corpus: byte 0 picks the vocabulary
 * size (the initial vocabulary + 0..63 merges) and whether a special token is declared, the rest
 * is the training text, fed to moec's BPE trainer (NFC, Qwen pre-tokenizer regex, byte-level,
 * merge counting and heap). Invalid UTF-8 must be refused with a message; a corpus that trains
 * must give a tokenizer.json that moec loads, and that tokenizer must encode its own training
 * text and decode it back to a NUL-terminated string. */
#include "fuzz_util.h"
#include "moec.h"
#include "text/bpe_train.h"
#include "text/utf8.h"

static const char *const specials[] = {"<|endoftext|>"};
static int32_t g_initial[2]; /* initial vocabulary without / with the special token */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    for (int s = 0; s < 2; s++) {
        tk_bpe_train_params p = {TK_BPE_TRAIN_MAX_VOCAB, 0, 1, specials, (size_t)s};
        tk_bpe_trainer *t = NULL;
        moec_error err = {0};
        if (tk_bpe_trainer_new(&t, &p, &err)) {
            fprintf(stderr, "fuzz_bpe_train: %s\n", err.msg);
            abort();
        }
        g_initial[s] = tk_bpe_trainer_initial_vocab(t);
        tk_bpe_trainer_free(t);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t op = data[0];
    const char *text = (const char *)data + 1;
    const size_t n = size - 1;
    if (!g_initial[0]) LLVMFuzzerInitialize(NULL, NULL);
    const int with_special = (op & 0x40) != 0;
    tk_bpe_train_params p = {g_initial[with_special] + (op & 0x3f), 0, 1, specials, (size_t)with_special};
    tk_bpe_trainer *t = NULL;
    moec_error err = {0};
    if (tk_bpe_trainer_new(&t, &p, &err)) abort();
    const int valid = tk_utf8_validate(text, n) == n;
    moec_status st = tk_bpe_trainer_feed(t, text, n, "corpus", &err);
    if (st != MOEC_OK) {
        if (valid || !err.msg[0]) abort(); /* valid UTF-8 is always accepted */
        tk_bpe_trainer_free(t);
        return 0;
    }
    if (!valid) abort();
    char *json = NULL;
    size_t len = 0;
    if (tk_bpe_trainer_train(t, &err) != MOEC_OK) {
        if (!err.msg[0]) abort(); /* an empty corpus, say */
        tk_bpe_trainer_free(t);
        return 0;
    }
    tk_bpe_train_stats stats;
    tk_bpe_trainer_stats(t, &stats);
    if (stats.n_vocab > p.vocab_size) abort();
    if (tk_bpe_trainer_json(t, &json, &len, &err)) abort();
    tk_bpe_trainer_free(t);
    fz_put("tokenizer.json", (const uint8_t *)json, len);
    free(json);
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", fz_dir());
    moec_tokenizer *tok = NULL;
    if (moec_tokenizer_load(&tok, path, &err)) {
        fprintf(stderr, "fuzz_bpe_train: the trained tokenizer does not load: %s\n", err.msg);
        abort();
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (moec_tokenizer_encode(tok, text, n, &ids, &n_ids, &err)) abort();
    char *out = NULL;
    size_t out_len = 0;
    if (moec_tokenizer_decode(tok, ids, n_ids, 0, &out, &out_len, &err) || out[out_len]) abort();
    free(out);
    free(ids);
    moec_tokenizer_free(tok);
    return 0;
}
