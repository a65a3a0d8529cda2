/* onnx_export: builds the ONNX ModelProto of a checkpoint's model with the
 * protobuf-c structures generated from third_party/onnx/onnx.proto, and
 * writes it (onnx_export.h; the layer-to-operator mapping is the table in
 * docs/onnx.md). Every message, string and array of the graph lives in one
 * arena freed at the end; parameter tensors point straight into the
 * model's flat buffers (protobuf-c only reads them while packing). */
#define _POSIX_C_SOURCE 200809L
#include "onnx_export.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "onnx.pb-c.h"

/* ---- the arena and the growing lists of the graph ------------------------- */

typedef struct {
    void **items;
    size_t count, capacity;
} ptr_list;

typedef struct {
    ptr_list blocks;      /* every allocation, freed together */
    ptr_list nodes;       /* Onnx__NodeProto * in topological order */
    ptr_list initializers;
    ptr_list metadata;
    int failed;           /* out of memory: the build goes on harmlessly, the export fails */
    const char *layer;    /* the layer being translated: node names and messages */
    int serial;           /* intermediate tensors of the current layer */
    double parameters;
} graph;

static int list_push(ptr_list *list, void *item)
{
    if (list->count == list->capacity) {
        size_t grown = list->capacity ? 2 * list->capacity : 64;
        void **items = realloc(list->items, sizeof *items * grown);
        if (!items) return -1;
        list->items = items;
        list->capacity = grown;
    }
    list->items[list->count++] = item;
    return 0;
}

static void *galloc(graph *g, size_t size)
{
    if (g->failed) return NULL;
    void *p = calloc(1, size ? size : 1);
    if (!p || list_push(&g->blocks, p)) {
        free(p);
        g->failed = 1;
        return NULL;
    }
    return p;
}

static char *gstrdup(graph *g, const char *text)
{
    char *copy = galloc(g, strlen(text) + 1);
    if (copy) strcpy(copy, text);
    return copy;
}

static void graph_free(graph *g)
{
    for (size_t i = 0; i < g->blocks.count; i++) free(g->blocks.items[i]);
    free(g->blocks.items);
    free(g->nodes.items);
    free(g->initializers.items);
    free(g->metadata.items);
    memset(g, 0, sizeof *g);
}

/* "003_dense/gelu_2": an intermediate tensor of the current layer. */
static const char *temp_name(graph *g, const char *what)
{
    char name[96];
    snprintf(name, sizeof name, "%s/%s_%d", g->layer, what, g->serial++);
    const char *copy = gstrdup(g, name);
    return copy ? copy : "";
}

/* ---- nodes and attributes ------------------------------------------------- */

enum { MAX_ATTRIBUTES = 8 };

/* A node op(inputs) -> output (NULL: a new intermediate name), named after
 * its output. Returns the output's name (never NULL: "" once out of memory). */
static const char *node(graph *g, const char *op, const char *const *inputs, int input_count, const char *output,
                        Onnx__NodeProto **made)
{
    if (made) *made = NULL;
    const char *out = output ? output : temp_name(g, op);
    Onnx__NodeProto *n = galloc(g, sizeof *n);
    char **in = galloc(g, sizeof *in * (size_t)(input_count > 0 ? input_count : 1));
    char **outs = galloc(g, sizeof *outs);
    Onnx__AttributeProto **attributes = galloc(g, sizeof *attributes * MAX_ATTRIBUTES);
    char *name = gstrdup(g, out), *op_type = gstrdup(g, op);
    if (g->failed) return "";
    onnx__node_proto__init(n);
    for (int i = 0; i < input_count; i++) {
        in[i] = gstrdup(g, inputs[i]);
        if (!in[i]) return "";
    }
    outs[0] = name;
    n->n_input = (size_t)input_count;
    n->input = in;
    n->n_output = 1;
    n->output = outs;
    n->name = name;
    n->op_type = op_type;
    n->attribute = attributes;
    if (list_push(&g->nodes, n)) {
        g->failed = 1;
        return "";
    }
    if (made) *made = n;
    return name;
}

static const char *node1(graph *g, const char *op, const char *x, const char *output, Onnx__NodeProto **made)
{
    return node(g, op, &x, 1, output, made);
}

static const char *node2(graph *g, const char *op, const char *a, const char *b, const char *output,
                         Onnx__NodeProto **made)
{
    const char *inputs[2] = {a, b};
    return node(g, op, inputs, 2, output, made);
}

