/* cmd_eval.c — `moec eval`: next-token loss and perplexity of a checkpoint on a data
 * directory's validation split, overall and per domain (every target counted exactly once),
 * the expert load per domain and the global MaxVio. Runs on the inference path: the weights
 * stay in their stored dtype (memory ≈ weights + one window's activations and KV cache). */
#include "commands.h"

#include "io/file.h"
#include "moec.h"
#include "train/data.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: moec eval -m DIR --data DIR [options]\n"
               "  -m, --model DIR    checkpoint (HF layout)\n"
               "  --data DIR         token shards from `moec data` (made with the model's tokenizer)\n"
               "  --split S          val or train (default val)\n"
               "  --seq N            tokens per window (default 128)\n"
               "  --max-windows N    evaluate at most N windows per domain, 0 = all (default 0)\n"
               "  -t, --threads N    threads (default: number of cores)\n"
               "  --experts-per-token K  route each token to K experts (default: the model's)\n"
               "  --json FILE        also write every figure as one JSON object (format moec-eval, see\n"
               "                     docs/router_comparison.md), atomically; '-' = stdout (the table then goes to stderr)\n"
               "The 'all' row pools the per-domain sums: every target of the split counted once.\n"
               "Then: each domain's share of routed tokens per expert (mean over MoE layers) and the\n"
               "global MaxVio per layer, (max load - mean load) / mean load over the whole split.\n");
}

/* log Σ exp(x) - x[target], in double */
static double token_loss(const float *x, int V, int32_t target) {
    double m = x[0];
    for (int i = 1; i < V; i++) m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int i = 0; i < V; i++) s += exp((double)x[i] - m);
    return m + log(s) - (double)x[target];
}

/* Loss sum and target count over one domain's evaluation windows, one window per forward. */
static moec_status eval_domain(moec_data_reader *d, moec_data_split split, int32_t dom, moec_session *s, int V,
                               int S, uint64_t max_windows, int32_t *row, float *logits, double *sum, int64_t *count,
                               moec_error *err) {
    uint64_t n = moec_data_eval_n_windows(d, split, dom, S);
    if (max_windows && n > max_windows) n = max_windows;
    *sum = 0;
    *count = 0;
    for (uint64_t w = 0; w < n; w++) {
        int32_t nv = 0;
        moec_status st = moec_data_eval_window(d, split, dom, S, w, row, &nv, err);
        if (st) return st;
        if (nv < 2) continue;
        moec_session_reset(s);
        if ((st = moec_session_forward(s, row, nv - 1, logits, 1, err))) return st;
        for (int t = 0; t + 1 < nv; t++) *sum += token_loss(logits + (size_t)t * V, V, row[t + 1]);
        *count += nv - 1;
    }
    return MOEC_OK;
}

/* Routing figures of one row of counts [L, E_r] over `tokens` routed tokens (see --json):
 * per layer the experts per token (every router expert) and the true ones (FFN experts 0..E-1). */
static cJSON *json_row(const char *name, int64_t targets, double sum, const double *load, int L, int E, int E_r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddNumberToObject(o, "targets", (double)targets);
    cJSON_AddNumberToObject(o, "loss", targets ? sum / (double)targets : NAN);
    cJSON_AddNumberToObject(o, "perplexity", targets ? exp(sum / (double)targets) : NAN);
    cJSON_AddNumberToObject(o, "routed_tokens", (double)targets); /* a window forwards its nv-1 input positions */
    double ept = 0, tept = 0;
    int n_moe = 0;
    cJSON *rows = cJSON_AddArrayToObject(o, "expert_load");
    for (int il = 0; il < L; il++) {
        const double *c = load + (size_t)il * E_r;
        double all = 0, ffn = 0;
        for (int e = 0; e < E_r; e++) {
            all += c[e];
            if (e < E) ffn += c[e];
        }
        if (all > 0 && targets > 0) {
            ept += all / (double)targets;
            tept += ffn / (double)targets;
            n_moe++;
        }
        cJSON *r = cJSON_CreateArray();
        for (int e = 0; r && e < E_r; e++) cJSON_AddItemToArray(r, cJSON_CreateNumber(c[e]));
        cJSON_AddItemToArray(rows, r);
    }
    cJSON_AddNumberToObject(o, "experts_per_token", n_moe ? ept / n_moe : 0.0);
    cJSON_AddNumberToObject(o, "true_experts_per_token", n_moe ? tept / n_moe : 0.0);
    return o;
}

