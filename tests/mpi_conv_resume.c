/* mpi_conv_resume: exact resume of convolutional models. K steps, a
 * checkpoint, a resume and M more steps end bit for bit where K + M steps
 * in one run do (exported parameters and running statistics, and every
 * dataset of the last checkpoints' /model, /optimizer and /grad, read with
 * the HDF5 API), for a small CNN with synchronized batchnorm2d, Adam, a
 * cosine schedule, active clipping and augmentation, resuming mid-epoch
 * before an epoch's partial last batch. The convolution layouts recorded in
 * the checkpoint (each layer's `tuning` attribute) are the ones a resumed
 * run computes with: a checkpoint written with `layout = batched` (or
 * per_sample) resumed from a run file without the key continues exactly as
 * that layout does and records it again; a ResNet (basic blocks, the
 * projection shortcut) whose layouts were measured resumes from its own
 * checkpoint bit for bit even when the resuming run file asks for the other
 * layouts. On the first 90 training images of Fashion-MNIST
 * (fmnist_subset.h; skipped without it). Run under mpiexec -n 1, 2 and 3
 * (tests/CMakeLists.txt). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/ckpt.h"
#include "arsenal/data.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"
#include "fmnist_subset.h"

/* 90 samples, global batch 12: 8 steps an epoch, the last of 6 rows (6 + 0
 * on 2 ranks, 4 + 2 + 0 on 3). The resume at step K = 6 is mid-epoch; the
 * epoch ends at step 8, inside the M = 5 steps after it. */
enum { K = 6, M = 5, GLOBAL_BATCH = 12, TRAIN_SAMPLES = 90, TEST_SAMPLES = 30, MAX_LAYERS = 64 };

static ars_dist world;
static char base_dir[256];
static char data_dir[256];   /* the first TRAIN_SAMPLES / TEST_SAMPLES images (fmnist_subset.h) */
static int have_data;

/* %s, %s: the two conv2d sections' layout line ("" = measured). */
static const char cnn_format[] =
    "[run]\ndata = fashion-mnist\n"
    "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\nbias = false\n%s"
    "[batchnorm2d]\n[relu]\n"
    "[maxpool2d]\nkernel = 2\n"
    "[conv2d]\nchannels = 6\nkernel = 3\nstride = 2\npadding = 1\n%s[relu]\n"
    "[global_avgpool]\n"
    "[dense]\nunits = 10\n";

static const char resnet_text[] =
    "[run]\ndata = fashion-mnist\n"
    "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\nbias = false\n"
    "[batchnorm2d]\n[relu]\n"
    "[basic_block]\nchannels = 4\n"
    "[basic_block]\nchannels = 6\nstride = 2\n"
    "[global_avgpool]\n"
    "[dense]\nunits = 10\n";

/* The CNN's run file with layout (NULL: no layout key). */
static void cnn_text(char *out, size_t size, const char *layout)
{
    char line[40] = "";
    if (layout) snprintf(line, sizeof line, "layout = %s\n", layout);
    snprintf(out, size, cnn_format, line, line);
}

static void path_in(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", base_dir, name);
}

static ars_train_result train_specs(const ars_layer_spec *specs, int count, int64_t steps, const char *ckpt_dir,
                                    const char *resume)
{
    ars_run_config run;
    memset(&run, 0, sizeof run);
    strcpy(run.data, "fashion-mnist");
    snprintf(run.data_dir, sizeof run.data_dir, "%s", data_dir);
    run.train_limit = TRAIN_SAMPLES;
    run.test_limit = TEST_SAMPLES;
    run.standardize = 1;
    run.augment_crop = 2;
    run.augment_flip = 1;
    run.max_steps = steps;
    run.batch = GLOBAL_BATCH;
    run.batch_is_global = 1;
    run.seed = 21;
    run.loss = ARS_LOSS_CROSS_ENTROPY;
    ars_optim_config_defaults(&run.optim, ARS_OPT_ADAM);
    run.optim.lr = 3e-3f;
    run.schedule.kind = ARS_SCHED_COSINE;
    run.schedule.total_steps = K + M;   /* the same schedule for the K-step run */
    run.clip_norm = 0.05f;
    run.grad_sync = ARS_SYNC_OVERLAP;
    run.bucket_mb = 0.002;
    run.first_bucket_mb = 0.001;
    run.check_every = 3;
    run.log_every = 1000;
    run.probe_every = 2;
    run.histogram_every = 4;
    run.histogram_bins = 8;
    run.ckpt_every = 3;
    run.ckpt_keep = 10;   /* all of them: the step-K checkpoint of a K + M run is resumed below */
    ars_train_options options = {.quiet = 1, .export_params = 1, .ckpt_dir = ckpt_dir, .resume_path = resume,
                                 .config_text = "[run]\n"};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, &world, &options, &result));
    assert_int_equal(result.steps, steps);
    assert_true(result.last_grad_norm > 2 * run.clip_norm);   /* clipping was active */
    return result;
}

