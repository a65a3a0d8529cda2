/* seq_layernorm: LayerNorm over the features of each time step (PyTorch's
 * LayerNorm(features) on [batch, time, features]), the normalization of the
 * Transformer block (transformer.c). It wraps the layernorm kind: [rows,
 * time * features] is [rows * time, features], so an inner layernorm of
 * width features and capacity max_rows * time does the work with the same
 * code, statistics in double. */
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

typedef struct {
    ars_layer inner;   /* layernorm over [rows * time, features]; shares this layer's slices */
} seq_layernorm_impl;

/* The inner layer sees this layer's parameters (the model sets them after
 * setup, and a gradient check may swap them) and rows * time rows. */
static ars_layer *inner_for(ars_layer *layer, const ars_pass *pass, ars_pass *inner_pass)
{
    seq_layernorm_impl *s = layer->impl;
    s->inner.param = layer->param;
    s->inner.grad = layer->grad;
    s->inner.state = layer->state;
    *inner_pass = *pass;
    inner_pass->rows = pass->rows * layer->spec.time;
    inner_pass->global_rows = pass->global_rows * layer->spec.time;
    inner_pass->probe = 0;
    return &s->inner;
}

static int seq_layernorm_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    if (pass->rows < 0 || pass->rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, pass->rows,
                         layer->max_rows);
    ars_pass p;
    ars_layer *inner = inner_for(layer, pass, &p);
    return inner->ops->forward(inner, &p, x, y);
}

static int seq_layernorm_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                                  const float *dy, float *dx)
{
    ars_pass p;
    ars_layer *inner = inner_for(layer, pass, &p);
    return inner->ops->backward(inner, &p, x, y, dy, dx);
}

static void seq_layernorm_destroy(ars_layer *layer)
{
    seq_layernorm_impl *s = layer->impl;
    if (!s) return;
    if (s->inner.ops && s->inner.ops->destroy) s->inner.ops->destroy(&s->inner);
    free(s->inner.impl);
    s->inner.impl = NULL;
}

static const ars_layer_ops seq_layernorm_ops = {"seq_layernorm", seq_layernorm_forward, seq_layernorm_backward,
                                                seq_layernorm_destroy};

/* The inner layernorm's spec: this one's, of kind layernorm. */
static ars_layer_spec inner_spec(const ars_layer_spec *spec)
{
    ars_layer_spec inner = *spec;
    strcpy(inner.kind, "layernorm");
    return inner;
}

static int seq_layernorm_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip,
                              int max_rows, ars_layer_size *size)
{
    int features, rc = ars_seq_features(spec, in, max_rows, &features);   /* rows * time fits an int */
    if (rc) return rc;
    ars_layer_spec inner = inner_spec(spec);
    ars_layer_size inner_size;
    /* its rows are this layer's rows * time (in double: no int overflow) */
    rc = ars_layer_size_of(&inner, &(ars_shape){1, {features}}, NULL, 0, &inner_size);
    if (rc) return rc;
    size->out = ars_shape_matrix(spec->time, features);
    size->params = inner_size.params;
    size->workspace = sizeof(seq_layernorm_impl) + inner_size.workspace +
                      sizeof(double) * 2.0 * max_rows * spec->time;   /* per-step mean and inv_std */
    return 0;
}

static int seq_layernorm_setup(ars_layer *layer, const ars_layer_size *size)
{
    const ars_shape features = ars_shape_vector(layer->in_dim / layer->spec.time);
    seq_layernorm_impl *s = calloc(1, sizeof *s);
    if (!s) return ars_error(ARS_ENOMEM, "seq_layernorm: out of memory");
    layer->impl = s;
    layer->ops = &seq_layernorm_ops;   /* set first: the model's cleanup then frees the inner layer */
    ars_layer_spec spec = inner_spec(&layer->spec);
    memcpy(s->inner.name, layer->name, sizeof s->inner.name);
    int rc = ars_layer_setup(&s->inner, &spec, &features, layer->max_rows * layer->spec.time);
    if (rc) return rc;
    for (int t = 0; t < s->inner.param_count; t++) {   /* gamma, beta [features] */
        const ars_tensor_view *v = &s->inner.params[t];
        ars_layer_add_param(layer, v->name, v->shape, v->role);
    }
    return 0;
}

static int seq_layernorm_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "eps", 1e-5, 1e-12, 1, &spec->eps);
}

const ars_layer_kind ars_kind_seq_layernorm = {
    .name = "seq_layernorm",
    .summary = "LayerNorm over the features of each time step",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS | ARS_KIND_NORMALIZATION,
    .parse = seq_layernorm_parse,
    .size = seq_layernorm_size,
    .setup = seq_layernorm_setup,
};
