/* conv_kernels: conv2d through im2col + GEMM (src/gemm.c) (two column layouts,
 * chosen by measurement), max / average / global average pooling, and the
 * validation of their shapes. NCHW float32, PyTorch semantics; see
 * conv_kernels.h. Nothing here allocates but ars_conv_plan_choose. */
#define _POSIX_C_SOURCE 200809L
#include "conv_kernels.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../gemm.h"
#include "arsenal/error.h"
#include "../simd.h"

/* ---- shapes --------------------------------------------------------------- */

/* "3" when both are 3, else "3x1": the shape fragments of the messages. */
static const char *pair_text(char *buf, size_t size, long long a, long long b)
{
    if (a == b) snprintf(buf, size, "%lld", a);
    else snprintf(buf, size, "%lldx%lld", a, b);
    return buf;
}

int ars_conv_geometry_init(ars_conv_geometry *g)
{
    char t1[48], t2[48];
    if (g->in_channels <= 0 || g->out_channels <= 0)
        return ars_error(ARS_EINVAL, "channels must be positive (found in_channels %d, out_channels %d)",
                         g->in_channels, g->out_channels);
    if (g->in_h <= 0 || g->in_w <= 0)
        return ars_error(ARS_EINVAL, "the input %dx%d must be non-empty", g->in_h, g->in_w);
    if (g->kernel_h <= 0 || g->kernel_w <= 0)
        return ars_error(ARS_EINVAL, "kernel %dx%d must be positive", g->kernel_h, g->kernel_w);
    if (g->stride_h <= 0 || g->stride_w <= 0)
        return ars_error(ARS_EINVAL, "stride %dx%d must be positive", g->stride_h, g->stride_w);
    if (g->dilation_h <= 0 || g->dilation_w <= 0)
        return ars_error(ARS_EINVAL, "dilation %dx%d must be positive", g->dilation_h, g->dilation_w);
    if (g->pad_h < 0 || g->pad_w < 0)
        return ars_error(ARS_EINVAL, "padding %dx%d must be non-negative", g->pad_h, g->pad_w);
    if (g->groups <= 0) return ars_error(ARS_EINVAL, "groups must be positive (found %d)", g->groups);
    if (g->in_channels % g->groups)
        return ars_error(ARS_EINVAL, "in_channels %d is not divisible by groups %d", g->in_channels, g->groups);
    if (g->out_channels % g->groups)
        return ars_error(ARS_EINVAL, "out_channels %d is not divisible by groups %d", g->out_channels, g->groups);

    /* in 64 bits: padding and dilation may be anything an int holds */
    const long long padded_h = (long long)g->in_h + 2LL * g->pad_h, padded_w = (long long)g->in_w + 2LL * g->pad_w;
    const long long span_h = (long long)g->dilation_h * (g->kernel_h - 1) + 1;
    const long long span_w = (long long)g->dilation_w * (g->kernel_w - 1) + 1;
    if (padded_h > INT_MAX || padded_w > INT_MAX)
        return ars_error(ARS_EINVAL, "the padded input %lldx%lld (input %dx%d, padding %s) does not fit in an int",
                         padded_h, padded_w, g->in_h, g->in_w, pair_text(t1, sizeof t1, g->pad_h, g->pad_w));
    if (span_h > padded_h || span_w > padded_w) {
        char span[64] = "";
        if (g->dilation_h > 1 || g->dilation_w > 1) snprintf(span, sizeof span, ", spanning %lldx%lld", span_h, span_w);
        return ars_error(ARS_EINVAL,
                         "kernel %dx%d (dilation %s%s) is larger than the padded input %lldx%lld (input %dx%d, "
                         "padding %s)",
                         g->kernel_h, g->kernel_w, pair_text(t1, sizeof t1, g->dilation_h, g->dilation_w), span,
                         padded_h, padded_w, g->in_h, g->in_w, pair_text(t2, sizeof t2, g->pad_h, g->pad_w));
    }
    const long long out_h = (padded_h - span_h) / g->stride_h + 1, out_w = (padded_w - span_w) / g->stride_w + 1;
    const int cg = g->in_channels / g->groups;
    /* cblas takes int dimensions and one sample's tensors are indexed in
     * int; the products in double, exact up to 2^53, so they cannot wrap */
    const double rows = (double)cg * g->kernel_h * g->kernel_w;   /* K of the products */
    if ((double)g->in_channels * g->in_h * g->in_w > INT_MAX)
        return ars_error(ARS_EINVAL, "the input %dx%dx%d (channels x height x width) has more than %d floats per sample",
                         g->in_channels, g->in_h, g->in_w, INT_MAX);
    if ((double)g->out_channels * out_h * out_w > INT_MAX)
        return ars_error(ARS_EINVAL,
                         "the output %dx%lldx%lld (channels x height x width) has more than %d floats per sample",
                         g->out_channels, out_h, out_w, INT_MAX);
    if (rows * g->out_channels > INT_MAX)
        return ars_error(ARS_EINVAL, "the weight %dx%dx%dx%d has more than %d floats", g->out_channels, cg,
                         g->kernel_h, g->kernel_w, INT_MAX);
    if (rows * (double)(out_h * out_w) > INT_MAX)
        return ars_error(ARS_EINVAL, "the column matrix %.0fx%lld of one sample (in_channels/groups x kernel, "
                         "output positions) has more than %d floats", rows, out_h * out_w, INT_MAX);
    g->out_h = (int)out_h;
    g->out_w = (int)out_w;
    return 0;
}

