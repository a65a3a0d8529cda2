/* pooling: the image poolings, as PyTorch's.
 *   maxpool2d       the max of each window (nn.MaxPool2d: padding counts
 *                   as -inf, ties to the first in scan order); the argmax
 *                   of every output is kept for backward
 *   avgpool2d       the mean of each window (nn.AvgPool2d,
 *                   count_include_pad = True)
 *   global_avgpool  [C, H, W] -> [C], the mean of each channel
 *                   (nn.AdaptiveAvgPool2d(1) then a flatten)
 * The kernels are in conv_kernels.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "conv_kernels.h"
#include "layers_internal.h"

typedef struct {
    ars_pool_geometry g;
    int32_t argmax[];   /* maxpool2d: [max_rows, C, oh, ow] */
} pool_impl;

static int maxpool_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    pool_impl *p = layer->impl;
    ars_maxpool2d_forward(&p->g, pass->rows, x, y, p->argmax);
    return 0;
}

static int maxpool_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    (void)x;
    (void)y;
    pool_impl *p = layer->impl;
    if (dx) ars_maxpool2d_backward(&p->g, pass->rows, dy, p->argmax, dx);
    return 0;
}

static int avgpool_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    pool_impl *p = layer->impl;
    ars_avgpool2d_forward(&p->g, pass->rows, x, y);
    return 0;
}

static int avgpool_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    (void)x;
    (void)y;
    pool_impl *p = layer->impl;
    if (dx) ars_avgpool2d_backward(&p->g, pass->rows, dy, dx);
    return 0;
}

static const ars_layer_ops maxpool_ops = {"maxpool2d", maxpool_forward, maxpool_backward, NULL};
static const ars_layer_ops avgpool_ops = {"avgpool2d", avgpool_forward, avgpool_backward, NULL};

static int needs_image(const ars_layer_spec *spec, const ars_shape *in)
{
    char text[48];
    if (in->rank == 3) return 0;
    return ars_error(ARS_EINVAL, "[%s] needs an image input [channels, height, width], found %s", spec->kind,
                     ars_shape_text(in, text, sizeof text));
}

static int pool_geometry(const ars_layer_spec *spec, const ars_shape *in, ars_pool_geometry *g)
{
    int rc = needs_image(spec, in);
    if (rc) return rc;
    memset(g, 0, sizeof *g);
    g->channels = in->dims[0];
    g->in_h = in->dims[1];
    g->in_w = in->dims[2];
    g->kernel_h = spec->kernel[0];
    g->kernel_w = spec->kernel[1];
    g->stride_h = spec->stride[0];   /* 0: the kernel */
    g->stride_w = spec->stride[1];
    g->pad_h = spec->padding[0];
    g->pad_w = spec->padding[1];
    char text[48];
    rc = ars_pool_geometry_init(g);
    return rc ? ars_error_context(rc, "[%s] on %s", spec->kind, ars_shape_text(in, text, sizeof text)) : 0;
}

static int pool_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                     ars_layer_size *size)
{
    ars_pool_geometry g;
    int rc = pool_geometry(spec, in, &g);
    if (rc) return rc;
    size->out = ars_shape_image(g.channels, g.out_h, g.out_w);
    const double argmax = strcmp(spec->kind, "maxpool2d") == 0 ? (double)max_rows * ars_shape_count(&size->out) : 0;
    size->workspace = sizeof(pool_impl) + sizeof(int32_t) * argmax;
    return 0;
}

static int pool_setup(ars_layer *layer, const ars_layer_size *size)
{
    ars_pool_geometry g;
    int rc = pool_geometry(&layer->spec, &layer->in_shape, &g);
    if (rc) return rc;
    pool_impl *p = calloc(1, (size_t)size->workspace);
    if (!p) return ars_error(ARS_ENOMEM, "%s: out of memory for %.0f bytes", layer->spec.kind, size->workspace);
    p->g = g;
    layer->impl = p;
    layer->ops = strcmp(layer->spec.kind, "maxpool2d") == 0 ? &maxpool_ops : &avgpool_ops;
    return 0;
}

static int pool_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    if (!ars_layer_parse_has(p, "kernel")) return ars_layer_parse_error(p, "needs kernel = <size> (or HxW)");
    int rc = ars_layer_parse_pair(p, "kernel", 0, 1, 1 << 12, spec->kernel);
    if (!rc && ars_layer_parse_has(p, "stride")) rc = ars_layer_parse_pair(p, "stride", 0, 1, 1 << 12, spec->stride);
    if (!rc) rc = ars_layer_parse_pair(p, "padding", 0, 0, 1 << 12, spec->padding);
    return rc;
}

/* stride 0: the window's size, PyTorch's default */
static void pool_defaults(ars_layer_spec *spec) { spec->stride[0] = spec->stride[1] = 0; }

const ars_layer_kind ars_kind_maxpool2d = {
    .name = "maxpool2d",
    .summary = "the max of each window of an image",
    .parse = pool_parse,
    .defaults = pool_defaults,
    .size = pool_size,
    .setup = pool_setup,
};

const ars_layer_kind ars_kind_avgpool2d = {
    .name = "avgpool2d",
    .summary = "the mean of each window of an image",
    .parse = pool_parse,
    .defaults = pool_defaults,
    .size = pool_size,
    .setup = pool_setup,
};

/* ---- global_avgpool ------------------------------------------------------ */

static int global_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const ars_shape *in = &layer->in_shape;
    ars_global_avgpool_forward(pass->rows, in->dims[0], in->dims[1] * in->dims[2], x, y);
    return 0;
}

static int global_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                           const float *dy, float *dx)
{
    (void)x;
    (void)y;
    const ars_shape *in = &layer->in_shape;
    if (dx) ars_global_avgpool_backward(pass->rows, in->dims[0], in->dims[1] * in->dims[2], dy, dx);
    return 0;
}

static const ars_layer_ops global_ops = {"global_avgpool", global_forward, global_backward, NULL};

static int global_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                       ars_layer_size *size)
{
    int rc = needs_image(spec, in);
    if (rc) return rc;
    size->out = ars_shape_vector(in->dims[0]);
    return 0;
}

static int global_setup(ars_layer *layer, const ars_layer_size *size)
{
    (void)size;
    layer->ops = &global_ops;
    return 0;
}

const ars_layer_kind ars_kind_global_avgpool = {
    .name = "global_avgpool",
    .summary = "the mean of each channel of an image: [C, H, W] -> [C]",
    .size = global_size,
    .setup = global_setup,
};
