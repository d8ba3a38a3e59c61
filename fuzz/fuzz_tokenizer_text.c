/* fuzz_tokenizer_text.c — encode and decode of arbitrary input with one fixed byte-level BPE
 * tokenizer (trained at start-up by moec's own BPE trainer on a built-in multilingual text,
 * with a special token, so the harness needs no files). Byte 0 picks the operation:
 *   even: encode the rest as text (invalid UTF-8 must be an error, never a crash), decode the
 *         ids, and encode the decoded text again: the ids must be the same (decode(encode(x))
 *         is x normalized, and normalizing twice changes nothing; x itself need not come back:
 *         "e" + U+030F is NFC-composed, the first find of this harness, kept in tests/fuzz);
 *   odd:  decode the rest as little-endian int32 ids (any values: out-of-range ids must be an
 *         error), with skip_special from bit 1, and look up each id's bytes. */
#include "fuzz_util.h"
#include "moec.h"
#include "text/bpe_train.h"
#include "text/utf8.h"

static moec_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    static const char corpus[] =
        "The quick brown fox jumps over the lazy dog. 1234567890 ;:!?\n"
        "Der schnelle braune Fuchs springt \xc3\xbc" "ber den faulen Hund. \xc3\x9f\xc3\xa4\xc3\xb6\n"
        "\xd0\x91\xd1\x8b\xd1\x81\xd1\x82\xd1\x80\xd0\xb0\xd1\x8f \xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0. "
        "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80  tabs\tand  spaces\n";
    static const char *const specials[] = {"<|endoftext|>"};
    tk_bpe_train_params p = {340, 0, 1, specials, 1};
    tk_bpe_trainer *t = NULL;
    moec_error err = {0};
    char *json = NULL;
    size_t len = 0;
    if (tk_bpe_trainer_new(&t, &p, &err) || tk_bpe_trainer_feed(t, corpus, sizeof corpus - 1, "corpus", &err) ||
        tk_bpe_trainer_train(t, &err) || tk_bpe_trainer_json(t, &json, &len, &err)) {
        fprintf(stderr, "fuzz_tokenizer_text: cannot train the tokenizer: %s\n", err.msg);
        abort();
    }
    tk_bpe_trainer_free(t);
    fz_put("tokenizer.json", (const uint8_t *)json, len);
    free(json);
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", fz_dir());
    if (moec_tokenizer_load(&g_tok, path, &err)) {
        fprintf(stderr, "fuzz_tokenizer_text: cannot load the tokenizer: %s\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    const uint8_t op = data[0];
    data++;
    size--;
    moec_error err = {0};
    char *out = NULL;
    size_t len = 0;
    if (!(op & 1)) {
        int32_t *ids = NULL;
        size_t n = 0;
        const int valid = tk_utf8_validate((const char *)data, size) == size;
        moec_status st = moec_tokenizer_encode(g_tok, (const char *)data, size, &ids, &n, &err);
        if (valid != (st == MOEC_OK)) abort(); /* valid UTF-8 encodes; invalid is refused */
        if (st) return 0;
        if (moec_tokenizer_decode(g_tok, ids, n, 0, &out, &len, &err)) abort();
        if (out[len] || tk_utf8_validate(out, len) != len) abort(); /* NUL-terminated UTF-8 */
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        if (moec_tokenizer_encode(g_tok, out, len, &ids2, &n2, &err)) abort();
        if (n2 != n || (n && memcmp(ids, ids2, n * sizeof *ids))) abort(); /* stable after one round */
        free(ids2);
        free(out);
        free(ids);
        return 0;
    }
    const size_t n = size / 4;
    int32_t *ids = malloc(n ? n * sizeof *ids : 1);
    if (!ids) return 0;
    memcpy(ids, data, n * sizeof *ids);
    const int32_t nv = moec_tokenizer_n_vocab(g_tok);
    int in_range = 1;
    char buf[32];
    for (size_t i = 0; i < n; i++) {
        in_range &= ids[i] >= 0 && ids[i] < nv;
        moec_tokenizer_token_bytes(g_tok, ids[i], buf, sizeof buf);
    }
    moec_status st = moec_tokenizer_decode(g_tok, ids, n, op & 2, &out, &len, &err);
    if (in_range != (st == MOEC_OK)) abort();
    if (!st && out[len]) abort();
    free(out);
    free(ids);
    return 0;
}
