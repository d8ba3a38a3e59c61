/* safetensors_write.h — writes a safetensors file atomically (temp file, fsync, rename) from
 * fp32 arrays, stored as F32 or BF16 (round to nearest even). Header keys are sorted by name as
 * the `safetensors` package writes them, padded with spaces to a multiple of 8 bytes, with
 * {"__metadata__": {"format": "pt"}} so transformers loads it as a PyTorch checkpoint. */
#ifndef MOEC_IO_SAFETENSORS_WRITE_H
#define MOEC_IO_SAFETENSORS_WRITE_H

#include "core/dtype.h"
#include "moec.h"

#include <stdint.h>

typedef struct {
    const char *name;   /* JSON-safe: no quotes, backslashes or control characters */
    int n_dims;         /* 0..4 */
    int64_t shape[4];
    const float *data;  /* fp32, numel = product of shape */
} moec_st_entry;

/* dtype: MOEC_DTYPE_F32 or MOEC_DTYPE_BF16. */
moec_status moec_st_write(const char *path, const moec_st_entry *entries, int n, moec_dtype dtype, moec_error *err);

#endif
