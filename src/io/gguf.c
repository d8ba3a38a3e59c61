/* gguf.c — GGUF reader (validating, see gguf.h for the rules) and writer. */
#include "io/gguf.h"

#include "core/error.h"
#include "io/ggml_types.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define MAX_KEY_LEN 65535u     /* the spec's limit */
#define MAX_NAME_LEN 1024u     /* ggml allows 63; be lenient, but bounded */
#define MAX_COUNT ((uint64_t)1 << 24) /* tensors or keys: far above any real model */

static const char *const type_names[MOEC_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64",
    "float64"};
static const size_t type_size[MOEC_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *moec_gguf_type_name(moec_gguf_type t) {
    return (unsigned)t < MOEC_GGUF_TYPE_COUNT ? type_names[t] : "?";
}

/* ------------------------------------------------------------------ reading: a bounded cursor */

typedef struct {
    const unsigned char *p;
    size_t size, pos;
    const char *path;
    moec_error *err;
} cursor;

static moec_status truncated(cursor *c, const char *what) {
    return moec_err(c->err, MOEC_ERR_FORMAT, "%s: truncated at byte %zu of %zu while reading %s", c->path, c->pos,
                    c->size, what);
}

static moec_status rd(cursor *c, void *dst, size_t n, const char *what) {
    if (c->size - c->pos < n) return truncated(c, what);
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return MOEC_OK;
}

static moec_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    unsigned char b[4] = {0};
    moec_status st = rd(c, b, 4, what);
    if (!st) *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return st;
}

static moec_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    unsigned char b[8] = {0};
    moec_status st = rd(c, b, 8, what);
    if (!st) {
        *v = 0;
        for (int i = 7; i >= 0; i--) *v = (*v << 8) | b[i];
    }
    return st;
}

static uint64_t le_u64(const unsigned char *b, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | b[i];
    return v;
}

/* A length-prefixed string; max bounds the length, what names it in messages. */
static moec_status rd_str(cursor *c, moec_gguf_str *s, uint64_t max, const char *what) {
    uint64_t n;
    size_t at = c->pos;
    moec_status st = rd_u64(c, &n, what);
    if (st) return st;
    if (n > max)
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: %s length %" PRIu64 " exceeds the limit %" PRIu64,
                        c->path, at, what, n, max);
    if (n > c->size - c->pos) return truncated(c, what);
    s->s = (const char *)c->p + c->pos;
    s->len = (size_t)n;
    c->pos += (size_t)n;
    return MOEC_OK;
}

/* NUL-terminated copy of a key or name, which must be non-empty and hold no NUL byte. */
static moec_status dup_name(cursor *c, const moec_gguf_str *s, size_t at, const char *what, char **out) {
    if (s->len == 0) return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: empty %s", c->path, at, what);
    if (memchr(s->s, 0, s->len))
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: %s contains a NUL byte", c->path, at, what);
    char *d = malloc(s->len + 1);
    if (!d) return moec_err(c->err, MOEC_ERR_OOM, "out of memory");
    memcpy(d, s->s, s->len);
    d[s->len] = 0;
    *out = d;
    return MOEC_OK;
}

