/* cmd_info.c — `moec info`: a checkpoint's architecture, parameter counts and bytes. */
#include "commands.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec info -m DIR\n"
               "  -m, --model DIR    Hugging Face checkpoint directory or GGUF file (required)\n");
}

/* 1234567 -> "1,234,567" */
static const char *commas(char *buf, size_t cap, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i > 0 && tmp[i - 1] != '-' && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

int moec_cmd_info(int argc, char **argv) {
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model = argv[++i];
        else {
            fprintf(stderr, "moec info: unknown or incomplete option '%s' (see moec info --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "moec info: -m DIR is required (see moec info --help)\n");
        return 2;
    }
    moec_error err = {0};
    moec_model *m = NULL;
    if (moec_model_open(&m, model, NULL, &err)) return cli_fail("info", &err);
    const moec_model_info *in = moec_model_get_info(m);
    char a[32], b[32];
    printf("model:          %s\n", model);
    printf("architecture:   %s\n", in->model_type);
    printf("formats:        %s\n", in->weight_formats);
    printf("weights:        %s, %s bytes (%.2f GiB)\n", in->weight_dtype, commas(a, sizeof a, in->n_bytes_weights),
           (double)in->n_bytes_weights / (1 << 30));
    printf("params total:   %s\n", commas(a, sizeof a, in->n_params_total));
    printf("params active:  %s per token (%.1f%%)\n", commas(b, sizeof b, in->n_params_active),
           100.0 * (double)in->n_params_active / (double)(in->n_params_total ? in->n_params_total : 1));
    printf("layers:         %d (%d MoE, %d dense)\n", in->n_layer, in->n_layer_moe, in->n_layer - in->n_layer_moe);
    printf("hidden:         %d, vocab %d, max positions %d\n", in->n_embd, in->n_vocab, in->max_position_embeddings);
    printf("attention:      %d heads, %d KV heads, head_dim %d, rope_theta %g%s%s\n", in->n_head, in->n_head_kv,
           in->head_dim, (double)in->rope_theta, in->qk_norm ? ", QK-norm" : "", in->attention_bias ? ", qkv bias" : "");
    if (strcmp(in->rope_type, "default") || in->sliding_window)
        printf("long context:   rope %s, context up to %d, sliding window %d (0 = none)\n", in->rope_type,
               in->n_ctx_max, in->sliding_window);
    printf("experts:        %d routed, top-%d, expert ff %d%s\n", in->n_expert, in->n_expert_used, in->n_ff_expert,
           in->norm_topk_prob ? ", top-k weights renormalised" : ", top-k weights not renormalised");
    if (in->n_expert > 0) printf("routing:        %s\n", in->routing);
    if (in->shared_expert) printf("shared expert:  ff %d, %s\n", in->n_ff_shared, in->shared_expert_gated ? "sigmoid-gated" : "ungated");
    if (in->n_ff_dense) printf("dense MLP:      ff %d\n", in->n_ff_dense);
    printf("embeddings:     %s\n", in->tie_word_embeddings ? "tied (lm_head = embed_tokens)" : "separate lm_head");
    moec_model_close(m);
    return 0;
}
