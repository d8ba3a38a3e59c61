/* read_bandwidth.c — the memory read probe (see read_bandwidth.h). */
#include "core/read_bandwidth.h"

#include "core/cpu.h"
#include "core/threads.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define X86 1
#endif

#define CHUNK ((size_t)1 << 20)

typedef uint64_t (*sum_fn)(const unsigned char *p, size_t n);

static uint64_t sum_scalar(const unsigned char *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0, w[4];
    size_t i = 0;
    for (; i + 32 <= n; i += 32) { /* memcpy: any alignment, no strict-aliasing cast */
        memcpy(w, p + i, 32);
        a += w[0], b += w[1], c += w[2], d += w[3];
    }
    for (; i < n; i++) a += p[i];
    return a + b + c + d;
}

#ifdef X86
__attribute__((target("avx2"))) static uint64_t sum_avx2(const unsigned char *p, size_t n) {
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        c0 = _mm256_add_epi32(c0, _mm256_loadu_si256((const __m256i *)(p + i)));
        c1 = _mm256_add_epi32(c1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        c2 = _mm256_add_epi32(c2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        c3 = _mm256_add_epi32(c3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)));
    uint64_t s = 0;
    for (int l = 0; l < 8; l++) s += lanes[l];
    return s + sum_scalar(p + i, n - i);
}

__attribute__((target("avx512f"))) static uint64_t sum_avx512(const unsigned char *p, size_t n) {
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        c0 = _mm512_add_epi32(c0, _mm512_loadu_si512(p + i));
        c1 = _mm512_add_epi32(c1, _mm512_loadu_si512(p + i + 64));
        c2 = _mm512_add_epi32(c2, _mm512_loadu_si512(p + i + 128));
        c3 = _mm512_add_epi32(c3, _mm512_loadu_si512(p + i + 192));
    }
    /* lanes summed as unsigned 64-bit (_mm512_reduce_add_epi32 adds in int: overflow is UB) */
    uint32_t lanes[16];
    _mm512_storeu_si512(lanes, _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)));
    uint64_t s = 0;
    for (int l = 0; l < 16; l++) s += lanes[l];
    return s + sum_scalar(p + i, n - i);
}
#endif

typedef struct {
    const void *const *ptr;
    const size_t *len;
    const int64_t *first_chunk; /* [n + 1]: chunk index where span i starts */
    int n;
    sum_fn sum;
    _Atomic uint64_t sink;
} probe_ctx;

static void probe_task(void *vctx, int64_t task, int tid) {
    (void)tid;
    probe_ctx *c = vctx;
    int lo = 0, hi = c->n - 1; /* the span holding this chunk */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (c->first_chunk[mid] <= task) lo = mid;
        else hi = mid - 1;
    }
    const size_t off = (size_t)(task - c->first_chunk[lo]) * CHUNK;
    const size_t len = c->len[lo] - off < CHUNK ? c->len[lo] - off : CHUNK;
    atomic_fetch_add_explicit(&c->sink, c->sum((const unsigned char *)c->ptr[lo] + off, len), memory_order_relaxed);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double moec_read_bandwidth(const void *const *ptr, const size_t *len, int n, unsigned long long *sink) {
    int64_t *first = malloc(((size_t)n + 1) * sizeof *first);
    if (!first) return 0;
    size_t bytes = 0;
    first[0] = 0;
    for (int i = 0; i < n; i++) {
        first[i + 1] = first[i] + (int64_t)((len[i] + CHUNK - 1) / CHUNK);
        bytes += len[i];
    }
    probe_ctx c = {ptr, len, first, n, sum_scalar, 0};
#ifdef X86
    const moec_isa isa = moec_cpu_isa();
    if (isa == MOEC_ISA_AVX512) c.sum = sum_avx512;
    else if (isa == MOEC_ISA_AVX2) c.sum = sum_avx2;
#endif
    double gbs = 0;
    if (bytes) {
        const double t0 = now_s();
        moec_parallel_for(first[n], probe_task, &c);
        gbs = (double)bytes / (now_s() - t0) / 1e9;
    }
    if (sink) *sink = (unsigned long long)atomic_load(&c.sink);
    free(first);
    return gbs;
}
