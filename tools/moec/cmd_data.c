/* cmd_data.c — `moec data`: tokenizes text files into a data directory of train/val token
 * shards (src/train/data.h, docs/formats.md), and `moec data --check DIR` validates one.
 * Each input file is one domain named after the file; documents inside a file are separated
 * by lines holding only the ASCII record separator (0x1E). Not a corpus builder
 * (scripts/build_corpus.py makes such files) and not a text cleaner: text must be UTF-8. */
#include "commands.h"

#include "core/error.h"
#include "core/threads.h"
#include "io/file.h"
#include "train/data.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "data"

static const char *const EOT_CANDIDATES[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"};

static void usage(FILE *f) {
    fprintf(f, "usage: moec data -t TOKENIZER_JSON -o DIR [options] FILES...\n"
               "       moec data --check DIR [-t TOKENIZER_JSON]\n"
               "Tokenizes UTF-8 text files into train/val token shards in DIR (docs/formats.md).\n"
               "Each file is one domain, named after the file without its extension (bible.txt -> bible;\n"
               "files with the same name share a domain). Documents in a file are separated by lines\n"
               "holding only the ASCII record separator 0x1E; a file without one is one document;\n"
               "documents of only whitespace are skipped. Every document ends with the end-of-text id.\n"
               "A file with fewer than 1/F documents (F = --val-fraction) is cut at line ends into about\n"
               "1/F pieces of similar size, so that every domain gets validation tokens.\n"
               "  -t, --tokenizer PATH   tokenizer.json (required)\n"
               "  -o, --out DIR          output directory, created if missing (required)\n"
               "  --val-fraction F       share of each domain's documents held out for validation,\n"
               "                         at least one when a domain has >= 2 documents (default 0.05, [0, 0.5])\n"
               "  --seed N               seed of the train/val split (default 1)\n"
               "  --eot TOKEN            end-of-text token (default: the first the tokenizer has of\n"
               "                         <|endoftext|>, <|end_of_text|>, </s>, <eos>)\n"
               "  --shard-tokens N       start a new shard after about N tokens (default 1073741824)\n"
               "  --threads N            tokenizer threads (default 0 = all cores)\n"
               "  --force                replace DIR even if it holds another dataset or other files\n"
               "  --check DIR            validate DIR (every shard, offset and checksum) and print its\n"
               "                         domains; with -t also require that it was made with that tokenizer\n");
}

/* ---------------------------------------------------------------- documents */

typedef struct {
    const char *text; /* borrowed from the file buffer */
    size_t len;
    size_t offset; /* byte offset in its file, for messages */
    int32_t file;
} doc_text;

typedef struct {
    doc_text *v;
    size_t n, cap;
} doc_list;

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n\f\v", s[i])) return 0;
    return 1;
}

static int push_doc(doc_list *l, const char *s, size_t n, size_t off, int32_t file) {
    if (is_blank(s, n)) return 1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        doc_text *v = realloc(l->v, cap * sizeof *v);
        if (!v) return 0;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (doc_text){s, n, off, file};
    return 1;
}

/* Splits a file's bytes at separator lines: "\x1e" followed by "\n", "\r\n" or the end. */
static int split_file(doc_list *l, const char *p, size_t n, int32_t file) {
    size_t doc = 0, line = 0;
    while (line < n) {
        const char *nl = memchr(p + line, '\n', n - line);
        size_t end = nl ? (size_t)(nl - p) + 1 : n; /* one past the line */
        size_t len = end - line;
        int sep = p[line] == 0x1e && (len == 1 || (len == 2 && p[line + 1] == '\n') ||
                                      (len == 3 && p[line + 1] == '\r' && p[line + 2] == '\n'));
        if (sep) {
            if (!push_doc(l, p + doc, line - doc, doc, file)) return 0;
            doc = end;
        }
        line = end;
    }
    return push_doc(l, p + doc, n - doc, doc, file);
}

/* A file that gives fewer documents than 1/val_fraction would hold out nothing (or nearly
 * nothing) for validation: its documents [first, l->n) are cut at line ends into about
 * ceil(1/val_fraction) pieces of similar size instead, so that every domain gets validation
 * tokens. Pieces never split a line. Returns 0 on out of memory. */
