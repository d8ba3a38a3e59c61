/* hashmap.h — two small open-addressing hash maps for the tokenizer: byte string -> int32
 * (vocabularies, added tokens, word caches) and uint64 -> uint64 (BPE merge pairs, trie edges).
 * Not a general container: no deletion, no iteration order, single-threaded writers. */
#ifndef MOEC_TEXT_HASHMAP_H
#define MOEC_TEXT_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- string -> int32 */

typedef struct {
    uint64_t hash;
    size_t off; /* key bytes in pool */
    size_t len;
    int32_t val;
} tk_strmap_entry;

typedef struct {
    uint32_t *slots;          /* entry index + 1, 0 = empty; capacity is a power of two */
    size_t cap;
    tk_strmap_entry *entries; /* in insertion order */
    size_t count, entries_cap;
    char *pool;               /* key bytes, NUL-terminated each */
    size_t pool_len, pool_cap;
} tk_strmap;

/* Zeroes m; the first put allocates. */
void tk_strmap_init(tk_strmap *m);
void tk_strmap_free(tk_strmap *m); /* accepts a zeroed map */
/* Inserts key -> val, overwriting the value of an existing key. Returns the entry index
 * (stable for the map's lifetime), or -1 on allocation failure or more than 2^31 entries. */
int64_t tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val);
/* Returns the entry index of key, or -1. */
int64_t tk_strmap_find(const tk_strmap *m, const char *key, size_t len);
/* Value of key in *val; returns 1 if found, 0 if not. */
int tk_strmap_get(const tk_strmap *m, const char *key, size_t len, int32_t *val);
/* Borrowed key bytes of entry idx (NUL-terminated), valid until the next put. */
const char *tk_strmap_key(const tk_strmap *m, size_t idx, size_t *len);

/* ---------------------------------------------------------------- uint64 -> uint64 */

#define TK_U64MAP_EMPTY UINT64_MAX /* reserved: this key cannot be stored */

typedef struct {
    uint64_t *keys; /* TK_U64MAP_EMPTY = free slot */
    uint64_t *vals;
    size_t cap, count;
} tk_u64map;

void tk_u64map_init(tk_u64map *m);
void tk_u64map_free(tk_u64map *m);
/* Inserts or overwrites. Returns 1 on success, 0 on allocation failure or the reserved key. */
int tk_u64map_put(tk_u64map *m, uint64_t key, uint64_t val);
/* Returns 1 and *val if found, else 0. */
int tk_u64map_get(const tk_u64map *m, uint64_t key, uint64_t *val);

uint64_t tk_hash_bytes(const void *p, size_t n);

#endif
