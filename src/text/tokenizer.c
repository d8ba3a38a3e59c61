/* tokenizer.c — the public tokenizer API (moec.h): loads a Hugging Face tokenizer.json and
 * encodes/decodes like `tokenizers` with add_special_tokens=False. Data flows as in HF:
 * added tokens are cut out of the raw text, each piece between them is normalized, normalized
 * added tokens are cut out of that, the rest is pre-tokenized into words, and BPE encodes each
 * word. Not supported: post-processors (ignored: they only add special tokens), truncation and
 * padding (ignored), offsets, models other than BPE. */
#include "core/error.h"
#include "moec.h"
#include "text/added.h"
#include "text/bpe.h"
#include "text/decoder.h"
#include "text/hashmap.h"
#include "text/jsonutil.h"
#include "text/normalize.h"
#include "text/pretokenize.h"
#include "text/tokenizer_gguf.h"
#include "io/gguf.h"
#include "text/utf8.h"
#include "io/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FILE_BYTES ((size_t)1 << 31)

struct moec_tokenizer {
    tk_bpe *bpe;
    tk_normalizer *norm;     /* NULL: none */
    tk_pretok *pretok;       /* NULL: none */
    tk_decoder *dec;         /* NULL: join with spaces */
    tk_added_token *added;
    size_t n_added;
    tk_trie trie_raw;        /* added tokens with normalized == false */
    tk_trie trie_norm;       /* added tokens with normalized == true, normalized content */
    tk_strmap added_ids;     /* content -> id */
    tk_strmap special;       /* contents of special tokens -> 1 */
    int32_t *id_added;       /* id -> index into added, -1 */
    int32_t n_vocab;         /* max id + 1 */
    char *tb_pool;           /* per-id bytes for moec_tokenizer_token_bytes */
    size_t *tb_off;          /* n_vocab + 1 offsets; a hole has length 0 and tb_hole set */
    uint8_t *tb_hole;
};

void moec_tokenizer_free(moec_tokenizer *tok) {
    if (!tok) return;
    tk_bpe_free(tok->bpe);
    tk_normalizer_free(tok->norm);
    tk_pretok_free(tok->pretok);
    tk_decoder_free(tok->dec);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].dec);
    }
    free(tok->added);
    tk_trie_free(&tok->trie_raw);
    tk_trie_free(&tok->trie_norm);
    tk_strmap_free(&tok->added_ids);
    tk_strmap_free(&tok->special);
    free(tok->id_added);
    free(tok->tb_pool);
    free(tok->tb_off);
    free(tok->tb_hole);
    free(tok);
}

/* ---------------------------------------------------------------- loading */

static moec_status read_file(const char *path, char **data, size_t *len, moec_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return moec_err(err, MOEC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* refuse before reading: a device (/dev/zero) or FIFO would be read up to the limit */
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > MAX_FILE_BYTES) {
        fclose(f);
        return moec_err(err, MOEC_ERR_IO, "%s: %s", path,
                        S_ISREG(sb.st_mode) ? "file larger than the 2 GiB limit" : "not a regular file");
    }
    tk_buf b = {0};
    char chunk[65536];
    size_t got;
    moec_status st = MOEC_OK;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.n + got > MAX_FILE_BYTES) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: file larger than %zu bytes", path, MAX_FILE_BYTES);
            break;
        }
        if (!tk_buf_put(&b, chunk, got)) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory reading the file", path);
            break;
        }
    }
    if (!st && ferror(f)) st = moec_err(err, MOEC_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (!st && !tk_buf_reserve(&b, 0)) st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", path);
    if (st) {
        tk_buf_free(&b);
        return st;
    }
    *data = b.p;
    *len = b.n;
    return MOEC_OK;
}

