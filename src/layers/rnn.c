/* rnn: a vanilla Elman network, torch.nn.RNN(features, units,
 * nonlinearity='tanh', batch_first=True), trained by backpropagation
 * through time. x [rows, time * features] -> y [rows, time * units], all
 * hidden states (a readout layer picks or pools them), h_0 = 0:
 *     h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
 * Backward runs t = time-1 .. 0 with
 *     dh_t = dy_t + W_hh^T da_{t+1},   da_t = dh_t * (1 - h_t^2)
 * On probe steps it records ||dh_t|| over the local batch for every t
 * (layer->time_grad_norm): the gradient that reaches step t through time,
 * whose decay (powers of W_hh^T diag(1 - h^2)) is why this network cannot
 * learn long-range dependencies.
 * Products on BLAS: the input projection and the weight gradients of all
 * steps are single GEMMs over rows * time; only the recurrence loops over
 * t (one GEMM of [rows, units] x [units, units] per step). The default
 * init is PyTorch's, U(-1/sqrt(units), 1/sqrt(units)) (biases 0 here). */
#include "../gemm.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "layers_internal.h"
#include "fast_math.h"

typedef struct {
    int time, features, units;
    float *da;        /* [max_rows, time, units]: dL/d(pre-activation) */
    float *hprev;     /* [max_rows, time, units]: h_{t-1} per step (h_{-1} = 0) */
    double *norms;    /* [time] ||dL/dh_t|| (probe steps) */
    double data[];
} rnn_impl;

enum { W_IH, W_HH, B_IH, B_HH };

static int rnn_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    rnn_impl *n = layer->impl;
    const int rows = pass->rows, T = n->time, F = n->features, H = n->units, TH = T * H;
    if (rows < 0 || rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, rows, layer->max_rows);
    if (rows == 0) return 0;
    const float *p = layer->param;
    const float *w_ih = p + layer->params[W_IH].offset, *w_hh = p + layer->params[W_HH].offset;
    const float *b_ih = p + layer->params[B_IH].offset, *b_hh = p + layer->params[B_HH].offset;
    /* y = x W_ih^T + b_ih + b_hh for every step at once */
    for (int s = 0; s < rows * T; s++) {
        float *ys = y + (size_t)s * H;
        for (int j = 0; j < H; j++) ys[j] = b_ih[j] + b_hh[j];
    }
    ars_gemm(false, true, rows * T, H, F, 1.0f, x, F, w_ih, F, 1.0f, y, H);
    /* the recurrence: step t of every sample is a [rows, H] slice with stride T*H */
    for (int t = 0; t < T; t++) {
        float *yt = y + (size_t)t * H;
        if (t > 0)
            ars_gemm(false, true, rows, H, H, 1.0f, yt - H, TH, w_hh, H, 1.0f,
                        yt, TH);
        for (int r = 0; r < rows; r++) {
            float *h = yt + (size_t)r * TH;
            for (int j = 0; j < H; j++) h[j] = ars_tanh(h[j]);   /* vectorizes; tanhf is a call */
        }
    }
    return 0;
}

static int rnn_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                        const float *dy, float *dx)
{
    rnn_impl *n = layer->impl;
    const int rows = pass->rows, T = n->time, F = n->features, H = n->units, TH = T * H;
    if (rows == 0) {
        memset(layer->grad, 0, sizeof(float) * layer->param_size);
        if (pass->probe) memset(n->norms, 0, sizeof(double) * (size_t)T);
        return 0;
    }
    const float *w_ih = layer->param + layer->params[W_IH].offset;
    const float *w_hh = layer->param + layer->params[W_HH].offset;
    float *g = layer->grad;
    float *dw_ih = g + layer->params[W_IH].offset, *dw_hh = g + layer->params[W_HH].offset;
    float *db_ih = g + layer->params[B_IH].offset, *db_hh = g + layer->params[B_HH].offset;
    float *da = n->da;

    memcpy(da, dy, sizeof(float) * (size_t)rows * TH);   /* dh_t starts as the direct gradient dy_t */
    for (int t = T - 1; t >= 0; t--) {
        float *dat = da + (size_t)t * H;
        /* dh_t += da_{t+1} W_hh: what reaches h_t through the recurrence */
        if (t < T - 1)
            ars_gemm(false, false, rows, H, H, 1.0f, dat + H, TH, w_hh, H, 1.0f,
                        dat, TH);
        double ss = 0;
        for (int r = 0; r < rows; r++) {
            float *d = dat + (size_t)r * TH;
            const float *h = y + (size_t)r * TH + (size_t)t * H;
            for (int j = 0; j < H; j++) {
                ss += (double)d[j] * d[j];
                d[j] *= 1.0f - h[j] * h[j];
            }
        }
        if (pass->probe) n->norms[t] = sqrt(ss);
    }
    /* h_{t-1} per step, so that dW_hh = sum_t da_t^T h_{t-1} is one GEMM */
    for (int r = 0; r < rows; r++) {
        float *hp = n->hprev + (size_t)r * TH;
        memset(hp, 0, sizeof(float) * (size_t)H);
        memcpy(hp + H, y + (size_t)r * TH, sizeof(float) * (size_t)(TH - H));
    }
    ars_gemm(true, false, H, H, rows * T, 1.0f, da, H, n->hprev, H, 0.0f, dw_hh, H);
    ars_gemm(true, false, H, F, rows * T, 1.0f, da, H, x, F, 0.0f, dw_ih, F);
    memset(db_ih, 0, sizeof(float) * (size_t)H);
    for (int s = 0; s < rows * T; s++) {
        const float *d = da + (size_t)s * H;
        for (int j = 0; j < H; j++) db_ih[j] += d[j];
    }
    memcpy(db_hh, db_ih, sizeof(float) * (size_t)H);   /* the two biases enter the same sum */
    if (dx)
        ars_gemm(false, false, rows * T, F, H, 1.0f, da, H, w_ih, F, 0.0f, dx, F);
    return 0;
}

