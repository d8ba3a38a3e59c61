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

static int put_utf8(char *o, size_t *k, unsigned long cp) {
    if (cp < 0x80) {
        o[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*k)++] = (char)(0xC0 | (cp >> 6));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xE0 | (cp >> 12));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*k)++] = (char)(0xF0 | (cp >> 18));
        o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    }
    return 1;
}

static int hex4(const char *s, unsigned long *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

/* Decodes one JSON string literal filling the whole line (surrounding blanks allowed) in place.
 * Unlike cJSON this keeps \u0000. Returns NULL with *why set on error. */
char *cli_json_string_line(char *line, size_t n, size_t *out_len, const char **why) {
    size_t a = 0;
    while (a < n && (line[a] == ' ' || line[a] == '\t')) a++;
    while (n > a && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (n - a < 2 || line[a] != '"' || line[n - 1] != '"') {
        *why = "expected a JSON string";
        return NULL;
    }
    char *o = line + a; /* output never outruns input */
    size_t k = 0;
    for (size_t i = a + 1; i < n - 1; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == '"' || c < 0x20) {
            *why = "unescaped quote or control character in JSON string";
            return NULL;
        }
        if (c != '\\') {
            o[k++] = (char)c;
            continue;
        }
        if (++i >= n - 1) {
            *why = "dangling backslash in JSON string";
            return NULL;
        }
        switch (line[i]) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned long cp, lo;
            if (i + 4 > n - 2) {
                *why = "truncated \\u escape";
                return NULL;
            }
            if (!hex4(line + i + 1, &cp)) {
                *why = "bad \\u escape";
                return NULL;
            }
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 6 > n - 2 || line[i + 1] != '\\' || line[i + 2] != 'u' ||
                    !hex4(line + i + 3, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    *why = "unpaired surrogate in JSON string";
                    return NULL;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                *why = "unpaired surrogate in JSON string";
                return NULL;
            }
            put_utf8(o, &k, cp);
            break;
        }
        default:
            *why = "unknown escape in JSON string";
            return NULL;
        }
    }
    *out_len = k;
    return o;
}

/* "1,2,3" (or "" for none) -> malloc'ed ids; also accepts "[1, 2, 3]" for --decode-jsonl. */
int cli_ids_parse(const char *s, int32_t **ids, size_t *n, const char **why) {
    size_t cap = 16, len = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        *why = "out of memory";
        return 0;
    }
    const char *p = s;
    while (*p == ' ' || *p == '\t') p++;
    int bracket = *p == '[';
    if (bracket) p++;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == ']' || *p == '\n' || *p == '\r') break;
        char *end = NULL;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            *why = "expected comma-separated non-negative integers";
            return 0;
        }
        if (len == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *nv);
            if (!nv) {
                free(v);
                *why = "out of memory";
                return 0;
            }
            v = nv;
            cap *= 2;
        }
        v[len++] = (int32_t)x;
        p = end;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == ',') p++;
        else if (*p && *p != ']' && *p != '\n' && *p != '\r') {
            free(v);
            *why = "expected comma-separated non-negative integers";
            return 0;
        }
    }
    if (bracket && *p != ']') {
        free(v);
        *why = "missing ']'";
        return 0;
    }
    *ids = v;
    *n = len;
    return 1;
}

int cli_parse_ids(const char *cmd, const char *s, int32_t **ids, int32_t *n) {
    const char *why = NULL;
    size_t len = 0;
    if (!cli_ids_parse(s, ids, &len, &why)) {
        fprintf(stderr, "moec %s: --ids: %s\n", cmd, why);
        return 0;
    }
    if (len == 0 || len > INT32_MAX) {
        fprintf(stderr, "moec %s: --ids is %s\n", cmd, len ? "too long" : "empty");
        free(*ids);
        *ids = NULL;
        return 0;
    }
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

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double cli_sort_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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
