/* user_data: the data sets a user brings (data.h, datasets/README.md). It
 * owns the data spec ("hdf5:PATH", "csv:PATH", "npy:XPATH,YPATH"); turning
 * an x and a y array (user_data.h: an HDF5 dataset or a .npy file) into an
 * ars_dataset, x in memory when it fits half the memory budget and else
 * streamed from the file, rows read by the batch (ars_data_source); the
 * label and target checks; the seeded validation split; standardization
 * statistics that are the same in memory and streamed; and the run's data
 * (ars_user_data_load_run).
 *
 * Streaming: the sampler draws each epoch's batches from a permutation of
 * the whole set, so a rank may need any row; a streamed set reads exactly
 * the rows of its batch, sorted and merged into runs, in one read per
 * batch (HDF5: a union of hyperslabs; .npy: pread per run). Labels and
 * targets (4 bytes a sample for labels) stay in memory. Before training
 * the whole file is scanned once, block by block, for non-finite values
 * and for the mean and std. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "arsenal/memory.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"
#include "user_data.h"

/* The validation split's permutation: an ARS_STREAM_DATA instance tagged
 * 'VAL' so that it cannot coincide with a synthetic set's streams. */
enum { DATA_VALIDATION = 0x56414c00 };

/* ---- specs ------------------------------------------------------------------ */

static const struct {
    const char *prefix;
    ars_user_format format;
} formats[] = {{"hdf5:", ARS_USER_HDF5}, {"csv:", ARS_USER_CSV}, {"npy:", ARS_USER_NPY}};

ars_user_format ars_user_format_of(const char *text)
{
    if (!text) return ARS_USER_NONE;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strncmp(text, formats[i].prefix, strlen(formats[i].prefix)) == 0) return formats[i].format;
    return ARS_USER_NONE;
}

static int copy_path(char *out, size_t size, const char *from, size_t length, const char *text)
{
    while (length > 0 && (*from == ' ' || *from == '\t')) from++, length--;
    while (length > 0 && (from[length - 1] == ' ' || from[length - 1] == '\t')) length--;
    if (length == 0) return ars_error(ARS_EINVAL, "'%s': a file name is missing", text);
    if (length >= size) return ars_error(ARS_EINVAL, "'%s': a file name longer than %zu characters", text, size - 1);
    memcpy(out, from, length);
    out[length] = '\0';
    return 0;
}

int ars_user_spec_parse(const char *text, ars_user_spec *spec)
{
    if (!spec) return ars_error(ARS_EINVAL, "ars_user_spec_parse: spec is NULL");
    memset(spec, 0, sizeof *spec);
    ars_user_format format = ars_user_format_of(text);
    if (format == ARS_USER_NONE)
        return ars_error(ARS_EINVAL, "data '%s': expected hdf5:PATH, csv:PATH or npy:XPATH,YPATH", text ? text : "");
    const char *rest = strchr(text, ':') + 1;
    if (format != ARS_USER_NPY) {
        TRY(copy_path(spec->path, sizeof spec->path, rest, strlen(rest), text));
    } else {
        const char *comma = strchr(rest, ',');
        if (!comma || strchr(comma + 1, ','))
            return ars_error(ARS_EINVAL, "'%s': expected npy:XPATH,YPATH (two .npy files, the samples and their "
                             "labels or targets, separated by one comma)", text);
        TRY(copy_path(spec->path, sizeof spec->path, rest, (size_t)(comma - rest), text));
        TRY(copy_path(spec->y_path, sizeof spec->y_path, comma + 1, strlen(comma + 1), text));
    }
    spec->format = format;
    return 0;
}

/* ---- budget --------------------------------------------------------------- */

double ars_user_budget(const ars_user_options *options, char *where, size_t size)
{
    if (options && options->memory_limit > 0) {
        snprintf(where, size, "the loader's memory_limit");
        return options->memory_limit;
    }
    ars_memory_budget budget;
    ars_memory_budget_get(&budget);
    ars_memory_budget_describe(&budget, where, size);
    return budget.bytes;
}

int ars_user_check_fits(const char *where_file, const char *what, double bytes, double budget, const char *budget_from)
{
    if (bytes <= budget) return 0;
    char need[32], left[32];
    return ars_error(ARS_ENOMEM, "%s: %s need about %s but this rank has %s (%s)", where_file, what,
                     ars_memory_format(bytes, need, sizeof need), ars_memory_format(budget, left, sizeof left),
                     budget_from);
}

