/* rope.c — RoPE frequencies for every supported rope type (see rope.h). The formulas follow
 * transformers' modeling_rope_utils (the test oracle); tests/py_test_hf.py checks each type. */
#include "nn/rope.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>

const char *moec_rope_type_name(moec_rope_type t) {
    switch (t) {
    case MOEC_ROPE_LINEAR: return "linear";
    case MOEC_ROPE_DYNAMIC: return "dynamic";
    case MOEC_ROPE_YARN: return "yarn";
    case MOEC_ROPE_LLAMA3: return "llama3";
    default: return "default";
    }
}

static const double PI = 3.14159265358979323846;

static double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0; }

/* The rotary dimension where a wave makes n_rot turns over the original context. */
static double yarn_correction_dim(double n_rot, int dim, double base, double max_pos) {
    return (dim * log(max_pos / (n_rot * 2 * PI))) / (2 * log(base));
}

void moec_rope_inv_freq(const moec_rope_cfg *c, int hd, int64_t seq_len, double *inv, double *attn_factor) {
    const int half = hd / 2;
    double base = c->theta;
    *attn_factor = 1.0;
    if (c->type == MOEC_ROPE_DYNAMIC) {
        const double L = seq_len > c->max_pos ? (double)seq_len : (double)c->max_pos;
        base *= pow(c->factor * L / c->max_pos - (c->factor - 1), (double)hd / (hd - 2));
    }
    for (int i = 0; i < half; i++) inv[i] = 1.0 / pow(base, (double)(2 * i) / hd);
    switch (c->type) {
    case MOEC_ROPE_LINEAR:
        for (int i = 0; i < half; i++) inv[i] /= c->factor;
        break;
    case MOEC_ROPE_YARN: {
        double lo = yarn_correction_dim(c->beta_fast, hd, base, c->orig_max_pos);
        double hi = yarn_correction_dim(c->beta_slow, hd, base, c->orig_max_pos);
        if (c->truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        if (lo < 0) lo = 0;
        if (hi > hd - 1) hi = hd - 1;
        if (lo == hi) hi += 0.001; /* as transformers: avoid a zero-width ramp */
        for (int i = 0; i < half; i++) {
            double ramp = ((double)i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            const double extra = 1.0 - ramp; /* share of the extrapolated (unscaled) frequency */
            inv[i] = inv[i] / c->factor * (1.0 - extra) + inv[i] * extra;
        }
        if (c->attn_factor >= 0) *attn_factor = c->attn_factor;
        else if (c->mscale > 0 && c->mscale_all_dim > 0)
            *attn_factor = yarn_mscale(c->factor, c->mscale) / yarn_mscale(c->factor, c->mscale_all_dim);
        else *attn_factor = yarn_mscale(c->factor, 1.0);
        break;
    }
    case MOEC_ROPE_LLAMA3: {
        const double lo_wl = c->orig_max_pos / c->low_freq_factor, hi_wl = c->orig_max_pos / c->high_freq_factor;
        for (int i = 0; i < half; i++) {
            const double wl = 2 * PI / inv[i];
            if (wl > lo_wl) inv[i] /= c->factor;                 /* low frequencies: interpolate */
            else if (!(wl < hi_wl)) {                            /* the band between: blend */
                const double s = (c->orig_max_pos / wl - c->low_freq_factor) / (c->high_freq_factor - c->low_freq_factor);
                inv[i] = (1 - s) * inv[i] / c->factor + s * inv[i];
            }
        }
        break;
    }
    default: break;
    }
}

int moec_rope_fill(float *cos_tab, float *sin_tab, int n_ctx, int hd, const moec_rope_cfg *cfg) {
    const int half = hd / 2;
    double *inv = malloc((size_t)half * sizeof *inv);
    if (!inv) return -1;
    double af = 1.0;
    for (int p = 0; p < n_ctx; p++) {
        if (p == 0 || (cfg->type == MOEC_ROPE_DYNAMIC && p + 1 > cfg->max_pos)) moec_rope_inv_freq(cfg, hd, p + 1, inv, &af);
        for (int i = 0; i < half; i++) {
            const double a = (double)p * inv[i];
            cos_tab[(size_t)p * half + i] = (float)(cos(a) * af);
            sin_tab[(size_t)p * half + i] = (float)(sin(a) * af);
        }
    }
    free(inv);
    return 0;
}
