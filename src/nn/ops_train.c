/* ops_train.c — see ops_train.h. Scalar loops written so that GCC vectorises the inner ones;
 * row reductions in double where rows are long (norms, losses). Not the inference kernels
 * (nn/ops.c), not the linear layers (nn/linear.c). Nothing here allocates. */
#include "nn/ops_train.h"

#include "core/threads.h"
#include "nn/gemm.h"
#include "nn/linear.h"
#include "nn/vmath.h"

#include <math.h>
#include <string.h>

/* Below this many multiply-adds a parallel call costs more than it saves (also the work per task). */
#define PAR_MIN_WORK 32768

/* ---------------------------------------------------------------------------------------------
 * RMSNorm */

typedef struct {
    float *y, *rstd, *dx;
    const float *x, *w, *dy, *rs;
    int n;
    float eps;
} norm_job;

static void rmsnorm_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const norm_job *j = job;
    float *y = j->y, *rstd = j->rstd;
    const float *x = j->x, *w = j->w;
    const int n = j->n;
    const float eps = j->eps;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * (size_t)n;
        float *yr = y + (size_t)r * (size_t)n;
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        const float s = (float)(1.0 / sqrt(ss / n + (double)eps));
        rstd[r] = s;
        for (int i = 0; i < n; i++) yr[i] = xr[i] * s * w[i];
    }
}

void moec_rmsnorm_forward_train(float *y, float *rstd, const float *x, const float *w, int rows, int n, float eps) {
    if (rows <= 0 || n <= 0) return;
    norm_job j = {.y = y, .rstd = rstd, .x = x, .w = w, .n = n, .eps = eps};
    moec_parallel_range(rows, moec_grain(rows, n, PAR_MIN_WORK), rmsnorm_rows, &j);
}

/* With xhat = x * rstd and y = xhat * w:
 *   dx = rstd * (dy*w - xhat * mean(dy*w * xhat)),   dw = Σ_rows dy * xhat. */
static void rmsnorm_back_rows(void *job, int64_t r0, int64_t r1, int tid) {
    const norm_job *j = job;
    float *dx = j->dx;
    const float *x = j->x, *w = j->w, *dy = j->dy, *rstd = j->rs;
    const int n = j->n;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const size_t o = (size_t)r * (size_t)n;
        const float *xr = x + o, *dyr = dy + o;
        float *dxr = dx + o;
        const float s = rstd[r];
        double dot = 0.0; /* Σ dy*w*x */
        for (int i = 0; i < n; i++) dot += (double)dyr[i] * w[i] * xr[i];
        const float c = (float)(dot * (double)s * (double)s / n);
        for (int i = 0; i < n; i++) dxr[i] += s * (dyr[i] * w[i] - xr[i] * c);
    }
}