static moec_status read_value(cursor *c, moec_gguf_kv *kv) {
    uint32_t t;
    size_t at = c->pos;
    moec_status st = rd_u32(c, &t, "a value type");
    if (st) return st;
    if (t >= MOEC_GGUF_TYPE_COUNT)
        return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: unknown GGUF value type %u for key '%s'", c->path, at, t,
                        kv->key);
    kv->type = (moec_gguf_type)t;
    kv->n = 1;
    uint32_t et = t;
    if (t == MOEC_GGUF_ARRAY) {
        at = c->pos;
        if ((st = rd_u32(c, &et, "an array element type"))) return st;
        if (et >= MOEC_GGUF_TYPE_COUNT)
            return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: unknown GGUF array element type %u for key '%s'",
                            c->path, at, et, kv->key);
        if (et == MOEC_GGUF_ARRAY)
            return moec_err(c->err, MOEC_ERR_UNSUPPORTED, "%s: byte %zu: key '%s' is an array of arrays (not supported)",
                            c->path, at, kv->key);
        kv->arr_type = (moec_gguf_type)et;
        at = c->pos;
        if ((st = rd_u64(c, &kv->n, "an array length"))) return st;
        const size_t min_elem = et == MOEC_GGUF_STRING ? 8 : type_size[et];
        if (kv->n > (c->size - c->pos) / min_elem)
            return moec_err(c->err, MOEC_ERR_FORMAT,
                            "%s: byte %zu: array '%s' of %" PRIu64 " %s values does not fit in the remaining %zu bytes",
                            c->path, at, kv->key, kv->n, type_names[et], c->size - c->pos);
    }
    if (et == MOEC_GGUF_STRING) {
        kv->strs = malloc((size_t)kv->n * sizeof *kv->strs + 1);
        if (!kv->strs) return moec_err(c->err, MOEC_ERR_OOM, "out of memory");
        kv->data = c->p + c->pos;
        for (uint64_t i = 0; i < kv->n; i++)
            if ((st = rd_str(c, &kv->strs[i], UINT64_MAX, "a string value"))) return st;
        return MOEC_OK;
    }
    kv->data = c->p + c->pos;
    const size_t nb = (size_t)kv->n * type_size[et]; /* bounded by the file size above */
    if (nb > c->size - c->pos) return truncated(c, "a value");
    if (et == MOEC_GGUF_BOOL)
        for (size_t i = 0; i < nb; i++)
            if (kv->data[i] > 1)
                return moec_err(c->err, MOEC_ERR_FORMAT, "%s: byte %zu: bool value of '%s' is %u (must be 0 or 1)",
                                c->path, c->pos + i, kv->key, kv->data[i]);
    c->pos += nb;
    return MOEC_OK;
}

/* Sorting without a global context: (key, index) pairs. */
typedef struct {
    const char *s;
    uint64_t off;
    uint64_t i;
} sort_item;

static int item_str_cmp(const void *a, const void *b) {
    return strcmp(((const sort_item *)a)->s, ((const sort_item *)b)->s);
}
static int item_off_cmp(const void *a, const void *b) {
    const uint64_t x = ((const sort_item *)a)->off, y = ((const sort_item *)b)->off;
    return x < y ? -1 : x > y;
}

/* Sorts n items and writes their indices to order (if non-NULL). */
static void sort_items(sort_item *it, uint64_t n, int by_off, uint64_t *order) {
    qsort(it, (size_t)n, sizeof *it, by_off ? item_off_cmp : item_str_cmp);
    for (uint64_t k = 0; order && k < n; k++) order[k] = it[k].i;
}

static size_t elem_align(uint32_t type) {
    moec_ggml_layout t;
    moec_ggml_type_layout(type, &t);
    return t.block == 1 ? t.bytes : 2; /* block types are read through memcpy; 2 covers their fp16 scales */
}

static moec_status parse_body(moec_gguf *g, cursor *cp, sort_item *items);

static moec_status parse(moec_gguf *g, moec_error *err) {
    cursor c = {g->base, g->size, 0, g->path, err};
    char magic[4];
    moec_status st;
    if (g->size < 4 || memcmp(g->base, GGUF_MAGIC, 4))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not a GGUF file (no \"GGUF\" magic at byte 0; a Hugging Face checkpoint is given as its directory)", g->path);
    if ((st = rd(&c, magic, 4, "the magic"))) return st;
    if ((st = rd_u32(&c, &g->version, "the version"))) return st;
    if (g->version != 2 && g->version != 3) {
        const uint32_t v = g->version, sw = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
        if (sw == 2 || sw == 3)
            return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: big-endian GGUF (version %u byte-swapped) is not supported",
                            g->path, sw);
        return moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (moec reads versions 2 and 3)",
                        g->path, v);
    }
    if ((st = rd_u64(&c, &g->n_tensors, "the tensor count"))) return st;
    if ((st = rd_u64(&c, &g->n_kv, "the metadata count"))) return st;
    /* each tensor info takes >= 24 bytes and each key/value >= 13: a count the file cannot hold
     * is rejected before anything is allocated for it */
    if (g->n_tensors > MAX_COUNT || g->n_tensors > (g->size - c.pos) / 24)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor count %" PRIu64 " is impossible for a file of %zu bytes",
                        g->path, g->n_tensors, g->size);
    if (g->n_kv > MAX_COUNT || g->n_kv > (g->size - c.pos) / 13)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata count %" PRIu64 " is impossible for a file of %zu bytes",
                        g->path, g->n_kv, g->size);
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    g->kv_by_key = malloc(((size_t)g->n_kv + 1) * sizeof *g->kv_by_key);
    g->tensor_by_name = malloc(((size_t)g->n_tensors + 1) * sizeof *g->tensor_by_name);
    const uint64_t n_items = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    sort_item *items = malloc(((size_t)n_items + 1) * sizeof *items);
    if (!g->kv || !g->tensors || !g->kv_by_key || !g->tensor_by_name || !items) {
        free(items);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    st = parse_body(g, &c, items);
    free(items);
    return st;
}

