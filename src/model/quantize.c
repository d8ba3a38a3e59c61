/* quantize.c — see quantize.h. */
#include "model/quantize.h"

#include "core/error.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "model/hparams.h"
#include "model/tensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Files of a checkpoint directory besides the weights, copied as they are when present. */
static const char *const k_copy[] = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                     "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model"};

static int is_router(moec_tensor_role r) {
    switch (r) {
    case MOEC_T_ROUTER: case MOEC_T_ROUTER_ITER: case MOEC_T_ROUTER_PROJ: case MOEC_T_GATE_MAP:
    case MOEC_T_CONST_W: case MOEC_T_SH_GATE_W: case MOEC_T_RNN_W_IH: case MOEC_T_RNN_W_HH: return 1;
    default: return 0;
    }
}

/* The dtype a tensor is written in (the policy of quantize.h). */
static moec_dtype target(const moec_tensor_spec *sp, moec_dtype src, const moec_quantize_params *p) {
    if (moec_tensor_is_vector(sp)) return MOEC_DTYPE_F32;
    if (is_router(sp->role)) return p->keep_router_f32 || moec_dtype_info(src)->quantized ? MOEC_DTYPE_F32 : src;
    if (sp->role == MOEC_T_EMBED || sp->role == MOEC_T_LM_HEAD) return MOEC_DTYPE_Q8_0;
    return p->type;
}

static moec_status copy_file(const char *from, const char *to, moec_error *err) {
    char *data = NULL;
    size_t len = 0;
    moec_status st = moec_file_read_all(from, &data, &len, err);
    if (st) return st;
    const moec_iovec part = {.data = data, .size = len};
    st = moec_file_write_atomic(to, &part, 1, err);
    free(data);
    return st;
}

/* Removes the temporary directory and what it holds (only the names this file writes). */
static void remove_tmp(const char *tmp) {
    char path[4200];
    for (size_t i = 0; i < sizeof k_copy / sizeof k_copy[0]; i++)
        if (moec_path_join(path, sizeof path, tmp, k_copy[i])) unlink(path);
    if (moec_path_join(path, sizeof path, tmp, "model.safetensors")) unlink(path);
    rmdir(tmp);
}

moec_status moec_quantize_checkpoint(const char *in_dir, const char *out_dir, moec_quantize_params *p, moec_error *err) {
    if (!moec_dtype_info(p->type)->quantized)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "quantize: type %s is not a quantized format", moec_dtype_name(p->type));
    struct stat sb;
    if (stat(out_dir, &sb) == 0)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "%s already exists (moec quantize writes a new directory)", out_dir);
    moec_hparams hp;
    moec_status st = moec_hparams_load(&hp, in_dir, err);
    if (st) return st;
    moec_st_set set;
    if ((st = moec_st_open_dir(&set, in_dir, err))) return st;
    const int64_t n = moec_model_tensor_specs(&hp, NULL);
    moec_tensor_spec *specs = malloc((size_t)n * sizeof *specs + 1);
    moec_st_entry *ents = calloc((size_t)n + 1, sizeof *ents);
    moec_dtype *types = calloc((size_t)n + 1, sizeof *types);
    char tmp[4200];
    int made_tmp = 0;
    p->n_quantized = 0;
    p->bytes_in = p->bytes_out = 0;
    if (!specs || !ents || !types) {
        st = moec_err(err, MOEC_ERR_OOM, "out of memory");
        goto done;
    }
    moec_model_tensor_specs(&hp, specs);
    for (int64_t i = 0; i < n && !st; i++) {
        const moec_tensor_spec *sp = &specs[i];
        moec_st_tensor *t = moec_st_find(&set, sp->name);
        if (!t) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: missing tensor '%s' (required by its config.json)", in_dir, sp->name);
            break;
        }
        int same = t->n_dims == sp->n_dims;
        for (int d = 0; same && d < sp->n_dims; d++) same = t->shape[d] == sp->shape[d];
        if (!same) {
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: tensor '%s' does not have the shape its config.json implies", in_dir,
                          sp->name);
            break;
        }
        t->used = 1;
        const moec_dtype to = target(sp, t->dtype, p);
        const moec_dtype_traits *tr = moec_dtype_info(to);
        if (tr->quantized && sp->shape[sp->n_dims - 1] % tr->block) {
            st = moec_err(err, MOEC_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has rows of %lld elements, not a multiple of %lld: it cannot be %s (rows are whole blocks)",
                          in_dir, sp->name, (long long)sp->shape[sp->n_dims - 1], (long long)tr->block, tr->name);
            break;
        }
        /* converted from the mapped input while the output is written: memory stays one row
         * and one chunk, not the fp32 model (io/safetensors_write.h) */
        ents[i] = (moec_st_entry){.name = sp->name, .n_dims = sp->n_dims, .shape = {sp->shape[0], sp->shape[1], 0, 0},
                                  .data = t->data, .data_dtype = t->dtype};
        types[i] = to;
        p->n_quantized += tr->quantized;
        p->bytes_in += (int64_t)t->nbytes;
        p->bytes_out += (int64_t)moec_row_bytes(to, sp->numel);
    }
    for (int i = 0; i < set.n_tensors && !st; i++)
        if (!set.tensors[i].used && !strstr(set.tensors[i].name, "rotary_emb.inv_freq")) /* RoPE buffers are dropped */
            st = moec_err(err, MOEC_ERR_FORMAT, "%s: unexpected tensor '%s' (not used by %s with this config.json)", in_dir,
                          set.tensors[i].name, hp.arch->model_type);
    if (st) goto done;
    /* temporary sibling directory, renamed to out_dir when complete */
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out_dir, (long)getpid()) >= (int)sizeof tmp) {
        st = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", out_dir);
        goto done;
    }
    if (mkdir(tmp, 0755) != 0) {
        st = moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    made_tmp = 1;
    char from[4200], to[4200];
    for (size_t i = 0; i < sizeof k_copy / sizeof k_copy[0] && !st; i++) {
        if (!moec_path_join(from, sizeof from, in_dir, k_copy[i]) || !moec_path_join(to, sizeof to, tmp, k_copy[i])) {
            st = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", in_dir);
            break;
        }
        if (access(from, F_OK) == 0) st = copy_file(from, to, err);
    }
    if (!st && !moec_path_join(to, sizeof to, tmp, "model.safetensors"))
        st = moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", tmp);
    if (!st) st = moec_st_write_typed(to, ents, types, (int)n, err);
    if (!st && rename(tmp, out_dir) != 0)
        st = moec_err(err, MOEC_ERR_IO, "cannot rename %s to %s: %s", tmp, out_dir, strerror(errno));
    if (!st) made_tmp = 0;
done:
    if (made_tmp) remove_tmp(tmp);
    free(types);
    free(ents);
    free(specs);
    moec_st_close(&set);
    return st;
}
