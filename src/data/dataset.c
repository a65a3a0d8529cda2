/* dataset: data sets in memory: the (Fashion-)MNIST loader on top of the
 * IDX reader, scalar standardization, the non-finite scan, and the seeded
 * synthetic sets (spirals, blobs, teacher) used by tests and examples. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/data.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arsenal/error.h"
#include "arsenal/memory.h"
#include "arsenal/rng.h"

/* Instances of ARS_STREAM_DATA: each array of each generator draws from its
 * own stream, so changing one size never shifts another array's numbers. */
enum {
    DATA_SPIRALS = 0x100,
    DATA_BLOBS_CENTERS = 0x200,
    DATA_BLOBS_POINTS = 0x201,
    DATA_TEACHER_X = 0x300,
    DATA_TEACHER_W1 = 0x301,
    DATA_TEACHER_B1 = 0x302,
    DATA_TEACHER_W2 = 0x303
};

enum { DATA_MAX_CLASSES = 1 << 16 };

static const double two_pi = 6.283185307179586;

void ars_dataset_free(ars_dataset *data)
{
    if (!data) return;
    free(data->x);
    free(data->labels);
    free(data->targets);
    ars_data_source_close(data->source);   /* a streamed x (user_data.c) */
    memset(data, 0, sizeof *data);
}

ars_shape ars_dataset_shape(const ars_dataset *data)
{
    return data->shape.rank > 0 ? data->shape : ars_shape_vector(data->dim);
}

/* Allocates x [count, dim] (zeroed), and labels [count] when with_labels. */
static int dataset_alloc(ars_dataset *data, const char *name, int count, int dim, int with_labels)
{
    memset(data, 0, sizeof *data);
    if ((size_t)count > SIZE_MAX / sizeof(float) / (size_t)dim)
        return ars_error(ARS_ENOMEM, "%s: %d samples x %d features is too large", name, count, dim);
    snprintf(data->name, sizeof data->name, "%s", name);
    data->count = count;
    data->dim = dim;
    data->x = calloc((size_t)count * (size_t)dim, sizeof *data->x);
    if (with_labels) data->labels = calloc((size_t)count, sizeof *data->labels);
    if (!data->x || (with_labels && !data->labels)) {
        ars_dataset_free(data);
        return ars_error(ARS_ENOMEM, "%s: cannot allocate %d samples x %d features",
                         name, count, dim);
    }
    return 0;
}

/* ---- (Fashion-)MNIST ---------------------------------------------------- */

/* dir/<prefix>-<kind>.gz if it exists, else dir/<prefix>-<kind>. */
static int mnist_find(char *out, size_t size, const char *dir, const char *prefix,
                      const char *kind)
{
    static const char *const suffixes[] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        int n = snprintf(out, size, "%s/%s-%s%s", dir, prefix, kind, suffixes[i]);
        if (n < 0 || (size_t)n >= size)
            return ars_error(ARS_EINVAL, "%s: directory name too long", dir);
        struct stat st;
        /* Anything but "does not exist" (permissions, a directory, ...) is
         * left for the reader to report with the real reason. */
        if (stat(out, &st) == 0 || errno != ENOENT) return 0;
    }
    return ars_error(ARS_EIO,
                     "%s: neither %s-%s.gz nor %s-%s found (for Fashion-MNIST install the "
                     "Debian package dataset-fashion-mnist, or set data_dir in the run file)",
                     dir, prefix, kind, prefix, kind);
}

/* "fashion-mnist/train" from "/usr/share/datasets/fashion-mnist/" and "train". */
static void mnist_name(char *out, size_t size, const char *dir, const char *prefix)
{
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/') end--;
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, size, "%.*s/%s", (int)(end - start), dir + start, prefix);
}

