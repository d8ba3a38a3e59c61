/* trainer.c — see trainer.h. Reads in run order: defaults, run directory, state files,
 * evaluation, checkpoint, the loop. */
#include "train/trainer.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "model/hparams.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/hf_files.h"
#include "train/model_train.h"
#include "train/optim.h"
#include "train/params.h"
#include "io/json.h"
#include "nn/gemm.h"
#include "nn/linear.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

moec_train_params moec_train_default_params(void) {
    moec_train_params p = {0};
    p.steps = 200;
    p.batch = 8;
    p.seq = 128;
    p.accum = 1;
    p.lr = 1e-3f;
    p.lr_min = -1.f; /* = lr / 10 */
    p.warmup = 20;
    p.seed = 1;
    p.eval_every = 50;
    p.save_every = 100;
    p.eval_batches = 8;
    p.aux_coef = -1.f; /* < 0: the config's router_aux_loss_coef / router_z_loss_coef */
    p.z_coef = -1.f;
    p.label_smoothing = -1.f; /* < 0: the config's moec_label_smoothing */
    p.weight_decay = 0.1f;
    p.clip = 1.0f;
    p.beta1 = 0.9f;
    p.beta2 = 0.95f;
    p.eps = 1e-8f;
    p.max_bad_steps = 10;
    p.progress = 1;
    return p;
}

/* Minor page faults of this process so far (first touches of fresh memory). */
static long minor_faults(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* 1 if dir holds nothing but a training log (and temp files of killed writes): what a run
 * leaves when its first checkpoint failed (a full disk) or it was killed before it. */
static int only_a_log(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int log = 0, other = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || strstr(e->d_name, ".tmp.")) continue;
        if (!strcmp(e->d_name, "train_log.jsonl")) log = 1;
        else other = 1;
    }
    closedir(d);
    return log && !other;
}

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

/* ------------------------------------------------------------------ the run's state */

typedef struct {
    const moec_train_params *p;
    moec_hparams hp;
    char *config_text;
    size_t config_len;
    char tokenizer_path[4096];
    moec_hf_files hf; /* config.json as transformers writes it, tokenizer and generation configs */
    moec_data_reader *data;
    moec_tparams tp;
    moec_tmodel *tm;
    moec_tmodel *tm2; /* the second pass of a two-pass router (THOR), on the same parameters; NULL otherwise */
    float *m1, *m2; /* AdamW moments [n_floats] */
    int64_t step;    /* optimizer steps taken (attempted, including skipped ones) */
    int64_t opt_t;   /* successful AdamW updates (bias-correction step) */
    uint64_t cursor; /* training data position (windows consumed) */
    int32_t n_bad;
    FILE *jsonl;
    char log_path[4096];
    int64_t *load; /* [n_layer, E] tokens per expert since the start of this process */
    int32_t *step_counts; /* [n_layer, E] tokens per expert in the current step */
    int64_t *global_counts; /* [n_layer, E] global-batch LBL: the step's counts, from a counting pass */
    moec_tlayer_stats *step_layers; /* [n_layer] the current step's routing statistics */
    int32_t *tokens;
    int32_t *n_valid;
} run;

static moec_status save_state_files(const char *tmp_dir, void *ctx, moec_error *err) {
    run *r = ctx;
    char path[4096];
    moec_path_join(path, sizeof path, tmp_dir, "model.safetensors");
    moec_status st = moec_tparams_save(&r->tp, r->tp.w, path, MOEC_DTYPE_F32, err);
    if (st) return st;
    /* optimizer moments, named after the parameters */
    const int64_t n = r->tp.n_tensors;
    moec_st_entry *e = malloc((size_t)(2 * n) * sizeof *e);
    char(*names)[176] = malloc((size_t)(2 * n) * sizeof *names);
    if (!e || !names) {
        free(e);
        free(names);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            moec_st_entry *x = &e[2 * i + k];
            snprintf(names[2 * i + k], sizeof names[0], "%s.%s", k ? "exp_avg_sq" : "exp_avg", r->tp.specs[i].name);
            *x = (moec_st_entry){.name = names[2 * i + k], .n_dims = r->tp.specs[i].n_dims,
                                 .shape = {r->tp.specs[i].shape[0], r->tp.specs[i].shape[1]},
                                 .data = (k ? r->m2 : r->m1) + r->tp.offset[i]};
        }
    moec_path_join(path, sizeof path, tmp_dir, "optimizer.safetensors");
    st = moec_st_write(path, e, (int)(2 * n), MOEC_DTYPE_F32, err);
    free(e);
    free(names);
    return st;
}