static moec_status parse_body(moec_gguf *g, cursor *cp, sort_item *items) {
    cursor c = *cp;
    moec_error *err = c.err;
    moec_status st;

    /* metadata */
    for (uint64_t i = 0; i < g->n_kv; i++) {
        moec_gguf_str k;
        size_t at = c.pos;
        if ((st = rd_str(&c, &k, MAX_KEY_LEN, "a metadata key"))) return st;
        if ((st = dup_name(&c, &k, at, "metadata key", &g->kv[i].key))) return st;
        if ((st = read_value(&c, &g->kv[i]))) return st;
        items[i].s = g->kv[i].key;
        items[i].i = i;
    }
    sort_items(items, g->n_kv, 0, g->kv_by_key);
    for (uint64_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv[g->kv_by_key[i]].key, g->kv[g->kv_by_key[i - 1]].key))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata key '%s' appears twice", g->path, g->kv[g->kv_by_key[i]].key);
    g->alignment = MOEC_GGUF_DEFAULT_ALIGNMENT;
    const moec_gguf_kv *al = moec_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != MOEC_GGUF_UINT32)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: general.alignment is %s, must be uint32", g->path,
                            type_names[al->type]);
        const uint64_t a = le_u64(al->data, 4);
        if (a == 0 || (a & (a - 1)))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: general.alignment %" PRIu64 " is not a power of two", g->path, a);
        g->alignment = (size_t)a;
    }

    /* tensor infos */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        moec_gguf_tensor *t = &g->tensors[i];
        moec_gguf_str nm;
        size_t at = c.pos;
        if ((st = rd_str(&c, &nm, MAX_NAME_LEN, "a tensor name"))) return st;
        if ((st = dup_name(&c, &nm, at, "tensor name", &t->name))) return st;
        at = c.pos;
        if ((st = rd_u32(&c, &t->n_dims, "a tensor's dimension count"))) return st;
        if (t->n_dims > MOEC_GGUF_MAX_DIMS)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: byte %zu: tensor '%s' has %u dimensions (at most %d)", g->path, at,
                            t->name, t->n_dims, MOEC_GGUF_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < MOEC_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t v;
            at = c.pos;
            if ((st = rd_u64(&c, &v, "a tensor dimension"))) return st;
            if (v == 0 || v > (uint64_t)INT64_MAX / numel)
                return moec_err(err, MOEC_ERR_FORMAT, "%s: byte %zu: tensor '%s' dimension %u is %" PRIu64 "%s", g->path,
                                at, t->name, d, v, v ? " (the element count overflows)" : " (empty)");
            t->ne[d] = (int64_t)v;
            numel *= v;
        }
        t->numel = (int64_t)numel;
        at = c.pos;
        if ((st = rd_u32(&c, &t->type, "a tensor type"))) return st;
        moec_ggml_layout lay;
        const moec_ggml_layout *tr = &lay;
        if (!moec_ggml_type_layout(t->type, &lay))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: byte %zu: tensor '%s' has unknown ggml type %u", g->path, at,
                            t->name, t->type);
        if (t->ne[0] % tr->block)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' row of %" PRId64 " elements is not a whole number of %s blocks of %" PRId64,
                            g->path, t->name, t->ne[0], tr->name, tr->block);
        const uint64_t blocks = numel / (uint64_t)tr->block;
        if (blocks > (uint64_t)SIZE_MAX / tr->bytes || blocks * tr->bytes > g->size)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' needs more bytes than the file has (%zu)", g->path,
                            t->name, g->size);
        t->nbytes = (size_t)(blocks * tr->bytes);
        at = c.pos;
        if ((st = rd_u64(&c, &t->offset, "a tensor offset"))) return st;
        if (t->offset % g->alignment)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: byte %zu: tensor '%s' offset %" PRIu64 " is not a multiple of the alignment %zu",
                            g->path, at, t->name, t->offset, g->alignment);
        items[i].s = t->name;
        items[i].i = i;
    }
    sort_items(items, g->n_tensors, 0, g->tensor_by_name);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[g->tensor_by_name[i]].name, g->tensors[g->tensor_by_name[i - 1]].name))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' appears twice", g->path,
                            g->tensors[g->tensor_by_name[i]].name);

    /* data section */
    size_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    if (pad > SIZE_MAX - c.pos) return moec_err(err, MOEC_ERR_FORMAT, "%s: alignment padding overflows", g->path);
    g->data_offset = c.pos + pad;
    if (g->data_offset > g->size && g->n_tensors > 0)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: truncated: the data section would start at byte %zu of %zu", g->path,
                        g->data_offset, g->size);
    const size_t data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        moec_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return moec_err(err, MOEC_ERR_FORMAT,
                            "%s: tensor '%s' data [%" PRIu64 ", +%zu) runs past the end of the data section (%zu bytes): truncated file or bad offset",
                            g->path, t->name, t->offset, t->nbytes, data_size);
        t->data = g->base + g->data_offset + t->offset;
        if ((uintptr_t)t->data % elem_align(t->type))
            return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' data is misaligned (type %u)", g->path, t->name,
                            t->type);
    }
    /* overlaps: tensors sorted by offset, each must end before the next begins */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        items[i].off = g->tensors[i].offset;
        items[i].i = i;
    }
    sort_items(items, g->n_tensors, 1, NULL);
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        const moec_gguf_tensor *a = &g->tensors[items[i - 1].i], *b = &g->tensors[items[i].i];
        if (b->offset < a->offset + a->nbytes)
            return moec_err(err, MOEC_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", g->path,
                            a->name, b->name);
    }
    return MOEC_OK;
}

