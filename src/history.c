/* history: growable in-memory arrays for the gradient history. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/history.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"

const char *const ars_history_column_names[ARS_HIST_LAYER_COLUMNS] = {
    "layer_grad_norm", "layer_weight_norm", "layer_update_ratio", "layer_output_grad_norm",
    "layer_act_mean", "layer_act_std", "layer_act_saturated", "layer_act_dead"};

int ars_history_init(ars_history *h, int layer_count, const char (*names)[40], int bins)
{
    memset(h, 0, sizeof *h);
    h->layer_count = layer_count;
    h->bins = bins;
    h->hist_low = -12;   /* bins of log10|g| from 1e-12 .. 1e+4 (outside: clamped) */
    h->hist_high = 4;
    h->layer_names = calloc((size_t)layer_count, sizeof *h->layer_names);
    if (!h->layer_names) return ars_error(ARS_ENOMEM, "history: out of memory");
    memcpy(h->layer_names, names, sizeof *h->layer_names * (size_t)layer_count);
    return 0;
}

void ars_history_free(ars_history *h)
{
    free(h->layer_names);
    free(h->steps);
    free(h->layer_values);
    free(h->hist_steps);
    free(h->hist_counts);
    free(h->evals);
    for (int k = 0; k < h->time_layer_count; k++) free(h->time_values[k]);
    free(h->time_values);
    free(h->time_layer);
    free(h->time_steps);
    for (size_t i = 0; i < h->event_count; i++) free(h->events[i]);
    free(h->events);
    for (size_t i = 0; i < h->cure_count; i++) {
        free(h->cures[i].change);
        free(h->cures[i].settings);
    }
    free(h->cures);
    memset(h, 0, sizeof *h);
}

int ars_history_append(ars_history *h, const ars_history_step *step, double **layer_row)
{
    const size_t row = (size_t)ARS_HIST_LAYER_COLUMNS * (size_t)h->layer_count;
    if (h->count == h->capacity) {
        size_t capacity = h->capacity ? 2 * h->capacity : 256;
        ars_history_step *steps = realloc(h->steps, capacity * sizeof *steps);
        if (!steps) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->steps = steps;
        double *values = realloc(h->layer_values, capacity * row * sizeof *values);
        if (!values) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->layer_values = values;
        for (int k = 0; k < h->time_layer_count; k++) {
            double *grown = realloc(h->time_values[k], capacity * (size_t)h->time_steps[k] * sizeof *grown);
            if (!grown) return ars_error(ARS_ENOMEM, "history: out of memory");
            h->time_values[k] = grown;
        }
        h->capacity = capacity;
    }
    h->steps[h->count] = *step;
    double *values = ars_history_layer_values(h, h->count);
    memset(values, 0, row * sizeof *values);
    for (int k = 0; k < h->time_layer_count; k++) {
        double *time_row = ars_history_time_row(h, k, h->count);
        for (int t = 0; t < h->time_steps[k]; t++) time_row[t] = NAN;   /* until filled */
    }
    if (layer_row) *layer_row = values;
    h->count++;
    return 0;
}

int ars_history_add_histograms(ars_history *h, int64_t step, const float *grads, const size_t *offsets,
                               const size_t *counts)
{
    if (h->bins <= 0) return 0;
    const size_t block = (size_t)h->layer_count * (size_t)h->bins;
    if (h->hist_count == h->hist_capacity) {
        size_t capacity = h->hist_capacity ? 2 * h->hist_capacity : 16;
        int64_t *steps = realloc(h->hist_steps, capacity * sizeof *steps);
        if (!steps) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->hist_steps = steps;
        uint32_t *c = realloc(h->hist_counts, capacity * block * sizeof *c);
        if (!c) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->hist_counts = c;
        h->hist_capacity = capacity;
    }
    uint32_t *out = h->hist_counts + h->hist_count * block;
    memset(out, 0, block * sizeof *out);
    const double width = (h->hist_high - h->hist_low) / h->bins;
    for (int l = 0; l < h->layer_count; l++) {
        const float *g = grads + offsets[l];
        for (size_t i = 0; i < counts[l]; i++) {
            double a = fabs((double)g[i]);
            int bin;
            if (!(a > 0)) bin = 0;   /* zero and NaN land in the lowest bin */
            else {
                double position = (log10(a) - h->hist_low) / width;
                bin = position < 0 ? 0 : position >= h->bins ? h->bins - 1 : (int)position;
            }
            out[(size_t)l * h->bins + bin]++;
        }
    }
    h->hist_steps[h->hist_count++] = step;
    return 0;
}

