/* predict: `arsenal predict` (Keras's model.predict): a trained model's
 * class probabilities (the softmax of its logits) or regression outputs
 * for every sample of an input file, streamed: a batch of samples is read,
 * standardized as the training run standardized its data, predicted and
 * written before the next is read, so memory holds one batch whatever the
 * size of the input. Inputs (ars_input): IDX files (gzip or plain; unsigned
 * bytes scaled to [0, 1] as arsenal's (Fashion-)MNIST loader does), an
 * HDF5 dataset (`x` by default), a .npy array, a CSV file of numbers with
 * a header row (the run's label column, if it has one, skipped); every
 * one of them is read incrementally. Outputs: CSV
 * (a header row, one line per sample) or HDF5 (datasets `probabilities`,
 * `logits` with --logits, or `outputs`), written to a temporary file renamed into place at the end. */
#ifndef ARSENAL_PREDICT_H
#define ARSENAL_PREDICT_H

#include <stdint.h>
#include <stdio.h>

#include "arsenal/shape.h"

/* ---- inputs, a batch at a time ------------------------------------------- */

typedef enum { ARS_INPUT_IDX, ARS_INPUT_HDF5, ARS_INPUT_NPY, ARS_INPUT_CSV } ars_input_format;

typedef struct ars_input ars_input;

/* Opens path for reading samples. The format comes from a prefix
 * ("idx:", "hdf5:", "npy:", "csv:", as in data specs) or else from the
 * content (HDF5 signature, NumPy magic, gzip or IDX magic; anything else is
 * read as CSV). dataset: the HDF5 dataset (NULL: "x"). The header is
 * validated here: errors name the file and what is wrong. */
int ars_input_open(const char *path, const char *dataset, ars_input **input);
void ars_input_close(ars_input *input);

ars_input_format ars_input_format_of(const ars_input *input);
const char *ars_input_format_name(ars_input_format format);
/* "x.h5:/x", "t10k-images-idx3-ubyte.gz": the prefix of messages. */
const char *ars_input_where(const ars_input *input);
/* One sample's shape: the dimensions after the first (an IDX [N, H, W] of
 * images is [1, H, W]; a CSV row is [columns]). */
ars_shape ars_input_shape(const ars_input *input);
/* Samples in the file, -1 when not known before the end (CSV). */
int64_t ars_input_count(const ars_input *input);
/* A CSV input's column called name (the run's label column) is not a
 * feature: its values are skipped. 1 when the header has it; 0 (nothing
 * changes) for any other input, or before any read only. */
int ars_input_drop_column(ars_input *input, const char *name);
/* The next up to max_rows samples into x [rows, values per sample] as
 * floats; *rows = 0 at the end. A file that ends early is an error. */
int ars_input_read(ars_input *input, int max_rows, float *x, int *rows);

/* ---- the command ----------------------------------------------------------- */

typedef struct ars_predict_options {
    const char *checkpoint;
    const char *input;
    const char *dataset;        /* HDF5 input: the dataset (NULL: "x") */
    const char *label;          /* CSV input: a column to skip, not a feature (NULL: the run's label, if any) */
    const char *out;            /* NULL: CSV on stdout; "*.h5" / "*.hdf5": HDF5; else CSV */
    char *const *overrides;     /* --set section.key=value on the checkpoint's run file */
    int override_count;
    int top;                    /* > 0: the top classes and their probabilities only */
    int logits;                 /* classifier: the logits (the last layer's outputs), not their softmax */
    int batch;                  /* samples per read / forward / write */
} ars_predict_options;

typedef struct ars_predict_summary {
    int64_t samples;
    int classifier;             /* 1: probabilities of `columns` classes; 0: `columns` regression outputs */
    int logits;                 /* 1: a classifier's logits rather than probabilities */
    int columns;
    int hdf5;                   /* 1: HDF5 output; 0: CSV */
    double data_mean, data_std;
    int stats_stored;           /* 0: the standardization was recomputed from the run's training data */
} ars_predict_summary;

/* One process; errors name the file and what is wrong. Nothing is left at
 * options->out on failure. */
int ars_predict_checkpoint(const ars_predict_options *options, ars_predict_summary *summary);

#endif
