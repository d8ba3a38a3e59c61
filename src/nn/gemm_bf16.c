/* gemm_bf16.c — moec_gemm_bf16 (gemm.h): bf16 operands, fp32 accumulation.
 *
 * With AMX (Sapphire Rapids and later): C in blocks of 32 × 32 = 2 × 2 tiles of 16 × 16 fp32,
 * each tdpbf16ps adding a 16 × 32 bf16 tile of op(A) times a 32 × 16 one of op(B). op(B) is
 * packed once per call (all threads read it) into panels of 16 columns, each panel K-pair
 * major: [k/2][16 columns][2], the layout tdpbf16ps reads, so a B tile is 1 KB contiguous.
 * Each task packs its rows of op(A) (up to 8 blocks of 32, sized for L2) as [k/32][32 rows][32]
 * per block: an A tile is 1 KB contiguous too. Both are zero-padded to whole tiles (K to 32, M
 * and N to 32): the zeros change no sum.
 * A C element is one tile accumulator over all of K, k ascending, so the result does not
 * depend on the thread count or the blocking.
 *
 * Without AMX: the operands rounded to bf16 into fp32 copies, then moec_gemm: the same
 * products (a bf16 × bf16 product is exact in fp32), summed in moec_gemm's order. */
#include "nn/gemm.h"

#include "core/dtype.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define MOEC_AMX 1
#endif

#define BM 32 /* rows of C per block (two tiles) */
#define BN 32 /* columns (two tiles) */
#define BK 32 /* k per tile step */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* ------------------------------------------------------------------ fallback */

typedef struct {
    const float *src;
    int ld, rows, cols;
    float *dst; /* rows × cols, row stride cols */
} round_job;

static void round_rows(void *p, int64_t r0, int64_t r1, int tid) {
    const round_job *j = p;
    (void)tid;
    for (int64_t r = r0; r < r1; r++)
        for (int c = 0; c < j->cols; c++)
            j->dst[(size_t)r * j->cols + c] = moec_bf16_to_f32(moec_f32_to_bf16(j->src[(size_t)r * j->ld + c]));
}

/* The stored matrix (rows × cols at stride ld) rounded to bf16, as fp32, in the slot's scratch. */
static const float *rounded(enum moec_scratch_slot slot, const float *src, int ld, int rows, int cols) {
    float *dst = moec_scratch(slot, (size_t)rows * (size_t)cols * sizeof(float));
    if (!dst) return NULL;
    round_job j = {src, ld, rows, cols, dst};
    moec_parallel_range(rows, moec_grain(rows, cols, 1 << 16), round_rows, &j);
    return dst;
}

static void gemm_bf16_fallback(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A,
                               int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    const float *Ar = rounded(MOEC_SCRATCH_GEMM_BF16_A, A, lda, ar, ac);
    const float *Br = rounded(MOEC_SCRATCH_GEMM_BF16_B, B, ldb, br, bc);
    MOEC_ASSERT(Ar && Br); /* out of memory for a training step's operand: nothing to fall back to */
    moec_gemm(ta, tb, M, N, K, alpha, Ar, ac, Br, bc, beta, C, ldc);
}

/* ------------------------------------------------------------------ AMX */

#ifdef MOEC_AMX
#define AMX_FN __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,fma")))

typedef struct {
    moec_trans ta, tb;
    int M, N, K, Kp, Np;
    float alpha, beta;
    const float *A, *B;
    int lda, ldb, ldc;
    float *C;
    uint16_t *Bp; /* panel q (16 columns) at q * Kp * 16 */
    int g;        /* 32-row blocks per task */
} amx_job;

/* 32 fp32 (n of them, the rest zero) as 32 bf16, nearest even (vcvtne2ps2bf16: denormals to zero). */
AMX_FN static inline __m512i cvt32(const float *x, int n) {
    const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
    const __mmask16 m1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1u) : 0;
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + 16), _mm512_maskz_loadu_ps(m0, x));
}

/* Two rows of 16 fp32 (k and k + 1 of 16 columns) as 16 bf16 pairs [k c0, k+1 c0, k c1, ...]:
 * each column's k pair one dword, the layout tdpbf16ps reads. */
