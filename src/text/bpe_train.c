/* bpe_train.c — byte-level BPE training (see bpe_train.h). Data flows: text -> lines -> NFC ->
 * Qwen2 Split + ByteLevel -> word-frequency table (hash map) -> words as symbol ids -> pair
 * counts with, per pair, the list of words holding it -> a max-heap of merge candidates with
 * lazy invalidation -> merges -> tokenizer.json.
 *
 * The merge loop follows Hugging Face `tokenizers` BpeTrainer::do_train step by step, so that
 * the same corpus gives the same merges:
 *  - ids: special tokens first, then the 256 byte-level symbols sorted by code point, then one
 *    id per new token string in the order merges create them;
 *  - a pair's count is the sum over words of (occurrences as adjacent symbols) x (word count),
 *    overlapping occurrences included ("aaa" holds (a,a) twice);
 *  - heap order: higher count first; equal counts: the smaller pair (id of the left symbol,
 *    then id of the right one) first. That is HF's `Ord for Merge`;
 *  - a popped entry whose count is stale is pushed back with the current count (keeping its
 *    word list); a merge touches only the words in the popped entry's list; each merge pushes
 *    one new entry per pair it created, listing the words where it created it;
 *  - the merged pair's own count is not reset (HF does not), and a merge whose result string
 *    already exists reuses its id; when the same pair is merged twice, the file keeps the
 *    later rank (HF's merges map keeps the last insert).
 * Entries equal in (count, pair), which HF's BinaryHeap leaves unordered, pop oldest first.
 *
 * Not a parallel trainer and not a general one: see bpe_train.h. */
#include "text/bpe_train.h"

#include "core/error.h"
#include "io/file.h"
#include "text/hashmap.h"
#include "text/normalize.h"
#include "text/pretokenize.h"
#include "text/utf8.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Qwen2's pre-tokenizer regex (Oniguruma syntax, as in its tokenizer.json). */
static const char QWEN_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char BYTELEVEL_FIELDS[] =
    "\"type\": \"ByteLevel\",\n%s  \"add_prefix_space\": false,\n%s  \"trim_offsets\": false,\n"
    "%s  \"use_regex\": false\n";

typedef struct {
    int64_t count;
    uint32_t a, b;     /* the pair's symbol ids (for the tie-break) */
    uint32_t pair;     /* index into the pair table */
    uint32_t pos_n;    /* words listed for this entry: pos[pos_off .. pos_off + pos_n) */
    size_t pos_off;
} merge_cand;

typedef struct {
    int32_t a, b, z; /* a + b -> z */
} merge_rule;

struct tk_bpe_trainer {
    tk_bpe_train_params p;
    tk_normalizer *norm;
    tk_pretok *pretok;
    /* feeding */
    tk_strmap words;       /* byte-level word -> entry index into wcount */
    int64_t *wcount;
    size_t wcount_cap;
    tk_buf arena;
    tk_pieces pieces;
    /* vocabulary: token string (byte-level form; specials as given) -> id == entry index */
    tk_strmap vocab;
    int32_t n_init;
    int32_t byte_id[256];
    /* result */
    merge_rule *merges;
    size_t n_merges;
    int trained;
    tk_bpe_train_stats st;
};

/* ---------------------------------------------------------------- JSON writing */

/* An append-only text buffer whose first allocation failure sticks (checked once at the end). */
typedef struct {
    tk_buf b;
    int oom;
} jwriter;

static void jw_raw(jwriter *w, const char *s, size_t n) {
    if (!w->oom && !tk_buf_put(&w->b, s, n)) w->oom = 1;
}

static void jw_s(jwriter *w, const char *s) { jw_raw(w, s, strlen(s)); }

static void jw_fmt3(jwriter *w, const char *fmt, const char *indent) {
    char tmp[512];
    int k = snprintf(tmp, sizeof tmp, fmt, indent, indent, indent);
    MOEC_ASSERT(k > 0 && (size_t)k < sizeof tmp);
    jw_raw(w, tmp, (size_t)k);
}

