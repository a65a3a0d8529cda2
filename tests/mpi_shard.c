/* mpi_shard: the sharded optimizer ([run] optimizer_shard, ZeRO-1). Each
 * rank keeps the optimizer state of its slice, gets the summed gradient of
 * that slice only (reduce-scatter, or its slice summed in shared memory),
 * updates it and all-gathers the parameters. It must train the model that
 * optimizer_shard = off trains, to float rounding, with Adam, AdamW and SGD
 * with momentum (plain and Nesterov, weight decay), active clipping and
 * SyncBatchNorm, under every gradient_sync, with a parameter count that is
 * no multiple of the slices and a model so small that ranks hold empty
 * slices; its history must be the unsharded one; its checkpoints keep the
 * format, so it resumes bit-exactly sharded and resumes unsharded, on other
 * world sizes, and the other way round. Run under mpiexec -n 1, 2 and 3. */
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

static ars_dist world;
static char base_dir[256];

typedef struct variant {
    const char *label;
    ars_optimizer_kind kind;
    float momentum, weight_decay;
    int nesterov;
    ars_grad_sync grad_sync;
    int tiny;                 /* a 9-parameter model: ranks beyond the first hold empty slices */
} variant;

static void make_specs(ars_layer_spec *specs, int *count, int tiny)
{
    int n = 0;
    if (tiny) {
        ars_layer_spec_defaults(&specs[n], "dense");
        specs[n++].units = 3;
        *count = n;
        return;
    }
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 13;   /* 290 parameters in all: no multiple of 16 per rank */
    specs[n].bias = 0;
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n], "batchnorm");
    specs[n++].sync = 1;
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dropout");
    specs[n++].rate = 0.2f;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 4;
    strcpy(specs[n++].init, "xavier_uniform");
    *count = n;
}

static ars_train_result train(const variant *v, ars_dist *dist, int global_batch, int shard, int64_t steps,
                              const char *ckpt_dir, const char *resume)
{
    ars_run_config run;
    ars_test_equivalence_run(&run, global_batch);
    strcpy(run.data, v->tiny ? "spirals" : "blobs");
    run.standardize = 1;
    run.seed = 11;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&run.optim, v->kind);
    run.optim.lr = v->kind == ARS_OPT_SGD ? 0.05f : 1e-2f;
    run.optim.momentum = v->momentum;
    run.optim.nesterov = v->nesterov;
    if (v->weight_decay > 0) run.optim.weight_decay = v->weight_decay;
    run.grad_sync = v->grad_sync;
    run.bucket_mb = 0.001;
    run.first_bucket_mb = 0.0005;
    run.max_steps = steps;
    run.optimizer_shard = shard;
    run.histogram_every = 2;
    run.ckpt_every = 4;
    run.ckpt_keep = 2;
    ars_layer_spec specs[8];
    int count;
    make_specs(specs, &count, v->tiny);
    ars_train_options options = {.quiet = 1, .export_params = 1, .ckpt_dir = ckpt_dir, .resume_path = resume,
                                 .config_text = "[run]\n"};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, dist, &options, &result));
    assert_non_null(result.params);
    return result;
}

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", base_dir, name);
}

static double relative_diff(double a, double b)
{
    return fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), 1e-30);
}

/* The histories of two runs (rank 0's checkpoints): the same records,
 * losses and global norms to rounding, the per-layer gradient norms and
 * update ratios too; the histograms' counts equal when exact. */
