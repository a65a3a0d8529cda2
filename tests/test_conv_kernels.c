/* test_conv_kernels: src/layers/conv_kernels.c against direct loops in
 * double: conv2d forward, dW, db and dx under both strategies over strides,
 * paddings, dilations, groups (depthwise included), bias on and off, odd and
 * non-square shapes and a batch split into several blocks; the workspace
 * size (exact: a guard after it, NaN in it on entry); a central finite
 * difference check of the conv backward; max / average / global average
 * pooling forward and backward, PyTorch's tie and padding rules; the
 * validation messages of impossible shapes. */
#include "testutil.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "../src/layers/conv_kernels.h"

/* float products of up to a few hundred terms against double sums */
#define TOL 4e-6
enum { GUARD = 64 };
static const float GUARD_VALUE = 12345.0f;

static uint64_t rng_state = 88172645463325252ull;
static float uniform(void)   /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(size_t n)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = uniform();
    return v;
}

/* n floats plus a guard band, filled with NaN (a read of stale content shows) */
static float *nan_floats(size_t n)
{
    float *v = malloc(sizeof(float) * (n + GUARD));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = NAN;
    for (size_t i = 0; i < GUARD; i++) v[n + i] = GUARD_VALUE;
    return v;
}

static void check_guard(const float *v, size_t n, const char *what)
{
    for (size_t i = 0; i < GUARD; i++)
        if (v[n + i] != GUARD_VALUE) fail_msg("%s: written past its %zu floats (at +%zu)", what, n, i);
}

/* max |got - want| relative to max |want|; fails above TOL */
static double check_close(const char *label, const char *what, const float *got, const double *want, size_t n)
{
    double scale = 0, err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    if (scale == 0) scale = 1;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - want[i]);
        if (!(e <= err)) {   /* NaN counts as worst */
            err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    if (!(err / scale <= TOL))
        fail_msg("%s: %s differs at %zu: %.9g vs %.9g (rel %.3e of scale %.3g)", label, what, worst,
                 (double)got[worst], want[worst], err / scale, scale);
    return err / scale;
}

/* ---- reference convolution --------------------------------------------- */

typedef struct conv_case {
    int c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, n;
} conv_case;

static ars_conv_geometry case_geometry(const conv_case *k)
{
    ars_conv_geometry g = {.in_channels = k->c, .in_h = k->h, .in_w = k->w, .out_channels = k->o,
                           .kernel_h = k->kh, .kernel_w = k->kw, .stride_h = k->sh, .stride_w = k->sw,
                           .pad_h = k->ph, .pad_w = k->pw, .dilation_h = k->dh, .dilation_w = k->dw,
                           .groups = k->groups};
    ARS_ASSERT_OK(ars_conv_geometry_init(&g));
    return g;
}

/* Runs the statements given for every (output, input pixel, weight)
 * triple of the direct definition of the convolution, with yi, xi, wi
 * their indices in y, x and w. */
#define FOR_EACH_TAP(g, n, ...)                                                                         \
    do {                                                                                                 \
        const int Cg_ = (g)->in_channels / (g)->groups, Og_ = (g)->out_channels / (g)->groups;           \
        for (int i = 0; i < (n); i++)                                                                    \
            for (int o = 0; o < (g)->out_channels; o++)                                                  \
                for (int oy = 0; oy < (g)->out_h; oy++)                                                  \
                    for (int ox = 0; ox < (g)->out_w; ox++) {                                            \
                        const size_t yi = (((size_t)i * (g)->out_channels + o) * (g)->out_h + oy) * (g)->out_w + ox; \
                        for (int c = 0; c < Cg_; c++)                                                    \
                            for (int ki = 0; ki < (g)->kernel_h; ki++)                                   \
                                for (int kj = 0; kj < (g)->kernel_w; kj++) {                             \
                                    const int iy = oy * (g)->stride_h - (g)->pad_h + ki * (g)->dilation_h; \
                                    const int ix = ox * (g)->stride_w - (g)->pad_w + kj * (g)->dilation_w; \
                                    if (iy < 0 || iy >= (g)->in_h || ix < 0 || ix >= (g)->in_w) continue; \
                                    const int ci = (o / Og_) * Cg_ + c;                                  \
                                    const size_t xi = (((size_t)i * (g)->in_channels + ci) * (g)->in_h + iy) * (g)->in_w + ix; \
                                    const size_t wi = (((size_t)o * Cg_ + c) * (g)->kernel_h + ki) * (g)->kernel_w + kj; \
                                    __VA_ARGS__;                                                                \
                                }                                                                        \
                    }                                                                                    \
    } while (0)

