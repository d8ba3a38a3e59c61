/* threads.c — see threads.h.
 *
 * A job is published as (fn, ctx, n_tasks) and a 64-bit claim word: generation << 32 | next
 * task. Threads claim with a compare-and-swap that also checks the generation, so a worker
 * that wakes late, after its job finished, can never take a task of the next one; and fn/ctx
 * are read only while holding an unfinished task, which keeps the caller from moving on. The
 * caller finishes when `done` reaches n_tasks, whether or not every worker showed up.
 *
 * n_tasks is read before the claim, so it must be the claimed job's: at the end of a job the
 * caller closes the claim word (next = CLOSED) before it writes the next job's n_tasks (and
 * max_tid, read the same way), and all
 * three are seq_cst. A claim that succeeds on (g, i) was ordered before the close, so the n it
 * read was job g's (ThreadSanitizer found the version without the close: a worker holding
 * (g, n_g) read the next job's larger n and claimed a task that did not exist). */
#include "core/threads.h"

#include "core/error.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define DEFAULT_SPIN_US 50
#define CLOSED 0xffffffffu /* next task of a finished job: >= any n_tasks */

typedef struct {
    _Atomic uint32_t gen;      /* bumped per job (and to stop); the word idle workers sleep on */
    _Atomic uint64_t claim;    /* gen << 32 | next unclaimed task */
    _Atomic uint32_t n_tasks;  /* of the current job; read before claiming, so atomic */
    _Atomic int max_tid;       /* threads with tid >= this take no task of the current job */
    _Atomic uint32_t done;     /* tasks finished; the word the caller sleeps on */
    _Atomic int sleepers;      /* workers in (or entering) futex wait on gen */
    _Atomic int caller_asleep; /* the caller is in (or entering) futex wait on done */
    _Atomic int stop;
    moec_task_fn fn; /* plain: written before the claim word's release store, read after a claim */
    void *ctx;
    _Atomic int n;    /* threads, caller included (0 until the pool starts); written under g_lock */
    pthread_t *thr;   /* n - 1 workers */
    uint64_t spin_ns; /* MOEC_SPIN */
} pool;

static pool P;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* one job (or resize) at a time */
static _Thread_local int tl_tid;                           /* 0 for any thread not in the pool */
static _Thread_local int tl_in_task;                       /* nested calls run serially */

/* ------------------------------------------------------------------ waiting */

static void futex_wait(_Atomic uint32_t *w, uint32_t val) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)w, (void)val;
    sched_yield();
#endif
}

static void futex_wake(_Atomic uint32_t *w, int n) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
    (void)w, (void)n;
#endif
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins up to P.spin_ns for *w to differ from (want_ne) or equal (!want_ne) v; 1 if it did. */
static int spin_for(_Atomic uint32_t *w, uint32_t v, int want_ne) {
    if (P.spin_ns == 0) return 0;
    const uint64_t t0 = now_ns();
    for (unsigned k = 1;; k++) {
        if ((atomic_load_explicit(w, memory_order_acquire) != v) == want_ne) return 1;
        CPU_RELAX();
        if ((k & 63) == 0 && now_ns() - t0 > P.spin_ns) return 0;
    }
}

/* ------------------------------------------------------------------ running tasks */

/* Claims and runs tasks of job g until none are left; returns how many this thread ran and,
 * if any, job g's task count in *n. */
static uint32_t run_tasks(uint32_t g, int tid, uint32_t *n) {
    uint32_t mine = 0;
    uint64_t v = atomic_load(&P.claim);
    tl_in_task = 1;
    for (;;) {
        if ((uint32_t)(v >> 32) != g) break; /* a later job: ours is over */
        const uint32_t i = (uint32_t)v, nt = atomic_load(&P.n_tasks);
        if (i >= nt) break; /* all claimed, or closed */
        if (tid >= atomic_load(&P.max_tid)) break;
        if (!atomic_compare_exchange_weak(&P.claim, &v, v + 1)) continue; /* v: the current word */
        *n = nt;
        P.fn(P.ctx, i, tid);
        mine++;
        v = atomic_load(&P.claim);
    }
    tl_in_task = 0;
    return mine;
}

static void *worker(void *arg) {
    tl_tid = (int)(intptr_t)arg;
    uint32_t seen = atomic_load(&P.gen);
    for (;;) {
        if (atomic_load(&P.stop)) break;
        if (!spin_for(&P.gen, seen, 1)) {
            atomic_fetch_add(&P.sleepers, 1);
            while (atomic_load(&P.gen) == seen)
                futex_wait(&P.gen, seen);
            atomic_fetch_sub(&P.sleepers, 1);
        }
        seen = atomic_load_explicit(&P.gen, memory_order_acquire);
        if (atomic_load(&P.stop)) break;
        uint32_t n = 0;
        const uint32_t mine = run_tasks(seen, tl_tid, &n);
        if (mine && atomic_fetch_add(&P.done, mine) + mine == n && atomic_load(&P.caller_asleep))
            futex_wake(&P.done, 1);
    }
    return NULL;
}

/* ------------------------------------------------------------------ the pool */

