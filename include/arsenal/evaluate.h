/* evaluate: a trained model put to use. ars_trained rebuilds the model a
 * checkpoint's /config describes and loads its weights (rank 0 reads the
 * file, the other ranks get everything by broadcast, so no shared file
 * system is needed), with the input standardization of its run.
 * ars_evaluate measures it on a data set in evaluation mode (BatchNorm's
 * running statistics, no dropout): loss, accuracy, per-class precision,
 * recall, F1 and the confusion matrix of a classifier; MSE, MAE, RMSE and
 * R^2 of a regression. The data set is cut into fixed chunks of `batch`
 * samples, chunk c on rank c % world, and every sum is combined chunk by
 * chunk in chunk order, so each figure is bit for bit the same on any
 * number of ranks. Rank 0 speaks: the report functions print, the library
 * never does. */
#ifndef ARSENAL_EVALUATE_H
#define ARSENAL_EVALUATE_H

#include <stdint.h>
#include <stdio.h>

#include "arsenal/data.h"
#include "arsenal/dist.h"
#include "arsenal/model.h"
#include "arsenal/train.h"

/* ---- a model rebuilt from a checkpoint ------------------------------------ */

typedef struct ars_trained {
    char path[1024];
    ars_run_config run;          /* the checkpoint's run file, --set overrides applied */
    ars_run_config data_run;     /* the same with [run] data = the data spec asked for (or as run) */
    ars_layer_spec *specs;
    int spec_count;
    ars_model model;             /* after ars_trained_build */
    int built;
    int64_t step;
    int epoch;
    char optimizer[16];
    /* The run's input standardization x' = (x - mean) / std (0 and 1: none). */
    double data_mean, data_std;
    int stats_stored;            /* 1: from the checkpoint; 0: recomputed from the run's training data */
    ars_shape input_shape;       /* per sample; rank 0 until known (stored, or from the run's data) */
    int shape_stored;            /* 1: the checkpoint stored input_shape */
    int agreed;                  /* on failure: ARS_AGREED_* (how far the failure is known over the ranks) */
} ars_trained;

/* Reads the checkpoint on rank 0 (after ars_ckpt_validate, in a child
 * process) and shares its run file; every rank then applies overrides
 * ("section.key=value", as --set) and, when data_spec is not NULL, [run]
 * data = data_spec to a copy (data_run). Errors: "x.h5: ..." for the file,
 * "x.h5:/config: ..." for a run file that does not build. Collective. */
int ars_trained_open(ars_trained *t, const char *path, char *const *overrides, int override_count,
                     const char *data_spec, ars_dist *dist);

/* A checkpoint written before data_mean/data_std or input_shape were
 * stored: loads the run's training data (each rank its own copy, as
 * training does) to recompute what is missing; nothing when both are
 * stored. Collective (agreement only). */
int ars_trained_resolve(ars_trained *t, ars_dist *dist);

/* Builds the model for t->input_shape and batches of max_rows, loads the
 * checkpoint's parameters, running statistics and convolution layouts on
 * rank 0 and broadcasts them. Collective. */
int ars_trained_build(ars_trained *t, int max_rows, ars_dist *dist);

void ars_trained_free(ars_trained *t);

/* 1 when the model is a classifier (cross-entropy: outputs are logits),
 * 0 for a regression (mse). */
int ars_trained_is_classifier(const ars_trained *t);

/* Standardizes rows samples of x in place exactly as the run standardized
 * its data (the same arithmetic as ars_dataset_standardize). */
void ars_trained_standardize(const ars_trained *t, float *x, int rows);

/* 0 when samples of shape data fit the model's input shape model: equal,
 * equal once dimensions of size 1 are dropped, or either of them flat
 * ([n]) with as many values; else an error naming `where`, both shapes and
 * value counts. */
int ars_trained_check_shape(const ars_shape *model, const ars_shape *data, const char *ckpt, const char *where);

/* ---- evaluation --------------------------------------------------------- */

typedef struct ars_eval_result {
    int classifier;              /* 1: labels and logits; 0: regression targets */
    int64_t samples;
    int classes;                 /* classifier: the model's outputs (confusion is classes x classes) */
    int outputs;                 /* regression: values per sample */
    double loss;                 /* the run's loss (cross-entropy or MSE), mean over samples */
    /* classifier */
    int64_t correct;
    double accuracy;
    int64_t *confusion;          /* [classes * classes]: row = true class, column = predicted */
    double *precision, *recall, *f1;   /* [classes]; 0 where undefined (no prediction / no sample of the class) */
    int64_t *support, *predicted;      /* [classes]: samples of the class, predictions of it */
    double macro_precision, macro_recall, macro_f1;            /* over the classes present (support or predicted) */
    double weighted_precision, weighted_recall, weighted_f1;   /* weighted by support */
    /* regression */
    double mse, mae, rmse, r2;   /* r2: 1 - SS_res / SS_tot summed over every output (variance-weighted) */
} ars_eval_result;

void ars_eval_result_free(ars_eval_result *r);

/* Evaluates model on data (standardized already) in chunks of batch
 * samples, chunk c on rank c % world (dist NULL: one process). classifier
 * 1 needs data->labels with classes <= the model's outputs; 0 needs
 * targets of the model's width. The result is the same on every rank and
 * for every world size. Collective. */
int ars_evaluate_dataset(ars_model *model, const ars_dataset *data, ars_loss_kind loss, int classifier, int batch,
                         ars_dist *dist, ars_eval_result *result);

/* What `arsenal evaluate` asks for. */
typedef struct ars_evaluate_options {
    const char *checkpoint;
    char *const *overrides;      /* --set section.key=value */
    int override_count;
    const char *data_spec;       /* --data SPEC ([run] data syntax), NULL: the run's own data */
    int train_split;             /* 1: the training split; 0: the test split (default) */
    int batch;                   /* samples per chunk (forward pass) */
} ars_evaluate_options;

/* The figures with what they were measured on. */
typedef struct ars_eval_report {
    ars_eval_result result;
    char checkpoint[1024];
    char data[256];              /* [run] data of the set evaluated */
    const char *split;           /* "test" | "train" | "validation" (the run's held-out part of its training set) */
    int world, batch;
    int64_t step;
    int epoch;
    int layers;
    size_t params;
    double data_mean, data_std;
    int stats_stored;
    char class_names[64][24];    /* when the data set has names (fashion-mnist), else "" */
} ars_eval_report;

/* The whole command: checkpoint -> model -> data set -> figures, on every
 * rank (the report is the same everywhere; rank 0 prints it). On failure
 * *agreed says how far the failure is known (ARS_AGREED_*). Collective. */
int ars_evaluate_checkpoint(const ars_evaluate_options *options, ars_dist *dist, ars_eval_report *report,
                            int *agreed);
void ars_eval_report_free(ars_eval_report *report);

/* The report as text (a table per class and the confusion matrix, or the
 * regression figures) and as one JSON object. */
void ars_eval_print(FILE *out, const ars_eval_report *report);
void ars_eval_json(FILE *out, const ars_eval_report *report);

/* confusion_matrix.png (and .svg) in dir (created if missing), each file
 * named on log (may be NULL); ARS_EINVAL for a regression, or when arsenal
 * was built without PLplot or PLplot has no PNG/SVG device. */
int ars_eval_plot(const char *dir, const ars_eval_report *report, FILE *log);

#endif
