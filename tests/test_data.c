/* test_data: the IDX reader (valid and broken files, gzip and plain), the
 * MNIST loader, standardization, the sampler's sharding invariants and the
 * synthetic sets. Test files are written at run time into a temp dir. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "arsenal/data.h"
#include "arsenal/error.h"

/* ---- helpers -------------------------------------------------------------- */

#define ASSERT_ERROR(expr, code, fragment)                                          \
    do {                                                                            \
        int rc_ = (expr);                                                           \
        if (rc_ != (code))                                                          \
            fail_msg("%s returned %d, expected %d (message: %s)", #expr, rc_, (code), \
                     ars_error_message());                                          \
        if (!strstr(ars_error_message(), (fragment)))                               \
            fail_msg("%s: message '%s' lacks '%s'", #expr, ars_error_message(),     \
                     (fragment));                                                   \
    } while (0)

typedef struct fixture {
    char dir[512];
} fixture;

static int setup_dir(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    ars_test_tempdir(f->dir, sizeof f->dir, "data");
    *state = f;
    return 0;
}

static int teardown_dir(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        char path[1024];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
            if (unlink(path) != 0) rmdir(path);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void join(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_gzip(const char *path, const void *bytes, size_t size)
{
    gzFile g = gzopen(path, "wb");
    if (!g) fail_msg("gzopen %s failed", path);
    if (size && gzwrite(g, bytes, (unsigned)size) != (int)size) fail_msg("gzwrite %s failed", path);
    if (gzclose(g) != Z_OK) fail_msg("gzclose %s failed", path);
}

/* An IDX file: magic 00 00 type ndim, dims, then payload_size bytes of
 * payload (i * 7 + 3 mod 256 when payload is NULL) and `extra` more bytes. */
static void write_idx(const char *path, int gz, int type, int ndim, const uint32_t *dims,
                      const uint8_t *payload, size_t payload_size, size_t extra)
{
    size_t head = 4 + 4 * (size_t)ndim, size = head + payload_size + extra;
    uint8_t *bytes = malloc(size);
    assert_non_null(bytes);
    bytes[0] = 0;
    bytes[1] = 0;
    bytes[2] = (uint8_t)type;
    bytes[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        bytes[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        bytes[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        bytes[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        bytes[7 + 4 * i] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < payload_size + extra; i++)
        bytes[head + i] = payload && i < payload_size ? payload[i] : (uint8_t)(i * 7 + 3);
    if (gz) write_gzip(path, bytes, size);
    else ars_test_write_file(path, bytes, size);
    free(bytes);
}

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    fseek(file, 0, SEEK_END);
    long n = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)n + 1);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, (size_t)n, file), (size_t)n);
    fclose(file);
    *size = (size_t)n;
    return bytes;
}

/* ---- IDX: valid files ----------------------------------------------------- */

static void check_valid_idx(const char *path)
{
    ars_idx idx;
    ARS_ASSERT_OK(ars_idx_read(path, &idx));
    assert_int_equal(idx.ndim, 3);
    assert_int_equal(idx.dims[0], 2);
    assert_int_equal(idx.dims[1], 3);
    assert_int_equal(idx.dims[2], 4);
    assert_int_equal(idx.count, 24);
    for (size_t i = 0; i < 24; i++) assert_int_equal(idx.data[i], (uint8_t)(i * 7 + 3));
    ars_idx_free(&idx);
    assert_null(idx.data);
}

static void test_idx_plain(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[3] = {2, 3, 4};
    join(path, sizeof path, f->dir, "a.idx");
    write_idx(path, 0, 0x08, 3, dims, NULL, 24, 0);
    check_valid_idx(path);
}

static void test_idx_gzip(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[3] = {2, 3, 4};
    join(path, sizeof path, f->dir, "a.idx.gz");
    write_idx(path, 1, 0x08, 3, dims, NULL, 24, 0);
    check_valid_idx(path);

    /* 1-D and 4-D, a payload larger than the reader's first chunk. */
    uint32_t one[1] = {3000000};
    write_idx(path, 1, 0x08, 1, one, NULL, 3000000, 0);
    ars_idx idx;
    ARS_ASSERT_OK(ars_idx_read(path, &idx));
    assert_int_equal(idx.ndim, 1);
    assert_int_equal(idx.count, 3000000);
    assert_int_equal(idx.data[2999999], (uint8_t)(2999999u * 7 + 3));
    ars_idx_free(&idx);
    uint32_t four[4] = {1, 2, 1, 3};
    write_idx(path, 0, 0x08, 4, four, NULL, 6, 0);
    ARS_ASSERT_OK(ars_idx_read(path, &idx));
    assert_int_equal(idx.ndim, 4);
    assert_int_equal(idx.count, 6);
    ars_idx_free(&idx);
}

