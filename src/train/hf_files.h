/* hf_files.h — the Hugging Face files a moec checkpoint carries beside its weights, so that
 * transformers' AutoConfig / AutoModelForCausalLM / AutoTokenizer / generate() load it as is:
 *   config.json             the run's config completed the way transformers 5 writes it
 *   tokenizer_config.json   a tokenizer class that round-trips (PreTrainedTokenizerFast over the
 *                           checkpoint's tokenizer.json), bos/eos/pad, chat template when known
 *   generation_config.json  bos/eos/pad ids for generate()
 * Not here: the weights (params.c), copying tokenizer.json itself (trainer.c). */
#ifndef MOEC_TRAIN_HF_FILES_H
#define MOEC_TRAIN_HF_FILES_H

#include "moec.h"

#include <stddef.h>
#include <stdint.h>

/* The version of transformers these files are written for and tested against (py_test_hf.py). */
#define MOEC_HF_TRANSFORMERS_VERSION "5.24.0"

typedef struct {
    char *config;            /* config.json text */
    char *tokenizer_config;  /* tokenizer_config.json text; NULL without a tokenizer */
    char *generation_config; /* generation_config.json text */
} moec_hf_files;

/* Builds the three files from the run's config.json text (config_path: for messages),
 * the checkpoint's tokenizer.json (NULL: none), the data's end-of-text id (-1: none; it becomes
 * eos_token_id when the config has none) and an optional tokenizer_config.json to take a
 * chat_template from (NULL or a missing file: none). The new config.json is checked to read
 * back to the same hyper-parameters. Caller frees with moec_hf_files_free (also on error). */
moec_status moec_hf_files_make(moec_hf_files *out, const char *config_text, size_t config_len, const char *config_path,
                               const char *tokenizer_path, int32_t eot_id, const char *template_source,
                               moec_error *err);
void moec_hf_files_free(moec_hf_files *f); /* accepts NULL and zeroed structs */

#endif
