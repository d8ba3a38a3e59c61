/* decoder.c — tokenizer.json decoders (see decoder.h), mirroring HF `tokenizers`
 * decoders module decode_chain: each decoder maps a list of token strings to a new list, and the
 * final list is concatenated. Not an encoder-side component. */
#include "text/decoder.h"

#include "core/error.h"
#include "text/jsonutil.h"
#include "text/regex.h"

#include <stdlib.h>
#include <string.h>

typedef enum {
    DC_SEQUENCE,
    DC_BYTELEVEL,
    DC_REPLACE,
    DC_BYTE_FALLBACK,
    DC_FUSE,
    DC_STRIP,
    DC_METASPACE
} dc_type;

struct tk_decoder {
    dc_type type;
    tk_decoder **kids;
    size_t n_kids;
    tk_regex *re;  /* Replace */
    char *content; /* Replace */
    size_t content_len;
    uint32_t ch;   /* Strip content, Metaspace replacement */
    size_t start, stop; /* Strip */
    int prepend;   /* Metaspace: prepend_scheme != never */
};

void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_kids; i++) tk_decoder_free(d->kids[i]);
    free(d->kids);
    tk_regex_free(d->re);
    free(d->content);
    free(d);
}

/* ---------------------------------------------------------------- parsing */

moec_status tk_decoder_parse(tk_decoder **out, const cJSON *j, const char *where, moec_error *err) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return MOEC_OK;
    const char *type;
    size_t tlen;
    moec_status st = tk_json_str(j, "type", 1, &type, &tlen, where, err);
    if (st) return st;
    tk_decoder *d = calloc(1, sizeof *d);
    if (!d) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    if (!strcmp(type, "Sequence")) {
        d->type = DC_SEQUENCE;
        const cJSON *arr = tk_json_get(j, "decoders");
        if (!cJSON_IsArray(arr)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s.decoders: expected an array", where);
            goto fail;
        }
        size_t n = (size_t)cJSON_GetArraySize(arr);
        d->kids = calloc(n ? n : 1, sizeof *d->kids);
        if (!d->kids) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            goto fail;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            char w[320];
            snprintf(w, sizeof w, "%s.decoders[%zu]", where, d->n_kids);
            tk_decoder *kid = NULL;
            if ((st = tk_decoder_parse(&kid, it, w, err))) goto fail;
            if (kid) d->kids[d->n_kids++] = kid;
        }
    } else if (!strcmp(type, "ByteLevel")) {
        d->type = DC_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = DC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = DC_FUSE;
    } else if (!strcmp(type, "Replace")) {
        d->type = DC_REPLACE;
        const char *s;
        size_t n;
        if ((st = tk_json_str(j, "content", 1, &s, &n, where, err))) goto fail;
        if (!(d->content = malloc(n + 1))) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            goto fail;
        }
        memcpy(d->content, s, n + 1);
        d->content_len = n;
        if ((st = tk_pattern_parse(&d->re, j, "pattern", where, err))) goto fail;
    } else if (!strcmp(type, "Strip")) {
        d->type = DC_STRIP;
        int64_t a, b;
        if (!tk_json_get(j, "content")) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing field 'content'", where);
            goto fail;
        }
        if ((st = tk_json_char(j, "content", ' ', &d->ch, where, err))) goto fail;
        if ((st = tk_json_uint(j, "start", 1, 0, INT32_MAX, &a, where, err))) goto fail;
        if ((st = tk_json_uint(j, "stop", 1, 0, INT32_MAX, &b, where, err))) goto fail;
        d->start = (size_t)a;
        d->stop = (size_t)b;
    } else if (!strcmp(type, "Metaspace")) {
        d->type = DC_METASPACE;
        if ((st = tk_json_char(j, "replacement", 0x2581, &d->ch, where, err))) goto fail;
        const char *ps;
        size_t pn;
        if ((st = tk_json_str(j, "prepend_scheme", 0, &ps, &pn, where, err))) goto fail;
        if (ps) {
            if (strcmp(ps, "always") && strcmp(ps, "first") && strcmp(ps, "never")) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s.prepend_scheme: unknown value '%s'", where, ps);
                goto fail;
            }
            d->prepend = strcmp(ps, "never") != 0;
        } else if ((st = tk_json_bool(j, "add_prefix_space", 1, &d->prepend, where, err))) {
            goto fail;
        }
    } else {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", where, type);
        goto fail;
    }
    *out = d;
    return MOEC_OK;
