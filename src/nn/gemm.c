/* gemm.c — see gemm.h. The structure of BLIS / GotoBLAS: op(B) packed into panels of NR columns
 * (all of K, one call), op(A) packed per task into panels of MR rows for one K chunk, and an
 * MR × NR register tile per family that streams a chunk of both panels. The B panel of a tile
 * (KC × NR floats) stays in L1 while the task's A panels (MC × KC) stream from L2. */
#include "nn/gemm.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define MOEC_X86 1
#include <immintrin.h>
#endif

/* One K chunk for every family: the same per-element operation order (fma over k ascending,
 * then the update below) makes the families bit-identical, which tests/test_gemm.c checks. */
#define KC 256
#define MC 96 /* rows of op(A) per task: a multiple of every family's MR */
#define NC_MAX 1024 /* columns per task: its packed B block (KC × NC_MAX) stays in L2 */
#define MR_MAX 12
#define NR_MAX 32

/* C tile update from the chunk's dot products: first chunk C = beta C + alpha acc (beta = 0:
 * C not read), later chunks C += alpha acc. Each a single fma, as in the SIMD tiles. */
static inline float update(float c, float acc, float alpha, float beta, int first) {
    if (!first) return fmaf(alpha, acc, c);
    return beta == 0.f ? alpha * acc : fmaf(alpha, acc, beta * c);
}

/* acc[MR × NR] of one tile: a[k * MR + i], b[k * NR + j] packed; C rows i < mr, columns j < nr. */
typedef void (*tile_fn)(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr, float alpha,
                        float beta, int first);

typedef struct {
    int mr, nr;
    tile_fn tile;
} family;

/* ------------------------------------------------------------------ scalar oracle: 4 × 8 */

static void tile_scalar(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr, float alpha,
                        float beta, int first) {
    float acc[4][8] = {{0}};
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++) acc[i][j] = fmaf(a[k * 4 + i], b[k * 8 + j], acc[i][j]);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) C[(size_t)i * ldc + j] = update(C[(size_t)i * ldc + j], acc[i][j], alpha, beta, first);
}

#ifdef MOEC_X86
/* ------------------------------------------------------------------ AVX2 + FMA: 6 × 16 */

#define AVX2_FN __attribute__((target("avx2,fma")))

AVX2_FN static inline __m256 upd8(__m256 c, __m256 acc, __m256 va, __m256 vb, int first, int beta0) {
    if (!first) return _mm256_fmadd_ps(va, acc, c);
    return beta0 ? _mm256_mul_ps(va, acc) : _mm256_fmadd_ps(va, acc, _mm256_mul_ps(vb, c));
}

AVX2_FN static void tile_avx2(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr, float alpha,
                              float beta, int first) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++, a += 6, b += 16) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 x = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    const __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    const int beta0 = beta == 0.f;
    if (nr == 16) {
        for (int i = 0; i < mr; i++) {
            float *r = C + (size_t)i * ldc;
            const __m256 o0 = first && beta0 ? _mm256_setzero_ps() : _mm256_loadu_ps(r);
            const __m256 o1 = first && beta0 ? _mm256_setzero_ps() : _mm256_loadu_ps(r + 8);
            _mm256_storeu_ps(r, upd8(o0, acc[i][0], va, vb, first, beta0));
            _mm256_storeu_ps(r + 8, upd8(o1, acc[i][1], va, vb, first, beta0));
        }
        return;
    }
    float t[16];
    for (int i = 0; i < mr; i++) { /* a partial tile: the same fma per element, through memory */
        _mm256_storeu_ps(t, acc[i][0]);
        _mm256_storeu_ps(t + 8, acc[i][1]);
        float *r = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) r[j] = update(r[j], t[j], alpha, beta, first);
    }
}

/* ------------------------------------------------------------------ AVX-512: 12 × 32 */

#define AVX512_FN __attribute__((target("avx512f,avx2,fma")))

AVX512_FN static inline __m512 upd16(__m512 c, __m512 acc, __m512 va, __m512 vb, int first, int beta0) {
    if (!first) return _mm512_fmadd_ps(va, acc, c);
    return beta0 ? _mm512_mul_ps(va, acc) : _mm512_fmadd_ps(va, acc, _mm512_mul_ps(vb, c));
}

