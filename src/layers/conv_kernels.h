/* conv_kernels: the numerical core of the convolutional layers (issue 15):
 * conv2d, maxpool2d, avgpool2d and global average pooling on NCHW float32
 * tensors, with the semantics and parameter layout of PyTorch's
 * nn.Conv2d (weight [out, in/groups, kh, kw], bias [out]), nn.MaxPool2d,
 * nn.AvgPool2d (count_include_pad = True, ceil_mode = False) and
 * nn.AdaptiveAvgPool2d(1). The layer glue owns parameters, activations and
 * the layer interface; these functions only compute. Forward and backward
 * allocate nothing: the caller provides a workspace of
 * ars_conv2d_workspace_floats() floats.
 *
 * Products. A convolution is, per group, the matrix product
 *   Y_g [O/g, cols] = W_g [O/g, K] x col_g [K, cols],   K = C/g * kh * kw
 * where col (im2col) holds the input pixel under every kernel tap for every
 * output position. Backward: dW_g = dY_g col_g^T, dcol_g = W_g^T dY_g,
 * scattered back into dx (col2im); under PER_SAMPLE, for stride 1 where it
 * fits (ars_conv2d_dx_as_convolution), dx is instead the convolution of dy
 * with the flipped, transposed weight, one product per sample written
 * straight into dx. Two layouts of the columns
 * (ars_conv_strategy):
 *   ARS_CONV_PER_SAMPLE  one sample at a time: cols = oh*ow, Y_g is already
 *                        the NCHW output of that sample, dY is read in
 *                        place. Narrow products where outputs are small
 *                        (7x7: 49 columns), N products per pass.
 *   ARS_CONV_BATCHED     a block of B samples (ars_conv2d_chunk) at once:
 *                        cols = B*oh*ow, one wide product per block, then
 *                        the output rows copied back to NCHW (and dY copied
 *                        into the same layout in backward): one more pass
 *                        over y and dy.
 * A 1x1 kernel with stride 1 and no padding needs no im2col: under
 * PER_SAMPLE, x itself is the column matrix and dx is written by the GEMM.
 *
 * Which one wins depends on the shape and the machine, so the layer picks
 * at setup with ars_conv_plan_choose(), which times both. Measured with
 * bench/bench_conv (batch 128, OPENBLAS_NUM_THREADS=1, process CPU time,
 * median of 5 interleaved rounds, forward + backward with dx except for the
 * 1-channel first layers) on an AMD EPYC (Zen, 2 cores with 512 KiB L2
 * each, shared with other work), OpenBLAS 0.3.21 core Zen; the quietest of
 * three runs. Kernel time / raw cblas_sgemm time of the same products (of
 * the cheaper layout), and the faster strategy at the whole batch:
 *                                 per_sample  batched  faster
 *   ResNet stem 1->16 3x3 28x28       1.41      2.02   per_sample 1.43x
 *   16->16 3x3 28x28                  1.26      1.31   per_sample 1.04x
 *   16->32 3x3 stride 2 28->14        1.87      1.92   per_sample 1.03x
 *   16->32 1x1 stride 2 projection    2.03      2.42   per_sample 1.19x
 *   32->32 3x3 14x14                  1.21      1.26   per_sample 1.04x
 *   32->64 3x3 stride 2 14->7         1.60      1.57   batched    1.02x
 *   32->64 1x1 stride 2 projection    1.70      1.77   per_sample 1.04x
 *   64->64 3x3 7x7                    1.30      1.29   batched    1.01x
 *   small CNN 1->32 3x3 28x28         1.42      2.08   per_sample 1.46x
 *   small CNN 32->64 3x3 14x14        1.11      1.17   per_sample 1.05x
 *   small CNN 1->32 5x5 28x28         1.32      1.66   per_sample 1.25x
 *   small CNN 32->64 5x5 14x14        1.12      1.12   per_sample 1.01x
 * The ResNet-20 convolutions of one step: per_sample 480 ms, batched
 * 495 ms, as ars_conv_plan_choose picked per shape 479 ms: 1.28x the raw
 * sgemm time of their products (1.34x in a busier run). The batched layout
 * wins reliably only on the 7x7 stage, by 1-7% over four runs; its blocks
 * are best at 2^18 floats (tried 2^16 .. 2^24: larger blocks leave the
 * caches and lose up to 1.5x). Winners within 5% swap from run to run (and
 * one disturbed run turned 16->32 stride 2 to batched by 1.23x); those of
 * 1-channel inputs and 1x1 convolutions (per_sample, 1.2-1.5x) never did.
 * Where the rest goes: im2col and col2im (one copy per kernel tap for
 * stride 1 with "same" padding; a gather per output row for stride 2,
 * hence the 1.6-2.4x of the stride-2 layers, whose products are also the
 * smallest), OpenBLAS zeroing the dcol product's output (beta = 0,
 * K x oh*ow floats), the bias and db passes. Tried and dropped: im2col by
 * tiles of output rows sized for L2 (2^13 .. 2^16 floats): no faster,
 * slower below 2^15.
 *
 * Since then, dx as a convolution under PER_SAMPLE (the table above is
 * from before): the W_g^T dY product of a ResNet's 16-channel stage has a
 * depth of only 16 and ran at 46% of the square-GEMM rate, 1.5x the
 * forward product's time; W_t col(dy) has the forward's shape (70%), and
 * col2im and zeroing dx go away for an im2col of dy. bench_conv, old and
 * new binaries interleaved, two runs each, process CPU time at load 8-10
 * on a 2-vCPU AMD EPYC (Zen 3, OpenBLAS core Zen): backward of 16->16
 * 28x28 24.4-25.4 -> 19.8-21.1 ms, 32->32 14x14 19.2-20.0 -> 15.5-15.9 ms,
 * 64->64 7x7 per_sample 16.2-16.5 -> 15.1-15.2 ms (per_sample now the
 * faster layout there too); the ResNet-20 convolutions of one step
 * 504-519 -> 445-464 ms. Layers that widen (the small CNN's 32->64, 64->128)
 * keep W^T dY: dy's columns would not fit in x's workspace, and their dcol
 * products are deep enough (77-87% of the rate). Not done: the same for
 * the batched layout and for stride 2 (dy dilated by the stride). */
