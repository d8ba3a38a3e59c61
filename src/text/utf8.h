/* utf8.h — byte buffers, UTF-8 decoding/validation/lossy repair and the few Unicode character
 * classes the tokenizer needs (White_Space, numeric, word, punctuation), matching Rust's
 * `char` methods as Hugging Face `tokenizers` uses them. Not a Unicode library: normalization
 * and case mapping come from utf8proc. */
#ifndef MOEC_TEXT_UTF8_H
#define MOEC_TEXT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- growable buffers */

typedef struct {
    char *p;
    size_t n, cap;
} tk_buf;

/* All return 1 on success, 0 on allocation failure (the buffer is left as it was). */
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_put(tk_buf *b, const void *s, size_t n);
int tk_buf_put_cp(tk_buf *b, uint32_t cp); /* appends cp UTF-8 encoded */
void tk_buf_free(tk_buf *b);

typedef struct {
    int32_t *v;
    size_t n, cap;
} tk_ivec;

int tk_ivec_push(tk_ivec *v, int32_t x);
void tk_ivec_free(tk_ivec *v);

/* ---------------------------------------------------------------- UTF-8 */

/* Decodes the code point at s from text already known to be valid UTF-8 (n >= 1 bytes left).
 * Returns its byte length (1..4). */
size_t tk_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Decodes the code point that ends at s + n (valid UTF-8, n >= 1). Returns its byte length. */
size_t tk_utf8_prev(const char *s, size_t n, uint32_t *cp);
size_t tk_utf8_encode(uint32_t cp, char out[4]);
/* Byte offset of the first invalid sequence (overlong, surrogate, > U+10FFFF, truncated), or n. */
size_t tk_utf8_validate(const char *s, size_t n);
/* Appends s to out replacing each maximal invalid subsequence with U+FFFD, exactly as Rust's
 * String::from_utf8_lossy. Returns 1, or 0 on allocation failure. */
int tk_utf8_lossy(tk_buf *out, const char *s, size_t n);

/* ---------------------------------------------------------------- character classes */

int tk_is_white_space(uint32_t cp); /* Unicode White_Space, as Rust char::is_whitespace */
int tk_is_numeric(uint32_t cp);     /* Nd | Nl | No, as Rust char::is_numeric */
int tk_is_word(uint32_t cp);        /* Rust regex \w: Alphabetic | M | Nd | Pc | Join_Control */
int tk_is_punct(uint32_t cp);       /* ASCII punctuation or Unicode P*, as HF is_punctuation */

/* ---------------------------------------------------------------- GPT-2 byte alphabet */

/* The printable code point byte b stands for in byte-level BPE vocabularies ('Ġ' for ' '). */
uint32_t tk_bytelevel_cp(unsigned char b);
/* The byte a byte-level code point stands for, or -1 if cp is not in the 256-char alphabet. */
int tk_bytelevel_byte(uint32_t cp);
/* Appends s (n bytes) with every byte replaced by its byte-level code point. Returns 1, or 0
 * on allocation failure. */
int tk_bytelevel_map(tk_buf *out, const char *s, size_t n);

#endif