static void compare_histories(const char *a_dir, const char *b_dir, int exact_histograms, double tolerance)
{
    char a[420], b[420];
    snprintf(a, sizeof a, "%s/latest.h5", a_dir);
    snprintf(b, sizeof b, "%s/latest.h5", b_dir);
    ars_history ha, hb;
    ARS_ASSERT_OK(ars_ckpt_read_history(a, &ha));
    ARS_ASSERT_OK(ars_ckpt_read_history(b, &hb));
    assert_int_equal(ha.count, hb.count);
    assert_int_equal(ha.layer_count, hb.layer_count);
    assert_true(ha.count > 0);
    double worst = 0;
    for (size_t t = 0; t < ha.count; t++) {
        assert_int_equal(ha.steps[t].step, hb.steps[t].step);
        worst = fmax(worst, relative_diff(ha.steps[t].loss, hb.steps[t].loss));
        worst = fmax(worst, relative_diff(ha.steps[t].grad_norm, hb.steps[t].grad_norm));
        const double *ra = ars_history_layer_values(&ha, t), *rb = ars_history_layer_values(&hb, t);
        const int layers = ha.layer_count;
        for (int l = 0; l < layers; l++) {
            worst = fmax(worst, relative_diff(ra[ARS_HIST_GRAD_NORM * layers + l], rb[ARS_HIST_GRAD_NORM * layers + l]));
            worst = fmax(worst, relative_diff(ra[ARS_HIST_WEIGHT_NORM * layers + l],
                                              rb[ARS_HIST_WEIGHT_NORM * layers + l]));
            worst = fmax(worst, relative_diff(ra[ARS_HIST_UPDATE_RATIO * layers + l],
                                              rb[ARS_HIST_UPDATE_RATIO * layers + l]));
        }
        /* a layer with parameters has a gradient norm recorded */
        assert_true(ra[ARS_HIST_GRAD_NORM * layers + 0] > 0);
        assert_true(rb[ARS_HIST_UPDATE_RATIO * layers + 0] > 0);
    }
    assert_int_equal(ha.hist_count, hb.hist_count);
    assert_true(ha.hist_count > 0);
    const size_t cells = ha.hist_count * (size_t)ha.layer_count * (size_t)ha.bins;
    size_t total = 0, differing = 0;
    for (size_t i = 0; i < cells; i++) {
        total += ha.hist_counts[i];
        differing += ha.hist_counts[i] != hb.hist_counts[i];
    }
    printf("  history: %zu records, worst relative difference %.3g; histograms %zu values, %zu cells differ\n",
           ha.count, worst, total, differing);
    assert_true(worst < tolerance);
    if (exact_histograms) assert_int_equal(differing, 0);
    ars_history_free(&ha);
    ars_history_free(&hb);
}

