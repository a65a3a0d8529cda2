/* transformer: the pre-LayerNorm Transformer block
 *     x = x + MHA(LN(x));  x = x + MLP(LN(x)),  MLP = seq_dense, gelu, seq_dense
 * is sugar in the run file (src/run_config.c expands a [transformer] section
 * into the ten layers below), not one composite layer: every part then
 * shows up by name in the probes and the gradient history, the residual
 * and activation layers are reused as they are, and a layer keeps at most
 * ARS_MAX_TENSORS parameter tensors (the block has twelve).
 *     residual, seq_layernorm, attention, residual_add,
 *     residual, seq_layernorm, seq_dense (hidden), gelu, seq_dense (units), residual_add
 * This file holds the piece the block needs that no other layer provides:
 * seq_layernorm, LayerNorm over the features of each time step (PyTorch's
 * LayerNorm(features) on [batch, time, features]). It wraps the layernorm
 * kind: [rows, time * features] is [rows * time, features], so an inner
 * layernorm of width features and capacity max_rows * time does the work
 * with the same code, statistics in double. */
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

int ars_seq_layernorm_size(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows,
                           ars_layer_size *size)
{
    int features, rc = ars_seq_features(spec, in_dim, max_rows, &features);   /* rows * time fits an int */
    if (rc) return rc;
    ars_layer_spec inner = inner_spec(spec);
    ars_layer_size inner_size;
    /* its rows are this layer's rows * time (in double: no int overflow) */
    rc = ars_layernorm_size(&inner, features, 0, 0, &inner_size);
    if (rc) return rc;
    size->out_dim = in_dim;
    size->params = inner_size.params;
    size->workspace = sizeof(seq_layernorm_impl) + inner_size.workspace +
                      sizeof(double) * 2.0 * max_rows * spec->time;   /* per-step mean and inv_std */
    return 0;
}

int ars_seq_layernorm_setup(ars_layer *layer, int in_dim, const ars_layer_size *size)
{
    const int features = in_dim / layer->spec.time;
    seq_layernorm_impl *s = calloc(1, sizeof *s);
    if (!s) return ars_error(ARS_ENOMEM, "seq_layernorm: out of memory");
    layer->impl = s;
    layer->ops = &seq_layernorm_ops;   /* set first: the model's cleanup then frees the inner layer */
    layer->out_dim = in_dim;
    ars_layer_spec spec = inner_spec(&layer->spec);
    memcpy(s->inner.name, layer->name, sizeof s->inner.name);
    int rc = ars_layer_setup(&s->inner, &spec, features, layer->max_rows * layer->spec.time);
    if (rc) return rc;
    for (int t = 0; t < s->inner.param_count; t++) {   /* gamma, beta [1, features] */
        const ars_tensor_view *v = &s->inner.params[t];
        ars_layer_add_param(layer, v->name, v->rows, v->cols, v->role);
    }
    return 0;
}

int ars_transformer_size(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows, ars_layer_size *size)
{
    return ars_error(ARS_EINVAL, "[transformer] is run-file sugar: the run file expands it into residual, "
                     "seq_layernorm, attention, residual_add, residual, seq_layernorm, seq_dense, gelu, seq_dense, "
                     "residual_add (see docs/attention.md); build a model from those layers");
}

int ars_transformer_setup(ars_layer *layer, int in_dim, const ars_layer_size *size)
{
    return ars_transformer_size(&layer->spec, in_dim, 0, layer->max_rows, NULL);
}
