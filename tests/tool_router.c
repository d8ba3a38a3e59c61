/* tool_router.c — test driver for tests/py_test_router_grad.py: reads one case (a router
 * configuration, logits, the selection bias, an expert mask, the upstream gradients), runs the
 * registry's router forward, the balancing losses and all the backwards, and writes every result
 * for Python to compare with PyTorch autograd.
 *
 *   tool_router IN.bin OUT.bin
 *
 * After the forward it applies two edits the MoE layer can make: kill_token >= 0 sets every
 * slot of that token to MOEC_NO_EXPERT (expert and chosen: a token with zero experts), and
 * drop_slot >= 0 sets that slot's expert to MOEC_NO_EXPERT with chosen kept (a capacity drop).
 * Then
 *   lbl = moec_lbl_forward(probs, r)          (coefficient aux_coef, scope, seq_len, k = cfg k)
 *   zl  = moec_zloss_forward(z_coef, logits)
 *   dprobs_lbl = moec_lbl_backward(dscale 1)  (∂lbl/∂probs)
 *   dlogits = router backward(dweight, dprobs + dprobs_lbl) + zloss backward(dscale 1)
 * With the global scope, global_counts in the file are the other micro-batches' counts and
 * global_tokens the whole step's tokens; the tool adds this call's own counts (from chosen).
 * i.e. dlogits = ∂/∂z of Σ_s dweight_s·w_s (slots with an expert) + Σ dprobs⊙P + lbl + zl.
 * Exits 1 on a malformed file or a config that check() rejects (message on stderr).
 *
 * IN (little endian), version 1: "MOERTR\0\0" u32 version, i32 T E k k_eff score topk_softmax
 * norm_topk_prob n_group topk_group group_score use_bias has_mask kill_token drop_slot scope
 * seq_len, f32 routed_scaling aux_coef z_coef, i64 global_tokens, f32 logits[T·E], f32 bias[E],
 * u8 mask[E] (if has_mask), i64 global_counts[E], f32 dweight[T·k_eff], f32 dprobs[T·E].
 * OUT, version 1: "MOERTO\0\0" u32 version, i32 n_slots, i32 token[n], i32 expert[n],
 * i32 chosen[n], f32 weight[n] (as the forward wrote them, before the edits), f32 probs[T·E],
 * f64 lbl, f64 zl, f32 dprobs_lbl[T·E], f32 dlogits[T·E]. */
#include "moe/balance.h"
#include "moe/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rd(void *p, size_t n, FILE *f) { return fread(p, 1, n, f) == n; }
static int wr(const void *p, size_t n, FILE *f) { return fwrite(p, 1, n, f) == n; }

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "tool_router: out of memory\n");
        exit(1);
    }
    return p;
}

