/* layer: the contract every layer kind implements. A layer is a struct with a
 * small operations table: forward and backward over row-major [rows, dim]
 * float arrays (llm.c style; dim = the count of its per-sample shape), plus
 * the parameter views it owns inside the model's flat buffers. A kind is
 * described by its registry entry (ars_layer_kind, below). Adding a layer
 * kind = one file in src/layers/ defining `const ars_layer_kind
 * ars_kind_<name>` and one line in src/layers/registry.c. */
#ifndef ARSENAL_LAYER_H
#define ARSENAL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/shape.h"

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
 * weight is [out, in], a convolution's [out, in / groups, kh, kw]; bias,
 * gamma and the like are vectors (rank 1). */
typedef struct ars_tensor_view {
    char name[16];
    ars_shape shape;
    size_t offset;      /* from the start of the layer's slice */
    size_t count;
    ars_role role;
} ars_tensor_view;

/* The fans PyTorch's initializers use: fan_in = dims[1] * receptive field,
 * fan_out = dims[0] * receptive field (a vector: fan_in = its length,
 * fan_out = 1, as a [1, n] row). */
void ars_tensor_fans(const ars_tensor_view *view, int *fan_in, int *fan_out);

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
    /* Convolution and pooling over images [channels, height, width]
     * (docs/convolution.md); pairs are (height, width). */
    int channels;        /* conv2d: output channels */
    int kernel[2];       /* conv2d, pooling: the window */
    int stride[2];       /* conv2d: 1; pooling: 0 = the window */
    int padding[2];      /* zeros (conv2d, avgpool2d) or -inf (maxpool2d) on each side */
    int dilation[2];     /* conv2d */
    int groups;          /* conv2d: channel groups (1; the input channels for depthwise) */
    int layout;          /* conv2d: product layout, 0 = measured at setup, 1 per sample, 2 batched */
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
    ars_shape out;        /* per-sample shape out (set by the kind's size function) */
    int out_dim;          /* its count (set by ars_layer_size_of) */
    double params;        /* trainable floats (the model keeps as many gradients) */
    double state;         /* buffer floats (running statistics) */
    double workspace;     /* bytes of the layer's own buffers: caches for backward,
                             masks, attention probabilities, per-step states */
} ars_layer_size;

/* Validates spec for inputs of shape in and batches of max_rows (the
 * errors of ars_layer_setup, without the location: the model adds it) and
 * fills *size. skip: for residual_add, the shape at its [residual] (else
 * NULL). */
int ars_layer_size_of(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                      ars_layer_size *size);

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
    const struct ars_layer_kind *kind;  /* its registry entry */
    char name[40];            /* "003_dense": index + kind, unique in a model */
    int index;
    ars_shape in_shape, out_shape;  /* per sample */
    int in_dim, out_dim;      /* their counts: floats per sample */
    int max_rows;             /* batch capacity */
    ars_layer_spec spec;      /* as parsed; a sequence layer's time resolved from its input */

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
    ars_activation_stats stats;  /* activation kinds, on probe steps */
    double output_grad_norm;  /* ||dL/dy|| arriving at this layer, on probe steps */
    void *impl;               /* kind-specific options and workspace */
    /* A choice the kind made by measuring this machine at setup (conv2d:
     * its product layout; 0 = none). Results may differ in rounding from
     * one choice to another, so the trainer gives every rank rank 0's and
     * checkpoints record it for a bit-exact resume. */
    int tuning;
    /* Sequence layers, on probe steps: the gradient norm per time step over
     * the local batch (rnn: ||dL/dh_t|| through time; others: ||dL/dy_t||).
     * time_grad_count = time steps (0: not a sequence layer); the array
     * lives in impl. */
    double *time_grad_norm;
    int time_grad_count;
};

/* Sets up a layer of spec->kind for inputs of shape in: out_shape,
 * parameter views, workspace for max_rows. Errors name the kind; the model
 * prefixes the run-file location. */
int ars_layer_setup(ars_layer *layer, const ars_layer_spec *spec, const ars_shape *in, int max_rows);

/* Helper for kinds: add a parameter or buffer view and grow the slice. */
void ars_layer_add_param(ars_layer *layer, const char *name, ars_shape shape, ars_role role);
void ars_layer_add_buffer(ars_layer *layer, const char *name, ars_shape shape, ars_role role);

/* Elementwise activation function kinds, shared by the activation layers,
 * the probes and the initializers' gain. */
typedef enum {
    ARS_ACT_NONE, ARS_ACT_SIGMOID, ARS_ACT_TANH, ARS_ACT_RELU, ARS_ACT_LEAKY_RELU,
    ARS_ACT_ELU, ARS_ACT_SELU, ARS_ACT_GELU
} ars_activation;

/* ---- the registry: everything arsenal knows of a layer kind -------------- */

