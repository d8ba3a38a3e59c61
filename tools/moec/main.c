/* main.c — the moec command-line tool: dispatches to one subcommand per file. */
#include "commands.h"

#include <stdio.h>
#include <string.h>

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
};

static void usage(FILE *f) {
    fprintf(f, "usage: moec <command> [options]   (moec <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "moec: unknown command '%s' (run 'moec --help' for the list)\n", argv[1]);
    return 2;
}
