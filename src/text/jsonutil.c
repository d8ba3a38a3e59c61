/* jsonutil.c — typed cJSON accessors with located error messages (see jsonutil.h). Not a
 * schema: each component parser decides which fields it needs. */
#include "text/jsonutil.h"

#include "core/error.h"
#include "text/utf8.h"

#include <math.h>
#include <string.h>

const cJSON *tk_json_get(const cJSON *obj, const char *key) {
    if (!cJSON_IsObject(obj)) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    return v;
}

moec_status tk_json_bool(const cJSON *obj, const char *key, int def, int *out, const char *where,
                         moec_error *err) {
    const cJSON *v = tk_json_get(obj, key);
    if (!v) {
        *out = def;
        return MOEC_OK;
    }
    if (!cJSON_IsBool(v))
        return moec_err(err, MOEC_ERR_FORMAT, "%s.%s: expected true or false", where, key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return MOEC_OK;
}

moec_status tk_json_strval(const cJSON *node, const char **out, size_t *len, const char *where,
                           moec_error *err) {
    if (!cJSON_IsString(node) || !node->valuestring)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: expected a string", where);
    size_t n = strlen(node->valuestring);
    if (tk_utf8_validate(node->valuestring, n) != n)
        return moec_err(err, MOEC_ERR_FORMAT, "%s: string is not valid UTF-8", where);
    *out = node->valuestring;
    *len = n;
    return MOEC_OK;
}

moec_status tk_json_str(const cJSON *obj, const char *key, int required, const char **out,
                        size_t *len, const char *where, moec_error *err) {
    const cJSON *v = tk_json_get(obj, key);
    *out = NULL;
    *len = 0;
    if (!v) {
        if (required) return moec_err(err, MOEC_ERR_FORMAT, "%s: missing field '%s'", where, key);
        return MOEC_OK;
    }
    if (!cJSON_IsString(v))
        return moec_err(err, MOEC_ERR_FORMAT, "%s.%s: expected a string", where, key);
    char w[320];
    snprintf(w, sizeof w, "%s.%s", where, key);
    return tk_json_strval(v, out, len, w, err);
}

moec_status tk_json_uint(const cJSON *obj, const char *key, int required, int64_t def, int64_t max,
                         int64_t *out, const char *where, moec_error *err) {
    const cJSON *v = tk_json_get(obj, key);
    if (!v) {
        if (required) return moec_err(err, MOEC_ERR_FORMAT, "%s: missing field '%s'", where, key);
        *out = def;
        return MOEC_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || d > (double)max || d != floor(d))
        return moec_err(err, MOEC_ERR_FORMAT, "%s.%s: expected an integer in [0, %lld]", where, key,
                        (long long)max);
    *out = (int64_t)d;
    return MOEC_OK;
}

moec_status tk_json_char(const cJSON *obj, const char *key, uint32_t def, uint32_t *out, const char *where,
                         moec_error *err) {
    const char *s;
    size_t n;
    moec_status st = tk_json_str(obj, key, 0, &s, &n, where, err);
    if (st) return st;
    if (!s) {
        *out = def;
        return MOEC_OK;
    }
    if (n == 0 || tk_utf8_next(s, n, out) != n)
        return moec_err(err, MOEC_ERR_FORMAT, "%s.%s: expected a single character", where, key);
    return MOEC_OK;
}
