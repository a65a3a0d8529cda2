/* mpi_accumulate: gradient accumulation ([run] accumulate = K). K
 * micro-batches of b per optimizer step, gradients summed locally and
 * synchronized once, must train what one batch of K*b trains when no layer
 * looks across the batch (dropout, active clipping, an epoch whose last
 * step takes fewer micro-batches), sharded and not, under every
 * gradient_sync. With BatchNorm each micro-batch has its own statistics
 * (PyTorch's behaviour): the run then differs from the large batch but
 * not between world sizes. The step, epoch and sampler counting survive
 * a resume bit for bit. Run under mpiexec -n 1, 2 and 3. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/ckpt.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"

enum { MICRO = 4 };

static ars_dist world;
static char base_dir[256];

typedef struct setup {
    int batchnorm;
    int shard;
    ars_grad_sync grad_sync;
} setup;

static void make_specs(ars_layer_spec *specs, int *count, int batchnorm)
{
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 24;
    specs[n].bias = !batchnorm;
    strcpy(specs[n++].init, "he_normal");
    if (batchnorm) {
        ars_layer_spec_defaults(&specs[n], "batchnorm");
        specs[n++].sync = 1;
    }
    ars_layer_spec_defaults(&specs[n++], "tanh");
    ars_layer_spec_defaults(&specs[n], "dropout");
    specs[n++].rate = 0.2f;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 4;
    strcpy(specs[n++].init, "xavier_uniform");
    *count = n;
}

static ars_train_result train(const setup *s, ars_dist *dist, int global_batch, int accumulate, int64_t steps,
                              const char *ckpt_dir, const char *resume)
{
    ars_run_config run;
    ars_test_equivalence_run(&run, global_batch);
    strcpy(run.data, "blobs");
    run.standardize = 1;
    run.seed = 13;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    run.optim.lr = 1e-2f;
    run.grad_sync = s->grad_sync;
    run.bucket_mb = 0.001;
    run.first_bucket_mb = 0.0005;
    run.optimizer_shard = s->shard;
    run.accumulate = accumulate;
    run.max_steps = steps;
    run.ckpt_every = 3;
    run.ckpt_keep = 2;
    run.histogram_every = 2;
    ars_layer_spec specs[8];
    int count;
    make_specs(specs, &count, s->batchnorm);
    ars_train_options options = {.quiet = 1, .export_params = 1, .ckpt_dir = ckpt_dir, .resume_path = resume,
                                 .config_text = "[run]\n"};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, &result));
    assert_non_null(result.params);
    return result;
}

/* 203 samples: with a micro-batch of 8 per rank an epoch holds 26, 13 or
 * 9 micro-batches on 1, 2, 3 ranks, so its last step takes 2, 1 or 1 of
 * the 4; 14 steps cross epochs. */
static void test_accumulation_equals_a_k_times_larger_batch(void **state)
{
    const setup setups[] = {{0, 0, ARS_SYNC_SHARED}, {0, 0, ARS_SYNC_OVERLAP}, {0, 1, ARS_SYNC_SHARED},
                            {0, 1, ARS_SYNC_ALLREDUCE}};
    const int micro = ARS_TEST_LOCAL_BATCH * world.size;
    for (size_t i = 0; i < sizeof setups / sizeof setups[0]; i++) {
        const setup *s = &setups[i];
        ars_train_result large = train(s, &world, MICRO * micro, 1, ARS_TEST_STEPS, NULL, NULL);
        ars_train_result accumulated = train(s, &world, micro, MICRO, ARS_TEST_STEPS, NULL, NULL);
        double diff = ars_test_max_abs_diff(large.params, accumulated.params, large.param_count);
        if (world.rank == 0)
            printf("ranks %d, gradient_sync %s, shard %s: %d x %d vs 1 x %d: max |param difference| %.3g; "
                   "loss %.6f vs %.6f; epochs %d vs %d\n", world.size, ars_grad_sync_name(s->grad_sync),
                   s->shard ? "on" : "off", MICRO, micro, MICRO * micro, diff, large.last_loss,
                   accumulated.last_loss, large.epochs_done, accumulated.epochs_done);
        assert_int_equal(large.steps, accumulated.steps);
        assert_int_equal(large.epochs_done, accumulated.epochs_done);
        assert_true(accumulated.epochs_done > 1);
        assert_true(large.last_grad_norm > 2 * ARS_TEST_CLIP_NORM);   /* clipping was active */
        assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
        assert_true(fabs(large.last_loss - accumulated.last_loss) < 1e-5);
        assert_true(fabs(large.test_accuracy - accumulated.test_accuracy) < 1e-9);
        ars_test_result_free(&large);
        ars_test_result_free(&accumulated);
    }
}

