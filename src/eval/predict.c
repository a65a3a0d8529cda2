/* predict: `arsenal predict` (predict.h): checkpoint -> model, then per
 * batch: read samples (predict_input.c), standardize them as the run did,
 * forward in evaluation mode, softmax (in double) for a classifier, write
 * the rows (CSV or HDF5, extended batch by batch) and go on. Memory holds
 * one batch. The output goes to a temporary file in the same directory,
 * renamed over options->out when every sample is written. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/predict.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../ckpt_io.h"
#include "arsenal/error.h"
#include "arsenal/evaluate.h"

/* ---- writers ---------------------------------------------------------------- */

typedef struct writer {
    int hdf5;
    const char *path;          /* the final name (NULL: stdout) */
    char tmp[1100];
    FILE *csv;
    hid_t file;
    hid_t sets[3];             /* probabilities | outputs, top_classes, top_probabilities */
    int widths[3];
    int64_t rows;
    int classifier, logits, columns, top;
} writer;

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static hid_t create_rows(hid_t file, const char *name, hid_t type, int width)
{
    hsize_t dims[2] = {0, (hsize_t)width}, max[2] = {H5S_UNLIMITED, (hsize_t)width};
    hsize_t rows = (hsize_t)(262144 / (4 * width)), chunk[2];
    chunk[0] = rows < 1 ? 1 : rows > 4096 ? 4096 : rows;
    chunk[1] = (hsize_t)width;
    hid_t space = H5Screate_simple(2, dims, max);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    hid_t set = space < 0 || plist < 0 || H5Pset_chunk(plist, 2, chunk) < 0
                    ? -1
                    : H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    if (plist >= 0) H5Pclose(plist);
    if (space >= 0) H5Sclose(space);
    return set;
}

static int writer_open(writer *w, const char *path, int classifier, int logits, int columns, int top,
                       const char *checkpoint, const char *input)
{
    memset(w, 0, sizeof *w);
    w->file = -1;
    for (int k = 0; k < 3; k++) w->sets[k] = -1;
    w->path = path;
    w->classifier = classifier;
    w->logits = logits;
    w->columns = columns;
    w->top = top;
    w->hdf5 = path && (ends_with(path, ".h5") || ends_with(path, ".hdf5"));
    if (!path) {
        w->csv = stdout;
    } else {
        if (snprintf(w->tmp, sizeof w->tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof w->tmp)
            return ars_error(ARS_EINVAL, "--out: path too long");
        if (!w->hdf5 && !(w->csv = fopen(w->tmp, "w")))
            return ars_error(ARS_EIO, "--out %s: cannot create %s: %s", path, w->tmp, strerror(errno));
    }
    if (w->hdf5) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (w->file < 0) return ars_error(ARS_EIO, "--out %s: cannot create the HDF5 file %s", path, w->tmp);
        TRY(ars_h5_attr_write_string(w->file, "checkpoint", checkpoint));
        TRY(ars_h5_attr_write_string(w->file, "input", input));
        w->widths[0] = columns;
        w->sets[0] = create_rows(w->file, logits ? "logits" : classifier ? "probabilities" : "outputs", H5T_IEEE_F32LE,
                                 columns);
        if (top) {
            w->widths[1] = w->widths[2] = top;
            w->sets[1] = create_rows(w->file, "top_classes", H5T_STD_I32LE, top);
            w->sets[2] = create_rows(w->file, "top_probabilities", H5T_IEEE_F32LE, top);
        }
        for (int k = 0; k < (top ? 3 : 1); k++)
            if (w->sets[k] < 0) return ars_error(ARS_EIO, "--out %s: cannot create its datasets", path);
        return 0;
    }
    /* the CSV header */
    if (top) {
        for (int k = 1; k <= top; k++) fprintf(w->csv, "%stop%d_class,top%d_prob", k > 1 ? "," : "", k, k);
    } else {
        for (int c = 0; c < columns; c++)
            fprintf(w->csv, "%s%s_%d", c ? "," : "", logits ? "logit" : classifier ? "prob" : "output", c);
    }
    fputc('\n', w->csv);
    return 0;
}