static const ars_layer_ops rnn_ops = {"rnn", rnn_forward, rnn_backward, NULL};

static int rnn_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                    ars_layer_size *size)
{
    int F, rc;
    if (spec->units <= 0)
        return ars_error(ARS_EINVAL, "[rnn] needs units = <hidden width> (found %d)", spec->units);
    if ((rc = ars_seq_features(spec, in, max_rows, &F)) != 0) return rc;
    if ((rc = ars_seq_shape(spec, spec->time, spec->units, &size->out)) != 0) return rc;
    const double H = spec->units;
    size->params = H * F + H * H + 2 * H;
    /* da and h_{t-1}: two [rows, time, units] per-step states for BPTT */
    size->workspace = sizeof(rnn_impl) + sizeof(double) * (double)spec->time +
                      sizeof(float) * 2.0 * max_rows * spec->time * H;
    return 0;
}

static int rnn_setup(ars_layer *layer, const ars_layer_size *size)
{
    ars_layer_spec *spec = &layer->spec;
    const int H = spec->units, F = layer->in_dim / spec->time;
    const size_t T = (size_t)spec->time, rows = layer->max_rows > 0 ? (size_t)layer->max_rows : 0;
    rnn_impl *n = calloc(1, (size_t)size->workspace);
    if (!n) return ars_error(ARS_ENOMEM, "rnn: out of memory for %zu rows of %zu steps x %d units", rows, T, H);
    n->time = spec->time;
    n->features = F;
    n->units = H;
    n->norms = n->data;
    n->da = (float *)(n->norms + T);
    n->hprev = n->da + rows * T * (size_t)H;
    if (spec->init[0] == '\0') {   /* torch.nn.RNN's U(-1/sqrt(units), 1/sqrt(units)) */
        strcpy(spec->init, "uniform");
        spec->init_arg = (float)(1.0 / sqrt((double)H));
    }
    layer->impl = n;
    layer->time_grad_norm = n->norms;
    layer->time_grad_count = spec->time;
    layer->ops = &rnn_ops;
    ars_layer_add_param(layer, "weight_ih", ars_shape_matrix(H, F), ARS_ROLE_WEIGHT);
    ars_layer_add_param(layer, "weight_hh", ars_shape_matrix(H, H), ARS_ROLE_WEIGHT);
    ars_layer_add_param(layer, "bias_ih", ars_shape_vector(H), ARS_ROLE_BIAS);
    ars_layer_add_param(layer, "bias_hh", ars_shape_vector(H), ARS_ROLE_BIAS);
    return 0;
}

static int rnn_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_has(p, "init") ? ars_layer_parse_init(p, spec) : 0;   /* default U(+-1/sqrt(units)) */
}

/* Not calibrated by LSUV: its output passes through tanh (bounded, not
 * linear in its weights). */
const ars_layer_kind ars_kind_rnn = {
    .name = "rnn",
    .summary = "Elman tanh recurrence, h_t = tanh(W x_t + U h_t-1 + b)",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS,
    .units = "<width per step>",
    .parse = rnn_parse,
    .size = rnn_size,
    .setup = rnn_setup,
};
