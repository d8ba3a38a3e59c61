/* trainer.h — the training run: data → micro-batches → forward/backward → clipped AdamW step,
 * with warmup + cosine LR, gradient accumulation, periodic evaluation, atomic checkpoints and
 * exact resume, a progress line and a JSONL log. Deterministic: the same seed and thread count
 * give bit-identical runs, and a resumed run continues bit-identically. */
#ifndef MOEC_TRAIN_TRAINER_H
#define MOEC_TRAIN_TRAINER_H

#include "moec.h"

#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *config_path; /* HF-style config.json of the model (may be NULL with init_dir or resume) */
    const char *data_dir;    /* made by `moec data` */
    const char *out_dir;     /* the checkpoint directory (HF layout + training state) */
    const char *init_dir;    /* start from this checkpoint's weights instead of random; NULL = random */
    int64_t steps;           /* optimizer steps in total */
    int32_t batch, seq, accum;
    float lr, lr_min;        /* peak and final learning rate (cosine decay) */
    int64_t warmup;          /* linear warmup steps */
    uint64_t seed;
    int32_t threads;         /* 0 = number of cores */
    int64_t eval_every, save_every; /* 0 = only at the end */
    int32_t eval_batches;    /* validation micro-batches per evaluation */
    int resume, overwrite;
    float aux_coef, z_coef;  /* load-balancing (Megatron normalisation: 1 at balance) and z-loss */
    float label_smoothing;   /* ε of the label-smoothed CE in [0, 1); < 0: the config's moec_label_smoothing */
    float weight_decay, clip, beta1, beta2, eps;
    int matmul_bf16;         /* 1: linear layers' and attention's products in bf16 with fp32 accumulation
                              * (nn/linear.h; routers, softmax, norms, the loss and AdamW's master weights
                              * stay fp32) */
    int64_t stop_after;      /* >0: end this invocation after that many steps (checkpointed), as an interruption would */
    int32_t max_bad_steps;   /* consecutive non-finite steps before the run stops */
    int progress;            /* 1: a live progress line on stderr */
    FILE *log;               /* human-readable lines (resolved configuration, evals, load table); NULL = stdout */
} moec_train_params;

moec_train_params moec_train_default_params(void);

#include "train/optim.h"
#include "train/params.h"

/* The update of one optimizer step on the gradients in tp->g: global-norm clipping to `clip`
 * (0 = off), then AdamW at learning rate lr, with weight decay on matrices only. If the
 * gradient norm is not finite, nothing changes and *applied = 0; otherwise *t (the AdamW step
 * count) is incremented first and *applied = 1. Returns the gradient norm before clipping; tp->g
 * stays unclipped (the clipping factor is applied inside the AdamW pass). */
double moec_train_optimizer_step(moec_tparams *tp, float *m1, float *m2, int64_t *t, float lr, float clip,
                                 const moec_adamw_cfg *cfg, int *applied);

/* What train_state.json holds for a resume. */
typedef struct {
    int64_t step, adam_step; /* optimizer steps attempted / applied */
    uint64_t cursor;         /* training windows consumed */
    int32_t n_bad;           /* consecutive non-finite steps */
} moec_train_state;

/* Parses train_state.json text (path only for messages) and checks it belongs to this run: the
 * data (data_id, moec_data_id) and the settings in p that a resume must repeat; every number is
 * range-checked before it becomes an integer. MOEC_ERR_FORMAT for a damaged state,
 * MOEC_ERR_INVALID_ARG for a different run. */
moec_status moec_train_state_parse(const char *text, size_t len, const char *path, const moec_train_params *p,
                                   uint64_t data_id, moec_train_state *out, moec_error *err);

/* Runs (or resumes) a training run. Returns MOEC_OK when the run reached `steps`. */
moec_status moec_train_run(const moec_train_params *p, moec_error *err);

#endif