int64_t ars_user_block_rows(int64_t row_bytes, double budget)
{
    double block = 64.0 * (1 << 20);
    if (budget / 4 < block) block = budget / 4;
    if (row_bytes < 1) row_bytes = 1;
    return (double)row_bytes >= block ? 1 : (int64_t)(block / (double)row_bytes);
}

void ars_array_close(ars_array *a)
{
    if (a && a->close) a->close(a);
    else free(a);
}

void ars_array_index_text(const ars_array *a, int64_t row, int64_t v, char *out, size_t size)
{
    int64_t index[ARS_ARRAY_MAX_RANK] = {row};
    for (int d = a->rank - 1; d >= 1; d--) {
        index[d] = a->dims[d] > 0 ? v % a->dims[d] : 0;
        v = a->dims[d] > 0 ? v / a->dims[d] : 0;
    }
    int used = snprintf(out, size, "%s[", a->where);
    for (int d = 0; d < a->rank && used >= 0 && (size_t)used < size; d++)
        used += snprintf(out + used, size - (size_t)used, "%s%lld", d ? ", " : "", (long long)index[d]);
    if (used >= 0 && (size_t)used < size) snprintf(out + used, size - (size_t)used, "]");
}

/* ---- labels and targets ------------------------------------------------------ */

static void y_where(char *out, size_t size, const char *where, int64_t row, int width, int col, const char *column,
                    const int64_t *lines)
{
    if (lines && column) snprintf(out, size, "%s:%lld: column '%s'", where, (long long)lines[row], column);
    else if (width > 1) snprintf(out, size, "%s[%lld, %d]", where, (long long)row, col);
    else snprintf(out, size, "%s[%lld]", where, (long long)row);
}

/* Allocates labels or targets for n rows of width values. */
static int y_alloc(ars_dataset *data, const char *where, int64_t n, int width, int regression, double budget,
                   const char *budget_from)
{
    const double bytes = regression ? 4.0 * (double)n * width : 4.0 * (double)n;
    TRY(ars_user_check_fits(where, regression ? "the targets" : "the labels", bytes, budget, budget_from));
    if (regression) {
        data->targets = malloc((size_t)n * (size_t)width * sizeof *data->targets);
        data->target_dim = width;
    } else {
        data->labels = malloc((size_t)n * sizeof *data->labels);
    }
    if (regression ? !data->targets : !data->labels)
        return ars_error(ARS_ENOMEM, "%s: cannot allocate %lld %s", where, (long long)n,
                         regression ? "target rows" : "labels");
    return 0;
}

/* Checks and stores rows [first, first + rows) of y. */
static int y_put(ars_dataset *data, const char *where, int64_t first, const double *y, int64_t rows, int width,
                 const char *column, const int64_t *lines)
{
    char at[700];
    if (data->targets) {
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < width; c++) {
                double v = y[r * width + c];
                float f = (float)v;
                if (!isfinite(v) || !isfinite(f)) {
                    y_where(at, sizeof at, where, first + r, width, c, column, lines);
                    return ars_error(ARS_ENUMERIC, "%s = %g: %s", at, v,
                                     isfinite(v) ? "beyond float range" : "targets must be finite (no NaN or Inf)");
                }
                data->targets[(first + r) * width + c] = f;
            }
        return 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        double v = y[r];
        if (!isfinite(v) || v != floor(v)) {
            y_where(at, sizeof at, where, first + r, 1, 0, column, lines);
            return ars_error(ARS_EFORMAT, "%s = %g is not a class label (an integer >= 0); for regression targets "
                             "set [run] loss = mse", at, v);
        }
        if (v < 0) {
            y_where(at, sizeof at, where, first + r, 1, 0, column, lines);
            return ars_error(ARS_EFORMAT, "%s = %g: class labels must be >= 0 (classes are 0 .. K-1)", at, v);
        }
        if (v >= ARS_USER_MAX_CLASSES) {
            y_where(at, sizeof at, where, first + r, 1, 0, column, lines);
            return ars_error(ARS_EFORMAT, "%s = %g: expected a class label below %d (more classes than that are "
                             "not a classification this trainer does; for regression set [run] loss = mse)", at, v,
                             ARS_USER_MAX_CLASSES);
        }
        data->labels[first + r] = (int32_t)v;
        if ((int)v + 1 > data->classes) data->classes = (int)v + 1;
    }
    return 0;
}

int ars_user_set_y(ars_dataset *data, const char *where, const double *y, int64_t n, int width, int regression,
                   const char *column, const int64_t *lines, double budget, const char *budget_from)
{
    TRY(y_alloc(data, where, n, width, regression, budget, budget_from));
    return y_put(data, where, 0, y, n, width, column, lines);
}

/* ---- statistics in row order (the same in memory and streamed) ---------------- */