static int piece_file(doc_list *l, size_t first, double val_fraction, int32_t file) {
    if (val_fraction <= 0.0) return 1;
    const size_t want = (size_t)ceil(1.0 / val_fraction);
    const size_t have = l->n - first;
    if (have == 0 || have >= want) return 1;
    size_t total = 0;
    for (size_t i = first; i < l->n; i++) total += l->v[i].len;
    const size_t target = total / want > 0 ? total / want : 1;
    doc_text *orig = malloc(have * sizeof *orig);
    if (!orig) return 0;
    memcpy(orig, l->v + first, have * sizeof *orig);
    l->n = first;
    int ok = 1;
    for (size_t i = 0; i < have && ok; i++) {
        const char *p = orig[i].text;
        const size_t n = orig[i].len;
        size_t start = 0, pos = 0;
        while (pos < n && ok) {
            const char *nl = memchr(p + pos, '\n', n - pos);
            pos = nl ? (size_t)(nl - p) + 1 : n;
            if (pos - start >= target || pos == n) {
                ok = push_doc(l, p + start, pos - start, orig[i].offset + start, file);
                start = pos;
            }
        }
    }
    free(orig);
    return ok;
}

/* "dir/bible.txt" -> "bible": the base name without its last extension. */
static void domain_of(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot > base) n = (size_t)(dot - base);
    snprintf(out, cap, "%.*s", (int)n, base);
}

/* ---------------------------------------------------------------- --check */

static int run_check(const char *dir, const char *tpath) {
    moec_error err = {0};
    moec_data_reader *r = NULL;
    if (moec_data_open(&r, dir, &err)) return cli_fail(CMD, &err);
    int rc = 0;
    if (tpath) {
        moec_tokenizer *tok = NULL;
        if (moec_tokenizer_load(&tok, tpath, &err) || moec_data_check_tokenizer(r, tpath, &err) ||
            moec_data_check_vocab(r, moec_tokenizer_n_vocab(tok), &err))
            rc = cli_fail(CMD, &err);
        else if ((uint32_t)moec_tokenizer_n_vocab(tok) != moec_data_n_vocab(r)) {
            fprintf(stderr, "moec data: invalid argument: %s has a vocabulary of %u, %s has %d\n", dir,
                    moec_data_n_vocab(r), tpath, moec_tokenizer_n_vocab(tok));
            rc = 1;
        }
        moec_tokenizer_free(tok);
    }
    if (!rc) {
        printf("%s: ok: vocab %u, end-of-text %u, tokenizer fnv1a64:%016llx (%s), dataset id %016llx\n", dir,
               moec_data_n_vocab(r), moec_data_eot_id(r), (unsigned long long)moec_data_fingerprint(r),
               moec_data_tokenizer_path(r), (unsigned long long)moec_data_id(r));
        printf("%-24s %10s %14s %10s %14s\n", "domain", "train_docs", "train_tokens", "val_docs", "val_tokens");
        for (int32_t d = 0; d < moec_data_n_domains(r); d++)
            printf("%-24s %10u %14llu %10u %14llu\n", moec_data_domain_name(r, d),
                   moec_data_domain_n_docs(r, MOEC_DATA_TRAIN, d),
                   (unsigned long long)moec_data_domain_n_tokens(r, MOEC_DATA_TRAIN, d),
                   moec_data_domain_n_docs(r, MOEC_DATA_VAL, d),
                   (unsigned long long)moec_data_domain_n_tokens(r, MOEC_DATA_VAL, d));
        printf("%-24s %10u %14llu %10u %14llu\n", "total", moec_data_n_docs(r, MOEC_DATA_TRAIN),
               (unsigned long long)moec_data_n_tokens(r, MOEC_DATA_TRAIN), moec_data_n_docs(r, MOEC_DATA_VAL),
               (unsigned long long)moec_data_n_tokens(r, MOEC_DATA_VAL));
    }
    moec_data_close(r);
    return rc;
}

/* ---------------------------------------------------------------- main */

