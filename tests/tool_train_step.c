/* tool_train_step.c — test driver: one optimizer step of moec's trainer (forward, backward,
 * clipping, AdamW) from a checkpoint on given tokens; writes the updated weights.
 *   tool_train_step DIR B S AUX Z LR WD CLIP TOKENS(comma list of B*(S+1)) OUT.safetensors
 * Prints the gradient norm before clipping. */
#include "train/model_train.h"
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: tool_train_step DIR B S AUX Z LR WD CLIP TOKENS OUT\n");
        return 2;
    }
    const int B = atoi(argv[2]), S = atoi(argv[3]);
    const float aux = (float)atof(argv[4]), z = (float)atof(argv[5]), lr = (float)atof(argv[6]);
    const moec_adamw_cfg cfg = {0.9f, 0.95f, 1e-8f, (float)atof(argv[7])};
    const float clip = (float)atof(argv[8]);
    int32_t *tok = malloc(sizeof *tok * (size_t)B * (size_t)(S + 1));
    char *p = argv[9];
    for (int i = 0; i < B * (S + 1); i++) {
        tok[i] = (int32_t)strtol(p, &p, 10);
        if (*p == ',') p++;
    }
    moec_error err = {0};
    moec_hparams hp;
    moec_tparams tp = {0};
    moec_tmodel *m = NULL;
    float *m1 = NULL, *m2 = NULL;
    int rc = 1, applied = 0;
    int64_t t = 0;
    if (moec_hparams_load(&hp, argv[1], &err) || moec_tparams_new(&tp, &hp, &err) ||
        moec_tparams_load(&tp, argv[1], &err) || moec_tmodel_new(&m, &tp, B, S, aux, z, &err) ||
        moec_tmodel_step(m, tok, NULL, 1.f, 1, NULL, &err)) {
        fprintf(stderr, "tool_train_step: %s\n", err.msg);
        goto done;
    }
    m1 = calloc(tp.n_floats, sizeof *m1);
    m2 = calloc(tp.n_floats, sizeof *m2);
    double gnorm = moec_train_optimizer_step(&tp, m1, m2, &t, lr, clip, &cfg, &applied);
    if (!applied || moec_tparams_save(&tp, tp.w, argv[10], MOEC_DTYPE_F32, &err)) {
        fprintf(stderr, "tool_train_step: %s\n", applied ? err.msg : "non-finite gradient");
        goto done;
    }
    printf("%.9g\n", gnorm);
    rc = 0;
done:
    free(m1);
    free(m2);
    moec_tmodel_free(m);
    moec_tparams_free(&tp);
    free(tok);
    return rc;
}