const char *ars_conv_strategy_name(ars_conv_strategy strategy)
{
    return strategy == ARS_CONV_BATCHED ? "batched" : "per_sample";
}

size_t ars_conv2d_weight_floats(const ars_conv_geometry *g)
{
    return (size_t)g->out_channels * (size_t)(g->in_channels / g->groups) * (size_t)g->kernel_h * (size_t)g->kernel_w;
}

size_t ars_conv2d_in_floats(const ars_conv_geometry *g)
{
    return (size_t)g->in_channels * (size_t)g->in_h * (size_t)g->in_w;
}

size_t ars_conv2d_out_floats(const ars_conv_geometry *g)
{
    return (size_t)g->out_channels * (size_t)g->out_h * (size_t)g->out_w;
}

/* A 1x1 kernel, stride 1, no padding: x is already the column matrix. */
static int is_pointwise(const ars_conv_geometry *g)
{
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 && g->pad_h == 0 &&
           g->pad_w == 0;
}

/* Rows of the column matrix (K) and floats per sample of one group's
 * column and output blocks under ARS_CONV_BATCHED. */
static size_t col_rows(const ars_conv_geometry *g)
{
    return (size_t)(g->in_channels / g->groups) * (size_t)g->kernel_h * (size_t)g->kernel_w;
}

static size_t batched_sample_floats(const ars_conv_geometry *g)
{
    return (col_rows(g) + (size_t)(g->out_channels / g->groups)) * (size_t)g->out_h * (size_t)g->out_w;
}

int ars_conv2d_chunk(const ars_conv_geometry *g, int rows, ars_conv_strategy strategy)
{
    if (strategy != ARS_CONV_BATCHED || rows <= 1) return 1;
    size_t fit = (size_t)ARS_CONV_BLOCK_FLOATS / batched_sample_floats(g);
    /* the block's columns (chunk * oh * ow) are a cblas int */
    size_t cap = (size_t)INT_MAX / ((size_t)g->out_h * (size_t)g->out_w);
    if (fit > cap) fit = cap;
    if (fit < 1) fit = 1;
    return fit < (size_t)rows ? (int)fit : rows;
}

/* Under ARS_CONV_PER_SAMPLE, dx of a stride-1 convolution is the
 * convolution of dy with the flipped, transposed weight (padding
 * dilation (k - 1) - pad), when that padding is not negative and dy's
 * columns for it fit where x's were: each sample's dx is then one product
 * W_t [C/g, O/g kh kw] x col(dy) [O/g kh kw, H W] written straight into dx,
 * instead of dcol = W^T dY [C/g kh kw, oh ow] scattered into dx by col2im.
 * In a ResNet stage (16 channels at 28x28) the W^T dY product has a depth
 * of only O/g = 16 and ran at 46% of the square-GEMM rate, W_t col(dy) has
 * the forward's shape (70%); col2im and zeroing dx go away, an im2col of
 * dy comes instead. *gt: the geometry of that convolution (dy -> dx). */
static int dx_as_convolution(const ars_conv_geometry *g, ars_conv_geometry *gt)
{
    if (is_pointwise(g) || g->stride_h != 1 || g->stride_w != 1) return 0;
    const int ph = g->dilation_h * (g->kernel_h - 1) - g->pad_h, pw = g->dilation_w * (g->kernel_w - 1) - g->pad_w;
    if (ph < 0 || pw < 0) return 0;
    const size_t og = (size_t)(g->out_channels / g->groups), kk = (size_t)g->kernel_h * (size_t)g->kernel_w;
    if (og * kk * (size_t)g->in_h * (size_t)g->in_w > col_rows(g) * (size_t)g->out_h * (size_t)g->out_w) return 0;
    *gt = (ars_conv_geometry){.in_channels = g->out_channels, .in_h = g->out_h, .in_w = g->out_w,
                              .out_channels = g->in_channels, .kernel_h = g->kernel_h, .kernel_w = g->kernel_w,
                              .stride_h = 1, .stride_w = 1, .pad_h = ph, .pad_w = pw,
                              .dilation_h = g->dilation_h, .dilation_w = g->dilation_w, .groups = g->groups,
                              .out_h = g->in_h, .out_w = g->in_w};
    return 1;
}

int ars_conv2d_dx_as_convolution(const ars_conv_geometry *g)
{
    ars_conv_geometry gt;
    return dx_as_convolution(g, &gt);
}

