/* safetensors_write.c — see safetensors_write.h. */
#include "io/safetensors_write.h"

#include "core/error.h"
#include "io/file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_entry(const void *a, const void *b) {
    return strcmp((*(const moec_st_entry *const *)a)->name, (*(const moec_st_entry *const *)b)->name);
}

static int64_t numel_of(const moec_st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->n_dims; d++) n *= e->shape[d];
    return n;
}

moec_status moec_st_write(const char *path, const moec_st_entry *entries, int n, moec_dtype dtype, moec_error *err) {
    if (dtype != MOEC_DTYPE_F32 && dtype != MOEC_DTYPE_BF16)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "safetensors writer supports F32 and BF16, not %s", moec_dtype_name(dtype));
    const moec_st_entry **order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (int i = 0; i < n; i++) {
        order[i] = &entries[i];
        for (const char *c = entries[i].name; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
                free(order);
                return moec_err(err, MOEC_ERR_INVALID_ARG, "tensor name '%s' is not JSON-safe", entries[i].name);
            }
    }
    qsort(order, (size_t)n, sizeof *order, cmp_entry);
    const size_t es = moec_dtype_info(dtype)->block_bytes; /* float formats: blocks of 1 */
    /* header */
    size_t cap = 64 + (size_t)n * 256, len = 0, data_bytes = 0;
    char *hdr = malloc(cap);
    if (!hdr) {
        free(order);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    len += (size_t)snprintf(hdr + 8, cap - 8, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        const moec_st_entry *e = order[i];
        size_t bytes = (size_t)numel_of(e) * es;
        char shape[128];
        size_t so = 0;
        for (int d = 0; d < e->n_dims; d++) so += (size_t)snprintf(shape + so, sizeof shape - so, d ? ",%" PRId64 : "%" PRId64, e->shape[d]);
        shape[so] = 0;
        size_t need = strlen(e->name) + 160;
        if (8 + len + need > cap) {
            cap = (cap + need) * 2;
            char *nh = realloc(hdr, cap);
            if (!nh) {
                free(hdr);
                free(order);
                return moec_err(err, MOEC_ERR_OOM, "out of memory");
            }
            hdr = nh;
        }
        len += (size_t)snprintf(hdr + 8 + len, cap - 8 - len,
                                ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}", e->name,
                                moec_dtype_name(dtype), shape, data_bytes, data_bytes + bytes);
        data_bytes += bytes;
    }
    if (8 + len + 16 > cap) {
        char *nh = realloc(hdr, cap + 16);
        if (!nh) {
            free(hdr);
            free(order);
            return moec_err(err, MOEC_ERR_OOM, "out of memory");
        }
        hdr = nh;
    }
    hdr[8 + len++] = '}';
    while (len % 8) hdr[8 + len++] = ' ';
    for (int i = 0; i < 8; i++) hdr[i] = (char)((uint64_t)len >> (8 * i));
    /* data: fp32 entries are written in place; bf16 goes through one converted buffer */
    moec_iovec *parts = malloc((size_t)(n + 1) * sizeof *parts);
    uint16_t *conv = dtype == MOEC_DTYPE_BF16 ? malloc(data_bytes + 2) : NULL;
    if (!parts || (dtype == MOEC_DTYPE_BF16 && !conv)) {
        free(parts);
        free(conv);
        free(hdr);
        free(order);
        return moec_err(err, MOEC_ERR_OOM, "out of memory for a %zu-byte checkpoint", data_bytes);
    }
    parts[0].data = hdr;
    parts[0].size = 8 + len;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const moec_st_entry *e = order[i];
        size_t cnt = (size_t)numel_of(e);
        if (conv) {
            for (size_t j = 0; j < cnt; j++) conv[off + j] = moec_f32_to_bf16(e->data[j]);
            parts[i + 1].data = conv + off;
            parts[i + 1].size = cnt * 2;
            off += cnt;
        } else {
            parts[i + 1].data = e->data;
            parts[i + 1].size = cnt * 4;
        }
    }
    moec_status st = moec_file_write_atomic(path, parts, n + 1, err);
    free(parts);
    free(conv);
    free(hdr);
    free(order);
    return st;
}