AMX_FN static inline __m512i pair_rows(__m512 lo, __m512 hi) {
    static const uint16_t il[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512((const void *)il), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* r[i] = row i of a 16 x 16 matrix of dwords; afterwards r[i] = its column i. */
AMX_FN static inline void transpose16x16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) { /* within 128-bit lanes: pairs of rows interleaved */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* 4 x 4 blocks transposed in each lane */
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) { /* then the 4 x 4 arrangement of lanes */
        const __m512i a = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88), b = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        const __m512i c = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88), d = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
        t[i] = _mm512_shuffle_i32x4(a, c, 0x88);
        t[i + 8] = _mm512_shuffle_i32x4(a, c, 0xdd);
        t[i + 4] = _mm512_shuffle_i32x4(b, d, 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(b, d, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* op(B) columns of panels [q0, q1): Bp[q][k/2][c][k%2]. */
AMX_FN static void pack_b_panels(void *p, int64_t q0, int64_t q1, int tid) {
    const amx_job *j = p;
    (void)tid;
    for (int64_t q = q0; q < q1; q++) {
        uint16_t *dst = j->Bp + (size_t)q * (size_t)j->Kp * 16;
        const int n0 = (int)q * 16, nc = j->N - n0 < 16 ? j->N - n0 : 16;
        if (nc <= 0 || (!j->tb && (nc < 16 || j->K % BK))) memset(dst, 0, (size_t)j->Kp * 16 * sizeof *dst);
        if (nc <= 0) continue; /* a padding panel (N is padded to 32 columns) */
        if (j->tb) {
            /* column n is a stored row, its k pairs adjacent: per 32 k, the 16 columns' 16 pairs
             * (a dword each) transposed in registers, so k pair p of all 16 columns is one store */
            for (int k0 = 0; k0 < j->K; k0 += BK) {
                __m512i r[16];
                for (int c = 0; c < 16; c++)
                    r[c] = c < nc ? cvt32(j->B + (size_t)(n0 + c) * j->ldb + k0, j->K - k0) : _mm512_setzero_si512();
                transpose16x16(r);
                for (int kp = 0; kp < 16; kp++) _mm512_storeu_si512((void *)(dst + (size_t)(k0 / 2 + kp) * 32), r[kp]);
            }
        } else {
            /* rows k and k + 1 side by side, then interleaved by column: [k c0, k+1 c0, k c1, ...] */
            const __mmask16 m = (__mmask16)((1u << nc) - 1u);
            for (int k = 0; k < j->K; k += 2) {
                const __m512 lo = _mm512_maskz_loadu_ps(m, j->B + (size_t)k * j->ldb + n0);
                const __m512 hi = k + 1 < j->K ? _mm512_maskz_loadu_ps(m, j->B + (size_t)(k + 1) * j->ldb + n0)
                                               : _mm512_setzero_ps();
                _mm512_storeu_si512((void *)(dst + (size_t)(k / 2) * 32),
                                    pair_rows(lo, hi));
            }
        }
    }
}

/* Rows [i0, i0 + 32) of op(A): Ap[k/32][r][k%32]. */
AMX_FN static void pack_a_block(uint16_t *Ap, const amx_job *j, int i0) {
    const int rows = j->M - i0 < BM ? j->M - i0 : BM;
    if (rows < BM || j->K % BK) memset(Ap, 0, (size_t)j->Kp * BM * sizeof *Ap);
    if (!j->ta) {
        for (int r = 0; r < rows; r++) {
            const float *src = j->A + (size_t)(i0 + r) * j->lda;
            for (int k0 = 0; k0 < j->K; k0 += BK)
                _mm512_storeu_si512((void *)(Ap + (size_t)k0 * BM + (size_t)r * BK), cvt32(src + k0, j->K - k0));
        }
        return;
    }
    /* stored [K][M]: rows k and k + 1 interleaved give each row i's k pair as a dword (as op(B)
     * without transpose is packed), 16 such pairs of 16 rows transposed in registers give a
     * tile row: 32 consecutive k of one row i */
    for (int k0 = 0; k0 < j->K; k0 += BK)
        for (int h = 0; h < BM; h += 16) { /* rows i0 + h .. + 15 */
            const int n = rows - h < 16 ? rows - h : 16;
            if (n <= 0) break;
            const __mmask16 m = (__mmask16)((1u << n) - 1u);
            __m512i r[16];
            for (int kp = 0; kp < 16; kp++) {
                const int k = k0 + 2 * kp;
                const __m512 lo = k < j->K ? _mm512_maskz_loadu_ps(m, j->A + (size_t)k * j->lda + i0 + h) : _mm512_setzero_ps();
                const __m512 hi = k + 1 < j->K ? _mm512_maskz_loadu_ps(m, j->A + (size_t)(k + 1) * j->lda + i0 + h)
                                               : _mm512_setzero_ps();
                r[kp] = pair_rows(lo, hi);
            }
            transpose16x16(r);
            for (int x = 0; x < n; x++) _mm512_storeu_si512((void *)(Ap + (size_t)k0 * BM + (size_t)(h + x) * BK), r[x]);
        }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* C = beta C + alpha out (beta = 0: C not read) for a block's rows × cols, 16 lanes at a time. */
AMX_FN static inline void update_c(const amx_job *j, const float *out, int i0, int rows, int n0, int cols) {
    const __m512 va = _mm512_set1_ps(j->alpha), vb = _mm512_set1_ps(j->beta);
    const __mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1u) : 0;
    for (int r = 0; r < rows; r++) {
        float *c = j->C + (size_t)(i0 + r) * j->ldc + n0;
        const float *o = out + (size_t)r * BN;
        __m512 y0, y1;
        if (j->beta != 0.f) { /* fma(alpha, acc, beta c), moec_gemm's update */
            y0 = _mm512_fmadd_ps(va, _mm512_load_ps(o), _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, c)));
            y1 = _mm512_fmadd_ps(va, _mm512_load_ps(o + 16), _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16)));
        } else {
            y0 = _mm512_mul_ps(va, _mm512_load_ps(o));
            y1 = _mm512_mul_ps(va, _mm512_load_ps(o + 16));
        }
        _mm512_mask_storeu_ps(c, m0, y0);
        _mm512_mask_storeu_ps(c + 16, m1, y1);
    }
}

