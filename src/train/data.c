/* data.c — the token-shard format: writer (shards + meta.json, atomically), reader (validated
 * mmaps), the training-window sampler and per-domain evaluation windows. The byte layout is in
 * docs/formats.md and data.h. Not a tokenizer: callers hand in ids.
 *
 * All multi-byte fields are little-endian and read/written byte by byte, so the code does not
 * depend on the host's byte order or on alignment. */
#include "train/data.h"

#include "core/error.h"
#include "core/rng.h"
#include "io/file.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAX_SHARD_TOKENS (1ull << 30)
#define META_MAX_BYTES (256u << 20)
#define JSON_INT_MAX 9007199254740992.0 /* 2^53: larger counts are not exact in meta.json */

/* ---------------------------------------------------------------- bytes and hashes */

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) {
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static inline uint32_t tok_get(const uint8_t *base, int dt, uint64_t i) {
    const uint8_t *p = base + i * (uint64_t)dt;
    return dt == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get32(p);
}

uint64_t moec_fnv1a64(const void *data, size_t n, uint64_t h) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

moec_status moec_data_fingerprint_file(const char *path, uint64_t *fp, moec_error *err) {
    moec_mmap m;
    moec_status s = moec_file_map(path, &m, err);
    if (s) return s;
    *fp = moec_fnv1a64(m.addr, m.size, MOEC_FNV1A64_INIT);
    moec_file_unmap(&m);
    return MOEC_OK;
}

static uint64_t align64(uint64_t x) {
    return (x + 63) & ~(uint64_t)63;
}

static const char *split_name(moec_data_split s) {
    return s == MOEC_DATA_VAL ? "val" : "train";
}

/* ---------------------------------------------------------------- split */

moec_status moec_data_split_docs(uint32_t n_docs, const uint32_t *doc_domain, int32_t n_domains,
                                 const char *const *domain_names, uint64_t seed, double val_fraction,
                                 uint8_t *doc_split, moec_error *err) {
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "val fraction %g is outside [0, 1)", val_fraction);
    if (n_domains < 1 || n_domains > MOEC_DATA_MAX_DOMAINS)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "%d domains (expected 1..%d)", n_domains, MOEC_DATA_MAX_DOMAINS);
    for (uint32_t i = 0; i < n_docs; i++) {
        if (doc_domain[i] >= (uint32_t)n_domains)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u has domain %u, only %d domains", i, doc_domain[i],
                            n_domains);
        doc_split[i] = MOEC_DATA_TRAIN;
    }
    uint32_t *idx = malloc((n_docs ? n_docs : 1) * sizeof *idx);
    if (!idx) return moec_err(err, MOEC_ERR_OOM, "out of memory splitting %u documents", n_docs);
    for (int32_t d = 0; d < n_domains; d++) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < n_docs; i++)
            if (doc_domain[i] == (uint32_t)d) idx[n++] = i;
        if (n < 2 || val_fraction <= 0.0) continue;
        uint64_t n_val = (uint64_t)floor((double)n * val_fraction + 0.5);
        if (n_val < 1) n_val = 1;
        if (n_val > n - 1) n_val = n - 1;
        const char *name = domain_names[d];
        moec_rng rng;
        moec_rng_seed(&rng, seed ^ moec_fnv1a64(name, strlen(name), MOEC_FNV1A64_INIT));
        for (uint32_t i = n - 1; i > 0; i--) { /* Fisher–Yates */
            uint32_t j = (uint32_t)moec_rng_below(&rng, (uint64_t)i + 1);
            uint32_t t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
        for (uint64_t k = 0; k < n_val; k++)
            doc_split[idx[k]] = MOEC_DATA_VAL;
    }
    free(idx);
    return MOEC_OK;
}

/* ---------------------------------------------------------------- string builder (meta.json) */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) MOEC_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        sb_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* A JSON string literal; bytes >= 0x80 are copied (the caller passes UTF-8). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char name[32];
    uint8_t *head; /* header + tables + padding */
    size_t head_bytes;
    uint8_t *toks; /* token ids, dtype bytes each */
    size_t tok_bytes;
    uint64_t n_tokens;
    uint32_t n_docs;
    uint64_t hash; /* FNV-1a 64 of the whole file */
    int split;     /* moec_data_split */
} shard_buf;

static int valid_domain_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > MOEC_DATA_DOMAIN_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

static moec_status validate_write_params(const moec_data_write_params *p, moec_error *err) {
    if (p->n_vocab < 1) return moec_err(err, MOEC_ERR_INVALID_ARG, "vocabulary size is 0");
    if (p->eot_id >= p->n_vocab)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "end-of-text id %u is outside the vocabulary (%u ids)", p->eot_id,
                        p->n_vocab);
    if (p->n_domains < 1 || p->n_domains > MOEC_DATA_MAX_DOMAINS || !p->domain_names)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "%d domains (expected 1..%d)", p->n_domains, MOEC_DATA_MAX_DOMAINS);
    for (int32_t d = 0; d < p->n_domains; d++) {
        if (!p->domain_names[d] || !valid_domain_name(p->domain_names[d]))
            return moec_err(err, MOEC_ERR_INVALID_ARG,
                            "domain name '%s' must be 1..%d bytes without control characters",
                            p->domain_names[d] ? p->domain_names[d] : "(null)", MOEC_DATA_DOMAIN_NAME_MAX);
        for (int32_t e = 0; e < d; e++)
            if (!strcmp(p->domain_names[d], p->domain_names[e]))
                return moec_err(err, MOEC_ERR_INVALID_ARG, "domain name '%s' appears twice", p->domain_names[d]);
    }
    for (int32_t f = 0; f < p->n_files; f++)
        if (!p->file_paths || !p->file_domain || !p->file_paths[f] || p->file_domain[f] < 0 ||
            p->file_domain[f] >= p->n_domains)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "source file %d has no path or a bad domain", f);
    if (p->n_docs && (!p->doc_tokens || !p->doc_n_tokens || !p->doc_domain || !p->doc_split))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "document arrays missing");
    uint64_t total = 0;
    for (uint32_t i = 0; i < p->n_docs; i++) {
        uint64_t n = p->doc_n_tokens[i];
        if (n < 1 || !p->doc_tokens[i])
            return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u is empty (it needs the end-of-text id at least)",
                            i);
        if (p->doc_domain[i] >= (uint32_t)p->n_domains)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u has domain %u, only %d domains", i,
                            p->doc_domain[i], p->n_domains);
        if (p->doc_split[i] > MOEC_DATA_VAL)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u has split %u", i, p->doc_split[i]);
        for (uint64_t k = 0; k < n; k++)
            if (p->doc_tokens[i][k] < 0 || (uint32_t)p->doc_tokens[i][k] >= p->n_vocab)
                return moec_err(err, MOEC_ERR_INVALID_ARG,
                                "document %u token %llu is id %d, outside the vocabulary (%u ids)", i,
                                (unsigned long long)k, p->doc_tokens[i][k], p->n_vocab);
        if ((uint32_t)p->doc_tokens[i][n - 1] != p->eot_id)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u does not end with the end-of-text id %u", i,
                            p->eot_id);
        total += n;
    }
    if (total == 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "empty corpus: no documents, no tokens to write");
    return MOEC_OK;
}

