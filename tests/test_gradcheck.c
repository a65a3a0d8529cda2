/* test_gradcheck: every layer kind's backward against central finite
 * differences (src/gradcheck.c), both losses, negative tests showing the
 * checker catches wrong gradients, and the forward semantics of batchnorm,
 * layernorm and dropout.
 *
 * Tolerance: ARS_GRADCHECK_TOLERANCE = 1e-2 on the relative error beyond
 * the measured finite-difference noise (include/arsenal/gradcheck.h). A
 * gradient scaled by 2 (or 0.5) scores |2 - 1| / (2 + 1) = 1/3 on every
 * coordinate above the noise, 33 times the tolerance, and a dropped
 * BatchNorm term scores ~1 (test_detects_wrong_gradients). The correct
 * layers score 0 after the noise allowance and 1e-5 to 2e-3 before it
 * ("raw"), so the tolerance also sits 5x above the raw errors. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/gradcheck.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"

#define TOL ARS_GRADCHECK_TOLERANCE

static void print_result(const ars_gradcheck_result *r)
{
    print_message("  %-16s checked %3zu resolved %3zu kinks %2zu  rel %.1e (raw %.1e)  abs %.1e  noise %.1e  %s\n",
                  r->name, r->checked, r->resolved, r->kinks, r->max_rel_error, r->raw_rel_error,
                  r->max_abs_error, r->noise, r->worst);
}

/* Checks one layer kind alone and asserts it passes. */
static void check_kind(ars_layer_spec *spec, int in_dim, int rows, uint64_t seed, int eval)
{
    ars_gradcheck_options options = {0};
    options.eval = eval;
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer(spec, ars_shape_vector(in_dim), rows, seed, &options, &result));
    print_result(&result);
    assert_true(result.checked > 0);
    /* gradients stand above the noise (except exact zeros: relu's dead
     * inputs, dropped units): the check is not vacuous */
    assert_true(result.resolved * 4 >= result.checked);
    if (!(result.max_rel_error < TOL))
        fail_msg("%s: max relative error %.3e at %s >= %.0e", spec->kind, result.max_rel_error, result.worst, TOL);
}

static void test_dense(void **state)
{
    (void)state;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "dense");
    spec.units = 5;
    check_kind(&spec, 7, 6, 11, 0);
    spec.bias = 0;
    check_kind(&spec, 7, 6, 12, 0);
}

static void test_activations(void **state)
{
    (void)state;
    const char *kinds[] = {"sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        ars_layer_spec spec;
        ars_layer_spec_defaults(&spec, kinds[k]);
        if (strcmp(kinds[k], "leaky_relu") == 0) spec.alpha = 0.1f;   /* a slope big enough to see */
        if (strcmp(kinds[k], "elu") == 0) spec.alpha = 0.7f;          /* alpha != 1 exercises y + alpha */
        check_kind(&spec, 9, 8, 20 + k, 0);
    }
}

static void test_batchnorm(void **state)
{
    (void)state;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "batchnorm");
    check_kind(&spec, 6, 8, 31, 0);   /* train mode, batch statistics */
    check_kind(&spec, 6, 3, 32, 0);   /* a tiny batch: the mean terms dominate */
    check_kind(&spec, 6, 8, 33, 1);   /* eval mode, running statistics */
    spec.sync = 0;
    check_kind(&spec, 6, 8, 34, 0);
}

static void test_layernorm(void **state)
{
    (void)state;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "layernorm");
    check_kind(&spec, 7, 5, 41, 0);
    check_kind(&spec, 3, 5, 42, 1);
}

static void test_dropout(void **state)
{
    (void)state;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "dropout");
    spec.rate = 0.3f;
    check_kind(&spec, 10, 6, 51, 0);   /* train: fixed seed and step = a fixed mask */
    check_kind(&spec, 10, 6, 52, 1);   /* eval: identity */
}

