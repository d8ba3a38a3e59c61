/* tool_grad_ops.c — test driver for tests/py_test_grad_ops.py: reads a grad-ops reference file
 * (inputs and PyTorch autograd outputs/gradients), recomputes every case with the C training
 * kernels (nn/ops_train.h, nn/linear.h) and prints one line per reference tensor:
 *     ERR <case>/<tensor> <max|c - ref| / max(max|ref|, 1e-30)> <max|ref|>
 * It does not judge: the Python test holds the tolerance and checks that every reference
 * tensor was reported. Exit 0 when every case ran, 2 on a malformed file or a missing tensor.
 *
 * File format (little-endian), version 1:
 *   "MOECGRAD" (8 bytes), u32 version, u32 n_arrays, then n_arrays times:
 *   u32 name_len, name bytes (no NUL), u32 dtype (0 = f32, 1 = i32), u32 ndim (<= 8),
 *   i64 dims[ndim], data (4 bytes per element, row-major).
 * Array names are "<op>.<tag>/<tensor>"; reference results are "<op>.<tag>/ref.<tensor>".
 * Scalars (eps, dscale, theta) are f32 arrays of one element, dimensions are an i32 array "dims". */
#include "nn/linear.h"
#include "nn/ops.h"
#include "nn/ops_train.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAD_MAGIC "MOECGRAD"
#define GRAD_VERSION 1u
#define MAX_NAME 128
#define MAX_DIMS 8

typedef struct {
    char name[MAX_NAME];
    uint32_t dtype; /* 0 f32, 1 i32 */
    uint32_t ndim;
    int64_t dims[MAX_DIMS];
    int64_t count;
    const void *data; /* borrowed from the file buffer (4-byte aligned copy) */
} arr;

static arr *g_arr;
static uint32_t g_n_arr;
static int g_reported;

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
_Noreturn static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tool_grad_ops: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ------------------------------------------------------------------------------------------ file */

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) die("out of memory");
    return p;
}

typedef struct {
    const unsigned char *p;
    size_t n, off;
} reader;

static void rd(reader *r, void *dst, size_t n, const char *what) {
    if (n > r->n - r->off) die("truncated file while reading %s", what);
    memcpy(dst, r->p + r->off, n);
    r->off += n;
}

/* Loads the whole file; the array data are copied into one aligned block (the file offsets of
 * the payloads are not 4-byte aligned in general). */
static void load(const char *path, void **keep) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    if (fseek(f, 0, SEEK_END) != 0) die("cannot seek %s", path);
    long sz = ftell(f);
    if (sz < 16) die("%s: file too short", path);
    rewind(f);
    unsigned char *buf = xcalloc((size_t)sz, 1);
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) die("cannot read %s", path);
    fclose(f);
    reader r = {buf, (size_t)sz, 0};
    char magic[8];
    uint32_t version, n;
    rd(&r, magic, 8, "magic");
    if (memcmp(magic, GRAD_MAGIC, 8) != 0) die("%s: bad magic (not a grad-ops file)", path);
    rd(&r, &version, 4, "version");
    if (version != GRAD_VERSION) die("%s: unsupported version (this tool reads version 1)", path);
    rd(&r, &n, 4, "array count");
    if (n > 100000) die("%s: implausible array count", path);
    g_arr = xcalloc(n, sizeof(arr));
    g_n_arr = n;
    /* payload copies: at most the file size in total */
    float *data = xcalloc((size_t)sz / 4 + 1, 4);
    size_t data_used = 0;
    for (uint32_t i = 0; i < n; i++) {
        arr *a = &g_arr[i];
        uint32_t len;
        rd(&r, &len, 4, "name length");
        if (len == 0 || len >= MAX_NAME) die("%s: bad name length", path);
        rd(&r, a->name, len, "name");
        a->name[len] = 0;
        rd(&r, &a->dtype, 4, a->name);
        rd(&r, &a->ndim, 4, a->name);
        if (a->dtype > 1 || a->ndim > MAX_DIMS) die("%s: bad dtype or rank of %s", path, a->name);
        a->count = 1;
        for (uint32_t d = 0; d < a->ndim; d++) {
            rd(&r, &a->dims[d], 8, a->name);
            if (a->dims[d] < 0 || a->dims[d] > (int64_t)sz) die("%s: bad dimension of %s", path, a->name);
            a->count *= a->dims[d];
            if (a->count > (int64_t)sz) die("%s: %s larger than the file", path, a->name);
        }
        rd(&r, (char *)(data + data_used), (size_t)a->count * 4, a->name);
        a->data = data + data_used;
        data_used += (size_t)a->count;
    }
    if (r.off != r.n) die("%s: trailing bytes after the last array", path);
    free(buf);
    *keep = data;
}

