/* cmd_generate.c — `moec generate`: encode a prompt, prefill it, then sample and stream tokens
 * until -n tokens or an end-of-sequence id; reports prefill and decode tokens/s on stderr. */
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Far more text than any model context holds; bounds what a prompt file can make moec read
 * and tokenize before the context check refuses it. */
#define PROMPT_FILE_MAX ((size_t)16 << 20)

static void usage(FILE *f) {
    fprintf(f, "usage: moec generate -m DIR (-p TEXT | --prompt-file PATH) [options]\n"
               "  -m, --model DIR      Hugging Face checkpoint directory or GGUF file (required)\n"
               "  -p, --prompt TEXT    prompt text (one of -p and --prompt-file is required)\n"
               "  --prompt-file PATH   read the prompt from a file, a pipe, or - for standard input\n"
               "                       (up to 16 MiB; a command-line argument is capped at 128 KiB)\n"
               "  -n, --n-predict N    tokens to generate (default 64)\n"
               "  --temp X             temperature, 0 = greedy (default 0.8)\n"
               "  --top-k N            keep the N most likely tokens, 0 = off (default 40)\n"
               "  --top-p X            nucleus sampling mass, 1 = off (default 0.95)\n"
               "  --seed N             sampling seed (default 42)\n"
               "  -t, --threads N      threads (default: number of cores)\n"
               "  --tokenizer FILE     tokenizer.json or GGUF (default: DIR/tokenizer.json, or the GGUF itself)\n"
               "  --bos                prepend config.json's bos_token_id to the prompt (a GGUF\n"
               "                       whose tokenizer.ggml.add_bos_token is true does by default)\n"
               "  --ignore-eos         keep generating past end-of-sequence tokens\n"
               "  --experts-per-token K  route each token to K experts, 1..num_experts_per_tok (default: the model's)\n");
}

