/* inspect: what `arsenal inspect` knows about a checkpoint: the run (root
 * attributes, optimizer, layer kinds), its gradient history, a per-layer
 * summary of the layers with parameters and the health rules (health.c)
 * replayed over the whole history. Printed as text (inspect_report.c), as
 * JSON (inspect_json.c) or drawn with PLplot (inspect_plot.c). */
#ifndef ARSENAL_INSPECT_H
#define ARSENAL_INSPECT_H

#include <stddef.h>
#include <stdio.h>

#include "arsenal/ckpt.h"
#include "arsenal/health.h"
#include "arsenal/history.h"

/* One layer with parameters, over the finite records of the history. */
typedef struct ars_inspect_layer {
    int index;                  /* in the model */
    double grad_first, grad_median, grad_last;   /* parameter gradient norm */
    double ratio_median, ratio_last;             /* / the output layer's, same record */
    double update_median;       /* ||delta theta|| / ||theta|| */
    int activation;             /* the activation layer right after it, or -1 */
    double saturated, dead;     /* of that activation at the last record (NaN: not applicable) */
} ars_inspect_layer;

typedef struct ars_inspect_run {
    char path[1024];
    char label[64];             /* short name for legends: the last two path components */
    ars_ckpt_info info;
    ars_history history;
    ars_health_config health_config;   /* the run file's [health] section, or defaults */
    ars_health_monitor health;  /* replayed over the whole history */
    ars_inspect_layer *layers;  /* layers with parameters, input first */
    int layer_count;
    int output_layer;           /* model index of the output layer (last with parameters), -1 */
    char model[256];            /* "39 layers: 20 dense, 19 sigmoid" */
    size_t finite_records, nonfinite_records, clipped_records;
    double first_loss, last_loss;   /* first and last finite recorded loss */
} ars_inspect_run;

/* Reads a checkpoint and analyses it. Errors: one line in
 * ars_error_message() ("x.h5: not an arsenal checkpoint ..."). */
int ars_inspect_load(ars_inspect_run *run, const char *path);

/* Analyses an info and a history already in hand (taken over: freed by
 * ars_inspect_free), e.g. built in memory by a test. */
int ars_inspect_from(ars_inspect_run *run, const char *path, ars_ckpt_info *info, ars_history *history);

void ars_inspect_free(ars_inspect_run *run);

/* Layers with parameters whose ratio to the output layer is available. */
double ars_inspect_first_to_output(const ars_inspect_run *run);

/* Problems that started at least once, in ars_health_problem order. */
int ars_inspect_problems(const ars_inspect_run *run, ars_health_problem *out);

/* The screen: run, result, per-layer table, diagnosis, recorded events. */
void ars_inspect_print(FILE *out, const ars_inspect_run *run);
/* Two runs side by side. */
void ars_inspect_print_compare(FILE *out, const ars_inspect_run *a, const ars_inspect_run *b);

/* The same content as JSON (one object; two runs: {"runs": [...],
 * "comparison": {...}}). */
void ars_inspect_json(FILE *out, const ars_inspect_run *const *runs, int count);

/* PNG and SVG plots in dir (created if missing): gradient_flow,
 * grad_heatmap, loss_gradnorm, grad_histograms; for two runs the gradient
 * flow and loss plots overlay both, the others get suffixes _1 and _2.
 * Each file written is named on log (may be NULL). ARS_EINVAL when arsenal
 * was built without PLplot or no PNG/SVG device is installed. */
int ars_inspect_plot(const char *dir, const ars_inspect_run *const *runs, int count, FILE *log);

/* --blame (inspect_blame.c): the first incident of the history (a
 * non-finite step, a loss or gradient spike) and the first layer and step
 * where a gradient ratio broke before it, with the records as evidence.
 * ARS_EINVAL for a history without records. */
int ars_inspect_blame(FILE *out, const ars_inspect_run *run);

/* Small shared helpers (inspect_report.c). */
double ars_inspect_median(double *values, size_t n);   /* sorts values; NaN when n == 0 */
int ars_inspect_is_activation(const char *kind);
/* Record r is usable for gradient figures: finite loss and gradient. */
int ars_inspect_record_finite(const ars_history *h, size_t r);
double ars_inspect_value(const ars_history *h, size_t r, ars_history_column column, int layer);

#endif