size_t ars_conv2d_workspace_floats(const ars_conv_geometry *g, int max_rows, ars_conv_strategy strategy)
{
    if (max_rows <= 0) return 0;
    if (strategy == ARS_CONV_BATCHED)
        return (size_t)ars_conv2d_chunk(g, max_rows, strategy) * batched_sample_floats(g);
    if (is_pointwise(g)) return 0;
    /* the columns; the flipped weight after them when dx is a convolution */
    ars_conv_geometry gt;
    return col_rows(g) * (size_t)g->out_h * (size_t)g->out_w +
           (dx_as_convolution(g, &gt) ? ars_conv2d_weight_floats(g) : 0);
}

/* ---- im2col / col2im --------------------------------------------------- */

/* The outputs [lo, hi) of one kernel tap whose input index o * stride + x0
 * (x0 = tap * dilation - pad) falls inside [0, in). */
static void tap_range(int x0, int stride, int in, int out, int *lo, int *hi)
{
    int a = x0 >= 0 ? 0 : (-x0 + stride - 1) / stride;
    int b = in - x0 <= 0 ? 0 : (in - x0 + stride - 1) / stride;
    if (a > out) a = out;
    if (b > out) b = out;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Stride 1 with ow == in_w ("same" padding): output row oy of a tap reads
 * input row oy + y0 from column x0 on, and consecutive rows follow each
 * other in both, so a tap's valid block is one contiguous run over its
 * rows shifted by y0 * W + x0; only the columns outside [xlo, xhi) need
 * fixing. One copy per tap instead of one per output row. */
static int is_contiguous(const ars_conv_geometry *g)
{
    return g->stride_h == 1 && g->stride_w == 1 && g->out_w == g->in_w;
}

/* Zeroes columns [0, xlo) and [xhi, ow) of rows [0, rows) of a tap's
 * row-major [rows, ow] block: the taps that fall in the left and right
 * padding. Column by column on purpose: a short zero loop per row becomes
 * a memset call per row, which cost more than the whole copy. */
static void zero_side_columns(float *block, int rows, int ow, int xlo, int xhi)
{
    for (int ox = 0; ox < xlo; ox++)
        for (int r = 0; r < rows; r++) block[(size_t)r * ow + ox] = 0.0f;
    for (int ox = xhi; ox < ow; ox++)
        for (int r = 0; r < rows; r++) block[(size_t)r * ow + ox] = 0.0f;
}

/* col[(c, ki, kj), oy * ow + ox] (rows ld floats apart) = the input pixel
 * under tap (ki, kj) of output (oy, ox) of channel c, 0 in the padding;
 * x: channels planes of one sample. */
ARS_VECTOR_CLONES
static void im2col(const ars_conv_geometry *g, int channels, const float *x, float *col, size_t ld)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w, sh = g->stride_h, sw = g->stride_w;
    const int contiguous = is_contiguous(g);
    for (int c = 0; c < channels; c++) {
        const float *xc = x + (size_t)c * H * W;
        for (int ki = 0; ki < g->kernel_h; ki++) {
            const int y0 = ki * g->dilation_h - g->pad_h;
            int ylo, yhi;
            tap_range(y0, sh, H, oh, &ylo, &yhi);
            for (int kj = 0; kj < g->kernel_w; kj++) {
                const int x0 = kj * g->dilation_w - g->pad_w;
                int xlo, xhi;
                tap_range(x0, sw, W, ow, &xlo, &xhi);
                float *row = col + ((size_t)(c * g->kernel_h + ki) * g->kernel_w + kj) * ld;
                const int yend = xhi > xlo ? yhi : ylo;   /* no valid column: all padding */
                memset(row, 0, sizeof(float) * (size_t)ylo * ow);
                memset(row + (size_t)yend * ow, 0, sizeof(float) * (size_t)(oh - yend) * ow);
                if (yend == ylo) continue;
                float *block = row + (size_t)ylo * ow;
                if (contiguous) {
                    /* the wrapped entries between rows are zeroed below */
                    const float *src = xc + (size_t)((ylo + y0) * W + xlo + x0);
                    memcpy(block + xlo, src, sizeof(float) * ((size_t)(yend - ylo - 1) * ow + (size_t)(xhi - xlo)));
                } else {
                    for (int oy = ylo; oy < yend; oy++) {
                        const float *xr = xc + (size_t)(oy * sh + y0) * W;
                        float *r = row + (size_t)oy * ow;
                        if (sw == 1) memcpy(r + xlo, xr + xlo + x0, sizeof(float) * (size_t)(xhi - xlo));
                        else
                            for (int ox = xlo; ox < xhi; ox++) r[ox] = xr[ox * sw + x0];
                    }
                }
                zero_side_columns(block, yend - ylo, ow, xlo, xhi);
            }
        }
    }
}

/* The adjoint of im2col: dx (channels planes of one sample) += every
 * column entry at the pixel it was read from. The contiguous path first
 * zeroes the entries that fall in the padding (col is scratch), then adds
 * a tap's rows as one run. */