static Onnx__AttributeProto *attribute(graph *g, Onnx__NodeProto *n, const char *name,
                                       Onnx__AttributeProto__AttributeType type)
{
    if (!n || g->failed) return NULL;
    if (n->n_attribute == MAX_ATTRIBUTES) {   /* a bug here, not an input error */
        g->failed = 1;
        return NULL;
    }
    Onnx__AttributeProto *a = galloc(g, sizeof *a);
    char *copy = gstrdup(g, name);
    if (!a || !copy) return NULL;
    onnx__attribute_proto__init(a);
    a->name = copy;
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void attr_int(graph *g, Onnx__NodeProto *n, const char *name, int64_t value)
{
    Onnx__AttributeProto *a = attribute(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return;
    a->has_i = 1;
    a->i = value;
}

static void attr_float(graph *g, Onnx__NodeProto *n, const char *name, float value)
{
    Onnx__AttributeProto *a = attribute(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return;
    a->has_f = 1;
    a->f = value;
}

static void attr_ints(graph *g, Onnx__NodeProto *n, const char *name, const int64_t *values, int count)
{
    Onnx__AttributeProto *a = attribute(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *copy = galloc(g, sizeof *copy * (size_t)count);
    if (!a || !copy) return;
    memcpy(copy, values, sizeof *copy * (size_t)count);
    a->n_ints = (size_t)count;
    a->ints = copy;
}

/* ---- initializers (the weights and the constants) --------------------------- */

static Onnx__TensorProto *tensor(graph *g, const char *name, const int64_t *dims, int rank, int32_t type)
{
    Onnx__TensorProto *t = galloc(g, sizeof *t);
    int64_t *d = galloc(g, sizeof *d * (size_t)(rank > 0 ? rank : 1));
    char *copy = gstrdup(g, name);
    if (g->failed) return NULL;
    onnx__tensor_proto__init(t);
    if (rank > 0) memcpy(d, dims, sizeof *d * (size_t)rank);
    t->n_dims = (size_t)rank;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = type;
    t->name = copy;
    if (list_push(&g->initializers, t)) {
        g->failed = 1;
        return NULL;
    }
    return t;
}

/* A float32 initializer over data (not copied: it must outlive the export). */
static const char *floats(graph *g, const char *name, const int64_t *dims, int rank, const float *data)
{
    Onnx__TensorProto *t = tensor(g, name, dims, rank, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    if (!t) return "";
    size_t count = 1;
    for (int i = 0; i < rank; i++) count *= (size_t)dims[i];
    t->n_float_data = count;
    t->float_data = (float *)data;   /* read only, by the packer */
    g->parameters += (double)count;
    return t->name;
}

/* A layer's tensor as "<layer>.<tensor name>" with its PyTorch shape. */
static const char *view_tensor(graph *g, const ars_layer *layer, const ars_tensor_view *view, const float *base)
{
    char name[96];
    int64_t dims[ARS_SHAPE_MAX_RANK];
    for (int i = 0; i < view->shape.rank; i++) dims[i] = view->shape.dims[i];
    snprintf(name, sizeof name, "%s.%s", layer->name, view->name);
    return floats(g, name, dims, view->shape.rank, base + view->offset);
}

/* The layer's parameter (or buffer) called name, or NULL. */
static const ars_tensor_view *find_view(const ars_tensor_view *views, int count, const char *name)
{
    for (int i = 0; i < count; i++)
        if (strcmp(views[i].name, name) == 0) return &views[i];
    return NULL;
}

static const char *param(graph *g, const ars_layer *layer, const char *name)
{
    const ars_tensor_view *v = find_view(layer->params, layer->param_count, name);
    if (!v) {
        g->failed = 1;
        return "";
    }
    return view_tensor(g, layer, v, layer->param);
}

static const char *buffer(graph *g, const ars_layer *layer, const char *name)
{
    const ars_tensor_view *v = find_view(layer->buffers, layer->buffer_count, name);
    if (!v) {
        g->failed = 1;
        return "";
    }
    return view_tensor(g, layer, v, layer->state);
}

/* A float scalar constant (rank 0) of the current layer. */
static const char *scalar(graph *g, const char *what, float value)
{
    float *copy = galloc(g, sizeof *copy);
    if (!copy) return "";
    *copy = value;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", g->layer, what);
    const char *t = floats(g, name, NULL, 0, copy);
    g->parameters -= 1;   /* a constant of the graph, not a parameter */
    return t;
}

static const char *int64s(graph *g, const char *name, const int64_t *values, int count)
{
    const int64_t dims[1] = {count};
    Onnx__TensorProto *t = tensor(g, name, dims, 1, ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    int64_t *copy = galloc(g, sizeof *copy * (size_t)count);
    if (!t || !copy) return "";
    memcpy(copy, values, sizeof *copy * (size_t)count);
    t->n_int64_data = (size_t)count;
    t->int64_data = copy;
    return t->name;
}

/* ---- shapes --------------------------------------------------------------- */

/* x [N, from...] as [N, to...] (the same count: arsenal's rows are flat):
 * Flatten for a vector, else Reshape with 0 (= keep N) first. */
static const char *reshape(graph *g, const char *x, const ars_shape *from, const ars_shape *to, const char *output)
{
    if (ars_shape_equal(from, to)) return output ? node1(g, "Identity", x, output, NULL) : x;
    Onnx__NodeProto *n;
    if (to->rank == 1) {
        const char *y = node1(g, "Flatten", x, output, &n);
        attr_int(g, n, "axis", 1);
        return y;
    }
    int64_t dims[ARS_SHAPE_MAX_RANK + 1] = {0};
    for (int i = 0; i < to->rank; i++) dims[i + 1] = to->dims[i];
    char name[96];
    snprintf(name, sizeof name, "%s.shape_%d", g->layer, g->serial++);
    return node2(g, "Reshape", x, int64s(g, name, dims, to->rank + 1), output, NULL);
}

static const char *flat(graph *g, const char *x, const ars_layer *layer)
{
    ars_shape v = ars_shape_vector(layer->in_dim);
    return reshape(g, x, &layer->in_shape, &v, NULL);
}

/* ---- the layer kinds -------------------------------------------------------- */

/* Gemm(x, W, b) with W [out, in] as stored (transB = 1), b optional. */
static const char *gemm(graph *g, const char *x, const char *weight, const char *bias, const char *output)
{
    const char *inputs[3] = {x, weight, bias};
    Onnx__NodeProto *n;
    const char *y = node(g, "Gemm", inputs, bias ? 3 : 2, output, &n);
    attr_int(g, n, "transB", 1);
    return y;
}

static const char *batch_norm(graph *g, const char *x, const char *const stats[4], float eps, const char *output)
{
    const char *inputs[5] = {x, stats[0], stats[1], stats[2], stats[3]};
    Onnx__NodeProto *n;
    const char *y = node(g, "BatchNormalization", inputs, 5, output, &n);
    attr_float(g, n, "epsilon", eps);
    return y;
}

static const char *dense(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const char *weight = param(g, layer, "weight");
    const char *bias = find_view(layer->params, layer->param_count, "bias") ? param(g, layer, "bias") : NULL;
    return gemm(g, flat(g, x, layer), weight, bias, out);
}

/* y = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2: arsenal's exact GELU (Gelu
 * itself arrived in opset 20). */
static const char *gelu(graph *g, const char *x, const char *out)
{
    const char *z = node2(g, "Mul", x, scalar(g, "inv_sqrt2", 0.70710678118654752f), NULL, NULL);
    const char *e = node1(g, "Erf", z, NULL, NULL);
    const char *s = node2(g, "Add", e, scalar(g, "one", 1.0f), NULL, NULL);
    const char *h = node2(g, "Mul", x, scalar(g, "half", 0.5f), NULL, NULL);
    return node2(g, "Mul", h, s, out, NULL);
}

static const char *activation(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    Onnx__NodeProto *n;
    const char *y;
    switch (layer->kind->activation) {
    case ARS_ACT_SIGMOID: return node1(g, "Sigmoid", x, out, NULL);
    case ARS_ACT_TANH: return node1(g, "Tanh", x, out, NULL);
    case ARS_ACT_RELU: return node1(g, "Relu", x, out, NULL);
    case ARS_ACT_LEAKY_RELU:
        y = node1(g, "LeakyRelu", x, out, &n);
        attr_float(g, n, "alpha", layer->spec.alpha);
        return y;
    case ARS_ACT_ELU:
        y = node1(g, "Elu", x, out, &n);
        attr_float(g, n, "alpha", layer->spec.alpha);
        return y;
    case ARS_ACT_SELU:   /* arsenal's constants, which are also ONNX's defaults */
        y = node1(g, "Selu", x, out, &n);
        attr_float(g, n, "alpha", 1.6732632423543772f);
        attr_float(g, n, "gamma", 1.0507009873554805f);
        return y;
    case ARS_ACT_GELU: return gelu(g, x, out);
    case ARS_ACT_NONE: break;
    }
    return node1(g, "Identity", x, out, NULL);
}

/* BatchNorm1d normalizes each of the in_dim values (of any input shape):
 * BatchNormalization on [N, in_dim], reshaped back. */
static const char *batchnorm(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const char *stats[4] = {param(g, layer, "gamma"), param(g, layer, "beta"), buffer(g, layer, "running_mean"),
                            buffer(g, layer, "running_var")};
    if (strcmp(layer->spec.kind, "batchnorm2d") == 0) return batch_norm(g, x, stats, layer->spec.eps, out);
    const int vector = layer->in_shape.rank == 1;
    const char *y = batch_norm(g, flat(g, x, layer), stats, layer->spec.eps, vector ? out : NULL);
    if (vector) return y;
    ars_shape v = ars_shape_vector(layer->in_dim);
    return reshape(g, y, &v, &layer->in_shape, out);
}

/* (x - mean) / sqrt(var + eps) * gamma + beta over one axis (biased
 * variance): opset 13 has no LayerNormalization (opset 17 does), so its
 * decomposition. */
static const char *normalize(graph *g, const ars_layer *layer, const char *x, int64_t axis, const char *out)
{
    const int64_t axes[1] = {axis};
    Onnx__NodeProto *n;
    const char *mean = node1(g, "ReduceMean", x, NULL, &n);
    attr_ints(g, n, "axes", axes, 1);
    attr_int(g, n, "keepdims", 1);
    const char *d = node2(g, "Sub", x, mean, NULL, NULL);
    const char *var = node1(g, "ReduceMean", node2(g, "Mul", d, d, NULL, NULL), NULL, &n);
    attr_ints(g, n, "axes", axes, 1);
    attr_int(g, n, "keepdims", 1);
    const char *std = node1(g, "Sqrt", node2(g, "Add", var, scalar(g, "eps", layer->spec.eps), NULL, NULL), NULL, NULL);
    const char *scaled = node2(g, "Mul", node2(g, "Div", d, std, NULL, NULL), param(g, layer, "gamma"), NULL, NULL);
    return node2(g, "Add", scaled, param(g, layer, "beta"), out, NULL);
}

/* LayerNorm over the in_dim values of a sample, flattened and reshaped back. */
static const char *layernorm(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const int vector = layer->in_shape.rank == 1;
    const char *y = normalize(g, layer, flat(g, x, layer), 1, vector ? out : NULL);
    if (vector) return y;
    ars_shape v = ars_shape_vector(layer->in_dim);
    return reshape(g, y, &v, &layer->in_shape, out);
}

/* The 1x1 stride of an image shortcut from skip [C, H, W] to out [C', H',
 * W'], as residual.c finds it. */
static int shortcut_stride(const ars_shape *skip, const ars_shape *out)
{
    for (int s = 1; s <= skip->dims[1]; s++)
        if ((skip->dims[1] - 1) / s + 1 == out->dims[1] && (skip->dims[2] - 1) / s + 1 == out->dims[2]) return s;
    return 0;
}

/* y = x + skip, through the block's projection when it has one: a matrix
 * on the flat skip (Gemm), or for images BatchNorm2d(conv1x1(skip,
 * stride)) (Conv + BatchNormalization). */
static const char *residual_add(graph *g, const ars_layer *layer, const char *x, const char *skip, const char *out)
{
    const ars_shape *skip_shape = &layer->partner->in_shape, *shape = &layer->in_shape;
    const ars_tensor_view *projection = find_view(layer->params, layer->param_count, "projection");
    const char *s;
    if (!projection) {
        s = reshape(g, skip, skip_shape, shape, NULL);
    } else if (projection->shape.rank == 2) {
        ars_shape flat_skip = ars_shape_vector(layer->partner->in_dim), flat_out = ars_shape_vector(layer->in_dim);
        s = gemm(g, reshape(g, skip, skip_shape, &flat_skip, NULL), param(g, layer, "projection"), NULL, NULL);
        s = reshape(g, s, &flat_out, shape, NULL);
    } else {
        const int stride = shortcut_stride(skip_shape, shape);
        if (!stride) {
            g->failed = 1;
            return "";
        }
        const int64_t ones[2] = {1, 1}, strides[2] = {stride, stride};
        Onnx__NodeProto *n;
        const char *conv = node2(g, "Conv", skip, param(g, layer, "projection"), NULL, &n);
        attr_ints(g, n, "kernel_shape", ones, 2);
        attr_ints(g, n, "strides", strides, 2);
        const char *stats[4] = {param(g, layer, "proj_gamma"), param(g, layer, "proj_beta"),
                                buffer(g, layer, "proj_mean"), buffer(g, layer, "proj_var")};
        s = batch_norm(g, conv, stats, layer->spec.eps, NULL);
    }
    return node2(g, "Add", x, s, out, NULL);
}

static const char *conv2d(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const ars_layer_spec *spec = &layer->spec;
    const int has_bias = find_view(layer->params, layer->param_count, "bias") != NULL;
    const char *inputs[3] = {x, param(g, layer, "weight"), has_bias ? param(g, layer, "bias") : NULL};
    const int64_t kernel[2] = {spec->kernel[0], spec->kernel[1]}, strides[2] = {spec->stride[0], spec->stride[1]};
    const int64_t pads[4] = {spec->padding[0], spec->padding[1], spec->padding[0], spec->padding[1]};
    const int64_t dilations[2] = {spec->dilation[0], spec->dilation[1]};
    Onnx__NodeProto *n;
    const char *y = node(g, "Conv", inputs, has_bias ? 3 : 2, out, &n);
    attr_ints(g, n, "kernel_shape", kernel, 2);
    attr_ints(g, n, "strides", strides, 2);
    attr_ints(g, n, "pads", pads, 4);
    attr_ints(g, n, "dilations", dilations, 2);
    attr_int(g, n, "group", spec->groups);
    return y;
}

/* MaxPool (padding is -inf) or AveragePool with count_include_pad = 1; a
 * stride of 0 is the window's size. */
static const char *pool2d(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const ars_layer_spec *spec = &layer->spec;
    const int max = strcmp(spec->kind, "maxpool2d") == 0;
    const int64_t kernel[2] = {spec->kernel[0], spec->kernel[1]};
    const int64_t strides[2] = {spec->stride[0] ? spec->stride[0] : spec->kernel[0],
                                spec->stride[1] ? spec->stride[1] : spec->kernel[1]};
    const int64_t pads[4] = {spec->padding[0], spec->padding[1], spec->padding[0], spec->padding[1]};
    Onnx__NodeProto *n;
    const char *y = node1(g, max ? "MaxPool" : "AveragePool", x, out, &n);
    attr_ints(g, n, "kernel_shape", kernel, 2);
    attr_ints(g, n, "strides", strides, 2);
    attr_ints(g, n, "pads", pads, 4);
    if (!max) attr_int(g, n, "count_include_pad", 1);
    return y;
}

/* ---- the sequence kinds: a sample [time, features] is [N, T, F] --------------- */

/* Reshape(x, [0, dims...]) for shapes past ars_shape's rank. */
static const char *reshape_dims(graph *g, const char *x, const int64_t *dims, int count, const char *output)
{
    int64_t all[8] = {0};
    for (int i = 0; i < count && i < 7; i++) all[i + 1] = dims[i];
    char name[96];
    snprintf(name, sizeof name, "%s.shape_%d", g->layer, g->serial++);
    return node2(g, "Reshape", x, int64s(g, name, all, count + 1), output, NULL);
}

static const char *transpose(graph *g, const char *x, const int64_t *perm, int rank, const char *output)
{
    Onnx__NodeProto *n;
    const char *y = node1(g, "Transpose", x, output, &n);
    attr_ints(g, n, "perm", perm, rank);
    return y;
}

/* An int64 scalar constant (rank 0) of the current layer: Gather's index. */
static const char *index_scalar(graph *g, const char *what, int64_t value)
{
    char name[96];
    snprintf(name, sizeof name, "%s.%s", g->layer, what);
    Onnx__TensorProto *t = tensor(g, name, NULL, 0, ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    int64_t *copy = galloc(g, sizeof *copy);
    if (!t || !copy) return "";
    *copy = value;
    t->n_int64_data = 1;
    t->int64_data = copy;
    return t->name;
}

/* The layer's input as [N, time, in_dim / time] (arsenal's rows are flat). */
static const char *steps(graph *g, const ars_layer *layer, const char *x)
{
    ars_shape m = ars_shape_matrix(layer->spec.time, layer->in_dim / layer->spec.time);
    return reshape(g, x, &layer->in_shape, &m, NULL);
}

/* x [N, T, in] times the stored W [out, in] transposed, plus b (optional):
 * the same linear map on every step. */
static const char *linear_steps(graph *g, const char *x, const char *weight, const char *bias, const char *output)
{
    static const int64_t swap[2] = {1, 0};
    const char *wt = transpose(g, weight, swap, 2, NULL);
    const char *y = node2(g, "MatMul", x, wt, bias ? NULL : output, NULL);
    return bias ? node2(g, "Add", y, bias, output, NULL) : y;
}

/* y_t = W x_t + b; with patch = p the image [S, S] is cut into p x p patches
 * in raster order first: [S/p, p, S/p, p] -> [S/p, S/p, p, p] -> [T, p * p]. */
static const char *seq_dense(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const ars_layer_spec *spec = &layer->spec;
    const char *xs;
    if (spec->patch > 0) {
        const int p = spec->patch, side = (int)lrint(sqrt((double)layer->in_dim)), per = side / p;
        const int64_t cut[4] = {per, p, per, p}, order[5] = {0, 1, 3, 2, 4}, tokens[2] = {spec->time, p * p};
        xs = reshape_dims(g, transpose(g, reshape_dims(g, x, cut, 4, NULL), order, 5, NULL), tokens, 2, NULL);
    } else {
        xs = steps(g, layer, x);
    }
    const char *bias = find_view(layer->params, layer->param_count, "bias") ? param(g, layer, "bias") : NULL;
    return linear_steps(g, xs, param(g, layer, "weight"), bias, out);
}

/* The positional encoding added to every sample: the learned parameter, or
 * the sinusoidal table computed as positional.c does (the same double
 * arithmetic, so the same floats). */
static const char *positional(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const int time = layer->spec.time, features = layer->in_dim / time;
    const char *table;
    if (find_view(layer->params, layer->param_count, "weight")) {
        table = param(g, layer, "weight");
    } else {
        float *p = galloc(g, sizeof *p * (size_t)layer->in_dim);
        if (!p) return "";
        for (int t = 0; t < time; t++) {
            for (int j = 0; j < features; j++) {
                double rate = pow(10000.0, -(double)(j - j % 2) / features);
                p[(size_t)t * features + j] = (float)(j % 2 ? cos(t * rate) : sin(t * rate));
            }
        }
        char name[96];
        snprintf(name, sizeof name, "%s.encoding", g->layer);
        const int64_t dims[2] = {time, features};
        table = floats(g, name, dims, 2, p);
        g->parameters -= (double)layer->in_dim;   /* a constant of the graph, not a parameter */
    }
    return node2(g, "Add", steps(g, layer, x), table, out, NULL);
}

/* Token ids (floats, rounded to the nearest id as arsenal's lrintf) ->
 * Gather(weight [vocab, units], ids) [N, T, units]. */
static const char *embedding(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    ars_shape ids_shape = ars_shape_vector(layer->in_dim);
    const char *rounded = node1(g, "Round", reshape(g, x, &layer->in_shape, &ids_shape, NULL), NULL, NULL);
    Onnx__NodeProto *n;
    const char *ids = node1(g, "Cast", rounded, NULL, &n);
    attr_int(g, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    const char *y = node2(g, "Gather", param(g, layer, "weight"), ids, out, &n);
    attr_int(g, n, "axis", 0);
    return y;
}

/* mean_pool: ReduceMean over the steps; last_step: Gather of step T - 1. */
static const char *readout(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    Onnx__NodeProto *n;
    const char *xs = steps(g, layer, x), *y;
    if (strcmp(layer->spec.kind, "mean_pool") == 0) {
        const int64_t axes[1] = {1};
        y = node1(g, "ReduceMean", xs, out, &n);
        attr_ints(g, n, "axes", axes, 1);
        attr_int(g, n, "keepdims", 0);
    } else {
        y = node2(g, "Gather", xs, index_scalar(g, "last", layer->spec.time - 1), out, &n);
        attr_int(g, n, "axis", 1);
    }
    return y;
}

/* Multi-head self-attention as attention.c computes it:
 *   qkv = x W_in^T + b_in              [N, T, 3D] -> [3, N, H, T, dh]
 *   P = Softmax(q k^T * scale (+ mask)) [N, H, T, T], the causal mask -inf above the diagonal
 *   y = ([N, T, D] of P v) W_out^T + b_out */
static const char *attention(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const int T = layer->spec.time, D = layer->in_dim / T, H = layer->spec.heads, dh = D / H;
    const char *qkv = linear_steps(g, steps(g, layer, x), param(g, layer, "in_proj_weight"),
                                   param(g, layer, "in_proj_bias"), NULL);
    const int64_t split[4] = {T, 3, H, dh}, heads_first[5] = {2, 0, 3, 1, 4};
    const char *parts = transpose(g, reshape_dims(g, qkv, split, 4, NULL), heads_first, 5, NULL);
    const char *qkv_of[3];
    static const char *const which[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        Onnx__NodeProto *n;
        qkv_of[i] = node2(g, "Gather", parts, index_scalar(g, which[i], i), NULL, &n);
        attr_int(g, n, "axis", 0);
    }
    static const int64_t last_two[4] = {0, 1, 3, 2};
    const char *kt = transpose(g, qkv_of[1], last_two, 4, NULL);
    const float scale = (float)(1.0 / sqrt((double)dh));   /* as attention.c */
    const char *scores = node2(g, "Mul", node2(g, "MatMul", qkv_of[0], kt, NULL, NULL), scalar(g, "scale", scale),
                               NULL, NULL);
    if (layer->spec.causal) {
        float *mask = galloc(g, sizeof *mask * (size_t)T * (size_t)T);
        if (!mask) return "";
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) mask[(size_t)i * T + j] = j > i ? -INFINITY : 0.0f;
        char name[96];
        snprintf(name, sizeof name, "%s.causal_mask", g->layer);
        const int64_t dims[2] = {T, T};
        scores = node2(g, "Add", scores, floats(g, name, dims, 2, mask), NULL, NULL);
        g->parameters -= (double)T * T;   /* a constant of the graph */
    }
    Onnx__NodeProto *n;
    const char *probabilities = node1(g, "Softmax", scores, NULL, &n);
    attr_int(g, n, "axis", -1);
    static const int64_t steps_first[4] = {0, 2, 1, 3};
    const int64_t joined[2] = {T, D};
    const char *ctx = reshape_dims(g, transpose(g, node2(g, "MatMul", probabilities, qkv_of[2], NULL, NULL),
                                                steps_first, 4, NULL), joined, 2, NULL);
    return linear_steps(g, ctx, param(g, layer, "out_proj_weight"), param(g, layer, "out_proj_bias"), out);
}

/* ONNX's RNN (tanh, h_0 = 0, forward: arsenal's Elman layer) on [T, N, F]:
 * W = weight_ih [1, H, F], R = weight_hh [1, H, H], B = [bias_ih | bias_hh];
 * its Y [T, 1, N, H] back to [N, T, H]. */
static const char *rnn(graph *g, const ars_layer *layer, const char *x, const char *out)
{
    const int T = layer->spec.time, F = layer->in_dim / T, H = layer->spec.units;
    const ars_tensor_view *views[4] = {find_view(layer->params, layer->param_count, "weight_ih"),
                                       find_view(layer->params, layer->param_count, "weight_hh"),
                                       find_view(layer->params, layer->param_count, "bias_ih"),
                                       find_view(layer->params, layer->param_count, "bias_hh")};
    float *bias = galloc(g, sizeof *bias * 2 * (size_t)H);
    if (!views[0] || !views[1] || !views[2] || !views[3] || !bias) {
        g->failed = 1;
        return "";
    }
    memcpy(bias, layer->param + views[2]->offset, sizeof *bias * (size_t)H);
    memcpy(bias + H, layer->param + views[3]->offset, sizeof *bias * (size_t)H);
    char name[96];
    const int64_t w_dims[3] = {1, H, F}, r_dims[3] = {1, H, H}, b_dims[2] = {1, 2 * H};
    snprintf(name, sizeof name, "%s.weight_ih", g->layer);
    const char *w = floats(g, name, w_dims, 3, layer->param + views[0]->offset);
    snprintf(name, sizeof name, "%s.weight_hh", g->layer);
    const char *r = floats(g, name, r_dims, 3, layer->param + views[1]->offset);
    snprintf(name, sizeof name, "%s.bias", g->layer);
    const char *b = floats(g, name, b_dims, 2, bias);
    static const int64_t time_first[3] = {1, 0, 2}, batch_first[4] = {2, 0, 1, 3};
    const char *inputs[4] = {transpose(g, steps(g, layer, x), time_first, 3, NULL), w, r, b};
    Onnx__NodeProto *n;
    const char *y = node(g, "RNN", inputs, 4, NULL, &n);
    attr_int(g, n, "hidden_size", H);
    const int64_t joined[2] = {T, H};
    return reshape_dims(g, transpose(g, y, batch_first, 4, NULL), joined, 2, out);
}

/* The kinds of docs/onnx.md's table; any other is refused by the caller. */
static int translate(graph *g, const ars_layer *layer, const char *x, const char *skip, const char *out,
                     const char **y)
{
    const char *kind = layer->spec.kind;
    Onnx__NodeProto *n;
    if (strcmp(kind, "dense") == 0) *y = dense(g, layer, x, out);
    else if (layer->kind && layer->kind->activation != ARS_ACT_NONE) *y = activation(g, layer, x, out);
    else if (strcmp(kind, "batchnorm") == 0 || strcmp(kind, "batchnorm2d") == 0) *y = batchnorm(g, layer, x, out);
    else if (strcmp(kind, "layernorm") == 0) *y = layernorm(g, layer, x, out);
    else if (strcmp(kind, "dropout") == 0 || strcmp(kind, "residual") == 0) *y = node1(g, "Identity", x, out, NULL);
    else if (strcmp(kind, "residual_add") == 0) *y = residual_add(g, layer, x, skip, out);
    else if (strcmp(kind, "conv2d") == 0) *y = conv2d(g, layer, x, out);
    else if (strcmp(kind, "maxpool2d") == 0 || strcmp(kind, "avgpool2d") == 0) *y = pool2d(g, layer, x, out);
    else if (strcmp(kind, "global_avgpool") == 0) {
        *y = node1(g, "Flatten", node1(g, "GlobalAveragePool", x, NULL, NULL), out, &n);
        attr_int(g, n, "axis", 1);
    } else if (strcmp(kind, "seq_dense") == 0) *y = seq_dense(g, layer, x, out);
    else if (strcmp(kind, "seq_layernorm") == 0) *y = normalize(g, layer, steps(g, layer, x), 2, out);
    else if (strcmp(kind, "mean_pool") == 0 || strcmp(kind, "last_step") == 0) *y = readout(g, layer, x, out);
    else if (strcmp(kind, "positional") == 0) *y = positional(g, layer, x, out);
    else if (strcmp(kind, "embedding") == 0) *y = embedding(g, layer, x, out);
    else if (strcmp(kind, "attention") == 0) *y = attention(g, layer, x, out);
    else if (strcmp(kind, "rnn") == 0) *y = rnn(g, layer, x, out);
    else if (strcmp(kind, "flatten") == 0) {
        *y = node1(g, "Flatten", x, out, &n);
        attr_int(g, n, "axis", 1);
    } else {
        return ars_error(ARS_EINVAL, "layer %s: no ONNX export for kind %s (docs/onnx.md lists the kinds that "
                         "export)", layer->name, kind);
    }
    return 0;
}

/* ---- the model ------------------------------------------------------------ */

/* A float tensor's ValueInfo: [N, dims...] with N symbolic. */
static Onnx__ValueInfoProto *value_info(graph *g, const char *name, const ars_shape *shape)
{
    Onnx__ValueInfoProto *v = galloc(g, sizeof *v);
    Onnx__TypeProto *type = galloc(g, sizeof *type);
    Onnx__TypeProto__Tensor *t = galloc(g, sizeof *t);
    Onnx__TensorShapeProto *s = galloc(g, sizeof *s);
    Onnx__TensorShapeProto__Dimension **dims = galloc(g, sizeof *dims * (size_t)(shape->rank + 1));
    char *copy = gstrdup(g, name), *batch = gstrdup(g, "N");
    for (int i = 0; i <= shape->rank && !g->failed; i++) dims[i] = galloc(g, sizeof **dims);
    if (g->failed) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(type);
    onnx__type_proto__tensor__init(t);
    onnx__tensor_shape_proto__init(s);
    for (int i = 0; i <= shape->rank; i++) {
        onnx__tensor_shape_proto__dimension__init(dims[i]);
        if (i == 0) {
            dims[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dims[i]->dim_param = batch;
        } else {
            dims[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dims[i]->dim_value = shape->dims[i - 1];
        }
    }
    s->n_dim = (size_t)shape->rank + 1;
    s->dim = dims;
    t->has_elem_type = 1;
    t->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->shape = s;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = t;
    v->name = copy;
    v->type = type;
    return v;
}

static void metadata(graph *g, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *e = galloc(g, sizeof *e);
    char *k = gstrdup(g, key), *v = gstrdup(g, value);
    if (g->failed) return;
    onnx__string_string_entry_proto__init(e);
    e->key = k;
    e->value = v;
    if (list_push(&g->metadata, e)) g->failed = 1;
}

/* Writes bytes to path through path.tmp-<pid>, renamed when complete. */
static int write_file(const char *path, const uint8_t *bytes, size_t size)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return ars_error(ARS_EIO, "cannot write %s: %s", tmp, strerror(errno));
    int ok = fwrite(bytes, 1, size, f) == size;
    int saved = errno;
    ok = fflush(f) == 0 && ok;
    if (!ok) saved = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return 0;
    if (ok) saved = errno;
    unlink(tmp);
    return ars_error(ARS_EIO, "cannot write %s: %s", path, strerror(saved ? saved : EIO));
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The graph of the model into *model (its parts in g). */
static int build(graph *g, const ars_trained *m, const ars_onnx_options *options, Onnx__ModelProto *model,
                 ars_onnx_summary *summary)
{
    const ars_model *net = &m->model;
    const int L = net->layer_count;
    const char **names = galloc(g, sizeof *names * (size_t)(L > 0 ? L : 1));
    if (!names) return ars_error(ARS_ENOMEM, "ONNX export: out of memory");

    /* input, standardized as arsenal does before the first layer */
    const char *x = "input";
    /* as ars_trained_standardize: a mean of 0 and std of 1 is no step */
    const int standardizes = !(m->data_mean == 0 && m->data_std == 1);
    summary->standardized = standardizes && options->standardize;
    if (summary->standardized) {
        g->layer = "input";
        const double scale = m->data_std > 0 ? 1.0 / m->data_std : 1.0;
        const char *centered = node2(g, "Sub", x, scalar(g, "data_mean", (float)m->data_mean), NULL, NULL);
        x = node2(g, "Mul", centered, scalar(g, "inv_data_std", (float)scale), "input/standardized", NULL);
    }
    for (int i = 0; i < L; i++) {
        const ars_layer *layer = &net->layers[i];
        g->layer = layer->name;
        g->serial = 0;
        const char *skip = NULL;
        if (strcmp(layer->spec.kind, "residual_add") == 0) {
            if (!layer->partner || layer->partner->index < 0 || layer->partner->index >= i)
                return ars_error(ARS_EINVAL, "layer %s: a residual end without its start", layer->name);
            skip = names[layer->partner->index];
        }
        TRY(translate(g, layer, x, skip, i == L - 1 ? "logits" : layer->name, &names[i]));
        x = names[i];
    }
    if (L == 0) return ars_error(ARS_EINVAL, "%s: the model has no layers", m->path);

    /* outputs */
    const int classifier = m->run.loss == ARS_LOSS_CROSS_ENTROPY && net->out_shape.rank == 1;
    summary->probabilities = options->probabilities < 0 ? classifier : options->probabilities != 0;
    if (summary->probabilities) {
        if (net->out_shape.rank != 1)
            return ars_error(ARS_EINVAL, "--probabilities: the model's outputs are %d-D per sample, not a vector of "
                             "class scores", net->out_shape.rank);
        g->layer = "probabilities";
        Onnx__NodeProto *n;
        node1(g, "Softmax", "logits", "probabilities", &n);
        attr_int(g, n, "axis", 1);
    }

    Onnx__GraphProto *graph_proto = galloc(g, sizeof *graph_proto);
    Onnx__ValueInfoProto **inputs = galloc(g, sizeof *inputs);
    Onnx__ValueInfoProto **outputs = galloc(g, sizeof *outputs * 2);
    Onnx__OperatorSetIdProto *opset = galloc(g, sizeof *opset);
    Onnx__OperatorSetIdProto **opsets = galloc(g, sizeof *opsets);
    if (g->failed) return ars_error(ARS_ENOMEM, "ONNX export: out of memory");
    onnx__graph_proto__init(graph_proto);
    onnx__operator_set_id_proto__init(opset);
    inputs[0] = value_info(g, "input", &m->input_shape);
    outputs[0] = value_info(g, "logits", &net->out_shape);
    if (summary->probabilities) outputs[1] = value_info(g, "probabilities", &net->out_shape);

    char text[256];
    snprintf(text, sizeof text, "%lld", (long long)m->step);
    metadata(g, "arsenal.step", text);
    metadata(g, "arsenal.checkpoint", base_name(m->path));
    metadata(g, "arsenal.data", m->run.data);
    metadata(g, "arsenal.input_standardized", summary->standardized ? "true" : "false");
    if (standardizes) {
        snprintf(text, sizeof text, "%.17g", m->data_mean);
        metadata(g, "arsenal.data_mean", text);
        snprintf(text, sizeof text, "%.17g", m->data_std);
        metadata(g, "arsenal.data_std", text);
    }
    snprintf(text, sizeof text, "arsenal model of %.200s (step %lld, %d layers)", base_name(m->path),
             (long long)m->step, L);
    char *doc = gstrdup(g, text), *graph_name = gstrdup(g, "arsenal");
    char *producer = gstrdup(g, "arsenal"), *version = gstrdup(g, ARSENAL_VERSION), *domain = gstrdup(g, "");
    if (g->failed) return ars_error(ARS_ENOMEM, "ONNX export: out of memory");

    graph_proto->name = graph_name;
    graph_proto->doc_string = doc;
    graph_proto->n_node = g->nodes.count;
    graph_proto->node = (Onnx__NodeProto **)g->nodes.items;
    graph_proto->n_initializer = g->initializers.count;
    graph_proto->initializer = (Onnx__TensorProto **)g->initializers.items;
    graph_proto->n_input = 1;
    graph_proto->input = inputs;
    graph_proto->n_output = summary->probabilities ? 2 : 1;
    graph_proto->output = outputs;
    opset->domain = domain;
    opset->has_version = 1;
    opset->version = ARS_ONNX_OPSET;
    opsets[0] = opset;
    model->has_ir_version = 1;
    model->ir_version = ARS_ONNX_IR_VERSION;
    model->n_opset_import = 1;
    model->opset_import = opsets;
    model->producer_name = producer;
    model->producer_version = version;
    model->doc_string = doc;
    model->graph = graph_proto;
    model->n_metadata_props = g->metadata.count;
    model->metadata_props = (Onnx__StringStringEntryProto **)g->metadata.items;
    summary->nodes = (int)g->nodes.count;
    summary->initializers = (int)g->initializers.count;
    summary->parameters = g->parameters;
    return 0;
}

int ars_onnx_export(const ars_trained *m, const ars_onnx_options *options, const char *path,
                    ars_onnx_summary *summary)
{
    static const ars_onnx_options defaults = {.probabilities = -1, .standardize = 1};
    ars_onnx_summary local;
    if (!summary) summary = &local;
    memset(summary, 0, sizeof *summary);
    if (!options) options = &defaults;
    graph g;
    memset(&g, 0, sizeof g);
    Onnx__ModelProto model;
    onnx__model_proto__init(&model);
    int rc = build(&g, m, options, &model, summary);
    if (!rc && g.failed) rc = ars_error(ARS_ENOMEM, "ONNX export: out of memory (or an internal inconsistency)");
    uint8_t *bytes = NULL;
    size_t size = 0;
    if (!rc) {
        size = onnx__model_proto__get_packed_size(&model);
        /* protobuf's own limit: larger models need ONNX's external data */
        if (size > (size_t)INT32_MAX)
            rc = ars_error(ARS_EINVAL, "the ONNX file of %.0f parameters would take %zu bytes, more than protobuf's "
                           "2 GiB limit (external data files are not supported)", summary->parameters, size);
    }
    if (!rc && !(bytes = malloc(size ? size : 1))) rc = ars_error(ARS_ENOMEM, "ONNX export: out of memory for %zu bytes", size);
    if (!rc && onnx__model_proto__pack(&model, bytes) != size)
        rc = ars_error(ARS_EINVAL, "internal: protobuf-c packed a different size than it announced");
    if (!rc) rc = write_file(path, bytes, size);
    if (!rc) summary->bytes = size;
    free(bytes);
    graph_free(&g);
    return rc;
}
