/* mpi_gemm_tuning: the matrix products' layouts (src/gemm.h) through the
 * trainer. Rank 0's choice is the one every rank computes with (the other
 * ranks start with a table of different layouts, which the shared choice
 * must replace), and replicas stay bit-identical; the checkpoint records
 * the choice (/model gemm_tuning) and a resume computes with it, bit for
 * bit, whatever the resuming process holds; a checkpoint without the
 * attribute resumes as asked; run.gemm_tuning = off computes as asked
 * whatever the table holds and records nothing. The layouts forced here
 * (4-7: C^T computed and transposed back) round differently from as asked
 * on OpenBLAS, which the test checks, so that the equalities could fail.
 * Run under mpiexec -n 1, 2 and 3. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "../src/gemm.h"
#include "arsenal/ckpt.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/model.h"
#include "arsenal/train.h"

enum { K = 6, LOCAL_BATCH = 6, MAX_SPECS = 8 };

static ars_dist world;
static char base_dir[256];

static void make_specs(ars_layer_spec *specs, int *count)
{
    int n = 0;
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 24;
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n++], "batchnorm");
    ars_layer_spec_defaults(&specs[n++], "relu");
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 20;
    strcpy(specs[n++].init, "he_normal");
    ars_layer_spec_defaults(&specs[n++], "tanh");
    ars_layer_spec_defaults(&specs[n], "dense");
    specs[n].units = 4;
    strcpy(specs[n++].init, "xavier_uniform");
    *count = n;
}

static ars_train_result train(int tuning, int64_t steps, const char *ckpt_dir, const char *resume)
{
    ars_run_config run;
    memset(&run, 0, sizeof run);
    strcpy(run.data, "blobs");
    run.train_samples = 96;
    run.test_samples = 24;
    run.standardize = 1;
    run.max_steps = steps;
    run.batch = LOCAL_BATCH * world.size;
    run.batch_is_global = 1;
    run.seed = 3;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&run.optim, ARS_OPT_ADAM);
    run.optim.lr = 1e-2f;
    run.grad_sync = ARS_SYNC_ALLREDUCE;
    run.log_every = 1000;
    run.probe_every = 1000;
    run.ckpt_every = K;
    run.ckpt_keep = 2;
    run.gemm_tuning = tuning;
    ars_layer_spec specs[MAX_SPECS];
    int count;
    make_specs(specs, &count);
    ars_train_options options = {.quiet = 1, .export_params = 1, .ckpt_dir = ckpt_dir, .resume_path = resume,
                                 .config_text = "[run]\n"};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, &world, &options, &result));
    return result;
}

/* The products one training step of the model makes on this rank (its
 * local batch), layouts as the table holds them. */
static ars_gemm_choice *products(int *count)
{
    ars_layer_spec specs[MAX_SPECS];
    int n;
    make_specs(specs, &n);
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, n, ars_shape_vector(16), LOCAL_BATCH));
    ARS_ASSERT_OK(ars_model_tune_gemm(&model, 0));   /* records, measures nothing */
    ars_gemm_choice *plan = model.gemm_plan;
    *count = model.gemm_plan_count;
    model.gemm_plan = NULL;
    ars_model_destroy(&model);
    assert_true(*count >= 5);
    return plan;
}

/* The table holds layout for every product of the model (and no other). */
static void force(int layout)
{
    ars_gemm_reset();
    int count;
    ars_gemm_choice *plan = products(&count);
    for (int i = 0; i < count; i++) plan[i].layout = layout;
    ARS_ASSERT_OK(ars_gemm_install(plan, count));
    free(plan);
}

/* Every product of the model runs in layout on this rank. */
static void expect_table(int layout)
{
    int count;
    ars_gemm_choice *plan = products(&count);
    for (int i = 0; i < count; i++)
        if (plan[i].layout != layout)
            fail_msg("rank %d: product %d (%dx%dx%d) in layout %d, expected %d", world.rank, i, (int)plan[i].m,
                     (int)plan[i].n, (int)plan[i].k, (int)plan[i].layout, layout);
    free(plan);
}

/* The layouts of /model gemm_tuning, -1 for each when the attribute is absent. */
static int checkpoint_layouts(const char *path, int *layouts, int max)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    int n = 0;
    if (H5Aexists_by_name(file, "/model", "gemm_tuning", H5P_DEFAULT) > 0) {
        hid_t attr = H5Aopen_by_name(file, "/model", "gemm_tuning", H5P_DEFAULT, H5P_DEFAULT);
        hid_t space = H5Aget_space(attr);
        hsize_t dims[2];
        assert_int_equal(H5Sget_simple_extent_dims(space, dims, NULL), 2);
        assert_int_equal(dims[1], ARS_GEMM_CHOICE_FIELDS);
        assert_true(dims[0] <= (hsize_t)max);
        int32_t *rows = malloc(sizeof(int32_t) * dims[0] * dims[1]);
        assert_true(H5Aread(attr, H5T_NATIVE_INT32, rows) >= 0);
        n = (int)dims[0];
        for (int i = 0; i < n; i++) layouts[i] = rows[i * ARS_GEMM_CHOICE_FIELDS + ARS_GEMM_CHOICE_FIELDS - 1];
        free(rows);
        H5Sclose(space);
        H5Aclose(attr);
    } else {
        for (int i = 0; i < max; i++) layouts[i] = -1;
    }
    H5Fclose(file);
    return n;
}

