/* mpi_faults: numerical faults across ranks. A NaN or Inf that appears on
 * ONE rank only (a bad input row, a corrupted gradient) must lead every rank
 * to the same skip/stop decision, because the decision is taken on the
 * all-reduced gradient, which must be bit-identical everywhere; a
 * learning-rate explosion is caught by the non-finite guard, reported with
 * its step, identically on every rank; the data scan names the bad sample.
 * Run under mpiexec -n 1, 2 and 3.
 *
 * The trainer's own step (train.c) has no hook to inject a NaN on one rank,
 * so the one-rank cases drive the same library calls it makes (forward ->
 * loss -> backward with the bucketed all-reduce hook -> finish -> norm) and
 * check the invariant its guard relies on; the explosion runs ars_train.
 * Every assertion is agreed across ranks first (an assertion failing on one
 * rank alone would leave the others waiting in a collective). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/clip.h"
#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"

enum { IN_DIM = 6, CLASSES = 3, ROWS = 5 };

static ars_dist world;

/* 1 on every rank when cond holds on every rank. */
static int all_ranks(int cond)
{
    int ok = cond ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return ok;
}

/* 1 when value is bitwise the same on every rank. */
static int same_everywhere(const void *value, size_t size)
{
    unsigned char *root = malloc(size);
    memcpy(root, value, size);
    MPI_Bcast(root, (int)size, MPI_BYTE, 0, MPI_COMM_WORLD);
    int same = memcmp(root, value, size) == 0;
    free(root);
    return all_ranks(same);
}

typedef struct replica {
    ars_model model;
    float x[ROWS * IN_DIM];
    int32_t labels[ROWS];
    uint32_t ids[ROWS];
    float dlogits[ROWS * CLASSES];
} replica;

static const ars_grad_sync sync_modes[] = {ARS_SYNC_ALLREDUCE, ARS_SYNC_OVERLAP, ARS_SYNC_SHARED};
enum { SYNC_MODES = sizeof sync_modes / sizeof sync_modes[0] };

/* The same model on every rank (same seed), with SyncBatchNorm and
 * dropout so that cross-rank reductions happen inside forward too; each
 * rank its own rows. */
static void make_replica(replica *r, ars_grad_sync mode)
{
    ars_layer_spec specs[6];
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n++].units = 16;
    ars_layer_spec_defaults(&specs[n++], "batchnorm");
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dropout");
    specs[n++].rate = 0.1f;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n++].units = 12;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n++].units = CLASSES;
    ARS_ASSERT_OK(ars_model_create(&r->model, specs, n, ars_shape_vector(IN_DIM), ROWS));
    ARS_ASSERT_OK(ars_init_model(&r->model, 17));
    /* tiny buckets: several all-reduces in flight during backward */
    ARS_ASSERT_OK(ars_dist_plan_buckets(&world, &r->model, 64, 64, mode));
    ars_rng_normal(r->x, ROWS * IN_DIM, 0.0f, 1.0f, 99, ars_stream(ARS_STREAM_DATA, 7), (uint64_t)world.rank * 1000);
    for (int i = 0; i < ROWS; i++) {
        r->labels[i] = (world.rank + i) % CLASSES;
        r->ids[i] = (uint32_t)(world.rank * ROWS + i);
    }
}

/* One step as train.c takes it, up to the guard's inputs. corrupt, if set,
 * runs on the local gradient between backward and the gradient sum (only
 * meaningful without overlap, where nothing is sent before finish). The
 * norm as train.c takes it: the shared-memory reduction's own. */
static void step(replica *r, double *loss, double *norm, void (*corrupt)(float *grads, size_t n))
{
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS * world.size,
                     .sample_ids = r->ids, .seed = 5, .step = 1, .dist = &world};
    ARS_ASSERT_OK(ars_model_forward(&r->model, &pass, r->x));
    double loss_sum = 0;
    ARS_ASSERT_OK(ars_loss_compute(ARS_LOSS_CROSS_ENTROPY, ars_model_output(&r->model), ROWS, CLASSES, r->labels,
                                   NULL, pass.global_rows, &loss_sum, r->dlogits));
    ARS_ASSERT_OK(ars_model_backward(&r->model, &pass, r->dlogits, ars_dist_backward_hook, &world));
    if (corrupt) {
        corrupt(r->model.grads, r->model.param_count);
        r->model.grad_sum_squares_ready = 0;   /* changed after backward: its sum of squares no longer holds */
    }
    ARS_ASSERT_OK(ars_dist_finish_gradients(&world));
    ARS_ASSERT_OK(ars_dist_allreduce_double(&world, &loss_sum, 1));
    *loss = loss_sum / pass.global_rows;
    *norm = sqrt(ars_dist_grad_sum_squares(&world, &r->model));
}

