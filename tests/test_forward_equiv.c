/* test_forward_equiv.c — the inference path and the training forward are one forward: for every
 * architecture (mixtral; qwen2_moe with a gated shared expert, a dense layer via
 * mlp_only_layers, qkv biases and tie_word_embeddings; qwen3_moe with per-head QK-norm,
 * head_dim != hidden/heads, attention biases and dense layers via decoder_sparse_step; olmoe
 * with full-projection QK-norm and clip_qkv active), tiny hparams are parsed from a config.json
 * string, random F32 parameters are drawn (moec_tparams_init with std 0.25 so that router
 * logits spread over ~±2 and routing is not uniform; norm weights 1 ± 0.2 and biases ±0.1 drawn
 * here, so they matter), saved with a config.json into a temp dir and opened with
 * moec_model_open. On B = 2 sequences of S = 12 random tokens, the training forward's logits
 * (moec_tmodel_step, backward = 0; moec_tmodel_logits) are compared with
 *   - the session's prefill logits (all_logits) of each sequence,
 *   - token-by-token KV-cache decode,
 *   - a chunked run: prefill of 5 tokens, then decode of the rest.
 * Tolerance, per arch and mode: max|Δ| <= 1e-4 · max|logit| (both fp32 with the same weights;
 * they differ only in summation order: sgemm vs moec's kernels, batched vs cached attention).
 * bf16: the same parameters saved as BF16, served by the inference path (bf16 weights widened
 * in registers), against the training forward on those weights loaded back (moec_tparams_load,
 * exactly the bf16-rounded values): max|Δ| <= 1e-3 · max|logit| (looser: moec's bf16 kernels
 * and sgemm accumulate in other orders over values that no longer cancel as in fp32; the gap
 * to the unrounded F32 forward is printed for scale, not checked; observed ~1e-6 for both, the
 * rounding itself moves the logits by 1e-2..5e-2, so 1e-3 still catches a dtype mix-up).
 * Also: every MoE layer's routing spreads over more than k + 1 experts, clip_qkv is active in the olmoe case (its logits differ from the same weights without
 * clipping), and every temp dir is removed. Prints the observed figures per arch. */
#include "core/rng.h"
#include "model/hparams.h"
#include "moec.h"
#include "test_util.h"
#include "train/model_train.h"
#include "train/params.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define B 2
#define S 12
#define PREFILL 5
#define TOL_F32 1e-4
#define TOL_BF16 1e-3

typedef struct {
    const char *name;
    const char *json;
    const char *json_noclip; /* the same config without clip_qkv (olmoe), else NULL */
} arch_case;