ARS_VECTOR_CLONES
static void col2im(const ars_conv_geometry *g, int channels, float *col, size_t ld, float *dx)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w, sh = g->stride_h, sw = g->stride_w;
    const int contiguous = is_contiguous(g);
    for (int c = 0; c < channels; c++) {
        float *dc = dx + (size_t)c * H * W;
        for (int ki = 0; ki < g->kernel_h; ki++) {
            const int y0 = ki * g->dilation_h - g->pad_h;
            int ylo, yhi;
            tap_range(y0, sh, H, oh, &ylo, &yhi);
            for (int kj = 0; kj < g->kernel_w; kj++) {
                const int x0 = kj * g->dilation_w - g->pad_w;
                int xlo, xhi;
                tap_range(x0, sw, W, ow, &xlo, &xhi);
                if (xhi == xlo || yhi == ylo) continue;
                float *row = col + ((size_t)(c * g->kernel_h + ki) * g->kernel_w + kj) * ld;
                if (contiguous) {
                    float *block = row + (size_t)ylo * ow;
                    zero_side_columns(block, yhi - ylo, ow, xlo, xhi);
                    float *dst = dc + (size_t)((ylo + y0) * W + xlo + x0);
                    const float *src = block + xlo;
                    const size_t count = (size_t)(yhi - ylo - 1) * ow + (size_t)(xhi - xlo);
                    for (size_t j = 0; j < count; j++) dst[j] += src[j];
                    continue;
                }
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dr = dc + (size_t)(oy * sh + y0) * W;
                    const float *r = row + (size_t)oy * ow;
                    if (sw == 1) {
                        float *d = dr + (x0 + xlo);   /* x0 + xlo >= 0 */
                        const float *v = r + xlo;
                        for (int j = 0; j < xhi - xlo; j++) d[j] += v[j];
                    } else {
                        for (int ox = xlo; ox < xhi; ox++) dr[ox * sw + x0] += r[ox];
                    }
                }
            }
        }
    }
}

/* The sum of n floats: eight float partial sums (vectorized; each sums n/8
 * values), combined in double. */
static double sum_floats(const float *v, size_t n)
{
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += v[i + j];
    double s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    for (; i < n; i++) s += v[i];
    return s;
}

/* db[o] = sum over samples and positions of dy */
static void bias_grad(const ars_conv_geometry *g, int n, const float *dy, float *db)
{
    const size_t P = (size_t)g->out_h * g->out_w, out = ars_conv2d_out_floats(g);
    for (int o = 0; o < g->out_channels; o++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += sum_floats(dy + i * out + o * P, P);
        db[o] = (float)s;
    }
}

/* ---- conv2d ----------------------------------------------------------------- */

/* Products of one group gi (weights w_g = w + gi * Og * K, input channels
 * gi * Cg ..., output channels gi * Og ...):
 *   forward  Y [Og, cols] = W_g [Og, K] col [K, cols]
 *   dW_g [Og, K] (+)= dY [Og, cols] col^T
 *   dcol [K, cols] = W_g^T dY
 * PER_SAMPLE: cols = oh * ow of one sample, Y and dY in place in NCHW.
 * BATCHED: cols = nb * oh * ow of a block of samples, Y and dY copied
 * from and to NCHW. */

static void forward_per_sample(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *b,
                               float *y, float *ws)
{
    const int G = g->groups, Cg = g->in_channels / G, Og = g->out_channels / G;
    const int K = (int)col_rows(g), P = g->out_h * g->out_w;
    const size_t in = ars_conv2d_in_floats(g), out = ars_conv2d_out_floats(g), plane = (size_t)g->in_h * g->in_w;
    const int direct = is_pointwise(g);
    for (int i = 0; i < n; i++) {
        for (int gi = 0; gi < G; gi++) {
            const float *xg = x + i * in + (size_t)gi * Cg * plane;
            float *yg = y + i * out + (size_t)gi * Og * P;
            const float *col = xg;
            if (!direct) {
                im2col(g, Cg, xg, ws, (size_t)P);
                col = ws;
            }
            float beta = 0.0f;
            if (b) {
                /* preload the bias so the GEMM accumulates onto it */
                for (int o = 0; o < Og; o++) {
                    float *r = yg + (size_t)o * P;
                    const float v = b[gi * Og + o];
                    for (int p = 0; p < P; p++) r[p] = v;
                }
                beta = 1.0f;
            }
            ars_gemm(false, false, Og, P, K, 1.0f, w + (size_t)gi * Og * K, K, col, P,
                        beta, yg, P);
        }
    }
}

