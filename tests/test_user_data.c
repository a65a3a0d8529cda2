/* test_user_data: the data sets a user brings (src/data/user_data.c and the
 * HDF5, .npy and CSV readers). Files are written here in C (libhdf5, a
 * .npy header by hand, text) into a temp dir. Each format round-trips
 * (values, labels, targets, the sample shape: [C, H, W] from a 4-D x); a
 * streamed x reads the same rows and statistics as in memory; bad files
 * are refused with what and where; the validation split is deterministic,
 * disjoint and complete; [run] keys are checked; and a short ars_train run
 * learns from each format (HDF5 in memory and streamed, .npy, CSV, a
 * regression, an image set, a validation split). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"

#define ASSERT_FAILS(expr, fragment)                                                                     \
    do {                                                                                                 \
        int rc_ = (expr);                                                                                \
        if (rc_ == 0) fail_msg("%s succeeded, expected an error containing '%s'", #expr, (fragment));    \
        if (!strstr(ars_error_message(), (fragment)))                                                   \
            fail_msg("%s: message '%s' lacks '%s'", #expr, ars_error_message(), (fragment));            \
    } while (0)

static char dir[512];

static int setup(void **state)
{
    ars_test_tempdir(dir, sizeof dir, "user-data");
    return 0;
}

static int teardown(void **state)
{
    ars_test_remove_tree(dir);
    return 0;
}

static const char *file_in(const char *name)
{
    static char paths[8][700];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

/* ---- writers --------------------------------------------------------------- */

/* Dataset name of type (native memory type mem, stored as file) in path,
 * created (create 1) or added. chunk: chunked + gzip with chunks of that
 * many rows (0: contiguous). */
static void h5_put(const char *path, int create, const char *name, hid_t file_type, hid_t mem, int rank,
                   const hsize_t *dims, const void *data, hsize_t chunk)
{
    hid_t f = create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)
                     : H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) {
        hsize_t c[5];
        for (int d = 0; d < rank; d++) c[d] = dims[d];
        c[0] = chunk;
        H5Pset_chunk(plist, rank, c);
        H5Pset_deflate(plist, 4);
    }
    hid_t d = H5Dcreate2(f, name, file_type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Pclose(plist);
    H5Sclose(space);
    H5Fclose(f);
}

/* A .npy file: version 1 (or 2) header padded to 64 bytes, then bytes. */
static void npy_put(const char *path, int version, const char *descr, int fortran, int rank, const long long *dims,
                    const void *data, size_t bytes)
{
    char shape[200] = "";
    for (int d = 0; d < rank; d++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%lld%s", dims[d],
                 rank == 1 ? "," : d + 1 < rank ? ", " : "");
    char dict[400];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }", descr,
             fortran ? "True" : "False", shape);
    const size_t preamble = version == 1 ? 10 : 12;
    size_t len = strlen(dict) + 1;
    while ((preamble + len) % 64) len++;
    unsigned char *file = malloc(preamble + len + bytes);
    assert_non_null(file);
    memcpy(file, "\x93NUMPY", 6);
    file[6] = (unsigned char)version;
    file[7] = 0;
    if (version == 1) {
        file[8] = (unsigned char)(len & 0xff);
        file[9] = (unsigned char)(len >> 8);
    } else {
        for (int i = 0; i < 4; i++) file[8 + i] = (unsigned char)(len >> (8 * i));
    }
    memset(file + preamble, ' ', len);
    memcpy(file + preamble, dict, strlen(dict));
    file[preamble + len - 1] = '\n';
    if (bytes) memcpy(file + preamble + len, data, bytes);
    ars_test_write_file(path, file, preamble + len + bytes);
    free(file);
}

static void text_put(const char *path, const char *text) { ars_test_write_file(path, text, strlen(text)); }

/* A learnable set: 3 classes, class i % 3, x = center + 0.3 N(0, 1), dim
 * features; x[n * dim], labels[n]. */
static void make_blobs(int n, int dim, float *x, int32_t *labels, uint64_t seed)
{
    float centers[3 * 64];
    assert_true(dim <= 64);
    ars_rng_normal(centers, (size_t)3 * dim, 0.0f, 1.5f, seed, 1, 0);
    ars_rng_normal(x, (size_t)n * dim, 0.0f, 0.3f, seed, 2, 0);
    for (int i = 0; i < n; i++) {
        labels[i] = i % 3;
        for (int j = 0; j < dim; j++) x[i * dim + j] += centers[(i % 3) * dim + j];
    }
}

static ars_user_options options(int regression)
{
    ars_user_options o = {.regression = regression, .stream = -1};
    return o;
}

static int load(const char *spec_text, const ars_user_options *o, ars_dataset *data)
{
    ars_user_spec spec;
    int rc = ars_user_spec_parse(spec_text, &spec);
    if (rc) {
        memset(data, 0, sizeof *data);
        return rc;
    }
    return ars_user_data_load(&spec, o, data);
}

static char *spec_of(const char *format, const char *a, const char *b)
{
    static char out[4][1500];
    static int next;
    char *p = out[next++ % 4];
    if (b) snprintf(p, sizeof out[0], "%s:%s,%s", format, a, b);
    else snprintf(p, sizeof out[0], "%s:%s", format, a);
    return p;
}

/* ---- specs ------------------------------------------------------------------ */

