/* loss: softmax cross-entropy and mean squared error with their gradients. */
#include "arsenal/loss.h"

#include <math.h>
#include <string.h>

#include "arsenal/error.h"

int ars_loss_parse(const char *name, ars_loss_kind *kind)
{
    if (strcmp(name, "cross_entropy") == 0) *kind = ARS_LOSS_CROSS_ENTROPY;
    else if (strcmp(name, "mse") == 0) *kind = ARS_LOSS_MSE;
    else return ars_error(ARS_EINVAL, "unknown loss '%s' (expected cross_entropy or mse)", name);
    return 0;
}

const char *ars_loss_name(ars_loss_kind kind)
{
    return kind == ARS_LOSS_MSE ? "mse" : "cross_entropy";
}

static int cross_entropy(const float *logits, int rows, int dim, const int32_t *labels, int global_rows,
                         double *loss_sum, float *dlogits)
{
    const float inv_n = 1.0f / (float)global_rows;
    double total = 0;
    for (int r = 0; r < rows; r++) {
        const float *z = logits + (size_t)r * dim;
        int label = labels[r];
        if (label < 0 || label >= dim)
            return ars_error(ARS_EINVAL, "label %d of row %d outside the %d outputs", label, r, dim);
        float max = z[0];
        for (int j = 1; j < dim; j++) max = z[j] > max ? z[j] : max;
        double sum = 0;
        for (int j = 0; j < dim; j++) sum += exp((double)z[j] - max);
        double log_sum = log(sum);
        total += log_sum - ((double)z[label] - max);
        if (dlogits) {
            float *d = dlogits + (size_t)r * dim;
            for (int j = 0; j < dim; j++) d[j] = (float)(exp((double)z[j] - max - log_sum)) * inv_n;
            d[label] -= inv_n;
        }
    }
    *loss_sum = total;
    return 0;
}

static int mean_squared_error(const float *y, int rows, int dim, const float *t, int global_rows,
                              double *loss_sum, float *dy)
{
    /* per-sample loss = mean over dim; global loss = mean over samples */
    const float scale = 2.0f / ((float)global_rows * (float)dim);
    double total = 0;
    for (size_t i = 0; i < (size_t)rows * (size_t)dim; i++) {
        double e = (double)y[i] - t[i];
        total += e * e;
        if (dy) dy[i] = (float)e * scale;
    }
    *loss_sum = total / dim;
    return 0;
}

int ars_loss_compute(ars_loss_kind kind, const float *logits, int rows, int dim, const int32_t *labels,
                     const float *targets, int global_rows, double *loss_sum, float *dlogits)
{
    *loss_sum = 0;
    if (rows == 0) return 0;
    if (global_rows <= 0) return ars_error(ARS_EINVAL, "loss: global batch of %d rows", global_rows);
    if (kind == ARS_LOSS_CROSS_ENTROPY) {
        if (!labels) return ars_error(ARS_EINVAL, "cross_entropy loss needs class labels; this data set has none");
        return cross_entropy(logits, rows, dim, labels, global_rows, loss_sum, dlogits);
    }
    if (!targets) return ars_error(ARS_EINVAL, "mse loss needs regression targets; this data set has labels only");
    return mean_squared_error(logits, rows, dim, targets, global_rows, loss_sum, dlogits);
}

int ars_count_correct(const float *logits, int rows, int dim, const int32_t *labels)
{
    int correct = 0;
    for (int r = 0; r < rows; r++) {
        const float *z = logits + (size_t)r * dim;
        int best = 0;
        for (int j = 1; j < dim; j++) best = z[j] > z[best] ? j : best;
        correct += best == labels[r];
    }
    return correct;
}
