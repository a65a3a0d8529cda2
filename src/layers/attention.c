/* attention: multi-head scaled dot-product self-attention over [rows, time *
 * features], as torch.nn.MultiheadAttention(features, heads) with q = k = v
 * = x. Per sample and head h (head_dim = features / heads):
 *     [q | k | v] = x W_in^T + b_in            one GEMM over rows * time steps
 *     P = softmax(q_h k_h^T / sqrt(head_dim))   [time, time]; causal = 1 masks
 *                                               step j > i (an upper triangle of 0)
 *     o_h = P v_h                               written into its head's columns
 *     y = [o_1 ... o_heads] W_out^T + b_out      one GEMM
 * Every product is a GEMM (src/gemm.c): the big projections over the whole batch,
 * the attention ones looped over samples and heads with leading dimensions
 * that pick a head's columns in place (no copies). The probabilities are
 * kept for backward: the workspace holds max_rows * heads * time^2 floats. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../gemm.h"
#include "arsenal/error.h"
#include "layers_internal.h"
#include "fast_math.h"

typedef struct {
    int time, features, heads, head_dim;
    float scale;      /* 1 / sqrt(head_dim) */
    float *qkv;       /* [max_rows, time, 3 * features]: q | k | v of each step */
    float *att;       /* [max_rows, heads, time, time]: softmax probabilities */
    float *ctx;       /* [max_rows, time, features]: the heads' outputs side by side */
    float *dctx;      /* [max_rows, time, features] */
    float *dqkv;      /* [max_rows, time, 3 * features] */
    float *datt;      /* [time, time]: dP, then dS, of one sample and head */
    double *norms;    /* [time] per-step gradient norms (probe steps) */
    double data[];
} attention_impl;

enum { W_IN, B_IN, W_OUT, B_OUT };

/* A float's bits as an int32 of the same order (for non-NaN values: the
 * magnitude bits of negatives flipped), and back. The row maximum is then
 * an integer max, which vectorizes where a float compare does not. */
static inline int32_t order_key(float v)
{
    const int32_t i = ars_float_bits(v);
    return i ^ ((i >> 31) & 0x7fffffff);
}

static inline float from_order_key(int32_t k) { return ars_bits_float(k ^ ((k >> 31) & 0x7fffffff)); }

/* Row i of the scores in place -> probabilities over its first n entries
 * (n < len under the causal mask); the rest become 0. An infinite or NaN
 * maximum makes the row NaN, for the trainer's non-finite guard to see (a
 * NaN score below the maximum comes from a NaN input step, which reaches
 * the output through v as well). */
static void softmax_row(float *s, int n, int len)
{
    int32_t key = order_key(s[0]);
    for (int j = 1; j < n; j++) {
        const int32_t k = order_key(s[j]);
        key = k > key ? k : key;
    }
    const float max = from_order_key(key);
    if (!isfinite(max)) {   /* +inf or a NaN (whose key sorts it to an end) */
        for (int j = 0; j < len; j++) s[j] = NAN;
        return;
    }
    for (int j = 0; j < n; j++) s[j] = ars_exp_neg(max - s[j]);
    /* four partial sums in double: independent chains the compiler may pair */
    double part[4] = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= n; j += 4)
        for (int k = 0; k < 4; k++) part[k] += s[j + k];
    for (; j < n; j++) part[0] += s[j];
    const double sum = (part[0] + part[1]) + (part[2] + part[3]);
    const float inv = (float)(1.0 / sum);
    for (j = 0; j < n; j++) s[j] *= inv;
    for (j = n; j < len; j++) s[j] = 0.0f;
}

/* y[steps, width] = bias (broadcast), the start of a GEMM with beta = 1. */
static void preload_bias(float *y, const float *bias, int steps, int width)
{
    for (int s = 0; s < steps; s++) memcpy(y + (size_t)s * width, bias, sizeof(float) * (size_t)width);
}

/* db[width] = sum over steps of dy. */
static void sum_rows(float *db, const float *dy, int steps, int width)
{
    memset(db, 0, sizeof(float) * (size_t)width);
    for (int s = 0; s < steps; s++) {
        const float *row = dy + (size_t)s * width;
        for (int j = 0; j < width; j++) db[j] += row[j];
    }
}