/* A model check: every parameter gradient of every layer. */
static void check_model(const ars_layer_spec *specs, int count, int in_dim, int rows, uint64_t seed)
{
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_vector(in_dim), rows));
    ars_gradcheck_randomize_model(&model, seed);
    float *x = malloc(sizeof(float) * (size_t)rows * (size_t)in_dim);
    ars_rng_normal(x, (size_t)rows * (size_t)in_dim, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, 99), 0);
    ars_gradcheck_result *results = calloc((size_t)count, sizeof *results);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = rows, .global_rows = rows, .seed = seed, .step = 3};
    ARS_ASSERT_OK(ars_gradcheck_model(&model, &pass, x, seed, NULL, results));
    size_t checked = 0;
    for (int i = 0; i < count; i++) {
        if (model.layers[i].param_count == 0) {
            assert_int_equal(results[i].checked, 0);
            continue;
        }
        print_result(&results[i]);
        checked += results[i].checked;
        assert_true(results[i].checked > 0);
        assert_true(results[i].resolved * 2 >= results[i].checked);
        if (!(results[i].max_rel_error < TOL))
            fail_msg("%s: max relative error %.3e at %s", results[i].name, results[i].max_rel_error,
                     results[i].worst);
    }
    assert_true(checked > 0);
    free(results);
    free(x);
    ars_model_destroy(&model);
}

static ars_layer_spec make_spec(const char *kind, int units)
{
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    spec.units = units;
    return spec;
}

/* The leading dense layer sees the skip path: its gradient is wrong if the
 * residual begin drops the skip gradient. */
static void test_residual_identity(void **state)
{
    (void)state;
    ars_layer_spec specs[] = {make_spec("dense", 6), make_spec("residual", 0), make_spec("dense", 6),
                              make_spec("relu", 0), make_spec("dense", 6), make_spec("residual_add", 0),
                              make_spec("dense", 3)};
    check_model(specs, 7, 5, 6, 61);
}

/* F maps 6 -> 9 features: the skip goes through the learned projection. */
static void test_residual_projection(void **state)
{
    (void)state;
    ars_layer_spec specs[] = {make_spec("dense", 6), make_spec("residual", 0), make_spec("dense", 4),
                              make_spec("tanh", 0), make_spec("dense", 9), make_spec("residual_add", 0),
                              make_spec("dense", 3)};
    check_model(specs, 7, 5, 6, 62);
}

/* Every kind with parameters in one model, BatchNorm and dropout in train
 * mode between them. */
static void test_mixed_model(void **state)
{
    (void)state;
    ars_layer_spec specs[] = {make_spec("dense", 8), make_spec("batchnorm", 0), make_spec("gelu", 0),
                              make_spec("dropout", 0), make_spec("dense", 8), make_spec("layernorm", 0),
                              make_spec("elu", 0), make_spec("dense", 4)};
    specs[3].rate = 0.25f;
    check_model(specs, 8, 5, 10, 63);
}

/* Inputs right next to relu's corner: the central quotient straddles it,
 * a one-sided one does not, and the check still passes. */
static void test_kinks_tolerated(void **state)
{
    (void)state;
    enum { ROWS = 4, DIM = 6 };
    ars_model model;
    ars_layer_spec spec = make_spec("relu", 0);
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(DIM), ROWS));
    float x[ROWS * DIM];
    /* every third input 1e-3 from the corner (h = 3e-3) */
    for (int i = 0; i < ROWS * DIM; i++) x[i] = (i % 3 == 1 ? 1e-3f : 0.7f) * (i % 2 ? 1.0f : -1.0f);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS};
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer_at(&model.layers[0], &pass, x, 5, NULL, &result));
    print_result(&result);
    assert_int_equal(result.kinks, ROWS * DIM / 3);
    assert_true(ars_gradcheck_passed(&result));
    ars_model_destroy(&model);
}

static void test_losses(void **state)
{
    (void)state;
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_loss(ARS_LOSS_CROSS_ENTROPY, 6, 5, 71, NULL, &result));
    print_result(&result);
    assert_int_equal(result.checked, 30);
    assert_true(result.max_rel_error < TOL);
    ARS_ASSERT_OK(ars_gradcheck_loss(ARS_LOSS_MSE, 6, 4, 72, NULL, &result));
    print_result(&result);
    assert_int_equal(result.checked, 24);
    assert_true(result.max_rel_error < TOL);
}

