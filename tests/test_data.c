/* test_data.c — token shards (src/train/data.h): a synthetic multi-domain token set written
 * through the writer and read back (u16 and u32 ids, one and several shards); the stratified
 * deterministic split; refusal to overwrite another dataset; corrupted headers, truncated
 * files, bad offsets, bad ids and bad meta.json all rejected with an error (with the checksum
 * in meta.json patched to match, so the structural checks are tested on their own); and the
 * batch sampler: deterministic for a seed and cursor, a permutation per epoch, resumable
 * exactly; evaluation windows covering every target once. Temporary files go under /tmp. */
#include "train/data.h"

#include "io/file.h"
#include "test_util.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a synthetic corpus */

#define MAX_DOCS 400

typedef struct {
    uint32_t n_docs;
    int32_t *tok[MAX_DOCS];
    uint64_t len[MAX_DOCS];
    uint32_t dom[MAX_DOCS];
    uint8_t split[MAX_DOCS];
    int32_t n_dom;
    const char *names[8];
    uint32_t vocab, eot;
} corpus;

/* Domain d gets n_per[d] documents of 1..max_len ids (plus eot), ids in [0, vocab). */
static void corpus_make(corpus *c, uint32_t vocab, int32_t n_dom, const int *n_per, int max_len, uint64_t seed) {
    static const char *names[] = {"bible", "fortunes-de", "man", "c-headers", "solo", "x", "y", "z"};
    memset(c, 0, sizeof *c);
    c->vocab = vocab;
    c->eot = vocab - 1;
    c->n_dom = n_dom;
    for (int32_t d = 0; d < n_dom; d++)
        c->names[d] = names[d];
    g_rng = seed;
    /* documents of different domains interleave, as when two files share a domain */
    for (int round = 0; round < MAX_DOCS; round++)
        for (int32_t d = 0; d < n_dom; d++) {
            int have = 0;
            for (uint32_t i = 0; i < c->n_docs; i++)
                have += c->dom[i] == (uint32_t)d;
            if (have >= n_per[d] || c->n_docs >= MAX_DOCS) continue;
            uint32_t i = c->n_docs++;
            uint64_t n = 1 + (uint64_t)((frand() + 1.f) * 0.5f * (float)max_len);
            c->tok[i] = malloc((n + 1) * sizeof(int32_t));
            for (uint64_t k = 0; k < n; k++)
                c->tok[i][k] = (int32_t)((uint32_t)((frand() + 1.f) * 0.5f * (float)vocab) % vocab);
            c->tok[i][n] = (int32_t)c->eot;
            c->len[i] = n + 1;
            c->dom[i] = (uint32_t)d;
        }
}

static void corpus_free(corpus *c) {
    for (uint32_t i = 0; i < c->n_docs; i++)
        free(c->tok[i]);
}

static moec_data_write_params params_of(const corpus *c, uint64_t fp) {
    moec_data_write_params p = {
        .tokenizer_path = "/nonexistent/tokenizer.json",
        .fingerprint = fp,
        .n_vocab = c->vocab,
        .eot_id = c->eot,
        .eot_token = "<|endoftext|>",
        .n_domains = c->n_dom,
        .domain_names = c->names,
        .n_docs = c->n_docs,
        .doc_tokens = (const int32_t *const *)c->tok,
        .doc_n_tokens = c->len,
        .doc_domain = c->dom,
        .doc_split = c->split,
        .seed = 7,
        .val_fraction = 0.1,
    };
    return p;
}

/* ---------------------------------------------------------------- files */

static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && moec_path_join(path, sizeof path, dir, e->d_name))
            unlink(path);
    closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static unsigned char *slurp(const char *path, size_t *n) {
    char *data = NULL;
    if (moec_file_read_all(path, &data, n, NULL) != MOEC_OK) return NULL;
    return (unsigned char *)data;
}

static void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* ---------------------------------------------------------------- round trip */

