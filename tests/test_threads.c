/* test_threads.c — the thread pool (core/threads.h):
 *  - every task runs exactly once, with a tid in [0, threads), at 1..4 threads (more than the
 *    cores), spinning (MOEC_SPIN default) and sleeping at once (MOEC_SPIN=0);
 *  - many more tasks than threads, and thousands of back-to-back small calls (lost wake-ups
 *    would hang here; ctest's timeout fails it);
 *  - nested calls run serially on the calling thread, with its tid; a call inside a lone
 *    (serial) task still runs all its tasks;
 *  - moec_parallel_range covers [0, n) once with the stated grain;
 *  - two user threads calling at once both get complete results;
 *  - a task that sleeps (a descheduled worker) does not lose the other tasks;
 *  - moec_parallel_for_upto keeps to threads tid < max;
 *  - moec_grain;
 *  - per-thread scratch (core/mem.h): aligned, kept, per slot and per thread, and freed when a
 *    worker exits (the pool restarts its workers when the thread count changes). */
#include "core/mem.h"
#include "core/threads.h"
#include "test_util.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TASKS 20000

typedef struct {
    _Atomic int count[MAX_TASKS];
    _Atomic int bad_tid;
    int n_threads;
} once_job;

static void count_task(void *p, int64_t i, int tid) {
    once_job *j = p;
    atomic_fetch_add(&j->count[i], 1);
    if (tid < 0 || tid >= j->n_threads) atomic_store(&j->bad_tid, 1);
}

static int all_once(once_job *j, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (atomic_load(&j->count[i]) != 1) return 0;
    return 1;
}

static once_job g_job;

static void reset(once_job *j, int nt) {
    for (int i = 0; i < MAX_TASKS; i++)
        atomic_store(&j->count[i], 0);
    atomic_store(&j->bad_tid, 0);
    j->n_threads = nt;
}

static void test_exactly_once(int nt) {
    const int64_t sizes[] = {1, 2, 3, 7, 64, 1000, MAX_TASKS};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        reset(&g_job, nt);
        moec_parallel_for(sizes[s], count_task, &g_job);
        CHECK(all_once(&g_job, sizes[s]), "%d threads, %lld tasks: not every task ran exactly once", nt,
              (long long)sizes[s]);
        CHECK(!atomic_load(&g_job.bad_tid), "%d threads: a tid outside [0, %d)", nt, nt);
    }
}

/* Back-to-back small calls: each call's tasks, then the next call's, never mixed or lost. */
static void test_repeated(int nt) {
    long bad = 0;
    for (int rep = 0; rep < 3000; rep++) {
        const int n = 1 + rep % 5;
        for (int i = 0; i < n; i++)
            atomic_store(&g_job.count[i], 0);
        g_job.n_threads = nt;
        moec_parallel_for(n, count_task, &g_job);
        bad += !all_once(&g_job, n);
    }
    CHECK(bad == 0, "%d threads: %ld of 3000 repeated calls lost or doubled a task", nt, bad);
}

/* Nested: each outer task runs an inner loop; the inner tasks see the outer task's tid. */
typedef struct {
    _Atomic int inner[64 * 16];
    _Atomic int tid_mismatch;
} nest_job;

typedef struct {
    nest_job *j;
    int64_t outer;
    int tid;
} inner_ctx;

static void inner_task(void *p, int64_t i, int tid) {
    inner_ctx *c = p;
    atomic_fetch_add(&c->j->inner[c->outer * 16 + i], 1);
    if (tid != c->tid) atomic_store(&c->j->tid_mismatch, 1);
}

static void outer_task(void *p, int64_t i, int tid) {
    inner_ctx c = {p, i, tid};
    moec_parallel_for(16, inner_task, &c);
}

static void test_nested(int nt) {
    static nest_job j;
    for (int i = 0; i < 64 * 16; i++)
        atomic_store(&j.inner[i], 0);
    atomic_store(&j.tid_mismatch, 0);
    moec_parallel_for(64, outer_task, &j);
    int ok = 1;
    for (int i = 0; i < 64 * 16; i++)
        ok &= atomic_load(&j.inner[i]) == 1;
    CHECK(ok, "%d threads: nested calls lost or doubled a task", nt);
    CHECK(!atomic_load(&j.tid_mismatch), "%d threads: a nested task ran with another thread's tid", nt);
}