/* ---- IDX: broken files ---------------------------------------------------- */

static void test_idx_truncated(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[2] = {2, 5};
    ars_idx idx;
    for (int gz = 0; gz < 2; gz++) {
        join(path, sizeof path, f->dir, gz ? "t.idx.gz" : "t.idx");
        write_idx(path, gz, 0x08, 2, dims, NULL, 7, 0);
        ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "expected 10 bytes of data, file has 7");
        assert_non_null(strstr(ars_error_message(), path));
        assert_null(idx.data);
    }
    /* A header claiming 10^10 bytes over an empty payload: reported, not
     * allocated. */
    uint32_t huge[2] = {100000, 100000};
    write_idx(path, 0, 0x08, 2, huge, NULL, 0, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT,
                 "expected 10000000000 bytes of data, file has 0");
}

static void test_idx_header_truncated(void **state)
{
    fixture *f = *state;
    char path[1024];
    ars_idx idx;
    join(path, sizeof path, f->dir, "h.idx");
    ars_test_write_file(path, "", 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "empty file");
    ars_test_write_file(path, "\0\0", 2);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "expected 4 bytes, file has 2");
    const uint8_t head[9] = {0, 0, 8, 3, 0, 0, 0, 1, 0};
    ars_test_write_file(path, head, sizeof head);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT,
                 "expected 12 bytes of dimensions, file has 5");
}

static void test_idx_trailing(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[1] = {4};
    ars_idx idx;
    for (int gz = 0; gz < 2; gz++) {
        join(path, sizeof path, f->dir, gz ? "x.idx.gz" : "x.idx");
        write_idx(path, gz, 0x08, 1, dims, NULL, 4, 3);
        ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "3 extra bytes after the data");
        assert_null(idx.data);
    }
}

static void test_idx_bad_magic(void **state)
{
    fixture *f = *state;
    char path[1024];
    ars_idx idx;
    join(path, sizeof path, f->dir, "m.idx");
    ars_test_write_file(path, "hello, world\n", 13);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "bad magic");
    assert_non_null(strstr(ars_error_message(), "found 68 65"));
    const uint8_t head[8] = {0, 1, 8, 1, 0, 0, 0, 0};
    ars_test_write_file(path, head, sizeof head);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "expected 00 00");
}

static void test_idx_bad_type(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[1] = {2};
    ars_idx idx;
    join(path, sizeof path, f->dir, "ty.idx");
    write_idx(path, 0, 0x0D, 1, dims, NULL, 8, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "type 0x0d (32-bit float)");
    assert_non_null(strstr(ars_error_message(), "expected 0x08"));
    write_idx(path, 0, 0x42, 1, dims, NULL, 2, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "0x42 (unknown type)");
}

static void test_idx_bad_rank(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[5] = {1, 1, 1, 1, 1};
    ars_idx idx;
    join(path, sizeof path, f->dir, "r.idx");
    write_idx(path, 0, 0x08, 0, dims, NULL, 1, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "rank 0: expected 1 to 4 dimensions");
    write_idx(path, 0, 0x08, 5, dims, NULL, 1, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "rank 5");
}

static void test_idx_bad_dims(void **state)
{
    fixture *f = *state;
    char path[1024];
    ars_idx idx;
    join(path, sizeof path, f->dir, "z.idx");
    uint32_t zero[3] = {2, 0, 4};
    write_idx(path, 0, 0x08, 3, zero, NULL, 0, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "dimension 2 of 3 is 0, expected > 0");
    uint32_t big[4] = {0x7fffffffu, 0x7fffffffu, 0x7fffffffu, 0x7fffffffu};
    write_idx(path, 0, 0x08, 4, big, NULL, 0, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "overflow");
    uint32_t wide[1] = {0x80000000u};
    write_idx(path, 0, 0x08, 1, wide, NULL, 0, 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "expected at most 2147483647");
}

