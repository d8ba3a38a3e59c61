/* tool_moe_train.c — test driver for tests/py_test_moe_train.py: reads a case file written by
 * PyTorch (inputs, parameters, and the reference outputs and gradients of Hugging Face's MoE
 * block plus the aux and z losses), runs the MoE layer (moec_moe_forward / moec_moe_backward,
 * F32 weight views, router "topk") on the same inputs, and compares every reference tensor in the file.
 *
 *   tool_moe_train CASE.bin
 *
 * Tolerance, per tensor: max|moec − torch| <= 1e-4 · max|torch| (both fp32; the two differ
 * only in summation order); a tensor that is exactly zero in torch (an expert with no token)
 * must be exactly zero here; counts must match exactly. Prints one line per tensor, the C
 * values of the two losses ("losses: aux A z Z", which the Python side checks against closed
 * forms), and a final `N passed, M failed`; exits 1 on any failure or a malformed file.
 * Not a test by itself (ctest does not run it) and not a general file reader.
 *
 * File format (little endian), version 1:
 *   "MOETRN\0\0"  u32 version  i32 T d E k ff ff_shared renorm  f32 aux_coef z_coef
 *   u32 full (1: every output and gradient must be present)  u32 n_tensors
 *   n_tensors × { u32 name_len, name bytes, u32 ndim, i64 dims[ndim], f32 data[prod dims] }
 * Inputs are named in.x, in.dy, in.router, in.gate.<e>, in.up.<e>, in.down.<e>, in.sh_gate,
 * in.sh_up, in.sh_down, in.sh_gate_w; references ref.y, ref.aux, ref.z, ref.counts (as
 * floats), ref.d_x, ref.d_router, ref.d_gate.<e>, ref.d_up.<e>, ref.d_down.<e>,
 * ref.d_sh_gate, ref.d_sh_up, ref.d_sh_down, ref.d_sh_gate_w. */
#include "moe/moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REL_TOL 1e-4 /* max|moec − torch| <= REL_TOL · max|torch|, per tensor */
#define MAX_TENSORS 512
#define MAX_EXPERTS 256

static int g_pass, g_fail;

typedef struct {
    char name[64];
    int64_t n;
    float *data;
    int used;
} tensor;

static tensor g_t[MAX_TENSORS];
static int g_nt;

/* ------------------------------------------------------------------ reading */

static int rd(void *p, size_t n, FILE *f) { return fread(p, 1, n, f) == n; }

static tensor *find(const char *name) {
    for (int i = 0; i < g_nt; i++)
        if (!strcmp(g_t[i].name, name)) return &g_t[i];
    return NULL;
}

/* the named tensor, which must exist with n elements; NULL (and a failure) otherwise */
static float *need(const char *name, int64_t n) {
    tensor *t = find(name);
    if (!t || t->n != n) {
        fprintf(stderr, "FAIL %s: %s (want %lld elements)\n", name, t ? "wrong size" : "missing", (long long)n);
        g_fail++;
        return NULL;
    }
    t->used = 1;
    return t->data;
}

static int read_file(const char *path, int32_t hdr[7], float coef[2], uint32_t *full) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tool_moe_train: cannot open %s\n", path);
        return 0;
    }
    char magic[8];
    uint32_t version = 0, nt = 0;
    int ok = rd(magic, 8, f) && !memcmp(magic, "MOETRN\0\0", 8) && rd(&version, 4, f) && version == 1 &&
             rd(hdr, 7 * 4, f) && rd(coef, 8, f) && rd(full, 4, f) && rd(&nt, 4, f) && nt <= MAX_TENSORS;
    for (uint32_t i = 0; ok && i < nt; i++) {
        tensor *t = &g_t[g_nt];
        uint32_t len = 0, ndim = 0;
        ok = rd(&len, 4, f) && len > 0 && len < sizeof t->name && rd(t->name, len, f) && rd(&ndim, 4, f) && ndim <= 4;
        if (!ok) break;
        t->name[len] = 0;
        t->n = 1;
        for (uint32_t j = 0; ok && j < ndim; j++) {
            int64_t dim = 0;
            ok = rd(&dim, 8, f) && dim >= 0 && dim <= (1 << 24) && (t->n *= dim) <= (1 << 26);
        }
        if (!ok) break;
        t->data = malloc((size_t)(t->n ? t->n : 1) * sizeof(float));
        ok = t->data && rd(t->data, (size_t)t->n * sizeof(float), f);
        g_nt++;
    }
    if (ok) ok = fgetc(f) == EOF; /* no trailing bytes */
    fclose(f);
    if (!ok) fprintf(stderr, "tool_moe_train: %s is malformed\n", path);
    return ok;
}

