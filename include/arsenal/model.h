/* model: the ordered layer list and the flat buffers. Parameters, gradients
 * and layer state (BatchNorm running statistics) each live in ONE contiguous
 * float array; a layer sees its slice. All-reduce, norms and the optimizer
 * are single passes over these arrays, and an all-reduce bucket is a slice. */
#ifndef ARSENAL_MODEL_H
#define ARSENAL_MODEL_H

#include "arsenal/layer.h"

typedef struct ars_model {
    ars_layer *layers;
    int layer_count;
    ars_shape in_shape, out_shape;   /* per sample */
    int in_dim, out_dim;             /* their counts */
    int max_rows;
    float *params, *grads, *state;
    size_t param_count, state_count;
    int grads_borrowed;       /* grads is someone else's memory (ars_model_move_grads) */
    float *grad_a, *grad_b;   /* ping-pong buffers for dL/d(activation) */
    size_t max_width;
    const float *input;       /* input of the last forward */
    /* The sum of squares of the gradient, layer by layer while each is in
     * cache, by a backward whose gradients are final (one rank); 0: not
     * computed by the last backward. Read by ars_dist_grad_sum_squares. */
    int grad_sum_squares_ready;
    double grad_sum_squares;
    /* The matrix products of a step and the layout each runs in on this
     * machine (src/gemm.h), by ars_model_tune_gemm; NULL when not tuned
     * (run.gemm_tuning = off: every product as asked). Rank 0's, shared by
     * the trainer and recorded in checkpoints like the layers' tunings. */
    struct ars_gemm_choice *gemm_plan;
    int gemm_plan_count;
    double gemm_tune_seconds, gemm_tune_cpu_seconds;   /* spent measuring: wall, process CPU */
    int gemm_restored;          /* 1: the layouts are a checkpoint's (ars_ckpt_load) */
} ars_model;

/* Builds the layers of specs (residual blocks as "residual" ... "residual_add"
 * pairs) for samples of shape input and batches up to max_rows; the shapes
 * flow from layer to layer. Parameters are zero until ars_init_model(). */
int ars_model_create(ars_model *model, const ars_layer_spec *specs, int count,
                     ars_shape input, int max_rows);
void ars_model_destroy(ars_model *model);

/* What ars_model_create would allocate for these specs, computed without
 * allocating (each layer kind's size function, the one its setup uses):
 * to refuse a model that cannot fit before building it. Validates the specs
 * as ars_model_create does, with the same messages. */
typedef struct ars_model_size {
    ars_shape out_shape;
    int out_dim;
    double params;             /* trainable floats (as many gradients again) */
    double state;              /* buffer floats */
    double activations;        /* bytes: every layer's output for max_rows rows, two gradient buffers */
    double workspace;          /* bytes: the layers' own buffers (attention probabilities, RNN states...) */
    double largest_workspace;  /* bytes, of layer largest_layer (-1: none) */
    int largest_layer;
    double bytes;              /* all of it, with the parameter and gradient arrays and the layer list */
} ars_model_size;

int ars_model_estimate(const ars_layer_spec *specs, int count, ars_shape input, int max_rows,
                       ars_model_size *size);

/* Moves the gradients into buffer (param_count floats owned by the caller,
 * e.g. a shared-memory window) and points every layer's slice there; the
 * model's own buffer is freed and buffer is never freed by the model.
 * buffer NULL: back into memory of the model's own (ARS_ENOMEM if none). */
int ars_model_move_grads(ars_model *model, float *buffer);

/* Runs one training-mode forward and backward of max_rows rows of zeros
 * with every matrix product recorded and, when measure is set, each new
 * one timed in all its layouts (src/gemm.h); fills model->gemm_plan. The
 * model is left as it was (running statistics restored, gradients zero). */
int ars_model_tune_gemm(ars_model *model, int measure);

int ars_model_forward(ars_model *model, const ars_pass *pass, const float *x);
const float *ars_model_output(const ars_model *model);

/* Called after each layer's backward, from the last layer to the first, so
 * the data-parallel layer can start an all-reduce of a finished bucket. */
typedef int (*ars_backward_hook)(void *context, const ars_layer *layer);

/* dout = dL/d(output), [rows, out_dim]. Writes every parameter gradient. */
int ars_model_backward(ars_model *model, const ars_pass *pass, const float *dout,
                       ars_backward_hook hook, void *context);

#endif
