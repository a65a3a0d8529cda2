/* test_init: initializer statistics against torch.nn.init's formulas,
 * orthogonality, determinism, whole-model initialization by role, and
 * LSUV reaching unit variance. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"

typedef struct {
    double mean, std, max_abs;
} moments;

static moments measure(const float *w, size_t n)
{
    double sum = 0, sq = 0, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        sum += w[i];
        if (fabs(w[i]) > max_abs) max_abs = fabs(w[i]);
    }
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) sq += (w[i] - mean) * (w[i] - mean);
    return (moments){mean, sqrt(sq / (double)n), max_abs};
}

enum { ROWS = 384, COLS = 1000 };   /* 384k samples: std of the std estimate ~0.1% */

/* Fills a ROWS x COLS weight and checks mean ~ 0 and std within 2% of
 * want_std; for uniform kinds (bound > 0) also that |w| <= bound and the
 * extremes reach close to it. */
static void check_stats(ars_init_kind kind, float arg, int fan_out_mode, double want_std,
                        double bound)
{
    size_t n = (size_t)ROWS * COLS;
    float *w = malloc(n * sizeof *w);
    ARS_ASSERT_OK(ars_init_fill(w, ROWS, COLS, kind, arg, fan_out_mode, 42,
                                ars_stream(ARS_STREAM_INIT, 3)));
    moments m = measure(w, n);
    if (fabs(m.mean) > 0.01 * want_std)
        fail_msg("%s: mean %g, expected ~0 (std %g)", ars_init_name(kind), m.mean, want_std);
    if (fabs(m.std / want_std - 1.0) > 0.02)
        fail_msg("%s arg %g: std %g, formula %g", ars_init_name(kind), arg, m.std, want_std);
    if (bound > 0) {
        if (m.max_abs > bound * (1 + 1e-6))
            fail_msg("%s: |w| reaches %g beyond the bound %g", ars_init_name(kind), m.max_abs,
                     bound);
        assert_true(m.max_abs > 0.999 * bound);
    }
    free(w);
}

static void test_statistics(void **state)
{
    (void)state;
    const double in = COLS, out = ROWS;
    /* normal: std = arg, default 0.01 */
    check_stats(ARS_INIT_NORMAL, 0, 0, 0.01, 0);
    check_stats(ARS_INIT_NORMAL, 0.2f, 0, 0.2, 0);
    /* uniform U(-a, a): std a/sqrt(3), default a = 0.05 */
    check_stats(ARS_INIT_UNIFORM, 0, 0, 0.05 / sqrt(3.0), 0.05);
    check_stats(ARS_INIT_UNIFORM, 0.3f, 0, 0.3 / sqrt(3.0), 0.3);
    /* xavier_uniform: bound gain*sqrt(6/(in+out)) */
    double xb = sqrt(6.0 / (in + out));
    check_stats(ARS_INIT_XAVIER_UNIFORM, 0, 0, xb / sqrt(3.0), xb);
    check_stats(ARS_INIT_XAVIER_UNIFORM, 2.0f, 0, 2 * xb / sqrt(3.0), 2 * xb);
    /* xavier_normal: std gain*sqrt(2/(in+out)) */
    check_stats(ARS_INIT_XAVIER_NORMAL, 0, 0, sqrt(2.0 / (in + out)), 0);
    check_stats(ARS_INIT_XAVIER_NORMAL, 5.0f / 3.0f, 0, 5.0 / 3.0 * sqrt(2.0 / (in + out)), 0);
    /* he: gain sqrt(2/(1+a^2)), std gain/sqrt(fan), uniform bound sqrt(3)*std */
    double he_in = sqrt(2.0 / in), he_out = sqrt(2.0 / out);
    check_stats(ARS_INIT_HE_NORMAL, 0, 0, he_in, 0);
    check_stats(ARS_INIT_HE_NORMAL, 0, 1, he_out, 0);
    check_stats(ARS_INIT_HE_UNIFORM, 0, 0, he_in, sqrt(3.0) * he_in);
    check_stats(ARS_INIT_HE_UNIFORM, 0, 1, he_out, sqrt(3.0) * he_out);
    double leaky = sqrt(2.0 / (1 + 0.2 * 0.2)) / sqrt(in);
    check_stats(ARS_INIT_HE_NORMAL, 0.2f, 0, leaky, 0);
    check_stats(ARS_INIT_HE_UNIFORM, 0.2f, 0, leaky, sqrt(3.0) * leaky);
    /* orthogonal rows of length COLS: each entry has variance gain^2/COLS */
    check_stats(ARS_INIT_ORTHOGONAL, 0, 0, 1.0 / sqrt(in), 0);
}