static void forward_batched(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *b,
                            float *y, float *ws)
{
    const int G = g->groups, Cg = g->in_channels / G, Og = g->out_channels / G;
    const int K = (int)col_rows(g), P = g->out_h * g->out_w, B = ars_conv2d_chunk(g, n, ARS_CONV_BATCHED);
    const size_t in = ars_conv2d_in_floats(g), out = ars_conv2d_out_floats(g), plane = (size_t)g->in_h * g->in_w;
    for (int i0 = 0; i0 < n; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B, cols = nb * P;
        float *col = ws, *res = ws + (size_t)K * cols;
        for (int gi = 0; gi < G; gi++) {
            for (int s = 0; s < nb; s++)
                im2col(g, Cg, x + (size_t)(i0 + s) * in + (size_t)gi * Cg * plane, col + (size_t)s * P, (size_t)cols);
            ars_gemm(false, false, Og, cols, K, 1.0f, w + (size_t)gi * Og * K, K, col,
                        cols, 0.0f, res, cols);
            /* res[o, s * P + p] -> y[i0 + s, gi * Og + o, p], plus the bias */
            for (int s = 0; s < nb; s++)
                for (int o = 0; o < Og; o++) {
                    const float *src = res + (size_t)o * cols + (size_t)s * P;
                    float *dst = y + (size_t)(i0 + s) * out + (size_t)(gi * Og + o) * P;
                    const float v = b ? b[gi * Og + o] : 0.0f;
                    for (int p = 0; p < P; p++) dst[p] = src[p] + v;
                }
        }
    }
}

void ars_conv2d_forward(const ars_conv_geometry *g, ars_conv_strategy strategy, int n, const float *x,
                        const float *w, const float *b, float *y, float *workspace)
{
    if (n <= 0) return;
    if (strategy == ARS_CONV_BATCHED) forward_batched(g, n, x, w, b, y, workspace);
    else forward_per_sample(g, n, x, w, b, y, workspace);
}

static void backward_per_sample(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *dy,
                                float *dw, float *dx, float *ws)
{
    const int G = g->groups, Cg = g->in_channels / G, Og = g->out_channels / G;
    const int K = (int)col_rows(g), P = g->out_h * g->out_w;
    const size_t in = ars_conv2d_in_floats(g), out = ars_conv2d_out_floats(g), plane = (size_t)g->in_h * g->in_w;
    const int direct = is_pointwise(g);
    ars_conv_geometry gt;
    const int transposed = dx && dx_as_convolution(g, &gt);
    const int kh = g->kernel_h, kw = g->kernel_w, Kt = Og * kh * kw;
    float *wt = ws + (size_t)K * P;   /* transposed: W_t [G][Cg][Og][kh][kw] */
    if (transposed)
        for (int gi = 0; gi < G; gi++)
            for (int o = 0; o < Og; o++)
                for (int c = 0; c < Cg; c++) {
                    const float *src = w + ((size_t)gi * Og + o) * K + (size_t)c * kh * kw;
                    float *dst = wt + ((size_t)gi * Cg + c) * Kt + (size_t)o * kh * kw;
                    for (int a = 0; a < kh * kw; a++) dst[a] = src[kh * kw - 1 - a];   /* flipped in both axes */
                }
    for (int i = 0; i < n; i++) {
        for (int gi = 0; gi < G; gi++) {
            const float *xg = x + i * in + (size_t)gi * Cg * plane;
            const float *dyg = dy + i * out + (size_t)gi * Og * P;
            const float *wg = w + (size_t)gi * Og * K;
            const float *col = xg;
            if (!direct) {
                im2col(g, Cg, xg, ws, (size_t)P);
                col = ws;
            }
            /* the first sample overwrites dW, the others accumulate */
            ars_gemm(false, true, Og, K, P, 1.0f, dyg, P, col, P, i == 0 ? 0.0f : 1.0f,
                        dw + (size_t)gi * Og * K, K);
            if (!dx) continue;
            float *dxg = dx + i * in + (size_t)gi * Cg * plane;
            if (direct) {
                ars_gemm(true, false, K, P, Og, 1.0f, wg, K, dyg, P, 0.0f, dxg, P);
                continue;
            }
            /* ws held the columns of x; dW has used them */
            if (transposed) {
                const int HW = (int)plane;
                im2col(&gt, Og, dyg, ws, plane);
                ars_gemm(false, false, Cg, HW, Kt, 1.0f, wt + (size_t)gi * Cg * Kt, Kt,
                            ws, HW, 0.0f, dxg, HW);
                continue;
            }
            ars_gemm(true, false, K, P, Og, 1.0f, wg, K, dyg, P, 0.0f, ws, P);
            memset(dxg, 0, sizeof(float) * (size_t)Cg * plane);
            col2im(g, Cg, ws, (size_t)P, dxg);
        }
    }
}

