/* test_alloc_fail.c — walks the error paths of model open (safetensors and GGUF), tokenizer
 * load + encode + decode, session creation + prefill + decode, data open and a training
 * --resume by failing the N-th allocation, for N = 1, 2, ... until the call succeeds (as Lua's
 * ltests.c does); a failed resume must leave a checkpoint that still opens. Each
 * failing call must return an error status with a message (never crash, never report success
 * with a missing piece); in the ASan build, LeakSanitizer then checks at exit that every error
 * path freed what it built. The hook: this executable is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc (tests/tests.cmake), so
 * every allocation made by moec's static library goes through the counters below, and so do
 * those of cJSON and PCRE2, which moec gives its own allocation functions (core/mem.h; checked
 * first, by counting), and strdup/strndup. Not counted: utf8proc's (it has no hooks) and
 * libc's own internal ones (fopen's buffer, ...). */
#include "io/safetensors_write.h"
#include "model/hparams.h"
#include "model/tensors.h"
#include "moec.h"
#include "test_util.h"
#include "text/bpe_train.h"
#include "text/regex.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the hook */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long g_count, g_fail_at; /* g_fail_at = 0: never fail */

static int should_fail(void) { return g_fail_at > 0 && ++g_count == g_fail_at; }
void *__wrap_malloc(size_t n) { return should_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return should_fail() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return should_fail() ? NULL : __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { return should_fail() ? NULL : __real_aligned_alloc(a, n); }
char *__wrap_strdup(const char *s) { return should_fail() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return should_fail() ? NULL : __real_strndup(s, n); }

static void arm(long n) {
    g_count = 0;
    g_fail_at = n;
}

/* ---------------------------------------------------------------- fixtures */

static char g_root[256];

/* A small Mixtral checkpoint: config.json and zero weights for every tensor it implies. */
static void write_model(const char *dir) {
    static const char cfg[] = "{\"model_type\": \"mixtral\", \"vocab_size\": 280, \"hidden_size\": 8, "
                              "\"intermediate_size\": 8, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                              "\"num_key_value_heads\": 1, \"num_local_experts\": 3, \"num_experts_per_tok\": 2}";
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "wb");
    fputs(cfg, f);
    fclose(f);
    moec_hparams hp;
    moec_error err = {0};
    if (moec_hparams_parse(&hp, cfg, sizeof cfg - 1, p, &err)) {
        fprintf(stderr, "fixture config: %s\n", err.msg);
        exit(2);
    }
    int64_t n = moec_model_tensor_specs(&hp, NULL);
    moec_tensor_spec *specs = calloc((size_t)n, sizeof *specs);
    moec_st_entry *e = calloc((size_t)n, sizeof *e);
    static float zeros[280 * 8]; /* the largest tensor: the embedding */
    moec_model_tensor_specs(&hp, specs);
    for (int64_t i = 0; i < n; i++) {
        e[i].name = specs[i].name;
        e[i].n_dims = specs[i].n_dims;
        e[i].shape[0] = specs[i].shape[0];
        e[i].shape[1] = specs[i].shape[1];
        e[i].data = zeros;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (moec_st_write(p, e, (int)n, MOEC_DTYPE_BF16, &err)) {
        fprintf(stderr, "fixture weights: %s\n", err.msg);
        exit(2);
    }
    free(e);
    free(specs);
}

static void write_tokenizer(const char *path) {
    static const char text[] = "the quick brown fox jumps over the lazy dog, der schnelle braune Fuchs 123\n";
    static const char *const specials[] = {"<|endoftext|>"};
    tk_bpe_train_params p = {280, 0, 1, specials, 1};
    tk_bpe_trainer *t = NULL;
    moec_error err = {0};
    char *json = NULL;
    size_t len = 0;
    if (tk_bpe_trainer_new(&t, &p, &err) || tk_bpe_trainer_feed(t, text, sizeof text - 1, "text", &err) ||
        tk_bpe_trainer_train(t, &err) || tk_bpe_trainer_json(t, &json, &len, &err)) {
        fprintf(stderr, "fixture tokenizer: %s\n", err.msg);
        exit(2);
    }
    FILE *f = fopen(path, "wb");
    fwrite(json, 1, len, f);
    fclose(f);
    free(json);
    tk_bpe_trainer_free(t);
}

/* ---------------------------------------------------------------- the hook reaches the libraries */

/* cJSON_Parse and a PCRE2 match that finds nothing allocate only inside the libraries: a count
 * of zero would mean their allocations bypass the hook and the walks below miss them. */
static void test_hook_reaches_libraries(void) {
    arm(1L << 40);
    cJSON *j = cJSON_Parse("{\"a\": [1, 2, \"three\"]}");
    const long n_json = g_count;
    cJSON_Delete(j);
    tk_regex *re = NULL;
    moec_error err = {0};
    CHECK(tk_regex_compile(&re, "x+", 2, "test", &err) == MOEC_OK, "regex compiles: %s", err.msg);
    tk_spans spans = {0};
    g_count = 0;
    moec_status st = tk_regex_find_all(re, "aaaa", 4, &spans, &err);
    const long n_pcre2 = g_count;
    arm(0);
    CHECK(j && st == MOEC_OK && spans.n == 0, "parse and match work through the hook");
    CHECK(n_json > 0, "cJSON allocates through moec's hook (%ld allocations counted)", n_json);
    CHECK(n_pcre2 > 0, "PCRE2 allocates through moec's hook (%ld allocations counted)", n_pcre2);
    printf("hook: cJSON_Parse %ld allocations, PCRE2 match %ld\n", n_json, n_pcre2);
    tk_spans_free(&spans);
    tk_regex_free(re);
}

/* ---------------------------------------------------------------- the walks */

/* One attempt of the operation under test, with allocation N armed to fail: builds, uses and
 * frees everything itself; returns its status, with a message in err on failure. `bad` is set
 * when a failure broke an invariant (a half-built object handed out). */
typedef moec_status (*attempt_fn)(void *ctx, moec_error *err, int *bad);

/* Fails allocation 1, 2, ... until the whole attempt runs without reaching the armed one. */
static void walk(const char *what, attempt_fn attempt, void *ctx) {
    long n, errors = 0;
    for (n = 1; n < 200000; n++) {
        moec_error err = {0};
        int bad = 0;
        arm(n);
        moec_status st = attempt(ctx, &err, &bad);
        const long used = g_count;
        arm(0);
        CHECK(!bad, "%s failing at allocation %ld: broke an invariant (status %d)", what, n, st);
        if (used < n) { /* allocation n was never reached: every error path has been walked */
            CHECK(st == MOEC_OK, "%s fails without an allocation failure: %s", what, err.msg);
            break;
        }
        if (st == MOEC_OK) continue;          /* the failed allocation was handled without an error */
        errors++;
        CHECK(err.msg[0], "%s failing at allocation %ld: status %d without a message", what, n, st);
    }
    printf("%s: %ld allocations walked, %ld failed cleanly\n", what, n - 1, errors);
    CHECK(n > 1 && n < 200000, "%s allocates and finishes (%ld)", what, n);
}

static moec_status attempt_model_open(void *ctx, moec_error *err, int *bad) {
    moec_model *m = NULL;
    moec_status st = moec_model_open(&m, ctx, NULL, err);
    *bad = (st == MOEC_OK) != (m != NULL);
    moec_model_close(m);
    return st;
}

/* The tokenizer attempt: load, encode, decode; a run that succeeds despite a failed allocation
 * must give the ids and text of an undisturbed run (no silently dropped token or merge). */
typedef struct {
    const char *path;
    int32_t ids[64];
    size_t n_ids;
    char text[128];
} tok_ctx;

static const char k_tok_text[] = "the quick fox <|endoftext|>";

static moec_status attempt_tokenizer(void *ctx, moec_error *err, int *bad) {
    tok_ctx *c = ctx;
    moec_tokenizer *tok = NULL;
    moec_status st = moec_tokenizer_load(&tok, c->path, err);
    *bad = (st == MOEC_OK) != (tok != NULL);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (st == MOEC_OK) st = moec_tokenizer_encode(tok, k_tok_text, sizeof k_tok_text - 1, &ids, &n_ids, err);
    char *text = NULL;
    size_t len = 0;
    if (st == MOEC_OK) st = moec_tokenizer_decode(tok, ids, n_ids, 0, &text, &len, err);
    if (st == MOEC_OK && c->n_ids) /* c->n_ids == 0: the reference run itself */
        *bad |= n_ids != c->n_ids || memcmp(ids, c->ids, n_ids * sizeof *ids) || strcmp(text, c->text);
    else if (st == MOEC_OK && n_ids <= 64 && len < sizeof c->text) {
        memcpy(c->ids, ids, n_ids * sizeof *ids);
        c->n_ids = n_ids;
        memcpy(c->text, text, len + 1);
    }
    free(text);
    free(ids);
    moec_tokenizer_free(tok);
    return st;
}

static void walk_tokenizer(const char *what, const char *path) {
    tok_ctx c = {path, {0}, 0, {0}};
    moec_error err = {0};
    int bad = 0;
    CHECK(attempt_tokenizer(&c, &err, &bad) == MOEC_OK && c.n_ids > 0, "%s: reference run: %s", what, err.msg);
    walk(what, attempt_tokenizer, &c);
}

/* A session on an open model (opened outside the armed window): creation, a 3-token prefill
 * and one decode step through the KV cache. */
static moec_status attempt_session(void *ctx, moec_error *err, int *bad) {
    moec_session *s = NULL;
    moec_status st = moec_session_new(&s, ctx, 16, err);
    *bad = (st == MOEC_OK) != (s != NULL);
    static float logits[280];
    const int32_t ids[3] = {1, 2, 3}, next = 4;
    if (st == MOEC_OK) st = moec_session_forward(s, ids, 3, logits, 0, err);
    if (st == MOEC_OK) st = moec_session_forward(s, &next, 1, logits, 0, err);
    moec_session_free(s);
    return st;
}

/* Opening a data directory and drawing a batch from it. */
static moec_status attempt_data(void *ctx, moec_error *err, int *bad) {
    moec_data_reader *r = NULL;
    moec_status st = moec_data_open(&r, ctx, err);
    *bad = (st == MOEC_OK) != (r != NULL);
    moec_data_close(r);
    return st;
}

/* --resume of a one-step run to step 2: the run directory is restored from a pristine copy
 * before each attempt (outside the armed window), so every attempt resumes the same state. */
typedef struct {
    moec_train_params p;
    char run[400], pristine[400];
} resume_ctx;

/* A flat directory (a checkpoint), file by file, in C: cp's fork + exec per attempt would
 * dominate the walk's time. */
static void copy_dir(const char *from, const char *to) {
    moec_error err = {0};
    struct stat sb;
    if ((lstat(to, &sb) == 0 && moec_rmtree(to, &err)) || mkdir(to, 0755)) {
        fprintf(stderr, "fixture: cannot recreate %s: %s\n", to, err.msg);
        exit(2);
    }
    DIR *d = opendir(from);
    struct dirent *e;
    static char buf[1 << 16];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
        size_t n;
        while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
        if (!in || !out || ferror(in) || fclose(out)) {
            fprintf(stderr, "fixture: cannot copy %s\n", a);
            exit(2);
        }
        fclose(in);
    }
    if (!d) exit(2);
    closedir(d);
}