int moec_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL, *tok_path = NULL;
    long n_predict = 64, top_k = 40, threads = 0, seed = 42, moe_k = 0;
    double temp = 0.8, top_p = 0.95;
    int bos = 0, ignore_eos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && v) prompt = argv[++i];
        else if (!strcmp(a, "--prompt-file") && v) prompt_file = argv[++i];
        else if (!strcmp(a, "--tokenizer") && v) tok_path = argv[++i];
        else if ((!strcmp(a, "-n") || !strcmp(a, "--n-predict")) && v) {
            if (!cli_parse_int("generate", a, argv[++i], 0, 1 << 20, &n_predict)) return 2;
        } else if (!strcmp(a, "--temp") && v) {
            if (!cli_parse_float("generate", a, argv[++i], 0.0, 100.0, &temp)) return 2;
        } else if (!strcmp(a, "--top-k") && v) {
            if (!cli_parse_int("generate", a, argv[++i], 0, 1 << 30, &top_k)) return 2;
        } else if (!strcmp(a, "--top-p") && v) {
            if (!cli_parse_float("generate", a, argv[++i], 0.0, 1.0, &top_p)) return 2;
            if (top_p <= 0.0) {
                fprintf(stderr, "moec generate: --top-p must be in (0, 1], got %s\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--seed") && v) {
            if (!cli_parse_int("generate", a, argv[++i], 0, 0x7fffffffL, &seed)) return 2;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            if (!cli_parse_int("generate", a, argv[++i], 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--experts-per-token") && v) {
            if (!cli_parse_int("generate", a, argv[++i], 1, 1 << 16, &moe_k)) return 2;
        } else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else {
            fprintf(stderr, "moec generate: unknown or incomplete option '%s' (see moec generate --help)\n", a);
            return 2;
        }
    }
    if (!model || !prompt == !prompt_file) {
        fprintf(stderr, "moec generate: -m DIR and one of -p TEXT or --prompt-file PATH are required (see moec "
                        "generate --help)\n");
        return 2;
    }
    char *prompt_buf = NULL; /* the prompt file's text */
    size_t prompt_len = prompt ? strlen(prompt) : 0;
    if (prompt_file) {
        if (!cli_read_input("generate", "--prompt-file", prompt_file, PROMPT_FILE_MAX, &prompt_buf, &prompt_len))
            return 1;
        prompt = prompt_buf;
    }
    char tok_default[4096];
    if (!tok_path) { /* a GGUF file carries its vocabulary */
        snprintf(tok_default, sizeof tok_default, "%s/tokenizer.json", model);
        tok_path = cli_is_gguf(model) ? model : tok_default;
    }
    moec_error err = {0};
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = (int32_t)threads;
    moec_model *m = NULL;
    moec_session *s = NULL;
    moec_tokenizer *tok = NULL;
    moec_sampler *smp = NULL;
    int32_t *ids = NULL, *prompt_ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    int rc = 1;
    if (moec_model_open(&m, model, &mp, &err)) goto fail;
    if (moec_tokenizer_load(&tok, tok_path, &err)) goto fail;
    const moec_model_info *in = moec_model_get_info(m);
    if (moec_tokenizer_n_vocab(tok) > in->n_vocab) {
        fprintf(stderr, "moec generate: tokenizer %s has %d tokens but the model's vocabulary is %d\n", tok_path,
                moec_tokenizer_n_vocab(tok), in->n_vocab);
        goto done;
    }
    if (moec_tokenizer_encode(tok, prompt, prompt_len, &ids, &n_ids, &err)) goto fail;
    const size_t n_prompt = n_ids + ((bos || in->add_bos_token) && in->bos_token_id >= 0);
    if (n_prompt == 0) {
        fprintf(stderr, "moec generate: the prompt encodes to no tokens (give some text, or --bos)\n");
        goto done;
    }
    prompt_ids = malloc(n_prompt * sizeof *prompt_ids);
    logits = malloc((size_t)in->n_vocab * sizeof *logits);
    if (!prompt_ids || !logits) {
        fprintf(stderr, "moec generate: out of memory\n");
        goto done;
    }
    size_t o = 0;
    if (n_prompt > n_ids) prompt_ids[o++] = in->bos_token_id;
    memcpy(prompt_ids + o, ids, n_ids * sizeof *ids);
    long ctx = (long)n_prompt + n_predict;
    if (ctx > in->n_ctx_max) {
        fprintf(stderr, "moec generate: prompt (%zu tokens) + -n %ld exceeds the model's context %d\n", n_prompt,
                n_predict, in->n_ctx_max);
        goto done;
    }
    if (moec_session_new(&s, m, (int32_t)ctx, &err) || moec_session_set_experts_per_token(s, (int32_t)moe_k, &err))
        goto fail;
    moec_sampler_params sp = {(float)temp, (int32_t)top_k, (float)top_p, (uint64_t)seed};
    if (moec_sampler_new(&smp, &sp, in->n_vocab, &err)) goto fail;
    fprintf(stderr, "moec generate: %s (%s), %d threads, prompt %zu tokens, temp %g top-k %ld top-p %g seed %ld\n",
            in->model_type, in->weight_dtype, in->n_threads, n_prompt, temp, top_k, top_p, seed);
    fwrite(prompt, 1, prompt_len, stdout);
    fflush(stdout);
    double t0 = cli_now_s();
    if (moec_session_forward(s, prompt_ids, (int32_t)n_prompt, logits, 0, &err)) goto fail;
    double t_prefill = cli_now_s() - t0;
    long n_gen = 0;
    double t1 = cli_now_s();
    char buf[256];
    for (; n_gen < n_predict; n_gen++) {
        int32_t id = moec_sampler_sample(smp, logits);
        int is_eos = 0;
        for (int i = 0; i < in->n_eos; i++) is_eos |= id == in->eos_token_ids[i];
        if (is_eos && !ignore_eos) break;
        int32_t nb = moec_tokenizer_token_bytes(tok, id, buf, sizeof buf);
        if (nb > 0) fwrite(buf, 1, (size_t)(nb < (int32_t)sizeof buf ? nb : (int32_t)sizeof buf), stdout);
        fflush(stdout);
        /* the last token is decoded too, so the timing counts one forward per generated token */
        if (moec_session_forward(s, &id, 1, logits, 0, &err)) goto fail;
    }
    double t_decode = cli_now_s() - t1;
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prefill: %zu tokens, %.2f tokens/s | decode: %ld tokens, %.2f tokens/s\n", n_prompt,
            (double)n_prompt / t_prefill, n_gen, n_gen > 0 ? (double)n_gen / t_decode : 0.0);
    rc = 0;
    goto done;
fail:
    rc = cli_fail("generate", &err);
done:
    free(prompt_buf);
    free(ids);
    free(prompt_ids);
    free(logits);
    moec_sampler_free(smp);
    moec_session_free(s);
    moec_tokenizer_free(tok);
    moec_model_close(m);
    return rc;
}
