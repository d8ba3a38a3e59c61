/* test_sampler.c — sampling semantics: greedy = argmax; top_k = 1 = argmax; same seed → same
 * draws; temperature-1 frequencies match the softmax within 5 standard errors over 200k draws;
 * top-k and top-p never return a token outside their set. */
#include "moec.h"
#include "test_util.h"

#include <stdlib.h>

static moec_sampler *make(float temp, int top_k, float top_p, uint64_t seed, int V) {
    moec_sampler_params p = {temp, top_k, top_p, seed};
    moec_sampler *s = NULL;
    moec_error err = {0};
    CHECK(moec_sampler_new(&s, &p, V, &err) == MOEC_OK, "sampler_new: %s", err.msg);
    return s;
}

int main(void) {
    enum { V = 6 };
    const float logits[V] = {0.1f, 1.5f, -0.3f, 1.0f, 0.7f, -2.0f};
    moec_sampler *g = make(0.f, 0, 1.f, 1, V), *k1 = make(1.f, 1, 1.f, 2, V);
    for (int i = 0; i < 100; i++) {
        CHECK(moec_sampler_sample(g, logits) == 1, "greedy");
        CHECK(moec_sampler_sample(k1, logits) == 1, "top_k 1");
    }
    moec_sampler *a = make(1.f, 0, 1.f, 7, V), *b = make(1.f, 0, 1.f, 7, V);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= moec_sampler_sample(a, logits) == moec_sampler_sample(b, logits);
    CHECK(same, "same seed gave different draws");
    /* frequencies at temperature 1 */
    double p[V], s = 0;
    for (int i = 0; i < V; i++) s += p[i] = exp(logits[i]);
    const int N = 200000;
    int cnt[V] = {0};
    moec_sampler *f = make(1.f, 0, 1.f, 99, V);
    for (int i = 0; i < N; i++) cnt[moec_sampler_sample(f, logits)]++;
    for (int i = 0; i < V; i++) {
        double q = p[i] / s, se = sqrt(q * (1 - q) / N);
        CHECK(fabs((double)cnt[i] / N - q) < 5 * se + 1e-9, "token %d freq %g want %g", i, (double)cnt[i] / N, q);
    }
    /* top-k 2 keeps {1, 3}; top-p 0.5 keeps the smallest prefix reaching half the mass: {1, 3} */
    moec_sampler *tk = make(1.f, 2, 1.f, 5, V), *tp = make(1.f, 0, 0.5f, 5, V);
    int ok_k = 1, ok_p = 1, seen3 = 0;
    for (int i = 0; i < 5000; i++) {
        int x = moec_sampler_sample(tk, logits), y = moec_sampler_sample(tp, logits);
        ok_k &= x == 1 || x == 3;
        ok_p &= y == 1 || y == 3;
        seen3 |= y == 3;
    }
    CHECK(ok_k, "top-k returned a token outside the top 2");
    CHECK(ok_p && seen3, "top-p set wrong");
    /* top-k on a large vocabulary with many ties: only the k best by (probability desc, id asc)
     * can come out, and over many draws nearly all of them do */
    enum { BV = 1000, BK = 50 };
    float big[BV];
    for (int i = 0; i < BV; i++) big[i] = (float)((i * 37) % 101) * 0.05f; /* values repeat ~10x */
    int rank_ok = 1, seen_n = 0;
    static int seen[BV];
    moec_sampler *bk = make(1.f, BK, 1.f, 11, BV);
    for (int i = 0; i < 20000; i++) {
        int x = moec_sampler_sample(bk, big), better = 0;
        for (int j = 0; j < BV; j++) better += big[j] > big[x] || (big[j] == big[x] && j < x);
        rank_ok &= better < BK;
        if (!seen[x]++) seen_n++;
    }
    CHECK(rank_ok, "top-k returned a token outside the k best");
    CHECK(seen_n >= BK - 5, "top-k saw only %d of %d tokens", seen_n, BK);
    moec_sampler_free(bk);
    moec_sampler_free(g);
    moec_sampler_free(k1);
    moec_sampler_free(a);
    moec_sampler_free(b);
    moec_sampler_free(f);
    moec_sampler_free(tk);
    moec_sampler_free(tp);
    return test_finish("test_sampler");
}
