/* normalize.c — tokenizer.json normalizers (see normalize.h). Unicode normalization forms and
 * lowercase mappings come from utf8proc; the rest mirrors HF `tokenizers` normalizers module.
 * Not an offset-tracking NormalizedString: moec only needs the ids. */
#include "text/normalize.h"

#include "core/error.h"
#include "text/jsonutil.h"
#include "text/regex.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef enum {
    NZ_SEQUENCE,
    NZ_NFC,
    NZ_NFD,
    NZ_NFKC,
    NZ_NFKD,
    NZ_LOWERCASE,
    NZ_REPLACE,
    NZ_PREPEND,
    NZ_STRIP,
    NZ_STRIP_ACCENTS,
    NZ_BYTELEVEL
} nz_type;

struct tk_normalizer {
    nz_type type;
    tk_normalizer **kids; /* Sequence */
    size_t n_kids;
    tk_regex *re;  /* Replace */
    char *content; /* Replace content, Prepend prefix */
    size_t content_len;
    int left, right; /* Strip */
};

void tk_normalizer_free(tk_normalizer *nz) {
    if (!nz) return;
    for (size_t i = 0; i < nz->n_kids; i++) tk_normalizer_free(nz->kids[i]);
    free(nz->kids);
    tk_regex_free(nz->re);
    free(nz->content);
    free(nz);
}

/* ---------------------------------------------------------------- parsing */

static char *dup_bytes(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

moec_status tk_normalizer_parse(tk_normalizer **out, const cJSON *j, const char *where,
                                moec_error *err) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return MOEC_OK;
    const char *type;
    size_t tlen;
    moec_status st = tk_json_str(j, "type", 1, &type, &tlen, where, err);
    if (st) return st;
    tk_normalizer *nz = calloc(1, sizeof *nz);
    if (!nz) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    if (!strcmp(type, "Sequence")) {
        nz->type = NZ_SEQUENCE;
        const cJSON *arr = tk_json_get(j, "normalizers");
        if (!cJSON_IsArray(arr)) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s.normalizers: expected an array", where);
            goto fail;
        }
        size_t n = (size_t)cJSON_GetArraySize(arr);
        nz->kids = calloc(n ? n : 1, sizeof *nz->kids);
        if (!nz->kids) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            goto fail;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            char w[320];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, nz->n_kids);
            tk_normalizer *kid = NULL;
            if ((st = tk_normalizer_parse(&kid, it, w, err))) goto fail;
            if (kid) nz->kids[nz->n_kids++] = kid;
        }
    } else if (!strcmp(type, "NFC")) {
        nz->type = NZ_NFC;
    } else if (!strcmp(type, "NFD")) {
        nz->type = NZ_NFD;
    } else if (!strcmp(type, "NFKC")) {
        nz->type = NZ_NFKC;
    } else if (!strcmp(type, "NFKD")) {
        nz->type = NZ_NFKD;
    } else if (!strcmp(type, "Lowercase")) {
        nz->type = NZ_LOWERCASE;
    } else if (!strcmp(type, "StripAccents")) {
        nz->type = NZ_STRIP_ACCENTS;
    } else if (!strcmp(type, "ByteLevel")) {
        nz->type = NZ_BYTELEVEL;
    } else if (!strcmp(type, "Strip")) {
        nz->type = NZ_STRIP;
        if ((st = tk_json_bool(j, "strip_left", 1, &nz->left, where, err))) goto fail;
        if ((st = tk_json_bool(j, "strip_right", 1, &nz->right, where, err))) goto fail;
    } else if (!strcmp(type, "Replace") || !strcmp(type, "Prepend")) {
        int is_rep = type[0] == 'R';
        nz->type = is_rep ? NZ_REPLACE : NZ_PREPEND;
        const char *s;
        size_t n;
        if ((st = tk_json_str(j, is_rep ? "content" : "prepend", 1, &s, &n, where, err))) goto fail;
        if (!(nz->content = dup_bytes(s, n))) {
            st = moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
            goto fail;
        }
        nz->content_len = n;
        if (is_rep && (st = tk_pattern_parse(&nz->re, j, "pattern", where, err))) goto fail;
    } else {
        st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", where,
                      type);
        goto fail;
    }
    *out = nz;
    return MOEC_OK;
fail:
    tk_normalizer_free(nz);
    return st;
}

/* ---------------------------------------------------------------- applying */

static moec_status oom(moec_error *err) { return moec_err(err, MOEC_ERR_OOM, "normalizer: out of memory"); }

