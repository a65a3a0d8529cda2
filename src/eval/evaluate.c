/* evaluate: the figures of `arsenal evaluate` (evaluate.h). A data set is
 * cut into chunks of `batch` samples in file order; rank r runs chunks r,
 * r + world, ... through the model in evaluation mode, so a sample is
 * always computed in the same chunk, with the same rows around it, on any
 * number of ranks. Each chunk's sums go into their own slot of an array
 * the ranks sum (every slot has one non-zero term: the sum is exact), and
 * the slots are added in chunk order: the figures are bit for bit those
 * of one process. Confusion counts are integers, exact in any order. */
#include "arsenal/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/loss.h"

enum { SLOT_LOSS, SLOT_SQUARES, SLOT_ABS, SLOTS };

void ars_eval_result_free(ars_eval_result *r)
{
    free(r->confusion);
    free(r->precision);
    free(r->recall);
    free(r->f1);
    free(r->support);
    free(r->predicted);
    memset(r, 0, sizeof *r);
}

static int arg_max(const float *z, int n)
{
    int best = 0;   /* ties go to the first, as ars_count_correct */
    for (int j = 1; j < n; j++) best = z[j] > z[best] ? j : best;
    return best;
}

/* Per-class precision, recall, F1 and their averages from the confusion
 * counts (sklearn's conventions; 0 where a ratio is undefined). */
static void classification_figures(ars_eval_result *r)
{
    const int C = r->classes;
    double present = 0, macro[3] = {0, 0, 0}, weighted[3] = {0, 0, 0};
    r->correct = 0;
    for (int c = 0; c < C; c++) {
        int64_t support = 0, predicted = 0;
        for (int k = 0; k < C; k++) {
            support += r->confusion[(size_t)c * C + k];
            predicted += r->confusion[(size_t)k * C + c];
        }
        const int64_t tp = r->confusion[(size_t)c * C + c];
        r->correct += tp;
        r->support[c] = support;
        r->predicted[c] = predicted;
        r->precision[c] = predicted ? (double)tp / (double)predicted : 0;
        r->recall[c] = support ? (double)tp / (double)support : 0;
        const double pr = r->precision[c] + r->recall[c];
        r->f1[c] = pr > 0 ? 2 * r->precision[c] * r->recall[c] / pr : 0;
        if (support || predicted) {
            present++;
            macro[0] += r->precision[c];
            macro[1] += r->recall[c];
            macro[2] += r->f1[c];
        }
        weighted[0] += r->precision[c] * (double)support;
        weighted[1] += r->recall[c] * (double)support;
        weighted[2] += r->f1[c] * (double)support;
    }
    const double n = (double)r->samples;
    r->accuracy = n > 0 ? (double)r->correct / n : NAN;
    r->macro_precision = present ? macro[0] / present : 0;
    r->macro_recall = present ? macro[1] / present : 0;
    r->macro_f1 = present ? macro[2] / present : 0;
    r->weighted_precision = n > 0 ? weighted[0] / n : 0;
    r->weighted_recall = n > 0 ? weighted[1] / n : 0;
    r->weighted_f1 = n > 0 ? weighted[2] / n : 0;
}

/* Sum of squares of the targets about their per-output mean, over the
 * whole set (every rank holds it): R^2's denominator. */
static double target_variation(const ars_dataset *data)
{
    const int D = data->target_dim;
    double total = 0;
    for (int d = 0; d < D; d++) {
        double sum = 0;
        for (int i = 0; i < data->count; i++) sum += data->targets[(size_t)i * D + d];
        const double mean = sum / data->count;
        for (int i = 0; i < data->count; i++) {
            const double e = data->targets[(size_t)i * D + d] - mean;
            total += e * e;
        }
    }
    return total;
}

static int check_data(const ars_model *model, const ars_dataset *data, int classifier, int batch)
{
    if (batch < 1) return ars_error(ARS_EINVAL, "evaluation batch %d: expected at least 1", batch);
    if (!data || data->count < 1) return ars_error(ARS_EINVAL, "the data set to evaluate on has no samples");
    if (data->dim != model->in_dim)
        return ars_error(ARS_EINVAL, "data '%s' has %d values per sample, the model takes %d", data->name, data->dim,
                         model->in_dim);
    if (classifier) {
        if (!data->labels)
            return ars_error(ARS_EINVAL, "data '%s' has no class labels, but the model is a classifier (loss "
                             "cross_entropy)", data->name);
        if (data->classes > model->out_dim)
            return ars_error(ARS_EINVAL, "data '%s' has %d classes, the model only %d outputs", data->name,
                             data->classes, model->out_dim);
    } else {
        if (!data->targets)
            return ars_error(ARS_EINVAL, "data '%s' has no regression targets, but the model is a regression (loss "
                             "mse)", data->name);
        if (data->target_dim != model->out_dim)
            return ars_error(ARS_EINVAL, "data '%s' has %d targets per sample, the model %d outputs", data->name,
                             data->target_dim, model->out_dim);
    }
    return 0;
}

