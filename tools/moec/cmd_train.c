/* cmd_train.c — `moec train`: train an MoE language model from scratch (or from --init) on
 * token shards made by `moec data`; see src/train/trainer.h for what a run does. */
#include "commands.h"

#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f, const moec_train_params *d) {
    fprintf(f,
            "usage: moec train --config model.json --data DIR --out DIR [options]\n"
            "  --config FILE      HF-style config.json of any supported architecture (presets: configs/*.json)\n"
            "  --data DIR         token shards from `moec data` (required)\n"
            "  --out DIR          checkpoint directory: HF layout + training state (required)\n"
            "  --init DIR         start from this checkpoint's weights (fine-tuning); its config unless --config\n"
            "  --resume           continue the run in --out exactly where its last checkpoint left it\n"
            "  --overwrite        replace whatever --out holds\n"
            "  --steps N          optimizer steps (default %lld)\n"
            "  --batch N          sequences per micro-batch (default %d)\n"
            "  --seq N            tokens per sequence (default %d)\n"
            "  --accum N          micro-batches per step, gradient accumulation (default %d)\n"
            "  --lr X             peak learning rate (default %g)\n"
            "  --lr-min X         final learning rate of the cosine decay (default lr/10)\n"
            "  --warmup N         linear warmup steps (default %lld)\n"
            "  --weight-decay X   AdamW decoupled weight decay, matrices only (default %g)\n"
            "  --clip X           global gradient-norm clip, 0 = off (default %g)\n"
            "  --aux-coef X       load-balancing loss coefficient alpha, Switch form, alpha at balance\n"
            "                     (default: k x config.json's router_aux_loss_coef; transformers' 0.001 when absent)\n"
            "  --z-coef X         router z-loss coefficient (default: config.json's router_z_loss_coef, else 0.001)\n"
            "  --label-smoothing X  label-smoothed cross-entropy, eps in [0, 1) (default: config.json's\n"
            "                     moec_label_smoothing, else 0; the THOR preset's 0.1)\n"
            "  --matmul fp32|bf16 precision of the linear layers' and attention's products (default fp32);\n"
            "                     bf16: operands rounded to bf16, fp32 sums (AMX tiles where the CPU has\n"
            "                     them), fp32 master weights, routers and softmax (mixed precision)\n"
            "  --seed N           seed for initialisation and data order (default %llu)\n"
            "  -t, --threads N    threads (default: number of cores)\n"
            "  --eval-every N     validate every N steps, 0 = at the end only (default %lld)\n"
            "  --eval-batches N   validation micro-batches per evaluation (default %d)\n"
            "  --save-every N     checkpoint every N steps, 0 = at the end only (default %lld)\n"
            "  --stop-after N     checkpoint and stop after N steps of this invocation (time-boxed runs)\n"
            "  --no-progress      no live progress line\n",
            (long long)d->steps, d->batch, d->seq, d->accum, (double)d->lr, (long long)d->warmup,
            (double)d->weight_decay, (double)d->clip, (unsigned long long)d->seed, (long long)d->eval_every, d->eval_batches, (long long)d->save_every);
}

int moec_cmd_train(int argc, char **argv) {
    moec_train_params p = moec_train_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        double x;
#define INT_FLAG(name, lo, hi, dst)                                                   \
    else if (!strcmp(a, name) && v) {                                                 \
        if (!cli_parse_int("train", a, argv[++i], lo, hi, &n)) return 2;              \
        dst = n;                                                                      \
    }
#define FLT_FLAG(name, lo, hi, dst)                                                   \
    else if (!strcmp(a, name) && v) {                                                 \
        if (!cli_parse_float("train", a, argv[++i], lo, hi, &x)) return 2;            \
        dst = (float)x;                                                               \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, &p);
            return 0;
        } else if (!strcmp(a, "--config") && v) p.config_path = argv[++i];
        else if (!strcmp(a, "--data") && v) p.data_dir = argv[++i];
        else if (!strcmp(a, "--out") && v) p.out_dir = argv[++i];
        else if (!strcmp(a, "--init") && v) p.init_dir = argv[++i];
        else if (!strcmp(a, "--resume")) p.resume = 1;
        else if (!strcmp(a, "--overwrite")) p.overwrite = 1;
        else if (!strcmp(a, "--no-progress")) p.progress = 0;
        else if (!strcmp(a, "--matmul") && v) {
            const char *m = argv[++i];
            if (strcmp(m, "fp32") && strcmp(m, "bf16")) {
                fprintf(stderr, "moec train: --matmul must be fp32 or bf16, got '%s'\n", m);
                return 2;
            }
            p.matmul_bf16 = !strcmp(m, "bf16");
        }
        INT_FLAG("--steps", 1, 1000000000L, p.steps)
        INT_FLAG("--batch", 1, 1 << 16, p.batch)
        INT_FLAG("--seq", 2, 1 << 16, p.seq)
        INT_FLAG("--accum", 1, 1 << 16, p.accum)
        INT_FLAG("--warmup", 0, 1000000000L, p.warmup)
        INT_FLAG("--seed", 0, 0x7fffffffL, p.seed)
        INT_FLAG("--threads", 1, 1024, p.threads)
        INT_FLAG("-t", 1, 1024, p.threads)
        INT_FLAG("--eval-every", 0, 1000000000L, p.eval_every)
        INT_FLAG("--eval-batches", 1, 1 << 20, p.eval_batches)
        INT_FLAG("--save-every", 0, 1000000000L, p.save_every)
        INT_FLAG("--stop-after", 0, 1000000000L, p.stop_after)
        FLT_FLAG("--lr", 1e-12, 10.0, p.lr)
        FLT_FLAG("--lr-min", 0.0, 10.0, p.lr_min)
        FLT_FLAG("--weight-decay", 0.0, 10.0, p.weight_decay)
        FLT_FLAG("--clip", 0.0, 1e9, p.clip)
        FLT_FLAG("--aux-coef", 0.0, 100.0, p.aux_coef)
        FLT_FLAG("--z-coef", 0.0, 100.0, p.z_coef)
        FLT_FLAG("--label-smoothing", 0.0, 0.999, p.label_smoothing)
        else {
            fprintf(stderr, "moec train: unknown or incomplete option '%s' (see moec train --help)\n", a);
            return 2;
        }
#undef INT_FLAG
#undef FLT_FLAG
    }
    if (!p.data_dir || !p.out_dir || (!p.config_path && !p.init_dir && !p.resume)) {
        fprintf(stderr, "moec train: --data DIR, --out DIR and --config FILE (or --init DIR, or --resume) are required "
                        "(see moec train --help)\n");
        return 2;
    }
    if (p.resume && p.overwrite) {
        fprintf(stderr, "moec train: --resume and --overwrite contradict each other\n");
        return 2;
    }
    moec_error err = {0};
    if (moec_train_run(&p, &err)) {
        if (isatty(fileno(stderr))) fprintf(stderr, "\n"); /* end a live progress line; a log gets one line */
        return cli_fail("train", &err);
    }
    return 0;
}
