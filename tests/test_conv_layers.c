/* test_conv_layers: the convolutional layers (issue 15) against central
 * finite differences (ars_gradcheck_layer / ars_gradcheck_model, tolerance
 * ARS_GRADCHECK_TOLERANCE, see include/arsenal/gradcheck.h): conv2d over
 * stride, padding, dilation, groups (depthwise included), bias on and off
 * and odd sizes under both product layouts; maxpool2d, avgpool2d,
 * global_avgpool, flatten; batchnorm2d in train and eval mode; basic blocks
 * with the identity and the projection shortcut and a small CNN as whole
 * models. Also: both layouts against a direct double-precision convolution
 * on a shape whose per-sample products run in several row tiles and whose
 * batched products run in several blocks; an empty batch; impossible shapes
 * refused by ars_run_config_load + ars_model_estimate (and
 * ars_model_create) with FILE:LINE and the computed shapes in the message;
 * and the memory estimate against what ars_model_create allocates for a
 * small CNN and a ResNet-20 (measured as tests/test_model_size.c does). */
#include "testutil.h"

#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/gradcheck.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"
#include "../src/layers/conv_kernels.h"

#define TOL ARS_GRADCHECK_TOLERANCE

static double worst_error;   /* over the whole run, printed at the end of each test */

static void print_result(const char *label, const ars_gradcheck_result *r)
{
    print_message("  %-46s checked %4zu resolved %4zu kinks %2zu  rel %.1e (raw %.1e)  noise %.1e  %s\n", label,
                  r->checked, r->resolved, r->kinks, r->max_rel_error, r->raw_rel_error, r->noise, r->worst);
}

static void assert_passed(const char *label, const ars_gradcheck_result *r, int min_resolved_fraction)
{
    print_result(label, r);
    assert_true(r->checked > 0);
    /* the gradients stand above the noise: the check is not vacuous */
    if (!(r->resolved * (size_t)min_resolved_fraction >= r->checked))
        fail_msg("%s: only %zu of %zu coordinates resolved", label, r->resolved, r->checked);
    if (!(r->max_rel_error < TOL))
        fail_msg("%s: max relative error %.3e at %s >= %.0e", label, r->max_rel_error, r->worst, TOL);
    if (r->raw_rel_error > worst_error) worst_error = r->raw_rel_error;
}

static void check_layer(const char *label, const ars_layer_spec *spec, ars_shape in, int rows, uint64_t seed,
                        int eval)
{
    ars_gradcheck_options options = {0};
    options.eval = eval;
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer(spec, in, rows, seed, &options, &result));
    assert_passed(label, &result, 4);
}

/* ---- conv2d ---------------------------------------------------------------- */

typedef struct {
    const char *label;
    int c, h, w;             /* input image */
    int out, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias;
} conv_case;

static const conv_case conv_cases[] = {
    {"3x3 stride 1 padding 1", 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2 padding 1, odd 7x7", 3, 7, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2 padding 1, odd 7x5", 2, 7, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0},
    {"5x5 stride 1 padding 2, no bias", 2, 5, 6, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1, 0},
    {"1x1 stride 1 (pointwise: no im2col)", 4, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1},
    {"1x1 stride 1 no bias", 4, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0},
    {"1x1 stride 2 (projection), no bias", 4, 6, 6, 6, 1, 1, 2, 2, 0, 0, 1, 1, 1, 0},
    {"3x3 dilation 2 padding 2", 2, 7, 7, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1},
    {"3x3 dilation 2x1, stride 1x2", 2, 8, 7, 3, 3, 3, 1, 2, 1, 1, 2, 1, 1, 1},
    {"3x3 groups 2", 4, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1},
    {"3x3 depthwise (groups = channels)", 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, 1},
    {"3x3 depthwise x2 stride 2, no bias", 3, 7, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 3, 0},
    {"3x2 kernel stride 2x1 padding 1x0", 3, 7, 6, 4, 3, 2, 2, 1, 1, 0, 1, 1, 1, 1},
    {"3x3 stride 3 (unread remainder)", 2, 7, 5, 3, 3, 3, 3, 3, 0, 0, 1, 1, 1, 1},
    {"5x5 stride 2 on 3x3 padded to 5x5", 2, 3, 3, 3, 5, 5, 2, 2, 1, 1, 1, 1, 1, 1},
    {"1x3 kernel on a 1-row image", 2, 1, 9, 2, 1, 3, 1, 1, 0, 1, 1, 1, 1, 1},
};

