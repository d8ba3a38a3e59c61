/* bpe.h — the tokenizer.json "model" of type BPE: vocabulary, merge ranks, and the per-word
 * merge loop of HF `tokenizers` (models/bpe/word.rs: a min-heap of (rank, position) over a
 * linked list of symbols, O(n log n) per word). Supports unk_token/fuse_unk, byte_fallback,
 * ignore_merges, continuing_subword_prefix and end_of_word_suffix. Not supported: dropout
 * (other than null/0), other model types (WordPiece, WordLevel, Unigram). */
#ifndef MOEC_TEXT_BPE_H
#define MOEC_TEXT_BPE_H

#include "moec.h"
#include "text/utf8.h"

#include <cjson/cJSON.h>

typedef struct tk_bpe tk_bpe;

/* Parses model (a JSON object). Caller frees. */
moec_status tk_bpe_parse(tk_bpe **out, const cJSON *model, const char *where, moec_error *err);
void tk_bpe_free(tk_bpe *b); /* accepts NULL */

int32_t tk_bpe_token_id(const tk_bpe *b, const char *s, size_t n); /* -1 if absent */
/* Borrowed token string of id, or NULL for ids the vocabulary does not use. */
const char *tk_bpe_token_str(const tk_bpe *b, int32_t id, size_t *len);
int32_t tk_bpe_n_ids(const tk_bpe *b); /* max id + 1 */

/* Per-call scratch (symbol list and heap), reused across words; zero-initialize it. */
typedef struct {
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
} tk_bpe_scratch;
void tk_bpe_scratch_free(tk_bpe_scratch *sc);

/* Appends the ids of one word (valid UTF-8, n bytes) to out. */
moec_status tk_bpe_encode_word(const tk_bpe *b, tk_bpe_scratch *sc, const char *w, size_t n,
                               tk_ivec *out, moec_error *err);

#endif
