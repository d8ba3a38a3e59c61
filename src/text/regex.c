/* regex.c — Oniguruma-to-PCRE2 translation and onig-style match iteration (see regex.h).
 * Not a regex engine: PCRE2 does the matching. */
#include "text/regex.h"

#include "core/error.h"
#include "core/mem.h"
#include "text/jsonutil.h"
#include "text/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

struct tk_regex {
    pcre2_code *code;
};

/* PCRE2 allocates (compiled patterns, match data, heap frames, JIT stacks) through one general
 * context whose callbacks are moec's (core/mem.h), so allocation-failure tests reach its error
 * paths too. Made before main, never freed; NULL (PCRE2's own malloc) if even that failed. */
static void *pcre2_alloc(PCRE2_SIZE n, void *data) {
    (void)data;
    return moec_lib_malloc(n);
}
static void pcre2_dealloc(void *p, void *data) {
    (void)data;
    moec_lib_free(p);
}
static pcre2_general_context *g_pcre2_ctx;
__attribute__((constructor)) static void regex_make_context(void) {
    g_pcre2_ctx = pcre2_general_context_create(pcre2_alloc, pcre2_dealloc, NULL);
}

/* ---------------------------------------------------------------- translation */

#define WORD_SET "\\p{Alphabetic}\\p{M}\\p{N}\\p{Pc}" /* onig Unicode word */
#define HEX_SET "0-9a-fA-F"

/* Rewrites the escapes whose meaning differs between the two engines. Tracks whether we are
 * inside a bracket class because a negated set can only be spelled outside one. */
static int translate(const char *p, size_t n, tk_buf *out) {
    int in_class = 0;
    size_t class_start = 0; /* out position just after '[' or '[^' */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            const char *rep = NULL;
            switch (e) {
            case 's': rep = "\\p{White_Space}"; break;
            case 'S': rep = "\\P{White_Space}"; break;
            case 'w': rep = in_class ? WORD_SET : "[" WORD_SET "]"; break;
            case 'W': rep = in_class ? NULL : "[^" WORD_SET "]"; break;
            case 'h': rep = in_class ? HEX_SET : "[" HEX_SET "]"; break;
            case 'H': rep = in_class ? NULL : "[^" HEX_SET "]"; break;
            default: break;
            }
            if (rep) {
                if (!tk_buf_put(out, rep, strlen(rep))) return 0;
                i++;
                continue;
            }
            if (e == 'u' && i + 5 < n) {
                int ok = 1;
                for (int k = 2; k < 6; k++) {
                    char h = p[i + (size_t)k];
                    ok &= (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
                }
                if (ok) {
                    if (!tk_buf_put(out, "\\x{", 3) || !tk_buf_put(out, p + i + 2, 4) ||
                        !tk_buf_put(out, "}", 1))
                        return 0;
                    i += 5;
                    continue;
                }
            }
            /* copy the escape and the whole (possibly multi-byte) escaped character */
            size_t k = 1;
            while (i + 1 + k < n && (((unsigned char)p[i + 1 + k]) & 0xC0) == 0x80) k++;
            if (!tk_buf_put(out, p + i, 1 + k)) return 0;
            i += k;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            if (!tk_buf_put(out, "[", 1)) return 0;
            if (i + 1 < n && p[i + 1] == '^') {
                if (!tk_buf_put(out, "^", 1)) return 0;
                i++;
            }
            class_start = out->n;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX class [:alpha:]: copy through ":]" */
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < n; j++)
                if (p[j] == ':' && p[j + 1] == ']') {
                    end = p + j + 2;
                    break;
                }
            if (end) {
                if (!tk_buf_put(out, p + i, (size_t)(end - (p + i)))) return 0;
                i = (size_t)(end - p) - 1;
                continue;
            }
        }
        if (in_class && c == ']' && out->n != class_start) in_class = 0;
        if (!tk_buf_put(out, &c, 1)) return 0;
    }
    return 1;
}

static moec_status compile_translated(tk_regex **out, const char *pat, size_t n, const char *where,
                                      const char *shown, moec_error *err) {
    int ec = 0;
    PCRE2_SIZE eoff = 0;
    pcre2_compile_context *cc = pcre2_compile_context_create(g_pcre2_ctx);
    if (!cc) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF); /* Ruby syntax: only \n ends a line, whatever the build default */
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE,
                                     &ec, &eoff, cc);
    pcre2_compile_context_free(cc);
    if (!code && ec == PCRE2_ERROR_HEAP_FAILED) return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: regex '%.120s' not supported: %s at offset %zu",
                        where, shown, (const char *)msg, (size_t)eoff);
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if it fails */
    tk_regex *re = calloc(1, sizeof *re);
    if (!re) {
        pcre2_code_free(code);
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    }
    re->code = code;
    *out = re;
    return MOEC_OK;
}