/* Builds one shard in memory from documents [docs[0] .. docs[n-1]] of split s. */
static moec_status shard_build(shard_buf *sh, const moec_data_write_params *p, moec_data_split s, uint32_t index,
                               const uint32_t *docs, uint32_t n, moec_error *err) {
    int dt = p->n_vocab <= 65536 ? 2 : 4;
    uint64_t n_tok = 0;
    for (uint32_t i = 0; i < n; i++)
        n_tok += p->doc_n_tokens[docs[i]];
    uint64_t tables = MOEC_DATA_FIXED_HEADER + (uint64_t)MOEC_DATA_DOMAIN_ENTRY * (uint64_t)p->n_domains +
                      (uint64_t)MOEC_DATA_DOC_ENTRY * n;
    uint64_t hb = align64(tables);
    if (hb > UINT32_MAX || n_tok > (SIZE_MAX - hb) / (uint64_t)dt)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "shard too large (%u documents, %llu tokens)", n,
                        (unsigned long long)n_tok);
    snprintf(sh->name, sizeof sh->name, "%s-%05u.bin", split_name(s), index);
    sh->head_bytes = (size_t)hb;
    sh->tok_bytes = (size_t)(n_tok * (uint64_t)dt);
    sh->head = calloc(1, sh->head_bytes);
    sh->toks = malloc(sh->tok_bytes ? sh->tok_bytes : 1);
    if (!sh->head || !sh->toks)
        return moec_err(err, MOEC_ERR_OOM, "out of memory building %s (%zu bytes)", sh->name,
                        sh->head_bytes + sh->tok_bytes);
    sh->n_tokens = n_tok;
    sh->n_docs = n;
    sh->split = (int)s;
    uint8_t *h = sh->head;
    memcpy(h, MOEC_DATA_MAGIC, 8);
    put32(h + 8, MOEC_DATA_VERSION);
    put32(h + 12, (uint32_t)hb);
    put32(h + 16, p->n_vocab);
    put32(h + 20, (uint32_t)dt);
    put64(h + 24, n_tok);
    put32(h + 32, n);
    put32(h + 36, (uint32_t)p->n_domains);
    put64(h + 40, p->fingerprint);
    put32(h + 48, p->eot_id);
    put32(h + 52, (uint32_t)s);
    put32(h + 56, index);
    put32(h + 60, 0);
    uint8_t *dom = h + MOEC_DATA_FIXED_HEADER;
    for (int32_t d = 0; d < p->n_domains; d++)
        memcpy(dom + (size_t)d * MOEC_DATA_DOMAIN_ENTRY, p->domain_names[d], strlen(p->domain_names[d]));
    uint8_t *doc = dom + (size_t)MOEC_DATA_DOMAIN_ENTRY * (size_t)p->n_domains;
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t di = docs[i];
        uint64_t len = p->doc_n_tokens[di];
        put64(doc + (size_t)i * MOEC_DATA_DOC_ENTRY, off);
        put64(doc + (size_t)i * MOEC_DATA_DOC_ENTRY + 8, len);
        put32(doc + (size_t)i * MOEC_DATA_DOC_ENTRY + 16, p->doc_domain[di]);
        const int32_t *t = p->doc_tokens[di];
        uint8_t *o = sh->toks + off * (uint64_t)dt;
        if (dt == 2)
            for (uint64_t k = 0; k < len; k++) {
                o[2 * k] = (uint8_t)t[k];
                o[2 * k + 1] = (uint8_t)((uint32_t)t[k] >> 8);
            }
        else
            for (uint64_t k = 0; k < len; k++)
                put32(o + 4 * k, (uint32_t)t[k]);
        off += len;
    }
    sh->hash = moec_fnv1a64(sh->toks, sh->tok_bytes, moec_fnv1a64(sh->head, sh->head_bytes, MOEC_FNV1A64_INIT));
    return MOEC_OK;
}

static void shards_free(shard_buf *sh, int n) {
    for (int i = 0; sh && i < n; i++) {
        free(sh[i].head);
        free(sh[i].toks);
    }
    free(sh);
}

/* meta.json: everything the reader cross-checks plus what a person wants to know. */
static void meta_build(sbuf *b, const moec_data_write_params *p, shard_buf *sh, int n_sh) {
    int dt = p->n_vocab <= 65536 ? 2 : 4;
    sb_printf(b, "{\n  \"format\": \"moec-tokens\",\n  \"version\": %d,\n  \"tokenizer\": {\n    \"path\": ",
              MOEC_DATA_VERSION);
    sb_json_str(b, p->tokenizer_path ? p->tokenizer_path : "");
    sb_printf(b,
              ",\n    \"fingerprint\": \"fnv1a64:%016llx\",\n    \"n_vocab\": %u,\n    \"eot_id\": %u,\n"
              "    \"eot_token\": ",
              (unsigned long long)p->fingerprint, p->n_vocab, p->eot_id);
    if (p->eot_token)
        sb_json_str(b, p->eot_token);
    else
        sb_put(b, "null", 4);
    sb_printf(b, "\n  },\n  \"dtype\": \"%s\",\n  \"seed\": %llu,\n  \"val_fraction\": %.10g,\n  \"domains\": [",
              dt == 2 ? "uint16" : "uint32", (unsigned long long)p->seed, p->val_fraction);
    for (int32_t d = 0; d < p->n_domains; d++) {
        uint64_t docs[2] = {0, 0}, toks[2] = {0, 0};
        for (uint32_t i = 0; i < p->n_docs; i++)
            if (p->doc_domain[i] == (uint32_t)d) {
                docs[p->doc_split[i]]++;
                toks[p->doc_split[i]] += p->doc_n_tokens[i];
            }
        sb_printf(b, "%s\n    {\"id\": %d, \"name\": ", d ? "," : "", d);
        sb_json_str(b, p->domain_names[d]);
        sb_put(b, ", \"files\": [", 12);
        int first = 1;
        for (int32_t f = 0; f < p->n_files; f++)
            if (p->file_domain[f] == d) {
                if (!first) sb_put(b, ", ", 2);
                sb_json_str(b, p->file_paths[f]);
                first = 0;
            }
        sb_printf(b, "], \"train_docs\": %llu, \"train_tokens\": %llu, \"val_docs\": %llu, \"val_tokens\": %llu}",
                  (unsigned long long)docs[0], (unsigned long long)toks[0], (unsigned long long)docs[1],
                  (unsigned long long)toks[1]);
    }
    sb_put(b, "\n  ]", 4);
    for (int s = 0; s < 2; s++) {
        uint64_t nd = 0, nt = 0;
        for (int i = 0; i < n_sh; i++)
            if (sh[i].split == s) {
                nd += sh[i].n_docs;
                nt += sh[i].n_tokens;
            }
        sb_printf(b, ",\n  \"%s\": {\"n_docs\": %llu, \"n_tokens\": %llu, \"shards\": [",
                  split_name((moec_data_split)s), (unsigned long long)nd, (unsigned long long)nt);
        int first = 1;
        for (int i = 0; i < n_sh; i++) {
            if (sh[i].split != s) continue;
            sb_printf(b,
                      "%s\n    {\"file\": \"%s\", \"n_docs\": %u, \"n_tokens\": %llu, \"bytes\": %llu, "
                      "\"fnv1a64\": \"%016llx\"}",
                      first ? "" : ",", sh[i].name, sh[i].n_docs, (unsigned long long)sh[i].n_tokens,
                      (unsigned long long)(sh[i].head_bytes + sh[i].tok_bytes), (unsigned long long)sh[i].hash);
            first = 0;
        }
        sb_put(b, "\n  ]}", 5);
    }
    sb_put(b, "\n}\n", 3);
}

