/* test_ckpt: the HDF5 checkpoint writer and reader: a round trip of every
 * tensor and the history, and every way a file can be wrong (truncated,
 * corrupted, wrong version, missing dataset, other model, variable-length
 * strings in format 2, a history claiming more than the file holds),
 * format-1 files read after ars_ckpt_validate, atomic writes under
 * SIGKILL, unwritable destinations, writes failing part-way (file size
 * limit), and tensor chunks stored exactly as HDF5's filter stores them. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "../src/ckpt_io.h"

typedef struct fixture {
    char dir[256], path[512];
    ars_model model;
    ars_optimizer opt;
    ars_history history;
} fixture;

static void build_model(ars_model *model, int hidden)
{
    ars_layer_spec specs[5];
    ars_layer_spec_defaults(&specs[0], "dense");
    specs[0].units = hidden;
    ars_layer_spec_defaults(&specs[1], "batchnorm");
    ars_layer_spec_defaults(&specs[2], "relu");
    ars_layer_spec_defaults(&specs[3], "dense");
    specs[3].units = 3;
    ARS_ASSERT_OK(ars_model_create(model, specs, 4, ars_shape_vector(5), 4));
    ARS_ASSERT_OK(ars_init_model(model, 11));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    ars_test_tempdir(f->dir, sizeof f->dir, "ckpt");
    snprintf(f->path, sizeof f->path, "%s/ckpt.h5", f->dir);
    build_model(&f->model, 8);
    for (size_t i = 0; i < f->model.state_count; i++) f->model.state[i] = 0.5f + (float)i;
    for (size_t i = 0; i < f->model.param_count; i++) f->model.grads[i] = (float)i * 1e-3f;
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ARS_ASSERT_OK(ars_optimizer_create(&f->opt, &config, f->model.param_count));
    ars_optimizer_step(&f->opt, f->model.params, f->model.grads, 1e-3f);
    ars_optimizer_step(&f->opt, f->model.params, f->model.grads, 1e-3f);
    char names[4][40];
    for (int l = 0; l < 4; l++) memcpy(names[l], f->model.layers[l].name, 40);
    ARS_ASSERT_OK(ars_history_init(&f->history, 4, (const char (*)[40])names, 8));
    for (int t = 0; t < 5; t++) {
        ars_history_step s = {.step = t * 10, .epoch = 0, .loss = 2.0 - t * 0.1, .lr = 1e-3, .grad_norm = 1.5,
                              .clip_scale = t == 2 ? 0.5 : 1};
        double *row;
        ARS_ASSERT_OK(ars_history_append(&f->history, &s, &row));
        for (int k = 0; k < ARS_HIST_LAYER_COLUMNS * 4; k++) row[k] = t + k * 0.01;
    }
    size_t offsets[4], counts[4];
    for (int l = 0; l < 4; l++) {
        offsets[l] = f->model.layers[l].param_offset;
        counts[l] = f->model.layers[l].param_size;
    }
    ARS_ASSERT_OK(ars_history_add_histograms(&f->history, 40, f->model.grads, offsets, counts));
    ars_history_eval eval = {.step = 40, .epoch = 1, .train_loss = 1.7, .test_loss = 1.8, .test_accuracy = 0.6};
    ARS_ASSERT_OK(ars_history_add_eval(&f->history, &eval));
    ARS_ASSERT_OK(ars_history_add_event(&f->history, "step 20: exploding gradient starts"));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ars_model_destroy(&f->model);
    ars_optimizer_destroy(&f->opt);
    ars_history_free(&f->history);
    ars_test_remove_tree(f->dir);
    free(f);
    return 0;
}

static ars_ckpt_state make_state(void)
{
    ars_ckpt_state s = {.step = 40, .epoch = 1, .steps_per_epoch = 40, .world_size = 2, .global_batch = 8,
                        .seed = 11, .nonfinite_steps = 1, .last_loss = 1.6, .test_loss = 1.8,
                        .test_accuracy = 0.6, .config_text = "[run]\nseed = 11\n"};
    return s;
}

static void write_fixture(fixture *f)
{
    ars_ckpt_state s = make_state();
    ARS_ASSERT_OK(ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s));
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    ars_ckpt_info info;
    ARS_ASSERT_OK(ars_ckpt_read_info(f->path, &info));
    assert_int_equal(info.step, 40);
    assert_int_equal(info.world_size, 2);
    assert_int_equal(info.global_batch, 8);
    assert_int_equal(info.layer_count, 4);
    assert_string_equal(info.layer_names[1], "001_batchnorm");
    assert_string_equal(info.layer_kinds[3], "dense");
    assert_string_equal(info.optimizer, "adam");
    assert_int_equal(info.optimizer_step, 2);
    assert_string_equal(info.config_text, "[run]\nseed = 11\n");
    ars_ckpt_info_free(&info);

    ars_model copy;
    ars_optimizer opt;
    build_model(&copy, 8);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
    ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
    assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
    assert_memory_equal(copy.state, f->model.state, sizeof(float) * copy.state_count);
    assert_memory_equal(opt.m, f->opt.m, sizeof(float) * copy.param_count);
    assert_memory_equal(opt.v, f->opt.v, sizeof(float) * copy.param_count);
    assert_int_equal(opt.step, 2);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&copy);

    ars_history h;
    ARS_ASSERT_OK(ars_ckpt_read_history(f->path, &h));
    assert_int_equal(h.count, 5);
    assert_int_equal(h.layer_count, 4);
    assert_int_equal(h.steps[4].step, 40);
    assert_true(h.steps[2].clip_scale == 0.5);
    assert_memory_equal(h.layer_values, f->history.layer_values, sizeof(double) * 5 * ARS_HIST_LAYER_COLUMNS * 4);
    assert_int_equal(h.hist_count, 1);
    assert_memory_equal(h.hist_counts, f->history.hist_counts, sizeof(uint32_t) * 4 * 8);
    assert_int_equal(h.eval_count, 1);
    assert_true(h.evals[0].test_accuracy == 0.6);
    assert_int_equal(h.event_count, 1);
    assert_string_equal(h.events[0], "step 20: exploding gradient starts");
    ars_history_free(&h);
}

static void expect_load_error(fixture *f, int hidden, const char *fragment)
{
    ars_model copy;
    ars_optimizer opt;
    build_model(&copy, hidden);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
    float first = copy.params[0];
    int rc = ars_ckpt_load(f->path, &copy, &opt);
    if (rc == 0) fail_msg("loading %s succeeded, expected an error containing '%s'", f->path, fragment);
    if (!strstr(ars_error_message(), fragment))
        fail_msg("error '%s' does not contain '%s'", ars_error_message(), fragment);
    assert_true(copy.params[0] == first);   /* nothing partially loaded */
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&copy);
}

