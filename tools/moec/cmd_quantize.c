/* cmd_quantize.c — `moec quantize`: a checkpoint with 8- or 4-bit block weights (model/quantize.h). */
#include "commands.h"
#include "model/quantize.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec quantize -m IN -o OUT --type q8|q4 [--keep-router-f32]\n"
               "  -m, --model DIR       Hugging Face checkpoint directory (required)\n"
               "  -o, --out DIR         new checkpoint directory (required; must not exist; written atomically)\n"
               "  --type q8|q4          Q8_0 or Q4_0 (ggml's blocks) for expert, shared-expert, dense-MLP and\n"
               "                        attention matrices (required); embeddings and lm_head are Q8_0 for both\n"
               "  --keep-router-f32     routers as F32 (default: their checkpoint dtype); norms are always F32\n");
}

int moec_cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL;
    moec_quantize_params p = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) in = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && v) out = argv[++i];
        else if (!strcmp(a, "--type") && v) type = argv[++i];
        else if (!strcmp(a, "--keep-router-f32")) p.keep_router_f32 = 1;
        else {
            fprintf(stderr, "moec quantize: unknown or incomplete option '%s' (see moec quantize --help)\n", a);
            return 2;
        }
    }
    if (!in || !out || !type) {
        fprintf(stderr, "moec quantize: -m IN, -o OUT and --type q8|q4 are required (see moec quantize --help)\n");
        return 2;
    }
    if (!strcmp(type, "q8")) p.type = MOEC_DTYPE_Q8_0;
    else if (!strcmp(type, "q4")) p.type = MOEC_DTYPE_Q4_0;
    else {
        fprintf(stderr, "moec quantize: --type expects q8 or q4, got '%s'\n", type);
        return 2;
    }
    if (cli_is_gguf(in)) {
        fprintf(stderr, "moec quantize: %s is a GGUF file; quantize reads a checkpoint directory\n", in);
        return 2;
    }
    moec_error err = {0};
    if (moec_quantize_checkpoint(in, out, &p, &err)) return cli_fail("quantize", &err);
    fprintf(stderr, "moec quantize: %s -> %s (%s, %d matrices quantized, %lld -> %lld tensor bytes)\n", in, out,
            moec_dtype_name(p.type), p.n_quantized, (long long)p.bytes_in, (long long)p.bytes_out);
    return 0;
}
