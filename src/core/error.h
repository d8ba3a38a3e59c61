/* error.h — recoverable errors: fill a moec_error and return its status in one statement.
 * Invariants (programming errors) use MOEC_ASSERT, which aborts with file:line. */
#ifndef MOEC_CORE_ERROR_H
#define MOEC_CORE_ERROR_H

#include "moec.h"

#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#define MOEC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MOEC_PRINTF(a, b)
#endif

/* Writes "fmt..." into err (if non-NULL) and returns s, so callers can `return moec_err(...)`. */
moec_status moec_err(moec_error *err, moec_status s, const char *fmt, ...) MOEC_PRINTF(3, 4);

#define MOEC_ASSERT(x)                                                                     \
    do {                                                                                   \
        if (!(x)) {                                                                        \
            fprintf(stderr, "moec: internal error: %s:%d: assertion failed: %s\n",         \
                    __FILE__, __LINE__, #x);                                               \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
