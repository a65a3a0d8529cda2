/* test_gemm_bf16: the reduced-precision products (src/gemm_bf16.c).
 * bf16 rounding (nearest even, NaN, Inf, overflow); bf16_emulated products
 * against fp32 within bf16's rounding bound, and equal to the exact product
 * of the rounded operands up to fp32 accumulation, in every transposition,
 * with padded leading dimensions, alpha and beta; the weights' rounded copy
 * (made once per ars_gemm_weights, an operand only partly inside it is not
 * weights, forgotten weights are not used); the oneDNN path with fp32
 * operands against OpenBLAS (its layouts, scales and cache, on any CPU);
 * the oneDNN bf16 path within the bound and equal to the emulation up to
 * accumulation order where the CPU runs it (skipped, saying why and what
 * oneDNN answered, elsewhere); the message when bf16 cannot run. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/rng.h"
#include "../src/gemm.h"
#include "../src/gemm_bf16.h"

static uint64_t draws;   /* a new stream per array */
static float uniform(void)   /* [-1, 1) */
{
    float x;
    ars_rng_uniform(&x, 1, -1.0f, 1.0f, 11, 1000000 + draws++, 0);
    return x;
}

static float *random_floats(size_t n)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(v);
    ars_rng_uniform(v, n, -1.0f, 1.0f, 11, draws++, 0);
    for (size_t i = 0; i < n; i += 7) v[i] *= 4;   /* some larger values */
    return v;
}

static float bits_to_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void test_rounding(void **state)
{
    (void)state;
    const float ulp = 1.0f / 128;   /* bf16 keeps 8 significant bits: ulp(1) = 2^-7 */
    assert_true(ars_bf16_round(1.0f) == 1.0f);
    assert_true(ars_bf16_round(1.0f + ulp / 2) == 1.0f);             /* tie: to the even 1 */
    assert_true(ars_bf16_round(1.0f + 3 * ulp / 2) == 1.0f + 2 * ulp);   /* tie: to the even 1 + 2 ulp */
    assert_true(ars_bf16_round(1.0f + ulp / 2 + ulp / 64) == 1.0f + ulp);   /* above the tie: up */
    assert_true(ars_bf16_round(-1.0f - 3 * ulp / 2) == -1.0f - 2 * ulp);
    assert_true(isinf(ars_bf16_round(INFINITY)) && ars_bf16_round(-INFINITY) < 0);
    assert_true(isinf(ars_bf16_round(3.4028235e38f)));   /* FLT_MAX is past bf16's largest: rounds to Inf */
    assert_true(isnan(ars_bf16_round(NAN)));
    assert_true(isnan(ars_bf16_round(bits_to_float(0x7f800001u))));   /* a NaN whose payload would round to Inf */
    assert_int_equal(ars_bf16_bits(1.0f), 0x3f80);
    assert_true(ars_bf16_round(0.0f) == 0.0f && signbit(ars_bf16_round(-0.0f)));
    /* relative error at most 2^-8 (half an ulp) over many values */
    double worst = 0;
    for (int i = 0; i < 100000; i++) {
        float x = uniform() * powf(2.0f, (float)(i % 60 - 30));
        if (x == 0) continue;
        worst = fmax(worst, fabs((double)ars_bf16_round(x) - x) / fabs((double)x));
    }
    assert_true(worst <= 1.0 / 256);
    assert_true(worst > 1.0 / 512);   /* and it does round */
}

/* One product case: C (m x n, ldc) = alpha op(A) op(B) + beta C. */
typedef struct {
    int ta, tb, m, n, k, pad;
    float alpha, beta;
} product_case;

typedef struct {
    product_case pc;
    int lda, ldb, ldc, a_rows, b_rows;
    float *a, *b, *c0;
} product;

static void product_make(product *p, product_case pc)
{
    p->pc = pc;
    const int a_cols = pc.ta ? pc.m : pc.k, b_cols = pc.tb ? pc.k : pc.n;
    p->a_rows = pc.ta ? pc.k : pc.m;
    p->b_rows = pc.tb ? pc.n : pc.k;
    p->lda = a_cols + pc.pad;
    p->ldb = b_cols + pc.pad;
    p->ldc = pc.n + pc.pad;
    p->a = random_floats((size_t)p->a_rows * p->lda);
    p->b = random_floats((size_t)p->b_rows * p->ldb);
    p->c0 = random_floats((size_t)pc.m * p->ldc);
}

static void product_free(product *p)
{
    free(p->a);
    free(p->b);
    free(p->c0);
}

static double at(const float *x, int ld, int trans, int i, int j, int rounded)
{
    float v = trans ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
    return rounded ? ars_bf16_round(v) : v;
}

