/* fuzz_util.h — shared by the harnesses: split one input into files, a private temp dir, and a
 * memory cap for readers that size allocations from the input. Harnesses are built with
 * libFuzzer (clang -fsanitize=fuzzer) or with standalone_main.c (any compiler) to replay
 * inputs; see fuzz/README.md. */
#ifndef MOEC_FUZZ_UTIL_H
#define MOEC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs that hold several files separate them with this line (the seed generator writes it). */
#define FZ_SEP "\n#MOEC-FUZZ-FILE#\n"

/* Splits data at FZ_SEP into at most max parts; returns the count. Parts point into data.
 * memchr finds the separator's first byte: a memcmp at every offset went through libFuzzer's
 * memcmp interceptor once per input byte and was most of the `data` harness's time. */
static inline int fz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, int max) {
    const size_t sl = sizeof FZ_SEP - 1;
    int n = 0;
    size_t start = 0, i = 0;
    while (n < max - 1 && i + sl <= size) {
        const uint8_t *nl = memchr(data + i, '\n', size - sl + 1 - i);
        if (!nl) break;
        i = (size_t)(nl - data);
        if (!memcmp(data + i, FZ_SEP, sl)) {
            part[n] = data + start;
            len[n++] = i - start;
            start = i + sl;
            i = start;
        } else {
            i++;
        }
    }
    part[n] = data + start;
    len[n++] = size - start;
    return n;
}

static char fz_dir_path[128];

/* Removes the private directory at exit (a crash leaves it, with the files that crashed). */
static inline void fz_dir_remove(void) {
    static const char *names[] = {"tokenizer.json", "tokenizer_config.json", "meta.json", "train-00000.bin", "val-00000.bin",
                                  "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                                  "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fz_dir_path, names[i]);
        unlink(path);
    }
    rmdir(fz_dir_path);
}

/* A private directory, made once per process (under /dev/shm when it exists: no disk I/O). */
static inline const char *fz_dir(void) {
    if (!fz_dir_path[0]) {
        snprintf(fz_dir_path, sizeof fz_dir_path, "%s/moec-fuzz-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(fz_dir_path)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fz_dir_remove);
    }
    return fz_dir_path;
}

/* Writes (or, with len == SIZE_MAX, removes) dir/name. What was last written under each name
 * is remembered, and a file that would get the same bytes (or stay absent) is left alone: a
 * mutation usually changes one part of a multi-file input, and the open/truncate/write/unlink
 * system calls of rewriting every part were about half of the multi-file harnesses' time. The
 * reader still opens and reads every file each run. */
#define FZ_MAX_FILES 8
static struct {
    char name[64];
    uint8_t *bytes; /* NULL: absent */
    size_t len;
} fz_files[FZ_MAX_FILES];

static inline void fz_put(const char *name, const uint8_t *p, size_t len) {
    int k = 0;
    while (k < FZ_MAX_FILES && fz_files[k].name[0] && strcmp(fz_files[k].name, name)) k++;
    if (k == FZ_MAX_FILES) abort();
    const int known = fz_files[k].name[0] != 0;
    if (known && len == SIZE_MAX && !fz_files[k].bytes) return;
    if (known && fz_files[k].bytes && fz_files[k].len == len && (!len || !memcmp(fz_files[k].bytes, p, len))) return;
    snprintf(fz_files[k].name, sizeof fz_files[k].name, "%s", name);
    free(fz_files[k].bytes);
    fz_files[k].bytes = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fz_dir(), name);
    if (len == SIZE_MAX) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(p, 1, len, f) != len) || fclose(f)) abort();
    fz_files[k].bytes = malloc(len ? len : 1);
    if (!fz_files[k].bytes) abort();
    if (len) memcpy(fz_files[k].bytes, p, len);
    fz_files[k].len = len;
}

/* Readers refuse requests above this before allocating (core/mem.h); keeps the fuzzer's RSS
 * limit for real leaks and overflows. */
static inline void fz_mem_cap(void) { setenv("MOEC_MEM_LIMIT", "268435456", 1); }

#endif
