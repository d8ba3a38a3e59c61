/* test_hf_files.c — train/hf_files.c's guard that the config.json it writes is the model it was
 * given, and the comparison under it (moec_hparams_same / moec_router_cfg_same):
 *  - every routing, balancing and expert-kind key config.json carries, changed on its own, makes
 *    a different model (a field the comparison skipped — the expert kinds once were — fails here);
 *  - the expert-kind presets (AdaMoE null, MoE++, chain-of-experts, ReXMoE, RMoE) go through
 *    moec_hf_files_make and read back with the same expert kinds;
 *  - a config with a key twice is refused with a message (cJSON reads the first, transformers the
 *    last: the written config would be another model to transformers). */
#include "model/hparams.h"
#include "train/hf_files.h"
#include "io/file.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define BASE                                                                                                      \
    "{\"model_type\": \"mixtral\", \"vocab_size\": 64, \"hidden_size\": 16, \"intermediate_size\": 32, "        \
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"num_local_experts\": 4, " \
    "\"eos_token_id\": 0"
#define K2 ", \"num_experts_per_tok\": 2" /* unless the case sets its own */

static int parse(moec_hparams *hp, const char *extra) {
    char text[2048];
    snprintf(text, sizeof text, BASE "%s%s%s}", strstr(extra, "num_experts_per_tok") ? "" : K2, extra[0] ? ", " : "",
             extra);
    moec_error err = {0};
    const moec_status st = moec_hparams_parse(hp, text, strlen(text), "config.json", &err);
    if (st) fprintf(stderr, "  %s: %s\n", extra, err.msg);
    return st == MOEC_OK;
}

/* {keys both configs share, the one key that differs}: every field config.json sets */
static const char *const CHANGES[][2] = {
    {"", "\"moec_constant_experts\": 1"},
    {"", "\"moec_copy_experts\": 1"},
    {"", "\"moec_null_experts\": 1"},
    {"\"moec_null_experts\": 1", "\"moec_null_renorm\": false"},
    {"", "\"moec_gate_residual\": true"},
    {"", "\"moec_router_rnn_dim\": 8"},
    {"", "\"moec_coe_iterations\": 2"},
    {"\"moec_coe_iterations\": 2", "\"moec_coe_inner_residual\": false"},
    {"\"moec_coe_iterations\": 2", "\"moec_coe_outer_residual\": true"},
    {"\"moec_coe_iterations\": 2", "\"moec_coe_shared_gate\": true"},
    {"", "\"moec_rex_reuse_frequency\": 2"},
    {"\"moec_rex_reuse_frequency\": 2, \"moec_rex_psr_end\": 20", "\"moec_rex_psr_start\": 5"},
    {"\"moec_rex_reuse_frequency\": 2", "\"moec_rex_psr_end\": 20"},
    {"", "\"moec_router_scale\": true"},
    {"", "\"scoring_func\": \"sigmoid\""},
    {"", "\"moec_topk_softmax\": true"},
    {"", "\"routed_scaling_factor\": 2.5"},
    {"\"topk_method\": \"group_limited_greedy\"", "\"n_group\": 2"},
    {"\"topk_method\": \"group_limited_greedy\", \"n_group\": 2", "\"topk_group\": 2"},
    {"", "\"topk_method\": \"noaux_tc\""},
    {"\"topk_method\": \"noaux_tc\"", "\"moec_bias_update_rate\": 0.01"},
    {"", "\"router_aux_loss_coef\": 0.5"},
    {"", "\"moec_aux_loss_scope\": \"sequence\""},
    {"", "\"router_z_loss_coef\": 0.5"},
    {"", "\"router_jitter_noise\": 0.1"},
    {"", "\"moec_capacity_factor\": 1.25"},
    {"\"moec_capacity_factor\": 1.25", "\"moec_drop_policy\": \"probs\""},
    {"", "\"moec_label_smoothing\": 0.1"},
    {"", "\"moec_router\": \"topp\""},
    {"\"moec_router\": \"topp\"", "\"moec_top_p\": 0.7"},
    {"\"moec_router\": \"topp\"", "\"moec_entropy_loss_coef\": 0.01"},
    {"", "\"moec_router\": \"expert_choice\""},
    {"\"moec_router\": \"expert_choice\"", "\"moec_decode_router\": \"topk\""},
    {"\"moec_router\": \"expert_choice\"", "\"moec_ec_capacity\": 3"},
    {"\"moec_router\": \"hash\", \"num_experts_per_tok\": 1, \"router_aux_loss_coef\": 0, \"router_z_loss_coef\": 0", "\"moec_hash_seed\": 7"},
    {"\"moec_router\": \"hash\", \"num_experts_per_tok\": 1, \"router_aux_loss_coef\": 0, \"router_z_loss_coef\": 0", "\"moec_hash_table\": \"balanced\""},
    {"\"moec_router\": \"evomoe\"", "\"moec_tau_max\": 3.0"},
    {"\"moec_router\": \"evomoe\"", "\"moec_tau_min\": 0.2"},
    {"\"moec_router\": \"evomoe\"", "\"moec_tau_steps\": 77"},
    {"\"moec_router\": \"evomoe\"", "\"moec_tau_schedule\": \"linear\""},
    {"\"moec_router\": \"evomoe\"", "\"moec_hard_gumbel_after\": 30"},
    {"\"moec_router\": \"thor\", \"num_experts_per_tok\": 1, \"router_aux_loss_coef\": 0, \"router_z_loss_coef\": 0", "\"moec_thor_inference\": \"sequence\""},
    {"\"moec_router\": \"thor\", \"num_experts_per_tok\": 1, \"router_aux_loss_coef\": 0, \"router_z_loss_coef\": 0", "\"moec_consistency_alpha\": 2.0"},
};

