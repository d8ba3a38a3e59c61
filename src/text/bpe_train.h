/* bpe_train.h — byte-level BPE training: counts the words of UTF-8 text files under the
 * Qwen2-style pipeline (NFC, Split on the Qwen regex, ByteLevel), learns merges as Hugging Face
 * `tokenizers`' BpeTrainer does (same counts, same tie-break, so the same merges), and writes a
 * tokenizer.json that both moec_tokenizer_load and Hugging Face load.
 * Not a general trainer: one fixed pipeline, no WordPiece/Unigram, no limit_alphabet, no
 * continuing_subword_prefix / end_of_word_suffix / max_token_length, single-threaded.
 *
 * Use: tk_bpe_trainer_new, tk_bpe_trainer_feed_file (or _feed) for every input, then
 * tk_bpe_trainer_train, then tk_bpe_trainer_json; tk_bpe_trainer_free at the end. */
#ifndef MOEC_TEXT_BPE_TRAIN_H
#define MOEC_TEXT_BPE_TRAIN_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

#define TK_BPE_TRAIN_MAX_VOCAB (1 << 24)

typedef struct {
    int32_t vocab_size;          /* total tokens: specials + 256 byte symbols + merges */
    int64_t min_frequency;       /* stop when the best pair occurs fewer times (>= 0) */
    int allow_smaller;           /* 0: running out of pairs before vocab_size is an error */
    const char *const *specials; /* special tokens, ids 0.. in this order (duplicates dropped);
                                    borrowed for the trainer's lifetime */
    size_t n_specials;
} tk_bpe_train_params;

typedef struct {
    int64_t n_bytes, n_lines, n_words; /* fed so far */
    int64_t n_unique_words;
    int32_t n_vocab;                   /* after training: tokens in the vocabulary */
    int32_t n_merges;                  /* after training: merges written (duplicates dropped) */
    int64_t last_count;                /* frequency of the last merge, 0 if none */
    int stopped_early;                 /* 1: ran out of pairs / hit min_frequency below vocab_size */
} tk_bpe_train_stats;

typedef struct tk_bpe_trainer tk_bpe_trainer;

/* Checks params (specials non-empty valid UTF-8; vocab_size at least the initial vocabulary,
 * MOEC_ERR_INVALID_ARG otherwise) and compiles the pipeline. Caller frees. */
moec_status tk_bpe_trainer_new(tk_bpe_trainer **out, const tk_bpe_train_params *p, moec_error *err);
void tk_bpe_trainer_free(tk_bpe_trainer *t); /* accepts NULL */

/* Number of tokens before any merge: distinct specials plus the byte symbols they do not
 * already spell. vocab_size must be at least this. */
int32_t tk_bpe_trainer_initial_vocab(const tk_bpe_trainer *t);

/* Counts the words of text (n bytes, valid UTF-8 or MOEC_ERR_FORMAT naming `name` and the
 * line). Text is cut into lines after each '\n' (kept), as HF's train_from_files reads files;
 * each line is normalized and pre-tokenized on its own. Special tokens are not cut out. */
moec_status tk_bpe_trainer_feed(tk_bpe_trainer *t, const char *text, size_t n, const char *name,
                                moec_error *err);
/* Feeds a whole file (mmapped). An unreadable file is MOEC_ERR_IO, an empty one
 * MOEC_ERR_FORMAT, both naming the path. */
moec_status tk_bpe_trainer_feed_file(tk_bpe_trainer *t, const char *path, moec_error *err);

/* Learns merges until vocab_size tokens. No words fed: MOEC_ERR_FORMAT ("empty corpus").
 * Running out of pairs occurring >= min_frequency times first: MOEC_ERR_INVALID_ARG saying
 * how many tokens the data supports, unless allow_smaller (then stats.stopped_early = 1).
 * Work: O(total symbols) to set up, then per merge O(occurrences touched · log heap). */
moec_status tk_bpe_trainer_train(tk_bpe_trainer *t, moec_error *err);

/* The trained tokenizer as tokenizer.json text (malloc'ed, NUL-terminated; caller frees). */
moec_status tk_bpe_trainer_json(const tk_bpe_trainer *t, char **json, size_t *len, moec_error *err);

void tk_bpe_trainer_stats(const tk_bpe_trainer *t, tk_bpe_train_stats *s);

#endif