static void jw_int(jwriter *w, long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%lld", v);
    jw_raw(w, tmp, (size_t)k);
}

/* s (valid UTF-8) as a JSON string literal; non-ASCII stays UTF-8. */
static void jw_str(jwriter *w, const char *s, size_t n) {
    static const char hx[] = "0123456789abcdef";
    jw_raw(w, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20) continue;
        jw_raw(w, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hx[c >> 4], e[5] = hx[c & 15];
            en = 6;
        }
        jw_raw(w, e, en);
    }
    jw_raw(w, s + run, n - run);
    jw_raw(w, "\"", 1);
}

/* The normalizer .. decoder members of tokenizer.json (no trailing comma). Parsed back by
 * tk_bpe_trainer_new, so counting and the written file cannot disagree. */
static void jw_pipeline(jwriter *w) {
    jw_s(w, "  \"normalizer\": {\n    \"type\": \"NFC\"\n  },\n"
            "  \"pre_tokenizer\": {\n    \"type\": \"Sequence\",\n    \"pretokenizers\": [\n"
            "      {\n        \"type\": \"Split\",\n        \"pattern\": {\n          \"Regex\": ");
    jw_str(w, QWEN_REGEX, sizeof QWEN_REGEX - 1);
    jw_s(w, "\n        },\n        \"behavior\": \"Isolated\",\n        \"invert\": false\n      },\n"
            "      {\n        ");
    jw_fmt3(w, BYTELEVEL_FIELDS, "      ");
    jw_s(w, "      }\n    ]\n  },\n  \"post_processor\": {\n    ");
    jw_fmt3(w, BYTELEVEL_FIELDS, "  ");
    jw_s(w, "  },\n  \"decoder\": {\n    ");
    jw_fmt3(w, BYTELEVEL_FIELDS, "  ");
    jw_s(w, "  }");
}

/* ---------------------------------------------------------------- setup */

void tk_bpe_trainer_free(tk_bpe_trainer *t) {
    if (!t) return;
    tk_normalizer_free(t->norm);
    tk_pretok_free(t->pretok);
    tk_strmap_free(&t->words);
    free(t->wcount);
    tk_buf_free(&t->arena);
    tk_pieces_free(&t->pieces);
    tk_strmap_free(&t->vocab);
    free(t->merges);
    free(t);
}

static moec_status parse_pipeline(tk_bpe_trainer *t, moec_error *err) {
    jwriter w = {0};
    jw_s(&w, "{\n");
    jw_pipeline(&w);
    jw_s(&w, "\n}\n");
    if (w.oom) {
        tk_buf_free(&w.b);
        return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
    }
    cJSON *root = cJSON_ParseWithLength(w.b.p, w.b.n);
    tk_buf_free(&w.b);
    MOEC_ASSERT(root); /* the text above is fixed */
    moec_status st = tk_normalizer_parse(&t->norm, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                                         "tokenizer train: normalizer", err);
    if (!st)
        st = tk_pretok_parse(&t->pretok, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                             "tokenizer train: pre_tokenizer", err);
    cJSON_Delete(root);
    return st;
}

typedef struct {
    uint32_t cp;
    int byte;
} cp_byte;

static int cmp_cp(const void *x, const void *y) {
    uint32_t a = ((const cp_byte *)x)->cp, b = ((const cp_byte *)y)->cp;
    return a < b ? -1 : a > b;
}

