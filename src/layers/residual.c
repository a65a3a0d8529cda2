/* residual: y = x + F(x) as two marker layers around F. "residual" (begin)
 * passes x through and, in backward, adds the gradient that came over the
 * skip path; "residual_add" (end) adds the skip input to F's output, through
 * a learned projection P [out, in] when the widths differ. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "../simd.h"
#include "arsenal/error.h"
#include "layers_internal.h"

/* out = a + b, elementwise (the two gradient paths of a block, or the
 * block's output and its input). */
ARS_VECTOR_CLONES
static void add_arrays(float *restrict out, const float *restrict a, const float *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static int begin_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    memcpy(y, x, sizeof(float) * (size_t)pass->rows * (size_t)layer->in_dim);
    return 0;
}

static int begin_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                          const float *dy, float *dx)
{
    if (!dx) return 0;
    const size_t n = (size_t)pass->rows * (size_t)layer->in_dim;
    add_arrays(dx, dy, layer->skip_grad, n);
    return 0;
}

static void begin_destroy(ars_layer *layer) { free(layer->skip_grad); }

static const ars_layer_ops begin_ops = {"residual", begin_forward, begin_backward, begin_destroy};

static int residual_begin_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip,
                               int max_rows, ars_layer_size *size)
{
    size->out = *in;
    size->workspace = sizeof(float) * (double)max_rows * ars_shape_count(in);   /* the skip path's gradient */
    return 0;
}

static int residual_begin_setup(ars_layer *layer, const ars_layer_size *size)
{
    layer->ops = &begin_ops;
    layer->skip_grad = calloc(1, size->workspace > 0 ? (size_t)size->workspace : 1);
    if (!layer->skip_grad) return ars_error(ARS_ENOMEM, "residual: out of memory");
    return 0;
}

static int add_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const int rows = pass->rows, out = layer->out_dim, skip_dim = layer->partner->in_dim;
    const float *skip = layer->partner->output;
    const size_t n = (size_t)rows * (size_t)out;
    if (layer->param_count == 0) {
        add_arrays(y, x, skip, n);
    } else if (rows > 0) {
        memcpy(y, x, sizeof(float) * n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, skip_dim, 1.0f, skip, skip_dim,
                    layer->param, skip_dim, 1.0f, y, out);
    }
    return 0;
}

static int add_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                        const float *dy, float *dx)
{
    const int rows = pass->rows, out = layer->out_dim, skip_dim = layer->partner->in_dim;
    const size_t n = (size_t)rows * (size_t)out;
    float *skip_grad = layer->partner->skip_grad;
    if (dx) memcpy(dx, dy, sizeof(float) * n);
    if (layer->param_count == 0) {
        memcpy(skip_grad, dy, sizeof(float) * n);
        return 0;
    }
    if (rows == 0) {
        memset(layer->grad, 0, sizeof(float) * layer->param_size);
        return 0;
    }
    const float *skip = layer->partner->output;
    /* dP[out, skip] = dy^T skip; d(skip) = dy P */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, skip_dim, rows, 1.0f, dy, out, skip, skip_dim,
                0.0f, layer->grad, skip_dim);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, skip_dim, out, 1.0f, dy, out, layer->param,
                skip_dim, 0.0f, skip_grad, skip_dim);
    return 0;
}

static const ars_layer_ops add_ops = {"residual_add", add_forward, add_backward, NULL};

static int residual_add_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                             ars_layer_size *size)
{
    if (!skip) return ars_error(ARS_EINVAL, "residual_add without a matching [residual]");
    const double in_dim = ars_shape_count(in), skip_dim = ars_shape_count(skip);
    size->out = *in;
    size->params = skip_dim != in_dim ? in_dim * skip_dim : 0;   /* the projection */
    return 0;
}

static int residual_add_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim, skip_dim = layer->partner->in_dim;
    layer->ops = &add_ops;
    if (skip_dim != in_dim)
        ars_layer_add_param(layer, "projection", ars_shape_matrix(in_dim, skip_dim), ARS_ROLE_WEIGHT);
    return 0;
}

/* [residual] ... [end]: the config expands the block's [end] into a
 * residual_add, whose keys are those of the projection's initializer. */
const ars_layer_kind ars_kind_residual = {
    .name = "residual",
    .summary = "starts a block y = x + F(x) (closed by [end])",
    .flags = ARS_KIND_RESIDUAL,
    .size = residual_begin_size,
    .setup = residual_begin_setup,
};

const ars_layer_kind ars_kind_residual_add = {
    .name = "residual_add",
    .summary = "ends a residual block, projecting x when widths differ",
    .flags = ARS_KIND_RESIDUAL,
    .parse = ars_layer_parse_init,
    .size = residual_add_size,
    .setup = residual_add_setup,
};
