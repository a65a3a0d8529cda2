/* layernorm: per-sample normalization over the features (PyTorch
 * LayerNorm over the last dimension) with a learned per-feature gain gamma
 * and shift beta. Statistics in double; the same in train and eval mode. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

typedef struct {
    double *mean;      /* [max_rows] per-row mean of the last forward */
    double *inv_std;   /* [max_rows] per-row 1 / sqrt(var + eps) */
    double *dgamma;    /* [dim] accumulators for the parameter gradients */
    double *dbeta;     /* [dim] */
    double data[];
} layernorm_impl;

static int layernorm_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    layernorm_impl *ln = layer->impl;
    const int rows = pass->rows, dim = layer->in_dim;
    const double eps = layer->spec.eps;
    const float *gamma = layer->param + layer->params[0].offset;
    const float *beta = layer->param + layer->params[1].offset;
    if (rows < 0 || rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, rows, layer->max_rows);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double sum = 0;
        for (int j = 0; j < dim; j++) sum += xr[j];
        double mean = sum / dim, ss = 0;
        for (int j = 0; j < dim; j++) {
            double d = xr[j] - mean;
            ss += d * d;
        }
        double inv_std = 1.0 / sqrt(ss / dim + eps);   /* biased variance, as PyTorch */
        for (int j = 0; j < dim; j++) yr[j] = (float)(((double)xr[j] - mean) * inv_std * gamma[j]) + beta[j];
        ln->mean[r] = mean;
        ln->inv_std[r] = inv_std;
    }
    return 0;
}

/* Per row, with g = dy * gamma: dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)). */
static int layernorm_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                              const float *dy, float *dx)
{
    (void)y;
    layernorm_impl *ln = layer->impl;
    const int rows = pass->rows, dim = layer->in_dim;
    const float *gamma = layer->param + layer->params[0].offset;
    float *dgamma = layer->grad + layer->params[0].offset;
    float *dbeta = layer->grad + layer->params[1].offset;
    for (int j = 0; j < dim; j++) ln->dgamma[j] = ln->dbeta[j] = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
        const double mean = ln->mean[r], inv_std = ln->inv_std[r];
        double mean_g = 0, mean_g_xhat = 0;
        for (int j = 0; j < dim; j++) {
            double xhat = ((double)xr[j] - mean) * inv_std;
            double g = (double)dyr[j] * gamma[j];
            mean_g += g;
            mean_g_xhat += g * xhat;
            ln->dgamma[j] += dyr[j] * xhat;
            ln->dbeta[j] += dyr[j];
        }
        if (!dx) continue;
        mean_g /= dim;
        mean_g_xhat /= dim;
        float *dxr = dx + (size_t)r * dim;
        for (int j = 0; j < dim; j++) {
            double xhat = ((double)xr[j] - mean) * inv_std;
            double g = (double)dyr[j] * gamma[j];
            dxr[j] = (float)(inv_std * (g - mean_g - xhat * mean_g_xhat));
        }
    }
    for (int j = 0; j < dim; j++) {
        dgamma[j] = (float)ln->dgamma[j];
        dbeta[j] = (float)ln->dbeta[j];
    }
    return 0;
}

static const ars_layer_ops layernorm_ops = {"layernorm", layernorm_forward, layernorm_backward, NULL};

static int layernorm_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    if (!(spec->eps > 0.0f))
        return ars_error(ARS_EINVAL, "[layernorm] eps must be positive (found %g)", (double)spec->eps);
    size->out = *in;
    size->params = 2.0 * in_dim;   /* gamma, beta */
    size->workspace = sizeof(layernorm_impl) + sizeof(double) * (2.0 * max_rows + 2.0 * in_dim);
    return 0;
}

static int layernorm_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim;
    const size_t rows = layer->max_rows > 0 ? (size_t)layer->max_rows : 0;
    /* one block: the model frees impl with free() */
    layernorm_impl *ln = calloc(1, (size_t)size->workspace);
    if (!ln) return ars_error(ARS_ENOMEM, "layernorm: out of memory for %zu rows of width %d", rows, in_dim);
    ln->mean = ln->data;
    ln->inv_std = ln->mean + rows;
    ln->dgamma = ln->inv_std + rows;
    ln->dbeta = ln->dgamma + in_dim;
    layer->impl = ln;
    layer->ops = &layernorm_ops;
    ars_layer_add_param(layer, "gamma", ars_shape_vector(in_dim), ARS_ROLE_ONES);
    ars_layer_add_param(layer, "beta", ars_shape_vector(in_dim), ARS_ROLE_ZEROS);
    return 0;
}

static int layernorm_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "eps", 1e-5, 1e-12, 1, &spec->eps);
}

const ars_layer_kind ars_kind_layernorm = {
    .name = "layernorm",
    .summary = "normalizes each sample over its features",
    .flags = ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION,
    .parse = layernorm_parse,
    .size = layernorm_size,
    .setup = layernorm_setup,
};
