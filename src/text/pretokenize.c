/* pretokenize.c — tokenizer.json pre-tokenizers (see pretokenize.h), mirroring HF `tokenizers`
 * pre_tokenizers module and NormalizedString::split's five delimiter behaviors. Not an
 * offset-tracking PreTokenizedString: moec only needs the words. */
#include "text/pretokenize.h"

#include "core/error.h"
#include "text/jsonutil.h"
#include "text/regex.h"

#include <stdlib.h>
#include <string.h>

/* The regex HF's ByteLevel pre-tokenizer uses when use_regex is true (GPT-2's). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* HF's Whitespace pre-tokenizer, `\w+|[^\w\s]+` in the Rust regex crate (not Oniguruma), whose
 * \w is Alphabetic | M | Nd | Pc | Join_Control; spelled out in PCRE2 syntax. */
#define RUST_WORD "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
static const char WHITESPACE_PATTERN[] = "[" RUST_WORD "]+|[^" RUST_WORD "\\p{White_Space}]+";

typedef enum { BH_REMOVED, BH_ISOLATED, BH_MERGED_PREV, BH_MERGED_NEXT, BH_CONTIGUOUS } behavior;

typedef enum {
    PT_SEQUENCE,
    PT_BYTELEVEL,
    PT_SPLIT,
    PT_DIGITS,
    PT_METASPACE,
    PT_WHITESPACE,
    PT_WHITESPACE_SPLIT,
    PT_PUNCTUATION,
    PT_CHAR_DELIMITER,
    PT_BERT
} pt_type;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

struct tk_pretok {
    pt_type type;
    tk_pretok **kids; /* Sequence */
    size_t n_kids;
    tk_regex *re;     /* ByteLevel (use_regex), Split, Whitespace */
    behavior bh;      /* Split, Punctuation */
    int invert;       /* Split */
    int add_prefix_space; /* ByteLevel */
    int individual;   /* Digits */
    uint32_t ch;      /* Metaspace replacement, CharDelimiterSplit delimiter */
    prepend_scheme prepend;
    int split;        /* Metaspace */
};

/* ---------------------------------------------------------------- pieces */

int tk_pieces_push(tk_pieces *p, size_t off, size_t len, int first) {
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 32;
        tk_piece *nv = realloc(p->v, nc * sizeof *nv);
        if (!nv) return 0;
        p->v = nv;
        p->cap = nc;
    }
    p->v[p->n].off = off;
    p->v[p->n].len = len;
    p->v[p->n].first = first;
    p->n++;
    return 1;
}

void tk_pieces_free(tk_pieces *p) {
    if (!p) return;
    free(p->v);
    memset(p, 0, sizeof *p);
}

void tk_pretok_free(tk_pretok *pt) {
    if (!pt) return;
    for (size_t i = 0; i < pt->n_kids; i++) tk_pretok_free(pt->kids[i]);
    free(pt->kids);
    tk_regex_free(pt->re);
    free(pt);
}

/* ---------------------------------------------------------------- parsing */

static moec_status parse_behavior(const cJSON *j, const char *where, behavior def, behavior *out,
                                  moec_error *err) {
    const char *s;
    size_t n;
    moec_status st = tk_json_str(j, "behavior", 0, &s, &n, where, err);
    if (st) return st;
    if (!s) *out = def;
    else if (!strcmp(s, "Removed")) *out = BH_REMOVED;
    else if (!strcmp(s, "Isolated")) *out = BH_ISOLATED;
    else if (!strcmp(s, "MergedWithPrevious")) *out = BH_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext")) *out = BH_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous")) *out = BH_CONTIGUOUS;
    else return moec_err(err, MOEC_ERR_FORMAT, "%s.behavior: unknown value '%s'", where, s);
    return MOEC_OK;
}

