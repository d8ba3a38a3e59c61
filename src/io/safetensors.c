/* safetensors.c — parser and validator for the safetensors format:
 *   [u64 little-endian header length N][N bytes of JSON header][tensor data]
 * The header maps names to {dtype, shape, data_offsets:[begin,end]} relative to the data
 * section, plus an optional "__metadata__" object of strings.
 * Quantized matrices (docs/formats.md, "Quantized weights") are U8 tensors of ggml blocks whose
 * format is named by the metadata key "moec.quant.<tensor name>"; they get their logical shape
 * and dtype here, so nothing after the reader sees the U8 wrapping. */
#include "io/safetensors.h"

#include "core/error.h"
#include "io/json.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOEC_ST_MAX_HEADER (100u << 20) /* the format's own limit: 100 MB */

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const moec_st_tensor *)a)->name, ((const moec_st_tensor *)b)->name);
}

typedef struct {
    size_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Reads a JSON number that must be a non-negative integer no larger than max. */
static int json_uint(const cJSON *j, double max, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (v < 0 || v > max || v != (double)(uint64_t)v) return 0;
    *out = (uint64_t)v;
    return 1;
}

#define QUANT_KEY "moec.quant." /* + tensor name: the block format of a U8 tensor */

/* A U8 tensor named in the metadata as quantized: its format q, and its logical shape from the
 * physical one (the last dimension is bytes of whole blocks). */
static moec_status quant_tensor(moec_st_tensor *t, const cJSON *meta, const char *path, const char *name,
                                moec_error *err) {
    char key[512];
    const int kn = snprintf(key, sizeof key, "%s%s", QUANT_KEY, name);
    const cJSON *f = kn > 0 && (size_t)kn < sizeof key ? cJSON_GetObjectItemCaseSensitive(meta, key) : NULL;
    if (!cJSON_IsString(f))
        return moec_err(err, MOEC_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has unsupported dtype U8 (moec reads BF16, F16, F32, and U8 only as quantized blocks named by __metadata__ \"%s<name>\")",
                        path, name, QUANT_KEY);
    moec_dtype q;
    if (!moec_dtype_by_name(f->valuestring, &q) || !moec_dtype_info(q)->quantized)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s': unknown quantized format '%.32s' in __metadata__ (moec knows Q8_0, Q4_0)",
                        path, name, f->valuestring);
    const moec_dtype_traits *tr = moec_dtype_info(q);
    if (t->n_dims < 1 || t->shape[t->n_dims - 1] <= 0 || t->shape[t->n_dims - 1] % (int64_t)tr->block_bytes)
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: tensor '%s' (%s): the last dimension must be bytes of whole %zu-byte blocks", path, name,
                        tr->name, tr->block_bytes);
    t->dtype = q;
    t->shape[t->n_dims - 1] = t->shape[t->n_dims - 1] / (int64_t)tr->block_bytes * tr->block; /* < 9e15 */
    return MOEC_OK;
}

