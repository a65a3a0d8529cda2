/* seq_readout: sequence readouts, [rows, time * features] -> [rows, features].
 *   mean_pool  y = (1/time) sum_t x_t   (sums in double)
 *   last_step  y = x_{time-1}: the RNN's final hidden state (with a causal
 *              Transformer, the only step that has seen the whole input). */
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

typedef struct {
    int time, features, last;
    double sum[];     /* [features] accumulators of one row */
} readout_impl;

static int readout_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    readout_impl *pl = layer->impl;
    const int T = pl->time, F = pl->features;
    for (int r = 0; r < pass->rows; r++) {
        const float *xr = x + (size_t)r * T * F;
        float *yr = y + (size_t)r * F;
        if (pl->last) {
            memcpy(yr, xr + (size_t)(T - 1) * F, sizeof(float) * (size_t)F);
            continue;
        }
        for (int j = 0; j < F; j++) pl->sum[j] = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < F; j++) pl->sum[j] += xr[(size_t)t * F + j];
        for (int j = 0; j < F; j++) yr[j] = (float)(pl->sum[j] / T);
    }
    return 0;
}

static int readout_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    readout_impl *pl = layer->impl;
    const int T = pl->time, F = pl->features;
    if (!dx) return 0;
    const float scale = 1.0f / (float)T;
    for (int r = 0; r < pass->rows; r++) {
        const float *g = dy + (size_t)r * F;
        float *dxr = dx + (size_t)r * T * F;
        if (pl->last) {
            memset(dxr, 0, sizeof(float) * (size_t)(T - 1) * F);
            memcpy(dxr + (size_t)(T - 1) * F, g, sizeof(float) * (size_t)F);
            continue;
        }
        for (int t = 0; t < T; t++)
            for (int j = 0; j < F; j++) dxr[(size_t)t * F + j] = g[j] * scale;
    }
    return 0;
}

static const ars_layer_ops mean_ops = {"mean_pool", readout_forward, readout_backward, NULL};
static const ars_layer_ops last_ops = {"last_step", readout_forward, readout_backward, NULL};

static int readout_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                        ars_layer_size *size)
{
    int F, rc = ars_seq_features(spec, in, max_rows, &F);
    if (rc) return rc;
    size->out = ars_shape_vector(F);
    size->workspace = sizeof(readout_impl) + sizeof(double) * (double)F;   /* one row's sums */
    return 0;
}

static int readout_setup(ars_layer *layer, const ars_layer_size *size)
{
    readout_impl *pl = calloc(1, (size_t)size->workspace);
    if (!pl) return ars_error(ARS_ENOMEM, "sequence readout: out of memory");
    pl->time = layer->spec.time;
    pl->features = layer->out_dim;
    pl->last = strcmp(layer->kind->name, "last_step") == 0;
    layer->impl = pl;
    layer->ops = pl->last ? &last_ops : &mean_ops;
    return 0;
}

const ars_layer_kind ars_kind_mean_pool = {
    .name = "mean_pool",
    .summary = "the mean over the time steps",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_READOUT,
    .size = readout_size,
    .setup = readout_setup,
};

const ars_layer_kind ars_kind_last_step = {
    .name = "last_step",
    .summary = "the last time step",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_READOUT,
    .size = readout_size,
    .setup = readout_setup,
};