static void check_reader_matches(const moec_data_reader *r, const corpus *c) {
    CHECK(moec_data_n_vocab(r) == c->vocab, "vocab");
    CHECK(moec_data_eot_id(r) == c->eot, "eot");
    CHECK(moec_data_n_domains(r) == c->n_dom, "domains %d", moec_data_n_domains(r));
    for (int32_t d = 0; d < c->n_dom; d++)
        CHECK(!strcmp(moec_data_domain_name(r, d), c->names[d]), "domain %d name %s", d, moec_data_domain_name(r, d));
    CHECK(moec_data_domain_name(r, c->n_dom) == NULL && moec_data_domain_name(r, -1) == NULL, "name out of range");
    for (int sp = 0; sp < 2; sp++) {
        uint32_t k = 0;
        uint64_t pos = 0;
        int ok = 1;
        int32_t *buf = malloc(4096 * sizeof *buf);
        for (uint32_t i = 0; i < c->n_docs; i++) {
            if (c->split[i] != sp) continue;
            uint64_t first = 0, n = 0;
            int32_t dom = -1;
            moec_error err = {0};
            if (moec_data_doc(r, (moec_data_split)sp, k, &first, &n, &dom, &err) != MOEC_OK) {
                ok = 0;
                break;
            }
            ok &= first == pos && n == c->len[i] && dom == (int32_t)c->dom[i];
            ok &= moec_data_read(r, (moec_data_split)sp, first, n, buf, &err) == MOEC_OK;
            ok &= !memcmp(buf, c->tok[i], n * sizeof *buf);
            pos += n;
            k++;
        }
        free(buf);
        CHECK(ok, "split %d documents read back differ", sp);
        CHECK(moec_data_n_docs(r, (moec_data_split)sp) == k, "split %d n_docs %u want %u", sp,
              moec_data_n_docs(r, (moec_data_split)sp), k);
        CHECK(moec_data_n_tokens(r, (moec_data_split)sp) == pos, "split %d n_tokens", sp);
        moec_error err = {0};
        CHECK(moec_data_doc(r, (moec_data_split)sp, k, NULL, NULL, NULL, &err) == MOEC_ERR_INVALID_ARG, "doc oob");
        int32_t one;
        CHECK(moec_data_read(r, (moec_data_split)sp, pos, 1, &one, &err) == MOEC_ERR_INVALID_ARG, "read oob");
        CHECK(moec_data_read(r, (moec_data_split)sp, pos, 0, &one, &err) == MOEC_OK, "empty read at end");
        /* per-domain lists and counts */
        for (int32_t d = 0; d < c->n_dom; d++) {
            uint32_t nd = 0, want = 0, j = 0;
            uint64_t toks = 0;
            const uint32_t *docs = moec_data_domain_docs(r, (moec_data_split)sp, d, &nd);
            int okd = 1;
            uint32_t di = 0;
            for (uint32_t i = 0; i < c->n_docs; i++) {
                if (c->split[i] != sp) continue;
                if (c->dom[i] == (uint32_t)d) {
                    want++;
                    toks += c->len[i];
                    okd &= j < nd && docs[j++] == di;
                }
                di++;
            }
            CHECK(okd && nd == want, "split %d domain %d docs %u want %u", sp, d, nd, want);
            CHECK(moec_data_domain_n_docs(r, (moec_data_split)sp, d) == want, "domain n_docs");
            CHECK(moec_data_domain_n_tokens(r, (moec_data_split)sp, d) == toks, "domain n_tokens");
        }
    }
}

static void test_round_trip(const char *tmp, uint32_t vocab, uint64_t max_shard, const char *label) {
    corpus c;
    int n_per[4] = {40, 25, 9, 1}; /* "c-headers" has one document: it stays in train */
    corpus_make(&c, vocab, 4, n_per, 120, vocab * 31 + max_shard);
    moec_error err = {0};
    CHECK(moec_data_split_docs(c.n_docs, c.dom, c.n_dom, c.names, 7, 0.1, c.split, &err) == MOEC_OK, "split: %s",
          err.msg);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/rt_%s/nested", tmp, label);
    moec_data_write_params p = params_of(&c, 0x1234abcdull);
    p.max_shard_tokens = max_shard;
    CHECK(moec_data_write(dir, &p, &err) == MOEC_OK, "%s write: %s", label, err.msg);
    moec_data_reader *r = NULL;
    CHECK(moec_data_open(&r, dir, &err) == MOEC_OK, "%s open: %s", label, err.msg);
    if (r) {
        check_reader_matches(r, &c);
        CHECK(moec_data_fingerprint(r) == 0x1234abcdull, "fingerprint");
        CHECK(!strcmp(moec_data_tokenizer_path(r), "/nonexistent/tokenizer.json"), "tokenizer path");
        CHECK(moec_data_check_vocab(r, vocab, &err) == MOEC_OK, "vocab ok");
        CHECK(moec_data_check_vocab(r, vocab - 1, &err) == MOEC_ERR_INVALID_ARG, "vocab too small accepted");
    }
    moec_data_close(r);
    if (max_shard) CHECK(count_files(dir) > 3, "%s: expected several shards, %d files", label, count_files(dir));
    /* dtype by vocabulary */
    char path[600];
    snprintf(path, sizeof path, "%s/train-00000.bin", dir);
    size_t n = 0;
    unsigned char *b = slurp(path, &n);
    CHECK(b && n > 64 && b[20] == (vocab <= 65536 ? 2 : 4), "%s dtype field", label);
    free(b);
    rm_dir(dir);
    snprintf(dir, sizeof dir, "%s/rt_%s", tmp, label);
    rmdir(dir);
    corpus_free(&c);
}

/* ---------------------------------------------------------------- split */

