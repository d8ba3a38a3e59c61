/* forward.c — the generic MoE transformer forward (pre-norm decoder):
 *   x = embed(ids)
 *   per layer: x += attn(rmsnorm(x));  x += ffn(rmsnorm(x))   ffn = MoE or dense SwiGLU
 *   logits = lm_head(rmsnorm(x))
 * with the MoE block as the route → dispatch → experts → combine pipeline of DESIGN.md.
 * Architecture differences are hparams (QK-norm kind, biases, top-k normalisation, shared
 * expert, dense layers), never separate code paths per model_type. */
#include "core/error.h"
#include "infer/session.h"
#include "moe/dispatch.h"
#include "moe/experts.h"
#include "moe/router.h"
#include "nn/ops.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ attention block */

static void clamp(float *x, size_t n, float c) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > c ? c : x[i] < -c ? -c : x[i];
}

static void attention_block(moec_session *s, const moec_layer *L, int il, int T) {
    const moec_hparams *hp = &s->m->hp;
    const int H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim, d = hp->n_embd;
    const int qd = H * hd, kvd = Hkv * hd;
    moec_rmsnorm(s->xn, s->x, L->attn_norm, T, d, hp->rms_eps);
    moec_matmul(s->q, s->xn, &L->wq, L->bq, T);
    moec_matmul(s->k, s->xn, &L->wk, L->bk, T);
    moec_matmul(s->v, s->xn, &L->wv, L->bv, T);
    switch (hp->arch->qk_norm) {
    case MOEC_QK_NORM_HEAD: /* Qwen3: per head, weight [hd] */
        moec_rmsnorm(s->q, s->q, L->q_norm, T * H, hd, hp->rms_eps);
        moec_rmsnorm(s->k, s->k, L->k_norm, T * Hkv, hd, hp->rms_eps);
        break;
    case MOEC_QK_NORM_FULL: /* OLMoE: over the whole projection */
        moec_rmsnorm(s->q, s->q, L->q_norm, T, qd, hp->rms_eps);
        moec_rmsnorm(s->k, s->k, L->k_norm, T, kvd, hp->rms_eps);
        break;
    default: break;
    }
    if (hp->clip_qkv > 0) { /* OLMoE clamps after the norms, before RoPE */
        clamp(s->q, (size_t)T * qd, hp->clip_qkv);
        clamp(s->k, (size_t)T * kvd, hp->clip_qkv);
        clamp(s->v, (size_t)T * kvd, hp->clip_qkv);
    }
    moec_rope(s->q, T, H, hd, s->rope_cos, s->rope_sin, s->n_past);
    moec_rope(s->k, T, Hkv, hd, s->rope_cos, s->rope_sin, s->n_past);
    /* append to the cache: [kv head][position][hd] keeps each head's keys contiguous */
    const size_t layer_off = (size_t)il * kvd * (size_t)s->n_ctx;
    float *kc = s->k_cache + layer_off, *vc = s->v_cache + layer_off;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hkv; h++) {
            size_t dst = ((size_t)h * s->n_ctx + (size_t)(s->n_past + t)) * hd;
            memcpy(kc + dst, s->k + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
            memcpy(vc + dst, s->v + (size_t)t * kvd + (size_t)h * hd, (size_t)hd * sizeof(float));
        }
    moec_attention(s->att, s->q, kc, vc, T, s->n_past, H, Hkv, hd, s->n_ctx, hp->layer_swa[il] ? hp->sliding_window : 0,
                   s->att_scratch);
    moec_matmul(s->ffn_out, s->att, &L->wo, L->bo, T);
    for (size_t i = 0; i < (size_t)T * d; i++) s->x[i] += s->ffn_out[i];
}

/* ------------------------------------------------------------------ MoE block */