static void test_idx_corrupt_gzip(void **state)
{
    fixture *f = *state;
    char path[1024];
    uint32_t dims[2] = {100, 100};
    ars_idx idx;
    join(path, sizeof path, f->dir, "c.idx.gz");
    write_idx(path, 1, 0x08, 2, dims, NULL, 10000, 0);
    size_t size;
    uint8_t *bytes = read_whole(path, &size);
    assert_true(size > 30);

    /* The CRC-32 in the gzip trailer (the last 8 bytes: CRC, length). */
    bytes[size - 8] ^= 0xff;
    ars_test_write_file(path, bytes, size);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "corrupt gzip data: incorrect data check");
    bytes[size - 8] ^= 0xff;

    /* The stream cut short. */
    ars_test_write_file(path, bytes, size / 2);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EFORMAT, "gzip stream truncated");

    /* Garbage in the deflate data: some error, never a crash. */
    for (size_t i = 12; i < size - 8; i += 5) bytes[i] ^= 0x5a;
    ars_test_write_file(path, bytes, size);
    int rc = ars_idx_read(path, &idx);
    assert_int_equal(rc, ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), path));
    assert_null(idx.data);
    free(bytes);
}

static void test_idx_missing(void **state)
{
    fixture *f = *state;
    char path[1024];
    ars_idx idx;
    join(path, sizeof path, f->dir, "nope.idx");
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EIO, "nope.idx: cannot open: No such file");
    ASSERT_ERROR(ars_idx_read(f->dir, &idx), ARS_EIO, "is a directory");
    ASSERT_ERROR(ars_idx_read("", &idx), ARS_EINVAL, "empty path");
    /* a FIFO nobody writes to is refused at once, not waited on */
    join(path, sizeof path, f->dir, "fifo.idx");
    assert_int_equal(mkfifo(path, 0600), 0);
    ASSERT_ERROR(ars_idx_read(path, &idx), ARS_EIO, "fifo.idx: is a FIFO (named pipe), expected an IDX file");
    unlink(path);
    ASSERT_ERROR(ars_idx_read("/dev/null", &idx), ARS_EIO, "/dev/null: is a character device");
}

/* ---- MNIST loader --------------------------------------------------------- */

/* count images of 2 x 3 pixels (pixel j of image i = 10 i + j) and labels
 * i % 4 under <prefix>-...; gz selects compression. */
static void write_tiny_mnist(const char *dir, const char *prefix, int gz, int images, int labels)
{
    char path[1024], name[128];
    uint8_t pixels[64 * 6], classes[64];
    for (int i = 0; i < images * 6; i++) pixels[i] = (uint8_t)(10 * (i / 6) + i % 6);
    for (int i = 0; i < labels; i++) classes[i] = (uint8_t)(i % 4);
    uint32_t image_dims[3] = {(uint32_t)images, 2, 3}, label_dims[1] = {(uint32_t)labels};
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    join(path, sizeof path, dir, name);
    write_idx(path, gz, 0x08, 3, image_dims, pixels, (size_t)images * 6, 0);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    join(path, sizeof path, dir, name);
    write_idx(path, gz, 0x08, 1, label_dims, classes, (size_t)labels, 0);
}

static void test_mnist_tiny(void **state)
{
    fixture *f = *state;
    write_tiny_mnist(f->dir, "train", 1, 6, 6);
    write_tiny_mnist(f->dir, "t10k", 0, 3, 3);

    ars_dataset d;
    ARS_ASSERT_OK(ars_mnist_load(f->dir, "train", 0, &d));
    assert_int_equal(d.count, 6);
    assert_int_equal(d.dim, 6);
    assert_int_equal(d.classes, 4);
    assert_null(d.targets);
    assert_non_null(strstr(d.name, "/train"));
    for (int i = 0; i < 6; i++) {
        assert_int_equal(d.labels[i], i % 4);
        for (int j = 0; j < 6; j++)
            assert_float_equal(d.x[i * 6 + j], (10 * i + j) / 255.0f, 1e-7);
    }
    ars_dataset_free(&d);
    assert_null(d.x);

    /* Plain files; limit keeps a prefix, classes still from the whole file. */
    ARS_ASSERT_OK(ars_mnist_load(f->dir, "t10k", 2, &d));
    assert_int_equal(d.count, 2);
    assert_int_equal(d.classes, 3);
    assert_float_equal(d.x[6], 10 / 255.0f, 1e-7);
    ars_dataset_free(&d);
}