fail:
    tk_decoder_free(d);
    return st;
}

/* ---------------------------------------------------------------- token lists */

/* A list of token strings stored as (offset, length) into one buffer while it is built. */
typedef struct {
    tk_buf bytes;
    size_t *off, *len;
    size_t n, cap;
} toklist;

static void toklist_free(toklist *t) {
    tk_buf_free(&t->bytes);
    free(t->off);
    free(t->len);
    memset(t, 0, sizeof *t);
}

static int toklist_begin(toklist *t) { /* opens a new, empty token */
    /* the byte buffer exists once a token does, so bytes.p + off is never NULL + 0 (an empty
     * token from Fuse of zero ids, read by the next step) */
    if (!tk_buf_reserve(&t->bytes, 0)) return 0;
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        size_t *no = realloc(t->off, nc * sizeof *no);
        if (!no) return 0;
        t->off = no;
        size_t *nl = realloc(t->len, nc * sizeof *nl);
        if (!nl) return 0;
        t->len = nl;
        t->cap = nc;
    }
    t->off[t->n] = t->bytes.n;
    t->len[t->n] = 0;
    t->n++;
    return 1;
}

static int toklist_put(toklist *t, const void *s, size_t n) { /* appends to the open token */
    if (!tk_buf_put(&t->bytes, s, n)) return 0;
    t->len[t->n - 1] += n;
    return 1;
}

static int toklist_add(toklist *t, const void *s, size_t n) {
    return toklist_begin(t) && toklist_put(t, s, n);
}

/* <0xHH> -> HH as Rust's u8::from_str_radix(&token[3..5], 16) (which also accepts "+H"). */
static int byte_token(const char *s, size_t n, unsigned char *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    unsigned v = 0;
    int digits = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        if (i == 3 && c == '+') continue;
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        v = v * 16 + d;
        digits++;
    }
    if (!digits) return 0;
    *byte = (unsigned char)v;
    return 1;
}

/* Bytes of a ByteLevel token: each character mapped back to its byte, or the token's own UTF-8
 * when any character is outside the 256-character alphabet (HF's fallback for added tokens). */
static int bytelevel_bytes(const char *s, size_t n, tk_buf *out) {
    size_t start = out->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += tk_utf8_next(s + i, n - i, &cp);
        int b = tk_bytelevel_byte(cp);
        if (b < 0) {
            out->n = start;
            return tk_buf_put(out, s, n);
        }
        char c = (char)b;
        if (!tk_buf_put(out, &c, 1)) return 0;
    }
    return 1;
}

static moec_status oom(moec_error *err) { return moec_err(err, MOEC_ERR_OOM, "decoder: out of memory"); }