/* The guard of train.c: skip (or stop) when either is non-finite. */
static int guard_fires(double loss, double norm) { return !isfinite(norm) || !isfinite(loss); }

static void check_decision(replica *r, double loss, double norm, int expect_fire, const char *what)
{
    int fires = guard_fires(loss, norm);
    if (world.rank == 0)
        printf("ranks %d, %s: loss %g, gradient norm %g -> %s\n", world.size, what, loss, norm,
               fires ? "skip/stop" : "update");
    assert_true(all_ranks(fires == expect_fire));
    /* same decision because the same numbers: the reduced gradient and loss
     * are bit-identical on every rank */
    assert_true(same_everywhere(&fires, sizeof fires));
    assert_true(same_everywhere(&loss, sizeof loss));
    uint64_t sum = ars_checksum(r->model.grads, r->model.param_count);
    assert_true(same_everywhere(&sum, sizeof sum));
}

static void test_clean_step_updates_everywhere(void **state)
{
    (void)state;
    for (int m = 0; m < SYNC_MODES; m++) {
        replica r;
        make_replica(&r, sync_modes[m]);
        double loss, norm;
        step(&r, &loss, &norm, NULL);
        char what[64];
        snprintf(what, sizeof what, "clean, %s", ars_grad_sync_name(sync_modes[m]));
        check_decision(&r, loss, norm, 0, what);
        ars_model_destroy(&r.model);
    }
}

/* A NaN in one input row of the last rank: its loss and gradient turn NaN
 * during backward, while the overlapped bucket all-reduces are in flight. */
static void test_nan_input_row_on_one_rank(void **state)
{
    (void)state;
    for (int m = 0; m < SYNC_MODES; m++) {
        replica r;
        make_replica(&r, sync_modes[m]);
        if (world.rank == world.size - 1) r.x[2 * IN_DIM + 3] = NAN;
        double loss, norm;
        step(&r, &loss, &norm, NULL);
        char what[64];
        snprintf(what, sizeof what, "NaN input row on the last rank, %s", ars_grad_sync_name(sync_modes[m]));
        check_decision(&r, loss, norm, 1, what);
        ars_model_destroy(&r.model);
    }
}

static void nan_on_last_rank(float *g, size_t n)
{
    if (world.rank == world.size - 1) g[n / 2] = NAN;
}

/* +Inf on rank 0 and -Inf on the last rank: the sum is NaN (on one rank
 * alone, +Inf); either way non-finite on every rank. */
static void opposite_infinities(float *g, size_t n)
{
    if (world.rank == 0) g[1] = INFINITY;
    if (world.rank == world.size - 1) g[1] = world.size == 1 ? INFINITY : -INFINITY;
    (void)n;
}

/* Finite values whose sum overflows float: FLT_MAX on every rank. */
static void overflow_in_the_sum(float *g, size_t n)
{
    g[n - 1] = 3.4028234663852886e38f;
    if (world.size == 1) g[n - 1] = INFINITY;   /* one rank sums nothing: force it */
}

static void test_corrupt_gradient_on_one_rank(void **state)
{
    (void)state;
    struct {
        void (*corrupt)(float *, size_t);
        const char *what;
    } cases[] = {{nan_on_last_rank, "NaN in the last rank's local gradient"},
                 {opposite_infinities, "+Inf and -Inf on two ranks"},
                 {overflow_in_the_sum, "FLT_MAX on every rank (the sum overflows)"}};
    /* the modes that send nothing before finish */
    const ars_grad_sync modes[] = {ARS_SYNC_ALLREDUCE, ARS_SYNC_SHARED};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int m = 0; m < 2; m++) {
            replica r;
            make_replica(&r, modes[m]);
            double loss, norm;
            step(&r, &loss, &norm, cases[c].corrupt);
            char what[128];
            snprintf(what, sizeof what, "%s, %s", cases[c].what, ars_grad_sync_name(modes[m]));
            check_decision(&r, loss, norm, 1, what);
            ars_model_destroy(&r.model);
        }
}