moec_status tk_pretok_parse(tk_pretok **out, const cJSON *j, const char *where, moec_error *err) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return MOEC_OK;
    const char *type;
    size_t tlen;
    moec_status st = tk_json_str(j, "type", 1, &type, &tlen, where, err);
    if (st) return st;
    tk_pretok *pt = calloc(1, sizeof *pt);
    if (!pt) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    if (!strcmp(type, "Sequence")) {
        pt->type = PT_SEQUENCE;
        const cJSON *arr = tk_json_get(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s.pretokenizers: expected an array", where);
            goto fail;
        }
        size_t n = (size_t)cJSON_GetArraySize(arr);
        pt->kids = calloc(n ? n : 1, sizeof *pt->kids);
        if (!pt->kids) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            goto fail;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            char w[320];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, pt->n_kids);
            tk_pretok *kid = NULL;
            if ((st = tk_pretok_parse(&kid, it, w, err))) goto fail;
            if (kid) pt->kids[pt->n_kids++] = kid;
        }
    } else if (!strcmp(type, "ByteLevel")) {
        pt->type = PT_BYTELEVEL;
        int use_regex;
        if ((st = tk_json_bool(j, "add_prefix_space", 1, &pt->add_prefix_space, where, err))) goto fail;
        if ((st = tk_json_bool(j, "use_regex", 1, &use_regex, where, err))) goto fail;
        if (use_regex &&
            (st = tk_regex_compile(&pt->re, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, where, err)))
            goto fail;
    } else if (!strcmp(type, "Split")) {
        pt->type = PT_SPLIT;
        if ((st = tk_pattern_parse(&pt->re, j, "pattern", where, err))) goto fail;
        if ((st = parse_behavior(j, where, BH_REMOVED, &pt->bh, err))) goto fail;
        if (!tk_json_get(j, "behavior")) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'behavior'", where);
            goto fail;
        }
        if ((st = tk_json_bool(j, "invert", 0, &pt->invert, where, err))) goto fail;
    } else if (!strcmp(type, "Digits")) {
        pt->type = PT_DIGITS;
        if ((st = tk_json_bool(j, "individual_digits", 0, &pt->individual, where, err))) goto fail;
    } else if (!strcmp(type, "Metaspace")) {
        pt->type = PT_METASPACE;
        if ((st = tk_json_char(j, "replacement", 0x2581, &pt->ch, where, err))) goto fail;
        const char *ps;
        size_t pn;
        if ((st = tk_json_str(j, "prepend_scheme", 0, &ps, &pn, where, err))) goto fail;
        if (ps) {
            if (!strcmp(ps, "always")) pt->prepend = PREPEND_ALWAYS;
            else if (!strcmp(ps, "first")) pt->prepend = PREPEND_FIRST;
            else if (!strcmp(ps, "never")) pt->prepend = PREPEND_NEVER;
            else {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s.prepend_scheme: unknown value '%s'", where, ps);
                goto fail;
            }
        } else { /* files older than prepend_scheme carry add_prefix_space */
            int aps;
            if ((st = tk_json_bool(j, "add_prefix_space", 1, &aps, where, err))) goto fail;
            pt->prepend = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
        }
        if ((st = tk_json_bool(j, "split", 1, &pt->split, where, err))) goto fail;
    } else if (!strcmp(type, "Whitespace")) {
        pt->type = PT_WHITESPACE;
        if ((st = tk_regex_compile_native(&pt->re, WHITESPACE_PATTERN, sizeof WHITESPACE_PATTERN - 1,
                                          where, err)))
            goto fail;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        pt->type = PT_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Punctuation")) {
        pt->type = PT_PUNCTUATION;
        if ((st = parse_behavior(j, where, BH_ISOLATED, &pt->bh, err))) goto fail;
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        pt->type = PT_CHAR_DELIMITER;
        if (!tk_json_get(j, "delimiter")) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'delimiter'", where);
            goto fail;
        }
        if ((st = tk_json_char(j, "delimiter", 0, &pt->ch, where, err))) goto fail;
    } else if (!strcmp(type, "BertPreTokenizer")) {
        pt->type = PT_BERT;
    } else {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported",
                      where, type);
        goto fail;
    }
    *out = pt;
    return MOEC_OK;