static void test_specs_parse(void **state)
{
    ars_user_spec s;
    assert_int_equal(ars_user_format_of("fashion-mnist"), ARS_USER_NONE);
    assert_int_equal(ars_user_format_of("hdf5:a.h5"), ARS_USER_HDF5);
    ARS_ASSERT_OK(ars_user_spec_parse("npy: x.npy , y.npy", &s));
    assert_int_equal(s.format, ARS_USER_NPY);
    assert_string_equal(s.path, "x.npy");
    assert_string_equal(s.y_path, "y.npy");
    ARS_ASSERT_OK(ars_user_spec_parse("csv:d/iris.csv", &s));
    assert_string_equal(s.path, "d/iris.csv");
    ASSERT_FAILS(ars_user_spec_parse("hdf5:", &s), "a file name is missing");
    ASSERT_FAILS(ars_user_spec_parse("npy:x.npy", &s), "expected npy:XPATH,YPATH");
    ASSERT_FAILS(ars_user_spec_parse("npy:a,b,c", &s), "one comma");
    ASSERT_FAILS(ars_user_spec_parse("parquet:x", &s), "expected hdf5:PATH, csv:PATH or npy:XPATH,YPATH");
}

/* ---- HDF5 ------------------------------------------------------------------- */

static void test_hdf5_round_trip(void **state)
{
    enum { N = 50, F = 7 };
    float x[N * F];
    int32_t y[N];
    make_blobs(N, F, x, y, 5);
    const char *path = file_in("rt.h5");
    hsize_t xd[2] = {N, F}, yd[1] = {N};
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_STD_U8LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ars_user_options o = options(0);
    ars_dataset d;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_int_equal(d.count, N);
    assert_int_equal(d.dim, F);
    assert_int_equal(d.shape.rank, 1);
    assert_int_equal(d.shape.dims[0], F);
    assert_int_equal(d.classes, 3);
    assert_non_null(d.x);
    assert_null(d.source);
    assert_memory_equal(d.x, x, sizeof x);
    assert_memory_equal(d.labels, y, sizeof y);
    ars_dataset_free(&d);

    /* limit; test part absent: an empty set */
    o.limit = 20;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_int_equal(d.count, 20);
    ars_dataset_free(&d);
    o.test_part = 1;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_int_equal(d.count, 0);
    ars_dataset_free(&d);
}

