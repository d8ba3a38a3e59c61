/* ops_train.c — see ops_train.h. Scalar loops written so that GCC vectorises the inner ones;
 * row reductions in double where rows are long (norms, losses). Not the inference kernels
 * (nn/ops.c), not the linear layers (nn/linear.c). Nothing here allocates. */
#include "nn/ops_train.h"

#include <math.h>
#include <string.h>

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PAR_MIN_WORK 32768

/* ---------------------------------------------------------------------------------------------
 * RMSNorm */

void moec_rmsnorm_forward_train(float *y, float *rstd, const float *x, const float *w, int rows, int n, float eps) {
    if (rows <= 0 || n <= 0) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * n > PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * (size_t)n;
        float *yr = y + (size_t)r * (size_t)n;
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        const float s = (float)(1.0 / sqrt(ss / n + (double)eps));
        rstd[r] = s;
        for (int i = 0; i < n; i++) yr[i] = xr[i] * s * w[i];
    }
}

/* With xhat = x * rstd and y = xhat * w:
 *   dx = rstd * (dy*w - xhat * mean(dy*w * xhat)),   dw = Σ_rows dy * xhat. */
void moec_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                           int rows, int n) {
    if (rows <= 0 || n <= 0) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * n > PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * (size_t)n;
        const float *xr = x + o, *dyr = dy + o;
        float *dxr = dx + o;
        const float s = rstd[r];
        double dot = 0.0; /* Σ dy*w*x */
        for (int i = 0; i < n; i++) dot += (double)dyr[i] * w[i] * xr[i];
        const float c = (float)(dot * (double)s * (double)s / n);
        for (int i = 0; i < n; i++) dxr[i] += s * (dyr[i] * w[i] - xr[i] * c);
    }
    /* dw is shared by all rows: one writer, rows in order (deterministic). */
    if (dw)
        for (int r = 0; r < rows; r++) {
            const size_t o = (size_t)r * (size_t)n;
            const float s = rstd[r];
            for (int i = 0; i < n; i++) dw[i] += dy[o + i] * (x[o + i] * s);
        }
}

/* ---------------------------------------------------------------------------------------------
 * RoPE (rotate-half): (a, b) -> (a c - b s, b c + a s) on the pairs (i, i + hd/2). */

static void rope_rotate(float *x, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                        const int32_t *pos, float sign) {
    const int half = hd / 2;
#pragma omp parallel for schedule(static) if ((int64_t)T * n_heads * hd > PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        const float *c = cos_tab + (size_t)pos[t] * half, *s = sin_tab + (size_t)pos[t] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void moec_rope_pos(float *x, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                   const int32_t *pos) {
    rope_rotate(x, T, n_heads, hd, cos_tab, sin_tab, pos, 1.f);
}

/* The Jacobian of a rotation is the rotation; its transpose rotates by -angle. */
void moec_rope_backward(float *dx, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                        const int32_t *pos) {
    rope_rotate(dx, T, n_heads, hd, cos_tab, sin_tab, pos, -1.f);
}

/* ---------------------------------------------------------------------------------------------
 * Causal GQA attention */

/* Dot product with 8 independent partial sums (a fixed order, so deterministic) that GCC turns
 * into vector lanes; a plain `d += a[i]*b[i]` is a serial chain it may not reorder. */
static float dot_f(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float d = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) d += a[i] * b[i];
    return d;
}