#ifndef ARSENAL_CONV_KERNELS_H
#define ARSENAL_CONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* The shape of one convolution. The caller sets every field but out_h and
 * out_w (no defaults: stride, dilation and groups are 1 in PyTorch's
 * default), then ars_conv_geometry_init() checks it and sets those two. */
typedef struct ars_conv_geometry {
    int in_channels, in_h, in_w;
    int out_channels;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dilation_h, dilation_w;
    int groups;
    int out_h, out_w;   /* set by ars_conv_geometry_init */
} ars_conv_geometry;

typedef enum ars_conv_strategy {
    ARS_CONV_PER_SAMPLE = 0,
    ARS_CONV_BATCHED = 1
} ars_conv_strategy;
enum { ARS_CONV_STRATEGIES = 2 };

/* ARS_CONV_BATCHED puts as many samples in one block as keep the block's
 * column matrix and output block within this many floats (at least one
 * sample): see ars_conv2d_chunk. */
enum { ARS_CONV_BLOCK_FLOATS = 1 << 18 };

/* Validates g (positive sizes, strides, dilations and groups, non-negative
 * padding, channels divisible by groups, the dilated kernel within the
 * padded input, every tensor size and matrix dimension within an int) and
 * sets g->out_h, g->out_w = floor((in + 2 pad - dilation (k - 1) - 1) /
 * stride) + 1. ARS_EINVAL with a message stating the shapes otherwise. */
int ars_conv_geometry_init(ars_conv_geometry *g);

/* "strategy" names: "per_sample", "batched". */
const char *ars_conv_strategy_name(ars_conv_strategy strategy);

/* 1 when backward under ARS_CONV_PER_SAMPLE computes dx as a convolution of
 * dy with the flipped, transposed weight (stride 1, padding at most
 * dilation (k - 1), dy's columns no larger than x's; see conv_kernels.c):
 * per group and sample one product W_t [C/g, O/g kh kw] x col(dy) [O/g kh
 * kw, H W] instead of W^T dY [C/g kh kw, oh ow] and col2im. */
int ars_conv2d_dx_as_convolution(const ars_conv_geometry *g);

/* Floats of the weight [out, in/groups, kh, kw]; of one sample's input
 * [C, H, W] and output [O, oh, ow]. */
size_t ars_conv2d_weight_floats(const ars_conv_geometry *g);
size_t ars_conv2d_in_floats(const ars_conv_geometry *g);
size_t ars_conv2d_out_floats(const ars_conv_geometry *g);