typedef struct moments {
    double shift, s1, s2, n;   /* sums of (v - shift) and its square over n values */
    int started;
} moments;

static void moments_add(moments *m, const float *v, size_t n)
{
    if (n == 0) return;
    if (!m->started) {
        m->shift = v[0];
        m->started = 1;
    }
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)v[i] - m->shift;
        s1 += d;
        s2 += d * d;
    }
    m->s1 += s1;
    m->s2 += s2;
    m->n += (double)n;
}

static void moments_result(const moments *m, double *mean, double *std)
{
    if (m->n <= 0) {
        *mean = 0;
        *std = 1;
        return;
    }
    double mu = m->s1 / m->n;
    double var = m->s2 / m->n - mu * mu;
    *mean = m->shift + mu;
    *std = var > 0 ? sqrt(var) : 0;
}

/* ---- streamed x ---------------------------------------------------------------- */

typedef struct shared_array {
    ars_array *array;
    int refs;
} shared_array;

struct ars_data_source {
    shared_array *file;
    uint32_t *map;            /* row i of the set is file row map[i]; NULL: file row i */
    int count;
    int standardized;
    double shift, scale;      /* rows read are (v - shift) * scale */
    int have_stats;
    double mean, std;         /* of the training rows (ars_dataset_stats) */
    /* scratch of a read, grown to the largest batch */
    struct row_at {
        int64_t row;
        int at;
    } *pairs;
    int64_t *rows;
    float *values;
    int capacity;
};

static ars_data_source *source_new(shared_array *file, int count)
{
    ars_data_source *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->file = file;
    file->refs++;
    s->count = count;
    s->scale = 1;
    return s;
}

void ars_data_source_close(ars_data_source *s)
{
    if (!s) return;
    if (s->file && --s->file->refs == 0) {
        ars_array_close(s->file->array);
        free(s->file);
    }
    free(s->map);
    free(s->pairs);
    free(s->rows);
    free(s->values);
    free(s);
}

static int compare_row_at(const void *a, const void *b)
{
    const struct row_at *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int source_grow(ars_data_source *s, int rows, int64_t row_values)
{
    if (rows <= s->capacity) return 0;
    free(s->pairs);
    free(s->rows);
    free(s->values);
    s->pairs = malloc((size_t)rows * sizeof *s->pairs);
    s->rows = malloc((size_t)rows * sizeof *s->rows);
    s->values = malloc((size_t)rows * (size_t)row_values * sizeof *s->values);
    s->capacity = 0;
    if (!s->pairs || !s->rows || !s->values)
        return ars_error(ARS_ENOMEM, "%s: cannot allocate a batch of %d rows", s->file->array->where, rows);
    s->capacity = rows;
    return 0;
}

static int finite_or_error(const ars_array *a, int64_t row, const float *v, int64_t n, const char *after)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            char at[800];
            ars_array_index_text(a, row, i, at, sizeof at);
            return ars_error(ARS_ENUMERIC, "%s is %s%s: every value of x must be finite", at,
                             isnan(v[i]) ? "NaN" : "Inf (or beyond float range)", after);
        }
    return 0;
}

int ars_dataset_read_x(const ars_dataset *data, const uint32_t *ids, int rows, float *x)
{
    if (!data || (rows > 0 && (!ids || !x))) return ars_error(ARS_EINVAL, "ars_dataset_read_x: NULL argument");
    for (int r = 0; r < rows; r++)
        if ((int64_t)ids[r] >= data->count)
            return ars_error(ARS_EINVAL, "%s: sample %u: the set has %d", data->name, ids[r], data->count);
    if (data->x) {
        for (int r = 0; r < rows; r++)
            memcpy(x + (size_t)r * data->dim, data->x + (size_t)ids[r] * data->dim, (size_t)data->dim * sizeof *x);
        return 0;
    }
    ars_data_source *s = data->source;
    if (!s) return ars_error(ARS_EINVAL, "%s: no x (neither in memory nor streamed)", data->name);
    if (rows == 0) return 0;
    ars_array *a = s->file->array;
    TRY(source_grow(s, rows, a->row_values));
    for (int r = 0; r < rows; r++) {
        s->pairs[r].row = s->map ? s->map[ids[r]] : ids[r];
        s->pairs[r].at = r;
    }
    qsort(s->pairs, (size_t)rows, sizeof *s->pairs, compare_row_at);
    int unique = 0;
    for (int r = 0; r < rows; r++)
        if (unique == 0 || s->rows[unique - 1] != s->pairs[r].row) s->rows[unique++] = s->pairs[r].row;
    TRY(a->read_rows(a, s->rows, unique, s->values));
    const size_t dim = (size_t)data->dim;
    for (int r = 0, u = -1; r < rows; r++) {
        if (u < 0 || s->rows[u] != s->pairs[r].row) u++;
        const float *from = s->values + (size_t)u * dim;
        float *to = x + (size_t)s->pairs[r].at * dim;
        TRY(finite_or_error(a, s->pairs[r].row, from, (int64_t)dim, " (the file changed since it was checked?)"));
        if (s->standardized)
            for (size_t i = 0; i < dim; i++) to[i] = (float)((from[i] - s->shift) * s->scale);
        else
            memcpy(to, from, dim * sizeof *to);
    }
    return 0;
}

