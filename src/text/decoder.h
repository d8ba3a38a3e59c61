/* decoder.h — the tokenizer.json "decoder": turns token strings back into text. Supported:
 * Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace. Not supported
 * (MOEC_ERR_UNSUPPORTED at load): WordPiece, BPEDecoder, CTC and anything else. */
#ifndef MOEC_TEXT_DECODER_H
#define MOEC_TEXT_DECODER_H

#include "moec.h"
#include "text/utf8.h"

#include <cjson/cJSON.h>

typedef struct {
    const char *p;
    size_t n;
} tk_strref;

typedef struct tk_decoder tk_decoder;

/* Parses j (NULL or JSON null gives *out = NULL). Caller frees. */
moec_status tk_decoder_parse(tk_decoder **out, const cJSON *j, const char *where, moec_error *err);
void tk_decoder_free(tk_decoder *d); /* accepts NULL */

/* HF Decoder::decode: runs the decoder chain over the tokens and joins the result into out
 * (appended). A NULL decoder joins the tokens with single spaces, as HF does. The output is
 * valid UTF-8 when the tokens are (ByteLevel repairs its bytes like from_utf8_lossy). */
moec_status tk_decode(const tk_decoder *d, const tk_strref *toks, size_t n, tk_buf *out,
                      moec_error *err);

/* The bytes one token stands for, for streaming: ByteLevel maps characters back to bytes,
 * ByteFallback turns <0xHH> into its byte, Replace and Metaspace substitute as usual; Strip and
 * the Metaspace "first token" rule are position-dependent and skipped. Appends to out. */
moec_status tk_decoder_token_bytes(const tk_decoder *d, const char *s, size_t n, tk_buf *out,
                                   moec_error *err);

#endif