/* One decode_chain step: in -> out (out starts empty). */
static moec_status chain(const tk_decoder *d, const toklist *in, toklist *out, moec_error *err);
static moec_status chain(const tk_decoder *d, const toklist *in, toklist *out, moec_error *err) {
    const char *base = in->bytes.p;
    switch (d->type) {
    case DC_SEQUENCE: { /* nested: run the children in turn, ping-ponging two lists */
        toklist a = {0}, b = {0};
        moec_status st = MOEC_OK;
        for (size_t i = 0; i < in->n && !st; i++)
            if (!toklist_add(&a, base + in->off[i], in->len[i])) st = oom(err);
        for (size_t k = 0; k < d->n_kids && !st; k++) {
            b.n = 0;
            b.bytes.n = 0;
            st = chain(d->kids[k], &a, &b, err);
            toklist t = a;
            a = b;
            b = t;
        }
        for (size_t i = 0; i < a.n && !st; i++)
            if (!toklist_add(out, a.bytes.p + a.off[i], a.len[i])) st = oom(err);
        toklist_free(&a);
        toklist_free(&b);
        return st;
    }
    case DC_BYTELEVEL: {
        tk_buf raw = {0};
        int ok = 1;
        for (size_t i = 0; ok && i < in->n; i++) ok = bytelevel_bytes(base + in->off[i], in->len[i], &raw);
        ok = ok && toklist_begin(out) && tk_buf_reserve(&raw, 0);
        if (ok) {
            size_t before = out->bytes.n;
            ok = tk_utf8_lossy(&out->bytes, raw.p ? raw.p : "", raw.n);
            out->len[out->n - 1] = out->bytes.n - before;
        }
        tk_buf_free(&raw);
        return ok ? MOEC_OK : oom(err);
    }
    case DC_FUSE:
        if (!toklist_begin(out)) return oom(err);
        for (size_t i = 0; i < in->n; i++)
            if (!toklist_put(out, base + in->off[i], in->len[i])) return oom(err);
        return MOEC_OK;
    case DC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = base + in->off[i];
            size_t n = in->len[i], prev = 0;
            tk_spans sp = {0};
            moec_status st = tk_regex_find_all(d->re, s, n, &sp, err);
            if (st) return st;
            int ok = toklist_begin(out);
            for (size_t k = 0; ok && k < sp.n; k++) {
                ok = toklist_put(out, s + prev, sp.v[k].start - prev) &&
                     toklist_put(out, d->content, d->content_len);
                prev = sp.v[k].end;
            }
            ok = ok && toklist_put(out, s + prev, n - prev);
            tk_spans_free(&sp);
            if (!ok) return oom(err);
        }
        return MOEC_OK;
    case DC_BYTE_FALLBACK: {
        tk_buf pending = {0};
        int ok = 1;
        for (size_t i = 0; ok && i <= in->n; i++) {
            unsigned char byte;
            if (i < in->n && byte_token(base + in->off[i], in->len[i], &byte)) {
                ok = tk_buf_put(&pending, &byte, 1);
                continue;
            }
            if (pending.n) { /* flush: valid UTF-8 as one token, else one U+FFFD per byte */
                if (tk_utf8_validate(pending.p, pending.n) == pending.n) {
                    ok = toklist_add(out, pending.p, pending.n);
                } else {
                    for (size_t k = 0; ok && k < pending.n; k++) ok = toklist_add(out, "\xEF\xBF\xBD", 3);
                }
                pending.n = 0;
            }
            if (ok && i < in->n) ok = toklist_add(out, base + in->off[i], in->len[i]);
        }
        tk_buf_free(&pending);
        return ok ? MOEC_OK : oom(err);
    }
    case DC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = base + in->off[i];
            size_t n = in->len[i], a = 0, b = n;
            uint32_t cp;
            for (size_t k = 0; k < d->start && a < n; k++) {
                size_t l = tk_utf8_next(s + a, n - a, &cp);
                if (cp != d->ch) break;
                a += l;
            }
            for (size_t k = 0; k < d->stop && b > a; k++) {
                size_t l = tk_utf8_prev(s, b, &cp);
                if (cp != d->ch) break;
                b -= l;
            }
            if (!toklist_add(out, s + a, b - a)) return oom(err);
        }
        return MOEC_OK;
    case DC_METASPACE: {
        char rep[4];
        size_t rn = tk_utf8_encode(d->ch, rep);
        for (size_t i = 0; i < in->n; i++) {
            const char *s = base + in->off[i];
            size_t n = in->len[i], prev = 0;
            if (!toklist_begin(out)) return oom(err);
            for (size_t k = 0; k + rn <= n;) {
                if (!memcmp(s + k, rep, rn)) {
                    /* the first token loses every replacement character, later ones get spaces */
                    if (!toklist_put(out, s + prev, k - prev) ||
                        (!(i == 0 && d->prepend) && !toklist_put(out, " ", 1)))
                        return oom(err);
                    k += rn;
                    prev = k;
                } else {
                    uint32_t cp;
                    k += tk_utf8_next(s + k, n - k, &cp);
                }
            }
            if (!toklist_put(out, s + prev, n - prev)) return oom(err);
        }
        return MOEC_OK;
    }
    }
    return moec_err(err, MOEC_ERR_UNSUPPORTED, "decoder: unknown type");
}