static void test_mnist_errors(void **state)
{
    fixture *f = *state;
    ars_dataset d;
    ASSERT_ERROR(ars_mnist_load(f->dir, "train", 0, &d), ARS_EIO,
                 "neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte found");
    ASSERT_ERROR(ars_mnist_load(f->dir, "valid", 0, &d), ARS_EINVAL, "expected train or t10k");

    write_tiny_mnist(f->dir, "train", 1, 5, 4);
    ASSERT_ERROR(ars_mnist_load(f->dir, "train", 0, &d), ARS_EFORMAT, "has 5 images but");
    assert_non_null(strstr(ars_error_message(), "has 4 labels"));
    assert_null(d.x);

    /* Images that are not 3-D. */
    char path[1024];
    uint32_t flat[2] = {4, 6};
    join(path, sizeof path, f->dir, "t10k-images-idx3-ubyte");
    write_idx(path, 0, 0x08, 2, flat, NULL, 24, 0);
    uint32_t count[1] = {4};
    join(path, sizeof path, f->dir, "t10k-labels-idx1-ubyte");
    write_idx(path, 0, 0x08, 1, count, NULL, 4, 0);
    ASSERT_ERROR(ars_mnist_load(f->dir, "t10k", 0, &d), ARS_EFORMAT,
                 "images must be 3-D [count, rows, cols], found 2-D");

    /* An error inside a file names that file. */
    join(path, sizeof path, f->dir, "t10k-labels-idx1-ubyte");
    write_idx(path, 0, 0x08, 1, count, NULL, 3, 0);
    ASSERT_ERROR(ars_mnist_load(f->dir, "t10k", 0, &d), ARS_EFORMAT,
                 "t10k-labels-idx1-ubyte: truncated");
}

static void test_fashion_mnist(void **state)
{
    (void)state;
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte.gz", ARS_FASHION_MNIST_DIR);
    if (access(probe, R_OK) != 0) skip();

    static const int expect_count[2] = {60000, 10000};
    static const char *const prefixes[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        ars_dataset d;
        ARS_ASSERT_OK(ars_mnist_load(ARS_FASHION_MNIST_DIR, prefixes[s], 0, &d));
        assert_int_equal(d.count, expect_count[s]);
        assert_int_equal(d.dim, 784);
        assert_int_equal(d.classes, 10);
        int bad;
        assert_int_equal(ars_dataset_find_nonfinite(&d, &bad), 0);
        float lo = 1, hi = 0;
        for (size_t i = 0; i < (size_t)d.count * d.dim; i++) {
            if (d.x[i] < lo) lo = d.x[i];
            if (d.x[i] > hi) hi = d.x[i];
        }
        assert_true(lo == 0.0f && hi == 1.0f);
        /* Fashion-MNIST is balanced: count / 10 per class. */
        int per_class[10] = {0};
        for (int i = 0; i < d.count; i++) per_class[d.labels[i]]++;
        for (int c = 0; c < 10; c++) assert_int_equal(per_class[c], expect_count[s] / 10);
        ars_dataset_free(&d);
    }
}

/* ---- statistics ----------------------------------------------------------- */

static void test_standardize(void **state)
{
    (void)state;
    ars_dataset d;
    ARS_ASSERT_OK(ars_dataset_blobs(&d, 1000, 3, 5, 0.7f, 11));
    for (size_t i = 0; i < (size_t)d.count * d.dim; i++) d.x[i] = 3.0f * d.x[i] + 40.0f;
    double mean, std;
    ars_dataset_mean_std(&d, &mean, &std);
    assert_true(fabs(mean - 40.0) < 10.0 && std > 1.0);
    ars_dataset_standardize(&d, mean, std);
    ars_dataset_mean_std(&d, &mean, &std);
    assert_true(fabs(mean) < 1e-5);
    assert_true(fabs(std - 1.0) < 1e-5);
    ars_dataset_free(&d);

    /* Constant data: std 0, standardize shifts without dividing by zero. */
    ARS_ASSERT_OK(ars_dataset_blobs(&d, 10, 2, 2, 0.0f, 1));
    for (int i = 0; i < 20; i++) d.x[i] = 2.5f;
    ars_dataset_mean_std(&d, &mean, &std);
    assert_float_equal(mean, 2.5, 1e-12);
    assert_float_equal(std, 0.0, 1e-12);
    ars_dataset_standardize(&d, mean, std);
    int bad;
    assert_int_equal(ars_dataset_find_nonfinite(&d, &bad), 0);
    assert_float_equal(d.x[7], 0.0, 1e-12);
    ars_dataset_free(&d);
}

static void test_find_nonfinite(void **state)
{
    (void)state;
    ars_dataset d;
    int bad = 123;
    ARS_ASSERT_OK(ars_dataset_teacher(&d, 20, 3, 4, 2, 5));
    assert_int_equal(ars_dataset_find_nonfinite(&d, &bad), 0);
    assert_int_equal(bad, -1);
    d.targets[9 * 2 + 1] = INFINITY;
    d.x[12 * 3] = NAN;
    assert_int_equal(ars_dataset_find_nonfinite(&d, &bad), 1);
    assert_int_equal(bad, 9);
    d.targets[9 * 2 + 1] = 0.0f;
    assert_int_equal(ars_dataset_find_nonfinite(&d, &bad), 1);
    assert_int_equal(bad, 12);
    ars_dataset_free(&d);
}