/* ---- negative tests: layers with a deliberately wrong backward ---- */

/* An ops table that remembers the real one (first member: a pointer to
 * the wrapper is a pointer to its ops). */
typedef struct {
    ars_layer_ops ops;
    const ars_layer_ops *real;
} wrapped_ops;

static const ars_layer_ops *real_ops(const ars_layer *layer) { return ((const wrapped_ops *)layer->ops)->real; }

static int scale_weight_grad(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                             const float *dy, float *dx, float scale)
{
    int rc = real_ops(layer)->backward(layer, pass, x, y, dy, dx);
    for (size_t i = 0; i < layer->params[0].count; i++) layer->grad[layer->params[0].offset + i] *= scale;
    return rc;
}

static int half_weight_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                                const float *dy, float *dx)
{
    return scale_weight_grad(layer, pass, x, y, dy, dx, 0.5f);
}

static int weight_10pc_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                                const float *dy, float *dx)
{
    return scale_weight_grad(layer, pass, x, y, dy, dx, 1.1f);
}

static int half_dx_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                            const float *dy, float *dx)
{
    int rc = real_ops(layer)->backward(layer, pass, x, y, dy, dx);
    for (size_t i = 0; dx && i < (size_t)pass->rows * (size_t)layer->in_dim; i++) dx[i] *= 0.5f;
    return rc;
}

/* BatchNorm backward that forgets one term of dx: term 1 = the mean of dy,
 * term 2 = the projection xhat * mean(dy * xhat). Adds it back on top of the
 * correct dx, recomputing the batch statistics here. */
static int batchnorm_drop_term(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                               const float *dy, float *dx, int term)
{
    int rc = real_ops(layer)->backward(layer, pass, x, y, dy, dx);
    const int rows = pass->rows, dim = layer->in_dim;
    const float *gamma = layer->param + layer->params[0].offset;
    for (int j = 0; j < dim; j++) {
        double mean = 0, var = 0, mean_dy = 0, mean_dy_xhat = 0;
        for (int r = 0; r < rows; r++) mean += x[r * dim + j] / (double)rows;
        for (int r = 0; r < rows; r++) var += pow(x[r * dim + j] - mean, 2) / rows;
        double inv_std = 1.0 / sqrt(var + layer->spec.eps);
        for (int r = 0; r < rows; r++) {
            mean_dy += dy[r * dim + j] / (double)rows;
            mean_dy_xhat += dy[r * dim + j] * (x[r * dim + j] - mean) * inv_std / rows;
        }
        for (int r = 0; r < rows; r++) {
            double xhat = (x[r * dim + j] - mean) * inv_std;
            double dropped = term == 1 ? mean_dy : xhat * mean_dy_xhat;
            dx[r * dim + j] += (float)(gamma[j] * inv_std * dropped);
        }
    }
    return rc;
}

static int bn_no_mean_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                               const float *dy, float *dx)
{
    return batchnorm_drop_term(layer, pass, x, y, dy, dx, 1);
}

static int bn_no_projection_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y,
                                     const float *dy, float *dx)
{
    return batchnorm_drop_term(layer, pass, x, y, dy, dx, 2);
}

/* Builds a one-layer model, swaps in a broken backward, returns the
 * checker's verdict (after printing it). */
static ars_gradcheck_result check_broken(ars_layer_spec spec, int in_dim, int rows,
                                         int (*backward)(ars_layer *, const ars_pass *, const float *,
                                                         const float *, const float *, float *))
{
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(in_dim), rows));
    ars_layer *layer = &model.layers[0];
    ars_gradcheck_randomize(layer, 7);
    wrapped_ops wrapper = {*layer->ops, layer->ops};
    if (backward) wrapper.ops.backward = backward;
    layer->ops = &wrapper.ops;
    float *x = malloc(sizeof(float) * (size_t)rows * (size_t)in_dim);
    ars_rng_normal(x, (size_t)rows * (size_t)in_dim, 0.0f, 1.0f, 7, ars_stream(ARS_STREAM_DATA, 98), 0);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = rows, .global_rows = rows, .seed = 7, .step = 1};
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer_at(layer, &pass, x, 7, NULL, &result));
    print_result(&result);
    layer->ops = wrapper.real;
    free(x);
    ars_model_destroy(&model);
    return result;
}

