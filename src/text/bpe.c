/* bpe.c — BPE model: vocabulary and merges from tokenizer.json, and the merge loop of HF
 * `tokenizers` (see bpe.h). Results must equal HF's id for id, so the loop reproduces its
 * order exactly: lowest rank first, then leftmost position, skipping stale heap entries.
 * Not a trainer. The model is read-only after parsing, so encodes may run concurrently. */
#include "text/bpe.h"

#include "core/error.h"
#include "text/hashmap.h"
#include "text/jsonutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ID ((int64_t)1 << 24) /* ids are dense in practice; this bounds id -> token tables */

struct tk_bpe {
    tk_strmap vocab;   /* token -> id */
    int32_t *id_entry; /* id -> vocab entry index, -1 for unused ids */
    int32_t n_ids;
    tk_u64map merges;  /* (left id << 32 | right id) -> (rank << 32 | merged id) */
    char *unk, *prefix, *suffix; /* NULL when unset */
    size_t unk_len, prefix_len, suffix_len;
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256]; /* byte_fallback: id of "<0xHH>", -1 if absent */
};

void tk_bpe_free(tk_bpe *b) {
    if (!b) return;
    tk_strmap_free(&b->vocab);
    tk_u64map_free(&b->merges);
    free(b->id_entry);
    free(b->unk);
    free(b->prefix);
    free(b->suffix);
    free(b);
}

int32_t tk_bpe_token_id(const tk_bpe *b, const char *s, size_t n) {
    int32_t id;
    return tk_strmap_get(&b->vocab, s, n, &id) ? id : -1;
}

const char *tk_bpe_token_str(const tk_bpe *b, int32_t id, size_t *len) {
    if (id < 0 || id >= b->n_ids || b->id_entry[id] < 0) return NULL;
    return tk_strmap_key(&b->vocab, (size_t)b->id_entry[id], len);
}

int32_t tk_bpe_n_ids(const tk_bpe *b) { return b->n_ids; }

/* ---------------------------------------------------------------- parsing */

static moec_status opt_string(const cJSON *m, const char *key, char **out, size_t *len,
                              const char *where, moec_error *err) {
    const char *s;
    moec_status st = tk_json_str(m, key, 0, &s, len, where, err);
    if (st || !s) return st;
    *out = malloc(*len + 1);
    if (!*out) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    memcpy(*out, s, *len + 1);
    return MOEC_OK;
}

static moec_status parse_vocab(tk_bpe *b, const cJSON *vocab, const char *where, moec_error *err) {
    if (!cJSON_IsObject(vocab))
        return moec_err(err, MOEC_ERR_FORMAT, "%s.vocab: expected an object", where);
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        double d = it->valuedouble;
        if (!it->string || !cJSON_IsNumber(it) || !isfinite(d) || d < 0 || d >= (double)MAX_ID ||
            d != floor(d))
            return moec_err(err, MOEC_ERR_FORMAT,
                            "%s.vocab['%.60s']: expected an integer id in [0, %lld)", where,
                            it->string ? it->string : "?", (long long)MAX_ID);
        size_t n = strlen(it->string);
        if (tk_utf8_validate(it->string, n) != n)
            return moec_err(err, MOEC_ERR_FORMAT, "%s.vocab: a token is not valid UTF-8", where);
        int32_t id = (int32_t)d;
        if (tk_strmap_put(&b->vocab, it->string, n, id) < 0)
            return moec_err(err, MOEC_ERR_OOM, "%s.vocab: out of memory", where);
        if (id > max_id) max_id = id;
    }
    b->n_ids = (int32_t)(max_id + 1);
    b->id_entry = malloc((size_t)(b->n_ids ? b->n_ids : 1) * sizeof *b->id_entry);
    if (!b->id_entry) return moec_err(err, MOEC_ERR_OOM, "%s.vocab: out of memory", where);
    for (int32_t i = 0; i < b->n_ids; i++) b->id_entry[i] = -1;
    for (size_t e = 0; e < b->vocab.count; e++) b->id_entry[b->vocab.entries[e].val] = (int32_t)e;
    return MOEC_OK;
}