static void check_variant(const variant *v)
{
    char off_dir[400], on_dir[400];
    path_in(off_dir, sizeof off_dir, "off");
    path_in(on_dir, sizeof on_dir, "on");
    const int global = ARS_TEST_LOCAL_BATCH * world.size;
    ars_train_result off = train(v, &world, global, 0, ARS_TEST_STEPS, off_dir, NULL);
    ars_train_result on = train(v, &world, global, 1, ARS_TEST_STEPS, on_dir, NULL);
    assert_int_equal(off.param_count, on.param_count);
    double diff = ars_test_max_abs_diff(off.params, on.params, off.param_count);
    double state_diff = ars_test_max_abs_diff(off.state, on.state, off.state_count);
    if (world.rank == 0) {
        printf("%s, gradient_sync %s, ranks %d: %zu parameters, sharded vs not: max |param difference| %.3g, "
               "state %.3g; last grad norm %.3g vs %.3g\n", v->label, ars_grad_sync_name(v->grad_sync), world.size,
               on.param_count, diff, state_diff, off.last_grad_norm, on.last_grad_norm);
        /* one rank, or the shared-memory slices: the same sums, the same bits */
        const int exact = world.size == 1 || v->grad_sync == ARS_SYNC_SHARED;
        compare_histories(off_dir, on_dir, exact, 1e-4);
    }
    if (!v->tiny) assert_true(on.last_grad_norm > 2 * ARS_TEST_CLIP_NORM);   /* clipping was active */
    assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
    assert_true(state_diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
    ars_test_result_free(&off);
    ars_test_result_free(&on);
    MPI_Barrier(MPI_COMM_WORLD);
    if (world.rank == 0) {
        ars_test_remove_tree(off_dir);
        ars_test_remove_tree(on_dir);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_sharded_equals_unsharded(void **state)
{
    const variant variants[] = {
        {"Adam", ARS_OPT_ADAM, 0, 0, 0, ARS_SYNC_SHARED, 0},
        {"Adam", ARS_OPT_ADAM, 0, 0, 0, ARS_SYNC_ALLREDUCE, 0},
        {"Adam", ARS_OPT_ADAM, 0, 0, 0, ARS_SYNC_OVERLAP, 0},
        {"AdamW", ARS_OPT_ADAMW, 0, 0.05f, 0, ARS_SYNC_SHARED, 0},
        {"AdamW", ARS_OPT_ADAMW, 0, 0.05f, 0, ARS_SYNC_ALLREDUCE, 0},
        {"SGD momentum, weight decay", ARS_OPT_SGD, 0.9f, 1e-3f, 0, ARS_SYNC_SHARED, 0},
        {"SGD Nesterov, weight decay", ARS_OPT_SGD, 0.9f, 1e-3f, 1, ARS_SYNC_ALLREDUCE, 0},
        {"Adam, 9 parameters", ARS_OPT_ADAM, 0, 0, 0, ARS_SYNC_SHARED, 1},
        {"SGD momentum, 9 parameters", ARS_OPT_SGD, 0.9f, 0, 0, ARS_SYNC_ALLREDUCE, 1},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) check_variant(&variants[i]);
}

/* The slices cover the buffer in rank order, in whole cache lines, and
 * the optimizer state of each rank is its slice's alone. */
static void test_slices_partition_the_parameters(void **state)
{
    const size_t counts[] = {0, 1, 9, 16, 17, 290, 1000003};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (int ranks = 1; ranks <= 5; ranks++) {
            size_t next = 0, largest = 0;
            for (int r = 0; r < ranks; r++) {
                size_t lo, hi;
                ars_dist_slice(counts[c], ranks, r, &lo, &hi);
                assert_int_equal(lo, next);
                assert_true(hi >= lo);
                assert_true(lo % 16 == 0 || lo == counts[c]);
                largest = hi - lo > largest ? hi - lo : largest;
                next = hi;
            }
            assert_int_equal(next, counts[c]);
            /* no rank holds more than its share rounded up to a cache line */
            assert_true(largest <= ((counts[c] + 15) / 16 + (size_t)ranks - 1) / (size_t)ranks * 16);
        }
}

static void free_result(ars_train_result *r) { ars_test_result_free(r); }

/* Sharded k steps + resume sharded k steps = 2k sharded steps, bit for bit
 * on the same world size; histories identical. */
static void test_sharded_resume_is_bit_exact(void **state)
{
    const variant adam = {"Adam", ARS_OPT_ADAM, 0, 0, 0, ARS_SYNC_SHARED, 0};
    const int k = ARS_TEST_STEPS / 2, global = ARS_TEST_LOCAL_BATCH * world.size;
    char straight[400], split[400], latest[420];
    path_in(straight, sizeof straight, "straight");
    path_in(split, sizeof split, "split");
    ars_train_result full = train(&adam, &world, global, 1, 2 * k, straight, NULL);
    ars_train_result half = train(&adam, &world, global, 1, k, split, NULL);
    snprintf(latest, sizeof latest, "%s/latest.h5", split);
    ars_train_result resumed = train(&adam, &world, global, 1, 2 * k, split, latest);
    assert_int_equal(resumed.steps, 2 * k);
    assert_memory_equal(full.params, resumed.params, sizeof(float) * full.param_count);
    assert_memory_equal(full.state, resumed.state, sizeof(float) * full.state_count);
    if (world.rank == 0) {
        printf("ranks %d: sharded %d + %d steps bit-identical to %d\n", world.size, k, k, 2 * k);
        compare_histories(straight, split, 1, 1e-300);
    }
    free_result(&full);
    free_result(&half);
    free_result(&resumed);
}

/* A checkpoint written sharded by N ranks resumes unsharded on N ranks and
 * on one; one written unsharded resumes sharded; one written sharded by N
 * ranks resumes sharded on N - 1 (other slices). Each equals the straight
 * run to rounding (the global batch is kept). */
static void test_resume_across_shard_and_world_size(void **state)
{
    const variant v = {"AdamW", ARS_OPT_ADAMW, 0, 0.05f, 0, ARS_SYNC_ALLREDUCE, 0};
    const int k = ARS_TEST_STEPS / 2, global = ARS_TEST_LOCAL_BATCH * world.size;
    char straight[400], sharded[400], plain[400], latest[420], dir[420];
    path_in(straight, sizeof straight, "straight2");
    path_in(sharded, sizeof sharded, "sharded");
    path_in(plain, sizeof plain, "plain");
    ars_train_result full = train(&v, &world, global, 0, 2 * k, straight, NULL);
    ars_train_result half_sharded = train(&v, &world, global, 1, k, sharded, NULL);
    ars_train_result half_plain = train(&v, &world, global, 0, k, plain, NULL);
    const struct {
        const char *what;
        const char *from;
        int shard;
    } cases[] = {{"sharded -> unsharded", sharded, 0}, {"unsharded -> sharded", plain, 1}};
    for (int c = 0; c < 2; c++) {
        snprintf(latest, sizeof latest, "%s/latest.h5", cases[c].from);
        snprintf(dir, sizeof dir, "%s/resumed%d", base_dir, c);
        ars_train_result resumed = train(&v, &world, global, cases[c].shard, 2 * k, dir, latest);
        double diff = ars_test_max_abs_diff(full.params, resumed.params, full.param_count);
        if (world.rank == 0) printf("ranks %d, %s: max |param difference| %.3g\n", world.size, cases[c].what, diff);
        assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
        free_result(&resumed);
    }
    snprintf(latest, sizeof latest, "%s/latest.h5", sharded);
    if (world.size > 1 && world.rank == 0) {   /* the sharded checkpoint on one process */
        snprintf(dir, sizeof dir, "%s/alone", base_dir);
        ars_train_result resumed = train(&v, NULL, global, 1, 2 * k, dir, latest);
        double diff = ars_test_max_abs_diff(full.params, resumed.params, full.param_count);
        printf("ranks %d -> 1, sharded checkpoint: max |param difference| %.3g\n", world.size, diff);
        assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
        free_result(&resumed);
    }
    if (world.size > 2) {   /* sharded on N ranks -> sharded on N - 1: every slice boundary moves */
        MPI_Comm fewer;
        MPI_Comm_split(MPI_COMM_WORLD, world.rank < world.size - 1 ? 0 : MPI_UNDEFINED, world.rank, &fewer);
        if (fewer != MPI_COMM_NULL) {
            ars_dist sub;
            ARS_ASSERT_OK(ars_dist_create(&sub, fewer));
            snprintf(dir, sizeof dir, "%s/fewer", base_dir);
            ars_train_result resumed = train(&v, &sub, global, 1, 2 * k, dir, latest);
            double diff = ars_test_max_abs_diff(full.params, resumed.params, full.param_count);
            if (sub.rank == 0)
                printf("ranks %d -> %d, sharded both: max |param difference| %.3g\n", world.size, sub.size, diff);
            assert_true(diff < ARS_TEST_EQUIVALENCE_TOLERANCE);
            free_result(&resumed);
            ars_dist_destroy(&sub);
            MPI_Comm_free(&fewer);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    free_result(&full);
    free_result(&half_sharded);
    free_result(&half_plain);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slices_partition_the_parameters),
        cmocka_unit_test(test_sharded_equals_unsharded),
        cmocka_unit_test(test_sharded_resume_is_bit_exact),
        cmocka_unit_test(test_resume_across_shard_and_world_size),
    };
    return ars_test_mpi_main_in_tempdir(&argc, &argv, &world, "shard", base_dir, sizeof base_dir, tests,
                                        sizeof tests / sizeof tests[0]);
}
