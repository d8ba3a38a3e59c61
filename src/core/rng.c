/* rng.c — see rng.h. */
#include "core/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) { return moec_mix64(*x += 0x9e3779b97f4a7c15ull); }

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void moec_rng_seed(moec_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t moec_rng_u64(moec_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

float moec_rng_uniform(moec_rng *r) { return (float)(moec_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float moec_rng_normal(moec_rng *r) {
    /* u1 in (0, 1] so the log is finite */
    double u1 = ((double)(moec_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(moec_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t moec_rng_below(moec_rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = moec_rng_u64(r);
    while (x >= lim);
    return x % n;
}