static moec_status parse_merges(tk_bpe *b, const cJSON *merges, const char *where, moec_error *err) {
    if (!cJSON_IsArray(merges))
        return moec_err(err, MOEC_ERR_FORMAT, "%s.merges: expected an array", where);
    tk_buf tmp = {0};
    moec_status st = MOEC_OK;
    uint32_t rank = 0;
    int form = 0; /* 1: "a b" strings, 2: ["a", "b"] pairs; HF rejects a mix of both */
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *bs;
        size_t an, bn;
        char w[320];
        snprintf(w, sizeof w, "%s.merges[%u]", where, rank);
        if (cJSON_IsString(it)) {
            if (form == 2) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: mixes \"a b\" strings and [a, b] pairs", w);
                break;
            }
            form = 1;
            const char *s;
            size_t n;
            if ((st = tk_json_strval(it, &s, &n, w, err))) break;
            const char *sp = memchr(s, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: expected \"left right\" (one space), got '%.60s'",
                              w, s);
                break;
            }
            a = s, an = (size_t)(sp - s), bs = sp + 1, bn = n - an - 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2) {
            if (form == 1) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: mixes \"a b\" strings and [a, b] pairs", w);
                break;
            }
            form = 2;
            if ((st = tk_json_strval(cJSON_GetArrayItem(it, 0), &a, &an, w, err))) break;
            if ((st = tk_json_strval(cJSON_GetArrayItem(it, 1), &bs, &bn, w, err))) break;
        } else {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: expected \"left right\" or [\"left\", \"right\"]", w);
            break;
        }
        int32_t ia = tk_bpe_token_id(b, a, an), ib = tk_bpe_token_id(b, bs, bn);
        if (ia < 0 || ib < 0) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: token '%.*s' is not in the vocabulary", w,
                          (int)(ia < 0 ? (an > 60 ? 60 : an) : (bn > 60 ? 60 : bn)), ia < 0 ? a : bs);
            break;
        }
        /* the merged token drops the right side's continuing_subword_prefix */
        size_t skip = b->prefix_len <= bn ? b->prefix_len : bn;
        tmp.n = 0;
        if (!tk_buf_put(&tmp, a, an) || !tk_buf_put(&tmp, bs + skip, bn - skip)) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", w);
            break;
        }
        int32_t im = tk_bpe_token_id(b, tmp.p, tmp.n);
        if (im < 0) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: merged token '%.60s' is not in the vocabulary", w,
                          tmp.p);
            break;
        }
        /* a repeated pair keeps its last rank, as HF's HashMap collect does */
        if (!tk_u64map_put(&b->merges, (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib,
                           (uint64_t)rank << 32 | (uint32_t)im)) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", w);
            break;
        }
        if (rank == UINT32_MAX) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: too many merges", where);
            break;
        }
        rank++;
    }
    tk_buf_free(&tmp);
    return st;
}

