/* loss: softmax cross-entropy (class labels) and mean squared error
 * (regression targets). The gradient is of the loss averaged over the
 * GLOBAL batch (all ranks' rows), so summing gradients over ranks gives
 * exactly the gradient of the global-batch mean, even when ranks hold
 * different numbers of rows. */
#ifndef ARSENAL_LOSS_H
#define ARSENAL_LOSS_H

#include <stdint.h>

typedef enum { ARS_LOSS_CROSS_ENTROPY, ARS_LOSS_MSE } ars_loss_kind;

int ars_loss_parse(const char *name, ars_loss_kind *kind);
const char *ars_loss_name(ars_loss_kind kind);

/* logits [rows, dim]. Cross-entropy reads labels (values in [0, dim));
 * MSE reads targets [rows, dim] and averages over rows * dim like
 * torch.nn.MSELoss. *loss_sum = this rank's sum of per-sample losses (in
 * double); dlogits (may be NULL) = d(global mean loss)/d(logits). */
int ars_loss_compute(ars_loss_kind kind, const float *logits, int rows, int dim,
                     const int32_t *labels, const float *targets, int global_rows,
                     double *loss_sum, float *dlogits);

/* Rows whose arg-max logit equals the label. */
int ars_count_correct(const float *logits, int rows, int dim, const int32_t *labels);

#endif