static ars_layer_spec conv_spec(const conv_case *k, int layout)
{
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "conv2d");
    spec.channels = k->out;
    spec.kernel[0] = k->kh;
    spec.kernel[1] = k->kw;
    spec.stride[0] = k->sh;
    spec.stride[1] = k->sw;
    spec.padding[0] = k->ph;
    spec.padding[1] = k->pw;
    spec.dilation[0] = k->dh;
    spec.dilation[1] = k->dw;
    spec.groups = k->groups;
    spec.bias = k->bias;
    spec.layout = layout;
    return spec;
}

static void test_conv2d_gradients(void **state)
{
    (void)state;
    worst_error = 0;
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        for (int layout = 1; layout <= 2; layout++) {
            const conv_case *k = &conv_cases[i];
            ars_layer_spec spec = conv_spec(k, layout);
            char label[96];
            snprintf(label, sizeof label, "conv2d %s, %s", k->label, layout == 1 ? "per_sample" : "batched");
            check_layer(label, &spec, ars_shape_image(k->c, k->h, k->w), 3, 200 + i, 0);
        }
    print_message("  conv2d: largest raw relative error %.1e\n", worst_error);
}

/* ---- both layouts against a direct convolution, in tiles and blocks ---------- */

/* y, and for dy: dw, db, dx, in double, by the definition. */
static void direct_conv(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *b,
                        const float *dy, double *y, double *dw, double *db, double *dx)
{
    const int Cg = g->in_channels / g->groups, Og = g->out_channels / g->groups;
    const int H = g->in_h, W = g->in_w, oh = g->out_h, ow = g->out_w, kh = g->kernel_h, kw = g->kernel_w;
    memset(dw, 0, sizeof(double) * ars_conv2d_weight_floats(g));
    memset(db, 0, sizeof(double) * (size_t)g->out_channels);
    memset(dx, 0, sizeof(double) * (size_t)n * ars_conv2d_in_floats(g));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < g->out_channels; o++) {
            const int gi = o / Og;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    const size_t at = (((size_t)i * g->out_channels + o) * oh + oy) * ow + ox;
                    double s = b[o];
                    const double d = dy[at];
                    db[o] += d;
                    for (int c = 0; c < Cg; c++)
                        for (int ki = 0; ki < kh; ki++) {
                            const int iy = oy * g->stride_h - g->pad_h + ki * g->dilation_h;
                            if (iy < 0 || iy >= H) continue;
                            for (int kj = 0; kj < kw; kj++) {
                                const int ix = ox * g->stride_w - g->pad_w + kj * g->dilation_w;
                                if (ix < 0 || ix >= W) continue;
                                const size_t xi = (((size_t)i * g->in_channels + gi * Cg + c) * H + iy) * W + ix;
                                const size_t wi = (((size_t)o * Cg + c) * kh + ki) * kw + kj;
                                s += (double)w[wi] * x[xi];
                                dw[wi] += d * x[xi];
                                dx[xi] += d * w[wi];
                            }
                        }
                    y[at] = s;
                }
        }
}

static double rel_diff(const float *got, const double *want, size_t n)
{
    double scale = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
        const double d = fabs((double)got[i] - want[i]);
        if (d > diff || isnan(d)) diff = isnan(d) ? INFINITY : d;
    }
    return diff / (scale > 1e-3 ? scale : 1e-3);
}

/* A shape big enough that ARS_CONV_BATCHED splits the batch into several
 * blocks, run through the layer (spec.layout 1 and 2); both must give the
 * direct convolution's y, dx, dw and db to float rounding. The reference
 * test's shapes are too small for the split. */
