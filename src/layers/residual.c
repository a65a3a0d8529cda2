/* residual: y = x + F(x) as two marker layers around F. "residual" (begin)
 * passes x through and, in backward, adds the gradient that came over the
 * skip path; "residual_add" (end) adds the skip input to F's output, through
 * a projection when the shapes differ: for images [C, H, W] -> [C', H', W']
 * a 1x1 convolution of stride H / H' and its BatchNorm2d (He et al. 2016's
 * option B, torchvision's downsample), otherwise a learned matrix P [out,
 * in]. */
#include "../gemm.h"
#include <stdio.h>
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
        ars_gemm(false, true, rows, out, skip_dim, 1.0f, skip, skip_dim,
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
    ars_gemm(true, false, out, skip_dim, rows, 1.0f, dy, out, skip, skip_dim,
                0.0f, layer->grad, skip_dim);
    ars_gemm(false, false, rows, skip_dim, out, 1.0f, dy, out, layer->param,
                skip_dim, 0.0f, skip_grad, skip_dim);
    return 0;
}

static const ars_layer_ops add_ops = {"residual_add", add_forward, add_backward, NULL};

/* ---- the image shortcut: BN(conv1x1(x)) ------------------------------------ */

typedef struct {
    ars_layer conv, norm;   /* on this layer's slices: the conv's weight, then the norm's gamma, beta */
    float *z, *u, *dz;      /* [max_rows, out]: conv output, norm output, gradient at the conv output */
    float data[];
} shortcut_impl;

/* The inner layers see this layer's slices (the model sets them after
 * setup; a gradient check may swap them) and a pass without probes. */
static void bind_shortcut(ars_layer *layer, const ars_pass *pass, ars_pass *inner)
{
    shortcut_impl *s = layer->impl;
    s->conv.param = layer->param;
    s->conv.grad = layer->grad;
    s->norm.param = layer->param + s->conv.param_size;
    s->norm.grad = layer->grad + s->conv.param_size;
    s->norm.state = layer->state;
    s->conv.tuning = layer->tuning;   /* rank 0's, or the checkpoint's */
    *inner = *pass;
    inner->probe = 0;
}

static int shortcut_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    shortcut_impl *s = layer->impl;
    ars_pass inner;
    bind_shortcut(layer, pass, &inner);
    const float *skip = layer->partner->output;
    int rc = s->conv.ops->forward(&s->conv, &inner, skip, s->z);
    if (!rc) rc = s->norm.ops->forward(&s->norm, &inner, s->z, s->u);
    if (rc) return ars_error_context(rc, "%s: shortcut", layer->name);
    add_arrays(y, x, s->u, (size_t)pass->rows * (size_t)layer->out_dim);
    return 0;
}

static int shortcut_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                             const float *dy, float *dx)
{
    (void)x;
    (void)y;
    shortcut_impl *s = layer->impl;
    ars_pass inner;
    bind_shortcut(layer, pass, &inner);
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)pass->rows * (size_t)layer->out_dim);
    const float *skip = layer->partner->output;
    int rc = s->norm.ops->backward(&s->norm, &inner, s->z, s->u, dy, s->dz);
    if (!rc) rc = s->conv.ops->backward(&s->conv, &inner, skip, s->z, s->dz, layer->partner->skip_grad);
    return rc ? ars_error_context(rc, "%s: shortcut", layer->name) : 0;
}

static void shortcut_destroy(ars_layer *layer)
{
    shortcut_impl *s = layer->impl;
    if (!s) return;
    ars_layer *inner[2] = {&s->conv, &s->norm};
    for (int i = 0; i < 2; i++) {
        if (inner[i]->ops && inner[i]->ops->destroy) inner[i]->ops->destroy(inner[i]);
        free(inner[i]->impl);
        inner[i]->impl = NULL;
    }
}

static const ars_layer_ops shortcut_ops = {"residual_add", shortcut_forward, shortcut_backward, shortcut_destroy};

/* The specs of the shortcut from skip [C, H, W] to out [C', H', W'] (0: the
 * shapes are not two images; an error: no 1x1 stride maps one onto the
 * other). */
