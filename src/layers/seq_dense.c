/* seq_dense: a linear map applied to every time step alone, y_t = W x_t + b,
 * W [units, features]: the row embedding (an image read as time = 28 rows
 * of 28 features), the patch embedding (patch = p: a square image cut into
 * p x p patches, one per step, raster order) and the position-wise layers
 * of a Transformer's MLP. [rows, time * features] is [rows * time,
 * features], so each product is one GEMM (src/gemm.c) over rows * time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../gemm.h"
#include "arsenal/error.h"
#include "layers_internal.h"


typedef struct {
    int time, features;
    int *gather;       /* [in_dim] patch-order position -> pixel; NULL when steps are rows */
    float *xp, *dxp;   /* [max_rows, in_dim] input in patch order and its gradient (patches only) */
    double *norms;     /* [time] */
    double data[];
} seq_dense_impl;

/* Patch order: x [rows, in] -> xp with xp[r][k] = x[r][gather[k]]. */
static void gather_rows(const int *gather, const float *x, float *xp, int rows, int in)
{
    for (int r = 0; r < rows; r++) {
        const float *src = x + (size_t)r * in;
        float *dst = xp + (size_t)r * in;
        for (int k = 0; k < in; k++) dst[k] = src[gather[k]];
    }
}

static int seq_dense_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    seq_dense_impl *sd = layer->impl;
    const int rows = pass->rows, steps = rows * sd->time, in = sd->features, out = layer->spec.units;
    if (rows == 0) return 0;
    const float *w = layer->param + layer->params[0].offset;
    if (sd->gather) {
        gather_rows(sd->gather, x, sd->xp, rows, layer->in_dim);
        x = sd->xp;
    }
    float beta = 0.0f;
    if (layer->spec.bias) {   /* preload the bias; the GEMM accumulates onto it */
        const float *b = layer->param + layer->params[1].offset;
        for (int s = 0; s < steps; s++) memcpy(y + (size_t)s * out, b, sizeof(float) * (size_t)out);
        beta = 1.0f;
    }
    ars_gemm(false, true, steps, out, in, 1.0f, x, in, w, in, beta, y, out);
    return 0;
}

static int seq_dense_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                              const float *dy, float *dx)
{
    seq_dense_impl *sd = layer->impl;
    const int rows = pass->rows, steps = rows * sd->time, in = sd->features, out = layer->spec.units;
    const float *w = layer->param + layer->params[0].offset;
    float *dw = layer->grad + layer->params[0].offset;
    ars_seq_record_norms(layer, pass, dy, out);
    if (rows == 0) {
        memset(layer->grad, 0, sizeof(float) * layer->param_size);
        return 0;
    }
    if (sd->gather) {   /* regathered rather than trusted from forward: cheap next to the GEMMs */
        gather_rows(sd->gather, x, sd->xp, rows, layer->in_dim);
        x = sd->xp;
    }
    /* dW[out, in] = dy^T x over every step of every sample */
    ars_gemm(true, false, out, in, steps, 1.0f, dy, out, x, in, 0.0f, dw, in);
    if (layer->spec.bias) {
        float *db = layer->grad + layer->params[1].offset;
        memcpy(db, dy, sizeof(float) * (size_t)out);
        for (int s = 1; s < steps; s++) {
            const float *row = dy + (size_t)s * out;
            for (int j = 0; j < out; j++) db[j] += row[j];
        }
    }
    if (!dx) return 0;
    float *dst = sd->gather ? sd->dxp : dx;
    ars_gemm(false, false, steps, in, out, 1.0f, dy, out, w, in, 0.0f, dst, in);
    if (sd->gather) {   /* back to pixel order */
        const int width = layer->in_dim;
        for (int r = 0; r < rows; r++) {
            const float *src = sd->dxp + (size_t)r * width;
            float *d = dx + (size_t)r * width;
            for (int k = 0; k < width; k++) d[sd->gather[k]] = src[k];
        }
    }
    return 0;
}

static const ars_layer_ops seq_dense_ops = {"seq_dense", seq_dense_forward, seq_dense_backward, NULL};