static char *state_json(const run *r) {
    const moec_train_params *p = r->p;
    cJSON *j = cJSON_CreateObject();
    char buf[32];
    cJSON_AddStringToObject(j, "format", "moec-train-state");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "adam_step", (double)r->opt_t);
    snprintf(buf, sizeof buf, "%" PRIu64, r->cursor);
    cJSON_AddStringToObject(j, "data_cursor", buf);
    snprintf(buf, sizeof buf, "%016" PRIx64, moec_data_id(r->data));
    cJSON_AddStringToObject(j, "data_id", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, p->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    cJSON_AddNumberToObject(j, "steps", (double)p->steps);
    cJSON_AddNumberToObject(j, "batch", p->batch);
    cJSON_AddNumberToObject(j, "seq", p->seq);
    cJSON_AddNumberToObject(j, "accum", p->accum);
    cJSON_AddNumberToObject(j, "lr", p->lr);
    cJSON_AddNumberToObject(j, "lr_min", p->lr_min);
    cJSON_AddNumberToObject(j, "warmup", (double)p->warmup);
    cJSON_AddNumberToObject(j, "aux_coef", p->aux_coef);
    cJSON_AddNumberToObject(j, "z_coef", p->z_coef);
    cJSON_AddNumberToObject(j, "label_smoothing", p->label_smoothing);
    cJSON_AddNumberToObject(j, "weight_decay", p->weight_decay);
    cJSON_AddNumberToObject(j, "clip", p->clip);
    cJSON_AddStringToObject(j, "matmul", p->matmul_bf16 ? "bf16" : "fp32");
    cJSON_AddNumberToObject(j, "n_bad", r->n_bad);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

/* Hash routing's balanced table (config moec_hash_table "balanced"; routers/hash.c): built once, at the
 * start of a fresh run, from the token counts of the whole training split (every token of every
 * training shard, end-of-text ids included; the validation split is not looked at), and stored in
 * the parameter tensor model.hash_table, which AdamW skips: checkpoints, resumes and serving read it
 * back instead of recounting. A run from --init keeps the init checkpoint's table. */
static moec_status build_hash_table(run *r, moec_error *err) {
    float *table = moec_tparams_find(&r->tp, 0, MOEC_T_HASH_TABLE, -1, -1);
    if (!table) return MOEC_OK;
    const int32_t V = r->hp.n_vocab;
    const uint64_t n = moec_data_n_tokens(r->data, MOEC_DATA_TRAIN), chunk = 1 << 16;
    uint64_t *counts = calloc((size_t)V, sizeof *counts);
    int32_t *buf = malloc(chunk * sizeof *buf);
    moec_status st = counts && buf ? MOEC_OK : moec_err(err, MOEC_ERR_OOM, "out of memory for the hash table");
    for (uint64_t pos = 0; pos < n && !st; pos += chunk) {
        const uint64_t m = n - pos < chunk ? n - pos : chunk;
        if ((st = moec_data_read(r->data, MOEC_DATA_TRAIN, pos, m, buf, err))) break;
        for (uint64_t i = 0; i < m; i++) counts[buf[i]]++; /* ids < the data's vocab <= V (checked at open) */
    }
    if (!st && !moec_router_hash_balanced(counts, V, r->hp.route.n_expert, table))
        st = moec_err(err, MOEC_ERR_OOM, "out of memory for the hash table");
    free(counts);
    free(buf);
    return st;
}

static moec_status save_checkpoint(run *r, moec_error *err) {
    char *state = state_json(r);
    if (!state) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    const moec_hf_files *hf = &r->hf;
    moec_ckpt_file files[6] = {
        {"config.json", NULL, hf->config, strlen(hf->config), 0},
        {"generation_config.json", NULL, hf->generation_config, strlen(hf->generation_config), 0},
        {"train_state.json", NULL, state, strlen(state), 0},
        {"train_log.jsonl", r->log_path, NULL, 0, 1},
        /* last two: only when the data's tokenizer is known */
        {"tokenizer.json", r->tokenizer_path, NULL, 0, 0},
        {"tokenizer_config.json", NULL, hf->tokenizer_config, hf->tokenizer_config ? strlen(hf->tokenizer_config) : 0, 0},
    };
    if (r->jsonl) {
        fflush(r->jsonl);
        fsync(fileno(r->jsonl));
    }
    moec_error sub = {0};
    moec_status st = moec_ckpt_commit(r->p->out_dir, files, r->tokenizer_path[0] && hf->tokenizer_config ? 6 : 4,
                                      save_state_files, r, &sub);
    free(state);
    if (st) {
        /* say what it means for the run: the step is lost, the previous checkpoint is not */
        char state_path[4096];
        moec_path_join(state_path, sizeof state_path, r->p->out_dir, "train_state.json");
        moec_err(err, st, "checkpoint at step %" PRId64 " not saved (%s); %s", r->step, sub.msg,
                 file_exists(state_path) ? "the previous checkpoint is intact: --resume continues from it"
                                         : "no earlier checkpoint exists");
    }
    return st;
}

moec_status moec_train_state_parse(const char *text, size_t len, const char *path, const moec_train_params *p,
                                   uint64_t data_id, moec_train_state *out, moec_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    if (!j || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "moec-train-state")) {
        cJSON_Delete(j);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not a moec training state", path);
    }
    moec_status jst = moec_json_check(j, path, err);
    if (jst) {
        cJSON_Delete(j);
        return jst;
    }
#define NUM(k) (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, k)) ? cJSON_GetObjectItemCaseSensitive(j, k)->valuedouble : -1)
#define STR(k) (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, k)) ? cJSON_GetObjectItemCaseSensitive(j, k)->valuestring : "")
    char want_id[32], want_seed[32];
    snprintf(want_id, sizeof want_id, "%016" PRIx64, data_id);
    snprintf(want_seed, sizeof want_seed, "%" PRIu64, p->seed);
    const char *mismatch = NULL;
    if (strcmp(STR("data_id"), want_id)) mismatch = "the data directory (different dataset)";
    else if (strcmp(STR("seed"), want_seed)) mismatch = "--seed";
    else if (NUM("batch") != p->batch) mismatch = "--batch";
    else if (NUM("seq") != p->seq) mismatch = "--seq";
    else if (NUM("accum") != p->accum) mismatch = "--accum";
    else if (NUM("steps") != (double)p->steps) mismatch = "--steps";
    else if ((float)NUM("lr") != p->lr) mismatch = "--lr";
    else if (NUM("warmup") != (double)p->warmup) mismatch = "--warmup";
    /* (-1, "the config's", in both when neither run gave the option; a state from before the key
     * existed reads as -1 too) */
    else if ((float)NUM("label_smoothing") != p->label_smoothing) mismatch = "--label-smoothing";
    /* the other settings that change the trajectory (every state since version 1 has them) */
    const struct {
        const char *key, *flag;
        float v;
    } same[] = {{"lr_min", "--lr-min", p->lr_min}, {"aux_coef", "--aux-coef", p->aux_coef},
                {"z_coef", "--z-coef", p->z_coef}, {"weight_decay", "--weight-decay", p->weight_decay},
                {"clip", "--clip", p->clip}};
    for (size_t i = 0; i < sizeof same / sizeof *same && !mismatch; i++)
        if ((float)NUM(same[i].key) != same[i].v) mismatch = same[i].flag;
    /* (absent in states from before --matmul: fp32) */
    if (!mismatch && strcmp(*STR("matmul") ? STR("matmul") : "fp32", p->matmul_bf16 ? "bf16" : "fp32"))
        mismatch = "--matmul";
    if (mismatch) {
        cJSON_Delete(j);
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "cannot resume %s: %s differs from the interrupted run (resume with the same settings)",
                        p->out_dir, mismatch);
    }
    /* every number that becomes an integer is range-checked first (a cast of an out-of-range
     * double is undefined behaviour, and a wrapped n_bad would disable the bad-steps stop) */
    double v_step = NUM("step"), v_adam = NUM("adam_step"), v_bad = NUM("n_bad");
    const char *cur = STR("data_cursor");
    char *cur_end = NULL;
    errno = 0;
    unsigned long long v_cur = strtoull(cur, &cur_end, 10);
    const char *bad = NULL;
    if (!(v_step >= 0 && v_step <= (double)p->steps && v_step == floor(v_step))) bad = "step";
    else if (!(v_adam >= 0 && v_adam <= v_step && v_adam == floor(v_adam))) bad = "adam_step";
    else if (!(v_bad >= 0 && v_bad < (double)INT32_MAX && v_bad == floor(v_bad))) bad = "n_bad";
    else if (!*cur || *cur == '-' || *cur_end || errno) bad = "data_cursor";
    if (!bad) {
        out->step = (int64_t)v_step;
        out->adam_step = (int64_t)v_adam;
        out->cursor = (uint64_t)v_cur;
        out->n_bad = (int32_t)v_bad;
    }
