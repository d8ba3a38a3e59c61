/* npy.c — see npy.h. Header: magic, version 1.0, u16 header length, a Python dict literal padded
 * with spaces to a multiple of 64 bytes and ended by '\n'. */
#include "io/npy.h"

#include "core/error.h"
#include "io/file.h"

#include <stdio.h>
#include <string.h>

moec_status moec_npy_write_f32(const char *path, const float *data, const int64_t *shape, int n_dims,
                               moec_error *err) {
    char dict[256];
    int o = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        o += snprintf(dict + o, sizeof dict - (size_t)o, "%lld,%s", (long long)shape[i], i + 1 < n_dims ? " " : "");
        n *= (size_t)shape[i];
    }
    o += snprintf(dict + o, sizeof dict - (size_t)o, "), }");
    char header[320];
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    int total = 10 + o + 1;
    int pad = (64 - total % 64) % 64;
    int hlen = o + pad + 1;
    header[8] = (char)(hlen & 0xff);
    header[9] = (char)(hlen >> 8);
    memcpy(header + 10, dict, (size_t)o);
    memset(header + 10 + o, ' ', (size_t)pad);
    header[10 + o + pad] = '\n';
    moec_iovec parts[2] = {{.data = header, .size = (size_t)(10 + hlen)}, {.data = data, .size = n * sizeof(float)}};
    return moec_file_write_atomic(path, parts, 2, err);
}
