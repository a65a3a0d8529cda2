/* model: builds the layer list, lays out the flat parameter / gradient /
 * state buffers and the activation arena, and runs forward and backward. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/model.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/clip.h"
#include "arsenal/error.h"
#include "dist_ranks.h"
#include "gemm.h"
#include "gemm_bf16.h"

/* 64-byte aligned, zeroed; count may be 0. */
static float *alloc_floats(size_t count)
{
    void *p = NULL;
    size_t bytes = (count ? count : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* Matches "residual" with "residual_add" (nested blocks allowed):
 * partner[i] = the index of the other end, -1 for other layers. */
static int match_residuals(const ars_layer_spec *specs, int count, int *partner)
{
    int *stack = malloc(sizeof(int) * (size_t)(count ? count : 1));
    int depth = 0;
    if (!stack) return ars_error(ARS_ENOMEM, "model: out of memory");
    for (int i = 0; i < count; i++) {
        partner[i] = -1;
        if (strcmp(specs[i].kind, "residual") == 0) {
            stack[depth++] = i;
        } else if (strcmp(specs[i].kind, "residual_add") == 0) {
            if (depth == 0) {
                free(stack);
                return ars_error(ARS_EINVAL, ARS_SPEC_AT ": end of a residual block that was never opened",
                                 ARS_SPEC_AT_ARGS(&specs[i]));
            }
            int begin = stack[--depth];
            if (begin == i - 1) {
                free(stack);
                return ars_error(ARS_EINVAL, ARS_SPEC_AT ": empty residual block (F(x) needs at least one layer)",
                                 ARS_SPEC_AT_ARGS(&specs[i]));
            }
            partner[begin] = i;
            partner[i] = begin;
        }
    }
    int open = depth ? stack[depth - 1] : -1;
    free(stack);
    if (open >= 0)
        return ars_error(ARS_EINVAL, ARS_SPEC_AT ": residual block is never closed", ARS_SPEC_AT_ARGS(&specs[open]));
    return 0;
}

/* A layer's name: its index and kind, unique in a model. */
static void layer_name(char *name, size_t size, int index, const char *kind)
{
    snprintf(name, size, "%03d_%s", index, kind);
}

static int checked_add(size_t *total, size_t a, size_t b)
{
    if (b && a > SIZE_MAX / b) return -1;
    if (*total > SIZE_MAX - a * b) return -1;
    *total += a * b;
    return 0;
}

/* The input shape and batch a model can be built for. */
static int check_input(ars_shape input, int max_rows)
{
    char text[48];
    if (input.rank < 1 || input.rank > ARS_SHAPE_MAX_RANK || !(ars_shape_count(&input) >= 1) ||
        ars_shape_count(&input) > INT_MAX || max_rows <= 0)
        return ars_error(ARS_EINVAL, "model: input shape %s and batch %d must be positive",
                         ars_shape_text(&input, text, sizeof text), max_rows);
    for (int i = 0; i < input.rank; i++)
        if (input.dims[i] <= 0)
            return ars_error(ARS_EINVAL, "model: input shape %s must be positive",
                             ars_shape_text(&input, text, sizeof text));
    return 0;
}

int ars_model_create(ars_model *model, const ars_layer_spec *specs, int count, ars_shape input, int max_rows)
{
    memset(model, 0, sizeof *model);
    if (count <= 0) return ars_error(ARS_EINVAL, "model: no layers");
    int rc = check_input(input, max_rows);
    if (rc) return rc;
    const int in_dim = (int)ars_shape_count(&input);
    model->layers = calloc((size_t)count, sizeof *model->layers);
    if (!model->layers) return ars_error(ARS_ENOMEM, "model: out of memory for %d layers", count);
    model->layer_count = count;
    model->in_shape = input;
    model->in_dim = in_dim;
    model->max_rows = max_rows;
    int *partner = malloc(sizeof(int) * (size_t)count);
    if (!partner) {
        free(model->layers);
        model->layers = NULL;
        return ars_error(ARS_ENOMEM, "model: out of memory for %d layers", count);
    }
    rc = match_residuals(specs, count, partner);
    for (int i = 0; !rc && i < count; i++)
        if (partner[i] >= 0) model->layers[i].partner = &model->layers[partner[i]];
    free(partner);
    if (rc) goto fail;

    size_t act_total = 0, max_width = (size_t)in_dim;
    ars_shape shape = input;
    for (int i = 0; i < count; i++) {
        ars_layer *layer = &model->layers[i];
        layer->index = i;
        layer_name(layer->name, sizeof layer->name, i, specs[i].kind);
        rc = ars_layer_setup(layer, &specs[i], &shape, max_rows);
        if (rc) {
            ars_error_context(rc, ARS_SPEC_AT ": layer %s", ARS_SPEC_AT_ARGS(&specs[i]), layer->name);
            goto fail;
        }
        layer->param_offset = model->param_count;
        layer->state_offset = model->state_count;
        model->param_count += layer->param_size;
        model->state_count += layer->state_size;
        if (checked_add(&act_total, (size_t)max_rows, (size_t)layer->out_dim)) {
            rc = ars_error(ARS_ENOMEM, "model: activation size overflows");
            goto fail;
        }
        if ((size_t)layer->out_dim > max_width) max_width = (size_t)layer->out_dim;
        shape = layer->out_shape;
    }
    model->out_shape = shape;
    model->out_dim = model->layers[count - 1].out_dim;
    model->max_width = max_width;

    model->params = alloc_floats(model->param_count);
    model->grads = alloc_floats(model->param_count);
    model->state = alloc_floats(model->state_count);
    model->grad_a = alloc_floats((size_t)max_rows * max_width);
    model->grad_b = alloc_floats((size_t)max_rows * max_width);
    float *arena = alloc_floats(act_total);
    if (!model->params || !model->grads || !model->state || !model->grad_a || !model->grad_b || !arena) {
        free(arena);
        rc = ars_error(ARS_ENOMEM, "model: cannot allocate %zu parameters and %zu activations",
                       model->param_count, act_total);
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        ars_layer *layer = &model->layers[i];
        layer->param = model->params + layer->param_offset;
        layer->grad = model->grads + layer->param_offset;
        layer->state = model->state + layer->state_offset;
        layer->output = arena;
        arena += (size_t)max_rows * (size_t)layer->out_dim;
    }
    return 0;
fail:
    ars_model_destroy(model);
    return rc;
}

void ars_model_destroy(ars_model *model)
{
    if (model->layers) {
        for (int i = 0; i < model->layer_count; i++) {
            ars_layer *layer = &model->layers[i];
            if (layer->ops && layer->ops->destroy) layer->ops->destroy(layer);
            free(layer->impl);
        }
        /* the activation arena starts at the first layer's output */
        if (model->layer_count > 0) free(model->layers[0].output);
    }
    free(model->layers);
    ars_gemm_forget_weights(model->params);
    free(model->params);
    if (!model->grads_borrowed) free(model->grads);
    free(model->state);
    free(model->grad_a);
    free(model->grad_b);
    free(model->gemm_plan);
    memset(model, 0, sizeof *model);
}

int ars_model_move_grads(ars_model *model, float *buffer)
{
    int owned = buffer == NULL;
    if (owned && !(buffer = alloc_floats(model->param_count)))
        return ars_error(ARS_ENOMEM, "model: cannot allocate %zu gradients", model->param_count);
    if (buffer == model->grads) return 0;
    if (model->grads) memcpy(buffer, model->grads, sizeof(float) * model->param_count);
    if (!model->grads_borrowed) free(model->grads);
    model->grads = buffer;
    model->grads_borrowed = !owned;
    for (int i = 0; i < model->layer_count; i++)
        model->layers[i].grad = buffer + model->layers[i].param_offset;
    return 0;
}

/* A float array as alloc_floats allocates it. */
static double float_bytes(double count)
{
    return 64.0 * ceil(4.0 * (count > 0 ? count : 1) / 64.0);
}

int ars_model_estimate(const ars_layer_spec *specs, int count, ars_shape input, int max_rows, ars_model_size *size)
{
    memset(size, 0, sizeof *size);
    size->largest_layer = -1;
    if (count <= 0) return ars_error(ARS_EINVAL, "model: no layers");
    int rc = check_input(input, max_rows);
    if (rc) return rc;
    /* per layer: the matching and the input shape along the way */
    int *partner = malloc(sizeof(int) * (size_t)count);
    ars_shape *in_shape = malloc(sizeof *in_shape * (size_t)count);
    if (!partner || !in_shape) {
        free(partner);
        free(in_shape);
        return ars_error(ARS_ENOMEM, "model: out of memory for %d layers", count);
    }
    rc = match_residuals(specs, count, partner);
    double outputs = 0, max_width = ars_shape_count(&input);
    ars_shape shape = input;
    for (int i = 0; !rc && i < count; i++) {
        ars_layer_size layer;
        in_shape[i] = shape;
        /* the end of a block opened before it: the shape at its start is known */
        const ars_shape *skip = partner[i] >= 0 && partner[i] < i ? &in_shape[partner[i]] : NULL;
        rc = ars_layer_size_of(&specs[i], &shape, skip, max_rows, &layer);
        if (rc) {
            char name[40];
            layer_name(name, sizeof name, i, specs[i].kind);
            ars_error_context(rc, ARS_SPEC_AT ": layer %s", ARS_SPEC_AT_ARGS(&specs[i]), name);
            break;
        }
        size->params += layer.params;
        size->state += layer.state;
        size->workspace += layer.workspace;
        if (layer.workspace > size->largest_workspace) {
            size->largest_workspace = layer.workspace;
            size->largest_layer = i;
        }
        outputs += layer.out_dim;
        if (layer.out_dim > max_width) max_width = layer.out_dim;
        shape = layer.out;
    }
    free(partner);
    free(in_shape);
    if (rc) return rc;
    size->out_shape = shape;
    size->out_dim = (int)ars_shape_count(&shape);
    /* every layer's output is kept for backward; dL/d(activation) ping-pongs */
    size->activations = float_bytes((double)max_rows * outputs) + 2 * float_bytes((double)max_rows * max_width);
    size->bytes = (double)count * sizeof(ars_layer) + 2 * float_bytes(size->params) + float_bytes(size->state) +
                  size->activations + size->workspace;
    return 0;
}

/* Weights are read from memory by each product: the parameters, gradients
 * and optimizer state of a deep model do not stay in cache from one step to
 * the next. So while the cheap parameter-free layers of a block run
 * (activations, residual copies, small BatchNorms), arsenal asks for the
 * next product's weights (in backward also its gradient slice, which the
 * product writes) to arrive in L2 meanwhile. Only for layers of 16 KB to
 * 512 KB of parameters: smaller ones are no wait, larger ones would not
 * fit beside the product's working set. Measured: W2 and W3 steps 3-4%
 * faster, W1 and W4 unchanged (bench/limits.md). */
enum { PREFETCH_MIN_BYTES = 16 << 10, PREFETCH_MAX_BYTES = 512 << 10, PREFETCH_LOOKAHEAD = 6 };

static void prefetch_lines(const void *start, size_t bytes, int for_write)
{
    const char *p = start, *end = p + bytes;
    if (for_write)
        for (; p < end; p += 64) __builtin_prefetch(p, 1, 2);
    else
        for (; p < end; p += 64) __builtin_prefetch(p, 0, 2);
}

/* Before layer i runs in direction (+1 forward, -1 backward): prefetch the
 * next layer worth it, unless layer i's own product comes first (it would
 * evict them) or it was asked for already in this pass (*asked: the index
 * of the last layer prefetched, or past). */
static void prefetch_next_weights(const ars_model *model, int i, int direction, int *asked)
{
    if (sizeof(float) * model->layers[i].param_size >= PREFETCH_MIN_BYTES) return;
    for (int j = i + direction, hops = 0; j >= 0 && j < model->layer_count && hops < PREFETCH_LOOKAHEAD;
         j += direction, hops++) {
        if ((j - *asked) * direction <= 0) return;
        const ars_layer *next = &model->layers[j];
        const size_t bytes = sizeof(float) * next->param_size;
        if (bytes < PREFETCH_MIN_BYTES) continue;
        *asked = j;
        if (bytes > PREFETCH_MAX_BYTES) return;
        prefetch_lines(next->param, bytes, 0);
        if (direction < 0) prefetch_lines(next->grad, bytes, 1);
        return;
    }
}

int ars_model_forward(ars_model *model, const ars_pass *pass, const float *x)
{
    model->input = x;
    ars_gemm_weights(model->params, model->param_count);   /* reduced precision: rounded once per pass */
    if (pass->rows > model->max_rows)
        return ars_error(ARS_EINVAL, "model: batch of %d rows exceeds capacity %d", pass->rows, model->max_rows);
    const float *in = x;
    int prefetched = -1;
    for (int i = 0; i < model->layer_count; i++) {
        ars_layer *layer = &model->layers[i];
        prefetch_next_weights(model, i, +1, &prefetched);
        int rc = layer->ops->forward(layer, pass, in, layer->output);
        if (rc) return ars_error_context(rc, "forward of %s", layer->name);
        in = layer->output;
    }
    return 0;
}

const float *ars_model_output(const ars_model *model)
{
    return model->layers[model->layer_count - 1].output;
}

int ars_model_backward(ars_model *model, const ars_pass *pass, const float *dout,
                       ars_backward_hook hook, void *context)
{
    const float *dy = dout;
    /* On one rank this backward's gradients are the step's: sum their
     * squares (the clip norm, the non-finite check) right after each layer
     * writes them, from cache, rather than in a pass over the whole buffer
     * from memory afterwards. Across ranks the sum comes after the sync. */
    const int final_grads = !ars_dist_spans_ranks(pass->dist);
    double sum_squares = 0;
    model->grad_sum_squares_ready = 0;
    int prefetched = model->layer_count;
    for (int i = model->layer_count - 1; i >= 0; i--) {
        ars_layer *layer = &model->layers[i];
        const float *x = i > 0 ? model->layers[i - 1].output : model->input;
        float *dx = i > 0 ? (dy == model->grad_a ? model->grad_b : model->grad_a) : NULL;
        if (pass->probe)
            layer->output_grad_norm = ars_l2_norm(dy, (size_t)pass->rows * (size_t)layer->out_dim);
        prefetch_next_weights(model, i, -1, &prefetched);
        int rc = layer->ops->backward(layer, pass, x, layer->output, dy, dx);
        if (rc) return ars_error_context(rc, "backward of %s", layer->name);
        if (final_grads && layer->param_size) sum_squares += ars_sum_squares(layer->grad, layer->param_size);
        if (hook && (rc = hook(context, layer)) != 0) return rc;
        dy = dx;
    }
    model->grad_sum_squares = sum_squares;
    model->grad_sum_squares_ready = final_grads;
    return 0;
}

int ars_model_tune_gemm(ars_model *model, int measure)
{
    const size_t rows = (size_t)model->max_rows;
    float *x = alloc_floats(rows * (size_t)model->in_dim), *dy = alloc_floats(rows * (size_t)model->out_dim);
    float *state = alloc_floats(model->state_count);
    if (!x || !dy || !state) {
        free(x);
        free(dy);
        free(state);
        return ars_error(ARS_ENOMEM, "model: out of memory for the matrix-product measurement");
    }
    memcpy(state, model->state, sizeof(float) * model->state_count);
    /* the values do not matter to a product's speed (zeros: no subnormals) */
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = model->max_rows, .global_rows = model->max_rows};
    int rc = ars_gemm_record_start(measure != 0);
    if (!rc) {
        rc = ars_model_forward(model, &pass, x);
        if (!rc) rc = ars_model_backward(model, &pass, dy, NULL, NULL);
        free(model->gemm_plan);
        model->gemm_plan = NULL;
        int stop = ars_gemm_record_stop(&model->gemm_plan, NULL, &model->gemm_plan_count, &model->gemm_tune_seconds,
                                        &model->gemm_tune_cpu_seconds);
        if (!rc) rc = stop;
    }
    memcpy(model->state, state, sizeof(float) * model->state_count);
    memset(model->grads, 0, sizeof(float) * model->param_count);
    model->input = NULL;
    model->grad_sum_squares_ready = 0;
    free(x);
    free(dy);
    free(state);
    return rc ? ars_error_context(rc, "measuring the layouts of the matrix products") : 0;
}