int ars_dataset_stats(const ars_dataset *data, double *mean, double *std)
{
    *mean = 0;
    *std = 1;
    if (!data || data->count < 1) return 0;
    if (data->x) {
        moments m = {0};   /* row by row, as the scan of a streamed set sums */
        for (int i = 0; i < data->count; i++) moments_add(&m, data->x + (size_t)i * data->dim, (size_t)data->dim);
        moments_result(&m, mean, std);
        return 0;
    }
    if (data->source && data->source->have_stats) {
        *mean = data->source->mean;
        *std = data->source->std;
        return 0;
    }
    return ars_error(ARS_EINVAL, "%s: a streamed set without its statistics", data->name);
}

void ars_dataset_standardize_any(ars_dataset *data, double mean, double std)
{
    if (!data) return;
    if (data->x) {
        ars_dataset_standardize(data, mean, std);
    } else if (data->source) {
        data->source->standardized = 1;
        data->source->shift = mean;
        data->source->scale = std > 0.0 && isfinite(std) ? 1.0 / std : 1.0;
    }
}

/* ---- validation split ------------------------------------------------------------ */

int ars_validation_marks(int count, double fraction, uint64_t seed, uint8_t *marks)
{
    if (!(fraction > 0 && fraction < 1))
        return ars_error(ARS_EINVAL, "validation = %g: expected a fraction in (0, 1)", fraction);
    long long held = llround(fraction * count);
    if (held < 1 || held >= count)
        return ars_error(ARS_EINVAL, "validation = %g of %d samples is %lld: expected at least one sample for "
                         "validation and one for training", fraction, count, held);
    uint32_t *perm = malloc((size_t)count * sizeof *perm);
    if (!perm) return ars_error(ARS_ENOMEM, "validation split: cannot allocate a permutation of %d samples", count);
    ars_rng_permutation(perm, (size_t)count, seed, ars_stream(ARS_STREAM_DATA, DATA_VALIDATION));
    memset(marks, 0, (size_t)count);
    for (long long i = 0; i < held; i++) marks[perm[i]] = 1;
    free(perm);
    return (int)held;
}

