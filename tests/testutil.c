/* testutil: helpers shared by the cmocka tests. */
#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>

#include <mpi.h>

#include "arsenal/config.h"
#include "arsenal/error.h"

void ars_test_tempdir(char *out, size_t size, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, size, "%s/arsenal-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(out)) fail_msg("mkdtemp %s failed", out);
}

void ars_test_write_file(const char *path, const void *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (size && fwrite(bytes, 1, size, f) != size) fail_msg("short write to %s", path);
    fclose(f);
}

double ars_test_max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

ars_layer_spec *ars_test_load_specs(const char *text, int *count)
{
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "test.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, &run, &specs, count));
    ars_config_free(&config);
    return specs;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void ars_test_remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void ars_test_equivalence_run(ars_run_config *run, int global_batch)
{
    memset(run, 0, sizeof *run);
    run->train_samples = ARS_TEST_TRAIN_SAMPLES;
    run->test_samples = 50;
    run->epochs = 0;
    run->max_steps = ARS_TEST_STEPS;
    run->batch = global_batch;
    run->batch_is_global = 1;
    ars_optim_config_defaults(&run->optim, ARS_OPT_ADAM);
    run->schedule.kind = ARS_SCHED_CONSTANT;
    run->clip_norm = ARS_TEST_CLIP_NORM;
    run->grad_sync = ARS_SYNC_OVERLAP;
    run->check_every = 5;
    run->log_every = 1000;
    run->probe_every = 3;   /* probe steps record gradient norms (per time step in sequence layers) */
    run->histogram_bins = 8;
    run->ckpt_keep = 1;
}

void ars_test_result_free(ars_train_result *result)
{
    free(result->params);
    free(result->state);
    result->params = result->state = NULL;
}

void ars_test_equivalence_free(ars_test_equivalence *e)
{
    ars_test_result_free(&e->single);
    ars_test_result_free(&e->parallel);
}

void ars_test_check_equivalence(ars_dist *world, const char *label, ars_test_train_fn train, const void *model,
                                ars_test_equivalence *out)
{
    ars_train_result *single = &out->single, *parallel = &out->parallel;
    const int global = ARS_TEST_LOCAL_BATCH * world->size;
    train(model, NULL, global, single);
    train(model, world, global, parallel);
    assert_non_null(single->params);
    assert_non_null(parallel->params);
    assert_int_equal(single->param_count, parallel->param_count);
    assert_int_equal(single->state_count, parallel->state_count);
    out->param_diff = ars_test_max_abs_diff(single->params, parallel->params, single->param_count);
    out->state_diff = ars_test_max_abs_diff(single->state, parallel->state, single->state_count);
    if (world->rank == 0)
        printf("%s, ranks %d: max |param difference| %.3g, layer state %.3g (tolerance %.1g); loss %.4f vs %.4f; "
               "last grad norm %.3g (clip at %.2g)\n", label, world->size, out->param_diff, out->state_diff,
               ARS_TEST_EQUIVALENCE_TOLERANCE, single->last_loss, parallel->last_loss, parallel->last_grad_norm,
               ARS_TEST_CLIP_NORM);
    assert_true(parallel->last_grad_norm > 2 * ARS_TEST_CLIP_NORM);   /* clipping was really active */
    assert_true(out->param_diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(out->state_diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(fabs(single->last_loss - parallel->last_loss) < 1e-4);
    assert_true(fabs(single->test_loss - parallel->test_loss) < 1e-4);   /* sharded evaluation */
    /* every rank holds bit-identical parameters and state */
    ARS_ASSERT_OK(ars_dist_check_consistent(world, parallel->params, parallel->param_count, ARS_TEST_STEPS,
                                            "parameters"));
    ARS_ASSERT_OK(ars_dist_check_consistent(world, parallel->state, parallel->state_count, ARS_TEST_STEPS,
                                            "layer state"));
}

int ars_test_mpi_main(int *argc, char ***argv, ars_dist *world, const struct CMUnitTest *tests, size_t count)
{
    MPI_Init(argc, argv);
    if (ars_dist_create(world, MPI_COMM_WORLD)) {
        fprintf(stderr, "%s\n", ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int failed = _cmocka_run_group_tests("tests", tests, count, NULL, NULL);
    ars_dist_destroy(world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);   /* never leave the other ranks waiting */
    MPI_Finalize();
    return 0;
}

int ars_test_mpi_main_in_tempdir(int *argc, char ***argv, ars_dist *world, const char *tag, char *dir, size_t size,
                                 const struct CMUnitTest *tests, size_t count)
{
    MPI_Init(argc, argv);
    if (ars_dist_create(world, MPI_COMM_WORLD)) {
        fprintf(stderr, "%s\n", ars_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (world->rank == 0) ars_test_tempdir(dir, size, tag);
    MPI_Bcast(dir, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
    int failed = _cmocka_run_group_tests("tests", tests, count, NULL, NULL);
    if (world->rank == 0) ars_test_remove_tree(dir);
    ars_dist_destroy(world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 0;
}