/* ------------------------------------------------------------------ comparing */

/* compares got [n] with the reference tensor named ref (if present in the file); when the file
 * is a full case, a missing reference is a failure */
static void compare(const char *ref, const float *got, int64_t n, uint32_t full) {
    tensor *t = find(ref);
    if (!t) {
        if (full) {
            fprintf(stderr, "FAIL %s: missing from a full case\n", ref);
            g_fail++;
        }
        return;
    }
    t->used = 1;
    if (t->n != n) {
        fprintf(stderr, "FAIL %s: %lld elements, want %lld\n", ref, (long long)t->n, (long long)n);
        g_fail++;
        return;
    }
    double err = 0, mx = 0, gmx = 0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)got[i] - t->data[i]));
        mx = fmax(mx, fabs((double)t->data[i]));
        gmx = fmax(gmx, fabs((double)got[i]));
    }
    int ok;
    double rel;
    if (mx == 0) { /* exactly zero in torch (e.g. an expert without tokens): exactly zero here */
        ok = gmx == 0;
        rel = gmx;
    } else {
        rel = err / mx;
        ok = rel <= REL_TOL && !isnan(err);
    }
    printf("%s %-16s max|torch| %.4g  max|diff| %.3g  rel %.3g\n", ok ? "PASS" : "FAIL", ref, mx, err, rel);
    if (ok) g_pass++;
    else g_fail++;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tool_moe_train CASE.bin\n");
        return 2;
    }
    int32_t h[7];
    float coef[2];
    uint32_t full = 0;
    if (!read_file(argv[1], h, coef, &full)) return 1;
    const int T = h[0], d = h[1], E = h[2], K = h[3], ff = h[4], fs = h[5];
    if (T < 1 || E < 1 || E > MAX_EXPERTS || K < 1 || K > E) {
        fprintf(stderr, "tool_moe_train: bad header (T %d, E %d, k %d)\n", T, E, K);
        return 1;
    }
    moec_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_embd = d, hp.n_expert = E, hp.n_expert_used = K, hp.n_ff_expert = ff, hp.n_ff_shared = fs;
    hp.n_layer = 1, hp.layer_moe[0] = 1, hp.norm_topk_prob = h[6];
    hp.route = moec_router_cfg_default(E, K, h[6]);
    hp.route.aux_coef = coef[0];
    hp.route.z_coef = coef[1];
    moec_moe_ws *c = NULL;
    moec_error err = {0};
    if (moec_moe_ws_new(&c, &hp, T, 1, &err) != MOEC_OK) {
        fprintf(stderr, "tool_moe_train: %s\n", err.msg);
        return 1;
    }

    /* inputs, as F32 weight views; gradients as the same views over zeroed buffers */
    char name[64];
    moec_ffn experts[MAX_EXPERTS], gexperts[MAX_EXPERTS];
    const moec_ffn *eptr[MAX_EXPERTS], *geptr[MAX_EXPERTS];
    float *dgate[MAX_EXPERTS], *dup[MAX_EXPERTS], *ddown[MAX_EXPERTS];
    const int64_t Td = (int64_t)T * d, fd = (int64_t)ff * d, sd = (int64_t)fs * d;