static void test_conv2d_blocks(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {"3x3 padding 1 (contiguous taps)", 16, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
        {"3x3 stride 2 groups 2", 32, 33, 31, 16, 3, 3, 2, 2, 1, 1, 1, 1, 2, 1},
    };
    enum { ROWS = 30 };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *k = &cases[ci];
        ars_conv_geometry g = {.in_channels = k->c, .in_h = k->h, .in_w = k->w, .out_channels = k->out,
                               .kernel_h = k->kh, .kernel_w = k->kw, .stride_h = k->sh, .stride_w = k->sw,
                               .pad_h = k->ph, .pad_w = k->pw, .dilation_h = k->dh, .dilation_w = k->dw,
                               .groups = k->groups};
        ARS_ASSERT_OK(ars_conv_geometry_init(&g));
        /* the split this case is for */
        const int chunk = ars_conv2d_chunk(&g, ROWS, ARS_CONV_BATCHED);
        print_message("  %s: [%d, %d, %d] -> [%d, %d, %d], %d rows: batched blocks of %d samples\n", k->label, k->c,
                      k->h, k->w, g.out_channels, g.out_h, g.out_w, ROWS, chunk);
        assert_true(chunk > 1 && chunk < ROWS);

        const size_t in = (size_t)ROWS * ars_conv2d_in_floats(&g), out = (size_t)ROWS * ars_conv2d_out_floats(&g);
        const size_t wn = ars_conv2d_weight_floats(&g);
        float *x = malloc(in * sizeof *x), *dy = malloc(out * sizeof *dy);
        double *y = malloc(out * sizeof *y), *dw = malloc(wn * sizeof *dw), *db = malloc(sizeof *db * (size_t)k->out);
        double *dx = malloc(in * sizeof *dx);
        float *got_y = malloc(out * sizeof *got_y), *got_dx = malloc(in * sizeof *got_dx);
        assert_true(x && dy && y && dw && db && dx && got_y && got_dx);
        ars_rng_normal(x, in, 0.0f, 1.0f, 7, ars_stream(ARS_STREAM_DATA, 1), 0);
        ars_rng_normal(dy, out, 0.0f, 1.0f, 7, ars_stream(ARS_STREAM_DATA, 2), 0);
        for (int layout = 1; layout <= 2; layout++) {
            ars_layer_spec spec = conv_spec(k, layout);
            ars_model model;
            ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_image(k->c, k->h, k->w), ROWS));
            ars_layer *layer = &model.layers[0];
            assert_int_equal(layer->tuning, layout);
            ars_gradcheck_randomize_model(&model, 11);
            const float *w = layer->param + layer->params[0].offset, *b = layer->param + layer->params[1].offset;
            if (layout == 1) direct_conv(&g, ROWS, x, w, b, dy, y, dw, db, dx);
            const ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS};
            ARS_ASSERT_OK(layer->ops->forward(layer, &pass, x, got_y));
            ARS_ASSERT_OK(layer->ops->backward(layer, &pass, x, got_y, dy, got_dx));
            const double ry = rel_diff(got_y, y, out), rdx = rel_diff(got_dx, dx, in);
            const double rdw = rel_diff(layer->grad + layer->params[0].offset, dw, wn);
            const double rdb = rel_diff(layer->grad + layer->params[1].offset, db, (size_t)k->out);
            print_message("    %-10s rel. differences to the direct convolution: y %.1e  dx %.1e  dw %.1e  db %.1e\n",
                          layout == 1 ? "per_sample" : "batched", ry, rdx, rdw, rdb);
            /* float sums of up to K = 144 products (y, dx) or 30 x 256 (dw, db) */
            assert_true(ry < 1e-5 && rdx < 1e-5 && rdw < 1e-5 && rdb < 1e-5);
            ars_model_destroy(&model);
        }
        free(x);
        free(dy);
        free(y);
        free(dw);
        free(db);
        free(dx);
        free(got_y);
        free(got_dx);
    }
}

/* A rank may get no rows of a batch: its gradients are zeros. */
static void test_empty_batch(void **state)
{
    (void)state;
    for (int layout = 1; layout <= 2; layout++) {
        ars_layer_spec spec = conv_spec(&conv_cases[0], layout);
        ars_model model;
        ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_image(3, 6, 6), 4));
        for (size_t i = 0; i < model.param_count; i++) model.grads[i] = NAN;
        const ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = 0, .global_rows = 4};
        float x[1] = {0}, dy[1] = {0};
        ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
        ARS_ASSERT_OK(ars_model_backward(&model, &pass, dy, NULL, NULL));
        for (size_t i = 0; i < model.param_count; i++) assert_true(model.grads[i] == 0.0f);
        ars_model_destroy(&model);
    }
}

/* ---- pooling, flatten, batchnorm2d --------------------------------------------- */