static void test_hdf5_image_shape_and_types(void **state)
{
    /* 4-D uint8 x -> [C, H, W] floats; int64 labels; x_test/y_test */
    enum { N = 12, C = 2, H = 3, W = 4 };
    uint8_t x[N * C * H * W];
    int64_t y[N];
    for (int i = 0; i < N * C * H * W; i++) x[i] = (uint8_t)(i * 7);
    for (int i = 0; i < N; i++) y[i] = i % 5;
    const char *path = file_in("img.h5");
    hsize_t xd[4] = {N, C, H, W}, yd[1] = {N};
    h5_put(path, 1, "x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, xd, x, 4);
    h5_put(path, 0, "y", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, yd, y, 0);
    xd[0] = yd[0] = 3;
    h5_put(path, 0, "x_test", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, xd, x, 0);
    h5_put(path, 0, "y_test", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, yd, y, 0);
    ars_user_options o = options(0);
    ars_dataset d;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_int_equal(d.shape.rank, 3);
    assert_int_equal(d.shape.dims[0], C);
    assert_int_equal(d.shape.dims[1], H);
    assert_int_equal(d.shape.dims[2], W);
    assert_int_equal(d.dim, C * H * W);
    assert_int_equal(d.classes, 5);
    for (int i = 0; i < N * C * H * W; i++) assert_true(d.x[i] == (float)x[i]);
    int channels, height, width;
    ARS_ASSERT_OK(ars_dataset_image_shape(&d, &channels, &height, &width));
    assert_int_equal(channels * 100 + height * 10 + width, 234);
    ars_dataset_free(&d);
    o.test_part = 1;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_int_equal(d.count, 3);
    assert_int_equal(d.shape.rank, 3);
    ars_dataset_free(&d);
}

static void test_hdf5_regression_targets(void **state)
{
    enum { N = 10, T = 2 };
    double x[N * 3], y[N * T];
    for (int i = 0; i < N * 3; i++) x[i] = 0.5 * i;
    for (int i = 0; i < N * T; i++) y[i] = -1.25 * i;
    const char *path = file_in("reg.h5");
    hsize_t xd[2] = {N, 3}, yd[2] = {N, T};
    h5_put(path, 1, "x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, yd, y, 0);
    ars_user_options o = options(1);
    ars_dataset d;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_null(d.labels);
    assert_int_equal(d.target_dim, T);
    for (int i = 0; i < N * T; i++) assert_true(d.targets[i] == (float)y[i]);
    ars_dataset_free(&d);
    /* the same y as class labels: [N, 2] is refused, naming loss = mse */
    o.regression = 0;
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "class labels are one integer per sample");
    assert_non_null(strstr(ars_error_message(), "loss = mse"));
}

/* A streamed x reads what the in-memory one holds, by any ids, and has the
 * same statistics (also leaving out the validation rows). */
static void test_hdf5_streamed_equals_memory(void **state)
{
    enum { N = 300, F = 5 };
    float x[N * F];
    int32_t y[N];
    make_blobs(N, F, x, y, 9);
    const char *path = file_in("stream.h5");
    hsize_t xd[2] = {N, F}, yd[1] = {N};
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 16);   /* chunked + gzip */
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    for (int validate = 0; validate < 2; validate++) {
        ars_user_options o = options(0);
        o.validation = validate ? 0.25 : 0;
        o.seed = 77;
        ars_dataset mem, str, mem_val, str_val;
        o.stream = 0;
        ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &mem));
        o.stream = 1;
        ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &str));
        assert_null(str.x);
        assert_non_null(str.source);
        assert_memory_equal(str.labels, mem.labels, sizeof y);
        if (validate) {
            ARS_ASSERT_OK(ars_dataset_validation_split(&mem, 0.25, 77, &mem_val));
            ARS_ASSERT_OK(ars_dataset_validation_split(&str, 0.25, 77, &str_val));
            assert_int_equal(mem_val.count, 75);
            assert_int_equal(str_val.count, 75);
            assert_non_null(str_val.source);
            assert_memory_equal(str_val.labels, mem_val.labels, 75 * sizeof(int32_t));
        }
        double m1, s1, m2, s2;
        ARS_ASSERT_OK(ars_dataset_stats(&mem, &m1, &s1));
        ARS_ASSERT_OK(ars_dataset_stats(&str, &m2, &s2));
        assert_true(m1 == m2 && s1 == s2);   /* bit for bit: the same values in the same order */
        ars_dataset_standardize_any(&mem, m1, s1);
        ars_dataset_standardize_any(&str, m2, s2);
        uint32_t ids[64];
        float a[64 * F], b[64 * F];
        for (int i = 0; i < 64; i++) ids[i] = (uint32_t)((i * 37 + 11) % mem.count);
        ids[5] = ids[6];   /* a repeated row */
        ARS_ASSERT_OK(ars_dataset_read_x(&mem, ids, 64, a));
        ARS_ASSERT_OK(ars_dataset_read_x(&str, ids, 64, b));
        assert_memory_equal(a, b, sizeof a);
        if (validate) {
            ars_dataset_standardize_any(&mem_val, m1, s1);
            ars_dataset_standardize_any(&str_val, m2, s2);
            for (int i = 0; i < 40; i++) ids[i] = (uint32_t)((i * 13 + 7) % mem_val.count);
            ARS_ASSERT_OK(ars_dataset_read_x(&mem_val, ids, 40, a));
            ARS_ASSERT_OK(ars_dataset_read_x(&str_val, ids, 40, b));
            assert_memory_equal(a, b, 40 * F * sizeof(float));
            ars_dataset_free(&mem_val);
            ars_dataset_free(&str_val);
        }
        /* the sampler streams a batch too */
        ars_sampler sm, ss;
        ars_batch bm, bs;
        ARS_ASSERT_OK(ars_sampler_create(&sm, &mem, 32, 1, 2, 5, 1));
        ARS_ASSERT_OK(ars_sampler_create(&ss, &str, 32, 1, 2, 5, 1));
        ARS_ASSERT_OK(ars_batch_alloc(&bm, &sm));
        ARS_ASSERT_OK(ars_batch_alloc(&bs, &ss));
        ARS_ASSERT_OK(ars_sampler_fill(&sm, 3, 2, &bm));
        ARS_ASSERT_OK(ars_sampler_fill(&ss, 3, 2, &bs));
        assert_int_equal(bm.rows, bs.rows);
        assert_memory_equal(bm.x, bs.x, (size_t)bm.rows * F * sizeof(float));
        assert_memory_equal(bm.labels, bs.labels, (size_t)bm.rows * sizeof(int32_t));
        ars_batch_free(&bm);
        ars_batch_free(&bs);
        ars_sampler_destroy(&sm);
        ars_sampler_destroy(&ss);
        ars_dataset_free(&mem);
        ars_dataset_free(&str);
    }
    /* auto: a small budget streams, a forced in-memory load is refused */
    ars_user_options o = options(0);
    ars_dataset d;
    o.memory_limit = 5000;
    ARS_ASSERT_OK(load(spec_of("hdf5", path, NULL), &o, &d));
    assert_non_null(d.source);
    ars_dataset_free(&d);
    o.stream = 0;
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "300 samples of 5 values as floats need about");
    o.memory_limit = 1000;
    o.stream = -1;
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "the labels need about");
}