static moec_status parse_added(moec_tokenizer *tok, const cJSON *arr, const char *path,
                               moec_error *err) {
    if (!arr) return MOEC_OK;
    char where[320];
    snprintf(where, sizeof where, "%s: added_tokens", path);
    if (!cJSON_IsArray(arr)) return moec_err(err, MOEC_ERR_FORMAT, "%s: expected an array", where);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    const cJSON *it;
    moec_status st;
    cJSON_ArrayForEach(it, arr) {
        char w[360];
        snprintf(w, sizeof w, "%s[%zu]", where, tok->n_added);
        if (!cJSON_IsObject(it)) return moec_err(err, MOEC_ERR_FORMAT, "%s: expected an object", w);
        tk_added_token *at = &tok->added[tok->n_added];
        const char *content;
        size_t len;
        int64_t id;
        if ((st = tk_json_str(it, "content", 1, &content, &len, w, err))) return st;
        if ((st = tk_json_uint(it, "id", 1, 0, ((int64_t)1 << 24) - 1, &id, w, err))) return st;
        if ((st = tk_json_bool(it, "special", 0, &at->special, w, err))) return st;
        if ((st = tk_json_bool(it, "single_word", 0, &at->single_word, w, err))) return st;
        if ((st = tk_json_bool(it, "lstrip", 0, &at->lstrip, w, err))) return st;
        if ((st = tk_json_bool(it, "rstrip", 0, &at->rstrip, w, err))) return st;
        if ((st = tk_json_bool(it, "normalized", !at->special, &at->normalized, w, err))) return st;
        if (len == 0) continue; /* HF ignores empty added tokens */
        if (!(at->content = malloc(len + 1))) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", w);
        memcpy(at->content, content, len + 1);
        at->len = len;
        /* a token the model already knows keeps the model's id, as HF's add_tokens does */
        int32_t vid = tk_bpe_token_id(tok->bpe, content, len);
        at->id = vid >= 0 ? vid : (int32_t)id;
        tok->n_added++;
        if (tk_strmap_put(&tok->added_ids, content, len, at->id) < 0 ||
            (at->special && tk_strmap_put(&tok->special, content, len, 1) < 0))
            return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", w);
    }
    /* the tries: special tokens first, then the others (HF's chain order) */
    tk_buf norm = {0};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < tok->n_added; i++) {
            tk_added_token *at = &tok->added[i];
            if (at->special != (pass == 0)) continue;
            int ok;
            if (!at->normalized) {
                ok = tk_trie_add(&tok->trie_raw, at->content, at->len, (int32_t)i);
            } else {
                if ((st = tk_normalize(tok->norm, at->content, at->len, &norm, err))) {
                    tk_buf_free(&norm);
                    return st;
                }
                ok = tk_trie_add(&tok->trie_norm, norm.p, norm.n, (int32_t)i);
                /* decoding shows the normalized form (HF 0.22+ normalized_cache) */
                if (ok && tok->norm && (norm.n != at->len || memcmp(norm.p, at->content, at->len))) {
                    ok = (at->dec = malloc(norm.n + 1)) != NULL;
                    if (ok) {
                        memcpy(at->dec, norm.p, norm.n);
                        at->dec[norm.n] = 0;
                        at->dec_len = norm.n;
                    }
                }
            }
            if (!ok) {
                tk_buf_free(&norm);
                return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            }
        }
    }
    tk_buf_free(&norm);
    return MOEC_OK;
}

/* The string decoding uses for id (added token first, then the model), or NULL. */
static const char *id_string(const moec_tokenizer *tok, int32_t id, size_t *len) {
    int32_t a = tok->id_added[id];
    if (a < 0) return tk_bpe_token_str(tok->bpe, id, len);
    const tk_added_token *at = &tok->added[a];
    *len = at->dec ? at->dec_len : at->len;
    return at->dec ? at->dec : at->content;
}

