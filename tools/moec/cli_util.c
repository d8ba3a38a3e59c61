/* cli_util.c — flag parsing and error printing shared by the subcommands. */
#include "commands.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_fail(const char *cmd, const moec_error *err) {
    fprintf(stderr, "moec %s: %s: %s\n", cmd, moec_status_name(err->status), err->msg);
    return 1;
}

int cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "moec %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo,
                hi, s ? s : "(missing)");
        return 0;
    }
    *out = v;
    return 1;
}

int cli_parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                    double *out) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "moec %s: %s expects a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi,
                s ? s : "(missing)");
        return 0;
    }
    *out = v;
    return 1;
}

int cli_parse_ids(const char *cmd, const char *s, int32_t **ids, int32_t *n) {
    size_t cap = 16, len = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        fprintf(stderr, "moec %s: out of memory\n", cmd);
        return 0;
    }
    const char *p = s;
    while (p && *p) {
        char *end = NULL;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "moec %s: --ids expects comma-separated non-negative integers, bad at '%s'\n", cmd, p);
            free(v);
            return 0;
        }
        if (len == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                free(v);
                fprintf(stderr, "moec %s: out of memory\n", cmd);
                return 0;
            }
            v = nv;
            cap *= 2;
        }
        v[len++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (len == 0) {
        fprintf(stderr, "moec %s: --ids is empty\n", cmd);
        free(v);
        return 0;
    }
    *ids = v;
    *n = (int32_t)len;
    return 1;
}

double cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4];
    int ok = fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    fclose(f);
    return ok;
}