static ars_train_result train(const char *text, int64_t steps, const char *ckpt_dir, const char *resume)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    ars_train_result result = train_specs(specs, count, steps, ckpt_dir, resume);
    free(specs);
    return result;
}

static void assert_same_result(const ars_train_result *a, const ars_train_result *b)
{
    assert_int_equal(a->param_count, b->param_count);
    assert_int_equal(a->state_count, b->state_count);
    assert_memory_equal(a->params, b->params, sizeof(float) * a->param_count);
    assert_memory_equal(a->state, b->state, sizeof(float) * a->state_count);
    assert_memory_equal(&a->last_loss, &b->last_loss, sizeof(double));
}

/* ---- reading checkpoints with the HDF5 API -------------------------------- */

/* The layer names of a checkpoint (its /model groups), in order. */
static int layer_names(const char *path, char names[][40])
{
    ars_ckpt_info info;
    ARS_ASSERT_OK(ars_ckpt_read_info(path, &info));
    assert_true(info.layer_count <= MAX_LAYERS);
    int count = info.layer_count;
    memcpy(names, info.layer_names, sizeof(char[40]) * (size_t)count);
    ars_ckpt_info_free(&info);
    return count;
}

/* Every dataset of group path in a equals (dims, float32 bits) the one of
 * the same name in b, and b holds no other; the number compared. */
static int compare_group(hid_t a, hid_t b, const char *path)
{
    const int in_a = H5Lexists(a, path, H5P_DEFAULT) > 0, in_b = H5Lexists(b, path, H5P_DEFAULT) > 0;
    if (in_a != in_b) fail_msg("%s is in one checkpoint only", path);
    if (!in_a) return 0;
    H5G_info_t info_a, info_b;
    assert_true(H5Gget_info_by_name(a, path, &info_a, H5P_DEFAULT) >= 0);
    assert_true(H5Gget_info_by_name(b, path, &info_b, H5P_DEFAULT) >= 0);
    assert_int_equal(info_a.nlinks, info_b.nlinks);
    for (hsize_t i = 0; i < info_a.nlinks; i++) {
        char name[64], full[200];
        assert_true(H5Lget_name_by_idx(a, path, H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT) > 0);
        snprintf(full, sizeof full, "%s/%s", path, name);
        hid_t sets[2] = {H5Dopen2(a, full, H5P_DEFAULT), H5Dopen2(b, full, H5P_DEFAULT)};
        if (sets[0] < 0 || sets[1] < 0) fail_msg("%s: not a dataset of both checkpoints", full);
        hsize_t dims[2][4];
        float *values[2];
        size_t n = 1;
        for (int k = 0; k < 2; k++) {
            hid_t space = H5Dget_space(sets[k]), type = H5Dget_type(sets[k]);
            assert_true(H5Tequal(type, H5T_IEEE_F32LE) > 0);
            int rank = H5Sget_simple_extent_ndims(space);
            assert_true(rank >= 1 && rank <= 4);
            memset(dims[k], 0, sizeof dims[k]);
            H5Sget_simple_extent_dims(space, dims[k], NULL);
            n = (size_t)H5Sget_simple_extent_npoints(space);
            values[k] = malloc(sizeof(float) * (n + 1));
            assert_non_null(values[k]);
            assert_true(H5Dread(sets[k], H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values[k]) >= 0);
            H5Tclose(type);
            H5Sclose(space);
            H5Dclose(sets[k]);
        }
        assert_memory_equal(dims[0], dims[1], sizeof dims[0]);
        if (memcmp(values[0], values[1], sizeof(float) * n) != 0) fail_msg("%s differs between the checkpoints", full);
        free(values[0]);
        free(values[1]);
    }
    return (int)info_a.nlinks;
}

static int64_t read_int64_attr(hid_t file, const char *object, const char *name)
{
    int64_t value = -1;
    hid_t attr = H5Aopen_by_name(file, object, name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Aread(attr, H5T_NATIVE_INT64, &value) >= 0);
    H5Aclose(attr);
    return value;
}

/* The `tuning` attribute of /model/<layer>, 0 when absent. */
static int read_tuning(hid_t file, const char *layer)
{
    char path[80];
    snprintf(path, sizeof path, "/model/%s", layer);
    if (H5Aexists_by_name(file, path, "tuning", H5P_DEFAULT) <= 0) return 0;
    int32_t tuning = 0;
    hid_t attr = H5Aopen_by_name(file, path, "tuning", H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Aread(attr, H5T_NATIVE_INT32, &tuning) >= 0);
    H5Aclose(attr);
    return tuning;
}

