/* added.h — added (special and ordinary) tokens: a byte trie with leftmost-longest matching,
 * and HF `tokenizers` AddedVocabulary::find_matches (single_word, lstrip, rstrip). Not the
 * JSON reading (tokenizer.c) and not the normalization of pieces between tokens. */
#ifndef MOEC_TEXT_ADDED_H
#define MOEC_TEXT_ADDED_H

#include "moec.h"
#include "text/hashmap.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *content; /* owned, NUL-terminated */
    size_t len;
    char *dec;     /* what decoding shows: the normalized content for normalized tokens (HF's
                    * normalized_cache), else NULL meaning `content` */
    size_t dec_len;
    int32_t id;
    int single_word, lstrip, rstrip, normalized, special;
} tk_added_token;

/* Trie over token byte strings; a node's children are found through a hash map keyed by
 * (node << 8 | byte), so matching costs O(match length) per position. */
typedef struct {
    tk_u64map edges;
    int32_t *term; /* node -> token index, -1 if no token ends here */
    size_t n_nodes, cap_nodes;
    uint8_t first[256]; /* bytes that start some pattern */
    size_t n_patterns;
} tk_trie;

void tk_trie_init(tk_trie *t);
void tk_trie_free(tk_trie *t);
/* Adds pattern s -> token index; the first pattern added wins for duplicates. 1 ok, 0 OOM. */
int tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t token);

typedef struct {
    size_t start, end;
    int32_t token; /* index into the token array, -1 for text between tokens */
} tk_seg;

typedef struct {
    tk_seg *v;
    size_t n, cap;
} tk_segs;

void tk_segs_free(tk_segs *s);

/* Splits s (valid UTF-8) into text and token segments as HF's find_matches + split_with_indices:
 * non-overlapping leftmost-longest matches, then single_word / lstrip / rstrip adjustments.
 * Replaces the contents of out. Empty input gives no segments. */
moec_status tk_added_split(const tk_trie *t, const tk_added_token *toks, const char *s, size_t n,
                           tk_segs *out, moec_error *err);

#endif