static void test_zeros(void **state)
{
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    ARS_ASSERT_OK(ars_init_fill(w, 2, 3, ARS_INIT_ZEROS, 0, 0, 1, 1));
    for (int i = 0; i < 6; i++) assert_true(w[i] == 0.0f);
}

/* max |G - gain^2 I| for G = W W^T (by rows) or W^T W (by columns). */
static double gram_error(const float *w, int rows, int cols, int by_rows, double gain)
{
    int k = by_rows ? rows : cols, len = by_rows ? cols : rows;
    double worst = 0;
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
            double dot = 0;
            for (int i = 0; i < len; i++) {
                double x = by_rows ? w[(size_t)a * cols + i] : w[(size_t)i * cols + a];
                double y = by_rows ? w[(size_t)b * cols + i] : w[(size_t)i * cols + b];
                dot += x * y;
            }
            double err = fabs(dot - (a == b ? gain * gain : 0.0));
            if (err > worst) worst = err;
        }
    return worst;
}

static void test_orthogonal(void **state)
{
    (void)state;
    const struct {
        int rows, cols;
        float gain;
    } cases[] = {{64, 256, 1.0f}, {256, 64, 1.0f}, {100, 100, 2.0f}, {1, 50, 1.0f},
                 {50, 1, 1.0f}, {33, 97, 0.5f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rows = cases[c].rows, cols = cases[c].cols;
        float *w = malloc((size_t)rows * cols * sizeof *w);
        ARS_ASSERT_OK(ars_init_fill(w, rows, cols, ARS_INIT_ORTHOGONAL, cases[c].gain, 0, 7,
                                    ars_stream(ARS_STREAM_INIT, (uint32_t)c)));
        double g = cases[c].gain;
        /* rows <= cols: orthonormal rows, W W^T = gain^2 I; else columns. */
        double err = gram_error(w, rows, cols, rows <= cols, g);
        if (err > 1e-5 * g * g)
            fail_msg("orthogonal %dx%d gain %g: Gram matrix off identity by %g", rows, cols, g,
                     err);
        free(w);
    }
    /* lsuv's pre-init is orthogonal with gain 1 whatever the arg. */
    float w[16 * 24];
    ARS_ASSERT_OK(ars_init_fill(w, 16, 24, ARS_INIT_LSUV, 3.0f, 0, 7, 1));
    assert_true(gram_error(w, 16, 24, 1, 1.0) < 1e-5);
}

static void test_determinism(void **state)
{
    (void)state;
    enum { R = 20, C = 30, N = R * C };
    float a[N], b[N];
    for (ars_init_kind kind = ARS_INIT_NORMAL; kind <= ARS_INIT_LSUV; kind++) {
        uint64_t stream = ars_stream(ARS_STREAM_INIT, 2);
        ARS_ASSERT_OK(ars_init_fill(a, R, C, kind, 0, 0, 1234, stream));
        ARS_ASSERT_OK(ars_init_fill(b, R, C, kind, 0, 0, 1234, stream));
        assert_memory_equal(a, b, sizeof a);
        ARS_ASSERT_OK(ars_init_fill(b, R, C, kind, 0, 0, 1235, stream));
        assert_true(ars_test_max_abs_diff(a, b, N) > 0);
        ARS_ASSERT_OK(ars_init_fill(b, R, C, kind, 0, 0, 1234, ars_stream(ARS_STREAM_INIT, 3)));
        assert_true(ars_test_max_abs_diff(a, b, N) > 0);
    }
}

static void test_names_and_errors(void **state)
{
    (void)state;
    for (ars_init_kind kind = ARS_INIT_ZEROS; kind <= ARS_INIT_LSUV; kind++) {
        ars_init_kind parsed;
        ARS_ASSERT_OK(ars_init_parse(ars_init_name(kind), &parsed));
        assert_int_equal(parsed, kind);
    }
    ars_init_kind k;
    ARS_ASSERT_OK(ars_init_parse("kaiming_normal", &k));
    assert_int_equal(k, ARS_INIT_HE_NORMAL);
    ARS_ASSERT_OK(ars_init_parse("glorot_uniform", &k));
    assert_int_equal(k, ARS_INIT_XAVIER_UNIFORM);
    assert_int_equal(ars_init_parse("he", &k), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "'he'"));
    assert_non_null(strstr(ars_error_message(), "he_normal"));
    assert_non_null(strstr(ars_error_message(), "orthogonal"));
    float w[4];
    assert_int_equal(ars_init_fill(w, 0, 4, ARS_INIT_NORMAL, 0, 0, 1, 1), ARS_EINVAL);
    assert_int_equal(ars_init_fill(w, 2, 2, (ars_init_kind)99, 0, 0, 1, 1), ARS_EINVAL);
}

