/* mpi_resume: exact resume. 2k steps in one run and k steps + resume + k
 * steps give bit-identical parameters and identical loss histories on the
 * same number of ranks; a checkpoint written by N ranks resumes on 1 rank
 * (global batch kept) to float rounding; the history continues across the
 * resume. Run under mpiexec -n 1, 2 and 3. */
#define _POSIX_C_SOURCE 200809L
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

enum { K = 7, LOCAL_BATCH = 6 };

static ars_dist world;
static char base_dir[256];

static void make_specs(ars_layer_spec *specs, int *count)
{
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 24;
    specs[n].bias = 0;
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n++], "batchnorm");
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dropout");
    specs[n++].rate = 0.25f;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 4;
    strcpy(specs[n++].init, "xavier_uniform");
    *count = n;
}

static ars_train_result train(ars_dist *dist, int64_t steps, const char *ckpt_dir, const char *resume)
{
    ars_run_config run;
    memset(&run, 0, sizeof run);
    strcpy(run.data, "blobs");
    run.train_samples = 101;   /* not a multiple of the global batch: epochs end mid-run */
    run.test_samples = 40;
    run.standardize = 1;
    run.max_steps = steps;
    run.batch = LOCAL_BATCH * world.size;
    run.batch_is_global = 1;
    run.seed = 5;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&run.optim, ARS_OPT_ADAM);
    run.optim.lr = 1e-2f;
    run.schedule.kind = ARS_SCHED_COSINE;
    run.schedule.total_steps = 2 * K;
    run.clip_norm = 0.1f;
    run.grad_sync = ARS_SYNC_OVERLAP;
    run.bucket_mb = 0.001;
    run.first_bucket_mb = 0.001;
    run.check_every = 3;
    run.log_every = 1000;
    run.probe_every = 2;
    run.histogram_every = 4;
    run.histogram_bins = 8;
    run.ckpt_every = 3;
    run.ckpt_keep = 2;
    ars_layer_spec specs[8];
    int count;
    make_specs(specs, &count);
    ars_train_options options = {.quiet = 1, .export_params = 1, .ckpt_dir = ckpt_dir, .resume_path = resume,
                                 .config_text = "[run]\n"};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, &result));
    return result;
}

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", base_dir, name);
}

static void test_resume_is_bit_exact(void **state)
{
    char straight[400], split[400], latest[420];
    path_in(straight, sizeof straight, "straight");
    path_in(split, sizeof split, "split");
    ars_train_result full = train(&world, 2 * K, straight, NULL);
    ars_train_result half = train(&world, K, split, NULL);
    snprintf(latest, sizeof latest, "%s/latest.h5", split);
    ars_train_result resumed = train(&world, 2 * K, split, latest);
    assert_int_equal(resumed.steps, 2 * K);
    assert_memory_equal(full.params, resumed.params, sizeof(float) * full.param_count);
    assert_memory_equal(full.state, resumed.state, sizeof(float) * full.state_count);

    if (world.rank == 0) {
        /* identical histories, carried across the resume */
        char a[420], b[420];
        snprintf(a, sizeof a, "%s/latest.h5", straight);
        snprintf(b, sizeof b, "%s/latest.h5", split);
        ars_history ha, hb;
        ARS_ASSERT_OK(ars_ckpt_read_history(a, &ha));
        ARS_ASSERT_OK(ars_ckpt_read_history(b, &hb));
        assert_int_equal(ha.count, hb.count);
        assert_int_equal(ha.count, K);   /* records at steps 0, 2, ..., 12 */
        for (size_t t = 0; t < ha.count; t++) {
            assert_int_equal(ha.steps[t].step, hb.steps[t].step);
            assert_memory_equal(&ha.steps[t].loss, &hb.steps[t].loss, sizeof(double));
            assert_memory_equal(&ha.steps[t].grad_norm, &hb.steps[t].grad_norm, sizeof(double));
        }
        assert_int_equal(ha.hist_count, hb.hist_count);
        printf("ranks %d: resumed run bit-identical after %d + %d steps, %zu history records\n", world.size, K, K,
               ha.count);
        ars_history_free(&ha);
        ars_history_free(&hb);
    }
    free(full.params);
    free(full.state);
    free(half.params);
    free(half.state);
    free(resumed.params);
    free(resumed.state);
}

/* A checkpoint of N ranks resumed by one process: the global batch is
 * kept, so the run is the same up to summation order. */
static void test_resume_on_a_different_world_size(void **state)
{
    if (world.size == 1) skip();
    char dir[400], latest[420];
    path_in(dir, sizeof dir, "resize");
    ars_train_result full = train(&world, 2 * K, NULL, NULL);
    ars_train_result half = train(&world, K, dir, NULL);
    snprintf(latest, sizeof latest, "%s/latest.h5", dir);
    if (world.rank == 0) {
        char alone[420];
        snprintf(alone, sizeof alone, "%s/alone", base_dir);
        ars_train_result resumed = train(NULL, 2 * K, alone, latest);
        double diff = ars_test_max_abs_diff(full.params, resumed.params, full.param_count);
        printf("ranks %d -> 1: max |param difference| %.3g\n", world.size, diff);
        assert_true(diff < 1e-5);
        free(resumed.params);
        free(resumed.state);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    free(full.params);
    free(full.state);
    free(half.params);
    free(half.state);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) MPI_Abort(MPI_COMM_WORLD, 1);
    if (world.rank == 0) ars_test_tempdir(base_dir, sizeof base_dir, "resume");
    MPI_Bcast(base_dir, sizeof base_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_resume_on_a_different_world_size),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (world.rank == 0) {
        ars_test_remove_tree(base_dir);
    }
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 0;
}
