/* ckpt: HDF5 checkpoints, format 2 (docs/checkpoint-format.md): weights,
 * optimizer state, the last gradient, the gradient history and what is
 * needed to continue the random streams. Built in memory, written
 * atomically (temporary file, fsync, rename); read with every field
 * validated. Strings are fixed-length; format-1 files (variable-length
 * strings) are read only after ars_ckpt_validate passed them. */
#ifndef ARSENAL_CKPT_H
#define ARSENAL_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/history.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"

#define ARS_CKPT_FORMAT "arsenal-checkpoint"
#define ARS_CKPT_FORMAT_VERSION 2          /* written */
#define ARS_CKPT_FORMAT_VERSION_OLDEST 1   /* still read (after ars_ckpt_validate) */

/* The run-level facts of a checkpoint (root attributes and /config). */
typedef struct ars_ckpt_info {
    int format_version;         /* as stored: 1 or 2 */
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
    /* The run's input standardization, x' = (x - data_mean) / data_std (0 and
     * 1 when it did not standardize); has_data_stats 0 in files written
     * before arsenal stored it (arsenal evaluate / predict then recompute it
     * from the run's training data). */
    int has_data_stats;
    double data_mean, data_std;
    ars_shape input_shape;      /* of one sample; rank 0 in files written before arsenal stored it */
    char precision[16];         /* the products' precision: "fp32" (also files written before arsenal stored
                                 * it) | "bf16" | "bf16_emulated" (docs/bf16.md) */
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
    int has_data_stats;         /* 1: write data_mean, data_std (the run's input standardization) */
    double data_mean, data_std;
    const char *precision;      /* root attribute precision; NULL = "fp32" */
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

/* Runs the whole reader (info, every tensor of /model and /optimizer, the
 * history) on path in a forked child process under limits, so that a
 * corrupted file that crashes, hangs or exhausts libhdf5 becomes an error
 * here: "x.h5: corrupted checkpoint (the HDF5 reader crashed with signal
 * 11, ...)", "... did not finish in 10 s", "... needs more than N MiB of
 * memory ...". An ordinary reader error comes back as the reader's own
 * message. On success the file (device, inode, size, mtime) counts as
 * validated and the readers of this process accept it even in format 1.
 * The child calls no MPI and leaves with _exit: safe in an MPI process.
 * Call it on one rank (arsenal: rank 0) and share the verdict. */
int ars_ckpt_validate(const char *path);

/* The child's limits for a file of file_size bytes: address space beyond
 * the process's own (not applied under AddressSanitizer) and wall-clock
 * seconds (CPU time is capped one second later). */
void ars_ckpt_check_limits(uint64_t file_size, uint64_t *memory, double *seconds);

#endif
