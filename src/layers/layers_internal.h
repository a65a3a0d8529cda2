/* layers_internal: what the layer kinds share beyond include/arsenal/layer.h.
 * Each kind's file defines its registry entry (const ars_layer_kind
 * ars_kind_<name>, listed in registry.c): a size function that validates the
 * spec for an input shape and says what the layer needs (ars_layer_size),
 * allocating nothing; and a setup that reads layer->spec, declares its
 * parameters and buffers, and allocates exactly size->workspace bytes of
 * workspace for layer->max_rows. */
#ifndef ARSENAL_LAYERS_INTERNAL_H
#define ARSENAL_LAYERS_INTERNAL_H

#include "arsenal/layer.h"

/* Shared by the sequence layers (sequence.c; docs/attention.md): a sample
 * is [time, features], a row of time * features floats. Checks spec->time
 * > 0 (the registry resolves it from a [time, features] input) divides the
 * input's count and that max_rows * time (the rows of the layer's matrix
 * products, an int for cblas) fits in an int, and sets *features = count /
 * time; errors name the kind. */
int ars_seq_features(const ars_layer_spec *spec, const ars_shape *in, int max_rows, int *features);
/* The shape [time, per_step] out, refused past INT_MAX values. */
int ars_seq_shape(const ars_layer_spec *spec, double time, double per_step, ars_shape *shape);
/* On probe steps (and when layer->time_grad_norm is set): the norm of g
 * [rows, time, features] per time step, over the local batch. */
void ars_seq_record_norms(ars_layer *layer, const ars_pass *pass, const float *g, int features);

#endif
