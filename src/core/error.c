/* error.c — status names and the error-context writer. */
#include "core/error.h"

#include "core/mem.h"

#include <stdarg.h>
#include <string.h>

/* core/mem.c installs cJSON's allocation hooks before main; this reference links it into every
 * program that reports an error (all of them), static library or not. */
__attribute__((used)) static void *(*const moec_link_mem)(size_t) = moec_lib_malloc;

const char *moec_status_name(moec_status s) {
    switch (s) {
    case MOEC_OK: return "ok";
    case MOEC_ERR_IO: return "i/o error";
    case MOEC_ERR_FORMAT: return "format error";
    case MOEC_ERR_UNSUPPORTED: return "unsupported";
    case MOEC_ERR_INVALID_ARG: return "invalid argument";
    case MOEC_ERR_OOM: return "out of memory";
    case MOEC_ERR_CONTEXT_FULL: return "context full";
    }
    return "unknown status";
}

moec_status moec_err(moec_error *err, moec_status s, const char *fmt, ...) {
    if (!err) return s;
    err->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    /* one line: fold any newline a formatted argument carried */
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return s;
}
