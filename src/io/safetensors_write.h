/* safetensors_write.h — writes a safetensors file atomically (temp file, fsync, rename) from
 * arrays in any moec dtype (fp32 usually), stored as F32, F16, BF16 (round to nearest even) or
 * quantized to Q8_0 / Q4_0 (the one quantizer, moec_from_f32) as moec's U8 block convention (docs/formats.md, "Quantized
 * weights": dtype U8, shape [..., bytes of the row's blocks], __metadata__ "moec.quant.<name>").
 * Header keys are sorted by name as the `safetensors` package writes them, padded with spaces to
 * a multiple of 8 bytes, with "format": "pt" in __metadata__ so transformers loads it as a
 * PyTorch checkpoint. Data is laid out F32 tensors first, then the 2-byte-aligned ones, so every
 * tensor is aligned to its element (or block scale) with no gaps. */
#ifndef MOEC_IO_SAFETENSORS_WRITE_H
#define MOEC_IO_SAFETENSORS_WRITE_H

#include "core/dtype.h"
#include "moec.h"

#include <stdint.h>

typedef struct {
    const char *name;   /* JSON-safe: no quotes, backslashes or control characters */
    int n_dims;         /* 0..4 */
    int64_t shape[4];
    const void *data;   /* numel = product of shape elements of data_dtype */
    moec_dtype data_dtype; /* MOEC_DTYPE_F32 (0) unless set */
} moec_st_entry;

/* Every entry as dtype: MOEC_DTYPE_F32 or MOEC_DTYPE_BF16. */
moec_status moec_st_write(const char *path, const moec_st_entry *entries, int n, moec_dtype dtype, moec_error *err);

/* Entry i as dtypes[i] (any moec dtype; a quantized one needs n_dims >= 1 and the last
 * dimension a multiple of its block, else MOEC_ERR_INVALID_ARG). A tensor whose data_dtype is
 * not its dtype is converted row by row while the file is written: the writer's memory is one
 * row and one 4 MiB chunk, whatever the checkpoint's size (moec quantize streams through it). */
moec_status moec_st_write_typed(const char *path, const moec_st_entry *entries, const moec_dtype *dtypes, int n,
                                moec_error *err);

#endif
