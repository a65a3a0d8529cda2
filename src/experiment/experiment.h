/* experiment: `arsenal experiment`, the lecture's claims about vanishing
 * and exploding gradients reproduced on Fashion-MNIST. Seven sections
 * (activations, initialization, normalization, residual connections,
 * clipping, optimizers, the degradation of deep plain convolutional
 * networks against ResNets) each train a few configurations written as
 * run-file text, read every run's gradient history back from its
 * checkpoint, judge the lecture's claims from the numbers (confirmed /
 * qualified / not confirmed) and write docs/arsenal-results.md with PNG
 * plots.
 *
 * Every rank trains (data-parallel); decisions taken while training (e.g.
 * where an LR sweep stops) use only ars_train_result figures, which are
 * identical on every rank. Rank 0 alone reads histories and writes. */
#ifndef ARSENAL_EXPERIMENT_H
#define ARSENAL_EXPERIMENT_H

#include <stdint.h>
#include <stdio.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"

enum {
    ARS_EXP_ACTIVATIONS,
    ARS_EXP_INIT,
    ARS_EXP_NORMALIZATION,
    ARS_EXP_RESIDUAL,
    ARS_EXP_EXPLODING,
    ARS_EXP_OPTIMIZERS,
    ARS_EXP_DEGRADATION,
    ARS_EXP_CURE,
    ARS_EXP_SECTIONS
};

/* Section keys for --only ("activations", "init", ...). */
extern const char *const ars_exp_section_keys[ARS_EXP_SECTIONS];

typedef struct ars_experiment_options {
    int quick;                /* CI budgets; the checks decide the exit status */
    const char *out_dir;      /* arsenal-results.md and results/ (created) */
    const char *runs_dir;     /* NULL: checkpoints in a temporary directory, removed */
    const char *data_dir;     /* NULL: the run file default */
    uint64_t seed;
    unsigned sections;        /* bit mask over ARS_EXP_*; 0 = all */
} ars_experiment_options;

/* Runs the experiment on every rank of dist. Returns 0 or an ARS_E* code
 * (printed by the caller); *failed_checks (every rank) counts the quick
 * checks that failed. */
int ars_experiment_run(const ars_experiment_options *options, ars_dist *dist, int *failed_checks);

/* ---- internal to src/experiment ----------------------------------------------- */

/* A growable string. */
typedef struct ars_exp_text {
    char *data;
    size_t length, capacity;
    int failed;               /* out of memory: data holds what fitted */
} ars_exp_text;

void ars_exp_text_printf(ars_exp_text *t, const char *fmt, ...) ARS_PRINTF(2, 3);
void ars_exp_text_free(ars_exp_text *t);

/* A series of (x, y) points. */
typedef struct ars_exp_curve {
    int count;
    double *x, *y;
} ars_exp_curve;

/* One configuration's outcome. */
typedef struct ars_exp_run {
    char key[64];             /* directory name of its checkpoint, unique */
    char *config_text;        /* the run file it was trained from */
    /* every rank: from ars_train_result */
    int error;                /* 1: ars_train failed; error_text says why */
    char error_text[256];
    int64_t steps;
    double test_accuracy, test_loss, seconds;
    int64_t nonfinite_steps;
    /* rank 0: from the gradient history (NaN / -1 when unknown) */
    int cures;                /* automatic cures applied ([health] cure = apply), /health/cures */
    int64_t first_cure_step;  /* the record that triggered the first, -1: none */
    char cure_text[512];      /* "step 20 vanishing: ...; step 120 exploding: ..." */
    int measured;             /* 1: the history was read */
    int64_t first_nonfinite;  /* step of the first non-finite loss or gradient, -1: none */
    /* "weight layers": dense and conv2d layers (a network of section 7 starts with a convolution) */
    double ratio_start, ratio_end;           /* first weight layer's gradient norm / the output layer's */
    double first_grad_start, first_grad_end; /* the first weight layer's gradient norm (before clipping) */
    double loss_start, loss_end;             /* first finite loss; mean of the last finite records */
    double max_grad_norm;     /* largest finite global norm before clipping */
    double clipped_fraction;  /* finite records with clip_scale < 1 */
    int64_t steps_to_target;  /* first step the smoothed loss < ARS_EXP_LOSS_TARGET, -1: never */
    ars_exp_curve loss;       /* recorded training loss (NaN where non-finite) */
    ars_exp_curve accuracy;   /* test accuracy at each evaluation */
    ars_exp_curve flow_start, flow_end;   /* weight layer (1 = input side) -> gradient norm before clipping */
    char diagnosis[256];      /* problems the health rules found, "" if none */
} ars_exp_run;

