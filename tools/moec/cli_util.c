/* cli_util.c — flag parsing and error printing shared by the subcommands. */
#include "commands.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

int cli_read_input(const char *cmd, const char *flag, const char *path, size_t max, char **data, size_t *len) {
    const int is_stdin = !strcmp(path, "-");
    const char *shown = is_stdin ? "standard input" : path;
    const int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "moec %s: %s %s: cannot open: %s\n", cmd, flag, path, strerror(errno));
        return 0;
    }
    struct stat sb;
    const char *bad = NULL;
    if (fstat(fd, &sb) != 0) bad = strerror(errno);
    else if (S_ISDIR(sb.st_mode)) bad = "is a directory";
    else if (!is_stdin && !S_ISREG(sb.st_mode) && !S_ISFIFO(sb.st_mode)) bad = "not a regular file or a pipe";
    else if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max) bad = "too large";
    size_t n = 0, cap = S_ISREG(sb.st_mode) && !bad ? (size_t)sb.st_size + 1 : 1 << 16;
    char *b = bad ? NULL : malloc(cap);
    if (!bad && !b) bad = "out of memory";
    while (!bad) {
        if (n == cap) { /* a stream: grow, but never past max + 1 bytes */
            const size_t ncap = cap > max / 2 ? max + 1 : 2 * cap;
            char *nb = ncap > cap ? realloc(b, ncap) : NULL;
            if (!nb) {
                bad = ncap > cap ? "out of memory" : "too large";
                break;
            }
            b = nb;
            cap = ncap;
        }
        const ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) bad = strerror(errno);
        if (r <= 0) break;
        n += (size_t)r;
        if (n > max) bad = "too large";
    }
    if (!is_stdin) close(fd);
    if (!bad && n == cap) { /* room for the NUL */
        char *nb = realloc(b, cap + 1);
        if (!nb) bad = "out of memory";
        else b = nb;
    }
    if (bad) {
        free(b);
        if (!strcmp(bad, "too large"))
            fprintf(stderr, "moec %s: %s %s: larger than the %zu MiB limit\n", cmd, flag, shown, max >> 20);
        else
            fprintf(stderr, "moec %s: %s %s: %s\n", cmd, flag, shown, bad);
        return 0;
    }
    b[n] = 0;
    *data = b;
    *len = n;
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
