/* tool_gguf_fuzz.c — fuzz-style robustness driver for the GGUF reader (run by
 * tests/py_test_gguf_errors.py, under ASan/UBSan in CI):
 *
 *   tool_gguf_fuzz SEED.gguf TMPDIR N_FLIPS SEED
 *
 * 1. Truncations: every length from 0 to the end of the header and metadata, then every 61st
 *    byte to the end of the last tensor, must be rejected by moec_gguf_open_memory with a
 *    non-empty one-line message; every 50th of them is also written to a file and must be
 *    rejected by moec_model_open (the whole GGUF → model path).
 * 2. Bit flips: N_FLIPS copies with 1-4 random bits flipped (mostly in the header and
 *    metadata, where the parsing logic is); each goes through moec_gguf_open_memory, and when
 *    that accepts it, through moec_model_open + a 3-token forward and moec_tokenizer_load +
 *    encode/decode. Any outcome is fine except a crash, a sanitizer report, a success status
 *    with a message, or a failure without a one-line message.
 * Exits 1 on a broken invariant (crashes abort by themselves), printing what and where. */
#include "io/gguf.h"
#include "moec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void bad(const char *what, size_t at) {
    fprintf(stderr, "tool_gguf_fuzz: FAIL: %s (at %zu)\n", what, at);
    failures++;
}

static int one_line(const moec_error *e) { return e->msg[0] && !strchr(e->msg, '\n'); }

static int write_file(const char *path, const unsigned char *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Full path on a file: model (+ forward) and tokenizer. Returns 1 if the model opened. */
static int full_path(const char *path, size_t at) {
    moec_error err = {0};
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = 1;
    moec_model *m = NULL;
    int opened = 0;
    moec_status st = moec_model_open(&m, path, &mp, &err);
    if (st && !one_line(&err)) bad("model_open failed without a one-line message", at);
    if (!st) {
        opened = 1;
        moec_session *s = NULL;
        const moec_model_info *in = moec_model_get_info(m);
        int32_t ids[3] = {0, in->n_vocab > 1 ? 1 : 0, in->n_vocab - 1};
        float *logits = malloc((size_t)in->n_vocab * sizeof *logits);
        moec_error e2 = {0};
        if (logits && !moec_session_new(&s, m, 8, &e2)) moec_session_forward(s, ids, 3, logits, 0, &e2);
        free(logits);
        moec_session_free(s);
        moec_model_close(m);
    }
    moec_tokenizer *tok = NULL;
    moec_error e3 = {0};
    if (moec_tokenizer_load(&tok, path, &e3)) {
        if (!one_line(&e3)) bad("tokenizer_load failed without a one-line message", at);
    } else {
        int32_t *ids = NULL;
        size_t n = 0;
        char *text = NULL;
        size_t len = 0;
        if (!moec_tokenizer_encode(tok, "Hello, world 123", 16, &ids, &n, &e3))
            moec_tokenizer_decode(tok, ids, n, 0, &text, &len, &e3);
        free(ids);
        free(text);
        moec_tokenizer_free(tok);
    }
    return opened;
}

static uint64_t rng_state;
static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: tool_gguf_fuzz SEED.gguf TMPDIR N_FLIPS SEED\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    const size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *orig = malloc(size), *buf = malloc(size);
    if (!orig || !buf || fread(orig, 1, size, f) != size) return 2;
    fclose(f);
    const long n_flips = atol(argv[3]);
    rng_state = (uint64_t)atoll(argv[4]);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/fuzz.gguf", argv[2]);

    moec_gguf g;
    moec_error err = {0};
    if (moec_gguf_open_memory(&g, orig, size, "seed", &err)) {
        fprintf(stderr, "tool_gguf_fuzz: the seed does not parse: %s\n", err.msg);
        return 2;
    }
    size_t end = g.data_offset, meta_end = g.data_offset;
    for (uint64_t i = 0; i < g.n_tensors; i++)
        if (g.data_offset + g.tensors[i].offset + g.tensors[i].nbytes > end)
            end = g.data_offset + g.tensors[i].offset + g.tensors[i].nbytes;
    moec_gguf_close(&g);
    if (!full_path(argv[1], 0)) {
        fprintf(stderr, "tool_gguf_fuzz: the seed does not open as a model\n");
        return 2;
    }

    /* 1. truncations */
    size_t n_trunc = 0;
    for (size_t len = 0; len < end; len += len < meta_end ? 1 : 61) {
        moec_error e = {0};
        if (!moec_gguf_open_memory(&g, orig, len, "trunc", &e)) {
            bad("a truncated file was accepted", len);
            moec_gguf_close(&g);
        } else if (!one_line(&e)) {
            bad("truncation rejected without a one-line message", len);
        }
        if (n_trunc++ % 50 == 0) {
            if (!write_file(tmp, orig, len)) return 2;
            if (full_path(tmp, len)) bad("a truncated file opened as a model", len);
        }
    }
    /* 2. bit flips */
    long n_parsed = 0, n_opened = 0;
    for (long it = 0; it < n_flips; it++) {
        memcpy(buf, orig, size);
        const int k = 1 + (int)(next() % 4);
        size_t at = 0;
        for (int j = 0; j < k; j++) {
            at = next() % 10 < 8 ? (size_t)(next() % meta_end) : (size_t)(next() % size);
            buf[at] ^= (unsigned char)(1u << (next() % 8));
        }
        moec_error e = {0};
        moec_status st = moec_gguf_open_memory(&g, buf, size, "flip", &e);
        if (st) {
            if (!one_line(&e)) bad("bit flip rejected without a one-line message", at);
            continue;
        }
        moec_gguf_close(&g);
        n_parsed++;
        if (!write_file(tmp, buf, size)) return 2;
        n_opened += full_path(tmp, at);
    }
    remove(tmp);
    printf("tool_gguf_fuzz: %zu bytes (metadata %zu): %zu truncations rejected; %ld bit-flipped copies: %ld parsed, %ld opened as a model; %d failures\n",
           size, meta_end, n_trunc, n_flips, n_parsed, n_opened, failures);
    free(orig);
    free(buf);
    return failures ? 1 : 0;
}