#undef NUM
#undef STR
    cJSON_Delete(j);
    if (bad)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"%s\" is missing or out of range (a damaged training state)", path,
                        bad);
    return MOEC_OK;
}

/* Reads train_state.json and the optimizer file from the out dir; checks the run matches. */
static moec_status load_state(run *r, moec_error *err) {
    const moec_train_params *p = r->p;
    char path[4096];
    moec_path_join(path, sizeof path, p->out_dir, "train_state.json");
    char *text = NULL;
    size_t len = 0;
    moec_status st = moec_file_read_all(path, &text, &len, err);
    if (st) return st;
    moec_train_state ts;
    st = moec_train_state_parse(text, len, path, p, moec_data_id(r->data), &ts, err);
    free(text);
    if (st) return st;
    r->step = ts.step;
    r->opt_t = ts.adam_step;
    r->cursor = ts.cursor;
    r->n_bad = ts.n_bad;
    /* weights and moments */
    if ((st = moec_tparams_load(&r->tp, p->out_dir, err))) return st;
    moec_path_join(path, sizeof path, p->out_dir, "optimizer.safetensors");
    moec_st_set os;
    if ((st = moec_st_open_file(&os, path, err))) return st;
    for (int64_t i = 0; i < r->tp.n_tensors && !st; i++)
        for (int k = 0; k < 2 && !st; k++) {
            char name[176];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", r->tp.specs[i].name);
            moec_st_tensor *t = moec_st_find(&os, name);
            if (!t || t->dtype != MOEC_DTYPE_F32 || t->numel != r->tp.specs[i].numel)
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing or malformed '%s'", path, name);
            else
                memcpy((k ? r->m2 : r->m1) + r->tp.offset[i], t->data, t->nbytes);
        }
    moec_st_close(&os);
    return st;
}

/* ------------------------------------------------------------------ evaluation */

/* Mean next-token loss over about eval_batches·B validation windows, spread evenly over the
 * domains (the first windows of each domain's validation documents), so the number reflects
 * every domain; deterministic. */
static moec_status evaluate(run *r, double *loss, moec_error *err) {
    const moec_train_params *p = r->p;
    moec_tmodel_set_noise(r->tm, 0, 0);
    moec_tmodel_set_global_counts(r->tm, NULL, 0);
    const int32_t n_dom = moec_data_n_domains(r->data) > 0 ? moec_data_n_domains(r->data) : 1;
    const uint64_t per_dom = ((uint64_t)p->eval_batches * (uint64_t)p->batch + (uint64_t)n_dom - 1) / (uint64_t)n_dom;
    double sum = 0.0;
    int64_t count = 0;
    int b = 0;
    for (int32_t dom = 0; dom < n_dom; dom++) {
        uint64_t n_win = moec_data_eval_n_windows(r->data, MOEC_DATA_VAL, dom, p->seq);
        if (n_win > per_dom) n_win = per_dom;
        for (uint64_t w = 0; w < n_win || (dom == n_dom - 1 && w == n_win && b > 0); w++) {
            const int flush_tail = w == n_win; /* last domain: pad and run the partial batch */
            int32_t *row = r->tokens + (size_t)b * (size_t)(p->seq + 1);
            if (!flush_tail) {
                moec_status st = moec_data_eval_window(r->data, MOEC_DATA_VAL, dom, p->seq, w, row, &r->n_valid[b], err);
                if (st) return st;
                b++;
            }
            if (b == p->batch || flush_tail) {
                for (; b < p->batch; b++) { /* empty rows: no targets */
                    memset(r->tokens + (size_t)b * (size_t)(p->seq + 1), 0, (size_t)(p->seq + 1) * sizeof(int32_t));
                    r->n_valid[b] = 0;
                }
                moec_tstep out;
                moec_status st = moec_tmodel_step(r->tm, r->tokens, r->n_valid, 1.f, 0, &out, err);
                if (st) return st;
                sum += out.ce * (double)out.n_targets;
                count += out.n_targets;
                b = 0;
                if (flush_tail) break;
            }
        }
    }
    *loss = count ? sum / (double)count : NAN;
    return MOEC_OK;
}

/* ------------------------------------------------------------------ setup */