static moec_status mkdir_p(const char *dir, moec_error *err) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) return moec_err(err, MOEC_ERR_INVALID_ARG, "bad output directory '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return moec_err(err, MOEC_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return moec_err(err, MOEC_ERR_IO, "output %s exists and is not a directory", dir);
    return MOEC_OK;
}

/* 1 if dir holds anything besides "." and "..", 0 if not, -1 if it cannot be listed. */
static int dir_nonempty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int any = 0;
    while (!any && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) any = 1;
    closedir(d);
    return any;
}

/* A shard file name as the writer makes them: (train|val)-DDDDD.bin, nothing else. */
static int is_shard_name(const char *s) {
    const char *p = !strncmp(s, "train-", 6) ? s + 6 : !strncmp(s, "val-", 4) ? s + 4 : NULL;
    if (!p) return 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    return digits >= 5 && digits <= 10 && !strcmp(p, ".bin");
}

/* With force: removes shards the old meta.json lists that the new dataset does not write. */
static void remove_stale_shards(const char *dir, const char *old_meta, const shard_buf *sh, int n_sh) {
    cJSON *root = cJSON_Parse(old_meta);
    if (!root) return;
    for (int s = 0; s < 2; s++) {
        const cJSON *split = cJSON_GetObjectItemCaseSensitive(root, split_name((moec_data_split)s));
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(split, "shards");
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "file");
            if (!cJSON_IsString(f) || !is_shard_name(f->valuestring)) continue;
            int kept = 0;
            for (int i = 0; i < n_sh; i++)
                kept |= !strcmp(sh[i].name, f->valuestring);
            char path[4096];
            if (!kept && moec_path_join(path, sizeof path, dir, f->valuestring)) unlink(path);
        }
    }
    cJSON_Delete(root);
}

moec_status moec_data_write(const char *dir, const moec_data_write_params *p, moec_error *err) {
    moec_status s = validate_write_params(p, err);
    if (s) return s;
    uint64_t max_tok = p->max_shard_tokens ? p->max_shard_tokens : DEFAULT_MAX_SHARD_TOKENS;
    uint32_t *docs = malloc((p->n_docs ? p->n_docs : 1) * sizeof *docs);
    shard_buf *sh = NULL;
    int n_sh = 0, cap_sh = 0;
    sbuf meta = {0};
    char *old = NULL;
    size_t old_n = 0;
    if (!docs) return moec_err(err, MOEC_ERR_OOM, "out of memory");

    /* 1. build every shard in memory: per split, documents in order, cut at max_tok */
    for (int sp = 0; sp < 2 && !s; sp++) {
        uint32_t n = 0, index = 0;
        for (uint32_t i = 0; i < p->n_docs; i++)
            if (p->doc_split[i] == sp) docs[n++] = i;
        uint32_t a = 0;
        do { /* at least one shard per split, possibly empty */
            uint32_t b = a;
            uint64_t t = 0;
            while (b < n && (b == a || t + p->doc_n_tokens[docs[b]] <= max_tok))
                t += p->doc_n_tokens[docs[b++]];
            if (n_sh == cap_sh) {
                int nc = cap_sh ? 2 * cap_sh : 4;
                shard_buf *ns = realloc(sh, (size_t)nc * sizeof *ns);
                if (!ns) {
                    s = moec_err(err, MOEC_ERR_OOM, "out of memory");
                    break;
                }
                memset(ns + cap_sh, 0, (size_t)(nc - cap_sh) * sizeof *ns);
                sh = ns;
                cap_sh = nc;
            }
            s = shard_build(&sh[n_sh++], p, (moec_data_split)sp, index++, docs + a, b - a, err);
            a = b;
        } while (!s && a < n);
    }
    free(docs);
    if (!s) {
        meta_build(&meta, p, sh, n_sh);
        if (meta.oom) s = moec_err(err, MOEC_ERR_OOM, "out of memory writing meta.json");
    }

    /* 2. the directory: new, empty, the same dataset, or (with force) anything */
    char meta_path[4096];
    if (!s && !moec_path_join(meta_path, sizeof meta_path, dir, MOEC_DATA_META))
        s = moec_err(err, MOEC_ERR_INVALID_ARG, "output path too long: %s", dir);
    if (!s) s = mkdir_p(dir, err);
    if (!s) {
        struct stat st;
        if (stat(meta_path, &st) == 0) {
            moec_error e2 = {0};
            if (moec_file_read_all(meta_path, &old, &old_n, &e2) == MOEC_OK && old_n == meta.n &&
                !memcmp(old, meta.p, meta.n)) {
                /* the same dataset: rewrite (repairs damaged shards) */
            } else if (!p->force) {
                const char *why = "";
                char fp[48];
                snprintf(fp, sizeof fp, "fnv1a64:%016llx", (unsigned long long)p->fingerprint);
                if (old && !strstr(old, fp)) why = " made with another tokenizer";
                s = moec_err(err, MOEC_ERR_INVALID_ARG,
                             "%s already holds a different dataset%s (its meta.json differs from this one); "
                             "pass --force to replace it, or choose another output directory",
                             dir, why);
            } else {
                if (old) remove_stale_shards(dir, old, sh, n_sh);
                unlink(meta_path); /* a crash below leaves no meta.json, never a mismatched one */
            }
        } else if (!p->force && dir_nonempty(dir) != 0) {
            s = moec_err(err, MOEC_ERR_INVALID_ARG,
                         "%s is not empty and holds no moec dataset (no meta.json); choose a new or empty "
                         "directory, or pass --force",
                         dir);
        }
    }

    /* 3. shards, then meta.json: meta.json is the commit point */
    for (int i = 0; !s && i < n_sh; i++) {
        char path[4096];
        if (!moec_path_join(path, sizeof path, dir, sh[i].name)) {
            s = moec_err(err, MOEC_ERR_INVALID_ARG, "output path too long: %s", dir);
            break;
        }
        moec_iovec parts[2] = {{.data = sh[i].head, .size = sh[i].head_bytes}, {.data = sh[i].toks, .size = sh[i].tok_bytes}};
        s = moec_file_write_atomic(path, parts, 2, err);
    }
    if (!s) {
        moec_iovec part = {.data = meta.p, .size = meta.n};
        s = moec_file_write_atomic(meta_path, &part, 1, err);
    }
    free(old);
    free(meta.p);
    shards_free(sh, n_sh);
    return s;
}