static moec_status open_common(moec_gguf *g, const char *name, moec_error *err) {
    g->path = strdup(name);
    if (!g->path) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    return parse(g, err);
}

moec_status moec_gguf_open_memory(moec_gguf *g, const void *data, size_t size, const char *name, moec_error *err) {
    memset(g, 0, sizeof *g);
    g->base = data;
    g->size = size;
    moec_status st = open_common(g, name ? name : "(memory)", err);
    if (st) moec_gguf_close(g);
    return st;
}

moec_status moec_gguf_open(moec_gguf *g, const char *path, moec_error *err) {
    memset(g, 0, sizeof *g);
    moec_status st = moec_file_map(path, &g->map, err);
    if (!st) {
        g->base = g->map.addr;
        g->size = g->map.size;
        st = open_common(g, path, err);
    }
    if (st) moec_gguf_close(g);
    return st;
}

void moec_gguf_close(moec_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].strs);
    }
    for (uint64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->kv_by_key);
    free(g->tensor_by_name);
    free((char *)g->path);
    moec_file_unmap(&g->map);
    memset(g, 0, sizeof *g);
}

int moec_gguf_is_gguf_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4];
    int ok = fread(m, 1, 4, f) == 4 && !memcmp(m, GGUF_MAGIC, 4);
    fclose(f);
    return ok;
}

/* ------------------------------------------------------------------ lookups and typed getters */