static int parse_dtype(const char *s, moec_dtype *t, int *known_but_unsupported) {
    static const char *other[] = {"F64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
                                  "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                                  "F6_E3M2", "C64"};
    *known_but_unsupported = 0;
    if (!strcmp(s, "F32")) *t = MOEC_DTYPE_F32;
    else if (!strcmp(s, "F16")) *t = MOEC_DTYPE_F16;
    else if (!strcmp(s, "BF16")) *t = MOEC_DTYPE_BF16;
    else {
        for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
            if (!strcmp(s, other[i])) *known_but_unsupported = 1;
        return 0;
    }
    return 1;
}

static moec_status parse_file(moec_st_set *set, int fi, const unsigned char *base, size_t size, const char *path,
                              moec_error *err);

/* Adds the tensors of one mapped file to the set. */
static moec_status add_file(moec_st_set *set, const char *path, moec_error *err) {
    /* grow file arrays */
    int fi = set->n_files;
    char **paths = realloc(set->file_paths, (size_t)(fi + 1) * sizeof *paths);
    if (!paths) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    set->file_paths = paths;
    moec_mmap *maps = realloc(set->maps, (size_t)(fi + 1) * sizeof *maps);
    if (!maps) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    set->maps = maps;
    set->file_paths[fi] = strdup(path);
    if (!set->file_paths[fi]) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    set->maps[fi].addr = NULL;
    set->maps[fi].size = 0;
    set->n_files++;

    moec_status st = moec_file_map(path, &set->maps[fi], err);
    if (st) return st;
    return parse_file(set, fi, set->maps[fi].addr, set->maps[fi].size, path, err);
}

/* Parses and validates the bytes of file fi (mapped, or a caller's buffer) into the set. */
static moec_status parse_file(moec_st_set *set, int fi, const unsigned char *base, size_t size, const char *path,
                              moec_error *err) {
    moec_status st;
    if (size < 8)
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: truncated: %zu bytes, too short for the 8-byte header length", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > size - 8)
        return moec_err(err, MOEC_ERR_FORMAT,
                        "%s: header length %" PRIu64 " runs past end of file (%zu bytes): truncated or not a safetensors file",
                        path, hlen, size);
    if (hlen > MOEC_ST_MAX_HEADER)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the 100 MB limit", path, hlen);
    if (hlen < 2)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: header of %" PRIu64 " bytes is too short", path, hlen);
    const unsigned char *data = base + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;

    cJSON *root = cJSON_ParseWithLength((const char *)base + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: header is not a valid JSON object", path);
    }
    moec_status jst = moec_json_check(root, path, err);
    if (jst) {
        cJSON_Delete(root);
        return jst;
    }
    int n_new = 0;
    for (cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__")) n_new++;
    moec_st_tensor *tensors = realloc(set->tensors, (size_t)(set->n_tensors + n_new) * sizeof *tensors + 1);
    span *spans = malloc((size_t)n_new * sizeof *spans + 1);
    if (!tensors || !spans) {
        if (tensors) set->tensors = tensors;
        free(spans);
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    set->tensors = tensors;
    int ns = 0, n_quant = 0;
    st = MOEC_OK;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    int n_quant_keys = 0;
    for (const cJSON *m = cJSON_IsObject(meta) ? meta->child : NULL; m; m = m->next)
        if (!strncmp(m->string, QUANT_KEY, strlen(QUANT_KEY))) n_quant_keys++;
    for (cJSON *it = root->child; it && !st; it = it->next) {
        const char *name = it->string;
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(it)) st = moec_err(err, MOEC_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            for (cJSON *m = it->child; m && !st; m = m->next)
                if (!cJSON_IsString(m))
                    st = moec_err(err, MOEC_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path, m->string);
            continue;
        }
        cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo) ||
            cJSON_GetArraySize(jo) != 2) {
            st = moec_err(err, MOEC_ERR_FORMAT,
                          "%s: tensor '%s' needs dtype (string), shape (array) and data_offsets ([begin, end])",
                          path, name);
            break;
        }
        moec_st_tensor *t = &set->tensors[set->n_tensors];
        memset(t, 0, sizeof *t);
        int unsup = 0;
        const int is_u8 = !strcmp(jd->valuestring, "U8");
        if (!is_u8 && !parse_dtype(jd->valuestring, &t->dtype, &unsup)) {
            st = moec_err(err, unsup ? MOEC_ERR_UNSUPPORTED : MOEC_ERR_FORMAT,
                          "%s: tensor '%s' has %s dtype %s (moec reads BF16, F16, F32)", path, name,
                          unsup ? "unsupported" : "unknown", jd->valuestring);
            break;
        }
        int nd = cJSON_GetArraySize(js);
        if (nd > MOEC_ST_MAX_DIMS) {
            st = moec_err(err, MOEC_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dims (max %d)", path, name, nd, MOEC_ST_MAX_DIMS);
            break;
        }
        t->n_dims = nd;
        uint64_t numel = 1;
        for (int d = 0; d < nd && !st; d++) {
            uint64_t v;
            if (!json_uint(cJSON_GetArrayItem(js, d), 9.0e15, &v))
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' shape[%d] is not a non-negative integer", path, name, d);
            else if (v && numel > UINT64_MAX / 4 / v)
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' shape overflows", path, name);
            else {
                t->shape[d] = (int64_t)v;
                numel *= v;
            }
        }
        if (st) break;
        const uint64_t bytes_need = is_u8 ? numel : numel * moec_dtype_info(t->dtype)->block_bytes;
        if (is_u8) {
            if ((st = quant_tensor(t, meta, path, name, err))) break;
            n_quant++;
            numel = numel / moec_dtype_info(t->dtype)->block_bytes * (uint64_t)moec_dtype_info(t->dtype)->block;
        }
        uint64_t b, e;
        if (!json_uint(cJSON_GetArrayItem(jo, 0), 1.8e19, &b) || !json_uint(cJSON_GetArrayItem(jo, 1), 1.8e19, &e) || b > e) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' has invalid data_offsets (need integers begin <= end)", path, name);
            break;
        }
        if (e > data_size) {
            st = moec_err(err, MOEC_ERR_FORMAT,
                          "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64 "] past end of data (%zu bytes): file truncated or offsets out of bounds",
                          path, name, b, e, data_size);
            break;
        }
        if (e - b != bytes_need) {
            st = moec_err(err, MOEC_ERR_FORMAT,
                          "%s: tensor '%s' data_offsets span %" PRIu64 " bytes but its shape and dtype need %" PRIu64,
                          path, name, e - b, bytes_need);
            break;
        }
        /* float formats: aligned to the element; blocks: to their fp16 scale */
        const size_t es = moec_dtype_info(t->dtype)->quantized ? 2 : moec_dtype_info(t->dtype)->block_bytes;
        if (((size_t)(data - base) + b) % es) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' data is misaligned for %s", path, name, jd->valuestring);
            break;
        }
        t->name = strdup(name);
        if (!t->name) {
            st = moec_err(err, MOEC_ERR_OOM, "out of memory");
            break;
        }
        t->numel = (int64_t)numel;
        t->data = data + b;
        t->nbytes = (size_t)(e - b);
        t->file = fi;
        set->data_bytes += t->nbytes;
        set->n_tensors++;
        spans[ns].begin = (size_t)b;
        spans[ns].end = (size_t)e;
        spans[ns].name = t->name;
        ns++;
    }
    if (!st && n_quant != n_quant_keys) /* a key naming no U8 tensor: a renamed or re-typed tensor */
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: __metadata__ has %d \"%s\" keys but %d U8 tensors carry them", path,
                      n_quant_keys, QUANT_KEY, n_quant);
    if (!st && ns > 1) {
        qsort(spans, (size_t)ns, sizeof *spans, span_cmp);
        for (int i = 1; i < ns; i++)
            if (spans[i].begin < spans[i - 1].end && spans[i].end > spans[i].begin) {
                st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section (offsets)",
                              path, spans[i - 1].name, spans[i].name);
                break;
            }
    }
    free(spans);
    cJSON_Delete(root);
    return st;
}

