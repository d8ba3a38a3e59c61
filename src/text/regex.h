/* regex.h — the pattern matcher behind Split pre-tokenizers and Replace normalizers/decoders:
 * Oniguruma-syntax patterns (what Hugging Face `tokenizers` compiles) translated for PCRE2
 * (UTF + UCP, JIT when available), and onig's find_iter semantics for empty matches.
 * Not a full Oniguruma emulation: see tk_regex_compile for what is translated. */
#ifndef MOEC_TEXT_REGEX_H
#define MOEC_TEXT_REGEX_H

#include "moec.h"

#include <stddef.h>

typedef struct tk_regex tk_regex;

/* Compiles pattern (len bytes of UTF-8). Escapes whose meaning differs between Oniguruma and
 * PCRE2 are rewritten: \s \S (White_Space, not PCRE2's wider set), \w \W (L|M|N|Pc),
 * \h \H (hex digit in Oniguruma), \uHHHH; ^ and $ are line anchors as in Ruby syntax.
 * `where` names the JSON location for error messages. Caller frees with tk_regex_free. */
moec_status tk_regex_compile(tk_regex **out, const char *pattern, size_t len, const char *where,
                             moec_error *err);
/* Compiles a pattern already in PCRE2 syntax (no translation). */
moec_status tk_regex_compile_native(tk_regex **out, const char *pattern, size_t len,
                                    const char *where, moec_error *err);
/* A regex that matches the literal string s (HF's String patterns). */
moec_status tk_regex_literal(tk_regex **out, const char *s, size_t len, const char *where,
                             moec_error *err);
void tk_regex_free(tk_regex *re); /* accepts NULL */

struct cJSON;
/* Parses the member `key` of j, a tokenizer.json pattern: {"String": s} (literal) or
 * {"Regex": r} (or a bare string, taken literally). */
moec_status tk_pattern_parse(tk_regex **re, const struct cJSON *j, const char *key,
                             const char *where, moec_error *err);

typedef struct {
    size_t start, end;
} tk_span;

typedef struct {
    tk_span *v;
    size_t n, cap;
} tk_spans;

/* Appends to *out every match in s (valid UTF-8, n bytes), left to right, as onig's find_iter:
 * an empty match that starts where the previous match ended is skipped by advancing one
 * character. Safe to call concurrently on the same regex. */
moec_status tk_regex_find_all(const tk_regex *re, const char *s, size_t n, tk_spans *out,
                              moec_error *err);
void tk_spans_free(tk_spans *s);

#endif
