/* cpu.c — CPU feature detection (GCC/clang's __builtin_cpu_supports), once per process. */
#include "core/cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static moec_cpu_features g_feat;
static moec_isa g_isa;
static char g_str[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static const char *const k_isa_names[MOEC_ISA_COUNT] = {"scalar", "avx2", "avx512"};

static int has(const moec_cpu_features *f, moec_isa isa) {
    switch (isa) {
    case MOEC_ISA_SCALAR: return 1;
    case MOEC_ISA_AVX2: return f->avx2 && f->fma && f->f16c;
    case MOEC_ISA_AVX512: return has(f, MOEC_ISA_AVX2) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
    default: return 0;
    }
}

static void detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    g_feat.avx2 = __builtin_cpu_supports("avx2");
    g_feat.fma = __builtin_cpu_supports("fma");
    g_feat.f16c = __builtin_cpu_supports("f16c");
    g_feat.avx512f = __builtin_cpu_supports("avx512f");
    g_feat.avx512bw = __builtin_cpu_supports("avx512bw");
    g_feat.avx512vl = __builtin_cpu_supports("avx512vl");
    g_feat.avx512dq = __builtin_cpu_supports("avx512dq");
    g_feat.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    g_feat.avx512vnni = __builtin_cpu_supports("avx512vnni");
    g_feat.avxvnni = __builtin_cpu_supports("avxvnni");
#endif
    const struct {
        const char *name;
        int on;
    } list[] = {{"avx2", g_feat.avx2},         {"fma", g_feat.fma},           {"f16c", g_feat.f16c},
                {"avx512f", g_feat.avx512f},   {"avx512bw", g_feat.avx512bw}, {"avx512vl", g_feat.avx512vl},
                {"avx512dq", g_feat.avx512dq}, {"avx512bf16", g_feat.avx512bf16},
                {"avx512vnni", g_feat.avx512vnni}, {"avxvnni", g_feat.avxvnni}};
    size_t len = 0;
    for (size_t i = 0; i < sizeof list / sizeof *list; i++)
        if (list[i].on) len += (size_t)snprintf(g_str + len, sizeof g_str - len, "%s%s", len ? " " : "", list[i].name);
    if (!len) snprintf(g_str, sizeof g_str, "none");

    g_isa = MOEC_ISA_SCALAR;
    for (int i = MOEC_ISA_COUNT - 1; i > 0; i--)
        if (has(&g_feat, (moec_isa)i)) {
            g_isa = (moec_isa)i;
            break;
        }
    const char *force = getenv("MOEC_ISA");
    if (force && *force) {
        int want = -1;
        for (int i = 0; i < MOEC_ISA_COUNT; i++)
            if (!strcmp(force, k_isa_names[i])) want = i;
        if (want < 0) {
            fprintf(stderr, "moec: MOEC_ISA=%s: unknown (scalar, avx2 or avx512)\n", force);
            exit(2);
        }
        if (!has(&g_feat, (moec_isa)want)) {
            fprintf(stderr, "moec: MOEC_ISA=%s: this CPU lacks it (it has: %s)\n", force, g_str);
            exit(2);
        }
        g_isa = (moec_isa)want;
    }
}

const moec_cpu_features *moec_cpu_features_get(void) {
    pthread_once(&g_once, detect);
    return &g_feat;
}

int moec_cpu_has_isa(moec_isa isa) { return has(moec_cpu_features_get(), isa); }

moec_isa moec_cpu_isa(void) {
    pthread_once(&g_once, detect);
    return g_isa;
}

const char *moec_isa_name(moec_isa isa) { return (unsigned)isa < MOEC_ISA_COUNT ? k_isa_names[isa] : "?"; }

const char *moec_cpu_features_string(void) {
    pthread_once(&g_once, detect);
    return g_str;
}
