/* dense: y = x W^T + b, with W stored [out, in] as a PyTorch Linear. Every
 * product is one GEMM (src/gemm.c) over the whole batch. */
#include <stdlib.h>
#include <string.h>

#include "../gemm.h"
#include "arsenal/error.h"
#include "layers_internal.h"

static int dense_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const int rows = pass->rows, in = layer->in_dim, out = layer->out_dim;
    if (rows == 0) return 0;
    const float *w = layer->param + layer->params[0].offset;
    float beta = 0.0f;
    if (layer->spec.bias) {
        /* Preload the bias so the GEMM accumulates onto it (beta = 1). */
        const float *b = layer->param + layer->params[1].offset;
        for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * out, b, sizeof(float) * (size_t)out);
        beta = 1.0f;
    }
    ars_gemm(false, true, rows, out, in, 1.0f, x, in, w, in, beta, y, out);
    return 0;
}

static int dense_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                          const float *dy, float *dx)
{
    const int rows = pass->rows, in = layer->in_dim, out = layer->out_dim;
    float *dw = layer->grad + layer->params[0].offset;
    const float *w = layer->param + layer->params[0].offset;
    if (rows == 0) {
        memset(layer->grad, 0, sizeof(float) * layer->param_size);
        return 0;
    }
    /* dW[out, in] = dy^T x */
    ars_gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 0.0f, dw, in);
    if (layer->spec.bias) {
        float *db = layer->grad + layer->params[1].offset;
        memcpy(db, dy, sizeof(float) * (size_t)out);
        for (int r = 1; r < rows; r++) {
            const float *row = dy + (size_t)r * out;
            for (int j = 0; j < out; j++) db[j] += row[j];
        }
    }
    /* dx[rows, in] = dy W */
    if (dx)
        ars_gemm(false, false, rows, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    return 0;
}

static const ars_layer_ops dense_ops = {"dense", dense_forward, dense_backward, NULL};

static int dense_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                      ars_layer_size *size)
{
    if (spec->units <= 0)
        return ars_error(ARS_EINVAL, "[dense] needs units = a positive width (found %d)", spec->units);
    size->out = ars_shape_vector(spec->units);   /* any input shape is read flat */
    size->params = (double)spec->units * ars_shape_count(in) + (spec->bias ? spec->units : 0);
    return 0;
}

static int dense_setup(ars_layer *layer, const ars_layer_size *size)
{
    layer->ops = &dense_ops;
    ars_layer_add_param(layer, "weight", ars_shape_matrix(layer->spec.units, layer->in_dim), ARS_ROLE_WEIGHT);
    if (layer->spec.bias) ars_layer_add_param(layer, "bias", ars_shape_vector(layer->spec.units), ARS_ROLE_BIAS);
    return 0;
}

static int dense_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int rc = ars_layer_parse_bool(p, "bias", 1, &spec->bias);
    if (!rc) rc = ars_layer_parse_init(p, spec);
    if (!rc) rc = ars_layer_parse_activation(p);
    return rc;
}

const ars_layer_kind ars_kind_dense = {
    .name = "dense",
    .summary = "y = x W^T + b",
    .flags = ARS_KIND_PARAMS,
    .lsuv_weight = "weight",
    .units = "<output width>",
    .parse = dense_parse,
    .size = dense_size,
    .setup = dense_setup,
};