static void test_other_model_is_refused(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    expect_load_error(f, 16, "shape [8, 5], the model needs [16, 5]");
}

static void test_missing_file_and_not_a_checkpoint(void **state)
{
    fixture *f = *state;
    ars_ckpt_info info;
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EIO);
    assert_non_null(strstr(ars_error_message(), "No such file"));
    ars_test_write_file(f->path, "hello, not hdf5", 15);
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "not an HDF5 file"));
    /* an HDF5 file that is not ours */
    hid_t file = H5Fcreate(f->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(file);
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "not an arsenal checkpoint"));
}

static void test_wrong_version_and_missing_dataset(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t attr = H5Aopen(file, "format_version", H5P_DEFAULT);
    int32_t version = 3;
    H5Awrite(attr, H5T_NATIVE_INT32, &version);
    H5Aclose(attr);
    H5Fclose(file);
    ars_ckpt_info info;
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "format version 3, this arsenal reads versions 1 to 2"));

    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(file, "/model/003_dense/bias", H5P_DEFAULT);
    H5Fclose(file);
    expect_load_error(f, 8, "/model/003_dense/bias is missing");

    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(file, "/optimizer/v/000_dense/weight", H5P_DEFAULT);
    H5Fclose(file);
    expect_load_error(f, 8, "/optimizer/v/000_dense/weight is missing");
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_truncated_files_are_errors(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    long size = file_size(f->path);
    assert_true(size > 0);
    if (size <= 0) size = 1;   /* (unreachable; keeps the allocation size provably positive) */
    FILE *in = fopen(f->path, "rb");
    char *bytes = malloc((size_t)size);
    assert_int_equal(fread(bytes, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    const double fractions[] = {0.0, 0.01, 0.1, 0.3, 0.5, 0.8, 0.95, 0.999};
    for (size_t i = 0; i < sizeof fractions / sizeof fractions[0]; i++) {
        ars_test_write_file(f->path, bytes, (size_t)(size * fractions[i]));
        ars_model copy;
        ars_optimizer opt;
        build_model(&copy, 8);
        ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
        ars_ckpt_info info;
        int rc = ars_ckpt_read_info(f->path, &info);
        if (!rc) {
            ars_ckpt_info_free(&info);
            rc = ars_ckpt_load(f->path, &copy, &opt);
        }
        if (rc == 0) fail_msg("a checkpoint cut to %.1f%% loaded without error", 100 * fractions[i]);
        ars_optimizer_destroy(&opt);
        ars_model_destroy(&copy);
    }
    free(bytes);
}

/* Flipping bytes anywhere: the load either fails with a message or (when
 * the byte was unused) yields exactly the saved tensors. Never a crash. */
static void test_corrupted_bytes_are_detected(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    long size = file_size(f->path);
    assert_true(size > 0);
    if (size <= 0) size = 1;   /* (unreachable; keeps the allocation size provably positive) */
    FILE *in = fopen(f->path, "rb");
    char *bytes = malloc((size_t)size), *bad = malloc((size_t)size);
    assert_int_equal(fread(bytes, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    int detected = 0, harmless = 0;
    for (long offset = 7; offset < size; offset += size / 97 + 1) {
        memcpy(bad, bytes, (size_t)size);
        for (int k = 0; k < 4 && offset + k < size; k++) bad[offset + k] ^= 0x5a;
        ars_test_write_file(f->path, bad, (size_t)size);
        ars_model copy;
        ars_optimizer opt;
        build_model(&copy, 8);
        ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
        if (ars_ckpt_load(f->path, &copy, &opt) != 0) {
            detected++;
        } else {
            assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
            assert_memory_equal(opt.m, f->opt.m, sizeof(float) * copy.param_count);
            harmless++;
        }
        ars_optimizer_destroy(&opt);
        ars_model_destroy(&copy);
    }
    printf("corruption: %d detected, %d in unused bytes\n", detected, harmless);
    assert_true(detected > 0);
    free(bytes);
    free(bad);
}

/* A writer killed at a random moment leaves the previous checkpoint
 * loadable every time. */
static void test_sigkill_during_writes_leaves_a_loadable_checkpoint(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    struct timespec seed;
    clock_gettime(CLOCK_MONOTONIC, &seed);
    srand((unsigned)seed.tv_nsec);
    for (int round = 0; round < 25; round++) {
        pid_t child = fork();
        if (child == 0) {
            ars_ckpt_state s = make_state();
            for (;;) ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s);
        }
        struct timespec pause = {0, (long)(rand() % 20000) * 1000};
        nanosleep(&pause, NULL);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        ars_model copy;
        ars_optimizer opt;
        build_model(&copy, 8);
        ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
        ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
        assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
        ars_optimizer_destroy(&opt);
        ars_model_destroy(&copy);
    }
}

static void test_unwritable_destination_keeps_previous(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    /* a path under a regular file cannot be created, even by root */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/sub/ckpt.h5", f->path);
    ars_ckpt_state s = make_state();
    assert_int_equal(ars_ckpt_write(bad, &f->model, &f->opt, &f->history, &s), ARS_EIO);
    assert_non_null(strstr(ars_error_message(), "cannot create checkpoint"));
    if (geteuid() != 0) {   /* root ignores directory permissions */
        chmod(f->dir, 0555);
        assert_int_equal(ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s), ARS_EIO);
        chmod(f->dir, 0755);
    }
    ars_ckpt_info info;
    ARS_ASSERT_OK(ars_ckpt_read_info(f->path, &info));
    ars_ckpt_info_free(&info);
}

/* ---- writes that fail part-way, chunks as HDF5 stores them ----------------- */

/* How many temporary files of a checkpoint writer are in dir. */
static int temporary_files(const char *dir)
{
    DIR *d = opendir(dir);
    int count = 0;
    for (struct dirent *e; d && (e = readdir(d));) count += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return count;
}

static char *read_whole(const char *path, long *size)
{
    *size = file_size(path);
    assert_true(*size > 0);
    char *bytes = malloc((size_t)*size);
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    assert_int_equal(fread(bytes, 1, (size_t)*size, in), (size_t)*size);
    fclose(in);
    return bytes;
}

/* Whether path holds exactly size bytes (no cmocka assertion: for a child). */
static int holds(const char *path, const char *bytes, long size)
{
    FILE *in = fopen(path, "rb");
    char *now = malloc((size_t)size + 1);
    int same = in && now && fread(now, 1, (size_t)size + 1, in) == (size_t)size &&
               memcmp(now, bytes, (size_t)size) == 0;
    if (in) fclose(in);
    free(now);
    return same;
}

/* F1: a write failing part-way (here the file size limit, EFBIG, where a
 * full disk gives ENOSPC; tests/cli_faults.sh fills a real tmpfs) is an
 * error naming the file, wherever in the file it happens; no temporary
 * file is left and the previous checkpoint stays byte for byte; and the
 * process still exits cleanly (libhdf5 1.10.8 crashed at exit after its
 * sec2 driver failed a write). In a child, whose limit and exit are its
 * own; its exit runs libhdf5's exit handlers. */
static void test_write_failing_part_way_keeps_previous(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    long size;
    char *before = read_whole(f->path, &size);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* a crash ends the child (not cmocka's handlers), without a core */
        const int crashes[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++) signal(crashes[i], SIG_DFL);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGXFSZ, SIG_IGN);   /* a write past the limit fails with EFBIG instead */
        struct rlimit original;
        getrlimit(RLIMIT_FSIZE, &original);
        char expected[1200];
        snprintf(expected, sizeof expected, "writing checkpoint %s: cannot ", f->path);
        ars_ckpt_state s = make_state();
        int failures = 0, points = 0, at_write = 0, at_length = 0;
        for (int k = 0; k <= 60; k++) {
            long limit = k < 60 ? k * (size / 60) : size - 1;   /* from no byte to all but the last */
            struct rlimit capped = {(rlim_t)limit, original.rlim_max};
            setrlimit(RLIMIT_FSIZE, &capped);
            int rc = ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s);
            setrlimit(RLIMIT_FSIZE, &original);
            const char *message = ars_error_message();
            int same = holds(f->path, before, size);
            if (rc != ARS_EIO || strncmp(message, expected, strlen(expected)) != 0 ||
                !strstr(message, ".tmp-") || !strstr(message, "File too large") || temporary_files(f->dir) ||
                !same) {
                fprintf(stderr, "limit %ld of %ld bytes: status %d, '%s', %d temporary files, previous %s\n",
                        limit, size, rc, message, temporary_files(f->dir), same ? "kept" : "changed");
                failures++;
            }
            points++;
            at_write += strstr(message, ": cannot write ") != NULL;
            at_length += strstr(message, ": cannot set the length of ") != NULL;
        }
        /* without the limit the same writer writes */
        if (ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s) != 0) {
            fprintf(stderr, "after the failures: %s\n", ars_error_message());
            failures++;
        }
        printf("write failing part-way: %d points of a %ld-byte file (%d in a write, %d setting its length), "
               "%d wrong\n", points, size, at_write, at_length, failures);
        fflush(NULL);
        exit(failures ? 3 : 0);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    if (WIFSIGNALED(status)) fail_msg("the writer died of signal %d (at exit?)", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(before);
}

typedef struct chunk_check {
    hid_t reference;   /* the same tensors written by HDF5's filter pipeline */
    int datasets;
    hsize_t chunks;
} chunk_check;

static void assert_same_chunks(hid_t ours, hid_t theirs, const char *name, chunk_check *check)
{
    hid_t a = H5Dget_create_plist(ours), b = H5Dget_create_plist(theirs);
    hsize_t chunk_a[2] = {0, 0}, chunk_b[2] = {0, 0};
    assert_int_equal(H5Pget_chunk(a, 2, chunk_a), H5Pget_chunk(b, 2, chunk_b));
    assert_memory_equal(chunk_a, chunk_b, sizeof chunk_a);
    assert_int_equal(H5Pget_nfilters(a), 1);
    assert_int_equal(H5Pget_nfilters(b), 1);
    H5Pclose(a);
    H5Pclose(b);
    hsize_t count_a = 0, count_b = 0;
    hid_t space_a = H5Dget_space(ours), space_b = H5Dget_space(theirs);
    assert_true(H5Dget_num_chunks(ours, space_a, &count_a) >= 0 && H5Dget_num_chunks(theirs, space_b, &count_b) >= 0);
    if (count_a != count_b) fail_msg("%s: %llu chunks, HDF5 writes %llu", name, count_a, count_b);
    for (hsize_t i = 0; i < count_b; i++) {
        hsize_t offset[2] = {0, 0}, size_a = 0, size_b = 0;
        unsigned mask;
        haddr_t address;
        assert_true(H5Dget_chunk_info(theirs, space_b, i, offset, &mask, &address, &size_b) >= 0);
        assert_true(H5Dget_chunk_storage_size(ours, offset, &size_a) >= 0);
        if (size_a != size_b) fail_msg("%s chunk %llu: %llu bytes, HDF5 stores %llu", name, i, size_a, size_b);
        unsigned char *bytes_a = malloc(size_a), *bytes_b = malloc(size_b);
        uint32_t filters_a = 1, filters_b = 1;
        assert_true(H5Dread_chunk(ours, H5P_DEFAULT, offset, &filters_a, bytes_a) >= 0);
        assert_true(H5Dread_chunk(theirs, H5P_DEFAULT, offset, &filters_b, bytes_b) >= 0);
        assert_int_equal(filters_a, 0);
        assert_int_equal(filters_b, 0);
        if (memcmp(bytes_a, bytes_b, size_a) != 0) fail_msg("%s chunk %llu: other bytes than HDF5 stores", name, i);
        free(bytes_a);
        free(bytes_b);
        check->chunks++;
    }
    H5Sclose(space_a);
    H5Sclose(space_b);
}

static herr_t compare_dataset(hid_t root, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    chunk_check *check = data;
    if (strncmp(name, "model/", 6) && strncmp(name, "grad/", 5) && strncmp(name, "optimizer/", 10)) return 0;
    hid_t object = H5Oopen(root, name, H5P_DEFAULT);
    if (H5Iget_type(object) != H5I_DATASET) {
        H5Oclose(object);
        return 0;
    }
    hid_t space = H5Dget_space(object);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(space, dims, NULL);
    size_t count = (size_t)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    float *values = malloc(sizeof(float) * (count ? count : 1));
    assert_true(H5Dread(object, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    char flat[256];
    snprintf(flat, sizeof flat, "%s", name);
    for (char *c = flat; *c; c++)
        if (*c == '/') *c = '|';
    ARS_ASSERT_OK(ars_h5_write_floats(check->reference, flat, rank, dims, values));
    hid_t theirs = H5Dopen2(check->reference, flat, H5P_DEFAULT);
    assert_same_chunks(object, theirs, name, check);
    H5Dclose(theirs);
    H5Oclose(object);
    free(values);
    check->datasets++;
    return 0;
}

/* The writer checksums and stores each tensor chunk itself (H5Dwrite_chunk):
 * every chunk must hold exactly the bytes HDF5's Fletcher-32 filter would
 * store, with tensors over several chunks, partial last chunks and rows
 * longer than a chunk (300000 features). */
static void test_chunks_are_stored_as_hdf5_filters_them(void **state)
{
    fixture *f = *state;
    ars_layer_spec specs[4];
    ars_layer_spec_defaults(&specs[0], "dense");
    specs[0].units = 300000;
    ars_layer_spec_defaults(&specs[1], "batchnorm");
    ars_layer_spec_defaults(&specs[2], "relu");
    ars_layer_spec_defaults(&specs[3], "dense");
    specs[3].units = 2;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 4, ars_shape_vector(3), 2));
    ARS_ASSERT_OK(ars_init_model(&model, 5));
    for (size_t i = 0; i < model.param_count; i++) model.grads[i] = (float)i * 0.25f - 7.0f;
    for (size_t i = 0; i < model.state_count; i++) model.state[i] = 1.0f + (float)i;
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &config, model.param_count));
    ars_optimizer_step(&opt, model.params, model.grads, 1e-3f);
    ars_ckpt_state s = make_state();
    ARS_ASSERT_OK(ars_ckpt_write(f->path, &model, &opt, NULL, &s));

    char reference[600];
    snprintf(reference, sizeof reference, "%s/reference.h5", f->dir);
    chunk_check check = {H5Fcreate(reference, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), 0, 0};
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0 && check.reference >= 0);
    assert_true(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, compare_dataset, &check) >= 0);
    H5Fclose(file);
    H5Fclose(check.reference);
    printf("chunks as HDF5 stores them: %d datasets, %llu chunks\n", check.datasets, (unsigned long long)check.chunks);
    /* params, state and grads of 2 dense + 1 batchnorm, Adam m and v */
    assert_true(check.datasets >= 20);
    assert_true(check.chunks > (hsize_t)check.datasets);

    ars_model copy;
    ars_optimizer opt_copy;
    ARS_ASSERT_OK(ars_model_create(&copy, specs, 4, ars_shape_vector(3), 2));
    ARS_ASSERT_OK(ars_optimizer_create(&opt_copy, &config, copy.param_count));
    ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt_copy));
    assert_memory_equal(copy.params, model.params, sizeof(float) * model.param_count);
    assert_memory_equal(copy.state, model.state, sizeof(float) * model.state_count);
    assert_memory_equal(opt_copy.m, opt.m, sizeof(float) * model.param_count);
    assert_memory_equal(opt_copy.v, opt.v, sizeof(float) * model.param_count);
    ars_optimizer_destroy(&opt_copy);
    ars_model_destroy(&copy);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&model);
}

