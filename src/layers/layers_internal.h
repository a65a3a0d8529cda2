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

/* Sequence layers (docs/attention.md): rows of time * features floats. */
int ars_embedding_setup(ars_layer *layer, int in_dim);      /* token ids -> vectors */
int ars_seq_dense_setup(ars_layer *layer, int in_dim);      /* per-step linear; row/patch embedding */
int ars_positional_setup(ars_layer *layer, int in_dim);     /* learned or sinusoidal */
int ars_attention_setup(ars_layer *layer, int in_dim);      /* multi-head self-attention */
int ars_seq_layernorm_setup(ars_layer *layer, int in_dim);  /* layernorm per time step */
int ars_transformer_setup(ars_layer *layer, int in_dim);    /* run-file sugar: refuses */
int ars_rnn_setup(ars_layer *layer, int in_dim);            /* Elman tanh RNN, BPTT */
int ars_pooling_setup(ars_layer *layer, int in_dim);        /* mean_pool, last_step */

/* Shared by the sequence layers (sequence.c). Checks spec.time > 0 divides
 * in_dim and sets *features = in_dim / time; errors name kind and line. */
int ars_seq_features(const ars_layer *layer, int in_dim, int *features);
/* On probe steps (and when layer->time_grad_norm is set): the norm of g
 * [rows, time, features] per time step, over the local batch. */
void ars_seq_record_norms(ars_layer *layer, const ars_pass *pass, const float *g, int features);

#endif
