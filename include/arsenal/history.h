/* history: the in-memory gradient history of a run, one record per
 * recorded step: scalars (loss, lr, global gradient norm before clipping,
 * clip scale, non-finite flag) and per-layer rows (gradient norm, weight
 * norm, update/weight ratio, activation statistics, gradient arriving at
 * the layer's output). The checkpoint writer flushes it into /history and
 * appends across resumes. */
#ifndef ARSENAL_HISTORY_H
#define ARSENAL_HISTORY_H

#include <stddef.h>
#include <stdint.h>

/* Per-layer columns, in this order, as [T, L] datasets in the checkpoint. */
typedef enum {
    ARS_HIST_GRAD_NORM,        /* ||dL/dtheta|| of the layer's parameters (0 if none) */
    ARS_HIST_WEIGHT_NORM,      /* ||theta|| */
    ARS_HIST_UPDATE_RATIO,     /* ||delta theta|| / ||theta|| of this step's update */
    ARS_HIST_OUTPUT_GRAD_NORM, /* ||dL/dy|| arriving at the layer's output (local batch) */
    ARS_HIST_ACT_MEAN,         /* activation layers: output mean */
    ARS_HIST_ACT_STD,
    ARS_HIST_ACT_SATURATED,    /* sigmoid/tanh: fraction with derivative < 10% of max */
    ARS_HIST_ACT_DEAD,         /* relu family: fraction of units off for the whole batch */
    ARS_HIST_LAYER_COLUMNS
} ars_history_column;

extern const char *const ars_history_column_names[ARS_HIST_LAYER_COLUMNS];

typedef struct ars_history_step {
    int64_t step;
    int32_t epoch;
    double loss, lr, grad_norm, clip_scale;
    int32_t nonfinite;   /* 1: this step's gradient had NaN/Inf (update skipped) */
    int32_t skipped;     /* 1: update skipped (non-finite or spike guard) */
} ars_history_step;

/* One evaluation of the test split (end of an epoch or of the run). */
typedef struct ars_history_eval {
    int64_t step;
    int32_t epoch;          /* epochs completed */
    double train_loss;      /* mean training loss over the epoch's steps */
    double test_loss, test_accuracy;   /* accuracy NaN for regression */
} ars_history_eval;

/* One automatic cure of the health monitor (health.cure = apply, src/cure.c),
 * stored in /health/cures. Kept across rollbacks, like the events. */
typedef struct ars_history_cure {
    int64_t step;            /* the record (0-based step index) whose diagnosis triggered it */
    int64_t rollback_step;   /* steps taken at the healthy state the run went back to */
    char rule[32];           /* ars_health_problem_key: "exploding", "vanishing", ... */
    char layer[40];          /* the worst layer ("003_dense"), "" for the whole network */
    char *change;            /* in words: "lr 0.5 -> 0.05, clip_norm 0 -> 1" */
    char *settings;          /* what resume re-applies: "lr=0.05;clip_norm=1;act:001=relu;init:000=he_normal" */
    char status[16];         /* "active" | "reverted" (the rule fired again; the next cure replaced it) */
} ars_history_cure;

typedef struct ars_history {
    int layer_count;
    char (*layer_names)[40];
    ars_history_step *steps;
    double *layer_values;       /* [T, ARS_HIST_LAYER_COLUMNS, L] */
    size_t count, capacity;
    /* gradient histograms: [K, L, bins] of log10|g|, with the recorded step */
    int bins;
    double hist_low, hist_high; /* log10 edges of the first and last bin */
    int64_t *hist_steps;
    uint32_t *hist_counts;
    size_t hist_count, hist_capacity;
    /* per-time-step gradient norms of sequence layers (RNN, embeddings):
     * for time layer k (model layer time_layer[k], time_steps[k] steps),
     * time_values[k] holds [count, time_steps[k]] values, one row per record */
    int time_layer_count;
    int *time_layer;
    int *time_steps;
    double **time_values;
    ars_history_eval *evals;
    size_t eval_count, eval_capacity;
    /* diagnosis events, appended as text lines ("step 40: ...") */
    char **events;
    size_t event_count, event_capacity;
    /* automatic cures (/health/cures), in the order applied */
    ars_history_cure *cures;
    size_t cure_count, cure_capacity;
} ars_history;

int ars_history_init(ars_history *h, int layer_count, const char (*names)[40], int bins);
void ars_history_free(ars_history *h);

/* Appends a step record; *layer_row receives a pointer to its
 * [ARS_HIST_LAYER_COLUMNS][L] values (zeroed) for the caller to fill. */
int ars_history_append(ars_history *h, const ars_history_step *step, double **layer_row);

/* Appends a histogram for every layer of log10|g| over the layer's slice. */
int ars_history_add_histograms(ars_history *h, int64_t step, const float *grads,
                               const size_t *offsets, const size_t *counts);

int ars_history_add_event(ars_history *h, const char *text);

/* Appends a cure (change and settings are copied). */
int ars_history_add_cure(ars_history *h, const ars_history_cure *cure);

/* Drops the records, histograms and evaluations after the first count,
 * hist_count, eval_count (a rollback); events and cures stay. */
void ars_history_truncate(ars_history *h, size_t count, size_t hist_count, size_t eval_count);

/* Declares the layers that record a gradient norm per time step; call
 * before the first append. Their rows are filled through
 * ars_history_time_row() of the newest record. */
int ars_history_set_time_layers(ars_history *h, int count, const int *layers, const int *steps);
static inline double *ars_history_time_row(const ars_history *h, int k, size_t record)
{
    return h->time_values[k] + record * (size_t)h->time_steps[k];
}
int ars_history_add_eval(ars_history *h, const ars_history_eval *eval);

static inline double *ars_history_layer_values(const ars_history *h, size_t record)
{
    return h->layer_values + record * (size_t)ARS_HIST_LAYER_COLUMNS * (size_t)h->layer_count;
}

#endif
