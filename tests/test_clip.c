/* test_clip: norms in double, global-norm clipping (torch semantics), the
 * non-finite check and clipping by value. */
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/clip.h"

static void test_norm_basic(void **state)
{
    (void)state;
    float x[7] = {3, 4, 0, 0, 0, 0, 12};   /* 7: exercises the unrolled loop's tail */
    assert_true(fabs(ars_l2_norm(x, 7) - 13.0) < 1e-12);
    assert_true(fabs(ars_sum_squares(x, 7) - 169.0) < 1e-12);
    assert_true(ars_l2_norm(x, 0) == 0.0);
    /* Slices combine into the whole norm. */
    double parts = ars_sum_squares(x, 3) + ars_sum_squares(x + 3, 4);
    assert_true(fabs(sqrt(parts) - 13.0) < 1e-12);
}

/* 1e-30 squared is 1e-60: zero in float, fine in double. */
static void test_norm_tiny_values(void **state)
{
    (void)state;
    enum { N = 1000 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = 1e-30f;
    float sum_float = 0;   /* what float accumulation would report */
    for (int i = 0; i < N; i++) sum_float += x[i] * x[i];
    assert_true(sum_float == 0.0f);
    double expected = sqrt((double)N) * (double)1e-30f;
    double norm = ars_l2_norm(x, N);
    assert_true(norm > 0);
    assert_true(fabs(norm / expected - 1.0) < 1e-12);
    free(x);
}

static void test_norm_propagates_nonfinite(void **state)
{
    (void)state;
    float x[5] = {1, 2, NAN, 3, 4};
    assert_true(isnan(ars_l2_norm(x, 5)));
    x[2] = INFINITY;
    assert_true(isinf(ars_l2_norm(x, 5)));
}

static void test_clip_noop_below_max(void **state)
{
    (void)state;
    float g[4] = {0.3f, -0.4f, 0.0f, 0.0f}, before[4];
    memcpy(before, g, sizeof g);
    double norm = 0;
    float scale = ars_clip_global_norm(g, 4, 1.0f, &norm);
    assert_true(scale == 1.0f);
    assert_true(fabs(norm - 0.5) < 1e-7);
    assert_memory_equal(g, before, sizeof g);
    /* Disabled clipping (max_norm 0) never scales. */
    float big[2] = {300, 400};
    assert_true(ars_clip_global_norm(big, 2, 0.0f, &norm) == 1.0f);
    assert_true(big[0] == 300 && big[1] == 400);
    assert_true(fabs(norm - 500) < 1e-9);
    assert_true(ars_clip_global_norm(big, 2, 1e4f, NULL) == 1.0f);
}

static void test_clip_active(void **state)
{
    (void)state;
    enum { N = 1001 };
    float *g = malloc(N * sizeof *g);
    for (int i = 0; i < N; i++) g[i] = (float)sin(i * 0.37) * 3.0f;
    double norm = 0;
    float scale = ars_clip_global_norm(g, N, 2.5f, &norm);
    assert_true(norm > 2.5);
    assert_true(scale < 1.0f);
    /* torch: scale = max_norm / (norm + 1e-6) */
    assert_true(fabs(scale - 2.5 / (norm + 1e-6)) < 1e-7);
    assert_true(fabs(ars_l2_norm(g, N) - 2.5) < 1e-5);
    assert_true(ars_clip_scale_for_norm(norm, 2.5f) == scale);
    free(g);
}

static void test_clip_nonfinite_norm_leaves_grads(void **state)
{
    (void)state;
    float g[3] = {1.0f, INFINITY, 2.0f};
    double norm = 0;
    assert_true(ars_clip_global_norm(g, 3, 1.0f, &norm) == 1.0f);
    assert_true(isinf(norm));
    assert_true(g[0] == 1.0f && g[2] == 2.0f);
    assert_true(ars_clip_scale_for_norm(NAN, 1.0f) == 1.0f);
}

static void test_has_nonfinite(void **state)
{
    (void)state;
    enum { N = 5000 };   /* several blocks */
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = (float)i - 2500.0f;
    x[17] = FLT_MAX;
    x[18] = -FLT_MAX;
    x[19] = FLT_MIN / 4;   /* subnormal: finite */
    assert_int_equal(ars_has_nonfinite(x, N), 0);
    assert_int_equal(ars_has_nonfinite(x, 0), 0);
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const int where[] = {0, 1023, 1024, 4999};
    for (int b = 0; b < 4; b++)
        for (int w = 0; w < 4; w++) {
            float saved = x[where[w]];
            x[where[w]] = bad[b];
            assert_int_equal(ars_has_nonfinite(x, N), 1);
            /* Outside the range checked: not seen. */
            if (where[w] > 0) assert_int_equal(ars_has_nonfinite(x, (size_t)where[w]), 0);
            x[where[w]] = saved;
        }
    free(x);
}

static void test_clip_by_value(void **state)
{
    (void)state;
    float g[9] = {-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f, 1.0001f, NAN};
    size_t clamped = ars_clip_by_value(g, 9, 1.0f);
    assert_int_equal(clamped, 3);   /* -3, 3, 1.0001; the bounds themselves are not clamped */
    const float want[8] = {-1.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.0f, 1.0f};
    assert_memory_equal(g, want, sizeof want);
    assert_true(isnan(g[8]));   /* as torch.clamp: NaN stays NaN */
    float inf[2] = {INFINITY, -INFINITY};
    assert_int_equal(ars_clip_by_value(inf, 2, 5.0f), 2);
    assert_true(inf[0] == 5.0f && inf[1] == -5.0f);
}

static void test_scale(void **state)
{
    (void)state;
    float g[5] = {1, 2, 3, 4, 5};
    ars_scale(g, 5, 0.5f);
    const float want[5] = {0.5f, 1, 1.5f, 2, 2.5f};
    assert_memory_equal(g, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_basic),
        cmocka_unit_test(test_norm_tiny_values),
        cmocka_unit_test(test_norm_propagates_nonfinite),
        cmocka_unit_test(test_clip_noop_below_max),
        cmocka_unit_test(test_clip_active),
        cmocka_unit_test(test_clip_nonfinite_norm_leaves_grads),
        cmocka_unit_test(test_has_nonfinite),
        cmocka_unit_test(test_clip_by_value),
        cmocka_unit_test(test_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
