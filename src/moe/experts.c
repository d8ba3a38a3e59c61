/* experts.c — grouped SwiGLU FFN over expert row blocks. */
#include "moe/experts.h"

#include "core/mem.h"
#include "core/threads.h"
#include "nn/ops.h"

#include <stddef.h>
#include <stdlib.h>

/* Output features per work item: a multiple of the matmul tile (4), big enough to amortise
 * scheduling and give each thread long sequential weight streams (64 rows of Q4_0 were 37 KB
 * before the next jump; 256: bench-M Q4_0 decode at 2 threads +6 % in clean A/B pairs), small enough that
 * a decode step with 2 active experts still splits evenly (bench-M: 44 items for 2 threads). */
#define SLICE 256

static int32_t n_slices(int64_t n) { return (int32_t)((n + SLICE - 1) / SLICE); }

typedef struct {
    float *out, *h_gate, *h_up;
    const float *x;
    const moec_ffn *const *ffn;
    const int32_t *off, *items;
    int n_groups, d, ff_max;
    /* quantized weights: the activations of x and of h_gate after SwiGLU as 8-bit blocks, made
     * once per call instead of once per 64-row slice (NULL: float weights, or no memory) */
    char *xq_up, *xq_down; /* moec_xq8 rows, addressed in bytes (the block type is the kernels') */
    const int64_t *qoff;   /* [n_groups] byte offset of group g's rows in xq_down */
} ffn_job;

static int is_quant(const moec_mat *W) { return moec_dtype_info(W->dtype)->quantized; }

/* The caller thread's buffers for the prepared activations (grown, kept: no allocation per step). */
static void *buffer(int i, size_t bytes) { return moec_scratch(MOEC_SCRATCH_EXPERTS_UP + i, bytes); }

static void prep_up_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const ffn_job *j = job;
    (void)tid;
    moec_matmul_prepare_act((moec_xq8 *)(void *)(j->xq_up + (size_t)r0 * moec_matmul_act_row_bytes(j->d)), j->x + ((size_t)j->off[0] + (size_t)r0) * (size_t)j->d, j->d,
                            j->d, (int)(r1 - r0));
}

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
    const moec_xq8 *xq =
        j->xq_up && is_quant(W) ? (const moec_xq8 *)(void *)(j->xq_up + (size_t)r0 * moec_matmul_act_row_bytes(j->d)) : NULL;
    moec_matmul_rows_prepared(h + (size_t)r0 * j->ff_max, j->ff_max, j->x + (size_t)j->off[g] * j->d, j->d, xq, W,
                              NULL, rows, n0, n1);
}

/* 2. SwiGLU on each group's valid width */
static void swiglu_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const ffn_job *j = job;
    (void)tid;
    int g = 0;
    for (int64_t r = r0; r < r1; r++) {
        while (j->off[g + 1] - j->off[0] <= r) g++;
        const size_t o = (size_t)r * j->ff_max;
        const int ff = (int)j->ffn[g]->gate.rows;
        moec_swiglu(j->h_gate + o, j->h_gate + o, j->h_up + o, ff);
        if (j->xq_down) /* the down projection's input, prepared while the row is in cache */
            moec_matmul_prepare_act((moec_xq8 *)(void *)(j->xq_down + j->qoff[g] +
                                                         (size_t)(r - (j->off[g] - j->off[0])) * moec_matmul_act_row_bytes(ff)),
                                    j->h_gate + o, ff, ff, 1);
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
    const moec_xq8 *xq = j->xq_down ? (const moec_xq8 *)(void *)(j->xq_down + j->qoff[g]) : NULL;
    moec_matmul_rows_prepared(j->out + (size_t)off[g] * j->d, j->d, j->h_gate + (size_t)r0 * j->ff_max, j->ff_max, xq,
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
    ffn_job j = {out, h_gate, h_up, x, ffn, off, items, n_groups, d, ff_max, NULL, NULL, NULL};
    /* every matrix of a group is quantized or none is (moec quantize, GGUF); the expert stage
     * then quantizes each activation row once (a 64-row slice per task would redo it per slice) */
    int quant_up = 0, quant_down = 0;
    for (int g = 0; g < n_groups; g++) {
        quant_up |= is_quant(&ffn[g]->gate) || is_quant(&ffn[g]->up);
        quant_down |= is_quant(&ffn[g]->down);
    }
    if (quant_up && d % MOEC_QBLOCK == 0) j.xq_up = buffer(0, (size_t)R * moec_matmul_act_row_bytes(d));
    if (quant_down) {
        int64_t *qoff = buffer(1, (size_t)n_groups * sizeof *qoff);
        int64_t blocks = 0, ok = qoff != NULL; /* bytes */
        for (int g = 0; ok && g < n_groups; g++) {
            qoff[g] = blocks;
            ok = ffn[g]->gate.rows % MOEC_QBLOCK == 0;
            blocks += (int64_t)(off[g + 1] - off[g]) * (int64_t)moec_matmul_act_row_bytes(ffn[g]->gate.rows);
        }
        if (ok && (j.xq_down = buffer(2, (size_t)blocks))) j.qoff = qoff;
    }
    if (j.xq_up) moec_parallel_range(R, moec_grain(R, d, 1 << 15), prep_up_rows, &j);
    moec_parallel_for(items[n_groups], up_item, &j);
    moec_parallel_range(R, moec_grain(R, ff_max, 1 << 15), swiglu_rows, &j);
    moec_parallel_for((int64_t)n_groups * n_slices(d), down_item, &j);
}