static int shortcut_specs(const ars_layer_spec *spec, const ars_shape *skip, const ars_shape *out,
                          ars_layer_spec *conv, ars_layer_spec *norm, int *is_image)
{
    *is_image = skip->rank == 3 && out->rank == 3 && !ars_shape_equal(skip, out);
    if (!*is_image) return 0;
    int stride = 0;
    for (int s = 1; s <= skip->dims[1] && !stride; s++)
        if ((skip->dims[1] - 1) / s + 1 == out->dims[1] && (skip->dims[2] - 1) / s + 1 == out->dims[2]) stride = s;
    if (!stride) {
        char a[48], b[48];
        return ars_error(ARS_EINVAL, "residual_add: F(x) gives %s from the block's input %s, and no 1x1 "
                         "convolution stride maps one size onto the other", ars_shape_text(out, b, sizeof b),
                         ars_shape_text(skip, a, sizeof a));
    }
    ars_layer_spec_defaults(conv, "conv2d");
    conv->channels = out->dims[0];
    conv->kernel[0] = conv->kernel[1] = 1;
    conv->stride[0] = conv->stride[1] = stride;
    conv->bias = 0;
    conv->layout = spec->layout;
    memcpy(conv->init, spec->init, sizeof conv->init);
    conv->init_arg = spec->init_arg;
    memcpy(conv->init_mode, spec->init_mode, sizeof conv->init_mode);
    conv->source_line = spec->source_line;
    conv->source_file = spec->source_file;
    ars_layer_spec_defaults(norm, "batchnorm2d");
    norm->sync = spec->sync;
    norm->momentum = spec->momentum;
    norm->eps = spec->eps;
    return 0;
}

static int shortcut_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                         ars_layer_size *size)
{
    ars_layer_spec conv, norm;
    int is_image;
    ars_layer_size conv_size, norm_size;
    int rc = shortcut_specs(spec, skip, in, &conv, &norm, &is_image);
    if (!rc) rc = ars_layer_size_of(&conv, skip, NULL, max_rows, &conv_size);
    if (!rc) rc = ars_layer_size_of(&norm, in, NULL, max_rows, &norm_size);
    if (rc) return rc;
    size->out = *in;
    size->params = conv_size.params + norm_size.params;
    size->state = norm_size.state;
    size->workspace = sizeof(shortcut_impl) + sizeof(float) * 3.0 * max_rows * ars_shape_count(in) +
                      conv_size.workspace + norm_size.workspace;
    return 0;
}

static int shortcut_setup(ars_layer *layer)
{
    ars_layer_spec conv, norm;
    int is_image;
    const ars_shape *skip = &layer->partner->in_shape;
    int rc = shortcut_specs(&layer->spec, skip, &layer->in_shape, &conv, &norm, &is_image);
    if (rc) return rc;
    const size_t n = (size_t)(layer->max_rows > 0 ? layer->max_rows : 0) * (size_t)layer->out_dim;
    shortcut_impl *s = calloc(1, sizeof *s + sizeof(float) * 3 * n);
    if (!s) return ars_error(ARS_ENOMEM, "residual_add: out of memory for the shortcut");
    layer->impl = s;
    layer->ops = &shortcut_ops;   /* set first: the model's cleanup then frees the inner layers */
    s->z = s->data;
    s->u = s->z + n;
    s->dz = s->u + n;
    snprintf(s->conv.name, sizeof s->conv.name, "%.30s.conv", layer->name);
    snprintf(s->norm.name, sizeof s->norm.name, "%.30s.norm", layer->name);
    if ((rc = ars_layer_setup(&s->conv, &conv, skip, layer->max_rows)) != 0) return rc;
    if ((rc = ars_layer_setup(&s->norm, &norm, &layer->in_shape, layer->max_rows)) != 0) return rc;
    layer->tuning = s->conv.tuning;
    /* the checkpoint's names: projection, then the norm's as proj_* */
    static const char *const names[] = {"proj_gamma", "proj_beta"}, *const buffers[] = {"proj_mean", "proj_var"};
    ars_layer_add_param(layer, "projection", s->conv.params[0].shape, ARS_ROLE_WEIGHT);
    for (int t = 0; t < 2; t++) ars_layer_add_param(layer, names[t], s->norm.params[t].shape, s->norm.params[t].role);
    for (int t = 0; t < 2; t++)
        ars_layer_add_buffer(layer, buffers[t], s->norm.buffers[t].shape, s->norm.buffers[t].role);
    return 0;
}

static int residual_add_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                             ars_layer_size *size)
{
    if (!skip) return ars_error(ARS_EINVAL, "residual_add without a matching [residual]");
    if (skip->rank == 3 && in->rank == 3 && !ars_shape_equal(skip, in))
        return shortcut_size(spec, in, skip, max_rows, size);
    const double in_dim = ars_shape_count(in), skip_dim = ars_shape_count(skip);
    size->out = *in;
    size->params = skip_dim != in_dim ? in_dim * skip_dim : 0;   /* the projection */
    return 0;
}

static int residual_add_setup(ars_layer *layer, const ars_layer_size *size)
{
    const int in_dim = layer->in_dim, skip_dim = layer->partner->in_dim;
    const ars_shape *skip = &layer->partner->in_shape;
    if (skip->rank == 3 && layer->in_shape.rank == 3 && !ars_shape_equal(skip, &layer->in_shape))
        return shortcut_setup(layer);
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
