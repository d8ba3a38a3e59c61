/* mem.c — see mem.h. Linux: sysinfo(2) and getrlimit(2). */
#include "core/mem.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>

size_t moec_mem_available(void) {
    size_t lim = SIZE_MAX;
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        size_t total = 0;
        if (moec_size_muladd(&total, (size_t)si.totalram + (size_t)si.totalswap, si.mem_unit ? si.mem_unit : 1) &&
            total < lim)
            lim = total;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (size_t)rl.rlim_cur < lim)
        lim = (size_t)rl.rlim_cur;
    const char *env = getenv("MOEC_MEM_LIMIT");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (!*end && v < lim) lim = (size_t)v;
    }
    return lim;
}

moec_status moec_mem_check(size_t bytes, const char *what, moec_error *err) {
    const size_t avail = moec_mem_available();
    if (bytes <= avail) return MOEC_OK;
    return moec_err(err, MOEC_ERR_OOM,
                    "%s: %.0f MB needed, this machine allows %.0f MB (RAM + swap, ulimit -v): refused before allocating",
                    what, (double)bytes / 1e6, (double)avail / 1e6);
}

void *moec_lib_malloc(size_t n) { return malloc(n); }
void moec_lib_free(void *p) { free(p); }

/* cJSON allocates through global hooks, libc's malloc by default. Naming malloc and free here,
 * in moec's code, makes no difference in a normal build (cJSON sees its own defaults and keeps
 * using realloc), but where moec is linked with --wrap=malloc the hooks become the wrappers,
 * and cJSON's allocations are counted and failed with moec's own. Runs before main, so before
 * any thread and any cJSON call (error.c pulls this file into every program). */
__attribute__((constructor)) static void moec_mem_hook_cjson(void) {
    cJSON_Hooks hooks = {.malloc_fn = malloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
}

/* ------------------------------------------------------------------ per-thread scratch */

typedef struct {
    void *buf[MOEC_SCRATCH_N];
    size_t cap[MOEC_SCRATCH_N];
} scratch_set;

static _Thread_local scratch_set *tl_scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *arg) {
    scratch_set *s = arg;
    for (int i = 0; i < MOEC_SCRATCH_N; i++) free(s->buf[i]);
    free(s);
}

static void scratch_key_create(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

void *moec_scratch(enum moec_scratch_slot slot, size_t bytes) {
    scratch_set *s = tl_scratch;
    if (!s) { /* first use on this thread: the key's destructor frees the set when it exits */
        pthread_once(&scratch_once, scratch_key_create);
        if (!scratch_key_ok || !(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
        tl_scratch = s;
    }
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - 63) return NULL;
    if (bytes > s->cap[slot]) {
        free(s->buf[slot]);
        s->buf[slot] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        s->cap[slot] = s->buf[slot] ? bytes : 0;
    }
    return s->buf[slot];
}
