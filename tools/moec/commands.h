/* commands.h — the CLI's subcommands, one file each (tools/moec/cmd_<name>.c).
 * Each returns the process exit code: 0 success, 1 runtime error, 2 usage error. */
#ifndef MOEC_TOOLS_COMMANDS_H
#define MOEC_TOOLS_COMMANDS_H

#include "moec.h"

int moec_cmd_info(int argc, char **argv);
int moec_cmd_generate(int argc, char **argv);
int moec_cmd_logits(int argc, char **argv);
int moec_cmd_bench(int argc, char **argv);
int moec_cmd_tokenize(int argc, char **argv);
int moec_cmd_tokenizer(int argc, char **argv);
int moec_cmd_data(int argc, char **argv);
int moec_cmd_train(int argc, char **argv);
int moec_cmd_eval(int argc, char **argv);
int moec_cmd_export(int argc, char **argv);

/* Shared CLI helpers (cli_util.c). */
/* Prints "moec <cmd>: <what>" plus an optional hint line on stderr; returns exit code 1. */
int cli_fail(const char *cmd, const moec_error *err);
/* Parses an int / float flag value with range checks; on error prints one line, returns 0. */
int cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out);
/* Parses "1,2,3" into a malloc'ed int32 array (caller frees); prints an error and returns 0 on bad input. */
int cli_parse_ids(const char *cmd, const char *s, int32_t **ids, int32_t *n);

/* Monotonic clock in seconds, for tokens/s. */
double cli_now_s(void);
/* 1 if path is a regular file starting with the GGUF magic. */
int cli_is_gguf(const char *path);

#endif
