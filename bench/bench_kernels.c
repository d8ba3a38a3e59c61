/* bench_kernels.c — throughput of moec's matmul kernels on expert-shaped problems, against the
 * machine's limits (read bandwidth for decode, FMA peak for prefill):
 *   build/moec-bench-kernels [threads [FORMAT]]  (threads: 0 = all cores; MOEC_ISA=scalar|avx2|avx512 forces a family;
 *                                                FORMAT, e.g. Q8_0, runs that format only)
 * prints the CPU features and kernel family, the measured read bandwidth with that many threads,
 * then per format, shape and token count: ms per call, GB/s of weights read, GFLOP/s, and for
 * one token the fraction of the read bandwidth. Each figure is the fastest of 6 windows (so the
 * least disturbed by other processes on a shared machine; state the load beside it). Weights are cycled through a pool larger than
 * the last-level cache, as in a real decode.
 *   build/moec-bench-kernels [threads] GEMM   the training GEMM (nn/gemm.c) on the shapes of a
 *                                           `moec bench train --preset small|fine` step: GFLOP/s
 *   build/moec-bench-kernels 1 CACHED       the kernels' own speed, weights resident in L2 (512 rows
 *                                           of 1024), 1 and 64 tokens: the fastest of 3000 windows
 *                                           of a few calls, so A/B comparisons of a kernel change
 *                                           hold within ~2 % on a VM with steal time */
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "nn/gemm.h"
#include "nn/matmul.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_BYTES (512u * 1024 * 1024)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- read bandwidth: each thread sums its slice of a pool larger than the caches */

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} slice;

static void *read_slice(void *arg) {
    slice *s = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= s->n; i += 4) {
        a += s->p[i];
        b ^= s->p[i + 1];
        c += s->p[i + 2];
        d ^= s->p[i + 3];
    }
    s->sum = a + b + c + d;
    return NULL;
}

static double read_bandwidth(int threads) {
    const size_t n = POOL_BYTES / 8;
    uint64_t *p = malloc(POOL_BYTES);
    if (!p) return 0;
    for (size_t i = 0; i < n; i++) p[i] = i;
    double best = 0;
    uint64_t keep = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        slice sl[64];
        const double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            sl[i] = (slice){p + n / (size_t)threads * (size_t)i, n / (size_t)threads, 0};
            pthread_create(&th[i], NULL, read_slice, &sl[i]);
        }
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            keep += sl[i].sum;
        }
        const double gbs = (double)POOL_BYTES / (now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(p);
    if (keep == 42) printf("(checksum)\n"); /* keeps the sums alive */
    return best;
}

static double g_bw;

/* Normal values of moderate size in every format: denormals would time the FPU's slow path. */
static void fill(unsigned char *w, moec_dtype dt, size_t bytes) {
    const size_t bb = moec_dtype_info(dt)->block_bytes;
    for (size_t i = 0; i < bytes / bb; i++) {
        unsigned char *e = w + i * bb;
        const float v = (float)((int)(i * 7919 % 2001) - 1000) / 1000.f + 1.5f; /* in [0.5, 2.5] */
        uint16_t h;
        switch (dt) {
        case MOEC_DTYPE_F32: memcpy(e, &v, 4); break;
        case MOEC_DTYPE_BF16: h = moec_f32_to_bf16(v); memcpy(e, &h, 2); break;
        case MOEC_DTYPE_F16: h = (uint16_t)(0x3800 + i % 1024); memcpy(e, &h, 2); break; /* [0.5, 1) */
        default: /* Q8_0 / Q4_0: an fp16 scale of about 1/64, then any bytes */
            h = (uint16_t)(0x2400 + i % 256);
            memcpy(e, &h, 2);
            for (size_t j = 2; j < bb; j++) e[j] = (unsigned char)((i + j) * 37 % 251);
        }
    }
}

static void run(int N, int K, int T, moec_dtype dt) {
    const size_t sz = (size_t)N * moec_row_bytes(dt, K);
    const int pool = (int)(POOL_BYTES / sz) + 1;
    unsigned char *w = malloc(sz * (size_t)pool);
    float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * N);
    if (!w || !x || !y) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    fill(w, dt, sz * (size_t)pool);
    for (int i = 0; i < T * K; i++) x[i] = 0.001f * (float)(i % 17);
    /* the fastest of 6 windows of >= 0.15 s: on a shared machine the others are slowed by
     * whatever else runs, and the fastest is the closest to the kernel's own speed */
    int calls = 0;
    double s = 1e30;
    for (int win = 0; win < 6; win++) {
        const double t0 = now_s();
        int c = 0;
        while (now_s() - t0 < 0.15 || c < 2) {
            moec_mat W = {w + sz * (size_t)(calls % pool), dt, N, K};
            moec_matmul(y, x, &W, NULL, T);
            calls++;
            c++;
        }
        const double per = (now_s() - t0) / c;
        if (per < s) s = per;
    }
    const double gbs = (double)sz / s / 1e9;
    printf("%-5s N=%-5d K=%-5d T=%-4d %8.3f ms %7.1f GB/s %7.1f GFLOP/s", moec_dtype_name(dt), N, K, T, s * 1e3, gbs,
           2.0 * N * K * T / s / 1e9);
    if (T == 1 && g_bw > 0) printf("  %4.2f of read bw", gbs / g_bw);
    printf("\n");
    free(w);
    free(x);
    free(y);
}

/* C [M, N] (+)= op(A) op(B) with the shapes of a training step (linear forward x·Wᵀ: N T; dx = dy·W:
 * N N; dW += dyᵀ·x: T N), fastest of 6 windows. */
static int g_bf16; /* GEMM16: moec_gemm_bf16 instead of moec_gemm */

