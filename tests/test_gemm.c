/* test_gemm.c — nn/gemm.h, every kernel family this CPU has (others skipped with a message):
 *  - all four transpose combinations, shapes with every kind of edge (1, tiles, chunk tails,
 *    K across chunks), strides larger than the rows, alpha/beta cases; against a float64
 *    reference within 1e-5 · Σ|a||b| + 1e-6 per element;
 *  - beta = 0 never reads C (C starts as NaN), and the padding of C's rows is never written;
 *  - every family bit-identical to the scalar oracle (one chunk length, one fma order);
 *  - bit-identical at 1, 2 and 3 threads, and on the path without scratch memory;
 *  - a call nested inside a pool task gives the same bits. */
#include "core/threads.h"
#include "nn/gemm.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static float *fill(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

typedef struct {
    moec_trans ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0; /* C0: C before the call */
} problem;

static problem make(moec_trans ta, moec_trans tb, int M, int N, int K, int pad, float alpha, float beta) {
    problem p = {ta, tb, M, N, K, 0, 0, N + pad, alpha, beta, NULL, NULL, NULL};
    p.lda = (ta ? M : K) + pad;
    p.ldb = (tb ? K : N) + pad;
    p.A = fill((size_t)(ta ? K : M) * p.lda);
    p.B = fill((size_t)(tb ? N : K) * p.ldb);
    p.C0 = fill((size_t)M * p.ldc);
    if (beta == 0.f)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) p.C0[(size_t)i * p.ldc + j] = NAN;
    return p;
}

static void drop(problem *p) {
    free(p->A);
    free(p->B);
    free(p->C0);
}

static float *run(const problem *p, moec_isa isa, int no_scratch) {
    float *C = malloc((size_t)p->M * p->ldc * sizeof(float));
    memcpy(C, p->C0, (size_t)p->M * p->ldc * sizeof(float));
    moec_gemm_isa(isa, no_scratch, p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta, C,
                  p->ldc);
    return C;
}

static double a_at(const problem *p, int i, int k) {
    return p->ta ? p->A[(size_t)k * p->lda + i] : p->A[(size_t)i * p->lda + k];
}
static double b_at(const problem *p, int k, int j) {
    return p->tb ? p->B[(size_t)j * p->ldb + k] : p->B[(size_t)k * p->ldb + j];
}

static int check_ref(const problem *p, const float *C, const char *what) {
    int bad = 0;
    for (int i = 0; i < p->M && !bad; i++) {
        for (int j = 0; j < p->ldc; j++) {
            const float got = C[(size_t)i * p->ldc + j], before = p->C0[(size_t)i * p->ldc + j];
            if (j >= p->N) { /* row padding: untouched */
                if (memcmp(&got, &before, sizeof got)) bad = 1;
                continue;
            }
            double s = 0, mag = 0;
            for (int k = 0; k < p->K; k++) {
                s += a_at(p, i, k) * b_at(p, k, j);
                mag += fabs(a_at(p, i, k) * b_at(p, k, j));
            }
            const double c0 = p->beta == 0.f ? 0.0 : (double)p->beta * before;
            const double want = p->alpha * s + c0, tol = 1e-5 * (fabs(p->alpha) * mag + fabs(c0)) + 1e-6;
            if (!(fabs(got - want) <= tol)) {
                fprintf(stderr, "  %s: C[%d][%d] = %.9g, float64 %.9g\n", what, i, j, got, want);
                bad = 1;
                break;
            }
        }
    }
    return !bad;
}

static int same_bits(const problem *p, const float *x, const float *y) {
    return !memcmp(x, y, (size_t)p->M * p->ldc * sizeof(float));
}

typedef struct {
    const problem *p;
    float *C;
} nested_job;

static void nested_task(void *v, int64_t i, int tid) {
    nested_job *j = v;
    (void)tid;
    if (i == 0) {
        const problem *p = j->p;
        moec_gemm(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta, j->C, p->ldc);
    }
}

int main(void) {
    const int shapes[][3] = {{1, 1, 1},    {3, 5, 7},     {12, 32, 256}, {13, 33, 257}, {96, 64, 100},
                             {97, 70, 513}, {200, 17, 31}, {5, 300, 600},  {256, 512, 64}};
    const float ab[][2] = {{1.f, 0.f}, {1.f, 1.f}, {-0.5f, 2.f}, {0.f, 3.f}};
    int n_isa = 0;
    for (int isa = 0; isa < MOEC_ISA_COUNT; isa++) {
        if (!moec_cpu_has_isa((moec_isa)isa)) {
            printf("test_gemm: %s family skipped: this CPU lacks it\n", moec_isa_name((moec_isa)isa));
            continue;
        }
        n_isa++;
    }
    long cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (size_t c = 0; c < sizeof ab / sizeof ab[0]; c++) {
                const int pad = (int)((s + t) % 3);
                problem p = make((moec_trans)(t & 1), (moec_trans)(t >> 1), shapes[s][0], shapes[s][1], shapes[s][2],
                                 pad, ab[c][0], ab[c][1]);
                char what[128];
                snprintf(what, sizeof what, "ta %d tb %d M %d N %d K %d alpha %g beta %g", p.ta, p.tb, p.M, p.N, p.K,
                         p.alpha, p.beta);
                moec_threads_set(2);
                float *oracle = run(&p, MOEC_ISA_SCALAR, 0);
                CHECK(check_ref(&p, oracle, what), "scalar: %s", what);
                for (int isa = 1; isa < MOEC_ISA_COUNT; isa++) {
                    if (!moec_cpu_has_isa((moec_isa)isa)) continue;
                    float *C = run(&p, (moec_isa)isa, 0);
                    CHECK(same_bits(&p, C, oracle), "%s differs from the scalar oracle: %s",
                          moec_isa_name((moec_isa)isa), what);
                    float *D = run(&p, (moec_isa)isa, 1);
                    CHECK(same_bits(&p, D, C), "%s without scratch differs: %s", moec_isa_name((moec_isa)isa), what);
                    free(D);
                    for (int nt = 1; nt <= 3; nt += 2) {
                        moec_threads_set(nt);
                        float *E = run(&p, (moec_isa)isa, 0);
                        CHECK(same_bits(&p, E, C), "%s at %d threads differs: %s", moec_isa_name((moec_isa)isa), nt,
                              what);
                        free(E);
                    }
                    moec_threads_set(2);
                    free(C);
                }
                /* the dispatched entry, nested in a pool task */
                nested_job nj = {&p, malloc((size_t)p.M * p.ldc * sizeof(float))};
                memcpy(nj.C, p.C0, (size_t)p.M * p.ldc * sizeof(float));
                moec_parallel_for(2, nested_task, &nj);
                float *top = run(&p, moec_cpu_isa(), 0);
                CHECK(same_bits(&p, nj.C, top), "nested call differs: %s", what);
                free(top);
                free(nj.C);
                free(oracle);
                drop(&p);
                cases++;
            }
    printf("test_gemm: %ld problems, %d kernel families\n", cases, n_isa);
    return test_finish("test_gemm");
}