/* patch = p: in_dim = S x S pixels, S % p == 0, time = (S/p)^2 steps of p*p. */
static int patch_shape(const ars_layer_spec *spec, int in_dim, int *side, int *time)
{
    int s = (int)lrint(sqrt((double)in_dim));
    if (s * s != in_dim || s % spec->patch != 0)
        return ars_error(ARS_EINVAL, "[seq_dense] patch = %d needs a square image whose side it divides; the "
                         "input has %d values", spec->patch, in_dim);
    *time = (s / spec->patch) * (s / spec->patch);
    if (spec->time > 0 && spec->time != *time)
        return ars_error(ARS_EINVAL, "[seq_dense] time = %d but patch = %d cuts the %dx%d image into %d patches",
                         spec->time, spec->patch, s, s, *time);
    *side = s;
    return 0;
}

/* The steps and features per step of a seq_dense: from the patches when
 * patch > 0, else from time. */
static int seq_dense_shape(const ars_layer_spec *spec, const ars_shape *in, int max_rows, int *side, int *time,
                           int *features)
{
    int rc;
    *side = 0;
    *time = spec->time;
    if (spec->patch > 0 && (rc = patch_shape(spec, (int)ars_shape_count(in), side, time)) != 0) return rc;
    ars_layer_spec shaped = *spec;
    shaped.time = *time;
    return ars_seq_features(&shaped, in, max_rows, features);
}

static int seq_dense_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    int side, time, features, rc;
    if (spec->units <= 0)
        return ars_error(ARS_EINVAL, "[seq_dense] needs units = a positive width (found %d)", spec->units);
    if ((rc = seq_dense_shape(spec, in, max_rows, &side, &time, &features)) != 0) return rc;
    if ((rc = ars_seq_shape(spec, time, spec->units, &size->out)) != 0) return rc;
    size->params = (double)spec->units * features + (spec->bias ? spec->units : 0);
    /* one block: doubles, then floats, then ints (alignment descends) */
    const double patch_floats = spec->patch > 0 ? 2.0 * max_rows * in_dim : 0;   /* xp, dxp */
    const double patch_ints = spec->patch > 0 ? in_dim : 0;                       /* gather */
    size->workspace = sizeof(seq_dense_impl) + sizeof(double) * (double)time + sizeof(float) * patch_floats +
                      sizeof(int) * patch_ints;
    return 0;
}

static int seq_dense_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim;
    ars_layer_spec *spec = &layer->spec;
    int side, time, features;
    int rc = seq_dense_shape(spec, &layer->in_shape, layer->max_rows, &side, &time, &features);
    if (rc) return rc;
    spec->time = time;
    const size_t rows = layer->max_rows > 0 ? (size_t)layer->max_rows : 0;
    seq_dense_impl *sd = calloc(1, (size_t)size->workspace);
    if (!sd) return ars_error(ARS_ENOMEM, "seq_dense: out of memory for %zu rows of width %d", rows, in_dim);
    sd->time = time;
    sd->features = features;
    sd->norms = sd->data;
    if (spec->patch > 0) {
        const int p = spec->patch, per_side = side / p;
        sd->xp = (float *)(sd->norms + time);
        sd->dxp = sd->xp + rows * (size_t)in_dim;
        sd->gather = (int *)(sd->dxp + rows * (size_t)in_dim);
        for (int k = 0; k < in_dim; k++) {
            int token = k / features, f = k % features;
            int pi = token / per_side, pj = token % per_side, a = f / p, b = f % p;
            sd->gather[k] = (pi * p + a) * side + pj * p + b;
        }
    }
    layer->impl = sd;
    layer->time_grad_norm = sd->norms;
    layer->time_grad_count = time;
    layer->ops = &seq_dense_ops;
    ars_layer_add_param(layer, "weight", ars_shape_matrix(spec->units, features), ARS_ROLE_WEIGHT);
    if (spec->bias) ars_layer_add_param(layer, "bias", ars_shape_vector(spec->units), ARS_ROLE_BIAS);
    return 0;
}

static int seq_dense_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int rc = ars_layer_parse_int(p, "patch", 0, 0, 1 << 12, &spec->patch);
    if (!rc) rc = ars_layer_parse_bool(p, "bias", 1, &spec->bias);
    if (!rc) rc = ars_layer_parse_init(p, spec);
    if (!rc) rc = ars_layer_parse_activation(p);
    return rc;
}

const ars_layer_kind ars_kind_seq_dense = {
    .name = "seq_dense",
    .summary = "the same linear map on every time step (or patch)",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS,
    .lsuv_weight = "weight",
    .units = "<width per step>",
    .parse = seq_dense_parse,
    .size = seq_dense_size,
    .setup = seq_dense_setup,
};