static int mnist_check(const ars_idx *images, const char *images_path,
                       const ars_idx *labels, const char *labels_path)
{
    if (images->ndim != 3)
        return ars_error(ARS_EFORMAT, "%s: images must be 3-D [count, rows, cols], found %d-D",
                         images_path, images->ndim);
    if (labels->ndim != 1)
        return ars_error(ARS_EFORMAT, "%s: labels must be 1-D [count], found %d-D",
                         labels_path, labels->ndim);
    if (images->dims[0] != labels->dims[0])
        return ars_error(ARS_EFORMAT, "%s has %d images but %s has %d labels: expected equal counts",
                         images_path, images->dims[0], labels_path, labels->dims[0]);
    if (images->dims[1] > INT_MAX / images->dims[2])
        return ars_error(ARS_EFORMAT, "%s: images of %d x %d pixels are too large",
                         images_path, images->dims[1], images->dims[2]);
    return 0;
}

/* Copies the first `count` samples of a checked images/labels pair. */
static int mnist_fill(ars_dataset *data, const char *name, const ars_idx *images,
                      const ars_idx *labels, int limit)
{
    int total = images->dims[0];
    int count = limit > 0 && limit < total ? limit : total;
    int dim = images->dims[1] * images->dims[2];
    /* The bytes were read as they arrived (a header cannot make the reader
     * allocate what the file does not hold); as floats they take 4x. */
    const double bytes = (double)count * dim * sizeof(float) + (double)count * sizeof(int32_t);
    ars_memory_budget budget;
    ars_memory_budget_get(&budget);
    if (bytes > budget.bytes) {
        char where[300], need[32], left[32];
        ars_memory_budget_describe(&budget, where, sizeof where);
        memset(data, 0, sizeof *data);
        return ars_error(ARS_ENOMEM, "%s: %d images of %d pixels need about %s as floats but this rank has %s (%s)",
                         name, count, dim, ars_memory_format(bytes, need, sizeof need),
                         ars_memory_format(budget.bytes, left, sizeof left), where);
    }
    int rc = dataset_alloc(data, name, count, dim, 1);
    if (rc) return rc;
    data->shape = ars_shape_image(1, images->dims[1], images->dims[2]);

    /* Pixels are bytes, so x is in [0, 1]. */
    size_t values = (size_t)count * (size_t)dim;
    for (size_t i = 0; i < values; i++) data->x[i] = (float)images->data[i] * (1.0f / 255.0f);
    /* Labels are bytes, so every value is < 256 by construction. classes
     * comes from the whole file, not the kept prefix: a limited test split
     * that happens to miss the last class must still have the same output
     * width as the training split. */
    int max_label = 0;
    for (int i = 0; i < total; i++)
        if (labels->data[i] > max_label) max_label = labels->data[i];
    for (int i = 0; i < count; i++) data->labels[i] = labels->data[i];
    data->classes = max_label + 1;
    return 0;
}

int ars_mnist_load(const char *dir, const char *prefix, int limit, ars_dataset *data)
{
    if (!data) return ars_error(ARS_EINVAL, "ars_mnist_load: data is NULL");
    memset(data, 0, sizeof *data);
    if (!dir || !*dir) return ars_error(ARS_EINVAL, "ars_mnist_load: empty data directory");
    if (!prefix || (strcmp(prefix, "train") != 0 && strcmp(prefix, "t10k") != 0))
        return ars_error(ARS_EINVAL, "ars_mnist_load: split '%s': expected train or t10k",
                         prefix ? prefix : "(null)");

    char images_path[4096], labels_path[4096];
    int rc = mnist_find(images_path, sizeof images_path, dir, prefix, "images-idx3-ubyte");
    if (!rc) rc = mnist_find(labels_path, sizeof labels_path, dir, prefix, "labels-idx1-ubyte");
    if (rc) return rc;

    ars_idx images, labels;
    memset(&labels, 0, sizeof labels);
    rc = ars_idx_read(images_path, &images);
    if (!rc) rc = ars_idx_read(labels_path, &labels);
    if (!rc) rc = mnist_check(&images, images_path, &labels, labels_path);
    if (!rc) {
        char name[sizeof data->name];
        mnist_name(name, sizeof name, dir, prefix);
        rc = mnist_fill(data, name, &images, &labels, limit);
    }
    ars_idx_free(&images);
    ars_idx_free(&labels);
    return rc;
}

