/* vmath.h — the elementwise exponentials of the model in SIMD: softmax rows, SwiGLU forward and
 * backward. Each function runs the kernel family core/cpu.c picks (moec_cpu_isa); the _isa
 * forms take the family, for tests. The scalar family is the oracle: libm's expf, in the order the
 * formulas are written. The AVX-512 and AVX2 families use one polynomial exp (range reduction by
 * ln 2, Cephes' degree-6 polynomial): within 2 ulp of expf for results >= FLT_MIN (measured: 1),
 * subnormal results within FLT_MIN (2^n applied so that they round once, as IEEE), 0 below
 * x = -104, +inf above ln FLT_MAX, NaN for NaN; sums are taken in float64 lanes, so they differ from the scalar order by float64 rounding.
 * tests/test_vmath.c checks every family the CPU has against the oracle. */
#ifndef MOEC_NN_VMATH_H
#define MOEC_NN_VMATH_H

#include "core/cpu.h"

#include <stdint.h>

/* y[i] = exp(x[i] - shift) for i < n; returns the sum of those values, taken in float64. y may
 * alias x, or be NULL (only the sum is wanted). */
double moec_vexp_sum(float *y, const float *x, float shift, int64_t n);
double moec_vexp_sum_isa(moec_isa isa, float *y, const float *x, float shift, int64_t n);

/* out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate or up. */
void moec_vswiglu(float *out, const float *gate, const float *up, int64_t n);
void moec_vswiglu_isa(moec_isa isa, float *out, const float *gate, const float *up, int64_t n);

/* The SwiGLU backward for dh = ∂/∂(silu(g) u), with s = σ(g):
 *   dgate[i] (+)= dh u s (1 + g (1 - s)),   dup[i] (+)= dh g s
 * accumulate = 1 adds, 0 overwrites. Each element's inputs are read before its outputs are
 * written, so dgate may alias gate and dup may alias up (the in-place backward of moe.c). */
void moec_vswiglu_back(float *dgate, float *dup, const float *dh, const float *gate, const float *up, int64_t n,
                       int accumulate);
void moec_vswiglu_back_isa(moec_isa isa, float *dgate, float *dup, const float *dh, const float *gate,
                           const float *up, int64_t n, int accumulate);

#endif
