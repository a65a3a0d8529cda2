/* conv2d: a 2-D convolution of an image [C, H, W] into [O, oh, ow], as
 * PyTorch's nn.Conv2d: weight [O, C / groups, kh, kw], bias [O] (bias =
 * false: none, as before a BatchNorm), stride, zero padding, dilation and
 * groups (depthwise: groups = C). The products run through OpenBLAS in
 * conv_kernels.c, in the layout this machine runs fastest for the layer's
 * shape: measured at setup (ars_conv_plan_choose) unless the section's
 * `layout` key fixes it, and kept in layer->tuning so that the trainer can
 * give every rank the same choice and a checkpoint can record it. */
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "conv_kernels.h"
#include "layers_internal.h"

typedef struct {
    ars_conv_geometry g;
    float workspace[];   /* the larger of the layouts' workspaces */
} conv2d_impl;

/* layer->tuning and spec.layout hold a strategy + 1 (0: none chosen yet). */
static ars_conv_strategy strategy_of(const ars_layer *layer)
{
    return layer->tuning == ARS_CONV_BATCHED + 1 ? ARS_CONV_BATCHED : ARS_CONV_PER_SAMPLE;
}

static int conv2d_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    conv2d_impl *c = layer->impl;
    const float *w = layer->param + layer->params[0].offset;
    const float *b = layer->spec.bias ? layer->param + layer->params[1].offset : NULL;
    ars_conv2d_forward(&c->g, strategy_of(layer), pass->rows, x, w, b, y, c->workspace);
    return 0;
}

static int conv2d_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                           const float *dy, float *dx)
{
    (void)y;
    conv2d_impl *c = layer->impl;
    const float *w = layer->param + layer->params[0].offset;
    float *dw = layer->grad + layer->params[0].offset;
    float *db = layer->spec.bias ? layer->grad + layer->params[1].offset : NULL;
    ars_conv2d_backward(&c->g, strategy_of(layer), pass->rows, x, w, dy, dw, db, dx, c->workspace);
    return 0;
}

static const ars_layer_ops conv2d_ops = {"conv2d", conv2d_forward, conv2d_backward, NULL};

/* The geometry of spec on an image input; the errors say the shapes. */
static int conv2d_geometry(const ars_layer_spec *spec, const ars_shape *in, ars_conv_geometry *g)
{
    char text[48];
    if (in->rank != 3)
        return ars_error(ARS_EINVAL, "[conv2d] needs an image input [channels, height, width], found %s%s",
                         ars_shape_text(in, text, sizeof text),
                         in->rank == 1 ? " (image layers go before [dense] and [flatten], which give vectors)" : "");
    if (spec->channels <= 0)
        return ars_error(ARS_EINVAL, "[conv2d] needs channels = <output channels> (found %d)", spec->channels);
    memset(g, 0, sizeof *g);
    g->in_channels = in->dims[0];
    g->in_h = in->dims[1];
    g->in_w = in->dims[2];
    g->out_channels = spec->channels;
    g->kernel_h = spec->kernel[0];
    g->kernel_w = spec->kernel[1];
    g->stride_h = spec->stride[0];
    g->stride_w = spec->stride[1];
    g->pad_h = spec->padding[0];
    g->pad_w = spec->padding[1];
    g->dilation_h = spec->dilation[0];
    g->dilation_w = spec->dilation[1];
    g->groups = spec->groups;
    int rc = ars_conv_geometry_init(g);
    return rc ? ars_error_context(rc, "[conv2d] on %s", ars_shape_text(in, text, sizeof text)) : 0;
}

static double workspace_floats(const ars_conv_geometry *g, int max_rows)
{
    double most = 0;
    for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
        double floats = (double)ars_conv2d_workspace_floats(g, max_rows, (ars_conv_strategy)s);
        if (floats > most) most = floats;
    }
    return most;
}