/* ---- format 2 strings, format 1 files, sizes the file cannot hold ---------- */

static int is_variable_string(hid_t type) { return H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0; }

static int attr_is_variable(hid_t file, const char *object, const char *name)
{
    hid_t attr = H5Aopen_by_name(file, object, name, H5P_DEFAULT, H5P_DEFAULT);
    hid_t type = H5Aget_type(attr);
    int variable = is_variable_string(type);
    H5Tclose(type);
    H5Aclose(attr);
    return variable;
}

static int dataset_is_variable(hid_t file, const char *path)
{
    hid_t set = H5Dopen2(file, path, H5P_DEFAULT);
    hid_t type = H5Dget_type(set);
    int variable = is_variable_string(type);
    H5Tclose(type);
    H5Dclose(set);
    return variable;
}

static hid_t vlen_type(void)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

/* Rewrites a fixed-length string attribute as a variable-length one, as
 * format 1 stored it. */
static void attr_to_vlen(hid_t file, const char *object, const char *name)
{
    hid_t owner = H5Oopen(file, object, H5P_DEFAULT);
    hid_t attr = H5Aopen(owner, name, H5P_DEFAULT);
    hid_t type = H5Aget_type(attr);
    char value[4096] = "";
    assert_true(H5Tget_size(type) < sizeof value);
    assert_true(H5Aread(attr, type, value) >= 0);
    H5Tclose(type);
    H5Aclose(attr);
    assert_true(H5Adelete(owner, name) >= 0);
    hid_t vlen = vlen_type(), space = H5Screate(H5S_SCALAR);
    attr = H5Acreate2(owner, name, vlen, space, H5P_DEFAULT, H5P_DEFAULT);
    const char *text = value;
    assert_true(H5Awrite(attr, vlen, &text) >= 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(vlen);
    H5Oclose(owner);
}

/* The same for a string dataset (scalar or 1-D). */
static void dataset_to_vlen(hid_t file, const char *path)
{
    hid_t set = H5Dopen2(file, path, H5P_DEFAULT);
    hid_t type = H5Dget_type(set), space = H5Dget_space(set);
    size_t size = H5Tget_size(type), n = (size_t)H5Sget_simple_extent_npoints(space);
    char *packed = calloc(n * size + 1, 1);
    const char **texts = calloc(n + 1, sizeof *texts);
    if (n) assert_true(H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, packed) >= 0);
    for (size_t i = 0; i < n; i++) texts[i] = strndup(packed + i * size, size);
    H5Tclose(type);
    H5Dclose(set);
    assert_true(H5Ldelete(file, path, H5P_DEFAULT) >= 0);
    hid_t vlen = vlen_type();
    if (H5Sget_simple_extent_ndims(space) > 0) {   /* drop the unlimited maximum: contiguous storage */
        hsize_t dims[1] = {n};
        H5Sclose(space);
        space = H5Screate_simple(1, dims, NULL);
    }
    set = H5Dcreate2(file, path, vlen, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (n) assert_true(H5Dwrite(set, vlen, H5S_ALL, H5S_ALL, H5P_DEFAULT, texts) >= 0);
    H5Dclose(set);
    H5Tclose(vlen);
    H5Sclose(space);
    for (size_t i = 0; i < n; i++) free((char *)texts[i]);
    free(texts);
    free(packed);
}

static void set_version(hid_t file, int32_t version)
{
    hid_t attr = H5Aopen(file, "format_version", H5P_DEFAULT);
    assert_true(H5Awrite(attr, H5T_NATIVE_INT32, &version) >= 0);
    H5Aclose(attr);
}

/* Turns the fixture's format-2 file into what format 1 wrote: every string
 * variable-length, format_version 1. */
static void make_format_1(fixture *f)
{
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    static const char *const root_strings[] = {"format", "arsenal_version", "created"};
    for (int k = 0; k < 3; k++) attr_to_vlen(file, "/", root_strings[k]);
    attr_to_vlen(file, "/optimizer", "kind");
    for (int l = 0; l < f->model.layer_count; l++) {
        char group[80];
        snprintf(group, sizeof group, "/model/%s", f->model.layers[l].name);
        attr_to_vlen(file, group, "kind");
    }
    dataset_to_vlen(file, "/config");
    dataset_to_vlen(file, "/history/layer_names");
    dataset_to_vlen(file, "/history/events");
    set_version(file, 1);
    H5Fclose(file);
}

static void test_format_2_stores_fixed_length_strings(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    ars_ckpt_info info;
    ARS_ASSERT_OK(ars_ckpt_read_info(f->path, &info));
    assert_int_equal(info.format_version, 2);
    ars_ckpt_info_free(&info);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_false(attr_is_variable(file, "/", "format"));
    assert_false(attr_is_variable(file, "/", "created"));
    assert_false(attr_is_variable(file, "/optimizer", "kind"));
    assert_false(attr_is_variable(file, "/model/001_batchnorm", "kind"));
    assert_false(dataset_is_variable(file, "/config"));
    assert_false(dataset_is_variable(file, "/history/layer_names"));
    assert_false(dataset_is_variable(file, "/history/events"));
    H5Fclose(file);
    /* the round trip of every value is test_round_trip; the child agrees */
    ARS_ASSERT_OK(ars_ckpt_validate(f->path));
}

static void test_format_1_is_read_after_validation(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    make_format_1(f);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(attr_is_variable(file, "/", "format"));
    assert_true(dataset_is_variable(file, "/config"));
    H5Fclose(file);
    /* not validated: refused before any string is read */
    ars_ckpt_info info;
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "format version 1 holds variable-length strings"));
    ARS_ASSERT_OK(ars_ckpt_validate(f->path));
    ARS_ASSERT_OK(ars_ckpt_read_info(f->path, &info));
    assert_int_equal(info.format_version, 1);
    assert_string_equal(info.config_text, "[run]\nseed = 11\n");
    assert_string_equal(info.layer_kinds[1], "batchnorm");
    assert_string_equal(info.optimizer, "adam");
    ars_ckpt_info_free(&info);
    ars_model copy;
    ars_optimizer opt;
    build_model(&copy, 8);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
    ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
    assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
    assert_memory_equal(opt.v, f->opt.v, sizeof(float) * copy.param_count);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&copy);
    ars_history h;
    ARS_ASSERT_OK(ars_ckpt_read_history(f->path, &h));
    assert_int_equal(h.count, 5);
    assert_string_equal(h.layer_names[3], "003_dense");
    assert_int_equal(h.event_count, 1);
    assert_string_equal(h.events[0], "step 20: exploding gradient starts");
    ars_history_free(&h);
    /* a changed file is a new file: validated again first */
    write_fixture(f);
    make_format_1(f);
    struct timespec later[2] = {{0, UTIME_OMIT}, {time(NULL) + 5, 0}};
    utimensat(AT_FDCWD, f->path, later, 0);
    assert_int_equal(ars_ckpt_read_info(f->path, &info), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "ars_ckpt_validate"));
}

