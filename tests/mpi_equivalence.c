/* mpi_equivalence: the test that matters most for data-parallel training.
 * N ranks with local batch b must end with the parameters of 1 rank with
 * batch N*b, with SyncBatchNorm, dropout, global-norm clipping (active) and
 * Adam in the loop, over a data set whose size is not a multiple of the
 * global batch (so the last batch is partial and, on 3 ranks, one rank
 * holds zero rows of it). Run under mpiexec -n 1, 2 and 3. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static ars_dist world;

static void make_specs(ars_layer_spec *specs, int *count, int sync)
{
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 32;
    specs[n].bias = 0;   /* a bias before BatchNorm has gradient 0 + rounding noise, which Adam amplifies */
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n], "batchnorm");
    specs[n++].sync = sync;
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dropout");
    specs[n++].rate = 0.2f;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 4;
    strcpy(specs[n++].init, "xavier_uniform");
    *count = n;
}

/* model: the blobs classifier's options */
typedef struct model_options {
    int sync;                 /* SyncBatchNorm */
    ars_grad_sync grad_sync;
} model_options;

static void make_run(ars_run_config *run, int global_batch, ars_grad_sync grad_sync)
{
    ars_test_equivalence_run(run, global_batch);
    strcpy(run->data, "blobs");
    run->standardize = 1;
    run->seed = 7;
    run->loss = ARS_LOSS_CROSS_ENTROPY;
    run->optim.lr = 1e-2f;
    run->grad_sync = grad_sync;
    run->bucket_mb = 0.001;   /* several buckets even for this small model */
    run->first_bucket_mb = 0.0005;
}

static void train(const void *model, ars_dist *dist, int global_batch, ars_train_result *result)
{
    const model_options *m = model;
    ars_run_config run;
    ars_layer_spec specs[8];
    int count;
    make_run(&run, global_batch, m->grad_sync);
    make_specs(specs, &count, m->sync);
    ars_train_options options = {.quiet = 1, .export_params = 1};
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, result));
    assert_non_null(result->params);
}

static void test_n_ranks_equal_one_rank_with_n_times_the_batch(void **state)
{
    /* the default on one host: gradients summed in shared memory */
    const model_options synced = {.sync = 1, .grad_sync = ARS_SYNC_SHARED};
    ars_test_equivalence e;
    ars_test_check_equivalence(&world, "blobs MLP", train, &synced, &e);
    /* sharded evaluation: the same accuracy as one process */
    assert_true(fabs(e.single.test_accuracy - e.parallel.test_accuracy) < 1e-9);
    if (world.size > 1) {
        /* Local BatchNorm normalizes with per-rank statistics: it differs
         * (~0.1 after 14 steps), which shows the comparison above can fail. */
        const model_options local_bn = {.sync = 0, .grad_sync = ARS_SYNC_SHARED};
        ars_train_result local;
        train(&local_bn, &world, ARS_TEST_LOCAL_BATCH * world.size, &local);
        double local_diff = ars_test_max_abs_diff(e.single.params, local.params, e.single.param_count);
        if (world.rank == 0) printf("ranks %d: local BatchNorm differs by %.3g\n", world.size, local_diff);
        assert_true(local_diff > 10 * ARS_TEST_EQUIVALENCE_TOLERANCE);
        ars_test_result_free(&local);
    }
    ars_test_equivalence_free(&e);
}

/* The three ways of summing gradients train the same model, rounding
 * aside: a sum over three ranks may be associated differently, and the
 * shared-memory sum adds the clip norm's squares in another order. */
static void test_gradient_sync_modes_agree(void **state)
{
    const ars_grad_sync modes[] = {ARS_SYNC_ALLREDUCE, ARS_SYNC_OVERLAP, ARS_SYNC_SHARED};
    ars_train_result results[3];
    const int global = ARS_TEST_LOCAL_BATCH * world.size;
    for (int i = 0; i < 3; i++) {
        const model_options options = {.sync = 1, .grad_sync = modes[i]};
        train(&options, &world, global, &results[i]);
    }
    for (int i = 1; i < 3; i++) {
        double diff = ars_test_max_abs_diff(results[0].params, results[i].params, results[0].param_count);
        if (world.rank == 0)
            printf("ranks %d: gradient_sync %s vs allreduce: %.3g\n", world.size, ars_grad_sync_name(modes[i]), diff);
        assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
    }
    for (int i = 0; i < 3; i++) ars_test_result_free(&results[i]);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_n_ranks_equal_one_rank_with_n_times_the_batch),
        cmocka_unit_test(test_gradient_sync_modes_agree),
    };
    return ars_test_mpi_main(&argc, &argv, &world, tests, sizeof tests / sizeof tests[0]);
}
