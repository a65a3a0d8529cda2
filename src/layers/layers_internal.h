/* layers_internal: the setup function of every layer kind, for the registry
 * in registry.c. A setup reads layer->spec, sets out_dim, declares its
 * parameters and buffers, and allocates its workspace for layer->max_rows. */
#ifndef ARSENAL_LAYERS_INTERNAL_H
#define ARSENAL_LAYERS_INTERNAL_H

#include "arsenal/layer.h"

int ars_dense_setup(ars_layer *layer, int in_dim);
int ars_activation_setup(ars_layer *layer, int in_dim);   /* every activation kind */
int ars_batchnorm_setup(ars_layer *layer, int in_dim);
int ars_layernorm_setup(ars_layer *layer, int in_dim);
int ars_dropout_setup(ars_layer *layer, int in_dim);
int ars_residual_begin_setup(ars_layer *layer, int in_dim);
int ars_residual_add_setup(ars_layer *layer, int in_dim);  /* partner set by the model first */

#endif
