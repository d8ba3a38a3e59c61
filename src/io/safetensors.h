/* safetensors.h — read-only, mmapped safetensors checkpoints: one file, or Hugging Face shards
 * listed in model.safetensors.index.json. Every header field is validated and every offset
 * bounds-checked at open; after that, tensor data pointers can be used without checks.
 * The writer is io/safetensors_write.h. */
#ifndef MOEC_IO_SAFETENSORS_H
#define MOEC_IO_SAFETENSORS_H

#include "core/dtype.h"
#include "io/file.h"
#include "moec.h"

#define MOEC_ST_MAX_DIMS 4

typedef struct {
    char *name;
    moec_dtype dtype;
    int n_dims;
    int64_t shape[MOEC_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the file's mmap, aligned to the dtype size */
    size_t nbytes;
    int file;         /* index into the set's files */
    int used;         /* set by the model loader, to report unexpected tensors */
} moec_st_tensor;

typedef struct {
    int n_files;
    char **file_paths;
    moec_mmap *maps;
    int n_tensors;
    moec_st_tensor *tensors; /* sorted by name */
    size_t data_bytes;       /* sum of tensor bytes */
} moec_st_set;

/* Opens DIR/model.safetensors, or the shards named by DIR/model.safetensors.index.json. */
moec_status moec_st_open_dir(moec_st_set *set, const char *dir, moec_error *err);
/* Opens a single safetensors file. */
moec_status moec_st_open_file(moec_st_set *set, const char *path, moec_error *err);
/* Parses a safetensors file held in memory (name is used in messages); tensor data pointers
 * point into data, which must outlive the set. For tests and fuzzing. */
moec_status moec_st_open_buffer(moec_st_set *set, const void *data, size_t size, const char *name, moec_error *err);
void moec_st_close(moec_st_set *set); /* accepts a zeroed set */

/* Borrowed pointer, or NULL when absent. */
moec_st_tensor *moec_st_find(const moec_st_set *set, const char *name);

#endif