/* route → dispatch → experts → combine; adds the result into s->x. */
static void moe_block(moec_session *s, const moec_layer *L, int T) {
    const moec_hparams *hp = &s->m->hp;
    const int d = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used;
    /* route (fp32) */
    moec_matmul(s->router, s->xn, &L->router, NULL, T);
    moec_route_softmax_topk(s->router, T, E, K, hp->norm_topk_prob, s->topk_ids, s->topk_w);
    /* dispatch: rows grouped by expert */
    moec_dispatch_build(&s->disp, s->topk_ids, T, K, E);
    for (int r = 0; r < T * K; r++)
        memcpy(s->xg + (size_t)r * d, s->xn + (size_t)(s->disp.row_src[r] / K) * d, (size_t)d * sizeof(float));
    /* experts: one grouped pass over every non-empty expert */
    moec_ffn_grouped(s->yg, s->xg, L->expert_ptrs, s->disp.offsets, E, d, s->ff_max, s->h_gate, s->h_up, s->items);
    /* combine: fixed slot order per token, so the sum does not depend on threads */
    for (int t = 0; t < T; t++) {
        float *xr = s->x + (size_t)t * d;
        for (int j = 0; j < K; j++) {
            const float w = s->topk_w[t * K + j];
            const float *yr = s->yg + (size_t)s->disp.row_of[t * K + j] * d;
            for (int i = 0; i < d; i++) xr[i] += w * yr[i];
        }
    }
    if (L->has_shared) { /* Qwen2-MoE: + sigmoid(w_s · x) · shared_expert(x) */
        const moec_ffn *sh = &L->shared;
        int32_t off[2] = {0, T};
        moec_ffn_grouped(s->ffn_out, s->xn, &sh, off, 1, d, s->ff_max, s->h_gate, s->h_up, s->items);
        moec_matmul(s->gate_scalar, s->xn, &L->shared_gate, NULL, T);
        for (int t = 0; t < T; t++) {
            const float g = 1.f / (1.f + expf(-s->gate_scalar[t]));
            float *xr = s->x + (size_t)t * d;
            const float *yr = s->ffn_out + (size_t)t * d;
            for (int i = 0; i < d; i++) xr[i] += g * yr[i];
        }
    }
}

static void dense_block(moec_session *s, const moec_layer *L, int T) {
    const int d = s->m->hp.n_embd;
    const moec_ffn *f = &L->dense;
    int32_t off[2] = {0, T};
    moec_ffn_grouped(s->ffn_out, s->xn, &f, off, 1, d, s->ff_max, s->h_gate, s->h_up, s->items);
    for (size_t i = 0; i < (size_t)T * d; i++) s->x[i] += s->ffn_out[i];
}

/* ------------------------------------------------------------------ model */

void moec_forward_chunk(moec_session *s, const int32_t *ids, int T, float *logits, int all_logits) {
    moec_model *m = s->m;
    const moec_hparams *hp = &m->hp;
    const int d = hp->n_embd;
    MOEC_ASSERT(T > 0 && T <= MOEC_UBATCH && s->n_past + T <= s->n_ctx);
#ifdef _OPENMP
    omp_set_num_threads(m->n_threads);
#endif
    const size_t row_bytes = (size_t)d * moec_dtype_size(m->tok_embd.dtype);
    for (int t = 0; t < T; t++)
        moec_to_f32(s->x + (size_t)t * d, (const char *)m->tok_embd.data + (size_t)ids[t] * row_bytes,
                    m->tok_embd.dtype, (size_t)d);
    for (int il = 0; il < hp->n_layer; il++) {
        const moec_layer *L = &m->layers[il];
        attention_block(s, L, il, T);
        moec_rmsnorm(s->xn, s->x, L->ffn_norm, T, d, hp->rms_eps);
        if (L->is_moe) moe_block(s, L, T);
        else dense_block(s, L, T);
    }
    s->n_past += T;
    if (!logits) return;
    /* only the rows whose logits are wanted go through the final norm and the LM head */
    const int first = all_logits ? 0 : T - 1;
    moec_rmsnorm(s->xn, s->x + (size_t)first * d, m->out_norm, T - first, d, hp->rms_eps);
    moec_matmul(logits, s->xn, &m->output, NULL, T - first);
}