static ars_layer_spec dense(int units, const char *init)
{
    ars_layer_spec s;
    ars_layer_spec_defaults(&s, "dense");
    s.units = units;
    strncpy(s.init, init, sizeof s.init - 1);
    return s;
}

static ars_layer_spec plain(const char *kind)
{
    ars_layer_spec s;
    ars_layer_spec_defaults(&s, kind);
    return s;
}

static const float *view_of(const ars_layer *layer, const char *name, size_t *count)
{
    for (int t = 0; t < layer->param_count; t++)
        if (strcmp(layer->params[t].name, name) == 0) {
            *count = layer->params[t].count;
            return layer->param + layer->params[t].offset;
        }
    for (int t = 0; t < layer->buffer_count; t++)
        if (strcmp(layer->buffers[t].name, name) == 0) {
            *count = layer->buffers[t].count;
            return layer->state + layer->buffers[t].offset;
        }
    fail_msg("layer %s has no tensor %s", layer->name, name);
    return NULL;
}

static void assert_all(const ars_layer *layer, const char *name, float value)
{
    size_t n = 0;
    const float *x = view_of(layer, name, &n);
    for (size_t i = 0; i < n; i++)
        if (x[i] != value)
            fail_msg("%s.%s[%zu] is %g, expected %g", layer->name, name, i, x[i], value);
}

static void test_init_model_roles(void **state)
{
    (void)state;
    ars_layer_spec specs[5] = {dense(32, ""), plain("batchnorm"), plain("relu"),
                               dense(32, "he_normal"), dense(32, "")};
    specs[3].init_arg = 0.1f;   /* leaky slope a */
    strcpy(specs[3].init_mode, "fan_out");
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 5, ars_shape_vector(32), 8));
    /* Make every value non-default first, so the test sees writes. */
    for (size_t i = 0; i < model.param_count; i++) model.params[i] = 7.0f;
    for (size_t i = 0; i < model.state_count; i++) model.state[i] = 7.0f;
    ARS_ASSERT_OK(ars_init_model(&model, 99));

    size_t n;
    float expect[32 * 32];
    /* Layer 0: the default xavier_uniform, exactly ars_init_fill on its stream. */
    const float *w0 = view_of(&model.layers[0], "weight", &n);
    assert_int_equal(n, 32 * 32);
    ARS_ASSERT_OK(ars_init_fill(expect, 32, 32, ARS_INIT_XAVIER_UNIFORM, 0, 0, 99,
                                ars_stream(ARS_STREAM_INIT, 0)));
    assert_memory_equal(w0, expect, sizeof expect);
    assert_all(&model.layers[0], "bias", 0.0f);
    /* BatchNorm: gamma 1, beta 0, running_mean 0, running_var 1. */
    assert_all(&model.layers[1], "gamma", 1.0f);
    assert_all(&model.layers[1], "beta", 0.0f);
    assert_all(&model.layers[1], "running_mean", 0.0f);
    assert_all(&model.layers[1], "running_var", 1.0f);
    /* Layer 3: its own initializer, arg and mode. */
    const float *w3 = view_of(&model.layers[3], "weight", &n);
    ARS_ASSERT_OK(ars_init_fill(expect, 32, 32, ARS_INIT_HE_NORMAL, 0.1f, 1, 99,
                                ars_stream(ARS_STREAM_INIT, 3)));
    assert_memory_equal(w3, expect, sizeof expect);
    /* Same kind and shape, different layer: different values. */
    const float *w4 = view_of(&model.layers[4], "weight", &n);
    assert_true(ars_test_max_abs_diff(w0, w4, n) > 0);
    /* Same seed: same model. */
    float *copy = malloc(model.param_count * sizeof *copy);
    memcpy(copy, model.params, model.param_count * sizeof *copy);
    ARS_ASSERT_OK(ars_init_model(&model, 99));
    assert_memory_equal(copy, model.params, model.param_count * sizeof *copy);
    ARS_ASSERT_OK(ars_init_model(&model, 100));
    assert_true(ars_test_max_abs_diff(copy, model.params, model.param_count) > 0);
    free(copy);
    ars_model_destroy(&model);
}

