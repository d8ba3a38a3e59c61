/* file.c — POSIX implementations of the helpers in file.h. */
#include "io/file.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

moec_status moec_file_read_all(const char *path, char **data, size_t *size, moec_error *err) {
    *data = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return moec_err(err, MOEC_ERR_IO, "cannot read %s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return moec_err(err, MOEC_ERR_OOM, "out of memory reading %s (%zu bytes)", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return moec_err(err, MOEC_ERR_IO, "cannot read %s: %s", path,
                            r < 0 ? strerror(errno) : "unexpected end of file");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *data = buf;
    *size = n;
    return MOEC_OK;
}

moec_status moec_file_map(const char *path, moec_mmap *out, moec_error *err) {
    out->addr = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return moec_err(err, MOEC_ERR_IO, "cannot map %s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return MOEC_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return moec_err(err, MOEC_ERR_IO, "cannot mmap %s: %s", path, strerror(errno));
    out->addr = p;
    out->size = (size_t)st.st_size;
    return MOEC_OK;
}

void moec_file_unmap(moec_mmap *m) {
    if (m && m->addr) munmap(m->addr, m->size);
    if (m) {
        m->addr = NULL;
        m->size = 0;
    }
}

moec_status moec_file_write_atomic(const char *path, const moec_iovec *parts, int n_parts,
                                   moec_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    for (int i = 0; i < n_parts; i++) {
        const char *p = parts[i].data;
        size_t left = parts[i].size;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                int e = errno;
                close(fd);
                unlink(tmp);
                return moec_err(err, MOEC_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return moec_err(err, MOEC_ERR_IO, "cannot flush %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return moec_err(err, MOEC_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    /* make the rename itself durable */
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return MOEC_OK;
}

int moec_path_join(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap;
}