/* ---------------------------------------------------------------- reader: structures */

typedef struct {
    moec_mmap map;
    char file[64];
    const uint8_t *tok; /* token ids */
    int dt;             /* bytes per id */
    uint64_t n_tokens;
    uint64_t start; /* position of its first token in the split's stream */
} shard;

typedef struct {
    int n_shards;
    shard *shards;
    uint64_t n_tokens;
    uint32_t n_docs;
    uint64_t *doc_first;  /* [n_docs + 1]: document i is stream [doc_first[i], doc_first[i+1]) */
    uint32_t *doc_domain; /* [n_docs] */
    uint32_t *dom_off;    /* [n_domains + 1]: domain d's documents are dom_docs[dom_off[d] ..) */
    uint32_t *dom_docs;   /* [n_docs] */
    uint64_t *dom_cum;    /* [n_docs + n_domains]: domain d's cumulative tokens at dom_cum + dom_off[d] + d */
} split_data;

struct moec_data_reader {
    char *dir;
    char *tokenizer_path;
    uint64_t fingerprint, id;
    uint32_t n_vocab, eot_id;
    int32_t n_domains;
    char (*domain_names)[MOEC_DATA_DOMAIN_NAME_MAX + 1];
    split_data split[2];
};

uint32_t moec_data_n_vocab(const moec_data_reader *r) {
    return r->n_vocab;
}
uint32_t moec_data_eot_id(const moec_data_reader *r) {
    return r->eot_id;
}
uint64_t moec_data_fingerprint(const moec_data_reader *r) {
    return r->fingerprint;
}
uint64_t moec_data_id(const moec_data_reader *r) {
    return r->id;
}
const char *moec_data_tokenizer_path(const moec_data_reader *r) {
    return r->tokenizer_path;
}
int32_t moec_data_n_domains(const moec_data_reader *r) {
    return r->n_domains;
}

const char *moec_data_domain_name(const moec_data_reader *r, int32_t d) {
    return d >= 0 && d < r->n_domains ? r->domain_names[d] : NULL;
}

static const split_data *get_split(const moec_data_reader *r, moec_data_split s) {
    return &r->split[s == MOEC_DATA_VAL ? 1 : 0];
}

uint64_t moec_data_n_tokens(const moec_data_reader *r, moec_data_split s) {
    return get_split(r, s)->n_tokens;
}
uint32_t moec_data_n_docs(const moec_data_reader *r, moec_data_split s) {
    return get_split(r, s)->n_docs;
}

uint32_t moec_data_domain_n_docs(const moec_data_reader *r, moec_data_split s, int32_t d) {
    if (d < 0 || d >= r->n_domains) return 0;
    const split_data *sd = get_split(r, s);
    return sd->dom_off[d + 1] - sd->dom_off[d];
}

uint64_t moec_data_domain_n_tokens(const moec_data_reader *r, moec_data_split s, int32_t d) {
    if (d < 0 || d >= r->n_domains) return 0;
    const split_data *sd = get_split(r, s);
    uint32_t n = sd->dom_off[d + 1] - sd->dom_off[d];
    return sd->dom_cum[sd->dom_off[d] + (uint32_t)d + n];
}

const uint32_t *moec_data_domain_docs(const moec_data_reader *r, moec_data_split s, int32_t d, uint32_t *n) {
    *n = 0;
    if (d < 0 || d >= r->n_domains) return NULL;
    const split_data *sd = get_split(r, s);
    *n = sd->dom_off[d + 1] - sd->dom_off[d];
    return *n ? sd->dom_docs + sd->dom_off[d] : NULL;
}

moec_status moec_data_doc(const moec_data_reader *r, moec_data_split s, uint32_t doc, uint64_t *first,
                          uint64_t *n_tokens, int32_t *domain, moec_error *err) {
    const split_data *sd = get_split(r, s);
    if (doc >= sd->n_docs)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "document %u is out of range (%s has %u)", doc, split_name(s),
                        sd->n_docs);
    if (first) *first = sd->doc_first[doc];
    if (n_tokens) *n_tokens = sd->doc_first[doc + 1] - sd->doc_first[doc];
    if (domain) *domain = (int32_t)sd->doc_domain[doc];
    return MOEC_OK;
}

void moec_data_close(moec_data_reader *r) {
    if (!r) return;
    for (int s = 0; s < 2; s++) {
        split_data *sd = &r->split[s];
        for (int i = 0; i < sd->n_shards; i++)
            moec_file_unmap(&sd->shards[i].map);
        free(sd->shards);
        free(sd->doc_first);
        free(sd->doc_domain);
        free(sd->dom_off);
        free(sd->dom_docs);
        free(sd->dom_cum);
    }
    free(r->domain_names);
    free(r->tokenizer_path);
    free(r->dir);
    free(r);
}

/* ---------------------------------------------------------------- reader: meta.json */

static moec_status meta_uint(const cJSON *obj, const char *key, double max, uint64_t *out, const char *where,
                             moec_error *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > max || j->valuedouble != floor(j->valuedouble))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"%s\" must be an integer in [0, %.0f]", where, key, max);
    *out = (uint64_t)j->valuedouble;
    return MOEC_OK;
}

static moec_status meta_hex(const cJSON *obj, const char *key, const char *prefix, uint64_t *out, const char *where,
                            moec_error *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    size_t pl = strlen(prefix);
    const char *s = cJSON_IsString(j) ? j->valuestring : NULL;
    if (!s || strncmp(s, prefix, pl) || strlen(s + pl) != 16 || strspn(s + pl, "0123456789abcdef") != 16)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"%s\" must be a string \"%s\" + 16 hex digits", where, key, prefix);
    *out = strtoull(s + pl, NULL, 16);
    return MOEC_OK;
}