/* ---- sampler -------------------------------------------------------------- */

/* Checks every row of a filled batch against the data set it came from. */
static void check_rows(const ars_dataset *d, const ars_batch *b)
{
    for (int r = 0; r < b->rows; r++) {
        uint32_t id = b->ids[r];
        assert_true(id < (uint32_t)d->count);
        assert_memory_equal(b->x + (size_t)r * d->dim, d->x + (size_t)id * d->dim,
                            (size_t)d->dim * sizeof(float));
        if (d->labels) assert_int_equal(b->labels[r], d->labels[id]);
        if (d->targets)
            assert_memory_equal(b->targets + (size_t)r * d->target_dim,
                                d->targets + (size_t)id * d->target_dim,
                                (size_t)d->target_dim * sizeof(float));
    }
}

static void test_sampler_covers_epoch(void **state)
{
    (void)state;
    enum { COUNT = 23, BATCH = 5 };
    ars_dataset d;
    ARS_ASSERT_OK(ars_dataset_spirals(&d, COUNT, 3, 0.1f, 7));
    for (int world = 1; world <= 3; world++) {
        for (int epoch = 0; epoch < 3; epoch++) {
            int seen[COUNT] = {0};
            for (int rank = 0; rank < world; rank++) {
                ars_sampler s;
                ars_batch b;
                ARS_ASSERT_OK(ars_sampler_create(&s, &d, BATCH, rank, world, 99, 1));
                assert_int_equal(ars_sampler_steps_per_epoch(&s), 5);
                assert_int_equal(s.local_capacity, (BATCH + world - 1) / world);
                ARS_ASSERT_OK(ars_batch_alloc(&b, &s));
                for (int step = 0; step < 5; step++) {
                    ARS_ASSERT_OK(ars_sampler_fill(&s, epoch, step, &b));
                    /* The last global batch is the partial one, kept. */
                    assert_int_equal(b.global_rows, step < 4 ? BATCH : COUNT - 4 * BATCH);
                    assert_true(b.rows <= s.local_capacity);
                    check_rows(&d, &b);
                    for (int r = 0; r < b.rows; r++) seen[b.ids[r]]++;
                }
                ars_batch_free(&b);
                ars_sampler_destroy(&s);
            }
            for (int i = 0; i < COUNT; i++) assert_int_equal(seen[i], 1);
        }
    }
    ars_dataset_free(&d);
}

/* The global batch is the same whatever the world size: the rank shards of
 * world N, concatenated in rank order, are world 1's batch. */
static void test_sampler_shards_union(void **state)
{
    (void)state;
    enum { COUNT = 31, BATCH = 7 };
    ars_dataset d;
    ARS_ASSERT_OK(ars_dataset_teacher(&d, COUNT, 3, 4, 2, 3));
    ars_sampler whole;
    ars_batch wb;
    ARS_ASSERT_OK(ars_sampler_create(&whole, &d, BATCH, 0, 1, 5, 1));
    ARS_ASSERT_OK(ars_batch_alloc(&wb, &whole));
    assert_null(wb.labels);
    assert_non_null(wb.targets);
    for (int world = 2; world <= 4; world++) {
        ars_sampler s[4];
        ars_batch b[4];
        for (int r = 0; r < world; r++) {
            ARS_ASSERT_OK(ars_sampler_create(&s[r], &d, BATCH, r, world, 5, 1));
            ARS_ASSERT_OK(ars_batch_alloc(&b[r], &s[r]));
        }
        for (int epoch = 0; epoch < 2; epoch++) {
            for (int step = 0; step < ars_sampler_steps_per_epoch(&whole); step++) {
                ARS_ASSERT_OK(ars_sampler_fill(&whole, epoch, step, &wb));
                int at = 0;
                for (int r = 0; r < world; r++) {
                    ARS_ASSERT_OK(ars_sampler_fill(&s[r], epoch, step, &b[r]));
                    assert_int_equal(b[r].global_rows, wb.global_rows);
                    check_rows(&d, &b[r]);
                    for (int k = 0; k < b[r].rows; k++) assert_int_equal(b[r].ids[k], wb.ids[at++]);
                }
                assert_int_equal(at, wb.rows);
            }
        }
        for (int r = 0; r < world; r++) {
            ars_batch_free(&b[r]);
            ars_sampler_destroy(&s[r]);
        }
    }
    ars_batch_free(&wb);
    ars_sampler_destroy(&whole);
    ars_dataset_free(&d);
}

