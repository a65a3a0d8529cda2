/* test_fast_math: the vectorizable exp, tanh, sigmoid, expm1 and normal
 * CDF/PDF of src/layers/fast_math.h (activations, attention's softmax, the
 * RNN) against double libm over their useful range, and their edge cases:
 * NaN must come out NaN (the trainer's non-finite guard must see it). */
#include "testutil.h"

#include <math.h>

#include "../src/layers/fast_math.h"

/* The vectorizable exp and tanh of the softmax and the recurrence against
 * double libm, over their whole useful range, and their edge cases. */
static void test_exp_and_tanh(void **state)
{
    (void)state;
    double worst_exp = 0, worst_tanh = 0;
    for (int i = 0; i <= 2000000; i++) {
        const float d = 87.0f * (float)i / 2000000.0f;
        const double e = exp(-(double)d);
        worst_exp = fmax(worst_exp, fabs(ars_exp_neg(d) - e) / e);
        const float x = 20.0f * (float)(i - 1000000) / 1000000.0f;
        if (x != 0.0f) worst_tanh = fmax(worst_tanh, fabs(ars_tanh(x) - tanh((double)x)) / fabs(tanh((double)x)));
    }
    for (float x = 1e-30f; x < 1e-2f; x *= 1.01f)   /* tiny arguments: tanh(x) = x to float precision */
        worst_tanh = fmax(worst_tanh, fabs(ars_tanh(x) - tanh((double)x)) / tanh((double)x));
    print_message("  max relative error: exp %.2e, tanh %.2e (float epsilon 1.19e-07)\n", worst_exp, worst_tanh);
    assert_true(worst_exp < 2.4e-7);
    assert_true(worst_tanh < 3.6e-7);
    assert_float_equal(ars_exp_neg(0.0f), 1.0f, 0);
    assert_true(ars_exp_neg(1000.0f) > 0.0f && ars_exp_neg(1000.0f) < 1e-37f);   /* clamped, no underflow */
    assert_float_equal(ars_tanh(INFINITY), 1.0f, 0);
    assert_float_equal(ars_tanh(-INFINITY), -1.0f, 0);
    assert_true(isnan(ars_tanh(NAN)));   /* the non-finite guard must see it */
    assert_true(signbit(ars_tanh(-0.0f)) && ars_tanh(-0.0f) == 0.0f);
}

/* Worst relative error of f against ref over [lo, hi] in n steps, where
 * |ref| > floor (deep tails where float rounding of the argument dominates
 * are not the activations' working range). */
static double worst_error(float (*f)(float), double (*ref)(double), float lo, float hi, int n, double floor)
{
    double worst = 0;
    for (int i = 0; i <= n; i++) {
        const float x = lo + (hi - lo) * (float)i / (float)n;
        const double want = ref((double)x);
        if (fabs(want) > floor) worst = fmax(worst, fabs((double)f(x) - want) / fabs(want));
    }
    return worst;
}

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }
static double expm1_ref(double x) { return expm1(x); }
static double cdf_ref(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double pdf_ref(double x) { return exp(-0.5 * x * x) / 2.5066282746310002;   /* sqrt(2 pi) */ }

static void test_sigmoid_expm1_normal(void **state)
{
    (void)state;
    const double sigmoid = worst_error(ars_sigmoid, sigmoid_ref, -80.0f, 80.0f, 2000000, 0);
    const double expm1_err = worst_error(ars_expm1_neg, expm1_ref, -80.0f, -1e-30f, 2000000, 0);
    double tiny = 0;   /* expm1(x) = x near 0: no cancellation */
    for (float x = -1e-30f; x > -1e-2f; x *= 1.01f) tiny = fmax(tiny, fabs(ars_expm1_neg(x) - expm1(x)) / -expm1(x));
    const double cdf = worst_error(ars_normal_cdf, cdf_ref, -3.0f, 6.0f, 2000000, 0);
    const double cdf_tail = worst_error(ars_normal_cdf, cdf_ref, -6.0f, -3.0f, 200000, 0);
    const double pdf = worst_error(ars_normal_pdf, pdf_ref, -6.0f, 6.0f, 2000000, 0);
    print_message("  max relative error: sigmoid %.2e, expm1 %.2e (near 0: %.2e), Phi %.2e (below -3: %.2e), "
                  "phi %.2e\n", sigmoid, expm1_err, tiny, cdf, cdf_tail, pdf);
    assert_true(sigmoid < 4e-7);
    assert_true(expm1_err < 4e-7 && tiny < 4e-7);
    /* in the tail the exponent -x^2/2 is rounded to float: its absolute
     * error becomes Phi's relative error (4e-6 at x = -6, where Phi ~ 1e-9; 1e-6 at -3) */
    assert_true(cdf < 2e-6 && cdf_tail < 1e-5);
    assert_true(pdf < 2e-6);
    assert_float_equal(ars_sigmoid(0.0f), 0.5f, 0);
    assert_float_equal(ars_sigmoid(200.0f), 1.0f, 0);
    assert_true(ars_sigmoid(-200.0f) >= 0.0f && ars_sigmoid(-200.0f) < 1e-37f);
    assert_float_equal(ars_expm1_neg(0.0f), 0.0f, 0);
    assert_float_equal(ars_expm1_neg(-INFINITY), -1.0f, 0);
    assert_float_equal(ars_expm1_neg(3.0f), 0.0f, 0);   /* x > 0: the caller selects x */
    assert_float_equal(ars_normal_cdf(INFINITY), 1.0f, 0);
    assert_float_equal(ars_normal_cdf(-INFINITY), 0.0f, 0);
    assert_true(isnan(ars_sigmoid(NAN)) && isnan(ars_sigmoid(-NAN)));
    assert_true(isnan(ars_expm1_neg(NAN)) && isnan(ars_normal_cdf(NAN)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_and_tanh),
        cmocka_unit_test(test_sigmoid_expm1_normal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