void moec_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                           int rows, int n) {
    if (rows <= 0 || n <= 0) return;
    norm_job j = {.dx = dx, .x = x, .w = w, .dy = dy, .rs = rstd, .n = n};
    moec_parallel_range(rows, moec_grain(rows, n, PAR_MIN_WORK), rmsnorm_back_rows, &j);
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

typedef struct {
    float *x;
    int n_heads, hd;
    const float *cos_tab, *sin_tab;
    const int32_t *pos;
    float sign;
} rope_job;

static void rope_rows(void *job, int64_t t0, int64_t t1, int tid) {
    const rope_job *j = job;
    float *x = j->x;
    const int n_heads = j->n_heads, hd = j->hd, half = hd / 2;
    const float *cos_tab = j->cos_tab, *sin_tab = j->sin_tab, sign = j->sign;
    const int32_t *pos = j->pos;
    (void)tid;
    for (int64_t t = t0; t < t1; t++) {
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

static void rope_rotate(float *x, int T, int n_heads, int hd, const float *cos_tab, const float *sin_tab,
                        const int32_t *pos, float sign) {
    rope_job j = {x, n_heads, hd, cos_tab, sin_tab, pos, sign};
    moec_parallel_range(T, moec_grain(T, (int64_t)n_heads * hd, PAR_MIN_WORK), rope_rows, &j);
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

typedef struct {
    float *out, *probs, *dq, *dk, *dv, *dprobs;
    const float *q, *k, *v, *dout, *cprobs;
    int S, H, Hkv, hd;
} attn_job;

/* Causal blocking: a block of ATTN_BLOCK query rows sees keys 0 .. its last row only, so the
 * GEMMs skip the upper triangle's blocks (at S = 256 they do 10/16 of the full square). Each
 * (sequence, head) runs its GEMMs on one thread (OpenBLAS is held at one thread), so results do
 * not depend on the thread count. */
#define ATTN_BLOCK 64

static void attn_fwd_item(void *job, int64_t item, int tid) {
    const moec_gemm_fn gemm = moec_matmul_gemm(); /* fp32, or bf16 products in mixed precision */
    const attn_job *J = job;
    const int S = J->S, H = J->H, Hkv = J->Hkv, hd = J->hd;
    const int b = (int)(item / H), h = (int)(item % H), kvh = h / (H / Hkv);
    const float scale = 1.f / sqrtf((float)hd);
    const int qs = H * hd, ks = Hkv * hd; /* token strides */
    const float *Q = J->q + (size_t)b * S * qs + (size_t)h * hd; /* query i at Q + i*qs */
    const float *K = J->k + (size_t)b * S * ks + (size_t)kvh * hd, *V = J->v + (size_t)b * S * ks + (size_t)kvh * hd;
    float *P = J->probs + ((size_t)b * H + h) * S * S, *O = J->out + (size_t)b * S * qs + (size_t)h * hd;
    (void)tid;
    for (int i0 = 0; i0 < S; i0 += ATTN_BLOCK) {
        const int i1 = i0 + ATTN_BLOCK < S ? i0 + ATTN_BLOCK : S, M = i1 - i0;
        gemm(MOEC_NO_TRANS, MOEC_TRANS, M, i1, hd, scale, Q + (size_t)i0 * qs, qs, K, ks, 0.f,
                    P + (size_t)i0 * S, S);
        for (int i = i0; i < i1; i++) {
            float *p = P + (size_t)i * S, m = -INFINITY;
            for (int j = 0; j <= i; j++) m = p[j] > m ? p[j] : m;
            const float inv = (float)(1.0 / moec_vexp_sum(p, p, m, i + 1));
            for (int j = 0; j <= i; j++) p[j] *= inv;
            for (int j = i + 1; j < S; j++) p[j] = 0.f;
        }
        gemm(MOEC_NO_TRANS, MOEC_NO_TRANS, M, hd, i1, 1.f, P + (size_t)i0 * S, S, V, ks, 0.f,
                    O + (size_t)i0 * qs, qs);
    }
}

/* Items (batch, head) of very different cost are claimed one at a time (dynamic). */
static void attn_run(attn_job *j, int n_items, int64_t work, moec_task_fn fn) {
    if (n_items > 1 && work > PAR_MIN_WORK) moec_parallel_for(n_items, fn, j);
    else
        for (int i = 0; i < n_items; i++) fn(j, i, 0);
}

void moec_attention_forward_train(float *out, float *probs, const float *q, const float *k, const float *v, int B,
                                  int S, int H, int Hkv, int hd) {
    if (B <= 0 || S <= 0 || H <= 0 || Hkv <= 0 || hd <= 0) return;
    attn_job j = {.out = out, .probs = probs, .q = q, .k = k, .v = v, .S = S, .H = H, .Hkv = Hkv, .hd = hd};
    attn_run(&j, B * H, (int64_t)B * H * S * S * hd, attn_fwd_item);
}

/* Per (sequence, head), with P = softmax(scale Q Kᵀ) causal and O = P V the forward's:
 *   dP = dO Vᵀ;   dS = P ∘ (dP − D) · scale,  D_i = Σ_j P_ij dP_ij (= dO_i · O_i in exact
 *   arithmetic; taken from dP itself, which with bf16 products is not O's: softmax's own backward);
 *   dQ += dS K;   dK += dSᵀ Q;   dV += Pᵀ dO
 * as blocked GEMMs: row blocks for dP, dS and dQ, then column blocks (key j gets rows i >= j)
 * for dK and dV. dS lives in dprobs (the same shape as probs). */
static void attn_back_item(void *job, int64_t item, int tid) {
    const moec_gemm_fn gemm = moec_matmul_gemm(); /* fp32, or bf16 products in mixed precision */
    const attn_job *J = job;
    const int S = J->S, H = J->H, Hkv = J->Hkv, hd = J->hd, group = H / Hkv;
    const int b = (int)(item / Hkv), kvh = (int)(item % Hkv);
    const float scale = 1.f / sqrtf((float)hd);
    const int qs = H * hd, ks = Hkv * hd;
    const size_t kvoff = (size_t)b * S * ks + (size_t)kvh * hd; /* key j at +j*ks */
    const float *K = J->k + kvoff, *V = J->v + kvoff;
    float *dK = J->dk + kvoff, *dV = J->dv + kvoff;
    (void)tid;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const size_t qoff = (size_t)b * S * qs + (size_t)h * hd; /* query i at +i*qs */
        const float *Q = J->q + qoff, *dO = J->dout + qoff;
        const float *P = J->cprobs + ((size_t)b * H + h) * S * S;
        float *dQ = J->dq + qoff, *dS = J->dprobs + ((size_t)b * H + h) * S * S;
        for (int i0 = 0; i0 < S; i0 += ATTN_BLOCK) {
            const int i1 = i0 + ATTN_BLOCK < S ? i0 + ATTN_BLOCK : S, M = i1 - i0;
            gemm(MOEC_NO_TRANS, MOEC_TRANS, M, i1, hd, 1.f, dO + (size_t)i0 * qs, qs, V, ks, 0.f,
                        dS + (size_t)i0 * S, S);
            for (int i = i0; i < i1; i++) {
                const float *p = P + (size_t)i * S;
                float *ds = dS + (size_t)i * S;
                const float D = dot_f(p, ds, i + 1);
                for (int j = 0; j <= i; j++) ds[j] = p[j] * (ds[j] - D) * scale;
                for (int j = i + 1; j < i1; j++) ds[j] = 0.f;
            }
            gemm(MOEC_NO_TRANS, MOEC_NO_TRANS, M, hd, i1, 1.f, dS + (size_t)i0 * S, S, K, ks, 1.f,
                        dQ + (size_t)i0 * qs, qs);
        }
        /* key block [j0, j1) is seen by rows j0 .. S-1, whose dS columns j0 .. j1 were all written */
        for (int j0 = 0; j0 < S; j0 += ATTN_BLOCK) {
            const int j1 = j0 + ATTN_BLOCK < S ? j0 + ATTN_BLOCK : S, N = j1 - j0, R = S - j0;
            gemm(MOEC_TRANS, MOEC_NO_TRANS, N, hd, R, 1.f, dS + (size_t)j0 * S + j0, S,
                        Q + (size_t)j0 * qs, qs, 1.f, dK + (size_t)j0 * ks, ks);
            gemm(MOEC_TRANS, MOEC_NO_TRANS, N, hd, R, 1.f, P + (size_t)j0 * S + j0, S,
                        dO + (size_t)j0 * qs, qs, 1.f, dV + (size_t)j0 * ks, ks);
        }
    }
}

void moec_attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout, const float *q,
                             const float *k, const float *v, const float *probs, int B, int S, int H, int Hkv, int hd) {
    if (B <= 0 || S <= 0 || H <= 0 || Hkv <= 0 || hd <= 0) return;
    attn_job j = {.dq = dq, .dk = dk, .dv = dv, .dprobs = dprobs, .q = q, .k = k, .v = v, .dout = dout,
                  .cprobs = probs, .S = S, .H = H, .Hkv = Hkv, .hd = hd};
    attn_run(&j, B * Hkv, (int64_t)B * H * S * S * hd, attn_back_item);
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU: h = g σ(g) u;  dh/dg = u σ(g) (1 + g (1 - σ(g))),  dh/du = g σ(g). */

typedef struct {
    float *dgate, *dup;
    const float *dh, *gate, *up;
} swiglu_job;

static void swiglu_back_range(void *job, int64_t i0, int64_t i1, int tid) {
    const swiglu_job *j = job;
    float *dgate = j->dgate, *dup = j->dup;
    const float *dh = j->dh, *gate = j->gate, *up = j->up;
    (void)tid;
    moec_vswiglu_back(dgate + i0, dup + i0, dh + i0, gate + i0, up + i0, i1 - i0, 1);
}

void moec_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, int64_t n) {
    swiglu_job j = {dgate, dup, dh, gate, up};
    moec_parallel_range(n, moec_grain(n, 1, PAR_MIN_WORK), swiglu_back_range, &j);
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

typedef struct {
    float *dlogits;
    const float *logits;
    const int32_t *targets;
    int T, V, nblk;
    float g1; /* gradient of one valid row's loss */
    double *part;
} ce_job;

static void ce_block(const ce_job *J, int bk) {
    float *dlogits = J->dlogits;
    const float *logits = J->logits;
    const int32_t *targets = J->targets;
    const int T = J->T, V = J->V, nblk = J->nblk;
    const float g1 = J->g1;
    double *part = J->part;
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
        double s;
        if (dz) {
            s = moec_vexp_sum(dz, z, m, V);
            const float r = (float)(g1 / s);
            for (int j = 0; j < V; j++) dz[j] *= r;
            dz[y] -= g1;
        } else {
            s = moec_vexp_sum(NULL, z, m, V); /* the same sum as with dz */
        }
        acc += (double)m + log(s) - (double)zy;
    }
    part[bk] = acc;
}

static void ce_blocks(void *job, int64_t b0, int64_t b1, int tid) {
    (void)tid;
    for (int64_t bk = b0; bk < b1; bk++) ce_block(job, (int)bk);
}

float moec_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int T, int V, float dscale) {
    if (T <= 0 || V <= 0) return 0.f;
    int n_valid = 0, n_bad = 0;
    for (int t = 0; t < T; t++) {
        n_valid += targets[t] >= 0 && targets[t] < V;
        n_bad += targets[t] >= V;
    }
    const int nblk = T < CE_BLOCKS ? T : CE_BLOCKS;
    double part[CE_BLOCKS];
    ce_job j = {dlogits, logits, targets, T, V, nblk, n_valid ? dscale / (float)n_valid : 0.f, part};
    moec_parallel_range(nblk, (int64_t)T * V > PAR_MIN_WORK ? 1 : nblk, ce_blocks, &j);
    if (n_bad) return NAN;
    if (!n_valid) return 0.f;
    double sum = 0.0;
    for (int bk = 0; bk < nblk; bk++) sum += part[bk];
    return (float)(sum / n_valid);
}

