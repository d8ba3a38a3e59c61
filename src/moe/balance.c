/* balance.c — the balancing losses (balance.h): the load-balancing loss in three scopes and
 * the router z-loss, each a forward/backward pair. They see a router only through P [T, E] and
 * the routing's `chosen` (the choice before capacity, so a dropped slot still counts; slots with
 * chosen < 0 count nothing). Not here: metrics and where the coefficients come from (moe/moe.c).
 *
 * No allocation: per-expert counts and sums live in fixed stack blocks of CHUNK experts, so a
 * model with more experts makes a few passes instead. All sums run in a fixed order in double. */
#include "moe/balance.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

#define CHUNK 256 /* experts per pass of the per-expert accumulators */

/* ------------------------------------------------------------------ counts */

/* counts of experts [e0, e0 + n) over tokens [t0, t1) */
static void counts_chunk(const moec_routing *r, int e0, int n, int t0, int t1, int64_t *c) {
    memset(c, 0, (size_t)n * sizeof *c);
    for (int s = 0; s < r->n_slots; s++) {
        const int e = r->chosen[s] - e0, t = r->token[s];
        if (r->chosen[s] >= 0 && e < n && e >= 0 && t >= t0 && t < t1) c[e]++;
    }
}

void moec_routing_counts(const moec_routing *r, int E, int t0, int t1, int64_t *counts) {
    memset(counts, 0, (size_t)E * sizeof *counts);
    for (int s = 0; s < r->n_slots; s++) {
        const int e = r->chosen[s], t = r->token[s];
        if (e >= 0 && e < E && t >= t0 && t < t1) counts[e]++;
    }
}

double moec_max_vio(const int64_t *counts, int E) {
    int64_t total = 0, mx = 0;
    for (int e = 0; e < E; e++) {
        total += counts[e];
        mx = counts[e] > mx ? counts[e] : mx;
    }
    if (total == 0) return 0.0;
    const double mean = (double)total / E;
    return ((double)mx - mean) / mean;
}

/* ------------------------------------------------------------------ load-balancing loss */

/* α·E·Σ_i f_i·P_i over tokens [t0, t1): f_i = cnt_i / (n_f·k) (n_f: the tokens the counts were
 * taken over), P_i = (1/(t1 − t0)) Σ_t P[t, i]. global != NULL: cnt = global, else counted here. */
static double lbl_range(const moec_lbl_cfg *c, const float *probs, const moec_routing *r, int E, int t0, int t1,
                        const int64_t *global, double n_f) {
    int64_t cnt[CHUNK];
    double P[CHUNK], acc = 0.0;
    for (int e0 = 0; e0 < E; e0 += CHUNK) {
        const int n = E - e0 < CHUNK ? E - e0 : CHUNK;
        if (global) memcpy(cnt, global + e0, (size_t)n * sizeof *cnt);
        else counts_chunk(r, e0, n, t0, t1, cnt);
        for (int i = 0; i < n; i++) P[i] = 0.0;
        for (int t = t0; t < t1; t++) {
            const float *pr = probs + (size_t)t * E + e0;
            for (int i = 0; i < n; i++) P[i] += pr[i];
        }
        for (int i = 0; i < n; i++) acc += (double)cnt[i] / (n_f * c->k) * (P[i] / (t1 - t0));
    }
    return (double)c->coef * E * acc;
}

/* dprobs[t, i] += g · cnt_i for t in [t0, t1), g = dscale·α·E / (n_f·k·(t1 − t0)·n_div) */
static void lbl_range_backward(const moec_lbl_cfg *c, const moec_routing *r, int E, int t0, int t1,
                               const int64_t *global, double n_f, double n_div, float dscale, float *dprobs) {
    int64_t cnt[CHUNK];
    const double g = (double)dscale * c->coef * E / (n_f * c->k * (double)(t1 - t0) * n_div);
    for (int e0 = 0; e0 < E; e0 += CHUNK) {
        const int n = E - e0 < CHUNK ? E - e0 : CHUNK;
        if (global) memcpy(cnt, global + e0, (size_t)n * sizeof *cnt);
        else counts_chunk(r, e0, n, t0, t1, cnt);
        float gi[CHUNK];
        for (int i = 0; i < n; i++) gi[i] = (float)(g * (double)cnt[i]);
        for (int t = t0; t < t1; t++) {
            float *d = dprobs + (size_t)t * E + e0;
            for (int i = 0; i < n; i++) d[i] += gi[i];
        }
    }
}