/* Specials first, then the byte alphabet by code point; a string already present keeps its id. */
static moec_status init_vocab(tk_bpe_trainer *t, moec_error *err) {
    for (size_t i = 0; i < t->p.n_specials; i++) {
        const char *s = t->p.specials[i];
        size_t n = s ? strlen(s) : 0;
        if (n == 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "special token %zu is empty", i + 1);
        if (tk_utf8_validate(s, n) != n)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "special token %zu is not valid UTF-8", i + 1);
        if (tk_strmap_find(&t->vocab, s, n) >= 0) continue; /* HF drops duplicates */
        if (tk_strmap_put(&t->vocab, s, n, (int32_t)t->vocab.count) < 0)
            return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
    }
    cp_byte abc[256];
    for (int b = 0; b < 256; b++) abc[b].cp = tk_bytelevel_cp((unsigned char)b), abc[b].byte = b;
    qsort(abc, 256, sizeof abc[0], cmp_cp);
    for (int i = 0; i < 256; i++) {
        char u[4];
        size_t k = tk_utf8_encode(abc[i].cp, u);
        int32_t id;
        if (!tk_strmap_get(&t->vocab, u, k, &id)) {
            id = (int32_t)t->vocab.count;
            if (tk_strmap_put(&t->vocab, u, k, id) < 0)
                return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
        }
        t->byte_id[abc[i].byte] = id;
    }
    t->n_init = (int32_t)t->vocab.count;
    return MOEC_OK;
}

moec_status tk_bpe_trainer_new(tk_bpe_trainer **out, const tk_bpe_train_params *p, moec_error *err) {
    if (!out || !p || (p->n_specials && !p->specials))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: NULL argument");
    *out = NULL;
    if (p->min_frequency < 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "min_frequency %lld is negative", (long long)p->min_frequency);
    if (p->vocab_size > TK_BPE_TRAIN_MAX_VOCAB)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "vocab_size %d is above the limit %d", p->vocab_size,
                        TK_BPE_TRAIN_MAX_VOCAB);
    tk_bpe_trainer *t = calloc(1, sizeof *t);
    if (!t) return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
    t->p = *p;
    tk_strmap_init(&t->words);
    tk_strmap_init(&t->vocab);
    moec_status st = init_vocab(t, err);
    if (!st && p->vocab_size < t->n_init)
        st = moec_err(err, MOEC_ERR_INVALID_ARG,
                      "vocab_size %d is smaller than the initial vocabulary of %d tokens (the special "
                      "tokens and the 256 byte symbols)",
                      p->vocab_size, t->n_init);
    if (!st) st = parse_pipeline(t, err);
    if (st) {
        tk_bpe_trainer_free(t);
        return st;
    }
    *out = t;
    return MOEC_OK;
}

int32_t tk_bpe_trainer_initial_vocab(const tk_bpe_trainer *t) { return t ? t->n_init : 0; }

/* ---------------------------------------------------------------- counting words */

static moec_status count_line(tk_bpe_trainer *t, const char *s, size_t n, moec_error *err) {
    moec_status st = tk_normalize(t->norm, s, n, &t->arena, err);
    if (st) return st;
    t->pieces.n = 0;
    if (!tk_pieces_push(&t->pieces, 0, t->arena.n, 1))
        return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
    if ((st = tk_pretokenize(t->pretok, &t->arena, &t->pieces, err))) return st;
    for (size_t i = 0; i < t->pieces.n; i++) {
        const char *w = t->arena.p + t->pieces.v[i].off;
        size_t wn = t->pieces.v[i].len;
        int64_t idx = tk_strmap_find(&t->words, w, wn);
        if (idx < 0) {
            if ((idx = tk_strmap_put(&t->words, w, wn, 0)) < 0)
                return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory (word table)");
            if ((size_t)idx >= t->wcount_cap) {
                size_t nc = t->wcount_cap ? t->wcount_cap * 2 : 4096;
                int64_t *nw = realloc(t->wcount, nc * sizeof *nw);
                if (!nw) return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory (word table)");
                t->wcount = nw;
                t->wcount_cap = nc;
            }
            t->wcount[idx] = 0;
        }
        t->wcount[idx]++;
    }
    t->st.n_words += (int64_t)t->pieces.n;
    return MOEC_OK;
}