/* The run through the run-file parser, so that every [run] field has its
 * real default: teacher regression, SGD at lr 1e4 (diverges within a few
 * steps), the default gradient sum (shared memory on one host), parameters
 * compared across ranks after every step. */
static void explosion_run(const char *policy, int epochs, ars_run_config *run, ars_layer_spec **specs, int *count)
{
    char text[1024];
    snprintf(text, sizeof text,
             "[run]\ndata = teacher\ntrain_samples = 256\ntest_samples = 64\nepochs = %d\nbatch = 32\n"
             "optimizer = sgd\nlr = 1e4\nnonfinite = %s\nbucket_mb = 0.001\nfirst_bucket_mb = 0.001\n"
             "check_every = 1\nprobe_every = 1\nlog_every = 1000\n"
             "[dense]\nunits = 32\nactivation = relu\n[dense]\nunits = 4\n",
             epochs, policy);
    ars_config config;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "explosion.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, run, specs, count));
    ars_config_free(&config);
}

static void test_lr_explosion_stops_at_the_same_step(void **state)
{
    (void)state;
    ars_run_config run;
    ars_layer_spec *specs;
    int count;
    explosion_run("stop", 3, &run, &specs, &count);
    ars_train_options options = {.quiet = 1, .config_text = "[run]\n"};
    ars_train_result result;
    ars_error_clear();
    int rc = ars_train(&run, specs, count, &world, &options, &result);
    free(specs);
    char expected[64];
    snprintf(expected, sizeof expected, "step %lld: non-finite", (long long)result.steps);
    if (world.rank == 0) printf("ranks %d, lr 1e4, nonfinite = stop: rc %d: %s\n", world.size, rc, ars_error_message());
    assert_true(all_ranks(rc == ARS_ESTOP));
    assert_true(all_ranks(strstr(ars_error_message(), expected) != NULL));
    assert_true(all_ranks(strstr(ars_error_message(), "stopping as [run] nonfinite = stop says") != NULL));
    assert_true(all_ranks(result.steps > 0 && result.steps < 3 * 8));
    assert_true(same_everywhere(&result.steps, sizeof result.steps));
    assert_true(same_everywhere(&result.nonfinite_steps, sizeof result.nonfinite_steps));
    /* Every rank took the decision itself, on the same figures: the CLI
     * finalizes instead of aborting, and rank 0 alone prints the message. */
    assert_true(all_ranks(result.agreed == ARS_AGREED_SAME));
    char message[256] = "";
    snprintf(message, sizeof message, "%s", ars_error_message());
    assert_true(same_everywhere(message, sizeof message));
}

/* A global batch smaller than the ranks: every rank refuses the same run
 * file alike, before any collective of the run. */
static void test_global_batch_below_the_ranks(void **state)
{
    (void)state;
    ars_run_config run;
    ars_layer_spec *specs;
    int count;
    if (world.size == 1) return;   /* every batch >= 1 fits one rank */
    explosion_run("stop", 1, &run, &specs, &count);
    run.batch_is_global = 1;
    run.batch = world.size - 1;
    ars_train_options options = {.quiet = 1, .config_text = "[run]\n"};
    ars_train_result result;
    ars_error_clear();
    int rc = ars_train(&run, specs, count, &world, &options, &result);
    free(specs);
    if (world.rank == 0) printf("ranks %d, global batch %d: rc %d: %s\n", world.size, run.batch, rc, ars_error_message());
    assert_true(all_ranks(rc == ARS_EINVAL));
    assert_true(all_ranks(strstr(ars_error_message(), "is smaller than the") != NULL));
    assert_true(all_ranks(result.agreed == ARS_AGREED_SAME));
}

/* A failure on one rank alone, agreed at the next collective: that rank
 * keeps its error, the others learn of it, and none holds the same error. */
