/* json.c — the checks every JSON reader applies after cJSON has parsed (io/json.h). */
#include "io/json.h"

#include "core/error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A key that appears twice among obj's n children (NULL: none; *oom when it could not look):
 * pairwise for a few keys, else an open-addressing table of FNV-1a hashes (a tokenizer.json
 * vocabulary has 32k-151k keys: sorting them cost as much as parsing the file). */
static const char *twice(const cJSON *obj, size_t n, int *oom) {
    if (n <= 16) {
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (!strcmp(a->string, b->string)) return b->string;
        return NULL;
    }
    size_t cap = 32;
    while (cap < 2 * n) cap *= 2;
    const cJSON **tab = calloc(cap, sizeof *tab);
    if (!tab) {
        *oom = 1;
        return NULL;
    }
    const char *dup = NULL;
    for (const cJSON *it = obj->child; it && !dup; it = it->next) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (const unsigned char *c = (const unsigned char *)it->string; *c; c++) h = (h ^ *c) * 0x100000001b3ull;
        for (size_t i = (size_t)h & (cap - 1);; i = (i + 1) & (cap - 1)) {
            if (!tab[i]) {
                tab[i] = it;
                break;
            }
            if (!strcmp(tab[i]->string, it->string)) {
                dup = it->string;
                break;
            }
        }
    }
    free(tab);
    return dup;
}

/* Depth-first; cJSON's nesting limit (1000) bounds the recursion. */
static moec_status check(const cJSON *obj, const char *path, moec_error *err) {
    size_t n = 0;
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (cJSON_IsNumber(it) && !isfinite(it->valuedouble))
            return it->string ? moec_err(err, MOEC_ERR_FORMAT, "%s: key \"%.64s\" holds a number too large for a double",
                                         path, it->string)
                              : moec_err(err, MOEC_ERR_FORMAT, "%s: an array holds a number too large for a double", path);
        if (it->child) {
            moec_status st = check(it, path, err);
            if (st) return st;
        }
        n++;
    }
    if (!cJSON_IsObject(obj) || n < 2) return MOEC_OK;
    int oom = 0;
    const char *dup = twice(obj, n, &oom);
    if (oom) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    if (dup)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: key \"%.64s\" appears twice in one object (JSON readers disagree on "
                                              "which one counts)", path, dup);
    return MOEC_OK;
}

moec_status moec_json_check(const cJSON *root, const char *path, moec_error *err) {
    if (!root) return MOEC_OK;
    if (cJSON_IsNumber(root) && !isfinite(root->valuedouble))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: a number too large for a double", path);
    return check(root, path, err);
}