/* Training loss below which a run "has learned" (chance: ln 10 = 2.30). */
#define ARS_EXP_LOSS_TARGET 1.0
/* Test accuracy from which a run "trains" (chance: 10%), with a test loss
 * below ln 10 (a uniform guess's). */
#define ARS_EXP_TRAINS_ACCURACY 0.5

typedef enum {
    ARS_EXP_CONFIRMED,
    ARS_EXP_QUALIFIED,
    ARS_EXP_NOT_CONFIRMED,
    ARS_EXP_INCONCLUSIVE
} ars_exp_verdict;

/* A claim of the lecture and what the run says about it. */
typedef struct ars_exp_claim {
    int section;
    char claim[256];
    char measured[512];
    ars_exp_verdict verdict;
    char note[512];           /* why qualified / not confirmed, in plain words */
    int check;                /* 1: a check: failing it fails the command */
    int check_passed;
    char check_text[160];     /* what the check asks, e.g. "ratio < 1e-3" */
} ars_exp_claim;

/* The budgets of one mode. */
typedef struct ars_exp_budget {
    int train_limit, test_limit, batch, probe_every;
    int steps_activations, steps_deep, steps_residual, steps_exploding;
    /* section 7: a convolutional network's step costs far more than an
     * MLP's, so its own training subset, test subset, batch, probes and
     * steps, and the channels of the first stage (16 as He et al.; fewer
     * for CI) */
    int degradation_train_limit, degradation_test_limit, degradation_batch, degradation_probe_every;
    int steps_degradation, degradation_width;
    int cure_epochs;          /* section 8: epochs of the deep sigmoid network, cured and by hand */
} ars_exp_budget;

typedef struct ars_exp {
    const ars_experiment_options *options;
    ars_exp_budget budget;
    ars_dist *dist;
    int rank, world;
    char runs_dir[1024];
    int keep_runs;
    FILE *log;                /* progress (rank 0), NULL elsewhere */
    ars_exp_run **runs;       /* every configuration trained (also the cache) */
    int run_count, run_capacity;
    ars_exp_claim *claims;
    int claim_count, claim_capacity;
    ars_exp_claim spare;      /* written to (and lost) when claims cannot grow */
    ars_exp_text body[ARS_EXP_SECTIONS];  /* each section's markdown (rank 0) */
    double section_seconds[ARS_EXP_SECTIONS];
    int plots_available;      /* PLplot with a PNG device */
    int plot_count;
} ars_exp;

/* exp_run.c: trains config_text (once: a text already trained returns the
 * same run) with its checkpoint under runs_dir/key; rank 0 then reads the
 * history. *out is owned by e. Fails only on errors that end the
 * experiment (out of memory, MPI); a run that fails to train is a result. */
int ars_exp_train(ars_exp *e, const char *key, const char *config_text, ars_exp_run **out);
void ars_exp_run_free(ars_exp_run *run);
/* Removes dir and everything below it (best effort; rank 0's checkpoints). */
void ars_exp_remove_tree(const char *dir);

/* exp_config.c: run-file text. */
/* [run] with the budget's data, batch, seed and probes (every probe_every
 * steps; 0: the budget's), max_steps = steps and the optimizer lines (e.g.
 * "optimizer = sgd\nlr = 0.01\n"). */
void ars_exp_config_run(const ars_exp *e, ars_exp_text *t, int steps, int probe_every, const char *optimizer_lines);
/* The same with the data sizes, batch and probe interval given. */
void ars_exp_config_run_data(const ars_exp *e, ars_exp_text *t, int train_limit, int test_limit, int batch,
                             int steps, int probe_every, const char *optimizer_lines);
/* A [dense] of units with init lines ("init = he_normal\n"). */
void ars_exp_config_dense(ars_exp_text *t, int units, const char *init_lines);
/* init lines of W ~ N(0, std^2) */
void ars_exp_init_normal(char *out, size_t size, double std);
/* An MLP of depth dense layers: depth - 1 hidden layers of units, each
 * [dense] (init_lines), then [norm] when norm is not NULL ("batchnorm",
 * "layernorm"), then [activation]; then the 10-way output [dense]. */