static moec_status read_config(run *r, moec_error *err) {
    const moec_train_params *p = r->p;
    char path[4096];
    if (p->resume) {
        moec_path_join(path, sizeof path, p->out_dir, "train_state.json");
        if (!file_exists(path))
            return moec_err(err, MOEC_ERR_INVALID_ARG, "nothing to resume: %s holds no checkpoint (no train_state.json)%s",
                            p->out_dir, only_a_log(p->out_dir) ? "; the run there never completed one: start it again with --overwrite" : "");
        moec_path_join(path, sizeof path, p->out_dir, "config.json");
    }
    else if (p->config_path) snprintf(path, sizeof path, "%s", p->config_path);
    else if (p->init_dir) moec_path_join(path, sizeof path, p->init_dir, "config.json");
    else return moec_err(err, MOEC_ERR_INVALID_ARG, "no model config: give --config FILE (or --init DIR)");
    moec_status st = moec_file_read_all(path, &r->config_text, &r->config_len, err);
    if (st) return st;
    if ((st = moec_hparams_parse(&r->hp, r->config_text, r->config_len, path, err))) return st;
    /* the training attention has no window yet; scaled RoPE needs nothing (it is a table) */
    if (r->hp.sliding_window > 0)
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: training with sliding-window attention (\"sliding_window\") is not supported; "
                        "set it to null (or use_sliding_window to false) to train", path);
    return MOEC_OK;
}

/* mkdir -p: creates dir and every missing parent. */
static moec_status mkdir_parents(const char *dir, moec_error *err) {
    char buf[4096];
    const size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) return moec_err(err, MOEC_ERR_INVALID_ARG, "bad output directory '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        const char c = buf[i];
        buf[i] = '\0';
        if (!file_exists(buf) && mkdir(buf, 0755) != 0 && errno != EEXIST)
            return moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return MOEC_OK;
}

static moec_status prepare_out_dir(run *r, moec_error *err) {
    const moec_train_params *p = r->p;
    char state[4096];
    moec_path_join(state, sizeof state, p->out_dir, "train_state.json");
    const int has_run = file_exists(state);
    if (p->resume) {
        if (!has_run) return moec_err(err, MOEC_ERR_INVALID_ARG, "nothing to resume: %s has no train_state.json", p->out_dir);
        return MOEC_OK;
    }
    if (file_exists(p->out_dir) && !dir_is_empty(p->out_dir)) {
        if (!p->overwrite && !has_run && only_a_log(p->out_dir))
            return moec_err(err, MOEC_ERR_INVALID_ARG,
                            "%s holds only the log of a run that never completed a checkpoint (nothing to resume): "
                            "use --overwrite to start again", p->out_dir);
        if (!p->overwrite)
            return moec_err(err, MOEC_ERR_INVALID_ARG,
                            "%s already holds %s: use --resume to continue it or --overwrite to replace it",
                            p->out_dir, has_run ? "a training run" : "a checkpoint");
        moec_status st = moec_rmtree(p->out_dir, err);
        if (st) return st;
    }
    return mkdir_parents(p->out_dir, err);
}

static void run_free(run *r) {
    if (r->jsonl) fclose(r->jsonl);
    moec_tmodel_free(r->tm);
    moec_tmodel_free(r->tm2);
    moec_tparams_free(&r->tp);
    moec_data_close(r->data);
    free(r->config_text);
    moec_hf_files_free(&r->hf);
    free(r->m1);
    free(r->m2);
    free(r->load);
    free(r->step_counts);
    free(r->global_counts);
    free(r->step_layers);
    free(r->tokens);
    free(r->n_valid);
}

/* ------------------------------------------------------------------ the loop */

/* A JSON number, or null for NaN / infinity (which JSON cannot hold). buf: 32 bytes. */
static const char *json_num(char *buf, double v) {
    if (!isfinite(v)) return "null";
    snprintf(buf, 32, "%.9g", v);
    return buf;
}

double moec_train_optimizer_step(moec_tparams *tp, float *m1, float *m2, int64_t *t, float lr, float clip,
                                 const moec_adamw_cfg *cfg, int *applied) {
    const double gnorm = moec_grad_norm(tp->g, tp->n_floats);
    *applied = isfinite(gnorm);
    if (!*applied) return gnorm;
    const float gscale = moec_clip_coef(gnorm, clip);
    (*t)++;
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const size_t o = tp->offset[i], n = (size_t)tp->specs[i].numel;
        /* buffers: the bias's router updates it (balance); the hash table is fixed at the start */
        if (tp->specs[i].role == MOEC_T_ROUTER_BIAS || tp->specs[i].role == MOEC_T_HASH_TABLE) continue;
        moec_adamw_update(tp->w + o, tp->g + o, gscale, m1 + o, m2 + o, n, *t, lr, moec_tparams_decays(tp, i), cfg);
    }
    return gnorm;
}

static void print_load_table(run *r, FILE *out) {
    const moec_hparams *hp = &r->tp.hp;
    if (hp->n_expert <= 0) return;
    const int E = moec_hparams_n_route(hp); /* FFN experts, then constant, copy, null */
    fprintf(out, "expert load (share of routed tokens, %%), this run:\n  layer");
    for (int e = 0; e < E && e < 16; e++) fprintf(out, " %5d", e);
    fprintf(out, "%s  max/mean\n", E > 16 ? "  ..." : "");
    for (int il = 0; il < hp->n_layer; il++) {
        if (!hp->layer_moe[il]) continue;
        const int64_t *c = r->load + (size_t)il * E;
        double tot = 0, mx = 0;
        for (int e = 0; e < E; e++) {
            tot += (double)c[e];
            mx = fmax(mx, (double)c[e]);
        }
        fprintf(out, "  %5d", il);
        for (int e = 0; e < E && e < 16; e++) fprintf(out, " %5.1f", tot > 0 ? 100.0 * (double)c[e] / tot : 0.0);
        fprintf(out, "%s  %.2f\n", E > 16 ? "  ..." : "", tot > 0 ? mx / (tot / E) : 0.0);
    }
}

