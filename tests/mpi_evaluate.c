/* mpi_evaluate: arsenal evaluate's figures are the same on any number of
 * ranks, bit for bit: a classifier with BatchNorm (running statistics away
 * from their defaults) and dropout, and a regression, evaluated sharded
 * over the world (chunks of 4 samples over 29 and 60: an uneven number of
 * chunks per rank) and by this process alone. Run under mpiexec -n 1, 2
 * and 3. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/evaluate.h"
#include "arsenal/init.h"

static ars_dist world;

static void check_world_invariance(const char *text, int classifier)
{
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs;
    int count;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "mpi_evaluate"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, &run, &specs, &count));
    ars_config_free(&config);
    ars_dataset train, test;
    ARS_ASSERT_OK(ars_load_run_data(&run, world.rank, 0, &train, &test));
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_dataset_shape(&train), 4));
    ARS_ASSERT_OK(ars_init_model(&model, 11));
    for (size_t i = 0; i < model.state_count; i++) model.state[i] = 0.5f + 0.1f * (float)(i % 5);
    const ars_dataset *sets[2] = {&test, &train};
    for (int k = 0; k < 2; k++) {
        ars_eval_result alone, sharded;
        ARS_ASSERT_OK(ars_evaluate_dataset(&model, sets[k], run.loss, classifier, 4, NULL, &alone));
        ARS_ASSERT_OK(ars_evaluate_dataset(&model, sets[k], run.loss, classifier, 4, &world, &sharded));
        if (world.rank == 0)
            printf("ranks %d, %s, %d samples: loss %.17g (alone %.17g)\n", world.size, run.data, sets[k]->count,
                   sharded.loss, alone.loss);
        assert_true(sharded.loss == alone.loss);
        assert_int_equal(sharded.samples, sets[k]->count);
        if (classifier) {
            for (int i = 0; i < alone.classes * alone.classes; i++)
                assert_int_equal(sharded.confusion[i], alone.confusion[i]);
            assert_true(sharded.accuracy == alone.accuracy && sharded.macro_f1 == alone.macro_f1);
        } else {
            assert_true(sharded.mse == alone.mse && sharded.mae == alone.mae && sharded.r2 == alone.r2);
        }
        ars_eval_result_free(&alone);
        ars_eval_result_free(&sharded);
    }
    ars_model_destroy(&model);
    ars_dataset_free(&train);
    ars_dataset_free(&test);
    free(specs);
}

static void test_classifier_figures_on_any_world_size(void **state)
{
    (void)state;
    check_world_invariance("[run]\ndata = blobs\ntrain_samples = 60\ntest_samples = 29\nseed = 3\n"
                           "[dense]\nunits = 16\nactivation = relu\n[batchnorm]\n[dropout]\nrate = 0.5\n"
                           "[dense]\nunits = 4\n", 1);
}

static void test_regression_figures_on_any_world_size(void **state)
{
    (void)state;
    check_world_invariance("[run]\ndata = teacher\ntrain_samples = 60\ntest_samples = 29\nseed = 3\n"
                           "[dense]\nunits = 16\nactivation = tanh\n[layernorm]\n[dense]\nunits = 4\n", 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classifier_figures_on_any_world_size),
        cmocka_unit_test(test_regression_figures_on_any_world_size),
    };
    return ars_test_mpi_main(&argc, &argv, &world, tests, sizeof tests / sizeof tests[0]);
}
