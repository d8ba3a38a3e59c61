/* forward.c — the inference driver of the one decoder layer (model/layer.c):
 *   x = embed(ids);  per layer: x = layer(x) through the KV cache;  logits = lm_head(rmsnorm(x))
 * Training (train/model_train.c) drives the same layer in batch mode. */
#include "core/error.h"
#include "core/threads.h"
#include "infer/session.h"
#include "nn/linear.h"
#include "nn/ops_train.h"

#include <string.h>

void moec_forward_chunk(moec_session *s, const int32_t *ids, int T, float *logits, int all_logits) {
    moec_model *m = s->m;
    const moec_hparams *hp = &m->hp;
    const int d = hp->n_embd;
    MOEC_ASSERT(T > 0 && T <= MOEC_UBATCH && s->n_past + T <= s->n_ctx);
    moec_threads_set(m->n_threads); /* att_scratch has a row per thread */
    moec_layer_acts *a = &s->acts;
    const size_t row_bytes = moec_row_bytes(m->tok_embd.dtype, d);
    for (int t = 0; t < T; t++) {
        moec_to_f32(a->x + (size_t)t * d, (const char *)m->tok_embd.data + (size_t)ids[t] * row_bytes,
                    m->tok_embd.dtype, (size_t)d);
        s->pos[t] = s->n_past + t;
    }
    /* decoding: causal routing; per-sequence random draws (THOR) repeat in every chunk */
    moec_rng seq = s->seq_rng;
    moec_moe_call call = {.opts = &s->route_opts, .token_ids = ids, .causal = 1, .serve_rng = &s->serve_rng,
                          .seq_rng = &seq};
    const float *carry = NULL; /* the routing carry from the previous MoE layer (moe.h) */
    const size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t E = (size_t)moec_hparams_n_route(hp); /* counts per router column */
    for (int il = 0; il < hp->n_layer; il++) {
        const size_t layer_off = (size_t)il * kvd * (size_t)s->n_ctx;
        const moec_layer_ctx c = {.T = T, .pos = s->pos, .rope_cos = s->rope_cos, .rope_sin = s->rope_sin,
                                  .k_cache = s->k_cache + layer_off, .v_cache = s->v_cache + layer_off,
                                  .n_past = s->n_past, .n_ctx = s->n_ctx, .att_scratch = s->att_scratch,
                                  .att_rows = m->n_threads,
                                  .moe_call = &call};
        moec_moe_stats st = {0};
        call.carry_in = carry;
        moec_layer_forward(hp, &m->layers[il], il, a, &c, a->x, &st);
        if (m->layers[il].is_moe) carry = moec_moe_carry(a->moe);
        if (st.counts)
            for (size_t e = 0; e < E; e++) s->expert_counts[(size_t)il * E + e] += st.counts[e];
    }
    s->n_past += T;
    if (!logits) return;
    /* only the rows whose logits are wanted go through the final norm and the LM head */
    const int first = all_logits ? 0 : T - 1;
    moec_rmsnorm_forward_train(s->xn, s->rstd, a->x + (size_t)first * d, m->out_norm, T - first, d, hp->rms_eps);
    moec_linear(logits, (int)m->output.rows, s->xn, d, &m->output, NULL, T - first);
}