double moec_lbl_forward(const moec_lbl_cfg *c, const float *probs, const moec_routing *r, int T, int E) {
    if (c->coef == 0.f || T <= 0) return 0.0;
    MOEC_ASSERT(c->k >= 1);
    switch (c->scope) {
    case MOEC_LBL_MICRO_BATCH: return lbl_range(c, probs, r, E, 0, T, NULL, T);
    case MOEC_LBL_SEQUENCE: {
        MOEC_ASSERT(c->seq_len >= 1 && T % c->seq_len == 0);
        const int n_seq = T / c->seq_len;
        double acc = 0.0;
        for (int q = 0; q < n_seq; q++)
            acc += lbl_range(c, probs, r, E, q * c->seq_len, (q + 1) * c->seq_len, NULL, c->seq_len);
        return acc / n_seq;
    }
    case MOEC_LBL_GLOBAL_BATCH:
        MOEC_ASSERT(c->global_counts && c->global_tokens >= 1);
        return lbl_range(c, probs, r, E, 0, T, c->global_counts, (double)c->global_tokens);
    }
    MOEC_ASSERT(!"unknown LBL scope");
    return 0.0;
}

void moec_lbl_backward(const moec_lbl_cfg *c, const moec_routing *r, int T, int E, float dscale, float *dprobs) {
    if (c->coef == 0.f || T <= 0) return;
    MOEC_ASSERT(c->k >= 1);
    switch (c->scope) {
    case MOEC_LBL_MICRO_BATCH: lbl_range_backward(c, r, E, 0, T, NULL, T, 1.0, dscale, dprobs); return;
    case MOEC_LBL_SEQUENCE: {
        MOEC_ASSERT(c->seq_len >= 1 && T % c->seq_len == 0);
        const int n_seq = T / c->seq_len;
        for (int q = 0; q < n_seq; q++)
            lbl_range_backward(c, r, E, q * c->seq_len, (q + 1) * c->seq_len, NULL, c->seq_len, n_seq, dscale,
                               dprobs);
        return;
    }
    case MOEC_LBL_GLOBAL_BATCH:
        MOEC_ASSERT(c->global_counts && c->global_tokens >= 1);
        lbl_range_backward(c, r, E, 0, T, c->global_counts, (double)c->global_tokens, 1.0, dscale, dprobs);
        return;
    }
    MOEC_ASSERT(!"unknown LBL scope");
}

/* ------------------------------------------------------------------ z-loss */

double moec_zloss_forward(float coef, const float *logits, int T, int E, float *lse) {
    double acc = 0.0;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        float m = z[0];
        for (int e = 1; e < E; e++) m = z[e] > m ? z[e] : m;
        double s = 0.0;
        for (int e = 0; e < E; e++) s += exp((double)z[e] - m);
        const double l = m + log(s);
        lse[t] = (float)l;
        acc += l * l;
    }
    return T > 0 ? (double)coef * acc / T : 0.0;
}

void moec_zloss_backward(float coef, const float *logits, const float *lse, int T, int E, float dscale,
                         float *dlogits) {
    if (coef == 0.f || T <= 0) return;
    const double g = (double)dscale * coef * 2.0 / T;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        float *d = dlogits + (size_t)t * E;
        const float gt = (float)(g * lse[t]);
        for (int e = 0; e < E; e++) d[e] += gt * expf(z[e] - lse[t]);
    }
}