static void test_hdf5_bad_files_are_refused(void **state)
{
    float x[40] = {0};
    int32_t y[10] = {0, 1, 2};
    double yd_[10] = {0, 1, 2.5};
    hsize_t xd[2] = {10, 4}, yd[1] = {10}, y9[1] = {9};
    ars_user_options o = options(0);
    ars_dataset d;
    const char *path = file_in("bad.h5");

    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "no dataset 'y' (the file's root holds: x)");
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, y9, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/x has 10 samples but");
    assert_non_null(strstr(ars_error_message(), "bad.h5:/y has 9"));

    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, yd, yd_, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/y[2] = 2.5 is not a class label");
    y[4] = -3;
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/y[4] = -3: class labels must be >= 0");
    y[4] = 1000000;
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/y[4] = 1e+06: expected a class label below");
    y[4] = 1;

    x[3 * 4 + 2] = NAN;
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/x[3, 2] is NaN");
    o.stream = 1;   /* the scan finds it too */
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/x[3, 2] is NaN");
    o.stream = -1;
    x[3 * 4 + 2] = 0;
    double big[40] = {0};
    big[7] = 1e300;   /* beyond float: converted to Inf */
    h5_put(path, 1, "x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, xd, big, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/x[1, 3] is Inf");

    /* 5-D x; a string y; x_test without y_test */
    hsize_t x5[5] = {10, 1, 2, 2, 1};
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 5, x5, x, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/x has shape [10, 1, 2, 2, 1]: expected");
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    hid_t text = H5Tcopy(H5T_C_S1);
    H5Tset_size(text, 4);
    char strings[10][4] = {"a", "b"};
    h5_put(path, 0, "y", text, text, 1, yd, strings, 0);
    H5Tclose(text);
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "bad.h5:/y has type class string");
    h5_put(path, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(path, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    h5_put(path, 0, "x_test", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    o.test_part = 1;
    ASSERT_FAILS(load(spec_of("hdf5", path, NULL), &o, &d), "has 'x_test' but no 'y_test'");
    o.test_part = 0;

    /* a chunk stored without filters but shorter than its shape (libhdf5 1.10 would read past it) */
    {
        const char *short_chunk = file_in("short-chunk.h5");
        hid_t f = H5Fcreate(short_chunk, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t sd[2] = {8, 2}, chunk[2] = {4, 2}, at0[2] = {0, 0}, at4[2] = {4, 0};
        hid_t space = H5Screate_simple(2, sd, NULL), plist = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(plist, 2, chunk);
        hid_t ds = H5Dcreate2(f, "x", H5T_IEEE_F64LE, space, H5P_DEFAULT, plist, H5P_DEFAULT);
        double values[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        assert_true(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, at0, sizeof values, values) >= 0);
        assert_true(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, at4, 42, values) >= 0);
        H5Dclose(ds);
        H5Pclose(plist);
        H5Sclose(space);
        H5Fclose(f);
        h5_put(short_chunk, 0, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, (hsize_t[]){8}, y, 0);
        ASSERT_FAILS(load(spec_of("hdf5", short_chunk, NULL), &o, &d), "short-chunk.h5:/x: the chunk at sample 4 "
                     "stores 42 bytes, its shape needs 64");
    }

    /* not HDF5; missing; a directory; truncated (the checking child reports it) */
    const char *junk = file_in("junk.h5");
    text_put(junk, "this is not an HDF5 file\n");
    ASSERT_FAILS(load(spec_of("hdf5", junk, NULL), &o, &d), "junk.h5: not an HDF5 file");
    ASSERT_FAILS(load(spec_of("hdf5", file_in("none.h5"), NULL), &o, &d), "none.h5: cannot open: No such file");
    ASSERT_FAILS(load(spec_of("hdf5", dir, NULL), &o, &d), "is a directory");
    {
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        char bytes[4096];
        size_t n = fread(bytes, 1, sizeof bytes, f);
        fclose(f);
        const char *cut = file_in("cut.h5");
        ars_test_write_file(cut, bytes, n > 1200 ? 1200 : n / 2);
        ASSERT_FAILS(load(spec_of("hdf5", cut, NULL), &o, &d), "cut.h5");
        assert_int_equal(d.count, 0);
        assert_null(d.x);
    }
}

/* ---- .npy ------------------------------------------------------------------- */

static void test_npy_round_trip(void **state)
{
    enum { N = 30, F = 4 };
    float x[N * F];
    int32_t labels[N];
    int64_t y[N];
    make_blobs(N, F, x, labels, 3);
    for (int i = 0; i < N; i++) y[i] = labels[i];
    const char *xp = file_in("x.npy"), *yp = file_in("y.npy");
    long long xd[2] = {N, F}, yd[1] = {N};
    npy_put(xp, 1, "<f4", 0, 2, xd, x, sizeof x);
    npy_put(yp, 2, "<i8", 0, 1, yd, y, sizeof y);
    ars_user_options o = options(0);
    ars_dataset d;
    ARS_ASSERT_OK(load(spec_of("npy", xp, yp), &o, &d));
    assert_int_equal(d.count, N);
    assert_int_equal(d.dim, F);
    assert_int_equal(d.classes, 3);
    assert_memory_equal(d.x, x, sizeof x);
    assert_memory_equal(d.labels, labels, sizeof labels);
    ars_dataset_free(&d);
    /* streamed reads the same */
    o.stream = 1;
    ARS_ASSERT_OK(load(spec_of("npy", xp, yp), &o, &d));
    assert_non_null(d.source);
    uint32_t ids[N];
    float back[N * F];
    for (int i = 0; i < N; i++) ids[i] = (uint32_t)(N - 1 - i);
    ARS_ASSERT_OK(ars_dataset_read_x(&d, ids, N, back));
    for (int i = 0; i < N; i++) assert_memory_equal(back + i * F, x + (N - 1 - i) * F, F * sizeof(float));
    ars_dataset_free(&d);

    /* 4-D float64 x -> [C, H, W]; uint8 labels; float32 regression targets */
    double img[6 * 1 * 2 * 3];
    uint8_t small[6] = {0, 1, 1, 0, 3, 2};
    float t[6 * 2];
    for (int i = 0; i < 36; i++) img[i] = i / 4.0;
    for (int i = 0; i < 12; i++) t[i] = 0.5f * i;
    long long id4[4] = {6, 1, 2, 3}, y6[1] = {6}, t62[2] = {6, 2};
    npy_put(xp, 1, "<f8", 0, 4, id4, img, sizeof img);
    npy_put(yp, 1, "|u1", 0, 1, y6, small, sizeof small);
    o.stream = -1;
    ARS_ASSERT_OK(load(spec_of("npy", xp, yp), &o, &d));
    assert_int_equal(d.shape.rank, 3);
    assert_int_equal(d.shape.dims[0] * 100 + d.shape.dims[1] * 10 + d.shape.dims[2], 123);
    assert_int_equal(d.classes, 4);
    for (int i = 0; i < 36; i++) assert_true(d.x[i] == (float)img[i]);
    ars_dataset_free(&d);
    npy_put(yp, 1, "<f4", 0, 2, t62, t, sizeof t);
    o.regression = 1;
    ARS_ASSERT_OK(load(spec_of("npy", xp, yp), &o, &d));
    assert_int_equal(d.target_dim, 2);
    assert_memory_equal(d.targets, t, sizeof t);
    ars_dataset_free(&d);
}

static void test_npy_bad_files_are_refused(void **state)
{
    float x[12] = {0};
    int32_t y[3] = {0, 1, 2};
    long long xd[2] = {3, 4}, yd[1] = {3}, y4[1] = {4};
    const char *xp = file_in("bx.npy"), *yp = file_in("by.npy");
    ars_user_options o = options(0);
    ars_dataset d;
    npy_put(yp, 1, "<i4", 0, 1, yd, y, sizeof y);

    npy_put(xp, 1, "<f4", 1, 2, xd, x, sizeof x);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy: the array is in Fortran order");
    npy_put(xp, 1, ">f4", 0, 2, xd, x, sizeof x);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy: dtype '>f4' is big-endian");
    npy_put(xp, 1, "|O", 0, 2, xd, x, sizeof x);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "(Python objects (pickled))");
    npy_put(xp, 1, "<f2", 0, 2, xd, x, sizeof x);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "float16");
    npy_put(xp, 1, "<f4", 0, 2, xd, x, sizeof x - 4);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy: truncated: shape (3, 4) of '<f4' needs 48 bytes of "
                                                      "data, the file has 44");
    float more[13] = {0};
    npy_put(xp, 1, "<f4", 0, 2, xd, more, sizeof more);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy: 4 extra bytes after the data");
    long long scalar[1] = {0};
    npy_put(xp, 1, "<f4", 0, 0, scalar, x, 4);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "a scalar (shape ())");
    text_put(xp, "x,y\n1,2\n3,4\n5,6\n");
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy: no .npy magic");
    static const char bad_dict[] = "\x93NUMPY\x01\x00\x16\x00{'descr': '<f4', }   \n";
    ars_test_write_file(xp, bad_dict, sizeof bad_dict - 1);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bad .npy header: no 'fortran_order'");

    npy_put(xp, 1, "<f4", 0, 2, xd, x, sizeof x);
    int32_t y4v[4] = {0};
    npy_put(yp, 1, "<i4", 0, 1, y4, y4v, sizeof y4v);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "bx.npy has 3 samples but");
    float fy[3] = {0, 1.5f, 2};
    npy_put(yp, 1, "<f4", 0, 1, yd, fy, sizeof fy);
    ASSERT_FAILS(load(spec_of("npy", xp, yp), &o, &d), "by.npy[1] = 1.5 is not a class label");
    o.regression = 1;   /* as targets it is fine */
    ARS_ASSERT_OK(load(spec_of("npy", xp, yp), &o, &d));
    ars_dataset_free(&d);
}

