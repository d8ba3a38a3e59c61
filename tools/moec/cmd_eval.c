/* cmd_eval.c — `moec eval`: next-token loss and perplexity of a checkpoint on a data
 * directory's validation split, overall and per domain (every target counted exactly once). */
#include "commands.h"

#include "io/file.h"
#include "model/hparams.h"
#include "train/data.h"
#include "train/model_train.h"
#include "train/params.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: moec eval -m DIR --data DIR [options]\n"
               "  -m, --model DIR    checkpoint (HF layout)\n"
               "  --data DIR         token shards from `moec data` (made with the model's tokenizer)\n"
               "  --split S          val or train (default val)\n"
               "  --batch N          sequences per forward (default 8)\n"
               "  --seq N            tokens per window (default 128)\n"
               "  --max-windows N    evaluate at most N windows per domain, 0 = all (default 0)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "The 'all' row pools the per-domain sums: every target of the split counted once.\n");
}

/* Loss sum and target count over one domain's evaluation windows (domain -1 = all). */
static moec_status eval_domain(moec_data_reader *d, moec_data_split split, int32_t dom, moec_tmodel *tm, int B, int S,
                               uint64_t max_windows, int32_t *tok, int32_t *nv, double *sum, int64_t *count,
                               moec_error *err) {
    uint64_t n = moec_data_eval_n_windows(d, split, dom, S);
    if (max_windows && n > max_windows) n = max_windows;
    *sum = 0;
    *count = 0;
    for (uint64_t w0 = 0; w0 < n; w0 += (uint64_t)B) {
        for (int b = 0; b < B; b++) {
            int32_t *row = tok + (size_t)b * (size_t)(S + 1);
            if (w0 + (uint64_t)b < n) {
                moec_status st = moec_data_eval_window(d, split, dom, S, w0 + (uint64_t)b, row, &nv[b], err);
                if (st) return st;
            } else {
                memset(row, 0, (size_t)(S + 1) * sizeof *row);
                nv[b] = 0;
            }
        }
        moec_tstep o;
        moec_status st = moec_tmodel_step(tm, tok, nv, 1.f, 0, &o, err);
        if (st) return st;
        *sum += o.ce * (double)o.n_targets;
        *count += o.n_targets;
    }
    return MOEC_OK;
}

int moec_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL;
    long B = 8, S = 128, threads = 0, max_windows = 0;
    moec_data_split split = MOEC_DATA_VAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if (!strcmp(a, "--data") && v) data = argv[++i];
        else if (!strcmp(a, "--split") && v) {
            const char *s = argv[++i];
            if (!strcmp(s, "val")) split = MOEC_DATA_VAL;
            else if (!strcmp(s, "train")) split = MOEC_DATA_TRAIN;
            else {
                fprintf(stderr, "moec eval: --split expects val or train, got '%s'\n", s);
                return 2;
            }
        } else if (!strcmp(a, "--batch") && v) {
            if (!cli_parse_int("eval", a, argv[++i], 1, 1 << 16, &B)) return 2;
        } else if (!strcmp(a, "--seq") && v) {
            if (!cli_parse_int("eval", a, argv[++i], 2, 1 << 16, &S)) return 2;
        } else if (!strcmp(a, "--max-windows") && v) {
            if (!cli_parse_int("eval", a, argv[++i], 0, 1L << 40, &max_windows)) return 2;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            if (!cli_parse_int("eval", a, argv[++i], 1, 1024, &threads)) return 2;
        } else {
            fprintf(stderr, "moec eval: unknown or incomplete option '%s' (see moec eval --help)\n", a);
            return 2;
        }
    }
    if (!model || !data) {
        fprintf(stderr, "moec eval: -m DIR and --data DIR are required (see moec eval --help)\n");
        return 2;
    }
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_num_procs();
    omp_set_num_threads((int)threads);
#endif
    if (threads > 0) openblas_set_num_threads((int)threads);
    moec_error err = {0};
    moec_hparams hp;
    moec_tparams tp = {0};
    moec_tmodel *tm = NULL;
    moec_data_reader *d = NULL;
    int32_t *tok = NULL, *nv = NULL;
    int rc = 1;
    char tk[4096];
    if (moec_hparams_load(&hp, model, &err) || moec_data_open(&d, data, &err) ||
        moec_data_check_vocab(d, hp.n_vocab, &err))
        goto fail;
    moec_path_join(tk, sizeof tk, model, "tokenizer.json");
    if (moec_data_check_tokenizer(d, tk, &err)) goto fail;
    if (S > hp.max_pos) S = hp.max_pos;
    if (moec_tparams_check_dir(&hp, model, &err) || moec_tparams_new(&tp, &hp, &err) || moec_tparams_load(&tp, model, &err) ||
        moec_tmodel_new(&tm, &tp, (int)B, (int)S, 0.f, 0.f, &err))
        goto fail;
    tok = malloc((size_t)B * (size_t)(S + 1) * sizeof *tok);
    nv = malloc((size_t)B * sizeof *nv);
    if (!tok || !nv) {
        fprintf(stderr, "moec eval: out of memory\n");
        goto done;
    }
    printf("%-20s %12s %10s %12s\n", "domain", "tokens", "loss", "perplexity");
    double all_sum = 0;
    int64_t all_count = 0;
    for (int32_t dom = 0; dom <= moec_data_n_domains(d); dom++) {
        const int last = dom == moec_data_n_domains(d);
        double sum = all_sum;
        int64_t count = all_count;
        if (!last) {
            if (eval_domain(d, split, dom, tm, (int)B, (int)S, (uint64_t)max_windows, tok, nv, &sum, &count, &err))
                goto fail;
            all_sum += sum;
            all_count += count;
        }
        const char *name = last ? "all" : moec_data_domain_name(d, dom);
        if (count == 0) {
            printf("%-20s %12s %10s %12s\n", name, "0", "-", "-");
            continue;
        }
        printf("%-20s %12lld %10.4f %12.2f\n", name, (long long)count, sum / (double)count, exp(sum / (double)count));
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail("eval", &err);
done:
    free(tok);
    free(nv);
    moec_tmodel_free(tm);
    moec_tparams_free(&tp);
    moec_data_close(d);
    return rc;
}