int ars_dataset_validation_split(ars_dataset *train, double fraction, uint64_t seed, ars_dataset *validation)
{
    if (!train || !validation || train == validation)
        return ars_error(ARS_EINVAL, "validation split: train and validation must be two sets");
    memset(validation, 0, sizeof *validation);
    if (train->count < 2 || (!train->x && !train->source))
        return ars_error(ARS_EINVAL, "validation split of %s: %d samples, expected at least 2", train->name,
                         train->count);
    const int count = train->count, dim = train->dim, width = train->target_dim;
    uint8_t *marks = malloc((size_t)count);
    if (!marks) return ars_error(ARS_ENOMEM, "validation split: cannot allocate %d marks", count);
    int held = ars_validation_marks(count, fraction, seed, marks);
    if (held < 0) {
        free(marks);
        return ars_error_context(held, "%s", train->name);
    }
    if (train->x) {   /* the held-out rows are copied out of x */
        char from[300], what[80];
        double budget = ars_user_budget(NULL, from, sizeof from);
        snprintf(what, sizeof what, "the %d samples held out for validation", held);
        int rc = ars_user_check_fits(train->name, what, (double)held * (4.0 * dim + 4.0 + 4.0 * width), budget, from);
        if (rc) {
            free(marks);
            return rc;
        }
    }
    ars_dataset *v = validation;
    snprintf(v->name, sizeof v->name, "%.52s-validation", train->name);
    v->count = held;
    v->dim = dim;
    v->shape = train->shape;
    v->classes = train->classes;
    v->target_dim = width;
    int rc = 0;
    if (train->x) v->x = malloc((size_t)held * (size_t)dim * sizeof *v->x);
    if (train->labels) v->labels = malloc((size_t)held * sizeof *v->labels);
    if (train->targets) v->targets = malloc((size_t)held * (size_t)width * sizeof *v->targets);
    uint32_t *train_map = NULL;
    if (train->source) {
        v->source = source_new(train->source->file, held);
        train_map = malloc((size_t)(count - held) * sizeof *train_map);
        if (v->source) v->source->map = malloc((size_t)held * sizeof *v->source->map);
    }
    if ((train->x && !v->x) || (train->labels && !v->labels) || (train->targets && !v->targets) ||
        (train->source && (!v->source || !v->source->map || !train_map)))
        rc = ars_error(ARS_ENOMEM, "validation split of %s: cannot allocate %d samples", train->name, held);
    if (rc) {
        free(marks);
        free(train_map);
        ars_dataset_free(v);
        return rc;
    }
    /* Both parts keep the file order; train is compacted in place. */
    int kept = 0, moved = 0;
    for (int i = 0; i < count; i++) {
        ars_dataset *to = marks[i] ? v : train;
        int at = marks[i] ? moved++ : kept++;
        if (train->x && (to != train || at != i))
            memmove(to->x + (size_t)at * dim, train->x + (size_t)i * dim, (size_t)dim * sizeof *to->x);
        if (train->labels) to->labels[at] = train->labels[i];
        if (train->targets && (to != train || at != i))
            memmove(to->targets + (size_t)at * width, train->targets + (size_t)i * width,
                    (size_t)width * sizeof *to->targets);
        if (train->source) {
            uint32_t row = train->source->map ? train->source->map[i] : (uint32_t)i;
            if (marks[i]) v->source->map[at] = row;
            else train_map[at] = row;
        }
    }
    if (train->source) {
        free(train->source->map);
        train->source->map = train_map;
        train->source->count = kept;
        v->source->standardized = train->source->standardized;
        v->source->shift = train->source->shift;
        v->source->scale = train->source->scale;
    }
    train->count = kept;
    free(marks);
    return 0;
}

/* ---- an x and a y array into a data set ------------------------------------------- */

static void shape_text(const ars_array *a, char *out, size_t size)
{
    int used = snprintf(out, size, "[");
    for (int d = 0; d < a->rank && used >= 0 && (size_t)used < size; d++)
        used += snprintf(out + used, size - (size_t)used, "%s%lld", d ? ", " : "", (long long)a->dims[d]);
    if (used >= 0 && (size_t)used < size) snprintf(out + used, size - (size_t)used, "]");
}

static int check_pair(const ars_array *x, const ars_array *y, int regression)
{
    char xs[160], ys[160];
    shape_text(x, xs, sizeof xs);
    shape_text(y, ys, sizeof ys);
    if (x->rank > 4)
        return ars_error(ARS_EFORMAT, "%s has shape %s: expected [N, features], [N, time, features] or [N, channels, "
                         "height, width]", x->where, xs);
    for (int d = 0; d < x->rank; d++)
        if (x->dims[d] < 1)
            return ars_error(ARS_EFORMAT, "%s has shape %s: %s", x->where, xs,
                             d == 0 ? "no samples" : "no values per sample");
    if (x->dims[0] > ARS_USER_MAX_ROWS)
        return ars_error(ARS_EFORMAT, "%s has %lld samples: at most %d are supported", x->where,
                         (long long)x->dims[0], ARS_USER_MAX_ROWS);
    if (x->row_values > 0x7fffffff)
        return ars_error(ARS_EFORMAT, "%s has shape %s: %lld values per sample, at most %d are supported", x->where,
                         xs, (long long)x->row_values, 0x7fffffff);
    if (y->rank > 2)
        return ars_error(ARS_EFORMAT, "%s has shape %s: expected [N] (labels or targets) or [N, T] (targets)",
                         y->where, ys);
    if (y->dims[0] != x->dims[0])
        return ars_error(ARS_EFORMAT, "%s has %lld samples but %s has %lld: expected one %s per sample", x->where,
                         (long long)x->dims[0], y->where, (long long)y->dims[0], regression ? "target row" : "label");
    int64_t width = y->rank == 2 ? y->dims[1] : 1;
    if (width < 1 || width > (1 << 20))
        return ars_error(ARS_EFORMAT, "%s has shape %s: expected 1 to %d targets per sample", y->where, ys, 1 << 20);
    if (!regression && width != 1)
        return ars_error(ARS_EFORMAT, "%s has shape %s: class labels are one integer per sample, [N]%s; for %lld "
                         "regression targets per sample set [run] loss = mse", y->where, ys,
                         " (one-hot rows? store y.argmax(1))", (long long)width);
    return 0;
}

