/* dropout: inverted dropout. Train mode zeroes each element with
 * probability rate and scales the survivors by 1 / (1 - rate); eval mode is
 * the identity. The mask is a pure function of (seed, layer, step, global
 * sample id, feature), so a sample gets the same mask on whichever rank and
 * in whichever row it lands: N ranks train exactly like one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/rng.h"
#include "layers_internal.h"

typedef struct {
    int train;         /* mode of the last forward */
    float scale;       /* 1 / (1 - rate), 0 when rate = 1 */
    uint8_t mask[];    /* [max_rows * dim] 1 = kept, from the last train forward */
} dropout_impl;

/* Mask of one row: a row key from (step, sample id), then one 32-bit word
 * per feature from (row key, feature / 4). Two Philox levels because
 * (step, id, feature) does not fit the 64-bit counter. */
static void row_mask(uint64_t seed, uint64_t stream, uint64_t step, uint32_t id, float rate,
                     int dim, uint8_t *mask)
{
    uint32_t w[4];
    ars_philox(seed, stream, (step << 32) | id, w);
    const uint64_t row_key = ((uint64_t)w[1] << 32) | w[0];
    for (int j = 0; j < dim; j++) {
        if (j % 4 == 0) ars_philox(row_key, stream, (uint64_t)j / 4, w);
        mask[j] = ars_u32_to_unit(w[j % 4]) >= rate;
    }
}

static int dropout_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    dropout_impl *dp = layer->impl;
    const int rows = pass->rows, dim = layer->in_dim;
    if (rows < 0 || rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, rows, layer->max_rows);
    dp->train = pass->mode == ARS_MODE_TRAIN;
    if (!dp->train) {
        if (y != x) memcpy(y, x, sizeof(float) * (size_t)rows * (size_t)dim);
        return 0;
    }
    const uint64_t stream = ars_stream(ARS_STREAM_DROPOUT, (uint32_t)layer->index);
    for (int r = 0; r < rows; r++) {
        uint32_t id = pass->sample_ids ? pass->sample_ids[r] : (uint32_t)r;
        uint8_t *m = dp->mask + (size_t)r * dim;
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        row_mask(pass->seed, stream, pass->step, id, layer->spec.rate, dim, m);
        for (int j = 0; j < dim; j++) yr[j] = m[j] ? xr[j] * dp->scale : 0.0f;
    }
    return 0;
}

static int dropout_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    (void)x, (void)y;
    const dropout_impl *dp = layer->impl;
    const size_t n = (size_t)pass->rows * (size_t)layer->in_dim;
    if (!dx) return 0;
    if (!dp->train) {
        if (dx != dy) memcpy(dx, dy, sizeof(float) * n);
        return 0;
    }
    for (size_t i = 0; i < n; i++) dx[i] = dp->mask[i] ? dy[i] * dp->scale : 0.0f;
    return 0;
}

static const ars_layer_ops dropout_ops = {"dropout", dropout_forward, dropout_backward, NULL};

static int dropout_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                        ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    if (!(spec->rate >= 0.0f && spec->rate <= 1.0f))
        return ars_error(ARS_EINVAL, "[dropout] rate must be in [0, 1] (found %g)", (double)spec->rate);
    size->out = *in;
    size->workspace = sizeof(dropout_impl) + (double)max_rows * in_dim;   /* a byte of mask per value */
    return 0;
}

static int dropout_setup(ars_layer *layer, const ars_layer_size *size)
{
    const float rate = layer->spec.rate;
    dropout_impl *dp = calloc(1, (size_t)size->workspace);   /* one block: freed by the model */
    if (!dp) return ars_error(ARS_ENOMEM, "dropout: out of memory for a %.0f-byte mask", size->workspace);
    dp->scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
    layer->impl = dp;
    layer->ops = &dropout_ops;
    return 0;
}

static int dropout_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "rate", 0.5, 0, 0.999, &spec->rate);
}

const ars_layer_kind ars_kind_dropout = {
    .name = "dropout",
    .summary = "zeroes each value with probability rate while training",
    .parse = dropout_parse,
    .size = dropout_size,
    .setup = dropout_setup,
};
