/* checkpoint.c — see checkpoint.h. Linux-specific (renameat2). */
#include "train/checkpoint.h"

#include "core/error.h"
#include "io/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

moec_status moec_rmtree(const char *path, moec_error *err) {
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) return MOEC_OK;
        return moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    struct dirent *e;
    moec_status st = MOEC_OK;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        if (!moec_path_join(p, sizeof p, path, e->d_name)) {
            st = moec_err(err, MOEC_ERR_IO, "path too long under %s", path);
            break;
        }
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) st = moec_rmtree(p, err);
        else if (unlink(p) != 0) st = moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", p, strerror(errno));
    }
    closedir(d);
    if (!st && rmdir(path) != 0) st = moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return st;
}

static void fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

moec_status moec_ckpt_commit(const char *dir, const moec_ckpt_file *files, int n_files,
                             moec_status (*write_more)(const char *tmp_dir, void *ctx, moec_error *err), void *ctx,
                             moec_error *err) {
    char tmp[4096], parent[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir);
    moec_status st = moec_rmtree(tmp, err); /* leftovers of a killed write */
    if (st) return st;
    if (mkdir(tmp, 0755) != 0) return moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    for (int i = 0; i < n_files && !st; i++) {
        char p[4096];
        if (!moec_path_join(p, sizeof p, tmp, files[i].name)) {
            st = moec_err(err, MOEC_ERR_IO, "path too long under %s", tmp);
            break;
        }
        if (files[i].link) {
            if (access(files[i].src_path, F_OK) == 0 && link(files[i].src_path, p) != 0)
                st = moec_err(err, MOEC_ERR_IO, "cannot link %s into %s: %s", files[i].src_path, tmp, strerror(errno));
        } else if (files[i].src_path) {
            char *buf = NULL;
            size_t n = 0;
            st = moec_file_read_all(files[i].src_path, &buf, &n, err);
            if (!st) {
                moec_iovec v = {buf, n};
                st = moec_file_write_atomic(p, &v, 1, err);
            }
            free(buf);
        } else {
            moec_iovec v = {files[i].data, files[i].size};
            st = moec_file_write_atomic(p, &v, 1, err);
        }
    }
    if (!st && write_more) st = write_more(tmp, ctx, err);
    if (st) {
        moec_rmtree(tmp, NULL);
        return st;
    }
    fsync_path(tmp, 1);
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        /* atomic swap: <dir> becomes the new checkpoint, <dir>.tmp the old one */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0) {
            int e = errno;
            moec_rmtree(tmp, NULL);
            return moec_err(err, MOEC_ERR_IO, "cannot swap %s into place: %s", dir, strerror(e));
        }
        st = moec_rmtree(tmp, err);
    } else if (rename(tmp, dir) != 0) {
        int e = errno;
        moec_rmtree(tmp, NULL);
        return moec_err(err, MOEC_ERR_IO, "cannot rename %s to %s: %s", tmp, dir, strerror(e));
    }
    snprintf(parent, sizeof parent, "%s/..", dir);
    fsync_path(parent, 1);
    return st;
}