moec_status tk_bpe_trainer_feed(tk_bpe_trainer *t, const char *text, size_t n, const char *name,
                                moec_error *err) {
    if (!t || (!text && n)) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: NULL argument");
    if (!name) name = "(text)";
    if (t->trained) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: feed after train");
    size_t bad = tk_utf8_validate(text, n);
    if (bad != n) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += text[i] == '\n';
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not valid UTF-8 at line %zu (byte offset %zu)", name,
                        line, bad);
    }
    for (size_t a = 0; a < n;) { /* lines keep their '\n', as HF's lines_with_ending */
        const char *nl = memchr(text + a, '\n', n - a);
        size_t b = nl ? (size_t)(nl - text) + 1 : n;
        moec_status st = count_line(t, text + a, b - a, err);
        if (st) return st;
        t->st.n_lines++;
        a = b;
    }
    t->st.n_bytes += (int64_t)n;
    return MOEC_OK;
}

moec_status tk_bpe_trainer_feed_file(tk_bpe_trainer *t, const char *path, moec_error *err) {
    moec_mmap m = {0};
    moec_status st = moec_file_map(path, &m, err);
    if (st) return st;
    if (m.size == 0) st = moec_err(err, MOEC_ERR_FORMAT, "%s: empty file (no text to train on)", path);
    else st = tk_bpe_trainer_feed(t, m.addr, m.size, path, err);
    moec_file_unmap(&m);
    return st;
}

/* ---------------------------------------------------------------- training state */

typedef struct {
    /* words as symbol ids: word w is sym[w_off[w] .. w_off[w] + w_len[w]) */
    int32_t *sym;
    size_t *w_off;
    int32_t *w_len;
    const int64_t *w_cnt;
    size_t n_words;
    /* pairs: key (a << 32 | b) -> index; count, ids and a scratch mark per index */
    tk_u64map pmap;
    int64_t *p_cnt;
    uint32_t *p_a, *p_b;
    int32_t *p_mark;
    size_t p_n, p_cap;
    /* word lists of heap entries */
    int32_t *pos;
    size_t pos_n, pos_cap;
    /* heap */
    merge_cand *h;
    size_t h_n, h_cap;
    /* one merge step's created pairs: (pair index << 32 | word) */
    uint64_t *chg;
    size_t chg_n, chg_cap;
    /* merges in order, duplicates included */
    merge_rule *m;
    size_t m_n, m_cap;
    tk_buf tmp;
} train_state;

static void train_state_free(train_state *s) {
    free(s->sym);
    free(s->w_off);
    free(s->w_len);
    tk_u64map_free(&s->pmap);
    free(s->p_cnt);
    free(s->p_a);
    free(s->p_b);
    free(s->p_mark);
    free(s->pos);
    free(s->h);
    free(s->chg);
    free(s->m);
    tk_buf_free(&s->tmp);
}

/* Grows *v (elements of size sz, capacity *cap) to hold at least need; 1 ok, 0 OOM. */
static int grow(void **v, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / sz) return 0;
        nc *= 2;
    }
    void *nv = realloc(*v, nc * sz);
    if (!nv) return 0;
    *v = nv;
    *cap = nc;
    return 1;
}

/* Index of pair (a, b), created with count 0 if new; -1 on OOM. */
static int64_t pair_index(train_state *s, uint32_t a, uint32_t b) {
    uint64_t key = (uint64_t)a << 32 | b, v;
    if (tk_u64map_get(&s->pmap, key, &v)) return (int64_t)v;
    size_t i = s->p_n;
    if (i >= UINT32_MAX) return -1;
    if (i == s->p_cap) {
        size_t nc = s->p_cap ? s->p_cap * 2 : 4096;
        int64_t *c = realloc(s->p_cnt, nc * sizeof *c);
        if (c) s->p_cnt = c;
        uint32_t *pa = realloc(s->p_a, nc * sizeof *pa);
        if (pa) s->p_a = pa;
        uint32_t *pb = realloc(s->p_b, nc * sizeof *pb);
        if (pb) s->p_b = pb;
        int32_t *mk = realloc(s->p_mark, nc * sizeof *mk);
        if (mk) s->p_mark = mk;
        if (!c || !pa || !pb || !mk) return -1;
        s->p_cap = nc;
    }
    if (!tk_u64map_put(&s->pmap, key, i)) return -1;
    s->p_cnt[i] = 0;
    s->p_a[i] = a;
    s->p_b[i] = b;
    s->p_mark[i] = -1;
    s->p_n++;
    return (int64_t)i;
}

