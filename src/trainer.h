/* trainer: the state of one training run, shared by train.c (the loop)
 * and trainer_ckpt.c (checkpoints and resume). Internal to the library. */
#ifndef ARSENAL_TRAINER_H
#define ARSENAL_TRAINER_H

#include <stdio.h>

#include "arsenal/data.h"
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
    int global_batch, local_capacity, steps_per_epoch;
    int64_t total_steps;
    ars_schedule schedule;
    ars_dataset train, test;
    ars_sampler sampler;
    ars_batch batch;
    ars_model model;
    ars_optimizer opt;
    ars_history history;
    ars_health_monitor health;   /* rank 0: live diagnosis over the history */
    float *dlogits;           /* dL/d(output) of the current batch */
    float *params_before;     /* parameters before the update, on probe steps */
    size_t *layer_offsets, *layer_sizes;
    FILE *metrics;
    int64_t step;             /* optimizer steps taken (the global step counter) */
    int epochs_done;
    int64_t nonfinite_steps;
    double last_loss, last_grad_norm, test_accuracy, test_loss, seconds;
    int agreed;
    int64_t last_ckpt_step;
} ars_trainer;

int ars_trainer_agree(ars_trainer *t, int rc);

/* trainer_ckpt.c. All are called on every rank; they agree on failure. */
int ars_trainer_resume_prepare(ars_trainer *t);   /* --resume: step and global batch */
int ars_trainer_resume(ars_trainer *t);       /* --resume: tensors, optimizer, history */
int ars_trainer_checkpoint(ars_trainer *t);   /* no-op without --ckpt-dir */
int ars_trainer_epoch_end(ars_trainer *t);
int ars_trainer_finish(ars_trainer *t);

#endif