static ars_layer_spec pool_spec(const char *kind, int kh, int kw, int sh, int sw, int ph, int pw)
{
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    spec.kernel[0] = kh;
    spec.kernel[1] = kw;
    spec.stride[0] = sh;
    spec.stride[1] = sw;
    spec.padding[0] = ph;
    spec.padding[1] = pw;
    return spec;
}

static void test_pooling_gradients(void **state)
{
    (void)state;
    worst_error = 0;
    static const struct {
        const char *label;
        int c, h, w, kh, kw, sh, sw, ph, pw;
    } pools[] = {
        {"2x2 (stride = kernel)", 3, 6, 6, 2, 2, 0, 0, 0, 0},
        {"2x2 on odd 7x5 (last row, column unread)", 2, 7, 5, 2, 2, 0, 0, 0, 0},
        {"3x3 stride 2 padding 1 (overlapping)", 2, 7, 7, 3, 3, 2, 2, 1, 1},
        {"3x3 stride 1 padding 1", 2, 5, 5, 3, 3, 1, 1, 1, 1},
        {"3x2 stride 2x1 padding 1x0", 2, 7, 6, 3, 2, 2, 1, 1, 0},
    };
    static const char *const kinds[] = {"maxpool2d", "avgpool2d"};
    for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++)
        for (int k = 0; k < 2; k++) {
            ars_layer_spec spec = pool_spec(kinds[k], pools[i].kh, pools[i].kw, pools[i].sh, pools[i].sw,
                                            pools[i].ph, pools[i].pw);
            char label[96];
            snprintf(label, sizeof label, "%s %s", kinds[k], pools[i].label);
            /* maxpool: unselected pixels have gradient 0, so fewer are resolved */
            ars_gradcheck_result result;
            ARS_ASSERT_OK(ars_gradcheck_layer(&spec, ars_shape_image(pools[i].c, pools[i].h, pools[i].w), 3,
                                              300 + 2 * i + (size_t)k, NULL, &result));
            assert_passed(label, &result, k == 0 ? 10 : 4);
        }
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "global_avgpool");
    check_layer("global_avgpool [3, 5, 4]", &spec, ars_shape_image(3, 5, 4), 3, 320, 0);
    check_layer("global_avgpool [2, 1, 1]", &spec, ars_shape_image(2, 1, 1), 3, 321, 0);
    ars_layer_spec_defaults(&spec, "flatten");
    check_layer("flatten [3, 2, 4]", &spec, ars_shape_image(3, 2, 4), 3, 330, 0);
    print_message("  pooling: largest raw relative error %.1e\n", worst_error);
}

static void test_batchnorm2d_gradients(void **state)
{
    (void)state;
    worst_error = 0;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "batchnorm2d");
    check_layer("batchnorm2d train [3, 5, 5] x 4", &spec, ars_shape_image(3, 5, 5), 4, 401, 0);
    check_layer("batchnorm2d train odd [2, 3, 7] x 3", &spec, ars_shape_image(2, 3, 7), 3, 402, 0);
    /* one pixel per plane: the statistics come from the batch alone */
    check_layer("batchnorm2d train [4, 1, 1] x 5", &spec, ars_shape_image(4, 1, 1), 5, 403, 0);
    check_layer("batchnorm2d eval [3, 5, 5] x 4", &spec, ars_shape_image(3, 5, 5), 4, 404, 1);
    spec.sync = 0;
    check_layer("batchnorm2d train, sync off", &spec, ars_shape_image(3, 4, 4), 2, 405, 0);
    print_message("  batchnorm2d: largest raw relative error %.1e\n", worst_error);
}

/* ---- whole models ------------------------------------------------------------------ */

/* Every layer with parameters of the model of a run file's text, on
 * input images [c, h, w], with every conv2d (and residual_add's
 * shortcut conv) in the given layout, at the relative step `step` (0: the
 * default 3e-3).
 *
 * Step: a train-mode BatchNorm over a few rows makes one conv weight move
 * every pre-activation of its channel, so at the default step several
 * relu corners fall within h of a perturbation and no one-sided quotient
 * avoids them all: the projection block scored up to 1.0e-2 (raw 6.6e-2,
 * 23 kinks) there. At 1e-3 they are rare: at most 4e-3 over 16 seeds. The
 * same blocks without their relus score 0 at the default step (below):
 * the gradient is right, the kinks are the checker's. */
