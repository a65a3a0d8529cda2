/* layer: the contract every layer kind implements. A layer is a struct with a
 * small operations table: forward and backward over row-major [rows, dim]
 * float arrays (llm.c style), plus the parameter views it owns inside the
 * model's flat buffers. Adding a layer kind = one file in src/layers/ and
 * one line in src/layers/registry.c. */
#ifndef ARSENAL_LAYER_H
#define ARSENAL_LAYER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ars_layer ars_layer;
typedef struct ars_dist ars_dist;

typedef enum { ARS_MODE_EVAL = 0, ARS_MODE_TRAIN = 1 } ars_mode;

/* What one forward or backward call sees besides its tensors. */
typedef struct ars_pass {
    ars_mode mode;
    int rows;                   /* samples in this rank's batch; may be 0 */
    int global_rows;            /* samples in the batch over all ranks */
    const uint32_t *sample_ids; /* global sample index per row (dropout masks), may be NULL */
    uint64_t seed;
    uint64_t step;
    const ars_dist *dist;       /* NULL or 1 rank: no cross-rank reductions */
    int probe;                  /* 1: record activation statistics this step */
} ars_pass;

/* How a parameter tensor is initialized by default. */
typedef enum {
    ARS_ROLE_WEIGHT,  /* by the layer's initializer */
    ARS_ROLE_BIAS,    /* zeros */
    ARS_ROLE_ONES,    /* BatchNorm/LayerNorm gamma, running_var */
    ARS_ROLE_ZEROS    /* beta, running_mean */
} ars_role;

/* A named tensor inside a flat buffer. Shapes follow PyTorch: a dense
 * weight is [out, in]; vectors have rows = 1. */
typedef struct ars_tensor_view {
    char name[16];
    int rows, cols;
    size_t offset;      /* from the start of the layer's slice */
    size_t count;
    ars_role role;
} ars_tensor_view;

/* Activation statistics, filled by activation layers on probe steps. */
typedef struct ars_activation_stats {
    double mean, std;
    double saturated;   /* sigmoid/tanh: fraction of outputs near the bounds */
    double dead;        /* relu family: fraction of units zero for the whole batch */
    int valid;
} ars_activation_stats;

/* Parsed options of one layer section of the run file. Each kind reads the
 * fields it understands; the config module validates keys per kind. */
typedef struct ars_layer_spec {
    char kind[24];
    int units;           /* dense: output width */
    float alpha;         /* leaky_relu slope, elu alpha */
    float momentum;      /* batchnorm running-statistics momentum (PyTorch meaning) */
    float eps;           /* batchnorm/layernorm epsilon */
    int sync;            /* batchnorm: 1 = statistics over all ranks */
    float rate;          /* dropout probability */
    char init[24];       /* dense: initializer name ("" = layer default) */
    float init_arg;      /* std for normal, bound for uniform, gain... (0 = default) */
    char init_mode[8];   /* "fan_in" | "fan_out" */
    int bias;            /* dense: 1 = has bias */
    int source_line;     /* run-file line, for error messages */
    const char *source_file;  /* run-file name, for error messages (NULL: none); from
                                 ars_layer_source_name, so it outlives the config */
    /* Sequence layers (docs/attention.md): a sample is time steps of
     * features, stored as a row of time * features floats. */
    int time;            /* time steps (0: embedding takes in_dim) */
    int heads;           /* attention: heads, dividing the features */
    int causal;          /* attention: 1 = step t attends to steps <= t only */
    int vocab;           /* embedding: number of token ids */
    int patch;           /* seq_dense: side of square patches of a square image (0: rows) */
    char encoding[16];   /* positional: "learned" | "sinusoidal" */
} ars_layer_spec;

void ars_layer_spec_defaults(ars_layer_spec *spec, const char *kind);

/* Where a spec came from, for messages, as the run-file parser says it:
 * "FILE:LINE", or "line N" for a spec without a file (built in code):
 *     ars_error(ARS_EINVAL, ARS_SPEC_AT ": ...", ARS_SPEC_AT_ARGS(spec), ...) */
#define ARS_SPEC_AT "%s%s%d"
#define ARS_SPEC_AT_ARGS(spec) \
    ((spec)->source_file ? (spec)->source_file : "line "), ((spec)->source_file ? ":" : ""), (spec)->source_line

/* A copy of a run-file name that lives as long as the process (one per
 * distinct name), for ars_layer_spec.source_file; NULL when out of memory. */
