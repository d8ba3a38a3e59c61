/* npy.h — NumPy .npy writer (format 1.0, little-endian float32, C order), written atomically. */
#ifndef MOEC_IO_NPY_H
#define MOEC_IO_NPY_H

#include "moec.h"

#include <stdint.h>

moec_status moec_npy_write_f32(const char *path, const float *data, const int64_t *shape, int n_dims,
                               moec_error *err);

#endif