moec_status tk_bpe_parse(tk_bpe **out, const cJSON *m, const char *where, moec_error *err) {
    *out = NULL;
    if (!cJSON_IsObject(m)) return moec_err(err, MOEC_ERR_FORMAT, "%s: expected an object", where);
    const char *type;
    size_t tn;
    moec_status st = tk_json_str(m, "type", 0, &type, &tn, where, err);
    if (st) return st;
    if (type && strcmp(type, "BPE"))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: model type '%s' is not supported (only BPE)", where, type);
    if (!type && !tk_json_get(m, "merges"))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: model without 'type' or 'merges' is not supported (only BPE)", where);
    const cJSON *dropout = tk_json_get(m, "dropout");
    if (dropout && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s.dropout: BPE dropout is not supported (must be null)", where);
    tk_bpe *b = calloc(1, sizeof *b);
    if (!b) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    tk_strmap_init(&b->vocab);
    tk_u64map_init(&b->merges);
    if ((st = opt_string(m, "unk_token", &b->unk, &b->unk_len, where, err))) goto fail;
    if ((st = opt_string(m, "continuing_subword_prefix", &b->prefix, &b->prefix_len, where, err)))
        goto fail;
    if ((st = opt_string(m, "end_of_word_suffix", &b->suffix, &b->suffix_len, where, err))) goto fail;
    if ((st = tk_json_bool(m, "fuse_unk", 0, &b->fuse_unk, where, err))) goto fail;
    if ((st = tk_json_bool(m, "byte_fallback", 0, &b->byte_fallback, where, err))) goto fail;
    if ((st = tk_json_bool(m, "ignore_merges", 0, &b->ignore_merges, where, err))) goto fail;
    const cJSON *vocab = tk_json_get(m, "vocab");
    const cJSON *merges = tk_json_get(m, "merges");
    if (!vocab) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'vocab'", where);
        goto fail;
    }
    if (!merges) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'merges'", where);
        goto fail;
    }
    if ((st = parse_vocab(b, vocab, where, err))) goto fail;
    if ((st = parse_merges(b, merges, where, err))) goto fail;
    for (int i = 0; i < 256; i++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", i);
        b->byte_id[i] = tk_bpe_token_id(b, code, 6);
    }
    *out = b;
    return MOEC_OK;
fail:
    tk_bpe_free(b);
    return st;
}

/* ---------------------------------------------------------------- merging */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1 = none */
    uint32_t len;       /* bytes of the word covered; 0 = merged away */
} symbol;

typedef struct {
    uint32_t rank, pos;
    int32_t new_id;
} merge;