const moec_gguf_kv *moec_gguf_find_kv(const moec_gguf *g, const char *key) {
    size_t lo = 0, hi = (size_t)g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_by_key[mid]].key, key);
        if (!c) return &g->kv[g->kv_by_key[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const moec_gguf_tensor *moec_gguf_find_tensor(const moec_gguf *g, const char *name) {
    size_t lo = 0, hi = (size_t)g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->tensor_by_name[mid]].name, name);
        if (!c) return &g->tensors[g->tensor_by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int is_int_type(moec_gguf_type t) {
    return t <= MOEC_GGUF_INT32 || t == MOEC_GGUF_UINT64 || t == MOEC_GGUF_INT64;
}

/* Numeric value at p of type t, as int64 (u64 values above INT64_MAX saturate). */
static int64_t num_i64(const unsigned char *p, moec_gguf_type t) {
    switch (t) {
    case MOEC_GGUF_UINT8: case MOEC_GGUF_BOOL: return p[0];
    case MOEC_GGUF_INT8: return (int8_t)p[0];
    case MOEC_GGUF_UINT16: return (int64_t)le_u64(p, 2);
    case MOEC_GGUF_INT16: return (int16_t)le_u64(p, 2);
    case MOEC_GGUF_UINT32: return (int64_t)le_u64(p, 4);
    case MOEC_GGUF_INT32: return (int32_t)(uint32_t)le_u64(p, 4);
    case MOEC_GGUF_UINT64: { uint64_t v = le_u64(p, 8); return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }
    case MOEC_GGUF_INT64: return (int64_t)le_u64(p, 8);
    default: return 0;
    }
}

static double num_f64(const unsigned char *p, moec_gguf_type t) {
    if (t == MOEC_GGUF_FLOAT32) {
        uint32_t u = (uint32_t)le_u64(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == MOEC_GGUF_FLOAT64) {
        uint64_t u = le_u64(p, 8);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    return (double)num_i64(p, t);
}

double moec_gguf_arr_f64(const moec_gguf_kv *kv, uint64_t i) {
    return num_f64(kv->data + (size_t)i * type_size[kv->arr_type], kv->arr_type);
}
int64_t moec_gguf_arr_i64(const moec_gguf_kv *kv, uint64_t i) {
    return num_i64(kv->data + (size_t)i * type_size[kv->arr_type], kv->arr_type);
}

static moec_status missing(const moec_gguf *g, const char *key, moec_error *err) {
    return moec_err(err, MOEC_ERR_FORMAT, "%s: missing metadata key '%s'", g->path, key);
}

moec_status moec_gguf_get_int(const moec_gguf *g, const char *key, int has_def, int64_t def, int64_t lo, int64_t hi,
                              int64_t *out, moec_error *err) {
    const moec_gguf_kv *kv = moec_gguf_find_kv(g, key);
    if (!kv) {
        if (!has_def) return missing(g, key, err);
        *out = def;
        return MOEC_OK;
    }
    if (!is_int_type(kv->type))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' is %s, expected an integer", g->path, key,
                        type_names[kv->type]);
    int64_t v = num_i64(kv->data, kv->type);
    if (v < lo || v > hi)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' = %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]",
                        g->path, key, v, lo, hi);
    *out = v;
    return MOEC_OK;
}

moec_status moec_gguf_get_float(const moec_gguf *g, const char *key, int has_def, double def, double lo, double hi,
                                double *out, moec_error *err) {
    const moec_gguf_kv *kv = moec_gguf_find_kv(g, key);
    if (!kv) {
        if (!has_def) return missing(g, key, err);
        *out = def;
        return MOEC_OK;
    }
    if (kv->type != MOEC_GGUF_FLOAT32 && kv->type != MOEC_GGUF_FLOAT64 && !is_int_type(kv->type))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' is %s, expected a number", g->path, key,
                        type_names[kv->type]);
    double v = num_f64(kv->data, kv->type);
    if (!(v >= lo && v <= hi))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' = %g is outside [%g, %g]", g->path, key, v, lo, hi);
    *out = v;
    return MOEC_OK;
}

moec_status moec_gguf_get_bool(const moec_gguf *g, const char *key, int has_def, int def, int *out, moec_error *err) {
    const moec_gguf_kv *kv = moec_gguf_find_kv(g, key);
    if (!kv) {
        if (!has_def) return missing(g, key, err);
        *out = def;
        return MOEC_OK;
    }
    if (kv->type != MOEC_GGUF_BOOL)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' is %s, expected bool", g->path, key, type_names[kv->type]);
    *out = kv->data[0];
    return MOEC_OK;
}

moec_status moec_gguf_get_str(const moec_gguf *g, const char *key, int has_def, moec_gguf_str *out, moec_error *err) {
    const moec_gguf_kv *kv = moec_gguf_find_kv(g, key);
    if (!kv) {
        if (!has_def) return missing(g, key, err);
        out->s = NULL;
        out->len = 0;
        return MOEC_OK;
    }
    if (kv->type != MOEC_GGUF_STRING)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' is %s, expected string", g->path, key,
                        type_names[kv->type]);
    *out = kv->strs[0];
    return MOEC_OK;
}

