/* ckpt_model: the model of a checkpoint, rebuilt for inference. The run
 * file the checkpoint stores (/config) gives the layers
 * (ars_run_config_load), the run's data set the per-sample input shape, and
 * ars_ckpt_load the tensors; the input standardization is taken from the
 * checkpoint's root attributes data_mean / data_std when it records them.
 * Used by `arsenal export` (src/export/onnx_export.c) and by the tests'
 * reference forward (tests/onnx_forward.c). Needs no protobuf. */
#ifndef ARSENAL_EXPORT_CKPT_MODEL_H
#define ARSENAL_EXPORT_CKPT_MODEL_H

#include "arsenal/ckpt.h"
#include "arsenal/model.h"
#include "arsenal/train.h"

typedef struct ars_ckpt_model {
    char path[512];
    ars_ckpt_info info;      /* root attributes, /config, layer names */
    ars_run_config run;      /* the stored run file's [run] section */
    ars_model model;         /* built for batches of up to model.max_rows, tensors loaded */
    ars_shape input;         /* per-sample shape of the model's input */
    /* 1: the checkpoint records the standardization of its training data
     * (root attributes data_mean, data_std): raw samples x are fed to the
     * model as (x - data_mean) / data_std (data_std <= 0: 1, as
     * ars_dataset_standardize). 0: the model takes its inputs as they are. */
    int standardized;
    double data_mean, data_std;
} ars_ckpt_model;

/* Validates path (ars_ckpt_validate: in a separate process), reads its
 * info and run file, builds the model for samples of shape *input (NULL:
 * the shape of the run's data set, see docs/onnx.md) and batches of
 * max_rows, and loads the tensors. On failure *m is left freed. */
int ars_ckpt_model_load(ars_ckpt_model *m, const char *path, const ars_shape *input, int max_rows);
void ars_ckpt_model_free(ars_ckpt_model *m);

/* Evaluation-mode forward (BatchNorm with running statistics, dropout off)
 * of rows raw samples x [rows, input count] into out [rows, model.out_dim],
 * standardized first when m->standardized; any rows, in batches of
 * model.max_rows. */
int ars_ckpt_model_predict(ars_ckpt_model *m, const float *x, int rows, float *out);

#endif
