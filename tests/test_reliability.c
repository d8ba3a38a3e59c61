/* test_reliability.c — regression tests for what issue #9's hostile inputs found, at the
 * library level (the CLI-level ones are in py_test_reliability.py):
 *   - a config.json whose parameter count wraps size_t is refused (it overflowed the heap);
 *     one that fits 64 bits but not the machine is refused before allocating;
 *   - a checkpoint is checked against a huge config without config-sized allocations, and
 *     the first missing tensor is named;
 *   - qwen3_moe without head_dim and hidden < heads is refused (it trained with head_dim 0);
 *   - an index.json with an empty weight_map is an error (it reached qsort on NULL);
 *   - decoding zero ids through Fuse -> Strip gives "" with its NUL (it computed NULL + 0);
 *   - the atomic writer writes through symlinks, straight into FIFOs, refuses directories,
 *     dangling links and loops, keeps the file mode;
 *   - rmtree never follows a symlink; a checkpoint swap through a symlinked dir keeps the
 *     link and the user's own files (it deleted the real run directory).
 * Temporary files go under /tmp. */
#include "core/mem.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "model/hparams.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/params.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char g_root[256];

static void path_of(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_root, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static int read_text(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return (int)n;
}

/* ---------------------------------------------------------------- sizes from config.json */

static void test_param_sizes(void) {
    moec_error err = {0};
    moec_hparams hp;
    moec_tparams tp;
    /* every field in range; the parameter count is 2^64 + 176128 (found by solving for a wrap) */
    const char *wrap = "{\"model_type\":\"qwen3_moe\",\"vocab_size\":2047,\"hidden_size\":1048576,"
                       "\"num_hidden_layers\":1024,\"num_attention_heads\":48767,\"num_key_value_heads\":48767,"
                       "\"head_dim\":86,\"num_experts\":1364,\"num_experts_per_tok\":1,"
                       "\"moe_intermediate_size\":4194304,\"intermediate_size\":512}";
    moec_status st = moec_hparams_parse(&hp, wrap, strlen(wrap), "wrap.json", &err);
    CHECK(st == MOEC_OK, "the wrapping config parses (every field is in range): %s", err.msg);
    if (!st) {
        int64_t n_t;
        uint64_t n_e;
        CHECK(!moec_model_tensor_total(&hp, &n_t, &n_e), "its element count is reported as overflowing");
        st = moec_tparams_new(&tp, &hp, &err);
        CHECK(st == MOEC_ERR_FORMAT && strstr(err.msg, "64-bit"), "refused, not allocated: %d %s", st, err.msg);
        CHECK(tp.w == NULL && tp.specs == NULL, "nothing left allocated");
        moec_tparams_free(&tp);
    }
    /* fits in 64 bits, not in any machine: 2^24 x 2^20 embeddings = 64 TB of fp32 */
    const char *huge = "{\"model_type\":\"mixtral\",\"vocab_size\":16777216,\"hidden_size\":1048576,"
                       "\"num_hidden_layers\":1,\"num_attention_heads\":16,\"num_local_experts\":1,"
                       "\"num_experts_per_tok\":1,\"intermediate_size\":1}";
    st = moec_hparams_parse(&hp, huge, strlen(huge), "huge.json", &err);
    CHECK(st == MOEC_OK, "the huge config parses: %s", err.msg);
    if (!st) {
        st = moec_tparams_new(&tp, &hp, &err);
        CHECK(st == MOEC_ERR_OOM && strstr(err.msg, "MB needed"),
              "refused before allocating with the size it asked for: %d %s", st, err.msg);
        moec_tparams_free(&tp);
    }
    /* qwen3_moe: no head_dim and hidden < heads gave head_dim 0 */
    const char *hd0 = "{\"model_type\":\"qwen3_moe\",\"vocab_size\":32,\"hidden_size\":4,\"num_hidden_layers\":1,"
                      "\"num_attention_heads\":8,\"num_experts\":2,\"num_experts_per_tok\":1,"
                      "\"moe_intermediate_size\":8}";
    st = moec_hparams_parse(&hp, hd0, strlen(hd0), "hd0.json", &err);
    CHECK(st == MOEC_ERR_FORMAT && strstr(err.msg, "head_dim"), "head_dim 0 refused: %d %s", st, err.msg);
    /* the memory check itself */
    CHECK(moec_mem_check(SIZE_MAX, "x", &err) == MOEC_ERR_OOM, "SIZE_MAX bytes never fit");
    CHECK(moec_mem_check(1, "x", &err) == MOEC_OK, "one byte fits");
    size_t acc = 1;
    CHECK(!moec_size_muladd(&acc, SIZE_MAX / 2, 3), "muladd detects a product overflow");
    acc = SIZE_MAX;
    CHECK(!moec_size_muladd(&acc, 1, 1), "muladd detects a sum overflow");
}

/* A checkpoint holding one good tensor, checked against a config with 1024 layers x 65536
 * experts (3.2e8 tensors): the first missing tensor is named, nothing config-sized is built. */
static void test_check_dir_huge(void) {
    moec_error err = {0};
    moec_hparams hp;
    const char *cfg = "{\"model_type\":\"mixtral\",\"vocab_size\":8,\"hidden_size\":4,\"num_hidden_layers\":1024,"
                      "\"num_attention_heads\":2,\"num_key_value_heads\":2,\"num_local_experts\":65536,\"num_experts_per_tok\":2,"
                      "\"intermediate_size\":4}";
    moec_status st = moec_hparams_parse(&hp, cfg, strlen(cfg), "big.json", &err);
    CHECK(st == MOEC_OK, "parses: %s", err.msg);
    if (st) return;
    char dir[512], file[600];
    path_of(dir, sizeof dir, "bigexp");
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    float emb[32] = {0};
    moec_st_entry e = {.name = "model.embed_tokens.weight", .n_dims = 2, .shape = {8, 4, 0, 0}, .data = emb};
    CHECK(moec_st_write(file, &e, 1, MOEC_DTYPE_F32, &err) == MOEC_OK, "write: %s", err.msg);
    st = moec_tparams_check_dir(&hp, dir, &err);
    CHECK(st == MOEC_ERR_FORMAT && strstr(err.msg, "missing tensor 'model.layers.0.input_layernorm.weight'"),
          "names the first missing tensor: %d %s", st, err.msg);
}

/* ---------------------------------------------------------------- safetensors index */

static void test_empty_weight_map(void) {
    moec_error err = {0};
    char dir[512], file[600];
    path_of(dir, sizeof dir, "emptymap");
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
    write_text(file, "{\"metadata\": {}, \"weight_map\": {}}");
    moec_st_set set;
    moec_status st = moec_st_open_dir(&set, dir, &err);
    CHECK(st == MOEC_ERR_FORMAT && strstr(err.msg, "empty"), "empty weight_map refused: %d %s", st, err.msg);
    moec_st_set zero;
    memset(&zero, 0, sizeof zero);
    CHECK(moec_st_find(&zero, "x") == NULL, "find in an empty set is NULL (no bsearch on NULL)");
    /* a single file with no tensors at all is a valid, empty set */
    float one = 1.f;
    snprintf(file, sizeof file, "%s/one.safetensors", dir);
    moec_st_entry e = {.name = "a", .n_dims = 1, .shape = {1, 0, 0, 0}, .data = &one};
    CHECK(moec_st_write(file, &e, 0, MOEC_DTYPE_F32, &err) == MOEC_OK, "write empty: %s", err.msg);
    st = moec_st_open_file(&set, file, &err);
    CHECK(st == MOEC_OK && set.n_tensors == 0 && moec_st_find(&set, "a") == NULL, "empty file opens: %s", err.msg);
    moec_st_close(&set);
}

/* ---------------------------------------------------------------- decoder */

static void test_decode_empty(void) {
    moec_error err = {0};
    char path[512];
    path_of(path, sizeof path, "fuse_strip.json");
    write_text(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                     " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"},"
                     " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}}");
    moec_tokenizer *tok = NULL;
    moec_status st = moec_tokenizer_load(&tok, path, &err);
    CHECK(st == MOEC_OK, "load Fuse -> Strip tokenizer: %s", err.msg);
    if (st) return;
    char *text = NULL;
    size_t len = 99;
    st = moec_tokenizer_decode(tok, NULL, 0, 0, &text, &len, &err);
    CHECK(st == MOEC_OK && text && len == 0 && text[0] == 0, "zero ids decode to \"\" with its NUL: %d %s", st,
          err.msg);
    free(text);
    const int32_t ids[2] = {0, 1};
    st = moec_tokenizer_decode(tok, ids, 2, 0, &text, &len, &err);
    CHECK(st == MOEC_OK && len == 2 && !strcmp(text, "ab"), "ids 0,1 decode to \"ab\": %s", text ? text : "(null)");
    free(text);
    moec_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- the atomic writer */

static void test_atomic_writer(void) {
    moec_error err = {0};
    char target[512], link[512], fifo[512], dir[512], dangling[512], loop_a[512], loop_b[512], buf[64];
    path_of(target, sizeof target, "real.txt");
    path_of(link, sizeof link, "link.txt");
    write_text(target, "old");
    chmod(target, 0600);
    CHECK(symlink("real.txt", link) == 0, "symlink: %s", strerror(errno));
    moec_iovec v = {.data = "new", .size = 3};
    moec_status st = moec_file_write_atomic(link, &v, 1, &err);
    struct stat sb;
    CHECK(st == MOEC_OK, "write through a symlink: %s", err.msg);
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode), "the symlink is still a symlink");
    CHECK(read_text(target, buf, sizeof buf) == 3 && !strcmp(buf, "new"), "its target holds the new bytes: %s", buf);
    CHECK(stat(target, &sb) == 0 && (sb.st_mode & 0777) == 0600, "the target keeps its mode (%o)", sb.st_mode & 0777);

    /* a FIFO: written into, not replaced (like -o /dev/null) */
    path_of(fifo, sizeof fifo, "pipe");
    CHECK(mkfifo(fifo, 0644) == 0, "mkfifo: %s", strerror(errno));
    int rd = open(fifo, O_RDONLY | O_NONBLOCK); /* a reader, so the writer's open succeeds */
    st = moec_file_write_atomic(fifo, &v, 1, &err);
    CHECK(st == MOEC_OK, "write into a FIFO: %s", err.msg);
    CHECK(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO is still a FIFO");
    ssize_t n = rd >= 0 ? read(rd, buf, sizeof buf) : -1;
    CHECK(n == 3 && !memcmp(buf, "new", 3), "the reader got the bytes (%zd)", n);
    if (rd >= 0) close(rd);

    path_of(dir, sizeof dir, "adir");
    mkdir(dir, 0755);
    st = moec_file_write_atomic(dir, &v, 1, &err);
    CHECK(st == MOEC_ERR_IO && strstr(err.msg, "directory"), "a directory is refused: %s", err.msg);
    CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode), "and left alone");

    path_of(dangling, sizeof dangling, "dangling");
    CHECK(symlink("no_such_file", dangling) == 0, "symlink");
    st = moec_file_write_atomic(dangling, &v, 1, &err);
    CHECK(st == MOEC_ERR_IO && strstr(err.msg, "missing"), "a dangling symlink is refused: %s", err.msg);

    path_of(loop_a, sizeof loop_a, "loop_a");
    path_of(loop_b, sizeof loop_b, "loop_b");
    CHECK(symlink("loop_b", loop_a) == 0 && symlink("loop_a", loop_b) == 0, "symlink loop");
    st = moec_file_write_atomic(loop_a, &v, 1, &err);
    CHECK(st == MOEC_ERR_IO && strstr(err.msg, strerror(ELOOP)), "a symlink loop is refused: %s", err.msg);
    CHECK(lstat(loop_a, &sb) == 0 && S_ISLNK(sb.st_mode), "and left alone");

    /* a device: if /dev/null can be made here (root), it stays a device */
    char null[512];
    path_of(null, sizeof null, "null");
    if (mknod(null, S_IFCHR | 0666, makedev(1, 3)) == 0) {
        st = moec_file_write_atomic(null, &v, 1, &err);
        CHECK(st == MOEC_OK && lstat(null, &sb) == 0 && S_ISCHR(sb.st_mode), "a null device stays a device: %s",
              err.msg);
    } else {
        printf("note: mknod not permitted, device case covered by the FIFO case only\n");
    }
}