static int rows_for(const ars_dataset *d, int batch, int rank, int world, int step)
{
    ars_sampler s;
    ars_batch b;
    ARS_ASSERT_OK(ars_sampler_create(&s, d, batch, rank, world, 1, 1));
    ARS_ASSERT_OK(ars_batch_alloc(&b, &s));
    ARS_ASSERT_OK(ars_sampler_fill(&s, 0, step, &b));
    int rows = b.rows;
    ars_batch_free(&b);
    ars_sampler_destroy(&s);
    return rows;
}

static void test_sampler_zero_rows(void **state)
{
    (void)state;
    ars_dataset d;
    ARS_ASSERT_OK(ars_dataset_blobs(&d, 13, 2, 3, 1.0f, 2));
    /* B = 5 over 3 ranks: L = 2; the last batch has 3 rows: 2, 1, 0. */
    assert_int_equal(rows_for(&d, 5, 0, 3, 0), 2);
    assert_int_equal(rows_for(&d, 5, 2, 3, 0), 1);
    assert_int_equal(rows_for(&d, 5, 0, 3, 2), 2);
    assert_int_equal(rows_for(&d, 5, 1, 3, 2), 1);
    assert_int_equal(rows_for(&d, 5, 2, 3, 2), 0);
    /* More ranks than rows: L = 1, ranks 5 and 6 always empty. */
    assert_int_equal(rows_for(&d, 5, 4, 7, 0), 1);
    assert_int_equal(rows_for(&d, 5, 5, 7, 0), 0);
    assert_int_equal(rows_for(&d, 5, 6, 7, 1), 0);
    ars_dataset_free(&d);
}

static void epoch_order(const ars_dataset *d, uint64_t seed, int shuffle, int epoch, uint32_t *out)
{
    ars_sampler s;
    ars_batch b;
    ARS_ASSERT_OK(ars_sampler_create(&s, d, 4, 0, 1, seed, shuffle));
    ARS_ASSERT_OK(ars_batch_alloc(&b, &s));
    int at = 0;
    for (int step = 0; step < ars_sampler_steps_per_epoch(&s); step++) {
        ARS_ASSERT_OK(ars_sampler_fill(&s, epoch, step, &b));
        for (int r = 0; r < b.rows; r++) out[at++] = b.ids[r];
    }
    assert_int_equal(at, d->count);
    ars_batch_free(&b);
    ars_sampler_destroy(&s);
}

static void test_sampler_orders(void **state)
{
    (void)state;
    enum { COUNT = 50 };
    ars_dataset d;
    ARS_ASSERT_OK(ars_dataset_spirals(&d, COUNT, 2, 0.0f, 4));
    uint32_t a[COUNT], b[COUNT], c[COUNT];
    epoch_order(&d, 8, 1, 0, a);
    epoch_order(&d, 8, 1, 0, b);
    assert_memory_equal(a, b, sizeof a);           /* same seed, same order */
    epoch_order(&d, 8, 1, 1, c);
    assert_memory_not_equal(a, c, sizeof a);       /* another epoch */
    epoch_order(&d, 9, 1, 0, c);
    assert_memory_not_equal(a, c, sizeof a);       /* another seed */
    /* No shuffle: identity, whatever the epoch. */
    epoch_order(&d, 8, 0, 3, c);
    for (int i = 0; i < COUNT; i++) assert_int_equal(c[i], (uint32_t)i);

    /* Going back to an earlier epoch regenerates its order. */
    ars_sampler s;
    ars_batch bt;
    ARS_ASSERT_OK(ars_sampler_create(&s, &d, COUNT, 0, 1, 8, 1));
    ARS_ASSERT_OK(ars_batch_alloc(&bt, &s));
    ARS_ASSERT_OK(ars_sampler_fill(&s, 1, 0, &bt));
    ARS_ASSERT_OK(ars_sampler_fill(&s, 0, 0, &bt));
    assert_memory_equal(bt.ids, a, sizeof a);
    ars_batch_free(&bt);
    ars_sampler_destroy(&s);
    ars_dataset_free(&d);
}