/* ---- CSV -------------------------------------------------------------------- */

static void test_csv_round_trip(void **state)
{
    const char *path = file_in("iris.csv");
    text_put(path, "\xef\xbb\xbf" "sepal,\"petal width\", species ,extra\r\n"
                   "5.1, 3.5 ,0,1e-3\r\n"
                   "\r\n"
                   "4.9,\"3.0\",2,-2\r\n"
                   "6.2,2.9,1,+4.5\n");
    ars_user_options o = options(0);
    o.label = "species";
    ars_dataset d;
    ARS_ASSERT_OK(load(spec_of("csv", path, NULL), &o, &d));
    assert_int_equal(d.count, 3);
    assert_int_equal(d.dim, 3);
    assert_int_equal(d.classes, 3);
    const float x[9] = {5.1f, 3.5f, 1e-3f, 4.9f, 3.0f, -2, 6.2f, 2.9f, 4.5f};
    assert_memory_equal(d.x, x, sizeof x);
    assert_int_equal(d.labels[0], 0);
    assert_int_equal(d.labels[1], 2);
    assert_int_equal(d.labels[2], 1);
    ars_dataset_free(&d);
    o.label = "extra";   /* regression on another column */
    o.regression = 1;
    ARS_ASSERT_OK(load(spec_of("csv", path, NULL), &o, &d));
    assert_int_equal(d.target_dim, 1);
    assert_true(d.targets[2] == 4.5f);
    assert_true(d.x[2] == 0.0f);   /* species is a feature now */
    ars_dataset_free(&d);
}

