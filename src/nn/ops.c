/* ops.c — scalar-first kernels written so that GCC vectorises the inner loops; the heavy
 * lifting of the model is in matmul.c, these are O(T·d) except attention. */
#include "nn/ops.h"

#include "core/threads.h"
#include "nn/vmath.h"

#include <math.h>

void moec_rope_tables(float *cos_tab, float *sin_tab, int n_ctx, int hd, float theta) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        /* HF: inv_freq = 1 / theta^(2i/hd) */
        double inv = 1.0 / pow((double)theta, (double)(2 * i) / (double)hd);
        for (int p = 0; p < n_ctx; p++) {
            double a = (double)p * inv;
            cos_tab[(size_t)p * half + i] = (float)cos(a);
            sin_tab[(size_t)p * half + i] = (float)sin(a);
        }
    }
}

void moec_swiglu(float *out, const float *gate, const float *up, int64_t n) { moec_vswiglu(out, gate, up, n); }

void moec_softmax(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    const float inv = (float)(1.0 / moec_vexp_sum(x, x, m, n));
    for (int i = 0; i < n; i++) x[i] *= inv;
}

typedef struct {
    float *out, *scratch;
    const float *q, *kc, *vc;
    int pos0, n_head, group, hd, n_ctx, window;
    float scale;
} attn_job;

/* One (query, head) item; the scores go to the running thread's scratch row. */
static void attn_item(const attn_job *a, int64_t item, int tid) {
    const int n_head = a->n_head, hd = a->hd, n_ctx = a->n_ctx, window = a->window, pos0 = a->pos0;
    const int t = (int)(item / n_head), h = (int)(item % n_head), kvh = h / a->group;
    const int j0 = window > 0 && pos0 + t + 1 > window ? pos0 + t + 1 - window : 0;
    const int n_keys = pos0 + t + 1 - j0;
    float *sc = a->scratch + (size_t)tid * (size_t)n_ctx;
    const float *qv = a->q + ((size_t)t * n_head + h) * hd;
    const float *kh = a->kc + ((size_t)kvh * n_ctx + (size_t)j0) * hd, *vh = a->vc + ((size_t)kvh * n_ctx + (size_t)j0) * hd;
    const float scale = a->scale;
    float m = -INFINITY;
    for (int j = 0; j < n_keys; j++) {
        const float *kv = kh + (size_t)j * hd;
        float d = 0.f;
        for (int i = 0; i < hd; i++) d += qv[i] * kv[i];
        sc[j] = d * scale;
        m = sc[j] > m ? sc[j] : m;
    }
    const float s = (float)moec_vexp_sum(sc, sc, m, n_keys);
    float *o = a->out + ((size_t)t * n_head + h) * hd;
    for (int i = 0; i < hd; i++) o[i] = 0.f;
    const float inv = 1.f / s;
    for (int j = 0; j < n_keys; j++) {
        const float p = sc[j] * inv;
        const float *vv = vh + (size_t)j * hd;
        for (int i = 0; i < hd; i++) o[i] += p * vv[i];
    }
}

static void attn_items(const attn_job *a, int64_t i0, int64_t i1, int tid) {
    for (int64_t i = i0; i < i1; i++) attn_item(a, i, tid);
}

static void attn_task(void *job, int64_t i, int tid) { attn_item(job, i, tid); }

void moec_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int n_head,
                    int n_head_kv, int hd, int n_ctx, int window, float *scratch, int n_scratch) {
    attn_job a = {out, scratch, q, kc, vc, pos0, n_head, n_head / n_head_kv, hd, n_ctx, window, 1.f / sqrtf((float)hd)};
    const int n_items = T * n_head;
    if (n_items > 1 && (int64_t)n_items * (pos0 + T) * hd > 32768) moec_parallel_for_upto(n_items, n_scratch, attn_task, &a);
    else attn_items(&a, 0, n_items, 0); /* serial: row 0 (never called from inside a task) */
}