fail:
    tk_pretok_free(pt);
    return st;
}

/* ---------------------------------------------------------------- splitting */

/* One entry of HF's Pattern::find_matches: a stretch of the piece and whether it matched. */
typedef struct {
    size_t start, end;
    int is_match;
} mspan;

typedef struct {
    mspan *v;
    size_t n, cap;
} mspans;

static int mspans_push(mspans *m, size_t a, size_t b, int is_match) {
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 32;
        mspan *nv = realloc(m->v, nc * sizeof *nv);
        if (!nv) return 0;
        m->v = nv;
        m->cap = nc;
    }
    m->v[m->n].start = a;
    m->v[m->n].end = b;
    m->v[m->n].is_match = is_match;
    m->n++;
    return 1;
}

/* Regex matches -> alternating (gap, match) stretches covering [0, n), as HF's find_matches. */
static int matches_from_spans(mspans *m, const tk_spans *sp, size_t n, int invert) {
    m->n = 0;
    if (n == 0) return mspans_push(m, 0, 0, invert);
    size_t prev = 0;
    for (size_t i = 0; i < sp->n; i++) {
        if (prev != sp->v[i].start && !mspans_push(m, prev, sp->v[i].start, invert)) return 0;
        if (!mspans_push(m, sp->v[i].start, sp->v[i].end, !invert)) return 0;
        prev = sp->v[i].end;
    }
    if (prev != n && !mspans_push(m, prev, n, invert)) return 0;
    return 1;
}

typedef int (*char_pred)(uint32_t cp, uint32_t arg);

static int pred_numeric(uint32_t cp, uint32_t arg) { (void)arg; return tk_is_numeric(cp); }
static int pred_space(uint32_t cp, uint32_t arg) { (void)arg; return tk_is_white_space(cp); }
static int pred_punct(uint32_t cp, uint32_t arg) { (void)arg; return tk_is_punct(cp); }
static int pred_char(uint32_t cp, uint32_t arg) { return cp == arg; }

/* Every character satisfying pred is its own match (HF's `impl Pattern for Fn(char) -> bool`). */
static int matches_from_pred(mspans *m, const char *s, size_t n, char_pred pred, uint32_t arg) {
    m->n = 0;
    if (n == 0) return mspans_push(m, 0, 0, 0);
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = tk_utf8_next(s + i, n - i, &cp);
        if (pred(cp, arg)) {
            if (last < i && !mspans_push(m, last, i, 0)) return 0;
            if (!mspans_push(m, i, i + k, 1)) return 0;
            last = i + k;
        }
        i += k;
    }
    if (last < n && !mspans_push(m, last, n, 0)) return 0;
    return 1;
}

/* NormalizedString::split: applies the delimiter behavior to the stretches of piece pc and
 * appends the non-empty results to out. Rewrites m in place. */
