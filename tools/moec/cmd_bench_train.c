/* cmd_bench_train.c — `moec bench train --preset tiny|small|fine`: training throughput on exactly
 * the model, batch and optimizer of the PyTorch baseline (shared/bench/torch_moe_train.py, its
 * PRESETS table copied below), on random tokens, so the two can be compared side by side
 * (bench/train_vs_torch.sh). Forward + backward + AdamW per step; the first step pays the
 * first-touch page faults and is not counted (the baseline drops it too); tokens/s is the median
 * over the others and is printed last. The run lives in a temporary directory that is removed. */
#include "commands.h"

#include "core/error.h"
#include "train/data.h"
#include "train/trainer.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int d, L, H, KV, E, k, ff, sff, V, T, B;
} bench_preset;

/* torch_moe_train.py's PRESETS: d, layers, heads, kv heads, experts, top-k, expert ff, shared ff,
 * vocab, seq, batch */
static const bench_preset PRESETS[] = {
    {"tiny", 128, 4, 4, 4, 8, 2, 256, 0, 4096, 128, 8},
    {"small", 512, 8, 8, 8, 16, 2, 512, 0, 8192, 256, 8},
    {"fine", 512, 8, 8, 8, 64, 8, 128, 256, 8192, 256, 8},
};

static void usage(FILE *f) {
    fprintf(f, "usage: moec bench train --preset tiny|small|fine [options]\n"
               "  --preset NAME      the PyTorch baseline's model and batch (shared/bench/torch_moe_train.py)\n"
               "  --steps N          timed steps after one warm-up step (default 5)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "  --keep DIR         train in DIR and keep it (default: a temporary directory, removed)\n"
               "  --matmul fp32|bf16 linear layers' and attention's products (moec train --matmul; default fp32)\n"
               "prints the configuration, per-step tokens/s, then `tokens_per_s N` (median of the timed steps)\n");
}

/* The baseline's model as a config.json moec trains: Mixtral without a shared expert, else
 * Qwen2-MoE with an ungated shared expert; softmax top-k renormalised, LBL 0.01 in HF's
 * normalisation (torch: 0.01 * E * sum f P), no z-loss, untied head, rope theta 1e4, eps 1e-6. */
static int write_config(const char *path, const bench_preset *p) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const int hd = p->d / p->H;
    if (p->sff == 0)
        fprintf(f,
                "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\", \"vocab_size\": %d,\n"
                " \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,\n"
                " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d,\n"
                " \"num_local_experts\": %d, \"num_experts_per_tok\": %d,\n",
                p->V, p->d, p->ff, p->L, p->H, p->KV, hd, p->E, p->k);
    else
        fprintf(f,
                "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"model_type\": \"qwen2_moe\", \"vocab_size\": %d,\n"
                " \"hidden_size\": %d, \"intermediate_size\": %d, \"moe_intermediate_size\": %d,\n"
                " \"shared_expert_intermediate_size\": %d, \"moec_shared_expert_gate\": false, \"qkv_bias\": false,\n"
                " \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d,\n"
                " \"num_experts\": %d, \"num_experts_per_tok\": %d, \"norm_topk_prob\": true,\n"
                " \"decoder_sparse_step\": 1, \"mlp_only_layers\": [], \"use_sliding_window\": false,\n",
                p->V, p->d, 4 * p->d, p->ff, p->sff, p->L, p->H, p->KV, p->E, p->k);
    fprintf(f, " \"max_position_embeddings\": %d, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-06,\n"
               " \"hidden_act\": \"silu\", \"initializer_range\": 0.02, \"tie_word_embeddings\": false,\n"
               " \"router_aux_loss_coef\": 0.01, \"router_z_loss_coef\": 0.0, \"eos_token_id\": 0,\n"
               " \"torch_dtype\": \"float32\"}\n",
            p->T);
    return fclose(f) ? -1 : 0;
}

/* Random documents of T + 1 tokens each (uniform ids, the last one the end-of-text id 0), enough
 * for every step's batch without reuse, in one domain. */
static moec_status write_data(const char *dir, const bench_preset *p, long steps, moec_error *err) {
    const uint32_t n_docs = (uint32_t)((steps + 2) * p->B + 8);
    const uint64_t len = (uint64_t)p->T + 1;
    int32_t *tok = malloc((size_t)n_docs * len * sizeof *tok);
    const int32_t **docs = malloc(n_docs * sizeof *docs);
    uint64_t *n = malloc(n_docs * sizeof *n);
    uint32_t *dom = calloc(n_docs, sizeof *dom);
    uint8_t *split = calloc(n_docs, 1);
    moec_status st = MOEC_OK;
    if (!tok || !docs || !n || !dom || !split) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint32_t i = 0; i < n_docs; i++) {
        for (uint64_t j = 0; j + 1 < len; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tok[i * len + j] = 1 + (int32_t)((x >> 33) % (uint64_t)(p->V - 1));
        }
        tok[i * len + len - 1] = 0;
        docs[i] = tok + i * len;
        n[i] = len;
    }
    split[n_docs - 1] = MOEC_DATA_VAL; /* the trainer wants a validation split */
    const char *names[] = {"random"};
    moec_data_write_params w = {0};
    w.tokenizer_path = "(none: random tokens)";
    w.n_vocab = (uint32_t)p->V;
    w.eot_id = 0;
    w.n_domains = 1;
    w.domain_names = names;
    w.n_docs = n_docs;
    w.doc_tokens = docs;
    w.doc_n_tokens = n;
    w.doc_domain = dom;
    w.doc_split = split;
    st = moec_data_write(dir, &w, err);
