/* test_gemm: every layout of src/gemm.c computes the product of the fixed
 * layout (as asked) within float rounding, over the 4 transpositions,
 * beta 0 / 1 / other, leading dimensions wider than the matrices and the
 * shapes of the W1 benchmark's step; the table sends a product to its
 * layout and nowhere else; the measurement keeps C as the product leaves
 * it; the model's measurement pass leaves the model as it was. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/gemm.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"

typedef struct shape {
    int ta, tb, m, n, k, pad;   /* pad: extra columns of every leading dimension */
    float alpha, beta;
} shape;

typedef struct operands {
    float *a, *b, *c0, *want, *got;
    int lda, ldb, ldc;
    size_t a_size, b_size, c_size;
} operands;

static void make(const shape *s, operands *o, uint64_t seed)
{
    const int a_rows = s->ta ? s->k : s->m, a_cols = s->ta ? s->m : s->k;
    const int b_rows = s->tb ? s->n : s->k, b_cols = s->tb ? s->k : s->n;
    o->lda = a_cols + s->pad;
    o->ldb = b_cols + s->pad;
    o->ldc = s->n + s->pad;
    o->a_size = (size_t)a_rows * o->lda;
    o->b_size = (size_t)b_rows * o->ldb;
    o->c_size = (size_t)s->m * o->ldc;
    o->a = malloc(sizeof(float) * o->a_size);
    o->b = malloc(sizeof(float) * o->b_size);
    o->c0 = malloc(sizeof(float) * o->c_size);
    o->want = malloc(sizeof(float) * o->c_size);
    o->got = malloc(sizeof(float) * o->c_size);
    assert_non_null(o->a);
    assert_non_null(o->b);
    assert_non_null(o->c0);
    assert_non_null(o->want);
    assert_non_null(o->got);
    ars_rng_uniform(o->a, o->a_size, -1, 1, seed, 1, 0);
    ars_rng_uniform(o->b, o->b_size, -1, 1, seed, 2, 0);
    ars_rng_uniform(o->c0, o->c_size, -1, 1, seed, 3, 0);
}

static void drop(operands *o)
{
    free(o->a);
    free(o->b);
    free(o->c0);
    free(o->want);
    free(o->got);
}

/* got must equal want within the rounding of a k-term dot product of
 * values in [-1, 1] (scaled by alpha, plus beta C), and the padding
 * columns of C must be untouched. */
static void expect_close(const shape *s, const operands *o, int layout)
{
    const double bound = 4.0 * 1.2e-7 * (fabs(s->alpha) * s->k + fabs(s->beta) + 1);
    for (int i = 0; i < s->m; i++)
        for (int j = 0; j < o->ldc; j++) {
            const size_t at = (size_t)i * o->ldc + j;
            if (j >= s->n) {
                if (o->got[at] != o->c0[at])
                    fail_msg("layout %d of %c%c %dx%dx%d wrote C's padding at (%d, %d)", layout, s->ta ? 'T' : 'N',
                             s->tb ? 'T' : 'N', s->m, s->n, s->k, i, j);
                continue;
            }
            if (!(fabs((double)o->got[at] - o->want[at]) <= bound))
                fail_msg("layout %d of %c%c %dx%dx%d (beta %g): C(%d, %d) = %.9g, as asked %.9g", layout,
                         s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->m, s->n, s->k, (double)s->beta, i, j,
                         (double)o->got[at], (double)o->want[at]);
        }
}

static ars_gemm_choice choice_of(const shape *s, const operands *o, int layout)
{
    return (ars_gemm_choice){s->ta, s->tb, s->m, s->n, s->k, o->lda, o->ldb, o->ldc, s->beta == 0.0f, layout};
}

/* Every layout against as asked, through the table (ars_gemm) as a layer calls it. */
static void check_all_layouts(const shape *s, uint64_t seed)
{
    operands o;
    make(s, &o, seed);
    memcpy(o.want, o.c0, sizeof(float) * o.c_size);
    ars_gemm_reset();
    ars_gemm(s->ta, s->tb, s->m, s->n, s->k, s->alpha, o.a, o.lda, o.b, o.ldb, s->beta, o.want, o.ldc);
    for (int layout = 0; layout < ARS_GEMM_LAYOUTS; layout++) {
        ars_gemm_choice c = choice_of(s, &o, layout);
        ARS_ASSERT_OK(ars_gemm_install(&c, 1));
        assert_int_equal(ars_gemm_layout_of(s->ta, s->tb, s->m, s->n, s->k, o.lda, o.ldb, o.ldc, s->beta), layout);
        memcpy(o.got, o.c0, sizeof(float) * o.c_size);
        ars_gemm(s->ta, s->tb, s->m, s->n, s->k, s->alpha, o.a, o.lda, o.b, o.ldb, s->beta, o.got, o.ldc);
        expect_close(s, &o, layout);
    }
    ars_gemm_reset();
    drop(&o);
}