static int merge_less(const merge *a, const merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge *h, size_t *n, merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&m, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static merge heap_pop(merge *h, size_t *n) {
    merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(&h[c + 1], &h[c])) c++;
        if (!merge_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int find_merge(const tk_bpe *b, int32_t l, int32_t r, uint32_t *rank, int32_t *new_id) {
    uint64_t v;
    if (!tk_u64map_get(&b->merges, (uint64_t)(uint32_t)l << 32 | (uint32_t)r, &v)) return 0;
    *rank = (uint32_t)(v >> 32);
    *new_id = (int32_t)(uint32_t)v;
    return 1;
}

void tk_bpe_scratch_free(tk_bpe_scratch *sc) {
    if (!sc) return;
    free(sc->sym);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    if (nc > SIZE_MAX / elem) return 0;
    void *np = realloc(*p, nc * elem);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

moec_status tk_bpe_encode_word(const tk_bpe *b, tk_bpe_scratch *sc, const char *w, size_t n,
                               tk_ivec *out, moec_error *err) {
    if (n == 0) return MOEC_OK;
    if (n > (size_t)INT32_MAX / 2) return moec_err(err, MOEC_ERR_INVALID_ARG, "bpe: word too long");
    if (b->ignore_merges) {
        int32_t id = tk_bpe_token_id(b, w, n);
        if (id >= 0) return tk_ivec_push(out, id) ? MOEC_OK : moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
    }
    /* at most n symbols from characters, each byte-fallback byte one symbol, plus a pending unk */
    if (!grow(&sc->sym, &sc->sym_cap, n + 1, sizeof(symbol)))
        return moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
    symbol *sym = sc->sym;
    size_t ns = 0;
    tk_buf key = {0};
    int32_t unk_id = -1;
    uint32_t unk_len = 0; /* pending unk: 0 = none */
    moec_status st = MOEC_OK;

#define ADD_SYMBOL(ID, LEN)                                                                   \
    do {                                                                                      \
        sym[ns].id = (ID);                                                                    \
        sym[ns].prev = (int32_t)ns - 1;                                                       \
        sym[ns].next = -1;                                                                    \
        sym[ns].len = (LEN);                                                                  \
        if (ns) sym[ns - 1].next = (int32_t)ns;                                               \
        ns++;                                                                                 \
    } while (0)

    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = tk_utf8_next(w + i, n - i, &cp);
        int last = i + k == n;
        const char *s = w + i;
        size_t sn = k;
        if ((b->prefix && i > 0) || (b->suffix && last)) {
            key.n = 0;
            if ((b->prefix && i > 0 && !tk_buf_put(&key, b->prefix, b->prefix_len)) ||
                !tk_buf_put(&key, w + i, k) ||
                (b->suffix && last && !tk_buf_put(&key, b->suffix, b->suffix_len))) {
                st = moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
                break;
            }
            s = key.p, sn = key.n;
        }
        int32_t id = tk_bpe_token_id(b, s, sn);
        i += k;
        if (id >= 0) {
            if (unk_len) {
                ADD_SYMBOL(unk_id, unk_len);
                unk_len = 0;
            }
            ADD_SYMBOL(id, (uint32_t)k);
            continue;
        }
        if (b->byte_fallback) {
            /* every byte of the looked-up string needs its <0xHH> token; HF leaves a pending
             * unk in place here, so it lands after these bytes */
            int all = 1;
            for (size_t j = 0; j < sn; j++) all &= b->byte_id[(unsigned char)s[j]] >= 0;
            if (all) {
                /* with a prefix or suffix the bytes outnumber the characters: keep room for
                 * these bytes plus one symbol per remaining byte and a pending unk */
                if (!grow(&sc->sym, &sc->sym_cap, ns + sn + (n - i) + 2, sizeof(symbol))) {
                    st = moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
                    break;
                }
                sym = sc->sym;
                for (size_t j = 0; j < sn; j++) ADD_SYMBOL(b->byte_id[(unsigned char)s[j]], 1);
                continue;
            }
        }
        if (b->unk) {
            int32_t uid = tk_bpe_token_id(b, b->unk, b->unk_len);
            if (uid < 0) {
                st = moec_err(err, MOEC_ERR_FORMAT,
                              "tokenizer.json: model.unk_token '%.60s' is not in the vocabulary", b->unk);
                break;
            }
            if (unk_len && b->fuse_unk) {
                unk_len += (uint32_t)k;
            } else {
                if (unk_len) ADD_SYMBOL(unk_id, unk_len);
                unk_id = uid;
                unk_len = (uint32_t)k;
            }
        }
        /* no unk token: the character is dropped, as HF does */
    }
    if (!st && unk_len) ADD_SYMBOL(unk_id, unk_len);
#undef ADD_SYMBOL
    tk_buf_free(&key);
    if (st) return st;

    if (!grow(&sc->heap, &sc->heap_cap, 2 * ns + 2, sizeof(merge)))
        return moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
    merge *heap = sc->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        merge m = {0, (uint32_t)i, 0};
        if (find_merge(b, sym[i].id, sym[i + 1].id, &m.rank, &m.new_id)) heap_push(heap, &nh, m);
    }
    while (nh) {
        merge top = heap_pop(heap, &nh);
        symbol *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        symbol *right = &sym[cur->next];
        uint32_t rank;
        int32_t nid;
        if (!find_merge(b, cur->id, right->id, &rank, &nid) || nid != top.new_id) continue; /* stale */
        cur->id = top.new_id;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0) sym[cur->next].prev = (int32_t)top.pos;
        /* each merge removes a symbol and adds at most two entries: the heap stays within
         * 2 * ns entries, which the scratch was sized for */
        merge m;
        if (cur->prev >= 0 && find_merge(b, sym[cur->prev].id, cur->id, &m.rank, &m.new_id)) {
            m.pos = (uint32_t)cur->prev;
            heap_push(heap, &nh, m);
        }
        if (cur->next >= 0 && find_merge(b, cur->id, sym[cur->next].id, &m.rank, &m.new_id)) {
            m.pos = top.pos;
            heap_push(heap, &nh, m);
        }
    }
    for (size_t i = 0; i < ns; i++)
        if (sym[i].len && !tk_ivec_push(out, sym[i].id)) return moec_err(err, MOEC_ERR_OOM, "bpe: out of memory");
    return MOEC_OK;
}
