/* jsonutil.h — typed accessors over cJSON for the tokenizer.json loader: each checks the JSON
 * type, that strings are valid UTF-8, and reports "where.key: what" as MOEC_ERR_FORMAT.
 * Not a JSON parser (cJSON is). */
#ifndef MOEC_TEXT_JSONUTIL_H
#define MOEC_TEXT_JSONUTIL_H

#include "moec.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* The member key of obj, or NULL when absent or JSON null. */
const cJSON *tk_json_get(const cJSON *obj, const char *key);
/* Optional boolean: absent/null gives def. */
moec_status tk_json_bool(const cJSON *obj, const char *key, int def, int *out, const char *where,
                         moec_error *err);
/* String member: absent/null gives *out = NULL unless required (then MOEC_ERR_FORMAT).
 * *out is borrowed from the cJSON tree. */
moec_status tk_json_str(const cJSON *obj, const char *key, int required, const char **out,
                        size_t *len, const char *where, moec_error *err);
/* Integer member in [0, max]; absent/null gives def unless required. */
/* A string field holding exactly one character (def when absent), as a code point. */
moec_status tk_json_char(const cJSON *obj, const char *key, uint32_t def, uint32_t *out, const char *where,
                         moec_error *err);
moec_status tk_json_uint(const cJSON *obj, const char *key, int required, int64_t def, int64_t max,
                         int64_t *out, const char *where, moec_error *err);
/* Validates a string node's UTF-8 and returns its bytes (borrowed). */
moec_status tk_json_strval(const cJSON *node, const char **out, size_t *len, const char *where,
                           moec_error *err);

#endif
