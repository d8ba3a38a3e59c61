/* experts.c — grouped SwiGLU FFN over expert row blocks. */
#include "moe/experts.h"

#include "nn/ops.h"

#include <stddef.h>

/* Output features per work item: a multiple of the matmul tile (4), big enough to amortise
 * scheduling, small enough that a decode step with 2 active experts still splits evenly. */
#define SLICE 64

static int32_t n_slices(int64_t n) { return (int32_t)((n + SLICE - 1) / SLICE); }

void moec_ffn_grouped(float *out, const float *x, const moec_ffn *const *ffn, const int32_t *off, int n_groups,
                      int d, int ff_max, float *h_gate, float *h_up, int32_t *items) {
    /* items[g] = first work item of group g; empty groups get none */
    items[0] = 0;
    for (int g = 0; g < n_groups; g++)
        items[g + 1] = items[g] + (off[g + 1] > off[g] ? 2 * n_slices(ffn[g]->gate.rows) : 0);
    const int n_up_items = items[n_groups];
    const int R = off[n_groups] - off[0];
    if (R == 0) return;
#pragma omp parallel
    {
        /* 1. gate and up projections: item i → group g, matrix (gate|up), slice s. g only moves
         * forward, so each thread must get its items in increasing order: `monotonic`, which
         * OpenMP 5 no longer implies for dynamic (LLVM's libomp steals items out of order, and
         * items then ran with the wrong group's rows: test_forward_equiv failed at 2 threads) */
        int g = 0;
#pragma omp for schedule(monotonic : dynamic, 1)
        for (int i = 0; i < n_up_items; i++) {
            while (items[g + 1] <= i) g++;
            const int local = i - items[g], ns = n_slices(ffn[g]->gate.rows);
            const int which = local / ns, s = local % ns;
            const moec_mat *W = which ? &ffn[g]->up : &ffn[g]->gate;
            float *h = which ? h_up : h_gate;
            const int64_t n0 = (int64_t)s * SLICE, n1 = n0 + SLICE < W->rows ? n0 + SLICE : W->rows;
            const int r0 = off[g] - off[0], rows = off[g + 1] - off[g];
            /* h is laid out [R, ff_max]: rows of stride ff_max, the group uses its first ff */
            moec_matmul_rows(h + (size_t)r0 * ff_max, ff_max, x + (size_t)off[g] * d, d, W, NULL, rows, n0, n1);
        }
        /* 2. SwiGLU on each group's valid width */
#pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            int gg = 0;
            while (off[gg + 1] - off[0] <= r) gg++;
            const size_t o = (size_t)r * ff_max;
            moec_swiglu(h_gate + o, h_gate + o, h_up + o, ffn[gg]->gate.rows);
        }
        /* 3. down projection: item → group, slice of d */
        const int nd = n_slices(d);
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_groups * nd; i++) {
            const int gg = i / nd, s = i % nd;
            if (off[gg + 1] == off[gg]) continue;
            const int64_t n0 = (int64_t)s * SLICE, n1 = n0 + SLICE < d ? n0 + SLICE : d;
            const int r0 = off[gg] - off[0], rows = off[gg + 1] - off[gg];
            const moec_mat *W = &ffn[gg]->down;
            moec_matmul_rows(out + (size_t)off[gg] * d, d, h_gate + (size_t)r0 * ff_max, ff_max, W, NULL, rows, n0, n1);
        }
    }
}