/* ---------------------------------------------------------------- reader: one shard */

typedef struct {
    uint64_t n_tokens, hash;
    uint32_t n_docs;
} shard_expect;

/* Maps and validates one shard; appends its documents to the split's tables (doc_first from
 * *n_docs_seen on). Every offset is checked before use. */
static moec_status shard_open(moec_data_reader *r, split_data *sd, int index, moec_data_split sp,
                              const shard_expect *ex, uint32_t *n_docs_seen, moec_error *err) {
    shard *sh = &sd->shards[index];
    char path[4096];
    if (!moec_path_join(path, sizeof path, r->dir, sh->file))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s/%s", r->dir, sh->file);
    moec_status s = moec_file_map(path, &sh->map, err);
    if (s) return s;
    const uint8_t *b = sh->map.addr;
    size_t size = sh->map.size;
    if (size < MOEC_DATA_FIXED_HEADER)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: truncated: %zu bytes, the header alone needs %d", path, size,
                        MOEC_DATA_FIXED_HEADER);
    if (memcmp(b, MOEC_DATA_MAGIC, 8))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not a moec token shard (bad magic)", path);
    uint32_t version = get32(b + 8);
    if (version != MOEC_DATA_VERSION)
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: shard format version %u, this moec reads version %d", path,
                        version, MOEC_DATA_VERSION);
    uint32_t hb = get32(b + 12), vocab = get32(b + 16), dt = get32(b + 20);
    uint64_t n_tok = get64(b + 24);
    uint32_t n_docs = get32(b + 32), n_dom = get32(b + 36);
    uint64_t fp = get64(b + 40);
    uint32_t eot = get32(b + 48), split = get32(b + 52), idx = get32(b + 56), reserved = get32(b + 60);
    if (vocab != r->n_vocab || eot != r->eot_id || fp != r->fingerprint)
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: header (vocab %u, end-of-text %u, tokenizer fnv1a64:%016llx) disagrees with meta.json "
                        "(vocab %u, end-of-text %u, tokenizer fnv1a64:%016llx)",
                        path, vocab, eot, (unsigned long long)fp, r->n_vocab, r->eot_id,
                        (unsigned long long)r->fingerprint);
    if (!((dt == 2 && vocab <= 65536) || dt == 4))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: token dtype %u cannot hold a vocabulary of %u", path, dt, vocab);
    if (split != (uint32_t)sp || idx != (uint32_t)index || reserved != 0)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: header says split %u shard %u, meta.json lists it as %s shard %d",
                        path, split, idx, split_name(sp), index);
    if (n_dom != (uint32_t)r->n_domains)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: %u domains, meta.json has %d", path, n_dom, r->n_domains);
    if (n_docs != ex->n_docs || n_tok != ex->n_tokens)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: %u documents / %llu tokens, meta.json says %u / %llu", path, n_docs,
                        (unsigned long long)n_tok, ex->n_docs, (unsigned long long)ex->n_tokens);
    uint64_t tables =
        MOEC_DATA_FIXED_HEADER + (uint64_t)MOEC_DATA_DOMAIN_ENTRY * n_dom + (uint64_t)MOEC_DATA_DOC_ENTRY * n_docs;
    if ((uint64_t)hb != align64(tables))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: header size %u, the tables need %llu", path, hb,
                        (unsigned long long)align64(tables));
    if ((uint64_t)hb > size)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: truncated: %zu bytes, the header says its tables end at %u", path,
                        size, hb);
    if (n_tok > (uint64_t)(size - hb) / dt || (uint64_t)hb + n_tok * dt != (uint64_t)size)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: %zu bytes, but the header says %u + %llu tokens x %u = %llu (%s)",
                        path, size, hb, (unsigned long long)n_tok, dt, (unsigned long long)((uint64_t)hb + n_tok * dt),
                        (uint64_t)hb + n_tok * dt > (uint64_t)size ? "truncated" : "trailing bytes");
    const uint8_t *dom = b + MOEC_DATA_FIXED_HEADER;
    for (uint32_t d = 0; d < n_dom; d++) {
        const uint8_t *e = dom + (size_t)d * MOEC_DATA_DOMAIN_ENTRY;
        if (memcmp(e, r->domain_names[d], MOEC_DATA_DOMAIN_ENTRY))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: domain %u is not '%s' as in meta.json", path, d,
                            r->domain_names[d]);
    }
    for (uint64_t i = tables; i < hb; i++)
        if (b[i] != 0) return moec_err(err, MOEC_ERR_FORMAT, "%s: non-zero padding after the tables", path);
    sh->tok = b + hb;
    sh->dt = (int)dt;
    sh->n_tokens = n_tok;
    const uint8_t *doc = dom + (size_t)MOEC_DATA_DOMAIN_ENTRY * n_dom;
    uint64_t off = 0;
    for (uint32_t i = 0; i < n_docs; i++) {
        const uint8_t *e = doc + (size_t)i * MOEC_DATA_DOC_ENTRY;
        uint64_t o = get64(e), n = get64(e + 8);
        uint32_t d = get32(e + 16), pad = get32(e + 20);
        if (o != off || n < 1 || n > n_tok - off || d >= n_dom || pad != 0)
            return moec_err(err, MOEC_ERR_FORMAT,
                            "%s: document %u (offset %llu, %llu tokens, domain %u) is out of bounds or not "
                            "contiguous (expected offset %llu, >= 1 token, <= %llu tokens, domain < %u)",
                            path, i, (unsigned long long)o, (unsigned long long)n, d, (unsigned long long)off,
                            (unsigned long long)(n_tok - off), n_dom);
        if (tok_get(sh->tok, sh->dt, o + n - 1) != eot)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: document %u does not end with the end-of-text id %u", path, i,
                            eot);
        sd->doc_first[*n_docs_seen] = sh->start + o;
        sd->doc_domain[*n_docs_seen] = d;
        (*n_docs_seen)++;
        off += n;
    }
    if (off != n_tok)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: documents cover %llu of %llu tokens", path, (unsigned long long)off,
                        (unsigned long long)n_tok);
    for (uint64_t i = 0; i < n_tok; i++) {
        uint32_t t = tok_get(sh->tok, sh->dt, i);
        if (t >= vocab)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: token %llu is id %u, outside the vocabulary (%u ids)", path,
                            (unsigned long long)i, t, vocab);
    }
    uint64_t h = moec_fnv1a64(b, size, MOEC_FNV1A64_INIT);
    if (h != ex->hash)
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: contents do not match meta.json (fnv1a64 %016llx, expected %016llx): the shard is "
                        "corrupt or from another run; re-run moec data",
                        path, (unsigned long long)h, (unsigned long long)ex->hash);
    return MOEC_OK;
}

