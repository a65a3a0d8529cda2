/* batchnorm: per-feature BatchNorm1d over [rows, dim] and per-channel
 * BatchNorm2d over [rows, channels, height, width] (statistics over N, H
 * and W), PyTorch semantics, optionally synchronized over ranks
 * (SyncBatchNorm). Both are one code path over [rows, channels, plane]
 * (plane = 1 for BatchNorm1d, which keeps its per-feature vector lanes;
 * plane = H * W for BatchNorm2d, summed in ARS_PARTIAL_SUMS fixed lanes per
 * plane so every vector clone gives the same bits). Training mode
 * normalizes with the batch statistics of ALL ranks' samples when
 * spec.sync is set and the pass has an active dist; the statistics are
 * computed in double with two all-reduces (count and sums, then squared
 * deviations from the global mean) so that they do not depend on how the
 * batch is split. Eval mode normalizes with the running statistics. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../simd.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "fast_math.h"
#include "layers_internal.h"

typedef struct {
    int channels;     /* features (BatchNorm1d) or channels (BatchNorm2d) */
    int plane;        /* values per channel per sample: 1, or H * W */
    int train;        /* mode of the last forward: which statistics backward uses */
    double count;     /* samples behind the batch statistics (global when synced) */
    double *mean;     /* [channels] mean used by the last forward */
    double *inv_std;  /* [channels] 1 / sqrt(var + eps) used by the last forward */
    double *sums;     /* [2 * channels + 1] reduction scratch */
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

/* ---- BatchNorm2d: rows of [channels, plane] ---------------------------- */

ARS_VECTOR_CLONES
static void plane_scale_shift(int rows, int channels, int plane, const float *restrict a, const float *restrict b,
                              const float *restrict x, float *restrict y)
{
    for (size_t rc = 0; rc < (size_t)rows * channels; rc++) {
        const float ac = a[rc % (size_t)channels], bc = b[rc % (size_t)channels];
        const float *xp = x + rc * (size_t)plane;
        float *yp = y + rc * (size_t)plane;
        for (int i = 0; i < plane; i++) yp[i] = xp[i] * ac + bc;
    }
}

/* The sums of f(x) over one plane in ARS_PARTIAL_SUMS lanes: lane i % 16
 * takes element i, in order, whatever the vector width. */
#define PLANE_SUM(plane, acc, expr)                                                \
    do {                                                                           \
        double lanes_[ARS_PARTIAL_SUMS] = {0};                                     \
        int i_ = 0;                                                                \
        for (; i_ + ARS_PARTIAL_SUMS <= (plane); i_ += ARS_PARTIAL_SUMS)          \
            for (int k_ = 0; k_ < ARS_PARTIAL_SUMS; k_++) {                        \
                const int i = i_ + k_;                                             \
                lanes_[k_] += (expr);                                              \
            }                                                                      \
        for (int k_ = 0; i_ + k_ < (plane); k_++) {                                \
            const int i = i_ + k_;                                                 \
            lanes_[k_] += (expr);                                                  \
        }                                                                          \
        (acc) += ars_combine_partial_sums(lanes_);                                 \
    } while (0)

ARS_VECTOR_CLONES
static void plane_sums(int rows, int channels, int plane, const float *restrict x, double *restrict sum)
{
    for (int c = 0; c < channels; c++) sum[c] = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < channels; c++) {
            const float *xp = x + ((size_t)r * channels + c) * plane;
            PLANE_SUM(plane, sum[c], (double)xp[i]);
        }
}

ARS_VECTOR_CLONES
static void plane_square_deviations(int rows, int channels, int plane, const float *restrict x,
                                    const double *restrict mean, double *restrict sum)
{
    for (int c = 0; c < channels; c++) sum[c] = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < channels; c++) {
            const float *xp = x + ((size_t)r * channels + c) * plane;
            const double m = mean[c];
            PLANE_SUM(plane, sum[c], ((double)xp[i] - m) * ((double)xp[i] - m));
        }
}

