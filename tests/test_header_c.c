/* test_header_c.c — the public header compiles on its own (no src/ includes) and its default
 * params are sane. */
#include "moec.h"

#include <stdio.h>

int main(void) {
    moec_model_params mp = moec_model_default_params();
    moec_sampler_params sp = moec_sampler_default_params();
    int fail = mp.n_threads != 0 || !(sp.top_p > 0.f && sp.top_p <= 1.f) || moec_status_name(MOEC_ERR_IO)[0] == 0;
    moec_model_close(NULL); /* every free accepts NULL */
    moec_session_free(NULL);
    moec_sampler_free(NULL);
    moec_tokenizer_free(NULL);
    printf("test_header_c: %d passed, %d failed\n", !fail, fail);
    return fail;
}
