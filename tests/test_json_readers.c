/* test_json_readers.c — every JSON reader refuses what JSON readers disagree on (io/json.h): a
 * key twice in one object (cJSON finds the first copy, Python's json keeps the last) and a
 * number beyond double's range (cJSON reads inf and writes null). Each reader is given such a
 * file and must fail with a message naming the cause: config.json, tokenizer.json (load, GGUF
 * export, checkpoint files), the safetensors header and index, meta.json and train_state.json. */
#include "io/json.h"
#include "io/safetensors.h"
#include "model/gguf_export.h"
#include "model/hparams.h"
#include "train/data.h"
#include "train/hf_files.h"
#include "train/trainer.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[] = "/tmp/moec_json_XXXXXX";

static const char *put_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return path;
}

static int said(const moec_error *err, const char *what) { return strstr(err->msg, what) != NULL; }

static void test_check(void) {
    static const struct {
        const char *text, *msg; /* msg NULL: accepted */
    } cases[] = {
        {"{\"a\": 1, \"b\": [1, 2, {\"a\": 3}], \"c\": {\"d\": -1.5e300}}", NULL},
        {"[]", NULL},
        {"{\"a\": 1, \"b\": 2, \"a\": 3}", "\"a\" appears twice"},
        {"{\"x\": [0, {\"k\": 1, \"j\": 2, \"k\": 1}]}", "\"k\" appears twice"},
        {"{\"x\": {\"y\": {\"z\": 1e310}}}", "\"z\" holds a number too large"},
        {"{\"x\": [1, -1e999]}", "an array holds a number too large"},
        {"1e400", "a number too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *j = cJSON_Parse(cases[i].text);
        moec_error err = {0};
        const moec_status st = moec_json_check(j, "f.json", &err);
        if (!cases[i].msg)
            CHECK(j && st == MOEC_OK, "%s accepted: %s", cases[i].text, err.msg);
        else
            CHECK(j && st == MOEC_ERR_FORMAT && said(&err, cases[i].msg) && said(&err, "f.json"),
                  "%s refused: %s", cases[i].text, err.msg);
        cJSON_Delete(j);
    }
    CHECK(moec_json_check(NULL, "f.json", NULL) == MOEC_OK, "NULL tree accepted");
    /* many keys (the hashed path): 300 distinct ones, then the same with one of them again */
    for (int dup = 0; dup < 2; dup++) {
        cJSON *o = cJSON_CreateObject();
        char key[16];
        for (int i = 0; i < 300; i++) {
            snprintf(key, sizeof key, "k%d", i);
            cJSON_AddNumberToObject(o, key, i);
        }
        if (dup) cJSON_AddNumberToObject(o, "k157", 1);
        moec_error err = {0};
        const moec_status st = moec_json_check(o, "big.json", &err);
        if (dup)
            CHECK(st == MOEC_ERR_FORMAT && said(&err, "\"k157\" appears twice"), "300 keys, one twice: %s", err.msg);
        else
            CHECK(st == MOEC_OK, "300 distinct keys accepted: %s", err.msg);
        cJSON_Delete(o);
    }
}

#define CONFIG                                                                                                    \
    "{\"model_type\": \"mixtral\", \"vocab_size\": 64, \"hidden_size\": 16, \"intermediate_size\": 32, "        \
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"num_local_experts\": 4, " \
    "\"num_experts_per_tok\": 2, \"eos_token_id\": 0"

static void test_config(void) {
    moec_hparams hp;
    moec_error err = {0};
    static const char ok[] = CONFIG "}", inf[] = CONFIG ", \"rope_theta\": 1e310}";
    CHECK(moec_hparams_parse(&hp, ok, strlen(ok), "config.json", &err) == MOEC_OK, "base config parses: %s", err.msg);
    CHECK(moec_hparams_parse(&hp, inf, strlen(inf), "config.json", &err) == MOEC_ERR_FORMAT &&
              said(&err, "\"rope_theta\" holds a number too large"),
          "config.json: huge rope_theta refused: %s", err.msg);
    /* the fuzz finding: eos 1e310 was written back as null, and a second rewrite then filled it */
    static const char eos[] = "{\"model_type\": \"mixtral\", \"vocab_size\": 64, \"hidden_size\": 16, "
                              "\"intermediate_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                              "\"num_key_value_heads\": 1, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"eos_token_id\": 1e+310}";
    moec_hf_files hf;
    err.msg[0] = 0;
    CHECK(moec_hf_files_make(&hf, eos, strlen(eos), "config.json", NULL, 0, NULL, &err) == MOEC_ERR_FORMAT &&
              said(&err, "\"eos_token_id\" holds"),
          "hf files: huge eos refused: %s", err.msg);
    moec_hf_files_free(&hf);
}

#define TOKENIZER(vocab)                                                                                     \
    "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null, \"pre_tokenizer\": {\"type\": "     \
    "\"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}, "            \
    "\"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "     \
    "\"vocab\": {" vocab "}, \"merges\": [[\"a\", \"b\"]]}}"

static void test_tokenizer(void) {
    const char *good = put_file("good.json", TOKENIZER("\"a\": 0, \"b\": 1, \"ab\": 2"));
    moec_tokenizer *tok = NULL;
    moec_error err = {0};
    CHECK(moec_tokenizer_load(&tok, good, &err) == MOEC_OK, "base tokenizer loads: %s", err.msg);
    moec_tokenizer_free(tok);
    tok = NULL;
    /* tokenizers (serde) keeps the last "a": 2, moec would keep id 0 */
    const char *dup = put_file("dup.json", TOKENIZER("\"a\": 0, \"b\": 1, \"a\": 2"));
    CHECK(moec_tokenizer_load(&tok, dup, &err) == MOEC_ERR_FORMAT && said(&err, "\"a\" appears twice") &&
              said(&err, "dup.json"),
          "tokenizer load: duplicate vocab key refused: %s", err.msg);
    moec_tokenizer_free(tok);
    moec_gguf_vocab v;
    memset(&v, 0, sizeof v);
    const char *pre = NULL;
    err.msg[0] = 0;
    CHECK(moec_gguf_vocab_read(dup, 3, NULL, &v, &pre, &err) == MOEC_ERR_FORMAT && said(&err, "appears twice"),
          "GGUF export vocab: duplicate key refused: %s", err.msg);
    moec_gguf_vocab_free(&v);
    moec_hf_files hf;
    static const char cfg[] = CONFIG "}";
    err.msg[0] = 0;
    CHECK(moec_hf_files_make(&hf, cfg, strlen(cfg), "config.json", dup, 0, NULL, &err) == MOEC_ERR_FORMAT &&
              said(&err, "appears twice"),
          "checkpoint files: duplicate tokenizer key refused: %s", err.msg);
    moec_hf_files_free(&hf);
}

static void test_safetensors(void) {
    /* header: a shape that reads as inf */
    static const char hdr[] = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1e310], \"data_offsets\": [0, 4]}}";
    unsigned char buf[256] = {0};
    const uint64_t n = sizeof hdr - 1;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, hdr, n);
    moec_st_set set;
    memset(&set, 0, sizeof set);
    moec_error err = {0};
    CHECK(moec_st_open_buffer(&set, buf, 8 + n + 4, "m.safetensors", &err) == MOEC_ERR_FORMAT &&
              said(&err, "too large for a double"),
          "safetensors header: huge shape refused: %s", err.msg);
    moec_st_close(&set);
    /* index: a tensor mapped to two shards */
    put_file("model.safetensors.index.json",
             "{\"weight_map\": {\"w\": \"a.safetensors\", \"w\": \"b.safetensors\"}}");
    memset(&set, 0, sizeof set);
    err.msg[0] = 0;
    CHECK(moec_st_open_dir(&set, g_dir, &err) == MOEC_ERR_FORMAT && said(&err, "\"w\" appears twice"),
          "index: duplicate weight_map key refused: %s", err.msg);
    moec_st_close(&set);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", g_dir);
    unlink(p);
}

