/* added.c — added-token trie and HF AddedVocabulary::find_matches (see added.h). Not the
 * normalization of the text between tokens, nor the token list itself (tokenizer.c owns it). */
#include "text/added.h"

#include "core/error.h"
#include "text/utf8.h"

#include <stdlib.h>
#include <string.h>

void tk_trie_init(tk_trie *t) {
    memset(t, 0, sizeof *t);
    tk_u64map_init(&t->edges);
}

void tk_trie_free(tk_trie *t) {
    if (!t) return;
    tk_u64map_free(&t->edges);
    free(t->term);
    memset(t, 0, sizeof *t);
}

static int64_t new_node(tk_trie *t) {
    if (t->n_nodes == t->cap_nodes) {
        size_t nc = t->cap_nodes ? t->cap_nodes * 2 : 64;
        int32_t *nt = realloc(t->term, nc * sizeof *nt);
        if (!nt) return -1;
        t->term = nt;
        t->cap_nodes = nc;
    }
    t->term[t->n_nodes] = -1;
    return (int64_t)t->n_nodes++;
}

int tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t token) {
    if (n == 0) return 1; /* an empty pattern never matches anything useful; HF skips it too */
    if (t->n_nodes == 0 && new_node(t) < 0) return 0;
    uint64_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = node << 8 | (unsigned char)s[i], child;
        if (!tk_u64map_get(&t->edges, key, &child)) {
            int64_t c = new_node(t);
            if (c < 0 || !tk_u64map_put(&t->edges, key, (uint64_t)c)) return 0;
            child = (uint64_t)c;
        }
        node = child;
    }
    t->first[(unsigned char)s[0]] = 1;
    if (t->term[node] < 0) t->term[node] = token;
    t->n_patterns++;
    return 1;
}

void tk_segs_free(tk_segs *s) {
    if (!s) return;
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int segs_push(tk_segs *s, size_t a, size_t b, int32_t token) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        tk_seg *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return 0;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n].start = a;
    s->v[s->n].end = b;
    s->v[s->n].token = token;
    s->n++;
    return 1;
}

/* Longest pattern starting at s[i]: returns its end, or i when none; *token its index. */
static size_t longest_at(const tk_trie *t, const char *s, size_t n, size_t i, int32_t *token) {
    uint64_t node = 0;
    size_t best = i;
    for (size_t j = i; j < n; j++) {
        uint64_t child;
        if (!tk_u64map_get(&t->edges, node << 8 | (unsigned char)s[j], &child)) break;
        node = child;
        if (t->term[node] >= 0) {
            best = j + 1;
            *token = t->term[node];
        }
    }
    return best;
}

moec_status tk_added_split(const tk_trie *t, const tk_added_token *toks, const char *s, size_t n,
                           tk_segs *out, moec_error *err) {
    out->n = 0;
    if (n == 0) return MOEC_OK;
    size_t start_offset = 0;
    for (size_t i = 0; t->n_patterns && i < n;) {
        if (!t->first[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        int32_t tok = -1;
        size_t mend = longest_at(t, s, n, i, &tok);
        if (mend == i) {
            i++;
            continue;
        }
        size_t start = i, stop = mend;
        i = mend; /* the automaton resumes after the raw match, whatever happens below */
        const tk_added_token *at = &toks[tok];
        uint32_t cp;
        if (at->single_word) {
            int start_space = start == 0 || !tk_is_word((tk_utf8_prev(s, start, &cp), cp));
            int stop_space = stop == n || !tk_is_word((tk_utf8_next(s + stop, n - stop, &cp), cp));
            if (!start_space || !stop_space) continue;
        }
        if (at->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t k = tk_utf8_prev(s, ns, &cp);
                if (!tk_is_white_space(cp)) break;
                ns -= k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (at->rstrip) {
            while (stop < n) {
                size_t k = tk_utf8_next(s + stop, n - stop, &cp);
                if (!tk_is_white_space(cp)) break;
                stop += k;
            }
        }
        if (start_offset < start && !segs_push(out, start_offset, start, -1)) goto oom;
        if (!segs_push(out, start, stop, tok)) goto oom;
        start_offset = stop;
    }
    if (start_offset < n && !segs_push(out, start_offset, n, -1)) goto oom;
    return MOEC_OK;
oom:
    return moec_err(err, MOEC_ERR_OOM, "added tokens: out of memory");
}
