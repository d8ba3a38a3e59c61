/* cmd_tokenize.c — `moec tokenize`: encode text to ids or decode ids to text with a Hugging
 * Face tokenizer.json, one line per input. The bulk modes (--jsonl, --decode-jsonl) exist for
 * comparing against Hugging Face `tokenizers` in tests. Not a chat-template renderer: special
 * tokens are matched where the text spells them, none are added. */
#include "commands.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: moec tokenize -t TOKENIZER_JSON (--text STR | --file PATH | --jsonl PATH |\n"
            "                     --decode IDS | --decode-jsonl PATH | --token-id STR | --vocab)\n"
            "                     [--skip-special]\n"
            "  -t, --tokenizer PATH  tokenizer.json (required)\n"
            "  --text STR            encode STR, print comma-separated ids on one line\n"
            "  --file PATH           encode the whole file (UTF-8), print ids on one line\n"
            "  --jsonl PATH          every line is a JSON string; print one line of ids per line\n"
            "  --decode IDS          decode comma-separated ids (e.g. 1,2,3), print the text\n"
            "  --decode-jsonl PATH   every line is a JSON array of ids; print one JSON string per line\n"
            "  --token-id STR        print the id of token STR (-1 if none)\n"
            "  --vocab               print n_vocab, then 'id<TAB>hex bytes' per id ('-' for unused ids)\n"
            "  --skip-special        drop special tokens when decoding (default: keep them)\n");
}

/* ---------------------------------------------------------------- small helpers */

static int fail_line(const char *what, size_t line, const char *why) {
    fprintf(stderr, "moec tokenize: %s line %zu: %s\n", what, line, why);
    return 1;
}

static void print_ids(const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    putchar('\n');
}

/* Writes s as a JSON string literal (non-ASCII left as UTF-8). */
static void print_json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\u%04x", c);
        else putchar(c);
    }
    fputs("\"\n", stdout);
}

/* ---------------------------------------------------------------- modes */

static int encode_print(const moec_tokenizer *tok, const char *s, size_t n) {
    moec_error err = {0};
    int32_t *ids = NULL;
    size_t nid = 0;
    if (moec_tokenizer_encode(tok, s, n, &ids, &nid, &err)) return cli_fail("tokenize", &err);
    print_ids(ids, nid);
    free(ids);
    return 0;
}

static int decode_print(const moec_tokenizer *tok, const int32_t *ids, size_t n, int skip, int as_json) {
    moec_error err = {0};
    char *text = NULL;
    size_t len = 0;
    if (moec_tokenizer_decode(tok, ids, n, skip, &text, &len, &err)) return cli_fail("tokenize", &err);
    if (as_json) {
        print_json_string(text, len);
    } else {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    return 0;
}

static int read_all(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "moec tokenize: i/o error: %s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) { /* /dev/zero would never end */
        fclose(f);
        fprintf(stderr, "moec tokenize: i/o error: %s: not a regular file\n", path);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int bad = !b || ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        fprintf(stderr, "moec tokenize: i/o error: %s: read failed\n", path);
        return 1;
    }
    *data = b;
    *len = n;
    return 0;
}

static int print_vocab(const moec_tokenizer *tok) {
    int32_t n = moec_tokenizer_n_vocab(tok);
    printf("n_vocab %d\n", n);
    char small[256];
    for (int32_t id = 0; id < n; id++) {
        int32_t len = moec_tokenizer_token_bytes(tok, id, small, sizeof small);
        if (len < 0) {
            printf("%d\t-\n", id);
            continue;
        }
        char *buf = small;
        if ((size_t)len > sizeof small) { /* a long token: ask again with room for all of it */
            buf = malloc((size_t)len);
            if (!buf) {
                fprintf(stderr, "moec tokenize: out of memory\n");
                return 1;
            }
            moec_tokenizer_token_bytes(tok, id, buf, (size_t)len);
        }
        printf("%d\t", id);
        for (int32_t i = 0; i < len; i++) printf("%02x", (unsigned char)buf[i]);
        putchar('\n');
        if (buf != small) free(buf);
    }
    return 0;
}

