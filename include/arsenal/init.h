/* init: parameter initializers (zeros, normal, uniform, Xavier/Glorot, He/
 * Kaiming, orthogonal) and LSUV, which calibrates layer by layer on data. */
#ifndef ARSENAL_INIT_H
#define ARSENAL_INIT_H

#include <stdint.h>

#include "arsenal/model.h"

typedef enum {
    ARS_INIT_ZEROS,
    ARS_INIT_NORMAL,          /* N(0, arg^2), arg = std (default 0.01) */
    ARS_INIT_UNIFORM,         /* U(-arg, arg) (default 0.05) */
    ARS_INIT_XAVIER_UNIFORM,  /* gain arg (default 1): U(+-gain*sqrt(6/(in+out))) */
    ARS_INIT_XAVIER_NORMAL,   /* N(0, gain^2 * 2/(in+out)) */
    ARS_INIT_HE_UNIFORM,      /* arg = leaky slope a (default 0): bound sqrt(3)*gain/sqrt(fan) */
    ARS_INIT_HE_NORMAL,       /* std = gain/sqrt(fan), gain = sqrt(2/(1+a^2)) */
    ARS_INIT_ORTHOGONAL,      /* gain arg (default 1), as torch.nn.init.orthogonal_ */
    ARS_INIT_LSUV             /* orthogonal, then ars_init_lsuv() rescales on data */
} ars_init_kind;

/* Parses "he_normal" etc. (also glorot_* and kaiming_* aliases); the error
 * lists the valid names. */
int ars_init_parse(const char *name, ars_init_kind *kind);
const char *ars_init_name(ars_init_kind kind);

/* Fills a [rows = fan_out, cols = fan_in] weight. arg <= 0 means the
 * kind's default. fan_out_mode: He uses fan_out instead of fan_in.
 * Deterministic in (seed, stream). Orthogonal (Gram-Schmidt in double,
 * O(rows*cols*min(rows,cols))): W W^T = gain^2 I when rows <= cols, else
 * W^T W = gain^2 I. LSUV fills the orthogonal pre-init with gain 1. */
int ars_init_fill(float *weight, int rows, int cols, ars_init_kind kind, float arg,
                  int fan_out_mode, uint64_t seed, uint64_t stream);

/* Initializes every parameter and state buffer of a model: weights by their
 * layer's spec.init (default xavier_uniform), biases and beta zero, gamma
 * and running_var one, running_mean zero. Stream = layer index, counter
 * offset = the tensor's offset in the layer slice, so a weight at offset 0
 * (dense) gets exactly ars_init_fill(..., seed,
 * ars_stream(ARS_STREAM_INIT, layer->index)). Errors name the layer. */
int ars_init_model(ars_model *model, uint64_t seed);

/* LSUV (Mishkin & Matas 2016): for each layer whose output is linear in a
 * weight, in order (dense, seq_dense and embedding: their weight;
 * attention: its out_proj_weight), rescale that weight until the variance
 * of its output on the batch x[rows, in_dim] is 1 within tol (or
 * max_iterations rescalings). Other layers (an RNN among them) just run
 * forward (eval mode) to feed the next one. Run after ars_init_model (the
 * "lsuv" initializer is the orthogonal pre-init). A layer whose output
 * variance is zero or non-finite is an ARS_ENUMERIC error. */
int ars_init_lsuv(ars_model *model, const float *x, int rows, double tol, int max_iterations);

/* Called once per rescaled layer with its final output variance and how many
 * rescalings it took (|variance - 1| >= tol: not converged). */
typedef void (*ars_lsuv_callback)(void *context, const ars_layer *layer, double variance,
                                  int iterations);

/* ars_init_lsuv that reports each rescaled layer through callback (may be NULL). */
int ars_init_lsuv_report(ars_model *model, const float *x, int rows, double tol,
                         int max_iterations, ars_lsuv_callback callback, void *context);

#endif
