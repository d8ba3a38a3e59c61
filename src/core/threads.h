/* threads.h — moec's one thread pool (pthreads; no OpenMP, and OpenBLAS is held at one thread).
 *
 * One process-wide pool of n - 1 workers plus the calling thread. A parallel call publishes n
 * tasks; every thread, the caller included, claims tasks one at a time from an atomic counter,
 * so a descheduled worker delays only the task it holds and the caller never waits for a
 * worker that has not started. Waiting threads spin MOEC_SPIN microseconds (default 50; 0 =
 * sleep at once), then sleep on a futex: with another process keeping a core busy, the
 * threads that would spin give their core back instead of fighting for it.
 *
 * Which thread runs which task is not fixed; callers keep results thread-count independent by
 * writing disjoint outputs per task and fixing task boundaries by the problem, not the pool.
 * Calls may nest (an inner call runs serially on the calling thread) and may come from several
 * threads (they take turns). */
#ifndef MOEC_CORE_THREADS_H
#define MOEC_CORE_THREADS_H

#include <stddef.h>
#include <stdint.h>

/* task in [0, n_tasks); tid in [0, moec_threads_count()): which thread runs it, for per-thread
 * scratch (never for the result). */
typedef void (*moec_task_fn)(void *ctx, int64_t task, int tid);

/* Runs fn(ctx, i, tid) once for every i < n_tasks; returns when all have finished. */
void moec_parallel_for(int64_t n_tasks, moec_task_fn fn, void *ctx);

/* The same on threads tid < max_threads only (at least the caller): for per-thread scratch
 * sized for max_threads rows while another thread may have resized the pool. */
void moec_parallel_for_upto(int64_t n_tasks, int max_threads, moec_task_fn fn, void *ctx);

/* A range [i0, i1) of [0, n) per task. */
typedef void (*moec_range_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* Splits [0, n) into ceil(n / grain) ranges of grain items (the last one shorter) and runs
 * them as tasks; n <= grain runs on the calling thread without waking anyone. The ranges
 * depend on n and grain only. */
void moec_parallel_range(int64_t n, int64_t grain, moec_range_fn fn, void *ctx);

/* A grain for moec_parallel_range: items per task so that a task is about min_work units of
 * work, or all n (one task, no threads woken) when the whole loop is below min_work. */
static inline int64_t moec_grain(int64_t n, int64_t work_per_item, int64_t min_work) {
    if (work_per_item < 1) work_per_item = 1;
    if (n * work_per_item <= min_work) return n > 0 ? n : 1;
    return min_work / work_per_item > 1 ? min_work / work_per_item : 1;
}

/* memset(p, 0, bytes) in parallel ranges of 1 MiB (a training step's gradients: ~0.5 GB that
 * one thread took ~3 % of a step to clear). */
void moec_parallel_zero(void *p, size_t bytes);

/* Resizes the pool to n threads (caller included); n <= 0: moec_threads_default(). Cheap when
 * the size does not change; restarts the workers (and rereads MOEC_SPIN) when it does. Also
 * holds OpenBLAS at one thread (moec slices its GEMMs itself). */
void moec_threads_set(int n);

/* Threads a parallel call uses (creates the default pool on first use). */
int moec_threads_count(void);

/* Online CPUs. */
int moec_threads_ncpu(void);

/* The size "all cores" means (-t 0, and the pool before any moec_threads_set): MOEC_THREADS if
 * set (tests run more threads than cores with it), else moec_threads_ncpu(). */
int moec_threads_default(void);

#endif