/* Runs the product under the current precision; checks every element
 * against the double product of the (rounded, when `rounded`) operands:
 * |got - want| <= rel * |alpha| sum |a||b| + fp32 rounding of the sum and
 * of beta C. Returns the largest error relative to that sum. */
static double product_check(const product *p, int rounded, double rel, const char *label)
{
    const product_case *pc = &p->pc;
    float *c = malloc(sizeof(float) * (size_t)pc->m * p->ldc);
    assert_non_null(c);
    memcpy(c, p->c0, sizeof(float) * (size_t)pc->m * p->ldc);
    ars_gemm(pc->ta, pc->tb, pc->m, pc->n, pc->k, pc->alpha, p->a, p->lda, p->b, p->ldb, pc->beta, c, p->ldc);
    double worst = 0;
    for (int i = 0; i < pc->m; i++)
        for (int j = 0; j < pc->n; j++) {
            double sum = 0, magnitude = 0;
            for (int l = 0; l < pc->k; l++) {
                double term = at(p->a, p->lda, pc->ta, i, l, rounded) * at(p->b, p->ldb, pc->tb, l, j, rounded);
                sum += term;
                magnitude += fabs(term);
            }
            const double c0 = p->c0[(size_t)i * p->ldc + j];
            const double want = pc->alpha * sum + pc->beta * c0;
            const double scale = fabs(pc->alpha) * magnitude;
            /* fp32 accumulation over k terms, the scales, and beta C */
            const double bound = rel * scale + (pc->k + 4) * 0x1p-24 * scale + 2 * 0x1p-24 * fabs(pc->beta * c0) +
                                 1e-30;
            const double err = fabs(c[(size_t)i * p->ldc + j] - want);
            if (err > bound)
                fail_msg("%s: %s%s %dx%dx%d alpha %g beta %g pad %d: C[%d,%d] = %.9g, want %.9g (error %.3g > bound "
                         "%.3g)", label, pc->ta ? "T" : "N", pc->tb ? "T" : "N", pc->m, pc->n, pc->k, pc->alpha,
                         pc->beta, pc->pad, i, j, c[(size_t)i * p->ldc + j], want, err, bound);
            worst = fmax(worst, err / (scale + 1e-30));
        }
    /* past C's rows' n columns, the padding is untouched */
    for (int i = 0; i < pc->m; i++)
        for (int j = pc->n; j < p->ldc; j++)
            if (c[(size_t)i * p->ldc + j] != p->c0[(size_t)i * p->ldc + j])
                fail_msg("%s: wrote C's padding at [%d,%d]", label, i, j);
    free(c);
    return worst;
}

static const product_case cases[] = {
    {0, 0, 7, 5, 33, 0, 1.0f, 0.0f},   {0, 1, 16, 24, 64, 3, 1.0f, 1.0f}, {1, 0, 9, 13, 40, 1, 0.5f, 0.0f},
    {1, 1, 12, 8, 100, 2, 1.0f, 0.3f}, {0, 1, 1, 1, 1, 0, 1.0f, 0.0f},    {0, 0, 33, 17, 300, 5, 0.125f, 1.0f},
    {1, 0, 64, 32, 128, 0, 1.0f, 0.0f}, {0, 1, 5, 70, 9, 4, -2.0f, 0.5f},
};
enum { CASE_COUNT = sizeof cases / sizeof cases[0] };

/* bf16 against fp32: the operands' rounding, 2^-8 each, bounds the error
 * by (2^-7 + 2^-16) sum |a||b| (the "k 2^-8 |A||B|" bound, elementwise). */
static void check_against_fp32(const char *label)
{
    double worst = 0;
    for (int i = 0; i < CASE_COUNT; i++) {
        product p;
        product_make(&p, cases[i]);
        worst = fmax(worst, product_check(&p, 0, 0x1p-7 + 0x1p-16, label));
        product_free(&p);
    }
    printf("%s against fp32: largest error %.3g of sum |a||b| (bound 2^-7 = %.3g)\n", label, worst, 0x1p-7);
    assert_true(worst > 1e-5);   /* it did round: fp32 alone stays near 1e-7 */
}

/* Against the exact product of the rounded operands: only fp32
 * accumulation may differ. */
static void check_against_rounded(const char *label)
{
    double worst = 0;
    for (int i = 0; i < CASE_COUNT; i++) {
        product p;
        product_make(&p, cases[i]);
        worst = fmax(worst, product_check(&p, 1, 0, label));
        product_free(&p);
    }
    printf("%s against the exact product of bf16 operands: largest error %.3g of sum |a||b|\n", label, worst);
}