static ars_shape sample_shape(const ars_array *x)
{
    switch (x->rank) {
    case 1: return ars_shape_vector(1);
    case 2: return ars_shape_vector((int)x->dims[1]);
    case 3: return ars_shape_matrix((int)x->dims[1], (int)x->dims[2]);
    default: return ars_shape_image((int)x->dims[1], (int)x->dims[2], (int)x->dims[3]);
    }
}

static int read_y(ars_array *y, ars_dataset *data, int64_t count, int regression, double budget, const char *from)
{
    const int width = y->rank == 2 ? (int)y->dims[1] : 1;
    TRY(y_alloc(data, y->where, count, width, regression, budget, from));
    int64_t block = ars_user_block_rows((int64_t)width * 8, budget);
    if (block > count) block = count;
    double *values = malloc((size_t)block * (size_t)width * sizeof *values);
    if (!values) return ars_error(ARS_ENOMEM, "%s: cannot allocate a block of %lld rows", y->where, (long long)block);
    int rc = 0;
    for (int64_t start = 0; start < count && !rc; start += block) {
        int64_t n = count - start < block ? count - start : block;
        rc = y->read_block(y, start, n, 1, values);
        if (!rc) rc = y_put(data, y->where, start, values, n, width, NULL, NULL);
    }
    free(values);
    return rc;
}

/* In memory: every row read into x, checked. */
static int read_x_memory(ars_array *x, ars_dataset *data, int64_t count, double budget)
{
    const int64_t dim = x->row_values;
    data->x = malloc((size_t)count * (size_t)dim * sizeof *data->x);
    if (!data->x)
        return ars_error(ARS_ENOMEM, "%s: cannot allocate %lld samples x %lld values", x->where, (long long)count,
                         (long long)dim);
    const int64_t block = ars_user_block_rows(dim * 4, budget);
    for (int64_t start = 0; start < count; start += block) {
        int64_t n = count - start < block ? count - start : block;
        float *at = data->x + (size_t)start * (size_t)dim;
        TRY(x->read_block(x, start, n, 0, at));
        for (int64_t r = 0; r < n; r++) TRY(finite_or_error(x, start + r, at + r * dim, dim, ""));
    }
    return 0;
}

/* Streamed: the whole array scanned once, block by block, for non-finite
 * values and the statistics of the rows not marked for validation. */
static int scan_x(ars_array *x, int64_t count, const uint8_t *marks, ars_data_source *s, double budget)
{
    const int64_t dim = x->row_values;
    const int64_t block = ars_user_block_rows(dim * 4, budget);
    const int64_t rows = count < block ? count : block;
    float *values = malloc((size_t)rows * (size_t)dim * sizeof *values);
    if (!values) return ars_error(ARS_ENOMEM, "%s: cannot allocate a block of %lld rows", x->where, (long long)rows);
    moments m = {0};
    int rc = 0;
    for (int64_t start = 0; start < count && !rc; start += block) {
        int64_t n = count - start < block ? count - start : block;
        rc = x->read_block(x, start, n, 0, values);
        for (int64_t r = 0; r < n && !rc; r++) {
            rc = finite_or_error(x, start + r, values + r * dim, dim, "");
            if (!rc && !(marks && marks[start + r])) moments_add(&m, values + r * dim, (size_t)dim);
        }
    }
    free(values);
    if (!rc) {
        moments_result(&m, &s->mean, &s->std);
        s->have_stats = 1;
    }
    return rc;
}