static int attention_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    attention_impl *a = layer->impl;
    const int rows = pass->rows, T = a->time, D = a->features, D3 = 3 * D, dh = a->head_dim;
    const int steps = rows * T;
    const int causal = layer->spec.causal;
    if (rows < 0 || rows > layer->max_rows)
        return ars_error(ARS_EINVAL, "%s: batch of %d rows, capacity %d", layer->name, rows, layer->max_rows);
    if (rows == 0) return 0;
    const float *p = layer->param;
    const float *w_in = p + layer->params[W_IN].offset, *b_in = p + layer->params[B_IN].offset;
    const float *w_out = p + layer->params[W_OUT].offset, *b_out = p + layer->params[B_OUT].offset;

    preload_bias(a->qkv, b_in, steps, D3);
    ars_gemm(false, true, steps, D3, D, 1.0f, x, D, w_in, D, 1.0f, a->qkv, D3);
    for (int r = 0; r < rows; r++) {
        for (int h = 0; h < a->heads; h++) {
            const float *q = a->qkv + (size_t)r * T * D3 + (size_t)h * dh, *k = q + D, *v = q + 2 * D;
            float *att = a->att + ((size_t)r * a->heads + h) * T * T;
            /* scores[T, T] = scale * q k^T */
            ars_gemm(false, true, T, T, dh, a->scale, q, D3, k, D3, 0.0f, att, T);
            for (int i = 0; i < T; i++) softmax_row(att + (size_t)i * T, causal ? i + 1 : T, T);
            /* o[T, head_dim] = P v, into this head's columns of ctx */
            ars_gemm(false, false, T, dh, T, 1.0f, att, T, v, D3, 0.0f,
                        a->ctx + (size_t)r * T * D + (size_t)h * dh, D);
        }
    }
    preload_bias(y, b_out, steps, D);
    ars_gemm(false, true, steps, D, D, 1.0f, a->ctx, D, w_out, D, 1.0f, y, D);
    return 0;
}

/* Softmax backward per row: dS = P .* (dP - sum_j P dP), times the scale. */
static int attention_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                              const float *dy, float *dx)
{
    attention_impl *a = layer->impl;
    const int rows = pass->rows, T = a->time, D = a->features, D3 = 3 * D, dh = a->head_dim;
    const int steps = rows * T;
    const int causal = layer->spec.causal;
    ars_seq_record_norms(layer, pass, dy, D);
    if (rows == 0) {
        memset(layer->grad, 0, sizeof(float) * layer->param_size);
        return 0;
    }
    const float *w_in = layer->param + layer->params[W_IN].offset;
    const float *w_out = layer->param + layer->params[W_OUT].offset;
    float *g = layer->grad;
    float *dw_in = g + layer->params[W_IN].offset, *db_in = g + layer->params[B_IN].offset;
    float *dw_out = g + layer->params[W_OUT].offset, *db_out = g + layer->params[B_OUT].offset;

    /* output projection: dW_out = dy^T ctx, dctx = dy W_out */
    ars_gemm(true, false, D, D, steps, 1.0f, dy, D, a->ctx, D, 0.0f, dw_out, D);
    sum_rows(db_out, dy, steps, D);
    ars_gemm(false, false, steps, D, D, 1.0f, dy, D, w_out, D, 0.0f, a->dctx, D);

    float *ds = a->datt;
    for (int r = 0; r < rows; r++) {
        for (int h = 0; h < a->heads; h++) {
            const size_t head = (size_t)r * T * D3 + (size_t)h * dh;
            const float *q = a->qkv + head, *k = q + D, *v = q + 2 * D;
            float *dq = a->dqkv + head, *dk = dq + D, *dv = dq + 2 * D;
            const float *att = a->att + ((size_t)r * a->heads + h) * T * T;
            const float *dout = a->dctx + (size_t)r * T * D + (size_t)h * dh;
            /* dP[T, T] = dO v^T; dv = P^T dO */
            ars_gemm(false, true, T, T, dh, 1.0f, dout, D, v, D3, 0.0f, ds, T);
            ars_gemm(true, false, T, dh, T, 1.0f, att, T, dout, D, 0.0f, dv, D3);
            for (int i = 0; i < T; i++) {
                const float *pi = att + (size_t)i * T;
                float *di = ds + (size_t)i * T;
                const int n = causal ? i + 1 : T;   /* masked entries: P = 0, so dS = 0 */
                double dot = 0;
                for (int j = 0; j < n; j++) dot += (double)pi[j] * di[j];
                for (int j = 0; j < n; j++) di[j] = a->scale * pi[j] * (di[j] - (float)dot);
                for (int j = n; j < T; j++) di[j] = 0.0f;
            }
            /* dq = dS k; dk = dS^T q */
            ars_gemm(false, false, T, dh, T, 1.0f, ds, T, k, D3, 0.0f, dq, D3);
            ars_gemm(true, false, T, dh, T, 1.0f, ds, T, q, D3, 0.0f, dk, D3);
        }
    }
    /* input projection: dW_in = dqkv^T x, dx = dqkv W_in */
    ars_gemm(true, false, D3, D, steps, 1.0f, a->dqkv, D3, x, D, 0.0f, dw_in, D);
    sum_rows(db_in, a->dqkv, steps, D3);
    /* The key bias adds q_i . b_k to every score of row i, which softmax
     * ignores: its gradient is exactly 0. The sum above leaves rounding
     * noise, which Adam normalizes into real steps that differ with the
     * number of ranks (40x the parameter difference in
     * mpi_transformer_equivalence), so write the exact value. */
    memset(db_in + D, 0, sizeof(float) * (size_t)D);
    if (dx)
        ars_gemm(false, false, steps, D, D3, 1.0f, a->dqkv, D3, w_in, D, 0.0f,
                    dx, D);
    return 0;
}