static void test_emulated_products(void **state)
{
    (void)state;
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16_EMULATED), 0);
    check_against_fp32("bf16_emulated");
    check_against_rounded("bf16_emulated");
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_FP32), 0);
    /* fp32 stays fp32: well inside the fp32 bound, far below bf16's error */
    for (int i = 0; i < CASE_COUNT; i++) {
        product p;
        product_make(&p, cases[i]);
        assert_true(product_check(&p, 0, 0, "fp32") < 1e-5);
        product_free(&p);
    }
}

/* The weights' rounded copy: made at the first product after
 * ars_gemm_weights and reused until the next call. */
static void test_weights_copy(void **state)
{
    (void)state;
    enum { M = 4, N = 3, K = 5 };
    float params[80], x[M * K], y[M * N], y2[M * N];
    for (int i = 0; i < 80; i++) params[i] = 1.0f + (float)i / 1024;   /* not bf16 values */
    for (int i = 0; i < M * K; i++) x[i] = 1.0f;
    const float *w = params + 8;   /* N x K inside the parameters, used as op(B) = w^T */
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16_EMULATED), 0);
    ars_gemm_weights(params, 64);
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
    for (int j = 0; j < N; j++) {
        double want = 0;
        for (int l = 0; l < K; l++) want += ars_bf16_round(w[j * K + l]);
        assert_true(fabs(y[j] - want) < 1e-5);
    }
    /* the parameters change without a new pass: the copy of this pass is used */
    for (int i = 0; i < 64; i++) params[i] *= 2;
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y2, N);
    assert_memory_equal(y, y2, sizeof y);
    /* a new pass rounds them again */
    ars_gemm_weights(params, 64);
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y2, N);
    for (int i = 0; i < M * N; i++) assert_true(fabs(y2[i] - 2 * y[i]) < 1e-4);
    /* an operand running past the parameters' end is not weights: rounded afresh */
    const float *tail = params + 64 - N * K + 1;   /* its last element is params[64] */
    ars_gemm_weights(params, 64);
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y2, N);   /* the copy is made */
    for (int i = 0; i < 80; i++) params[i] = 3.0f;
    ars_gemm(false, true, M, N, K, 1.0f, x, K, tail, K, 0.0f, y2, N);
    for (int i = 0; i < M * N; i++) assert_true(y2[i] == 3.0f * K);
    /* forgotten weights are not read from the stale copy */
    ars_gemm_weights(params, 64);
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y2, N);
    ars_gemm_forget_weights(params);
    for (int i = 0; i < 64; i++) params[i] = 5.0f;
    ars_gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y2, N);
    for (int i = 0; i < M * N; i++) assert_true(y2[i] == 5.0f * K);
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_FP32), 0);
}

/* The oneDNN path's plumbing (descriptors, strides, output scale, sum
 * post-op, primitive cache, the weights' copy) with fp32 operands, which
 * every CPU runs: it must match OpenBLAS to fp32 rounding. */
static void test_onednn_fp32_path(void **state)
{
    (void)state;
#ifndef ARSENAL_HAVE_DNNL
    skip();   /* built without oneDNN: precision = bf16 is refused (test_bf16_refused) */
#else
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_ONEDNN_FP32), 0);
    const long before = ars_gemm_onednn_products();
    for (int round = 0; round < 2; round++)   /* the second round reuses the cached primitives */
        for (int i = 0; i < CASE_COUNT; i++) {
            product p;
            product_make(&p, cases[i]);
            if (round) ars_gemm_weights(p.b, (size_t)p.b_rows * p.ldb);   /* B read from the weights' copy */
            assert_true(product_check(&p, 0, 0, "onednn_fp32") < 1e-5);
            ars_gemm_forget_weights(p.b);
            product_free(&p);
        }
    assert_int_equal(ars_gemm_onednn_products() - before, 2 * CASE_COUNT);
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_FP32), 0);
#endif
}