static void expect_info_error(fixture *f, const char *fragment)
{
    ars_ckpt_info info;
    int rc = ars_ckpt_read_info(f->path, &info);
    if (rc == 0) fail_msg("reading %s succeeded, expected an error containing '%s'", f->path, fragment);
    if (!strstr(ars_error_message(), fragment))
        fail_msg("error '%s' does not contain '%s'", ars_error_message(), fragment);
    /* and the checking child says the same */
    assert_int_equal(ars_ckpt_validate(f->path), ARS_EFORMAT);
    if (!strstr(ars_error_message(), fragment))
        fail_msg("validation error '%s' does not contain '%s'", ars_error_message(), fragment);
}

static void test_variable_length_string_in_format_2_is_refused(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    dataset_to_vlen(file, "/config");
    H5Fclose(file);
    expect_info_error(f, "/config is a variable-length string, which format version 2 never writes");

    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    attr_to_vlen(file, "/", "format");
    H5Fclose(file);
    expect_info_error(f, ": attribute format is a variable-length string");

    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    attr_to_vlen(file, "/model/002_relu", "kind");
    H5Fclose(file);
    expect_info_error(f, "/model/002_relu: attribute kind is a variable-length string");

    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    dataset_to_vlen(file, "/history/events");
    H5Fclose(file);
    ars_history h;
    assert_int_equal(ars_ckpt_read_history(f->path, &h), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "/history/events is a variable-length string"));
}

