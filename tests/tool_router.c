/* tool_router.c — test driver for tests/py_test_router_grad.py: reads one case (a router and its
 * config keys, logits, the selection bias, an expert mask, the call context, the upstream
 * gradients), runs the registry router's forward, the balancing losses, the router's own loss and
 * all the backwards, and writes every result for Python to compare with PyTorch autograd.
 *
 *   tool_router IN.bin OUT.bin
 *   tool_router --routers          (the registry's router names, one a line: the test covers each)
 *
 * The configuration: the case's JSON object of config.json keys (at least "moec_router"; the
 * router's own keys such as "moec_top_p", "moec_ec_capacity", "moec_tau_*") goes through
 * moec_router_cfg_parse, so the router's defaults and the real key reader apply; then the header's
 * shared fields (score ... seq_len, scaling, coefficients) overwrite their fields (aux_coef in
 * moec's normalisation) and the router's check runs again.
 * The call context: opts.k = k_eff, the mask, token_ids (hash), seq_len, step, and with
 * rng_seed >= 0 a training call with the random stream moec_rng_seed(rng_seed) (EvoMoE's Gumbel
 * noise, THOR's draw); rng_seed < 0: no stream (serving/evaluation rule).
 *
 * After the forward it applies two edits the MoE layer can make: kill_token >= 0 sets every
 * slot of that token to MOEC_NO_EXPERT (expert and chosen: a token with zero experts), and
 * drop_slot >= 0 sets that slot's expert to MOEC_NO_EXPERT with chosen kept (a capacity drop).
 * With "moec_router_scale": true among the keys, the router_scale stage (moec_routing_scale) runs
 * on the forward's weights before the edits, and its backward before the router's.
 * Then
 *   lbl = moec_lbl_forward(probs, r)          (coefficient aux_coef, scope, seq_len, k =
 *                                              moec_router_call_k(k_eff): the MoE layer's k)
 *   zl  = moec_zloss_forward(z_coef, logits)
 *   rl  = router->loss(probs) (0 without one: the router's own loss, top-p's entropy)
 *   dprobs_lbl = moec_lbl_backward(dscale 1)  (∂lbl/∂probs)
 *   dprobs_rl = router->loss(dscale 1)        (∂rl/∂probs; 0 without one)
 *   dlogits = router backward(dweight, dprobs + dprobs_lbl + ∂rl/∂probs) + zloss backward(dscale 1)
 * With the global scope, global_counts in the file are the other micro-batches' counts and
 * global_tokens the whole step's tokens; the tool adds this call's own counts (from chosen).
 * i.e. dlogits = ∂/∂z of Σ_s dweight_s·w_s (slots with an expert) + Σ dprobs⊙P + lbl + zl + rl.
 * Exits 1 on a malformed file or a config that the parser or check() rejects (message on stderr).
 *
 * IN (little endian), version 3: "MOERTR\0\0" u32 version, i32 T E k k_eff score topk_softmax
 * norm_topk_prob n_group topk_group group_score use_bias has_mask kill_token drop_slot scope
 * seq_len, f32 routed_scaling aux_coef z_coef, i64 global_tokens, i64 step, i64 rng_seed,
 * u32 json_len, char json[json_len], f32 logits[T·E], f32 bias[E], u8 mask[E] (if has_mask), f32 scale[E] (if the keys turn router_scale on),
 * i64 global_counts[E], i32 token_ids[T], u32 n_dweight, f32 dweight[n_dweight] (>= the routing's
 * slots; the first n_slots are used), f32 dprobs[T·E].
 * OUT, version 3: "MOERTO\0\0" u32 version, i32 n_slots, i32 token[n], i32 expert[n],
 * i32 chosen[n], f32 weight[n] (as the forward wrote them, before the edits), f32 probs[T·E],
 * f64 lbl, f64 zl, f64 rl, f64 tau (EvoMoE's τ at step, else 0), f32 dprobs_lbl[T·E],
 * f32 dprobs_rl[T·E], f32 dlogits[T·E], f32 dscale[E] (∂/∂router_scale; 0 without one). */
#include "core/rng.h"
#include "moe/balance.h"
#include "moe/router.h"
#include "moe/routers/routers.h"