static void ref_forward(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *b,
                        double *y)
{
    const size_t P = (size_t)g->out_h * g->out_w;
    for (size_t j = 0; j < (size_t)n * ars_conv2d_out_floats(g); j++)
        y[j] = b ? b[(j / P) % (size_t)g->out_channels] : 0.0;
    FOR_EACH_TAP(g, n, y[yi] += (double)x[xi] * w[wi]);
}

static void ref_backward(const ars_conv_geometry *g, int n, const float *x, const float *w, const float *dy,
                         double *dw, double *db, double *dx)
{
    const size_t P = (size_t)g->out_h * g->out_w;
    memset(dw, 0, sizeof(double) * ars_conv2d_weight_floats(g));
    memset(db, 0, sizeof(double) * (size_t)g->out_channels);
    memset(dx, 0, sizeof(double) * (size_t)n * ars_conv2d_in_floats(g));
    for (size_t j = 0; j < (size_t)n * ars_conv2d_out_floats(g); j++) db[(j / P) % (size_t)g->out_channels] += dy[j];
    FOR_EACH_TAP(g, n, {
        dw[wi] += (double)dy[yi] * x[xi];
        dx[xi] += (double)dy[yi] * w[wi];
    });
}

static void describe(char *buf, size_t size, const conv_case *k, ars_conv_strategy s)
{
    snprintf(buf, size, "%s N%d C%d %dx%d -> O%d k%dx%d s%dx%d p%dx%d d%dx%d g%d%s", ars_conv_strategy_name(s), k->n,
             k->c, k->h, k->w, k->o, k->kh, k->kw, k->sh, k->sw, k->ph, k->pw, k->dh, k->dw, k->groups,
             k->bias ? " bias" : "");
}

/* Forward, backward with db and dx, backward with neither: every output
 * against the double reference; the workspace exactly as large as said. */
static double run_case(const conv_case *k, ars_conv_strategy s)
{
    char label[160];
    describe(label, sizeof label, k, s);
    const ars_conv_geometry g = case_geometry(k);
    const int n = k->n;
    const size_t in = (size_t)n * ars_conv2d_in_floats(&g), out = (size_t)n * ars_conv2d_out_floats(&g);
    const size_t wn = ars_conv2d_weight_floats(&g), on = (size_t)g.out_channels;
    float *x = random_floats(in), *w = random_floats(wn), *b = k->bias ? random_floats(on) : NULL;
    float *dy = random_floats(out);
    double *yr = malloc(sizeof(double) * out), *dwr = malloc(sizeof(double) * wn);
    double *dbr = malloc(sizeof(double) * on), *dxr = malloc(sizeof(double) * (in ? in : 1));
    assert_true(yr && dwr && dbr && dxr);
    ref_forward(&g, n, x, w, b, yr);
    ref_backward(&g, n, x, w, dy, dwr, dbr, dxr);

    const size_t wsn = ars_conv2d_workspace_floats(&g, n, s);
    float *ws = nan_floats(wsn), *y = nan_floats(out), *dw = nan_floats(wn), *db = nan_floats(on);
    float *dx = nan_floats(in);
    double worst = 0, e;
    ars_conv2d_forward(&g, s, n, x, w, b, y, ws);
    check_guard(ws, wsn, "workspace (forward)");
    check_guard(y, out, "y");
    worst = check_close(label, "y", y, yr, out);

    for (size_t i = 0; i < wsn; i++) ws[i] = NAN;
    ars_conv2d_backward(&g, s, n, x, w, dy, dw, db, dx, ws);
    check_guard(ws, wsn, "workspace (backward)");
    check_guard(dw, wn, "dw");
    check_guard(db, on, "db");
    check_guard(dx, in, "dx");
    if ((e = check_close(label, "dw", dw, dwr, wn)) > worst) worst = e;
    if ((e = check_close(label, "db", db, dbr, on)) > worst) worst = e;
    if ((e = check_close(label, "dx", dx, dxr, in)) > worst) worst = e;

    /* the first layer: no dx, no bias; dW alone, overwritten again */
    for (size_t i = 0; i < wn; i++) dw[i] = NAN;
    for (size_t i = 0; i < wsn; i++) ws[i] = NAN;
    ars_conv2d_backward(&g, s, n, x, w, dy, dw, NULL, NULL, ws);
    check_guard(ws, wsn, "workspace (backward, no dx)");
    check_close(label, "dw (no dx)", dw, dwr, wn);

    free(x), free(w), free(b), free(dy), free(yr), free(dwr), free(dbr), free(dxr);
    free(ws), free(y), free(dw), free(db), free(dx);
    return worst;
}

