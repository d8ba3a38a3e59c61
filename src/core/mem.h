/* mem.h — sizes computed from files: overflow-checked arithmetic, and a check that a request
 * can fit in this machine (RAM + swap, and the address-space limit of `ulimit -v`) before it
 * is allocated, so that an absurd config or header is refused with a message that says how
 * much it asked for instead of a crash, a wrap-around or an OOM kill. Not an allocator; but
 * the libraries moec parses with (cJSON, PCRE2) are given moec_lib_malloc / moec_lib_free, so
 * that every allocation made on moec's behalf is a call from moec's own code, which a test
 * can fail (tests/test_alloc_fail.c wraps malloc at link time). */
#ifndef MOEC_CORE_MEM_H
#define MOEC_CORE_MEM_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

/* *acc += a * b; returns 0 (and leaves *acc unspecified) if anything overflows size_t. */
static inline int moec_size_muladd(size_t *acc, size_t a, size_t b) {
    size_t p;
    return !__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(*acc, p, acc);
}

/* Bytes this process may still expect to allocate: min(RAM + swap, RLIMIT_AS soft limit).
 * SIZE_MAX when neither is known. MOEC_MEM_LIMIT (bytes) in the environment lowers it, for
 * tests. */
size_t moec_mem_available(void);

/* MOEC_OK if `bytes` fit in moec_mem_available(); otherwise MOEC_ERR_OOM with
 * "<what>: N MB needed, this machine allows M MB ..." (nothing is allocated either way). */
moec_status moec_mem_check(size_t bytes, const char *what, moec_error *err);

/* malloc and free, for libraries that take allocation callbacks (PCRE2's general context,
 * text/regex.c). cJSON is given malloc and free themselves as hooks, installed before main
 * (mem.c). */
void *moec_lib_malloc(size_t n);
void moec_lib_free(void *p);

/* Per-thread scratch: one grow-only, 64-byte aligned buffer per slot and thread, kept between
 * calls (no allocation per step), contents not kept when it grows. The buffers of a thread
 * are freed when it exits (a pthread key's destructor), which matters because the pool
 * restarts its workers whenever the thread count changes. NULL if out of memory. One slot per
 * buffer a call may hold at the same time as another. */
enum moec_scratch_slot {
    MOEC_SCRATCH_MM_XQ,       /* nn/matmul.c: activations quantized per task */
    MOEC_SCRATCH_MM_ACT,      /* nn/matmul.c: activations quantized once per call */
    MOEC_SCRATCH_MM_PANEL,    /* nn/matmul.c: a packed weight panel */
    MOEC_SCRATCH_MM_XSPLIT,   /* nn/matmul.c: bf16 decode's even/odd split of x */
    MOEC_SCRATCH_MM_LAYOUT,   /* nn/kernels/matmul_avx512.c: activation layouts */
    MOEC_SCRATCH_EXPERTS_UP,  /* moe/experts.c: prepared activations, three at once */
    MOEC_SCRATCH_EXPERTS_MID,
    MOEC_SCRATCH_EXPERTS_DOWN,
    MOEC_SCRATCH_GEMM_A,      /* nn/gemm.c: a task's packed rows of op(A) */
    MOEC_SCRATCH_GEMM_B,      /* nn/gemm.c: the caller's packed op(B), read by every thread */
    MOEC_SCRATCH_GEMM_BF16_A, /* nn/gemm_bf16.c: a task's op(A) in bf16 (or the rounded copy) */
    MOEC_SCRATCH_GEMM_BF16_B, /* nn/gemm_bf16.c: the caller's op(B) in bf16 (or the rounded copy) */
    MOEC_SCRATCH_GRAD_NORM,   /* train/optim.c: the gradient norm's per-block sums */
    MOEC_SCRATCH_N
};
void *moec_scratch(enum moec_scratch_slot slot, size_t bytes);

#endif