/* ---- statistics ----------------------------------------------------------- */

void ars_dataset_mean_std(const ars_dataset *data, double *mean, double *std)
{
    double m = 0.0, s = 1.0;
    size_t n = data && data->x && data->count > 0 && data->dim > 0
                   ? (size_t)data->count * (size_t)data->dim : 0;
    if (n > 0) {
        /* Two passes in double: a one-pass sum of squares loses the variance
         * to cancellation when the mean is large relative to the spread. */
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) sum += data->x[i];
        m = sum / (double)n;
        double squares = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = data->x[i] - m;
            squares += d * d;
        }
        s = sqrt(squares / (double)n);
    }
    if (mean) *mean = m;
    if (std) *std = s;
}

void ars_dataset_standardize(ars_dataset *data, double mean, double std)
{
    if (!data || !data->x || data->count <= 0 || data->dim <= 0) return;
    /* Constant data has std 0: only shift it rather than fill it with Inf. */
    double scale = std > 0.0 && isfinite(std) ? 1.0 / std : 1.0;
    size_t n = (size_t)data->count * (size_t)data->dim;
    for (size_t i = 0; i < n; i++) data->x[i] = (float)((data->x[i] - mean) * scale);
}

static int floats_finite(const float *v, int n)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

int ars_dataset_find_nonfinite(const ars_dataset *data, int *sample)
{
    if (sample) *sample = -1;
    if (!data) return 0;
    for (int i = 0; i < data->count; i++) {
        int bad = data->x && !floats_finite(data->x + (size_t)i * data->dim, data->dim);
        if (!bad && data->targets)
            bad = !floats_finite(data->targets + (size_t)i * data->target_dim, data->target_dim);
        if (bad) {
            if (sample) *sample = i;
            return 1;
        }
    }
    return 0;
}

int ars_dataset_split(ars_dataset *data, int keep, ars_dataset *rest)
{
    if (!data || !rest) return ars_error(ARS_EINVAL, "split: data or rest is NULL");
    if (rest == data) return ars_error(ARS_EINVAL, "split: rest must be another data set");
    memset(rest, 0, sizeof *rest);
    if (keep < 1 || keep >= data->count)
        return ars_error(ARS_EINVAL, "split %s: keep %d: expected 1 to %d", data->name, keep,
                         data->count - 1);
    int moved = data->count - keep;
    char name[sizeof data->name];
    snprintf(name, sizeof name, "%.58s-rest", data->name);
    int rc = dataset_alloc(rest, name, moved, data->dim, data->labels != NULL);
    if (rc) return rc;
    rest->shape = data->shape;
    if (data->targets) {
        rest->targets = malloc((size_t)moved * (size_t)data->target_dim * sizeof *rest->targets);
        if (!rest->targets) {
            ars_dataset_free(rest);
            return ars_error(ARS_ENOMEM, "split %s: cannot allocate %d targets", data->name, moved);
        }
        memcpy(rest->targets, data->targets + (size_t)keep * data->target_dim,
               (size_t)moved * (size_t)data->target_dim * sizeof *rest->targets);
        rest->target_dim = data->target_dim;
    }
    memcpy(rest->x, data->x + (size_t)keep * data->dim,
           (size_t)moved * (size_t)data->dim * sizeof *rest->x);
    if (data->labels)
        memcpy(rest->labels, data->labels + keep, (size_t)moved * sizeof *rest->labels);
    rest->classes = data->classes;
    /* data's buffers keep their size: shrinking them would only risk a
     * failed realloc for memory the caller frees with the set anyway. */
    data->count = keep;
    return 0;
}

/* ---- synthetic sets ------------------------------------------------------- */

static int check_count(const char *name, int count)
{
    if (count < 1) return ars_error(ARS_EINVAL, "%s: count %d: expected >= 1", name, count);
    return 0;
}

static int check_classes(const char *name, int classes)
{
    if (classes < 1 || classes > DATA_MAX_CLASSES)
        return ars_error(ARS_EINVAL, "%s: classes %d: expected 1 to %d", name, classes,
                         DATA_MAX_CLASSES);
    return 0;
}