static int split_piece(tk_pieces *out, const tk_piece *pc, mspans *m, behavior bh) {
    size_t k = 0; /* number of merged stretches kept in m->v[0..k) */
    int prev_match = 0;
    switch (bh) {
    case BH_ISOLATED:
        for (size_t i = 0; i < m->n; i++) m->v[i].is_match = 0;
        k = m->n;
        break;
    case BH_REMOVED:
        k = m->n;
        break;
    case BH_CONTIGUOUS:
        for (size_t i = 0; i < m->n; i++) {
            int im = m->v[i].is_match;
            if (im == prev_match && k > 0) {
                m->v[k - 1].end = m->v[i].end;
            } else {
                m->v[k] = m->v[i];
                m->v[k].is_match = 0;
                k++;
            }
            prev_match = im;
        }
        break;
    case BH_MERGED_PREV:
        for (size_t i = 0; i < m->n; i++) {
            int im = m->v[i].is_match;
            if (im && !prev_match && k > 0) {
                m->v[k - 1].end = m->v[i].end;
            } else {
                m->v[k] = m->v[i];
                m->v[k].is_match = 0;
                k++;
            }
            prev_match = im;
        }
        break;
    case BH_MERGED_NEXT: {
        /* walk backwards, merging a match into the stretch that follows it */
        size_t w = m->n; /* kept stretches live in m->v[w..n) */
        for (size_t i = m->n; i-- > 0;) {
            mspan cur = m->v[i];
            if (cur.is_match && !prev_match && w < m->n) {
                m->v[w].start = cur.start;
            } else {
                w--;
                m->v[w] = cur;
                m->v[w].is_match = 0;
            }
            prev_match = cur.is_match;
        }
        memmove(m->v, m->v + w, (m->n - w) * sizeof *m->v);
        k = m->n - w;
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (m->v[i].is_match) continue; /* Removed */
        size_t a = m->v[i].start, b = m->v[i].end;
        if (a == b) continue;
        if (!tk_pieces_push(out, pc->off + a, b - a, pc->first && a == 0)) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- applying */

static moec_status oom(moec_error *err) {
    return moec_err(err, MOEC_ERR_OOM, "pre_tokenizer: out of memory");
}

static moec_status split_regex(const tk_regex *re, int invert, behavior bh, tk_buf *arena,
                               const tk_piece *pc, tk_pieces *out, mspans *m, moec_error *err) {
    tk_spans sp = {0};
    moec_status st = tk_regex_find_all(re, arena->p + pc->off, pc->len, &sp, err);
    if (!st && (!matches_from_spans(m, &sp, pc->len, invert) || !split_piece(out, pc, m, bh)))
        st = oom(err);
    tk_spans_free(&sp);
    return st;
}

static moec_status split_pred(char_pred pred, uint32_t arg, behavior bh, tk_buf *arena,
                              const tk_piece *pc, tk_pieces *out, mspans *m, moec_error *err) {
    if (!matches_from_pred(m, arena->p + pc->off, pc->len, pred, arg) || !split_piece(out, pc, m, bh))
        return oom(err);
    return MOEC_OK;
}

/* Runs one (non-Sequence) pre-tokenizer on piece pc, appending its words to out. New strings
 * go to the end of the arena, always reserved first so that pointers into it stay valid. */
static moec_status step(const tk_pretok *pt, tk_buf *arena, const tk_piece *pc, tk_pieces *out,
                        mspans *m, moec_error *err) {
    switch (pt->type) {
    case PT_SEQUENCE:
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "pre_tokenizer: nested Sequence");
    case PT_BYTELEVEL: {
        tk_piece cur = *pc;
        if (pt->add_prefix_space && (cur.len == 0 || arena->p[cur.off] != ' ')) {
            if (!tk_buf_reserve(arena, cur.len + 1)) return oom(err);
            size_t off = arena->n;
            arena->p[arena->n++] = ' ';
            memcpy(arena->p + arena->n, arena->p + cur.off, cur.len);
            arena->n += cur.len;
            cur.off = off;
            cur.len += 1;
        }
        size_t first_out = out->n;
        if (pt->re) {
            moec_status st = split_regex(pt->re, 0, BH_ISOLATED, arena, &cur, out, m, err);
            if (st) return st;
        } else if (cur.len && !tk_pieces_push(out, cur.off, cur.len, cur.first)) {
            return oom(err);
        }
        /* map every byte of the new words to the byte-level alphabet */
        for (size_t i = first_out; i < out->n; i++) {
            tk_piece *w = &out->v[i];
            if (w->len > SIZE_MAX / 4 || !tk_buf_reserve(arena, 2 * w->len)) return oom(err);
            size_t off = arena->n;
            tk_buf tmp = *arena; /* the reserve above means this append cannot reallocate */
            tmp.n = off;
            if (!tk_bytelevel_map(&tmp, arena->p + w->off, w->len)) return oom(err);
            MOEC_ASSERT(tmp.p == arena->p);
            arena->n = tmp.n;
            w->len = tmp.n - off;
            w->off = off;
        }
        return MOEC_OK;
    }
    case PT_SPLIT:
        return split_regex(pt->re, pt->invert, pt->bh, arena, pc, out, m, err);
    case PT_WHITESPACE:
        return split_regex(pt->re, 1, BH_REMOVED, arena, pc, out, m, err);
    case PT_DIGITS:
        return split_pred(pred_numeric, 0, pt->individual ? BH_ISOLATED : BH_CONTIGUOUS, arena, pc,
                          out, m, err);
    case PT_WHITESPACE_SPLIT:
        return split_pred(pred_space, 0, BH_REMOVED, arena, pc, out, m, err);
    case PT_PUNCTUATION:
        return split_pred(pred_punct, 0, pt->bh, arena, pc, out, m, err);
    case PT_CHAR_DELIMITER:
        return split_pred(pred_char, pt->ch, BH_REMOVED, arena, pc, out, m, err);
    case PT_BERT: {
        tk_pieces tmp = {0};
        moec_status st = split_pred(pred_space, 0, BH_REMOVED, arena, pc, &tmp, m, err);
        for (size_t i = 0; !st && i < tmp.n; i++)
            st = split_pred(pred_punct, 0, BH_ISOLATED, arena, &tmp.v[i], out, m, err);
        tk_pieces_free(&tmp);
        return st;
    }
    case PT_METASPACE: {
        char rep[4];
        size_t rn = tk_utf8_encode(pt->ch, rep);
        if (pc->len > SIZE_MAX / 8 || !tk_buf_reserve(arena, pc->len * 4 + 4)) return oom(err);
        size_t off = arena->n;
        const char *src = arena->p + pc->off;
        char *w = arena->p + off;
        size_t wn = 0;
        for (size_t i = 0; i < pc->len; i++) { /* replace ' ' by the replacement */
            if (src[i] == ' ') {
                memcpy(w + wn, rep, rn);
                wn += rn;
            } else {
                w[wn++] = src[i];
            }
        }
        int starts = wn >= rn && !memcmp(w, rep, rn);
        int prepend = !starts && (pt->prepend == PREPEND_ALWAYS ||
                                  (pt->prepend == PREPEND_FIRST && pc->first));
        if (prepend && wn) { /* HF's prepend() is a no-op on an empty string */
            memmove(w + rn, w, wn);
            memcpy(w, rep, rn);
            wn += rn;
        }
        arena->n += wn;
        tk_piece cur = {off, wn, pc->first};
        if (!pt->split) {
            if (wn && !tk_pieces_push(out, cur.off, cur.len, cur.first)) return oom(err);
            return MOEC_OK;
        }
        return split_pred(pred_char, pt->ch, BH_MERGED_NEXT, arena, &cur, out, m, err);
    }
    }
    return moec_err(err, MOEC_ERR_UNSUPPORTED, "pre_tokenizer: unknown type");
}

static moec_status run_one(const tk_pretok *pt, tk_buf *arena, tk_pieces *pieces, mspans *m,
                           moec_error *err) {
    if (pt->type == PT_SEQUENCE) {
        for (size_t i = 0; i < pt->n_kids; i++) {
            moec_status st = run_one(pt->kids[i], arena, pieces, m, err);
            if (st) return st;
        }
        return MOEC_OK;
    }
    tk_pieces out = {0};
    moec_status st = MOEC_OK;
    for (size_t i = 0; !st && i < pieces->n; i++) {
        tk_piece pc = pieces->v[i];
        st = step(pt, arena, &pc, &out, m, err);
    }
    if (st) {
        tk_pieces_free(&out);
        return st;
    }
    tk_pieces_free(pieces);
    *pieces = out;
    return MOEC_OK;
}

moec_status tk_pretokenize(const tk_pretok *pt, tk_buf *arena, tk_pieces *pieces, moec_error *err) {
    if (!pt) return MOEC_OK;
    mspans m = {0};
    moec_status st = run_one(pt, arena, pieces, &m, err);
    free(m.v);
    return st;
}
