/* rng.h — deterministic random numbers (xoshiro256**, seeded by splitmix64): the same seed gives
 * the same stream on every machine, which training determinism and resume depend on. The state
 * is four u64s so it can be saved in a checkpoint and restored exactly. */
#ifndef MOEC_CORE_RNG_H
#define MOEC_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} moec_rng;

/* splitmix64's finalizer: a bijective mix that spreads every input bit over all 64 output
 * bits (seeding, hash tables, per-epoch keys). */
static inline uint64_t moec_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void moec_rng_seed(moec_rng *r, uint64_t seed);
uint64_t moec_rng_u64(moec_rng *r);
/* Uniform in [0, 1) with 24 random bits (exact in float). */
float moec_rng_uniform(moec_rng *r);
/* Standard normal (Box-Muller, both values used in turn is NOT done: one draw per call keeps
 * the stream position simple to reason about). */
float moec_rng_normal(moec_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t moec_rng_below(moec_rng *r, uint64_t n);

#endif
