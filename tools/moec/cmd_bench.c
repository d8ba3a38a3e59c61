/* cmd_bench.c — `moec bench [decode]`: prefill and decode throughput measured like llama-bench
 * (pp<P>: one prefill of P tokens; tg<N>: N single-token decode steps), repeated -r times,
 * mean and standard deviation of tokens/s. Token ids are fixed pseudo-random values. Then the
 * physical limit decode runs into: active weight bytes per token, the GB/s decode reached, the
 * read bandwidth of the same pages with the same threads (passes right before and after the
 * timed runs: the VMs' bandwidth drifts), their ratio, and peak RSS against weights + session. */
#include "commands.h"

#include <math.h>
#include <sys/resource.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec bench [decode] -m DIR [options]\n"
               "       moec bench train --preset tiny|small|fine [options] (see moec bench train --help)\n"
               "  -m, --model DIR    Hugging Face checkpoint directory or GGUF file (required)\n"
               "  -p N               prefill tokens (default 128; 0 = skip)\n"
               "  -n N               decode tokens (default 32; 0 = skip)\n"
               "  -r N               repetitions (default 3)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "  --bw-passes N      read-bandwidth passes before and after the timed runs (default 3 each)\n"
               "  --csv              comma-separated instead of tab-separated\n"
               "prints a table (test, threads, tokens_per_s mean, stddev), then one of metrics (metric, value,\n"
               "note): active_bytes_per_token, decode_gb_per_s, read_bw_gb_per_s, bw_limit_fraction,\n"
               "peak_rss_bytes, rss_budget_bytes, rss_over_budget, system\n");
}

/* Peak resident bytes of this process image: VmHWM (ru_maxrss would also count the RSS of the
 * program that exec'd us, e.g. a Python test harness, since Linux keeps it across execve). */
static double peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        kb = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
    }
    return (double)kb * 1024.0;
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
    long P = 128, N = 32, R = 3, threads = 0, bw_passes = 3;
    int csv = 0;
    int first = 1;
    if (argc > 1 && !strcmp(argv[1], "train")) return moec_cmd_bench_train(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "decode")) first = 2; /* `moec bench` alone is the decode bench */
    for (int i = first; i < argc; i++) {
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
        } else if (!strcmp(a, "--bw-passes") && v) {
            if (!cli_parse_int("bench", a, argv[++i], 0, 1000, &bw_passes)) return 2;
        } else if (!strcmp(a, "--csv")) {
            csv = 1;
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
    double *bw = calloc((size_t)(2 * bw_passes + 1), sizeof *bw);
    int n_bw = 0;
    if (moec_model_open(&m, model, &mp, &err)) goto fail;
    const moec_model_info *in = moec_model_get_info(m);
    const long total = P + N + 1;
    if (moec_session_new(&s, m, (int32_t)total, &err)) goto fail;
    ids = malloc((size_t)total * sizeof *ids);
    logits = malloc((size_t)in->n_vocab * sizeof *logits);
    if (!ids || !logits || !tp || !tg || !bw) {
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
    for (long b = 0; b < bw_passes; b++, n_bw++)
        if (moec_model_read_bandwidth(m, &bw[n_bw], &err)) goto fail;
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
    for (long b = 0; b < bw_passes; b++, n_bw++)
        if (moec_model_read_bandwidth(m, &bw[n_bw], &err)) goto fail;
    const char *sep = csv ? "," : "\t";
    printf("test%sthreads%stokens_per_s%sstddev\n", sep, sep, sep);
    double mean, sd, tg_mean = 0;
    int nt = in->n_threads;
    if (P > 0) {
        stats(tp, (int)R, &mean, &sd);
        printf("pp%ld%s%d%s%.2f%s%.2f\n", P, sep, nt, sep, mean, sep, sd);
    }
    if (N > 0) {
        stats(tg, (int)R, &mean, &sd);
        printf("tg%ld%s%d%s%.2f%s%.2f\n", N, sep, nt, sep, mean, sep, sd);
        tg_mean = mean;
    }
    /* the limit: decode streams the active weights once per token */
    printf("\nmetric%svalue%snote\n", sep, sep);
    const double active = (double)in->n_bytes_active, dec_gbs = active * tg_mean / 1e9;
    printf("active_bytes_per_token%s%" PRId64 "%s%s\n", sep, in->n_bytes_active, sep, in->weight_formats);
    if (N > 0) printf("decode_gb_per_s%s%.2f%sactive bytes x decode tokens/s\n", sep, dec_gbs, sep);
    if (n_bw > 0) {
        const double med = cli_sort_median(bw, n_bw);
        printf("read_bw_gb_per_s%s%.2f%smedian of %d passes over the weights (min %.2f, max %.2f), %d threads\n",
               sep, med, sep, n_bw, bw[0], bw[n_bw - 1], nt);
        if (N > 0)
            printf("bw_limit_fraction%s%.3f%sdecode GB/s / median read GB/s (%.3f of the max)\n", sep, dec_gbs / med,
                   sep, dec_gbs / bw[n_bw - 1]);
    }
    const double rss = peak_rss_bytes();
    if (rss > 0) {
        const double budget = (double)in->n_bytes_weights + (double)moec_session_memory_bytes(s);
        printf("peak_rss_bytes%s%.0f%sVmHWM (mapped weight pages count once read)\n", sep, rss, sep);
        printf("rss_budget_bytes%s%.0f%sweights %" PRId64 " + session %zu (KV cache %d tokens, scratch)\n", sep,
               budget, sep, in->n_bytes_weights, moec_session_memory_bytes(s), (int)total);
        printf("rss_over_budget%s%+.4f%s(peak RSS - budget) / budget; target <= +0.10\n", sep,
               (rss - budget) / budget, sep);
    }
    printf("system%s%s%smoec %s\n", sep, moec_system_info(), sep, cli_version());
    rc = 0;
    goto done;
fail:
    rc = cli_fail("bench", &err);
done:
    free(tp);
    free(tg);
    free(bw);
    free(ids);
    free(logits);
    moec_session_free(s);
    moec_model_close(m);
    return rc;
}