void ars_exp_config_mlp(ars_exp_text *t, int depth, int units, const char *activation, const char *norm,
                        const char *init_lines);

/* The deep network of sections 2, 3 and 6: DEEP_DEPTH dense layers of
 * DEEP_WIDTH with ReLU (norm as in ars_exp_config_mlp), steps_deep steps.
 * Equal arguments give equal text, so a configuration two sections share
 * is trained once. */
enum { ARS_EXP_DEEP_DEPTH = 30, ARS_EXP_DEEP_WIDTH = 128 };
typedef enum { ARS_EXP_SGD, ARS_EXP_MOMENTUM, ARS_EXP_ADAM } ars_exp_optimizer;
void ars_exp_optimizer_lines(char *out, size_t size, ars_exp_optimizer optimizer, double lr);
void ars_exp_config_deep(const ars_exp *e, ars_exp_text *t, ars_exp_optimizer optimizer, double lr,
                         const char *norm, const char *init_lines);

/* exp_report.c: claims and markdown helpers. */
/* Never NULL: out of memory, the claim goes to e->spare (and is lost). */
ars_exp_claim *ars_exp_claim_add(ars_exp *e, int section, ars_exp_verdict verdict, const char *claim);
/* Makes c a check ("what" describes it) that passed or failed. */
void ars_exp_claim_check(ars_exp_claim *c, int passed, const char *what);
const char *ars_exp_verdict_name(ars_exp_verdict verdict);
/* "3.2e-12", "—" for NaN */
void ars_exp_format_sci(char *out, size_t size, double value);
/* "84.3%", "—" for NaN */
void ars_exp_format_percent(char *out, size_t size, double value);
/* "step 120" or "never" */
void ars_exp_format_step(char *out, size_t size, int64_t step);
int ars_exp_trains(const ars_exp_run *run);
/* Appends the section's claims as a verdict list to its body. */
void ars_exp_body_claims(ars_exp *e, int section);
/* Writes out_dir/arsenal-results.md (rank 0). */
int ars_exp_write_document(ars_exp *e, double total_seconds, int failed_checks);

/* exp_sections_*.c: each section trains its runs (every rank), then on
 * rank 0 judges its claims, writes e->body[section] and its plots. */
int ars_exp_section_activations(ars_exp *e);
int ars_exp_section_init(ars_exp *e);
int ars_exp_section_normalization(ars_exp *e);
int ars_exp_section_residual(ars_exp *e);
int ars_exp_section_exploding(ars_exp *e);
int ars_exp_section_optimizers(ars_exp *e);
int ars_exp_section_degradation(ars_exp *e);
int ars_exp_section_cure(ars_exp *e);

/* exp_plot.c: line charts drawn with PLplot as PNG. */
typedef struct ars_exp_series {
    char label[96];
    const ars_exp_curve *curve;
    int style;                /* 1 solid, 2 dashed, ... */
    int marker;               /* 1: a dot at each point */
    double vline;             /* a vertical line at this x (e.g. the NaN step), NaN: none */
    char vline_label[64];     /* written beside it, at the top */
} ars_exp_series;

typedef struct ars_exp_panel {
    char title[160], xlabel[96], ylabel[96];
    int logx, logy;           /* log10 axes (non-positive values are skipped) */
    double ymax;              /* > 0: larger values are drawn at this height (off-scale) */
    double hline;             /* a dotted horizontal reference line, NaN: none */
    char hline_label[96];
    ars_exp_series series[12];
    int count;
} ars_exp_panel;

/* 1 when PLplot with a PNG device is built in. */
int ars_exp_plot_available(void);
/* Draws panels side by side (1 or 2) into path (PNG) under a title; one
 * legend right of the last panel when every panel has the same series
 * labels, else a legend inside each panel. */
int ars_exp_plot(const char *path, const char *title, const ars_exp_panel *panels, int panel_count);
/* Draws a figure into out_dir/results/name.png and links it in the
 * section's markdown (rank 0). A plot that cannot be drawn is a note. */
void ars_exp_figure(ars_exp *e, int section, const char *name, const char *caption, const char *title,
                    const ars_exp_panel *panels, int panel_count);

#endif
