/* batchnorm: per-feature BatchNorm1d over [rows, dim] (PyTorch semantics),
 * optionally synchronized over ranks (SyncBatchNorm). Training mode
 * normalizes with the batch statistics of ALL ranks' samples when
 * spec.sync is set and the pass has an active dist; the statistics are
 * computed in double with two all-reduces (count and sums, then squared
 * deviations from the global mean) so that they do not depend on how the
 * batch is split. Eval mode normalizes with the running statistics. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "fast_math.h"
#include "layers_internal.h"

typedef struct {
    int train;        /* mode of the last forward: which statistics backward uses */
    double count;     /* samples behind the batch statistics (global when synced) */
    double *mean;     /* [dim] mean used by the last forward */
    double *inv_std;  /* [dim] 1 / sqrt(var + eps) used by the last forward */
    double *sums;     /* [2 * dim + 1] reduction scratch */
    /* float copies for the vectorized passes over the batch: mean and
     * inv_std of the last forward; forward's y = x * a + b; backward's
     * dx = a * (dy - b - xhat * c) */
    float *mean_f, *inv_std_f, *a, *b, *c;
    double data[];
} batchnorm_impl;

/* The dist to reduce over: none for a local BatchNorm. */
static const ars_dist *stats_dist(const ars_layer *layer, const ars_pass *pass)
{
    return layer->spec.sync ? pass->dist : NULL;
}

ARS_VECTOR_CLONES
static void scale_shift_rows(int rows, int dim, const float *restrict a, const float *restrict b,
                             const float *restrict x, float *restrict y)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        for (int j = 0; j < dim; j++) yr[j] = xr[j] * a[j] + b[j];
    }
}

/* y = gamma * (x - mean) * inv_std + beta, folded per feature (in double)
 * into y = x * a + b, so that the pass over the batch is one vectorized
 * multiply-add in float; keeps float mean and inv_std for backward. */
static void normalize(const ars_layer *layer, batchnorm_impl *bn, int rows, const float *x, float *y)
{
    const int dim = layer->in_dim;
    const float *gamma = layer->param + layer->params[0].offset;
    const float *beta = layer->param + layer->params[1].offset;
    for (int j = 0; j < dim; j++) {
        const double g = bn->inv_std[j] * gamma[j];
        bn->a[j] = (float)g;
        bn->b[j] = (float)(beta[j] - bn->mean[j] * g);
        bn->mean_f[j] = (float)bn->mean[j];
        bn->inv_std_f[j] = (float)bn->inv_std[j];
    }
    scale_shift_rows(rows, dim, bn->a, bn->b, x, y);
}

/* Per-feature sums over the rows: sum[j] = sum_r x[r][j], and with mean
 * the squared deviations. Each feature is its own lane, summed in row
 * order, so every clone gives the same bits. */
ARS_VECTOR_CLONES
static void column_sums(int rows, int dim, const float *restrict x, double *restrict sum)
{
    for (int j = 0; j < dim; j++) sum[j] = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        for (int j = 0; j < dim; j++) sum[j] += xr[j];
    }
}

ARS_VECTOR_CLONES
static void column_square_deviations(int rows, int dim, const float *restrict x, const double *restrict mean,
                                     double *restrict sum)
{
    for (int j = 0; j < dim; j++) sum[j] = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        for (int j = 0; j < dim; j++) {
            double d = xr[j] - mean[j];
            sum[j] += d * d;
        }
    }
}

/* Batch mean and biased variance over this rank's rows, or over every
 * rank's rows when dist is active (it must then be called on all ranks). */
static int batch_statistics(const ars_layer *layer, const ars_pass *pass, const float *x, double *var)
{
    batchnorm_impl *bn = layer->impl;
    const ars_dist *dist = stats_dist(layer, pass);
    const int rows = pass->rows, dim = layer->in_dim;
    double *red = bn->sums;

    /* pass 1: [count, sum per feature] */
    red[0] = rows;
    column_sums(rows, dim, x, red + 1);
    int rc = ars_dist_allreduce_double(dist, red, dim + 1);
    if (rc) return ars_error_context(rc, "%s: batch statistics", layer->name);
    const double n = red[0];
    bn->count = n;
    if (n < 1) return 0;
    for (int j = 0; j < dim; j++) bn->mean[j] = red[1 + j] / n;

    /* pass 2: squared deviations from the (global) mean; more accurate than
     * E[x^2] - E[x]^2 when |mean| >> std */
    column_square_deviations(rows, dim, x, bn->mean, red);
    rc = ars_dist_allreduce_double(dist, red, dim);
    if (rc) return ars_error_context(rc, "%s: batch statistics", layer->name);
    for (int j = 0; j < dim; j++) var[j] = red[j] / n;
    return 0;
}

