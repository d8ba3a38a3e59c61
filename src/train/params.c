/* params.c — see params.h. */
#include "train/params.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "moe/routers/routers.h"

#include <stdlib.h>
#include <string.h>

/* Every size here comes from config.json: the element count is summed with overflow checks
 * and the whole request is checked against the machine before anything is allocated. */
moec_status moec_tparams_new(moec_tparams *tp, const moec_hparams *hp, moec_error *err) {
    memset(tp, 0, sizeof *tp);
    tp->hp = *hp;
    int64_t n_tensors = 0;
    uint64_t n_elems = 0;
    size_t bytes = 0, table = 0;
    if (!moec_model_tensor_total(hp, &n_tensors, &n_elems) || n_elems > SIZE_MAX / 8 ||
        !moec_size_muladd(&table, (size_t)n_tensors, sizeof *tp->specs + sizeof *tp->offset) ||
        !moec_size_muladd(&bytes, (size_t)n_elems, 2 * sizeof(float)) || !moec_size_muladd(&bytes, table, 1))
        return moec_err(err, MOEC_ERR_FORMAT, "config.json implies more parameters than 64-bit sizes can count");
    moec_status st = moec_mem_check(bytes, "the parameters and gradients that config.json implies", err);
    if (st) return st;
    tp->n_tensors = n_tensors;
    tp->specs = malloc((size_t)tp->n_tensors * sizeof *tp->specs);
    tp->offset = malloc((size_t)tp->n_tensors * sizeof *tp->offset);
    if (!tp->specs || !tp->offset) {
        moec_tparams_free(tp);
        return moec_err(err, MOEC_ERR_OOM, "out of memory for the table of %lld tensors", (long long)n_tensors);
    }
    moec_model_tensor_specs(hp, tp->specs);
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        tp->offset[i] = tp->n_floats;
        tp->n_floats += (size_t)tp->specs[i].numel; /* <= n_elems, checked above */
    }
    MOEC_ASSERT(tp->n_floats == n_elems);
    const size_t wbytes = (tp->n_floats * sizeof(float) + 63) & ~(size_t)63;
    tp->w = aligned_alloc(64, wbytes);
    tp->g = aligned_alloc(64, wbytes);
    if (!tp->w || !tp->g) {
        size_t mb = tp->n_floats * 8 >> 20;
        moec_tparams_free(tp);
        return moec_err(err, MOEC_ERR_OOM, "out of memory for %zu MB of parameters and gradients", mb);
    }
    memset(tp->w, 0, tp->n_floats * sizeof(float));
    memset(tp->g, 0, tp->n_floats * sizeof(float));
    return MOEC_OK;
}

void moec_tparams_free(moec_tparams *tp) {
    if (!tp) return;
    free(tp->specs);
    free(tp->offset);
    free(tp->w);
    free(tp->g);
    memset(tp, 0, sizeof *tp);
}

float *moec_tparams_find(const moec_tparams *tp, int grad, moec_tensor_role role, int layer, int expert) {
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *s = &tp->specs[i];
        if (s->role == role && s->layer == layer && s->expert == expert) return (grad ? tp->g : tp->w) + tp->offset[i];
    }
    return NULL;
}

void moec_tparams_init(moec_tparams *tp, uint64_t seed, float std) {
    moec_rng r;
    moec_rng_seed(&r, seed);
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *s = &tp->specs[i];
        float *w = tp->w + tp->offset[i];
        const int is_bias = s->role == MOEC_T_BQ || s->role == MOEC_T_BK || s->role == MOEC_T_BV || s->role == MOEC_T_BO ||
                            s->role == MOEC_T_RNN_B_IH || s->role == MOEC_T_RNN_B_HH;
        const int unit_normal = s->role == MOEC_T_CONST_V; /* MoE++ draws the constant expert's v from N(0, 1) */
        if (s->role == MOEC_T_HASH_TABLE) { /* a valid table (the random one); the trainer builds the balanced one */
            for (int64_t j = 0; j < s->numel; j++)
                w[j] = (float)moec_router_hash_expert(tp->hp.route.hash_seed, (int32_t)j, tp->hp.route.n_expert);
            continue;
        }
        for (int64_t j = 0; j < s->numel; j++)
            w[j] = !moec_tensor_is_vector(s) || unit_normal ? (unit_normal ? 1.f : std) * moec_rng_normal(&r)
                                                          : is_bias ? 0.f : 1.f;
    }
}

/* One walk over the config's tensor list against an open checkpoint: each tensor must be
 * present with exactly the implied shape; with tp, its data is converted into tp->w. */
typedef struct {
    moec_st_set *st;
    moec_tparams *tp; /* NULL: check only */
    const char *dir;
    moec_error *err;
    moec_status status;
    int64_t i;
} bind_ctx;

static int bind_one(const moec_tensor_spec *sp, void *vctx) {
    bind_ctx *c = vctx;
    moec_st_tensor *t = moec_st_find(c->st, sp->name);
    if (!t) {
        c->status = moec_err(c->err, MOEC_ERR_FORMAT, "%s: missing tensor '%s' (required by config.json)", c->dir,
                             sp->name);
        return 1;
    }
    int ok = t->n_dims == sp->n_dims;
    for (int d = 0; ok && d < sp->n_dims; d++) ok = t->shape[d] == sp->shape[d];
    if (!ok) {
        c->status = moec_err(c->err, MOEC_ERR_FORMAT, "%s: tensor '%s' does not have the shape config.json implies",
                             c->dir, sp->name);
        return 1;
    }
    t->used = 1;
    if (c->tp) moec_to_f32(c->tp->w + c->tp->offset[c->i], t->data, t->dtype, (size_t)sp->numel);
    c->i++;
    return 0;
}

static moec_status bind_dir(const moec_hparams *hp, moec_tparams *tp, const char *dir, moec_error *err) {
    moec_st_set st;
    moec_status s = moec_st_open_dir(&st, dir, err);
    if (s) return s;
    bind_ctx c = {&st, tp, dir, err, MOEC_OK, 0};
    moec_model_tensor_visit(hp, bind_one, &c);
    s = c.status;
    for (int i = 0; i < st.n_tensors && !s; i++)
        if (!st.tensors[i].used && !strstr(st.tensors[i].name, "rotary_emb.inv_freq"))
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: unexpected tensor '%s'", dir, st.tensors[i].name);
    moec_st_close(&st);
    return s;
}

moec_status moec_tparams_check_dir(const moec_hparams *hp, const char *dir, moec_error *err) {
    return bind_dir(hp, NULL, dir, err);
}

moec_status moec_tparams_load(moec_tparams *tp, const char *dir, moec_error *err) {
    return bind_dir(&tp->hp, tp, dir, err);
}

moec_status moec_tparams_save(const moec_tparams *tp, const float *data, const char *path, moec_dtype dtype,
                              moec_error *err) {
    moec_st_entry *e = malloc((size_t)tp->n_tensors * sizeof *e);
    if (!e) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *s = &tp->specs[i];
        e[i] = (moec_st_entry){.name = s->name, .n_dims = s->n_dims, .shape = {s->shape[0], s->shape[1]},
                               .data = data + tp->offset[i]};
    }
    moec_status st = moec_st_write(path, e, (int)tp->n_tensors, dtype, err);
    free(e);
    return st;
}