typedef struct {
    const char *tpath, *out, *eot, *check;
    double val_fraction;
    long seed, threads, shard_tokens;
    int force;
    int n_files;
    char **files;
} options;

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->val_fraction = 0.05;
    o->seed = 1;
    o->files = calloc((size_t)argc, sizeof *o->files);
    if (!o->files) {
        fprintf(stderr, "moec data: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) && has)
            o->tpath = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && has)
            o->out = argv[++i];
        else if (!strcmp(a, "--eot") && has)
            o->eot = argv[++i];
        else if (!strcmp(a, "--check") && has)
            o->check = argv[++i];
        else if (!strcmp(a, "--val-fraction") && has) {
            if (!cli_parse_float(CMD, a, argv[++i], 0.0, 0.5, &o->val_fraction)) return 2;
        } else if (!strcmp(a, "--seed") && has) {
            if (!cli_parse_int(CMD, a, argv[++i], 0, LONG_MAX, &o->seed)) return 2;
        } else if (!strcmp(a, "--threads") && has) {
            if (!cli_parse_int(CMD, a, argv[++i], 0, 1024, &o->threads)) return 2;
        } else if (!strcmp(a, "--shard-tokens") && has) {
            if (!cli_parse_int(CMD, a, argv[++i], 1, LONG_MAX, &o->shard_tokens)) return 2;
        } else if (!strcmp(a, "--force"))
            o->force = 1;
        else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "moec data: unknown or incomplete option '%s' (see moec data --help)\n", a);
            return 2;
        } else
            o->files[o->n_files++] = argv[i];
    }
    if (o->check) {
        if (o->out || o->n_files) {
            fprintf(stderr, "moec data: --check DIR takes no -o or input files (see moec data --help)\n");
            return 2;
        }
        return 0;
    }
    if (!o->tpath || !o->out || o->n_files == 0) {
        fprintf(stderr, "moec data: %s (see moec data --help)\n",
                !o->tpath ? "-t TOKENIZER_JSON is required"
                : !o->out ? "-o DIR is required"
                          : "no input files given");
        return 2;
    }
    return 0;
}

typedef struct {
    int n_files;
    char **buf;        /* [n_files] file contents */
    size_t *bytes;     /* [n_files] */
    int32_t *file_dom; /* [n_files] */
    int32_t n_dom;
    char **dom_names; /* [n_files] at most */
    doc_list docs;
    int32_t **ids;      /* [n_docs] per document ids, end-of-text included */
    uint64_t *n_ids;    /* [n_docs] */
    uint32_t *doc_dom;  /* [n_docs] */
    uint8_t *doc_split; /* [n_docs] */
} corpus;

static void corpus_free(corpus *c) {
    for (int i = 0; c->buf && i < c->n_files; i++)
        free(c->buf[i]);
    for (int i = 0; c->dom_names && i < c->n_dom; i++)
        free(c->dom_names[i]);
    for (size_t i = 0; c->ids && i < c->docs.n; i++)
        free(c->ids[i]);
    free(c->buf);
    free(c->bytes);
    free(c->file_dom);
    free(c->dom_names);
    free(c->docs.v);
    free(c->ids);
    free(c->n_ids);
    free(c->doc_dom);
    free(c->doc_split);
}

/* Reads every file, names its domain, splits it into documents. */
static int read_corpus(corpus *c, const options *o) {
    moec_error err = {0};
    c->n_files = o->n_files;
    c->buf = calloc((size_t)o->n_files, sizeof *c->buf);
    c->bytes = calloc((size_t)o->n_files, sizeof *c->bytes);
    c->file_dom = calloc((size_t)o->n_files, sizeof *c->file_dom);
    c->dom_names = calloc((size_t)o->n_files, sizeof *c->dom_names);
    if (!c->buf || !c->bytes || !c->file_dom || !c->dom_names) {
        fprintf(stderr, "moec data: out of memory\n");
        return 1;
    }
    for (int f = 0; f < o->n_files; f++) {
        char name[256];
        domain_of(o->files[f], name, sizeof name);
        if (!name[0] || strlen(name) > MOEC_DATA_DOMAIN_NAME_MAX) {
            fprintf(stderr,
                    "moec data: invalid argument: %s: its domain name '%s' must be 1..%d bytes; rename the file\n",
                    o->files[f], name, MOEC_DATA_DOMAIN_NAME_MAX);
            return 1;
        }
        for (const char *q = name; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                fprintf(stderr, "moec data: invalid argument: %s: control character in the file name\n", o->files[f]);
                return 1;
            }
        int32_t d = 0;
        while (d < c->n_dom && strcmp(c->dom_names[d], name))
            d++;
        if (d == c->n_dom) {
            c->dom_names[d] = strdup(name);
            if (!c->dom_names[d]) {
                fprintf(stderr, "moec data: out of memory\n");
                return 1;
            }
            c->n_dom++;
        }
        c->file_dom[f] = d;
        if (moec_file_read_all(o->files[f], &c->buf[f], &c->bytes[f], &err)) return cli_fail(CMD, &err);
        const size_t first = c->docs.n;
        if (!split_file(&c->docs, c->buf[f], c->bytes[f], f) || !piece_file(&c->docs, first, o->val_fraction, f)) {
            fprintf(stderr, "moec data: out of memory\n");
            return 1;
        }
    }
    return 0;
}

typedef struct {
    corpus *c;
    const moec_tokenizer *tok;
    int32_t eot;
    uint8_t *bad;
} encode_job;