static void test_onednn_bf16(void **state)
{
    (void)state;
    if (ars_precision_check(ARS_PRECISION_BF16) != 0) {
        printf("SKIP oneDNN bf16 products: %s\n", ars_error_message());
        int probe = ars_gemm_onednn_probe();
        printf("     oneDNN asked to create a bf16 matmul anyway: %s\n",
               probe ? ars_error_message() : "created (cpuid says this CPU lacks native bf16: not used)");
        skip();
    }
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16), 0);
    const long before = ars_gemm_onednn_products();
    check_against_fp32("bf16 (oneDNN)");
    check_against_rounded("bf16 (oneDNN)");
    assert_true(ars_gemm_onednn_products() > before);
    /* the same numerics as the emulation, up to the order of accumulation */
    for (int i = 0; i < CASE_COUNT; i++) {
        product p;
        product_make(&p, cases[i]);
        const size_t cn = (size_t)p.pc.m * p.ldc;
        float *dnnl = malloc(sizeof(float) * cn), *emulated = malloc(sizeof(float) * cn);
        assert_non_null(dnnl);
        assert_non_null(emulated);
        memcpy(dnnl, p.c0, sizeof(float) * cn);
        memcpy(emulated, p.c0, sizeof(float) * cn);
        const product_case *pc = &p.pc;
        assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16), 0);
        ars_gemm(pc->ta, pc->tb, pc->m, pc->n, pc->k, pc->alpha, p.a, p.lda, p.b, p.ldb, pc->beta, dnnl, p.ldc);
        assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16_EMULATED), 0);
        ars_gemm(pc->ta, pc->tb, pc->m, pc->n, pc->k, pc->alpha, p.a, p.lda, p.b, p.ldb, pc->beta, emulated, p.ldc);
        for (int r = 0; r < pc->m; r++)
            for (int j = 0; j < pc->n; j++) {
                double magnitude = 0;
                for (int l = 0; l < pc->k; l++)
                    magnitude += fabs(at(p.a, p.lda, pc->ta, r, l, 1) * at(p.b, p.ldb, pc->tb, l, j, 1));
                const double bound = 2 * (pc->k + 4) * 0x1p-24 * fabs(pc->alpha) * magnitude +
                                     4 * 0x1p-24 * fabs(pc->beta * p.c0[(size_t)r * p.ldc + j]) + 1e-30;
                const size_t e = (size_t)r * p.ldc + j;
                if (fabs((double)dnnl[e] - emulated[e]) > bound)
                    fail_msg("case %d: oneDNN bf16 %.9g, emulation %.9g at [%d,%d] (bound %.3g)", i, dnnl[e],
                             emulated[e], r, j, bound);
            }
        free(dnnl);
        free(emulated);
        product_free(&p);
    }
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_FP32), 0);
}

/* Where bf16 cannot run, the message says what is missing and the
 * precision stays as it was. */
static void test_bf16_refused(void **state)
{
    (void)state;
    ars_cpu_bf16 cpu;
    ars_cpu_bf16_detect(&cpu);
    printf("CPU: %s: avx512_core %d, avx512_bf16 %d, amx_bf16 %d\n", cpu.model, cpu.avx512_core, cpu.avx512_bf16,
           cpu.amx_bf16);
    if (ars_precision_check(ARS_PRECISION_BF16) == 0) skip();   /* this CPU runs it: nothing refused */
    assert_int_equal(ars_gemm_set_precision(ARS_PRECISION_BF16), ARS_EINVAL);
    const char *message = ars_error_message();
    printf("refused: %s\n", message);
    assert_non_null(strstr(message, "[run] precision = bf16"));
#ifdef ARSENAL_HAVE_DNNL
    if (!cpu.avx512_bf16 && !cpu.amx_bf16) assert_non_null(strstr(message, "AVX512-BF16 or AMX-BF16"));
    assert_non_null(strstr(message, cpu.model));
#else
    assert_non_null(strstr(message, "libdnnl-dev"));
#endif
    assert_int_equal(ars_gemm_precision(), ARS_PRECISION_FP32);
}

static void test_parse(void **state)
{
    (void)state;
    ars_precision p;
    assert_int_equal(ars_precision_parse("bf16", &p), 0);
    assert_int_equal(p, ARS_PRECISION_BF16);
    assert_int_equal(ars_precision_parse("bf16_emulated", &p), 0);
    assert_int_equal(p, ARS_PRECISION_BF16_EMULATED);
    assert_int_equal(ars_precision_parse("fp32", &p), 0);
    assert_int_equal(p, ARS_PRECISION_FP32);
    assert_int_equal(ars_precision_parse("onednn_fp32", &p), ARS_EINVAL);   /* tests only */
    assert_int_equal(ars_precision_parse("fp16", &p), ARS_EINVAL);
    for (ars_precision q = ARS_PRECISION_FP32; q <= ARS_PRECISION_BF16_EMULATED; q++) {
        assert_int_equal(ars_precision_parse(ars_precision_name(q), &p), 0);
        assert_int_equal(p, q);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding),         cmocka_unit_test(test_parse),
        cmocka_unit_test(test_emulated_products), cmocka_unit_test(test_weights_copy),
        cmocka_unit_test(test_onednn_fp32_path), cmocka_unit_test(test_onednn_bf16),
        cmocka_unit_test(test_bf16_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
