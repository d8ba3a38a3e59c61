/* normalize.h — the tokenizer.json "normalizer": parsed once, applied to each piece of text
 * between added tokens. Supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend,
 * Strip, StripAccents, ByteLevel. Not supported (load fails with MOEC_ERR_UNSUPPORTED):
 * BertNormalizer, Precompiled, Nmt and anything else. No offset tracking. */
#ifndef MOEC_TEXT_NORMALIZE_H
#define MOEC_TEXT_NORMALIZE_H

#include "moec.h"
#include "text/utf8.h"

#include <cjson/cJSON.h>

typedef struct tk_normalizer tk_normalizer;

/* Parses j (NULL or JSON null gives *out = NULL, "no normalizer"). Caller frees. */
moec_status tk_normalizer_parse(tk_normalizer **out, const cJSON *j, const char *where,
                                moec_error *err);
void tk_normalizer_free(tk_normalizer *nz); /* accepts NULL */

/* Writes the normalized form of s (valid UTF-8) into out, replacing its contents. */
moec_status tk_normalize(const tk_normalizer *nz, const char *s, size_t n, tk_buf *out,
                         moec_error *err);

#endif
