/* rope.h — RoPE frequency tables, including the scaled variants that long-context MoE
 * checkpoints use (Hugging Face rope_type "linear", "dynamic", "yarn", "llama3").
 *
 * Scaling is data, not a code path: the tables hold cos/sin per (position, frequency) with the
 * attention factor folded in (transformers multiplies cos and sin by it), so the RoPE ops of
 * ops.c / ops_train.c and their backward passes run unchanged for every rope type.
 * Not here: partial rotary, longrope, per-layer rope parameters (hparams refuses them). */
#ifndef MOEC_NN_ROPE_H
#define MOEC_NN_ROPE_H

#include <stdint.h>

typedef enum {
    MOEC_ROPE_DEFAULT = 0,
    MOEC_ROPE_LINEAR,  /* inv_freq / factor */
    MOEC_ROPE_DYNAMIC, /* NTK-aware base, grown with the sequence length beyond max_pos */
    MOEC_ROPE_YARN,    /* ramp between interpolation and extrapolation + attention factor */
    MOEC_ROPE_LLAMA3   /* wavelength-banded interpolation */
} moec_rope_type;

typedef struct {
    moec_rope_type type;
    double theta;            /* base */
    double factor;           /* linear / dynamic / yarn / llama3 */
    int32_t max_pos;         /* config max_position_embeddings (dynamic's reference length) */
    int32_t orig_max_pos;    /* original_max_position_embeddings (yarn, llama3) */
    double attn_factor;      /* yarn: < 0 = derived from factor (and mscale / mscale_all_dim) */
    double mscale, mscale_all_dim; /* yarn, 0 = absent */
    double beta_fast, beta_slow;   /* yarn (32, 1) */
    int truncate;            /* yarn: floor/ceil the correction range (default 1) */
    double low_freq_factor, high_freq_factor; /* llama3 */
} moec_rope_cfg;

/* Name of a rope type as config.json spells it. */
const char *moec_rope_type_name(moec_rope_type t);

/* inv_freq[hd/2] and the cos/sin attention factor for a sequence of seq_len tokens (only
 * "dynamic" depends on seq_len). Frequencies are computed in double. */
void moec_rope_inv_freq(const moec_rope_cfg *cfg, int hd, int64_t seq_len, double *inv_freq, double *attn_factor);

/* cos_tab/sin_tab [n_ctx, hd/2] for positions [0, n_ctx), the layout moec_rope and
 * moec_rope_pos read. Position p uses the frequencies for seq_len = p + 1: for every type but
 * "dynamic" that is one table; for "dynamic" it equals transformers' token-by-token decoding
 * (its prefill of a prompt longer than max_pos uses the prompt length for all positions). */
/* Returns 0, or -1 when its hd/2-double scratch cannot be allocated (tables untouched). */
int moec_rope_fill(float *cos_tab, float *sin_tab, int n_ctx, int hd, const moec_rope_cfg *cfg);

#endif