/* This rank's chunks into slots and confusion. */
static int run_chunks(ars_model *model, const ars_dataset *data, ars_loss_kind loss, int classifier, int batch,
                      int rank, int world, int chunks, double *slots, double *confusion)
{
    ars_sampler sampler;
    ars_batch rows;
    /* one process's view, in file order: chunk c is step c */
    TRY(ars_sampler_create(&sampler, data, batch, 0, 1, 0, 0));
    int rc = ars_batch_alloc(&rows, &sampler);
    if (rc) {
        ars_sampler_destroy(&sampler);
        return rc;
    }
    const int out = model->out_dim;
    for (int c = rank; c < chunks && !rc; c += world) {
        rc = ars_sampler_fill(&sampler, 0, c, &rows);
        if (rc) break;
        /* no dist: nothing in an evaluation forward waits for another rank */
        ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = rows.rows, .global_rows = rows.rows,
                         .sample_ids = rows.ids};
        rc = ars_model_forward(model, &pass, rows.x);
        if (rc) break;
        const float *y = ars_model_output(model);
        double *slot = slots + (size_t)c * SLOTS;
        rc = ars_loss_compute(loss, y, rows.rows, out, rows.labels, rows.targets, rows.rows, &slot[SLOT_LOSS], NULL);
        if (rc) break;
        if (classifier) {
            for (int r = 0; r < rows.rows; r++)
                confusion[(size_t)rows.labels[r] * out + arg_max(y + (size_t)r * out, out)] += 1;
        } else {
            double squares = 0, absolute = 0;
            for (size_t i = 0; i < (size_t)rows.rows * out; i++) {
                const double e = (double)y[i] - rows.targets[i];
                squares += e * e;
                absolute += fabs(e);
            }
            slot[SLOT_SQUARES] = squares;
            slot[SLOT_ABS] = absolute;
        }
    }
    ars_batch_free(&rows);
    ars_sampler_destroy(&sampler);
    return rc;
}

int ars_evaluate_dataset(ars_model *model, const ars_dataset *data, ars_loss_kind loss, int classifier, int batch,
                         ars_dist *dist, ars_eval_result *result)
{
    memset(result, 0, sizeof *result);
    const int rank = dist ? dist->rank : 0, world = dist ? dist->size : 1;
    int rc = check_data(model, data, classifier, batch);
    const int out = model->out_dim;
    const int chunks = rc ? 0 : (data->count - 1) / batch + 1;
    const size_t cells = classifier ? (size_t)out * out : 1;
    double *slots = rc ? NULL : calloc((size_t)chunks * SLOTS, sizeof *slots);
    double *confusion = rc ? NULL : calloc(cells, sizeof *confusion);
    if (!rc && (!slots || !confusion)) rc = ars_error(ARS_ENOMEM, "evaluation: out of memory for %d chunks", chunks);
    if (!rc) rc = run_chunks(model, data, loss, classifier, batch, rank, world, chunks, slots, confusion);
    int agreed;
    rc = ars_dist_agree(dist, rc, &agreed);
    if (!rc && (size_t)chunks * SLOTS > (size_t)0x7fffffff)
        rc = ars_error(ARS_EINVAL, "evaluation: %d chunks of %d samples are too many; a larger batch", chunks, batch);
    if (!rc) rc = ars_dist_allreduce_double(dist, slots, chunks * SLOTS);
    if (!rc) rc = ars_dist_allreduce_double(dist, confusion, (int)cells);
    if (rc) {
        free(slots);
        free(confusion);
        return rc;
    }
    double sums[SLOTS] = {0, 0, 0};
    for (int c = 0; c < chunks; c++)
        for (int k = 0; k < SLOTS; k++) sums[k] += slots[(size_t)c * SLOTS + k];
    free(slots);
    result->classifier = classifier;
    result->samples = data->count;
    result->loss = sums[SLOT_LOSS] / data->count;
    if (classifier) {
        result->classes = out;
        result->confusion = malloc(sizeof(int64_t) * cells);
        result->precision = calloc((size_t)out, sizeof(double));
        result->recall = calloc((size_t)out, sizeof(double));
        result->f1 = calloc((size_t)out, sizeof(double));
        result->support = calloc((size_t)out, sizeof(int64_t));
        result->predicted = calloc((size_t)out, sizeof(int64_t));
        if (!result->confusion || !result->precision || !result->recall || !result->f1 || !result->support ||
            !result->predicted) {
            free(confusion);
            ars_eval_result_free(result);
            return ars_error(ARS_ENOMEM, "evaluation: out of memory for %d classes", out);
        }
        for (size_t i = 0; i < cells; i++) result->confusion[i] = (int64_t)confusion[i];
        classification_figures(result);
    } else {
        const double values = (double)data->count * out, variation = target_variation(data);
        result->outputs = out;
        result->mse = sums[SLOT_SQUARES] / values;
        result->mae = sums[SLOT_ABS] / values;
        result->rmse = sqrt(result->mse);
        result->r2 = variation > 0 ? 1 - sums[SLOT_SQUARES] / variation : NAN;
        result->accuracy = NAN;
    }
    free(confusion);
    return 0;
}

