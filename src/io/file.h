/* file.h — whole-file reads, read-only mmaps, and atomic writes (temp file + fsync + rename),
 * with errors reported through moec_error. Not a general VFS: local POSIX files only. */
#ifndef MOEC_IO_FILE_H
#define MOEC_IO_FILE_H

#include "moec.h"

#include <stddef.h>

/* Reads a whole file into a NUL-terminated malloc'ed buffer (caller frees). */
moec_status moec_file_read_all(const char *path, char **data, size_t *size, moec_error *err);

typedef struct {
    void *addr;  /* NULL for an empty file */
    size_t size;
} moec_mmap;

/* Maps a file read-only. Free with moec_file_unmap (accepts an unmapped struct). */
moec_status moec_file_map(const char *path, moec_mmap *out, moec_error *err);
void moec_file_unmap(moec_mmap *m);

/* The path of the live mapping that contains addr, or NULL. Async-signal-safe (it only reads a
 * fixed table), for a SIGBUS handler: a mapped file that another process truncates makes the
 * next read of a vanished page raise SIGBUS, which no bounds check can prevent (the size was
 * valid when checked); the CLI turns it into one line naming the file instead of a crash. */
const char *moec_file_map_owner(const void *addr);

/* Writes `n` buffers to `path`. What path names, after following symlinks, decides how:
 * - a regular file, or nothing yet: atomically, to "<file>.tmp.<pid>" beside the file that
 *   symlinks resolve to, fsync, rename over it (keeping its mode), fsync the directory; a
 *   symlink given as path stays a symlink and its target is replaced. On any failure the
 *   temp file is removed and the previous file is untouched.
 * - a character device, FIFO or socket (-o /dev/null, a pipe): written directly, since there is
 *   no file to replace; never replaced by a regular file.
 * - a directory, or a symlink to a missing file: an error. */
typedef struct moec_iovec {
    const void *data; /* the part's bytes, or NULL when fill makes them */
    size_t size;
    /* Optional producer, so a part can be written without its bytes ever existing whole in
     * memory (a quantized checkpoint converted while it is written): it puts bytes
     * [off, off + n) of the part into buf, n a whole number of `unit`-byte units (unit 0: 1;
     * size a multiple of it) and at most MOEC_FILE_FILL_BYTES, or one unit when a unit is larger. */
    void (*fill)(const struct moec_iovec *part, size_t off, void *buf, size_t n);
    size_t unit;
    const void *ctx; /* for fill */
} moec_iovec;
#define MOEC_FILE_FILL_BYTES ((size_t)4 << 20)
moec_status moec_file_write_atomic(const char *path, const moec_iovec *parts, int n_parts,
                                   moec_error *err);

/* Joins dir and name into buf ("dir/name"); returns 0 if it does not fit. */
int moec_path_join(char *buf, size_t cap, const char *dir, const char *name);

#endif
