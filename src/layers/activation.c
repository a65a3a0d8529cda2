/* activation: the elementwise nonlinearities (sigmoid, tanh, relu, leaky
 * relu, elu, selu, gelu) and their statistics for the health probes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "fast_math.h"
#include "layers_internal.h"

/* SELU constants (Klambauer et al. 2017). */
#define SELU_SCALE 1.0507009873554805f
#define SELU_ALPHA 1.6732632423543772f

typedef struct {
    ars_activation act;
    float alpha;
} activation_impl;

/* The kernels are branch-free (fast_math.h: integer selects, no libm call)
 * and restrict-qualified so that GCC vectorizes every loop; a branch per
 * element on the sign of x mispredicts on half the elements. x > 0 is
 * tested on the bits (a positive float's bits are a positive integer). NaN
 * propagates through every activation, as in PyTorch. */
static inline int32_t positive_mask(float v)
{
    return -(int32_t)(ars_float_bits(v) > 0);
}

ARS_VECTOR_CLONES
static void forward_kernel(ars_activation act, float a, size_t n, const float *restrict x, float *restrict y)
{
    switch (act) {
    case ARS_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) y[i] = ars_sigmoid(x[i]);
        break;
    case ARS_ACT_TANH:
        for (size_t i = 0; i < n; i++) y[i] = ars_tanh(x[i]);
        break;
    case ARS_ACT_RELU:
        for (size_t i = 0; i < n; i++) y[i] = ars_select(positive_mask(x[i]) | ars_nan_mask(x[i]), x[i], 0.0f);
        break;
    case ARS_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) y[i] = ars_select(positive_mask(x[i]), x[i], a * x[i]);
        break;
    case ARS_ACT_ELU:
        for (size_t i = 0; i < n; i++) y[i] = ars_select(positive_mask(x[i]), x[i], a * ars_expm1_neg(x[i]));
        break;
    case ARS_ACT_SELU:
        for (size_t i = 0; i < n; i++)
            y[i] = SELU_SCALE * ars_select(positive_mask(x[i]), x[i], SELU_ALPHA * ars_expm1_neg(x[i]));
        break;
    case ARS_ACT_GELU: /* exact form, as PyTorch's default */
        for (size_t i = 0; i < n; i++) y[i] = x[i] * ars_normal_cdf(x[i]);
        break;
    case ARS_ACT_NONE:
        memcpy(y, x, sizeof(float) * n);
        break;
    }
}

static int activation_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const activation_impl *impl = layer->impl;
    const size_t n = (size_t)pass->rows * (size_t)layer->in_dim;
    forward_kernel(impl->act, impl->alpha, n, x, y);
    if (pass->probe && pass->mode == ARS_MODE_TRAIN) {
        /* mean/std of outputs; saturated = local derivative below 10% of its
         * maximum (sigmoid: y(1-y) < 0.025, tanh: 1-y^2 < 0.1); dead = units
         * whose input is <= 0 for every row of the batch (relu family). A
         * unit of an image [C, H, W] is a channel (a dead filter), alive when
         * any of its pixels is, so a background pixel is not a dead unit. */
        const int rows = pass->rows, dim = layer->in_dim;
        double sum = 0, sum_sq = 0;
        size_t saturated = 0, dead = 0;
        for (size_t i = 0; i < n; i++) {
            double v = y[i];
            sum += v;
            sum_sq += v * v;
            if (impl->act == ARS_ACT_SIGMOID) saturated += y[i] * (1.0f - y[i]) < 0.025f;
            else if (impl->act == ARS_ACT_TANH) saturated += 1.0f - y[i] * y[i] < 0.1f;
        }
        int relu_family = impl->act >= ARS_ACT_RELU;
        const int units = layer->in_shape.rank == 3 ? layer->in_shape.dims[0] : dim, plane = dim / units;
        if (relu_family && rows > 0) {
            for (int j = 0; j < units; j++) {
                int alive = 0;
                for (int r = 0; r < rows && !alive; r++) {
                    const float *unit = x + (size_t)r * dim + (size_t)j * plane;
                    for (int p = 0; p < plane && !alive; p++) alive = unit[p] > 0.0f;
                }
                dead += !alive;
            }
        }
        ars_activation_stats *s = &layer->stats;
        s->mean = n ? sum / (double)n : 0;
        s->std = n ? sqrt(fmax(sum_sq / (double)n - s->mean * s->mean, 0.0)) : 0;
        s->saturated = n ? (double)saturated / (double)n : 0;
        s->dead = relu_family && units ? (double)dead / units : 0;
        s->valid = n > 0;
    }
    return 0;
}