static int check_scale(const char *name, const char *what, float value)
{
    if (!(value >= 0.0f) || !isfinite(value))
        return ars_error(ARS_EINVAL, "%s: %s %g: expected a finite value >= 0", name, what,
                         (double)value);
    return 0;
}

static int check_dim(const char *name, const char *what, int value)
{
    if (value < 1) return ars_error(ARS_EINVAL, "%s: %s %d: expected >= 1", name, what, value);
    return 0;
}

/* Word -> uniform in (0, 1) in double (never 0: safe for log). */
static double unit_double(uint32_t word) { return ((double)word + 0.5) / 4294967296.0; }

/* Sample i is a pure function of (seed, i): arm i % classes, position t
 * along it uniform in (0, 1); radius t, angle turning 1.5 times (3 pi) from
 * the arm's start plus Gaussian noise of std `noise` radians. The noise is
 * on the angle (as in the well-known cs231n spirals), not on x and y: the
 * arms are only ~0.7 / classes apart, so coordinate noise of 0.2 would
 * already make them unlearnable, while angular noise keeps the task
 * non-linear but solvable and scales with the radius. */
int ars_dataset_spirals(ars_dataset *data, int count, int classes, float noise, uint64_t seed)
{
    if (!data) return ars_error(ARS_EINVAL, "spirals: data is NULL");
    memset(data, 0, sizeof *data);
    int rc = check_count("spirals", count);
    if (!rc) rc = check_classes("spirals", classes);
    if (!rc) rc = check_scale("spirals", "noise", noise);
    if (!rc) rc = dataset_alloc(data, "spirals", count, 2, 1);
    if (rc) return rc;
    data->classes = classes;
    uint64_t stream = ars_stream(ARS_STREAM_DATA, DATA_SPIRALS);
    for (int i = 0; i < count; i++) {
        uint32_t r[4];
        ars_philox(seed, stream, (uint64_t)i, r);
        int arm = i % classes;
        double t = unit_double(r[0]);
        double gauss = sqrt(-2.0 * log(unit_double(r[1]))) * cos(two_pi * unit_double(r[2]));
        double angle = two_pi * arm / classes + 1.5 * two_pi * t + noise * gauss;
        data->x[2 * i] = (float)(t * cos(angle));
        data->x[2 * i + 1] = (float)(t * sin(angle));
        data->labels[i] = arm;
    }
    return 0;
}

/* Class centers ~ N(0, I); sample i belongs to class i % classes and is
 * its center + spread * N(0, I). */
int ars_dataset_blobs(ars_dataset *data, int count, int classes, int dim, float spread, uint64_t seed)
{
    if (!data) return ars_error(ARS_EINVAL, "blobs: data is NULL");
    memset(data, 0, sizeof *data);
    int rc = check_count("blobs", count);
    if (!rc) rc = check_classes("blobs", classes);
    if (!rc) rc = check_dim("blobs", "dim", dim);
    if (!rc) rc = check_scale("blobs", "spread", spread);
    if (!rc && (size_t)classes > SIZE_MAX / sizeof(float) / (size_t)dim)
        rc = ars_error(ARS_ENOMEM, "blobs: %d classes x %d features is too large", classes, dim);
    if (!rc) rc = dataset_alloc(data, "blobs", count, dim, 1);
    if (rc) return rc;
    float *centers = malloc((size_t)classes * (size_t)dim * sizeof *centers);
    if (!centers) {
        ars_dataset_free(data);
        return ars_error(ARS_ENOMEM, "blobs: cannot allocate %d centers", classes);
    }
    data->classes = classes;
    ars_rng_normal(centers, (size_t)classes * dim, 0.0f, 1.0f, seed,
                   ars_stream(ARS_STREAM_DATA, DATA_BLOBS_CENTERS), 0);
    ars_rng_normal(data->x, (size_t)count * dim, 0.0f, spread, seed,
                   ars_stream(ARS_STREAM_DATA, DATA_BLOBS_POINTS), 0);
    for (int i = 0; i < count; i++) {
        int c = i % classes;
        float *row = data->x + (size_t)i * dim;
        const float *center = centers + (size_t)c * dim;
        for (int j = 0; j < dim; j++) row[j] += center[j];
        data->labels[i] = c;
    }
    free(centers);
    return 0;
}