ARS_VECTOR_CLONES
static void plane_backward_sums(int rows, int channels, int plane, const float *restrict mean,
                                const float *restrict inv_std, const float *restrict x, const float *restrict dy,
                                double *restrict sum_dy, double *restrict sum_dy_xhat)
{
    for (int c = 0; c < channels; c++) sum_dy[c] = sum_dy_xhat[c] = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < channels; c++) {
            const size_t at = ((size_t)r * channels + c) * plane;
            const float *xp = x + at, *dyp = dy + at;
            const float m = mean[c], s = inv_std[c];
            PLANE_SUM(plane, sum_dy[c], (double)dyp[i]);
            PLANE_SUM(plane, sum_dy_xhat[c], (double)(dyp[i] * ((xp[i] - m) * s)));
        }
}

ARS_VECTOR_CLONES
static void plane_backward_input(int rows, int channels, int plane, const float *restrict mean,
                                 const float *restrict inv_std, const float *restrict a, const float *restrict b,
                                 const float *restrict c, const float *restrict x, const float *restrict dy,
                                 float *restrict dx)
{
    for (size_t rc = 0; rc < (size_t)rows * channels; rc++) {
        const size_t ch = rc % (size_t)channels;
        const float m = mean[ch], s = inv_std[ch], ac = a[ch], bc = b[ch], cc = c[ch];
        const float *xp = x + rc * (size_t)plane, *dyp = dy + rc * (size_t)plane;
        float *dxp = dx + rc * (size_t)plane;
        for (int i = 0; i < plane; i++) {
            const float xhat = (xp[i] - m) * s;
            dxp[i] = ac * (dyp[i] - bc - xhat * cc);
        }
    }
}

/* ---- both ------------------------------------------------------------------ */

/* y = gamma * (x - mean) * inv_std + beta, folded per feature (in double)
 * into y = x * a + b, so that the pass over the batch is one vectorized
 * multiply-add in float; keeps float mean and inv_std for backward. */
static void normalize(const ars_layer *layer, batchnorm_impl *bn, int rows, const float *x, float *y)
{
    const int dim = bn->channels;
    const float *gamma = layer->param + layer->params[0].offset;
    const float *beta = layer->param + layer->params[1].offset;
    for (int j = 0; j < dim; j++) {
        const double g = bn->inv_std[j] * gamma[j];
        bn->a[j] = (float)g;
        bn->b[j] = (float)(beta[j] - bn->mean[j] * g);
        bn->mean_f[j] = (float)bn->mean[j];
        bn->inv_std_f[j] = (float)bn->inv_std[j];
    }
    if (bn->plane == 1) scale_shift_rows(rows, dim, bn->a, bn->b, x, y);
    else plane_scale_shift(rows, dim, bn->plane, bn->a, bn->b, x, y);
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
    const int rows = pass->rows, dim = bn->channels, plane = bn->plane;
    double *red = bn->sums;

    /* pass 1: [count, sum per feature] */
    red[0] = (double)rows * plane;
    if (plane == 1) column_sums(rows, dim, x, red + 1);
    else plane_sums(rows, dim, plane, x, red + 1);
    int rc = ars_dist_allreduce_double(dist, red, dim + 1);
    if (rc) return ars_error_context(rc, "%s: batch statistics", layer->name);
    const double n = red[0];
    bn->count = n;
    if (n < 1) return 0;
    for (int j = 0; j < dim; j++) bn->mean[j] = red[1 + j] / n;

    /* pass 2: squared deviations from the (global) mean; more accurate than
     * E[x^2] - E[x]^2 when |mean| >> std */
    if (plane == 1) column_square_deviations(rows, dim, x, bn->mean, red);
    else plane_square_deviations(rows, dim, plane, x, bn->mean, red);
    rc = ars_dist_allreduce_double(dist, red, dim);
    if (rc) return ars_error_context(rc, "%s: batch statistics", layer->name);
    for (int j = 0; j < dim; j++) var[j] = red[j] / n;
    return 0;
}

