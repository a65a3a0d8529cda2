/* data: data sets in memory (IDX files of (Fashion-)MNIST, gzip or plain;
 * synthetic sets for tests; a user's HDF5, CSV and .npy files, whose x may
 * instead be streamed from the file), standardization, the seeded
 * validation split, and the seeded sampler that shards each global batch
 * over the ranks. */
#ifndef ARSENAL_DATA_H
#define ARSENAL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/shape.h"

/* Debian's dataset-fashion-mnist puts the files here. */
#define ARS_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct ars_data_source ars_data_source;   /* a streamed x (src/data/user_data.c) */

typedef struct ars_dataset {
    char name[64];
    int count;           /* samples */
    int dim;             /* features per sample */
    ars_shape shape;     /* of one sample, dim values: [1, 28, 28] for images; rank 0: [dim] */
    float *x;            /* [count, dim] */
    int32_t *labels;     /* [count] class ids, or NULL for regression */
    int classes;         /* number of classes (0 for regression) */
    float *targets;      /* [count, target_dim] regression targets, or NULL */
    int target_dim;
    /* x streamed from a file (HDF5, .npy) when it does not fit in memory:
     * then x is NULL and rows are read through ars_dataset_read_x (the
     * sampler does); labels and targets are always in memory. */
    ars_data_source *source;
} ars_dataset;

void ars_dataset_free(ars_dataset *data);

/* The shape of one sample of data: data->shape, or [dim] when it has none. */
ars_shape ars_dataset_shape(const ars_dataset *data);

/* A raw IDX file: magic 0x00 0x00 type ndim, big-endian dims, then data.
 * Only unsigned byte (0x08) data is accepted (what (Fashion-)MNIST use).
 * gzip or plain, decided by content. Validates magic, dimensions and that
 * the payload size matches exactly; errors name the file and what is wrong. */
typedef struct ars_idx {
    int ndim;
    int dims[4];
    size_t count;        /* product of dims */
    uint8_t *data;
} ars_idx;

int ars_idx_read(const char *path, ars_idx *idx);
void ars_idx_free(ars_idx *idx);

/* Loads "train" or "t10k" images+labels from dir (file names
 * <prefix>-images-idx3-ubyte[.gz] and <prefix>-labels-idx1-ubyte[.gz], the
 * .gz tried first), pixels scaled to [0, 1]. limit > 0 keeps the first limit
 * samples (limit <= 0: all). classes = max label + 1 over the whole file. */
int ars_mnist_load(const char *dir, const char *prefix, int limit, ars_dataset *data);

/* Per-feature-independent scalar standardization: x = (x - mean) / std.
 * mean_std is over all of x (population std, accumulated in double; 0 and 1
 * for an empty set); standardize treats std <= 0 (constant data) as 1. */
void ars_dataset_mean_std(const ars_dataset *data, double *mean, double *std);
void ars_dataset_standardize(ars_dataset *data, double mean, double std);

/* 1 if x or targets hold NaN/Inf; *sample is the first bad sample index. */
int ars_dataset_find_nonfinite(const ars_dataset *data, int *sample);

/* Synthetic sets, deterministic in seed; sample i has class i % classes.
 * spirals: 2-D, `classes` arms of radius 0..1 turning 1.5 times, Gaussian
 * noise of std `noise` radians on the angle. blobs: class centers ~ N(0, I),
 * points = center + spread * N(0, I). */
int ars_dataset_spirals(ars_dataset *data, int count, int classes, float noise, uint64_t seed);
int ars_dataset_blobs(ars_dataset *data, int count, int classes, int dim, float spread, uint64_t seed);
/* Regression: targets = teacher(x), teacher a random 1-hidden-layer tanh
 * network in_dim -> hidden -> out_dim, x ~ N(0, 1). */
int ars_dataset_teacher(ars_dataset *data, int count, int in_dim, int hidden, int out_dim, uint64_t seed);

/* Long-range sequence tasks of length time (docs/attention.md); a sample is
 * a row of time steps, for the sequence layers.
 * adding (Hochreiter & Schmidhuber 1997): 2 features per step, a value in
 * U(0, 1) and a marker; exactly two markers, one in steps [0, time/2), one
 * in [time/2, time); target (target_dim 1) = the sum of the two marked
 * values. Always answering 1.0 scores MSE 1/6 ~ 0.167 (the variance of
 * the sum). x [count, 2 * time] = (value, marker) per step.
 * copy (recall): 1 token id per step; step 0 holds a symbol in [0,
 * symbols), steps 1 .. time-2 random symbols (distractors), the last step
 * the recall cue = symbols; label = the symbol of step 0 (classes =
 * symbols, vocabulary symbols + 1; chance 1/symbols). */