static void test_detects_wrong_gradients(void **state)
{
    (void)state;
    ars_layer_spec dense = make_spec("dense", 4), bn = make_spec("batchnorm", 0);
    ars_gradcheck_result r;

    /* A weight gradient at half its value: 1/3 on the large coordinates. */
    r = check_broken(dense, 5, 6, half_weight_backward);
    assert_false(ars_gradcheck_passed(&r));
    assert_true(r.max_rel_error > 0.3);
    assert_true(strncmp(r.worst, "weight[", 7) == 0);

    /* 10% too large: 0.1 / 2.1 = 0.048 */
    r = check_broken(dense, 5, 6, weight_10pc_backward);
    assert_false(ars_gradcheck_passed(&r));
    assert_true(r.max_rel_error > 0.04);

    r = check_broken(dense, 5, 6, half_dx_backward);
    assert_false(ars_gradcheck_passed(&r));
    assert_true(strncmp(r.worst, "dx[", 3) == 0);

    r = check_broken(bn, 6, 8, bn_no_mean_backward);
    assert_false(ars_gradcheck_passed(&r));
    assert_true(r.max_rel_error > 10 * TOL);

    r = check_broken(bn, 6, 8, bn_no_projection_backward);
    assert_false(ars_gradcheck_passed(&r));
    assert_true(r.max_rel_error > 10 * TOL);

    /* and the unbroken wrapper passes: the harness itself is not what fails */
    r = check_broken(bn, 6, 8, NULL);
    assert_true(ars_gradcheck_passed(&r));
}

/* ---- forward semantics ---- */

typedef struct {
    ars_model model;
    ars_layer *layer;
} one_layer;

static void one_layer_create(one_layer *o, ars_layer_spec spec, int in_dim, int rows)
{
    ARS_ASSERT_OK(ars_model_create(&o->model, &spec, 1, ars_shape_vector(in_dim), rows));
    o->layer = &o->model.layers[0];
}

static float *bn_tensor(ars_layer *layer, int buffer, int t)
{
    return buffer ? layer->state + layer->buffers[t].offset : layer->param + layer->params[t].offset;
}

static void test_batchnorm_eval_uses_running_stats(void **state)
{
    (void)state;
    enum { ROWS = 4, DIM = 3 };
    one_layer o;
    ars_layer_spec spec = make_spec("batchnorm", 0);
    spec.eps = 1e-3f;
    one_layer_create(&o, spec, DIM, ROWS);
    float *gamma = bn_tensor(o.layer, 0, 0), *beta = bn_tensor(o.layer, 0, 1);
    float *rmean = bn_tensor(o.layer, 1, 0), *rvar = bn_tensor(o.layer, 1, 1);
    const float g[DIM] = {1.5f, -0.5f, 2.0f}, b[DIM] = {0.1f, 0.2f, -0.3f};
    const float m[DIM] = {0.5f, -1.0f, 3.0f}, v[DIM] = {4.0f, 0.25f, 1.0f};
    memcpy(gamma, g, sizeof g);
    memcpy(beta, b, sizeof b);
    memcpy(rmean, m, sizeof m);
    memcpy(rvar, v, sizeof v);
    float x[ROWS * DIM], y[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++) x[i] = (float)(i % 5) - 1.5f;
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = ROWS, .global_rows = ROWS};
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < DIM; j++) {
            double expected = g[j] * (x[r * DIM + j] - m[j]) / sqrt(v[j] + 1e-3) + b[j];
            assert_true(fabs(y[r * DIM + j] - expected) < 1e-5);
        }
    /* eval leaves the running statistics alone */
    assert_true(memcmp(rmean, m, sizeof m) == 0 && memcmp(rvar, v, sizeof v) == 0);
    ars_model_destroy(&o.model);
}

