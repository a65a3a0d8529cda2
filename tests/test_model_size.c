/* test_model_size: the model's memory estimate (ars_model_estimate, from
 * each layer kind's size function, allocating nothing) against the bytes a
 * built model really takes from malloc, for the example architectures; the
 * attention scores counted; absurd sizes give large numbers or a clear
 * error, never an overflow. */
#include "testutil.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/model.h"

/* Bytes in use from malloc (heap chunks and mmapped blocks). */
static double heap_bytes(void)
{
    struct mallinfo2 m = mallinfo2();
    return (double)m.uordblks + (double)m.hblkhd;
}

#define RUN "[run]\ndata = spirals\n"

/* The estimate of a model of text against what building it allocates. */
static void check_estimate(const char *label, const char *text, int in_dim, int rows)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    ars_model_size size;
    ARS_ASSERT_OK(ars_model_estimate(specs, count, ars_shape_vector(in_dim), rows, &size));
    const double before = heap_bytes();
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_vector(in_dim), rows));
    const double built = heap_bytes() - before;
    assert_int_equal(size.out_dim, model.out_dim);
    assert_true(size.params == (double)model.param_count);
    assert_true(size.state == (double)model.state_count);
    ars_model_destroy(&model);
    free(specs);
    if (built <= 0) {   /* a sanitizer's allocator: glibc's counters do not move */
        print_message("  %-26s estimate %10.0f bytes (allocator not measurable here)\n", label, size.bytes);
        return;
    }
    const double ratio = size.bytes / built;
    print_message("  %-26s estimate %10.0f bytes, built %10.0f bytes: ratio %.3f (workspaces %.0f)\n", label,
                  size.bytes, built, ratio, size.workspace);
    assert_true(ratio > 0.9 && ratio < 1.1);
}

static void test_estimate_matches_allocation(void **state)
{
    check_estimate("dense MLP", RUN "[dense]\nunits = 256\nactivation = relu\n[dense]\nunits = 256\n"
                                    "activation = relu\n[dense]\nunits = 10\n", 784, 64);
    check_estimate("residual + batchnorm", RUN "[dense]\nunits = 256\n[repeat]\ncount = 4\n[residual]\n"
                                               "[batchnorm]\n[relu]\n[dense]\nunits = 256\n[end]\n[end]\n"
                                               "[dropout]\nrate = 0.2\n[residual]\n[dense]\nunits = 64\n[end]\n"
                                               "[layernorm]\n[dense]\nunits = 10\n", 784, 64);
    check_estimate("transformer (adding)", RUN "[seq_dense]\ntime = 50\nunits = 32\n[positional]\n"
                                               "[transformer]\nunits = 32\nheads = 4\n[transformer]\nunits = 32\n"
                                               "heads = 4\ncausal = true\n[mean_pool]\n[dense]\nunits = 1\n", 100, 32);
    check_estimate("rnn (adding)", RUN "[rnn]\ntime = 50\nunits = 64\n[last_step]\n[dense]\nunits = 1\n", 100, 32);
    check_estimate("embedding + attention", RUN "[embedding]\ntime = 64\nvocab = 9\nunits = 32\n[positional]\n"
                                                "encoding = sinusoidal\n[attention]\nheads = 2\n[mean_pool]\n"
                                                "[dense]\nunits = 8\n", 64, 32);
    check_estimate("patches (fmnist)", RUN "[seq_dense]\npatch = 7\ntime = 16\nunits = 32\n[transformer]\nunits = 32\n"
                                           "heads = 4\n[mean_pool]\n[dense]\nunits = 10\n", 784, 32);
}

/* batch x heads x time^2 probabilities: 2 GiB here, counted, not allocated. */
static void test_attention_scores_are_counted(void **state)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(RUN "[attention]\ntime = 1024\nheads = 8\n[mean_pool]\n[dense]\nunits = 3\n",
                                       &count);
    ars_model_size size;
    ARS_ASSERT_OK(ars_model_estimate(specs, count, ars_shape_vector(1024 * 16), 64, &size));
    const double scores = 4.0 * 64 * 8 * 1024 * 1024;
    print_message("  attention T=1024, 8 heads, batch 64: workspace %.2f GiB (scores %.2f GiB)\n",
                  size.workspace / 1073741824.0, scores / 1073741824.0);
    assert_true(size.workspace > scores);
    assert_int_equal(size.largest_layer, 0);
    free(specs);
}

