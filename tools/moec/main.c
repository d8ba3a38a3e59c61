/* main.c — the moec command-line tool: dispatches to one subcommand per file. */
#include "commands.h"
#include "moec_version.h" /* generated at every build (cmake/version.cmake) */
#include "io/file.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"info", moec_cmd_info, "show a checkpoint's architecture, parameters and bytes"},
    {"generate", moec_cmd_generate, "generate text from a prompt, streaming, with tokens/s"},
    {"logits", moec_cmd_logits, "write float32 logits [T, V] for given token ids to a .npy file"},
    {"bench", moec_cmd_bench, "time prefill and decode like llama-bench (-p 128 -n 32)"},
    {"tokenize", moec_cmd_tokenize, "encode text to ids (or decode ids) with a tokenizer.json"},
    {"tokenizer", moec_cmd_tokenizer, "train a byte-level BPE tokenizer.json on text files"},
    {"data", moec_cmd_data, "tokenize text files into train/val token shards"},
    {"train", moec_cmd_train, "train an MoE model from scratch or from a checkpoint"},
    {"eval", moec_cmd_eval, "validation loss and perplexity of a checkpoint, overall and per domain"},
    {"export", moec_cmd_export, "write a checkpoint as a GGUF file for llama.cpp (moec export gguf ...)"},
    {"quantize", moec_cmd_quantize, "write a checkpoint with Q8_0 / Q4_0 block weights (moec loads and runs it)"},
};

const char *cli_version(void) { return MOEC_VERSION; }

static void usage(FILE *f) {
    fprintf(f, "usage: moec <command> [options]   (moec <command> --help for its options; moec --version)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

/* SIGBUS: a mapped file shrank under us (another process truncated or rewrote a checkpoint
 * in place). The read cannot be undone, so say which file and exit 1; only async-signal-safe
 * calls here (write, _exit). */
static void put(const char *s) {
    if (write(2, s, strlen(s)) < 0) _exit(1);
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
    (void)sig;
    (void)uctx;
    const char *path = moec_file_map_owner(si->si_addr);
    put("moec: i/o error: ");
    put(path ? path : "a memory-mapped file");
    put(" shrank while in use (truncated or rewritten in place by another process?): cannot continue\n");
    _exit(1);
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("moec %s\n", cli_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "moec: unknown command '%s' (run 'moec --help' for the list)\n", argv[1]);
    return 2;
}