static const arch_case cases[] = {
    {"mixtral (GQA, head_dim 8 given)",
     "{\"model_type\": \"mixtral\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 40,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8,"
     " \"num_local_experts\": 6, \"num_experts_per_tok\": 2, \"max_position_embeddings\": 64,"
     " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false, \"sliding_window\": null}",
     NULL},
    {"qwen2_moe (gated shared expert, dense layer 1 via mlp_only_layers, qkv bias, tied embeddings)",
     "{\"model_type\": \"qwen2_moe\", \"vocab_size\": 96, \"hidden_size\": 48, \"intermediate_size\": 64,"
     " \"num_hidden_layers\": 3, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, \"num_experts\": 8,"
     " \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 24, \"shared_expert_intermediate_size\": 40,"
     " \"decoder_sparse_step\": 1, \"mlp_only_layers\": [1], \"norm_topk_prob\": false, \"max_position_embeddings\": 64,"
     " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, \"use_sliding_window\": false}",
     NULL},
    {"qwen3_moe (per-head QK-norm, head_dim 16 != 32/4, attention bias, dense layers via decoder_sparse_step 2)",
     "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 48,"
     " \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16,"
     " \"num_experts\": 8, \"num_experts_per_tok\": 3, \"moe_intermediate_size\": 20, \"decoder_sparse_step\": 2,"
     " \"mlp_only_layers\": [], \"norm_topk_prob\": true, \"attention_bias\": true, \"max_position_embeddings\": 64,"
     " \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": false}",
     NULL},
    {"olmoe (full-projection QK-norm, clip_qkv 0.5 active)",
     "{\"model_type\": \"olmoe\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 24,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_experts\": 8,"
     " \"num_experts_per_tok\": 2, \"norm_topk_prob\": false, \"clip_qkv\": 0.5, \"attention_bias\": false,"
     " \"max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false}",
     "{\"model_type\": \"olmoe\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 24,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_experts\": 8,"
     " \"num_experts_per_tok\": 2, \"norm_topk_prob\": false, \"clip_qkv\": null, \"attention_bias\": false,"
     " \"max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false}"},
    /* expert kinds and the layer-to-layer routing carry (xkind): the carry runs over depth, so a
     * token-by-token decode must give what the batched training forward gives */
    {"mixtral + MoE++ (2 constant, 1 copy, 1 zero expert, gating residual over 3 layers)",
     "{\"model_type\": \"mixtral\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 40,"
     " \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8,"
     " \"num_local_experts\": 6, \"num_experts_per_tok\": 2, \"max_position_embeddings\": 64,"
     " \"moec_constant_experts\": 2, \"moec_copy_experts\": 1, \"moec_null_experts\": 1, \"moec_gate_residual\": true,"
     " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false, \"sliding_window\": null}",
     NULL},
    {"qwen2_moe + RMoE GRU router (state 8) + 3 AdaMoE null experts, dense layer 1 skipped by the carry",
     "{\"model_type\": \"qwen2_moe\", \"vocab_size\": 96, \"hidden_size\": 48, \"intermediate_size\": 64,"
     " \"num_hidden_layers\": 3, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, \"num_experts\": 8,"
     " \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 24, \"shared_expert_intermediate_size\": 40,"
     " \"decoder_sparse_step\": 1, \"mlp_only_layers\": [1], \"norm_topk_prob\": true, \"max_position_embeddings\": 64,"
     " \"moec_router_rnn_dim\": 8, \"moec_null_experts\": 3,"
     " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, \"use_sliding_window\": false}",
     NULL},
    {"mixtral + Chain-of-Experts (3 iterations, a router each, inner and outer residual, 1 copy expert)",
     "{\"model_type\": \"mixtral\", \"vocab_size\": 96, \"hidden_size\": 32, \"intermediate_size\": 40,"
     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8,"
     " \"num_local_experts\": 6, \"num_experts_per_tok\": 2, \"max_position_embeddings\": 64,"
     " \"moec_coe_iterations\": 3, \"moec_coe_outer_residual\": true, \"moec_copy_experts\": 1,"
     " \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false, \"sliding_window\": null}",
     NULL},
};

/* ------------------------------------------------------------------ helpers */

static int write_text(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const size_t n = strlen(text);
    const int ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* a checkpoint dir: config.json + model.safetensors of tp in dtype; returns 0 on failure */
static int save_dir(char *dir, size_t cap, const moec_tparams *tp, const char *json, moec_dtype dtype) {
    snprintf(dir, cap, "/tmp/moec_fwdeq_XXXXXX");
    if (!mkdtemp(dir)) return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    moec_error err = {0};
    const int ok = write_text(dir, "config.json", json) && moec_tparams_save(tp, tp->w, path, dtype, &err) == MOEC_OK;
    CHECK(ok, "saving %s: %s", dir, err.msg);
    return ok;
}

static void remove_dir(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    CHECK(rmdir(dir) == 0, "temp dir %s not removed (left-over files?)", dir);
}

/* the training forward's logits [B·S, V] on tokens [B, S + 1] (copied into out) */
static int train_logits(moec_tparams *tp, const int32_t *tokens, float *out) {
    moec_tmodel *m = NULL;
    moec_error err = {0};
    moec_status st = moec_tmodel_new(&m, tp, B, S, -1.f, -1.f, &err);
    CHECK(st == MOEC_OK, "moec_tmodel_new: %s", err.msg);
    if (st) return 0;
    moec_tstep step;
    st = moec_tmodel_step(m, tokens, NULL, 1.f, 0, &step, &err);
    CHECK(st == MOEC_OK && isfinite(step.ce), "moec_tmodel_step: %s (ce %g)", err.msg, st ? 0.0 : step.ce);
    if (!st) memcpy(out, moec_tmodel_logits(m), (size_t)B * S * tp->hp.n_vocab * sizeof(float));
    /* routing is not trivial: every MoE layer spreads its B·S·k slots over more than k + 1 experts */
    const moec_hparams *hp = &tp->hp;
    for (int il = 0; !st && il < hp->n_layer; il++) {
        if (!hp->layer_moe[il]) continue;
        int used = 0;
        const int E = moec_hparams_n_route(hp); /* FFN experts, then null/copy/constant ones */
        for (int e = 0; e < E; e++) used += step.expert_counts[(size_t)il * E + e] > 0;
        CHECK(used > hp->n_expert_used + 1, "layer %d routes to only %d of %d experts", il, used, E);
    }
    moec_tmodel_free(m);
    return st == MOEC_OK;
}

/* inference logits [B·S, V] of each sequence: mode 0 prefill (all_logits), 1 token-by-token
 * decode, 2 prefill of PREFILL tokens then decode */
static int infer_logits(moec_model *model, const int32_t *tokens, int V, int mode, float *out) {
    moec_session *s = NULL;
    moec_error err = {0};
    moec_status st = moec_session_new(&s, model, S, &err);
    CHECK(st == MOEC_OK, "moec_session_new: %s", err.msg);
    for (int b = 0; b < B && !st; b++) {
        moec_session_reset(s);
        const int32_t *ids = tokens + (size_t)b * (S + 1);
        float *o = out + (size_t)b * S * V;
        const int n_pre = mode == 0 ? S : mode == 2 ? PREFILL : 0;
        if (n_pre) st = moec_session_forward(s, ids, n_pre, o, 1, &err);
        for (int t = n_pre; t < S && !st; t++) st = moec_session_forward(s, ids + t, 1, o + (size_t)t * V, 0, &err);
        CHECK(st == MOEC_OK && moec_session_n_past(s) == S, "session forward (mode %d): %s", mode, err.msg);
    }
    moec_session_free(s);
    return st == MOEC_OK;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* max|a − b| / max|ref|; NaN anywhere gives +inf */
static double rel_diff(const float *a, const float *b, size_t n, double ref) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d == d)) return INFINITY;
        m = fmax(m, d);
    }
    return ref > 0 ? m / ref : INFINITY;
}

