/* checkpoint.c — see checkpoint.h. Linux-specific (renameat2, openat). */
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

/* ------------------------------------------------------------------ removal, never through links */

/* Empties the directory open as dfd (consumed), recursing into subdirectories by descriptor:
 * a symlink is removed as a link and never followed, wherever it sits. */
static moec_status rm_contents(int dfd, const char *path, moec_error *err) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return moec_err(err, MOEC_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    }
    moec_status st = MOEC_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue; /* already gone */
        if (S_ISDIR(sb.st_mode)) {
            int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (sub < 0) st = moec_err(err, MOEC_ERR_IO, "cannot open %s/%s: %s", path, e->d_name, strerror(errno));
            else st = rm_contents(sub, path, err);
            if (!st && unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0)
                st = moec_err(err, MOEC_ERR_IO, "cannot remove %s/%s: %s", path, e->d_name, strerror(errno));
        } else if (unlinkat(dirfd(d), e->d_name, 0) != 0) {
            st = moec_err(err, MOEC_ERR_IO, "cannot remove %s/%s: %s", path, e->d_name, strerror(errno));
        }
    }
    closedir(d);
    return st;
}

moec_status moec_rmtree(const char *path, moec_error *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT) return MOEC_OK;
        return moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) { /* a file or a symlink: remove that name only */
        if (unlink(path) != 0) return moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
        return MOEC_OK;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    moec_status st = rm_contents(fd, path, err);
    if (!st && rmdir(path) != 0) st = moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return st;
}

/* ------------------------------------------------------------------ the swap */

static void fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Removes a staging directory ("<dir>.tmp": a write that was killed, or the previous
 * checkpoint after the swap). Its regular files are moec's own or hard links of files that
 * live on in <dir>; anything else in it (a directory or symlink of the user's, carried over by
 * carry_foreign) is moved back into <dir>, never deleted. */
static moec_status clean_staging(const char *tmp, const char *dir, moec_error *err) {
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return MOEC_OK;
        if (errno == ENOTDIR || errno == ELOOP)
            return moec_err(err, MOEC_ERR_IO, "%s exists and is not a directory moec made: move it away", tmp);
        return moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", tmp, strerror(errno));
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return moec_err(err, MOEC_ERR_IO, "cannot read %s: %s", tmp, strerror(errno));
    }
    moec_status st = MOEC_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISREG(sb.st_mode)) {
            if (unlinkat(dirfd(d), e->d_name, 0) != 0)
                st = moec_err(err, MOEC_ERR_IO, "cannot remove %s/%s: %s", tmp, e->d_name, strerror(errno));
            continue;
        }
        char back[4096];
        if (!moec_path_join(back, sizeof back, dir, e->d_name) || renameat2(dirfd(d), e->d_name, AT_FDCWD, back,
                                                                          RENAME_NOREPLACE) != 0)
            st = moec_err(err, MOEC_ERR_IO, "%s/%s is not moec's and cannot be moved back to %s: move it away", tmp,
                          e->d_name, dir);
    }
    closedir(d);
    if (!st && rmdir(tmp) != 0) st = moec_err(err, MOEC_ERR_IO, "cannot remove %s: %s", tmp, strerror(errno));
    return st;
}

/* 1 for "<name>.tmp.<pid>", the temp file of an atomic write that was killed midway. */
static int is_writer_temp(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t) return 0;
    while (strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
    t += 5;
    return *t && strspn(t, "0123456789") == strlen(t);
}

/* Entries of the current <dir> that the new checkpoint does not replace (the user's notes, a
 * plots folder): regular files are hard-linked into tmp, anything else is moved there, so the
 * swap keeps them in <dir>. */
static moec_status carry_foreign(const char *dir, const char *tmp, moec_error *err) {
    DIR *d = opendir(dir);
    if (!d) return moec_err(err, MOEC_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
    moec_status st = MOEC_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (is_writer_temp(e->d_name)) continue; /* an atomic writer's temp file, killed midway */
        struct stat sb;
        char to[4096];
        if (!moec_path_join(to, sizeof to, tmp, e->d_name)) {
            st = moec_err(err, MOEC_ERR_IO, "path too long under %s", tmp);
            break;
        }
        if (lstat(to, &sb) == 0) continue; /* part of the new checkpoint */
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
        const int ok = S_ISREG(sb.st_mode) ? linkat(dirfd(d), e->d_name, AT_FDCWD, to, 0) == 0
                                           : renameat(dirfd(d), e->d_name, AT_FDCWD, to) == 0;
        if (!ok) st = moec_err(err, MOEC_ERR_IO, "cannot keep %s/%s in the new checkpoint: %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
    return st;
}

moec_status moec_ckpt_commit(const char *dir_arg, const moec_ckpt_file *files, int n_files,
                             moec_status (*write_more)(const char *tmp_dir, void *ctx, moec_error *err), void *ctx,
                             moec_error *err) {
    char dir[4096], tmp[4096 + 8], parent[4096 + 8];
    /* a symlinked <dir> (runs/latest -> runs/3) is followed once: the directory it names is
     * the one swapped, in its own parent, and the link is left as it is */
    struct stat sb;
    if (lstat(dir_arg, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        char *real = realpath(dir_arg, NULL);
        if (!real) return moec_err(err, MOEC_ERR_IO, "cannot resolve %s: %s", dir_arg, strerror(errno));
        const int fits = snprintf(dir, sizeof dir, "%s", real) < (int)sizeof dir;
        free(real);
        if (!fits) return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir_arg);
    } else if (snprintf(dir, sizeof dir, "%s", dir_arg) >= (int)sizeof dir) {
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", dir_arg);
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    const int have_dir = stat(dir, &sb) == 0;
    if (have_dir && !S_ISDIR(sb.st_mode)) return moec_err(err, MOEC_ERR_IO, "%s exists and is not a directory", dir);
    moec_status st = clean_staging(tmp, dir, err); /* leftovers of a killed write */
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
                moec_iovec v = {.data = buf, .size = n};
                st = moec_file_write_atomic(p, &v, 1, err);
            }
            free(buf);
        } else {
            moec_iovec v = {.data = files[i].data, .size = files[i].size};
            st = moec_file_write_atomic(p, &v, 1, err);
        }
    }
    if (!st && write_more) st = write_more(tmp, ctx, err);
    if (!st && have_dir) st = carry_foreign(dir, tmp, err);
    if (st) {
        clean_staging(tmp, dir, NULL);
        return st;
    }
    fsync_path(tmp, 1);
    if (have_dir) {
        /* atomic swap: <dir> becomes the new checkpoint, <dir>.tmp the old one */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0) {
            int e = errno;
            clean_staging(tmp, dir, NULL);
            return moec_err(err, MOEC_ERR_IO, "cannot swap %s into place: %s", dir, strerror(e));
        }
        st = clean_staging(tmp, dir, err);
    } else if (rename(tmp, dir) != 0) {
        int e = errno;
        clean_staging(tmp, dir, NULL);
        return moec_err(err, MOEC_ERR_IO, "cannot rename %s to %s: %s", tmp, dir, strerror(e));
    }
    snprintf(parent, sizeof parent, "%s/..", dir);
    fsync_path(parent, 1);
    return st;
}
