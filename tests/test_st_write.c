/* test_st_write.c — the safetensors writer converts a tensor whose data is in another dtype row
 * by row while it writes (io/safetensors_write.h): every (data dtype, stored dtype) pair of F32,
 * BF16, F16, Q8_0 and Q4_0 must store exactly the bytes a whole-tensor moec_from_f32(moec_to_f32())
 * gives, on a tensor that spans several of the writer's 4 MiB chunks (each a whole number of
 * rows; odd row bytes: 4000 columns = 4250 Q8_0 bytes, 2250 Q4_0 bytes), and a tensor already in
 * its dtype is stored as its own bytes. */
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROWS 1100
#define COLS 4000

int main(void) {
    static const moec_dtype types[] = {MOEC_DTYPE_F32, MOEC_DTYPE_BF16, MOEC_DTYPE_F16, MOEC_DTYPE_Q8_0,
                                       MOEC_DTYPE_Q4_0};
    enum { NT = sizeof types / sizeof *types };
    const size_t numel = (size_t)ROWS * COLS;
    float *f = malloc(numel * sizeof *f), *tmp = malloc(numel * sizeof *tmp);
    void *src[NT];
    for (size_t i = 0; i < numel; i++) f[i] = frand() * (1.f + (float)(i % 97)); /* scales vary by block */
    for (int a = 0; a < NT; a++) {
        src[a] = malloc(moec_row_bytes(types[a], (int64_t)numel));
        moec_from_f32(src[a], f, types[a], numel);
    }
    char path[] = "/tmp/moec_st_write_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    for (int a = 0; a < NT; a++) {
        moec_st_entry e[NT];
        char names[NT][16];
        for (int b = 0; b < NT; b++) {
            snprintf(names[b], sizeof names[b], "t%d", b);
            e[b] = (moec_st_entry){.name = names[b], .n_dims = 2, .shape = {ROWS, COLS}, .data = src[a],
                                   .data_dtype = types[a]};
        }
        moec_error err = {0};
        moec_st_set set;
        memset(&set, 0, sizeof set);
        if (moec_st_write_typed(path, e, types, NT, &err) || moec_st_open_file(&set, path, &err)) {
            CHECK(0, "write/read from %s: %s", moec_dtype_name(types[a]), err.msg);
            moec_st_close(&set);
            continue;
        }
        moec_to_f32(tmp, src[a], types[a], numel); /* the data as the writer sees it */
        for (int b = 0; b < NT; b++) {
            const size_t bytes = moec_row_bytes(types[b], (int64_t)numel);
            void *want = malloc(bytes);
            if (a == b)
                memcpy(want, src[a], bytes);
            else
                moec_from_f32(want, tmp, types[b], numel);
            const moec_st_tensor *t = moec_st_find(&set, names[b]);
            CHECK(t && t->dtype == types[b] && t->nbytes == bytes && !memcmp(t->data, want, bytes),
                  "%s data stored as %s: the bytes of a whole-tensor conversion", moec_dtype_name(types[a]),
                  moec_dtype_name(types[b]));
            free(want);
        }
        moec_st_close(&set);
    }
    unlink(path);
    for (int a = 0; a < NT; a++) free(src[a]);
    free(f);
    free(tmp);
    return test_finish("test_st_write");
}