static moec_status apply_unicode(nz_type t, const char *s, size_t n, tk_buf *out, moec_error *err) {
    int opts = UTF8PROC_STABLE;
    if (t == NZ_NFC || t == NZ_NFKC) opts |= UTF8PROC_COMPOSE;
    else opts |= UTF8PROC_DECOMPOSE;
    if (t == NZ_NFKC || t == NZ_NFKD) opts |= UTF8PROC_COMPAT;
    if (n == 0) return MOEC_OK;
    if (n > (size_t)INT32_MAX) return moec_err(err, MOEC_ERR_INVALID_ARG, "normalizer: text too long");
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      (utf8proc_option_t)opts);
    if (r < 0) {
        free(dst);
        if (r == UTF8PROC_ERROR_NOMEM) return oom(err);
        return moec_err(err, MOEC_ERR_INVALID_ARG, "normalizer: utf8proc: %s", utf8proc_errmsg(r));
    }
    int ok = tk_buf_put(out, dst, (size_t)r);
    free(dst);
    return ok ? MOEC_OK : oom(err);
}

static moec_status apply_one(const tk_normalizer *nz, const char *s, size_t n, tk_buf *out,
                             moec_error *err) {
    out->n = 0;
    switch (nz->type) {
    case NZ_NFC: case NZ_NFD: case NZ_NFKC: case NZ_NFKD:
        return apply_unicode(nz->type, s, n, out, err);
    case NZ_LOWERCASE:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            i += tk_utf8_next(s + i, n - i, &cp);
            int ok;
            if (cp == 0x130) /* the one unconditional multi-char lowercase mapping (SpecialCasing) */
                ok = tk_buf_put(out, "i\xCC\x87", 3);
            else
                ok = tk_buf_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
            if (!ok) return oom(err);
        }
        return MOEC_OK;
    case NZ_STRIP_ACCENTS:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t k = tk_utf8_next(s + i, n - i, &cp);
            utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
            int mark = c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
            if (!mark && !tk_buf_put(out, s + i, k)) /* HF drops every mark, not only Mn */
                return oom(err);
            i += k;
        }
        return MOEC_OK;
    case NZ_BYTELEVEL:
        return tk_bytelevel_map(out, s, n) ? MOEC_OK : oom(err);
    case NZ_STRIP: {
        size_t a = 0, b = n;
        uint32_t cp;
        while (nz->left && a < b) {
            size_t k = tk_utf8_next(s + a, b - a, &cp);
            if (!tk_is_white_space(cp)) break;
            a += k;
        }
        while (nz->right && b > a) {
            size_t k = tk_utf8_prev(s + a, b - a, &cp);
            if (!tk_is_white_space(cp)) break;
            b -= k;
        }
        return tk_buf_put(out, s + a, b - a) ? MOEC_OK : oom(err);
    }
    case NZ_PREPEND:
        if (n && !tk_buf_put(out, nz->content, nz->content_len)) return oom(err);
        return tk_buf_put(out, s, n) ? MOEC_OK : oom(err);
    case NZ_REPLACE: {
        tk_spans sp = {0};
        moec_status st = tk_regex_find_all(nz->re, s, n, &sp, err);
        size_t prev = 0;
        for (size_t i = 0; !st && i < sp.n; i++) {
            if (!tk_buf_put(out, s + prev, sp.v[i].start - prev) ||
                !tk_buf_put(out, nz->content, nz->content_len))
                st = oom(err);
            prev = sp.v[i].end;
        }
        if (!st && !tk_buf_put(out, s + prev, n - prev)) st = oom(err);
        tk_spans_free(&sp);
        return st;
    }
    case NZ_SEQUENCE: {
        if (!tk_buf_put(out, s, n)) return oom(err);
        tk_buf tmp = {0};
        moec_status st = MOEC_OK;
        for (size_t i = 0; !st && i < nz->n_kids; i++) {
            st = apply_one(nz->kids[i], out->p, out->n, &tmp, err);
            tk_buf t = *out;
            *out = tmp;
            tmp = t;
        }
        tk_buf_free(&tmp);
        return st;
    }
    }
    return moec_err(err, MOEC_ERR_UNSUPPORTED, "normalizer: unknown type");
}

moec_status tk_normalize(const tk_normalizer *nz, const char *s, size_t n, tk_buf *out,
                         moec_error *err) {
    if (!nz) {
        out->n = 0;
        return tk_buf_put(out, s, n) ? MOEC_OK : oom(err);
    }
    /* a zero-length buffer still needs a valid pointer for callers that index it */
    if (!tk_buf_reserve(out, 1)) return oom(err);
    return apply_one(nz, s, n, out, err);
}
