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

/* Live mappings, so that a SIGBUS handler can say which file shrank under it (see file.h).
 * Slots are claimed with an atomic flag; the handler only reads them. */
#define MAP_SLOTS 256
static struct {
    int used;             /* claimed (atomic) */
    const char *volatile addr;
    size_t size;
    char path[512];
} g_maps[MAP_SLOTS];

static void map_register(const void *addr, size_t size, const char *path) {
    for (int i = 0; i < MAP_SLOTS; i++) {
        int expect = 0;
        if (!__atomic_compare_exchange_n(&g_maps[i].used, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
        snprintf(g_maps[i].path, sizeof g_maps[i].path, "%s", path);
        g_maps[i].size = size;
        __atomic_store_n(&g_maps[i].addr, (const char *)addr, __ATOMIC_RELEASE);
        return;
    }
}

static void map_unregister(const void *addr) {
    for (int i = 0; i < MAP_SLOTS; i++)
        if (__atomic_load_n(&g_maps[i].used, __ATOMIC_ACQUIRE) && g_maps[i].addr == addr) {
            __atomic_store_n(&g_maps[i].addr, (const char *)NULL, __ATOMIC_RELEASE);
            __atomic_store_n(&g_maps[i].used, 0, __ATOMIC_RELEASE);
            return;
        }
}

const char *moec_file_map_owner(const void *addr) {
    const char *a = addr;
    for (int i = 0; i < MAP_SLOTS; i++) {
        const char *base = __atomic_load_n(&g_maps[i].addr, __ATOMIC_ACQUIRE);
        if (base && a >= base && a < base + g_maps[i].size) return g_maps[i].path;
    }
    return NULL;
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
    map_register(p, out->size, path);
    return MOEC_OK;
}

void moec_file_unmap(moec_mmap *m) {
    if (m && m->addr) {
        map_unregister(m->addr);
        munmap(m->addr, m->size);
    }
    if (m) {
        m->addr = NULL;
        m->size = 0;
    }
}

static moec_status write_all(int fd, const char *name, const char *p, size_t left, moec_error *err) {
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return moec_err(err, MOEC_ERR_IO, "cannot write %s: %s", name, w < 0 ? strerror(errno) : "no progress");
        p += w;
        left -= (size_t)w;
    }
    return MOEC_OK;
}

static moec_status write_parts(int fd, const char *name, const moec_iovec *parts, int n_parts, moec_error *err) {
    char *buf = NULL; /* for the parts that fill: one chunk, reused */
    size_t cap = 0;
    moec_status st = MOEC_OK;
    for (int i = 0; i < n_parts && !st; i++) {
        const moec_iovec *pt = &parts[i];
        if (!pt->fill) {
            st = write_all(fd, name, pt->data, pt->size, err);
            continue;
        }
        const size_t unit = pt->unit ? pt->unit : 1;
        size_t chunk = MOEC_FILE_FILL_BYTES / unit * unit;
        if (!chunk) chunk = unit;
        if (chunk > pt->size) chunk = pt->size;
        if (chunk > cap) {
            char *nb = realloc(buf, chunk);
            if (!nb) {
                st = moec_err(err, MOEC_ERR_OOM, "out of memory writing %s", name);
                break;
            }
            buf = nb;
            cap = chunk;
        }
        for (size_t off = 0; off < pt->size && !st; off += chunk) {
            const size_t n = pt->size - off < chunk ? pt->size - off : chunk;
            pt->fill(pt, off, buf, n);
            st = write_all(fd, name, buf, n, err);
        }
    }
    free(buf);
    return st;
}

/* Not a regular file (a character device such as /dev/null, a FIFO, a socket): there is
 * nothing to replace atomically, so the bytes are written straight into it. */
static moec_status write_direct(const char *path, const moec_iovec *parts, int n_parts, moec_error *err) {
    int fd = open(path, O_WRONLY | O_NOCTTY);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot open %s for writing: %s", path, strerror(errno));
    moec_status st = write_parts(fd, path, parts, n_parts, err);
    if (close(fd) != 0 && !st) st = moec_err(err, MOEC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return st;
}

moec_status moec_file_write_atomic(const char *path, const moec_iovec *parts, int n_parts,
                                   moec_error *err) {
    /* what `path` names after following symlinks decides how it is written */
    char target[4096];
    struct stat sb;
    mode_t mode = 0644;
    int keep_mode = 0;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return moec_err(err, MOEC_ERR_IO, "cannot write %s: it is a directory", path);
        if (!S_ISREG(sb.st_mode)) return write_direct(path, parts, n_parts, err);
        /* a regular file, maybe behind symlinks: replace the file itself, in its own
         * directory (the rename must not cross file systems, and the link must survive) */
        char *real = realpath(path, NULL);
        if (!real) return moec_err(err, MOEC_ERR_IO, "cannot resolve %s: %s", path, strerror(errno));
        int fits = snprintf(target, sizeof target, "%s", real) < (int)sizeof target;
        free(real);
        if (!fits) return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", path);
        mode = sb.st_mode & 07777;
        keep_mode = 1;
    } else if (errno == ENOENT && lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        return moec_err(err, MOEC_ERR_IO, "cannot write %s: it is a symlink to a missing file", path);
    } else if (errno != ENOENT) {
        return moec_err(err, MOEC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    } else if (snprintf(target, sizeof target, "%s", path) >= (int)sizeof target) {
        return moec_err(err, MOEC_ERR_INVALID_ARG, "path too long: %s", path);
    }
    char tmp[4096 + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", target, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
    if (fd < 0) return moec_err(err, MOEC_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    moec_status st = write_parts(fd, tmp, parts, n_parts, err);
    if (!st && keep_mode && fchmod(fd, mode) != 0)
        st = moec_err(err, MOEC_ERR_IO, "cannot set the mode of %s: %s", tmp, strerror(errno));
    if (!st && fsync(fd) != 0) st = moec_err(err, MOEC_ERR_IO, "cannot flush %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !st) st = moec_err(err, MOEC_ERR_IO, "cannot flush %s: %s", tmp, strerror(errno));
    if (!st && rename(tmp, target) != 0)
        st = moec_err(err, MOEC_ERR_IO, "cannot rename %s to %s: %s", tmp, target, strerror(errno));
    if (st) {
        unlink(tmp);
        return st;
    }
    /* make the rename itself durable */
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", target);
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