static void backward_batched(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *dy,
                             float *dw, float *dx, float *ws)
{
    const int G = g->groups, Cg = g->in_channels / G, Og = g->out_channels / G;
    const int K = (int)col_rows(g), P = g->out_h * g->out_w, B = ars_conv2d_chunk(g, n, ARS_CONV_BATCHED);
    const size_t in = ars_conv2d_in_floats(g), out = ars_conv2d_out_floats(g), plane = (size_t)g->in_h * g->in_w;
    for (int i0 = 0; i0 < n; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B, cols = nb * P;
        float *col = ws, *dyt = ws + (size_t)K * cols;
        for (int gi = 0; gi < G; gi++) {
            const float *wg = w + (size_t)gi * Og * K;
            for (int s = 0; s < nb; s++)
                im2col(g, Cg, x + (size_t)(i0 + s) * in + (size_t)gi * Cg * plane, col + (size_t)s * P, (size_t)cols);
            /* dy[i0 + s, gi * Og + o, p] -> dyt[o, s * P + p] */
            for (int s = 0; s < nb; s++)
                for (int o = 0; o < Og; o++)
                    memcpy(dyt + (size_t)o * cols + (size_t)s * P, dy + (size_t)(i0 + s) * out + (size_t)(gi * Og + o) * P,
                           sizeof(float) * (size_t)P);
            ars_gemm(false, true, Og, K, cols, 1.0f, dyt, cols, col, cols,
                        i0 == 0 ? 0.0f : 1.0f, dw + (size_t)gi * Og * K, K);
            if (!dx) continue;
            ars_gemm(true, false, K, cols, Og, 1.0f, wg, K, dyt, cols, 0.0f, col, cols);
            for (int s = 0; s < nb; s++) {
                float *dxg = dx + (size_t)(i0 + s) * in + (size_t)gi * Cg * plane;
                memset(dxg, 0, sizeof(float) * (size_t)Cg * plane);
                col2im(g, Cg, col + (size_t)s * P, (size_t)cols, dxg);
            }
        }
    }
}

void ars_conv2d_backward(const ars_conv_geometry *g, ars_conv_strategy strategy, int n, const float *x,
                         const float *w, const float *dy, float *dw, float *db, float *dx, float *workspace)
{
    if (n <= 0) {
        memset(dw, 0, sizeof(float) * ars_conv2d_weight_floats(g));
        if (db) memset(db, 0, sizeof(float) * (size_t)g->out_channels);
        return;
    }
    if (db) bias_grad(g, n, dy, db);
    if (strategy == ARS_CONV_BATCHED) backward_batched(g, n, x, w, dy, dw, dx, workspace);
    else backward_per_sample(g, n, x, w, dy, dw, dx, workspace);
}

/* ---- measurement ------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill_pattern(float *v, size_t n, unsigned seed)
{
    /* values in [-0.5, 0.5): no denormals, no NaN to slow either side */
    for (size_t i = 0; i < n; i++) v[i] = (float)(((i * 2654435761u + seed) >> 8) & 1023) / 1024.0f - 0.5f;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int ars_conv_plan_choose(const ars_conv_geometry *g, int max_rows, ars_conv_strategy *best,
                         double seconds[ARS_CONV_STRATEGIES])
{
    enum { ROUNDS = 5 };
    const int rows = max_rows < 1 ? 1 : ars_conv2d_chunk(g, max_rows, ARS_CONV_BATCHED);
    const size_t in = (size_t)rows * ars_conv2d_in_floats(g), out = (size_t)rows * ars_conv2d_out_floats(g);
    const size_t wn = ars_conv2d_weight_floats(g);
    size_t ws = ars_conv2d_workspace_floats(g, rows, ARS_CONV_PER_SAMPLE);
    const size_t wsb = ars_conv2d_workspace_floats(g, rows, ARS_CONV_BATCHED);
    if (wsb > ws) ws = wsb;
    /* one block: x, dx | y, dy | w, dw | b, db | workspace */
    float *buf = malloc(sizeof(float) * (2 * in + 2 * out + 2 * wn + 2 * (size_t)g->out_channels + ws + 1));
    if (!buf)
        return ars_error(ARS_ENOMEM, "timing the convolution strategies: no memory for %d samples", rows);
    float *x = buf, *dx = x + in, *y = dx + in, *dy = y + out, *w = dy + out, *dw = w + wn, *b = dw + wn;
    float *db = b + g->out_channels, *work = db + g->out_channels;
    fill_pattern(x, in, 1);
    fill_pattern(dy, out, 2);
    fill_pattern(w, wn, 3);
    fill_pattern(b, (size_t)g->out_channels, 4);
    /* a warm-up call of each (caches, OpenBLAS's buffers) also sets how
     * many calls make a trial of about a millisecond, then interleaved
     * trials so that a busy moment of the machine hits both */
    int calls = 1;
    for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
        const double t0 = now_seconds();
        ars_conv2d_forward(g, (ars_conv_strategy)s, rows, x, w, b, y, work);
        ars_conv2d_backward(g, (ars_conv_strategy)s, rows, x, w, dy, dw, db, dx, work);
        const double took = now_seconds() - t0;
        const int c = took > 0 ? (int)(1e-3 / took) : 8;
        if (c > calls) calls = c > 8 ? 8 : c;
    }
    double t[ARS_CONV_STRATEGIES][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
            const double t0 = now_seconds();
            for (int k = 0; k < calls; k++) {
                ars_conv2d_forward(g, (ars_conv_strategy)s, rows, x, w, b, y, work);
                ars_conv2d_backward(g, (ars_conv_strategy)s, rows, x, w, dy, dw, db, dx, work);
            }
            t[s][r] = (now_seconds() - t0) / calls;
        }
    free(buf);
    double med[ARS_CONV_STRATEGIES];
    for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
        qsort(t[s], ROUNDS, sizeof(double), compare_doubles);
        med[s] = t[s][ROUNDS / 2];
        if (seconds) seconds[s] = med[s];
    }
    *best = med[ARS_CONV_BATCHED] < med[ARS_CONV_PER_SAMPLE] ? ARS_CONV_BATCHED : ARS_CONV_PER_SAMPLE;
    return 0;
}