static void test_split(void) {
    corpus c;
    int n_per[5] = {100, 20, 2, 1, 3};
    corpus_make(&c, 500, 5, n_per, 10, 3);
    uint8_t a[MAX_DOCS], b[MAX_DOCS], s2[MAX_DOCS];
    moec_error err = {0};
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 5, c.names, 42, 0.05, a, &err) == MOEC_OK, "split");
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 5, c.names, 42, 0.05, b, &err) == MOEC_OK, "split");
    CHECK(!memcmp(a, b, c.n_docs), "same seed, different split");
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 5, c.names, 43, 0.05, s2, &err) == MOEC_OK, "split");
    CHECK(memcmp(a, s2, c.n_docs) != 0, "another seed gave the same split");
    int want_val[5] = {5, 1, 1, 0, 1}; /* round(n * 0.05), >= 1 when n >= 2, <= n - 1 */
    for (int d = 0; d < 5; d++) {
        int v = 0;
        for (uint32_t i = 0; i < c.n_docs; i++)
            v += c.dom[i] == (uint32_t)d && a[i] == MOEC_DATA_VAL;
        CHECK(v == want_val[d], "domain %d: %d val docs, want %d", d, v, want_val[d]);
    }
    /* a domain's split does not depend on the other domains: drop domain 1's documents */
    uint32_t dom2[MAX_DOCS], map[MAX_DOCS], n2 = 0;
    for (uint32_t i = 0; i < c.n_docs; i++)
        if (c.dom[i] != 1) {
            map[n2] = i;
            dom2[n2++] = c.dom[i];
        }
    CHECK(moec_data_split_docs(n2, dom2, 5, c.names, 42, 0.05, b, &err) == MOEC_OK, "split");
    int same = 1;
    for (uint32_t i = 0; i < n2; i++)
        same &= b[i] == a[map[i]];
    CHECK(same, "removing a domain changed another domain's split");
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 5, c.names, 42, 0.0, b, &err) == MOEC_OK, "split 0");
    int any = 0;
    for (uint32_t i = 0; i < c.n_docs; i++)
        any |= b[i];
    CHECK(!any, "val fraction 0 gave val documents");
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 5, c.names, 42, 1.0, b, &err) == MOEC_ERR_INVALID_ARG, "fraction 1");
    CHECK(moec_data_split_docs(c.n_docs, c.dom, 4, c.names, 42, 0.1, b, &err) == MOEC_ERR_INVALID_ARG, "bad domain");
    corpus_free(&c);
}

/* ---------------------------------------------------------------- writer refusals */

static void test_writer_errors(const char *tmp) {
    corpus c;
    int n_per[2] = {5, 5};
    corpus_make(&c, 300, 2, n_per, 20, 5);
    moec_error err = {0};
    moec_data_split_docs(c.n_docs, c.dom, 2, c.names, 1, 0.2, c.split, &err);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/werr", tmp);
    moec_data_write_params p = params_of(&c, 1);

    moec_data_write_params q = p;
    q.n_docs = 0;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG && strstr(err.msg, "empty corpus"), "empty: %s",
          err.msg);
    int32_t saved = c.tok[3][0];
    c.tok[3][0] = (int32_t)c.vocab;
    CHECK(moec_data_write(dir, &p, &err) == MOEC_ERR_INVALID_ARG, "id >= vocab accepted");
    c.tok[3][0] = -1;
    CHECK(moec_data_write(dir, &p, &err) == MOEC_ERR_INVALID_ARG, "negative id accepted");
    c.tok[3][0] = saved;
    c.tok[2][c.len[2] - 1] = 0;
    CHECK(moec_data_write(dir, &p, &err) == MOEC_ERR_INVALID_ARG && strstr(err.msg, "end-of-text"), "no eot: %s",
          err.msg);
    c.tok[2][c.len[2] - 1] = (int32_t)c.eot;
    const char *dup[2] = {"same", "same"}, *ctrl[2] = {"a\nb", "c"}, *empty[2] = {"", "c"};
    const char *longn[2] = {"0123456789012345678901234567890123456789012345678901234567890123", "c"};
    q = p;
    q.domain_names = dup;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG, "duplicate domain names accepted");
    q.domain_names = ctrl;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG, "control char in name accepted");
    q.domain_names = empty;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG, "empty name accepted");
    q.domain_names = longn;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG, "64-byte name accepted");
    q = p;
    q.eot_id = c.vocab;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG, "eot outside vocab accepted");
    CHECK(count_files(dir) <= 0, "a refused write left files");

    /* the same dataset twice is fine; another one is refused unless forced */
    CHECK(moec_data_write(dir, &p, &err) == MOEC_OK, "write: %s", err.msg);
    CHECK(moec_data_write(dir, &p, &err) == MOEC_OK, "rewrite of the same dataset: %s", err.msg);
    q = p;
    q.fingerprint = 2;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_ERR_INVALID_ARG && strstr(err.msg, "different dataset") &&
              strstr(err.msg, "another tokenizer"),
          "other dataset: %s", err.msg);
    moec_data_reader *r = NULL;
    CHECK(moec_data_open(&r, dir, &err) == MOEC_OK && moec_data_fingerprint(r) == 1, "refused write changed data");
    moec_data_close(r);
    /* forced, with a smaller shard size: more shards; then forced back: the extra shards go */
    q.force = 1;
    q.max_shard_tokens = 20;
    CHECK(moec_data_write(dir, &q, &err) == MOEC_OK, "forced write: %s", err.msg);
    int many = count_files(dir);
    CHECK(many > 4, "small shards: %d files", many);
    q.max_shard_tokens = 0;
    q.fingerprint = 3;
    char junk[600];
    snprintf(junk, sizeof junk, "%s/notes.txt", dir);
    spit(junk, "keep me", 7);
    CHECK(moec_data_write(dir, &q, &err) == MOEC_OK, "forced write: %s", err.msg);
    CHECK(count_files(dir) == 4, "stale shards left: %d files (want meta, train, val, notes.txt)", count_files(dir));
    CHECK(access(junk, F_OK) == 0, "a file moec did not write was removed");
    CHECK(moec_data_open(&r, dir, &err) == MOEC_OK && moec_data_fingerprint(r) == 3, "forced data: %s", err.msg);
    moec_data_close(r);
    rm_dir(dir);

    /* a non-empty directory without meta.json */
    mkdir(dir, 0755);
    spit(junk, "x", 1);
    CHECK(moec_data_write(dir, &p, &err) == MOEC_ERR_INVALID_ARG && strstr(err.msg, "not empty"), "non-empty: %s",
          err.msg);
    p.force = 1;
    CHECK(moec_data_write(dir, &p, &err) == MOEC_OK, "forced into non-empty dir: %s", err.msg);
    rm_dir(dir);
    /* the output exists as a file */
    spit(dir, "x", 1);
    CHECK(moec_data_write(dir, &p, &err) == MOEC_ERR_IO, "output is a file: %d %s", err.status, err.msg);
    unlink(dir);
    corpus_free(&c);
}

