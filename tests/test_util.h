/* test_util.h — tiny helpers for the C unit tests: checks that count failures, a seeded RNG,
 * and a closing line. Every test exits non-zero when any check failed. */
#ifndef MOEC_TEST_UTIL_H
#define MOEC_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) g_pass++;                                               \
        else {                                                            \
            g_fail++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
        }                                                                 \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static inline float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / (1ull << 24))) * 2.f - 1.f;
}

static inline int test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}

#endif
