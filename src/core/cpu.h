/* cpu.h — which SIMD instruction sets this CPU has, read once, and which kernel family moec uses.
 * Every kernel family has the scalar oracle beside it; tests force each family with MOEC_ISA and
 * compare against the oracle (a family the CPU lacks is skipped with a message). */
#ifndef MOEC_CORE_CPU_H
#define MOEC_CORE_CPU_H

typedef struct {
    int avx2, fma, f16c;                      /* the AVX2 family's prerequisites */
    int avx512f, avx512bw, avx512vl, avx512dq; /* the AVX-512 family's */
    int avx512bf16;                           /* vdpbf16ps */
    int avx512vnni;                           /* vpdpbusd */
    int avxvnni;                              /* VEX-encoded vpdpbusd (AVX2 machines) */
    int amx_bf16; /* AMX tiles with tdpbf16ps, the OS saving their state, and (Linux) this
                   * process granted their use by arch_prctl(ARCH_REQ_XCOMP_PERM) at detection */
} moec_cpu_features;

typedef enum { MOEC_ISA_SCALAR = 0, MOEC_ISA_AVX2, MOEC_ISA_AVX512, MOEC_ISA_COUNT } moec_isa;

/* Features of the CPU this process runs on (all 0 off x86). */
const moec_cpu_features *moec_cpu_features_get(void);

/* 1 if this CPU can run kernel family isa. */
int moec_cpu_has_isa(moec_isa isa);

/* The family kernels use: the best the CPU has, or the one MOEC_ISA=scalar|avx2|avx512 names.
 * A MOEC_ISA naming an unknown family or one this CPU lacks is a fatal error with one line
 * (never a silent fallback: a test that forces avx512 must not quietly test scalar). */
moec_isa moec_cpu_isa(void);

const char *moec_isa_name(moec_isa isa);

/* "avx2 fma f16c avx512f ..." — what benchmarks print. */
const char *moec_cpu_features_string(void);

#endif