/* ---------------------------------------------------------------- corruption */

typedef struct {
    char dir[512], shard[600], meta[600];
    unsigned char *good; /* the good shard */
    size_t n;
    char *good_meta;
    size_t meta_n;
} fixture;

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes `bytes` as the train shard and a meta.json whose checksum (and, if fix_counts, whose
 * train shard n_docs / n_tokens) match them, then opens the directory: returns the status. */
static moec_status open_with(fixture *fx, const unsigned char *bytes, size_t n, moec_error *err) {
    spit(fx->shard, bytes, n);
    uint64_t h_old = moec_fnv1a64(fx->good, fx->n, MOEC_FNV1A64_INIT),
             h_new = moec_fnv1a64(bytes, n, MOEC_FNV1A64_INIT);
    char old_hex[17], new_hex[17];
    snprintf(old_hex, sizeof old_hex, "%016llx", (unsigned long long)h_old);
    snprintf(new_hex, sizeof new_hex, "%016llx", (unsigned long long)h_new);
    char *m = malloc(fx->meta_n + 1);
    memcpy(m, fx->good_meta, fx->meta_n + 1);
    char *at = strstr(m, old_hex);
    if (at) memcpy(at, new_hex, 16);
    spit(fx->meta, m, fx->meta_n);
    free(m);
    moec_data_reader *r = NULL;
    moec_status s = moec_data_open(&r, fx->dir, err);
    if (s == MOEC_OK) { /* a surviving variant must still be safe to use */
        int32_t w[9];
        moec_error e2 = {0};
        uint64_t cur = 0;
        if (moec_data_n_windows(r, MOEC_DATA_TRAIN, 8))
            moec_data_batch(r, MOEC_DATA_TRAIN, 1, 8, MOEC_DATA_SHUFFLE, 1, w, &cur, &e2);
    }
    moec_data_close(r);
    return s;
}

static void expect_reject(fixture *fx, const unsigned char *bytes, size_t n, const char *what, const char *word) {
    moec_error err = {0};
    moec_status s = open_with(fx, bytes, n, &err);
    CHECK(s != MOEC_OK && err.msg[0] && !strchr(err.msg, '\n'), "%s accepted", what);
    if (word && s != MOEC_OK) CHECK(strstr(err.msg, word) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, word);
}

