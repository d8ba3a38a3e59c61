/* data.h — token data for training and evaluation: the token-shard format (docs/formats.md), a
 * writer that turns tokenized documents into a data directory (shards + meta.json), and a
 * reader that validates a directory and serves training batches and per-domain evaluation
 * windows.
 *
 * Not a tokenizer and not a text reader: text → ids happens in tools/moec/cmd_data.c. Not a
 * streaming loader either: shards are mmapped read-only and validated whole at open.
 *
 * A data directory holds meta.json plus, per split, one or more shards (train-00000.bin,
 * val-00000.bin, ...). A split is read as one token stream: its shards in meta.json order,
 * each shard's documents in order, every document ending with the end-of-text id. Domains
 * (the source file a document came from) are one table shared by both splits.
 */
#ifndef MOEC_TRAIN_DATA_H
#define MOEC_TRAIN_DATA_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

#define MOEC_DATA_MAGIC "MOECTOK" /* 8 bytes on disk with its NUL */
#define MOEC_DATA_VERSION 1
#define MOEC_DATA_FIXED_HEADER 64    /* bytes before the domain table */
#define MOEC_DATA_DOMAIN_ENTRY 64    /* bytes per domain-table entry (NUL-padded name) */
#define MOEC_DATA_DOMAIN_NAME_MAX 63 /* longest domain name in bytes */
#define MOEC_DATA_DOC_ENTRY 24       /* bytes per document-table entry */
#define MOEC_DATA_MAX_DOMAINS 65536
#define MOEC_DATA_META "meta.json"

typedef enum { MOEC_DATA_TRAIN = 0, MOEC_DATA_VAL = 1 } moec_data_split;

/* How moec_data_batch picks windows (see moec_data_window). */
typedef enum { MOEC_DATA_SHUFFLE = 0, MOEC_DATA_SEQUENTIAL = 1 } moec_data_order;

/* ---------------------------------------------------------------- fingerprints */

#define MOEC_FNV1A64_INIT 0xcbf29ce484222325ull

/* FNV-1a 64 of n bytes, continuing from h (start with MOEC_FNV1A64_INIT). */
uint64_t moec_fnv1a64(const void *data, size_t n, uint64_t h);

/* FNV-1a 64 of a file's bytes: the tokenizer fingerprint is this over tokenizer.json. */
moec_status moec_data_fingerprint_file(const char *path, uint64_t *fp, moec_error *err);

/* ---------------------------------------------------------------- split */

/* Deterministic train/val split by document, stratified per domain: for each domain d with
 * n documents, n_val = round(n · val_fraction), at least 1 when n >= 2 and val_fraction > 0,
 * at most n - 1; the val documents are the first n_val of a Fisher–Yates shuffle of the
 * domain's documents by moec_rng seeded with seed ^ fnv1a64(name of d), so one domain's split
 * does not depend on the others. Writes doc_split[i] = MOEC_DATA_TRAIN or MOEC_DATA_VAL.
 * Fails (MOEC_ERR_INVALID_ARG) for val_fraction outside [0, 1) or a domain id out of range. */
moec_status moec_data_split_docs(uint32_t n_docs, const uint32_t *doc_domain, int32_t n_domains,
                                 const char *const *domain_names, uint64_t seed, double val_fraction,
                                 uint8_t *doc_split, moec_error *err);

/* ---------------------------------------------------------------- writer */