/* Samples per block under strategy for a call on rows samples (1 under
 * ARS_CONV_PER_SAMPLE; under ARS_CONV_BATCHED min(rows, the samples that
 * fit ARS_CONV_BLOCK_FLOATS), at least 1). */
int ars_conv2d_chunk(const ars_conv_geometry *g, int rows, ars_conv_strategy strategy);

/* Exact workspace, in floats, of forward and backward on up to max_rows
 * samples with strategy (0 for a 1x1 stride-1 unpadded kernel under
 * ARS_CONV_PER_SAMPLE). */
size_t ars_conv2d_workspace_floats(const ars_conv_geometry *g, int max_rows, ars_conv_strategy strategy);

/* y [n, O, oh, ow] = conv(x [n, C, H, W], w) + b; b may be NULL (no bias).
 * workspace: ars_conv2d_workspace_floats(g, >= n, strategy) floats, its
 * content on entry ignored. n may be 0. */
void ars_conv2d_forward(const ars_conv_geometry *g, ars_conv_strategy strategy, int n, const float *x,
                        const float *w, const float *b, float *y, float *workspace);

/* From dy [n, O, oh, ow] and the forward's x: dw [O, C/g, kh, kw] and db [O]
 * overwritten with the gradient summed over the n samples (zero when n is
 * 0), dx [n, C, H, W] overwritten. db NULL: no bias gradient; dx NULL: the
 * input gradient is skipped (the first layer). workspace as forward. */
void ars_conv2d_backward(const ars_conv_geometry *g, ars_conv_strategy strategy, int n, const float *x,
                         const float *w, const float *dy, float *dw, float *db, float *dx, float *workspace);

/* Times forward + backward (with dx) of both strategies on one block of
 * the batched strategy (min(max_rows, its chunk) samples): a warm-up call
 * each, then 5 interleaved trials of about a millisecond, and sets *best to
 * the one with the smaller median. seconds (may be NULL) gets each one's
 * median time of one forward + backward on that block. A setup-time call:
 * it allocates its own buffers (ARS_ENOMEM if it cannot) and takes 5-20 ms
 * for the shapes of a ResNet on 28x28 images. */
int ars_conv_plan_choose(const ars_conv_geometry *g, int max_rows, ars_conv_strategy *best,
                         double seconds[ARS_CONV_STRATEGIES]);

/* ---- pooling ------------------------------------------------------------ */

/* The shape of a max or average pooling over each of channels planes. The
 * caller sets channels, in_h, in_w, kernel, stride (0 = the kernel size, as
 * PyTorch's stride=None) and padding; ars_pool_geometry_init() checks them
 * (positive kernel, padding at most half the kernel as PyTorch requires, the
 * kernel within the padded input, sizes within an int) and sets out_h,
 * out_w = floor((in + 2 pad - k) / stride) + 1 (ceil_mode = False). */
typedef struct ars_pool_geometry {
    int channels, in_h, in_w;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int out_h, out_w;   /* set by ars_pool_geometry_init */
} ars_pool_geometry;

int ars_pool_geometry_init(ars_pool_geometry *g);

/* y [n, C, oh, ow] = the max of each window (padding counts as -inf, a NaN
 * wins, ties go to the first in row-major scan order, as PyTorch);
 * argmax [n, C, oh, ow] = its index iy * in_w + ix within the input plane. */
void ars_maxpool2d_forward(const ars_pool_geometry *g, int n, const float *x, float *y, int32_t *argmax);
/* dx [n, C, H, W] overwritten: dy routed to the saved argmax positions. */
void ars_maxpool2d_backward(const ars_pool_geometry *g, int n, const float *dy, const int32_t *argmax,
                            float *dx);

/* y = the window mean, padded zeros included in the count. */
void ars_avgpool2d_forward(const ars_pool_geometry *g, int n, const float *x, float *y);
/* dx [n, C, H, W] overwritten. */
void ars_avgpool2d_backward(const ars_pool_geometry *g, int n, const float *dy, float *dx);

/* [n, channels, hw] -> [n, channels]: the mean of each plane of hw floats. */
void ars_global_avgpool_forward(int n, int channels, int hw, const float *x, float *y);
/* dx [n, channels, hw] = dy / hw, overwritten. */
void ars_global_avgpool_backward(int n, int channels, int hw, const float *dy, float *dx);

#endif