const char *ars_layer_source_name(const char *path);

/* What a layer of a spec needs, computed from its input shape without
 * allocating anything. Each kind's setup allocates exactly `workspace` and
 * declares `params` and `state` (ars_layer_setup checks it), so the model's
 * memory estimate cannot drift from what a built model takes. Counts are
 * doubles: an absurd spec gives a large number, never an overflow. */
typedef struct ars_layer_size {
    int out_dim;          /* features per sample out */
    double params;        /* trainable floats (the model keeps as many gradients) */
    double state;         /* buffer floats (running statistics) */
    double workspace;     /* bytes of the layer's own buffers: caches for backward,
                             masks, attention probabilities, per-step states */
} ars_layer_size;

/* Validates spec for inputs of width in_dim and batches of max_rows (the
 * errors of ars_layer_setup, without the location: the model adds it) and
 * fills *size. skip_dim: for residual_add, the width at its [residual]. */
int ars_layer_size_of(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows, ars_layer_size *size);

typedef struct ars_layer_ops {
    const char *kind;
    /* y[rows, out_dim] from x[rows, in_dim]. */
    int (*forward)(ars_layer *layer, const ars_pass *pass, const float *x, float *y);
    /* From dy: writes this layer's parameter gradients (overwriting) and
     * dx (skipped when dx is NULL, for the first layer). x and y are the
     * forward's input and output. */
    int (*backward)(ars_layer *layer, const ars_pass *pass, const float *x,
                    const float *y, const float *dy, float *dx);
    void (*destroy)(ars_layer *layer);
} ars_layer_ops;

enum { ARS_MAX_TENSORS = 4 };

struct ars_layer {
    const ars_layer_ops *ops;
    char name[40];            /* "003_dense": index + kind, unique in a model */
    int index;
    int in_dim, out_dim;      /* features per sample */
    int max_rows;             /* batch capacity */
    ars_layer_spec spec;

    ars_tensor_view params[ARS_MAX_TENSORS];   /* trainable: weight, bias, gamma, beta */
    int param_count;
    ars_tensor_view buffers[ARS_MAX_TENSORS];  /* state: running_mean, running_var */
    int buffer_count;

    size_t param_offset, param_size;  /* slice of the model's flat buffers */
    size_t state_offset, state_size;
    float *param, *grad, *state;      /* pointers to the slices (set by model) */
    float *output;                    /* this layer's activation buffer (set by model) */

    ars_layer *partner;       /* residual: begin <-> add */
    float *skip_grad;         /* residual begin: gradient arriving over the skip path */
    int is_activation;        /* 1 for elementwise activations (probe statistics) */
    ars_activation_stats stats;
    double output_grad_norm;  /* ||dL/dy|| arriving at this layer, on probe steps */
    void *impl;               /* kind-specific options and workspace */
    /* Sequence layers, on probe steps: the gradient norm per time step over
     * the local batch (rnn: ||dL/dh_t|| through time; others: ||dL/dy_t||).
     * time_grad_count = time steps (0: not a sequence layer); the array
     * lives in impl. */
    double *time_grad_norm;
    int time_grad_count;
};

/* Sets up a layer of spec->kind for inputs of width in_dim: out_dim,
 * parameter views, workspace for max_rows. Errors name the kind; the model
 * prefixes the run-file location. */
int ars_layer_setup(ars_layer *layer, const ars_layer_spec *spec, int in_dim, int max_rows);

/* 1 if kind names a layer (or a config-only block keyword). */
int ars_layer_kind_known(const char *kind);

/* Helper for kinds: add a parameter or buffer view and grow the slice. */
void ars_layer_add_param(ars_layer *layer, const char *name, int rows, int cols, ars_role role);
void ars_layer_add_buffer(ars_layer *layer, const char *name, int rows, int cols, ars_role role);

/* Elementwise activation function kinds, shared by the activation layers,
 * the probes and the initializers' gain. */
typedef enum {
    ARS_ACT_NONE, ARS_ACT_SIGMOID, ARS_ACT_TANH, ARS_ACT_RELU, ARS_ACT_LEAKY_RELU,
    ARS_ACT_ELU, ARS_ACT_SELU, ARS_ACT_GELU
} ars_activation;

ars_activation ars_activation_from_name(const char *name);
const char *ars_activation_name(ars_activation act);

#endif
