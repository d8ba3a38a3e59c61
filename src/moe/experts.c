/* experts.c — grouped SwiGLU FFN over expert row blocks. */
#include "moe/experts.h"

#include "core/threads.h"
#include "nn/ops.h"

#include <stddef.h>

/* Output features per work item: a multiple of the matmul tile (4), big enough to amortise
 * scheduling, small enough that a decode step with 2 active experts still splits evenly. */
#define SLICE 64

static int32_t n_slices(int64_t n) { return (int32_t)((n + SLICE - 1) / SLICE); }

typedef struct {
    float *out, *h_gate, *h_up;
    const float *x;
    const moec_ffn *const *ffn;
    const int32_t *off, *items;
    int n_groups, d, ff_max;
} ffn_job;

/* The group that work item i belongs to: the last g with items[g] <= i (items is sorted). */
static int group_of(const int32_t *items, int n_groups, int64_t i) {
    int lo = 0, hi = n_groups - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (items[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* 1. gate and up projections: item i → group g, matrix (gate|up), slice s. Empty groups have
 * no items, so the search lands on the non-empty group that owns i. */
static void up_item(void *job, int64_t i, int tid) {
    const ffn_job *j = job;
    (void)tid;
    const int g = group_of(j->items, j->n_groups, i);
    const moec_ffn *f = j->ffn[g];
    const int local = (int)(i - j->items[g]), ns = n_slices(f->gate.rows);
    const int which = local / ns, s = local % ns;
    const moec_mat *W = which ? &f->up : &f->gate;
    float *h = which ? j->h_up : j->h_gate;
    const int64_t n0 = (int64_t)s * SLICE, n1 = n0 + SLICE < W->rows ? n0 + SLICE : W->rows;
    const int r0 = j->off[g] - j->off[0], rows = j->off[g + 1] - j->off[g];
    /* h is laid out [R, ff_max]: rows of stride ff_max, the group uses its first ff */
    moec_matmul_rows(h + (size_t)r0 * j->ff_max, j->ff_max, j->x + (size_t)j->off[g] * j->d, j->d, W, NULL, rows, n0,
                     n1);
}

/* 2. SwiGLU on each group's valid width */
static void swiglu_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const ffn_job *j = job;
    (void)tid;
    int g = 0;
    for (int64_t r = r0; r < r1; r++) {
        while (j->off[g + 1] - j->off[0] <= r) g++;
        const size_t o = (size_t)r * j->ff_max;
        moec_swiglu(j->h_gate + o, j->h_gate + o, j->h_up + o, j->ffn[g]->gate.rows);
    }
}

/* 3. down projection: item → group, slice of d */
static void down_item(void *job, int64_t i, int tid) {
    const ffn_job *j = job;
    (void)tid;
    const int nd = n_slices(j->d), g = (int)(i / nd), s = (int)(i % nd);
    const int32_t *off = j->off;
    if (off[g + 1] == off[g]) return;
    const int64_t n0 = (int64_t)s * SLICE, n1 = n0 + SLICE < j->d ? n0 + SLICE : j->d;
    const int r0 = off[g] - off[0], rows = off[g + 1] - off[g];
    moec_matmul_rows(j->out + (size_t)off[g] * j->d, j->d, j->h_gate + (size_t)r0 * j->ff_max, j->ff_max,
                     &j->ffn[g]->down, NULL, rows, n0, n1);
}

void moec_ffn_grouped(float *out, const float *x, const moec_ffn *const *ffn, const int32_t *off, int n_groups,
                      int d, int ff_max, float *h_gate, float *h_up, int32_t *items) {
    /* items[g] = first work item of group g; empty groups get none */
    items[0] = 0;
    for (int g = 0; g < n_groups; g++)
        items[g + 1] = items[g] + (off[g + 1] > off[g] ? 2 * n_slices(ffn[g]->gate.rows) : 0);
    const int R = off[n_groups] - off[0];
    if (R == 0) return;
    ffn_job j = {out, h_gate, h_up, x, ffn, off, items, n_groups, d, ff_max};
    moec_parallel_for(items[n_groups], up_item, &j);
    moec_parallel_range(R, moec_grain(R, ff_max, 1 << 15), swiglu_rows, &j);
    moec_parallel_for((int64_t)n_groups * n_slices(d), down_item, &j);
}