static const ars_layer_ops attention_ops = {"attention", attention_forward, attention_backward, NULL};

/* The workspace of one layer, in floats after the [time] doubles of norms:
 * the one layout that both the size and the setup use. */
static double attention_floats(double rows, double T, double D, double heads)
{
    return rows * T * 3 * D * 2      /* qkv, dqkv */
           + rows * heads * T * T    /* att: the probabilities of every sample and head */
           + rows * T * D * 2        /* ctx, dctx */
           + T * T;                  /* datt */
}

static int attention_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                          ars_layer_size *size)
{
    const int in_dim = (int)ars_shape_count(in);
    int D, rc = ars_seq_features(spec, in, max_rows, &D);
    if (rc) return rc;
    if (spec->heads <= 0 || D % spec->heads != 0)
        return ars_error(ARS_EINVAL, "[attention] heads = %d must divide the %d features per step", spec->heads, D);
    if (spec->units > 0 && spec->units != D)   /* a [transformer] block states its width */
        return ars_error(ARS_EINVAL, "[transformer] units = %d but its input has %d features per step (%d = %d "
                         "steps x %d)", spec->units, D, in_dim, spec->time, D);
    if (3.0 * D > INT_MAX)
        return ars_error(ARS_EINVAL, "[attention] %d features per step: the q, k, v projection of 3 x %d is "
                         "more than %d", D, D, INT_MAX);
    size->out = ars_shape_matrix(spec->time, D);
    size->params = 3.0 * D * D + 3.0 * D + (double)D * D + D;
    size->workspace = sizeof(attention_impl) + sizeof(double) * (double)spec->time +
                      sizeof(float) * attention_floats(max_rows, spec->time, D, spec->heads);
    return 0;
}

static int attention_setup(ars_layer *layer, const ars_layer_size *size)
{
    const ars_layer_spec *spec = &layer->spec;
    const int D = layer->in_dim / spec->time;
    const size_t T = (size_t)spec->time, rows = layer->max_rows > 0 ? (size_t)layer->max_rows : 0;
    attention_impl *a = calloc(1, (size_t)size->workspace);
    if (!a)
        return ars_error(ARS_ENOMEM, "attention: out of memory for %zu rows of %zu steps x %d features", rows, T, D);
    a->time = spec->time;
    a->features = D;
    a->heads = spec->heads;
    a->head_dim = D / spec->heads;
    a->scale = (float)(1.0 / sqrt((double)a->head_dim));
    a->norms = a->data;
    a->qkv = (float *)(a->norms + T);
    a->dqkv = a->qkv + rows * T * 3 * D;
    a->att = a->dqkv + rows * T * 3 * D;
    a->ctx = a->att + rows * spec->heads * T * T;
    a->dctx = a->ctx + rows * T * D;
    a->datt = a->dctx + rows * T * D;
    layer->impl = a;
    layer->time_grad_norm = a->norms;
    layer->time_grad_count = spec->time;
    layer->ops = &attention_ops;
    /* PyTorch's names and shapes; both weights xavier_uniform by default,
     * as MultiheadAttention's in_proj_weight */
    ars_layer_add_param(layer, "in_proj_weight", ars_shape_matrix(3 * D, D), ARS_ROLE_WEIGHT);
    ars_layer_add_param(layer, "in_proj_bias", ars_shape_vector(3 * D), ARS_ROLE_BIAS);
    ars_layer_add_param(layer, "out_proj_weight", ars_shape_matrix(D, D), ARS_ROLE_WEIGHT);
    ars_layer_add_param(layer, "out_proj_bias", ars_shape_vector(D), ARS_ROLE_BIAS);
    return 0;
}

static int attention_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    int rc = ars_layer_parse_int(p, "heads", 1, 1, 1 << 16, &spec->heads);
    if (!rc) rc = ars_layer_parse_bool(p, "causal", 0, &spec->causal);
    if (!rc) rc = ars_layer_parse_init(p, spec);
    return rc;
}

/* LSUV calibrates the output projection only: scaling the queries and keys
 * would change the softmax temperature, not the output's scale. */
const ars_layer_kind ars_kind_attention = {
    .name = "attention",
    .summary = "multi-head self-attention over the time steps",
    .flags = ARS_KIND_SEQUENCE | ARS_KIND_PARAMS,
    .lsuv_weight = "out_proj_weight",
    .parse = attention_parse,
    .size = attention_size,
    .setup = attention_setup,
};