moec_status moec_gguf_get_arr(const moec_gguf *g, const char *key, int has_def, moec_gguf_type elem,
                              const moec_gguf_kv **out, moec_error *err) {
    const moec_gguf_kv *kv = moec_gguf_find_kv(g, key);
    *out = NULL;
    if (!kv) return has_def ? MOEC_OK : missing(g, key, err);
    int ok = kv->type == MOEC_GGUF_ARRAY &&
             (kv->arr_type == elem || (elem == MOEC_GGUF_INT32 && is_int_type(kv->arr_type)) ||
              (elem == MOEC_GGUF_FLOAT32 && (kv->arr_type == MOEC_GGUF_FLOAT32 || kv->arr_type == MOEC_GGUF_FLOAT64)));
    if (!ok)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: metadata '%s' is %s%s%s, expected an array of %s", g->path, key,
                        type_names[kv->type], kv->type == MOEC_GGUF_ARRAY ? " of " : "",
                        kv->type == MOEC_GGUF_ARRAY ? type_names[kv->arr_type] : "", type_names[elem]);
    *out = kv;
    return MOEC_OK;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    int oom;
} wbuf;

static void wput(wbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void wput_u32(wbuf *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    wput(b, x, 4);
}

static void wput_u64(wbuf *b, uint64_t v) {
    unsigned char x[8];
    for (int i = 0; i < 8; i++) x[i] = (unsigned char)(v >> (8 * i));
    wput(b, x, 8);
}

static void wput_str(wbuf *b, const char *s, size_t len) {
    wput_u64(b, len);
    wput(b, s, len);
}

typedef struct {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[MOEC_GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset;
} wtensor;

struct moec_gguf_writer {
    wbuf kv;
    uint64_t n_kv;
    char **keys;
    wtensor *tensors;
    int n_tensors, cap_tensors;
};

moec_status moec_gguf_writer_new(moec_gguf_writer **out, moec_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? MOEC_OK : moec_err(err, MOEC_ERR_OOM, "out of memory");
}

void moec_gguf_writer_free(moec_gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

static moec_status add_key(moec_gguf_writer *w, const char *key, moec_gguf_type t) {
    for (uint64_t i = 0; i < w->n_kv; i++) MOEC_ASSERT(strcmp(w->keys[i], key) != 0);
    char **k = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *k);
    if (!k) return MOEC_ERR_OOM;
    w->keys = k;
    if (!(w->keys[w->n_kv] = strdup(key))) return MOEC_ERR_OOM;
    w->n_kv++;
    wput_str(&w->kv, key, strlen(key));
    wput_u32(&w->kv, (uint32_t)t);
    return w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_u32(moec_gguf_writer *w, const char *key, uint32_t v) {
    moec_status st = add_key(w, key, MOEC_GGUF_UINT32);
    if (!st) wput_u32(&w->kv, v);
    return st ? st : w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_i32(moec_gguf_writer *w, const char *key, int32_t v) {
    moec_status st = add_key(w, key, MOEC_GGUF_INT32);
    if (!st) wput_u32(&w->kv, (uint32_t)v);
    return st ? st : w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_f32(moec_gguf_writer *w, const char *key, float v) {
    moec_status st = add_key(w, key, MOEC_GGUF_FLOAT32);
    uint32_t u;
    memcpy(&u, &v, 4);
    if (!st) wput_u32(&w->kv, u);
    return st ? st : w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_bool(moec_gguf_writer *w, const char *key, int v) {
    moec_status st = add_key(w, key, MOEC_GGUF_BOOL);
    unsigned char b = v ? 1 : 0;
    if (!st) wput(&w->kv, &b, 1);
    return st ? st : w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_str(moec_gguf_writer *w, const char *key, const char *s, size_t len) {
    moec_status st = add_key(w, key, MOEC_GGUF_STRING);
    if (!st) wput_str(&w->kv, s, len);
    return st ? st : w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_arr_str(moec_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                                  size_t n) {
    moec_status st = add_key(w, key, MOEC_GGUF_ARRAY);
    if (st) return st;
    wput_u32(&w->kv, MOEC_GGUF_STRING);
    wput_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) wput_str(&w->kv, strs[i], lens[i]);
    return w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

moec_status moec_gguf_set_arr_num(moec_gguf_writer *w, const char *key, moec_gguf_type elem, const void *data,
                                  size_t n) {
    MOEC_ASSERT(elem == MOEC_GGUF_INT32 || elem == MOEC_GGUF_FLOAT32 || elem == MOEC_GGUF_UINT32);
    moec_status st = add_key(w, key, MOEC_GGUF_ARRAY);
    if (st) return st;
    wput_u32(&w->kv, (uint32_t)elem);
    wput_u64(&w->kv, n);
    const uint32_t *v = data; /* all three element types are 4 bytes; written little-endian */
    for (size_t i = 0; i < n; i++) wput_u32(&w->kv, v[i]);
    return w->kv.oom ? MOEC_ERR_OOM : MOEC_OK;
}

int moec_gguf_add_tensor(moec_gguf_writer *w, const char *name, uint32_t ggml_type, int n_dims, const int64_t *ne) {
    moec_ggml_layout lay;
    const moec_ggml_layout *tr = &lay;
    MOEC_ASSERT(moec_ggml_type_layout(ggml_type, &lay));
    MOEC_ASSERT(n_dims >= 1 && n_dims <= MOEC_GGUF_MAX_DIMS);
    MOEC_ASSERT(ne[0] % tr->block == 0);
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        wtensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) return -1;
        w->tensors = t;
        w->cap_tensors = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return -1;
    t->type = ggml_type;
    t->n_dims = n_dims;
    size_t numel = 1;
    for (int d = 0; d < MOEC_GGUF_MAX_DIMS; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        MOEC_ASSERT(t->ne[d] >= 1);
        numel *= (size_t)t->ne[d];
    }
    t->nbytes = numel / (size_t)tr->block * tr->bytes;
    return w->n_tensors++;
}

static const unsigned char zeros[MOEC_GGUF_DEFAULT_ALIGNMENT];

moec_status moec_gguf_write(moec_gguf_writer *w, const char *path, moec_gguf_fill_fn fill, void *ctx,
                            moec_error *err) {
    const size_t A = MOEC_GGUF_DEFAULT_ALIGNMENT;
    wbuf h = {0};
    wput(&h, GGUF_MAGIC, 4);
    wput_u32(&h, 3);
    wput_u64(&h, (uint64_t)w->n_tensors);
    wput_u64(&h, w->n_kv);
    wput(&h, w->kv.p, w->kv.n);
    uint64_t off = 0;
    size_t max_bytes = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        wtensor *t = &w->tensors[i];
        wput_str(&h, t->name, strlen(t->name));
        wput_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) wput_u64(&h, (uint64_t)t->ne[d]);
        wput_u32(&h, t->type);
        t->offset = off;
        wput_u64(&h, off);
        off += (t->nbytes + A - 1) / A * A;
        if (t->nbytes > max_bytes) max_bytes = t->nbytes;
    }
    wput(&h, zeros, (A - h.n % A) % A);
    if (h.oom || w->kv.oom) {
        free(h.p);
        return moec_err(err, MOEC_ERR_OOM, "out of memory building the GGUF header");
    }
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(h.p);
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(h.p);
        return moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    moec_status st = MOEC_OK;
    unsigned char *buf = malloc(max_bytes + 1);
    if (!buf) st = moec_err(err, MOEC_ERR_OOM, "out of memory (%zu bytes for one tensor)", max_bytes);
    if (!st && fwrite(h.p, 1, h.n, f) != h.n) st = moec_err(err, MOEC_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    for (int i = 0; i < w->n_tensors && !st; i++) {
        const wtensor *t = &w->tensors[i];
        if ((st = fill(ctx, i, buf, t->nbytes, err))) break;
        const size_t pad = (A - t->nbytes % A) % A;
        if (fwrite(buf, 1, t->nbytes, f) != t->nbytes || fwrite(zeros, 1, pad, f) != pad)
            st = moec_err(err, MOEC_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    }
    free(buf);
    free(h.p);
    if (!st && (fflush(f) || fsync(fileno(f)))) st = moec_err(err, MOEC_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    if (fclose(f) && !st) st = moec_err(err, MOEC_ERR_IO, "closing %s: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path)) st = moec_err(err, MOEC_ERR_IO, "renaming %s to %s: %s", tmp, path, strerror(errno));
    if (st) remove(tmp);
    return st;
}
