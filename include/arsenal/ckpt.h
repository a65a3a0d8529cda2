/* ckpt: HDF5 checkpoints, format 1 (docs/checkpoint-format.md): weights,
 * optimizer state, the last gradient, the gradient history and what is
 * needed to continue the random streams. Written atomically (temporary
 * file, fsync, rename); read with every field validated. */
#ifndef ARSENAL_CKPT_H
#define ARSENAL_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/history.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"

#define ARS_CKPT_FORMAT "arsenal-checkpoint"
#define ARS_CKPT_FORMAT_VERSION 1

/* The run-level facts of a checkpoint (root attributes and /config). */
typedef struct ars_ckpt_info {
    int format_version;
    char arsenal_version[32];
    char created[40];
    int64_t step;
    int epoch;
    int steps_per_epoch;
    int world_size;
    int global_batch;
    uint64_t seed;
    int64_t param_count;
    int64_t nonfinite_steps;
    double last_loss, test_loss, test_accuracy;
    char *config_text;          /* the resolved run file (malloc'd) */
    char optimizer[16];         /* "sgd" | "adam" | "adamw" */
    double lr;
    int64_t optimizer_step;
    int layer_count;
    char (*layer_names)[40];    /* [layer_count] "000_dense" (malloc'd) */
    char (*layer_kinds)[24];    /* [layer_count] (malloc'd) */
} ars_ckpt_info;

void ars_ckpt_info_free(ars_ckpt_info *info);

/* What a writer needs besides the model and optimizer. */
typedef struct ars_ckpt_state {
    int64_t step;
    int epoch;
    int steps_per_epoch;
    int world_size;
    int global_batch;
    uint64_t seed;
    int64_t nonfinite_steps;
    double last_loss, test_loss, test_accuracy;
    const char *config_text;
} ars_ckpt_state;

/* Writes path atomically (path.tmp-<pid> in the same directory, fsync,
 * rename). On any failure the temporary file is removed and an existing
 * file at path is untouched. */
int ars_ckpt_write(const char *path, const ars_model *model, const ars_optimizer *opt,
                   const ars_history *history, const ars_ckpt_state *state);

/* Reads the root attributes, /config, /optimizer attributes and layer
 * names/kinds. Validates format and version. */
int ars_ckpt_read_info(const char *path, ars_ckpt_info *info);

/* Loads parameters, layer state and optimizer state into an already built
 * model/optimizer, checking every layer's kind and every tensor's shape and
 * type against them (errors name the layer, tensor, expected and found). */
int ars_ckpt_load(const char *path, ars_model *model, ars_optimizer *opt);

/* Reads /history into h (initialized here; free with ars_history_free). */
int ars_ckpt_read_history(const char *path, ars_history *h);

#endif