static int batchnorm_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    batchnorm_impl *bn = layer->impl;
    const int rows = pass->rows, dim = layer->in_dim;
    const double eps = layer->spec.eps;
    float *running_mean = layer->state + layer->buffers[0].offset;
    float *running_var = layer->state + layer->buffers[1].offset;
    if (rows < 0 || rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, rows, layer->max_rows);

    if (pass->mode == ARS_MODE_EVAL) {
        bn->train = 0;
        for (int j = 0; j < dim; j++) {
            bn->mean[j] = running_mean[j];
            bn->inv_std[j] = 1.0 / sqrt((double)running_var[j] + eps);
        }
        normalize(layer, bn, rows, x, y);
        return 0;
    }

    bn->train = 1;
    double *var = bn->sums + dim + 1;   /* second half of the scratch */
    int rc = batch_statistics(layer, pass, x, var);
    if (rc) return rc;
    const double n = bn->count;
    if (n == 0) return 0;   /* nothing anywhere: no output, statistics untouched */
    if (n < 2)
        /* as PyTorch: the variance of one value says nothing, and the
         * unbiased running variance would divide by zero */
        return ars_error(ARS_EINVAL, "%s: BatchNorm in training mode needs more than one sample per "
                         "batch (got %.0f)", layer->name, n);
    /* running statistics: identical on all ranks when synced, because every
     * input here is the result of the same all-reduce */
    const double m = layer->spec.momentum;
    for (int j = 0; j < dim; j++) {
        bn->inv_std[j] = 1.0 / sqrt(var[j] + eps);
        running_mean[j] = (float)((1.0 - m) * running_mean[j] + m * bn->mean[j]);
        running_var[j] = (float)((1.0 - m) * running_var[j] + m * var[j] * n / (n - 1.0));
    }
    normalize(layer, bn, rows, x, y);
    return 0;
}

/* Per-feature sums of dy and dy * xhat over the rows (xhat in float,
 * accumulated in double). */
ARS_VECTOR_CLONES
static void backward_sums(int rows, int dim, const float *restrict mean, const float *restrict inv_std,
                          const float *restrict x, const float *restrict dy, double *restrict sum_dy,
                          double *restrict sum_dy_xhat)
{
    for (int j = 0; j < dim; j++) sum_dy[j] = sum_dy_xhat[j] = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
        for (int j = 0; j < dim; j++) {
            const float xhat = (xr[j] - mean[j]) * inv_std[j];
            sum_dy[j] += dyr[j];
            sum_dy_xhat[j] += dyr[j] * xhat;
        }
    }
}

/* dx = a * (dy - b - xhat * c), per feature a, b, c. */
ARS_VECTOR_CLONES
static void backward_input(int rows, int dim, const float *restrict mean, const float *restrict inv_std,
                           const float *restrict a, const float *restrict b, const float *restrict c,
                           const float *restrict x, const float *restrict dy, float *restrict dx)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
        float *dxr = dx + (size_t)r * dim;
        for (int j = 0; j < dim; j++) {
            const float xhat = (xr[j] - mean[j]) * inv_std[j];
            dxr[j] = a[j] * (dyr[j] - b[j] - xhat * c[j]);
        }
    }
}

/* dgamma = sum dy * xhat and dbeta = sum dy over this rank's rows (the
 * trainer sums parameter gradients over ranks). Train mode: dx = gamma *
 * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), the means taken over
 * the same sample set as the forward statistics (all ranks when synced).
 * Eval mode: the statistics are constants, dx = gamma * inv_std * dy. */