/* Seed of the router jitter noise of micro-batch a of a step: a function of the run seed and
 * the position only, so a resumed run draws the same noise. */
static uint64_t noise_seed(uint64_t seed, int64_t step, int a) {
    return moec_mix64(seed ^ moec_mix64(0x9e3779b97f4a7c15ull + (uint64_t)step * 1024u + (uint64_t)a));
}

/* Per-step router state updates (the aux-loss-free bias), from the step's expert counts. */
static void update_router_state(run *r, const moec_hparams *hp) {
    const moec_router *rt = hp->route.router;
    if (hp->n_expert <= 0 || !rt || !rt->update) return;
    const int E = moec_hparams_n_route(hp);
    for (int il = 0; il < hp->n_layer; il++) {
        float *state = moec_tparams_find(&r->tp, 0, MOEC_T_ROUTER_BIAS, il, -1);
        if (!hp->layer_moe[il] || !state) continue;
        int64_t *c64 = r->global_counts + (size_t)il * E; /* free once the step's backward is done */
        for (int e = 0; e < E; e++) c64[e] = r->step_counts[(size_t)il * E + e];
        rt->update(&hp->route, state, c64);
    }
}

typedef struct {
    double worst_imb, mean_max_vio, drop_rate, mean_entropy;
    int unused;
} routing_summary;

/* Writes ,"imbalance":[...],"layers":[{...}] (per MoE layer: load_max_mean, load_cv, max_vio,
 * drop_rate, gate_entropy, unused_experts) for the step's counts, and folds the running load
 * table. Returns the progress line's summary. */
static routing_summary write_routing_metrics(run *r, FILE *f) {
    const moec_hparams *hp = &r->hp;
    const int E = moec_hparams_n_route(hp);
    routing_summary s = {0};
    int n_moe = 0;
    int64_t assigned = 0, dropped = 0;
    char json[512];
    fprintf(f, ",\"imbalance\":[");
    for (int il = 0, first = 1; il < hp->n_layer; il++) {
        if (!hp->layer_moe[il]) continue;
        double tot = 0, mx = 0;
        for (int e = 0; e < E; e++) {
            tot += r->step_counts[(size_t)il * E + e];
            mx = fmax(mx, r->step_counts[(size_t)il * E + e]);
        }
        fprintf(f, "%s%.3f", first ? "" : ",", tot > 0 ? mx / (tot / E) : 0.0);
        first = 0;
    }
    fprintf(f, "],\"layers\":[");
    for (int il = 0, first = 1; il < hp->n_layer; il++) {
        if (!hp->layer_moe[il]) continue;
        const int32_t *c = r->step_counts + (size_t)il * E;
        double tot = 0, mx = 0, ss = 0;
        int unused = 0;
        for (int e = 0; e < E; e++) {
            tot += c[e];
            mx = fmax(mx, c[e]);
            unused += c[e] == 0;
            r->load[(size_t)il * E + e] += c[e];
        }
        const double mean = tot / E;
        for (int e = 0; e < E; e++) ss += (c[e] - mean) * (c[e] - mean);
        const moec_tlayer_stats *ls = &r->step_layers[il];
        const double imb = mean > 0 ? mx / mean : 0, cv = mean > 0 ? sqrt(ss / E) / mean : 0;
        const double vio = mean > 0 ? (mx - mean) / mean : 0; /* batch MaxVio (Wang et al. 2024, Eq. 4) */
        const double drop = ls->assigned > 0 ? (double)ls->dropped / (double)ls->assigned : 0;
        const double ent = ls->tokens > 0 ? ls->entropy_sum / (double)ls->tokens : 0;
        /* mean experts per token: slots that chose an expert (before capacity) per token
         * (issue10-api.md); of those, FFN experts (null/copy/constant picks cost no GEMM) and the
         * expert FLOPs saved against k FFN experts per token (forward, 3 matmuls of 2·d·ff each) */
        const double ept = ls->tokens > 0 ? (double)ls->assigned / (double)ls->tokens : 0;
        const double true_pt = ls->tokens > 0 ? (double)ls->true_assigned / (double)ls->tokens : 0;
        const double k = hp->route.k, saved_pt = (k - true_pt) * 6.0 * hp->n_embd * hp->n_ff_expert;
        snprintf(json, sizeof json,
                 "%s{\"layer\":%d,\"load_max_mean\":%.4f,\"load_cv\":%.4f,\"max_vio\":%.4f,\"drop_rate\":%.5f,"
                 "\"gate_entropy\":%.4f,\"unused_experts\":%d,\"experts_per_token\":%.4f,\"true_experts_per_token\":%.4f,"
                 "\"flops_saved_frac\":%.4f,\"flops_saved_per_token\":%.6g}",
                 first ? "" : ",", il, imb, cv, vio, drop, ent, unused, ept, true_pt, k > 0 ? 1.0 - true_pt / k : 0.0,
                 saved_pt);
        fputs(json, f);
        first = 0;
        s.worst_imb = fmax(s.worst_imb, imb);
        s.mean_max_vio += vio;
        s.mean_entropy += ent;
        s.unused += unused;
        assigned += ls->assigned;
        dropped += ls->dropped;
        n_moe++;
    }
    fprintf(f, "]");
    if (n_moe) {
        s.mean_max_vio /= n_moe;
        s.mean_entropy /= n_moe;
    }
    s.drop_rate = assigned > 0 ? (double)dropped / (double)assigned : 0;
    return s;
}

