/* checkpoint.h — training checkpoints that survive a kill at any moment.
 *
 * A checkpoint is a directory in Hugging Face layout that moec and transformers load as is:
 *   config.json, model.safetensors (fp32 master weights, so resuming is exact),
 *   tokenizer.json (copied from the data's tokenizer when known),
 * plus the training state beside it:
 *   optimizer.safetensors  AdamW moments: "exp_avg.<name>", "exp_avg_sq.<name>"
 *   train_state.json       step, RNG and data position, run id, hyper-parameters.
 * It is written complete into "<dir>.tmp" and then swapped with <dir> in one atomic
 * renameat2(RENAME_EXCHANGE) (or renamed, the first time): a reader sees the old checkpoint or
 * the new one, never a mix. Files that are not part of the checkpoint (the JSONL log) are
 * hard-linked into the new directory so that they survive the swap, and so are the user's own
 * files in <dir> (notes, plots: regular files are linked, anything else is moved), so a
 * checkpoint never deletes what it did not write. A symlinked <dir> is resolved once: the
 * directory it points to is swapped in its own parent and the link is kept. Nothing is ever
 * deleted through a symlink. */
#ifndef MOEC_TRAIN_CHECKPOINT_H
#define MOEC_TRAIN_CHECKPOINT_H

#include "moec.h"

#include <stddef.h>

typedef struct {
    const char *name;     /* file name inside the checkpoint */
    const char *src_path; /* an existing file to copy (bytes) ... */
    const void *data;     /* ... or bytes to write */
    size_t size;
    int link;             /* 1: hard-link src_path instead of copying (the live log) */
} moec_ckpt_file;

/* Writes files into "<dir>.tmp", fsyncs them, then atomically replaces <dir>. Files given as
 * writer callbacks are produced by `write_more(tmp_dir, ctx, err)` (e.g. safetensors writers)
 * before the swap. */
moec_status moec_ckpt_commit(const char *dir, const moec_ckpt_file *files, int n_files,
                             moec_status (*write_more)(const char *tmp_dir, void *ctx, moec_error *err), void *ctx,
                             moec_error *err);

/* Removes a directory tree. Symlinks anywhere in it, and a path that is itself a symlink, are
 * removed as links and never followed. */
moec_status moec_rmtree(const char *path, moec_error *err);

#endif
