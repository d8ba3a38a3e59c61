/* gguf.h — GGUF files (llama.cpp / ggml's model format, versions 2 and 3), reader and writer.
 *
 * Layout (all little-endian): "GGUF" u32 version u64 n_tensors u64 n_kv, then n_kv metadata
 * pairs (string key, u32 value type, value), then n_tensors tensor infos (string name, u32
 * n_dims, u64 ne[n_dims] fastest dimension first, u32 ggml type, u64 offset), then padding to
 * general.alignment (default 32), then the data section; every tensor's offset is relative to
 * it and a multiple of the alignment. Strings are u64 length + bytes (no NUL).
 *
 * The reader validates everything at open — magic, version, every count, length, value type,
 * ggml type, dimension and offset, with sizes computed overflow-checked; alignment; every
 * tensor inside the file and no two overlapping; no duplicate keys or names — so after a
 * successful open every pointer it hands out is safe to read. It works on an mmapped file or
 * on a caller's memory buffer (moec_gguf_open_memory: the entry point for fuzzers). Errors are
 * one line naming the file, the byte offset and the item.
 *
 * Not here: what the keys mean (src/model/gguf_model.c, src/text/tokenizer_gguf.c), type
 * conversion (src/io/ggml_types.h). */
#ifndef MOEC_IO_GGUF_H
#define MOEC_IO_GGUF_H

#include "io/file.h"
#include "moec.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MOEC_GGUF_UINT8 = 0,
    MOEC_GGUF_INT8 = 1,
    MOEC_GGUF_UINT16 = 2,
    MOEC_GGUF_INT16 = 3,
    MOEC_GGUF_UINT32 = 4,
    MOEC_GGUF_INT32 = 5,
    MOEC_GGUF_FLOAT32 = 6,
    MOEC_GGUF_BOOL = 7,
    MOEC_GGUF_STRING = 8,
    MOEC_GGUF_ARRAY = 9,
    MOEC_GGUF_UINT64 = 10,
    MOEC_GGUF_INT64 = 11,
    MOEC_GGUF_FLOAT64 = 12,
    MOEC_GGUF_TYPE_COUNT
} moec_gguf_type;

#define MOEC_GGUF_MAX_DIMS 4
#define MOEC_GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const char *s; /* borrowed, inside the file; NOT NUL-terminated */
    size_t len;
} moec_gguf_str;

typedef struct {
    char *key;               /* NUL-terminated copy */
    moec_gguf_type type;
    moec_gguf_type arr_type; /* element type when type == ARRAY */
    uint64_t n;              /* array length (1 for a scalar) */
    const unsigned char *data; /* first value byte (scalars, numeric arrays) */
    moec_gguf_str *strs;     /* type STRING: 1 entry; ARRAY of STRING: n entries; else NULL */
} moec_gguf_kv;

typedef struct {
    char *name;              /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[MOEC_GGUF_MAX_DIMS]; /* ne[0] fastest (a row); unused dims are 1 */
    uint32_t type;           /* ggml type (io/ggml_types.h) */
    uint64_t offset;         /* in the data section */
    int64_t numel;
    size_t nbytes;
    const void *data;        /* inside the file, nbytes readable */
} moec_gguf_tensor;

typedef struct {
    const char *path;        /* for messages: copy owned by the struct */
    moec_mmap map;           /* when opened from a file */
    const unsigned char *base;
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    moec_gguf_kv *kv;        /* file order */
    moec_gguf_tensor *tensors; /* file order */
    size_t alignment;
    size_t data_offset;      /* start of the data section in the file */
    uint64_t *kv_by_key;     /* indices into kv sorted by key (lookups) */
    uint64_t *tensor_by_name; /* indices into tensors sorted by name */
} moec_gguf;

/* Opens and validates a GGUF file (mmapped read-only). On error *g is left closed. */
moec_status moec_gguf_open(moec_gguf *g, const char *path, moec_error *err);
/* The same on size bytes at data (borrowed: must outlive g); name is used in messages. */
moec_status moec_gguf_open_memory(moec_gguf *g, const void *data, size_t size, const char *name, moec_error *err);
void moec_gguf_close(moec_gguf *g); /* accepts a zeroed or closed struct */