/* F9: a history dataset extended to 2^28 records that were never written
 * (they would read as fill values) is refused before any allocation. */
static void test_history_larger_than_the_file_is_refused(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t set = H5Dopen2(file, "/history/loss", H5P_DEFAULT);
    hsize_t records[1] = {(hsize_t)1 << 28};
    assert_true(H5Dset_extent(set, records) >= 0);
    H5Dclose(set);
    H5Fclose(file);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ars_history h;
    assert_int_equal(ars_ckpt_read_history(f->path, &h), ARS_EFORMAT);
    clock_gettime(CLOCK_MONOTONIC, &end);
    assert_non_null(strstr(ars_error_message(), "/history/loss claims 2147483648 bytes of data but the file stores"));
    assert_true(end.tv_sec - start.tv_sec < 5);
    /* a tensor that claims more than is stored is refused the same way by the child */
    write_fixture(f);
    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(file, "/optimizer/m/000_dense/weight", H5P_DEFAULT);
    hsize_t dims[2] = {1 << 14, 1 << 14};
    hid_t space = H5Screate_simple(2, dims, NULL);
    set = H5Dcreate2(file, "/optimizer/m/000_dense/weight", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                     H5P_DEFAULT);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
    assert_int_equal(ars_ckpt_validate(f->path), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "/optimizer/m/000_dense/weight claims 1073741824 bytes"));
}