static void run_cases(const conv_case *cases, size_t count)
{
    for (size_t i = 0; i < count; i++)
        for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
            const double e = run_case(&cases[i], (ars_conv_strategy)s);
            char label[160];
            describe(label, sizeof label, &cases[i], (ars_conv_strategy)s);
            print_message("  %-72s max rel err %.2e\n", label, e);
        }
}

/*                c  h  w  o kh kw sh sw ph pw dh dw  g bias n */
static void test_conv_basic(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {3, 7, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1, 1},
        {3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 3},
        {3, 7, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3},
        {3, 9, 8, 5, 3, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3},
        {3, 7, 5, 4, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1, 3},
        {2, 7, 5, 3, 7, 5, 1, 1, 0, 0, 1, 1, 1, 1, 3},   /* kernel = input: 1x1 output */
        {1, 8, 8, 6, 5, 5, 1, 1, 0, 0, 1, 1, 1, 1, 2},   /* one input channel, as a first layer */
        {3, 6, 6, 4, 3, 3, 2, 2, 0, 0, 1, 1, 1, 0, 3},   /* stride 2 dropping the last row and column */
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_conv_dilation_nonsquare(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {3, 7, 7, 4, 3, 3, 1, 1, 0, 0, 2, 2, 1, 1, 3},
        {3, 7, 7, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1, 0, 1},
        {3, 7, 5, 4, 2, 3, 1, 2, 1, 0, 2, 1, 1, 1, 3},
        {3, 7, 5, 4, 3, 1, 2, 1, 0, 1, 1, 1, 1, 1, 3},
        {2, 5, 9, 3, 1, 4, 1, 3, 1, 2, 1, 2, 1, 1, 3},
        {3, 7, 5, 4, 3, 2, 3, 1, 2, 1, 2, 3, 1, 0, 3},
        {2, 4, 2, 3, 3, 3, 1, 1, 3, 3, 3, 3, 1, 1, 2},   /* taps that see only padding ("same" size) */
        {2, 4, 3, 3, 3, 3, 2, 2, 3, 3, 3, 3, 1, 1, 2},   /* and with stride 2 */
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_conv_groups(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {4, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 3},
        {4, 7, 5, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2, 0, 1},
        {6, 7, 5, 6, 3, 2, 2, 1, 2, 1, 2, 2, 2, 1, 3},   /* groups with stride, padding, dilation */
        {3, 7, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, 3},   /* depthwise */
        {4, 7, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4, 0, 3},   /* depthwise, stride 2 */
        {3, 7, 5, 6, 3, 3, 1, 1, 1, 1, 2, 2, 3, 1, 3},   /* depthwise, channel multiplier 2 */
        {6, 5, 5, 9, 1, 1, 1, 1, 0, 0, 1, 1, 3, 1, 3},   /* grouped 1x1 */
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_conv_pointwise(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {3, 7, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 3},   /* the no-im2col shortcut */
        {3, 7, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1},
        {4, 7, 5, 6, 1, 1, 2, 2, 0, 0, 1, 1, 1, 0, 3},   /* ResNet's projection: 1x1 stride 2 */
        {3, 7, 5, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3},   /* 1x1 with padding: a border of bias */
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
    /* the shortcut needs no workspace at all */
    const ars_conv_geometry g = case_geometry(&cases[0]);
    assert_int_equal(ars_conv2d_workspace_floats(&g, 3, ARS_CONV_PER_SAMPLE), 0);
}

/* A batch the batched strategy splits into blocks of 2 + 1 samples. */
static void test_conv_blocks(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {4, 32, 32, 4, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1, 3},
        {8, 32, 32, 8, 5, 5, 1, 1, 2, 2, 1, 1, 2, 0, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ars_conv_geometry g = case_geometry(&cases[i]);
        const int chunk = ars_conv2d_chunk(&g, cases[i].n, ARS_CONV_BATCHED);
        print_message("  block of %d samples out of %d\n", chunk, cases[i].n);
        assert_true(chunk > 1 && chunk < cases[i].n);
        assert_int_equal(ars_conv2d_chunk(&g, cases[i].n, ARS_CONV_PER_SAMPLE), 1);
    }
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

/* No samples: nothing written forward, zero gradients backward. */
static void test_conv_empty_batch(void **state)
{
    (void)state;
    const conv_case k = {3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    const ars_conv_geometry g = case_geometry(&k);
    const size_t wn = ars_conv2d_weight_floats(&g);
    float *dw = nan_floats(wn), *db = nan_floats(4), y = GUARD_VALUE;
    for (int s = 0; s < ARS_CONV_STRATEGIES; s++) {
        assert_int_equal(ars_conv2d_workspace_floats(&g, 0, (ars_conv_strategy)s), 0);
        ars_conv2d_forward(&g, (ars_conv_strategy)s, 0, NULL, NULL, NULL, &y, NULL);
        assert_true(y == GUARD_VALUE);
        ars_conv2d_backward(&g, (ars_conv_strategy)s, 0, NULL, NULL, NULL, dw, db, NULL, NULL);
        for (size_t i = 0; i < wn; i++) assert_true(dw[i] == 0.0f);
        for (size_t i = 0; i < 4; i++) assert_true(db[i] == 0.0f);
    }
    free(dw), free(db);
}

/* Central differences of L = sum(y * r) in every weight, bias and input
 * entry against the backward pass with dy = r. L is linear in each, so the
 * difference has no truncation error: only the float rounding of y. */
static void fd_case(const conv_case *k, ars_conv_strategy s)
{
    char label[160];
    describe(label, sizeof label, k, s);
    const ars_conv_geometry g = case_geometry(k);
    const int n = k->n;
    const size_t in = (size_t)n * ars_conv2d_in_floats(&g), out = (size_t)n * ars_conv2d_out_floats(&g);
    const size_t wn = ars_conv2d_weight_floats(&g), on = (size_t)g.out_channels;
    float *x = random_floats(in), *w = random_floats(wn), *b = random_floats(on), *r = random_floats(out);
    float *y = malloc(sizeof(float) * out), *dw = malloc(sizeof(float) * wn), *db = malloc(sizeof(float) * on);
    float *dx = malloc(sizeof(float) * in), *ws = malloc(sizeof(float) * (ars_conv2d_workspace_floats(&g, n, s) + 1));
    assert_true(y && dw && db && dx && ws);
    ars_conv2d_backward(&g, s, n, x, w, r, dw, db, dx, ws);

    const float eps = 1e-2f;
    struct { const char *name; float *v, *grad; size_t count; } sets[] = {
        {"dw", w, dw, wn}, {"db", b, db, on}, {"dx", x, dx, in}};
    for (int t = 0; t < 3; t++) {
        double scale = 0, err = 0;
        for (size_t j = 0; j < sets[t].count; j++) {
            double loss[2];
            const float keep = sets[t].v[j];
            for (int side = 0; side < 2; side++) {
                sets[t].v[j] = keep + (side ? -eps : eps);
                ars_conv2d_forward(&g, s, n, x, w, b, y, ws);
                loss[side] = 0;
                for (size_t q = 0; q < out; q++) loss[side] += (double)y[q] * r[q];
            }
            sets[t].v[j] = keep;
            const double fd = (loss[0] - loss[1]) / (2.0 * eps), an = sets[t].grad[j];
            if (fabs(an) > scale) scale = fabs(an);
            if (fabs(fd - an) > err) err = fabs(fd - an);
        }
        print_message("  %-60s %s finite difference: max rel err %.2e\n", label, sets[t].name, err / scale);
        if (!(err / scale < 1e-4)) fail_msg("%s: %s finite difference off by %.3e of %.3g", label, sets[t].name, err, scale);
    }
    free(x), free(w), free(b), free(r), free(y), free(dw), free(db), free(dx), free(ws);
}

static void test_conv_finite_difference(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        {2, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 2},
        {4, 6, 5, 4, 2, 3, 1, 1, 1, 2, 2, 1, 2, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int s = 0; s < ARS_CONV_STRATEGIES; s++) fd_case(&cases[i], (ars_conv_strategy)s);
}

static void test_conv_plan_choose(void **state)
{
    (void)state;
    const conv_case k = {16, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    const ars_conv_geometry g = case_geometry(&k);
    ars_conv_strategy best = (ars_conv_strategy)-1;
    double seconds[ARS_CONV_STRATEGIES] = {0};
    ARS_ASSERT_OK(ars_conv_plan_choose(&g, 32, &best, seconds));
    print_message("  16x14x14 3x3, 32 rows: per_sample %.3f ms, batched %.3f ms -> %s\n", 1e3 * seconds[0],
                  1e3 * seconds[1], ars_conv_strategy_name(best));
    assert_true(best == ARS_CONV_PER_SAMPLE || best == ARS_CONV_BATCHED);
    assert_true(seconds[0] > 0 && seconds[1] > 0);
    assert_true(seconds[best] <= seconds[1 - best]);
}

/* ---- conv validation -------------------------------------------------------- */

static void expect_conv_error(ars_conv_geometry g, const char *message)
{
    ars_error_clear();
    assert_int_equal(ars_conv_geometry_init(&g), ARS_EINVAL);
    if (!strstr(ars_error_message(), message))
        fail_msg("expected \"%s\", got \"%s\"", message, ars_error_message());
    print_message("  refused: %s\n", ars_error_message());
}

static void test_conv_validation(void **state)
{
    (void)state;
    const ars_conv_geometry ok = {.in_channels = 3, .in_h = 3, .in_w = 3, .out_channels = 4, .kernel_h = 3,
                                  .kernel_w = 3, .stride_h = 1, .stride_w = 1, .dilation_h = 1, .dilation_w = 1,
                                  .groups = 1};
    ars_conv_geometry g = ok;
    ARS_ASSERT_OK(ars_conv_geometry_init(&g));
    assert_int_equal(g.out_h, 1);
    assert_int_equal(g.out_w, 1);
    g = ok;
    g.in_h = 7, g.in_w = 5, g.stride_h = g.stride_w = 2, g.pad_h = g.pad_w = 1;
    ARS_ASSERT_OK(ars_conv_geometry_init(&g));
    assert_int_equal(g.out_h, 4);   /* floor((7 + 2 - 3) / 2) + 1, as PyTorch */
    assert_int_equal(g.out_w, 3);

    g = ok, g.kernel_h = g.kernel_w = 5;
    expect_conv_error(g, "kernel 5x5 (dilation 1) is larger than the padded input 3x3 (input 3x3, padding 0)");
    g = ok, g.in_h = g.in_w = 4, g.dilation_h = g.dilation_w = 2;
    expect_conv_error(g, "kernel 3x3 (dilation 2, spanning 5x5) is larger than the padded input 4x4 (input 4x4, "
                         "padding 0)");
    g = ok, g.in_h = 1, g.in_w = 6, g.kernel_h = 5, g.pad_h = 1, g.pad_w = 0;
    expect_conv_error(g, "kernel 5x3 (dilation 1) is larger than the padded input 3x6 (input 1x6, padding 1x0)");
    g = ok, g.groups = 2;
    expect_conv_error(g, "in_channels 3 is not divisible by groups 2");
    g = ok, g.in_channels = 4, g.out_channels = 5, g.groups = 2;
    expect_conv_error(g, "out_channels 5 is not divisible by groups 2");
    g = ok, g.groups = 0;
    expect_conv_error(g, "groups must be positive (found 0)");
    g = ok, g.stride_w = 0;
    expect_conv_error(g, "stride 1x0 must be positive");
    g = ok, g.dilation_h = -1;
    expect_conv_error(g, "dilation -1x1 must be positive");
    g = ok, g.kernel_h = 0;
    expect_conv_error(g, "kernel 0x3 must be positive");
    g = ok, g.pad_w = -1;
    expect_conv_error(g, "padding 0x-1 must be non-negative");
    g = ok, g.in_channels = 0;
    expect_conv_error(g, "channels must be positive (found in_channels 0, out_channels 4)");
    g = ok, g.in_w = 0;
    expect_conv_error(g, "the input 3x0 must be non-empty");
    g = ok, g.in_channels = 1 << 16, g.in_h = g.in_w = 1 << 16;
    expect_conv_error(g, "the input 65536x65536x65536 (channels x height x width) has more than 2147483647 floats");
    g = ok, g.in_h = g.in_w = 1 << 12, g.out_channels = 1 << 8;
    expect_conv_error(g, "the output 256x4094x4094 (channels x height x width) has more than 2147483647 floats");
    g = ok, g.pad_h = INT_MAX;
    expect_conv_error(g, "the padded input 4294967297x3 (input 3x3, padding 2147483647x0) does not fit in an int");
    g = ok, g.in_channels = 1 << 10, g.in_h = g.in_w = 1 << 10, g.kernel_h = g.kernel_w = 5, g.out_channels = 1;
    expect_conv_error(g, "the column matrix 25600x1040400 of one sample (in_channels/groups x kernel, output "
                         "positions) has more than 2147483647 floats");
    g = ok, g.in_channels = 1 << 16, g.out_channels = 1 << 16, g.in_h = g.in_w = 1, g.pad_h = g.pad_w = 1;
    expect_conv_error(g, "the weight 65536x65536x3x3 has more than 2147483647 floats");
    /* products that would wrap even 64 bits */
    g = ok, g.in_channels = g.in_h = g.in_w = INT_MAX;
    expect_conv_error(g, "the input 2147483647x2147483647x2147483647 (channels x height x width) has more than");
    g = ok, g.in_channels = g.out_channels = 1 << 20, g.in_h = g.in_w = 1, g.pad_h = g.pad_w = (1 << 30) - 1;
    g.kernel_h = g.kernel_w = 1 << 30, g.stride_h = g.stride_w = INT_MAX;
    expect_conv_error(g, "the weight 1048576x1048576x1073741824x1073741824 has more than 2147483647 floats");
}

/* ---- pooling -------------------------------------------------------------------- */

typedef struct pool_case {
    int c, h, w, kh, kw, sh, sw, ph, pw, n;
} pool_case;

static ars_pool_geometry pool_geometry(const pool_case *k)
{
    ars_pool_geometry g = {.channels = k->c, .in_h = k->h, .in_w = k->w, .kernel_h = k->kh, .kernel_w = k->kw,
                           .stride_h = k->sh, .stride_w = k->sw, .pad_h = k->ph, .pad_w = k->pw};
    ARS_ASSERT_OK(ars_pool_geometry_init(&g));
    return g;
}

/* Runs the statements given for every output (pl, oy, ox) of every plane,
 * with yi its index and (ys, xs) its window's top-left corner in input
 * coordinates, unclipped. */
#define FOR_EACH_WINDOW(g, n, ...)                                                                    \
    for (int pl = 0; pl < (n) * (g)->channels; pl++)                                                   \
        for (int oy = 0; oy < (g)->out_h; oy++)                                                        \
            for (int ox = 0; ox < (g)->out_w; ox++) {                                                  \
                const size_t yi = ((size_t)pl * (g)->out_h + oy) * (g)->out_w + ox;                    \
                const int ys = oy * (g)->stride_h - (g)->pad_h, xs = ox * (g)->stride_w - (g)->pad_w;  \
                __VA_ARGS__;                                                                                  \
            }

static int inside(const ars_pool_geometry *g, int iy, int ix)
{
    return iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w;
}

static void run_pool_case(const pool_case *k, int ties)
{
    const ars_pool_geometry g = pool_geometry(k);
    const int n = k->n;
    const size_t plane = (size_t)g.in_h * g.in_w, in = (size_t)n * g.channels * plane;
    const size_t out = (size_t)n * g.channels * g.out_h * g.out_w;
    float *x = random_floats(in), *dy = random_floats(out);
    /* ties: three distinct values only, so most windows hold equal maxima */
    if (ties)
        for (size_t i = 0; i < in; i++) x[i] = (float)((int)(x[i] * 1.5f + 1.5f)) - 5.0f;
    double *yr = calloc(out, sizeof(double)), *dxr = calloc(in, sizeof(double));
    int32_t *ar = calloc(out, sizeof(int32_t)), *arg = calloc(out + GUARD, sizeof(int32_t));
    float *y = nan_floats(out), *dx = nan_floats(in);
    assert_true(yr && dxr && ar && arg);
    char label[128];
    snprintf(label, sizeof label, "pool N%d C%d %dx%d k%dx%d s%dx%d p%dx%d%s", n, k->c, k->h, k->w, k->kh, k->kw,
             g.stride_h, g.stride_w, k->ph, k->pw, ties ? " ties" : "");

    /* max: the first strict maximum in row-major order of the window */
    FOR_EACH_WINDOW(&g, n, {
        double best = -INFINITY;
        int at = -1;
        for (int a = 0; a < g.kernel_h; a++)
            for (int c = 0; c < g.kernel_w; c++)
                if (inside(&g, ys + a, xs + c)) {
                    const int idx = (ys + a) * g.in_w + xs + c;
                    if (at < 0 || x[pl * plane + idx] > best) best = x[pl * plane + idx], at = idx;
                }
        yr[yi] = best;
        ar[yi] = at;
        dxr[pl * plane + at] += dy[yi];
    });
    ars_maxpool2d_forward(&g, n, x, y, arg);
    check_guard(y, out, "maxpool y");
    for (size_t i = 0; i < out; i++) {
        if (arg[i] != ar[i]) fail_msg("%s: argmax %zu is %d, expected %d", label, i, arg[i], ar[i]);
        assert_true(y[i] == (float)yr[i]);
    }
    for (size_t i = 0; i < GUARD; i++) assert_int_equal(arg[out + i], 0);
    ars_maxpool2d_backward(&g, n, dy, arg, dx);
    check_guard(dx, in, "maxpool dx");
    check_close(label, "maxpool dx", dx, dxr, in);

    /* average, padded taps counted */
    memset(dxr, 0, sizeof(double) * in);
    FOR_EACH_WINDOW(&g, n, {
        double s = 0;
        const double count = (double)g.kernel_h * g.kernel_w;
        for (int a = 0; a < g.kernel_h; a++)
            for (int c = 0; c < g.kernel_w; c++)
                if (inside(&g, ys + a, xs + c)) {
                    s += x[pl * plane + (ys + a) * g.in_w + xs + c];
                    dxr[pl * plane + (ys + a) * g.in_w + xs + c] += dy[yi] / count;
                }
        yr[yi] = s / count;
    });
    for (size_t i = 0; i < in; i++) dx[i] = NAN;
    ars_avgpool2d_forward(&g, n, x, y);
    check_guard(y, out, "avgpool y");
    const double e1 = check_close(label, "avgpool y", y, yr, out);
    ars_avgpool2d_backward(&g, n, dy, dx);
    check_guard(dx, in, "avgpool dx");
    const double e2 = check_close(label, "avgpool dx", dx, dxr, in);
    print_message("  %-50s max exact, avg rel err %.2e / %.2e\n", label, e1, e2);
    free(x), free(dy), free(yr), free(dxr), free(ar), free(arg), free(y), free(dx);
}

static void test_pool(void **state)
{
    (void)state;
    static const pool_case cases[] = {
        /* c  h  w kh kw sh sw ph pw n */
        {3, 8, 8, 2, 2, 0, 0, 0, 0, 3},   /* stride = kernel by default */
        {3, 7, 5, 2, 2, 0, 0, 0, 0, 3},   /* the last row dropped (ceil_mode False) */
        {3, 7, 5, 3, 3, 2, 2, 1, 1, 3},   /* ResNet stem pooling */
        {3, 7, 5, 3, 3, 1, 1, 1, 1, 1},   /* overlapping windows share maxima */
        {2, 7, 5, 2, 3, 1, 2, 1, 1, 3},
        {2, 5, 7, 3, 2, 3, 1, 0, 1, 3},
        {1, 5, 5, 5, 5, 1, 1, 2, 2, 2},
        {2, 4, 6, 4, 1, 0, 0, 2, 0, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_pool_case(&cases[i], 0);
        run_pool_case(&cases[i], 1);
    }
}

/* Hand cases: ties go to the first maximum; padding is -inf, not 0; NaN wins. */
static void test_maxpool_rules(void **state)
{
    (void)state;
    const pool_case k = {1, 2, 2, 2, 2, 0, 0, 0, 0, 1};
    ars_pool_geometry g = pool_geometry(&k);
    float y[4];
    int32_t at[4];
    const float equal[4] = {7, 7, 7, 7};
    ars_maxpool2d_forward(&g, 1, equal, y, at);
    assert_true(y[0] == 7.0f);
    assert_int_equal(at[0], 0);
    const float later[4] = {1, 3, 3, 2};
    ars_maxpool2d_forward(&g, 1, later, y, at);
    assert_int_equal(at[0], 1);
    const float nan_in[4] = {1, NAN, 5, 2};
    ars_maxpool2d_forward(&g, 1, nan_in, y, at);
    assert_true(isnan(y[0]));
    assert_int_equal(at[0], 1);

    /* all negative, padding 1: each 2x2 window of a 2x2 input padded to 4x4
     * sees one real pixel; a zero padding would give 0 */
    const pool_case kp = {1, 2, 2, 2, 2, 0, 0, 1, 1, 1};
    g = pool_geometry(&kp);
    assert_int_equal(g.out_h, 2);
    const float negative[4] = {-4, -3, -2, -1};
    ars_maxpool2d_forward(&g, 1, negative, y, at);
    for (int i = 0; i < 4; i++) {
        assert_true(y[i] == negative[i]);
        assert_int_equal(at[i], i);
    }
    /* -inf inputs: the index of the window's first real pixel */
    const float minus_inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    ars_maxpool2d_forward(&g, 1, minus_inf, y, at);
    for (int i = 0; i < 4; i++) assert_int_equal(at[i], i);
    /* average with padding divides by the whole kernel (count_include_pad) */
    ars_avgpool2d_forward(&g, 1, negative, y);
    for (int i = 0; i < 4; i++) assert_true(y[i] == negative[i] / 4.0f);
}

static void test_global_avgpool(void **state)
{
    (void)state;
    const int sizes[][3] = {{1, 1, 1}, {3, 5, 49}, {2, 64, 7 * 5}, {3, 2, 784}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        const int n = sizes[t][0], c = sizes[t][1], hw = sizes[t][2];
        const size_t in = (size_t)n * c * hw, out = (size_t)n * c;
        float *x = random_floats(in), *dy = random_floats(out), *y = nan_floats(out), *dx = nan_floats(in);
        double *yr = malloc(sizeof(double) * out), *dxr = malloc(sizeof(double) * in);
        assert_true(yr && dxr);
        for (size_t p = 0; p < out; p++) {
            double s = 0;
            for (int i = 0; i < hw; i++) s += x[p * hw + i];
            yr[p] = s / hw;
            for (int i = 0; i < hw; i++) dxr[p * hw + i] = dy[p] / (double)hw;
        }
        ars_global_avgpool_forward(n, c, hw, x, y);
        ars_global_avgpool_backward(n, c, hw, dy, dx);
        check_guard(y, out, "global y");
        check_guard(dx, in, "global dx");
        check_close("global_avgpool", "y", y, yr, out);
        check_close("global_avgpool", "dx", dx, dxr, in);
        free(x), free(dy), free(y), free(dx), free(yr), free(dxr);
    }
}

static void expect_pool_error(ars_pool_geometry g, const char *message)
{
    ars_error_clear();
    assert_int_equal(ars_pool_geometry_init(&g), ARS_EINVAL);
    if (!strstr(ars_error_message(), message))
        fail_msg("expected \"%s\", got \"%s\"", message, ars_error_message());
    print_message("  refused: %s\n", ars_error_message());
}

static void test_pool_validation(void **state)
{
    (void)state;
    const ars_pool_geometry ok = {.channels = 2, .in_h = 3, .in_w = 3, .kernel_h = 2, .kernel_w = 2};
    ars_pool_geometry g = ok;
    ARS_ASSERT_OK(ars_pool_geometry_init(&g));
    assert_int_equal(g.stride_h, 2);
    assert_int_equal(g.out_h, 1);
    g = ok, g.kernel_h = g.kernel_w = 5, g.pad_h = g.pad_w = 0;
    expect_pool_error(g, "kernel 5x5 is larger than the padded input 3x3 (input 3x3, padding 0)");
    g = ok, g.kernel_h = 7, g.pad_h = 1, g.pad_w = 0;
    expect_pool_error(g, "kernel 7x2 is larger than the padded input 5x3 (input 3x3, padding 1x0)");
    g = ok, g.kernel_h = g.kernel_w = 3, g.pad_h = g.pad_w = 2;
    expect_pool_error(g, "padding 2 is more than half the kernel 3x3");
    g = ok, g.kernel_w = 0;
    expect_pool_error(g, "kernel 2x0 must be positive");
    g = ok, g.stride_h = -1;
    expect_pool_error(g, "stride -1x0 must be positive (or 0: the kernel size)");
    g = ok, g.pad_h = -1;
    expect_pool_error(g, "padding -1x0 must be non-negative");
    g = ok, g.channels = 0;
    expect_pool_error(g, "channels must be positive (found 0)");
    g = ok, g.in_h = 0;
    expect_pool_error(g, "the input 0x3 must be non-empty");
    g = ok, g.channels = 1, g.in_h = INT_MAX - 1, g.in_w = 1, g.kernel_h = INT_MAX / 2, g.pad_h = INT_MAX / 4;
    expect_pool_error(g, "the padded input 3221225468x1 (input 2147483646x1, padding 536870911x0) does not fit in an int");
    g = ok, g.channels = g.in_h = g.in_w = INT_MAX;
    expect_pool_error(g, "the input 2147483647x2147483647x2147483647 (channels x height x width) has more than");
    g = ok, g.channels = 1 << 12, g.in_h = g.in_w = 1 << 10;
    expect_pool_error(g, "the input 4096x1024x1024 (channels x height x width) has more than 2147483647 floats");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_basic),
        cmocka_unit_test(test_conv_dilation_nonsquare),
        cmocka_unit_test(test_conv_groups),
        cmocka_unit_test(test_conv_pointwise),
        cmocka_unit_test(test_conv_blocks),
        cmocka_unit_test(test_conv_empty_batch),
        cmocka_unit_test(test_conv_finite_difference),
        cmocka_unit_test(test_conv_plan_choose),
        cmocka_unit_test(test_conv_validation),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_maxpool_rules),
        cmocka_unit_test(test_global_avgpool),
        cmocka_unit_test(test_pool_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