/* Per-domain document lists and cumulative token counts of one split. */
static moec_status split_index(moec_data_reader *r, split_data *sd, moec_error *err) {
    uint32_t nd = (uint32_t)r->n_domains;
    sd->dom_off = calloc((size_t)nd + 1, sizeof *sd->dom_off);
    sd->dom_docs = malloc(((size_t)sd->n_docs + 1) * sizeof *sd->dom_docs);
    sd->dom_cum = malloc(((size_t)sd->n_docs + nd) * sizeof *sd->dom_cum);
    if (!sd->dom_off || !sd->dom_docs || !sd->dom_cum) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (uint32_t i = 0; i < sd->n_docs; i++)
        sd->dom_off[sd->doc_domain[i] + 1]++;
    for (uint32_t d = 0; d < nd; d++)
        sd->dom_off[d + 1] += sd->dom_off[d];
    uint32_t *fill = calloc(nd, sizeof *fill);
    if (!fill) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (uint32_t d = 0; d < nd; d++)
        sd->dom_cum[sd->dom_off[d] + d] = 0;
    for (uint32_t i = 0; i < sd->n_docs; i++) {
        uint32_t d = sd->doc_domain[i], k = fill[d]++;
        sd->dom_docs[sd->dom_off[d] + k] = i;
        uint64_t *cum = sd->dom_cum + sd->dom_off[d] + d;
        cum[k + 1] = cum[k] + (sd->doc_first[i + 1] - sd->doc_first[i]);
    }
    free(fill);
    return MOEC_OK;
}

static moec_status open_split(moec_data_reader *r, const cJSON *root, moec_data_split sp, const char *mpath,
                              moec_error *err) {
    split_data *sd = &r->split[sp == MOEC_DATA_VAL ? 1 : 0];
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, split_name(sp));
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "shards");
    if (!cJSON_IsObject(obj) || !cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"%s\" must be an object with a non-empty \"shards\" array", mpath,
                        split_name(sp));
    int n = cJSON_GetArraySize(arr);
    sd->shards = calloc((size_t)n, sizeof *sd->shards);
    shard_expect *ex = calloc((size_t)n, sizeof *ex);
    if (!sd->shards || !ex) {
        free(ex);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    sd->n_shards = n;
    moec_status s = MOEC_OK;
    uint64_t total_docs = 0, total_tok = 0;
    char where[4352];
    for (int i = 0; i < n && !s; i++) {
        const cJSON *it = cJSON_GetArrayItem(arr, i);
        snprintf(where, sizeof where, "%s: %s.shards[%d]", mpath, split_name(sp), i);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "file");
        uint64_t nd = 0;
        if (!cJSON_IsString(f) || !is_shard_name(f->valuestring) || strlen(f->valuestring) >= sizeof sd->shards[i].file)
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: \"file\" must be a shard name like %s-00000.bin", where,
                         split_name(sp));
        if (!s) s = meta_uint(it, "n_docs", (double)UINT32_MAX, &nd, where, err);
        if (!s) s = meta_uint(it, "n_tokens", JSON_INT_MAX, &ex[i].n_tokens, where, err);
        if (!s) s = meta_hex(it, "fnv1a64", "", &ex[i].hash, where, err);
        if (s) break;
        /* the document table is sized by these counts: they must fit in the shard's actual
         * bytes before anything is allocated for them (a tiny meta.json must not ask for GBs) */
        char spath[4096];
        struct stat ssb;
        if (!moec_path_join(spath, sizeof spath, r->dir, f->valuestring)) {
            s = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s/%s", r->dir, f->valuestring);
            break;
        }
        if (stat(spath, &ssb) != 0) {
            s = moec_err(err, MOEC_ERR_IO, "%s: cannot open %s: %s", where, spath, strerror(errno));
            break;
        }
        const double need = MOEC_DATA_FIXED_HEADER + (double)MOEC_DATA_DOC_ENTRY * (double)nd + 2.0 * (double)ex[i].n_tokens;
        if (!S_ISREG(ssb.st_mode) || need > (double)ssb.st_size) {
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: says %llu documents / %llu tokens, more than %s (%lld bytes) can hold (truncated shard, or meta.json is wrong)",
                         where, (unsigned long long)nd, (unsigned long long)ex[i].n_tokens, spath, (long long)ssb.st_size);
            break;
        }
        snprintf(sd->shards[i].file, sizeof sd->shards[i].file, "%s", f->valuestring);
        ex[i].n_docs = (uint32_t)nd;
        sd->shards[i].start = total_tok;
        total_docs += nd;
        total_tok += ex[i].n_tokens;
        if (total_docs > UINT32_MAX)
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: more than %u documents in %s", mpath, UINT32_MAX, split_name(sp));
    }
    if (!s) {
        sd->n_docs = (uint32_t)total_docs;
        sd->n_tokens = total_tok;
        sd->doc_first = malloc(((size_t)sd->n_docs + 1) * sizeof *sd->doc_first);
        sd->doc_domain = malloc(((size_t)sd->n_docs + 1) * sizeof *sd->doc_domain);
        if (!sd->doc_first || !sd->doc_domain) s = moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    uint32_t seen = 0;
    for (int i = 0; i < n && !s; i++)
        s = shard_open(r, sd, i, sp, &ex[i], &seen, err);
    free(ex);
    if (s) return s;
    sd->doc_first[sd->n_docs] = sd->n_tokens;
    return split_index(r, sd, err);
}