int ars_dataset_adding(ars_dataset *data, int count, int time, uint64_t seed);
int ars_dataset_copy(ars_dataset *data, int count, int time, int symbols, uint64_t seed);
#define ARS_COPY_SYMBOLS 8   /* symbols of the run file's data = copy (vocabulary 9) */

/* Moves samples [keep, count) of data into a new set *rest (same dim,
 * classes, target_dim); data keeps the first keep, 1 <= keep < count. The
 * task itself (blob centers, teacher weights) comes from the seed, so a test
 * set for blobs or teacher must be split off one generated set, not made
 * with another seed (that would be another task). */
int ars_dataset_split(ars_dataset *data, int keep, ars_dataset *rest);

/* The sampler. Every epoch's order is a permutation from (seed, epoch), the
 * same on every rank and for every world size. Step s of an epoch takes the
 * global batch perm[s*B .. s*B+B) (the last one may be shorter: it is kept,
 * and the loss is normalized by the true global count, so it is weighted
 * correctly). Rank r takes rows [r*L, min((r+1)*L, batch size)) of it, with
 * L = ceil(B / world): a rank may get fewer rows, even zero. */
typedef struct ars_sampler {
    const ars_dataset *data;
    int global_batch;    /* B */
    int local_capacity;  /* L = ceil(B / world) */
    int rank, world;
    uint64_t seed;
    int epoch;           /* permutation currently held, -1 none */
    uint32_t *perm;
    int shuffle;         /* 0: identity order (evaluation) */
} ars_sampler;

int ars_sampler_create(ars_sampler *s, const ars_dataset *data, int global_batch,
                       int rank, int world, uint64_t seed, int shuffle);
void ars_sampler_destroy(ars_sampler *s);
int ars_sampler_steps_per_epoch(const ars_sampler *s);

typedef struct ars_batch {
    int rows;            /* this rank's rows */
    int global_rows;     /* rows over all ranks */
    float *x;            /* [local_capacity, dim] */
    int32_t *labels;     /* [local_capacity] or NULL */
    float *targets;      /* [local_capacity, target_dim] or NULL */
    uint32_t *ids;       /* global sample index per row */
    /* Set by ars_batch_alloc; ars_sampler_fill checks them, so a batch
     * allocated for another sampler is refused instead of overrun. */
    int capacity;        /* rows the buffers hold */
    int dim, target_dim;
} ars_batch;

int ars_batch_alloc(ars_batch *batch, const ars_sampler *s);
void ars_batch_free(ars_batch *batch);

/* Fills batch with this rank's share of step `step` of `epoch`. */
int ars_sampler_fill(ars_sampler *s, int epoch, int step, ars_batch *batch);

/* Augmentation of image batches (src/data/augment.c), as torchvision's
 * RandomCrop(padding = crop) followed by RandomHorizontalFlip(): pad crop
 * pixels of 0 on each side, cut the image back to height x width at an
 * offset (oy, ox) in [0, 2 crop]^2 of the padded image, then flip it left
 * to right with probability 1/2. The draw of a sample is a pure function
 * of (seed, epoch, global sample id) (Philox stream ARS_STREAM_AUGMENT,
 * instance epoch, counter id): the same sample of the same epoch gets the
 * same transform on any number of ranks. Nothing is allocated. */
typedef struct ars_augment {
    int crop;            /* padding per side in pixels, 0 = no crop */
    int flip;            /* 1: random horizontal flip */
} ars_augment;

/* The transform of sample id in epoch: crop offsets, and flip 0 or 1
 * (always 0 without a->flip; offsets 0 without a->crop). */
void ars_augment_draw(const ars_augment *a, uint64_t seed, int epoch, uint32_t id, int *oy, int *ox, int *flip);

/* Transforms one CHW image in place: output (c, y, x) = input (c, y + oy -
 * crop, x + ox - crop), 0 outside the input; then mirrored when flip. */
void ars_augment_transform(float *image, int channels, int height, int width, int crop, int oy, int ox, int flip);

/* Transforms the rows NCHW images of x in place, row r as sample ids[r].
 * With crop = 0 and flip = 0 it returns at once: x is left bit for bit. */
int ars_augment_apply(const ars_augment *a, uint64_t seed, int epoch, float *x, int rows, const uint32_t *ids,
                      int channels, int height, int width);

/* The (channels, height, width) of an image set's samples (its shape
 * [C, H, W]: 1 x 28 x 28 for fashion-mnist and mnist); an error naming the
 * set and its shape for any other. */
int ars_dataset_image_shape(const ars_dataset *data, int *channels, int *height, int *width);

