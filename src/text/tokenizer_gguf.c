/* tokenizer_gguf.c — see tokenizer_gguf.h. */
#include "text/tokenizer_gguf.h"

#include "core/error.h"
#include "io/gguf.h"
#include "text/hashmap.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* llama.cpp pre-tokenizer names (llama-vocab.cpp) → the tokenizer.json regex they stand for;
 * NULL regex: GPT-2's, i.e. a plain ByteLevel pre-tokenizer with use_regex. */
static const struct {
    const char *name, *regex;
} pres[] = {
    {"gpt-2", NULL},
    {"olmo", NULL},
    {"phi-2", NULL},
    {"qwen2", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"deepseek-r1-qwen", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"llama3", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

/* Building the tokenizer.json tree: every add and push is checked. A failed one (out of memory)
 * frees the orphaned item and sets tl_oom, which tk_gguf_tokenizer_json tests once before it
 * prints: a tokenizer with a merge or a token lost to OOM would load and tokenize wrongly.
 * Thread-local so that concurrent model opens do not see each other's failures. */
static _Thread_local int tl_oom;

static int add(cJSON *parent, const char *key, cJSON *item) {
    if (!parent || !item || !cJSON_AddItemToObject(parent, key, item)) {
        cJSON_Delete(item);
        tl_oom = 1;
        return 0;
    }
    return 1;
}

static int push(cJSON *arr, cJSON *item) {
    if (!arr || !item || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        tl_oom = 1;
        return 0;
    }
    return 1;
}

/* A new object under parent[key]; NULL (and nothing leaked) on failure. */
static cJSON *obj(cJSON *parent, const char *key) {
    cJSON *o = cJSON_CreateObject();
    return add(parent, key, o) ? o : NULL;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o) add(o, "type", cJSON_CreateString(type));
    return o;
}

static cJSON *bytelevel(int use_regex) {
    cJSON *o = typed("ByteLevel");
    if (!o) return NULL;
    add(o, "add_prefix_space", cJSON_CreateBool(0));
    add(o, "trim_offsets", cJSON_CreateBool(0));
    add(o, "use_regex", cJSON_CreateBool(use_regex));
    return o;
}

static cJSON *replace(const char *from, const char *to) {
    cJSON *o = typed("Replace");
    cJSON *p = obj(o, "pattern");
    if (!p) {
        cJSON_Delete(o);
        return NULL;
    }
    add(p, "String", cJSON_CreateString(from));
    add(o, "content", cJSON_CreateString(to));
    return o;
}

static char *dupn(const moec_gguf_str *s) {
    char *d = malloc(s->len + 1);
    if (d) {
        memcpy(d, s->s, s->len);
        d[s->len] = 0;
    }
    return d;
}

typedef struct {
    int32_t a, b, merged;
    float score;
} spm_merge;

static int spm_cmp(const void *x, const void *y) {
    const spm_merge *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1; /* higher score merges first */
    if (p->merged != q->merged) return p->merged < q->merged ? -1 : 1;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* SentencePiece BPE: every split of a normal token into two tokens is a merge, ranked by the
 * merged token's score (as Hugging Face's SentencePiece converter does). */
static moec_status spm_merges(const moec_gguf_kv *toks, const moec_gguf_kv *scores, const moec_gguf_kv *types,
                              cJSON *merges, const char *path, moec_error *err) {
    tk_strmap map;
    tk_strmap_init(&map);
    spm_merge *m = NULL;
    size_t n = 0, cap = 0;
    moec_status st = MOEC_OK;
    for (uint64_t i = 0; i < toks->n && !st; i++)
        if (tk_strmap_put(&map, toks->strs[i].s, toks->strs[i].len, (int32_t)i) < 0)
            st = moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (uint64_t i = 0; i < toks->n && !st; i++) {
        if (types && moec_gguf_arr_i64(types, i) != TT_NORMAL) continue;
        const moec_gguf_str *t = &toks->strs[i];
        for (size_t cut = 1; cut < t->len && !st; cut++) {
            int32_t a, b;
            if (!tk_strmap_get(&map, t->s, cut, &a) || !tk_strmap_get(&map, t->s + cut, t->len - cut, &b)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                spm_merge *nm = realloc(m, cap * sizeof *nm);
                if (!nm) {
                    st = moec_err(err, MOEC_ERR_OOM, "out of memory");
                    break;
                }
                m = nm;
            }
            m[n++] = (spm_merge){a, b, (int32_t)i, scores ? (float)moec_gguf_arr_f64(scores, i) : -(float)i};
        }
    }
    if (!st) qsort(m, n, sizeof *m, spm_cmp);
    for (size_t i = 0; i < n && !st; i++) {
        cJSON *pair = cJSON_CreateArray();
        char *a = dupn(&toks->strs[m[i].a]), *b = dupn(&toks->strs[m[i].b]);
        if (!pair || !a || !b) st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        else {
            push(pair, cJSON_CreateString(a));
            push(pair, cJSON_CreateString(b));
            push(merges, pair);
            pair = NULL;
        }
        cJSON_Delete(pair);
        free(a);
        free(b);
    }
    (void)path;
    free(m);
    tk_strmap_free(&map);
    return st;
}

moec_status tk_gguf_tokenizer_json(const char *path, char **json, size_t *len, moec_error *err) {
    moec_gguf g;
    moec_status st = moec_gguf_open(&g, path, err);
    if (st) return st;
    tl_oom = 0;
    cJSON *root = cJSON_CreateObject();
    char *model_name = NULL;
    moec_gguf_str mstr, pstr;
    const moec_gguf_kv *toks, *types, *merges, *scores;
    if ((st = moec_gguf_get_str(&g, "tokenizer.ggml.model", 0, &mstr, err))) goto done;
    if ((st = moec_gguf_get_str(&g, "tokenizer.ggml.pre", 1, &pstr, err))) goto done;
    if ((st = moec_gguf_get_arr(&g, "tokenizer.ggml.tokens", 0, MOEC_GGUF_STRING, &toks, err))) goto done;
    if ((st = moec_gguf_get_arr(&g, "tokenizer.ggml.token_type", 1, MOEC_GGUF_INT32, &types, err))) goto done;
    if ((st = moec_gguf_get_arr(&g, "tokenizer.ggml.merges", 1, MOEC_GGUF_STRING, &merges, err))) goto done;
    if ((st = moec_gguf_get_arr(&g, "tokenizer.ggml.scores", 1, MOEC_GGUF_FLOAT32, &scores, err))) goto done;
    if (toks->n == 0 || toks->n > (1u << 24)) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)toks->n);
        goto done;
    }
    if ((types && types->n != toks->n) || (scores && scores->n != toks->n)) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: tokenizer.ggml.token_type / scores length differs from tokens (%llu)", path,
                      (unsigned long long)toks->n);
        goto done;
    }
    model_name = dupn(&mstr);
    if (!root || !model_name) goto oom;
    const int is_gpt2 = !strcmp(model_name, "gpt2"), is_spm = !strcmp(model_name, "llama");
    if (!is_gpt2 && !is_spm) {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%s' is not supported (moec reads gpt2 and llama)",
                      path, model_name);
        goto done;
    }
    cJSON *model = obj(root, "model"), *vocab = obj(model, "vocab"), *added = cJSON_CreateArray();
    if (!model || !vocab || !added) {
        cJSON_Delete(added);
        goto oom;
    }
    if (!add(root, "added_tokens", added)) goto oom; /* freed by add: never fill it then */
    add(model, "type", cJSON_CreateString("BPE"));
    add(model, "byte_fallback", cJSON_CreateBool(is_spm));
    add(model, "fuse_unk", cJSON_CreateBool(is_spm));
    int64_t unk = -1;
    if ((st = moec_gguf_get_int(&g, "tokenizer.ggml.unknown_token_id", 1, -1, -1, (int64_t)toks->n - 1, &unk, err)))
        goto done;
    for (uint64_t i = 0; i < toks->n; i++) {
        char *t = dupn(&toks->strs[i]);
        if (!t) goto oom;
        const int64_t ty = types ? moec_gguf_arr_i64(types, i) : TT_NORMAL;
        if (ty == TT_UNUSED) { /* padding rows ([PADn]): no token, as in the tokenizer.json they came from */
            free(t);
            continue;
        }
        if (!cJSON_GetObjectItemCaseSensitive(vocab, t)) /* first id wins for a duplicated string */
            add(vocab, t, cJSON_CreateNumber((double)i));
        if (ty == TT_CONTROL || ty == TT_USER_DEFINED || (is_spm && ty == TT_UNKNOWN)) {
            cJSON *a = cJSON_CreateObject();
            if (!a) {
                free(t);
                goto oom;
            }
            add(a, "id", cJSON_CreateNumber((double)i));
            add(a, "content", cJSON_CreateString(t));
            add(a, "single_word", cJSON_CreateBool(0));
            add(a, "lstrip", cJSON_CreateBool(0));
            add(a, "rstrip", cJSON_CreateBool(0));
            add(a, "normalized", cJSON_CreateBool(0));
            add(a, "special", cJSON_CreateBool(ty != TT_USER_DEFINED));
            push(added, a);
        }
        free(t);
    }
    if (unk >= 0) {
        char *u = dupn(&toks->strs[unk]);
        if (!u) goto oom;
        add(model, "unk_token", cJSON_CreateString(u));
        free(u);
    }
    cJSON *jm = cJSON_CreateArray();
    if (!jm) goto oom;
    if (!add(model, "merges", jm)) goto oom;
    if (is_gpt2) {
        if (!merges) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: gpt2 tokenizer without tokenizer.ggml.merges", path);
            goto done;
        }
        for (uint64_t i = 0; i < merges->n; i++) {
            char *s = dupn(&merges->strs[i]);
            if (!s) goto oom;
            push(jm, cJSON_CreateString(s));
            free(s);
        }
        const char *regex = NULL;
        int known = pstr.s == NULL; /* no pre key: llama.cpp's default is GPT-2's regex */
        for (size_t i = 0; i < sizeof pres / sizeof pres[0] && !known; i++)
            if (strlen(pres[i].name) == pstr.len && !memcmp(pres[i].name, pstr.s, pstr.len)) {
                known = 1;
                regex = pres[i].regex;
            }
        if (!known) {
            st = moec_err(err, MOEC_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.pre '%.*s' is not supported by moec (gpt-2, olmo, qwen2, llama-bpe)", path,
                          (int)(pstr.len > 64 ? 64 : pstr.len), pstr.s);
            goto done;
        }
        if (!regex) {
            add(root, "pre_tokenizer", bytelevel(1));
        } else {
            cJSON *seq = typed("Sequence"), *arr = cJSON_CreateArray(), *split = typed("Split");
            cJSON *pat = obj(split, "pattern");
            if (!seq || !arr || !split || !pat) {
                cJSON_Delete(seq);
                cJSON_Delete(arr);
                cJSON_Delete(split);
                goto oom;
            }
            add(pat, "Regex", cJSON_CreateString(regex));
            add(split, "behavior", cJSON_CreateString("Isolated"));
            add(split, "invert", cJSON_CreateBool(0));
            push(arr, split);
            push(arr, bytelevel(0));
            add(seq, "pretokenizers", arr);
            add(root, "pre_tokenizer", seq);
        }
        add(root, "decoder", bytelevel(1));
    } else {
        if ((st = spm_merges(toks, scores, types, jm, path, err))) goto done;
        int add_prefix = 1;
        if ((st = moec_gguf_get_bool(&g, "tokenizer.ggml.add_space_prefix", 1, 1, &add_prefix, err))) goto done;
        cJSON *norm = typed("Sequence"), *nl = cJSON_CreateArray();
        if (!norm || !nl) {
            cJSON_Delete(norm);
            cJSON_Delete(nl);
            goto oom;
        }
        if (add_prefix) {
            cJSON *pre = typed("Prepend");
            if (pre) add(pre, "prepend", cJSON_CreateString("\xe2\x96\x81"));
            push(nl, pre);
        }
        push(nl, replace(" ", "\xe2\x96\x81"));
        add(norm, "normalizers", nl);
        add(root, "normalizer", norm);
        add(root, "pre_tokenizer", cJSON_CreateNull());
        cJSON *dec = typed("Sequence"), *dl = cJSON_CreateArray();
        if (!dec || !dl) {
            cJSON_Delete(dec);
            cJSON_Delete(dl);
            goto oom;
        }
        push(dl, replace("\xe2\x96\x81", " "));
        push(dl, typed("ByteFallback"));
        push(dl, typed("Fuse"));
        if (add_prefix) {
            cJSON *strip = typed("Strip");
            if (strip) {
                add(strip, "content", cJSON_CreateString(" "));
                add(strip, "start", cJSON_CreateNumber(1));
                add(strip, "stop", cJSON_CreateNumber(0));
            }
            push(dl, strip);
        }
        add(dec, "decoders", dl);
        add(root, "decoder", dec);
    }
    if (tl_oom) goto oom;
    char *text = cJSON_PrintUnformatted(root);
    if (!text) goto oom;
    *json = text;
    *len = strlen(text);
    goto done;
oom:
    st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory building the tokenizer", path);
done:
    free(model_name);
    cJSON_Delete(root);
    moec_gguf_close(&g);
    return st;
}