/* ---- pooling --------------------------------------------------------------- */

int ars_pool_geometry_init(ars_pool_geometry *g)
{
    char t1[48];
    if (g->channels <= 0) return ars_error(ARS_EINVAL, "channels must be positive (found %d)", g->channels);
    if (g->in_h <= 0 || g->in_w <= 0)
        return ars_error(ARS_EINVAL, "the input %dx%d must be non-empty", g->in_h, g->in_w);
    if (g->kernel_h <= 0 || g->kernel_w <= 0)
        return ars_error(ARS_EINVAL, "kernel %dx%d must be positive", g->kernel_h, g->kernel_w);
    if (g->stride_h < 0 || g->stride_w < 0)
        return ars_error(ARS_EINVAL, "stride %dx%d must be positive (or 0: the kernel size)", g->stride_h, g->stride_w);
    if (g->stride_h == 0) g->stride_h = g->kernel_h;
    if (g->stride_w == 0) g->stride_w = g->kernel_w;
    if (g->pad_h < 0 || g->pad_w < 0)
        return ars_error(ARS_EINVAL, "padding %dx%d must be non-negative", g->pad_h, g->pad_w);
    /* PyTorch's rule: beyond it a window could lie wholly in the padding */
    if (g->pad_h > g->kernel_h / 2 || g->pad_w > g->kernel_w / 2)
        return ars_error(ARS_EINVAL, "padding %s is more than half the kernel %dx%d",
                         pair_text(t1, sizeof t1, g->pad_h, g->pad_w), g->kernel_h, g->kernel_w);
    if ((double)g->channels * g->in_h * g->in_w > INT_MAX)
        return ars_error(ARS_EINVAL, "the input %dx%dx%d (channels x height x width) has more than %d floats per sample",
                         g->channels, g->in_h, g->in_w, INT_MAX);
    const long long padded_h = (long long)g->in_h + 2LL * g->pad_h, padded_w = (long long)g->in_w + 2LL * g->pad_w;
    if (padded_h > INT_MAX || padded_w > INT_MAX)
        return ars_error(ARS_EINVAL, "the padded input %lldx%lld (input %dx%d, padding %s) does not fit in an int",
                         padded_h, padded_w, g->in_h, g->in_w, pair_text(t1, sizeof t1, g->pad_h, g->pad_w));
    if (g->kernel_h > padded_h || g->kernel_w > padded_w)
        return ars_error(ARS_EINVAL, "kernel %dx%d is larger than the padded input %lldx%lld (input %dx%d, padding %s)",
                         g->kernel_h, g->kernel_w, padded_h, padded_w, g->in_h, g->in_w,
                         pair_text(t1, sizeof t1, g->pad_h, g->pad_w));
    g->out_h = (int)((padded_h - g->kernel_h) / g->stride_h + 1);
    g->out_w = (int)((padded_w - g->kernel_w) / g->stride_w + 1);
    return 0;
}

/* The window of output o along one axis: [*lo, *hi) clipped to the input,
 * and its extent within the padded input (the avgpool divisor). */
static int pool_window(int o, int stride, int pad, int kernel, int in, int *lo, int *hi)
{
    int start = o * stride - pad, end = start + kernel;
    if (end > in + pad) end = in + pad;
    const int extent = end - start;
    *lo = start < 0 ? 0 : start;
    *hi = end > in ? in : end;
    return extent;
}

/* One step of PyTorch's max scan: v replaces the best so far when it is
 * strictly greater or NaN (so ties keep the first, and of several NaNs the
 * last wins, as in PyTorch's CPU kernel). Written as selects, so that a loop
 * of them vectorizes; as a branch it is also mispredicted about every other
 * pixel on data without order. */
#define MAXPOOL_SCAN(best, at, v, idx)                   \
    do {                                                 \
        const int take_ = ((v) > (best)) | ((v) != (v)); \
        (best) = take_ ? (v) : (best);                   \
        (at) = take_ ? (idx) : (at);                     \
    } while (0)

/* The common case, kernel 2x2, stride 2, no padding (the pooling of
 * examples/cnn-fmnist.cfg): the four taps of a row of windows read as two
 * rows of pairs, vectorized over the outputs; each window still scanned in
 * row-major order with PyTorch's rule, so y and argmax are those of the
 * per-window loop below. On [128, 32, 28, 28] the per-window loop took
 * 16.2 ms of CPU time, this 2.5 ms (AMD EPYC, Zen 3, its AVX2 clone), and
 * the small CNN's three pools (forward and backward) went from 20% of its
 * training step to 9% (bench_step --workload W6 --products). */