/* Takes x and y (closes y; x is closed, or kept by the streamed source). */
static int load_pair(ars_array *x, ars_array *y, const char *name, const ars_user_options *o,
                     const ars_user_scan *prescan, ars_dataset *data, ars_user_scan *scan)
{
    int rc = check_pair(x, y, o->regression);
    const int64_t total = x->dims[0];
    const int64_t count = o->limit > 0 && o->limit < total ? o->limit : total;
    char from[300];
    double budget = ars_user_budget(o, from, sizeof from);
    if (!rc) {
        snprintf(data->name, sizeof data->name, "%s", name);
        data->count = (int)count;
        data->dim = (int)x->row_values;
        data->shape = sample_shape(x);
        rc = read_y(y, data, count, o->regression, budget, from);
        if (!rc) budget -= data->labels ? 4.0 * (double)count : 4.0 * (double)count * data->target_dim;
    }
    ars_array_close(y);
    if (rc) {
        ars_array_close(x);
        return rc;
    }
    const double bytes = 4.0 * (double)count * (double)x->row_values;
    const int stream = o->stream == 1 || (o->stream < 0 && bytes > budget / 2);
    if (!stream) {
        char what[160];
        snprintf(what, sizeof what, "%lld samples of %lld values as floats", (long long)count,
                 (long long)x->row_values);
        rc = ars_user_check_fits(x->where, what, bytes, budget, from);
        if (rc && o->stream == 0) ars_error_context(rc, "[run] stream_data = false");
        if (!rc) rc = read_x_memory(x, data, count, budget);
        ars_array_close(x);
        return rc;
    }
    /* Streaming: a block of rows for the scan, and the sampler's batches. */
    const int64_t block = ars_user_block_rows(x->row_values * 4, budget);
    rc = ars_user_check_fits(x->where, "a block of rows to scan the file", 4.0 * (double)x->row_values *
                             (double)(block < count ? block : count), budget, from);
    shared_array *file = rc ? NULL : calloc(1, sizeof *file);
    if (!rc && !file) rc = ars_error(ARS_ENOMEM, "%s: out of memory", x->where);
    if (rc) {
        ars_array_close(x);
        return rc;
    }
    file->array = x;
    data->source = source_new(file, (int)count);
    if (!data->source) {
        ars_array_close(x);
        free(file);
        return ars_error(ARS_ENOMEM, "%s: out of memory", x->where);
    }
    if (prescan && prescan->valid) {
        data->source->mean = prescan->mean;
        data->source->std = prescan->std;
        data->source->have_stats = 1;
        return 0;
    }
    uint8_t *marks = NULL;
    if (o->validation > 0) {
        marks = malloc((size_t)count);
        if (!marks) return ars_error(ARS_ENOMEM, "%s: cannot allocate %lld validation marks", x->where,
                                     (long long)count);
        rc = ars_validation_marks((int)count, o->validation, o->seed, marks);
        if (rc > 0) rc = 0;
    }
    if (!rc) rc = scan_x(x, count, marks, data->source, budget);
    free(marks);
    if (!rc && scan) {
        scan->valid = 1;
        scan->mean = data->source->mean;
        scan->std = data->source->std;
    }
    return rc;
}

static void base_name(char *out, size_t size, const char *path, const char *suffix)
{
    const char *slash = strrchr(path, '/');
    snprintf(out, size, "%.50s%s", slash ? slash + 1 : path, suffix);
}

int ars_user_load(const ars_user_spec *spec, const ars_user_options *o, const ars_user_scan *prescan,
                  ars_dataset *data, ars_user_scan *scan)
{
    memset(data, 0, sizeof *data);
    if (scan) memset(scan, 0, sizeof *scan);
    char name[sizeof data->name];
    ars_array *x = NULL, *y = NULL;
    switch (spec->format) {
    case ARS_USER_HDF5: {
        const char *xn = o->test_part ? "x_test" : "x", *yn = o->test_part ? "y_test" : "y";
        const double budget = ars_user_budget(o, name, sizeof name);
        int x_missing = 0, y_missing = 0;
        TRY(ars_h5array_open(spec->path, xn, budget, &x, o->test_part ? &x_missing : NULL));
        int rc = ars_h5array_open(spec->path, yn, budget, &y, o->test_part ? &y_missing : NULL);
        if (rc) {
            ars_array_close(x);
            return rc;
        }
        if (x_missing || y_missing) {
            ars_array_close(x);
            ars_array_close(y);
            if (x_missing && y_missing) return 0;   /* no test part */
            return ars_error(ARS_EFORMAT, "%s: has '%s' but no '%s': a test part needs both (or neither)",
                             spec->path, x_missing ? yn : xn, x_missing ? xn : yn);
        }
        base_name(name, sizeof name, spec->path, o->test_part ? ":test" : "");
        return load_pair(x, y, name, o, prescan, data, scan);
    }
    case ARS_USER_NPY: {
        if (o->test_part) return 0;
        TRY(ars_npy_open(spec->path, &x));
        int rc = ars_npy_open(spec->y_path, &y);
        if (rc) {
            ars_array_close(x);
            return rc;
        }
        base_name(name, sizeof name, spec->path, "");
        return load_pair(x, y, name, o, prescan, data, scan);
    }
    case ARS_USER_CSV: {
        if (o->test_part) return 0;
        if (o->stream == 1)
            return ars_error(ARS_EINVAL, "%s: stream_data = true: a CSV file is read into memory (rows of text "
                             "cannot be found without reading them); write it as HDF5 or .npy to stream it",
                             spec->path);
        char from[300];
        double budget = ars_user_budget(o, from, sizeof from);
        int rc = ars_csv_load(spec->path, o, budget, from, data);
        if (!rc) base_name(data->name, sizeof data->name, spec->path, "");
        return rc;
    }
    default: return ars_error(ARS_EINVAL, "ars_user_data_load: no format");
    }
}