/* inference (3 modes) vs training logits ref; returns the worst relative difference */
static double compare_modes(const char *what, moec_model *model, const int32_t *tokens, const float *ref, int V,
                            double tol) {
    static const char *mode_name[] = {"prefill", "decode", "prefill+decode"};
    const size_t n = (size_t)B * S * V;
    float *got = malloc(n * sizeof *got);
    const double mx = max_abs(ref, n);
    double worst = 0;
    printf("  %-5s max|logit| %.3f:", what, mx);
    for (int mode = 0; mode < 3; mode++) {
        for (size_t i = 0; i < n; i++) got[i] = NAN;
        if (!infer_logits(model, tokens, V, mode, got)) continue;
        const double r = rel_diff(got, ref, n, mx);
        CHECK(r <= tol, "%s %s: max|inference - training| = %.3g * max|logit|, tolerance %.0e", what, mode_name[mode], r,
              tol);
        printf("  %s %.2e", mode_name[mode], r);
        worst = fmax(worst, r);
    }
    printf("  (tol %.0e)\n", tol);
    free(got);
    return worst;
}

/* norm weights 1 ± 0.2 and biases ±0.1 (moec_tparams_init sets 1 and 0) */
static void perturb_vectors(moec_tparams *tp, uint64_t seed) {
    moec_rng r;
    moec_rng_seed(&r, seed);
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *s = &tp->specs[i];
        if (s->n_dims != 1) continue;
        const int bias = s->role == MOEC_T_BQ || s->role == MOEC_T_BK || s->role == MOEC_T_BV || s->role == MOEC_T_BO;
        float *w = tp->w + tp->offset[i];
        for (int64_t j = 0; j < s->numel; j++) w[j] = bias ? 0.1f * moec_rng_normal(&r) : 1.f + 0.2f * moec_rng_normal(&r);
    }
}

/* ------------------------------------------------------------------ one architecture */