static moec_status build_tables(moec_tokenizer *tok, const char *path, moec_error *err) {
    int32_t n = tk_bpe_n_ids(tok->bpe);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id + 1 > n) n = tok->added[i].id + 1;
    tok->n_vocab = n;
    size_t nn = (size_t)n + 1;
    tok->id_added = malloc(nn * sizeof *tok->id_added);
    tok->tb_off = malloc(nn * sizeof *tok->tb_off);
    tok->tb_hole = calloc(nn, 1);
    if (!tok->id_added || !tok->tb_off || !tok->tb_hole)
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", path);
    for (int32_t i = 0; i < n; i++) tok->id_added[i] = -1;
    for (size_t i = 0; i < tok->n_added; i++) tok->id_added[tok->added[i].id] = (int32_t)i;
    tk_buf pool = {0};
    for (int32_t id = 0; id < n; id++) {
        tok->tb_off[id] = pool.n;
        size_t len = 0;
        const char *s = id_string(tok, id, &len);
        if (!s) {
            tok->tb_hole[id] = 1;
            continue;
        }
        moec_status st = tk_decoder_token_bytes(tok->dec, s, len, &pool, err);
        if (st) {
            tk_buf_free(&pool);
            return st;
        }
    }
    tok->tb_off[n] = pool.n;
    if (!tk_buf_reserve(&pool, 0)) {
        tk_buf_free(&pool);
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", path);
    }
    tok->tb_pool = pool.p;
    return MOEC_OK;
}

/* Line and column of byte offset off, for JSON syntax errors. */
static void line_col(const char *s, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

moec_status moec_tokenizer_load(moec_tokenizer **out, const char *path, moec_error *err) {
    if (!out || !path) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer_load: NULL argument");
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    /* a GGUF file's vocabulary is turned into tokenizer.json text, then loaded like one */
    moec_status st = moec_gguf_is_gguf_file(path) ? tk_gguf_tokenizer_json(path, &data, &len, err)
                                                  : read_file(path, &data, &len, err);
    if (st) return st;
    size_t bad = tk_utf8_validate(data, len);
    if (bad != len) {
        free(data);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not valid UTF-8 (byte %zu)", path, bad);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        size_t off = end && end >= data && end <= data + len ? (size_t)(end - data) : len;
        size_t line, col, last = len; /* last: end of the final non-blank byte */
        while (last > 0 && (data[last - 1] == ' ' || data[last - 1] == '\n' || data[last - 1] == '\r' ||
                            data[last - 1] == '\t'))
            last--;
        line_col(data, off, &line, &col);
        free(data);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: invalid JSON at line %zu, column %zu%s", path, line,
                        col, len == 0 ? " (empty file)" : off >= last ? " (truncated file?)" : "");
    }
    moec_status jst = moec_json_check(root, path, err);
    if (jst) {
        cJSON_Delete(root);
        free(data);
        return jst;
    }
    moec_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        cJSON_Delete(root);
        free(data);
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", path);
    }
    tk_trie_init(&tok->trie_raw);
    tk_trie_init(&tok->trie_norm);
    tk_strmap_init(&tok->added_ids);
    tk_strmap_init(&tok->special);
    char where[320];
    if (!cJSON_IsObject(root)) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: top level is not a JSON object", path);
        goto done;
    }
    const cJSON *model = tk_json_get(root, "model");
    if (!model) {
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'model'", path);
        goto done;
    }
    snprintf(where, sizeof where, "%s: model", path);
    if ((st = tk_bpe_parse(&tok->bpe, model, where, err))) goto done;
    snprintf(where, sizeof where, "%s: normalizer", path);
    if ((st = tk_normalizer_parse(&tok->norm, tk_json_get(root, "normalizer"), where, err))) goto done;
    snprintf(where, sizeof where, "%s: pre_tokenizer", path);
    if ((st = tk_pretok_parse(&tok->pretok, tk_json_get(root, "pre_tokenizer"), where, err))) goto done;
    snprintf(where, sizeof where, "%s: decoder", path);
    if ((st = tk_decoder_parse(&tok->dec, tk_json_get(root, "decoder"), where, err))) goto done;
    if ((st = parse_added(tok, tk_json_get(root, "added_tokens"), path, err))) goto done;
    if ((st = build_tables(tok, path, err))) goto done;
