/* flatten: [C, H, W] (any shape) -> [C * H * W], as nn.Flatten: the values
 * are already in that order, so forward and backward copy. It says in the
 * run file (and in the shapes a message prints) where images end; [dense]
 * reads its input flat without it. */
#include <string.h>

#include "layers_internal.h"

static int flatten_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    memcpy(y, x, sizeof(float) * (size_t)pass->rows * (size_t)layer->in_dim);
    return 0;
}

static int flatten_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    (void)x;
    (void)y;
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)pass->rows * (size_t)layer->in_dim);
    return 0;
}

static const ars_layer_ops flatten_ops = {"flatten", flatten_forward, flatten_backward, NULL};

static int flatten_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                        ars_layer_size *size)
{
    (void)spec;
    (void)skip;
    (void)max_rows;
    size->out = ars_shape_vector((int)ars_shape_count(in));
    return 0;
}

static int flatten_setup(ars_layer *layer, const ars_layer_size *size)
{
    (void)size;
    layer->ops = &flatten_ops;
    return 0;
}

const ars_layer_kind ars_kind_flatten = {
    .name = "flatten",
    .summary = "reads an image as a vector: [C, H, W] -> [C * H * W]",
    .size = flatten_size,
    .setup = flatten_setup,
};