/* ---------------------------------------------------------------- the heap */

/* 1 if x pops before y: higher count, then smaller (a, b), then older. */
static int cand_before(const merge_cand *x, const merge_cand *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    if (x->b != y->b) return x->b < y->b;
    return x->pos_off < y->pos_off;
}

static void sift_down(merge_cand *h, size_t n, size_t i) {
    merge_cand x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&h[c + 1], &h[c])) c++;
        if (!cand_before(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static int heap_push(train_state *s, merge_cand c) {
    if (!grow((void **)&s->h, &s->h_cap, s->h_n + 1, sizeof *s->h)) return 0;
    size_t i = s->h_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &s->h[parent])) break;
        s->h[i] = s->h[parent];
        i = parent;
    }
    s->h[i] = c;
    return 1;
}

static merge_cand heap_pop(train_state *s) {
    merge_cand top = s->h[0];
    s->h[0] = s->h[--s->h_n];
    if (s->h_n) sift_down(s->h, s->h_n, 0);
    return top;
}

/* ---------------------------------------------------------------- training */

static moec_status oom_train(moec_error *err) {
    return moec_err(err, MOEC_ERR_OOM, "tokenizer train: out of memory");
}

/* Words from the frequency table as symbol ids. */
static moec_status build_words(const tk_bpe_trainer *t, train_state *s, moec_error *err) {
    size_t nw = t->words.count, total = 0;
    s->n_words = nw;
    s->w_cnt = t->wcount;
    s->w_off = malloc((nw ? nw : 1) * sizeof *s->w_off);
    s->w_len = malloc((nw ? nw : 1) * sizeof *s->w_len);
    if (!s->w_off || !s->w_len) return oom_train(err);
    for (size_t w = 0; w < nw; w++) {
        size_t len;
        tk_strmap_key(&t->words, w, &len);
        total += len; /* an upper bound on the symbol count (1-2 bytes per symbol) */
    }
    s->sym = malloc((total ? total : 1) * sizeof *s->sym);
    if (!s->sym) return oom_train(err);
    size_t at = 0;
    for (size_t w = 0; w < nw; w++) {
        size_t len;
        const char *k = tk_strmap_key(&t->words, w, &len);
        s->w_off[w] = at;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            i += tk_utf8_next(k + i, len - i, &cp);
            int byte = tk_bytelevel_byte(cp);
            MOEC_ASSERT(byte >= 0); /* the ByteLevel step produced this word */
            s->sym[at++] = t->byte_id[byte];
        }
        MOEC_ASSERT(at - s->w_off[w] <= INT32_MAX);
        s->w_len[w] = (int32_t)(at - s->w_off[w]);
    }
    return MOEC_OK;
}

/* Initial pair counts and one heap entry per pair listing every word that holds it. */
static moec_status count_pairs(train_state *s, moec_error *err) {
    size_t *n_pos = NULL, *fill = NULL;
    for (size_t w = 0; w < s->n_words; w++) {
        const int32_t *sy = s->sym + s->w_off[w];
        for (int32_t i = 0; i + 1 < s->w_len[w]; i++) {
            int64_t p = pair_index(s, (uint32_t)sy[i], (uint32_t)sy[i + 1]);
            if (p < 0) return oom_train(err);
            s->p_cnt[p] += s->w_cnt[w];
        }
    }
    n_pos = calloc(s->p_n ? s->p_n : 1, sizeof *n_pos);
    fill = malloc((s->p_n ? s->p_n : 1) * sizeof *fill);
    moec_status st = MOEC_OK;
    if (!n_pos || !fill) {
        st = oom_train(err);
        goto done;
    }
    /* two passes: count distinct words per pair, then fill the lists */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t p = 0; p < s->p_n; p++) s->p_mark[p] = -1;
        for (size_t w = 0; w < s->n_words; w++) {
            const int32_t *sy = s->sym + s->w_off[w];
            for (int32_t i = 0; i + 1 < s->w_len[w]; i++) {
                uint64_t v = 0;
                tk_u64map_get(&s->pmap, (uint64_t)(uint32_t)sy[i] << 32 | (uint32_t)sy[i + 1], &v);
                if (s->p_mark[v] == (int32_t)w) continue;
                s->p_mark[v] = (int32_t)w;
                if (pass == 0) n_pos[v]++;
                else s->pos[fill[v]++] = (int32_t)w;
            }
        }
        if (pass == 0) {
            size_t off = 0;
            for (size_t p = 0; p < s->p_n; p++) fill[p] = off, off += n_pos[p];
            if (!grow((void **)&s->pos, &s->pos_cap, off, sizeof *s->pos)) {
                st = oom_train(err);
                goto done;
            }
            s->pos_n = off;
        }
    }
    for (size_t p = 0; p < s->p_n; p++) {
        if (s->p_cnt[p] <= 0) continue;
        merge_cand c = {s->p_cnt[p], s->p_a[p], s->p_b[p], (uint32_t)p, (uint32_t)n_pos[p],
                        fill[p] - n_pos[p]};
        if (!heap_push(s, c)) {
            st = oom_train(err);
            goto done;
        }
    }