/* The teacher: h = tanh(W1 x + b1), y = W2 h, with W1 ~ N(0, 1/in_dim)
 * and W2 ~ N(0, 1/hidden) so that pre-activations and targets are O(1),
 * b1 ~ N(0, 0.1^2). Evaluated in double. */
int ars_dataset_teacher(ars_dataset *data, int count, int in_dim, int hidden, int out_dim, uint64_t seed)
{
    if (!data) return ars_error(ARS_EINVAL, "teacher: data is NULL");
    memset(data, 0, sizeof *data);
    int rc = check_count("teacher", count);
    if (!rc) rc = check_dim("teacher", "in_dim", in_dim);
    if (!rc) rc = check_dim("teacher", "hidden", hidden);
    if (!rc) rc = check_dim("teacher", "out_dim", out_dim);
    size_t w1_size = 0, w2_size = 0;
    if (!rc) {
        /* Each product is bounded to keep the sizes below meaningful. */
        if ((size_t)hidden > SIZE_MAX / sizeof(float) / (size_t)in_dim ||
            (size_t)out_dim > SIZE_MAX / sizeof(float) / (size_t)hidden ||
            (size_t)count > SIZE_MAX / sizeof(float) / (size_t)out_dim)
            rc = ars_error(ARS_ENOMEM, "teacher: %d x %d x %d network is too large",
                           in_dim, hidden, out_dim);
        w1_size = (size_t)hidden * in_dim;
        w2_size = (size_t)out_dim * hidden;
    }
    if (!rc) rc = dataset_alloc(data, "teacher", count, in_dim, 0);
    if (rc) return rc;

    float *w1 = malloc(w1_size * sizeof *w1);
    float *b1 = malloc((size_t)hidden * sizeof *b1);
    float *w2 = malloc(w2_size * sizeof *w2);
    double *h = malloc((size_t)hidden * sizeof *h);
    data->targets = malloc((size_t)count * out_dim * sizeof *data->targets);
    if (!w1 || !b1 || !w2 || !h || !data->targets) {
        rc = ars_error(ARS_ENOMEM, "teacher: cannot allocate %d samples and the network", count);
        ars_dataset_free(data);
        goto done;
    }
    data->target_dim = out_dim;
    ars_rng_normal(data->x, (size_t)count * in_dim, 0.0f, 1.0f, seed,
                   ars_stream(ARS_STREAM_DATA, DATA_TEACHER_X), 0);
    ars_rng_normal(w1, w1_size, 0.0f, (float)(1.0 / sqrt((double)in_dim)), seed,
                   ars_stream(ARS_STREAM_DATA, DATA_TEACHER_W1), 0);
    ars_rng_normal(b1, (size_t)hidden, 0.0f, 0.1f, seed,
                   ars_stream(ARS_STREAM_DATA, DATA_TEACHER_B1), 0);
    ars_rng_normal(w2, w2_size, 0.0f, (float)(1.0 / sqrt((double)hidden)), seed,
                   ars_stream(ARS_STREAM_DATA, DATA_TEACHER_W2), 0);
    for (int i = 0; i < count; i++) {
        const float *x = data->x + (size_t)i * in_dim;
        for (int k = 0; k < hidden; k++) {
            double z = b1[k];
            const float *w = w1 + (size_t)k * in_dim;
            for (int j = 0; j < in_dim; j++) z += (double)w[j] * x[j];
            h[k] = tanh(z);
        }
        float *y = data->targets + (size_t)i * out_dim;
        for (int o = 0; o < out_dim; o++) {
            double z = 0.0;
            const float *w = w2 + (size_t)o * hidden;
            for (int k = 0; k < hidden; k++) z += (double)w[k] * h[k];
            y[o] = (float)z;
        }
    }

done:
    free(w1);
    free(b1);
    free(w2);
    free(h);
    return rc;
}