static void lone_task(void *p, int64_t i, int tid) {
    (void)i, (void)tid;
    moec_parallel_for(1000, count_task, p);
}

static void test_lone(int nt) {
    reset(&g_job, nt);
    moec_parallel_for(1, lone_task, &g_job);
    CHECK(all_once(&g_job, 1000), "%d threads: a call inside a lone task lost or doubled a task", nt);
}

static void test_upto(int nt) {
    for (int max = 1; max <= nt; max++) {
        reset(&g_job, max); /* a tid >= max is "bad" */
        moec_parallel_for_upto(5000, max, count_task, &g_job);
        CHECK(all_once(&g_job, 5000), "%d threads, upto %d: not every task ran exactly once", nt, max);
        CHECK(!atomic_load(&g_job.bad_tid), "%d threads, upto %d: a task ran on a thread tid >= %d", nt, max, max);
    }
}

/* Ranges: [0, n) covered once, every range grain long but the last. */
typedef struct {
    _Atomic int count[MAX_TASKS];
    _Atomic int bad_len;
    int64_t n, grain;
} range_job;

static void range_fn(void *p, int64_t i0, int64_t i1, int tid) {
    range_job *r = p;
    (void)tid;
    if (i0 % r->grain != 0 || (i1 - i0 != r->grain && i1 != r->n)) atomic_store(&r->bad_len, 1);
    for (int64_t i = i0; i < i1; i++)
        atomic_fetch_add(&r->count[i], 1);
}

static void test_range(int nt) {
    static range_job r;
    const int64_t cases[][2] = {{1, 1}, {10, 3}, {10, 10}, {10, 100}, {MAX_TASKS, 7}, {MAX_TASKS - 1, 64}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        r.n = cases[c][0];
        r.grain = cases[c][1];
        for (int64_t i = 0; i < r.n; i++)
            atomic_store(&r.count[i], 0);
        atomic_store(&r.bad_len, 0);
        moec_parallel_range(r.n, r.grain, range_fn, &r);
        int ok = 1;
        for (int64_t i = 0; i < r.n; i++)
            ok &= atomic_load(&r.count[i]) == 1;
        CHECK(ok, "%d threads: range n=%lld grain=%lld not covered exactly once", nt, (long long)r.n,
              (long long)r.grain);
        CHECK(!atomic_load(&r.bad_len), "%d threads: range n=%lld grain=%lld: a range of the wrong length", nt,
              (long long)r.n, (long long)r.grain);
    }
}

/* moec_parallel_zero clears exactly its bytes: lengths around its 1 MiB ranges, an odd start. */
static void test_zero(int nt) {
    static const size_t lens[] = {0, 1, 4095, (size_t)1 << 20, ((size_t)1 << 20) + 1, 5 * ((size_t)1 << 20) + 333};
    for (size_t c = 0; c < sizeof lens / sizeof *lens; c++) {
        const size_t n = lens[c];
        unsigned char *b = malloc(n + 16);
        memset(b, 0xab, n + 16);
        moec_parallel_zero(b + 7, n);
        size_t bad = 0;
        for (size_t i = 0; i < n + 16; i++) bad += b[i] != (i >= 7 && i < 7 + n ? 0 : 0xab);
        CHECK(!bad, "%d threads: parallel zero of %zu bytes: %zu bytes wrong", nt, n, bad);
        free(b);
    }
}