done:
    free(tok);
    free(docs);
    free(n);
    free(dom);
    free(split);
    return st;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* tokens_per_s and minor_faults of every step line of the trainer's JSONL log, in order */
static int read_steps(const char *log_path, double *v, long *faults, int cap) {
    FILE *f = fopen(log_path, "r");
    if (!f) return -1;
    char line[16384];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        const char *t = strstr(line, "\"tokens_per_s\":"), *pf = strstr(line, "\"minor_faults\":");
        if (!t || n >= cap) continue;
        faults[n] = pf ? strtol(pf + strlen("\"minor_faults\":"), NULL, 10) : -1;
        v[n++] = strtod(t + strlen("\"tokens_per_s\":"), NULL);
    }
    fclose(f);
    return n;
}

int moec_cmd_bench_train(int argc, char **argv) {
    const char *preset = NULL, *keep = NULL;
    long steps = 5, threads = 0;
    int bf16 = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--preset") && v) preset = argv[++i];
        else if (!strcmp(a, "--keep") && v) keep = argv[++i];
        else if (!strcmp(a, "--matmul") && v) {
            const char *m = argv[++i];
            if (strcmp(m, "fp32") && strcmp(m, "bf16")) {
                fprintf(stderr, "moec bench train: --matmul must be fp32 or bf16, got '%s'\n", m);
                return 2;
            }
            bf16 = !strcmp(m, "bf16");
        }
        else if (!strcmp(a, "--steps") && v) {
            if (!cli_parse_int("bench train", a, argv[++i], 1, 100000, &steps)) return 2;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            if (!cli_parse_int("bench train", a, argv[++i], 1, 1024, &threads)) return 2;
        } else {
            fprintf(stderr, "moec bench train: unknown or incomplete option '%s' (see moec bench train --help)\n", a);
            return 2;
        }
    }
    const bench_preset *p = NULL;
    for (size_t i = 0; preset && i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (!strcmp(preset, PRESETS[i].name)) p = &PRESETS[i];
    if (!p) {
        fprintf(stderr, "moec bench train: --preset must be tiny, small or fine%s%s\n", preset ? ", got " : "",
                preset ? preset : "");
        return 2;
    }
    char dir[4096], cfg[4160], data[4160], out[4160], log[4200];
    if (keep) {
        if (mkdir(keep, 0755) && errno != EEXIST) {
            fprintf(stderr, "moec bench train: cannot create %s: %s\n", keep, strerror(errno));
            return 1;
        }
        snprintf(dir, sizeof dir, "%s", keep);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/moec-bench-train-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "moec bench train: cannot create a temporary directory %s: %s\n", dir, strerror(errno));
            return 1;
        }
    }
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(log, sizeof log, "%s/run/train_log.jsonl", dir);
    moec_error err = {0};
    int rc = 1;
    FILE *quiet = NULL;
    double *v = NULL;
    long *faults = NULL;
    if (write_config(cfg, p)) {
        fprintf(stderr, "moec bench train: cannot write %s: %s\n", cfg, strerror(errno));
        goto done;
    }
    if (write_data(data, p, steps, &err)) goto fail;
    moec_train_params tp = moec_train_default_params();
    tp.config_path = cfg;
    tp.data_dir = data;
    tp.out_dir = out;
    tp.overwrite = 1;
    tp.steps = steps + 1;
    tp.batch = p->B;
    tp.seq = p->T;
    tp.accum = 1;
    tp.lr = 3e-4f; /* torch.optim.AdamW(lr=3e-4): constant rate, decay 0.01, no clipping */
    tp.lr_min = 3e-4f;
    tp.warmup = 0;
    tp.weight_decay = 0.01f;
    tp.clip = 0;
    tp.threads = (int32_t)threads;
    tp.matmul_bf16 = bf16;
    tp.eval_every = 0;
    tp.eval_batches = 1;
    tp.save_every = 0;
    tp.progress = 0;
    quiet = fopen("/dev/null", "w");
    tp.log = quiet;
    printf("preset %s: d %d, layers %d, heads %d/%d, experts %d top-%d, expert ff %d, shared ff %d, vocab %d, "
           "batch %d x seq %d, AdamW lr 3e-4; moec %s; %s\n",
           p->name, p->d, p->L, p->H, p->KV, p->E, p->k, p->ff, p->sff, p->V, p->B, p->T, cli_version(),
           moec_system_info());
    fflush(stdout);
    if (moec_train_run(&tp, &err)) goto fail;
    v = malloc((size_t)(steps + 2) * sizeof *v);
    faults = malloc((size_t)(steps + 2) * sizeof *faults);
    const int n = v && faults ? read_steps(log, v, faults, (int)steps + 2) : -1;
    if (n < 2) {
        fprintf(stderr, "moec bench train: the trainer's log %s has %d step lines\n", log, n);
        goto done;
    }
    long steady = 0;
    for (int i = 0; i < n; i++) {
        printf("step %d\ttokens_per_s %.1f\tminor_faults %ld%s\n", i + 1, v[i], faults[i],
               i ? "" : "\t(warm-up, not counted)");
        if (i) steady += faults[i];
    }
    printf("minor_faults_per_step %.1f\t(timed steps; 0 = buffers allocated once)\n", (double)steady / (n - 1));
    printf("tokens_per_s %.1f\n", cli_sort_median(v + 1, n - 1));
    rc = 0;
    goto done;
fail:
    rc = cli_fail("bench train", &err);
done:
    if (quiet) fclose(quiet);
    free(v);
    free(faults);
    if (!keep) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