void moec_attention_forward_train(float *out, float *probs, const float *q, const float *k, const float *v, int B,
                                  int S, int H, int Hkv, int hd) {
    if (B <= 0 || S <= 0 || H <= 0 || Hkv <= 0 || hd <= 0) return;
    const int group = H / Hkv;
    const float scale = 1.f / sqrtf((float)hd);
    const size_t qs = (size_t)H * hd, ks = (size_t)Hkv * hd; /* token strides */
    const int n_items = B * H;
#pragma omp parallel for schedule(dynamic, 1) if (n_items > 1 && (int64_t)n_items * S * S * hd > PAR_MIN_WORK)
    for (int item = 0; item < n_items; item++) {
        const int b = item / H, h = item % H, kvh = h / group;
        const float *kb = k + (size_t)b * S * ks + (size_t)kvh * hd; /* key j at kb + j*ks */
        const float *vb = v + (size_t)b * S * ks + (size_t)kvh * hd;
        for (int i = 0; i < S; i++) {
            const float *qi = q + ((size_t)b * S + i) * qs + (size_t)h * hd;
            float *p = probs + (((size_t)b * H + h) * S + i) * S;
            float m = -INFINITY;
            for (int j = 0; j <= i; j++) {
                p[j] = dot_f(qi, kb + (size_t)j * ks, hd) * scale;
                m = p[j] > m ? p[j] : m;
            }
            float sum = 0.f;
            for (int j = 0; j <= i; j++) {
                p[j] = expf(p[j] - m);
                sum += p[j];
            }
            const float inv = 1.f / sum;
            for (int j = 0; j <= i; j++) p[j] *= inv;
            for (int j = i + 1; j < S; j++) p[j] = 0.f;
            float *oi = out + ((size_t)b * S + i) * qs + (size_t)h * hd;
            for (int c = 0; c < hd; c++) oi[c] = 0.f;
            for (int j = 0; j <= i; j++) {
                const float pj = p[j], *vj = vb + (size_t)j * ks;
                for (int c = 0; c < hd; c++) oi[c] += pj * vj[c];
            }
        }
    }
}

/* Per query row i of head h (scores s_ij = scale q_i·k_j, p = softmax(s)):
 *   dv_j += p_ij dout_i;   dp_ij = dout_i·v_j;   ds_ij = p_ij (dp_ij - D_i),
 *   D_i = Σ_j p_ij dp_ij = dout_i·(Σ_j p_ij v_j) = dout_i·out_i;
 *   dq_i += scale Σ_j ds_ij k_j;   dk_j += scale ds_ij q_i.
 * D_i is recomputed from probs and v through a fixed tile on the stack, so no scratch. */
#define ATTN_TILE 64

