/* sequence: helpers shared by the sequence layers. A sample of a sequence
 * layer is time steps of features, stored as one row of time * features
 * floats, so [rows, time * features] is also [rows * time, features]: a
 * per-step operation is one GEMM over rows * time rows. */
#include <limits.h>
#include <math.h>

#include "arsenal/error.h"
#include "layers_internal.h"

int ars_seq_features(const ars_layer_spec *spec, const ars_shape *in, int max_rows, int *features)
{
    const int in_dim = (int)ars_shape_count(in);
    char text[48];
    if (spec->time <= 0)
        return ars_error(ARS_EINVAL, "[%s] needs time = <steps>: its input %s is not a sequence [time, "
                         "features]", spec->kind, ars_shape_text(in, text, sizeof text));
    if (in_dim % spec->time != 0)
        return ars_error(ARS_EINVAL, "[%s] time = %d does not divide its input width %d (rows are time * "
                         "features)", spec->kind, spec->time, in_dim);
    if ((double)max_rows * spec->time > INT_MAX)
        return ars_error(ARS_EINVAL, "[%s] a batch of %d rows x %d steps is %.0f rows for its matrix products: "
                         "more than %d (use a smaller batch)", spec->kind, max_rows, spec->time,
                         (double)max_rows * spec->time, INT_MAX);
    *features = in_dim / spec->time;
    return 0;
}

int ars_seq_shape(const ars_layer_spec *spec, double time, double per_step, ars_shape *shape)
{
    if (time * per_step > INT_MAX)
        return ars_error(ARS_EINVAL, "[%s] output of %.0f steps x %.0f values is %.0f values per sample: more "
                         "than %d", spec->kind, time, per_step, time * per_step, INT_MAX);
    *shape = ars_shape_matrix((int)time, (int)per_step);
    return 0;
}

void ars_seq_record_norms(ars_layer *layer, const ars_pass *pass, const float *g, int features)
{
    if (!pass->probe || !layer->time_grad_norm) return;
    const int time = layer->time_grad_count;
    double *norm = layer->time_grad_norm;
    for (int t = 0; t < time; t++) norm[t] = 0;
    for (int r = 0; r < pass->rows; r++) {
        const float *row = g + (size_t)r * (size_t)time * (size_t)features;
        for (int t = 0; t < time; t++) {
            const float *step = row + (size_t)t * (size_t)features;
            double ss = 0;
            for (int j = 0; j < features; j++) ss += (double)step[j] * step[j];
            norm[t] += ss;
        }
    }
    for (int t = 0; t < time; t++) norm[t] = sqrt(norm[t]);
}
