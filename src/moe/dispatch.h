/* dispatch.h — the `dispatch` stage: group the T·k (token, slot) assignments by expert, so
 * that each expert runs once on a contiguous block of rows. Counting sort, stable in token
 * order, so results do not depend on threads. */
#ifndef MOEC_MOE_DISPATCH_H
#define MOEC_MOE_DISPATCH_H

#include <stdint.h>

typedef struct {
    int32_t *counts;  /* [E]     rows per expert */
    int32_t *offsets; /* [E + 1] first row of each expert */
    int32_t *row_src; /* [T*k]   row r (sorted by expert) holds assignment a = t*k + j */
    int32_t *row_of;  /* [T*k]   inverse: assignment a sits at row row_of[a] */
} moec_dispatch;

/* ids [T, k] must hold experts in [0, E) (checked: MOEC_ASSERT). Arrays are caller-owned. */
void moec_dispatch_build(moec_dispatch *d, const int32_t *ids, int T, int k, int E);

#endif
