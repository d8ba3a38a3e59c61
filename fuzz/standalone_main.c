/* standalone_main.c — replays inputs through a harness without libFuzzer (any compiler, any
 * sanitizer build): each argument is a file, or a directory whose files are all run. Exits 0
 * when every input ran (a crash or sanitizer report aborts the process), 1 on a bad argument,
 * and 2 when no input was found at all (so a test over an empty directory cannot pass). */
#include "fuzz_util.h"

#include <dirent.h>
#include <sys/stat.h>

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) abort();
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "%s: cannot open\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            ran += run_file(argv[i]) == 0;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md")) continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode) && run_file(p) == 0) ran++;
        }
        if (d) closedir(d);
    }
    printf("%d inputs ran\n", ran);
    return ran ? 0 : 2;
}
