/* cmd_export.c — `moec export gguf`: a Hugging Face checkpoint → a GGUF file for llama.cpp. */
#include "commands.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec export gguf -m DIR -o FILE [options]\n"
               "  -m, --model DIR         Hugging Face checkpoint directory with tokenizer.json (required)\n"
               "  -o, --out FILE          output .gguf (required; written atomically)\n"
               "  --type T                matrix type: f32, f16, bf16, q8_0 or q4_0 (default bf16); norms, biases\n"
               "                          and routers are always f32, as llama.cpp's converter writes them\n"
               "  --tokenizer-pre NAME    tokenizer.ggml.pre (default: detected from tokenizer.json)\n"
               "  --no-tokenizer          write no vocabulary (tokenizer.ggml.model = none)\n");
}

int moec_cmd_export(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "gguf")) {
        fprintf(stderr, "moec export: expected 'gguf' as the format (see moec export --help)\n");
        return 2;
    }
    const char *model = NULL, *out = NULL;
    moec_gguf_export_params p = moec_gguf_export_default_params();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && v) out = argv[++i];
        else if (!strcmp(a, "--type") && v) {
            static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
            int found = 0;
            for (int t = 0; t < 5; t++)
                if (!strcmp(v, names[t])) {
                    p.type = (moec_export_type)t;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "moec export: --type expects f32, f16, bf16, q8_0 or q4_0, got '%s'\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--tokenizer-pre") && v) p.tokenizer_pre = argv[++i];
        else if (!strcmp(a, "--no-tokenizer")) p.no_tokenizer = 1;
        else {
            fprintf(stderr, "moec export: unknown or incomplete option '%s' (see moec export --help)\n", a);
            return 2;
        }
    }
    if (!model || !out) {
        fprintf(stderr, "moec export: -m DIR and -o FILE are required (see moec export --help)\n");
        return 2;
    }
    static const char *const tn[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    fprintf(stderr, "moec export: %s -> %s (gguf, %s%s)\n", model, out, tn[p.type], p.no_tokenizer ? ", no tokenizer" : "");
    moec_error err = {0};
    if (moec_export_gguf(model, out, &p, &err)) return cli_fail("export", &err);
    return 0;
}
