/* hashmap.c — open-addressing hash maps (linear probing, load <= 1/2) for the tokenizer.
 * Not thread-safe for writers; readers may share a map that is no longer modified. */
#include "text/hashmap.h"

#include "core/rng.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hashing */


uint64_t tk_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ moec_mix64(w)) * 0x100000001b3ULL;
    }
    uint64_t tail = 0;
    for (size_t k = 0; i < n; i++, k++) tail |= (uint64_t)s[i] << (8 * k);
    h = (h ^ moec_mix64(tail + 1)) * 0x100000001b3ULL;
    return moec_mix64(h);
}

/* ---------------------------------------------------------------- string -> int32 */

void tk_strmap_init(tk_strmap *m) { memset(m, 0, sizeof *m); }

void tk_strmap_free(tk_strmap *m) {
    if (!m) return;
    free(m->slots);
    free(m->entries);
    free(m->pool);
    memset(m, 0, sizeof *m);
}

static int64_t strmap_lookup(const tk_strmap *m, uint64_t h, const char *key, size_t len,
                             size_t *slot_out) {
    if (!m->cap) return -1;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t s = m->slots[i];
        if (!s) {
            if (slot_out) *slot_out = i;
            return -1;
        }
        const tk_strmap_entry *e = &m->entries[s - 1];
        if (e->hash == h && e->len == len && !memcmp(m->pool + e->off, key, len)) return s - 1;
    }
}

static int strmap_grow(tk_strmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    if (ncap > ((size_t)1 << 32)) return 0;
    uint32_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return 0;
    for (size_t e = 0; e < m->count; e++) {
        size_t i = (size_t)m->entries[e].hash & (ncap - 1);
        while (ns[i]) i = (i + 1) & (ncap - 1);
        ns[i] = (uint32_t)(e + 1);
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 1;
}

int64_t tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val) {
    uint64_t h = tk_hash_bytes(key, len);
    int64_t idx = strmap_lookup(m, h, key, len, NULL);
    if (idx >= 0) {
        m->entries[idx].val = val;
        return idx;
    }
    if (m->count >= INT32_MAX) return -1;
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m)) return -1;
    if (m->count == m->entries_cap) {
        size_t nc = m->entries_cap ? m->entries_cap * 2 : 64;
        tk_strmap_entry *ne = realloc(m->entries, nc * sizeof *ne);
        if (!ne) return -1;
        m->entries = ne;
        m->entries_cap = nc;
    }
    if (len + 1 > SIZE_MAX / 2 - m->pool_len) return -1;
    if (m->pool_len + len + 1 > m->pool_cap) {
        size_t nc = m->pool_cap ? m->pool_cap : 1024;
        while (nc < m->pool_len + len + 1) nc *= 2;
        char *np = realloc(m->pool, nc);
        if (!np) return -1;
        m->pool = np;
        m->pool_cap = nc;
    }
    memcpy(m->pool + m->pool_len, key, len);
    m->pool[m->pool_len + len] = 0;
    size_t slot = 0;
    strmap_lookup(m, h, key, len, &slot);
    tk_strmap_entry *e = &m->entries[m->count];
    e->hash = h;
    e->off = m->pool_len;
    e->len = len;
    e->val = val;
    m->pool_len += len + 1;
    m->slots[slot] = (uint32_t)(m->count + 1);
    return (int64_t)m->count++;
}

int64_t tk_strmap_find(const tk_strmap *m, const char *key, size_t len) {
    return strmap_lookup(m, tk_hash_bytes(key, len), key, len, NULL);
}

int tk_strmap_get(const tk_strmap *m, const char *key, size_t len, int32_t *val) {
    int64_t idx = tk_strmap_find(m, key, len);
    if (idx < 0) return 0;
    *val = m->entries[idx].val;
    return 1;
}

const char *tk_strmap_key(const tk_strmap *m, size_t idx, size_t *len) {
    if (idx >= m->count) return NULL;
    *len = m->entries[idx].len;
    return m->pool + m->entries[idx].off;
}

/* ---------------------------------------------------------------- uint64 -> uint64 */

void tk_u64map_init(tk_u64map *m) { memset(m, 0, sizeof *m); }

void tk_u64map_free(tk_u64map *m) {
    if (!m) return;
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int u64map_grow(tk_u64map *m) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    if (ncap > SIZE_MAX / sizeof(uint64_t)) return 0;
    uint64_t *nk = malloc(ncap * sizeof *nk), *nv = malloc(ncap * sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return 0;
    }
    for (size_t i = 0; i < ncap; i++) nk[i] = TK_U64MAP_EMPTY;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == TK_U64MAP_EMPTY) continue;
        size_t j = (size_t)moec_mix64(m->keys[i]) & (ncap - 1);
        while (nk[j] != TK_U64MAP_EMPTY) j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return 1;
}

int tk_u64map_put(tk_u64map *m, uint64_t key, uint64_t val) {
    if (key == TK_U64MAP_EMPTY) return 0;
    if ((m->count + 1) * 2 > m->cap && !u64map_grow(m)) return 0;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)moec_mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            m->vals[i] = val;
            return 1;
        }
        if (m->keys[i] == TK_U64MAP_EMPTY) {
            m->keys[i] = key;
            m->vals[i] = val;
            m->count++;
            return 1;
        }
    }
}

int tk_u64map_get(const tk_u64map *m, uint64_t key, uint64_t *val) {
    if (!m->cap || key == TK_U64MAP_EMPTY) return 0;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)moec_mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return 1;
        }
        if (m->keys[i] == TK_U64MAP_EMPTY) return 0;
    }
}