/* BatchNorm normalizes each micro-batch by its own statistics and updates
 * its running statistics once per micro-batch, as PyTorch does: no longer
 * the large batch, but N ranks still train what one process does with
 * the same micro-batches. */
static void test_batchnorm_statistics_are_per_micro_batch(void **state)
{
    const setup s = {1, 1, ARS_SYNC_SHARED};
    const int micro = ARS_TEST_LOCAL_BATCH * world.size;
    ars_train_result large = train(&s, &world, MICRO * micro, 1, ARS_TEST_STEPS, NULL, NULL);
    ars_train_result accumulated = train(&s, &world, micro, MICRO, ARS_TEST_STEPS, NULL, NULL);
    ars_train_result alone = train(&s, NULL, micro, MICRO, ARS_TEST_STEPS, NULL, NULL);
    double vs_large = ars_test_max_abs_diff(large.params, accumulated.params, large.param_count);
    double vs_alone = ars_test_max_abs_diff(alone.params, accumulated.params, large.param_count);
    double state_vs_alone = ars_test_max_abs_diff(alone.state, accumulated.state, large.state_count);
    double state_vs_large = ars_test_max_abs_diff(large.state, accumulated.state, large.state_count);
    if (world.rank == 0)
        printf("ranks %d, BatchNorm: accumulated vs large batch %.3g (running stats %.3g); vs one process %.3g "
               "(running stats %.3g)\n", world.size, vs_large, state_vs_large, vs_alone, state_vs_alone);
    assert_true(vs_large > 10 * ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(state_vs_large > 10 * ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(vs_alone < ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(state_vs_alone < ARS_TEST_EQUIVALENCE_TOLERANCE);
    ars_test_result_free(&large);
    ars_test_result_free(&accumulated);
    ars_test_result_free(&alone);
}

/* k + resume + k steps = 2k steps, bit for bit, with checkpoints inside an
 * epoch and epochs ending mid-run; the histories agree. */
static void test_accumulated_resume_is_bit_exact(void **state)
{
    const setup setups[] = {{1, 0, ARS_SYNC_OVERLAP}, {1, 1, ARS_SYNC_SHARED}};
    const int micro = ARS_TEST_LOCAL_BATCH * world.size, k = 7;
    for (int i = 0; i < 2; i++) {
        char straight[400], split[400], latest[420];
        snprintf(straight, sizeof straight, "%s/straight%d", base_dir, i);
        snprintf(split, sizeof split, "%s/split%d", base_dir, i);
        ars_train_result full = train(&setups[i], &world, micro, MICRO, 2 * k, straight, NULL);
        ars_train_result half = train(&setups[i], &world, micro, MICRO, k, split, NULL);
        snprintf(latest, sizeof latest, "%s/latest.h5", split);
        ars_train_result resumed = train(&setups[i], &world, micro, MICRO, 2 * k, split, latest);
        assert_int_equal(resumed.steps, 2 * k);
        assert_int_equal(resumed.epochs_done, full.epochs_done);
        assert_memory_equal(full.params, resumed.params, sizeof(float) * full.param_count);
        assert_memory_equal(full.state, resumed.state, sizeof(float) * full.state_count);
        if (world.rank == 0) {
            char a[420];
            snprintf(a, sizeof a, "%s/latest.h5", straight);
            ars_history ha, hb;
            ARS_ASSERT_OK(ars_ckpt_read_history(a, &ha));
            ARS_ASSERT_OK(ars_ckpt_read_history(latest, &hb));
            assert_int_equal(ha.count, hb.count);
            for (size_t t = 0; t < ha.count; t++) {
                assert_int_equal(ha.steps[t].step, hb.steps[t].step);
                assert_int_equal(ha.steps[t].epoch, hb.steps[t].epoch);
                assert_memory_equal(&ha.steps[t].loss, &hb.steps[t].loss, sizeof(double));
            }
            printf("ranks %d, shard %s: accumulated %d + %d steps bit-identical to %d (%d epochs)\n", world.size,
                   setups[i].shard ? "on" : "off", k, k, 2 * k, full.epochs_done);
            ars_history_free(&ha);
            ars_history_free(&hb);
        }
        ars_test_result_free(&full);
        ars_test_result_free(&half);
        ars_test_result_free(&resumed);
    }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accumulation_equals_a_k_times_larger_batch),
        cmocka_unit_test(test_batchnorm_statistics_are_per_micro_batch),
        cmocka_unit_test(test_accumulated_resume_is_bit_exact),
    };
    return ars_test_mpi_main_in_tempdir(&argc, &argv, &world, "accumulate", base_dir, sizeof base_dir, tests,
                                        sizeof tests / sizeof tests[0]);
}