moec_status moec_train_run(const moec_train_params *pin, moec_error *err) {
    moec_train_params pp = *pin;
    if (pp.lr_min < 0) pp.lr_min = pp.lr / 10.f;
    /* a symlinked --out (runs/latest -> runs/3) is resolved once: the run lives in the
     * directory it points to and the link is left alone (checkpoint.h) */
    char out_real[4096];
    struct stat osb;
    if (pp.out_dir && lstat(pp.out_dir, &osb) == 0 && S_ISLNK(osb.st_mode)) {
        char *real = realpath(pp.out_dir, NULL);
        if (!real) return moec_err(err, MOEC_ERR_IO, "cannot use --out %s: %s", pp.out_dir, strerror(errno));
        const int fits = snprintf(out_real, sizeof out_real, "%s", real) < (int)sizeof out_real;
        free(real);
        if (!fits) return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", pp.out_dir);
        pp.out_dir = out_real;
    }
    const moec_train_params *p = &pp;
    FILE *out = p->log ? p->log : stdout;
    if (p->steps < 1 || p->batch < 1 || p->seq < 2 || p->accum < 1 || !(p->lr > 0) || p->warmup < 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "steps, batch, accum must be >= 1, seq >= 2, lr > 0, warmup >= 0");
    run r;
    memset(&r, 0, sizeof r);
    r.p = p;
    moec_status st;
    int nt = p->threads;
    moec_threads_set(nt); /* <= 0: one per CPU; OpenBLAS runs on one thread inside the pool's tasks */
    const moec_matmul_precision prev_precision =
        moec_matmul_precision_set(p->matmul_bf16 ? MOEC_MATMUL_BF16 : MOEC_MATMUL_FP32);
    if ((st = read_config(&r, err))) goto done;
    if ((st = moec_data_open(&r.data, p->data_dir, err))) goto done;
    if ((st = moec_data_check_vocab(r.data, r.hp.n_vocab, err))) goto done;
    /* the tokenizer that made the data goes into every checkpoint; an --init model's own
     * tokenizer must be the one the data was made with */
    if (p->init_dir) {
        char tk[4096];
        moec_path_join(tk, sizeof tk, p->init_dir, "tokenizer.json");
        if (file_exists(tk) && (st = moec_data_check_tokenizer(r.data, tk, err))) goto done;
    }
    {
        const char *tk = moec_data_tokenizer_path(r.data);
        if (tk && file_exists(tk) && !moec_data_check_tokenizer(r.data, tk, NULL))
            snprintf(r.tokenizer_path, sizeof r.tokenizer_path, "%s", tk);
    }
    {
        /* a chat template comes from the tokenizer's own tokenizer_config.json: the --init
         * checkpoint's, else the one beside the data's tokenizer.json */
        char tmpl[4096] = "";
        if (p->init_dir) moec_path_join(tmpl, sizeof tmpl, p->init_dir, "tokenizer_config.json");
        else if (r.tokenizer_path[0]) {
            snprintf(tmpl, sizeof tmpl, "%s", r.tokenizer_path);
            char *slash = strrchr(tmpl, '/');
            if (slash) snprintf(slash + 1, sizeof tmpl - (size_t)(slash + 1 - tmpl), "tokenizer_config.json");
            else snprintf(tmpl, sizeof tmpl, "tokenizer_config.json");
        }
        if ((st = moec_hf_files_make(&r.hf, r.config_text, r.config_len, "config.json",
                                     r.tokenizer_path[0] ? r.tokenizer_path : NULL, (int32_t)moec_data_eot_id(r.data),
                                     tmpl[0] ? tmpl : NULL, err)))
            goto done;
    }
    if ((st = prepare_out_dir(&r, err))) goto done;
    /* a checkpoint that does not match its config is named before config-sized allocations */
    if (p->resume && (st = moec_tparams_check_dir(&r.hp, p->out_dir, err))) goto done;
    if (!p->resume && p->init_dir && (st = moec_tparams_check_dir(&r.hp, p->init_dir, err))) goto done;
    if ((st = moec_tparams_new(&r.tp, &r.hp, err))) goto done;
    {
        size_t need = 0;
        if (!moec_size_muladd(&need, r.tp.n_floats, 4 * sizeof(float)) ||
            (st = moec_mem_check(need, "the parameters, gradients and AdamW moments", err))) {
            if (!st) st = moec_err(err, MOEC_ERR_FORMAT, "config.json implies more parameters than sizes can count");
            goto done;
        }
    }
    r.m1 = calloc(r.tp.n_floats, sizeof(float));
    r.m2 = calloc(r.tp.n_floats, sizeof(float));
    r.load = calloc((size_t)r.hp.n_layer * (size_t)moec_hparams_n_route(&r.hp), sizeof *r.load);
    r.step_counts = calloc((size_t)r.hp.n_layer * (size_t)moec_hparams_n_route(&r.hp), sizeof *r.step_counts);
    r.global_counts = calloc((size_t)r.hp.n_layer * (size_t)moec_hparams_n_route(&r.hp), sizeof *r.global_counts);
    r.step_layers = calloc((size_t)r.hp.n_layer, sizeof *r.step_layers);
    r.tokens = malloc((size_t)p->batch * (size_t)(p->seq + 1) * sizeof *r.tokens);
    r.n_valid = malloc((size_t)p->batch * sizeof *r.n_valid);
    if (!r.m1 || !r.m2 || !r.load || !r.step_counts || !r.global_counts || !r.step_layers || !r.tokens ||
        !r.n_valid) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory for optimizer state");
        goto done;
    }
    if (p->resume) {
        if ((st = load_state(&r, err))) goto done;
    } else if (p->init_dir) {
        if ((st = moec_tparams_load(&r.tp, p->init_dir, err))) goto done;
    } else {
        float std = 0.02f;
        cJSON *j = cJSON_ParseWithLength(r.config_text, r.config_len);
        const cJSON *ir = cJSON_GetObjectItemCaseSensitive(j, "initializer_range");
        if (cJSON_IsNumber(ir) && ir->valuedouble > 0) std = (float)ir->valuedouble;
        cJSON_Delete(j);
        moec_tparams_init(&r.tp, p->seed, std);
        if ((st = build_hash_table(&r, err))) goto done;
    }
    {
        const float *ht = moec_tparams_find(&r.tp, 0, MOEC_T_HASH_TABLE, -1, -1);
        if (ht && (st = moec_router_hash_table_check(ht, r.hp.n_vocab, r.hp.route.n_expert, err))) goto done;
    }
    if ((st = moec_tmodel_new(&r.tm, &r.tp, p->batch, p->seq, p->aux_coef, p->z_coef, err))) goto done;
    if (r.hp.n_expert > 0 && moec_tmodel_hparams(r.tm)->route.router->two_pass &&
        (st = moec_tmodel_new(&r.tm2, &r.tp, p->batch, p->seq, p->aux_coef, p->z_coef, err)))
        goto done;
    if (p->label_smoothing >= 0.f) { /* the override; THOR's second pass follows the first (m1's ε) */
        moec_tmodel_set_label_smoothing(r.tm, p->label_smoothing);
        if (r.tm2) moec_tmodel_set_label_smoothing(r.tm2, p->label_smoothing);
    }
    moec_path_join(r.log_path, sizeof r.log_path, p->out_dir, "train_log.jsonl");
    r.jsonl = fopen(r.log_path, "a");
    if (!r.jsonl) {
        st = moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", r.log_path, strerror(errno));
        goto done;
    }
    fprintf(out, "moec train: %s, %.2fM params (%d layers, %d experts top-%d), data %" PRIu64 " train / %" PRIu64
                 " val tokens\n",
            r.hp.arch->model_type, (double)r.tp.n_floats / 1e6, r.hp.n_layer, r.hp.n_expert, r.hp.n_expert_used,
            moec_data_n_tokens(r.data, MOEC_DATA_TRAIN), moec_data_n_tokens(r.data, MOEC_DATA_VAL));
    fprintf(out, "  steps %" PRId64 " batch %d seq %d accum %d (%d tokens/step), lr %g -> %g, warmup %" PRId64
                 ", wd %g, clip %g, aux %g, z %g, label smoothing %g, seed %" PRIu64 ", threads %d, matmul %s, activations %.0f MB%s\n",
            p->steps, p->batch, p->seq, p->accum, p->batch * p->seq * p->accum, (double)p->lr, (double)p->lr_min,
            p->warmup, (double)p->weight_decay, (double)p->clip, (double)moec_tmodel_hparams(r.tm)->route.aux_coef,
            (double)moec_tmodel_hparams(r.tm)->route.z_coef, (double)moec_tmodel_hparams(r.tm)->label_smoothing, p->seed, nt,
            p->matmul_bf16 ? (moec_gemm_bf16_has_amx() ? "bf16 (AMX)" : "bf16 (rounded operands, no AMX)") : "fp32",
            (double)moec_tmodel_bytes(r.tm) / 1e6, p->resume ? " (resumed)" : "");
    if (p->resume) fprintf(out, "  resuming at step %" PRId64 "\n", r.step);
    fflush(out);
    /* a live \r-updated line on a terminal; in a log file, a plain line every 5% of the run */
    const int tty = isatty(fileno(stderr));
    const int64_t line_every = p->steps / 20 > 1 ? p->steps / 20 : 1;
    const moec_adamw_cfg acfg = {p->beta1, p->beta2, p->eps, p->weight_decay};
    double val = NAN;
    const int E = moec_hparams_n_route(&r.hp);
    const int64_t first_step = r.step;
    const moec_hparams *thp = moec_tmodel_hparams(r.tm);
    const int global_lbl = r.hp.n_expert > 0 && thp->route.aux_scope == MOEC_LBL_GLOBAL_BATCH && thp->route.aux_coef != 0.f &&
                           p->accum > 1;
    /* the per-micro-batch random stream: router jitter, or a stochastic router (EvoMoE's Gumbel noise) */
    const int jitter = r.hp.n_expert > 0 && (thp->route.jitter > 0.f || (thp->route.router && thp->route.router->stochastic));
    if (global_lbl) fprintf(out, "  global-batch load balancing: a counting forward per step over its %d micro-batches\n", p->accum);
    while (r.step < p->steps) {
        if (p->stop_after > 0 && r.step - first_step >= p->stop_after) {
            if ((st = save_checkpoint(&r, err))) goto done;
            fprintf(out, "moec train: stopped after %" PRId64 " steps at step %" PRId64 " (--stop-after); continue with --resume\n",
                    p->stop_after, r.step);
            goto done;
        }
        const double t0 = now_s();
        const long flt0 = minor_faults(); /* the steady state should allocate (and fault) nothing */
        moec_parallel_zero(r.tp.g, r.tp.n_floats * sizeof(float));
        moec_tmodel_set_step(r.tm, r.step, 1, p->seed); /* schedules (EvoMoE τ) and ReXMoE's PSR masks of this step */
        double ce = 0, aux = 0, z = 0;
        int32_t *cnt = r.step_counts;
        memset(cnt, 0, (size_t)r.hp.n_layer * (size_t)E * sizeof *cnt);
        memset(r.step_layers, 0, (size_t)r.hp.n_layer * sizeof *r.step_layers);
        if (global_lbl) { /* counting pass: the step's expert counts before any loss is formed */
            uint64_t cur = r.cursor;
            memset(r.global_counts, 0, (size_t)r.hp.n_layer * (size_t)E * sizeof *r.global_counts);
            moec_tmodel_set_global_counts(r.tm, NULL, 0);
            for (int a = 0; a < p->accum && !st; a++) {
                moec_tstep o;
                st = moec_data_batch(r.data, MOEC_DATA_TRAIN, p->batch, p->seq, MOEC_DATA_SHUFFLE, p->seed, r.tokens,
                                     &cur, err);
                moec_tmodel_set_noise(r.tm, jitter, noise_seed(p->seed, r.step, a));
                if (!st) st = moec_tmodel_step(r.tm, r.tokens, NULL, 1.f, 0, &o, err);
                for (size_t i = 0; !st && i < (size_t)r.hp.n_layer * (size_t)E; i++) r.global_counts[i] += o.expert_counts[i];
            }
            moec_tmodel_set_global_counts(r.tm, r.global_counts, (int64_t)p->accum * p->batch * p->seq);
        }
        for (int a = 0; a < p->accum && !st; a++) {
            moec_tstep o;
            st = moec_data_batch(r.data, MOEC_DATA_TRAIN, p->batch, p->seq, MOEC_DATA_SHUFFLE, p->seed, r.tokens,
                                 &r.cursor, err);
            moec_tmodel_set_noise(r.tm, jitter, noise_seed(p->seed, r.step, a));
            if (r.tm2) { /* THOR: a second pass with its own stream, and the consistency loss */
                moec_tmodel_set_step(r.tm2, r.step, 1, p->seed); /* the same schedule and masks in both passes */
                moec_tmodel_set_noise(r.tm2, 1, moec_mix64(noise_seed(p->seed, r.step, a) ^ 0x2d2d2d2dull));
                if (!st) st = moec_tmodel_pair_step(r.tm, r.tm2, r.tokens, 1.f / (float)p->accum,
                                                    thp->route.consistency_alpha, 1, &o, err);
            } else if (!st) {
                st = moec_tmodel_step(r.tm, r.tokens, NULL, 1.f / (float)p->accum, 1, &o, err);
            }
            if (!st) {
                ce += o.ce / p->accum;
                aux += o.aux / p->accum;
                z += o.z / p->accum;
                for (size_t i = 0; i < (size_t)r.hp.n_layer * (size_t)E; i++) cnt[i] += o.expert_counts[i];
                for (int il = 0; il < r.hp.n_layer; il++) {
                    moec_tlayer_stats *ls = &r.step_layers[il];
                    ls->tokens += o.layers[il].tokens;
                    ls->assigned += o.layers[il].assigned;
                    ls->dropped += o.layers[il].dropped;
                    ls->entropy_sum += o.layers[il].entropy_sum;
                    ls->true_assigned += o.layers[il].true_assigned;
                }
            }
        }
        moec_tmodel_set_noise(r.tm, 0, 0);
        moec_tmodel_set_step(r.tm, r.step, 0, 0); /* evaluation: the step's schedule, the whole pool */
        if (r.tm2) moec_tmodel_set_step(r.tm2, r.step, 0, 0);
        if (st) goto done;
        const float lr = moec_lr_at(r.step, p->warmup, p->steps, p->lr, p->lr_min);
        int ok = isfinite(ce) && isfinite(aux) && isfinite(z);
        double gnorm = NAN;
        if (ok) gnorm = moec_train_optimizer_step(&r.tp, r.m1, r.m2, &r.opt_t, lr, p->clip, &acfg, &ok);
        if (ok) update_router_state(&r, thp);
        if (ok) r.n_bad = 0;
        else r.n_bad++;
        r.step++;
        const double dt = now_s() - t0;
        const double tps = (double)p->batch * p->seq * p->accum / dt;
        char jl[32], jc[32], ja[32], jz[32], jg[32];
        fprintf(r.jsonl, "{\"step\":%" PRId64 ",\"loss\":%s,\"ce\":%s,\"aux\":%s,\"z\":%s,\"lr\":%.6g,"
                         "\"grad_norm\":%s,\"tokens_per_s\":%.1f,\"minor_faults\":%ld,\"skipped\":%s",
                r.step, json_num(jl, ce + aux + z), json_num(jc, ce), json_num(ja, aux), json_num(jz, z), (double)lr,
                json_num(jg, gnorm), tps, minor_faults() - flt0, ok ? "false" : "true");
        routing_summary sum = write_routing_metrics(&r, r.jsonl);
        fprintf(r.jsonl, "}\n");
        if (!ok) {
            fprintf(out, "\nmoec train: step %" PRId64 ": non-finite loss or gradient, update skipped (%d in a row)\n",
                    r.step, r.n_bad);
            if (r.n_bad >= p->max_bad_steps) {
                st = moec_err(err, MOEC_ERR_INVALID_ARG,
                              "stopped after %d consecutive non-finite steps (lower --lr?); the last checkpoint in %s is intact",
                              r.n_bad, p->out_dir);
                goto done;
            }
        }
        const int last = r.step == p->steps;
        if ((p->eval_every > 0 && r.step % p->eval_every == 0) || last) {
            if ((st = evaluate(&r, &val, err))) goto done;
            char jv[32];
            fprintf(r.jsonl, "{\"step\":%" PRId64 ",\"val_loss\":%s}\n", r.step, json_num(jv, val));
        }
        if (p->progress && (tty || r.step % line_every == 0 || last)) {
            char vbuf[32] = "-";
            if (isfinite(val)) snprintf(vbuf, sizeof vbuf, "%.4f", val);
            fprintf(stderr, "%sstep %" PRId64 "/%" PRId64 " | loss %.4f | val %s | %.0f tok/s | lr %.2e | gnorm %.3f | aux %.4f | imb %.2f | maxvio %.2f | drop %.1f%% | H %.2f | unused %d %s",
                    tty ? "\r" : "", r.step, p->steps, ce, vbuf, tps, (double)lr, gnorm, aux, sum.worst_imb,
                    sum.mean_max_vio, 100.0 * sum.drop_rate, sum.mean_entropy, sum.unused, tty && !last ? "" : "\n");
        }
        if ((p->save_every > 0 && r.step % p->save_every == 0) || last) {
            if ((st = save_checkpoint(&r, err))) goto done;
        }
    }
    if (isfinite(val))
        fprintf(out, "moec train: done, %" PRId64 " steps, val loss %.4f (ppl %.2f); checkpoint in %s\n", r.step, val,
                exp(val), p->out_dir);
    else
        fprintf(out, "moec train: done, %" PRId64 " steps, no validation loss (the data has no validation tokens: "
                     "remake it with `moec data --val-fraction F`, F > 0); checkpoint in %s\n", r.step, p->out_dir);
    print_load_table(&r, out);
done:
    run_free(&r);
    moec_matmul_precision_set(prev_precision);
    return st;
}
