/* cmd_tokenizer.c — `moec tokenizer train`: learns a byte-level BPE tokenizer (Qwen2-style
 * pipeline) from UTF-8 text files and writes an HF-compatible tokenizer.json atomically, then
 * loads it back with moec_tokenizer_load as a self-check. Not an encoder (that is
 * `moec tokenize`) and not a trainer of other model types. */
#include "commands.h"

#include "io/file.h"
#include "text/bpe_train.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SPECIAL "<|endoftext|>"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moec tokenizer train --vocab N -o OUT.json [options] FILES...\n"
            "  Trains a byte-level BPE tokenizer (NFC, Qwen2 split regex, ByteLevel) on UTF-8 text\n"
            "  files, as Hugging Face's BpeTrainer does, and writes tokenizer.json.\n"
            "  --vocab N            vocabulary size, special tokens and the 256 byte symbols\n"
            "                       included (required; at least 256 + number of specials)\n"
            "  -o, --output PATH    tokenizer.json to write (required; written atomically)\n"
            "  --min-frequency N    stop when the most frequent pair occurs fewer than N times\n"
            "                       (default 2)\n"
            "  --special TOK        a special token, ids 0.. in the order given; repeatable\n"
            "                       (default: " DEFAULT_SPECIAL ")\n"
            "  --allow-smaller      if the data runs out of pairs first, write the smaller\n"
            "                       vocabulary instead of failing (default: fail)\n");
}

/* Fails early (before minutes of training) when the output's directory is missing. */
static int check_output_dir(const char *out) {
    char *copy = strdup(out);
    if (!copy) {
        fprintf(stderr, "moec tokenizer: out of memory\n");
        return 0;
    }
    const char *dir = dirname(copy);
    struct stat sb;
    int ok = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!ok) fprintf(stderr, "moec tokenizer: i/o error: %s: output directory %s does not exist\n", out, dir);
    else if (access(dir, W_OK) != 0) {
        fprintf(stderr, "moec tokenizer: i/o error: %s: cannot write into %s: %s\n", out, dir, strerror(errno));
        ok = 0;
    }
    free(copy);
    return ok;
}

/* Loads the written file and checks what it must hold. */
static int self_check(const char *out, const tk_bpe_train_stats *stt, const char *const *specials,
                      int n_specials) {
    moec_error err = {0};
    moec_tokenizer *tok = NULL;
    if (moec_tokenizer_load(&tok, out, &err)) {
        fprintf(stderr, "moec tokenizer: internal error: the written %s does not load: %s\n", out, err.msg);
        return 1;
    }
    int rc = 0;
    if (moec_tokenizer_n_vocab(tok) != stt->n_vocab) {
        fprintf(stderr, "moec tokenizer: internal error: %s loads with %d tokens, %d written\n", out,
                moec_tokenizer_n_vocab(tok), stt->n_vocab);
        rc = 1;
    }
    for (int i = 0; !rc && i < n_specials; i++) {
        if (moec_tokenizer_token_id(tok, specials[i]) < 0) {
            fprintf(stderr, "moec tokenizer: internal error: %s lost special token '%s'\n", out, specials[i]);
            rc = 1;
        }
    }
    moec_tokenizer_free(tok);
    return rc;
}

