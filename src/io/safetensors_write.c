/* safetensors_write.c — see safetensors_write.h. */
#include "io/safetensors_write.h"

#include "core/error.h"
#include "io/file.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const moec_st_entry *e;
    moec_dtype t;
    size_t off; /* in the data section */
    int64_t cols; /* elements per row (the last dimension; 1 for a scalar) */
    float *row;   /* the writer's one-row fp32 scratch, shared by all items */
} item;

static int cmp_name(const void *a, const void *b) { return strcmp(((const item *)a)->e->name, ((const item *)b)->e->name); }

/* Data order: 4-byte elements first, so the 2-byte-aligned rest never misaligns them. */
static int cmp_layout(const void *a, const void *b) {
    const item *x = a, *y = b;
    const int ax = x->t == MOEC_DTYPE_F32, ay = y->t == MOEC_DTYPE_F32;
    return ax != ay ? ay - ax : strcmp(x->e->name, y->e->name);
}

static int64_t numel_of(const moec_st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->n_dims; d++) n *= e->shape[d];
    return n;
}

/* Appends to a growing buffer; 0 on out of memory. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static int sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return 0;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 1;
        }
        size_t cap = (b->cap + (size_t)n + 64) * 2;
        char *np = realloc(b->p, cap);
        if (!np) return 0;
        b->p = np;
        b->cap = cap;
    }
}

/* moec_iovec fill: rows [off / unit, (off + n) / unit) of an item, converted from the entry's
 * data_dtype to the item's dtype through the one-row fp32 scratch. */
static void fill_rows(const moec_iovec *part, size_t off, void *buf, size_t n) {
    const item *x = part->ctx;
    const moec_st_entry *e = x->e;
    const size_t in_row = moec_row_bytes(e->data_dtype, x->cols);
    for (size_t r = off / part->unit, end = (off + n) / part->unit; r < end; r++) {
        const void *src = (const char *)e->data + r * in_row;
        const float *f = src;
        if (e->data_dtype != MOEC_DTYPE_F32) {
            moec_to_f32(x->row, src, e->data_dtype, (size_t)x->cols);
            f = x->row;
        }
        moec_from_f32((char *)buf + (r - off / part->unit) * part->unit, f, x->t, (size_t)x->cols);
    }
}

moec_status moec_st_write(const char *path, const moec_st_entry *entries, int n, moec_dtype dtype, moec_error *err) {
    if (dtype != MOEC_DTYPE_F32 && dtype != MOEC_DTYPE_BF16)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "safetensors writer supports F32 and BF16, not %s", moec_dtype_name(dtype));
    moec_dtype *dt = malloc((size_t)(n ? n : 1) * sizeof *dt);
    if (!dt) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (int i = 0; i < n; i++) dt[i] = dtype;
    moec_status st = moec_st_write_typed(path, entries, dt, n, err);
    free(dt);
    return st;
}

moec_status moec_st_write_typed(const char *path, const moec_st_entry *entries, const moec_dtype *dtypes, int n,
                                moec_error *err) {
    if (n < 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "negative tensor count");
    const size_t nn = n ? (size_t)n : 1;
    item *it = malloc(nn * sizeof *it);
    if (!it) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (int i = 0; i < n; i++) {
        it[i] = (item){.e = &entries[i], .t = dtypes[i]};
        for (const char *c = entries[i].name; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
                free(it);
                return moec_err(err, MOEC_ERR_INVALID_ARG, "tensor name '%s' is not JSON-safe", entries[i].name);
            }
        for (int k = 0; k < 2; k++) { /* the stored dtype, and the one the data is in */
            const moec_dtype_traits *tr = moec_dtype_info(k ? entries[i].data_dtype : dtypes[i]);
            if (tr->quantized && (entries[i].n_dims < 1 || entries[i].shape[entries[i].n_dims - 1] % tr->block)) {
                free(it);
                return moec_err(err, MOEC_ERR_INVALID_ARG, "tensor '%s': rows of %s must be whole %" PRId64 "-element blocks",
                                entries[i].name, tr->name, tr->block);
            }
        }
    }
    /* data offsets in layout order */
    qsort(it, (size_t)n, sizeof *it, cmp_layout);
    size_t data_bytes = 0;
    for (int i = 0; i < n; i++) {
        it[i].off = data_bytes;
        data_bytes += moec_row_bytes(it[i].t, numel_of(it[i].e));
    }
    /* data: a tensor already in its dtype is written from the caller's array, any other is
     * converted row by row as it is written (fill_rows), so no converted copy exists whole */
    int64_t max_cols = 1;
    for (int i = 0; i < n; i++) {
        const moec_st_entry *e = it[i].e;
        it[i].cols = e->n_dims ? e->shape[e->n_dims - 1] : 1;
        if (it[i].t != e->data_dtype && it[i].cols > max_cols) max_cols = it[i].cols;
    }
    float *row = malloc((size_t)max_cols * sizeof *row);
    moec_iovec *parts = calloc(nn + 1, sizeof *parts);
    sbuf h = {0};
    moec_status st = MOEC_OK;
    if (!row || !parts || !sb_printf(&h, "%8s", "")) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        moec_iovec *pt = &parts[i + 1];
        pt->size = moec_row_bytes(it[i].t, numel_of(it[i].e));
        it[i].row = row;
        if (it[i].t == it[i].e->data_dtype) {
            pt->data = it[i].e->data;
        } else {
            pt->fill = fill_rows;
            pt->unit = moec_row_bytes(it[i].t, it[i].cols);
            pt->ctx = &it[i];
        }
    }
    /* header, keys sorted by name; a quantized tensor is U8 [..., row bytes] plus its metadata key */
    int ok = sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"");
    item *byname = malloc(nn * sizeof *byname);
    if (!byname) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) byname[i] = it[i];
    qsort(byname, (size_t)n, sizeof *byname, cmp_name);
    for (int i = 0; i < n && ok; i++)
        if (moec_dtype_info(byname[i].t)->quantized)
            ok = sb_printf(&h, ",\"moec.quant.%s\":\"%s\"", byname[i].e->name, moec_dtype_name(byname[i].t));
    ok = ok && sb_printf(&h, "}");
    for (int i = 0; i < n && ok; i++) {
        const moec_st_entry *e = byname[i].e;
        const moec_dtype_traits *tr = moec_dtype_info(byname[i].t);
        const size_t bytes = moec_row_bytes(byname[i].t, numel_of(e));
        ok = sb_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e->name, tr->quantized ? "U8" : tr->name);
        for (int d = 0; d < e->n_dims && ok; d++) {
            int64_t v = e->shape[d];
            if (tr->quantized && d == e->n_dims - 1) v = v / tr->block * (int64_t)tr->block_bytes;
            ok = sb_printf(&h, d ? ",%" PRId64 : "%" PRId64, v);
        }
        ok = ok && sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", byname[i].off, byname[i].off + bytes);
    }
    ok = ok && sb_printf(&h, "}");
    while (ok && (h.len - 8) % 8) ok = sb_printf(&h, " ");
    free(byname);
    if (!ok) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    for (int i = 0; i < 8; i++) h.p[i] = (char)((uint64_t)(h.len - 8) >> (8 * i));
    parts[0].data = h.p;
    parts[0].size = h.len;
    st = moec_file_write_atomic(path, parts, n + 1, err);
done:
    free(h.p);
    free(parts);
    free(row);
    free(it);
    return st;
}
