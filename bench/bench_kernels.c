/* bench_kernels.c — throughput of moec's matmul kernel on expert-shaped problems, to compare
 * against the machine's limits (read bandwidth for decode, FMA peak for prefill):
 *   build/moec-bench-kernels [threads]
 * prints, per shape and token count: ms per call, GB/s of weights read, GFLOP/s.
 * Weights are cycled through a pool larger than the last-level cache, as in a real decode. */
#include "core/threads.h"
#include "nn/matmul.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run(int N, int K, int T, moec_dtype dt) {
    const size_t sz = (size_t)N * moec_row_bytes(dt, K);
    const int pool = (int)(512u * 1024 * 1024 / sz) + 1; /* ~512 MB of weights */
    unsigned char *w = malloc(sz * (size_t)pool);
    float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * N);
    if (!w || !x || !y) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < sz * (size_t)pool; i++) w[i] = (unsigned char)(i * 7 % 61); /* small finite values */
    for (int i = 0; i < T * K; i++) x[i] = 0.001f * (float)(i % 17);
    int calls = 0;
    double t0 = now_s();
    while (now_s() - t0 < 1.5 || calls < 3) {
        moec_mat W = {w + sz * (size_t)(calls % pool), dt, N, K};
        moec_matmul(y, x, &W, NULL, T);
        calls++;
    }
    double dt_s = (now_s() - t0) / calls;
    printf("%-5s N=%-5d K=%-5d T=%-4d %8.3f ms %7.1f GB/s %7.1f GFLOP/s\n", moec_dtype_name(dt), N, K, T, dt_s * 1e3,
           (double)sz / dt_s / 1e9, 2.0 * N * K * T / dt_s / 1e9);
    free(w);
    free(x);
    free(y);
}

int main(int argc, char **argv) {
    moec_threads_set(argc > 1 ? atoi(argv[1]) : 0);
    printf("threads: %d, kernel: %s\n", moec_threads_count(), moec_matmul_kernel_name());
    const int T[] = {1, 4, 16, 32, 128};
    for (size_t i = 0; i < sizeof T / sizeof *T; i++) run(2816, 1024, T[i], MOEC_DTYPE_BF16);
    for (size_t i = 0; i < sizeof T / sizeof *T; i++) run(1024, 2816, T[i], MOEC_DTYPE_BF16);
    run(32000, 1024, 1, MOEC_DTYPE_BF16);
    run(2816, 1024, 1, MOEC_DTYPE_F32);
    run(2816, 1024, 32, MOEC_DTYPE_F32);
    return 0;
}