static void test_csv_bad_files_are_refused(void **state)
{
    const char *path = file_in("bad.csv");
    ars_user_options o = options(0);
    o.label = "y";
    ars_dataset d;
    text_put(path, "a,b,y\n1,2,0\n3,abc,1\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:3: column 2 ('b'): 'abc' is not a number");
    text_put(path, "a,b,y\n1,2,0\n3,4\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:3: 2 values, expected 3");
    text_put(path, "a,b,y\n1,,0\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:2: column 2 ('b') is empty");
    text_put(path, "a,b,y\n1,nan,0\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:2: column 2 ('b'): 'nan' is not finite");
    text_put(path, "a,b,y\n1,1e39,0\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "'1e39' is beyond float range");
    text_put(path, "a,b,label\n1,2,0\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:1: no column 'y' for the labels (the header "
                                                         "has: a, b, label)");
    text_put(path, ",a,y\n0,1,2\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "column 1 has no name (a pandas index?");
    text_put(path, "a,a,y\n0,1,2\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "two columns are named 'a'");
    text_put(path, "a,b,y\n1,2,0\n1,2,2.5\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:3: column 'y' = 2.5 is not a class label");
    text_put(path, "a,b,y\n1,\"2,0\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "bad.csv:2: field 2: a quote that is not closed");
    text_put(path, "a,b,y\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "a header but no rows");
    text_put(path, "");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "empty file");
    text_put(path, "y\n1\n");
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "no features");
    o.label = NULL;
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "needs the name of its label column");
    o.label = "y";
    o.stream = 1;
    ASSERT_FAILS(load(spec_of("csv", path, NULL), &o, &d), "a CSV file is read into memory");
}

/* ---- the validation split ------------------------------------------------------ */

static void test_validation_split_is_deterministic_and_disjoint(void **state)
{
    enum { N = 101 };
    uint8_t a[N], b[N], c[N];
    assert_int_equal(ars_validation_marks(N, 0.2, 42, a), 20);
    assert_int_equal(ars_validation_marks(N, 0.2, 42, b), 20);
    assert_int_equal(ars_validation_marks(N, 0.2, 43, c), 20);
    assert_memory_equal(a, b, N);
    assert_true(memcmp(a, c, N) != 0);
    ASSERT_FAILS(ars_validation_marks(N, 0.001, 1, a), "validation = 0.001 of 101 samples is 0");
    ASSERT_FAILS(ars_validation_marks(N, 1.0, 1, a), "expected a fraction in (0, 1)");

    /* the split of an in-memory set: x row i holds i, so ids can be followed */
    ars_dataset d = {0}, v;
    snprintf(d.name, sizeof d.name, "rows");
    d.count = N;
    d.dim = 2;
    d.x = malloc(sizeof(float) * 2 * N);
    d.labels = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++) {
        d.x[2 * i] = (float)i;
        d.x[2 * i + 1] = -(float)i;
        d.labels[i] = i % 4;
    }
    d.classes = 4;
    ARS_ASSERT_OK(ars_dataset_validation_split(&d, 0.2, 42, &v));
    assert_int_equal(d.count, N - 20);
    assert_int_equal(v.count, 20);
    assert_int_equal(v.classes, 4);
    int seen[N] = {0};
    for (int i = 0; i < d.count; i++) seen[(int)d.x[2 * i]] += 1;
    for (int i = 0; i < v.count; i++) {
        int row = (int)v.x[2 * i];
        seen[row] += 2;
        assert_int_equal(a[row], 1);   /* the marked rows */
        assert_int_equal(v.labels[i], row % 4);
        assert_true(v.x[2 * i + 1] == -(float)row);
        if (i) assert_true(v.x[2 * i] > v.x[2 * i - 2]);   /* file order kept */
    }
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], a[i] ? 2 : 1);   /* disjoint, complete */
    ars_dataset_free(&d);
    ars_dataset_free(&v);
}

/* ---- [run] keys and ars_train ---------------------------------------------------- */

static int run_text(const char *text, ars_run_config *run, ars_layer_spec **specs, int *count, ars_config *config)
{
    int rc = ars_config_load_string(config, text, "test.cfg");
    if (!rc) rc = ars_config_expand(config);
    if (!rc) rc = ars_run_config_load(config, run, specs, count);
    return rc;
}

static int train_text(const char *text, ars_train_result *result)
{
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    int rc = run_text(text, &run, &specs, &count, &config);
    ars_train_options options = {.quiet = 1};
    if (!rc) rc = ars_train(&run, specs, count, NULL, &options, result);
    free(specs);
    ars_config_free(&config);
    return rc;
}

static void expect_config_error(const char *text, const char *fragment)
{
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    int rc = run_text(text, &run, &specs, &count, &config);
    free(specs);
    ars_config_free(&config);
    if (rc == 0) fail_msg("the run file loaded, expected an error containing '%s'", fragment);
    if (!strstr(ars_error_message(), fragment))
        fail_msg("error '%s' does not contain '%s'", ars_error_message(), fragment);
}