static moec_status finish(moec_st_set *set, moec_error *err) {
    if (set->n_tensors == 0) return MOEC_OK; /* tensors may be NULL: no qsort/bsearch on it */
    qsort(set->tensors, (size_t)set->n_tensors, sizeof *set->tensors, tensor_name_cmp);
    for (int i = 1; i < set->n_tensors; i++)
        if (!strcmp(set->tensors[i].name, set->tensors[i - 1].name))
            return moec_err(err, MOEC_ERR_FORMAT, "tensor '%s' appears twice (in %s and %s)", set->tensors[i].name,
                            set->file_paths[set->tensors[i - 1].file], set->file_paths[set->tensors[i].file]);
    return MOEC_OK;
}

moec_status moec_st_open_file(moec_st_set *set, const char *path, moec_error *err) {
    memset(set, 0, sizeof *set);
    moec_status st = add_file(set, path, err);
    if (!st) st = finish(set, err);
    if (st) moec_st_close(set);
    return st;
}

moec_status moec_st_open_buffer(moec_st_set *set, const void *data, size_t size, const char *name, moec_error *err) {
    memset(set, 0, sizeof *set);
    set->file_paths = calloc(1, sizeof *set->file_paths);
    set->maps = calloc(1, sizeof *set->maps); /* stays unmapped: the buffer is the caller's */
    if (!set->file_paths || !set->maps) {
        free(set->file_paths);
        free(set->maps);
        memset(set, 0, sizeof *set);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    set->n_files = 1;
    if (!(set->file_paths[0] = strdup(name))) {
        moec_st_close(set);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    moec_status st = parse_file(set, 0, data, size, name, err);
    if (!st) st = finish(set, err);
    if (st) moec_st_close(set);
    return st;
}

static moec_status open_index(moec_st_set *set, const char *dir, const char *index_path, moec_error *err) {
    char *text = NULL;
    size_t len = 0;
    moec_status st = moec_file_read_all(index_path, &text, &len, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: not valid JSON with a \"weight_map\" object", index_path);
    }
    if ((st = moec_json_check(root, index_path, err))) {
        cJSON_Delete(root);
        return st;
    }
    if (!map->child) {
        cJSON_Delete(root);
        return moec_err(err, MOEC_ERR_FORMAT, "%s: \"weight_map\" is empty (names no tensor)", index_path);
    }
    /* open each distinct shard once, in order of first mention */
    for (cJSON *it = map->child; it && !st; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || !strcmp(it->valuestring, "..")) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name in the same directory",
                          index_path, it->string);
            break;
        }
        char path[4096];
        if (!moec_path_join(path, sizeof path, dir, it->valuestring)) {
            st = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s/%s", dir, it->valuestring);
            break;
        }
        int seen = 0;
        for (int f = 0; f < set->n_files; f++)
            if (!strcmp(set->file_paths[f], path)) seen = 1;
        if (seen) continue;
        moec_error sub = {0};
        st = add_file(set, path, &sub);
        if (st == MOEC_ERR_IO)
            moec_err(err, st, "shard %s named in %s: %s", it->valuestring, index_path, sub.msg);
        else if (st)
            moec_err(err, st, "%s", sub.msg);
    }
    if (!st) st = finish(set, err);
    /* every mapped name must be in the shard the index says */
    for (cJSON *it = map->child; it && !st; it = it->next) {
        moec_st_tensor *t = moec_st_find(set, it->string);
        char path[4096];
        moec_path_join(path, sizeof path, dir, it->valuestring);
        if (!t)
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' is listed in weight_map but not found in shard %s",
                          index_path, it->string, it->valuestring);
        else if (strcmp(set->file_paths[t->file], path))
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' is in %s, not in shard %s as weight_map says",
                          index_path, it->string, set->file_paths[t->file], it->valuestring);
    }
    cJSON_Delete(root);
    return st;
}