static int batchnorm_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    batchnorm_impl *bn = layer->impl;
    const int rows = pass->rows, dim = bn->channels;
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
        return ars_error(ARS_EINVAL, "%s: BatchNorm in training mode needs more than one value per "
                         "%s (got %.0f)", layer->name, bn->plane == 1 ? "feature and batch" : "channel and batch",
                         n);
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
    const int rows = pass->rows, dim = bn->channels, plane = bn->plane;
    const float *gamma = layer->param + layer->params[0].offset;
    float *dgamma = layer->grad + layer->params[0].offset;
    float *dbeta = layer->grad + layer->params[1].offset;
    double *sum_dy = bn->sums, *sum_dy_xhat = bn->sums + dim;

    if (plane == 1) backward_sums(rows, dim, bn->mean_f, bn->inv_std_f, x, dy, sum_dy, sum_dy_xhat);
    else plane_backward_sums(rows, dim, plane, bn->mean_f, bn->inv_std_f, x, dy, sum_dy, sum_dy_xhat);
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
    if (plane == 1) backward_input(rows, dim, bn->mean_f, bn->inv_std_f, bn->a, bn->b, bn->c, x, dy, dx);
    else plane_backward_input(rows, dim, plane, bn->mean_f, bn->inv_std_f, bn->a, bn->b, bn->c, x, dy, dx);
    return 0;
}

static const ars_layer_ops batchnorm_ops = {"batchnorm", batchnorm_forward, batchnorm_backward, NULL};

/* The channels and the plane of each: BatchNorm1d normalizes every value of
 * its input (plane 1), BatchNorm2d each channel of [C, H, W]. */
static int batchnorm_geometry(const ars_layer_spec *spec, const ars_shape *in, int *channels, int *plane)
{
    const int two_d = strcmp(spec->kind, "batchnorm2d") == 0;
    char text[48];
    if (two_d && in->rank != 3)
        return ars_error(ARS_EINVAL, "[batchnorm2d] needs an image input [channels, height, width], found %s",
                         ars_shape_text(in, text, sizeof text));
    *channels = two_d ? in->dims[0] : (int)ars_shape_count(in);
    *plane = two_d ? in->dims[1] * in->dims[2] : 1;
    return 0;
}

static int batchnorm_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    int dim = 0, plane = 1, rc;
    if (!(spec->eps > 0.0f))
        return ars_error(ARS_EINVAL, "[%s] eps must be positive (found %g)", spec->kind, (double)spec->eps);
    if (!(spec->momentum >= 0.0f && spec->momentum <= 1.0f))
        return ars_error(ARS_EINVAL, "[%s] momentum must be in [0, 1] (found %g)", spec->kind,
                         (double)spec->momentum);
    if ((rc = batchnorm_geometry(spec, in, &dim, &plane)) != 0) return rc;
    size->out = *in;
    size->params = 2.0 * dim;   /* gamma, beta */
    size->state = 2.0 * dim;    /* running mean and variance */
    size->workspace = sizeof(batchnorm_impl) + sizeof(double) * (4.0 * dim + 1) + sizeof(float) * 5.0 * dim;
    return 0;
}

static int batchnorm_setup(ars_layer *layer, const ars_layer_size *size)
{
    int dim = 0, plane = 1, rc = batchnorm_geometry(&layer->spec, &layer->in_shape, &dim, &plane);
    if (rc) return rc;
    /* one block: the model frees impl with free() */
    batchnorm_impl *bn = calloc(1, (size_t)size->workspace);
    if (!bn) return ars_error(ARS_ENOMEM, "batchnorm: out of memory for width %d", dim);
    bn->channels = dim;
    bn->plane = plane;
    bn->mean = bn->data;
    bn->inv_std = bn->mean + dim;
    bn->sums = bn->inv_std + dim;
    bn->mean_f = (float *)(bn->sums + 2 * (size_t)dim + 1);
    bn->inv_std_f = bn->mean_f + dim;
    bn->a = bn->inv_std_f + dim;
    bn->b = bn->a + dim;
    bn->c = bn->b + dim;
    layer->impl = bn;
    layer->ops = &batchnorm_ops;
    ars_layer_add_param(layer, "gamma", ars_shape_vector(dim), ARS_ROLE_ONES);
    ars_layer_add_param(layer, "beta", ars_shape_vector(dim), ARS_ROLE_ZEROS);
    ars_layer_add_buffer(layer, "running_mean", ars_shape_vector(dim), ARS_ROLE_ZEROS);
    ars_layer_add_buffer(layer, "running_var", ars_shape_vector(dim), ARS_ROLE_ONES);
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

const ars_layer_kind ars_kind_batchnorm2d = {
    .name = "batchnorm2d",
    .summary = "normalizes each channel of an image over the batch and its pixels (of every rank with sync)",
    .flags = ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION,
    .parse = batchnorm_parse,
    .size = batchnorm_size,
    .setup = batchnorm_setup,
};