static void test_run_keys_are_checked(void **state)
{
    expect_config_error("[run]\ndata = csv:a.csv\n[dense]\nunits = 3\n", "a CSV file needs label = <the name");
    expect_config_error("[run]\ndata = npy:a.npy\n[dense]\nunits = 3\n", "test.cfg:2: [run] data: 'npy:a.npy'");
    expect_config_error("[run]\ndata = hdf5:a.h5\nvalidation = 1\n[dense]\nunits = 3\n",
                        "[run] validation = 1: expected a fraction in [0, 1)");
    expect_config_error("[run]\ndata = hdf5:a.h5\nvalidation = 0.1\ntest_data = hdf5:b.h5\n[dense]\nunits = 3\n",
                        "validation = 0.1 and test_data are both set");
    expect_config_error("[run]\ndata = hdf5:a.h5\nlabel = y\n[dense]\nunits = 3\n", "test.cfg:3: [run] unknown key "
                        "'label'");
    expect_config_error("[run]\ndata = spirals\nstream_data = true\n[dense]\nunits = 3\n", "unknown key 'stream_data'");
    expect_config_error("[run]\ndata = parquet:a\n[dense]\nunits = 3\n", "hdf5:PATH, csv:PATH, npy:XPATH,YPATH");
    expect_config_error("[run]\ndata = hdf5:a.h5\nstream_data = maybe\n[dense]\nunits = 3\n", "stream_data");

    /* no evaluation set: said how to get one */
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    const char *xp = file_in("k.npy"), *yp = file_in("ky.npy");
    float x[8] = {0};
    int32_t y[4] = {0, 1, 0, 1};
    long long xd[2] = {4, 2}, yd[1] = {4};
    npy_put(xp, 1, "<f4", 0, 2, xd, x, sizeof x);
    npy_put(yp, 1, "<i4", 0, 1, yd, y, sizeof y);
    char text[2000];
    snprintf(text, sizeof text, "[run]\ndata = npy:%s,%s\n[dense]\nunits = 2\n", xp, yp);
    ARS_ASSERT_OK(run_text(text, &run, &specs, &count, &config));
    ars_dataset train, test;
    ASSERT_FAILS(ars_load_run_data(&run, 0, 0, &train, &test), "has no test part: set [run] validation = 0.1");
    assert_non_null(strstr(ars_error_message(), "rank 0 on host"));
    assert_null(train.x);
    run.validation = 0.25;
    ARS_ASSERT_OK(ars_load_run_data(&run, 0, 0, &train, &test));
    assert_int_equal(train.count, 3);
    assert_int_equal(test.count, 1);
    ars_dataset_free(&train);
    ars_dataset_free(&test);
    free(specs);
    ars_config_free(&config);
}

static const char *const mlp = "[dense]\nunits = 32\ninit = he_normal\nactivation = relu\n[dense]\nunits = 3\n";

/* A 3-class set in every format, learned well above chance (1/3). */
static void test_training_on_each_format(void **state)
{
    enum { N = 600, F = 8, NT = 150 };
    float *x = malloc(sizeof(float) * (N + NT) * F);
    int32_t *y = malloc(sizeof(int32_t) * (N + NT));
    make_blobs(N + NT, F, x, y, 21);
    const char *h5 = file_in("train.h5"), *tx = file_in("tx.npy"), *ty = file_in("ty.npy");
    const char *csv = file_in("train.csv"), *csv_test = file_in("test.csv");
    hsize_t xd[2] = {N, F}, yd[1] = {N};
    h5_put(h5, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 32);
    h5_put(h5, 0, "y", H5T_STD_I16LE, H5T_NATIVE_INT32, 1, yd, y, 0);
    xd[0] = yd[0] = NT;
    h5_put(h5, 0, "x_test", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x + N * F, 0);
    h5_put(h5, 0, "y_test", H5T_STD_I16LE, H5T_NATIVE_INT32, 1, yd, y + N, 0);
    long long nxd[2] = {N, F}, nyd[1] = {N};
    npy_put(tx, 1, "<f4", 0, 2, nxd, x, sizeof(float) * N * F);
    npy_put(ty, 1, "<i4", 0, 1, nyd, y, sizeof(int32_t) * N);
    for (int part = 0; part < 2; part++) {
        FILE *f = fopen(part ? csv_test : csv, "w");
        assert_non_null(f);
        fprintf(f, "f0,f1,f2,f3,f4,f5,f6,f7,class\n");
        for (int i = part ? N : 0; i < (part ? N + NT : N); i++) {
            for (int j = 0; j < F; j++) fprintf(f, "%.9g,", x[i * F + j]);
            fprintf(f, "%d\n", y[i]);
        }
        fclose(f);
    }
    struct {
        const char *what;
        char run[3000];
        int test_count;
    } cases[5];
    snprintf(cases[0].run, sizeof cases[0].run, "data = hdf5:%s", h5);
    cases[0].what = "hdf5, x_test";
    cases[0].test_count = NT;
    snprintf(cases[1].run, sizeof cases[1].run, "data = hdf5:%s\nstream_data = true", h5);
    cases[1].what = "hdf5 streamed";
    cases[1].test_count = NT;
    snprintf(cases[2].run, sizeof cases[2].run, "data = npy:%s,%s\nvalidation = 0.2", tx, ty);
    cases[2].what = "npy, validation 0.2";
    cases[2].test_count = N / 5;
    snprintf(cases[3].run, sizeof cases[3].run, "data = csv:%s\nlabel = class\ntest_data = csv:%s", csv, csv_test);
    cases[3].what = "csv, test_data";
    cases[3].test_count = NT;
    snprintf(cases[4].run, sizeof cases[4].run, "data = npy:%s,%s\ntest_data = hdf5:%s\nstream_data = true", tx, ty,
             h5);
    cases[4].what = "npy streamed, test_data hdf5 (its x, y)";
    cases[4].test_count = N;
    double losses[5];
    for (int c = 0; c < 5; c++) {
        char text[6000];
        snprintf(text, sizeof text, "[run]\n%s\nepochs = 3\nbatch = 32\nseed = 4\nlr = 0.01\n%s", cases[c].run, mlp);
        ars_train_result result;
        ARS_ASSERT_OK(train_text(text, &result));
        printf("%s: test accuracy %.3f after %lld steps\n", cases[c].what, result.test_accuracy,
               (long long)result.steps);
        assert_true(result.test_accuracy > 0.9);
        losses[c] = result.test_loss;
    }
    /* streamed rows are the same floats, standardized alike: the same run, bit for bit */
    assert_true(losses[0] == losses[1]);
    free(x);
    free(y);
}