static moec_status attempt_resume(void *ctx, moec_error *err, int *bad) {
    resume_ctx *c = ctx;
    const long armed = g_fail_at;
    arm(0);
    copy_dir(c->pristine, c->run);
    arm(armed);
    moec_status st = moec_train_run(&c->p, err);
    if (st != MOEC_OK) { /* a failed resume must leave a checkpoint that still opens */
        const long used = g_count;
        arm(0);
        moec_model *m = NULL;
        moec_error e2 = {0};
        *bad = moec_model_open(&m, c->run, NULL, &e2) != MOEC_OK;
        if (*bad) fprintf(stderr, "after a failed resume (%s): %s\n", err->msg, e2.msg);
        moec_model_close(m);
        arm(armed);
        g_count = used; /* the check's allocations do not count towards the attempt */
    }
    return st;
}

static void write_data(const char *dir) {
    static const int32_t d0[] = {5, 6, 7, 8, 9, 1}, d1[] = {10, 11, 1}, d2[] = {12, 13, 14, 15, 1};
    const int32_t *const docs[] = {d0, d1, d2};
    const uint64_t lens[] = {6, 3, 5};
    const uint32_t dom[] = {0, 1, 0};
    const uint8_t split[] = {MOEC_DATA_TRAIN, MOEC_DATA_TRAIN, MOEC_DATA_VAL};
    const char *const names[] = {"prose", "code"};
    moec_data_write_params p = {0};
    p.tokenizer_path = "tokenizer.json";
    p.fingerprint = 1;
    p.n_vocab = 40;
    p.eot_id = 1;
    p.n_domains = 2;
    p.domain_names = names;
    p.n_docs = 3;
    p.doc_tokens = docs;
    p.doc_n_tokens = lens;
    p.doc_domain = dom;
    p.doc_split = split;
    p.max_shard_tokens = 8; /* two shards */
    moec_error err = {0};
    if (moec_data_write(dir, &p, &err)) {
        fprintf(stderr, "fixture data: %s\n", err.msg);
        exit(2);
    }
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/moec_af_XXXXXX");
    if (!mkdtemp(g_root)) return 2;
    char tok[400];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", g_root);
    write_model(g_root);
    write_tokenizer(tok);
    test_hook_reaches_libraries();
    walk("model open", attempt_model_open, g_root);
    walk_tokenizer("tokenizer load + encode + decode", tok);

    moec_model *m = NULL;
    moec_error err = {0};
    CHECK(moec_model_open(&m, g_root, NULL, &err) == MOEC_OK, "fixture model opens: %s", err.msg);
    if (m) walk("session new + prefill + decode", attempt_session, m);
    moec_model_close(m);

    char gguf[400];
    snprintf(gguf, sizeof gguf, "%s/model.gguf", g_root);
    moec_gguf_export_params gp = moec_gguf_export_default_params();
    gp.no_tokenizer = 1;
    CHECK(moec_export_gguf(g_root, gguf, &gp, &err) == MOEC_OK, "fixture GGUF exports: %s", err.msg);
    walk("GGUF model open", attempt_model_open, gguf);
    /* a GGUF file with its vocabulary: the tokenizer is rebuilt from the GGUF metadata */
    char gguf_tok[400];
    snprintf(gguf_tok, sizeof gguf_tok, "%s/model-tok.gguf", g_root);
    gp.no_tokenizer = 0;
    CHECK(moec_export_gguf(g_root, gguf_tok, &gp, &err) == MOEC_OK, "fixture GGUF with vocabulary exports: %s", err.msg);
    walk_tokenizer("tokenizer from GGUF load + encode + decode", gguf_tok);

    char data[400];
    snprintf(data, sizeof data, "%s/data", g_root);
    write_data(data);
    walk("data open", attempt_data, data);

    resume_ctx rc;
    rc.p = moec_train_default_params();
    char cfg[400];
    snprintf(cfg, sizeof cfg, "%s/config.json", g_root);
    snprintf(rc.run, sizeof rc.run, "%s/run", g_root);
    snprintf(rc.pristine, sizeof rc.pristine, "%s/run-step1", g_root);
    rc.p.config_path = cfg;
    rc.p.data_dir = data;
    rc.p.out_dir = rc.pristine;
    rc.p.steps = 2;
    rc.p.stop_after = 1; /* interrupted after step 1, as a kill would */
    rc.p.batch = 2;
    rc.p.seq = 4;
    rc.p.threads = 1;
    rc.p.eval_every = 0;
    rc.p.eval_batches = 1;
    rc.p.progress = 0;
    FILE *devnull = fopen("/dev/null", "w");
    rc.p.log = devnull;
    CHECK(moec_train_run(&rc.p, &err) == MOEC_OK, "fixture run trains one step: %s", err.msg);
    rc.p.out_dir = rc.run;
    rc.p.config_path = NULL;
    rc.p.resume = 1;
    rc.p.stop_after = 0;
    copy_dir(rc.pristine, rc.run);
    arm(1L << 40);
    moec_status rst = moec_train_run(&rc.p, &err);
    const long n_resume = g_count;
    arm(0);
    CHECK(rst == MOEC_OK && n_resume > 100, "fixture resume runs (%ld allocations): %s", n_resume, err.msg);
    walk("train --resume one more step", attempt_resume, &rc);
    fclose(devnull);
    moec_rmtree(g_root, NULL);
    return test_finish("test_alloc_fail");
}
