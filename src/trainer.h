/* trainer: the state of one training run and the agreement on failures
 * over it, shared by train.c (the loop) and trainer_ckpt.c (checkpoints and
 * resume), which train.c calls. Internal to the library. */
#ifndef ARSENAL_TRAINER_H
#define ARSENAL_TRAINER_H

#include <stdio.h>

#include "arsenal/data.h"
#include "arsenal/dist.h"
#include "arsenal/health.h"
#include "arsenal/history.h"
#include "arsenal/model.h"
#include "arsenal/train.h"
#include "arsenal/watchdog.h"

typedef struct ars_trainer {
    const ars_run_config *run;
    const ars_train_options *options;
    ars_dist *dist;
    ars_watchdog *watchdog;   /* collective timeout; NULL = off (one process, or watchdog_seconds = 0) */
    int rank, world;
    int global_batch, local_capacity, steps_per_epoch;   /* steps: optimizer steps */
    int accumulate;           /* micro-batches (sampler batches) per optimizer step, >= 1 */
    int micro_per_epoch;      /* the sampler's batches per epoch */
    int step_rows;            /* samples of the step just taken, over every rank and micro-batch */
    float *accum;             /* accumulate > 1: the summed gradients of the step's earlier micro-batches */
    int shard;                /* optimizer_shard on more than one rank: the optimizer keeps [shard_lo, shard_hi) */
    size_t shard_lo, shard_hi;   /* of the flat parameters; 0 and param_count unsharded */
    int64_t total_steps;
    ars_schedule schedule;
    ars_dataset train, test;
    double data_mean, data_std;   /* the standardization applied to both (0 and 1: none), for checkpoints */
    ars_sampler sampler;
    ars_batch batch;
    ars_augment augment;      /* [run] augment_crop / augment_flip, on training batches only */
    int image_shape[3];       /* channels, height, width of the training images when augmenting */
    ars_model model;
    ars_optimizer opt;
    ars_history history;
    ars_health_monitor health;   /* rank 0: live diagnosis over the history */
    float *dlogits;           /* dL/d(output) of the current batch */
    float *params_before;     /* parameters [shard_lo, shard_hi) before the update, on probe steps */
    size_t *layer_offsets, *layer_sizes;
    FILE *metrics;
    int64_t step;             /* optimizer steps taken (the global step counter) */
    int epochs_done;
    int64_t nonfinite_steps;
    double last_loss, last_grad_norm, test_accuracy, test_loss, seconds;
    int agreed;
    int64_t last_ckpt_step;
    struct ars_cure *cure;    /* [health] cure: snapshots and cures (cure.c) */
    int precision;            /* of the products (ars_precision): the run file's, or a resumed checkpoint's */
    int precision_active;     /* ars_gemm_set_precision(precision) done: fp32 goes back at the end */
} ars_trainer;

/* Every rank learns whether any rank failed, so none is left waiting in a
 * collective. Returns rc on the failing rank, ARS_EPEER on the others;
 * records how far the failure is agreed (ars_dist_agree). Here rather than
 * in train.c: trainer_ckpt.c agrees too, and train.c calls trainer_ckpt.c,
 * not the other way round. */
static inline int ars_trainer_agree(ars_trainer *t, int rc)
{
    int agreed;
    ars_watchdog_enter(t->watchdog, t->step, "agreement all-reduce");
    rc = ars_dist_agree(t->dist, rc, &agreed);
    ars_watchdog_leave(t->watchdog);
    if (rc) t->agreed = agreed;
    return rc;
}

/* trainer_ckpt.c. All are called on every rank; they agree on failure. */
int ars_trainer_share_tunings(ars_trainer *t);   /* rank 0's layer tunings (layer->tuning) to all */
int ars_trainer_resume_prepare(ars_trainer *t);   /* --resume: step and global batch */
int ars_trainer_resume(ars_trainer *t);       /* --resume: tensors, optimizer, history */
int ars_trainer_checkpoint(ars_trainer *t);   /* no-op without --ckpt-dir */
int ars_trainer_epoch_end(ars_trainer *t);
int ars_trainer_finish(ars_trainer *t);

/* trainer_shard.c: the sharded optimizer's (ZeRO-1) parts of a step that
 * need every rank's slice. Collective when t->shard. */
/* The per-layer norms of the (clipped) gradient and of the update since
 * params_before (NULL: none), over every rank's slice: layers doubles each. */
int ars_trainer_layer_norms(ars_trainer *t, const float *params_before, double *grad_norm, double *update_norm);
/* This step's gradient histograms into the history (every rank's slice). */
int ars_trainer_add_histograms(ars_trainer *t);

#endif