moec_status tk_decode(const tk_decoder *d, const tk_strref *toks, size_t n, tk_buf *out,
                      moec_error *err) {
    if (!d) {
        for (size_t i = 0; i < n; i++)
            if ((i && !tk_buf_put(out, " ", 1)) || !tk_buf_put(out, toks[i].p, toks[i].n)) return oom(err);
        return tk_buf_reserve(out, 0) ? MOEC_OK : oom(err);
    }
    toklist a = {0}, b = {0};
    moec_status st = MOEC_OK;
    for (size_t i = 0; i < n && !st; i++)
        if (!toklist_add(&a, toks[i].p, toks[i].n)) st = oom(err);
    if (!st) st = chain(d, &a, &b, err);
    for (size_t i = 0; i < b.n && !st; i++)
        if (!tk_buf_put(out, b.bytes.p + b.off[i], b.len[i])) st = oom(err);
    if (!st && !tk_buf_reserve(out, 0)) st = oom(err);
    toklist_free(&a);
    toklist_free(&b);
    return st;
}

/* ---------------------------------------------------------------- single tokens */

static int has_type(const tk_decoder *d, dc_type t) {
    if (!d) return 0;
    if (d->type == t) return 1;
    for (size_t i = 0; i < d->n_kids; i++)
        if (has_type(d->kids[i], t)) return 1;
    return 0;
}

/* Applies the position-independent per-token steps of d to cur (see tk_decoder_token_bytes). */
static moec_status token_steps(const tk_decoder *d, tk_buf *cur, moec_error *err) {
    if (d->type == DC_SEQUENCE) {
        for (size_t k = 0; k < d->n_kids; k++) {
            moec_status st = token_steps(d->kids[k], cur, err);
            if (st) return st;
        }
        return MOEC_OK;
    }
    unsigned char byte;
    if (d->type == DC_BYTE_FALLBACK && byte_token(cur->p, cur->n, &byte)) {
        cur->n = 0;
        return tk_buf_put(cur, &byte, 1) ? MOEC_OK : oom(err);
    }
    if (d->type != DC_REPLACE && d->type != DC_METASPACE) return MOEC_OK;
    toklist in = {0}, o = {0};
    tk_decoder tmp = *d;
    tmp.prepend = 0; /* position-independent: every replacement becomes a space */
    moec_status st = toklist_add(&in, cur->p, cur->n) ? chain(&tmp, &in, &o, err) : oom(err);
    if (!st) {
        cur->n = 0;
        for (size_t i = 0; !st && i < o.n; i++)
            if (!tk_buf_put(cur, o.bytes.p + o.off[i], o.len[i])) st = oom(err);
    }
    toklist_free(&in);
    toklist_free(&o);
    return st;
}

moec_status tk_decoder_token_bytes(const tk_decoder *d, const char *s, size_t n, tk_buf *out,
                                   moec_error *err) {
    if (has_type(d, DC_BYTELEVEL)) return bytelevel_bytes(s, n, out) ? MOEC_OK : oom(err);
    tk_buf cur = {0};
    moec_status st = tk_buf_put(&cur, s, n) && tk_buf_reserve(&cur, 0) ? MOEC_OK : oom(err);
    if (!st && d) st = token_steps(d, &cur, err);
    if (!st && !tk_buf_put(out, cur.p, cur.n)) st = oom(err);
    tk_buf_free(&cur);
    return st;
}