static int append_rows(writer *w, int k, hid_t memory_type, int rows, const void *data)
{
    hsize_t dims[2] = {(hsize_t)(w->rows + rows), (hsize_t)w->widths[k]};
    hsize_t start[2] = {(hsize_t)w->rows, 0}, count[2] = {(hsize_t)rows, (hsize_t)w->widths[k]};
    herr_t status = H5Dset_extent(w->sets[k], dims);
    hid_t space = status < 0 ? -1 : H5Dget_space(w->sets[k]);
    hid_t memory = H5Screate_simple(2, count, NULL);
    status = space < 0 || memory < 0 ? -1 : H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (status >= 0) status = H5Dwrite(w->sets[k], memory_type, memory, space, H5P_DEFAULT, data);
    if (memory >= 0) H5Sclose(memory);
    if (space >= 0) H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "--out %s: cannot write samples %lld to %lld", w->path,
                                  (long long)w->rows, (long long)(w->rows + rows - 1))
                      : 0;
}

/* values [rows, columns]; top classes and probabilities [rows, top] */
static int writer_rows(writer *w, int rows, const float *values, const int32_t *top_classes, const float *top_values)
{
    if (w->hdf5) {
        TRY(append_rows(w, 0, H5T_NATIVE_FLOAT, rows, values));
        if (w->top) {
            TRY(append_rows(w, 1, H5T_NATIVE_INT32, rows, top_classes));
            TRY(append_rows(w, 2, H5T_NATIVE_FLOAT, rows, top_values));
        }
    } else {
        for (int r = 0; r < rows; r++) {
            if (w->top) {
                for (int k = 0; k < w->top; k++)
                    fprintf(w->csv, "%s%d,%.9g", k ? "," : "", (int)top_classes[(size_t)r * w->top + k],
                            (double)top_values[(size_t)r * w->top + k]);
            } else {
                for (int c = 0; c < w->columns; c++)
                    fprintf(w->csv, "%s%.9g", c ? "," : "", (double)values[(size_t)r * w->columns + c]);
            }
            fputc('\n', w->csv);
        }
        if (ferror(w->csv))
            return ars_error(ARS_EIO, "cannot write %s: %s", w->path ? w->tmp : "stdout", strerror(errno));
    }
    w->rows += rows;
    return 0;
}

/* Closes; on success renames the temporary file over the output, on
 * failure removes it. */