/* ---- the whole command -------------------------------------------------- */

static const char *const fashion_mnist_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* Loads the set to evaluate on, unstandardized (the checkpoint's own
 * standardization is applied afterwards, whatever the set); a user's file
 * may stream x (the sampler reads the chunks' rows). */
static int load_set(const ars_trained *t, const ars_evaluate_options *o, int rank, ars_dataset *set)
{
    ars_run_config run = t->data_run;
    run.standardize = 0;
    ars_dataset train, test;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    /* the test split alone needs no training set (one sample of it), unless
     * it is the validation split carved from the training set */
    const int whole = o->train_split || run.validation > 0;
    int rc = ars_load_run_data(&run, rank, whole ? run.train_limit : 1, &train, &test);
    if (o->train_split) {
        *set = train;
        ars_dataset_free(&test);
    } else {
        *set = test;
        ars_dataset_free(&train);
    }
    if (!rc && set->count < 1)
        rc = ars_error(ARS_EINVAL, "data %s has no %s split to evaluate on", run.data,
                       o->train_split ? "training" : "test");
    return rc;
}

int ars_evaluate_checkpoint(const ars_evaluate_options *o, ars_dist *dist, ars_eval_report *report, int *agreed)
{
    memset(report, 0, sizeof *report);
    *agreed = ARS_AGREED_SAME;
    const int rank = dist ? dist->rank : 0;
    ars_trained t;
    int rc = ars_trained_open(&t, o->checkpoint, o->overrides, o->override_count, o->data_spec, dist);
    ars_dataset set;
    memset(&set, 0, sizeof set);
    if (!rc) {
        /* each rank reads its own copy of the data, as training does */
        rc = load_set(&t, o, rank, &set);
        if (!rc && t.shape_stored) {
            char where[300];
            snprintf(where, sizeof where, "data %s", t.data_run.data);
            const ars_shape shape = ars_dataset_shape(&set);
            rc = ars_trained_check_shape(&t.input_shape, &shape, o->checkpoint, where);
        }
        if (!rc && !t.shape_stored) t.input_shape = ars_dataset_shape(&set);
        int agreed_here;
        rc = ars_dist_agree(dist, rc, &agreed_here);
        if (rc) t.agreed = agreed_here;
    }
    if (!rc) rc = ars_trained_resolve(&t, dist);
    if (!rc) {
        /* in memory, or (a user's file, stream_data) applied as rows are read */
        ars_dataset_standardize_any(&set, t.data_mean, t.data_std);
        rc = ars_trained_build(&t, o->batch, dist);
    }
    if (!rc) {
        /* the same set and model on every rank: a mismatch is found alike */
        int agreed_here;
        rc = ars_dist_agree(dist, check_data(&t.model, &set, ars_trained_is_classifier(&t), o->batch), &agreed_here);
        if (rc) t.agreed = agreed_here;
    }
    if (!rc) {
        rc = ars_evaluate_dataset(&t.model, &set, t.run.loss, ars_trained_is_classifier(&t), o->batch, dist,
                                  &report->result);
        if (rc) t.agreed = ARS_AGREED;
    }
    if (!rc) {
        snprintf(report->checkpoint, sizeof report->checkpoint, "%s", o->checkpoint);
        snprintf(report->data, sizeof report->data, "%s", t.data_run.data);
        report->split = o->train_split ? "train" : t.data_run.validation > 0 ? "validation" : "test";
        report->world = dist ? dist->size : 1;
        report->batch = o->batch;
        report->step = t.step;
        report->epoch = t.epoch;
        report->layers = t.model.layer_count;
        report->params = t.model.param_count;
        report->data_mean = t.data_mean;
        report->data_std = t.data_std;
        report->stats_stored = t.stats_stored;
        if (strcmp(t.data_run.data, "fashion-mnist") == 0 && report->result.classes == 10)
            for (int c = 0; c < 10; c++)
                snprintf(report->class_names[c], sizeof report->class_names[c], "%s", fashion_mnist_names[c]);
    }
    if (rc) *agreed = t.agreed;
    ars_dataset_free(&set);
    ars_trained_free(&t);
    return rc;
}

void ars_eval_report_free(ars_eval_report *report) { ars_eval_result_free(&report->result); }