static int conv2d_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                       ars_layer_size *size)
{
    ars_conv_geometry g;
    int rc = conv2d_geometry(spec, in, &g);
    if (rc) return rc;
    size->out = ars_shape_image(g.out_channels, g.out_h, g.out_w);
    size->params = (double)ars_conv2d_weight_floats(&g) + (spec->bias ? g.out_channels : 0);
    size->workspace = sizeof(conv2d_impl) + sizeof(float) * workspace_floats(&g, max_rows);
    return 0;
}

static int conv2d_setup(ars_layer *layer, const ars_layer_size *size)
{
    ars_conv_geometry g;
    int rc = conv2d_geometry(&layer->spec, &layer->in_shape, &g);
    if (rc) return rc;
    conv2d_impl *c = calloc(1, (size_t)size->workspace);
    if (!c) return ars_error(ARS_ENOMEM, "conv2d: out of memory for %.0f bytes of workspace", size->workspace);
    c->g = g;
    layer->impl = c;
    layer->ops = &conv2d_ops;
    layer->tuning = layer->spec.layout;   /* fixed by the run file, or measured here */
    if (layer->tuning == 0) {
        ars_conv_strategy best = ARS_CONV_PER_SAMPLE;
        if (layer->max_rows > 0 && (rc = ars_conv_plan_choose(&g, layer->max_rows, &best, NULL)) != 0)
            return ars_error_context(rc, "conv2d: measuring its product layouts");
        layer->tuning = (int)best + 1;
    }
    const ars_layer_spec *spec = &layer->spec;
    ars_layer_add_param(layer, "weight", (ars_shape){4, {g.out_channels, g.in_channels / g.groups, g.kernel_h,
                                                         g.kernel_w}}, ARS_ROLE_WEIGHT);
    if (spec->bias) ars_layer_add_param(layer, "bias", ars_shape_vector(g.out_channels), ARS_ROLE_BIAS);
    return 0;
}

static int conv2d_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    static const char *const layouts[] = {"measure", "per_sample", "batched", NULL};
    char layout[16];
    int rc;
    if (!ars_layer_parse_has(p, "channels"))
        return ars_layer_parse_error(p, "needs channels = <output channels>");
    if (!ars_layer_parse_has(p, "kernel")) return ars_layer_parse_error(p, "needs kernel = <size> (or HxW)");
    if ((rc = ars_layer_parse_int(p, "channels", 0, 1, 1 << 20, &spec->channels)) != 0) return rc;
    if ((rc = ars_layer_parse_pair(p, "kernel", 0, 1, 1 << 12, spec->kernel)) != 0) return rc;
    if ((rc = ars_layer_parse_pair(p, "stride", 1, 1, 1 << 12, spec->stride)) != 0) return rc;
    if ((rc = ars_layer_parse_pair(p, "padding", 0, 0, 1 << 12, spec->padding)) != 0) return rc;
    if ((rc = ars_layer_parse_pair(p, "dilation", 1, 1, 1 << 12, spec->dilation)) != 0) return rc;
    if ((rc = ars_layer_parse_int(p, "groups", 1, 1, 1 << 20, &spec->groups)) != 0) return rc;
    if ((rc = ars_layer_parse_bool(p, "bias", 1, &spec->bias)) != 0) return rc;
    if ((rc = ars_layer_parse_string(p, "layout", "measure", layouts, layout, sizeof layout)) != 0) return rc;
    spec->layout = strcmp(layout, "per_sample") == 0   ? ARS_CONV_PER_SAMPLE + 1
                   : strcmp(layout, "batched") == 0 ? ARS_CONV_BATCHED + 1
                                                    : 0;
    if ((rc = ars_layer_parse_init(p, spec)) != 0) return rc;
    return ars_layer_parse_activation(p);
}

const ars_layer_kind ars_kind_conv2d = {
    .name = "conv2d",
    .summary = "2-D convolution of an image",
    .flags = ARS_KIND_PARAMS,
    .lsuv_weight = "weight",
    .parse = conv2d_parse,
    .size = conv2d_size,
    .setup = conv2d_setup,
};