static void test_init_model_errors(void **state)
{
    (void)state;
    ars_layer_spec specs[2] = {dense(8, ""), dense(4, "glorot")};
    specs[1].source_line = 17;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 2, ars_shape_vector(8), 4));
    assert_int_equal(ars_init_model(&model, 1), ARS_EINVAL);
    const char *msg = ars_error_message();
    assert_non_null(strstr(msg, "glorot"));
    assert_non_null(strstr(msg, "001_dense"));
    assert_non_null(strstr(msg, "line 17"));
    ars_model_destroy(&model);

    specs[1] = dense(4, "he_uniform");
    strcpy(specs[1].init_mode, "fan_up");
    ARS_ASSERT_OK(ars_model_create(&model, specs, 2, ars_shape_vector(8), 4));
    assert_int_equal(ars_init_model(&model, 1), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "fan_up"));
    ars_model_destroy(&model);
}

/* --- LSUV ------------------------------------------------------------- */

/* What LSUV reported: each rescaled layer's index, final variance and
 * rescalings, in order. */
enum { LOG_MAX = 32 };
typedef struct {
    int calls;
    int index[LOG_MAX];
    double variance[LOG_MAX];
    int iterations[LOG_MAX];
} lsuv_log;

static void record(void *context, const ars_layer *layer, double variance, int iterations)
{
    lsuv_log *log = context;
    if (log->calls < LOG_MAX) {
        log->index[log->calls] = layer->index;
        log->variance[log->calls] = variance;
        log->iterations[log->calls] = iterations;
    }
    log->calls++;
}

static double variance_of(const float *y, size_t n)
{
    moments m = measure(y, n);
    return m.std * m.std;
}

static void test_lsuv_unit_variance(void **state)
{
    (void)state;
    enum { IN = 48, ROWS_X = 256, LAYERS = 7 };
    ars_layer_spec specs[LAYERS] = {dense(64, "lsuv"), plain("relu"), dense(64, "lsuv"),
                                    plain("relu"),     dense(64, "lsuv"), plain("relu"),
                                    dense(10, "lsuv")};
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, LAYERS, ars_shape_vector(IN), ROWS_X));
    ARS_ASSERT_OK(ars_init_model(&model, 5));
    /* Inputs far from unit scale so the rescaling has work to do. */
    float *x = malloc((size_t)ROWS_X * IN * sizeof *x);
    ars_rng_normal(x, (size_t)ROWS_X * IN, 0.5f, 4.0f, 5, ars_stream(ARS_STREAM_LSUV, 0), 0);

    /* Before: the orthogonal pre-init keeps the input's large variance. */
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = ROWS_X, .global_rows = ROWS_X};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    assert_true(variance_of(model.layers[0].output, (size_t)ROWS_X * 64) > 2.0);

    const double tol = 0.02;
    lsuv_log log = {0};
    ARS_ASSERT_OK(ars_init_lsuv_report(&model, x, ROWS_X, tol, 10, record, &log));
    assert_int_equal(log.calls, 4);
    for (int i = 0; i < 4; i++) {
        if (!(fabs(log.variance[i] - 1.0) < tol))
            fail_msg("dense layer %d: variance %g after %d rescalings", i, log.variance[i],
                     log.iterations[i]);
        assert_true(log.iterations[i] >= 1 && log.iterations[i] <= 10);
    }
    /* An independent forward of the whole model agrees. */
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    for (int l = 0; l < LAYERS; l += 2) {
        size_t n = (size_t)ROWS_X * (size_t)model.layers[l].out_dim;
        double var = variance_of(model.layers[l].output, n);
        if (!(fabs(var - 1.0) < tol)) fail_msg("layer %d output variance %g", l, var);
    }
    /* Already calibrated: a second pass needs no rescaling. */
    lsuv_log again = {0};
    ARS_ASSERT_OK(ars_init_lsuv_report(&model, x, ROWS_X, tol, 10, record, &again));
    for (int i = 0; i < 4; i++) assert_int_equal(again.iterations[i], 0);

    /* Argument errors. */
    assert_int_equal(ars_init_lsuv(&model, x, ROWS_X + 1, tol, 10), ARS_EINVAL);
    assert_int_equal(ars_init_lsuv(&model, x, ROWS_X, 0.0, 10), ARS_EINVAL);
    assert_int_equal(ars_init_lsuv(&model, x, ROWS_X, tol, 0), ARS_EINVAL);
    free(x);
    ars_model_destroy(&model);
}