typedef struct {
    /* tokenizer: recorded in every shard header and in meta.json */
    const char *tokenizer_path; /* as recorded in meta.json (the CLI passes the real path) */
    uint64_t fingerprint;       /* moec_data_fingerprint_file(tokenizer.json) */
    uint32_t n_vocab;           /* every id must be < n_vocab; sets the dtype (u16 if <= 65536) */
    uint32_t eot_id;            /* every document's last token */
    const char *eot_token;      /* its string, for meta.json (may be NULL) */
    /* domains */
    int32_t n_domains;
    const char *const *domain_names; /* [n_domains], 1..63 bytes, distinct, no control chars */
    /* source files, for meta.json only (may be 0 / NULL) */
    int32_t n_files;
    const char *const *file_paths; /* [n_files] */
    const int32_t *file_domain;    /* [n_files] */
    /* documents, written in this order within each split */
    uint32_t n_docs;
    const int32_t *const *doc_tokens; /* [n_docs] pointers to each document's ids */
    const uint64_t *doc_n_tokens;     /* [n_docs], >= 1 (the end-of-text id at least) */
    const uint32_t *doc_domain;       /* [n_docs] */
    const uint8_t *doc_split;         /* [n_docs] MOEC_DATA_TRAIN / MOEC_DATA_VAL */
    /* recorded in meta.json */
    uint64_t seed;
    double val_fraction;
    /* a new shard starts when the next document would take a shard past this many tokens
     * (0 = 1<<30); a longer document gets a shard of its own */
    uint64_t max_shard_tokens;
    int force; /* replace a directory that holds another dataset or other files */
} moec_data_write_params;

/* Writes the data directory `dir` (created if missing, parents included): every shard, then
 * meta.json last, each atomically. Refuses (MOEC_ERR_INVALID_ARG) unless p->force when `dir`
 * holds a meta.json that differs from the one this call would write (another dataset), or
 * holds other files but no meta.json. Writing the same dataset again is allowed. With force,
 * the shards the old meta.json listed that the new one does not are removed; other files are
 * left alone. Validates every id, document length, final end-of-text id and domain id. */
moec_status moec_data_write(const char *dir, const moec_data_write_params *p, moec_error *err);

/* ---------------------------------------------------------------- reader */

typedef struct moec_data_reader moec_data_reader;

/* Opens a data directory: parses meta.json, maps every shard it lists and checks magic,
 * version, header size, dtype, table bounds, document offsets (contiguous, each >= 1 token,
 * ending with the end-of-text id), domain ids, every token id < n_vocab, the file size and
 * the shard's FNV-1a 64 against meta.json, and that all shards agree with meta.json on vocab,
 * end-of-text id, tokenizer fingerprint and domain table. Any mismatch is MOEC_ERR_FORMAT
 * naming the file (MOEC_ERR_IO when a file cannot be read). Caller frees with
 * moec_data_close. A reader is read-only after open: every call below may run concurrently. */
moec_status moec_data_open(moec_data_reader **out, const char *dir, moec_error *err);
void moec_data_close(moec_data_reader *r); /* accepts NULL */

uint32_t moec_data_n_vocab(const moec_data_reader *r);
uint32_t moec_data_eot_id(const moec_data_reader *r);
uint64_t moec_data_fingerprint(const moec_data_reader *r); /* of the tokenizer.json */
/* FNV-1a 64 of meta.json, which lists every shard's hash: one number that names the dataset,
 * for a checkpoint to record and a resume to compare. */
uint64_t moec_data_id(const moec_data_reader *r);
const char *moec_data_tokenizer_path(const moec_data_reader *r); /* borrowed, as recorded */

/* MOEC_ERR_INVALID_ARG "made with another tokenizer" when tokenizer_path's bytes do not have
 * the fingerprint the data was made with (MOEC_ERR_IO if it cannot be read). */
moec_status moec_data_check_tokenizer(const moec_data_reader *r, const char *tokenizer_path, moec_error *err);
/* MOEC_ERR_INVALID_ARG when the data's vocabulary does not fit a model with n_vocab_model
 * embedding rows (data n_vocab > n_vocab_model). */
moec_status moec_data_check_vocab(const moec_data_reader *r, int64_t n_vocab_model, moec_error *err);

int32_t moec_data_n_domains(const moec_data_reader *r);
/* Borrowed, NUL-terminated; NULL for d out of range. */
const char *moec_data_domain_name(const moec_data_reader *r, int32_t d);