done:
    cJSON_Delete(root);
    free(data);
    if (st) {
        moec_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MOEC_OK;
}

/* ---------------------------------------------------------------- encoding */

/* Everything one encode call allocates; freed at its end. The tokenizer itself stays
 * read-only, so concurrent encodes on one tokenizer are safe. */
typedef struct {
    tk_segs segs, sub;
    tk_buf norm, arena;
    tk_pieces pieces;
    tk_bpe_scratch bpe;
    tk_strmap cache; /* word -> offset of [count, ids...] in cache_ids */
    tk_ivec cache_ids;
} encode_state;

#define CACHE_MAX_WORD 256     /* longer words are rare and cheap to recompute relative to size */
#define CACHE_MAX_ENTRIES 65536

static void encode_state_free(encode_state *e) {
    tk_segs_free(&e->segs);
    tk_segs_free(&e->sub);
    tk_buf_free(&e->norm);
    tk_buf_free(&e->arena);
    tk_pieces_free(&e->pieces);
    tk_bpe_scratch_free(&e->bpe);
    tk_strmap_free(&e->cache);
    tk_ivec_free(&e->cache_ids);
}

static moec_status encode_word(const moec_tokenizer *tok, encode_state *e, const char *w, size_t n,
                               tk_ivec *out, moec_error *err) {
    int cacheable = n <= CACHE_MAX_WORD;
    int32_t at;
    if (cacheable && tk_strmap_get(&e->cache, w, n, &at)) {
        int32_t cnt = e->cache_ids.v[at];
        for (int32_t i = 0; i < cnt; i++)
            if (!tk_ivec_push(out, e->cache_ids.v[at + 1 + i])) return moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
        return MOEC_OK;
    }
    size_t before = out->n;
    moec_status st = tk_bpe_encode_word(tok->bpe, &e->bpe, w, n, out, err);
    if (st) return st;
    if (cacheable && e->cache.count < CACHE_MAX_ENTRIES && e->cache_ids.n < INT32_MAX / 2) {
        int32_t pos = (int32_t)e->cache_ids.n;
        int ok = tk_ivec_push(&e->cache_ids, (int32_t)(out->n - before));
        for (size_t i = before; ok && i < out->n; i++) ok = tk_ivec_push(&e->cache_ids, out->v[i]);
        if (!ok || tk_strmap_put(&e->cache, w, n, pos) < 0) return moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
    }
    return MOEC_OK;
}

/* Pre-tokenizes and encodes one normalized stretch of text with no added tokens in it. */
static moec_status encode_text(const moec_tokenizer *tok, encode_state *e, const char *s, size_t n,
                               int first, tk_ivec *out, moec_error *err) {
    e->arena.n = 0;
    e->pieces.n = 0;
    if (!tk_buf_put(&e->arena, s, n) || !tk_pieces_push(&e->pieces, 0, n, first))
        return moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
    moec_status st = tk_pretokenize(tok->pretok, &e->arena, &e->pieces, err);
    for (size_t i = 0; !st && i < e->pieces.n; i++)
        st = encode_word(tok, e, e->arena.p + e->pieces.v[i].off, e->pieces.v[i].len, out, err);
    return st;
}