static void test_corruption(const char *tmp) {
    corpus c;
    int n_per[3] = {6, 6, 4};
    corpus_make(&c, 700, 3, n_per, 30, 11);
    moec_error err = {0};
    moec_data_split_docs(c.n_docs, c.dom, 3, c.names, 1, 0.2, c.split, &err);
    fixture fx;
    snprintf(fx.dir, sizeof fx.dir, "%s/corrupt", tmp);
    snprintf(fx.shard, sizeof fx.shard, "%s/train-00000.bin", fx.dir);
    snprintf(fx.meta, sizeof fx.meta, "%s/meta.json", fx.dir);
    moec_data_write_params p = params_of(&c, 99);
    CHECK(moec_data_write(fx.dir, &p, &err) == MOEC_OK, "write: %s", err.msg);
    fx.good = slurp(fx.shard, &fx.n);
    fx.good_meta = (char *)slurp(fx.meta, &fx.meta_n);
    if (!fx.good || !fx.good_meta) {
        CHECK(0, "fixture unreadable");
        return;
    }
    CHECK(open_with(&fx, fx.good, fx.n, &err) == MOEC_OK, "the good fixture: %s", err.msg);
    unsigned char *b = malloc(fx.n + 64);
    uint32_t hb = rd32(fx.good + 12), n_docs = rd32(fx.good + 32), n_dom = rd32(fx.good + 36);
    size_t doc0 = 64 + 64 * (size_t)n_dom;
#define MUTATE(stmt, what, word)                                                                                       \
    do {                                                                                                               \
        memcpy(b, fx.good, fx.n);                                                                                      \
        stmt;                                                                                                          \
        expect_reject(&fx, b, fx.n, what, word);                                                                       \
    } while (0)
    MUTATE(b[0] = 'X', "bad magic", "magic");
    MUTATE(wr32(b + 8, 2), "version 2", "version");
    MUTATE(wr32(b + 12, hb + 64), "header size +64", NULL);
    MUTATE(wr32(b + 12, 0xffffffffu), "header size huge", NULL);
    MUTATE(wr32(b + 16, 100), "vocab changed", NULL);
    MUTATE(wr32(b + 20, 3), "dtype 3", "dtype");
    MUTATE(wr32(b + 20, 4), "dtype 4 with u16 data", NULL);
    MUTATE(wr64(b + 24, 1ull << 62), "token count huge", NULL);
    MUTATE(wr64(b + 24, rd32(b + 24) - 1), "token count -1", NULL);
    MUTATE(wr32(b + 32, n_docs + 1), "doc count +1", NULL);
    MUTATE(wr32(b + 32, 0xffffffffu), "doc count huge", NULL);
    MUTATE(wr32(b + 36, n_dom + 1), "domain count +1", NULL);
    MUTATE(wr32(b + 36, 0), "domain count 0", NULL);
    MUTATE(wr64(b + 40, 98), "fingerprint", "tokenizer");
    MUTATE(wr32(b + 48, 5), "eot id", NULL);
    MUTATE(wr32(b + 52, 1), "split field", NULL);
    MUTATE(wr32(b + 56, 1), "shard index", NULL);
    MUTATE(wr32(b + 60, 1), "reserved", NULL);
    MUTATE(b[64] = 'B', "domain name", "domain");
    MUTATE(b[64 + 63] = 'x', "domain name padding", "domain");
    MUTATE(wr64(b + doc0, 1), "first doc offset 1", "document 0");
    MUTATE(wr64(b + doc0 + 24, (uint64_t)1 << 40), "doc 1 offset huge", "document 1");
    MUTATE(wr64(b + doc0 + 8, 0), "doc 0 length 0", "document 0");
    MUTATE(wr64(b + doc0 + 8, ~0ull), "doc 0 length huge", "document 0");
    MUTATE(wr32(b + doc0 + 16, n_dom), "doc 0 domain out of range", "document 0");
    MUTATE(wr32(b + doc0 + 20, 1), "doc 0 reserved", "document 0");
    MUTATE(wr64(b + doc0 + 24 * (n_docs - 1) + 8, 1), "last doc too short", NULL);
    MUTATE((b[hb] = 0xff, b[hb + 1] = 0xff), "token id 65535 >= vocab", "vocabulary");
    /* a document not ending with the end-of-text id */
    uint64_t len0 = (uint64_t)rd32(fx.good + doc0 + 8);
    MUTATE((b[hb + 2 * (len0 - 1)] = 1, b[hb + 2 * (len0 - 1) + 1] = 0), "doc 0 without eot", "end-of-text");
    /* truncation at every length, and trailing bytes */
    int all = 1;
    for (size_t n = 0; n < fx.n; n++) {
        moec_status s = open_with(&fx, fx.good, n, &err);
        all &= s != MOEC_OK;
    }
    CHECK(all, "a truncated shard was accepted");
    memcpy(b, fx.good, fx.n);
    b[fx.n] = 0;
    b[fx.n + 1] = 0;
    expect_reject(&fx, b, fx.n + 2, "trailing bytes", "trailing");
    expect_reject(&fx, b, fx.n + 1, "odd trailing byte", NULL);
    /* random byte flips with the checksum patched: structure checks alone; never a crash */
    g_rng = 12345;
    int n_acc = 0;
    for (int t = 0; t < 400; t++) {
        memcpy(b, fx.good, fx.n);
        size_t at = (size_t)((frand() + 1.f) * 0.5f * (float)hb) % hb; /* header and tables */
        b[at] ^= (unsigned char)(1u << (t % 8));
        moec_status s = open_with(&fx, b, fx.n, &err);
        n_acc += s == MOEC_OK;
        if (s == MOEC_OK) fprintf(stderr, "accepted flip at byte %zu bit %d (hb %u)\n", at, t % 8, hb);
    }
    CHECK(n_acc == 0, "%d header/table bit flips were accepted", n_acc);
    /* the checksum: a flipped token bit with the old checksum */
    memcpy(b, fx.good, fx.n);
    b[fx.n - 4] ^= 1;
    spit(fx.shard, b, fx.n);
    spit(fx.meta, fx.good_meta, fx.meta_n);
    moec_data_reader *r = NULL;
    CHECK(moec_data_open(&r, fx.dir, &err) == MOEC_ERR_FORMAT && strstr(err.msg, "corrupt"), "checksum: %s", err.msg);
    moec_data_close(r);
    spit(fx.shard, fx.good, fx.n);

    /* meta.json */
    struct {
        const char *from, *to, *what;
    } edits[] = {
        {"\"format\": \"moec-tokens\"", "\"format\": \"other\"", "format"},
        {"\"version\": 1", "\"version\": 2", "version"},
        {"\"version\": 1", "\"version\": -1", "version"},
        {"\"fingerprint\": \"fnv1a64:", "\"fingerprint\": \"sha256:", "fingerprint"},
        {"\"n_vocab\": 700", "\"n_vocab\": 7e99", "n_vocab"},
        {"\"n_vocab\": 700", "\"n_vocab\": 600", NULL},
        {"\"eot_id\": 699", "\"eot_id\": 700", NULL},
        {"\"file\": \"train-00000.bin\"", "\"file\": \"../etc/passwd\"", "shard name"},
        {"\"file\": \"train-00000.bin\"", "\"file\": \"train-00001.bin\"", NULL},
        {"\"file\": \"val-00000.bin\"", "\"file\": \"train-00000.bin\"", NULL},
        {"\"name\": \"bible\"", "\"name\": \"\"", NULL},
        {"\"name\": \"bible\"", "\"name\": \"biblX\"", "domain"},
        {"\"shards\": [", "\"shards\": [], \"x\": [", "shards"},
        {"{\n", "[\n", NULL},
        {"\"domains\": [", "\"domains\": 5, \"d\": [", "domains"},
    };
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        char *m = malloc(fx.meta_n + 64);
        memcpy(m, fx.good_meta, fx.meta_n + 1);
        char *at = strstr(m, edits[e].from);
        CHECK(at != NULL, "fixture lacks '%s'", edits[e].from);
        if (!at) {
            free(m);
            continue;
        }
        size_t fl = strlen(edits[e].from), tl = strlen(edits[e].to);
        memmove(at + tl, at + fl, strlen(at + fl) + 1);
        memcpy(at, edits[e].to, tl);
        spit(fx.meta, m, strlen(m));
        free(m);
        r = NULL;
        moec_status s = moec_data_open(&r, fx.dir, &err);
        CHECK(s != MOEC_OK, "meta edit '%s' accepted", edits[e].to);
        if (s != MOEC_OK && edits[e].what)
            CHECK(strstr(err.msg, edits[e].what) != NULL, "meta edit '%s': message '%s' lacks '%s'", edits[e].to,
                  err.msg, edits[e].what);
        moec_data_close(r);
    }
    spit(fx.meta, "{", 1);
    CHECK(moec_data_open(&r, fx.dir, &err) == MOEC_ERR_FORMAT && strstr(err.msg, "JSON"), "bad JSON: %s", err.msg);
    for (size_t n = 0; n < fx.meta_n; n += 7) { /* truncated meta.json */
        spit(fx.meta, fx.good_meta, n);
        r = NULL;
        CHECK(moec_data_open(&r, fx.dir, &err) != MOEC_OK, "meta.json cut at %zu accepted", n);
        moec_data_close(r);
    }
    spit(fx.meta, fx.good_meta, fx.meta_n);
    unlink(fx.shard);
    CHECK(moec_data_open(&r, fx.dir, &err) == MOEC_ERR_IO, "missing shard: %s", err.msg);
    unlink(fx.meta);
    CHECK(moec_data_open(&r, fx.dir, &err) == MOEC_ERR_IO && strstr(err.msg, "meta.json"), "no meta: %s", err.msg);
    rm_dir(fx.dir);
    CHECK(moec_data_open(&r, fx.dir, &err) == MOEC_ERR_IO, "missing dir: %s", err.msg);
    free(b);
    free(fx.good);
    free(fx.good_meta);
    corpus_free(&c);