#define FAIL(...)                                  \
    do {                                           \
        fprintf(stderr, "tool_router: " __VA_ARGS__); \
        fprintf(stderr, "\n");                     \
        return 1;                                  \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 3) FAIL("usage: tool_router IN.bin OUT.bin");
    FILE *f = fopen(argv[1], "rb");
    if (!f) FAIL("cannot open %s", argv[1]);
    char magic[8];
    uint32_t version;
    int32_t h[16];
    float fl[3];
    int64_t global_tokens;
    if (!rd(magic, 8, f) || memcmp(magic, "MOERTR\0\0", 8) || !rd(&version, 4, f) || version != 1)
        FAIL("%s: not a version-1 router case", argv[1]);
    if (!rd(h, sizeof h, f) || !rd(fl, sizeof fl, f) || !rd(&global_tokens, 8, f)) FAIL("truncated header");
    const int T = h[0], E = h[1], k = h[2], k_eff = h[3];
    if (T < 1 || E < 1 || k < 1 || k_eff < 1 || k_eff > k || T > 1 << 16 || E > 1 << 12)
        FAIL("bad sizes T %d E %d k %d k_eff %d", T, E, k, k_eff);
    moec_router_cfg c = moec_router_cfg_default(E, k, h[6]);
    c.score = (moec_score_func)h[4];
    c.topk_softmax = h[5];
    c.n_group = h[7];
    c.topk_group = h[8];
    c.group_score = (moec_group_score)h[9];
    c.use_bias = h[10];
    c.aux_scope = (moec_lbl_scope)h[14];
    c.routed_scaling = fl[0];
    c.aux_coef = fl[1];
    c.z_coef = fl[2];
    const int has_mask = h[11], kill_token = h[12], drop_slot = h[13], seq_len = h[15];
    moec_error err = {0};
    if (c.router->check(&c, &err) != MOEC_OK) FAIL("config rejected: %s", err.msg);

    const size_t TE = (size_t)T * E, S = (size_t)T * k_eff;
    float *logits = xmalloc(TE * 4), *bias = xmalloc((size_t)E * 4), *dweight = xmalloc(S * 4),
          *dprobs = xmalloc(TE * 4);
    uint8_t *mask = has_mask ? xmalloc((size_t)E) : NULL;
    int64_t *gcounts = xmalloc((size_t)E * 8);
    if (!rd(logits, TE * 4, f) || !rd(bias, (size_t)E * 4, f) || (mask && !rd(mask, (size_t)E, f)) ||
        !rd(gcounts, (size_t)E * 8, f) || !rd(dweight, S * 4, f) || !rd(dprobs, TE * 4, f))
        FAIL("truncated data");
    fclose(f);

    int32_t *token = xmalloc(S * 4), *expert = xmalloc(S * 4), *chosen = xmalloc(S * 4);
    float *weight = xmalloc(S * 4), *weight0 = xmalloc(S * 4), *probs = xmalloc(TE * 4), *lse = xmalloc((size_t)T * 4),
          *dprobs_lbl = xmalloc(TE * 4), *dp = xmalloc(TE * 4), *dlogits = xmalloc(TE * 4),
          *scratch = xmalloc((size_t)moec_router_scratch_floats(&c, T) * 4);
    moec_routing r = {0, 0, 0, (int32_t)S, token, expert, weight, chosen};
    moec_route_opts o = {.k = k_eff, .expert_mask = mask};
    c.router->forward(&c, c.use_bias ? bias : NULL, logits, T, &o, &r, probs, scratch);
    memcpy(weight0, weight, S * 4);
    if (kill_token >= 0 && kill_token < T)
        for (int j = 0; j < k_eff; j++) expert[kill_token * k_eff + j] = chosen[kill_token * k_eff + j] = MOEC_NO_EXPERT;
    if (drop_slot >= 0 && drop_slot < (int)S) expert[drop_slot] = MOEC_NO_EXPERT;

    if (c.aux_scope == MOEC_LBL_GLOBAL_BATCH) { /* the step's counts = the other micro-batches' + this call's */
        int64_t *own = xmalloc((size_t)E * 8);
        moec_routing_counts(&r, E, 0, T, own);
        for (int e = 0; e < E; e++) gcounts[e] += own[e];
        free(own);
    }
    moec_lbl_cfg lc = {.coef = c.aux_coef, .scope = c.aux_scope, .seq_len = seq_len, .k = k,
                       .global_counts = gcounts, .global_tokens = global_tokens};
    const double lbl = moec_lbl_forward(&lc, probs, &r, T, E);
    const double zl = moec_zloss_forward(c.z_coef, logits, T, E, lse);
    moec_lbl_backward(&lc, &r, T, E, 1.f, dprobs_lbl);
    for (size_t i = 0; i < TE; i++) dp[i] = dprobs[i] + dprobs_lbl[i];
    c.router->backward(&c, c.use_bias ? bias : NULL, logits, T, &r, dweight, dp, dlogits, scratch);
    moec_zloss_backward(c.z_coef, logits, lse, T, E, 1.f, dlogits);

    FILE *g = fopen(argv[2], "wb");
    if (!g) FAIL("cannot write %s", argv[2]);
    const uint32_t v1 = 1;
    const int32_t n = r.n_slots;
    int ok = wr("MOERTO\0\0", 8, g) && wr(&v1, 4, g) && wr(&n, 4, g) && wr(token, S * 4, g) && wr(expert, S * 4, g) &&
             wr(chosen, S * 4, g) && wr(weight0, S * 4, g) && wr(probs, TE * 4, g) && wr(&lbl, 8, g) &&
             wr(&zl, 8, g) && wr(dprobs_lbl, TE * 4, g) && wr(dlogits, TE * 4, g);
    ok &= fclose(g) == 0;
    if (!ok) FAIL("write error on %s", argv[2]);
    free(logits), free(bias), free(dweight), free(dprobs), free(mask), free(gcounts), free(token), free(expert);
    free(chosen), free(weight), free(weight0), free(probs), free(lse), free(dprobs_lbl), free(dp), free(dlogits);
    free(scratch);
    return 0;
}