/* ---------------------------------------------------------------- removal and the swap */

static void test_rmtree_and_swap(void) {
    moec_error err = {0};
    char run[512], notes[600], victim[512], vfile[600], tree[512], lnk[600], latest[512], p[700], buf[64];
    /* rmtree of a tree with a symlink into another directory leaves that directory alone */
    path_of(victim, sizeof victim, "victim");
    mkdir(victim, 0755);
    snprintf(vfile, sizeof vfile, "%s/keep.txt", victim);
    write_text(vfile, "keep");
    path_of(tree, sizeof tree, "tree");
    mkdir(tree, 0755);
    snprintf(lnk, sizeof lnk, "%s/to_victim", tree);
    CHECK(symlink(victim, lnk) == 0, "symlink");
    CHECK(moec_rmtree(tree, &err) == MOEC_OK, "rmtree: %s", err.msg);
    CHECK(access(vfile, F_OK) == 0, "rmtree did not follow the symlink inside the tree");
    CHECK(symlink(victim, tree) == 0, "symlink as the path itself");
    CHECK(moec_rmtree(tree, &err) == MOEC_OK && access(vfile, F_OK) == 0 && access(tree, F_OK) != 0,
          "rmtree of a symlink removes only the link: %s", err.msg);

    /* latest -> run: two commits through the link */
    path_of(run, sizeof run, "run1");
    path_of(latest, sizeof latest, "latest");
    mkdir(run, 0755);
    CHECK(symlink("run1", latest) == 0, "symlink latest");
    moec_ckpt_file f1 = {"state.json", NULL, "{\"step\": 1}", 11, 0};
    CHECK(moec_ckpt_commit(latest, &f1, 1, NULL, NULL, &err) == MOEC_OK, "commit 1: %s", err.msg);
    snprintf(notes, sizeof notes, "%s/notes.txt", run);
    write_text(notes, "my notes");
    snprintf(p, sizeof p, "%s/plots", run);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/plots/a.txt", run);
    write_text(p, "plot");
    snprintf(p, sizeof p, "%s/draft.tmp.txt", run); /* looks like, but is not, a writer's temp file */
    write_text(p, "draft");
    moec_ckpt_file f2 = {"state.json", NULL, "{\"step\": 2}", 11, 0};
    CHECK(moec_ckpt_commit(latest, &f2, 1, NULL, NULL, &err) == MOEC_OK, "commit 2: %s", err.msg);
    struct stat sb;
    CHECK(lstat(latest, &sb) == 0 && S_ISLNK(sb.st_mode), "latest is still a symlink");
    snprintf(p, sizeof p, "%s/state.json", run);
    CHECK(read_text(p, buf, sizeof buf) > 0 && strstr(buf, "2"), "the run holds the new checkpoint: %s", buf);
    CHECK(read_text(notes, buf, sizeof buf) > 0 && !strcmp(buf, "my notes"), "the user's notes survive");
    snprintf(p, sizeof p, "%s/plots/a.txt", run);
    CHECK(read_text(p, buf, sizeof buf) > 0 && !strcmp(buf, "plot"), "the user's subdirectory survives");
    snprintf(p, sizeof p, "%s/draft.tmp.txt", run);
    CHECK(read_text(p, buf, sizeof buf) > 0 && !strcmp(buf, "draft"), "a user's file named like a temp file survives");
    snprintf(p, sizeof p, "%s.tmp", run);
    CHECK(access(p, F_OK) != 0, "no staging directory left");
    snprintf(p, sizeof p, "%s.tmp", latest);
    CHECK(access(p, F_OK) != 0, "nothing made beside the link");
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/moec_rel_XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    test_param_sizes();
    test_check_dir_huge();
    test_empty_weight_map();
    test_decode_empty();
    test_atomic_writer();
    test_rmtree_and_swap();
    moec_rmtree(g_root, NULL);
    return test_finish("test_reliability");
}
