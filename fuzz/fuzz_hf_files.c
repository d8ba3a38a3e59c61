/* fuzz_hf_files.c — moec_hf_files_make, what a training run writes beside its checkpoint: the
 * user's config.json completed as transformers writes it, tokenizer_config.json from the
 * checkpoint's tokenizer.json (and a chat template from a source tokenizer_config.json), and
 * generation_config.json. Input: byte 0 is the data's end-of-text id + 1 (0: none), then up to
 * three files joined by FZ_SEP: config.json, tokenizer.json, tokenizer_config.json (a part
 * missing: no tokenizer / no template source). Properties: an error has a message; on success
 * every text is NUL-terminated JSON, the config reads back as the same model (every
 * hyper-parameter, routing and expert kinds included), a tokenizer_config exists exactly when a
 * tokenizer was given, and the rewrite is a fixed point (its output rewritten again is itself). */
#include "fuzz_util.h"
#include "model/hparams.h"
#include "train/hf_files.h"

#include <cjson/cJSON.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_mem_cap();
    return 0;
}

/* A JSON object (the only thing these files may be). */
static void check_json(const char *text) {
    if (!text) abort();
    cJSON *j = cJSON_Parse(text);
    if (!cJSON_IsObject(j)) abort();
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int32_t eot = (int32_t)data[0] - 1;
    const uint8_t *part[3];
    size_t len[3];
    const int n = fz_split(data + 1, size - 1, part, len, 3);
    char tok_path[512], tc_path[512];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", fz_dir());
    snprintf(tc_path, sizeof tc_path, "%s/tokenizer_config.json", fz_dir());
    fz_put("tokenizer.json", n > 1 ? part[1] : NULL, n > 1 ? len[1] : SIZE_MAX);
    fz_put("tokenizer_config.json", n > 2 ? part[2] : NULL, n > 2 ? len[2] : SIZE_MAX);
    const char *cfg = (const char *)part[0];
    moec_hf_files hf;
    moec_error err = {0};
    if (moec_hf_files_make(&hf, cfg, len[0], "config.json", n > 1 ? tok_path : NULL, eot, n > 2 ? tc_path : NULL,
                           &err) != MOEC_OK) {
        if (!err.msg[0]) abort();
        moec_hf_files_free(&hf);
        return 0;
    }
    check_json(hf.config);
    check_json(hf.generation_config);
    if ((n > 1) != (hf.tokenizer_config != NULL)) abort();
    if (hf.tokenizer_config) check_json(hf.tokenizer_config);
    moec_hparams a, b;
    if (moec_hparams_parse(&a, cfg, len[0], "config.json", &err) != MOEC_OK ||
        moec_hparams_parse(&b, hf.config, strlen(hf.config), "config.json", &err) != MOEC_OK ||
        !moec_hparams_same(&a, &b))
        abort();
    moec_hf_files again;
    if (moec_hf_files_make(&again, hf.config, strlen(hf.config), "config.json", NULL, eot, NULL, &err) != MOEC_OK ||
        strcmp(again.config, hf.config) || strcmp(again.generation_config, hf.generation_config))
        abort();
    moec_hf_files_free(&again);
    moec_hf_files_free(&hf);
    return 0;
}