/* Encodes (or, with decode, decodes) every line of path; stops at the first failure. */
static int for_each_line(const char *path, const moec_tokenizer *tok, int skip, int decode) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "moec tokenize: i/o error: %s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) || S_ISDIR(sb.st_mode)) {
        fclose(f);
        fprintf(stderr, "moec tokenize: i/o error: %s: not a file or pipe\n", path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got = 0;
    int rc = 0;
    /* getline also returns -1 when a line does not fit in memory: only feof() is the end */
    while (!rc && (errno = 0, got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *why = NULL;
        if (decode) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (!cli_ids_parse(line, &ids, &n, &why)) {
                rc = fail_line(path, lineno, why);
                break;
            }
            rc = decode_print(tok, ids, n, skip, 1);
            free(ids);
        } else {
            size_t n = 0;
            char *s = cli_json_string_line(line, (size_t)got, &n, &why);
            rc = s ? encode_print(tok, s, n) : fail_line(path, lineno, why);
        }
    }
    if (!rc && got < 0 && (errno == ENOMEM || ferror(f) || !feof(f))) {
        const int e = errno;
        fprintf(stderr, "moec tokenize: i/o error: %s: line %zu: %s\n", path, lineno + 1,
                e == ENOMEM ? "too long to hold in memory" : e ? strerror(e) : "read failed");
        rc = 1;
    }
    free(line);
    fclose(f);
    return rc;
}

int moec_cmd_tokenize(int argc, char **argv) {
    const char *tpath = NULL, *text = NULL, *file = NULL, *jsonl = NULL, *ids_arg = NULL,
               *decode_jsonl = NULL, *token = NULL;
    int skip = 0, vocab = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) && has) tpath = argv[++i];
        else if (!strcmp(a, "--text") && has) text = argv[++i];
        else if (!strcmp(a, "--file") && has) file = argv[++i];
        else if (!strcmp(a, "--jsonl") && has) jsonl = argv[++i];
        else if (!strcmp(a, "--decode") && has) ids_arg = argv[++i];
        else if (!strcmp(a, "--decode-jsonl") && has) decode_jsonl = argv[++i];
        else if (!strcmp(a, "--token-id") && has) token = argv[++i];
        else if (!strcmp(a, "--vocab")) vocab = 1;
        else if (!strcmp(a, "--skip-special")) skip = 1;
        else {
            fprintf(stderr, "moec tokenize: unknown or incomplete option '%s' (see moec tokenize --help)\n", a);
            return 2;
        }
    }
    int modes = !!text + !!file + !!jsonl + !!ids_arg + !!decode_jsonl + !!token + vocab;
    if (!tpath || modes != 1) {
        fprintf(stderr, "moec tokenize: %s (see moec tokenize --help)\n",
                !tpath ? "-t TOKENIZER_JSON is required"
                       : "give exactly one of --text, --file, --jsonl, --decode, --decode-jsonl, "
                         "--token-id, --vocab");
        return 2;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (ids_arg) {
        const char *why = NULL;
        if (!cli_ids_parse(ids_arg, &ids, &n_ids, &why)) {
            fprintf(stderr, "moec tokenize: --decode: %s, got '%s'\n", why, ids_arg);
            return 2;
        }
    }
    moec_error err = {0};
    moec_tokenizer *tok = NULL;
    if (moec_tokenizer_load(&tok, tpath, &err)) {
        free(ids);
        return cli_fail("tokenize", &err);
    }
    int rc;
    if (text) {
        rc = encode_print(tok, text, strlen(text));
    } else if (file) {
        char *data = NULL;
        size_t len = 0;
        rc = read_all(file, &data, &len);
        if (!rc) rc = encode_print(tok, data, len);
        free(data);
    } else if (ids_arg) {
        rc = decode_print(tok, ids, n_ids, skip, 0);
    } else if (token) {
        printf("%d\n", moec_tokenizer_token_id(tok, token));
        rc = 0;
    } else if (vocab) {
        rc = print_vocab(tok);
    } else {
        rc = for_each_line(jsonl ? jsonl : decode_jsonl, tok, skip, decode_jsonl != NULL);
    }
    if (fflush(stdout) && !rc) {
        fprintf(stderr, "moec tokenize: i/o error: writing the output failed\n");
        rc = 1;
    }
    free(ids);
    moec_tokenizer_free(tok);
    return rc;
}