void moec_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                             const float *v, const float *probs, int B, int S, int H, int Hkv, int hd) {
    if (B <= 0 || S <= 0 || H <= 0 || Hkv <= 0 || hd <= 0) return;
    const int group = H / Hkv;
    const float scale = 1.f / sqrtf((float)hd);
    const size_t qs = (size_t)H * hd, ks = (size_t)Hkv * hd;
    const int n_items = B * Hkv;
#pragma omp parallel for schedule(dynamic, 1) if (n_items > 1 && (int64_t)B * H * S * S * hd > PAR_MIN_WORK)
    for (int item = 0; item < n_items; item++) {
        const int b = item / Hkv, kvh = item % Hkv;
        const size_t kvoff = (size_t)b * S * ks + (size_t)kvh * hd; /* key j at +j*ks */
        const float *kb = k + kvoff, *vb = v + kvoff;
        float *dkb = dk + kvoff, *dvb = dv + kvoff;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int i = 0; i < S; i++) {
                const size_t qoff = ((size_t)b * S + i) * qs + (size_t)h * hd;
                const float *qi = q + qoff, *doi = dout + qoff;
                float *dqi = dq + qoff;
                const float *p = probs + (((size_t)b * H + h) * S + i) * S;
                float D = 0.f;
                for (int c0 = 0; c0 < hd; c0 += ATTN_TILE) {
                    const int nc = hd - c0 < ATTN_TILE ? hd - c0 : ATTN_TILE;
                    float o[ATTN_TILE];
                    for (int c = 0; c < nc; c++) o[c] = 0.f;
                    for (int j = 0; j <= i; j++) {
                        const float pj = p[j], *vj = vb + (size_t)j * ks + c0;
                        for (int c = 0; c < nc; c++) o[c] += pj * vj[c];
                    }
                    D += dot_f(doi + c0, o, nc);
                }
                for (int j = 0; j <= i; j++) {
                    const float *kj = kb + (size_t)j * ks, *vj = vb + (size_t)j * ks;
                    float *dkj = dkb + (size_t)j * ks, *dvj = dvb + (size_t)j * ks;
                    const float pj = p[j];
                    const float ds = pj * (dot_f(doi, vj, hd) - D) * scale;
                    for (int c = 0; c < hd; c++) {
                        dqi[c] += ds * kj[c];
                        dkj[c] += ds * qi[c];
                        dvj[c] += pj * doi[c];
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU: h = g σ(g) u;  dh/dg = u σ(g) (1 + g (1 - σ(g))),  dh/du = g σ(g). */

void moec_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i], s = 1.f / (1.f + expf(-g));
        dgate[i] += dh[i] * up[i] * s * (1.f + g * (1.f - s));
        dup[i] += dh[i] * g * s;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Embedding */

void moec_embedding_forward(float *x, const float *W, const int32_t *ids, int T, int d) {
    for (int t = 0; t < T; t++) {
        float *xt = x + (size_t)t * d;
        if (ids[t] < 0) memset(xt, 0, (size_t)d * sizeof(float));
        else memcpy(xt, W + (size_t)ids[t] * d, (size_t)d * sizeof(float));
    }
}

void moec_embedding_backward(float *dW, const float *dx, const int32_t *ids, int T, int d) {
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0) continue;
        float *row = dW + (size_t)ids[t] * d;
        const float *g = dx + (size_t)t * d;
        for (int i = 0; i < d; i++) row[i] += g[i];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Losses */

static float max_f(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

float moec_logsumexp(const float *x, int n) {
    if (n <= 0) return -INFINITY;
    const float m = max_f(x, n);
    if (isinf(m)) return m; /* all -inf, or some +inf */
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)expf(x[i] - m);
    return (float)((double)m + log(s));
}

/* Row blocks are fixed by T alone (not by the thread count), and their partial sums are added
 * in block order, so the loss is the same for any number of threads. */
#define CE_BLOCKS 64

float moec_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int T, int V, float dscale) {
    if (T <= 0 || V <= 0) return 0.f;
    int n_valid = 0, n_bad = 0;
    for (int t = 0; t < T; t++) {
        n_valid += targets[t] >= 0 && targets[t] < V;
        n_bad += targets[t] >= V;
    }
    const int nblk = T < CE_BLOCKS ? T : CE_BLOCKS;
    double part[CE_BLOCKS];
    const float g1 = n_valid ? dscale / (float)n_valid : 0.f; /* gradient of one valid row's loss */
#pragma omp parallel for schedule(static) if ((int64_t)T * V > PAR_MIN_WORK)
    for (int bk = 0; bk < nblk; bk++) {
        const int t0 = (int)((int64_t)T * bk / nblk), t1 = (int)((int64_t)T * (bk + 1) / nblk);
        double acc = 0.0;
        for (int t = t0; t < t1; t++) {
            const float *z = logits + (size_t)t * V;
            float *dz = dlogits ? dlogits + (size_t)t * V : NULL;
            const int32_t y = targets[t];
            if (y < 0 || y >= V) {
                if (dz) memset(dz, 0, (size_t)V * sizeof(float));
                continue;
            }
            const float m = max_f(z, V), zy = z[y]; /* read before dz (which may alias z) is written */
            double s = 0.0;
            if (dz) {
                for (int j = 0; j < V; j++) {
                    dz[j] = expf(z[j] - m);
                    s += dz[j];
                }
                const float r = (float)(g1 / s);
                for (int j = 0; j < V; j++) dz[j] *= r;
                dz[y] -= g1;
            } else {
                for (int j = 0; j < V; j++) s += (double)expf(z[j] - m);
            }
            acc += (double)m + log(s) - (double)zy;
        }
        part[bk] = acc;
    }
    if (n_bad) return NAN;
    if (!n_valid) return 0.f;
    double sum = 0.0;
    for (int bk = 0; bk < nblk; bk++) sum += part[bk];
    return (float)(sum / n_valid);
}