#define F32(p, r, cc) ((moec_mat){(p), MOEC_DTYPE_F32, (r), (cc)})
    const float *x = need("in.x", Td), *dy = need("in.dy", Td);
    moec_layer L = {.is_moe = 1, .router = F32(need("in.router", (int64_t)E * d), E, d), .experts = experts,
                    .expert_ptrs = eptr};
    for (int e = 0; e < E; e++) {
        snprintf(name, sizeof name, "in.gate.%d", e);
        experts[e].gate = F32(need(name, fd), ff, d);
        snprintf(name, sizeof name, "in.up.%d", e);
        experts[e].up = F32(need(name, fd), ff, d);
        snprintf(name, sizeof name, "in.down.%d", e);
        experts[e].down = F32(need(name, fd), d, ff);
        eptr[e] = &experts[e];
        dgate[e] = calloc((size_t)fd, sizeof(float));
        dup[e] = calloc((size_t)fd, sizeof(float));
        ddown[e] = calloc((size_t)fd, sizeof(float));
        gexperts[e] = (moec_ffn){F32(dgate[e], ff, d), F32(dup[e], ff, d), F32(ddown[e], d, ff)};
        geptr[e] = &gexperts[e];
    }
    if (fs) {
        L.has_shared = 1;
        L.shared = (moec_ffn){F32(need("in.sh_gate", sd), fs, d), F32(need("in.sh_up", sd), fs, d),
                              F32(need("in.sh_down", sd), d, fs)};
        L.shared_gate = F32(need("in.sh_gate_w", d), 1, d);
    }
    if (g_fail) return 1; /* a missing input: nothing to run */

    /* run: total = Σ y·dy + L_aux + L_z, as in the Python side */
    float *y = calloc((size_t)Td, sizeof *y), *dx = calloc((size_t)Td, sizeof *dx);
    float *drouter = calloc((size_t)E * d, sizeof(float)), *dsh = calloc((size_t)(3 * sd + d) + 1, sizeof(float));
    moec_layer G = {.is_moe = 1, .router = F32(drouter, E, d), .experts = gexperts, .expert_ptrs = geptr};
    if (fs) {
        G.has_shared = 1;
        G.shared = (moec_ffn){F32(dsh, fs, d), F32(dsh + sd, fs, d), F32(dsh + 2 * sd, d, fs)};
        G.shared_gate = F32(dsh + 3 * sd, 1, d);
    }
    const moec_moe_call call = {.losses = 1};
    moec_moe_stats st = {0};
    moec_moe_forward(c, &hp, &L, y, x, T, &call, &st);
    moec_moe_backward(c, &hp, &L, &G, dx, dy, x, T, 1.f);
    float aux = (float)st.aux, z = (float)st.z;
    int64_t counts[MAX_EXPERTS];
    for (int e = 0; e < E; e++) counts[e] = st.counts[e];
    printf("losses: aux %.9g z %.9g\n", aux, z);

    /* compare */
    tensor *tc = find("ref.counts");
    if (tc) {
        tc->used = 1;
        int ok = tc->n == E;
        for (int e = 0; ok && e < E; e++) ok = tc->data[e] == (float)counts[e];
        printf("%s counts          ", ok ? "PASS" : "FAIL");
        for (int e = 0; e < E; e++) printf(" %lld", (long long)counts[e]);
        printf("\n");
        if (ok) g_pass++;
        else g_fail++;
    } else if (full) {
        fprintf(stderr, "FAIL ref.counts: missing from a full case\n");
        g_fail++;
    }
    compare("ref.y", y, Td, full);
    compare("ref.aux", &aux, 1, full);
    compare("ref.z", &z, 1, full);
    compare("ref.d_x", dx, Td, full);
    compare("ref.d_router", drouter, (int64_t)E * d, full);
    for (int e = 0; e < E; e++) {
        snprintf(name, sizeof name, "ref.d_gate.%d", e);
        compare(name, dgate[e], fd, full);
        snprintf(name, sizeof name, "ref.d_up.%d", e);
        compare(name, dup[e], fd, full);
        snprintf(name, sizeof name, "ref.d_down.%d", e);
        compare(name, ddown[e], fd, full);
    }
    if (fs) {
        compare("ref.d_sh_gate", dsh, sd, full);
        compare("ref.d_sh_up", dsh + sd, sd, full);
        compare("ref.d_sh_down", dsh + 2 * sd, sd, full);
        compare("ref.d_sh_gate_w", dsh + 3 * sd, d, full);
    }
    /* every tensor in the file was used: a misnamed reference cannot be skipped silently */
    for (int i = 0; i < g_nt; i++)
        if (!g_t[i].used) {
            fprintf(stderr, "FAIL %s: not a known tensor name\n", g_t[i].name);
            g_fail++;
        }

    for (int e = 0; e < E; e++) {
        free(dgate[e]);
        free(dup[e]);
        free(ddown[e]);
    }
    for (int i = 0; i < g_nt; i++) free(g_t[i].data);
    free(y);
    free(dx);
    free(drouter);
    free(dsh);
    moec_moe_ws_free(c);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