static void test_layouts_small(void **state)
{
    (void)state;
    const float betas[3] = {0.0f, 1.0f, 0.5f};
    uint64_t seed = 1;
    for (int t = 0; t < 4; t++)
        for (int bi = 0; bi < 3; bi++)
            for (int pad = 0; pad <= 3; pad += 3) {
                /* sizes off the transposition's 16-blocks and BLAS's register tiles */
                const shape sizes[3] = {{t >> 1, t & 1, 7, 13, 5, pad, 1.0f, betas[bi]},
                                        {t >> 1, t & 1, 33, 17, 40, pad, 0.7f, betas[bi]},
                                        {t >> 1, t & 1, 1, 70, 19, pad, 1.0f, betas[bi]}};
                for (int i = 0; i < 3; i++) check_all_layouts(&sizes[i], seed++);
            }
}

/* The products of one W1 step (bench/bench_step.c: 784-1024-1024-10, batch 128). */
static void test_layouts_w1(void **state)
{
    (void)state;
    const shape w1[] = {
        {0, 1, 128, 1024, 784, 0, 1.0f, 1.0f},  {0, 1, 128, 1024, 1024, 0, 1.0f, 1.0f},
        {0, 1, 128, 10, 1024, 0, 1.0f, 1.0f},   {1, 0, 1024, 784, 128, 0, 1.0f, 0.0f},
        {1, 0, 1024, 1024, 128, 0, 1.0f, 0.0f}, {1, 0, 10, 1024, 128, 0, 1.0f, 0.0f},
        {0, 0, 128, 1024, 1024, 0, 1.0f, 0.0f}, {0, 0, 128, 1024, 10, 0, 1.0f, 0.0f},
    };
    for (size_t i = 0; i < sizeof w1 / sizeof w1[0]; i++) check_all_layouts(&w1[i], 100 + i);
}

/* The table holds exactly its products: another shape, ld or beta runs as
 * asked; disabled, everything runs as asked. */
static void test_table(void **state)
{
    (void)state;
    ars_gemm_reset();
    ars_gemm_choice c = {0, 0, 8, 9, 10, 10, 9, 9, 1, 6};
    ARS_ASSERT_OK(ars_gemm_install(&c, 1));
    assert_int_equal(ars_gemm_layout_of(0, 0, 8, 9, 10, 10, 9, 9, 0.0f), 6);
    assert_int_equal(ars_gemm_layout_of(0, 0, 8, 9, 10, 10, 9, 9, 1.0f), 0);
    assert_int_equal(ars_gemm_layout_of(0, 0, 8, 9, 10, 11, 9, 9, 0.0f), 0);
    assert_int_equal(ars_gemm_layout_of(0, 1, 8, 9, 10, 10, 10, 9, 0.0f), 0);
    ars_gemm_set_enabled(false);
    assert_int_equal(ars_gemm_layout_of(0, 0, 8, 9, 10, 10, 9, 9, 0.0f), 0);
    ars_gemm_set_enabled(true);
    c.layout = 2;   /* replaces */
    ARS_ASSERT_OK(ars_gemm_install(&c, 1));
    assert_int_equal(ars_gemm_layout_of(0, 0, 8, 9, 10, 10, 9, 9, 0.0f), 2);
    /* many products: the table grows */
    for (int i = 1; i <= 300; i++) {
        ars_gemm_choice d = {1, 0, i, 3, 4, i, 3, 3, 0, i % ARS_GEMM_LAYOUTS};
        ARS_ASSERT_OK(ars_gemm_install(&d, 1));
    }
    for (int i = 1; i <= 300; i++) assert_int_equal(ars_gemm_layout_of(1, 0, i, 3, 4, i, 3, 3, 1.0f), i % 9);
    char name[8];
    ars_gemm_choice nn = {0, 0, 128, 1024, 1024, 1024, 1024, 1024, 1, 0};
    assert_string_equal(ars_gemm_layout_name(&nn, name, sizeof name), "NN");
    nn.layout = 1;   /* B copied: NT */
    assert_string_equal(ars_gemm_layout_name(&nn, name, sizeof name), "NT");
    nn.layout = 5;   /* C^T = B^T A^T with B copied: T:NT */
    assert_string_equal(ars_gemm_layout_name(&nn, name, sizeof name), "T:NT");
    nn.layout = 8;
    assert_string_equal(ars_gemm_layout_name(&nn, name, sizeof name), "cm");
    char text[128];
    ars_gemm_describe(&nn, 1, text, sizeof text);
    assert_string_equal(text, "NN 128x1024x1024 cm");
    nn.layout = 0;
    ars_gemm_describe(&nn, 1, text, sizeof text);
    assert_string_equal(text, "all as asked");
    ars_gemm_reset();
}