#define ROW512(i)                                                                                                    \
    do {                                                                                                             \
        const __m512 x = _mm512_set1_ps(a[i]);                                                                       \
        c##i##0 = _mm512_fmadd_ps(x, b0, c##i##0);                                                                   \
        c##i##1 = _mm512_fmadd_ps(x, b1, c##i##1);                                                                   \
    } while (0)

AVX512_FN static void tile_avx512(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr,
                                  float alpha, float beta, int first) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    __m512 c80 = c00, c81 = c00, c90 = c00, c91 = c00;
    __m512 cA0 = c00, cA1 = c00, cB0 = c00, cB1 = c00;
    for (int k = 0; k < kc; k++, a += 12, b += 32) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        ROW512(0);
        ROW512(1);
        ROW512(2);
        ROW512(3);
        ROW512(4);
        ROW512(5);
        ROW512(6);
        ROW512(7);
        ROW512(8);
        ROW512(9);
        {
            const __m512 x = _mm512_set1_ps(a[10]);
            cA0 = _mm512_fmadd_ps(x, b0, cA0), cA1 = _mm512_fmadd_ps(x, b1, cA1);
        }
        {
            const __m512 x = _mm512_set1_ps(a[11]);
            cB0 = _mm512_fmadd_ps(x, b0, cB0), cB1 = _mm512_fmadd_ps(x, b1, cB1);
        }
    }
    const __m512 acc[12][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                               {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {cA0, cA1}, {cB0, cB1}};
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int beta0 = beta == 0.f;
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    for (int i = 0; i < mr; i++) {
        float *r = C + (size_t)i * ldc;
        const __m512 o0 = first && beta0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, r);
        const __m512 o1 = first && beta0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, r + 16);
        _mm512_mask_storeu_ps(r, m0, upd16(o0, acc[i][0], va, vb, first, beta0));
        _mm512_mask_storeu_ps(r + 16, m1, upd16(o1, acc[i][1], va, vb, first, beta0));
    }
}
#endif

static family family_of(moec_isa isa) {
    MOEC_ASSERT(isa >= 0 && isa < MOEC_ISA_COUNT && moec_cpu_has_isa(isa));
#ifdef MOEC_X86
    if (isa == MOEC_ISA_AVX512) return (family){12, 32, tile_avx512};
    if (isa == MOEC_ISA_AVX2) return (family){6, 16, tile_avx2};
#endif
    return (family){4, 8, tile_scalar};
}

int moec_gemm_kc(moec_isa isa) {
    (void)isa;
    return KC;
}

/* ------------------------------------------------------------------ packing */

