/* sequence: helpers shared by the sequence layers. A sample of a sequence
 * layer is time steps of features, stored as one row of time * features
 * floats, so [rows, time * features] is also [rows * time, features]: a
 * per-step operation is one GEMM over rows * time rows. */
#include <math.h>

#include "arsenal/error.h"
#include "layers_internal.h"

int ars_seq_features(const ars_layer *layer, int in_dim, int *features)
{
    const ars_layer_spec *spec = &layer->spec;
    if (spec->time <= 0)
        return ars_error(ARS_EINVAL, "line %d: [%s] needs time = <steps> (the run file takes it from the "
                         "sequence layer before when absent)", spec->source_line, spec->kind);
    if (in_dim % spec->time != 0)
        return ars_error(ARS_EINVAL, "line %d: [%s] time = %d does not divide its input width %d "
                         "(rows are time * features)", spec->source_line, spec->kind, spec->time, in_dim);
    *features = in_dim / spec->time;
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
