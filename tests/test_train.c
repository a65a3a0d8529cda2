/* test_train: short real training runs through ars_train on one process:
 * a small MLP learns two spirals well above chance; a regression teacher
 * is fitted; a run file's errors are reported with file and line; a model
 * or data set too large is refused before allocation, with its size. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static int train_text(const char *text, ars_train_result *result)
{
    ars_config config;
    int rc = ars_config_load_string(&config, text, "test.cfg");
    if (!rc) rc = ars_config_expand(&config);
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    if (!rc) rc = ars_run_config_load(&config, &run, &specs, &count);
    ars_train_options options = {.quiet = 1};
    if (!rc) rc = ars_train(&run, specs, count, NULL, &options, result);
    free(specs);
    ars_config_free(&config);
    return rc;
}

static void test_spirals_are_learned(void **state)
{
    ars_train_result result;
    ARS_ASSERT_OK(train_text("[run]\ndata = spirals\ntrain_samples = 3000\ntest_samples = 600\nepochs = 25\n"
                             "batch = 64\nseed = 3\nlr = 0.01\n"
                             "[dense]\nunits = 64\ninit = xavier_normal\nactivation = tanh\n"
                             "[dense]\nunits = 64\ninit = xavier_normal\nactivation = tanh\n"
                             "[dense]\nunits = 3\n",
                             &result));
    printf("spirals: test accuracy %.3f after %lld steps (chance 0.333)\n", result.test_accuracy,
           (long long)result.steps);
    assert_true(result.test_accuracy > 0.9);
}

static void test_teacher_regression_is_fitted(void **state)
{
    ars_train_result result;
    ARS_ASSERT_OK(train_text("[run]\ndata = teacher\ntrain_samples = 2000\ntest_samples = 500\nepochs = 10\n"
                             "batch = 32\nseed = 4\nlr = 0.003\n"
                             "[dense]\nunits = 64\ninit = he_normal\nactivation = relu\n"
                             "[dense]\nunits = 4\n",
                             &result));
    printf("teacher: test mse %.4f\n", result.test_loss);
    assert_true(isnan(result.test_accuracy));
    assert_true(result.test_loss < 0.05);
}

static void expect_error(const char *text, const char *fragment)
{
    ars_train_result result;
    int rc = train_text(text, &result);
    if (rc == 0) fail_msg("training succeeded, expected an error containing '%s'", fragment);
    if (!strstr(ars_error_message(), fragment))
        fail_msg("error '%s' does not contain '%s'", ars_error_message(), fragment);
}

static void test_run_file_errors_name_file_and_line(void **state)
{
    expect_error("[run]\ndata = spirals\nepochs = 1\nlearning_rate = 0.1\n[dense]\nunits = 3\n",
                 "test.cfg:4: [run] unknown key 'learning_rate'");
    expect_error("[run]\ndata = spirals\nepochs = -1\n[dense]\nunits = 3\n", "test.cfg:3");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\nunits = 3\n[conv]\n", "unknown section [conv]");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\n", "needs units");
    expect_error("[dense]\nunits = 3\n", "no [run] section");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\nunits = 5\n", "the last layer has 5 outputs");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\nunits = 3\ninit = kaiming\n", "init");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\nunits = 3\ninit = normal\ninit_slope = 0.1\n",
                 "init_slope applies to");
    expect_error("[run]\ndata = spirals\nepochs = 1\ngradient_sync = ring\n[dense]\nunits = 3\n",
                 "test.cfg:4: [run] gradient_sync");
    expect_error("[run]\ndata = spirals\nepochs = 1\ngradient_sync = allreduce\noverlap = on\n[dense]\nunits = 3\n",
                 "[run] gradient_sync and overlap are both set");
    expect_error("[run]\ndata = spirals\nepochs = 1\naccumulate = 0\n[dense]\nunits = 3\n",
                 "test.cfg:4: [run] accumulate");
    expect_error("[run]\ndata = spirals\nepochs = 1\noptimizer_shard = maybe\n[dense]\nunits = 3\n",
                 "test.cfg:4: [run] optimizer_shard");
    /* the model's own errors, found when it is measured or built */
    expect_error("[run]\ndata = spirals\nepochs = 1\n[residual]\n[end]\n[dense]\nunits = 3\n",
                 "test.cfg:5: empty residual block (F(x) needs at least one layer)");
    expect_error("[run]\ndata = spirals\nepochs = 1\n[dense]\nunits = 6\n[attention]\ntime = 3\nheads = 4\n"
                 "[mean_pool]\n[dense]\nunits = 3\n",
                 "test.cfg:6: layer 001_attention: [attention] heads = 4 must divide the 2 features per step");
}

/* Refused before anything is allocated, saying how much and against what. */
static void test_too_large_is_refused_with_sizes(void **state)
{
    /* 4 x 10^12 parameters: more than any machine */
    expect_error("[run]\ndata = spirals\ntrain_samples = 64\ntest_samples = 16\n[dense]\nunits = 2000000\n"
                 "[dense]\nunits = 2000000\n[dense]\nunits = 3\n",
                 "the model needs about 74508.0 GiB per rank (4e+12 parameters x 5 copies: weights, gradients, "
                 "Adam m and v, a probe copy: 74506.1 GiB; activations for batch 64: 1.9 GiB");
    expect_error("[run]\ndata = spirals\noptimizer = sgd\ntrain_samples = 64\ntest_samples = 16\n[dense]\n"
                 "units = 2000000\n[dense]\nunits = 2000000\n[dense]\nunits = 3\n",
                 "x 3 copies: weights, gradients, a probe copy");
    assert_non_null(strstr(ars_error_message(), "but this rank has"));
    /* accumulating keeps one more copy of the gradients */
    expect_error("[run]\ndata = spirals\noptimizer = sgd\naccumulate = 2\ntrain_samples = 64\ntest_samples = 16\n"
                 "[dense]\nunits = 2000000\n[dense]\nunits = 2000000\n[dense]\nunits = 3\n",
                 "x 4 copies: weights, gradients, a probe copy, accumulated gradients");
    /* a synthetic set is measured before it is generated: 125 TB */
    expect_error("[run]\ndata = adding\nseq_len = 16777216\ntrain_samples = 1000000\n[rnn]\nunits = 4\n"
                 "time = 16777216\n[last_step]\n[dense]\nunits = 1\n",
                 "[run] data = adding with train_samples = 1000000 and test_samples = 1000 needs about 125250.0 "
                 "GiB per rank (1001000 samples of 134217732 bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spirals_are_learned),
        cmocka_unit_test(test_teacher_regression_is_fitted),
        cmocka_unit_test(test_run_file_errors_name_file_and_line),
        cmocka_unit_test(test_too_large_is_refused_with_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
