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

#include <mpi.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

static ars_dist world;

/* Differences of summation order between 1 and N ranks (GEMM blocking,
 * all-reduce order) are float rounding, ~1e-7 relative per step; over 10
 * Adam steps they measure ~2e-6 and stay below this. Local BatchNorm
 * instead changes the statistics themselves: ~0.1 after 10 steps. */
#define EQUIVALENCE_TOLERANCE 1e-5

/* 203 = 12 x 16 + 11 = 8 x 24 + 11: within 14 steps the partial last batch
 * comes on 2 ranks (8 + 3 rows) and on 3 ranks (8 + 3 + 0 rows). */
enum { LOCAL_BATCH = 8, TRAIN_SAMPLES = 203, STEPS = 14 };
#define CLIP_NORM 0.05f

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

static void make_run(ars_run_config *run, int global_batch, int overlap)
{
    memset(run, 0, sizeof *run);
    strcpy(run->data, "blobs");
    run->train_samples = TRAIN_SAMPLES;
    run->test_samples = 50;
    run->standardize = 1;
    run->epochs = 0;
    run->max_steps = STEPS;
    run->batch = global_batch;
    run->batch_is_global = 1;
    run->seed = 7;
    run->loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&run->optim, ARS_OPT_ADAM);
    run->optim.lr = 1e-2f;
    run->schedule.kind = ARS_SCHED_CONSTANT;
    run->clip_norm = CLIP_NORM;   /* well below the gradient norm: clipping is active */
    run->overlap = overlap;
    run->bucket_mb = 0.001;   /* several buckets even for this small model */
    run->first_bucket_mb = 0.0005;
    run->check_every = 5;
    run->log_every = 1000;
    run->probe_every = 3;
    run->histogram_bins = 8;
    run->ckpt_keep = 1;
}

static void train(ars_dist *dist, int global_batch, int sync, int overlap, ars_train_result *result)
{
    ars_run_config run;
    ars_layer_spec specs[8];
    int count;
    make_run(&run, global_batch, overlap);
    make_specs(specs, &count, sync);
    ars_train_options options = {.quiet = 1, .export_params = 1};
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, result));
    assert_non_null(result->params);
}

static void test_n_ranks_equal_one_rank_with_n_times_the_batch(void **state)
{
    ars_train_result single, parallel;
    const int global = LOCAL_BATCH * world.size;
    train(NULL, global, 1, 1, &single);          /* this process alone, global batch */
    train(&world, global, 1, 1, &parallel);      /* all ranks, local batch b */
    assert_int_equal(single.param_count, parallel.param_count);
    double diff = ars_test_max_abs_diff(single.params, parallel.params, single.param_count);
    double state_diff = ars_test_max_abs_diff(single.state, parallel.state, single.state_count);
    if (world.rank == 0)
        printf("ranks %d: max |param difference| %.3g, running statistics %.3g (tolerance %.1g); "
               "last grad norm %.3g (clip at %.2g)\n", world.size, diff, state_diff, EQUIVALENCE_TOLERANCE,
               parallel.last_grad_norm, CLIP_NORM);
    assert_true(parallel.last_grad_norm > 2 * CLIP_NORM);   /* clipping was really active */
    assert_true(diff < EQUIVALENCE_TOLERANCE);
    assert_true(state_diff < EQUIVALENCE_TOLERANCE);
    assert_true(fabs(single.last_loss - parallel.last_loss) < 1e-4);
    /* sharded evaluation: the same accuracy as one process */
    assert_true(fabs(single.test_accuracy - parallel.test_accuracy) < 1e-9);

    /* every rank holds bit-identical parameters */
    ARS_ASSERT_OK(ars_dist_check_consistent(&world, parallel.params, parallel.param_count, STEPS, "parameters"));
    ARS_ASSERT_OK(ars_dist_check_consistent(&world, parallel.state, parallel.state_count, STEPS, "running statistics"));

    if (world.size > 1) {
        /* Local BatchNorm normalizes with per-rank statistics: it differs,
         * which shows the comparison above can fail. */
        ars_train_result local;
        train(&world, global, 0, 1, &local);
        double local_diff = ars_test_max_abs_diff(single.params, local.params, single.param_count);
        if (world.rank == 0) printf("ranks %d: local BatchNorm differs by %.3g\n", world.size, local_diff);
        assert_true(local_diff > 10 * EQUIVALENCE_TOLERANCE);
        free(local.params);
        free(local.state);
    }
    free(single.params);
    free(single.state);
    free(parallel.params);
    free(parallel.state);
}

static void test_overlapped_and_blocking_allreduce_agree(void **state)
{
    ars_train_result overlapped, blocking;
    const int global = LOCAL_BATCH * world.size;
    train(&world, global, 1, 1, &overlapped);
    train(&world, global, 1, 0, &blocking);
    double diff = ars_test_max_abs_diff(overlapped.params, blocking.params, overlapped.param_count);
    if (world.rank == 0) printf("ranks %d: overlapped vs blocking all-reduce: %.3g\n", world.size, diff);
    assert_true(diff < EQUIVALENCE_TOLERANCE);
    free(overlapped.params);
    free(overlapped.state);
    free(blocking.params);
    free(blocking.state);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) {
        fprintf(stderr, "%s\n", ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_n_ranks_equal_one_rank_with_n_times_the_batch),
        cmocka_unit_test(test_overlapped_and_blocking_allreduce_agree),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);   /* never leave the other ranks waiting */
    MPI_Finalize();
    return 0;
}
