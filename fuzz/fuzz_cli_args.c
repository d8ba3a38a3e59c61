/* fuzz_cli_args.c — the CLI's argument and line parsers (tools/moec/cli_util.c): byte 0 picks
 * cli_parse_int, cli_parse_float, cli_parse_ids, cli_ids_parse (a --decode-jsonl line) or
 * cli_json_string_line (a --jsonl line); the rest is the argument string or line. A value that is accepted must be inside the stated range; ids must be non-negative.
 * The parsers print one line on bad input; stderr is muted around each call. */
#include "commands.h"
#include "fuzz_util.h"

#include <fcntl.h>
#include <math.h>

static int g_null = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_null = open("/dev/null", O_WRONLY);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_null < 0) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1 || size > 1 << 20) return 0;
    char *s = malloc(size);
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    const int saved = dup(2);
    dup2(g_null, 2);
    switch (data[0] % 5) {
    case 0: {
        long v;
        if (cli_parse_int("fuzz", "-n", s, -5, 1L << 20, &v) && (v < -5 || v > 1L << 20)) abort();
        break;
    }
    case 1: {
        double v;
        if (cli_parse_float("fuzz", "--temp", s, 0.0, 100.0, &v) && !(v >= 0.0 && v <= 100.0)) abort();
        break;
    }
    case 3: {
        int32_t *ids = NULL;
        size_t n = 0;
        const char *why = NULL;
        if (cli_ids_parse(s, &ids, &n, &why)) {
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0) abort();
            free(ids);
        } else if (!why) abort();
        break;
    }
    case 4: { /* the line without its NUL, as getline hands it over (embedded NULs included) */
        size_t n = 0;
        const char *why = NULL;
        const char *o = cli_json_string_line(s, size - 1, &n, &why);
        if (o ? (o < s || o + n > s + size - 1) : !why) abort();
        break;
    }
    default: {
        int32_t *ids = NULL, n = 0;
        if (cli_parse_ids("fuzz", s, &ids, &n)) {
            for (int32_t i = 0; i < n; i++)
                if (ids[i] < 0) abort();
            free(ids);
        }
    }
    }
    dup2(saved, 2);
    close(saved);
    free(s);
    return 0;
}