static void test_batchnorm_running_stats_momentum(void **state)
{
    (void)state;
    enum { ROWS = 5, DIM = 2 };
    one_layer o;
    ars_layer_spec spec = make_spec("batchnorm", 0);
    spec.momentum = 0.2f;
    one_layer_create(&o, spec, DIM, ROWS);
    float *gamma = bn_tensor(o.layer, 0, 0), *rmean = bn_tensor(o.layer, 1, 0), *rvar = bn_tensor(o.layer, 1, 1);
    for (int j = 0; j < DIM; j++) gamma[j] = 1, rmean[j] = 0, rvar[j] = 1;   /* the default init */
    const float x[ROWS * DIM] = {1, 10, 2, 20, 3, 30, 4, 40, 10, 50};
    float y[ROWS * DIM];
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS};
    double em[DIM] = {0, 0}, ev[DIM] = {1, 1};
    for (int step = 0; step < 3; step++) {
        ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
        for (int j = 0; j < DIM; j++) {
            double mean = 0, ss = 0, out_mean = 0, out_ss = 0;
            for (int r = 0; r < ROWS; r++) mean += x[r * DIM + j] / (double)ROWS;
            for (int r = 0; r < ROWS; r++) ss += pow(x[r * DIM + j] - mean, 2);
            /* PyTorch: running = (1 - m) running + m batch, unbiased variance */
            em[j] = 0.8 * em[j] + 0.2 * mean;
            ev[j] = 0.8 * ev[j] + 0.2 * ss / (ROWS - 1);
            assert_true(fabs(rmean[j] - em[j]) < 1e-5 * fmax(1, fabs(em[j])));
            assert_true(fabs(rvar[j] - ev[j]) < 1e-5 * fmax(1, fabs(ev[j])));
            /* normalized with the biased batch variance */
            for (int r = 0; r < ROWS; r++) out_mean += y[r * DIM + j] / (double)ROWS;
            for (int r = 0; r < ROWS; r++) out_ss += pow(y[r * DIM + j] - out_mean, 2);
            assert_true(fabs(out_mean) < 1e-5);
            assert_true(fabs(out_ss / ROWS - ss / ROWS / (ss / ROWS + spec.eps)) < 1e-4);
        }
    }
    /* one sample cannot be normalized in training mode (as PyTorch); zero
     * samples is a no-op that leaves the statistics alone */
    pass.rows = pass.global_rows = 1;
    assert_int_equal(o.layer->ops->forward(o.layer, &pass, x, y), ARS_EINVAL);
    const float before = rmean[0];
    pass.rows = pass.global_rows = 0;
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
    ARS_ASSERT_OK(o.layer->ops->backward(o.layer, &pass, x, y, y, y));
    assert_true(rmean[0] == before);
    ars_model_destroy(&o.model);
}

static void test_layernorm_normalizes_rows(void **state)
{
    (void)state;
    enum { ROWS = 4, DIM = 16 };
    one_layer o;
    one_layer_create(&o, make_spec("layernorm", 0), DIM, ROWS);
    float *gamma = bn_tensor(o.layer, 0, 0), *beta = bn_tensor(o.layer, 0, 1);
    for (int j = 0; j < DIM; j++) gamma[j] = 1, beta[j] = 0;
    float x[ROWS * DIM], y[ROWS * DIM];
    ars_rng_normal(x, ROWS * DIM, 3.0f, 5.0f, 1, 2, 0);   /* far from mean 0 / var 1 */
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS};
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
    for (int r = 0; r < ROWS; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < DIM; j++) mean += y[r * DIM + j] / (double)DIM;
        for (int j = 0; j < DIM; j++) var += pow(y[r * DIM + j] - mean, 2) / DIM;
        assert_true(fabs(mean) < 1e-6);
        assert_true(fabs(var - 1.0) < 1e-5);   /* eps = 1e-5 against a variance of ~25 */
    }
    ars_model_destroy(&o.model);
}