static void encode_docs(void *job, int64_t i0, int64_t i1, int tid) {
    const encode_job *j = job;
    corpus *c = j->c;
    (void)tid;
    for (int64_t i = i0; i < i1; i++) {
        const doc_text *t = &c->docs.v[i];
        int32_t *ids = NULL;
        size_t k = 0;
        if (moec_tokenizer_encode(j->tok, t->text, t->len, &ids, &k, NULL) != MOEC_OK) {
            j->bad[i] = 1;
            continue;
        }
        int32_t *grown = realloc(ids, (k + 1) * sizeof *grown);
        if (!grown) {
            free(ids);
            j->bad[i] = 2;
            continue;
        }
        grown[k] = j->eot;
        c->ids[i] = grown;
        c->n_ids[i] = k + 1;
    }
}

/* Encodes every document (in parallel; results land in document order) and appends eot. */
static int encode_corpus(corpus *c, const options *o, const moec_tokenizer *tok, int32_t eot) {
    size_t n = c->docs.n;
    c->ids = calloc(n ? n : 1, sizeof *c->ids);
    c->n_ids = calloc(n ? n : 1, sizeof *c->n_ids);
    c->doc_dom = calloc(n ? n : 1, sizeof *c->doc_dom);
    c->doc_split = calloc(n ? n : 1, sizeof *c->doc_split);
    uint8_t *bad = calloc(n ? n : 1, 1);
    if (!c->ids || !c->n_ids || !c->doc_dom || !c->doc_split || !bad) {
        free(bad);
        fprintf(stderr, "moec data: out of memory\n");
        return 1;
    }
    encode_job j = {c, tok, eot, bad};
    moec_parallel_range((int64_t)n, 16, encode_docs, &j);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!bad[i]) continue;
        const doc_text *t = &c->docs.v[i];
        if (bad[i] == 2) {
            fprintf(stderr, "moec data: out of memory\n");
        } else { /* encode again, serially, for the message */
            moec_error err = {0};
            int32_t *ids = NULL;
            size_t k = 0;
            moec_tokenizer_encode(tok, t->text, t->len, &ids, &k, &err);
            free(ids);
            fprintf(stderr, "moec data: %s: %s: document at byte %zu: %s%s\n", moec_status_name(err.status),
                    o->files[t->file], t->offset, err.msg,
                    err.status == MOEC_ERR_INVALID_ARG ? " (convert the file to UTF-8, e.g. with iconv)" : "");
        }
        rc = 1;
    }
    free(bad);
    for (size_t i = 0; i < n; i++)
        c->doc_dom[i] = (uint32_t)c->file_dom[c->docs.v[i].file];
    return rc;
}