/* A group of g 32-row blocks of C, all its columns: column pairs of tiles outermost, so each
 * pair's B panels (Kp × 32 bf16) serve all g blocks from L1/L2 while the group's packed rows
 * (g × Kp × 32 bf16, sized for L2) stay. */
AMX_FN static void amx_group(void *p, int64_t task, int tid) {
    const amx_job *j = p;
    (void)tid;
    const int blocks = (j->M + BM - 1) / BM, b0 = (int)task * j->g, g = blocks - b0 < j->g ? blocks - b0 : j->g;
    const size_t per = (size_t)j->Kp * BM;
    uint16_t *Ap = moec_scratch(MOEC_SCRATCH_GEMM_BF16_A, (size_t)g * per * sizeof(uint16_t));
    MOEC_ASSERT(Ap);
    for (int b = 0; b < g; b++) pack_a_block(Ap + (size_t)b * per, j, (b0 + b) * BM);
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    _Alignas(64) float out[BM * BN];
    for (int n0 = 0; n0 < j->Np; n0 += BN) {
        const uint16_t *bp0 = j->Bp + (size_t)(n0 / 16) * (size_t)j->Kp * 16, *bp1 = bp0 + (size_t)j->Kp * 16;
        const int cols = j->N - n0 < BN ? j->N - n0 : BN;
        for (int b = 0; b < g; b++) {
            const uint16_t *ab = Ap + (size_t)b * per;
            const int i0 = (b0 + b) * BM, rows = j->M - i0 < BM ? j->M - i0 : BM;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int k0 = 0; k0 < j->Kp; k0 += BK) {
                const uint16_t *a = ab + (size_t)k0 * BM;
                _tile_loadd(4, a, 64);
                _tile_loadd(5, a + 16 * BK, 64);
                _tile_loadd(6, bp0 + (size_t)k0 * 16, 64);
                _tile_loadd(7, bp1 + (size_t)k0 * 16, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, out, BN * 4);
            _tile_stored(1, out + 16, BN * 4);
            _tile_stored(2, out + 16 * BN, BN * 4);
            _tile_stored(3, out + 16 * BN + 16, BN * 4);
            update_c(j, out, i0, rows, n0, cols);
        }
    }
    _tile_release();
}

static void gemm_bf16_amx(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    amx_job j = {ta, tb, M, N, K, round_up(K, BK), round_up(N, BN), alpha, beta, A, B, lda, ldb, ldc, C, NULL, 1};
    j.Bp = moec_scratch(MOEC_SCRATCH_GEMM_BF16_B, (size_t)j.Np * (size_t)j.Kp * sizeof(uint16_t));
    MOEC_ASSERT(j.Bp);
    const int panels = j.Np / 16;
    moec_parallel_range(panels, moec_grain(panels, (int64_t)j.Kp * 16, 1 << 16), pack_b_panels, &j);
    /* blocks per task: the group's packed rows within 256 KB, and a few tasks per thread */
    const int blocks = (M + BM - 1) / BM, serial = (int64_t)M * N * K < (1 << 20);
    int g = (int)((256 << 10) / ((size_t)j.Kp * BM * sizeof(uint16_t)));
    const int spread = blocks / (3 * (serial ? 1 : moec_threads_count()));
    if (g > spread) g = spread;
    if (g > 8) g = 8;
    j.g = g > 1 ? g : 1;
    const int tasks = (blocks + j.g - 1) / j.g;
    if (serial)
        for (int t = 0; t < tasks; t++) amx_group(&j, t, 0);
    else
        moec_parallel_for(tasks, amx_group, &j);
}
#endif

/* ------------------------------------------------------------------ entry */

int moec_gemm_bf16_has_amx(void) {
#ifdef MOEC_AMX
    /* (the packing converts with vcvtne2ps2bf16, an AVX512-BF16 instruction) */
    const moec_cpu_features *f = moec_cpu_features_get();
    return f->amx_bf16 && f->avx512bf16 && moec_cpu_isa() == MOEC_ISA_AVX512;
#else
    return 0;
#endif
}

void moec_gemm_bf16_impl(int amx, moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.f) { /* C = beta C, as moec_gemm */
        moec_gemm(ta, tb, M, N, 0, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#ifdef MOEC_AMX
    if (amx) {
        gemm_bf16_amx(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#else
    MOEC_ASSERT(!amx);
#endif
    gemm_bf16_fallback(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void moec_gemm_bf16(moec_trans ta, moec_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    moec_gemm_bf16_impl(moec_gemm_bf16_has_amx(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