static void test_every_key_counts(void) {
    for (size_t i = 0; i < sizeof CHANGES / sizeof CHANGES[0]; i++) {
        char both[512];
        snprintf(both, sizeof both, "%s%s%s", CHANGES[i][0], CHANGES[i][0][0] ? ", " : "", CHANGES[i][1]);
        moec_hparams a, b, b2;
        const int ok = parse(&a, CHANGES[i][0]) && parse(&b, both) && parse(&b2, both);
        CHECK(ok, "%s parses", both);
        if (!ok) continue;
        CHECK(!moec_hparams_same(&a, &b), "%s: a different model", CHANGES[i][1]);
        CHECK(moec_hparams_same(&b, &b2), "%s: the same model as itself", both);
    }
}

static void test_presets_round_trip(void) {
    static const char *const presets[] = {"adamoe-null", "moepp", "chain-of-experts", "rexmoe", "rmoe"};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        char path[256], *text = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "configs/routers/%s.json", presets[i]);
        moec_error err = {0};
        moec_hparams a, b;
        moec_hf_files hf = {0};
        int ok = moec_file_read_all(path, &text, &len, &err) == MOEC_OK &&
                 moec_hparams_parse(&a, text, len, path, &err) == MOEC_OK &&
                 moec_hf_files_make(&hf, text, len, path, NULL, -1, NULL, &err) == MOEC_OK &&
                 moec_hparams_parse(&b, hf.config, strlen(hf.config), path, &err) == MOEC_OK;
        CHECK(ok, "%s: %s", path, err.msg);
        if (ok) {
            CHECK(moec_hparams_same(&a, &b), "%s reads back as the same model", path);
            CHECK(a.route.n_null == b.route.n_null && a.route.n_const == b.route.n_const &&
                      a.route.n_copy == b.route.n_copy && a.route.coe_iters == b.route.coe_iters &&
                      a.route.rex_reuse == b.route.rex_reuse && a.route.rnn_dim == b.route.rnn_dim,
                  "%s keeps its expert kinds", path);
            CHECK(a.route.n_null + a.route.n_const + a.route.n_copy + a.route.coe_iters + a.route.rnn_dim +
                          a.route.rex_reuse - 1 > 0,
                  "%s has an expert kind to keep", path);
        }
        moec_hf_files_free(&hf);
        free(text);
    }
}

static void test_duplicate_key_refused(void) {
    /* transformers would read top-1 from the second key; moec trained top-2 from the first */
    static const char text[] = BASE K2 ", \"num_experts_per_tok\": 1}";
    moec_hparams hp;
    moec_hf_files hf;
    moec_error err = {0};
    CHECK(moec_hparams_parse(&hp, text, strlen(text), "config.json", &err) == MOEC_ERR_FORMAT &&
              strstr(err.msg, "\"num_experts_per_tok\" appears twice"),
          "duplicate key refused: %s", err.msg);
    err.msg[0] = 0;
    CHECK(moec_hf_files_make(&hf, text, strlen(text), "config.json", NULL, -1, NULL, &err) != MOEC_OK && err.msg[0],
          "moec_hf_files_make refuses it: %s", err.msg);
    moec_hf_files_free(&hf);
    static const char nested[] = BASE K2 ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"factor\": 4.0}}";
    CHECK(moec_hparams_parse(&hp, nested, strlen(nested), "config.json", &err) == MOEC_ERR_FORMAT &&
              strstr(err.msg, "\"factor\" appears twice"),
          "nested duplicate key refused: %s", err.msg);
}

int main(void) {
    test_every_key_counts();
    test_presets_round_trip();
    test_duplicate_key_refused();
    return test_finish("test_hf_files");
}