/* A slow task (as if its thread were descheduled) while the others run. */
static void slow_task(void *p, int64_t i, int tid) {
    if (i == 0) {
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    count_task(p, i, tid);
}

static void test_slow(int nt) {
    reset(&g_job, nt);
    moec_parallel_for(200, slow_task, &g_job);
    CHECK(all_once(&g_job, 200), "%d threads: with one slow task, not every task ran exactly once", nt);
}

/* Two user threads calling the pool at the same time (they take turns). */
static once_job g_a, g_b;

static void *user_thread(void *p) {
    once_job *j = p;
    long bad = 0;
    for (int rep = 0; rep < 200; rep++) {
        for (int i = 0; i < 100; i++)
            atomic_store(&j->count[i], 0);
        moec_parallel_for(100, count_task, j);
        bad += !all_once(j, 100);
    }
    return (void *)(intptr_t)bad;
}

static void test_two_callers(int nt) {
    reset(&g_a, nt);
    reset(&g_b, nt);
    pthread_t a, b;
    void *ra = NULL, *rb = NULL;
    const int ok_a = pthread_create(&a, NULL, user_thread, &g_a) == 0;
    const int ok_b = pthread_create(&b, NULL, user_thread, &g_b) == 0;
    CHECK(ok_a && ok_b, "pthread_create failed");
    if (ok_a) pthread_join(a, &ra);
    if (ok_b) pthread_join(b, &rb);
    CHECK(ra == NULL && rb == NULL, "%d threads: two callers at once: %ld + %ld bad calls", nt, (long)(intptr_t)ra,
          (long)(intptr_t)rb);
    CHECK(!atomic_load(&g_a.bad_tid) && !atomic_load(&g_b.bad_tid), "%d threads: two callers: a tid out of range", nt);
}

#define BIG_SCRATCH ((size_t)48 << 20) /* above the mmap threshold: mallinfo2's hblkhd counts it */

typedef struct {
    _Atomic int on_worker; /* tasks that took a big scratch on a worker thread */
} scratch_job;

static void scratch_task(void *p, int64_t i, int tid) {
    scratch_job *j = p;
    (void)i;
    unsigned char *b = tid ? moec_scratch(MOEC_SCRATCH_MM_PANEL, BIG_SCRATCH) : NULL;
    if (b) {
        b[0] = b[BIG_SCRATCH - 1] = 1;
        atomic_fetch_add(&j->on_worker, 1);
    }
    struct timespec ts = {0, 2000000}; /* 2 ms: every thread gets a task */
    nanosleep(&ts, NULL);
}

static void test_scratch(void) {
    unsigned char *a = moec_scratch(MOEC_SCRATCH_MM_XQ, 100), *b = moec_scratch(MOEC_SCRATCH_MM_ACT, 100);
    CHECK(a && b && a != b, "two slots: two buffers");
    CHECK(((uintptr_t)a & 63) == 0 && ((uintptr_t)b & 63) == 0, "scratch is 64-byte aligned");
    CHECK(moec_scratch(MOEC_SCRATCH_MM_XQ, 50) == a, "a smaller request reuses the buffer");
    CHECK(moec_scratch(MOEC_SCRATCH_MM_XQ, 0) == a, "a zero-byte request returns the buffer");
    CHECK(moec_scratch(MOEC_SCRATCH_MM_XQ, SIZE_MAX) == NULL, "an impossible request is NULL");

    /* Workers take big scratch, then the pool restarts: their buffers must go with them. */
    moec_threads_set(3);
    const size_t before = mallinfo2().hblkhd;
    scratch_job j = {0};
    for (int tries = 0; tries < 20 && atomic_load(&j.on_worker) == 0; tries++)
        moec_parallel_for(12, scratch_task, &j);
    CHECK(atomic_load(&j.on_worker) > 0, "no worker ran a scratch task in 20 calls");
    moec_threads_set(1); /* joins the workers */
    const size_t after = mallinfo2().hblkhd;
    CHECK(after <= before, "exited workers kept %zu bytes of scratch", after - before);
}

int main(void) {
    CHECK(moec_threads_count() >= 1, "default pool has %d threads", moec_threads_count());
    const char *spins[] = {NULL, "0"};
    for (int s = 0; s < 2; s++) {
        if (spins[s])
            setenv("MOEC_SPIN", spins[s], 1);
        else
            unsetenv("MOEC_SPIN");
        for (int nt = 1; nt <= 4; nt++) {
            moec_threads_set(nt);
            CHECK(moec_threads_count() == nt, "asked for %d threads, have %d", nt, moec_threads_count());
            test_exactly_once(nt);
            test_repeated(nt);
            test_nested(nt);
            test_lone(nt);
            test_upto(nt);
            test_range(nt);
            test_zero(nt);
            test_slow(nt);
            test_two_callers(nt);
        }
        printf("MOEC_SPIN=%s: 1..4 threads done\n", spins[s] ? spins[s] : "(default)");
    }
    test_scratch();
    CHECK(moec_grain(10, 1000, 32768) == 10, "small loop: one task");
    CHECK(moec_grain(1000, 1000, 32768) == 32, "grain = min_work / work_per_item");
    CHECK(moec_grain(10, 100000, 32768) == 1, "big items: one per task");
    CHECK(moec_grain(0, 1, 32768) == 1, "empty loop: grain 1");
    return test_finish("test_threads");
}