ARS_VECTOR_CLONES
static void maxpool2d_forward_2x2(const ars_pool_geometry *g, size_t planes, const float *x, float *y,
                                  int32_t *argmax)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        for (int oy = 0; oy < oh; oy++) {
            const float *r0 = xp + (size_t)(2 * oy) * W, *r1 = r0 + W;
            float *yr = y + (pl * oh + oy) * ow;
            int32_t *ar = argmax + (pl * oh + oy) * ow;
            const int32_t base = 2 * oy * W;
            for (int j = 0; j < ow; j++) {
                float best = r0[2 * j];
                int32_t at = base + 2 * j;
                /* the first tap against -inf: taken unless it is -inf (at is its index then too) */
                MAXPOOL_SCAN(best, at, r0[2 * j + 1], base + 2 * j + 1);
                MAXPOOL_SCAN(best, at, r1[2 * j], base + W + 2 * j);
                MAXPOOL_SCAN(best, at, r1[2 * j + 1], base + W + 2 * j + 1);
                yr[j] = best;
                ar[j] = at;
            }
        }
    }
}

void ars_maxpool2d_forward(const ars_pool_geometry *g, int n, const float *x, float *y, int32_t *argmax)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w;
    const size_t planes = (size_t)(n > 0 ? n : 0) * g->channels;
    if (g->kernel_h == 2 && g->kernel_w == 2 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 0 &&
        g->pad_w == 0) {
        maxpool2d_forward_2x2(g, planes, x, y, argmax);
        return;
    }
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * oh * ow;
        int32_t *ap = argmax + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            pool_window(oy, g->stride_h, g->pad_h, g->kernel_h, H, &y0, &y1);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                pool_window(ox, g->stride_w, g->pad_w, g->kernel_w, W, &x0, &x1);
                /* PyTorch's scan: -inf start, strictly greater or NaN wins */
                float best = -INFINITY;
                int32_t at = y0 * W + x0;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) {
                        const float v = xp[iy * W + ix];
                        MAXPOOL_SCAN(best, at, v, iy * W + ix);
                    }
                yp[oy * ow + ox] = best;
                ap[oy * ow + ox] = at;
            }
        }
    }
}

void ars_maxpool2d_backward(const ars_pool_geometry *g, int n, const float *dy, const int32_t *argmax, float *dx)
{
    const size_t plane = (size_t)g->in_h * g->in_w, outs = (size_t)g->out_h * g->out_w;
    const size_t planes = (size_t)(n > 0 ? n : 0) * g->channels;
    memset(dx, 0, sizeof(float) * planes * plane);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dp = dx + pl * plane;
        const float *gp = dy + pl * outs;
        const int32_t *ap = argmax + pl * outs;
        /* overlapping windows (stride < kernel) may share a maximum */
        for (size_t o = 0; o < outs; o++) dp[ap[o]] += gp[o];
    }
}

void ars_avgpool2d_forward(const ars_pool_geometry *g, int n, const float *x, float *y)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w;
    const size_t planes = (size_t)(n > 0 ? n : 0) * g->channels;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            const int eh = pool_window(oy, g->stride_h, g->pad_h, g->kernel_h, H, &y0, &y1);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                const int ew = pool_window(ox, g->stride_w, g->pad_w, g->kernel_w, W, &x0, &x1);
                float s = 0.0f;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) s += xp[iy * W + ix];
                /* count_include_pad: the divisor counts the padded taps */
                yp[oy * ow + ox] = s / (float)(eh * ew);
            }
        }
    }
}

void ars_avgpool2d_backward(const ars_pool_geometry *g, int n, const float *dy, float *dx)
{
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w;
    const size_t planes = (size_t)(n > 0 ? n : 0) * g->channels;
    memset(dx, 0, sizeof(float) * planes * H * W);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dp = dx + pl * H * W;
        const float *gp = dy + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0, y1;
            const int eh = pool_window(oy, g->stride_h, g->pad_h, g->kernel_h, H, &y0, &y1);
            for (int ox = 0; ox < ow; ox++) {
                int x0, x1;
                const int ew = pool_window(ox, g->stride_w, g->pad_w, g->kernel_w, W, &x0, &x1);
                const float v = gp[oy * ow + ox] / (float)(eh * ew);
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) dp[iy * W + ix] += v;
            }
        }
    }
}

void ars_global_avgpool_forward(int n, int channels, int hw, const float *x, float *y)
{
    const size_t planes = (size_t)(n > 0 ? n : 0) * channels;
    for (size_t pl = 0; pl < planes; pl++) y[pl] = (float)(sum_floats(x + pl * hw, (size_t)hw) / hw);
}

void ars_global_avgpool_backward(int n, int channels, int hw, const float *dy, float *dx)
{
    const size_t planes = (size_t)(n > 0 ? n : 0) * channels;
    for (size_t pl = 0; pl < planes; pl++) {
        const float v = dy[pl] / (float)hw;
        float *d = dx + pl * hw;
        for (int i = 0; i < hw; i++) d[i] = v;
    }
}