/* ---- data sets a user brings (src/data/user_data.c; the readers
 * src/data/hdf5_data.c, npy_data.c, csv_data.c; datasets/README.md) -------
 * A spec names the files: "hdf5:PATH" (datasets x, y, optional x_test,
 * y_test), "csv:PATH" (a header row; the label column named by options),
 * "npy:XPATH,YPATH" (two .npy arrays; the paths hold no comma). x is
 * [N, features], [N, time, features] or [N, channels, height, width] (the
 * sample shape is the dims after N), any integer or float type, converted
 * to float; y is [N] class labels (integers 0 .. 65535, classes = max + 1)
 * or, for regression (loss = mse), float targets [N] or [N, T]. Every value
 * is checked (finite, labels integral and in range) with the file and the
 * row (CSV: line and column) of the first bad one; nothing is allocated
 * before its size is checked against the memory budget. */
typedef enum { ARS_USER_NONE = 0, ARS_USER_HDF5, ARS_USER_CSV, ARS_USER_NPY } ars_user_format;

typedef struct ars_user_spec {
    ars_user_format format;
    char path[256];      /* hdf5, csv: the file; npy: the x file */
    char y_path[256];    /* npy: the y file */
} ars_user_spec;

/* The format a data spec names, ARS_USER_NONE for anything else (a
 * built-in set such as "fashion-mnist"). */
ars_user_format ars_user_format_of(const char *text);
/* Parses a spec; an error says what is expected. */
int ars_user_spec_parse(const char *text, ars_user_spec *spec);

typedef struct ars_user_options {
    const char *label;       /* csv: the label column (required) */
    int regression;          /* 1: y are float targets (loss = mse); 0: class labels */
    int limit;               /* > 0: the first limit samples only */
    int stream;              /* -1 auto: x in memory when it takes at most half the budget, else streamed;
                              * 0: in memory; 1: streamed (HDF5 and .npy only) */
    int test_part;           /* hdf5: x_test / y_test instead of x / y (an empty set when absent) */
    double memory_limit;     /* bytes the loader may use; 0: what ars_memory_budget_get leaves */
    int trusted;             /* hdf5: skip the checking child (ars_user_data_load) */
    /* A streamed set's standardization statistics leave out the rows the
     * validation split (validation > 0, seed) will take, as in memory. */
    double validation;
    uint64_t seed;
} ars_user_options;

/* Loads one part of a user's data set into *data (zeroed on failure; count
 * 0 for a test part the file does not have). An HDF5 file is first read
 * whole in a forked child under time and memory limits (libhdf5 may crash
 * or hang on a corrupted file: that becomes an error here) unless
 * options->trusted; the child calls no MPI and leaves by _exit. */
int ars_user_data_load(const ars_user_spec *spec, const ars_user_options *options, ars_dataset *data);

/* The run's data when run->data is a user spec (ars_load_run_data calls
 * it): the training part (train_limit), then the evaluation set: the
 * validation split when run->validation > 0 (the file's test part is then
 * not read), else run->test_data, else the HDF5 file's x_test / y_test
 * (test_limit); no evaluation set is an error saying how to get one. The
 * classes are those of all parts; standardization (run->standardize) uses
 * the training part's mean and std, which *mean and *std (may be NULL)
 * receive (a std of 0 as 1; 0 and 1 without standardization). Errors name
 * the rank and host. */
struct ars_run_config;
int ars_user_data_load_run(const struct ars_run_config *run, int rank, int train_limit, ars_dataset *train,
                           ars_dataset *test, double *mean, double *std);

/* Rows ids[0..rows) of data's x (in memory or streamed, standardized as the
 * set is) into x [rows, dim]. */
int ars_dataset_read_x(const ars_dataset *data, const uint32_t *ids, int rows, float *x);
/* Closes a streamed set's file (ars_dataset_free calls it). */
void ars_data_source_close(ars_data_source *source);

/* Mean and std of every value of x (in memory or streamed), accumulated in
 * double in row order; standardize as ars_dataset_standardize does, also
 * on a streamed set (applied as rows are read). */
int ars_dataset_stats(const ars_dataset *data, double *mean, double *std);
void ars_dataset_standardize_any(ars_dataset *data, double mean, double std);

/* The validation split: round(fraction * count) samples, chosen by a
 * Philox permutation of (seed) (ARS_STREAM_DATA), move from *train into a
 * new set *validation; both keep the file order of their rows. The same
 * seed and count give the same split on every rank and world size. 0 <
 * fraction < 1, and both parts must get at least one sample. A streamed
 * set is split into two views of its file. */
int ars_dataset_validation_split(ars_dataset *train, double fraction, uint64_t seed, ars_dataset *validation);
/* marks[i] = 1 for the samples that split sends to validation (count
 * bytes, caller's); returns their number, or an error. */
int ars_validation_marks(int count, double fraction, uint64_t seed, uint8_t *marks);

#endif
