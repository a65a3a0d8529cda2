/* replay: recompute one step of a run on one process from a checkpoint
 * written at or before it (`arsenal replay CKPT.h5 --step K`). The
 * checkpoint's /config, seed and global batch make the step reproducible:
 * the sampler's order is a function of (seed, epoch), augmentation of
 * (seed, epoch, sample), dropout masks of (seed, layer, step, sample). The
 * run's N ranks are reproduced shard by shard: each rank's rows go through
 * the model on their own, as that rank computed them, and the gradients
 * are summed in rank order, as the all-reduce does. A model with
 * BatchNorm synchronized over ranks (its statistics span every shard)
 * instead goes through in one pass over the global batch. Steps between the
 * checkpoint and K are trained as the run trained them. */
#ifndef ARSENAL_REPLAY_H
#define ARSENAL_REPLAY_H

#include <stdint.h>
#include <stdio.h>

typedef struct ars_replay_layer {
    char name[40];
    int has_params, is_activation;
    double grad_norm;          /* before clipping */
    double grad_norm_applied;  /* after clipping (the history's layer_grad_norm) */
    double weight_norm, update_ratio;   /* after the update, as the history */
    double output_grad_norm;   /* ||dL/dy|| of rank 0's rows */
    double act_mean, act_std, act_saturated, act_dead;   /* rank 0's rows */
} ars_replay_layer;

typedef struct ars_replay {
    int64_t step;              /* the step replayed (0-based index, as /history/step) */
    int64_t from_step;         /* the checkpoint's step: steps taken before it */
    int epoch;                 /* 0-based */
    int world, global_batch;   /* of the run that wrote the checkpoint */
    int shard_wise;            /* 1: rank by rank; 0: one pass (synchronized BatchNorm) */
    double loss, lr, grad_norm, clip_scale;
    int nonfinite;
    int layer_count;
    ars_replay_layer *layers;
} ars_replay;

/* Replays step of the run of path; progress (may be NULL) gets a line
 * per 100 steps trained to reach it. Errors: a step before the
 * checkpoint's or past the run's last, a file that is not a checkpoint. */
int ars_replay_step(const char *path, int64_t step, ars_replay *out, FILE *progress);
void ars_replay_free(ars_replay *r);

#endif