moec_status tk_regex_compile(tk_regex **out, const char *pattern, size_t len, const char *where,
                             moec_error *err) {
    *out = NULL;
    tk_buf b = {0};
    if (!translate(pattern, len, &b) || !tk_buf_reserve(&b, 1)) {
        tk_buf_free(&b);
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    }
    moec_status st = compile_translated(out, b.p, b.n, where, pattern, err);
    tk_buf_free(&b);
    return st;
}

moec_status tk_regex_compile_native(tk_regex **out, const char *pattern, size_t len,
                                    const char *where, moec_error *err) {
    *out = NULL;
    return compile_translated(out, pattern, len, where, pattern, err);
}

moec_status tk_regex_literal(tk_regex **out, const char *s, size_t len, const char *where,
                             moec_error *err) {
    *out = NULL;
    tk_buf b = {0};
    int ok = tk_buf_reserve(&b, 1);
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (c < 0x80 && !alnum) {
            if (c < 0x20 || c == 0x7f) { /* control bytes: spell as \x{..} */
                char tmp[8];
                static const char hx[] = "0123456789abcdef";
                tmp[0] = '\\', tmp[1] = 'x', tmp[2] = '{', tmp[3] = hx[c >> 4], tmp[4] = hx[c & 15],
                tmp[5] = '}';
                ok = tk_buf_put(&b, tmp, 6);
                continue;
            }
            ok = tk_buf_put(&b, "\\", 1);
        }
        ok = ok && tk_buf_put(&b, s + i, 1);
    }
    if (!ok) {
        tk_buf_free(&b);
        return moec_err(err, MOEC_ERR_OOM, "%s: out of memory", where);
    }
    moec_status st = compile_translated(out, b.p, b.n, where, b.p, err);
    tk_buf_free(&b);
    return st;
}

void tk_regex_free(tk_regex *re) {
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

moec_status tk_pattern_parse(tk_regex **re, const struct cJSON *j, const char *key,
                             const char *where, moec_error *err) {
    *re = NULL;
    const cJSON *p = tk_json_get(j, key);
    if (!p) return moec_err(err, MOEC_ERR_FORMAT, "%s: missing field '%s'", where, key);
    char w[320];
    snprintf(w, sizeof w, "%s.%s", where, key);
    const char *s;
    size_t n;
    moec_status st;
    if (cJSON_IsString(p)) {
        if ((st = tk_json_strval(p, &s, &n, w, err))) return st;
        return tk_regex_literal(re, s, n, w, err);
    }
    if ((st = tk_json_str(p, "String", 0, &s, &n, w, err))) return st;
    if (s) return tk_regex_literal(re, s, n, w, err);
    if ((st = tk_json_str(p, "Regex", 0, &s, &n, w, err))) return st;
    if (s) return tk_regex_compile(re, s, n, w, err);
    return moec_err(err, MOEC_ERR_FORMAT, "%s: expected {\"String\": ...} or {\"Regex\": ...}", w);
}

/* ---------------------------------------------------------------- matching */

static int spans_push(tk_spans *s, size_t a, size_t b) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 32;
        tk_span *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return 0;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n].start = a;
    s->v[s->n].end = b;
    s->n++;
    return 1;
}

void tk_spans_free(tk_spans *s) {
    if (!s) return;
    free(s->v);
    memset(s, 0, sizeof *s);
}

moec_status tk_regex_find_all(const tk_regex *re, const char *s, size_t n, tk_spans *out,
                              moec_error *err) {
    pcre2_match_data *md = pcre2_match_data_create(1, g_pcre2_ctx);
    if (!md) return moec_err(err, MOEC_ERR_OOM, "regex: out of memory");
    pcre2_match_context *mctx = NULL;
    pcre2_jit_stack *jstack = NULL;
    moec_status st = MOEC_OK;
    size_t pos = 0;
    int have_last = 0;
    size_t last_end = 0;
    uint32_t opts = PCRE2_NO_UTF_CHECK; /* the caller validated the text once */
    while (pos <= n) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, opts, md, mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !jstack) {
            /* very long subjects: give the JIT a bigger stack and retry */
            jstack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, g_pcre2_ctx);
            mctx = pcre2_match_context_create(g_pcre2_ctx);
            if (!jstack || !mctx) {
                st = moec_err(err, MOEC_ERR_OOM, "regex: out of memory");
                break;
            }
            pcre2_jit_stack_assign(mctx, NULL, jstack);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMEMORY) {
            st = moec_err(err, MOEC_ERR_OOM, "regex: out of memory");
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = moec_err(err, MOEC_ERR_UNSUPPORTED, "regex: match failed: %s", (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (a == b && have_last && last_end == b) {
            /* onig's FindMatches: no empty match right after the previous match */
            if (pos >= n) break;
            uint32_t cp;
            pos += tk_utf8_next(s + pos, n - pos, &cp);
            continue;
        }
        if (!spans_push(out, a, b)) {
            st = moec_err(err, MOEC_ERR_OOM, "regex: out of memory");
            break;
        }
        have_last = 1;
        last_end = b;
        pos = b;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(jstack);
    return st;
}
