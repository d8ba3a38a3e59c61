/* params.c — see params.h. */
#include "train/params.h"

#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"

#include <stdlib.h>
#include <string.h>

moec_status moec_tparams_new(moec_tparams *tp, const moec_hparams *hp, moec_error *err) {
    memset(tp, 0, sizeof *tp);
    tp->hp = *hp;
    tp->n_tensors = moec_model_tensor_specs(hp, NULL);
    tp->specs = malloc((size_t)tp->n_tensors * sizeof *tp->specs);
    tp->offset = malloc((size_t)tp->n_tensors * sizeof *tp->offset);
    if (!tp->specs || !tp->offset) {
        moec_tparams_free(tp);
        return moec_err(err, MOEC_ERR_OOM, "out of memory");
    }
    moec_model_tensor_specs(hp, tp->specs);
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        tp->offset[i] = tp->n_floats;
        tp->n_floats += (size_t)tp->specs[i].numel;
    }
    tp->w = aligned_alloc(64, (tp->n_floats * sizeof(float) + 63) & ~(size_t)63);
    tp->g = aligned_alloc(64, (tp->n_floats * sizeof(float) + 63) & ~(size_t)63);
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
        const int is_bias = s->role == MOEC_T_BQ || s->role == MOEC_T_BK || s->role == MOEC_T_BV || s->role == MOEC_T_BO;
        for (int64_t j = 0; j < s->numel; j++)
            w[j] = s->n_dims == 2 ? std * moec_rng_normal(&r) : is_bias ? 0.f : 1.f;
    }
}

moec_status moec_tparams_load(moec_tparams *tp, const char *dir, moec_error *err) {
    moec_st_set st;
    moec_status s = moec_st_open_dir(&st, dir, err);
    if (s) return s;
    for (int64_t i = 0; i < tp->n_tensors && !s; i++) {
        const moec_tensor_spec *sp = &tp->specs[i];
        moec_st_tensor *t = moec_st_find(&st, sp->name);
        if (!t) {
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor '%s'", dir, sp->name);
            break;
        }
        int ok = t->n_dims == sp->n_dims;
        for (int d = 0; ok && d < sp->n_dims; d++) ok = t->shape[d] == sp->shape[d];
        if (!ok) {
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' does not have the shape config.json implies", dir, sp->name);
            break;
        }
        t->used = 1;
        moec_to_f32(tp->w + tp->offset[i], t->data, t->dtype, (size_t)sp->numel);
    }
    for (int i = 0; i < st.n_tensors && !s; i++)
        if (!st.tensors[i].used && !strstr(st.tensors[i].name, "rotary_emb.inv_freq"))
            s = moec_err(err, MOEC_ERR_FORMAT, "%s: unexpected tensor '%s'", dir, st.tensors[i].name);
    moec_st_close(&st);
    return s;
}

moec_status moec_tparams_save(const moec_tparams *tp, const float *data, const char *path, moec_dtype dtype,
                              moec_error *err) {
    moec_st_entry *e = malloc((size_t)tp->n_tensors * sizeof *e);
    if (!e) return moec_err(err, MOEC_ERR_OOM, "out of memory");
    for (int64_t i = 0; i < tp->n_tensors; i++) {
        const moec_tensor_spec *s = &tp->specs[i];
        e[i].name = s->name;
        e[i].n_dims = s->n_dims;
        e[i].shape[0] = s->shape[0];
        e[i].shape[1] = s->shape[1];
        e[i].data = data + tp->offset[i];
    }
    moec_status st = moec_st_write(path, e, (int)tp->n_tensors, dtype, err);
    free(e);
    return st;
}