#undef MUTATE
}

/* ---------------------------------------------------------------- sampler and evaluation */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The start of window c, found by matching its tokens against the stream (the tokens are
 * random enough that S + 1 of them identify a position). */
static uint64_t find_start(const int32_t *stream, uint64_t N, const int32_t *w, int32_t S) {
    for (uint64_t p = 0; p + (uint64_t)S < N; p++)
        if (!memcmp(stream + p, w, ((size_t)S + 1) * sizeof *w)) return p;
    return ~0ull;
}

static void test_sampler(const char *tmp) {
    corpus c;
    int n_per[3] = {30, 20, 10};
    corpus_make(&c, 70000, 3, n_per, 60, 21); /* u32 ids; random enough for find_start */
    moec_error err = {0};
    moec_data_split_docs(c.n_docs, c.dom, 3, c.names, 5, 0.2, c.split, &err);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sampler", tmp);
    moec_data_write_params p = params_of(&c, 5);
    p.max_shard_tokens = 300; /* windows cross shard boundaries */
    CHECK(moec_data_write(dir, &p, &err) == MOEC_OK, "write: %s", err.msg);
    moec_data_reader *r = NULL;
    CHECK(moec_data_open(&r, dir, &err) == MOEC_OK, "open: %s", err.msg);
    if (!r) return;
    uint64_t N = moec_data_n_tokens(r, MOEC_DATA_TRAIN);
    int32_t *stream = malloc(N * sizeof *stream);
    moec_data_read(r, MOEC_DATA_TRAIN, 0, N, stream, &err);
    const int32_t S = 16, B = 4;
    uint64_t W = moec_data_n_windows(r, MOEC_DATA_TRAIN, S);
    CHECK(W == (N - 1) / S && W > 20, "windows %llu", (unsigned long long)W);

    /* determinism, batch-size independence, exact resume */
    int32_t *x = malloc((size_t)3 * W * (S + 1) * sizeof *x), *y = malloc((size_t)3 * W * (S + 1) * sizeof *y);
    uint64_t cx = 0, cy = 0;
    for (int i = 0; i < 10; i++)
        CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, B, S, MOEC_DATA_SHUFFLE, 9, x + (size_t)i * B * (S + 1), &cx, &err) ==
                  MOEC_OK,
              "batch: %s", err.msg);
    CHECK(cx == 10 * (uint64_t)B, "cursor %llu", (unsigned long long)cx);
    for (int i = 0; i < 5; i++) /* B = 8 from the start: the same windows */
        moec_data_batch(r, MOEC_DATA_TRAIN, 2 * B, S, MOEC_DATA_SHUFFLE, 9, y + (size_t)i * 2 * B * (S + 1), &cy, &err);
    CHECK(cy == cx && !memcmp(x, y, (size_t)10 * B * (S + 1) * sizeof *x), "batch size changed the window stream");
    uint64_t saved = 6 * (uint64_t)B; /* "resume" from a saved cursor */
    moec_data_batch(r, MOEC_DATA_TRAIN, B, S, MOEC_DATA_SHUFFLE, 9, y, &saved, &err);
    CHECK(!memcmp(y, x + (size_t)6 * B * (S + 1), (size_t)B * (S + 1) * sizeof *x), "resume differs");
    cy = 0;
    moec_data_batch(r, MOEC_DATA_TRAIN, B, S, MOEC_DATA_SHUFFLE, 10, y, &cy, &err);
    CHECK(memcmp(x, y, (size_t)B * (S + 1) * sizeof *x) != 0, "another seed, the same batch");

    /* one epoch is a permutation of W windows, each a true slice of the stream, shifted by one
     * per-epoch offset; the next epoch is a different order */
    for (int e = 0; e < 3; e++) {
        uint64_t *starts = malloc(W * sizeof *starts);
        int ok = 1;
        for (uint64_t j = 0; j < W; j++) {
            int32_t w[17];
            ok &=
                moec_data_window(r, MOEC_DATA_TRAIN, S, MOEC_DATA_SHUFFLE, 9, (uint64_t)e * W + j, w, &err) == MOEC_OK;
            starts[j] = find_start(stream, N, w, S);
            if (e == 0 && j < 3) memcpy(x + j * (S + 1), w, sizeof w);
            if (e == 1 && j < 3) memcpy(y + j * (S + 1), w, sizeof w);
        }
        qsort(starts, W, sizeof *starts, cmp_u64);
        uint64_t off = starts[0];
        for (uint64_t j = 0; j < W; j++)
            ok &= starts[j] == off + j * (uint64_t)S;
        ok &= off <= N - 1 - W * (uint64_t)S;
        CHECK(ok, "epoch %d is not a permutation of the windows (offset %llu)", e, (unsigned long long)off);
        free(starts);
    }
    CHECK(memcmp(x, y, (size_t)3 * (S + 1) * sizeof *x) != 0, "epochs 0 and 1 start alike");
    /* sequential */
    int ok = 1;
    for (uint64_t cur = 0; cur < 2 * W + 3; cur++) {
        int32_t w[17];
        ok &= moec_data_window(r, MOEC_DATA_TRAIN, S, MOEC_DATA_SEQUENTIAL, 0, cur, w, &err) == MOEC_OK &&
              !memcmp(w, stream + (cur % W) * S, sizeof w);
    }
    CHECK(ok, "sequential windows");
    /* errors: the cursor is untouched */
    cx = 5;
    CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, 0, S, MOEC_DATA_SHUFFLE, 1, x, &cx, &err) == MOEC_ERR_INVALID_ARG, "B 0");
    CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, 1, 0, MOEC_DATA_SHUFFLE, 1, x, &cx, &err) == MOEC_ERR_INVALID_ARG, "S 0");
    CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, 1, (int32_t)N, MOEC_DATA_SHUFFLE, 1, x, &cx, &err) ==
                  MOEC_ERR_INVALID_ARG &&
              strstr(err.msg, "needs at least"),
          "S >= N: %s", err.msg);
    CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, 1, S, (moec_data_order)7, 1, x, &cx, &err) == MOEC_ERR_INVALID_ARG,
          "order");
    CHECK(cx == 5, "failed batch moved the cursor");
    CHECK(moec_data_batch(r, MOEC_DATA_TRAIN, 1, (int32_t)N - 1, MOEC_DATA_SHUFFLE, 1, y, &cx, &err) == MOEC_OK &&
              !memcmp(y, stream, N * sizeof *y),
          "S = N - 1: the whole stream");

    /* evaluation windows: per domain and overall, every target exactly once, in order */
    uint64_t NV = moec_data_n_tokens(r, MOEC_DATA_VAL);
    int32_t *vs = malloc((NV ? NV : 1) * sizeof *vs);
    moec_data_read(r, MOEC_DATA_VAL, 0, NV, vs, &err);
    for (int32_t d = -1; d < 3; d++) {
        for (int32_t s = 1; s <= 40; s += 13) {
            /* the domain's stream, from the document table */
            int32_t *want = malloc((NV ? NV : 1) * sizeof *want);
            uint64_t M = 0;
            for (uint32_t k = 0; k < moec_data_n_docs(r, MOEC_DATA_VAL); k++) {
                uint64_t f, n;
                int32_t dom;
                moec_data_doc(r, MOEC_DATA_VAL, k, &f, &n, &dom, &err);
                if (d >= 0 && dom != d) continue;
                memcpy(want + M, vs + f, n * sizeof *want);
                M += n;
            }
            uint64_t nw = moec_data_eval_n_windows(r, MOEC_DATA_VAL, d, s);
            CHECK(nw == (M < 2 ? 0 : (M - 2) / (uint64_t)s + 1), "domain %d S %d: %llu eval windows", d, s,
                  (unsigned long long)nw);
            int32_t *got = malloc((M + 1) * sizeof *got), w[41];
            uint64_t n_t = 0;
            int okw = 1;
            for (uint64_t i = 0; i < nw; i++) {
                int32_t nv = 0;
                okw &= moec_data_eval_window(r, MOEC_DATA_VAL, d, s, i, w, &nv, &err) == MOEC_OK;
                okw &= nv >= 2 && nv <= s + 1 && w[0] == want[i * (uint64_t)s];
                for (int32_t k = 1; k < nv; k++)
                    got[n_t++] = w[k];
                for (int32_t k = nv; k <= s; k++)
                    okw &= w[k] == (int32_t)c.eot;
            }
            CHECK(okw && n_t == (M ? M - 1 : 0) && (M < 2 || !memcmp(got, want + 1, n_t * sizeof *got)),
                  "domain %d S %d: targets differ", d, s);
            int32_t nv;
            CHECK(moec_data_eval_window(r, MOEC_DATA_VAL, d, s, nw, w, &nv, &err) == MOEC_ERR_INVALID_ARG, "eval oob");
            free(got);
            free(want);
        }
    }
    int32_t w[8], nv;
    CHECK(moec_data_eval_window(r, MOEC_DATA_VAL, 3, 4, 0, w, &nv, &err) == MOEC_ERR_INVALID_ARG, "bad domain");
    CHECK(moec_data_eval_n_windows(r, MOEC_DATA_VAL, 9, 4) == 0, "bad domain windows");

    /* tokenizer fingerprint check */
    char tpath[600];
    snprintf(tpath, sizeof tpath, "%s/tok.json", tmp);
    spit(tpath, "{\"a\": 1}", 8);
    uint64_t fp = 0;
    moec_data_fingerprint_file(tpath, &fp, &err);
    CHECK(fp == moec_fnv1a64("{\"a\": 1}", 8, MOEC_FNV1A64_INIT), "file fingerprint");
    CHECK(moec_data_check_tokenizer(r, tpath, &err) == MOEC_ERR_INVALID_ARG && strstr(err.msg, "another tokenizer"),
          "other tokenizer: %s", err.msg);
    unlink(tpath);
    CHECK(moec_data_check_tokenizer(r, tpath, &err) == MOEC_ERR_IO, "missing tokenizer");
    CHECK(moec_fnv1a64("a", 1, MOEC_FNV1A64_INIT) == 0xaf63dc4c8601ec8cull, "FNV-1a 64 test vector");

    moec_data_close(r);
    free(vs);
    free(x);
    free(y);
    free(stream);
    rm_dir(dir);
    corpus_free(&c);
}

int main(void) {
    char tmp[] = "/tmp/moec_test_data_XXXXXX";
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "test_data: cannot create a temporary directory\n");
        return 1;
    }
    test_round_trip(tmp, 1000, 0, "u16");
    test_round_trip(tmp, 70000, 0, "u32");
    test_round_trip(tmp, 1000, 150, "u16_shards");
    test_split();
    test_writer_errors(tmp);
    test_corruption(tmp);
    test_sampler(tmp);
    rm_dir(tmp);
    return test_finish("test_data");
}