static void test_sampler_errors(void **state)
{
    (void)state;
    ars_dataset d;
    ars_sampler s, big;
    ars_batch b;
    ARS_ASSERT_OK(ars_dataset_blobs(&d, 10, 2, 3, 1.0f, 2));
    ASSERT_ERROR(ars_sampler_create(&s, &d, 0, 0, 1, 1, 1), ARS_EINVAL, "global batch 0");
    ASSERT_ERROR(ars_sampler_create(&s, &d, 4, 2, 2, 1, 1), ARS_EINVAL, "rank 2: expected 0 to 1");
    ASSERT_ERROR(ars_sampler_create(&s, &d, 4, 0, 0, 1, 1), ARS_EINVAL, "world size 0");
    ars_sampler_destroy(&s);

    ARS_ASSERT_OK(ars_sampler_create(&s, &d, 4, 0, 1, 1, 1));
    ARS_ASSERT_OK(ars_batch_alloc(&b, &s));
    assert_int_equal(b.capacity, 4);
    ASSERT_ERROR(ars_sampler_fill(&s, 0, 3, &b), ARS_EINVAL, "step 3: expected 0 to 2");
    ASSERT_ERROR(ars_sampler_fill(&s, -1, 0, &b), ARS_EINVAL, "epoch -1");
    /* A batch sized for a smaller sampler is refused, not overrun. */
    ARS_ASSERT_OK(ars_sampler_create(&big, &d, 8, 0, 1, 1, 1));
    ASSERT_ERROR(ars_sampler_fill(&big, 0, 0, &b), ARS_EINVAL, "batch holds 4 rows");
    ars_sampler_destroy(&big);
    /* A batch larger than the global batch size is fine. */
    ARS_ASSERT_OK(ars_sampler_create(&big, &d, 20, 0, 1, 1, 1));
    assert_int_equal(ars_sampler_steps_per_epoch(&big), 1);
    ars_batch_free(&b);
    ARS_ASSERT_OK(ars_batch_alloc(&b, &big));
    ARS_ASSERT_OK(ars_sampler_fill(&big, 0, 0, &b));
    assert_int_equal(b.rows, 10);
    assert_int_equal(b.global_rows, 10);
    ars_sampler_destroy(&big);
    ars_batch_free(&b);
    ars_sampler_destroy(&s);
    ars_dataset_free(&d);
}

/* ---- synthetic sets ------------------------------------------------------- */

static void assert_same_dataset(const ars_dataset *a, const ars_dataset *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->classes, b->classes);
    assert_int_equal(a->target_dim, b->target_dim);
    assert_memory_equal(a->x, b->x, (size_t)a->count * a->dim * sizeof(float));
    if (a->labels) assert_memory_equal(a->labels, b->labels, (size_t)a->count * sizeof(int32_t));
    if (a->targets)
        assert_memory_equal(a->targets, b->targets,
                            (size_t)a->count * a->target_dim * sizeof(float));
}

static void test_synthetic_deterministic(void **state)
{
    (void)state;
    ars_dataset a, b, c;
    int bad;

    ARS_ASSERT_OK(ars_dataset_spirals(&a, 300, 3, 0.05f, 42));
    ARS_ASSERT_OK(ars_dataset_spirals(&b, 300, 3, 0.05f, 42));
    ARS_ASSERT_OK(ars_dataset_spirals(&c, 300, 3, 0.05f, 43));
    assert_same_dataset(&a, &b);
    assert_memory_not_equal(a.x, c.x, 600 * sizeof(float));
    assert_int_equal(a.dim, 2);
    assert_int_equal(a.classes, 3);
    assert_null(a.targets);
    int per_class[3] = {0};
    for (int i = 0; i < a.count; i++) {
        assert_true(a.labels[i] >= 0 && a.labels[i] < 3);
        per_class[a.labels[i]]++;
        assert_true(hypot(a.x[2 * i], a.x[2 * i + 1]) < 1.5);
    }
    for (int k = 0; k < 3; k++) assert_int_equal(per_class[k], 100);
    assert_int_equal(ars_dataset_find_nonfinite(&a, &bad), 0);
    ars_dataset_free(&a);
    ars_dataset_free(&b);
    ars_dataset_free(&c);

    ARS_ASSERT_OK(ars_dataset_blobs(&a, 200, 4, 6, 0.3f, 42));
    ARS_ASSERT_OK(ars_dataset_blobs(&b, 200, 4, 6, 0.3f, 42));
    ARS_ASSERT_OK(ars_dataset_blobs(&c, 200, 4, 6, 0.3f, 1));
    assert_same_dataset(&a, &b);
    assert_memory_not_equal(a.x, c.x, 200 * 6 * sizeof(float));
    assert_int_equal(a.classes, 4);
    assert_int_equal(a.labels[5], 1);
    ars_dataset_free(&a);
    ars_dataset_free(&b);
    ars_dataset_free(&c);

    ARS_ASSERT_OK(ars_dataset_teacher(&a, 100, 5, 8, 3, 42));
    ARS_ASSERT_OK(ars_dataset_teacher(&b, 100, 5, 8, 3, 42));
    ARS_ASSERT_OK(ars_dataset_teacher(&c, 100, 5, 8, 3, 2));
    assert_same_dataset(&a, &b);
    assert_memory_not_equal(a.targets, c.targets, 300 * sizeof(float));
    assert_null(a.labels);
    assert_int_equal(a.classes, 0);
    assert_int_equal(a.target_dim, 3);
    assert_int_equal(a.dim, 5);
    /* Targets are O(1) and not all equal: there is something to learn. */
    double lo = 1e9, hi = -1e9;
    for (int i = 0; i < 300; i++) {
        lo = fmin(lo, a.targets[i]);
        hi = fmax(hi, a.targets[i]);
    }
    assert_true(hi - lo > 0.1 && hi - lo < 20.0);
    ars_dataset_free(&a);
    ars_dataset_free(&b);
    ars_dataset_free(&c);
}