int ars_history_add_event(ars_history *h, const char *text)
{
    if (h->event_count == h->event_capacity) {
        size_t capacity = h->event_capacity ? 2 * h->event_capacity : 16;
        char **events = realloc(h->events, capacity * sizeof *events);
        if (!events) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->events = events;
        h->event_capacity = capacity;
    }
    char *copy = strdup(text);
    if (!copy) return ars_error(ARS_ENOMEM, "history: out of memory");
    h->events[h->event_count++] = copy;
    return 0;
}

int ars_history_add_eval(ars_history *h, const ars_history_eval *eval)
{
    if (h->eval_count == h->eval_capacity) {
        size_t capacity = h->eval_capacity ? 2 * h->eval_capacity : 16;
        ars_history_eval *evals = realloc(h->evals, capacity * sizeof *evals);
        if (!evals) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->evals = evals;
        h->eval_capacity = capacity;
    }
    h->evals[h->eval_count++] = *eval;
    return 0;
}

int ars_history_set_time_layers(ars_history *h, int count, const int *layers, const int *steps)
{
    if (h->count > 0 || h->time_layer_count > 0)
        return ars_error(ARS_EINVAL, "history: time layers must be declared once, before the first record");
    if (count <= 0) return 0;
    h->time_layer = malloc(sizeof(int) * (size_t)count);
    h->time_steps = malloc(sizeof(int) * (size_t)count);
    h->time_values = calloc((size_t)count, sizeof *h->time_values);
    if (!h->time_layer || !h->time_steps || !h->time_values) return ars_error(ARS_ENOMEM, "history: out of memory");
    for (int k = 0; k < count; k++) {
        h->time_layer[k] = layers[k];
        h->time_steps[k] = steps[k];
        if (h->capacity) {
            h->time_values[k] = malloc(h->capacity * (size_t)steps[k] * sizeof(double));
            if (!h->time_values[k]) return ars_error(ARS_ENOMEM, "history: out of memory");
        }
    }
    h->time_layer_count = count;
    return 0;
}

int ars_history_add_cure(ars_history *h, const ars_history_cure *cure)
{
    if (h->cure_count == h->cure_capacity) {
        size_t capacity = h->cure_capacity ? 2 * h->cure_capacity : 8;
        ars_history_cure *cures = realloc(h->cures, capacity * sizeof *cures);
        if (!cures) return ars_error(ARS_ENOMEM, "history: out of memory");
        h->cures = cures;
        h->cure_capacity = capacity;
    }
    ars_history_cure copy = *cure;
    copy.change = strdup(cure->change ? cure->change : "");
    copy.settings = strdup(cure->settings ? cure->settings : "");
    if (!copy.change || !copy.settings) {
        free(copy.change);
        free(copy.settings);
        return ars_error(ARS_ENOMEM, "history: out of memory");
    }
    h->cures[h->cure_count++] = copy;
    return 0;
}

void ars_history_truncate(ars_history *h, size_t count, size_t hist_count, size_t eval_count)
{
    if (count < h->count) h->count = count;
    if (hist_count < h->hist_count) h->hist_count = hist_count;
    if (eval_count < h->eval_count) h->eval_count = eval_count;
}