done:
    free(n_pos);
    free(fill);
    return st;
}

/* Adds delta to pair (x, y); a positive change also records that word w now holds it. */
static int change(train_state *s, int32_t x, int32_t y, int64_t delta, int32_t w) {
    int64_t p = pair_index(s, (uint32_t)x, (uint32_t)y);
    if (p < 0) return 0;
    s->p_cnt[p] += delta;
    if (delta > 0) {
        if (!grow((void **)&s->chg, &s->chg_cap, s->chg_n + 1, sizeof *s->chg)) return 0;
        s->chg[s->chg_n++] = (uint64_t)p << 32 | (uint32_t)w;
    }
    return 1;
}

/* Replaces every (a, b) in word w by z, left to right, as HF's Word::merge (same changes). */
static int merge_word(train_state *s, int32_t w, int32_t a, int32_t b, int32_t z) {
    int32_t *sy = s->sym + s->w_off[w];
    int32_t len = s->w_len[w], k = 0;
    int64_t c = s->w_cnt[w];
    for (int32_t r = 0; r < len;) {
        if (sy[r] == a && r + 1 < len && sy[r + 1] == b) {
            if (k > 0 && (!change(s, sy[k - 1], a, -c, w) || !change(s, sy[k - 1], z, c, w))) return 0;
            if (r + 2 < len && (!change(s, b, sy[r + 2], -c, w) || !change(s, z, sy[r + 2], c, w))) return 0;
            sy[k++] = z; /* k <= r: the unread symbols are not overwritten */
            r += 2;
        } else {
            sy[k++] = sy[r++];
        }
    }
    s->w_len[w] = k;
    return 1;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* After a merge: one heap entry per created pair that still occurs, listing its words. */
static int push_created(train_state *s) {
    if (s->chg_n > 1) qsort(s->chg, s->chg_n, sizeof *s->chg, cmp_u64);
    for (size_t i = 0; i < s->chg_n;) {
        uint32_t p = (uint32_t)(s->chg[i] >> 32);
        size_t off = s->pos_n;
        int32_t last = -1;
        for (; i < s->chg_n && (uint32_t)(s->chg[i] >> 32) == p; i++) {
            int32_t w = (int32_t)(uint32_t)s->chg[i];
            if (w == last) continue;
            if (!grow((void **)&s->pos, &s->pos_cap, s->pos_n + 1, sizeof *s->pos)) return 0;
            s->pos[s->pos_n++] = w;
            last = w;
        }
        if (s->p_cnt[p] > 0) {
            merge_cand c = {s->p_cnt[p], s->p_a[p], s->p_b[p], p, (uint32_t)(s->pos_n - off), off};
            if (!heap_push(s, c)) return 0;
        } else {
            s->pos_n = off; /* nobody refers to these */
        }
    }
    s->chg_n = 0;
    return 1;
}

/* The id of the concatenation of tokens a and b, added to the vocabulary if new. */
static int64_t new_token(tk_bpe_trainer *t, train_state *s, int32_t a, int32_t b) {
    size_t la, lb;
    const char *sa = tk_strmap_key(&t->vocab, (size_t)a, &la);
    s->tmp.n = 0;
    if (!tk_buf_put(&s->tmp, sa, la)) return -1;
    const char *sb = tk_strmap_key(&t->vocab, (size_t)b, &lb);
    if (!tk_buf_put(&s->tmp, sb, lb)) return -1;
    int32_t id;
    if (tk_strmap_get(&t->vocab, s->tmp.p, s->tmp.n, &id)) return id;
    id = (int32_t)t->vocab.count;
    if (tk_strmap_put(&t->vocab, s->tmp.p, s->tmp.n, id) < 0) return -1;
    return id;
}

/* Keeps the last occurrence of each pair, in rank order. */
static moec_status keep_last_merges(tk_bpe_trainer *t, const train_state *s, moec_error *err) {
    tk_u64map seen;
    tk_u64map_init(&seen);
    uint8_t *keep = calloc(s->m_n ? s->m_n : 1, 1);
    t->merges = malloc((s->m_n ? s->m_n : 1) * sizeof *t->merges);
    moec_status st = MOEC_OK;
    if (!keep || !t->merges) st = oom_train(err);
    for (size_t i = s->m_n; !st && i-- > 0;) {
        uint64_t key = (uint64_t)(uint32_t)s->m[i].a << 32 | (uint32_t)s->m[i].b, v;
        if (tk_u64map_get(&seen, key, &v)) continue;
        if (!tk_u64map_put(&seen, key, 1)) st = oom_train(err);
        keep[i] = 1;
    }
    for (size_t i = 0; !st && i < s->m_n; i++)
        if (keep[i]) t->merges[t->n_merges++] = s->m[i];
    free(keep);
    tk_u64map_free(&seen);
    return st;
}

moec_status tk_bpe_trainer_train(tk_bpe_trainer *t, moec_error *err) {
    if (!t) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: NULL argument");
    if (t->trained) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: already trained");
    if (t->words.count == 0)
        return moec_err(err, MOEC_ERR_FORMAT, "empty corpus: the input has no text to train on");
    train_state s;
    memset(&s, 0, sizeof s);
    tk_u64map_init(&s.pmap);
    moec_status st = build_words(t, &s, err);
    if (!st) st = count_pairs(&s, err);
    int64_t stop_count = 0; /* count of the best pair left when stopping below min_frequency */
    while (!st && (int32_t)t->vocab.count < t->p.vocab_size) {
        if (s.h_n == 0) break;
        merge_cand top = heap_pop(&s);
        int64_t cur = s.p_cnt[top.pair];
        MOEC_ASSERT(cur >= 0);
        if (top.count != cur) { /* stale: back in with the current count, same word list */
            top.count = cur;
            if (!heap_push(&s, top)) st = oom_train(err);
            continue;
        }
        if (top.count < 1 || top.count < t->p.min_frequency) {
            stop_count = top.count;
            break;
        }
        int64_t z = new_token(t, &s, (int32_t)top.a, (int32_t)top.b);
        if (z < 0 || !grow((void **)&s.m, &s.m_cap, s.m_n + 1, sizeof *s.m)) {
            st = oom_train(err);
            break;
        }
        s.m[s.m_n++] = (merge_rule){(int32_t)top.a, (int32_t)top.b, (int32_t)z};
        t->st.last_count = top.count;
        for (uint32_t i = 0; !st && i < top.pos_n; i++)
            if (!merge_word(&s, s.pos[top.pos_off + i], (int32_t)top.a, (int32_t)top.b, (int32_t)z))
                st = oom_train(err);
        if (!st && !push_created(&s)) st = oom_train(err);
    }
    if (!st) st = keep_last_merges(t, &s, err);
    train_state_free(&s);
    if (st) return st;
    t->trained = 1;
    t->st.n_vocab = (int32_t)t->vocab.count;
    t->st.n_merges = (int32_t)t->n_merges;
    t->st.n_unique_words = (int64_t)t->words.count;
    if (t->st.n_vocab < t->p.vocab_size) {
        t->st.stopped_early = 1;
        if (!t->p.allow_smaller) {
            if (stop_count > 0)
                return moec_err(err, MOEC_ERR_INVALID_ARG,
                                "a vocabulary larger than the data supports: %d tokens asked, the data "
                                "supports %d (the most frequent remaining pair occurs %lld time%s, below "
                                "the min frequency %lld)",
                                t->p.vocab_size, t->st.n_vocab, (long long)stop_count,
                                stop_count == 1 ? "" : "s", (long long)t->p.min_frequency);
            return moec_err(err, MOEC_ERR_INVALID_ARG,
                            "a vocabulary larger than the data supports: %d tokens asked, the data "
                            "supports %d (no adjacent pair is left to merge)",
                            t->p.vocab_size, t->st.n_vocab);
        }
    }
    return MOEC_OK;
}

/* ---------------------------------------------------------------- output */

moec_status tk_bpe_trainer_json(const tk_bpe_trainer *t, char **json, size_t *len, moec_error *err) {
    if (!t || !json || !len) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: NULL argument");
    if (!t->trained) return moec_err(err, MOEC_ERR_INVALID_ARG, "tokenizer train: not trained yet");
    *json = NULL;
    *len = 0;
    jwriter w = {0};
    jw_s(&w, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    int first = 1;
    for (size_t i = 0; i < t->p.n_specials; i++) {
        const char *s = t->p.specials[i];
        size_t n = strlen(s);
        int32_t id = -1;
        int found = tk_strmap_get(&t->vocab, s, n, &id);
        MOEC_ASSERT(found);
        int dup = 0; /* a repeated special is listed once */
        for (size_t j = 0; j < i; j++) dup |= !strcmp(t->p.specials[j], s);
        if (dup) continue;
        jw_s(&w, first ? "\n    {\n      \"id\": " : ",\n    {\n      \"id\": ");
        first = 0;
        jw_int(&w, id);
        jw_s(&w, ",\n      \"content\": ");
        jw_str(&w, s, n);
        jw_s(&w, ",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n"
                 "      \"normalized\": false,\n      \"special\": true\n    }");
    }
    jw_s(&w, first ? "],\n" : "\n  ],\n");
    jw_pipeline(&w);
    jw_s(&w, ",\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
             "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
             "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
             "    \"vocab\": {");
    for (size_t id = 0; id < t->vocab.count; id++) {
        size_t n;
        const char *s = tk_strmap_key(&t->vocab, id, &n);
        jw_s(&w, id ? ",\n      " : "\n      ");
        jw_str(&w, s, n);
        jw_s(&w, ": ");
        jw_int(&w, (long long)id);
    }
    jw_s(&w, "\n    },\n    \"merges\": [");
    for (size_t i = 0; i < t->n_merges; i++) {
        size_t na, nb;
        const char *sa = tk_strmap_key(&t->vocab, (size_t)t->merges[i].a, &na);
        const char *sb = tk_strmap_key(&t->vocab, (size_t)t->merges[i].b, &nb);
        jw_s(&w, i ? ",\n      [" : "\n      [");
        jw_str(&w, sa, na);
        jw_s(&w, ", ");
        jw_str(&w, sb, nb);
        jw_s(&w, "]");
    }
    jw_s(&w, t->n_merges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
    if (w.oom || !tk_buf_reserve(&w.b, 1)) {
        tk_buf_free(&w.b);
        return oom_train(err);
    }
    w.b.p[w.b.n] = 0;
    *json = w.b.p;
    *len = w.b.n;
    return MOEC_OK;
}

void tk_bpe_trainer_stats(const tk_bpe_trainer *t, tk_bpe_train_stats *s) {
    if (!s) return;
    memset(s, 0, sizeof *s);
    if (!t) return;
    *s = t->st;
    s->n_unique_words = (int64_t)t->words.count;
    if (!t->trained) s->n_vocab = (int32_t)t->vocab.count;
}