/* The run-file section a kind's parse function reads (run_config.c). */
typedef struct ars_layer_parser ars_layer_parser;

/* What the rest of arsenal asks of a kind (health rules, inspect, init,
 * the run-file reader) instead of lists of names. */
enum {
    ARS_KIND_SEQUENCE = 1 << 0,       /* [time, features] in: reads `time` (else its input's) */
    ARS_KIND_READOUT = 1 << 1,        /* ends a sequence: [time, features] -> [features] */
    ARS_KIND_NORMALIZATION = 1 << 2,  /* BatchNorm, LayerNorm and the blocks holding one */
    ARS_KIND_RESIDUAL = 1 << 3,       /* an end of a residual block, or a block holding one */
    ARS_KIND_PARAMS = 1 << 4,         /* always has trainable parameters */
    ARS_KIND_SUGAR = 1 << 5           /* run-file only: its parse function emits other kinds */
};

typedef struct ars_layer_kind {
    const char *name;          /* the run-file section, the "<kind>" of layer names */
    const char *summary;       /* a few words for the unknown-kind message and docs */
    unsigned flags;
    ars_activation activation; /* elementwise activation kinds: which one (else ARS_ACT_NONE) */
    const char *lsuv_weight;   /* the tensor LSUV rescales to unit output variance; NULL: none */
    /* Reads the kind's own keys of its run-file section into spec (NULL:
     * none). spec comes with the kind's defaults (ars_layer_spec_defaults)
     * and `units` / `time` read by the flags; sugar kinds emit their parts
     * with ars_layer_parse_emit instead. */
    int (*parse)(ars_layer_parser *parser, ars_layer_spec *spec);
    /* Validates spec for an input shape and fills *size (see above); skip
     * is the shape at the block's start for residual ends, else NULL. */
    int (*size)(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                ars_layer_size *size);
    /* Declares the layer's tensors and allocates exactly size->workspace
     * bytes; in_shape, out_shape, max_rows and spec are set. */
    int (*setup)(ars_layer *layer, const ars_layer_size *size);
    /* Defaults beyond ars_layer_spec_defaults' common ones (NULL: none). */
    void (*defaults)(ars_layer_spec *spec);
    const char *units;         /* the section requires units = <this>; NULL: no units key */
} ars_layer_kind;

/* The kind named name, or NULL. */
const ars_layer_kind *ars_layer_kind_find(const char *name);
/* Kinds in registry order: i from 0 until NULL. */
const ars_layer_kind *ars_layer_kind_at(int i);
/* Adds a kind defined outside the library (a test, an extension) to the
 * registry for the life of the process; ARS_EINVAL if its name is taken. */
int ars_layer_kind_register(const ars_layer_kind *kind);
/* 1 if the kind named name has flag (0 for unknown names). */
int ars_layer_kind_has(const char *name, unsigned flag);

/* ---- parsing a layer's section (implemented by run_config.c) ------------- */

/* Typed getters for the section being read, with FILE:LINE messages. */
int ars_layer_parse_int(ars_layer_parser *p, const char *key, long fallback, long min, long max, int *out);
int ars_layer_parse_float(ars_layer_parser *p, const char *key, double fallback, double min, double max,
                          float *out);
int ars_layer_parse_bool(ars_layer_parser *p, const char *key, int fallback, int *out);
/* One of choices (NULL-terminated; NULL choices: any text). */
int ars_layer_parse_string(ars_layer_parser *p, const char *key, const char *fallback,
                           const char *const *choices, char *out, size_t size);
int ars_layer_parse_has(ars_layer_parser *p, const char *key);
/* A size pair: "3" (3 x 3) or "3x2" / "3,2" (height 3, width 2), each in
 * [min, max]; fallback used for both when the key is absent. */
int ars_layer_parse_pair(ars_layer_parser *p, const char *key, int fallback, int min, int max, int out[2]);
/* The initializer keys (init, init_std, init_gain, ..., init_mode). */
int ars_layer_parse_init(ars_layer_parser *p, ars_layer_spec *spec);
/* The name of an activation kind (allow_none: or "none"). */
int ars_layer_parse_activation_name(ars_layer_parser *p, const char *key, const char *fallback, int allow_none,
                                    char *out, size_t size);
/* `activation = <kind>`: an activation layer after this one (sugar). */
int ars_layer_parse_activation(ars_layer_parser *p);
/* Appends a layer (sugar kinds); spec->source_line is set here. */
int ars_layer_parse_emit(ars_layer_parser *p, ars_layer_spec *spec);
/* An error at the section: "FILE:LINE: [kind] " + message. */
int ars_layer_parse_error(ars_layer_parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The activation of the kind named name (ARS_ACT_NONE: not an activation). */
ars_activation ars_activation_from_name(const char *name);

#endif
