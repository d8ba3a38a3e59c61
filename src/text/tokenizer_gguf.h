/* tokenizer_gguf.h — a GGUF file's vocabulary (tokenizer.ggml.*) as tokenizer.json text, so the
 * one tokenizer loader (tokenizer.c) serves both. */
#ifndef MOEC_TEXT_TOKENIZER_GGUF_H
#define MOEC_TEXT_TOKENIZER_GGUF_H

#include "moec.h"

#include <stddef.h>

/* Builds tokenizer.json text (malloc'ed, NUL-terminated, caller frees) from the GGUF at path:
 *   "gpt2"  byte-level BPE: vocab, merges, pre-tokenizer from tokenizer.ggml.pre (gpt-2 / olmo /
 *           qwen2 / llama-bpe and their aliases), CONTROL tokens as special added tokens,
 *           USER_DEFINED as added tokens;
 *   "llama" SentencePiece BPE with byte fallback: merges reconstructed from the scores (a pair
 *           (a, b) whose concatenation is a token, ranked by that token's score), Metaspace-style
 *           normalizer and decoder as Hugging Face's Llama tokenizer.json.
 * Other tokenizer models are MOEC_ERR_UNSUPPORTED. */
moec_status tk_gguf_tokenizer_json(const char *path, char **json, size_t *len, moec_error *err);

#endif