static int cmd_train(int argc, char **argv) {
    const char *out = NULL, *vocab_s = NULL, *minf_s = NULL;
    const char **specials = calloc((size_t)argc + 1, sizeof *specials);
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    int n_specials = 0, n_files = 0, allow_smaller = 0, rc = 2;
    tk_bpe_trainer *tr = NULL;
    char *json = NULL;
    if (!specials || !files) {
        fprintf(stderr, "moec tokenizer: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto done;
        } else if (!strcmp(a, "--vocab") && has) vocab_s = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) out = argv[++i];
        else if (!strcmp(a, "--min-frequency") && has) minf_s = argv[++i];
        else if (!strcmp(a, "--special") && has) specials[n_specials++] = argv[++i];
        else if (!strcmp(a, "--allow-smaller")) allow_smaller = 1;
        else if (!strcmp(a, "--")) {
            while (++i < argc) files[n_files++] = argv[i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "moec tokenizer: unknown or incomplete option '%s' (see moec tokenizer train --help)\n", a);
            goto done;
        } else files[n_files++] = a;
    }
    if (!vocab_s || !out || n_files == 0) {
        fprintf(stderr, "moec tokenizer: %s (see moec tokenizer train --help)\n",
                !vocab_s ? "--vocab N is required" : !out ? "-o OUT.json is required" : "give at least one text file");
        goto done;
    }
    if (n_specials == 0) specials[n_specials++] = DEFAULT_SPECIAL;
    for (int i = 0; i < n_specials; i++) {
        if (!specials[i][0]) {
            fprintf(stderr, "moec tokenizer: --special expects a non-empty token\n");
            goto done;
        }
    }
    int n_distinct = 0;
    for (int i = 0; i < n_specials; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= !strcmp(specials[i], specials[j]);
        n_distinct += !dup;
    }
    long vocab, minf = 2;
    if (!cli_parse_int("tokenizer", "--vocab", vocab_s, 1, TK_BPE_TRAIN_MAX_VOCAB, &vocab)) goto done;
    if (vocab < 256 + n_distinct) {
        fprintf(stderr, "moec tokenizer: --vocab %ld is below the %d tokens every vocabulary starts with "
                        "(256 byte symbols + %d special token%s)\n", vocab, 256 + n_distinct, n_distinct,
                n_distinct == 1 ? "" : "s");
        goto done;
    }
    if (minf_s && !cli_parse_int("tokenizer", "--min-frequency", minf_s, 0, 1L << 40, &minf)) goto done;
    rc = 1;
    if (!check_output_dir(out)) goto done;

    printf("moec tokenizer train: vocab %ld, min-frequency %ld, %s, specials", vocab, minf,
           allow_smaller ? "allow-smaller" : "exact size");
    for (int i = 0; i < n_specials; i++) printf(" %s", specials[i]);
    printf(", %d file%s -> %s\n", n_files, n_files == 1 ? "" : "s", out);
    fflush(stdout);

    double t0 = cli_now_s();
    moec_error err = {0};
    tk_bpe_train_params p = {(int32_t)vocab, (int64_t)minf, allow_smaller, specials, (size_t)n_specials};
    if (tk_bpe_trainer_new(&tr, &p, &err)) {
        rc = cli_fail("tokenizer", &err);
        goto done;
    }
    for (int i = 0; i < n_files; i++) {
        if (tk_bpe_trainer_feed_file(tr, files[i], &err)) {
            rc = cli_fail("tokenizer", &err);
            goto done;
        }
    }
    double t1 = cli_now_s();
    if (tk_bpe_trainer_train(tr, &err)) {
        if (err.status == MOEC_ERR_INVALID_ARG) /* the data ran out of pairs: say what to change */
            fprintf(stderr, "moec tokenizer: %s: %s; lower --vocab or --min-frequency, add text, or pass "
                            "--allow-smaller\n", moec_status_name(err.status), err.msg);
        else
            rc = cli_fail("tokenizer", &err);
        goto done;
    }
    double t2 = cli_now_s();
    size_t len = 0;
    if (tk_bpe_trainer_json(tr, &json, &len, &err)) {
        rc = cli_fail("tokenizer", &err);
        goto done;
    }
    moec_iovec part = {.data = json, .size = len};
    if (moec_file_write_atomic(out, &part, 1, &err)) {
        rc = cli_fail("tokenizer", &err);
        goto done;
    }
    tk_bpe_train_stats stt;
    tk_bpe_trainer_stats(tr, &stt);
    if ((rc = self_check(out, &stt, specials, n_specials))) goto done;
    printf("read %lld bytes, %lld lines, %lld words (%lld distinct) in %.2f s\n", (long long)stt.n_bytes,
           (long long)stt.n_lines, (long long)stt.n_words, (long long)stt.n_unique_words, t1 - t0);
    printf("learned %d merges in %.2f s (last merge count %lld); wrote %d tokens to %s%s\n", stt.n_merges,
           t2 - t1, (long long)stt.last_count, stt.n_vocab, out,
           stt.stopped_early ? " (fewer than asked: the data ran out of pairs)" : "");
    if (fflush(stdout)) {
        fprintf(stderr, "moec tokenizer: i/o error: writing the output failed\n");
        rc = 1;
    }
done:
    free(json);
    tk_bpe_trainer_free(tr);
    free(specials);
    free(files);
    return rc;
}

int moec_cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "moec tokenizer: give a subcommand: train (see moec tokenizer --help)\n");
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    fprintf(stderr, "moec tokenizer: unknown subcommand '%s' (the only one is 'train')\n", argv[1]);
    return 2;
}
