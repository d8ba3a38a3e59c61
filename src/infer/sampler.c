/* sampler.c — next-token sampling: greedy, or temperature → top-k → top-p → draw, with a
 * seeded xoshiro256** generator so that a seed reproduces a generation exactly. */
#include "core/error.h"
#include "core/rng.h"
#include "moec.h"

#include <math.h>
#include <stdlib.h>

struct moec_sampler {
    moec_sampler_params p;
    int32_t n_vocab;
    moec_rng rng;
    float *prob;   /* [V] */
    int32_t *idx;  /* [V] */
};

moec_sampler_params moec_sampler_default_params(void) {
    moec_sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 42};
    return p;
}

moec_status moec_sampler_new(moec_sampler **out, const moec_sampler_params *p, int32_t n_vocab, moec_error *err) {
    *out = NULL;
    if (n_vocab <= 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "vocabulary size %d", n_vocab);
    if (!(p->temperature == p->temperature) || !(p->top_p == p->top_p))
        return moec_err(err, MOEC_ERR_INVALID_ARG, "sampler temperature and top_p must be numbers");
    moec_sampler *s = calloc(1, sizeof *s);
    if (!s) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    if (!s->prob || !s->idx) {
        moec_sampler_free(s);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    moec_rng_seed(&s->rng, p->seed);
    *out = s;
    return MOEC_OK;
}

void moec_sampler_free(moec_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s);
}

/* Sort key: descending probability, ascending id on ties, so the order is total. */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *prob = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float pi = prob[i], pj = prob[j];
    if (pi != pj) return pi > pj ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* 1 if token a ranks before token b in cmp_desc's order. */
static int ranks_before(const float *prob, int32_t a, int32_t b) {
    return prob[a] > prob[b] || (prob[a] == prob[b] && a < b);
}

/* The k best tokens in cmp_desc's order into idx[0..k): a bounded heap whose root is the worst
 * kept token, O(V log k) instead of sorting the whole vocabulary on every token. */
static void select_top_k(int32_t *idx, const float *prob, int32_t V, int32_t k) {
    int32_t n = 0;
    for (int32_t t = 0; t < V; t++) {
        int32_t i;
        if (n < k) { /* push, sift up: parents rank after their children */
            i = n++;
            while (i > 0 && ranks_before(prob, idx[(i - 1) / 2], t)) {
                idx[i] = idx[(i - 1) / 2];
                i = (i - 1) / 2;
            }
            idx[i] = t;
        } else if (ranks_before(prob, t, idx[0])) { /* replace the worst, sift down */
            i = 0;
            for (;;) {
                int32_t c = 2 * i + 1;
                if (c >= k) break;
                if (c + 1 < k && ranks_before(prob, idx[c], idx[c + 1])) c++;
                if (!ranks_before(prob, t, idx[c])) break;
                idx[i] = idx[c];
                i = c;
            }
            idx[i] = t;
        }
    }
    qsort_r(idx, (size_t)k, sizeof *idx, cmp_desc, (void *)prob);
}

int32_t moec_sampler_sample(moec_sampler *s, const float *logits) {
    const int32_t V = s->n_vocab;
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->p.temperature <= 0.f) return best;
    /* softmax at temperature */
    const float inv_t = 1.f / s->p.temperature;
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++) {
        s->prob[i] = expf((logits[i] - logits[best]) * inv_t);
        sum += s->prob[i];
        s->idx[i] = i;
    }
    int32_t n = V;
    const int need_sort = (s->p.top_k > 0 && s->p.top_k < V) || s->p.top_p < 1.f;
    if (need_sort) {
        if (s->p.top_k > 0 && s->p.top_k < V) {
            n = s->p.top_k;
            select_top_k(s->idx, s->prob, V, n);
        } else {
            qsort_r(s->idx, (size_t)V, sizeof *s->idx, cmp_desc, s->prob);
        }
        if (s->p.top_p < 1.f) {
            double kept = 0.0, total = 0.0;
            for (int32_t i = 0; i < n; i++) total += s->prob[s->idx[i]];
            /* smallest prefix whose mass reaches top_p of what top-k kept */
            int32_t m = 0;
            while (m < n) {
                kept += s->prob[s->idx[m++]];
                if (kept >= s->p.top_p * total) break;
            }
            n = m;
        }
        sum = 0.0;
        for (int32_t i = 0; i < n; i++) sum += s->prob[s->idx[i]];
    }
    /* draw u in [0, sum) with 53 random bits */
    double u = (double)(moec_rng_u64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->prob[s->idx[i]];
        if (u < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