int moec_cmd_data(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.files);
        return rc < 0 ? 0 : rc;
    }
    if (o.check) {
        rc = run_check(o.check, o.tpath);
        free(o.files);
        return rc;
    }
    moec_threads_set((int)o.threads); /* <= 0: one per CPU */
    const int n_threads = moec_threads_count();
    moec_error err = {0};
    moec_tokenizer *tok = NULL;
    corpus c;
    memset(&c, 0, sizeof c);
    uint64_t fp = 0;
    char *tok_real = NULL;
    double t0 = cli_now_s();

    if (moec_tokenizer_load(&tok, o.tpath, &err) || moec_data_fingerprint_file(o.tpath, &fp, &err)) {
        rc = cli_fail(CMD, &err);
        goto done;
    }
    const char *eot_tok = o.eot;
    int32_t eot = -1;
    if (eot_tok) {
        eot = moec_tokenizer_token_id(tok, eot_tok);
        if (eot < 0) {
            fprintf(stderr, "moec data: invalid argument: --eot '%s' is not a token of %s\n", eot_tok, o.tpath);
            rc = 1;
            goto done;
        }
    } else {
        for (size_t i = 0; i < sizeof EOT_CANDIDATES / sizeof *EOT_CANDIDATES && eot < 0; i++)
            if ((eot = moec_tokenizer_token_id(tok, EOT_CANDIDATES[i])) >= 0) eot_tok = EOT_CANDIDATES[i];
        if (eot < 0) {
            fprintf(stderr,
                    "moec data: invalid argument: %s has no end-of-text token (looked for <|endoftext|>, "
                    "<|end_of_text|>, </s>, <eos>); name one with --eot TOKEN\n",
                    o.tpath);
            rc = 1;
            goto done;
        }
    }
    tok_real = realpath(o.tpath, NULL);
    printf("moec data: tokenizer %s (vocab %d, fnv1a64:%016llx), end-of-text %s = %d\n"
           "moec data: %d file(s) -> %s, val fraction %g, seed %ld, %d thread(s)%s\n",
           tok_real ? tok_real : o.tpath, moec_tokenizer_n_vocab(tok), (unsigned long long)fp, eot_tok, eot, o.n_files,
           o.out, o.val_fraction, o.seed, n_threads, o.force ? ", --force" : "");

    if ((rc = read_corpus(&c, &o)) != 0) goto done;
    size_t text_bytes = 0;
    for (size_t i = 0; i < c.docs.n; i++)
        text_bytes += c.docs.v[i].len;
    if (c.docs.n == 0) {
        fprintf(stderr, "moec data: invalid argument: empty corpus: the input files hold no text (no documents, "
                        "no tokens)\n");
        rc = 1;
        goto done;
    }
    if (c.docs.n > UINT32_MAX) {
        fprintf(stderr, "moec data: invalid argument: %zu documents, at most %u per data directory\n", c.docs.n,
                UINT32_MAX);
        rc = 1;
        goto done;
    }
    double t1 = cli_now_s();
    if ((rc = encode_corpus(&c, &o, tok, eot)) != 0) goto done;
    double t2 = cli_now_s();
    uint64_t n_tok = 0;
    for (size_t i = 0; i < c.docs.n; i++)
        n_tok += c.n_ids[i];
    printf("moec data: %zu documents, %zu bytes -> %llu tokens in %.2f s (%.2f MB/s)\n", c.docs.n, text_bytes,
           (unsigned long long)n_tok, t2 - t1, (double)text_bytes / 1e6 / (t2 - t1 > 1e-9 ? t2 - t1 : 1e-9));
    for (int f = 0; f < c.n_files; f++) { /* the text is no longer needed */
        free(c.buf[f]);
        c.buf[f] = NULL;
    }

    if (moec_data_split_docs((uint32_t)c.docs.n, c.doc_dom, c.n_dom, (const char *const *)c.dom_names, (uint64_t)o.seed,
                             o.val_fraction, c.doc_split, &err)) {
        rc = cli_fail(CMD, &err);
        goto done;
    }
    moec_data_write_params wp = {
        .tokenizer_path = tok_real ? tok_real : o.tpath,
        .fingerprint = fp,
        .n_vocab = (uint32_t)moec_tokenizer_n_vocab(tok),
        .eot_id = (uint32_t)eot,
        .eot_token = eot_tok,
        .n_domains = c.n_dom,
        .domain_names = (const char *const *)c.dom_names,
        .n_files = c.n_files,
        .file_paths = (const char *const *)o.files,
        .file_domain = c.file_dom,
        .n_docs = (uint32_t)c.docs.n,
        .doc_tokens = (const int32_t *const *)c.ids,
        .doc_n_tokens = c.n_ids,
        .doc_domain = c.doc_dom,
        .doc_split = c.doc_split,
        .seed = (uint64_t)o.seed,
        .val_fraction = o.val_fraction,
        .max_shard_tokens = (uint64_t)o.shard_tokens,
        .force = o.force,
    };
    if (moec_data_write(o.out, &wp, &err)) {
        rc = cli_fail(CMD, &err);
        goto done;
    }

    printf("%-24s %10s %14s %10s %14s\n", "domain", "train_docs", "train_tokens", "val_docs", "val_tokens");
    uint64_t tot[4] = {0, 0, 0, 0};
    for (int32_t d = 0; d < c.n_dom; d++) {
        uint64_t v[4] = {0, 0, 0, 0}; /* train docs, train tokens, val docs, val tokens */
        for (size_t i = 0; i < c.docs.n; i++)
            if (c.doc_dom[i] == (uint32_t)d) {
                v[2 * c.doc_split[i]]++;
                v[2 * c.doc_split[i] + 1] += c.n_ids[i];
            }
        for (int k = 0; k < 4; k++)
            tot[k] += v[k];
        printf("%-24s %10llu %14llu %10llu %14llu\n", c.dom_names[d], (unsigned long long)v[0],
               (unsigned long long)v[1], (unsigned long long)v[2], (unsigned long long)v[3]);
    }
    printf("%-24s %10llu %14llu %10llu %14llu\n", "total", (unsigned long long)tot[0], (unsigned long long)tot[1],
           (unsigned long long)tot[2], (unsigned long long)tot[3]);
    printf("moec data: wrote %s (meta.json + shards) in %.2f s\n", o.out, cli_now_s() - t0);
done:
    if (fflush(stdout) && !rc) {
        fprintf(stderr, "moec data: i/o error: writing the output failed\n");
        rc = 1;
    }
    corpus_free(&c);
    free(tok_real);
    moec_tokenizer_free(tok);
    free(o.files);
    return rc;
}