/* Calibrates the model of a run file on the first rows of data and checks
 * that exactly the layers of the kinds in `rescaled` were rescaled, each
 * to unit output variance, in a fresh forward of the whole model too. */
static void check_lsuv_model(const char *text, const ars_dataset *data, int rows, const char *const *rescaled,
                             int rescaled_count)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_dataset_shape(data), rows));
    free(specs);
    ARS_ASSERT_OK(ars_init_model(&model, 21));

    const double tol = 0.02;
    lsuv_log log = {0};
    ARS_ASSERT_OK(ars_init_lsuv_report(&model, data->x, rows, tol, 10, record, &log));
    int expected = 0;
    for (int l = 0; l < model.layer_count; l++)
        for (int k = 0; k < rescaled_count; k++) expected += strcmp(model.layers[l].spec.kind, rescaled[k]) == 0;
    if (log.calls != expected) fail_msg("LSUV rescaled %d layers, expected %d", log.calls, expected);
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = rows, .global_rows = rows};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, data->x));
    for (int i = 0; i < log.calls && i < LOG_MAX; i++) {
        const ars_layer *layer = &model.layers[log.index[i]];
        int listed = 0;
        for (int k = 0; k < rescaled_count; k++) listed |= strcmp(layer->spec.kind, rescaled[k]) == 0;
        if (!listed) fail_msg("LSUV rescaled %s, a %s", layer->name, layer->spec.kind);
        double var = variance_of(layer->output, (size_t)rows * (size_t)layer->out_dim);
        if (!(fabs(log.variance[i] - 1.0) < tol) || !(fabs(var - 1.0) < tol))
            fail_msg("%s: output variance %g after LSUV (reported %g), expected 1 +- %g", layer->name, var,
                     log.variance[i], tol);
    }
    ars_model_destroy(&model);
}

/* Sequence models on real batches of the sequence tasks: the per-step
 * dense layers (row embedding, the Transformer's MLP), the attention
 * output projection and the token embedding reach unit variance; the RNN
 * (tanh) is left as it is. */
static void test_lsuv_sequence_layers(void **state)
{
    (void)state;
    enum { ROWS_X = 128, TIME = 12 };
    ars_dataset adding, copy;
    ARS_ASSERT_OK(ars_dataset_adding(&adding, ROWS_X, TIME, 3));
    static const char transformer[] =
        "[run]\ndata = adding\nseq_len = 12\n"
        "[seq_dense]\ntime = 12\nunits = 16\ninit = lsuv\n[positional]\n"
        "[transformer]\nunits = 16\nheads = 2\nhidden = 32\ncausal = true\n"
        "[seq_layernorm]\n[mean_pool]\n[dense]\nunits = 1\ninit = lsuv\n";
    const char *const transformer_kinds[] = {"seq_dense", "attention", "dense"};
    check_lsuv_model(transformer, &adding, ROWS_X, transformer_kinds, 3);

    ARS_ASSERT_OK(ars_dataset_copy(&copy, ROWS_X, TIME, ARS_COPY_SYMBOLS, 3));
    static const char recurrent[] =
        "[run]\ndata = copy\nseq_len = 12\n"
        "[embedding]\nvocab = 9\nunits = 16\ninit = lsuv\n[rnn]\ntime = 12\nunits = 16\n[last_step]\n"
        "[dense]\nunits = 8\ninit = lsuv\n";
    const char *const recurrent_kinds[] = {"embedding", "dense"};
    check_lsuv_model(recurrent, &copy, ROWS_X, recurrent_kinds, 2);
    ars_dataset_free(&adding);
    ars_dataset_free(&copy);
}

/* A constant batch gives zero variance: an error, not a division by 0. */
static void test_lsuv_zero_variance(void **state)
{
    (void)state;
    ars_layer_spec specs[1] = {dense(8, "lsuv")};
    specs[0].bias = 0;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 1, ars_shape_vector(4), 16));
    ARS_ASSERT_OK(ars_init_model(&model, 1));
    float x[16 * 4] = {0};
    assert_int_equal(ars_init_lsuv(&model, x, 16, 0.01, 5), ARS_ENUMERIC);
    assert_non_null(strstr(ars_error_message(), "000_dense"));
    ars_model_destroy(&model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_zeros),
        cmocka_unit_test(test_orthogonal),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_names_and_errors),
        cmocka_unit_test(test_init_model_roles),
        cmocka_unit_test(test_init_model_errors),
        cmocka_unit_test(test_lsuv_unit_variance),
        cmocka_unit_test(test_lsuv_sequence_layers),
        cmocka_unit_test(test_lsuv_zero_variance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
