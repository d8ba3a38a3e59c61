/* routers.h — the router objects of src/moe/routers/, for the registry (moe/router.c) only.
 * Adding a router: one file here defining one `const moec_router`, one line below, one entry
 * in the registry table (and its name in g_router_names), one row in tests/test_routers.c. */
#ifndef MOEC_MOE_ROUTERS_H
#define MOEC_MOE_ROUTERS_H

#include "moe/router.h"

extern const moec_router moec_router_topk; /* routers/topk.c: the token-choice family */

#endif
