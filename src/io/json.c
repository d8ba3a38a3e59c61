/* json.c — the checks every JSON reader applies after cJSON has parsed (io/json.h). */
#include "io/json.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_name(const void *x, const void *y) {
    return strcmp((*(const cJSON *const *)x)->string, (*(const cJSON *const *)y)->string);
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
    const cJSON **v = malloc(n * sizeof *v);
    if (!v) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    n = 0;
    for (const cJSON *it = obj->child; it; it = it->next) v[n++] = it;
    qsort(v, n, sizeof *v, cmp_name);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (!strcmp(v[i - 1]->string, v[i]->string)) dup = v[i]->string;
    moec_status st = MOEC_OK;
    if (dup)
        st = moec_err(err, MOEC_ERR_FORMAT, "%s: key \"%.64s\" appears twice in one object (JSON readers disagree on "
                                            "which one counts)", path, dup);
    free(v);
    return st;
}

moec_status moec_json_check(const cJSON *root, const char *path, moec_error *err) {
    if (!root) return MOEC_OK;
    if (cJSON_IsNumber(root) && !isfinite(root->valuedouble))
        return moec_err(err, MOEC_ERR_FORMAT, "%s: a number too large for a double", path);
    return check(root, path, err);
}
