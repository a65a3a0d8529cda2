/* embedding: token ids -> vectors, the way a sequence of symbols enters
 * the network: x [rows, time] holds ids (as floats, rounded), y [rows, time,
 * units] = weight[id] per step; weight [vocab, units] as torch.nn.Embedding
 * (init N(0, 1)). (seq_dense.c is the other way in: a linear map of every
 * step of a real-valued sequence or image.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"

/* The id of x rounded; -1 when not finite or outside [0, vocab). Rounding
 * (not truncation) keeps an id when a gradient check nudges it. */
static long token_id(float v, int vocab)
{
    if (!isfinite(v)) return -1;
    long id = lrintf(v);
    return id >= 0 && id < vocab ? id : -1;
}

static int embedding_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const int rows = pass->rows, time = layer->in_dim, dim = layer->spec.units, vocab = layer->spec.vocab;
    const float *w = layer->param + layer->params[0].offset;
    for (int r = 0; r < rows; r++) {
        for (int t = 0; t < time; t++) {
            const size_t i = (size_t)r * time + t;
            long id = token_id(x[i], vocab);
            if (id < 0)
                return ars_error(ARS_EINVAL, "%s: sample row %d step %d holds %g, not a token id in [0, %d)",
                                 layer->name, r, t, (double)x[i], vocab);
            memcpy(y + i * dim, w + (size_t)id * dim, sizeof(float) * (size_t)dim);
        }
    }
    return 0;
}

/* dW[id] += dy_t for every step; the ids themselves get no gradient (dx = 0). */
static int embedding_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                              const float *dy, float *dx)
{
    const int rows = pass->rows, time = layer->in_dim, dim = layer->spec.units, vocab = layer->spec.vocab;
    float *dw = layer->grad + layer->params[0].offset;
    ars_seq_record_norms(layer, pass, dy, dim);
    memset(dw, 0, sizeof(float) * layer->param_size);
    for (size_t i = 0; i < (size_t)rows * time; i++) {
        float *dst = dw + (size_t)token_id(x[i], vocab) * dim;   /* valid: forward checked it */
        const float *src = dy + i * dim;
        for (int j = 0; j < dim; j++) dst[j] += src[j];
    }
    if (dx) memset(dx, 0, sizeof(float) * (size_t)rows * time);
    return 0;
}

static const ars_layer_ops embedding_ops = {"embedding", embedding_forward, embedding_backward, NULL};

static int embedding_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    if (spec->vocab <= 0 || spec->units <= 0)
        return ars_error(ARS_EINVAL, "[embedding] needs vocab = <token ids> and units = <width> (found %d and %d)",
                         spec->vocab, spec->units);
    if (spec->time > 0 && spec->time != in_dim)
        return ars_error(ARS_EINVAL, "[embedding] time = %d but its input holds %d token ids per sample",
                         spec->time, in_dim);
    int rc = ars_seq_shape(spec, in_dim, spec->units, &size->out);
    if (rc) return rc;
    size->params = (double)spec->vocab * spec->units;
    size->workspace = sizeof(double) * (double)in_dim;   /* per-step gradient norms */
    return 0;
}

static int embedding_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim;
    ars_layer_spec *spec = &layer->spec;
    spec->time = in_dim;
    if (spec->init[0] == '\0') {   /* torch.nn.Embedding: N(0, 1) */
        strcpy(spec->init, "normal");
        spec->init_arg = 1.0f;
    }
    double *norms = calloc(1, (size_t)size->workspace);   /* the impl: per-step gradient norms */
    if (!norms) return ars_error(ARS_ENOMEM, "embedding: out of memory");
    layer->impl = norms;
    layer->time_grad_norm = norms;
    layer->time_grad_count = in_dim;
    layer->ops = &embedding_ops;
    ars_layer_add_param(layer, "weight", ars_shape_matrix(spec->vocab, spec->units), ARS_ROLE_WEIGHT);
    return 0;
}

static int embedding_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    if (!ars_layer_parse_has(p, "vocab")) return ars_layer_parse_error(p, "needs vocab = <number of token ids>");
    int rc = ars_layer_parse_int(p, "vocab", 0, 1, 1 << 24, &spec->vocab);
    if (!rc && ars_layer_parse_has(p, "init")) rc = ars_layer_parse_init(p, spec);   /* default N(0, 1) */
    return rc;
}

const ars_layer_kind ars_kind_embedding = {
    .name = "embedding",
    .summary = "token ids -> vectors",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS,
    .lsuv_weight = "weight",
    .units = "<width per step>",
    .parse = embedding_parse,
    .size = embedding_size,
    .setup = embedding_setup,
};
