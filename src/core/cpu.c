/* cpu.c — CPU feature detection (GCC/clang's __builtin_cpu_supports), once per process. */
#include "core/cpu.h"

#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static moec_cpu_features g_feat;
static moec_isa g_isa;
static char g_str[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static const char *const k_isa_names[MOEC_ISA_COUNT] = {"scalar", "avx2", "avx512"};

#if defined(__x86_64__) || defined(__i386__)
static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int has(const moec_cpu_features *f, moec_isa isa) {
    switch (isa) {
    case MOEC_ISA_SCALAR: return 1;
    case MOEC_ISA_AVX2: return f->avx2 && f->fma && f->f16c;
    case MOEC_ISA_AVX512: return has(f, MOEC_ISA_AVX2) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
    default: return 0;
    }
}

static void read_x86(moec_cpu_features *f) {
#if defined(__x86_64__) || defined(__i386__)
    /* CPUID bits (Intel SDM vol. 2A, CPUID), and XGETBV: the OS must save the YMM / ZMM state. */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1;
    const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    const int ymm_ok = (xcr0 & 0x6) == 0x6, zmm_ok = (xcr0 & 0xe6) == 0xe6;
    f->fma = ymm_ok && ((c >> 12) & 1);
    f->f16c = ymm_ok && ((c >> 29) & 1);
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f->avx2 = ymm_ok && ((b >> 5) & 1);
        f->avx512f = zmm_ok && ((b >> 16) & 1);
        f->avx512dq = zmm_ok && ((b >> 17) & 1);
        f->avx512bw = zmm_ok && ((b >> 30) & 1);
        f->avx512vl = zmm_ok && ((b >> 31) & 1);
        f->avx512vnni = zmm_ok && ((c >> 11) & 1);
        /* AMX: tile + bf16 (EDX 24, 22), XTILECFG and XTILEDATA enabled in XCR0 (bits 17, 18), and
         * on Linux the tile data permission, which a process must ask for before its first tile
         * instruction (else SIGILL); the grant is process-wide */
        int amx = zmm_ok && ((d >> 24) & 1) && ((d >> 22) & 1) && (xcr0 & 0x60000) == 0x60000;
#if defined(__linux__) && defined(__x86_64__)
        if (amx) amx = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
        amx = 0;
#endif
        f->amx_bf16 = amx;
        const unsigned max_sub = a;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f->avxvnni = ymm_ok && ((a >> 4) & 1);
            f->avx512bf16 = zmm_ok && ((a >> 5) & 1);
        }
    }
#else
    (void)f;
#endif
}

static void detect(void) {
    read_x86(&g_feat);
    const struct {
        const char *name;
        int on;
    } list[] = {{"avx2", g_feat.avx2},         {"fma", g_feat.fma},           {"f16c", g_feat.f16c},
                {"avx512f", g_feat.avx512f},   {"avx512bw", g_feat.avx512bw}, {"avx512vl", g_feat.avx512vl},
                {"avx512dq", g_feat.avx512dq}, {"avx512bf16", g_feat.avx512bf16},
                {"avx512vnni", g_feat.avx512vnni}, {"avxvnni", g_feat.avxvnni},
                {"amx_bf16", g_feat.amx_bf16}};
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
