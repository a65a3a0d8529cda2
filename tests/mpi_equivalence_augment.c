/* mpi_equivalence_augment: data augmentation keeps the data-parallel
 * equivalence. N ranks with local batch b and augment_crop / augment_flip
 * on must end with the parameters of 1 rank with batch N*b: every sample
 * is cropped and flipped by its global id, whichever rank holds it. On
 * Fashion-MNIST (skipped without it), with global-norm clipping, as
 * mpi_equivalence. Run under mpiexec -n 1, 2 and 3. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static ars_dist world;

typedef struct augment_options {
    int crop, flip;
} augment_options;

static void train(const void *model, ars_dist *dist, int global_batch, ars_train_result *result)
{
    const augment_options *o = model;
    ars_run_config run;
    ars_test_equivalence_run(&run, global_batch);
    strcpy(run.data, "fashion-mnist");
    snprintf(run.data_dir, sizeof run.data_dir, "%s", ARS_FASHION_MNIST_DIR);
    run.train_limit = ARS_TEST_TRAIN_SAMPLES;
    run.test_limit = 50;
    run.standardize = 1;
    run.seed = 5;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    /* SGD, not Adam: over 784 pixels some weights' gradients cancel to
     * rounding noise, which Adam's normalization would amplify past the
     * tolerance (measured 1.7e-5 on 2 ranks); the augmentation, not the
     * optimizer, is under test here. */
    ars_optim_config_defaults(&run.optim, ARS_OPT_SGD);
    run.optim.lr = 0.05f;
    run.optim.momentum = 0.9f;
    run.bucket_mb = 0.01;
    run.first_bucket_mb = 0.005;
    run.augment_crop = o->crop;
    run.augment_flip = o->flip;

    /* No BatchNorm after the first layer: the weights of pixels that are
     * background in every image of a batch would act as a bias before it,
     * whose gradient is rounding noise that Adam amplifies to +-lr (1 rank
     * and N ranks then differ by ~1e-4 with or without augmentation). */
    ars_layer_spec specs[3];
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 16;
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 10;
    strcpy(specs[n++].init, "xavier_uniform");
    ars_train_options options = {.quiet = 1, .export_params = 1};
    ARS_ASSERT_OK(ars_train(&run, specs, n, dist, &options, result));
    assert_non_null(result->params);
}

static void test_augmented_n_ranks_equal_one_rank(void **state)
{
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", ARS_FASHION_MNIST_DIR);
    if (access(probe, R_OK) != 0) skip();   /* the same host for every rank: all skip alike */

    const augment_options augmented = {.crop = 3, .flip = 1};
    ars_test_equivalence e;
    ars_test_check_equivalence(&world, "Fashion-MNIST MLP, crop 3 + flip", train, &augmented, &e);

    /* The augmentation was really applied: without it the run differs. */
    const augment_options plain = {0, 0};
    ars_train_result unaugmented;
    train(&plain, NULL, ARS_TEST_LOCAL_BATCH * world.size, &unaugmented);
    double diff = ars_test_max_abs_diff(e.single.params, unaugmented.params, e.single.param_count);
    if (world.rank == 0) printf("ranks %d: without augmentation the parameters differ by %.3g\n", world.size, diff);
    assert_true(diff > 10 * ARS_TEST_EQUIVALENCE_TOLERANCE);
    ars_test_result_free(&unaugmented);
    ars_test_equivalence_free(&e);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_augmented_n_ranks_equal_one_rank),
    };
    return ars_test_mpi_main(&argc, &argv, &world, tests, sizeof tests / sizeof tests[0]);
}
