/* utf8.c — UTF-8 helpers, lossy repair and character classes for the tokenizer (see utf8.h).
 * Category data comes from utf8proc; this file holds no Unicode tables of its own except the
 * White_Space list and the few Other_Alphabetic symbol ranges. */
#include "text/utf8.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---------------------------------------------------------------- buffers */

int tk_buf_reserve(tk_buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) return 0;
    if (b->n + extra + 1 <= b->cap) return 1;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->n + extra + 1) nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) return 0;
    b->p = np;
    b->cap = nc;
    b->p[b->n] = 0; /* a fresh buffer is a valid empty string too (an empty decode) */
    return 1;
}

int tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (!tk_buf_reserve(b, n)) return 0;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0; /* keep a NUL after the bytes: handy for printing, never relied on */
    return 1;
}

int tk_buf_put_cp(tk_buf *b, uint32_t cp) {
    char tmp[4];
    return tk_buf_put(b, tmp, tk_utf8_encode(cp, tmp));
}

void tk_buf_free(tk_buf *b) {
    if (!b) return;
    free(b->p);
    memset(b, 0, sizeof *b);
}

int tk_ivec_push(tk_ivec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        if (nc > SIZE_MAX / sizeof *v->v) return 0;
        int32_t *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv) return 0;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = x;
    return 1;
}

void tk_ivec_free(tk_ivec *v) {
    if (!v) return;
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* ---------------------------------------------------------------- UTF-8 */

size_t tk_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned c = u[0];
    if (c < 0x80 || n < 2) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((c & 0x1Fu) << 6) | (u[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0 || n < 4) {
        if (n < 3) { /* not reachable for valid input; keep in bounds anyway */
            *cp = 0xFFFD;
            return n;
        }
        *cp = ((c & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
        return 3;
    }
    *cp = ((c & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
    return 4;
}

size_t tk_utf8_prev(const char *s, size_t n, uint32_t *cp) {
    size_t k = 1;
    while (k < 4 && k < n && (((unsigned char)s[n - k]) & 0xC0) == 0x80) k++;
    tk_utf8_next(s + n - k, k, cp);
    return k;
}

size_t tk_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid sequence at s, or minus the length of the maximal invalid prefix (the
 * Unicode "maximal subpart" that from_utf8_lossy replaces by one U+FFFD). n >= 1. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return -i;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i == 1 ? -1 : -i;
    }
    return need + 1;
}

size_t tk_utf8_validate(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_seq(u + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

int tk_utf8_lossy(tk_buf *out, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_seq(u + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        if (!tk_buf_put(out, s + run, i - run) || !tk_buf_put(out, "\xEF\xBF\xBD", 3)) return 0;
        i += (size_t)(-k);
        run = i;
    }
    return tk_buf_put(out, s + run, n - run);
}

/* ---------------------------------------------------------------- character classes */

int tk_is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int tk_is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int tk_is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default: /* Join_Control, and the symbols that are Other_Alphabetic (circled letters) */
        return cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) ||
               (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
               (cp >= 0x1F170 && cp <= 0x1F189);
    }
}

int tk_is_punct(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return 1;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------- GPT-2 byte alphabet */

/* bytes_to_unicode(): printable bytes stand for themselves; the 68 others (0-32, 127-160,
 * 173) get 256, 257, ... in byte order. */
static int byte_printable(unsigned b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

uint32_t tk_bytelevel_cp(unsigned char b) {
    if (byte_printable(b)) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return 256u + 33u + (b - 127u);
    return 256u + 67u; /* 173 */
}

int tk_bytelevel_byte(uint32_t cp) {
    if (cp < 256) return byte_printable(cp) ? (int)cp : -1;
    if (cp > 256 + 67) return -1;
    uint32_t k = cp - 256;
    if (k <= 32) return (int)k;
    if (k <= 66) return (int)(k - 33 + 127);
    return 173;
}

int tk_bytelevel_map(tk_buf *out, const char *s, size_t n) {
    if (n > SIZE_MAX / 4 || !tk_buf_reserve(out, 2 * n)) return 0;
    char *w = out->p + out->n;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tk_bytelevel_cp((unsigned char)s[i]);
        if (cp < 0x80) {
            *w++ = (char)cp;
        } else {
            *w++ = (char)(0xC0 | (cp >> 6));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    out->n = (size_t)(w - out->p);
    out->p[out->n] = 0;
    return 1;
}