int ars_user_data_load(const ars_user_spec *spec, const ars_user_options *options, ars_dataset *data)
{
    if (!data) return ars_error(ARS_EINVAL, "ars_user_data_load: data is NULL");
    memset(data, 0, sizeof *data);
    if (!spec || !options) return ars_error(ARS_EINVAL, "ars_user_data_load: spec or options is NULL");
    if (spec->format == ARS_USER_CSV && (!options->label || !options->label[0]))
        return ars_error(ARS_EINVAL, "%s: a CSV file needs the name of its label column ([run] label = ...)",
                         spec->path);
    ars_user_scan scan = {0};
    if (spec->format == ARS_USER_HDF5 && !options->trusted) TRY(ars_h5data_check(spec, options, &scan));
    int rc = ars_user_load(spec, options, &scan, data, NULL);
    if (rc) ars_dataset_free(data);
    return rc;
}

/* ---- the run's data -------------------------------------------------------------- */

static int check_parts(const ars_dataset *train, const ars_dataset *test)
{
    ars_shape a = ars_dataset_shape(train), b = ars_dataset_shape(test);
    char as[48], bs[48];
    if (!ars_shape_equal(&a, &b))
        return ars_error(ARS_EFORMAT, "the test part %s has samples of shape %s but the training part %s has %s",
                         test->name, ars_shape_text(&b, bs, sizeof bs), train->name, ars_shape_text(&a, as, sizeof as));
    if ((train->labels != NULL) != (test->labels != NULL) || train->target_dim != test->target_dim)
        return ars_error(ARS_EFORMAT, "the test part %s has %d targets per sample but the training part %s has %d",
                         test->name, test->target_dim, train->name, train->target_dim);
    return 0;
}

static int load_run(const ars_run_config *run, int train_limit, ars_dataset *train, ars_dataset *test,
                    double *applied_mean, double *applied_std)
{
    ars_user_spec spec;
    TRY(ars_user_spec_parse(run->data, &spec));
    ars_user_options o = {.label = run->label, .regression = run->loss == ARS_LOSS_MSE, .limit = train_limit,
                          .stream = run->stream_data, .validation = run->validation, .seed = run->seed};
    TRY(ars_user_data_load(&spec, &o, train));
    if (run->validation > 0) {
        TRY(ars_dataset_validation_split(train, run->validation, run->seed, test));
    } else {
        ars_user_spec test_spec = spec;
        o.limit = run->test_limit;
        o.validation = 0;
        if (run->test_data[0]) TRY(ars_user_spec_parse(run->test_data, &test_spec));
        else o.test_part = 1;
        if (run->test_data[0] || spec.format == ARS_USER_HDF5) TRY(ars_user_data_load(&test_spec, &o, test));
        if (test->count == 0)
            return ars_error(ARS_EINVAL, "%s has no test part%s: set [run] validation = 0.1 (that fraction of the "
                             "training samples, held out) or test_data = %s", run->data,
                             spec.format == ARS_USER_HDF5 ? " (datasets x_test and y_test)" : "",
                             spec.format == ARS_USER_NPY ? "npy:XTEST,YTEST" : spec.format == ARS_USER_CSV
                             ? "csv:TEST.csv" : "hdf5:TEST.h5");
        TRY(check_parts(train, test));
    }
    if (train->labels) {
        int classes = train->classes > test->classes ? train->classes : test->classes;
        train->classes = test->classes = classes;
    }
    double mean = 0, std = 1;
    if (run->standardize) {
        TRY(ars_dataset_stats(train, &mean, &std));
        ars_dataset_standardize_any(train, mean, std);
        ars_dataset_standardize_any(test, mean, std);
        if (!(std > 0 && isfinite(std))) std = 1;   /* what the standardization applied */
    }
    *applied_mean = mean;
    *applied_std = std;
    return 0;
}

int ars_user_data_load_run(const ars_run_config *run, int rank, int train_limit, ars_dataset *train,
                           ars_dataset *test, double *mean, double *std)
{
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    double applied_mean = NAN, applied_std = NAN;
    int rc = load_run(run, train_limit, train, test, &applied_mean, &applied_std);
    if (mean) *mean = applied_mean;
    if (std) *std = applied_std;
    if (rc) {
        ars_dataset_free(train);
        ars_dataset_free(test);
        char host[256] = "?";
        gethostname(host, sizeof host);
        ars_error_context(rc, "rank %d on host %s: loading %s", rank, host, run->data);
    }
    return rc;
}