static void check_model(const char *label, const char *text, ars_shape input, int rows, int layout, uint64_t seed,
                        double step)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    for (int i = 0; i < count; i++)
        if (strcmp(specs[i].kind, "conv2d") == 0) specs[i].layout = layout;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, input, rows));
    for (int i = 0; i < model.layer_count; i++)   /* the shortcut's 1x1 conv runs in its layer's tuning */
        if (strcmp(model.layers[i].spec.kind, "residual_add") == 0 && model.layers[i].param_count)
            model.layers[i].tuning = layout;
    ars_gradcheck_randomize_model(&model, seed);
    const size_t n = (size_t)rows * (size_t)model.in_dim;
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    ars_rng_normal(x, n, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, 99), 0);
    ars_gradcheck_result *results = calloc((size_t)model.layer_count, sizeof *results);
    assert_non_null(results);
    const ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = rows, .global_rows = rows, .seed = seed, .step = 3};
    const ars_gradcheck_options options = {.step = step};
    ARS_ASSERT_OK(ars_gradcheck_model(&model, &pass, x, seed, &options, results));
    print_message("  %s (%s):\n", label, layout == 1 ? "per_sample" : "batched");
    for (int i = 0; i < model.layer_count; i++) {
        if (model.layers[i].param_count == 0) {
            assert_int_equal(results[i].checked, 0);
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "  %s", model.layers[i].name);
        assert_passed(name, &results[i], 2);
    }
    free(results);
    free(x);
    free(specs);
    ars_model_destroy(&model);
}

#define RUN "[run]\ndata = spirals\n"

static void test_basic_block_gradients(void **state)
{
    (void)state;
    worst_error = 0;
    /* a conv stem before each block: its gradient is wrong if the block's
     * skip path loses its share */
    for (int layout = 1; layout <= 2; layout++) {
        check_model("conv stem + basic block, identity shortcut",
                    RUN "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\n[basic_block]\nchannels = 4\n"
                        "[global_avgpool]\n[dense]\nunits = 3\n",
                    ars_shape_image(2, 6, 6), 4, layout, 501, 1e-3);
        check_model("conv stem + basic block, projection shortcut (stride 2, 4 -> 6 channels)",
                    RUN "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\n[basic_block]\nchannels = 6\nstride = 2\n"
                        "[global_avgpool]\n[dense]\nunits = 3\n",
                    ars_shape_image(2, 7, 7), 4, layout, 502, 1e-3);
        /* the block's layers without the relus: no kinks, the default step */
        check_model("the projection block without relus (default step)",
                    RUN "[residual]\n[conv2d]\nchannels = 6\nkernel = 3\nstride = 2\npadding = 1\nbias = false\n"
                        "[batchnorm2d]\n[conv2d]\nchannels = 6\nkernel = 3\npadding = 1\nbias = false\n[batchnorm2d]\n"
                        "[end]\n[global_avgpool]\n[dense]\nunits = 3\n",
                    ars_shape_image(4, 7, 7), 4, layout, 503, 0);
    }
    print_message("  basic blocks: largest raw relative error %.1e\n", worst_error);
}

/* The small CNN of a Fashion-MNIST run file, on small images. */
static void test_small_cnn_gradients(void **state)
{
    (void)state;
    worst_error = 0;
    for (int layout = 1; layout <= 2; layout++)
        check_model("small CNN (the second conv's bias feeds a BatchNorm: gradient 0)",
                    RUN "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\nbias = false\n[batchnorm2d]\n[relu]\n"
                        "[maxpool2d]\nkernel = 2\n[conv2d]\nchannels = 6\nkernel = 3\ngroups = 2\n[batchnorm2d]\n"
                        "[relu]\n[avgpool2d]\nkernel = 2\n[flatten]\n[dense]\nunits = 5\n",
                    ars_shape_image(1, 10, 10), 4, layout, 601, 1e-3);
    print_message("  small CNN: largest raw relative error %.1e\n", worst_error);
}

/* ---- impossible shapes ------------------------------------------------------------- */

/* Each run file loads (its keys are valid) and its model is refused by
 * ars_model_estimate, before anything is allocated, and by
 * ars_model_create, with the same FILE:LINE message stating the shapes. */