static void test_install_refuses(void **state)
{
    (void)state;
    const ars_gemm_choice bad[] = {
        {0, 0, 8, 9, 10, 10, 9, 9, 1, 9},   /* layout out of range */
        {0, 0, 8, 9, 10, 10, 9, 9, 1, -1},
        {2, 0, 8, 9, 10, 10, 9, 9, 1, 0},   /* flag */
        {0, 0, 0, 9, 10, 10, 9, 9, 1, 0},   /* empty */
        {0, 0, 8, 9, 10, 9, 9, 9, 1, 0},    /* lda < k */
        {0, 1, 8, 9, 10, 10, 9, 9, 1, 0},   /* ldb < k for B^T */
        {0, 0, 8, 9, 10, 10, 9, 8, 1, 0},   /* ldc < n */
        {0, 0, 8, 9, 10, 10, 9, 9, 2, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(ars_gemm_install(&bad[i], 1), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "gemm choice 0"));
}

/* Measuring a product on its operands leaves C as the product makes it
 * (beta = 1: accumulated once, not once per trial), records each distinct
 * product once with its calls counted, and the choice goes into the table. */
static void test_measure_keeps_c(void **state)
{
    (void)state;
    ars_gemm_reset();
    const shape s[2] = {{0, 0, 64, 96, 80, 1, 1.0f, 1.0f}, {1, 0, 40, 30, 64, 0, 1.0f, 0.0f}};
    operands o[2];
    for (int i = 0; i < 2; i++) {
        make(&s[i], &o[i], 50 + i);
        memcpy(o[i].want, o[i].c0, sizeof(float) * o[i].c_size);
        ars_gemm(s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k, s[i].alpha, o[i].a, o[i].lda, o[i].b, o[i].ldb, s[i].beta,
                 o[i].want, o[i].ldc);
        memcpy(o[i].got, o[i].c0, sizeof(float) * o[i].c_size);
    }
    ARS_ASSERT_OK(ars_gemm_record_start(true));
    for (int call = 0; call < 3; call++) {
        const int i = call == 2 ? 0 : call;
        if (call == 2) memcpy(o[0].got, o[0].c0, sizeof(float) * o[0].c_size);
        ars_gemm(s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k, s[i].alpha, o[i].a, o[i].lda, o[i].b, o[i].ldb, s[i].beta,
                 o[i].got, o[i].ldc);
        expect_close(&s[i], &o[i], -1);
    }
    ars_gemm_choice *plan = NULL;
    int *calls = NULL, count = 0;
    double seconds = -1;
    double cpu = -1;
    ARS_ASSERT_OK(ars_gemm_record_stop(&plan, &calls, &count, &seconds, &cpu));
    assert_true(cpu >= 0);
    assert_int_equal(count, 2);
    assert_int_equal(calls[0], 2);
    assert_int_equal(calls[1], 1);
    assert_true(seconds > 0);
    for (int i = 0; i < 2; i++) {
        const ars_gemm_choice want = choice_of(&s[i], &o[i], plan[i].layout);
        assert_memory_equal(&plan[i], &want, sizeof want);
        assert_int_equal(ars_gemm_layout_of(s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k, o[i].lda, o[i].ldb, o[i].ldc,
                                            s[i].beta),
                         plan[i].layout);
        drop(&o[i]);
    }
    free(plan);
    free(calls);
    ars_gemm_reset();
}

/* The model's measurement pass: the products of a dense + BatchNorm model,
 * its parameters and running statistics as they were, gradients zero. */
static void test_model_tune(void **state)
{
    (void)state;
    ars_gemm_reset();
    int count = 0;
    ars_layer_spec *specs = ars_test_load_specs("[run]\ndata = blobs\n[dense]\nunits = 24\n[batchnorm]\n[relu]\n[dense]\nunits = 5\n", &count);
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_vector(12), 16));
    ARS_ASSERT_OK(ars_init_model(&model, 3));
    for (size_t i = 0; i < model.state_count; i++) model.state[i] = 0.25f * (float)i;
    float *params = malloc(sizeof(float) * model.param_count), *st = malloc(sizeof(float) * model.state_count);
    memcpy(params, model.params, sizeof(float) * model.param_count);
    memcpy(st, model.state, sizeof(float) * model.state_count);
    ARS_ASSERT_OK(ars_model_tune_gemm(&model, 1));
    assert_memory_equal(params, model.params, sizeof(float) * model.param_count);
    assert_memory_equal(st, model.state, sizeof(float) * model.state_count);
    for (size_t i = 0; i < model.param_count; i++) assert_true(model.grads[i] == 0.0f);
    /* forward of each dense, the weight gradient of each, dx of the second */
    assert_int_equal(model.gemm_plan_count, 5);
    const ars_gemm_choice fwd = {0, 1, 16, 24, 12, 12, 12, 24, 0, model.gemm_plan[0].layout};
    assert_memory_equal(&model.gemm_plan[0], &fwd, sizeof fwd);
    for (int i = 0; i < model.gemm_plan_count; i++)
        assert_true(model.gemm_plan[i].layout >= 0 && model.gemm_plan[i].layout < ARS_GEMM_LAYOUTS);
    ars_model_destroy(&model);
    free(specs);
    free(params);
    free(st);
    ars_gemm_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts_small), cmocka_unit_test(test_layouts_w1),
        cmocka_unit_test(test_table),         cmocka_unit_test(test_install_refuses),
        cmocka_unit_test(test_measure_keeps_c), cmocka_unit_test(test_model_tune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
