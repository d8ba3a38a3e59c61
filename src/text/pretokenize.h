/* pretokenize.h — the tokenizer.json "pre_tokenizer": splits normalized text into the words
 * that BPE encodes one at a time. Supported: Sequence, ByteLevel, Split, Digits, Metaspace,
 * Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit, BertPreTokenizer. Not
 * supported (MOEC_ERR_UNSUPPORTED at load): UnicodeScripts and anything else. No offsets. */
#ifndef MOEC_TEXT_PRETOKENIZE_H
#define MOEC_TEXT_PRETOKENIZE_H

#include "moec.h"
#include "text/utf8.h"

#include <cjson/cJSON.h>

/* A piece of text: bytes [off, off + len) of an arena buffer. `first` marks a piece that starts
 * at offset 0 of the original input (Metaspace's prepend_scheme "first" needs it). */
typedef struct {
    size_t off, len;
    int first;
} tk_piece;

typedef struct {
    tk_piece *v;
    size_t n, cap;
} tk_pieces;

int tk_pieces_push(tk_pieces *p, size_t off, size_t len, int first); /* 1 ok, 0 OOM */
void tk_pieces_free(tk_pieces *p);

typedef struct tk_pretok tk_pretok;

/* Parses j (NULL or JSON null gives *out = NULL: the whole piece is one word). Caller frees. */
moec_status tk_pretok_parse(tk_pretok **out, const cJSON *j, const char *where, moec_error *err);
void tk_pretok_free(tk_pretok *pt); /* accepts NULL */

/* Replaces *pieces (strings in *arena, which may grow) by the pre-tokenized words, in order,
 * without empty words. */
moec_status tk_pretokenize(const tk_pretok *pt, tk_buf *arena, tk_pieces *pieces, moec_error *err);

#endif
