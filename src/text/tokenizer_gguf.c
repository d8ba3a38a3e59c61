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

static cJSON *obj(cJSON *parent, const char *key) {
    cJSON *o = cJSON_CreateObject();
    if (parent && o) cJSON_AddItemToObject(parent, key, o);
    return o;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *bytelevel(int use_regex) {
    cJSON *o = typed("ByteLevel");
    if (!o) return NULL;
    cJSON_AddBoolToObject(o, "add_prefix_space", 0);
    cJSON_AddBoolToObject(o, "trim_offsets", 0);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *replace(const char *from, const char *to) {
    cJSON *o = typed("Replace");
    cJSON *p = obj(o, "pattern");
    if (!p) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(p, "String", from);
    cJSON_AddStringToObject(o, "content", to);
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
            cJSON_AddItemToArray(pair, cJSON_CreateString(a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pair);
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
    if (!model || !vocab || !added) goto oom;
    cJSON_AddItemToObject(root, "added_tokens", added);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "byte_fallback", is_spm);
    cJSON_AddBoolToObject(model, "fuse_unk", is_spm);
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
            cJSON_AddItemToObject(vocab, t, cJSON_CreateNumber((double)i));
        if (ty == TT_CONTROL || ty == TT_USER_DEFINED || (is_spm && ty == TT_UNKNOWN)) {
            cJSON *a = cJSON_CreateObject();
            if (!a) {
                free(t);
                goto oom;
            }
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", t);
            cJSON_AddBoolToObject(a, "single_word", 0);
            cJSON_AddBoolToObject(a, "lstrip", 0);
            cJSON_AddBoolToObject(a, "rstrip", 0);
            cJSON_AddBoolToObject(a, "normalized", 0);
            cJSON_AddBoolToObject(a, "special", ty != TT_USER_DEFINED);
            cJSON_AddItemToArray(added, a);
        }
        free(t);
    }
    if (unk >= 0) {
        char *u = dupn(&toks->strs[unk]);
        if (!u) goto oom;
        cJSON_AddStringToObject(model, "unk_token", u);
        free(u);
    }
    cJSON *jm = cJSON_CreateArray();
    if (!jm) goto oom;
    cJSON_AddItemToObject(model, "merges", jm);
    if (is_gpt2) {
        if (!merges) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: gpt2 tokenizer without tokenizer.ggml.merges", path);
            goto done;
        }
        for (uint64_t i = 0; i < merges->n; i++) {
            char *s = dupn(&merges->strs[i]);
            if (!s) goto oom;
            cJSON_AddItemToArray(jm, cJSON_CreateString(s));
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
            cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel(1));
        } else {
            cJSON *seq = typed("Sequence"), *arr = cJSON_CreateArray(), *split = typed("Split");
            cJSON *pat = obj(split, "pattern");
            if (!seq || !arr || !split || !pat) {
                cJSON_Delete(seq);
                cJSON_Delete(arr);
                cJSON_Delete(split);
                goto oom;
            }
            cJSON_AddStringToObject(pat, "Regex", regex);
            cJSON_AddStringToObject(split, "behavior", "Isolated");
            cJSON_AddBoolToObject(split, "invert", 0);
            cJSON_AddItemToArray(arr, split);
            cJSON_AddItemToArray(arr, bytelevel(0));
            cJSON_AddItemToObject(seq, "pretokenizers", arr);
            cJSON_AddItemToObject(root, "pre_tokenizer", seq);
        }
        cJSON_AddItemToObject(root, "decoder", bytelevel(1));
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
            if (pre) cJSON_AddStringToObject(pre, "prepend", "\xe2\x96\x81");
            cJSON_AddItemToArray(nl, pre);
        }
        cJSON_AddItemToArray(nl, replace(" ", "\xe2\x96\x81"));
        cJSON_AddItemToObject(norm, "normalizers", nl);
        cJSON_AddItemToObject(root, "normalizer", norm);
        cJSON_AddNullToObject(root, "pre_tokenizer");
        cJSON *dec = typed("Sequence"), *dl = cJSON_CreateArray();
        if (!dec || !dl) {
            cJSON_Delete(dec);
            cJSON_Delete(dl);
            goto oom;
        }
        cJSON_AddItemToArray(dl, replace("\xe2\x96\x81", " "));
        cJSON_AddItemToArray(dl, typed("ByteFallback"));
        cJSON_AddItemToArray(dl, typed("Fuse"));
        if (add_prefix) {
            cJSON *strip = typed("Strip");
            if (strip) {
                cJSON_AddStringToObject(strip, "content", " ");
                cJSON_AddNumberToObject(strip, "start", 1);
                cJSON_AddNumberToObject(strip, "stop", 0);
            }
            cJSON_AddItemToArray(dl, strip);
        }
        cJSON_AddItemToObject(dec, "decoders", dl);
        cJSON_AddItemToObject(root, "decoder", dec);
    }
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