static void test_impossible_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *text;
        int flat;   /* 1: a flat [784] input, else [1, 28, 28] */
        const char *fragments[3];
    } cases[] = {
        {"kernel larger than the padded input",
         RUN "[conv2d]\nchannels = 8\nkernel = 3\n[maxpool2d]\nkernel = 2\n[conv2d]\nchannels = 8\nkernel = 15\n"
             "padding = 0\n",
         0,
         {"test.cfg:8: layer 002_conv2d: [conv2d] on [8, 13, 13]",
          "kernel 15x15 (dilation 1) is larger than the padded input 13x13 (input 13x13, padding 0)", NULL}},
        {"dilated kernel larger than the padded input",
         RUN "[conv2d]\nchannels = 2\nkernel = 5\ndilation = 8\npadding = 1\n", 0,
         {"test.cfg:3: layer 000_conv2d: [conv2d] on [1, 28, 28]", "spanning 33x33",
          "larger than the padded input 30x30"}},
        {"input channels not divisible by groups",
         RUN "[conv2d]\nchannels = 6\nkernel = 3\n[conv2d]\nchannels = 8\nkernel = 3\ngroups = 4\n", 0,
         {"test.cfg:6: layer 001_conv2d: [conv2d] on [6, 26, 26]", "in_channels 6 is not divisible by groups 4",
          NULL}},
        {"output channels not divisible by groups",
         RUN "[conv2d]\nchannels = 4\nkernel = 3\n[conv2d]\nchannels = 6\nkernel = 3\ngroups = 4\n", 0,
         {"test.cfg:6: layer 001_conv2d: [conv2d] on [4, 26, 26]", "out_channels 6 is not divisible by groups 4",
          NULL}},
        {"conv2d on a flat input",
         RUN "[conv2d]\nchannels = 8\nkernel = 3\n[relu]\n[dense]\nunits = 10\n", 1,
         {"test.cfg:3: layer 000_conv2d: [conv2d] needs an image input [channels, height, width], found [784]",
          NULL, NULL}},
        {"conv2d after a dense layer",
         RUN "[conv2d]\nchannels = 4\nkernel = 3\n[dense]\nunits = 64\n[conv2d]\nchannels = 8\nkernel = 3\n", 0,
         {"test.cfg:8: layer 002_conv2d: [conv2d] needs an image input [channels, height, width], found [64]",
          "image layers go before [dense] and [flatten]", NULL}},
        {"batchnorm2d after flatten",
         RUN "[conv2d]\nchannels = 4\nkernel = 3\n[flatten]\n[batchnorm2d]\n[dense]\nunits = 10\n", 0,
         {"test.cfg:7: layer 002_batchnorm2d: [batchnorm2d] needs an image input", "found [2704]", NULL}},
        {"pooling after flatten",
         RUN "[flatten]\n[maxpool2d]\nkernel = 2\n", 0,
         {"test.cfg:4: layer 001_maxpool2d: [maxpool2d] needs an image input", "found [784]", NULL}},
        {"global_avgpool on a flat input",
         RUN "[dense]\nunits = 16\n[global_avgpool]\n", 0,
         {"test.cfg:5: layer 001_global_avgpool: [global_avgpool] needs an image input", "found [16]", NULL}},
        {"pool window larger than the padded input",
         RUN "[conv2d]\nchannels = 4\nkernel = 5\nstride = 4\n[maxpool2d]\nkernel = 9\npadding = 1\n", 0,
         {"test.cfg:7: layer 001_maxpool2d: [maxpool2d] on [4, 6, 6]",
          "kernel 9x9 is larger than the padded input 8x8", NULL}},
        {"pool padding more than half the window",
         RUN "[avgpool2d]\nkernel = 3\npadding = 2\n", 0,
         {"test.cfg:3: layer 000_avgpool2d: [avgpool2d] on [1, 28, 28]", "padding 2 is more than half the kernel 3x3",
          NULL}},
        {"a residual block whose size no 1x1 stride maps",
         RUN "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\n[residual]\n[conv2d]\nchannels = 4\nkernel = 5\n[end]\n",
         0,
         {"test.cfg:11: layer 003_residual_add", "F(x) gives [4, 24, 24] from the block's input [4, 28, 28]",
          "no 1x1 convolution stride maps one size onto the other"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int count;
        ars_layer_spec *specs = ars_test_load_specs(cases[i].text, &count);
        const ars_shape input = cases[i].flat ? ars_shape_vector(784) : ars_shape_image(1, 28, 28);
        ars_model_size size;
        ars_model model;
        for (int step = 0; step < 2; step++) {
            int rc = step == 0 ? ars_model_estimate(specs, count, input, 16, &size)
                               : ars_model_create(&model, specs, count, input, 16);
            const char *msg = ars_error_message();
            if (step == 0) print_message("  %-46s %s\n", cases[i].what, msg);
            if (rc != ARS_EINVAL)
                fail_msg("%s: %s returned %d (%s), expected ARS_EINVAL", cases[i].what,
                         step == 0 ? "ars_model_estimate" : "ars_model_create", rc, msg);
            for (int f = 0; f < 3 && cases[i].fragments[f]; f++)
                if (!strstr(msg, cases[i].fragments[f]))
                    fail_msg("%s: %s's message '%s' lacks '%s'", cases[i].what,
                             step == 0 ? "ars_model_estimate" : "ars_model_create", msg, cases[i].fragments[f]);
        }
        free(specs);
    }
}

/* ---- the memory estimate ----------------------------------------------------------- */

static double heap_bytes(void)
{
    struct mallinfo2 m = mallinfo2();
    return (double)m.uordblks + (double)m.hblkhd;
}

static void check_estimate(const char *label, const char *text, ars_shape input, int rows)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    ars_model_size size;
    ARS_ASSERT_OK(ars_model_estimate(specs, count, input, rows, &size));
    const double before = heap_bytes();
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, input, rows));
    const double built = heap_bytes() - before;
    assert_int_equal(size.out_dim, model.out_dim);
    assert_true(ars_shape_equal(&size.out_shape, &model.out_shape));
    assert_true(size.params == (double)model.param_count);
    assert_true(size.state == (double)model.state_count);
    ars_model_destroy(&model);
    free(specs);
    if (built <= 0) {   /* a sanitizer's allocator: glibc's counters do not move */
        print_message("  %-24s estimate %11.0f bytes (allocator not measurable here)\n", label, size.bytes);
        return;
    }
    const double ratio = size.bytes / built;
    print_message("  %-24s %3d layers, %8.0f params: estimate %11.0f bytes, built %11.0f bytes: ratio %.4f "
                  "(workspaces %.0f, activations %.0f)\n", label, count, size.params, size.bytes, built, ratio,
                  size.workspace, size.activations);
    /* what malloc adds per block (16 bytes) over a few hundred blocks */
    assert_true(fabs(ratio - 1.0) < 0.01);
}