/* Every layer's tuning in the checkpoint at path (0: none); the count. */
static int read_tunings(const char *path, int tunings[MAX_LAYERS])
{
    char names[MAX_LAYERS][40];
    int count = layer_names(path, names);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    for (int l = 0; l < count; l++) tunings[l] = read_tuning(file, names[l]);
    H5Fclose(file);
    return count;
}

/* Rank 0: the checkpoints a and b hold bit-identical /model, /optimizer
 * and /grad tensors, tunings and optimizer steps, and the same losses in
 * their histories. */
static void compare_checkpoints(const char *a, const char *b)
{
    if (world.rank != 0) return;
    char names[MAX_LAYERS][40], other[MAX_LAYERS][40];
    int count = layer_names(a, names);
    assert_int_equal(layer_names(b, other), count);
    assert_memory_equal(names, other, sizeof(char[40]) * (size_t)count);
    hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT), fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fa >= 0);
    assert_true(fb >= 0);
    static const char *const roots[] = {"/model", "/optimizer/m", "/optimizer/v", "/grad"};
    int datasets = 0;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < count; l++) {
            char path[120];
            snprintf(path, sizeof path, "%s/%.39s", roots[r], names[l]);
            datasets += compare_group(fa, fb, path);
        }
    for (int l = 0; l < count; l++) assert_int_equal(read_tuning(fa, names[l]), read_tuning(fb, names[l]));
    assert_int_equal(read_int64_attr(fa, "/optimizer", "step"), read_int64_attr(fb, "/optimizer", "step"));
    assert_int_equal(read_int64_attr(fa, "/", "step"), K + M);
    assert_int_equal(read_int64_attr(fb, "/", "step"), K + M);
    H5Fclose(fa);
    H5Fclose(fb);
    ars_history ha, hb;
    ARS_ASSERT_OK(ars_ckpt_read_history(a, &ha));
    ARS_ASSERT_OK(ars_ckpt_read_history(b, &hb));
    assert_int_equal(ha.count, hb.count);
    for (size_t t = 0; t < ha.count; t++) {
        assert_int_equal(ha.steps[t].step, hb.steps[t].step);
        assert_memory_equal(&ha.steps[t].loss, &hb.steps[t].loss, sizeof(double));
        assert_memory_equal(&ha.steps[t].grad_norm, &hb.steps[t].grad_norm, sizeof(double));
    }
    printf("ranks %d: %d datasets of /model, /optimizer and /grad bit-identical after %d + %d steps, "
           "%zu history records\n", world.size, datasets, K, M, ha.count);
    ars_history_free(&ha);
    ars_history_free(&hb);
}

static void free_result(ars_train_result *r)
{
    ars_test_result_free(r);
}

/* ---- the tests ------------------------------------------------------------ */

static void test_resume_is_bit_exact(void **state)
{
    if (!have_data) skip();
    char text[1024], straight[400], split[400], latest[2][420];
    cnn_text(text, sizeof text, "per_sample");
    path_in(straight, sizeof straight, "straight");
    path_in(split, sizeof split, "split");
    ars_train_result full = train(text, K + M, straight, NULL);
    ars_train_result half = train(text, K, split, NULL);
    snprintf(latest[1], sizeof latest[1], "%s/latest.h5", split);
    ars_train_result resumed = train(text, K + M, split, latest[1]);
    assert_same_result(&full, &resumed);
    snprintf(latest[0], sizeof latest[0], "%s/latest.h5", straight);
    compare_checkpoints(latest[0], latest[1]);
    free_result(&full);
    free_result(&half);
    free_result(&resumed);
}

/* A checkpoint written with `layout = <written>` on every [conv2d],
 * resumed with a run file without the key: the resumed run computes as
 * <written> does (bit-identical to K + M steps with the key) and its
 * checkpoint records <written> again. Both layouts, so that one of them
 * is not what this machine measures. */