/* 1 if the file at path starts with the GGUF magic (0 if not, or unreadable). */
int moec_gguf_is_gguf_file(const char *path);

/* Borrowed, or NULL when absent. */
const moec_gguf_kv *moec_gguf_find_kv(const moec_gguf *g, const char *key);
const moec_gguf_tensor *moec_gguf_find_tensor(const moec_gguf *g, const char *name);

/* Typed getters. Each returns MOEC_OK with the value, MOEC_ERR_FORMAT when the key is present
 * with the wrong type or a value out of [lo, hi], and for an absent key: the default when
 * has_def, else MOEC_ERR_FORMAT "missing key". Integer getters accept any integer type. */
moec_status moec_gguf_get_int(const moec_gguf *g, const char *key, int has_def, int64_t def, int64_t lo, int64_t hi,
                              int64_t *out, moec_error *err);
moec_status moec_gguf_get_float(const moec_gguf *g, const char *key, int has_def, double def, double lo, double hi,
                                double *out, moec_error *err);
moec_status moec_gguf_get_bool(const moec_gguf *g, const char *key, int has_def, int def, int *out, moec_error *err);
/* String value (borrowed from the file, not NUL-terminated); has_def: absent gives {NULL, 0}. */
moec_status moec_gguf_get_str(const moec_gguf *g, const char *key, int has_def, moec_gguf_str *out, moec_error *err);
/* Array of the given element type, or MOEC_ERR_FORMAT; absent: has_def gives NULL. */
moec_status moec_gguf_get_arr(const moec_gguf *g, const char *key, int has_def, moec_gguf_type elem,
                              const moec_gguf_kv **out, moec_error *err);
/* Element i of a numeric array as double / int64 (i < kv->n; the array's type is numeric). */
double moec_gguf_arr_f64(const moec_gguf_kv *kv, uint64_t i);
int64_t moec_gguf_arr_i64(const moec_gguf_kv *kv, uint64_t i);

const char *moec_gguf_type_name(moec_gguf_type t);

/* ---------------------------------------------------------------- writer */

/* Builds a GGUF v3 file: metadata in memory, tensor data streamed from a callback at write
 * time (one tensor in memory at a time). Keys and names are copied. */
typedef struct moec_gguf_writer moec_gguf_writer;

/* Fills dst (nbytes, the size the tensor's type and shape imply) with the tensor's data. */
typedef moec_status (*moec_gguf_fill_fn)(void *ctx, int tensor_index, void *dst, size_t nbytes, moec_error *err);

moec_status moec_gguf_writer_new(moec_gguf_writer **out, moec_error *err);
void moec_gguf_writer_free(moec_gguf_writer *w); /* accepts NULL */

/* Setters return MOEC_ERR_OOM on allocation failure; a key set twice is an invariant error. */
moec_status moec_gguf_set_u32(moec_gguf_writer *w, const char *key, uint32_t v);
moec_status moec_gguf_set_i32(moec_gguf_writer *w, const char *key, int32_t v);
moec_status moec_gguf_set_f32(moec_gguf_writer *w, const char *key, float v);
moec_status moec_gguf_set_bool(moec_gguf_writer *w, const char *key, int v);
moec_status moec_gguf_set_str(moec_gguf_writer *w, const char *key, const char *s, size_t len);
/* Array of n strings (lens[i] bytes each). */
moec_status moec_gguf_set_arr_str(moec_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                                  size_t n);
/* Array of n numbers of type elem (INT32 or FLOAT32 or UINT32), values as raw little-endian data. */
moec_status moec_gguf_set_arr_num(moec_gguf_writer *w, const char *key, moec_gguf_type elem, const void *data,
                                  size_t n);

/* Declares a tensor (ne[0] fastest). Returns its index for the fill callback, or -1 on OOM. */
int moec_gguf_add_tensor(moec_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims, const int64_t *ne);

/* Writes the file atomically (path.tmp.PID, fsync, rename), calling fill once per tensor in
 * declaration order. */
moec_status moec_gguf_write(moec_gguf_writer *w, const char *path, moec_gguf_fill_fn fill, void *ctx,
                            moec_error *err);

#endif