static void test_training_regression_and_images(void **state)
{
    /* regression: y = sum of x, float targets [N], loss = mse */
    enum { N = 400, F = 4 };
    float x[N * F], t[N];
    ars_rng_normal(x, N * F, 0, 1, 8, 3, 0);
    for (int i = 0; i < N; i++) t[i] = x[i * F] + x[i * F + 1] - 0.5f * x[i * F + 3];
    const char *h5 = file_in("reg-train.h5");
    hsize_t xd[2] = {N, F}, yd[1] = {N};
    h5_put(h5, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    h5_put(h5, 0, "y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, yd, t, 0);
    char text[2000];
    snprintf(text, sizeof text, "[run]\ndata = hdf5:%s\nvalidation = 0.25\nloss = mse\nstandardize = false\n"
             "epochs = 15\nbatch = 16\nseed = 2\nlr = 0.01\n[dense]\nunits = 16\nactivation = tanh\n[dense]\n"
             "units = 1\n", h5);
    ars_train_result result;
    ARS_ASSERT_OK(train_text(text, &result));
    printf("hdf5 regression: validation mse %.4f (the targets' variance is 2.25)\n", result.test_loss);
    assert_true(result.test_loss < 0.1);

    /* images [N, 1, 6, 6]: a bright bar, horizontal (class 0) or vertical (1), conv2d on the [1, 6, 6] shape */
    enum { M = 200, S = 6 };
    float *img = calloc((size_t)M * S * S, sizeof(float));
    int32_t labels[M];
    for (int i = 0; i < M; i++) {
        labels[i] = i % 2;
        int at = (i / 2) % S;
        for (int k = 0; k < S; k++) img[i * S * S + (labels[i] ? k * S + at : at * S + k)] = 1.0f;
    }
    const char *ih5 = file_in("img-train.h5");
    hsize_t id[4] = {M, 1, S, S}, ld[1] = {M};
    h5_put(ih5, 1, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, id, img, 0);
    h5_put(ih5, 0, "y", H5T_STD_U8LE, H5T_NATIVE_INT32, 1, ld, labels, 0);
    snprintf(text, sizeof text, "[run]\ndata = hdf5:%s\nvalidation = 0.2\nepochs = 4\nbatch = 16\nseed = 1\n"
             "lr = 0.01\naugment_flip = true\n[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\nactivation = relu\n"
             "[global_avgpool]\n[dense]\nunits = 2\n", ih5);
    ARS_ASSERT_OK(train_text(text, &result));
    printf("hdf5 images [1, 6, 6]: validation accuracy %.3f\n", result.test_accuracy);
    assert_true(result.test_accuracy >= 0.0);   /* it trains on the image shape; learning is not the point */
    free(img);
}

/* A built-in set with a validation split: the held-out part is evaluated. */
static void test_validation_on_a_builtin_set(void **state)
{
    ars_train_result result;
    ARS_ASSERT_OK(train_text("[run]\ndata = spirals\ntrain_samples = 1000\ntest_samples = 100\nvalidation = 0.3\n"
                             "epochs = 1\nbatch = 50\n[dense]\nunits = 3\n", &result));
    assert_int_equal(result.steps, 14);   /* 700 training samples left, batches of 50 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_specs_parse),
        cmocka_unit_test(test_hdf5_round_trip),
        cmocka_unit_test(test_hdf5_image_shape_and_types),
        cmocka_unit_test(test_hdf5_regression_targets),
        cmocka_unit_test(test_hdf5_streamed_equals_memory),
        cmocka_unit_test(test_hdf5_bad_files_are_refused),
        cmocka_unit_test(test_npy_round_trip),
        cmocka_unit_test(test_npy_bad_files_are_refused),
        cmocka_unit_test(test_csv_round_trip),
        cmocka_unit_test(test_csv_bad_files_are_refused),
        cmocka_unit_test(test_validation_split_is_deterministic_and_disjoint),
        cmocka_unit_test(test_run_keys_are_checked),
        cmocka_unit_test(test_training_on_each_format),
        cmocka_unit_test(test_training_regression_and_images),
        cmocka_unit_test(test_validation_on_a_builtin_set),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