static void check_resume_keeps_layout(const char *written, int tuning)
{
    char with_key[1024], without_key[1024], straight[400], split[400], latest[420], first[420], name[64];
    cnn_text(with_key, sizeof with_key, written);
    cnn_text(without_key, sizeof without_key, NULL);
    snprintf(name, sizeof name, "layout-%s-straight", written);
    path_in(straight, sizeof straight, name);
    snprintf(name, sizeof name, "layout-%s-split", written);
    path_in(split, sizeof split, name);
    ars_train_result full = train(with_key, K + M, straight, NULL);
    ars_train_result half = train(with_key, K, split, NULL);
    snprintf(first, sizeof first, "%s/ckpt-%08d.h5", split, K);
    ars_train_result resumed = train(without_key, K + M, split, first);
    assert_same_result(&full, &resumed);
    snprintf(latest, sizeof latest, "%s/latest.h5", split);
    if (world.rank == 0) {
        int tunings[2][MAX_LAYERS], convs = 0;
        char names[MAX_LAYERS][40];
        const int count = read_tunings(first, tunings[0]);
        assert_int_equal(read_tunings(latest, tunings[1]), count);
        layer_names(first, names);
        for (int l = 0; l < count; l++) {
            const int conv = strstr(names[l], "_conv2d") != NULL;
            convs += conv;
            assert_int_equal(tunings[0][l], conv ? tuning : 0);   /* written, */
            assert_int_equal(tunings[1][l], conv ? tuning : 0);   /* and kept by the resumed run */
        }
        assert_int_equal(convs, 2);
        printf("ranks %d: layout = %s recorded at step %d, kept by the resumed run without the key\n", world.size,
               written, K);
    }
    char straight_latest[420];
    snprintf(straight_latest, sizeof straight_latest, "%s/latest.h5", straight);
    compare_checkpoints(straight_latest, latest);
    free_result(&full);
    free_result(&half);
    free_result(&resumed);
}

static void test_resume_keeps_the_recorded_layout(void **state)
{
    if (!have_data) skip();
    check_resume_keeps_layout("batched", 2);
    check_resume_keeps_layout("per_sample", 1);
}

/* A ResNet with measured layouts (the basic blocks' conv2d layers and the
 * projection shortcut's convolution) trained K + M steps; its step-K
 * checkpoint resumed by a run file fixing every conv2d to the layout it
 * did not record must end bit for bit where the run did. The shortcut's
 * convolution is measured again by the resuming run (no run-file key
 * reaches it) and then set from the checkpoint. */
static void test_resnet_resumes_its_measured_layouts(void **state)
{
    if (!have_data) skip();
    char dir[400], first[420], latest[420];
    path_in(dir, sizeof dir, "resnet");
    ars_train_result full = train(resnet_text, K + M, dir, NULL);
    snprintf(first, sizeof first, "%s/ckpt-%08d.h5", dir, K);
    int tunings[MAX_LAYERS] = {0}, count = 0;
    if (world.rank == 0) count = read_tunings(first, tunings);
    MPI_Bcast(&count, 1, MPI_INT, 0, world.comm);
    MPI_Bcast(tunings, MAX_LAYERS, MPI_INT, 0, world.comm);
    int specs_count;
    ars_layer_spec *specs = ars_test_load_specs(resnet_text, &specs_count);
    assert_int_equal(specs_count, count);   /* a spec per layer: the blocks expanded, residual ends included */
    int convs = 0, shortcut = 0;
    for (int l = 0; l < count; l++) {
        if (strcmp(specs[l].kind, "conv2d") == 0) {
            assert_true(tunings[l] == 1 || tunings[l] == 2);
            specs[l].layout = 3 - tunings[l];   /* the other layout */
            convs++;
        }
        if (strcmp(specs[l].kind, "residual_add") == 0 && tunings[l]) shortcut++;
    }
    assert_int_equal(convs, 5);      /* stem + 2 per block */
    assert_int_equal(shortcut, 1);   /* the stride-2 block's projection */
    char resumed_dir[400];
    path_in(resumed_dir, sizeof resumed_dir, "resnet-resumed");
    ars_train_result resumed = train_specs(specs, specs_count, K + M, resumed_dir, first);
    free(specs);
    assert_same_result(&full, &resumed);
    char resumed_latest[420];
    snprintf(latest, sizeof latest, "%s/latest.h5", dir);
    snprintf(resumed_latest, sizeof resumed_latest, "%s/latest.h5", resumed_dir);
    compare_checkpoints(latest, resumed_latest);
    free_result(&full);
    free_result(&resumed);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (ars_dist_create(&world, MPI_COMM_WORLD)) MPI_Abort(MPI_COMM_WORLD, 1);
    if (world.rank == 0) {
        ars_test_tempdir(base_dir, sizeof base_dir, "convresume");
        have_data = ars_test_fmnist_subset(data_dir, sizeof data_dir, "convresumedata", TRAIN_SAMPLES, TEST_SAMPLES);
    }
    MPI_Bcast(base_dir, sizeof base_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Bcast(data_dir, sizeof data_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Bcast(&have_data, 1, MPI_INT, 0, MPI_COMM_WORLD);   /* the same host for every rank: all skip alike */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_resume_keeps_the_recorded_layout),
        cmocka_unit_test(test_resnet_resumes_its_measured_layouts),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    if (world.rank == 0) {
        ars_test_remove_tree(base_dir);
        if (data_dir[0]) ars_test_remove_tree(data_dir);
    }
    ars_dist_destroy(&world);
    if (failed) MPI_Abort(MPI_COMM_WORLD, 1);   /* never leave the other ranks waiting */
    MPI_Finalize();
    return 0;
}
