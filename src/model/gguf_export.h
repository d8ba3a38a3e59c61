/* gguf_export.h — the exporter's pieces that read user files (for the fuzz harness; the export
 * itself is moec_export_gguf in moec.h). */
#ifndef MOEC_MODEL_GGUF_EXPORT_H
#define MOEC_MODEL_GGUF_EXPORT_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

/* tokenizer.json's vocabulary as llama.cpp's tokenizer.ggml.* arrays. */
typedef struct {
    char **tok;     /* n strings (owned): model.vocab, then added_tokens, "[PAD<i>]" for unused ids */
    size_t *len;
    int32_t *type;  /* llama.cpp token types: 1 normal, 3 control, 4 user-defined, 5 unused */
    int32_t n;      /* the model's vocabulary size (embedding rows) */
    char **merges;  /* "a b" (owned) */
    size_t *mlen;
    size_t n_merges;
} moec_gguf_vocab;

/* Reads the byte-level BPE vocabulary and merges of tokenizer.json at path for a model of
 * n_vocab embedding rows (every id must be below it) and names its pre-tokenizer for llama.cpp
 * (*pre: static storage; pre_override wins when not NULL). On failure v holds what was read so
 * far: free it either way. */
moec_status moec_gguf_vocab_read(const char *path, int32_t n_vocab, const char *pre_override, moec_gguf_vocab *v,
                                 const char **pre, moec_error *err);
void moec_gguf_vocab_free(moec_gguf_vocab *v); /* accepts a zeroed struct */

#endif
