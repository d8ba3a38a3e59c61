/* test_alloc_fail.c — walks the error paths of model open and tokenizer load by failing the
 * N-th allocation, for N = 1, 2, ... until the call succeeds (as Lua's ltests.c does). Each
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

#include <cjson/cJSON.h>
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
    static const char cfg[] = "{\"model_type\": \"mixtral\", \"vocab_size\": 40, \"hidden_size\": 8, "
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
    static float zeros[40 * 8];
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

static void walk_model(const char *dir) {
    long n, errors = 0;
    for (n = 1; n < 100000; n++) {
        moec_model *m = NULL;
        moec_error err = {0};
        arm(n);
        moec_status st = moec_model_open(&m, dir, NULL, &err);
        const long used = g_count;
        arm(0);
        if (st == MOEC_OK) {
            CHECK(m != NULL, "model open succeeded without a model at N = %ld", n);
            moec_model_close(m);
            if (used < n) break; /* allocation n was never reached: every error path has been walked */
            continue;            /* a failure handled without an error (none expected, but not wrong) */
        }
        errors++;
        CHECK(m == NULL && err.msg[0], "model open failing at allocation %ld: status %d, message '%s'", n, st,
              err.msg);
    }
    printf("model open: %ld allocations walked, %ld failed cleanly\n", n - 1, errors);
    CHECK(n > 1 && n < 100000, "model open allocates and finishes (%ld)", n);
}

static void walk_tokenizer(const char *path) {
    long n, errors = 0;
    for (n = 1; n < 100000; n++) {
        moec_tokenizer *tok = NULL;
        moec_error err = {0};
        arm(n);
        moec_status st = moec_tokenizer_load(&tok, path, &err);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (st == MOEC_OK) st = moec_tokenizer_encode(tok, "the quick fox <|endoftext|>", 27, &ids, &n_ids, &err);
        char *text = NULL;
        size_t len = 0;
        if (st == MOEC_OK) st = moec_tokenizer_decode(tok, ids, n_ids, 0, &text, &len, &err);
        const long used = g_count;
        arm(0);
        free(text);
        free(ids);
        moec_tokenizer_free(tok);
        if (st == MOEC_OK && used < n) break; /* the whole sequence ran without reaching allocation n */
        if (st == MOEC_OK) continue;          /* the failed allocation was handled and retried elsewhere */
        errors++;
        CHECK(err.msg[0], "tokenizer load/encode/decode failing at allocation %ld: status %d without a message", n,
              st);
    }
    printf("tokenizer load + encode + decode: %ld allocations walked, %ld failed cleanly\n", n - 1, errors);
    CHECK(n > 1 && n < 100000, "tokenizer walk finishes (%ld)", n);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/moec_af_XXXXXX");
    if (!mkdtemp(g_root)) return 2;
    char tok[400];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", g_root);
    write_model(g_root);
    write_tokenizer(tok);
    test_hook_reaches_libraries();
    walk_model(g_root);
    walk_tokenizer(tok);
    moec_rmtree(g_root, NULL);
    return test_finish("test_alloc_fail");
}
