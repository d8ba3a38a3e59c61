/* experts.h — the `experts` stage: SwiGLU FFNs run on contiguous row groups, one group per
 * expert (or one group for a dense MLP / shared expert), all groups in one parallel region:
 * work items are (group, slice of output features), so many small experts keep every thread
 * busy without one fork/join per expert. */
#ifndef MOEC_MOE_EXPERTS_H
#define MOEC_MOE_EXPERTS_H

#include "nn/matmul.h"

typedef struct {
    moec_mat gate, up; /* [ff, d] */
    moec_mat down;     /* [d, ff] */
} moec_ffn;

/* For each group g with rows [off[g], off[g+1]) of x [R, d]:
 *   out[rows] = down_g( silu(gate_g x) * up_g x )
 * ffn[g] may be NULL only for an empty group. h_gate/h_up: scratch [R, ff_max]. items: scratch
 * of n_groups + 1 ints. */
void moec_ffn_grouped(float *out, const float *x, const moec_ffn *const *ffn, const int32_t *off, int n_groups,
                      int d, int ff_max, float *h_gate, float *h_up, int32_t *items);

#endif