static void test_dropout_statistics(void **state)
{
    (void)state;
    enum { ROWS = 64, DIM = 500 };
    const float rate = 0.3f;
    one_layer o;
    ars_layer_spec spec = make_spec("dropout", 0);
    spec.rate = rate;
    one_layer_create(&o, spec, DIM, ROWS);
    float *x = malloc(sizeof(float) * ROWS * DIM), *y = malloc(sizeof(float) * ROWS * DIM);
    float *dx = malloc(sizeof(float) * ROWS * DIM);
    for (int i = 0; i < ROWS * DIM; i++) x[i] = 1.0f + (float)(i % 7);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS, .seed = 5, .step = 9};
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
    size_t zeros = 0;
    for (int i = 0; i < ROWS * DIM; i++) {
        if (y[i] == 0.0f) zeros++;
        else assert_true(fabs(y[i] - x[i] / (1.0 - rate)) < 1e-5 * x[i]);
    }
    /* 32000 Bernoulli(0.3): std of the fraction 0.0026; 0.01 is ~4 sigma */
    double fraction = (double)zeros / (ROWS * DIM);
    print_message("  dropout zero fraction %.4f (rate %.2f)\n", fraction, rate);
    assert_true(fabs(fraction - rate) < 0.01);
    /* backward: the same mask and scale */
    ARS_ASSERT_OK(o.layer->ops->backward(o.layer, &pass, x, y, x, dx));
    for (int i = 0; i < ROWS * DIM; i++) assert_true(dx[i] == y[i]);
    /* eval: identity */
    pass.mode = ARS_MODE_EVAL;
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, y));
    assert_true(memcmp(x, y, sizeof(float) * ROWS * DIM) == 0);
    free(x);
    free(y);
    free(dx);
    ars_model_destroy(&o.model);
}

/* A sample's mask depends on its global id, not on the row it occupies
 * (the rank and position a sample lands on differ between 1 and N ranks);
 * and a new step draws a new mask. */
static void test_dropout_mask_follows_sample_id(void **state)
{
    (void)state;
    enum { ROWS = 3, DIM = 40 };
    one_layer o;
    one_layer_create(&o, make_spec("dropout", 0), DIM, ROWS);
    float x[ROWS * DIM], a[ROWS * DIM], b[ROWS * DIM];
    for (int i = 0; i < ROWS * DIM; i++) x[i] = 1.0f;
    const uint32_t ids_a[ROWS] = {17, 4, 123456}, ids_b[ROWS] = {123456, 17, 4};
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS, .seed = 3, .step = 2,
                     .sample_ids = ids_a};
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, a));
    pass.sample_ids = ids_b;
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, b));
    /* id 17: row 0 in a, row 1 in b; id 4: row 1 -> 2; id 123456: row 2 -> 0 */
    assert_memory_equal(a + 0 * DIM, b + 1 * DIM, sizeof(float) * DIM);
    assert_memory_equal(a + 1 * DIM, b + 2 * DIM, sizeof(float) * DIM);
    assert_memory_equal(a + 2 * DIM, b + 0 * DIM, sizeof(float) * DIM);
    assert_memory_not_equal(a + 0 * DIM, a + 1 * DIM, sizeof(float) * DIM);   /* ids differ: masks differ */
    /* a single-row pass of sample 4 (a rank holding just that sample) */
    pass.rows = pass.global_rows = 1;
    pass.sample_ids = &ids_a[1];
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, b));
    assert_memory_equal(a + 1 * DIM, b, sizeof(float) * DIM);
    /* the next step: a different mask for the same sample */
    pass.step = 3;
    ARS_ASSERT_OK(o.layer->ops->forward(o.layer, &pass, x, b));
    assert_memory_not_equal(a + 1 * DIM, b, sizeof(float) * DIM);
    ars_model_destroy(&o.model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_residual_identity),
        cmocka_unit_test(test_residual_projection),
        cmocka_unit_test(test_mixed_model),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_kinks_tolerated),
        cmocka_unit_test(test_detects_wrong_gradients),
        cmocka_unit_test(test_batchnorm_eval_uses_running_stats),
        cmocka_unit_test(test_batchnorm_running_stats_momentum),
        cmocka_unit_test(test_layernorm_normalizes_rows),
        cmocka_unit_test(test_dropout_statistics),
        cmocka_unit_test(test_dropout_mask_follows_sample_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