static void run_gemm(moec_trans ta, moec_trans tb, int M, int N, int K, const char *what) {
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)N * K);
    float *C = calloc((size_t)M * N, sizeof(float));
    if (!A || !B || !C) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = 0.001f * (float)(i % 7);
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = 0.001f * (float)(i % 5);
    const int lda = ta == MOEC_TRANS ? M : K, ldb = tb == MOEC_TRANS ? K : N;
    double s = 1e30;
    for (int win = 0; win < 6; win++) {
        const double t0 = now_s();
        int c = 0;
        while (now_s() - t0 < 0.15 || c < 2) {
            (g_bf16 ? moec_gemm_bf16 : moec_gemm)(ta, tb, M, N, K, 1.f, A, lda, B, ldb, ta == MOEC_TRANS ? 1.f : 0.f,
                                                  C, N);
            c++;
        }
        const double per = (now_s() - t0) / c;
        if (per < s) s = per;
    }
    printf("GEMM%s %c%c M=%-5d N=%-5d K=%-5d %8.3f ms %7.1f GFLOP/s  %s\n", g_bf16 ? (moec_gemm_bf16_has_amx() ? "-bf16-amx" : "-bf16") : "", ta == MOEC_TRANS ? 'T' : 'N',
           tb == MOEC_TRANS ? 'T' : 'N', M, N, K, s * 1e3, 2.0 * M * N * K / s / 1e9, what);
    free(A);
    free(B);
    free(C);
}

/* One weight matrix of 512 x 1024 (BF16 1 MB, Q8_0 0.54 MB, Q4_0 0.29 MB: in L2), T tokens. */
static void run_cached(moec_dtype dt, int T) {
    const int N = 512, K = 1024;
    const size_t sz = (size_t)N * moec_row_bytes(dt, K);
    unsigned char *w = malloc(sz);
    float *x = malloc(sizeof(float) * (size_t)T * K), *y = malloc(sizeof(float) * (size_t)T * N);
    if (!w || !x || !y) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    fill(w, dt, sz);
    for (int i = 0; i < T * K; i++) x[i] = 0.001f * (float)(i % 17) - 0.008f;
    const moec_mat W = {w, dt, N, K};
    const int calls = T > 1 ? 1 : 20, windows = T > 1 ? 1500 : 3000;
    double s = 1e30;
    for (int win = 0; win < windows; win++) {
        const double t0 = now_s();
        for (int c = 0; c < calls; c++) moec_matmul(y, x, &W, NULL, T);
        const double per = (now_s() - t0) / calls;
        if (per < s) s = per;
    }
    printf("%-5s N=%-5d K=%-5d T=%-4d cached %8.2f us %7.1f GB/s %7.1f GFLOP/s\n", moec_dtype_name(dt), N, K, T, s * 1e6,
           (double)sz / s / 1e9, 2.0 * N * K * T / s / 1e9);
    free(w);
    free(x);
    free(y);
}

static void run_gemms(void) {
    const moec_trans n = MOEC_NO_TRANS, t = MOEC_TRANS;
    run_gemm(n, t, 2048, 512, 512, "attention projection, forward (2048 tokens, d 512)");
    run_gemm(n, n, 2048, 512, 512, "  its dx");
    run_gemm(t, n, 512, 512, 2048, "  its dW");
    run_gemm(n, t, 2048, 8192, 512, "LM head, forward (vocab 8192)");
    run_gemm(n, n, 2048, 512, 8192, "  its dx");
    run_gemm(t, n, 8192, 512, 2048, "  its dW");
    run_gemm(n, t, 256, 512, 512, "expert up, small (256 tokens, ff 512)");
    run_gemm(t, n, 512, 512, 256, "  its dW");
    run_gemm(n, t, 256, 128, 512, "expert up, fine (256 tokens, ff 128)");
    run_gemm(n, t, 2048, 256, 512, "shared expert up, fine (ff 256)");
}

int main(int argc, char **argv) {
    moec_threads_set(argc > 1 ? atoi(argv[1]) : 0);
    const int threads = moec_threads_count();
    printf("cpu: %s\nthreads: %d, kernel family: %s\n", moec_cpu_features_string(), threads, moec_matmul_kernel_name());
    if (argc > 2 && (!strcmp(argv[2], "GEMM") || !strcmp(argv[2], "GEMM16"))) {
        g_bf16 = !strcmp(argv[2], "GEMM16");
        run_gemms();
        return 0;
    }
    if (argc > 2 && !strcmp(argv[2], "CACHED")) {
        const moec_dtype dts[] = {MOEC_DTYPE_BF16, MOEC_DTYPE_Q8_0, MOEC_DTYPE_Q4_0};
        for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
            run_cached(dts[d], 1);
            run_cached(dts[d], 64);
        }
        return 0;
    }
    g_bw = read_bandwidth(threads);
    printf("read bandwidth (%d threads, %u MB pool): %.1f GB/s\n", threads, POOL_BYTES >> 20, g_bw);
    const moec_dtype dts[] = {MOEC_DTYPE_BF16, MOEC_DTYPE_Q8_0, MOEC_DTYPE_Q4_0, MOEC_DTYPE_F16, MOEC_DTYPE_F32};
    const int T[] = {1, 4, 32, 128};
    for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
        if (argc > 2 && strcmp(argv[2], moec_dtype_name(dts[d]))) continue;
        for (size_t i = 0; i < sizeof T / sizeof *T; i++) run(2816, 1024, T[i], dts[d]);
        run(1024, 2816, 1, dts[d]);
        run(1024, 2816, 128, dts[d]);
    }
    if (argc <= 2) run(32000, 1024, 1, MOEC_DTYPE_BF16);
    return 0;
}