static void test_train_files(void) {
    char data_dir[600];
    snprintf(data_dir, sizeof data_dir, "%s/data", g_dir);
    CHECK(mkdir(data_dir, 0700) == 0, "mkdir %s", data_dir);
    put_file("data/meta.json", "{\"format\": \"moec-tokens\", \"n_docs\": 1, \"n_docs\": 2}");
    moec_data_reader *r = NULL;
    moec_error err = {0};
    CHECK(moec_data_open(&r, data_dir, &err) == MOEC_ERR_FORMAT && said(&err, "\"n_docs\" appears twice"),
          "meta.json: duplicate key refused: %s", err.msg);
    moec_data_close(r);
    moec_train_params p = moec_train_default_params();
    moec_train_state ts;
    static const char st[] = "{\"format\": \"moec-train-state\", \"step\": 1, \"step\": 5}";
    err.msg[0] = 0;
    CHECK(moec_train_state_parse(st, strlen(st), "train_state.json", &p, 1, &ts, &err) == MOEC_ERR_FORMAT &&
              said(&err, "\"step\" appears twice"),
          "train_state.json: duplicate key refused: %s", err.msg);
    static const char big[] = "{\"format\": \"moec-train-state\", \"n_bad\": 1e999}";
    err.msg[0] = 0;
    CHECK(moec_train_state_parse(big, strlen(big), "train_state.json", &p, 1, &ts, &err) == MOEC_ERR_FORMAT &&
              said(&err, "\"n_bad\" holds"),
          "train_state.json: huge n_bad refused: %s", err.msg);
}

int main(void) {
    if (!mkdtemp(g_dir)) return 2;
    test_check();
    test_config();
    test_tokenizer();
    test_safetensors();
    test_train_files();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_finish("test_json_readers");
}
