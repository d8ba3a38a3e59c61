/* cmd_logits.c — `moec logits`: float32 logits [T, V] at every position for given ids, as .npy.
 * This is how correctness is checked from outside (tests/py_test_reference.py). */
#include "commands.h"

#include "io/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* About 30 M ids: far beyond any context, and a bound on what an ids file makes moec read. */
#define IDS_FILE_MAX ((size_t)256 << 20)

static void usage(FILE *f) {
    fprintf(f, "usage: moec logits -m DIR (--ids 1,2,3 | --ids-file PATH) -o OUT.npy [options]\n"
               "  -m, --model DIR    Hugging Face checkpoint directory or GGUF file (required)\n"
               "  --ids LIST         comma-separated token ids (one of --ids and --ids-file is required)\n"
               "  --ids-file PATH    the same list read from a file, a pipe, or - for standard input\n"
               "                     (up to 256 MiB; a command-line argument is capped at 128 KiB)\n"
               "  -o, --out FILE     output .npy, float32 [T, V] (required)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "  --step             feed the ids one at a time through the KV cache (decode path)\n"
               "                     instead of one prefill (default: prefill)\n"
               "  --experts-per-token K  route each token to K experts, 1..num_experts_per_tok (default: the model's)\n");
}

int moec_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL, *ids_file = NULL, *out = NULL;
    long threads = 0, moe_k = 0;
    int step = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if (!strcmp(a, "--ids") && v) ids_s = argv[++i];
        else if (!strcmp(a, "--ids-file") && v) ids_file = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && v) out = argv[++i];
        else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            if (!cli_parse_int("logits", a, argv[++i], 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--experts-per-token") && v) {
            if (!cli_parse_int("logits", a, argv[++i], 1, 1 << 16, &moe_k)) return 2;
        } else if (!strcmp(a, "--step")) step = 1;
        else {
            fprintf(stderr, "moec logits: unknown or incomplete option '%s' (see moec logits --help)\n", a);
            return 2;
        }
    }
    if (!model || !ids_s == !ids_file || !out) {
        fprintf(stderr, "moec logits: -m DIR, one of --ids LIST or --ids-file PATH, and -o FILE are required (see "
                        "moec logits --help)\n");
        return 2;
    }
    int32_t *ids = NULL, n = 0;
    if (ids_file) {
        char *text = NULL;
        size_t len = 0;
        if (!cli_read_input("logits", "--ids-file", ids_file, IDS_FILE_MAX, &text, &len)) return 1;
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) text[--len] = 0;
        const int ok = strlen(text) == len && cli_parse_ids("logits", text, &ids, &n);
        if (strlen(text) != len) fprintf(stderr, "moec logits: --ids-file %s: contains a NUL byte\n", ids_file);
        free(text);
        if (!ok) return 2;
    } else if (!cli_parse_ids("logits", ids_s, &ids, &n)) {
        return 2;
    }

    moec_error err = {0};
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = (int32_t)threads;
    moec_model *m = NULL;
    moec_session *s = NULL;
    float *logits = NULL;
    int rc = 1;
    if (moec_model_open(&m, model, &mp, &err)) goto fail;
    const moec_model_info *info = moec_model_get_info(m);
    if (n > info->n_ctx_max) { /* before the [n, V] logits are allocated */
        fprintf(stderr, "moec logits: %d ids exceed the model's context of %d tokens\n", n, info->n_ctx_max);
        goto done;
    }
    if (moec_session_new(&s, m, n, &err) ||
        moec_session_set_experts_per_token(s, (int32_t)moe_k, &err))
        goto fail;
    logits = malloc((size_t)n * (size_t)info->n_vocab * sizeof(float));
    if (!logits) {
        fprintf(stderr, "moec logits: out of memory for %d x %d logits\n", n, info->n_vocab);
        goto done;
    }
    if (!step) {
        if (moec_session_forward(s, ids, n, logits, 1, &err)) goto fail;
    } else {
        for (int32_t i = 0; i < n; i++)
            if (moec_session_forward(s, ids + i, 1, logits + (size_t)i * info->n_vocab, 0, &err)) goto fail;
    }
    int64_t shape[2] = {n, info->n_vocab};
    if (moec_npy_write_f32(out, logits, shape, 2, &err)) goto fail;
    rc = 0;
    goto done;
fail:
    rc = cli_fail("logits", &err);
done:
    free(logits);
    free(ids);
    moec_session_free(s);
    moec_model_close(m);
    return rc;
}