/* /health/cures: written only when there is a cure, read back field by
 * field; a file without it reads as no cure; truncating the history keeps
 * the cures and the events. */
static void test_cures_round_trip(void **state)
{
    fixture *f = *state;
    write_fixture(f);
    ars_history h;
    ARS_ASSERT_OK(ars_ckpt_read_history(f->path, &h));
    assert_int_equal(h.cure_count, 0);
    ars_history_free(&h);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    assert_true(H5Lexists(file, "health", H5P_DEFAULT) == 0);   /* files without cures are unchanged */
    H5Fclose(file);

    ars_history_cure cures[2] = {
        {.step = 20, .rollback_step = 0, .rule = "vanishing", .layer = "000_dense",
         .change = "19 sigmoid layers -> relu", .settings = "act:001=relu;init:000=he_normal;", .status = "active"},
        {.step = 30, .rollback_step = 21, .rule = "exploding", .layer = "",
         .change = "clip_norm 0 -> 1", .settings = "clip_norm=1;", .status = "reverted"}};
    for (int k = 0; k < 2; k++) ARS_ASSERT_OK(ars_history_add_cure(&f->history, &cures[k]));
    write_fixture(f);
    ARS_ASSERT_OK(ars_ckpt_read_history(f->path, &h));
    assert_int_equal(h.cure_count, 2);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(h.cures[k].step, cures[k].step);
        assert_int_equal(h.cures[k].rollback_step, cures[k].rollback_step);
        assert_string_equal(h.cures[k].rule, cures[k].rule);
        assert_string_equal(h.cures[k].layer, cures[k].layer);
        assert_string_equal(h.cures[k].change, cures[k].change);
        assert_string_equal(h.cures[k].settings, cures[k].settings);
        assert_string_equal(h.cures[k].status, cures[k].status);
    }
    ars_history_truncate(&h, 2, 0, 0);
    assert_int_equal(h.count, 2);
    assert_int_equal(h.hist_count, 0);
    assert_int_equal(h.eval_count, 0);
    assert_int_equal(h.cure_count, 2);
    assert_int_equal(h.event_count, 1);
    ars_history_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_model_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_and_not_a_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_version_and_missing_dataset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_files_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_bytes_are_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_during_writes_leaves_a_loadable_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_destination_keeps_previous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failing_part_way_keeps_previous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunks_are_stored_as_hdf5_filters_them, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_2_stores_fixed_length_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_1_is_read_after_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variable_length_string_in_format_2_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_larger_than_the_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cures_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
