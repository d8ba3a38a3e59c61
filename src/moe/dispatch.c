/* dispatch.c — counting sort of assignments by expert. */
#include "moe/dispatch.h"

#include "core/error.h"

#include <string.h>

void moec_dispatch_build(moec_dispatch *d, const int32_t *ids, int T, int k, int E) {
    const int n = T * k;
    memset(d->counts, 0, (size_t)E * sizeof *d->counts);
    for (int a = 0; a < n; a++) {
        MOEC_ASSERT(ids[a] >= 0 && ids[a] < E);
        d->counts[ids[a]]++;
    }
    d->offsets[0] = 0;
    for (int e = 0; e < E; e++) d->offsets[e + 1] = d->offsets[e] + d->counts[e];
    /* fill: reuse counts as cursors, then restore them */
    for (int e = 0; e < E; e++) d->counts[e] = 0;
    for (int a = 0; a < n; a++) {
        int e = ids[a];
        int r = d->offsets[e] + d->counts[e]++;
        d->row_src[r] = a;
        d->row_of[a] = r;
    }
}
