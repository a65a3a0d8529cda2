/* train: a training run. The run file's [run] section becomes an
 * ars_run_config, its layer sections an ars_layer_spec list; ars_train()
 * then runs the data-parallel loop of one step:
 *   batch (sharded) -> forward -> loss -> backward -> gradient sum over
 *   ranks (dist.h) -> probes -> non-finite guard -> global-norm clip ->
 *   optimizer -> history -> checkpoint. */
#ifndef ARSENAL_TRAIN_H
#define ARSENAL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/config.h"
#include "arsenal/dist.h"
#include "arsenal/health.h"
#include "arsenal/layer.h"
#include "arsenal/loss.h"
#include "arsenal/optim.h"

typedef enum { ARS_NONFINITE_SKIP, ARS_NONFINITE_STOP } ars_nonfinite_policy;

typedef struct ars_run_config {
    /* data */
    char data[256];           /* fashion-mnist | mnist | spirals | blobs | teacher | adding | copy, or a user's
                               * files: hdf5:PATH | csv:PATH | npy:XPATH,YPATH (data.h) */
    char test_data[256];      /* user data: the test part's files (a spec as data), "" = none */
    char label[64];           /* csv: the label column */
    double validation;        /* fraction of the training set held out as the evaluation set, 0 = none */
    int stream_data;          /* user data: -1 auto, 0 in memory, 1 x streamed from the file */
    char data_dir[512];
    int train_limit, test_limit;      /* 0 = the whole split */
    int train_samples, test_samples;  /* synthetic sets */
    int standardize;
    int augment_crop;         /* training images: zero padding per side of the random crop, 0 = off */
    int augment_flip;         /* training images: random horizontal flip */
    /* schedule of the run */
    int epochs;
    int64_t max_steps;        /* 0 = no limit; a step limit overrides epochs */
    int batch;                /* as written */
    int batch_is_global;      /* 0: batch per rank (default), 1: global */
    uint64_t seed;
    ars_loss_kind loss;
    ars_optim_config optim;
    int optimizer_shard;      /* 1: each rank keeps 1/N of the optimizer state (ZeRO-1) */
    int accumulate;           /* micro-batches per optimizer step (gradient accumulation), >= 1 */
    ars_schedule schedule;
    float clip_norm;          /* 0 = off */
    float clip_value;         /* 0 = off */
    ars_nonfinite_policy nonfinite;
    /* data-parallel */
    ars_grad_sync grad_sync;  /* ARS_SYNC_AUTO: shared memory on one host, overlap across hosts */
    double bucket_mb, first_bucket_mb;
    int check_every;          /* parameter consistency check interval (steps), 0 = off */
    double watchdog_seconds;  /* collective timeout (watchdog.h), 0 = off */
    /* observation */
    int log_every;            /* steps between progress lines */
    int probe_every;          /* steps between health probes / history records */
    int histogram_every;      /* steps between gradient histograms, 0 = off */
    int histogram_bins;
    /* checkpoints */
    int ckpt_every;           /* steps, 0 = only at epoch ends / the end */
    int ckpt_keep;
    ars_health_config health; /* [health] thresholds of the live diagnosis */
    /* LSUV */
    double lsuv_tol;
    int lsuv_iterations;
    /* sequence tasks (data = adding | copy) */
    int seq_len;              /* time steps per sample */
    int conv_layout;          /* convolutions' product layout: 0 measured, 1 per_sample, 2 batched */
    int gemm_tuning;          /* 1: each matrix product in the layout measured fastest (src/gemm.h), 0: as asked */
    /* the layers' matrix products: 0 fp32, 1 bf16 (oneDNN), 2 bf16_emulated (ars_precision, src/gemm_bf16.h;
     * docs/bf16.md); precision_set: the run file (or --set) names it, so a resume uses it, not the checkpoint's */
    int precision, precision_set;
} ars_run_config;

/* Reads [run] and the layer sections (after ars_config_expand), validating
 * every key; then ars_config_check_unused. *specs is malloc'd. */
int ars_run_config_load(ars_config *config, ars_run_config *run, ars_layer_spec **specs, int *count);

/* Loads (or generates) the run's train and test sets, checks them for
 * NaN/Inf and standardizes by the training set's mean and std. Errors name
 * the rank and host (each host reads its own copy of the files). */
struct ars_dataset;
int ars_load_run_data(const ars_run_config *run, int rank, int train_limit, struct ars_dataset *train,
                      struct ars_dataset *test);
/* The same, and the standardization it applied to both sets (x' = (x -
 * *mean) / *std; 0 and 1 when it applied none; NaN when not known, which a
 * loader that standardizes must not leave); mean, std may be NULL. The
 * trainer stores known ones in checkpoints (data_mean, data_std) for
 * arsenal evaluate and predict. */
int ars_load_run_data_stats(const ars_run_config *run, int rank, int train_limit, struct ars_dataset *train,
                            struct ars_dataset *test, double *mean, double *std);

/* Options that come from the command line, not the run file. */
typedef struct ars_train_options {
    const char *metrics_path; /* JSON lines, or NULL */
    const char *ckpt_dir;     /* NULL = no checkpoints */
    int ckpt_dir_in_place;    /* 1: create only ckpt_dir itself, never its parents (arsenal experiment: a
                               * cleanup may remove the parent under it, which must then stay gone) */
    const char *resume_path;  /* NULL = fresh start */
    int quiet;
    const char *config_text;  /* resolved run file, stored in checkpoints */
    int export_params;        /* 1: result->params gets a copy of the final parameters */
} ars_train_options;

/* Final figures of a run (identical on every rank). */
typedef struct ars_train_result {
    int64_t steps;
    int epochs_done;
    double last_loss;
    double last_grad_norm;    /* global gradient norm before clipping, last step */
    double test_accuracy, test_loss;
    int64_t nonfinite_steps;
    double seconds;
    int agreed;   /* on failure, ARS_AGREED*: every rank knows (finalize), or not (ARS_AGREED_NONE: abort) */
    float *params;        /* with export_params: final parameters (caller frees) */
    float *state;         /* and layer state (running statistics) */
    size_t param_count, state_count;
} ars_train_result;

int ars_train(const ars_run_config *run, const ars_layer_spec *specs, int count, ars_dist *dist,
              const ars_train_options *options, ars_train_result *result);

/* Rank 0 creates and removes the files of --ckpt-dir (mkdir -p, the
 * checkpoint, latest.h5, pruning) under this process-wide lock. A cleanup
 * that must remove the directory for good (arsenal experiment on SIGINT or
 * SIGTERM) takes it and never gives it back, so that training, which goes
 * on meanwhile, cannot recreate what it removed afterwards. Until it has
 * the lock, ckpt_dir_in_place keeps training from recreating the parent it
 * removed (a SIGKILL may end the process before it gets the lock). */
void ars_ckpt_dir_lock(void);
int ars_ckpt_dir_trylock(void);   /* 1 when taken */
void ars_ckpt_dir_unlock(void);

#endif
