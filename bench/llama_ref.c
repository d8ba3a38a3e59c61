/* llama_ref.c — the llama.cpp side of bench/gguf_vs_llamacpp.sh: a tiny C program against
 * libllama (built by bench/build_llamacpp.sh) that prints what moec is compared with.
 *
 *   llama_ref MODEL.gguf logits IDS OUT.npy       float32 logits [T, V] of one prefill of IDS
 *   llama_ref MODEL.gguf generate TEXT N          greedy: prompt ids, then N generated ids and text
 *
 * IDS is comma-separated. The prompt is tokenized without special tokens (as moec generate
 * without --bos). CPU only, 2 threads, F32 KV cache, no sampling chain: argmax over the logits. Not part of
 * moec's build (it needs llama.cpp's headers and static libraries). */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static bool no_progress(float p, void *user) {
    (void)p;
    (void)user;
    return true;
}

static int decode(struct llama_context *ctx, const llama_token *ids, int n, int pos0, int all) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = pos0 + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = all || i == n - 1;
    }
    b.n_tokens = n;
    int rc = llama_decode(ctx, b);
    llama_batch_free(b);
    return rc;
}

static int argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[2], "logits") && strcmp(argv[2], "generate"))) {
        fprintf(stderr, "usage: llama_ref MODEL.gguf logits IDS OUT.npy | generate TEXT N\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = no_progress;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "llama_ref: cannot load %s\n", argv[1]);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.no_perf = true;
    /* an F32 KV cache (llama.cpp's default is F16), so that the comparison measures the weights
     * and the arithmetic, not the cache's rounding; LLAMA_REF_KV_F16=1 keeps the default */
    if (!getenv("LLAMA_REF_KV_F16")) {
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; /* the CPU flash path rounds through F16 */
    }
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama_ref: cannot create a context\n");
        return 1;
    }
    llama_token ids[512];
    int n = 0, rc = 0;
    if (!strcmp(argv[2], "logits")) {
        for (char *p = argv[3]; *p && n < 512;) {
            ids[n++] = (llama_token)strtol(p, &p, 10);
            if (*p == ',') p++;
        }
        if (decode(ctx, ids, n, 0, 1)) {
            fprintf(stderr, "llama_ref: llama_decode failed\n");
            return 1;
        }
        FILE *f = fopen(argv[4], "wb");
        if (!f) return 1;
        char hdr[128];
        int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", n, n_vocab);
        while ((hl + 11) % 64) hdr[hl++] = ' ';
        hdr[hl - 1] = '\n';
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
        fwrite(pre, 1, 10, f);
        fwrite(hdr, 1, (size_t)hl, f);
        for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, f);
        rc = fclose(f) != 0;
    } else {
        const char *text = argv[3];
        const int n_gen = atoi(argv[4]);
        n = llama_tokenize(vocab, text, (int32_t)strlen(text), ids, 512, false, false);
        if (n <= 0 || n + n_gen > 512) {
            fprintf(stderr, "llama_ref: tokenize failed (%d)\n", n);
            return 1;
        }
        printf("prompt_ids:");
        for (int i = 0; i < n; i++) printf("%s%d", i ? "," : " ", ids[i]);
        printf("\n");
        if (decode(ctx, ids, n, 0, 0)) return 1;
        llama_token gen[512];
        for (int i = 0; i < n_gen; i++) {
            gen[i] = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            if (decode(ctx, &gen[i], 1, n + i, 0)) return 1;
        }
        printf("gen_ids:");
        for (int i = 0; i < n_gen; i++) printf("%s%d", i ? "," : " ", gen[i]);
        printf("\ntext: ");
        fwrite(text, 1, strlen(text), stdout);
        for (int i = 0; i < n_gen; i++) {
            char buf[256];
            int k = llama_token_to_piece(vocab, gen[i], buf, sizeof buf, 0, false);
            if (k > 0) fwrite(buf, 1, (size_t)k, stdout);
        }
        printf("\n");
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
