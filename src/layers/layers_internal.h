/* layers_internal: the size and setup functions of every layer kind, for
 * the registry in registry.c. A size function validates the spec for an
 * input shape and says what the layer needs (ars_layer_size), allocating
 * nothing; the setup then reads layer->spec, sets out_dim, declares its
 * parameters and buffers, and allocates exactly size->workspace bytes of
 * workspace for layer->max_rows. */
#ifndef ARSENAL_LAYERS_INTERNAL_H
#define ARSENAL_LAYERS_INTERNAL_H

#include "arsenal/layer.h"

#define ARS_LAYER_SIZE_FN(name) \
    int name(const ars_layer_spec *spec, int in_dim, int skip_dim, int max_rows, ars_layer_size *size)
#define ARS_LAYER_SETUP_FN(name) int name(ars_layer *layer, int in_dim, const ars_layer_size *size)

ARS_LAYER_SIZE_FN(ars_dense_size);
ARS_LAYER_SETUP_FN(ars_dense_setup);
ARS_LAYER_SIZE_FN(ars_activation_size);   /* every activation kind */
ARS_LAYER_SETUP_FN(ars_activation_setup);
ARS_LAYER_SIZE_FN(ars_batchnorm_size);
ARS_LAYER_SETUP_FN(ars_batchnorm_setup);
ARS_LAYER_SIZE_FN(ars_layernorm_size);
ARS_LAYER_SETUP_FN(ars_layernorm_setup);
ARS_LAYER_SIZE_FN(ars_dropout_size);
ARS_LAYER_SETUP_FN(ars_dropout_setup);
ARS_LAYER_SIZE_FN(ars_residual_begin_size);
ARS_LAYER_SETUP_FN(ars_residual_begin_setup);
ARS_LAYER_SIZE_FN(ars_residual_add_size);
ARS_LAYER_SETUP_FN(ars_residual_add_setup);  /* partner set by the model first */

/* Sequence layers (docs/attention.md): rows of time * features floats. */
ARS_LAYER_SIZE_FN(ars_embedding_size);       /* token ids -> vectors */
ARS_LAYER_SETUP_FN(ars_embedding_setup);
ARS_LAYER_SIZE_FN(ars_seq_dense_size);       /* per-step linear; row/patch embedding */
ARS_LAYER_SETUP_FN(ars_seq_dense_setup);
ARS_LAYER_SIZE_FN(ars_positional_size);      /* learned or sinusoidal */
ARS_LAYER_SETUP_FN(ars_positional_setup);
ARS_LAYER_SIZE_FN(ars_attention_size);       /* multi-head self-attention */
ARS_LAYER_SETUP_FN(ars_attention_setup);
ARS_LAYER_SIZE_FN(ars_seq_layernorm_size);   /* layernorm per time step */
ARS_LAYER_SETUP_FN(ars_seq_layernorm_setup);
ARS_LAYER_SIZE_FN(ars_transformer_size);     /* run-file sugar: refuses */
ARS_LAYER_SETUP_FN(ars_transformer_setup);
ARS_LAYER_SIZE_FN(ars_rnn_size);             /* Elman tanh RNN, BPTT */
ARS_LAYER_SETUP_FN(ars_rnn_setup);
ARS_LAYER_SIZE_FN(ars_pooling_size);         /* mean_pool, last_step */
ARS_LAYER_SETUP_FN(ars_pooling_setup);

/* Shared by the sequence layers (sequence.c). Checks spec->time > 0 divides
 * in_dim and that max_rows * time (the rows of the layer's matrix products,
 * an int for cblas) fits in an int, and sets *features = in_dim / time;
 * errors name the kind. */
int ars_seq_features(const ars_layer_spec *spec, int in_dim, int max_rows, int *features);
/* Features per sample out of time * per_step, refused past INT_MAX. */
int ars_seq_width(const ars_layer_spec *spec, double time, double per_step, int *width);
/* On probe steps (and when layer->time_grad_norm is set): the norm of g
 * [rows, time, features] per time step, over the local batch. */
void ars_seq_record_norms(ars_layer *layer, const ars_pass *pass, const float *g, int features);

#endif
