/* cmd_bench.c — `moec bench`: prefill and decode throughput measured like llama-bench
 * (pp<P>: one prefill of P tokens; tg<N>: N single-token decode steps), repeated -r times,
 * mean and standard deviation of tokens/s. Token ids are fixed pseudo-random values. */
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec bench -m DIR [options]\n"
               "  -m, --model DIR    Hugging Face checkpoint directory or GGUF file (required)\n"
               "  -p N               prefill tokens (default 128; 0 = skip)\n"
               "  -n N               decode tokens (default 32; 0 = skip)\n"
               "  -r N               repetitions (default 3)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "prints TSV: test, threads, tokens_per_s (mean), stddev\n");
}

static void stats(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

int moec_cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    long P = 128, N = 32, R = 3, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if (!strcmp(a, "-p") && v) {
            if (!cli_parse_int("bench", a, argv[++i], 0, 1 << 20, &P)) return 2;
        } else if (!strcmp(a, "-n") && v) {
            if (!cli_parse_int("bench", a, argv[++i], 0, 1 << 20, &N)) return 2;
        } else if (!strcmp(a, "-r") && v) {
            if (!cli_parse_int("bench", a, argv[++i], 1, 1000, &R)) return 2;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            if (!cli_parse_int("bench", a, argv[++i], 1, 1024, &threads)) return 2;
        } else {
            fprintf(stderr, "moec bench: unknown or incomplete option '%s' (see moec bench --help)\n", a);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "moec bench: -m DIR is required (see moec bench --help)\n");
        return 2;
    }
    moec_error err = {0};
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = (int32_t)threads;
    moec_model *m = NULL;
    moec_session *s = NULL;
    int rc = 1;
    int32_t *ids = NULL;
    float *logits = NULL;
    double *tp = calloc((size_t)R, sizeof *tp), *tg = calloc((size_t)R, sizeof *tg);
    if (moec_model_open(&m, model, &mp, &err)) goto fail;
    const moec_model_info *in = moec_model_get_info(m);
    const long total = P + N + 1;
    if (moec_session_new(&s, m, (int32_t)total, &err)) goto fail;
    ids = malloc((size_t)total * sizeof *ids);
    logits = malloc((size_t)in->n_vocab * sizeof *logits);
    if (!ids || !logits || !tp || !tg) {
        fprintf(stderr, "moec bench: out of memory\n");
        goto done;
    }
    uint64_t x = 12345;
    for (long i = 0; i < total; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)in->n_vocab);
    }
    /* warm-up: touches the weights once so the first repetition does not pay page faults */
    if (moec_session_forward(s, ids, 1, logits, 0, &err)) goto fail;
    for (long r = 0; r < R; r++) {
        if (P > 0) {
            moec_session_reset(s);
            double t0 = cli_now_s();
            if (moec_session_forward(s, ids, (int32_t)P, logits, 0, &err)) goto fail;
            tp[r] = (double)P / (cli_now_s() - t0);
        }
        if (N > 0) {
            /* llama-bench's tg test decodes from an empty context, one token at a time */
            moec_session_reset(s);
            double t0 = cli_now_s();
            for (long i = 0; i < N; i++)
                if (moec_session_forward(s, ids + i, 1, logits, 0, &err)) goto fail;
            tg[r] = (double)N / (cli_now_s() - t0);
        }
    }
    printf("test\tthreads\ttokens_per_s\tstddev\n");
    double mean, sd;
    int nt = in->n_threads;
    if (P > 0) {
        stats(tp, (int)R, &mean, &sd);
        printf("pp%ld\t%d\t%.2f\t%.2f\n", P, nt, mean, sd);
    }
    if (N > 0) {
        stats(tg, (int)R, &mean, &sd);
        printf("tg%ld\t%d\t%.2f\t%.2f\n", N, nt, mean, sd);
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail("bench", &err);
done:
    free(tp);
    free(tg);
    free(ids);
    free(logits);
    moec_session_free(s);
    moec_model_close(m);
    return rc;
}