moec_status moec_st_open_dir(moec_st_set *set, const char *dir, moec_error *err) {
    memset(set, 0, sizeof *set);
    char single[4096], index[4096];
    if (!moec_path_join(single, sizeof single, dir, "model.safetensors") ||
        !moec_path_join(index, sizeof index, dir, "model.safetensors.index.json"))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir);
    FILE *f = fopen(index, "rb");
    moec_status st;
    if (f) {
        fclose(f);
        st = open_index(set, dir, index, err);
    } else if ((f = fopen(single, "rb"))) {
        fclose(f);
        st = add_file(set, single, err);
        if (!st) st = finish(set, err);
    } else {
        return moec_err(err, MOEC_ERR_IO, "cannot find model.safetensors or model.safetensors.index.json in %s", dir);
    }
    if (st) moec_st_close(set);
    return st;
}

void moec_st_close(moec_st_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_tensors; i++) free(set->tensors[i].name);
    for (int i = 0; i < set->n_files; i++) {
        moec_file_unmap(&set->maps[i]);
        free(set->file_paths[i]);
    }
    free(set->tensors);
    free(set->maps);
    free(set->file_paths);
    memset(set, 0, sizeof *set);
}

moec_st_tensor *moec_st_find(const moec_st_set *set, const char *name) {
    if (set->n_tensors == 0) return NULL;
    moec_st_tensor key;
    key.name = (char *)name;
    return bsearch(&key, set->tensors, (size_t)set->n_tensors, sizeof key, tensor_name_cmp);
}