moec_status moec_data_open(moec_data_reader **out, const char *dir, moec_error *err) {
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) != 0)
        return moec_err(err, MOEC_ERR_IO, "data directory %s: %s (make one with moec data)", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return moec_err(err, MOEC_ERR_IO, "data path %s is not a directory", dir);
    char mpath[4096];
    if (!moec_path_join(mpath, sizeof mpath, dir, MOEC_DATA_META))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir);
    if (stat(mpath, &st) != 0)
        return moec_err(err, MOEC_ERR_IO, "%s is not a moec data directory (no meta.json; make one with moec data)",
                        dir);
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > META_MAX_BYTES)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: %lld bytes, larger than a meta.json can be", mpath,
                        (long long)st.st_size);
    char *text = NULL;
    size_t len = 0;
    moec_status s = moec_file_read_all(mpath, &text, &len, err);
    if (s) return s;
    moec_data_reader *r = calloc(1, sizeof *r);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!r)
        s = moec_err(err, MOEC_ERR_OOM, "out of memory");
    else if (!root)
        s = moec_err(err, MOEC_ERR_FORMAT, "%s: not valid JSON", mpath);
    else
        s = moec_json_check(root, mpath, err);
    if (!s) {
        r->id = moec_fnv1a64(text, len, MOEC_FNV1A64_INIT);
        r->dir = strdup(dir);
        if (!r->dir) s = moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    free(text);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokenizer");
    const cJSON *doms = cJSON_GetObjectItemCaseSensitive(root, "domains");
    uint64_t version = 0, v = 0;
    if (!s && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "moec-tokens")))
        s = moec_err(err, MOEC_ERR_FORMAT, "%s: \"format\" is not \"moec-tokens\"", mpath);
    if (!s) s = meta_uint(root, "version", 1e9, &version, mpath, err);
    if (!s && version != MOEC_DATA_VERSION)
        s = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: data format version %llu, this moec reads version %d", mpath,
                     (unsigned long long)version, MOEC_DATA_VERSION);
    if (!s && !cJSON_IsObject(tok)) s = moec_err(err, MOEC_ERR_FORMAT, "%s: \"tokenizer\" must be an object", mpath);
    if (!s) s = meta_hex(tok, "fingerprint", "fnv1a64:", &r->fingerprint, mpath, err);
    if (!s) s = meta_uint(tok, "n_vocab", (double)UINT32_MAX, &v, mpath, err);
    if (!s) {
        r->n_vocab = (uint32_t)v;
        s = meta_uint(tok, "eot_id", (double)UINT32_MAX, &v, mpath, err);
    }
    if (!s) {
        r->eot_id = (uint32_t)v;
        if (r->n_vocab < 1 || r->eot_id >= r->n_vocab)
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: end-of-text id %u outside the vocabulary (%u ids)", mpath,
                         r->eot_id, r->n_vocab);
    }
    if (!s) {
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(tok, "path");
        r->tokenizer_path = strdup(cJSON_IsString(tp) ? tp->valuestring : "");
        if (!r->tokenizer_path) s = moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    if (!s &&
        (!cJSON_IsArray(doms) || cJSON_GetArraySize(doms) < 1 || cJSON_GetArraySize(doms) > MOEC_DATA_MAX_DOMAINS))
        s = moec_err(err, MOEC_ERR_FORMAT, "%s: \"domains\" must be an array of 1..%d domains", mpath,
                     MOEC_DATA_MAX_DOMAINS);
    if (!s) {
        r->n_domains = cJSON_GetArraySize(doms);
        r->domain_names = calloc((size_t)r->n_domains, sizeof *r->domain_names);
        if (!r->domain_names) s = moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    for (int32_t d = 0; !s && d < r->n_domains; d++) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(doms, d), "name");
        if (!cJSON_IsString(nm) || !valid_domain_name(nm->valuestring))
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: domains[%d].name must be 1..%d bytes", mpath, d,
                         MOEC_DATA_DOMAIN_NAME_MAX);
        else
            memcpy(r->domain_names[d], nm->valuestring, strlen(nm->valuestring));
    }
    if (!s) s = open_split(r, root, MOEC_DATA_TRAIN, mpath, err);
    if (!s) s = open_split(r, root, MOEC_DATA_VAL, mpath, err);
    static const char *const count_keys[4] = {"train_docs", "train_tokens", "val_docs", "val_tokens"};
    for (int32_t d = 0; !s && d < r->n_domains; d++) { /* the per-domain counts must match too */
        const cJSON *dj = cJSON_GetArrayItem(doms, d);
        for (int k = 0; !s && k < 4; k++) {
            moec_data_split sp = k < 2 ? MOEC_DATA_TRAIN : MOEC_DATA_VAL;
            uint64_t have = k % 2 ? moec_data_domain_n_tokens(r, sp, d) : moec_data_domain_n_docs(r, sp, d);
            s = meta_uint(dj, count_keys[k], JSON_INT_MAX, &v, mpath, err);
            if (!s && v != have)
                s = moec_err(err, MOEC_ERR_FORMAT, "%s: domain '%s' has %s %llu, the shards hold %llu", mpath,
                             r->domain_names[d], count_keys[k], (unsigned long long)v, (unsigned long long)have);
        }
    }
    cJSON_Delete(root);
    if (s) {
        moec_data_close(r);
        return s;
    }
    *out = r;
    return MOEC_OK;
}

moec_status moec_data_check_tokenizer(const moec_data_reader *r, const char *tokenizer_path, moec_error *err) {
    uint64_t fp = 0;
    moec_status s = moec_data_fingerprint_file(tokenizer_path, &fp, err);
    if (s) return s;
    if (fp != r->fingerprint)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "data directory %s was made with another tokenizer (fnv1a64:%016llx, from %s), not %s "
                        "(fnv1a64:%016llx); re-run moec data with this tokenizer",
                        r->dir, (unsigned long long)r->fingerprint, r->tokenizer_path, tokenizer_path,
                        (unsigned long long)fp);
    return MOEC_OK;
}

moec_status moec_data_check_vocab(const moec_data_reader *r, int64_t n_vocab_model, moec_error *err) {
    if ((int64_t)r->n_vocab > n_vocab_model)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "data directory %s has token ids up to %u (tokenizer vocabulary %u), the model has only "
                        "%lld embedding rows",
                        r->dir, r->n_vocab - 1, r->n_vocab, (long long)n_vocab_model);
    return MOEC_OK;
}

/* ---------------------------------------------------------------- reading tokens */

/* Copies stream tokens [pos, pos + n) of a split; the caller has checked the range. */
static void stream_copy(const split_data *sd, uint64_t pos, uint64_t n, int32_t *out) {
    int lo = 0, hi = sd->n_shards - 1; /* last shard with start <= pos */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (sd->shards[mid].start <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int i = lo; n > 0; i++) {
        MOEC_ASSERT(i < sd->n_shards);
        const shard *sh = &sd->shards[i];
        if (pos >= sh->start + sh->n_tokens) continue; /* empty shards */
        uint64_t a = pos - sh->start, k = sh->start + sh->n_tokens - pos;
        if (k > n) k = n;
        if (sh->dt == 2)
            for (uint64_t j = 0; j < k; j++) {
                const uint8_t *p = sh->tok + 2 * (a + j);
                out[j] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8);
            }
        else
            for (uint64_t j = 0; j < k; j++)
                out[j] = (int32_t)get32(sh->tok + 4 * (a + j));
        out += k;
        pos += k;
        n -= k;
    }
}