static void test_split(void **state)
{
    (void)state;
    ars_dataset whole, d, rest;
    ARS_ASSERT_OK(ars_dataset_teacher(&whole, 50, 3, 4, 2, 6));
    ARS_ASSERT_OK(ars_dataset_teacher(&d, 50, 3, 4, 2, 6));
    ARS_ASSERT_OK(ars_dataset_split(&d, 40, &rest));
    assert_int_equal(d.count, 40);
    assert_int_equal(rest.count, 10);
    assert_int_equal(rest.dim, 3);
    assert_int_equal(rest.target_dim, 2);
    assert_null(rest.labels);
    assert_memory_equal(rest.x, whole.x + 40 * 3, 10 * 3 * sizeof(float));
    assert_memory_equal(rest.targets, whole.targets + 40 * 2, 10 * 2 * sizeof(float));
    assert_memory_equal(d.x, whole.x, 40 * 3 * sizeof(float));
    ars_dataset_free(&rest);
    ars_dataset_free(&d);
    ars_dataset_free(&whole);

    ARS_ASSERT_OK(ars_dataset_blobs(&d, 9, 3, 2, 0.5f, 6));
    ARS_ASSERT_OK(ars_dataset_split(&d, 5, &rest));
    assert_int_equal(rest.classes, 3);
    assert_null(rest.targets);
    for (int i = 0; i < 4; i++) assert_int_equal(rest.labels[i], (5 + i) % 3);
    ars_dataset_free(&rest);
    ASSERT_ERROR(ars_dataset_split(&d, 5, &rest), ARS_EINVAL, "keep 5: expected 1 to 4");
    ASSERT_ERROR(ars_dataset_split(&d, 0, &rest), ARS_EINVAL, "keep 0");
    ars_dataset_free(&d);
}

static void test_synthetic_errors(void **state)
{
    (void)state;
    ars_dataset d;
    ASSERT_ERROR(ars_dataset_spirals(&d, 0, 3, 0.1f, 1), ARS_EINVAL, "count 0");
    ASSERT_ERROR(ars_dataset_spirals(&d, 10, 0, 0.1f, 1), ARS_EINVAL, "classes 0");
    ASSERT_ERROR(ars_dataset_spirals(&d, 10, 2, NAN, 1), ARS_EINVAL, "noise");
    ASSERT_ERROR(ars_dataset_blobs(&d, 10, 2, 0, 1.0f, 1), ARS_EINVAL, "dim 0");
    ASSERT_ERROR(ars_dataset_blobs(&d, 10, 2, 2, -1.0f, 1), ARS_EINVAL, "spread");
    ASSERT_ERROR(ars_dataset_teacher(&d, 10, 2, 0, 1, 1), ARS_EINVAL, "hidden 0");
    assert_null(d.x);
    ars_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idx_plain, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_gzip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_truncated, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_header_truncated, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_trailing, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_bad_magic, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_bad_type, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_bad_rank, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_bad_dims, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_corrupt_gzip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_idx_missing, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_mnist_tiny, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_mnist_errors, setup_dir, teardown_dir),
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test(test_standardize),
        cmocka_unit_test(test_find_nonfinite),
        cmocka_unit_test(test_sampler_covers_epoch),
        cmocka_unit_test(test_sampler_shards_union),
        cmocka_unit_test(test_sampler_zero_rows),
        cmocka_unit_test(test_sampler_orders),
        cmocka_unit_test(test_sampler_errors),
        cmocka_unit_test(test_synthetic_deterministic),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_synthetic_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
