/* positional: y_t = x_t + P[t] over [rows, time * features]. Attention is
 * blind to order (a permutation of the steps permutes its output), so the
 * position has to be written into the features.
 *   encoding = learned     P is a parameter "weight" [time, features],
 *                          init N(0, 0.02^2) (as GPT-2's wpe)
 *   encoding = sinusoidal  P[t, 2i] = sin(t / 10000^(2i/features)),
 *                          P[t, 2i+1] = cos(same) (Vaswani et al. 2017),
 *                          fixed, computed once at setup in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

typedef struct {
    float *table;      /* sinusoidal [time * features]; NULL when learned */
    double *norms;     /* [time] per-step gradient norms (probe steps) */
    double data[];
} positional_impl;

static const float *encoding(const ars_layer *layer)
{
    const positional_impl *pe = layer->impl;
    return pe->table ? pe->table : layer->param + layer->params[0].offset;
}

static int positional_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const int width = layer->in_dim;
    const float *p = encoding(layer);
    for (int r = 0; r < pass->rows; r++) {
        const float *xr = x + (size_t)r * width;
        float *yr = y + (size_t)r * width;
        for (int i = 0; i < width; i++) yr[i] = xr[i] + p[i];
    }
    return 0;
}

static int positional_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                               const float *dy, float *dx)
{
    const positional_impl *pe = layer->impl;
    const int rows = pass->rows, width = layer->in_dim;
    ars_seq_record_norms(layer, pass, dy, width / layer->spec.time);
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)rows * (size_t)width);
    if (pe->table) return 0;
    float *dp = layer->grad + layer->params[0].offset;   /* dP = sum over the batch of dy */
    memset(dp, 0, sizeof(float) * (size_t)width);
    for (int r = 0; r < rows; r++) {
        const float *g = dy + (size_t)r * width;
        for (int i = 0; i < width; i++) dp[i] += g[i];
    }
    return 0;
}

static const ars_layer_ops positional_ops = {"positional", positional_forward, positional_backward, NULL};

static int positional_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                           ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    int features, rc = ars_seq_features(spec, in, max_rows, &features);
    if (rc) return rc;
    const int learned = strcmp(spec->encoding, "learned") == 0;
    if (!learned && strcmp(spec->encoding, "sinusoidal") != 0)
        return ars_error(ARS_EINVAL, "[positional] encoding = '%s': expected learned or sinusoidal", spec->encoding);
    size->out = ars_shape_matrix(spec->time, features);
    size->params = learned ? in_dim : 0;
    /* per-step norms, then the sinusoidal table */
    size->workspace = sizeof(positional_impl) + sizeof(double) * (double)spec->time +
                      sizeof(float) * (learned ? 0.0 : in_dim);
    return 0;
}

static int positional_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim;
    ars_layer_spec *spec = &layer->spec;
    const int learned = strcmp(spec->encoding, "learned") == 0;
    const int time = spec->time, features = in_dim / time;
    positional_impl *pe = calloc(1, (size_t)size->workspace);
    if (!pe) return ars_error(ARS_ENOMEM, "positional: out of memory");
    pe->norms = pe->data;
    if (!learned) {
        pe->table = (float *)(pe->norms + time);
        for (int t = 0; t < time; t++) {
            for (int j = 0; j < features; j++) {
                double rate = pow(10000.0, -(double)(j - j % 2) / features);
                pe->table[(size_t)t * features + j] = (float)(j % 2 ? cos(t * rate) : sin(t * rate));
            }
        }
    }
    layer->impl = pe;
    layer->time_grad_norm = pe->norms;
    layer->time_grad_count = time;
    layer->ops = &positional_ops;
    if (learned) {
        if (spec->init[0] == '\0') {
            strcpy(spec->init, "normal");
            spec->init_arg = 0.02f;
        }
        ars_layer_add_param(layer, "weight", ars_shape_matrix(time, features), ARS_ROLE_WEIGHT);
    }
    return 0;
}

static int positional_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    static const char *const encodings[] = {"learned", "sinusoidal", NULL};
    int rc = ars_layer_parse_string(p, "encoding", "learned", encodings, spec->encoding, sizeof spec->encoding);
    if (!rc && ars_layer_parse_has(p, "init")) rc = ars_layer_parse_init(p, spec);   /* default N(0, 0.02^2) */
    return rc;
}

const ars_layer_kind ars_kind_positional = {
    .name = "positional",
    .summary = "adds a learned or sinusoidal encoding of each step's position",
    .flags = ARS_KIND_SEQUENCE,
    .parse = positional_parse,
    .size = positional_size,
    .setup = positional_setup,
};