moec_status moec_tokenizer_encode(const moec_tokenizer *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n_ids, moec_error *err) {
    if (!tok || !ids || !n_ids || (!text && len))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (!text) text = "";
    size_t bad = tk_utf8_validate(text, len);
    if (bad != len)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer_encode: text is not valid UTF-8 (byte %zu)", bad);
    encode_state e;
    memset(&e, 0, sizeof e);
    tk_strmap_init(&e.cache);
    tk_ivec out = {0};
    moec_status st = tk_added_split(&tok->trie_raw, tok->added, text, len, &e.segs, err);
    for (size_t i = 0; !st && i < e.segs.n; i++) {
        const tk_seg *sg = &e.segs.v[i];
        if (sg->token >= 0) {
            if (!tk_ivec_push(&out, tok->added[sg->token].id)) st = moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
            continue;
        }
        if (sg->end <= sg->start) continue;
        if ((st = tk_normalize(tok->norm, text + sg->start, sg->end - sg->start, &e.norm, err))) break;
        if ((st = tk_added_split(&tok->trie_norm, tok->added, e.norm.p, e.norm.n, &e.sub, err))) break;
        for (size_t k = 0; !st && k < e.sub.n; k++) {
            const tk_seg *sb = &e.sub.v[k];
            if (sb->token >= 0) {
                if (!tk_ivec_push(&out, tok->added[sb->token].id)) st = moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
            } else if (sb->end > sb->start) {
                int first = sg->start == 0 && sb->start == 0;
                st = encode_text(tok, &e, e.norm.p + sb->start, sb->end - sb->start, first, &out, err);
            }
        }
    }
    encode_state_free(&e);
    if (st) {
        tk_ivec_free(&out);
        return st;
    }
    if (!out.v && !(out.v = malloc(sizeof *out.v))) return moec_err(err, MOEC_ERR_OOM, "encode: out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return MOEC_OK;
}

/* ---------------------------------------------------------------- decoding */

moec_status moec_tokenizer_decode(const moec_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  int skip_special, char **text, size_t *len, moec_error *err) {
    if (!tok || !text || !len || (!ids && n_ids))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer_decode: NULL argument");
    *text = NULL;
    *len = 0;
    tk_strref *toks = malloc((n_ids ? n_ids : 1) * sizeof *toks);
    if (!toks) return moec_err(err, MOEC_ERR_OOM, "decode: out of memory");
    size_t nt = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab) {
            free(toks);
            return moec_err(err, MOEC_ERR_INVALID_ARG, "decode: token id %d at position %zu is out of range [0, %d)",
                            id, i, tok->n_vocab);
        }
        size_t n = 0;
        const char *s = id_string(tok, id, &n);
        if (!s) continue; /* an id no token uses: HF skips it */
        int32_t dummy; /* HF tests the decoded string against the special contents */
        if (skip_special && tk_strmap_get(&tok->special, s, n, &dummy)) continue;
        toks[nt].p = s;
        toks[nt].n = n;
        nt++;
    }
    tk_buf out = {0};
    moec_status st = tk_decode(tok->dec, toks, nt, &out, err);
    free(toks);
    if (!st && !tk_buf_reserve(&out, 0)) st = moec_err(err, MOEC_ERR_OOM, "decode: out of memory");
    if (st) {
        tk_buf_free(&out);
        return st;
    }
    out.p[out.n] = 0; /* moec.h promises a NUL, also after an empty decode */
    *text = out.p;
    *len = out.n;
    return MOEC_OK;
}

/* ---------------------------------------------------------------- lookups */

int32_t moec_tokenizer_token_bytes(const moec_tokenizer *tok, int32_t id, char *buf, size_t cap) {
    if (!tok || id < 0 || id >= tok->n_vocab || tok->tb_hole[id]) return -1;
    size_t n = tok->tb_off[id + 1] - tok->tb_off[id];
    if (buf && cap) memcpy(buf, tok->tb_pool + tok->tb_off[id], n < cap ? n : cap);
    return (int32_t)n;
}

int32_t moec_tokenizer_n_vocab(const moec_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

int32_t moec_tokenizer_token_id(const moec_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    size_t n = strlen(token);
    int32_t id;
    if (tk_strmap_get(&tok->added_ids, token, n, &id)) return id;
    return tk_bpe_token_id(tok->bpe, token, n);
}