#include <cjson/cJSON.h>
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
    if (argc == 2 && !strcmp(argv[1], "--routers")) {
        for (int i = 0; i < moec_router_count(); i++) printf("%s\n", moec_router_at(i)->name);
        return 0;
    }
    if (argc != 3) FAIL("usage: tool_router IN.bin OUT.bin | --routers");
    FILE *f = fopen(argv[1], "rb");
    if (!f) FAIL("cannot open %s", argv[1]);
    char magic[8];
    uint32_t version, json_len;
    int32_t h[16];
    float fl[3];
    int64_t global_tokens, step, rng_seed;
    if (!rd(magic, 8, f) || memcmp(magic, "MOERTR\0\0", 8) || !rd(&version, 4, f) || version != 3)
        FAIL("%s: not a version-3 router case", argv[1]);
    if (!rd(h, sizeof h, f) || !rd(fl, sizeof fl, f) || !rd(&global_tokens, 8, f) || !rd(&step, 8, f) ||
        !rd(&rng_seed, 8, f) || !rd(&json_len, 4, f) || json_len > 1 << 16)
        FAIL("truncated header");
    char *json = xmalloc((size_t)json_len + 1);
    if (!rd(json, json_len, f)) FAIL("truncated config keys");
    const int T = h[0], E = h[1], k = h[2], k_eff = h[3];
    if (T < 1 || E < 1 || k < 1 || k_eff < 1 || k_eff > k || T > 1 << 16 || E > 1 << 12)
        FAIL("bad sizes T %d E %d k %d k_eff %d", T, E, k, k_eff);
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) FAIL("config keys are not a JSON object: %s", json);
    moec_router_cfg c;
    moec_error err = {0};
    if (moec_router_cfg_parse(&c, root, E, k, h[6], "case", &err) != MOEC_OK) FAIL("config rejected: %s", err.msg);
    cJSON_Delete(root);
    c.score = (moec_score_func)h[4];
    c.topk_softmax = h[5];
    c.norm_topk_prob = h[6];
    c.n_group = h[7];
    c.topk_group = h[8];
    c.group_score = (moec_group_score)h[9];
    c.use_bias = h[10];
    c.aux_scope = (moec_lbl_scope)h[14];
    c.routed_scaling = fl[0];
    c.aux_coef = fl[1];
    c.z_coef = fl[2];
    const int has_mask = h[11], kill_token = h[12], drop_slot = h[13], seq_len = h[15];
    if (c.router->check(&c, &err) != MOEC_OK) FAIL("config rejected: %s", err.msg);

    const size_t TE = (size_t)T * E, S = (size_t)moec_router_max_slots(&c, T);
    uint32_t n_dw = 0;
    float *logits = xmalloc(TE * 4), *bias = xmalloc((size_t)E * 4), *dprobs = xmalloc(TE * 4), *dweight = NULL;
    uint8_t *mask = has_mask ? xmalloc((size_t)E) : NULL;
    float *scale = c.router_scale ? xmalloc((size_t)E * 4) : NULL, *dscale = xmalloc((size_t)E * 4);
    int64_t *gcounts = xmalloc((size_t)E * 8);
    int32_t *ids = xmalloc((size_t)T * 4);
    if (!rd(logits, TE * 4, f) || !rd(bias, (size_t)E * 4, f) || (mask && !rd(mask, (size_t)E, f)) || (scale && !rd(scale, (size_t)E * 4, f)) ||
        !rd(gcounts, (size_t)E * 8, f) || !rd(ids, (size_t)T * 4, f) || !rd(&n_dw, 4, f) || n_dw > 1u << 28)
        FAIL("truncated data");
    dweight = xmalloc((size_t)n_dw * 4);
    if (!rd(dweight, (size_t)n_dw * 4, f) || !rd(dprobs, TE * 4, f)) FAIL("truncated data");
    fclose(f);

    int32_t *token = xmalloc(S * 4), *expert = xmalloc(S * 4), *chosen = xmalloc(S * 4);
    float *weight = xmalloc(S * 4), *weight0 = xmalloc(S * 4), *probs = xmalloc(TE * 4), *lse = xmalloc((size_t)T * 4),
          *dprobs_lbl = xmalloc(TE * 4), *dprobs_rl = xmalloc(TE * 4), *dp = xmalloc(TE * 4), *dlogits = xmalloc(TE * 4),
          *scratch = xmalloc((size_t)moec_router_scratch_floats(&c, T) * 4);
    moec_routing r = {0, 0, 0, (int32_t)S, token, expert, weight, chosen};
    moec_rng rng;
    if (rng_seed >= 0) moec_rng_seed(&rng, (uint64_t)rng_seed);
    moec_route_opts o = {.k = k_eff, .expert_mask = mask, .token_ids = ids, .seq_len = seq_len, .step = step,
                         .train = rng_seed >= 0, .rng = rng_seed >= 0 ? &rng : NULL};
    c.router->forward(&c, c.use_bias ? bias : NULL, logits, T, &o, &r, probs, scratch);
    if (r.n_slots < 0 || (size_t)r.n_slots > S) FAIL("router wrote %d slots (cap %zu)", r.n_slots, S);
    if ((uint32_t)r.n_slots > n_dw) FAIL("dweight has %u values, the routing %d slots", n_dw, r.n_slots);
    const size_t n = (size_t)r.n_slots;
    float *wpre = xmalloc(n * 4 + 4);
    if (scale) moec_routing_scale(&r, scale, wpre);
    memcpy(weight0, weight, n * 4);
    for (size_t q = 0; q < n; q++)
        if (token[q] == kill_token) expert[q] = chosen[q] = MOEC_NO_EXPERT;
    if (drop_slot >= 0 && (size_t)drop_slot < n) expert[drop_slot] = MOEC_NO_EXPERT;

    if (c.aux_scope == MOEC_LBL_GLOBAL_BATCH) { /* the step's counts = the other micro-batches' + this call's */
        int64_t *own = xmalloc((size_t)E * 8);
        moec_routing_counts(&r, E, 0, T, own);
        for (int e = 0; e < E; e++) gcounts[e] += own[e];
        free(own);
    }
    moec_lbl_cfg lc = {.coef = c.aux_coef, .scope = c.aux_scope, .seq_len = seq_len,
                       .k = moec_router_call_k(&c, c.router, k_eff),
                       .global_counts = gcounts, .global_tokens = global_tokens};
    const double lbl = moec_lbl_forward(&lc, probs, &r, T, E);
    const double zl = moec_zloss_forward(c.z_coef, logits, T, E, lse);
    const double rl = c.router->loss ? c.router->loss(&c, probs, T, 0.f, NULL) : 0.0;
    const double tau = c.router == moec_router_find("evomoe") ? moec_router_evomoe_tau(&c, step) : 0.0;
    moec_lbl_backward(&lc, &r, T, E, 1.f, dprobs_lbl);
    if (c.router->loss) c.router->loss(&c, probs, T, 1.f, dprobs_rl);
    for (size_t i = 0; i < TE; i++) dp[i] = dprobs[i] + dprobs_lbl[i] + dprobs_rl[i];
    if (scale) moec_routing_scale_backward(&r, scale, wpre, dweight, dscale);
    c.router->backward(&c, c.use_bias ? bias : NULL, logits, T, &r, dweight, dp, dlogits, scratch);
    moec_zloss_backward(c.z_coef, logits, lse, T, E, 1.f, dlogits);

    FILE *g = fopen(argv[2], "wb");
    if (!g) FAIL("cannot write %s", argv[2]);
    const uint32_t v3 = 3;
    const int32_t ns = r.n_slots;
    int ok = wr("MOERTO\0\0", 8, g) && wr(&v3, 4, g) && wr(&ns, 4, g) && wr(token, n * 4, g) && wr(expert, n * 4, g) &&
             wr(chosen, n * 4, g) && wr(weight0, n * 4, g) && wr(probs, TE * 4, g) && wr(&lbl, 8, g) &&
             wr(&zl, 8, g) && wr(&rl, 8, g) && wr(&tau, 8, g) && wr(dprobs_lbl, TE * 4, g) && wr(dprobs_rl, TE * 4, g) && wr(dlogits, TE * 4, g) &&
             wr(dscale, (size_t)E * 4, g);
    ok &= fclose(g) == 0;
    if (!ok) FAIL("write error on %s", argv[2]);
    free(json), free(logits), free(bias), free(dweight), free(dprobs), free(mask), free(gcounts), free(ids);
    free(token), free(expert), free(chosen), free(weight), free(weight0), free(probs), free(lse), free(dprobs_lbl);
    free(dprobs_rl), free(dp), free(dlogits), free(scratch), free(scale), free(dscale), free(wpre);
    return 0;
}
