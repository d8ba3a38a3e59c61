/* commands.h — the CLI's subcommands, one file each (tools/moec/cmd_<name>.c).
 * Each returns the process exit code: 0 success, 1 runtime error, 2 usage error. */
#ifndef MOEC_TOOLS_COMMANDS_H
#define MOEC_TOOLS_COMMANDS_H

#include "moec.h"

int moec_cmd_info(int argc, char **argv);
int moec_cmd_generate(int argc, char **argv);
int moec_cmd_logits(int argc, char **argv);
int moec_cmd_bench(int argc, char **argv);
int moec_cmd_bench_train(int argc, char **argv); /* `moec bench train` */
int moec_cmd_tokenize(int argc, char **argv);
int moec_cmd_tokenizer(int argc, char **argv);
int moec_cmd_data(int argc, char **argv);
int moec_cmd_train(int argc, char **argv);
int moec_cmd_eval(int argc, char **argv);
int moec_cmd_export(int argc, char **argv);
int moec_cmd_quantize(int argc, char **argv);

/* The commit this binary was built from, `git describe --always --dirty` (main.c). */
const char *cli_version(void);

/* Shared CLI helpers (cli_util.c). */
/* Prints "moec <cmd>: <what>" plus an optional hint line on stderr; returns exit code 1. */
int cli_fail(const char *cmd, const moec_error *err);
/* Parses an int / float flag value with range checks; on error prints one line, returns 0. */
int cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out);
/* Parses "1,2,3" into a malloc'ed int32 array (caller frees); prints an error and returns 0 on bad input. */
int cli_parse_ids(const char *cmd, const char *s, int32_t **ids, int32_t *n);
/* "1,2,3", "[1, 2, 3]" or "" (none) -> malloc'ed ids (*ids set, also when empty); 0 with *why
 * (a static message) on error. The --ids flags and the --decode-jsonl lines. */
int cli_ids_parse(const char *s, int32_t **ids, size_t *n, const char **why);
/* One JSON string literal filling a line of n bytes (blanks and the newline around it allowed),
 * decoded in place (\u0000 kept, unlike cJSON); returns its start (length in *out_len) or NULL
 * with *why set. The --jsonl lines. */
char *cli_json_string_line(char *line, size_t n, size_t *out_len, const char **why);

/* Reads a whole input named on the command line into a NUL-terminated malloc'ed buffer (caller
 * frees): a regular file, a FIFO (`<(...)`), or "-" for standard input (whatever it is). At most
 * max bytes: a regular file's size is checked before reading, a stream is read up to max + 1
 * bytes, so memory stays bounded either way. Directories and devices given by name are refused
 * before reading (/dev/zero would never end). On error prints one line naming flag and path and
 * returns 0. Argument strings are capped at 128 KiB by Linux; this is how longer inputs come in. */
int cli_read_input(const char *cmd, const char *flag, const char *path, size_t max, char **data, size_t *len);

/* Monotonic clock in seconds, for tokens/s. */
double cli_now_s(void);
/* Sorts v[0..n) ascending (n >= 1) and returns its median (the mean of the middle two for even n). */
double cli_sort_median(double *v, int n);
/* 1 if path is a regular file starting with the GGUF magic. */
int cli_is_gguf(const char *path);

#endif