uint64_t moec_data_n_tokens(const moec_data_reader *r, moec_data_split split);
uint32_t moec_data_n_docs(const moec_data_reader *r, moec_data_split split);
/* Tokens / documents of domain d in a split (0 for d out of range). */
uint64_t moec_data_domain_n_tokens(const moec_data_reader *r, moec_data_split split, int32_t d);
uint32_t moec_data_domain_n_docs(const moec_data_reader *r, moec_data_split split, int32_t d);
/* The split's document indices of domain d, increasing (borrowed; *n = count; NULL when
 * none). With moec_data_doc these are the per-domain document ranges. */
const uint32_t *moec_data_domain_docs(const moec_data_reader *r, moec_data_split split, int32_t d, uint32_t *n);
/* Document `doc` of a split: its first token's position in the split's token stream, its
 * length (end-of-text included) and domain. MOEC_ERR_INVALID_ARG if doc is out of range. */
moec_status moec_data_doc(const moec_data_reader *r, moec_data_split split, uint32_t doc, uint64_t *first,
                          uint64_t *n_tokens, int32_t *domain, moec_error *err);
/* Copies tokens [pos, pos + n) of the split's stream into out (crossing shards as needed).
 * MOEC_ERR_INVALID_ARG if the range is not inside the stream. */
moec_status moec_data_read(const moec_data_reader *r, moec_data_split split, uint64_t pos, uint64_t n, int32_t *out,
                           moec_error *err);

/* ---------------------------------------------------------------- training batches */

/* Windows of S + 1 tokens (S inputs and their S next-token targets) from a split's stream of
 * N tokens. An epoch is W = floor((N - 1) / S) windows whose targets do not overlap; window
 * number c (the cursor) is in epoch e = c / W at slot j = c % W:
 *   SEQUENTIAL: starts at j·S.
 *   SHUFFLE:    starts at off_e + perm_e(j)·S, where perm_e is a seeded bijection of [0, W)
 *               (a 4-round Feistel network with cycle walking, keyed by seed and e) and off_e
 *               in [0, N - 1 - W·S] is a seeded per-epoch shift so the tail is not always
 *               left out.
 * Windows cross document boundaries (each document ends with the end-of-text id). A window
 * depends only on (data, split, S, order, seed, c): the cursor is the whole data position.
 * Returns MOEC_ERR_INVALID_ARG when S < 1 or the split has fewer than S + 1 tokens. */
uint64_t moec_data_n_windows(const moec_data_reader *r, moec_data_split split, int32_t S);
moec_status moec_data_window(const moec_data_reader *r, moec_data_split split, int32_t S, moec_data_order order,
                             uint64_t seed, uint64_t cursor, int32_t *tokens /* [S + 1] */, moec_error *err);

/* B windows for cursors *cursor .. *cursor + B - 1 into tokens [B, S + 1] (row b = inputs
 * tokens[b][0..S), targets tokens[b][1..S]); advances *cursor by B on success and leaves it
 * untouched on error. To resume exactly, save *cursor (with seed, S, order and moec_data_id)
 * and pass it back; a changed B keeps the same window sequence. */
moec_status moec_data_batch(const moec_data_reader *r, moec_data_split split, int32_t B, int32_t S,
                            moec_data_order order, uint64_t seed, int32_t *tokens /* [B, S + 1] */, uint64_t *cursor,
                            moec_error *err);

/* ---------------------------------------------------------------- evaluation */

/* Evaluation windows over one domain (domain = -1: the whole split): the domain's documents of
 * the split, in order, joined into a stream of M tokens, cut into ceil((M - 1) / S) windows
 * (0 when M < 2); window i holds stream tokens [i·S, i·S + n_valid) with
 * n_valid = min(S + 1, M - i·S) >= 2, padded with the end-of-text id to S + 1. Every target
 * (stream positions 1 .. M - 1) is in exactly one window, as the target at window positions
 * 1 .. n_valid - 1, so summing the loss over those gives the exact per-domain loss. */
uint64_t moec_data_eval_n_windows(const moec_data_reader *r, moec_data_split split, int32_t domain, int32_t S);
moec_status moec_data_eval_window(const moec_data_reader *r, moec_data_split split, int32_t domain, int32_t S,
                                  uint64_t index, int32_t *tokens /* [S + 1] */, int32_t *n_valid, moec_error *err);

#endif