/* Every rank holds rank 0's parameters, bit for bit. */
static void expect_replicas_equal(const ars_train_result *r)
{
    float *root = malloc(sizeof(float) * r->param_count);
    memcpy(root, r->params, sizeof(float) * r->param_count);
    MPI_Bcast(root, (int)r->param_count, MPI_FLOAT, 0, MPI_COMM_WORLD);
    assert_memory_equal(root, r->params, sizeof(float) * r->param_count);
    free(root);
}

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", base_dir, name);
}

static int same_params(const ars_train_result *a, const ars_train_result *b)
{
    return a->param_count == b->param_count && memcmp(a->params, b->params, sizeof(float) * a->param_count) == 0;
}

static void test_rank0_choice_everywhere(void **state)
{
    (void)state;
    char dir[400], latest[420];
    path_in(dir, sizeof dir, "shared");
    /* rank 0 finds layout 5 cached (and measures nothing); the others hold 6 */
    force(world.rank == 0 ? 5 : 6);
    ars_train_result r = train(1, K, dir, NULL);
    expect_table(5);
    expect_replicas_equal(&r);
    if (world.rank == 0) {
        int layouts[64];
        snprintf(latest, sizeof latest, "%s/latest.h5", dir);
        const int n = checkpoint_layouts(latest, layouts, 64);
        assert_true(n >= 5);
        for (int i = 0; i < n; i++) assert_int_equal(layouts[i], 5);
        printf("ranks %d: every rank computes with rank 0's layouts; %d products recorded\n", world.size, n);
    }
    ars_test_result_free(&r);
    ars_gemm_reset();
}

static void test_resume_keeps_the_recorded_choice(void **state)
{
    (void)state;
    char straight[400], split[400], latest[420], stripped[420], asked[400];
    path_in(straight, sizeof straight, "straight");
    path_in(split, sizeof split, "split");
    path_in(asked, sizeof asked, "asked");
    force(5);
    ars_train_result full = train(1, 2 * K, straight, NULL);
    ars_train_result half = train(1, K, split, NULL);
    snprintf(latest, sizeof latest, "%s/latest.h5", split);
    /* a copy of the checkpoint without its gemm_tuning, resumed below */
    snprintf(stripped, sizeof stripped, "%s/stripped.h5", base_dir);
    if (world.rank == 0) {
        FILE *in = fopen(latest, "rb"), *out = fopen(stripped, "wb");
        assert_non_null(in);
        assert_non_null(out);
        char buffer[1 << 16];
        for (size_t got; (got = fread(buffer, 1, sizeof buffer, in)) > 0;) assert_int_equal(fwrite(buffer, 1, got, out), got);
        fclose(in);
        fclose(out);
        hid_t file = H5Fopen(stripped, H5F_ACC_RDWR, H5P_DEFAULT);
        assert_true(file >= 0);
        assert_true(H5Adelete_by_name(file, "/model", "gemm_tuning", H5P_DEFAULT) >= 0);
        H5Fclose(file);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    /* the control: as asked, the run rounds differently */
    force(ARS_GEMM_AS_ASKED);
    ars_train_result plain = train(1, 2 * K, asked, NULL);
    assert_false(same_params(&full, &plain));
    /* the resuming process holds as asked: the checkpoint's layout 5 must win */
    ars_train_result resumed = train(1, 2 * K, split, latest);
    assert_int_equal(resumed.steps, 2 * K);
    assert_true(same_params(&full, &resumed));
    assert_memory_equal(full.state, resumed.state, sizeof(float) * full.state_count);
    expect_table(5);
    /* without the attribute: resumed as asked */
    force(5);
    char again[400];
    path_in(again, sizeof again, "again");
    ars_train_result from_stripped = train(1, 2 * K, again, stripped);
    expect_table(ARS_GEMM_AS_ASKED);
    assert_false(same_params(&full, &from_stripped));
    if (world.rank == 0)
        printf("ranks %d: resume with the recorded layouts bit-identical after %d + %d steps; without them, as "
               "asked\n", world.size, K, K);
    ars_test_result_free(&full);
    ars_test_result_free(&half);
    ars_test_result_free(&plain);
    ars_test_result_free(&resumed);
    ars_test_result_free(&from_stripped);
    ars_gemm_reset();
}

static void test_off_is_as_asked(void **state)
{
    (void)state;
    char dir[400], latest[420];
    path_in(dir, sizeof dir, "off");
    force(ARS_GEMM_AS_ASKED);
    ars_train_result asked = train(1, K, NULL, NULL);
    force(5);   /* off ignores what the table holds */
    ars_train_result off = train(0, K, dir, NULL);
    assert_false(ars_gemm_enabled());
    assert_true(same_params(&asked, &off));
    expect_replicas_equal(&off);
    if (world.rank == 0) {
        int layouts[4];
        snprintf(latest, sizeof latest, "%s/latest.h5", dir);
        assert_int_equal(checkpoint_layouts(latest, layouts, 4), 0);   /* nothing recorded */
    }
    ars_gemm_set_enabled(true);
    ars_test_result_free(&asked);
    ars_test_result_free(&off);
    ars_gemm_reset();
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) MPI_Abort(MPI_COMM_WORLD, 1);
    if (world.rank == 0) ars_test_tempdir(base_dir, sizeof base_dir, "gemm");
    MPI_Bcast(base_dir, sizeof base_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank0_choice_everywhere),
        cmocka_unit_test(test_resume_keeps_the_recorded_choice),
        cmocka_unit_test(test_off_is_as_asked),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (world.rank == 0) ars_test_remove_tree(base_dir);
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 0;
}