static const arr *find(const char *cs, const char *name) {
    char full[2 * MAX_NAME];
    snprintf(full, sizeof full, "%s/%s", cs, name);
    for (uint32_t i = 0; i < g_n_arr; i++)
        if (strcmp(g_arr[i].name, full) == 0) return &g_arr[i];
    return NULL;
}

/* An input tensor of exactly `count` elements and the given dtype. */
static const void *in_t(const char *cs, const char *name, int64_t count, uint32_t dtype) {
    const arr *a = find(cs, name);
    if (!a) die("missing tensor %s/%s", cs, name);
    if (a->dtype != dtype || a->count != count) die("tensor %s/%s has the wrong dtype or size", cs, name);
    return a->data;
}
static const float *in_f(const char *cs, const char *name, int64_t count) { return in_t(cs, name, count, 0); }
static const int32_t *in_i(const char *cs, const char *name, int64_t count) { return in_t(cs, name, count, 1); }

/* dims array of a case, n entries. */
static const int32_t *dims_of(const char *cs, int n) { return in_i(cs, "dims", n); }

/* Compares a C result with "<cs>/ref.<name>" and prints the ERR line. */
static void cmp(const char *cs, const char *name, const float *c, int64_t count) {
    char rn[MAX_NAME + 8];
    snprintf(rn, sizeof rn, "ref.%s", name);
    const float *ref = in_f(cs, rn, count);
    double maxdiff = 0, maxref = 0;
    int finite = 1;
    for (int64_t i = 0; i < count; i++) {
        if (!isfinite(c[i])) finite = 0;
        double d = fabs((double)c[i] - ref[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    double rel = finite ? maxdiff / (maxref > 1e-30 ? maxref : 1e-30) : INFINITY;
    printf("ERR %s/%s %.6e %.6e\n", cs, name, rel, maxref);
    g_reported++;
}

/* Per-case allocations, freed together at the end of a case. */
#define MAX_BUFS 64
static void *g_bufs[MAX_BUFS];
static int g_nbufs;
static float *buf_f(int64_t n) {
    if (g_nbufs == MAX_BUFS) die("too many buffers in one case");
    float *p = xcalloc((size_t)n, sizeof(float));
    g_bufs[g_nbufs++] = p;
    return p;
}
static void bufs_free(void) {
    for (int i = 0; i < g_nbufs; i++) free(g_bufs[i]);
    g_nbufs = 0;
}

/* ----------------------------------------------------------------------------------------- cases */

static void case_rmsnorm(const char *cs) {
    const int32_t *dm = dims_of(cs, 2);
    const int rows = dm[0], n = dm[1];
    const int64_t N = (int64_t)rows * n;
    const float *x = in_f(cs, "x", N), *w = in_f(cs, "w", n), *dy = in_f(cs, "dy", N);
    const float eps = in_f(cs, "eps", 1)[0];
    float *y = buf_f(N), *rstd = buf_f(rows), *dx = buf_f(N), *dw = buf_f(n);
    moec_rmsnorm_forward_train(y, rstd, x, w, rows, n, eps);
    moec_rmsnorm_backward(dx, dw, dy, x, w, rstd, rows, n);
    cmp(cs, "y", y, N);
    cmp(cs, "rstd", rstd, rows);
    cmp(cs, "dx", dx, N);
    cmp(cs, "dw", dw, n);
}

static void case_rope(const char *cs) {
    const int32_t *dm = dims_of(cs, 4);
    const int T = dm[0], nh = dm[1], hd = dm[2], n_ctx = dm[3];
    const int64_t N = (int64_t)T * nh * hd;
    const float theta = in_f(cs, "theta", 1)[0];
    const float *x = in_f(cs, "x", N), *dy = in_f(cs, "dy", N);
    const int32_t *pos = in_i(cs, "pos", T);
    for (int t = 0; t < T; t++)
        if (pos[t] < 0 || pos[t] >= n_ctx) die("%s: position out of the table", cs);
    float *ct = buf_f((int64_t)n_ctx * (hd / 2)), *st = buf_f((int64_t)n_ctx * (hd / 2));
    moec_rope_tables(ct, st, n_ctx, hd, theta);
    float *y = buf_f(N), *dx = buf_f(N);
    memcpy(y, x, (size_t)N * sizeof(float));
    moec_rope_pos(y, T, nh, hd, ct, st, pos);
    memcpy(dx, dy, (size_t)N * sizeof(float));
    moec_rope_backward(dx, T, nh, hd, ct, st, pos);
    cmp(cs, "cos", ct, (int64_t)n_ctx * (hd / 2));
    cmp(cs, "sin", st, (int64_t)n_ctx * (hd / 2));
    cmp(cs, "y", y, N);
    cmp(cs, "dx", dx, N);
}

static void case_attn(const char *cs) {
    const int32_t *dm = dims_of(cs, 5);
    const int B = dm[0], S = dm[1], H = dm[2], Hkv = dm[3], hd = dm[4];
    if (Hkv <= 0 || H % Hkv) die("%s: H must be a multiple of Hkv", cs);
    const int64_t nq = (int64_t)B * S * H * hd, nk = (int64_t)B * S * Hkv * hd, np = (int64_t)B * H * S * S;
    const float *q = in_f(cs, "q", nq), *k = in_f(cs, "k", nk), *v = in_f(cs, "v", nk);
    const float *dout = in_f(cs, "dout", nq);
    float *out = buf_f(nq), *probs = buf_f(np), *dq = buf_f(nq), *dk = buf_f(nk), *dv = buf_f(nk);
    float *dprobs = buf_f(np);
    moec_attention_forward_train(out, probs, q, k, v, B, S, H, Hkv, hd);
    moec_attention_backward(dq, dk, dv, dprobs, dout, q, k, v, probs, B, S, H, Hkv, hd);
    cmp(cs, "out", out, nq);
    cmp(cs, "probs", probs, np);
    cmp(cs, "dq", dq, nq);
    cmp(cs, "dk", dk, nk);
    cmp(cs, "dv", dv, nk);
}

static void case_swiglu(const char *cs) {
    const int32_t *dm = dims_of(cs, 1);
    const int64_t n = dm[0];
    const float *g = in_f(cs, "gate", n), *u = in_f(cs, "up", n), *dh = in_f(cs, "dh", n);
    float *h = buf_f(n), *dg = buf_f(n), *du = buf_f(n);
    moec_swiglu(h, g, u, n);
    moec_swiglu_backward(dg, du, dh, g, u, n);
    cmp(cs, "h", h, n);
    cmp(cs, "dgate", dg, n);
    cmp(cs, "dup", du, n);
}

static void case_embed(const char *cs) {
    const int32_t *dm = dims_of(cs, 3);
    const int V = dm[0], d = dm[1], T = dm[2];
    const float *W = in_f(cs, "W", (int64_t)V * d), *dy = in_f(cs, "dy", (int64_t)T * d);
    const int32_t *ids = in_i(cs, "ids", T);
    for (int t = 0; t < T; t++)
        if (ids[t] >= V) die("%s: id out of the vocabulary", cs);
    float *x = buf_f((int64_t)T * d), *dW = buf_f((int64_t)V * d);
    moec_embedding_forward(x, W, ids, T, d);
    moec_embedding_backward(dW, dy, ids, T, d);
    cmp(cs, "x", x, (int64_t)T * d);
    cmp(cs, "dW", dW, (int64_t)V * d);
}

static void case_ce(const char *cs) {
    const int32_t *dm = dims_of(cs, 2);
    const int T = dm[0], V = dm[1];
    const float *z = in_f(cs, "logits", (int64_t)T * V);
    const int32_t *tg = in_i(cs, "targets", T);
    const float dscale = in_f(cs, "dscale", 1)[0];
    float *dz = buf_f((int64_t)T * V), *lse = buf_f(T), *loss = buf_f(1), *loss2 = buf_f(1);
    loss[0] = moec_cross_entropy(dz, z, tg, T, V, dscale);
    loss2[0] = moec_cross_entropy(NULL, z, tg, T, V, dscale); /* the loss-only path */
    for (int t = 0; t < T; t++) lse[t] = moec_logsumexp(z + (size_t)t * V, V);
    cmp(cs, "loss", loss, 1);
    cmp(cs, "loss_nograd", loss2, 1);
    cmp(cs, "dlogits", dz, (int64_t)T * V);
    cmp(cs, "lse", lse, T);
}

static void case_linear(const char *cs) {
    const int32_t *dm = dims_of(cs, 7);
    const int T = dm[0], K = dm[1], N = dm[2], ldx = dm[3], ldy = dm[4], lddy = dm[5], has_b = dm[6];
    const float *x = in_f(cs, "x", (int64_t)T * ldx), *W = in_f(cs, "W", (int64_t)N * K);
    const float *b = has_b ? in_f(cs, "b", N) : NULL;
    const float *dy = in_f(cs, "dy", (int64_t)T * lddy);
    float *y = buf_f((int64_t)T * ldy), *dx = buf_f((int64_t)T * ldx), *dW = buf_f((int64_t)N * K);
    float *db = has_b ? buf_f(N) : NULL;
    moec_linear_forward(y, ldy, x, ldx, W, b, T, K, N);
    moec_linear_backward(dx, ldx, dW, db, dy, lddy, x, ldx, W, T, K, N);
    cmp(cs, "y", y, (int64_t)T * ldy);
    cmp(cs, "dx", dx, (int64_t)T * ldx);
    cmp(cs, "dW", dW, (int64_t)N * K);
    if (has_b) cmp(cs, "db", db, N);
}

/* One attention block as the trainer will chain it: pre-norm, q/k/v projections with bias,
 * per-head QK-norm, RoPE with per-sequence positions, causal GQA, o projection, residual. */
static void case_block(const char *cs) {
    const int32_t *dm = dims_of(cs, 7);
    const int B = dm[0], S = dm[1], d = dm[2], H = dm[3], Hkv = dm[4], hd = dm[5], n_ctx = dm[6];
    if (Hkv <= 0 || H % Hkv) die("%s: H must be a multiple of Hkv", cs);
    const int T = B * S, nq = H * hd, nk = Hkv * hd;
    const float eps = in_f(cs, "eps", 1)[0], theta = in_f(cs, "theta", 1)[0];
    const float *x = in_f(cs, "x", (int64_t)T * d), *dy = in_f(cs, "dy", (int64_t)T * d);
    const float *ln_w = in_f(cs, "ln_w", d), *qn_w = in_f(cs, "qn_w", hd), *kn_w = in_f(cs, "kn_w", hd);
    const float *Wq = in_f(cs, "Wq", (int64_t)nq * d), *bq = in_f(cs, "bq", nq);
    const float *Wk = in_f(cs, "Wk", (int64_t)nk * d), *bk = in_f(cs, "bk", nk);
    const float *Wv = in_f(cs, "Wv", (int64_t)nk * d), *bv = in_f(cs, "bv", nk);
    const float *Wo = in_f(cs, "Wo", (int64_t)d * nq);
    const int32_t *pos = in_i(cs, "pos", T);
    for (int t = 0; t < T; t++)
        if (pos[t] < 0 || pos[t] >= n_ctx) die("%s: position out of the table", cs);
    float *ct = buf_f((int64_t)n_ctx * (hd / 2)), *st = buf_f((int64_t)n_ctx * (hd / 2));
    moec_rope_tables(ct, st, n_ctx, hd, theta);

    /* forward */
    float *n = buf_f((int64_t)T * d), *rstd0 = buf_f(T);
    float *qraw = buf_f((int64_t)T * nq), *kraw = buf_f((int64_t)T * nk), *vv = buf_f((int64_t)T * nk);
    float *qr = buf_f((int64_t)T * nq), *kr = buf_f((int64_t)T * nk), *rq = buf_f((int64_t)T * H),
          *rk = buf_f((int64_t)T * Hkv);
    float *att = buf_f((int64_t)T * nq), *probs = buf_f((int64_t)B * H * S * S), *y = buf_f((int64_t)T * d);
    moec_rmsnorm_forward_train(n, rstd0, x, ln_w, T, d, eps);
    moec_linear_forward(qraw, nq, n, d, Wq, bq, T, d, nq);
    moec_linear_forward(kraw, nk, n, d, Wk, bk, T, d, nk);
    moec_linear_forward(vv, nk, n, d, Wv, bv, T, d, nk);
    moec_rmsnorm_forward_train(qr, rq, qraw, qn_w, T * H, hd, eps);
    moec_rmsnorm_forward_train(kr, rk, kraw, kn_w, T * Hkv, hd, eps);
    moec_rope_pos(qr, T, H, hd, ct, st, pos);
    moec_rope_pos(kr, T, Hkv, hd, ct, st, pos);
    moec_attention_forward_train(att, probs, qr, kr, vv, B, S, H, Hkv, hd);
    moec_linear_forward(y, d, att, nq, Wo, NULL, T, nq, d);
    for (int64_t i = 0; i < (int64_t)T * d; i++) y[i] += x[i];

    /* backward */
    float *dx = buf_f((int64_t)T * d), *dln = buf_f(d), *dqn = buf_f(hd), *dkn = buf_f(hd);
    float *dWq = buf_f((int64_t)nq * d), *dbq = buf_f(nq), *dWk = buf_f((int64_t)nk * d), *dbk = buf_f(nk);
    float *dWv = buf_f((int64_t)nk * d), *dbv = buf_f(nk), *dWo = buf_f((int64_t)d * nq);
    float *datt = buf_f((int64_t)T * nq), *dqr = buf_f((int64_t)T * nq), *dkr = buf_f((int64_t)T * nk);
    float *dv = buf_f((int64_t)T * nk), *dqraw = buf_f((int64_t)T * nq), *dkraw = buf_f((int64_t)T * nk);
    float *dn = buf_f((int64_t)T * d);
    memcpy(dx, dy, (size_t)T * d * sizeof(float)); /* residual */
    moec_linear_backward(datt, nq, dWo, NULL, dy, d, att, nq, Wo, T, nq, d);
    float *dprobs = buf_f((int64_t)B * H * S * S);
    moec_attention_backward(dqr, dkr, dv, dprobs, datt, qr, kr, vv, probs, B, S, H, Hkv, hd);
    moec_rope_backward(dqr, T, H, hd, ct, st, pos);
    moec_rope_backward(dkr, T, Hkv, hd, ct, st, pos);
    moec_rmsnorm_backward(dqraw, dqn, dqr, qraw, qn_w, rq, T * H, hd);
    moec_rmsnorm_backward(dkraw, dkn, dkr, kraw, kn_w, rk, T * Hkv, hd);
    moec_linear_backward(dn, d, dWq, dbq, dqraw, nq, n, d, Wq, T, d, nq);
    moec_linear_backward(dn, d, dWk, dbk, dkraw, nk, n, d, Wk, T, d, nk);
    moec_linear_backward(dn, d, dWv, dbv, dv, nk, n, d, Wv, T, d, nk);
    moec_rmsnorm_backward(dx, dln, dn, x, ln_w, rstd0, T, d);

    cmp(cs, "y", y, (int64_t)T * d);
    cmp(cs, "dx", dx, (int64_t)T * d);
    cmp(cs, "dln_w", dln, d);
    cmp(cs, "dqn_w", dqn, hd);
    cmp(cs, "dkn_w", dkn, hd);
    cmp(cs, "dWq", dWq, (int64_t)nq * d);
    cmp(cs, "dbq", dbq, nq);
    cmp(cs, "dWk", dWk, (int64_t)nk * d);
    cmp(cs, "dbk", dbk, nk);
    cmp(cs, "dWv", dWv, (int64_t)nk * d);
    cmp(cs, "dbv", dbv, nk);
    cmp(cs, "dWo", dWo, (int64_t)d * nq);
}

/* Embedding tied to the LM head: ids -> embed(W) -> rmsnorm -> logits = h Wᵀ -> cross-entropy;
 * dW collects both uses (+= from the head, then from the embedding). */
static void case_lmhead(const char *cs) {
    const int32_t *dm = dims_of(cs, 3);
    const int V = dm[0], d = dm[1], T = dm[2];
    const float eps = in_f(cs, "eps", 1)[0], dscale = in_f(cs, "dscale", 1)[0];
    const float *W = in_f(cs, "W", (int64_t)V * d), *ln_w = in_f(cs, "ln_w", d);
    const int32_t *ids = in_i(cs, "ids", T), *tg = in_i(cs, "targets", T);
    for (int t = 0; t < T; t++)
        if (ids[t] >= V) die("%s: id out of the vocabulary", cs);
    float *e = buf_f((int64_t)T * d), *h = buf_f((int64_t)T * d), *rs = buf_f(T), *z = buf_f((int64_t)T * V);
    float *dz = buf_f((int64_t)T * V), *dh = buf_f((int64_t)T * d), *de = buf_f((int64_t)T * d);
    float *dW = buf_f((int64_t)V * d), *dln = buf_f(d), *loss = buf_f(1);
    moec_embedding_forward(e, W, ids, T, d);
    moec_rmsnorm_forward_train(h, rs, e, ln_w, T, d, eps);
    moec_linear_forward(z, V, h, d, W, NULL, T, d, V);
    loss[0] = moec_cross_entropy(dz, z, tg, T, V, dscale);
    moec_linear_backward(dh, d, dW, NULL, dz, V, h, d, W, T, d, V);
    moec_rmsnorm_backward(de, dln, dh, e, ln_w, rs, T, d);
    moec_embedding_backward(dW, de, ids, T, d);
    cmp(cs, "logits", z, (int64_t)T * V);
    cmp(cs, "loss", loss, 1);
    cmp(cs, "dW", dW, (int64_t)V * d);
    cmp(cs, "dln_w", dln, d);
}

typedef struct {
    const char *op;
    void (*run)(const char *cs);
} op_entry;

static const op_entry OPS[] = {
    {"rmsnorm", case_rmsnorm}, {"rope", case_rope},     {"attn", case_attn},   {"swiglu", case_swiglu},
    {"embed", case_embed},     {"ce", case_ce},         {"linear", case_linear}, {"block", case_block},
    {"lmhead", case_lmhead},
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tool_grad_ops FILE   (a grad-ops reference file, version 1)\n");
        return 2;
    }
    void *data = NULL;
    load(argv[1], &data);
    /* cases in file order: each distinct prefix before '/' */
    int n_cases = 0;
    for (uint32_t i = 0; i < g_n_arr; i++) {
        const char *slash = strchr(g_arr[i].name, '/');
        if (!slash) die("array %s has no case prefix", g_arr[i].name);
        char cs[MAX_NAME];
        size_t len = (size_t)(slash - g_arr[i].name);
        memcpy(cs, g_arr[i].name, len);
        cs[len] = 0;
        int seen = 0;
        for (uint32_t j = 0; j < i && !seen; j++) seen = strncmp(g_arr[j].name, cs, len) == 0 && g_arr[j].name[len] == '/';
        if (seen) continue;
        const char *dot = strchr(cs, '.');
        size_t oplen = dot ? (size_t)(dot - cs) : len;
        const op_entry *op = NULL;
        for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++)
            if (strlen(OPS[o].op) == oplen && strncmp(OPS[o].op, cs, oplen) == 0) op = &OPS[o];
        if (!op) die("case %s: unknown op", cs);
        op->run(cs);
        bufs_free();
        n_cases++;
    }
    fprintf(stderr, "tool_grad_ops: %d cases, %d tensors compared\n", n_cases, g_reported);
    free(g_arr);
    free(data);
    return 0;
}