int moec_threads_ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void stop_pool(void) {
    if (!P.thr) return;
    atomic_store(&P.stop, 1);
    atomic_fetch_add(&P.gen, 1);
    futex_wake(&P.gen, INT_MAX);
    for (int i = 0; i < P.n - 1; i++)
        pthread_join(P.thr[i], NULL);
    free(P.thr);
    P.thr = NULL;
    atomic_store(&P.stop, 0);
}

int moec_threads_default(void) {
    const char *s = getenv("MOEC_THREADS");
    const long n = s && *s ? strtol(s, NULL, 10) : 0;
    return n > 0 && n <= 1024 ? (int)n : moec_threads_ncpu();
}

static void start_pool(int n) {
    const char *s = getenv("MOEC_SPIN"); /* read at every start: tests change it */
    const long us = s && *s ? strtol(s, NULL, 10) : DEFAULT_SPIN_US;
    P.spin_ns = us > 0 ? (uint64_t)us * 1000u : 0;
    if (n <= 0) n = moec_threads_default();
    P.n = 1;
    if (n > 1 && (P.thr = malloc((size_t)(n - 1) * sizeof *P.thr)))
        for (int i = 0; i < n - 1; i++) {
            if (pthread_create(&P.thr[i], NULL, worker, (void *)(intptr_t)(i + 1))) break; /* fewer threads */
            P.n++;
        }
}

void moec_threads_set(int n) {
    if (n <= 0) n = moec_threads_default();
    pthread_mutex_lock(&g_lock);
    if (P.n != n) {
        stop_pool();
        start_pool(n);
    }
    pthread_mutex_unlock(&g_lock);
}

int moec_threads_count(void) {
    int n = atomic_load_explicit(&P.n, memory_order_relaxed); /* no lock: tasks may ask */
    if (n == 0) {
        pthread_mutex_lock(&g_lock);
        if (P.n == 0) start_pool(0);
        n = P.n;
        pthread_mutex_unlock(&g_lock);
    }
    return n;
}

void moec_parallel_for(int64_t n_tasks, moec_task_fn fn, void *ctx) {
    moec_parallel_for_upto(n_tasks, INT_MAX, fn, ctx);
}

void moec_parallel_for_upto(int64_t n_tasks, int max_threads, moec_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    MOEC_ASSERT(n_tasks < INT32_MAX);
    if (n_tasks == 1 || tl_in_task || max_threads <= 1) { /* a lone task may still fan out inside: not marked */
        for (int64_t i = 0; i < n_tasks; i++)
            fn(ctx, i, tl_tid);
        return;
    }
    pthread_mutex_lock(&g_lock);
    if (P.n == 0) start_pool(0);
    if (P.n == 1) {
        pthread_mutex_unlock(&g_lock);
        for (int64_t i = 0; i < n_tasks; i++)
            fn(ctx, i, tl_tid);
        return;
    }
    const uint32_t n = (uint32_t)n_tasks;
    P.fn = fn;
    P.ctx = ctx;
    atomic_store(&P.n_tasks, n);
    atomic_store(&P.max_tid, max_threads);
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    const uint32_t g = atomic_load_explicit(&P.gen, memory_order_relaxed) + 1;
    atomic_store(&P.claim, (uint64_t)g << 32);
    atomic_store(&P.gen, g);
    if (atomic_load(&P.sleepers) > 0) futex_wake(&P.gen, INT_MAX);

    const int saved_tid = tl_tid;
    tl_tid = 0; /* the caller is thread 0 of the pool */
    uint32_t n_seen = 0;
    const uint32_t mine = run_tasks(g, 0, &n_seen);
    tl_tid = saved_tid;
    uint32_t d = atomic_fetch_add(&P.done, mine) + mine;
    /* wait for tasks other threads still hold (a preempted worker gets our core if we sleep) */
    if (d != n && !spin_for(&P.done, n, 0)) {
        atomic_store(&P.caller_asleep, 1);
        while ((d = atomic_load(&P.done)) != n)
            futex_wait(&P.done, d);
        atomic_store(&P.caller_asleep, 0);
    }
    atomic_store(&P.claim, (uint64_t)g << 32 | CLOSED); /* before the next job's n_tasks */
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------ ranges */

typedef struct {
    int64_t n, grain;
    moec_range_fn fn;
    void *ctx;
} range_job;

static void range_task(void *p, int64_t task, int tid) {
    const range_job *r = p;
    const int64_t i0 = task * r->grain, i1 = i0 + r->grain < r->n ? i0 + r->grain : r->n;
    r->fn(r->ctx, i0, i1, tid);
}

void moec_parallel_range(int64_t n, int64_t grain, moec_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain) {
        fn(ctx, 0, n, tl_tid);
        return;
    }
    range_job r = {n, grain, fn, ctx};
    moec_parallel_for((n + grain - 1) / grain, range_task, &r);
}

static void zero_range(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    memset((char *)ctx + i0, 0, (size_t)(i1 - i0));
}

void moec_parallel_zero(void *p, size_t bytes) {
    if (bytes) moec_parallel_range((int64_t)bytes, (int64_t)1 << 20, zero_range, p);
}