#ifdef MOEC_X86
/* 8 rows of s (stride ldb) × 8 floats, transposed into 8 rows of dst (stride NR). */
AVX2_FN static void transpose8x8(float *dst, int NR, const float *s, int ldb) {
    __m256 r[8];
    for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(s + (size_t)j * ldb);
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(dst + 0 * (size_t)NR, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * (size_t)NR, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * (size_t)NR, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * (size_t)NR, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * (size_t)NR, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * (size_t)NR, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * (size_t)NR, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * (size_t)NR, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* The same for 4 × 4. */
static inline void transpose4x4(float *dst, int MR, const float *s, int lda) {
    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lda), r2 = _mm_loadu_ps(s + 2 * (size_t)lda);
    __m128 r3 = _mm_loadu_ps(s + 3 * (size_t)lda);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(dst, r0);
    _mm_storeu_ps(dst + MR, r1);
    _mm_storeu_ps(dst + 2 * (size_t)MR, r2);
    _mm_storeu_ps(dst + 3 * (size_t)MR, r3);
}
#endif

/* One panel of P columns × kc, dst[k * P + c] = X(k0 + k, o0 + c) for c < n, 0 for n <= c < P,
 * where X(k, c) = x[k * ldx + c] as stored (direct), or x[c * ldx + k] (transposed: rows of x
 * are columns of the panel). op(A) packs as X = Aᵀ, op(B) as X = B, so one routine packs both.
 * simd: the CPU has AVX2 (the same bytes either way); transposed panels then go by 8 × 8 and
 * 4 × 4 register transposes, not a strided store per float (which was 12 % of a GEMM). */
static void pack_panel(float *dst, int P, const float *x, int ldx, int transposed, int o0, int n, int k0, int kc,
                       int simd) {
    if (!transposed) {
        for (int k = 0; k < kc; k++) {
            float *d = dst + (size_t)k * P;
            const float *s = x + (size_t)(k0 + k) * ldx + o0;
            for (int c = 0; c < n; c++) d[c] = s[c];
            for (int c = n; c < P; c++) d[c] = 0.f;
        }
        return;
    }
    int c = 0, k4 = 0;
    const float *s = x + (size_t)o0 * ldx + k0;
#ifdef MOEC_X86
    if (simd) {
        const int k8 = kc & ~7;
        k4 = kc & ~3;
        for (; c + 8 <= n; c += 8) {
            for (int k = 0; k < k8; k += 8) transpose8x8(dst + (size_t)k * P + c, P, s + (size_t)c * ldx + k, ldx);
            for (int k = k8; k < k4; k += 4) {
                transpose4x4(dst + (size_t)k * P + c, P, s + (size_t)c * ldx + k, ldx);
                transpose4x4(dst + (size_t)k * P + c + 4, P, s + (size_t)(c + 4) * ldx + k, ldx);
            }
        }
        for (; c + 4 <= n; c += 4)
            for (int k = 0; k < k4; k += 4) transpose4x4(dst + (size_t)k * P + c, P, s + (size_t)c * ldx + k, ldx);
    }
#else
    (void)simd;
#endif
    for (int r = 0; r < P; r++) { /* what the transposes left: the k tail, the last < 4 columns, padding */
        float *d = dst + r;
        if (r >= n) {
            for (int k = 0; k < kc; k++) d[(size_t)k * P] = 0.f;
            continue;
        }
        const float *row = s + (size_t)r * ldx;
        for (int k = r < c ? k4 : 0; k < kc; k++) d[(size_t)k * P] = row[k];
    }
}

/* op(A) rows i0 .. i0+mr, op(B) columns j0 .. j0+nr, K chunk k0 .. k0+kc, into panels of MR / NR. */
static void pack_a(float *dst, const float *A, int lda, moec_trans ta, int i0, int mr, int MR, int k0, int kc,
                   int simd) {
    pack_panel(dst, MR, A, lda, ta == MOEC_NO_TRANS, i0, mr, k0, kc, simd);
}

static void pack_b(float *dst, const float *B, int ldb, moec_trans tb, int j0, int nr, int NR, int k0, int kc,
                   int simd) {
    pack_panel(dst, NR, B, ldb, tb == MOEC_TRANS, j0, nr, k0, kc, simd);
}

/* ------------------------------------------------------------------ the call */

typedef struct {
    family f;
    moec_trans ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    float *Bp;        /* op(B) packed: panel p at p * K * NR, chunk at k0 * NR; NULL: per tile on the stack */
    int no_scratch;   /* tests: refuse the A scratch too */
    int simd;         /* AVX2 packing */
    int mc_tiles, nc; /* tasks: mc_tiles row blocks of MC × column blocks of nc (a multiple of NR) */
} gemm_job;

static void pack_b_task(void *p, int64_t p0, int64_t p1, int tid) {
    const gemm_job *j = p;
    const int NR = j->f.nr;
    (void)tid;
    for (int64_t q = p0; q < p1; q++) {
        const int j0 = (int)q * NR, nr = j->N - j0 < NR ? j->N - j0 : NR;
        pack_b(j->Bp + (size_t)q * j->K * NR, j->B, j->ldb, j->tb, j0, nr, NR, 0, j->K, j->simd);
    }
}

static void gemm_task(void *p, int64_t task, int tid) {
    const gemm_job *j = p;
    const int MR = j->f.mr, NR = j->f.nr;
    (void)tid;
    const int i0 = (int)(task % j->mc_tiles) * MC, j0 = (int)(task / j->mc_tiles) * j->nc;
    const int i1 = i0 + MC < j->M ? i0 + MC : j->M, j1 = j0 + j->nc < j->N ? j0 + j->nc : j->N;
    float *Ap = j->no_scratch ? NULL : moec_scratch(MOEC_SCRATCH_GEMM_A, (size_t)MC * KC * sizeof(float));
    _Alignas(64) float a_tile[MR_MAX * KC], b_tile[NR_MAX * KC]; /* without scratch */
    for (int k0 = 0; k0 < j->K; k0 += KC) {
        const int kc = j->K - k0 < KC ? j->K - k0 : KC, first = k0 == 0;
        if (Ap)
            for (int i = i0; i < i1; i += MR)
                pack_a(Ap + (size_t)(i - i0) * kc, j->A, j->lda, j->ta, i, i1 - i < MR ? i1 - i : MR, MR, k0, kc,
                       j->simd);
        for (int jj = j0; jj < j1; jj += NR) {
            const int nr = j1 - jj < NR ? j1 - jj : NR;
            const float *bp = b_tile;
            if (j->Bp) bp = j->Bp + (size_t)(jj / NR) * j->K * NR + (size_t)k0 * NR;
            else pack_b(b_tile, j->B, j->ldb, j->tb, jj, nr, NR, k0, kc, j->simd);
            for (int i = i0; i < i1; i += MR) {
                const int mr = i1 - i < MR ? i1 - i : MR;
                const float *ap = a_tile;
                if (Ap) ap = Ap + (size_t)(i - i0) * kc;
                else pack_a(a_tile, j->A, j->lda, j->ta, i, mr, MR, k0, kc, j->simd);
                j->f.tile(kc, ap, bp, j->C + (size_t)i * j->ldc + jj, j->ldc, mr, nr, j->alpha, j->beta, first);
            }
        }
    }
}

/* Below this many multiply-adds one thread does the whole product. */
#define PARALLEL_MIN_WORK (1 << 18)

void moec_gemm_isa(moec_isa isa, int no_scratch, moec_trans ta, moec_trans tb, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.f) { /* C = beta C */
        for (int i = 0; i < M; i++)
            for (int jx = 0; jx < N; jx++) {
                float *c = C + (size_t)i * ldc + jx;
                *c = beta == 0.f ? 0.f : beta * *c;
            }
        return;
    }
    gemm_job j = {family_of(isa), ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C, NULL, no_scratch, isa != MOEC_ISA_SCALAR, 0, 0};
    const int NR = j.f.nr, panels = (N + NR - 1) / NR;
    const int64_t work = (int64_t)M * N * K;
    if (!no_scratch) j.Bp = moec_scratch(MOEC_SCRATCH_GEMM_B, (size_t)panels * K * NR * sizeof(float));
    if (j.Bp) moec_parallel_range(panels, moec_grain(panels, (int64_t)K * NR, PARALLEL_MIN_WORK / 4), pack_b_task, &j);
    /* tasks: MC-row blocks, and column blocks so that there are a few tasks per thread */
    j.mc_tiles = (M + MC - 1) / MC;
    int n_blocks = (N + NC_MAX - 1) / NC_MAX;
    if (work >= PARALLEL_MIN_WORK && n_blocks * j.mc_tiles < 3 * moec_threads_count()) {
        const int want = 3 * moec_threads_count();
        n_blocks = (want + j.mc_tiles - 1) / j.mc_tiles;
        if (n_blocks > panels) n_blocks = panels;
    }
    j.nc = (panels + n_blocks - 1) / n_blocks * NR;
    n_blocks = (N + j.nc - 1) / j.nc;
    const int64_t tasks = (int64_t)j.mc_tiles * n_blocks;
    if (work < PARALLEL_MIN_WORK) {
        for (int64_t t = 0; t < tasks; t++) gemm_task(&j, t, 0);
        return;
    }
    moec_parallel_for(tasks, gemm_task, &j);
}

static moec_isa g_isa;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;
static void pick_isa(void) { g_isa = moec_cpu_isa(); }

void moec_gemm(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    pthread_once(&g_isa_once, pick_isa);
    moec_gemm_isa(g_isa, 0, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