ARS_VECTOR_CLONES
static void backward_kernel(ars_activation act, float a, size_t n, const float *restrict x,
                            const float *restrict y, const float *restrict dy, float *restrict dx)
{
    switch (act) {
    case ARS_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        break;
    case ARS_ACT_TANH:
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
        break;
    case ARS_ACT_RELU:
        for (size_t i = 0; i < n; i++) dx[i] = ars_select(positive_mask(x[i]), dy[i], 0.0f);
        break;
    case ARS_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * ars_select(positive_mask(x[i]), 1.0f, a);
        break;
    case ARS_ACT_ELU: /* for x <= 0: d/dx a(e^x - 1) = y + a */
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * ars_select(positive_mask(x[i]), 1.0f, y[i] + a);
        break;
    case ARS_ACT_SELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = dy[i] * ars_select(positive_mask(x[i]), SELU_SCALE, y[i] + SELU_SCALE * SELU_ALPHA);
        break;
    case ARS_ACT_GELU:
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (ars_normal_cdf(x[i]) + x[i] * ars_normal_pdf(x[i]));
        break;
    case ARS_ACT_NONE:
        memcpy(dx, dy, sizeof(float) * n);
        break;
    }
}

static int activation_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                               const float *dy, float *dx)
{
    const activation_impl *impl = layer->impl;
    if (!dx) return 0;
    backward_kernel(impl->act, impl->alpha, (size_t)pass->rows * (size_t)layer->in_dim, x, y, dy, dx);
    return 0;
}

static const ars_layer_ops activation_ops = {"activation", activation_forward, activation_backward, NULL};

static int activation_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                           ars_layer_size *size)
{
    if (ars_activation_from_name(spec->kind) == ARS_ACT_NONE)
        return ars_error(ARS_EINVAL, "'%s' is not an activation", spec->kind);
    size->out = *in;
    size->workspace = sizeof(activation_impl);
    return 0;
}

static int activation_setup(ars_layer *layer, const ars_layer_size *size)
{
    activation_impl *impl = calloc(1, (size_t)size->workspace);
    if (!impl) return ars_error(ARS_ENOMEM, "activation: out of memory");
    impl->act = layer->kind->activation;
    impl->alpha = layer->spec.alpha;
    layer->impl = impl;
    layer->ops = &activation_ops;
    return 0;
}

static int leaky_relu_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "slope", 0.01, 0, 1, &spec->alpha);
}

static void leaky_relu_defaults(ars_layer_spec *spec) { spec->alpha = 0.01f; }

static int elu_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "alpha", 1.0, 0, 100, &spec->alpha);
}

#define ACTIVATION_KIND(kind_name, act_enum, what, ...) \
    const ars_layer_kind ars_kind_##kind_name = {       \
        .name = #kind_name,                             \
        .summary = what,                                \
        .activation = act_enum,                         \
        .size = activation_size,                        \
        .setup = activation_setup,                      \
        __VA_ARGS__};

ACTIVATION_KIND(sigmoid, ARS_ACT_SIGMOID, "1 / (1 + e^-x)")
ACTIVATION_KIND(tanh, ARS_ACT_TANH, "tanh x")
ACTIVATION_KIND(relu, ARS_ACT_RELU, "max(0, x)")
ACTIVATION_KIND(leaky_relu, ARS_ACT_LEAKY_RELU, "max(slope x, x)", .parse = leaky_relu_parse,
                .defaults = leaky_relu_defaults)
ACTIVATION_KIND(elu, ARS_ACT_ELU, "x, or alpha (e^x - 1) below 0", .parse = elu_parse)
ACTIVATION_KIND(selu, ARS_ACT_SELU, "scaled ELU")
ACTIVATION_KIND(gelu, ARS_ACT_GELU, "x Phi(x)")