/* Sizes far past memory are numbers, not wrapped integers. */
static void test_absurd_sizes_do_not_overflow(void **state)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(RUN "[dense]\nunits = 16777216\n[dense]\nunits = 16777216\n"
                                           "[dense]\nunits = 16777216\n[dense]\nunits = 3\n", &count);
    ars_model_size size;
    ARS_ASSERT_OK(ars_model_estimate(specs, count, ars_shape_vector(16777216), 16777216, &size));
    assert_true(isfinite(size.bytes));
    assert_true(size.params > 5e14);
    assert_true(size.activations > 4.0 * 16777216.0 * 16777216.0 * 3);
    free(specs);

    /* time x units past INT_MAX: refused by name, where an int would wrap */
    specs = ars_test_load_specs(RUN "[rnn]\ntime = 65536\nunits = 65536\n[last_step]\n[dense]\nunits = 3\n", &count);
    assert_int_equal(ars_model_estimate(specs, count, ars_shape_vector(65536), 1, &size), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "test.cfg:3: layer 000_rnn: [rnn] output of 65536 steps"));
    ars_model model;
    assert_int_equal(ars_model_create(&model, specs, count, ars_shape_vector(65536), 1), ARS_EINVAL);
    free(specs);

    /* batch x time past INT_MAX: the rows of one cblas product, an int */
    specs = ars_test_load_specs(RUN "[attention]\ntime = 65536\nheads = 1\n[mean_pool]\n[dense]\nunits = 3\n", &count);
    assert_int_equal(ars_model_estimate(specs, count, ars_shape_vector(65536), 65536, &size), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "[attention] a batch of 65536 rows x 65536 steps"));
    assert_int_equal(ars_model_create(&model, specs, count, ars_shape_vector(65536), 65536), ARS_EINVAL);
    free(specs);
}

/* The model's errors say FILE:LINE as the parser's do, estimate and build alike. */
static void test_model_errors_name_file_and_line(void **state)
{
    static const struct {
        const char *text;
        int in_dim;
        const char *fragment;
    } cases[] = {
        {RUN "[residual]\n[end]\n[dense]\nunits = 3\n", 2,
         "test.cfg:4: empty residual block (F(x) needs at least one layer)"},
        {RUN "[dense]\nunits = 6\n[attention]\ntime = 3\nheads = 4\n[dense]\nunits = 3\n", 2,
         "test.cfg:5: layer 001_attention: [attention] heads = 4 must divide the 2 features per step"},
        {RUN "[dense]\nunits = 6\n[rnn]\ntime = 4\nunits = 8\n", 2,
         "test.cfg:5: layer 001_rnn: [rnn] time = 4 does not divide its input width 6"},
        {RUN "[seq_dense]\npatch = 3\nunits = 4\n", 16,
         "test.cfg:3: layer 000_seq_dense: [seq_dense] patch = 3 needs a square image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int count;
        ars_layer_spec *specs = ars_test_load_specs(cases[i].text, &count);
        ars_model_size size;
        ars_model model;
        assert_int_equal(ars_model_estimate(specs, count, ars_shape_vector(cases[i].in_dim), 4, &size), ARS_EINVAL);
        if (!strstr(ars_error_message(), cases[i].fragment))
            fail_msg("estimate: '%s' does not contain '%s'", ars_error_message(), cases[i].fragment);
        assert_int_equal(ars_model_create(&model, specs, count, ars_shape_vector(cases[i].in_dim), 4), ARS_EINVAL);
        if (!strstr(ars_error_message(), cases[i].fragment))
            fail_msg("create: '%s' does not contain '%s'", ars_error_message(), cases[i].fragment);
        free(specs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate_matches_allocation),
        cmocka_unit_test(test_attention_scores_are_counted),
        cmocka_unit_test(test_absurd_sizes_do_not_overflow),
        cmocka_unit_test(test_model_errors_name_file_and_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
