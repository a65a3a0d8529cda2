/* ckpt_model: a checkpoint's model rebuilt for inference (ckpt_model.h):
 * the run file of /config into layer specs, the input shape of the run's
 * data set, the tensors, and the recorded input standardization. */
#include "ckpt_model.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ckpt_io.h"
#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/optim.h"

/* The optional root attributes data_mean and data_std (float64 scalars),
 * and the first layer's in_dim: read with the checkpoint already validated. */
static int read_extras(ars_ckpt_model *m, int *first_in_dim)
{
    const char *path = m->path;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return ars_error(ARS_EIO, "%s: HDF5 cannot open it", path);
    int rc = 0;
    const int has_mean = H5Aexists(file, "data_mean") > 0, has_std = H5Aexists(file, "data_std") > 0;
    if (has_mean != has_std)
        rc = ars_error(ARS_EFORMAT, "%s: root attribute %s without %s (the input standardization needs both)", path,
                       has_mean ? "data_mean" : "data_std", has_mean ? "data_std" : "data_mean");
    if (!rc && has_mean) {
        rc = ars_h5_attr_read(file, path, "data_mean", H5T_NATIVE_DOUBLE, &m->data_mean);
        if (!rc) rc = ars_h5_attr_read(file, path, "data_std", H5T_NATIVE_DOUBLE, &m->data_std);
        if (!rc && !(isfinite(m->data_mean) && isfinite(m->data_std)))
            rc = ars_error(ARS_EFORMAT, "%s: data_mean = %g, data_std = %g: not finite", path, m->data_mean,
                           m->data_std);
        m->standardized = !rc;
    }
    *first_in_dim = 0;
    if (!rc && m->info.layer_count > 0) {
        char name[64];
        snprintf(name, sizeof name, "/model/%s", m->info.layer_names[0]);
        hid_t group = H5Gopen2(file, name, H5P_DEFAULT);
        if (group < 0) rc = ars_error(ARS_EFORMAT, "%s:%s cannot be opened", path, name);
        int32_t in_dim = 0;
        if (!rc) {
            char where[600];
            snprintf(where, sizeof where, "%s:%s", path, name);
            rc = ars_h5_attr_read(group, where, "in_dim", H5T_NATIVE_INT32, &in_dim);
            H5Gclose(group);
        }
        *first_in_dim = in_dim;
    }
    H5Fclose(file);
    return rc;
}

/* The shape of one sample of the run's data set, as ars_load_run_data
 * makes it, without loading it: (Fashion-)MNIST images are [1, 28, 28],
 * the sequence tasks [time, 2] and [time]; the other sets are vectors of
 * the first layer's width (which the checkpoint records). */
static int run_input_shape(const ars_ckpt_model *m, int first_in_dim, ars_shape *shape)
{
    const ars_run_config *run = &m->run;
    if (strcmp(run->data, "fashion-mnist") == 0 || strcmp(run->data, "mnist") == 0)
        *shape = ars_shape_image(1, 28, 28);
    else if (strcmp(run->data, "adding") == 0) *shape = ars_shape_matrix(run->seq_len, 2);
    else if (strcmp(run->data, "copy") == 0) *shape = ars_shape_vector(run->seq_len);
    else if (first_in_dim > 0) *shape = ars_shape_vector(first_in_dim);
    else return ars_error(ARS_EFORMAT, "%s: the input shape of data = %s is unknown (give it)", m->path, run->data);
    if (first_in_dim > 0 && ars_shape_count(shape) != first_in_dim) {
        char text[48];
        return ars_error(ARS_EFORMAT, "%s: data = %s gives samples of shape %s but the first layer takes %d values "
                         "(give the input shape)", m->path, run->data, ars_shape_text(shape, text, sizeof text),
                         first_in_dim);
    }
    return 0;
}

void ars_ckpt_model_free(ars_ckpt_model *m)
{
    ars_model_destroy(&m->model);
    ars_ckpt_info_free(&m->info);
    memset(m, 0, sizeof *m);
}

int ars_ckpt_model_load(ars_ckpt_model *m, const char *path, const ars_shape *input, int max_rows)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    int rc = ars_ckpt_validate(path);
    if (!rc) rc = ars_ckpt_read_info(path, &m->info);
    if (rc) return rc;

    ars_config config;
    ars_layer_spec *specs = NULL;
    int count = 0;
    rc = ars_config_load_string(&config, m->info.config_text ? m->info.config_text : "", "/config");
    if (!rc) rc = ars_config_expand(&config);
    if (!rc) rc = ars_run_config_load(&config, &m->run, &specs, &count);
    if (rc) ars_error_context(rc, "%s: its run file (/config)", path);
    int first_in_dim = 0;
    if (!rc) rc = read_extras(m, &first_in_dim);
    if (!rc && input) {
        m->input = *input;
        char text[48];
        if (first_in_dim > 0 && ars_shape_count(input) != first_in_dim)
            rc = ars_error(ARS_EINVAL, "%s: an input of shape %s has %.0f values but the first layer (%s) takes %d",
                           path, ars_shape_text(input, text, sizeof text), ars_shape_count(input),
                           m->info.layer_names[0], first_in_dim);
    } else if (!rc) {
        rc = run_input_shape(m, first_in_dim, &m->input);
    }
    if (!rc) rc = ars_model_create(&m->model, specs, count, m->input, max_rows > 0 ? max_rows : 1);
    if (!rc) {
        /* ars_ckpt_load checks the optimizer against the file and reads its
         * moments too: a throwaway optimizer of the run's kind takes them */
        ars_optimizer opt;
        rc = ars_optimizer_create(&opt, &m->run.optim, m->model.param_count);
        if (!rc) rc = ars_ckpt_load(path, &m->model, &opt);
        ars_optimizer_destroy(&opt);
    }
    free(specs);
    ars_config_free(&config);
    if (rc) ars_ckpt_model_free(m);
    return rc;
}

int ars_ckpt_model_predict(ars_ckpt_model *m, const float *x, int rows, float *out)
{
    const int in = m->model.in_dim, width = m->model.out_dim, cap = m->model.max_rows;
    float *scratch = NULL;
    if (m->standardized) {
        scratch = malloc(sizeof(float) * (size_t)cap * (size_t)in);
        if (!scratch) return ars_error(ARS_ENOMEM, "predict: out of memory for %d x %d inputs", cap, in);
    }
    const double scale = m->data_std > 0 ? 1.0 / m->data_std : 1.0;
    int rc = 0;
    for (int start = 0; start < rows && !rc; start += cap) {
        const int n = rows - start < cap ? rows - start : cap;
        const float *batch = x + (size_t)start * in;
        if (scratch) {   /* as ars_dataset_standardize */
            for (size_t i = 0; i < (size_t)n * in; i++) scratch[i] = (float)((batch[i] - m->data_mean) * scale);
            batch = scratch;
        }
        ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = n, .global_rows = n, .seed = m->run.seed};
        rc = ars_model_forward(&m->model, &pass, batch);
        if (!rc) memcpy(out + (size_t)start * width, ars_model_output(&m->model), sizeof(float) * (size_t)n * width);
    }
    free(scratch);
    return rc;
}
