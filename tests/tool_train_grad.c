/* tool_train_grad.c — test driver: one training forward + backward of a whole model with
 * moec's trainer code, gradients written as safetensors for tests/py_test_train_grad.py.
 *   tool_train_grad CKPT_DIR B S AUX_COEF Z_COEF TOKENS(comma list of B*(S+1)) OUT.safetensors [EPS]
 * EPS: label smoothing of the step (moec_tmodel_set_label_smoothing; default: the config's).
 * Prints "ce aux z" on stdout (ce label-smoothed with EPS > 0). MOEC_TEST_MATMUL=bf16 in the
 * environment runs the step with bf16 products (linear layers and attention; nn/linear.h, moec
 * train --matmul bf16). */
#include "core/error.h"
#include "nn/linear.h"
#include "train/model_train.h"
#include "train/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: tool_train_grad DIR B S AUX Z TOKENS OUT [EPS]\n");
        return 2;
    }
    const int B = atoi(argv[2]), S = atoi(argv[3]);
    const float aux = (float)atof(argv[4]), z = (float)atof(argv[5]);
    int32_t *tok = malloc(sizeof *tok * (size_t)B * (size_t)(S + 1));
    char *p = argv[6];
    for (int i = 0; i < B * (S + 1); i++) {
        tok[i] = (int32_t)strtol(p, &p, 10);
        if (*p == ',') p++;
    }
    const char *mm = getenv("MOEC_TEST_MATMUL");
    if (mm && !strcmp(mm, "bf16")) moec_matmul_precision_set(MOEC_MATMUL_BF16);
    moec_error err = {0};
    moec_hparams hp;
    moec_tparams tp = {0};
    moec_tmodel *m = NULL;
    moec_tstep out;
    int rc = 1;
    if (moec_hparams_load(&hp, argv[1], &err) || moec_tparams_new(&tp, &hp, &err) ||
        moec_tparams_load(&tp, argv[1], &err) || moec_tmodel_new(&m, &tp, B, S, aux, z, &err) ||
        (argc == 9 && (moec_tmodel_set_label_smoothing(m, (float)atof(argv[8])), 0)) ||
        moec_tmodel_step(m, tok, NULL, 1.f, 1, &out, &err) || moec_tparams_save(&tp, tp.g, argv[7], MOEC_DTYPE_F32, &err)) {
        fprintf(stderr, "tool_train_grad: %s\n", err.msg);
    } else {
        printf("%.9g %.9g %.9g\n", out.ce, out.aux, out.z);
        rc = 0;
    }
    moec_tmodel_free(m);
    moec_tparams_free(&tp);
    free(tok);
    return rc;
}