static void run_case(const arch_case *ac, uint64_t seed) {
    printf("%s\n", ac->name);
    moec_hparams hp;
    moec_error err = {0};
    moec_status st = moec_hparams_parse(&hp, ac->json, strlen(ac->json), "config.json", &err);
    CHECK(st == MOEC_OK, "%s: parse: %s", ac->name, err.msg);
    if (st) return;
    const int V = hp.n_vocab;
    const size_t n = (size_t)B * S * V;
    moec_tparams tp, tpb;
    memset(&tpb, 0, sizeof tpb);
    st = moec_tparams_new(&tp, &hp, &err);
    CHECK(st == MOEC_OK, "tparams: %s", err.msg);
    if (st) return;
    moec_tparams_init(&tp, seed, 0.25f);
    perturb_vectors(&tp, seed + 1);
    int32_t tokens[B * (S + 1)];
    g_rng = seed * 7 + 3;
    for (int i = 0; i < B * (S + 1); i++) tokens[i] = (int32_t)((frand() + 1.f) * 0.5f * (V - 1) + 0.5f);
    float *ref = malloc(n * sizeof *ref), *refb = malloc(n * sizeof *refb);
    moec_model *model = NULL;
    const moec_model_params mp = {.n_threads = 2};
    char dir[64];

    /* F32 checkpoint */
    if (train_logits(&tp, tokens, ref) && save_dir(dir, sizeof dir, &tp, ac->json, MOEC_DTYPE_F32)) {
        st = moec_model_open(&model, dir, &mp, &err);
        CHECK(st == MOEC_OK, "open F32: %s", err.msg);
        if (!st) {
            const moec_model_info *in = moec_model_get_info(model);
            printf("  (layers %d, MoE layers %d, experts %d top-%d, shared ff %d, tied %d, qk_norm %d, weights %s)\n",
                   in->n_layer, in->n_layer_moe, in->n_expert, in->n_expert_used, in->n_ff_shared,
                   in->tie_word_embeddings, in->qk_norm, in->weight_dtype);
            compare_modes("f32", model, tokens, ref, V, TOL_F32);
        }
        moec_model_close(model);
        model = NULL;
        remove_dir(dir);
    }

    /* BF16 checkpoint vs the training forward on the bf16-rounded weights */
    if (save_dir(dir, sizeof dir, &tp, ac->json, MOEC_DTYPE_BF16)) {
        st = moec_tparams_new(&tpb, &hp, &err);
        if (!st) st = moec_tparams_load(&tpb, dir, &err);
        CHECK(st == MOEC_OK, "load bf16 into tparams: %s", err.msg);
        if (!st) {
            size_t changed = 0;
            for (size_t i = 0; i < tp.n_floats; i++) changed += tpb.w[i] != tp.w[i];
            CHECK(changed > tp.n_floats / 2, "bf16 rounding changed only %zu of %zu weights", changed, tp.n_floats);
        }
        if (!st && train_logits(&tpb, tokens, refb)) {
            st = moec_model_open(&model, dir, &mp, &err);
            CHECK(st == MOEC_OK, "open BF16: %s", err.msg);
            if (!st) {
                CHECK(!strcmp(moec_model_get_info(model)->weight_dtype, "BF16"), "bf16 checkpoint reads as %s",
                      moec_model_get_info(model)->weight_dtype);
                compare_modes("bf16", model, tokens, refb, V, TOL_BF16);
                printf("  (bf16-rounded vs unrounded weights, training forward: max|diff| %.2e * max|logit|)\n",
                       rel_diff(refb, ref, n, max_abs(ref, n)));
            }
            moec_model_close(model);
            model = NULL;
        }
        remove_dir(dir);
    }

    /* clip_qkv active: the same weights without clipping give other logits */
    if (ac->json_noclip) {
        moec_hparams hn;
        moec_tparams tn;
        st = moec_hparams_parse(&hn, ac->json_noclip, strlen(ac->json_noclip), "config.json", &err);
        CHECK(st == MOEC_OK && hp.clip_qkv > 0 && hn.clip_qkv == 0, "no-clip variant: %s", err.msg);
        if (!st && moec_tparams_new(&tn, &hn, &err) == MOEC_OK) {
            CHECK(tn.n_floats == tp.n_floats, "no-clip variant has another layout");
            if (tn.n_floats == tp.n_floats) {
                memcpy(tn.w, tp.w, tp.n_floats * sizeof(float));
                float *un = malloc(n * sizeof *un);
                if (train_logits(&tn, tokens, un)) {
                    const double r = rel_diff(un, ref, n, max_abs(ref, n));
                    CHECK(r > 1e-2, "clip_qkv %.2f is not active: logits change by only %.2e", hp.clip_qkv, r);
                    printf("  clip_qkv %.2f active: logits without clipping differ by %.2e * max|logit|\n", hp.clip_qkv,
                           r);
                }
                free(un);
            }
            moec_tparams_free(&tn);
        }
    }
    free(ref);
    free(refb);
    moec_tparams_free(&tp);
    moec_tparams_free(&tpb);
}

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 1000 + 17 * i);
    return test_finish("test_forward_equiv");
}