/* The machine-readable result (format "moec-eval" v1, documented in docs/router_comparison.md). */
static char *eval_json(const char *model, const char *data, moec_data_reader *d, moec_data_split split, long S,
                       long max_windows, long k_req, const moec_model_info *info, int E_r, const double *sums,
                       const int64_t *counts, const double *load) {
    const int L = info->n_layer, E = info->n_expert > 0 ? info->n_expert : 1;
    const int32_t n_dom = moec_data_n_domains(d);
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "format", "moec-eval");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "model", model);
    cJSON_AddStringToObject(j, "data", data);
    cJSON_AddStringToObject(j, "split", split == MOEC_DATA_VAL ? "val" : "train");
    cJSON_AddNumberToObject(j, "seq", (double)S);
    cJSON_AddNumberToObject(j, "max_windows", (double)max_windows);
    cJSON_AddNumberToObject(j, "n_layer", L);
    cJSON_AddNumberToObject(j, "n_expert", info->n_expert);
    cJSON_AddNumberToObject(j, "n_route_expert", info->n_expert > 0 ? E_r : 0);
    cJSON_AddNumberToObject(j, "k", info->n_expert_used);
    cJSON_AddNumberToObject(j, "experts_per_token_request", (double)k_req);
    cJSON_AddNumberToObject(j, "n_params_total", (double)info->n_params_total);
    cJSON_AddNumberToObject(j, "n_params_active", (double)info->n_params_active);
    cJSON_AddStringToObject(j, "routing", info->routing);
    cJSON *doms = cJSON_AddArrayToObject(j, "domains");
    for (int32_t dom = 0; dom <= n_dom; dom++) {
        cJSON *o = json_row(dom == n_dom ? "all" : moec_data_domain_name(d, dom), counts[dom], sums[dom],
                            load + (size_t)dom * L * E_r, L, E, E_r);
        if (dom == n_dom) cJSON_AddItemToObject(j, "all", o);
        else cJSON_AddItemToArray(doms, o);
    }
    /* per layer over the whole split: global MaxVio over the FFN experts, experts per token */
    const double *all = load + (size_t)n_dom * L * E_r;
    const int64_t n_all = counts[n_dom];
    cJSON *layers = cJSON_AddArrayToObject(j, "layers");
    double vio_sum = 0, ept = 0, tept = 0;
    int n_moe = 0;
    for (int il = 0; il < L; il++) {
        const double *c = all + (size_t)il * E_r;
        double tot = 0, ffn = 0, mx = 0;
        for (int e = 0; e < E_r; e++) {
            tot += c[e];
            if (e < E) {
                ffn += c[e];
                mx = c[e] > mx ? c[e] : mx;
            }
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", il);
        cJSON_AddBoolToObject(o, "moe", tot > 0);
        if (tot > 0) {
            const double vio = ffn > 0 ? (mx - ffn / E) / (ffn / E) : 0.0;
            cJSON_AddNumberToObject(o, "max_vio", vio);
            cJSON_AddNumberToObject(o, "experts_per_token", tot / (double)n_all);
            cJSON_AddNumberToObject(o, "true_experts_per_token", ffn / (double)n_all);
            vio_sum += vio;
            ept += tot / (double)n_all;
            tept += ffn / (double)n_all;
            n_moe++;
        }
        cJSON_AddItemToArray(layers, o);
    }
    cJSON_AddNumberToObject(j, "max_vio", n_moe ? vio_sum / n_moe : 0.0);
    cJSON_AddNumberToObject(j, "experts_per_token", n_moe ? ept / n_moe : 0.0);
    cJSON_AddNumberToObject(j, "true_experts_per_token", n_moe ? tept / n_moe : 0.0);
    cJSON_AddNumberToObject(j, "flops_saved_frac",
                            n_moe && info->n_expert_used > 0 ? 1.0 - tept / n_moe / info->n_expert_used : 0.0);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

int moec_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *json = NULL;
    long S = 128, threads = 0, max_windows = 0, k = 0;
    moec_data_split split = MOEC_DATA_VAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) model = argv[++i];
        else if (!strcmp(a, "--data") && v) data = argv[++i];
        else if (!strcmp(a, "--json") && v) json = argv[++i];
        else if (!strcmp(a, "--split") && v) {
            const char *s = argv[++i];
            if (!strcmp(s, "val")) split = MOEC_DATA_VAL;
            else if (!strcmp(s, "train")) split = MOEC_DATA_TRAIN;
            else {
                fprintf(stderr, "moec eval: --split expects val or train, got '%s'\n", s);
                return 2;
            }
        } else if (!strcmp(a, "--experts-per-token") && v) {
            if (!cli_parse_int("eval", a, argv[++i], 0, 1 << 16, &k)) return 2;
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
    moec_error err = {0};
    moec_model *m = NULL;
    moec_session *sess = NULL;
    moec_data_reader *d = NULL;
    int32_t *row = NULL;
    float *logits = NULL;
    double *load = NULL, *sums = NULL;
    int64_t *counts = NULL;
    char *js = NULL;
    int rc = 1;
    char tk[4096];
    moec_model_params mp = moec_model_default_params();
    mp.n_threads = (int32_t)threads;
    if (moec_model_open(&m, model, &mp, &err)) goto fail;
    const moec_model_info *info = moec_model_get_info(m);
    if (moec_data_open(&d, data, &err) || moec_data_check_vocab(d, info->n_vocab, &err)) goto fail;
    if (snprintf(tk, sizeof tk, "%s/tokenizer.json", model) < (int)sizeof tk && moec_data_check_tokenizer(d, tk, &err))
        goto fail;
    if (S > info->max_position_embeddings) S = info->max_position_embeddings;
    if (moec_session_new(&sess, m, (int32_t)S, &err) ||
        moec_session_set_experts_per_token(sess, (int32_t)k, &err))
        goto fail;
    const int V = info->n_vocab, L = info->n_layer, E = info->n_expert > 0 ? info->n_expert : 1;
    /* the router's width: the session's counts are [L, E_r] (FFN experts first, then any
     * zero-compute experts) */
    const int E_r = info->n_route_expert > E ? info->n_route_expert : E;
    const int32_t n_dom = moec_data_n_domains(d);
    FILE *tab = json && !strcmp(json, "-") ? stderr : stdout; /* stdout carries the JSON then */
    row = malloc((size_t)(S + 1) * sizeof *row);
    logits = malloc((size_t)S * (size_t)V * sizeof *logits);
    load = calloc((size_t)(n_dom + 1) * (size_t)L * (size_t)E_r, sizeof *load);
    sums = calloc((size_t)n_dom + 1, sizeof *sums);
    counts = calloc((size_t)n_dom + 1, sizeof *counts);
    if (!row || !logits || !load || !sums || !counts) {
        fprintf(stderr, "moec eval: out of memory\n");
        goto done;
    }
    if (moec_data_n_tokens(d, split) == 0) {
        fprintf(stderr, "moec eval: %s has no %s tokens: remake it with `moec data --val-fraction F`, F > 0 "
                        "(every domain then gets validation tokens)\n", data,
                split == MOEC_DATA_VAL ? "validation" : "training");
        goto done;
    }
    fprintf(tab, "%-20s %12s %10s %12s\n", "domain", "tokens", "loss", "perplexity");
    double all_sum = 0;
    int64_t all_count = 0;
    for (int32_t dom = 0; dom <= n_dom; dom++) {
        const int last = dom == n_dom;
        double sum = all_sum;
        int64_t count = all_count;
        if (!last) {
            moec_session_clear_expert_counts(sess);
            if (eval_domain(d, split, dom, sess, V, (int)S, (uint64_t)max_windows, row, logits, &sum, &count, &err))
                goto fail;
            const int64_t *c = moec_session_expert_counts(sess);
            for (size_t i = 0; i < (size_t)L * E_r; i++) {
                load[(size_t)dom * L * E_r + i] = (double)c[i];
                load[(size_t)n_dom * L * E_r + i] += (double)c[i];
            }
            all_sum += sum;
            all_count += count;
        }
        sums[dom] = sum;
        counts[dom] = count;
        const char *name = last ? "all" : moec_data_domain_name(d, dom);
        if (count == 0) {
            fprintf(tab, "%-20s %12s %10s %12s\n", name, "0", "-", "-");
            continue;
        }
        fprintf(tab, "%-20s %12lld %10.4f %12.2f\n", name, (long long)count, sum / (double)count, exp(sum / (double)count));
    }
    if (all_count == 0) {
        fprintf(stderr, "moec eval: no %s targets in %s (every window is shorter than 2 tokens)\n",
                split == MOEC_DATA_VAL ? "validation" : "training", data);
        goto done;
    }
    if (info->n_expert > 0) {
        /* per domain: each expert's share of the routed tokens, mean over MoE layers */
        fprintf(tab, "\nexpert load by domain (share of routed tokens, %%, mean over MoE layers):\n%-20s", "domain");
        for (int e = 0; e < E && e < 16; e++) fprintf(tab, " %5d", e);
        fprintf(tab, "%s\n", E > 16 ? "  ..." : "");
        for (int32_t dom = 0; dom <= n_dom; dom++) {
            double share[16] = {0};
            int n_moe = 0;
            for (int il = 0; il < L; il++) {
                const double *c = load + ((size_t)dom * L + il) * E_r;
                double tot = 0;
                for (int e = 0; e < E; e++) tot += c[e];
                if (tot <= 0) continue;
                n_moe++;
                for (int e = 0; e < E && e < 16; e++) share[e] += c[e] / tot;
            }
            fprintf(tab, "%-20s", dom == n_dom ? "all" : moec_data_domain_name(d, dom));
            for (int e = 0; e < E && e < 16; e++) fprintf(tab, " %5.1f", n_moe ? 100.0 * share[e] / n_moe : 0.0);
            fprintf(tab, "%s\n", E > 16 ? "  ..." : "");
        }
        /* global MaxVio (Wang et al. 2024): loads over the whole split, per layer and mean */
        fprintf(tab, "\nglobal MaxVio by layer:");
        double mean_vio = 0;
        int n_moe = 0;
        for (int il = 0; il < L; il++) {
            const double *c = load + ((size_t)n_dom * L + il) * E_r;
            double tot = 0, mx = 0;
            for (int e = 0; e < E; e++) {
                tot += c[e];
                mx = c[e] > mx ? c[e] : mx;
            }
            if (tot <= 0) continue;
            const double vio = (mx - tot / E) / (tot / E);
            fprintf(tab, " %d:%.3f", il, vio);
            mean_vio += vio;
            n_moe++;
        }
        fprintf(tab, "\nglobal MaxVio (mean over MoE layers): %.4f\n", n_moe ? mean_vio / n_moe : 0.0);
    }
    if (json) {
        js = eval_json(model, data, d, split, S, max_windows, k, info, E_r, sums, counts, load);
        if (!js) {
            fprintf(stderr, "moec eval: out of memory\n");
            goto done;
        }
        const size_t n = strlen(js);
        js[n] = '\n'; /* cJSON_Print leaves no final newline; its terminator becomes one */
        if (!strcmp(json, "-")) {
            if (fwrite(js, 1, n + 1, stdout) != n + 1 || fflush(stdout)) {
                fprintf(stderr, "moec eval: cannot write the JSON to stdout\n");
                goto done;
            }
        } else {
            moec_iovec part = {.data = js, .size = n + 1};
            if (moec_file_write_atomic(json, &part, 1, &err)) goto fail;
        }
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail("eval", &err);
done:
    free(row);
    free(logits);
    free(load);
    free(sums);
    free(counts);
    free(js);
    moec_session_free(sess);
    moec_model_close(m);
    moec_data_close(d);
    return rc;
}
