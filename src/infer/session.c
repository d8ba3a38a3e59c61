/* session.c — session lifetime and the public forward entry point (chunking, id checks). */
#include "infer/session.h"

#include "core/error.h"
#include "core/mem.h"
#include "nn/ops.h"
#include "moe/router.h"
#include "nn/rope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void **ptr;
    size_t bytes;
} slot;

moec_status moec_session_new(moec_session **out, moec_model *m, int32_t n_ctx, moec_error *err) {
    *out = NULL;
    const moec_hparams *hp = &m->hp;
    if (n_ctx < 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "context size %d is negative", n_ctx);
    /* a non-causal router (expert choice) cannot decode without a causal decode router (issue 10) */
    if (hp->n_expert > 0) {
        moec_status rs = moec_router_check_servable(&hp->route, err);
        if (rs) return rs;
    }
    if (n_ctx == 0) n_ctx = hp->max_pos < 4096 ? hp->max_pos : 4096;
    if (n_ctx > hp->n_ctx_max)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "context size %d exceeds %s %d", n_ctx,
                        hp->n_ctx_max > hp->max_pos ? "max_position_embeddings x rope factor" : "max_position_embeddings",
                        hp->n_ctx_max);
    moec_session *s = calloc(1, sizeof *s);
    if (!s) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    s->m = m;
    s->n_ctx = n_ctx;
    const size_t UB = MOEC_UBATCH, d = (size_t)hp->n_embd, hd = (size_t)hp->head_dim;
    const size_t kvd = (size_t)hp->n_head_kv * hd;
    const size_t E = (size_t)moec_hparams_n_route(hp); /* the router's columns */
    const size_t f = sizeof(float);
    slot slots[] = {
        {(void **)&s->k_cache, (size_t)hp->n_layer * kvd * (size_t)n_ctx * f},
        {(void **)&s->v_cache, (size_t)hp->n_layer * kvd * (size_t)n_ctx * f},
        {(void **)&s->rope_cos, (size_t)n_ctx * hd / 2 * f},
        {(void **)&s->rope_sin, (size_t)n_ctx * hd / 2 * f},
        {(void **)&s->att_scratch, (size_t)m->n_threads * (size_t)n_ctx * f},
        {(void **)&s->xn, UB * d * f},
        {(void **)&s->rstd, UB * f},
        {(void **)&s->pos, UB * sizeof(int32_t)},
        {(void **)&s->expert_counts, (size_t)hp->n_layer * E * sizeof(int64_t)},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) total += (slots[i].bytes + 63) & ~(size_t)63;
    /* the KV cache is left untouched until used: without this check a context too big for the
     * machine would be "allocated" and end in an OOM kill mid-generation */
    char what[96];
    snprintf(what, sizeof what, "the KV cache and buffers of a %d-token session", n_ctx);
    moec_status cst = moec_mem_check(total, what, err);
    if (cst) {
        free(s);
        return cst;
    }
    s->block = aligned_alloc(64, total);
    if (!s->block) {
        free(s);
        return moec_err(err, MOEC_ERR_OOM, "out of memory allocating a %d-token session (%zu MB)", n_ctx, total >> 20);
    }
    s->block_bytes = total;
    char *p = s->block;
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        *slots[i].ptr = p;
        p += (slots[i].bytes + 63) & ~(size_t)63;
    }
    memset(s->expert_counts, 0, (size_t)hp->n_layer * E * sizeof(int64_t));
    moec_status st = moec_layer_acts_new(&s->acts, hp, -1, MOEC_UBATCH, 1, MOEC_UBATCH, 0, 0, err);
    if (st) {
        free(s->block);
        free(s);
        return st;
    }
    if (moec_rope_fill(s->rope_cos, s->rope_sin, n_ctx, hp->head_dim, &hp->rope)) {
        moec_layer_acts_free(&s->acts);
        free(s->block);
        free(s);
        return moec_err(err, MOEC_ERR_OOM, "out of memory filling the rotary tables");
    }
    moec_rng_seed(&s->serve_rng, 0x7407); /* fixed: a fresh session serves reproducibly */
    moec_rng_seed(&s->seq_rng, moec_rng_u64(&s->serve_rng));
    *out = s;
    return MOEC_OK;
}

void moec_session_free(moec_session *s) {
    if (!s) return;
    moec_layer_acts_free(&s->acts);
    free(s->block);
    free(s);
}

int32_t moec_session_n_past(const moec_session *s) { return s->n_past; }

moec_status moec_session_set_experts_per_token(moec_session *s, int32_t k, moec_error *err) {
    const moec_hparams *hp = &s->m->hp;
    if (k < 0 || k > hp->n_expert_used)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "experts per token %d outside [1, %d] (0 = the model's)", k,
                        hp->n_expert_used);
    s->route_opts.k = k;
    return MOEC_OK;
}

const int64_t *moec_session_expert_counts(const moec_session *s) { return s->expert_counts; }

size_t moec_session_memory_bytes(const moec_session *s) { return s->block_bytes + moec_layer_acts_bytes(&s->acts); }

void moec_session_clear_expert_counts(moec_session *s) {
    const moec_hparams *hp = &s->m->hp;
    memset(s->expert_counts, 0, (size_t)hp->n_layer * (size_t)moec_hparams_n_route(hp) * sizeof(int64_t));
}
void moec_session_reset(moec_session *s) {
    s->n_past = 0;
    moec_rng_seed(&s->seq_rng, moec_rng_u64(&s->serve_rng)); /* a new sequence draws its own (THOR) */
}

moec_status moec_session_forward(moec_session *s, const int32_t *ids, int32_t n, float *logits, int all_logits,
                                 moec_error *err) {
    const moec_hparams *hp = &s->m->hp;
    if (n <= 0) return moec_err(err, MOEC_ERR_INVALID_ARG, "no tokens to process");
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= hp->n_vocab)
            return moec_err(err, MOEC_ERR_INVALID_ARG, "token id %d at position %d is out of range [0, %d)", ids[i], i,
                            hp->n_vocab);
    if (n > s->n_ctx - s->n_past)
        return moec_err(err, MOEC_ERR_CONTEXT_FULL, "%d tokens do not fit: %d of %d context positions are used", n,
                        s->n_past, s->n_ctx);
    for (int32_t done = 0; done < n;) {
        int T = n - done < MOEC_UBATCH ? n - done : MOEC_UBATCH;
        const int last = done + T == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)done * (size_t)hp->n_vocab;
        else if (logits && last) lg = logits;
        moec_forward_chunk(s, ids + done, T, lg, all_logits);
        done += T;
    }
    return MOEC_OK;
}