moec_status moec_data_read(const moec_data_reader *r, moec_data_split s, uint64_t pos, uint64_t n, int32_t *out,
                           moec_error *err) {
    const split_data *sd = get_split(r, s);
    if (pos > sd->n_tokens || n > sd->n_tokens - pos)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "tokens [%llu, %llu) are outside %s (%llu tokens)",
                        (unsigned long long)pos, (unsigned long long)(pos + n), split_name(s),
                        (unsigned long long)sd->n_tokens);
    stream_copy(sd, pos, n, out);
    return MOEC_OK;
}

/* ---------------------------------------------------------------- training windows */

/* A bijection of [0, n): a balanced Feistel network on the smallest even number of bits that
 * covers n, with cycle walking (re-applying until the value lands below n). */
static uint64_t permute(uint64_t j, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 0;
    while (bits < 64 && (n - 1) >> bits)
        bits++;
    int half = (bits + 1) / 2;
    uint64_t mask = half >= 64 ? ~0ull : (1ull << half) - 1;
    uint64_t x = j;
    do {
        uint64_t L = x >> half, R = x & mask;
        for (uint64_t round = 0; round < 4; round++) {
            uint64_t f = moec_mix64(R ^ key ^ (round + 1) * 0x9e3779b97f4a7c15ull) & mask;
            uint64_t t = R;
            R = L ^ f;
            L = t;
        }
        x = L << half | R;
    } while (x >= n);
    return x;
}

uint64_t moec_data_n_windows(const moec_data_reader *r, moec_data_split s, int32_t S) {
    const split_data *sd = get_split(r, s);
    if (S < 1 || sd->n_tokens < (uint64_t)S + 1) return 0;
    return (sd->n_tokens - 1) / (uint64_t)S;
}

static uint64_t window_start(uint64_t N, uint64_t W, uint64_t S, moec_data_order order, uint64_t seed, uint64_t c) {
    uint64_t e = c / W, j = c % W;
    if (order == MOEC_DATA_SEQUENTIAL) return j * S;
    uint64_t key = moec_mix64(seed ^ moec_mix64(e + 0x9e3779b97f4a7c15ull));
    uint64_t slack = (N - 1) - W * S;
    uint64_t off = slack ? moec_mix64(key ^ 0x5851f42d4c957f2dull) % (slack + 1) : 0;
    return off + permute(j, W, key) * S;
}

moec_status moec_data_window(const moec_data_reader *r, moec_data_split s, int32_t S, moec_data_order order,
                             uint64_t seed, uint64_t cursor, int32_t *tokens, moec_error *err) {
    const split_data *sd = get_split(r, s);
    if (order != MOEC_DATA_SHUFFLE && order != MOEC_DATA_SEQUENTIAL)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "unknown window order %d", (int)order);
    uint64_t W = moec_data_n_windows(r, s, S);
    if (W == 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG,
                        "sequence length %d needs at least %lld tokens, the %s split has %llu", S, (long long)S + 1,
                        split_name(s), (unsigned long long)sd->n_tokens);
    uint64_t start = window_start(sd->n_tokens, W, (uint64_t)S, order, seed, cursor);
    MOEC_ASSERT(start + (uint64_t)S < sd->n_tokens);
    stream_copy(sd, start, (uint64_t)S + 1, tokens);
    return MOEC_OK;
}

moec_status moec_data_batch(const moec_data_reader *r, moec_data_split s, int32_t B, int32_t S, moec_data_order order,
                            uint64_t seed, int32_t *tokens, uint64_t *cursor, moec_error *err) {
    if (B < 1) return moec_err(err, MOEC_ERR_INVALID_ARG, "batch size %d must be >= 1", B);
    if (S < 1) return moec_err(err, MOEC_ERR_INVALID_ARG, "sequence length %d must be >= 1", S);
    for (int32_t b = 0; b < B; b++) {
        moec_status st =
            moec_data_window(r, s, S, order, seed, *cursor + (uint64_t)b, tokens + (size_t)b * ((size_t)S + 1), err);
        if (st) return st;
    }
    *cursor += (uint64_t)B;
    return MOEC_OK;
}

/* ---------------------------------------------------------------- evaluation windows */

/* Length M of domain d's stream (d = -1: the split's stream). */
static uint64_t eval_len(const split_data *sd, int32_t d) {
    if (d < 0) return sd->n_tokens;
    uint32_t n = sd->dom_off[d + 1] - sd->dom_off[d];
    return sd->dom_cum[sd->dom_off[d] + (uint32_t)d + n];
}

uint64_t moec_data_eval_n_windows(const moec_data_reader *r, moec_data_split s, int32_t domain, int32_t S) {
    const split_data *sd = get_split(r, s);
    if (S < 1 || domain < -1 || domain >= r->n_domains) return 0;
    uint64_t M = eval_len(sd, domain);
    return M < 2 ? 0 : (M - 2) / (uint64_t)S + 1;
}

moec_status moec_data_eval_window(const moec_data_reader *r, moec_data_split s, int32_t domain, int32_t S,
                                  uint64_t index, int32_t *tokens, int32_t *n_valid, moec_error *err) {
    const split_data *sd = get_split(r, s);
    if (S < 1) return moec_err(err, MOEC_ERR_INVALID_ARG, "sequence length %d must be >= 1", S);
    if (domain < -1 || domain >= r->n_domains)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "domain %d is out of range (%d domains)", domain, r->n_domains);
    uint64_t nw = moec_data_eval_n_windows(r, s, domain, S);
    if (index >= nw)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "evaluation window %llu is out of range (%llu)",
                        (unsigned long long)index, (unsigned long long)nw);
    uint64_t M = eval_len(sd, domain), p = index * (uint64_t)S;
    uint64_t n = M - p < (uint64_t)S + 1 ? M - p : (uint64_t)S + 1;
    if (domain < 0) {
        stream_copy(sd, p, n, tokens);
    } else {
        const uint32_t *docs = sd->dom_docs + sd->dom_off[domain];
        const uint64_t *cum = sd->dom_cum + sd->dom_off[domain] + (uint32_t)domain;
        uint32_t lo = 0, hi = sd->dom_off[domain + 1] - sd->dom_off[domain] - 1; /* last doc with cum <= p */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo + 1) / 2;
            if (cum[mid] <= p)
                lo = mid;
            else
                hi = mid - 1;
        }
        uint64_t done = 0;
        for (uint32_t k = lo; done < n; k++) {
            uint64_t in_doc = p + done - cum[k], avail = cum[k + 1] - cum[k] - in_doc;
            uint64_t take = n - done < avail ? n - done : avail;
            stream_copy(sd, sd->doc_first[docs[k]] + in_doc, take, tokens + done);
            done += take;
        }
    }
    for (uint64_t i = n; i < (uint64_t)S + 1; i++)
        tokens[i] = (int32_t)r->eot_id;
    *n_valid = (int32_t)n;
    return MOEC_OK;
}
