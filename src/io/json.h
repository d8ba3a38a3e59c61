/* json.h — what every JSON file moec reads must satisfy beyond cJSON's grammar. */
#ifndef MOEC_IO_JSON_H
#define MOEC_IO_JSON_H

#include "moec.h"

#include <cjson/cJSON.h>

/* Refuses, with one line naming `path`, what JSON readers disagree on, so a file means the same
 * to moec as to Python's json (transformers, tokenizers' Python side) and serde (tokenizers):
 * - a key twice in one object: cJSON finds the first copy, Python keeps the last;
 * - a number outside double's range (1e310): cJSON reads inf and writes it back as null,
 *   Python reads inf and writes Infinity, which is not JSON.
 * MOEC_OK when root (any cJSON tree, NULL included) has neither. */
moec_status moec_json_check(const cJSON *root, const char *path, moec_error *err);

#endif