static void test_agree_one_rank_failing(void **state)
{
    (void)state;
    int agreed = -1;
    int rc = world.rank == world.size - 1 ? ars_error(ARS_EIO, "rank %d: disk gone", world.rank) : 0;
    rc = ars_dist_agree(&world, rc, &agreed);
    if (world.rank == world.size - 1) assert_int_equal(rc, ARS_EIO);
    else assert_int_equal(rc, ARS_EPEER);
    assert_true(all_ranks(agreed == (world.size > 1 ? ARS_AGREED : ARS_AGREED_SAME)));
    /* all failing, but each with its own message: not the same error */
    rc = ars_dist_agree(&world, ars_error(ARS_EIO, "rank %d: disk gone", world.rank), &agreed);
    assert_true(all_ranks(rc == ARS_EIO));
    assert_true(all_ranks(agreed == (world.size > 1 ? ARS_AGREED : ARS_AGREED_SAME)));
    /* all failing alike */
    rc = ars_dist_agree(&world, ars_error(ARS_EINVAL, "the same on every rank"), &agreed);
    assert_true(all_ranks(rc == ARS_EINVAL && agreed == ARS_AGREED_SAME));
    /* none failing */
    rc = ars_dist_agree(&world, 0, &agreed);
    assert_true(all_ranks(rc == 0 && agreed == ARS_AGREED_NONE));
}

static void test_lr_explosion_skipped_identically(void **state)
{
    (void)state;
    ars_run_config run;
    ars_layer_spec *specs;
    int count;
    explosion_run("skip", 1, &run, &specs, &count);
    ars_train_options options = {.quiet = 1, .config_text = "[run]\n", .export_params = 1};
    ars_train_result result;
    int rc = ars_train(&run, specs, count, &world, &options, &result);
    free(specs);
    if (world.rank == 0)
        printf("ranks %d, lr 1e4, nonfinite = skip: rc %d, %lld of %lld steps skipped\n", world.size, rc,
               (long long)result.nonfinite_steps, (long long)result.steps);
    assert_true(all_ranks(rc == 0));
    assert_true(all_ranks(result.nonfinite_steps > 0));
    assert_true(same_everywhere(&result.nonfinite_steps, sizeof result.nonfinite_steps));
    /* skipped updates keep the replicas equal (check_every = 1 verified it
     * during the run; compare the final parameters too) */
    uint64_t sum = result.params ? ars_checksum(result.params, result.param_count) : 0;
    assert_true(all_ranks(result.params != NULL));
    assert_true(same_everywhere(&sum, sizeof sum));
    assert_true(all_ranks(!ars_has_nonfinite(result.params, result.param_count)));
    free(result.params);
    free(result.state);
}

/* NaN/Inf in input data: the scan names the first bad sample. (IDX files
 * hold unsigned bytes and the synthetic sets are finite, so no file can
 * carry NaN into a run; ars_load_run_data still scans every set.) */
static void test_nonfinite_data_names_the_sample(void **state)
{
    (void)state;
    ars_dataset data;
    ARS_ASSERT_OK(ars_dataset_blobs(&data, 20, 2, 4, 1.0f, 3));
    int sample = 123;
    assert_int_equal(ars_dataset_find_nonfinite(&data, &sample), 0);
    assert_int_equal(sample, -1);
    data.x[13 * 4 + 2] = NAN;
    data.x[17 * 4 + 0] = INFINITY;
    assert_int_equal(ars_dataset_find_nonfinite(&data, &sample), 1);
    assert_int_equal(sample, 13);
    data.x[13 * 4 + 2] = 0;
    assert_int_equal(ars_dataset_find_nonfinite(&data, &sample), 1);
    assert_int_equal(sample, 17);
    ars_dataset_free(&data);

    ARS_ASSERT_OK(ars_dataset_teacher(&data, 10, 3, 4, 2, 3));
    data.targets[6 * 2 + 1] = -INFINITY;   /* a regression target */
    assert_int_equal(ars_dataset_find_nonfinite(&data, &sample), 1);
    assert_int_equal(sample, 6);
    ars_dataset_free(&data);
    assert_true(all_ranks(1));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) MPI_Abort(MPI_COMM_WORLD, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_step_updates_everywhere),
        cmocka_unit_test(test_nan_input_row_on_one_rank),
        cmocka_unit_test(test_corrupt_gradient_on_one_rank),
        cmocka_unit_test(test_lr_explosion_stops_at_the_same_step),
        cmocka_unit_test(test_lr_explosion_skipped_identically),
        cmocka_unit_test(test_global_batch_below_the_ranks),
        cmocka_unit_test(test_agree_one_rank_failing),
        cmocka_unit_test(test_nonfinite_data_names_the_sample),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 0;
}