static int writer_close(writer *w, int rc)
{
    for (int k = 0; k < 3; k++)
        if (w->sets[k] >= 0) H5Dclose(w->sets[k]);
    if (w->file >= 0 && H5Fclose(w->file) < 0 && !rc)
        rc = ars_error(ARS_EIO, "--out %s: cannot close the HDF5 file %s", w->path, w->tmp);
    if (w->csv && w->csv != stdout) {
        if (fclose(w->csv) != 0 && !rc) rc = ars_error(ARS_EIO, "cannot write %s: %s", w->tmp, strerror(errno));
    } else if (w->csv == stdout && fflush(stdout) != 0 && !rc) {
        rc = ars_error(ARS_EIO, "cannot write stdout: %s", strerror(errno));
    }
    if (!w->path) return rc;
    if (!rc && rename(w->tmp, w->path) != 0)
        rc = ars_error(ARS_EIO, "--out: cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    if (rc) unlink(w->tmp);
    return rc;
}

/* ---- the loop --------------------------------------------------------------- */

/* softmax of the logits in double, rounded to float; ties of the top
 * classes go to the lower class (as the argmax of evaluation) */
static void softmax_rows(const float *logits, int rows, int classes, float *p)
{
    for (int r = 0; r < rows; r++) {
        const float *z = logits + (size_t)r * classes;
        float *out = p + (size_t)r * classes;
        float max = z[0];
        for (int j = 1; j < classes; j++) max = z[j] > max ? z[j] : max;
        double sum = 0;
        for (int j = 0; j < classes; j++) sum += exp((double)z[j] - max);
        for (int j = 0; j < classes; j++) out[j] = (float)(exp((double)z[j] - max) / sum);
    }
}

static void top_rows(const float *p, int rows, int classes, int top, int32_t *top_classes, float *top_values)
{
    for (int r = 0; r < rows; r++) {
        const float *row = p + (size_t)r * classes;
        int32_t *cls = top_classes + (size_t)r * top;
        float *val = top_values + (size_t)r * top;
        int n = 0;
        for (int j = 0; j < classes; j++) {
            /* insertion into the sorted top list: higher first, the lower class first among equals */
            if (n == top && !(row[j] > val[top - 1])) continue;
            int at = n < top ? n++ : top - 1;
            while (at > 0 && row[j] > val[at - 1]) {
                val[at] = val[at - 1];
                cls[at] = cls[at - 1];
                at--;
            }
            val[at] = row[j];
            cls[at] = j;
        }
    }
}

int ars_predict_checkpoint(const ars_predict_options *o, ars_predict_summary *summary)
{
    memset(summary, 0, sizeof *summary);
    if (o->batch < 1) return ars_error(ARS_EINVAL, "--batch %d: expected at least 1", o->batch);
    ars_trained t;
    TRY(ars_trained_open(&t, o->checkpoint, o->overrides, o->override_count, NULL, NULL));
    const int classifier = ars_trained_is_classifier(&t);
    int rc = 0;
    /* what the options ask of the model, before the input is read */
    if (o->top && !classifier)
        rc = ars_error(ARS_EINVAL, "--top %d: the model of %s is a regression (loss mse), it has no classes",
                       o->top, o->checkpoint);
    if (!rc && o->top && o->logits)
        rc = ars_error(ARS_EINVAL, "--top and --logits: the top classes are by probability, the logits are all of them");
    if (!rc && o->logits && !classifier)
        rc = ars_error(ARS_EINVAL, "--logits: the model of %s is a regression (loss mse): its outputs are what it "
                       "predicts already", o->checkpoint);
    ars_input *in = NULL;
    if (!rc) rc = ars_input_open(o->input, o->dataset, &in);
    if (!rc && o->label) {
        if (ars_input_format_of(in) != ARS_INPUT_CSV)
            rc = ars_error(ARS_EINVAL, "--label %s: %s is a %s file, not CSV", o->label, ars_input_where(in),
                           ars_input_format_name(ars_input_format_of(in)));
        else if (!ars_input_drop_column(in, o->label))
            rc = ars_error(ARS_EINVAL, "--label %s: %s has no such column", o->label, ars_input_where(in));
    } else if (!rc) {
        ars_input_drop_column(in, t.run.label);   /* a CSV of the run's own kind: its label is no feature */
    }
    if (!rc) rc = ars_trained_resolve(&t, NULL);
    if (!rc) {
        const ars_shape shape = ars_input_shape(in);
        rc = ars_trained_check_shape(&t.input_shape, &shape, o->checkpoint, ars_input_where(in));
    }
    if (!rc) rc = ars_trained_build(&t, o->batch, NULL);
    const int columns = rc ? 0 : t.model.out_dim;
    if (!rc && o->top > columns)
        rc = ars_error(ARS_EINVAL, "--top %d: the model of %s has %d classes", o->top, o->checkpoint, columns);
    float *x = NULL, *p = NULL, *top_values = NULL;
    int32_t *top_classes = NULL;
    if (!rc) {
        x = malloc(sizeof(float) * (size_t)o->batch * (size_t)t.model.in_dim);
        p = malloc(sizeof(float) * (size_t)o->batch * (size_t)columns);
        if (o->top) {
            top_values = malloc(sizeof(float) * (size_t)o->batch * (size_t)o->top);
            top_classes = malloc(sizeof(int32_t) * (size_t)o->batch * (size_t)o->top);
        }
        if (!x || !p || (o->top && (!top_values || !top_classes)))
            rc = ars_error(ARS_ENOMEM, "out of memory for a batch of %d samples (--batch)", o->batch);
    }
    writer w;
    memset(&w, 0, sizeof w);
    w.file = -1;
    for (int k = 0; k < 3; k++) w.sets[k] = -1;
    int opened = 0;
    if (!rc) {
        rc = writer_open(&w, o->out, classifier, o->logits, columns, o->top, o->checkpoint, o->input);
        opened = 1;
    }
    while (!rc) {
        int rows = 0;
        rc = ars_input_read(in, o->batch, x, &rows);
        if (rc || rows == 0) break;
        ars_trained_standardize(&t, x, rows);
        ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = rows, .global_rows = rows};
        rc = ars_model_forward(&t.model, &pass, x);
        if (rc) break;
        const float *y = ars_model_output(&t.model);
        if (classifier && !o->logits) softmax_rows(y, rows, columns, p);
        else memcpy(p, y, sizeof(float) * (size_t)rows * (size_t)columns);
        if (o->top) top_rows(p, rows, columns, o->top, top_classes, top_values);
        rc = writer_rows(&w, rows, p, top_classes, top_values);
    }
    if (opened) rc = writer_close(&w, rc);
    if (!rc) {
        summary->samples = w.rows;
        summary->classifier = classifier;
        summary->logits = o->logits;
        summary->columns = o->top ? o->top : columns;
        summary->hdf5 = w.hdf5;
        summary->data_mean = t.data_mean;
        summary->data_std = t.data_std;
        summary->stats_stored = t.stats_stored;
    }
    free(x);
    free(p);
    free(top_values);
    free(top_classes);
    ars_input_close(in);
    ars_trained_free(&t);
    return rc;
}