static void test_estimate_matches_allocation(void **state)
{
    (void)state;
    check_estimate("small CNN",
                   RUN "[conv2d]\nchannels = 16\nkernel = 3\npadding = 1\nbias = false\n[batchnorm2d]\n[relu]\n"
                       "[maxpool2d]\nkernel = 2\n[conv2d]\nchannels = 32\nkernel = 3\npadding = 1\nbias = false\n"
                       "[batchnorm2d]\n[relu]\n[maxpool2d]\nkernel = 2\n[flatten]\n[dense]\nunits = 128\n"
                       "activation = relu\n[dense]\nunits = 10\n",
                   ars_shape_image(1, 28, 28), 32);
    check_estimate("ResNet-20",
                   RUN "[conv2d]\nchannels = 16\nkernel = 3\npadding = 1\nbias = false\n[batchnorm2d]\n[relu]\n"
                       "[repeat]\ncount = 3\n[basic_block]\nchannels = 16\n[end]\n"
                       "[basic_block]\nchannels = 32\nstride = 2\n[repeat]\ncount = 2\n[basic_block]\nchannels = 32\n[end]\n"
                       "[basic_block]\nchannels = 64\nstride = 2\n[repeat]\ncount = 2\n[basic_block]\nchannels = 64\n[end]\n"
                       "[global_avgpool]\n[dense]\nunits = 10\n",
                   ars_shape_image(1, 28, 28), 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_gradients),
        cmocka_unit_test(test_conv2d_blocks),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_pooling_gradients),
        cmocka_unit_test(test_batchnorm2d_gradients),
        cmocka_unit_test(test_basic_block_gradients),
        cmocka_unit_test(test_small_cnn_gradients),
        cmocka_unit_test(test_impossible_shapes),
        cmocka_unit_test(test_estimate_matches_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
