/* router.c — softmax top-k routing. */
#include "moe/router.h"

#include "nn/ops.h"

void moec_route_softmax_topk(float *logits, int T, int E, int k, int renorm, int32_t *ids, float *weights) {
    for (int t = 0; t < T; t++) {
        float *p = logits + (size_t)t * E;
        moec_softmax(p, E);
        int32_t *id = ids + (size_t)t * k;
        float *w = weights + (size_t)t * k;
        float sum = 0.f;
        /* k passes of argmax: k is small (≤ 8–16) and E moderate; no allocation needed */
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) taken |= id[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            id[j] = best;
            w[j] = p[best];
            sum += p[best];
        }
        if (renorm)
            for (int j = 0; j < k; j++) w[j] /= sum;
    }
}