static int batchnorm_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                              const float *dy, float *dx)
{
    (void)y;
    batchnorm_impl *bn = layer->impl;
    const int rows = pass->rows, dim = layer->in_dim;
    const float *gamma = layer->param + layer->params[0].offset;
    float *dgamma = layer->grad + layer->params[0].offset;
    float *dbeta = layer->grad + layer->params[1].offset;
    double *sum_dy = bn->sums, *sum_dy_xhat = bn->sums + dim;

    backward_sums(rows, dim, bn->mean_f, bn->inv_std_f, x, dy, sum_dy, sum_dy_xhat);
    for (int j = 0; j < dim; j++) {
        dgamma[j] = (float)sum_dy_xhat[j];
        dbeta[j] = (float)sum_dy[j];
    }
    if (!dx) return 0;   /* first layer: the same on every rank, so no rank waits in the all-reduce */

    if (bn->train) {
        int rc = ars_dist_allreduce_double(stats_dist(layer, pass), bn->sums, 2 * dim);
        if (rc) return ars_error_context(rc, "%s: backward sums", layer->name);
        if (bn->count == 0) return 0;
    }
    const double inv_n = bn->train ? 1.0 / bn->count : 0.0;
    for (int j = 0; j < dim; j++) {
        bn->a[j] = (float)(gamma[j] * bn->inv_std[j]);
        bn->b[j] = (float)(sum_dy[j] * inv_n);
        bn->c[j] = (float)(sum_dy_xhat[j] * inv_n);
    }
    backward_input(rows, dim, bn->mean_f, bn->inv_std_f, bn->a, bn->b, bn->c, x, dy, dx);
    return 0;
}

static const ars_layer_ops batchnorm_ops = {"batchnorm", batchnorm_forward, batchnorm_backward, NULL};

static int batchnorm_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    if (!(spec->eps > 0.0f))
        return ars_error(ARS_EINVAL, "[batchnorm] eps must be positive (found %g)", (double)spec->eps);
    if (!(spec->momentum >= 0.0f && spec->momentum <= 1.0f))
        return ars_error(ARS_EINVAL, "[batchnorm] momentum must be in [0, 1] (found %g)", (double)spec->momentum);
    size->out = *in;
    size->params = 2.0 * in_dim;   /* gamma, beta */
    size->state = 2.0 * in_dim;    /* running mean and variance */
    size->workspace = sizeof(batchnorm_impl) + sizeof(double) * (4.0 * in_dim + 1) + sizeof(float) * 5.0 * in_dim;
    return 0;
}

static int batchnorm_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim;
    /* one block: the model frees impl with free() */
    batchnorm_impl *bn = calloc(1, (size_t)size->workspace);
    if (!bn) return ars_error(ARS_ENOMEM, "batchnorm: out of memory for width %d", in_dim);
    bn->mean = bn->data;
    bn->inv_std = bn->mean + in_dim;
    bn->sums = bn->inv_std + in_dim;
    bn->mean_f = (float *)(bn->sums + 2 * (size_t)in_dim + 1);
    bn->inv_std_f = bn->mean_f + in_dim;
    bn->a = bn->inv_std_f + in_dim;
    bn->b = bn->a + in_dim;
    bn->c = bn->b + in_dim;
    layer->impl = bn;
    layer->ops = &batchnorm_ops;
    ars_layer_add_param(layer, "gamma", ars_shape_vector(in_dim), ARS_ROLE_ONES);
    ars_layer_add_param(layer, "beta", ars_shape_vector(in_dim), ARS_ROLE_ZEROS);
    ars_layer_add_buffer(layer, "running_mean", ars_shape_vector(in_dim), ARS_ROLE_ZEROS);
    ars_layer_add_buffer(layer, "running_var", ars_shape_vector(in_dim), ARS_ROLE_ONES);
    return 0;
}

static int batchnorm_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int rc = ars_layer_parse_float(p, "momentum", 0.1, 0, 1, &spec->momentum);
    if (!rc) rc = ars_layer_parse_float(p, "eps", 1e-5, 1e-12, 1, &spec->eps);
    if (!rc) rc = ars_layer_parse_bool(p, "sync", 1, &spec->sync);
    return rc;
}

const ars_layer_kind ars_kind_batchnorm = {
    .name = "batchnorm",
    .summary = "normalizes each feature over the batch (of every rank with sync)",
    .flags = ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION,
    .parse = batchnorm_parse,
    .size = batchnorm_size,
    .setup = batchnorm_setup,
};
