/* test_sequence_layers: the sequence layers (docs/attention.md) against
 * central finite differences (ars_gradcheck_layer / ars_gradcheck_model,
 * tolerance ARS_GRADCHECK_TOLERANCE), attention against a case computed by
 * hand, the per-step gradient norms of the RNN, the run-file sugar of the
 * Transformer block, the adding and copy generators, and a short training
 * run: a small Transformer solves the adding problem at T = 50. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/gradcheck.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/rng.h"
#include "arsenal/train.h"


#define TOL ARS_GRADCHECK_TOLERANCE

static void print_result(const ars_gradcheck_result *r)
{
    print_message("  %-24s checked %4zu kinks %2zu  max rel %.2e  max abs %.2e  noise %.1e  (worst %s)\n",
                  r->name, r->checked, r->kinks, r->max_rel_error, r->max_abs_error, r->noise, r->worst);
}

static void assert_passed(const ars_gradcheck_result *r)
{
    print_result(r);
    assert_true(r->checked > 0);
    if (!(r->max_rel_error < TOL))
        fail_msg("%s: max relative error %.3e at %s >= %.0e", r->name, r->max_rel_error, r->worst, TOL);
}

static ars_layer_spec seq_spec(const char *kind, int time, int units)
{
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    spec.time = time;
    spec.units = units;
    return spec;
}

static void check_kind(const ars_layer_spec *spec, int in_dim, int rows, uint64_t seed)
{
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer(spec, ars_shape_vector(in_dim), rows, seed, NULL, &result));
    snprintf(result.name, sizeof result.name, "%s%s", spec->kind, spec->causal ? " (causal)" : "");
    assert_passed(&result);
}

static void test_seq_dense(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("seq_dense", 4, 5);
    check_kind(&spec, 4 * 3, 3, 101);   /* rows: 4 steps of 3 features */
    spec.bias = 0;
    check_kind(&spec, 4 * 3, 3, 102);
    spec = seq_spec("seq_dense", 0, 3);
    spec.patch = 2;                     /* a 4x4 image: 4 patches of 2x2 */
    check_kind(&spec, 16, 3, 103);
}

/* Patch embedding reads pixels patch by patch: with W = identity, step 1
 * (top-right patch of a 4x4 image) holds pixels 2, 3, 6, 7. */
static void test_patch_order(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("seq_dense", 0, 4);
    spec.patch = 2;
    spec.bias = 0;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(16), 1));
    assert_int_equal(model.layers[0].spec.time, 4);
    assert_int_equal(model.out_dim, 16);
    for (int i = 0; i < 4; i++) model.params[i * 4 + i] = 1.0f;
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (float)i;
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = 1, .global_rows = 1};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y = ars_model_output(&model);
    const float expect[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    for (int i = 0; i < 16; i++) assert_float_equal(y[i], expect[i], 0);
    ars_model_destroy(&model);
}

static void test_positional(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("positional", 5, 0);
    check_kind(&spec, 5 * 4, 3, 111);
    strcpy(spec.encoding, "sinusoidal");
    check_kind(&spec, 5 * 4, 3, 112);

    /* the sinusoidal table: P[t, 2i] = sin(t / 10000^(2i/d)), P[t, 2i+1] = cos(...) */
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(5 * 4), 1));
    assert_int_equal(model.param_count, 0);
    float x[20] = {0};
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = 1, .global_rows = 1};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y = ars_model_output(&model);
    assert_float_equal(y[0], 0.0f, 1e-7);             /* t = 0: sin 0 */
    assert_float_equal(y[1], 1.0f, 1e-7);             /* cos 0 */
    assert_float_equal(y[4 * 3 + 0], sinf(3.0f), 1e-6);
    assert_float_equal(y[4 * 3 + 1], cosf(3.0f), 1e-6);
    assert_float_equal(y[4 * 3 + 2], sinf(3.0f / 100.0f), 1e-6);   /* 10000^(2/4) = 100 */
    assert_float_equal(y[4 * 3 + 3], cosf(3.0f / 100.0f), 1e-6);
    ars_model_destroy(&model);
}

static void test_attention_gradients(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("attention", 5, 0);
    check_kind(&spec, 5 * 4, 3, 121);   /* one head of 4 */
    spec.heads = 2;
    check_kind(&spec, 5 * 4, 3, 122);   /* two heads of 2 */
    spec.causal = 1;
    check_kind(&spec, 5 * 4, 3, 123);
    spec.heads = 1;
    spec.time = 6;
    check_kind(&spec, 6 * 3, 2, 124);   /* odd head width */
}

/* 2 tokens, 1 head, d = 2, by hand. W_q = W_k = I, W_v = [[1, 2], [3, 4]],
 * zero input biases, W_out = I, b_out = (0.5, -0.5); x_0 = (1, 0), x_1 = (0, 1).
 * q = k = x, so the scores are x_i . x_j / sqrt(2) = [[s, 0], [0, s]],
 * s = 1/sqrt(2); softmax of (s, 0): p = e^s / (e^s + 1) = 2.0281150 /
 * 3.0281150 = 0.66976155, 1 - p = 0.33023845. v_0 = W_v x_0 = (1, 3),
 * v_1 = (2, 4).
 *   y_0 = p v_0 + (1-p) v_1 + b_out = (1.33023845, 3.33023845) + b_out = (1.83023845, 2.83023845)
 *   y_1 = (1-p) v_0 + p v_1 + b_out = (1.66976155, 3.66976155) + b_out = (2.16976155, 3.16976155)
 * Causal: step 0 sees only itself, y_0 = v_0 + b_out = (1.5, 2.5); y_1 unchanged. */
static void attention_by_hand(int causal, const float expect[4])
{
    ars_layer_spec spec = seq_spec("attention", 2, 0);
    spec.causal = causal;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(4), 1));
    const ars_layer *layer = &model.layers[0];
    assert_int_equal(layer->param_count, 4);
    float *w_in = model.params + layer->params[0].offset;    /* [6, 2]: W_q; W_k; W_v */
    float *w_out = model.params + layer->params[2].offset;   /* [2, 2] */
    float *b_out = model.params + layer->params[3].offset;
    const float w_in_values[12] = {1, 0, 0, 1, /* W_q */ 1, 0, 0, 1, /* W_k */ 1, 2, 3, 4 /* W_v */};
    memcpy(w_in, w_in_values, sizeof w_in_values);
    w_out[0] = w_out[3] = 1.0f;
    b_out[0] = 0.5f;
    b_out[1] = -0.5f;
    const float x[4] = {1, 0, 0, 1};
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = 1, .global_rows = 1};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y = ars_model_output(&model);
    print_message("  attention by hand%s: y = (%.7f %.7f) (%.7f %.7f)\n", causal ? " (causal)" : "", y[0], y[1],
                  y[2], y[3]);
    for (int i = 0; i < 4; i++) assert_float_equal(y[i], expect[i], 2e-6);
    ars_model_destroy(&model);
}

static void test_attention_by_hand(void **state)
{
    (void)state;
    const float full[4] = {1.83023845f, 2.83023845f, 2.16976155f, 3.16976155f};
    const float causal[4] = {1.5f, 2.5f, 2.16976155f, 3.16976155f};
    attention_by_hand(0, full);
    attention_by_hand(1, causal);
}

/* Causal: changing the last step's input leaves every earlier output alone. */
static void test_causal_mask_blocks_the_future(void **state)
{
    (void)state;
    enum { T = 6, D = 4 };
    ars_layer_spec spec = seq_spec("attention", T, 0);
    spec.heads = 2;
    spec.causal = 1;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(T * D), 1));
    ars_gradcheck_randomize_model(&model, 5);
    float x[T * D], y0[T * D];
    ars_rng_normal(x, T * D, 0.0f, 1.0f, 5, ars_stream(ARS_STREAM_DATA, 77), 0);
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = 1, .global_rows = 1};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    memcpy(y0, ars_model_output(&model), sizeof y0);
    for (int j = 0; j < D; j++) x[(T - 1) * D + j] += 1.0f;
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y1 = ars_model_output(&model);
    for (int i = 0; i < (T - 1) * D; i++) assert_float_equal(y1[i], y0[i], 0);
    double moved = 0;
    for (int i = (T - 1) * D; i < T * D; i++) moved += fabs((double)y1[i] - y0[i]);
    assert_true(moved > 1e-3);
    ars_model_destroy(&model);
}

static void test_seq_layernorm(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("seq_layernorm", 4, 0);
    check_kind(&spec, 4 * 5, 3, 131);

    /* each step normalized on its own: mean 0, variance 1 per step */
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(4 * 5), 2));
    ARS_ASSERT_OK(ars_init_model(&model, 1));
    float x[2 * 20];
    for (int i = 0; i < 40; i++) x[i] = (float)(i * i % 7) + (float)(i / 5) * 10.0f;
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = 2, .global_rows = 2};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y = ars_model_output(&model);
    for (int s = 0; s < 8; s++) {
        double mean = 0, var = 0;
        for (int j = 0; j < 5; j++) mean += y[s * 5 + j] / 5.0;
        for (int j = 0; j < 5; j++) var += (y[s * 5 + j] - mean) * (y[s * 5 + j] - mean) / 5.0;
        assert_true(fabs(mean) < 1e-5);
        assert_true(fabs(var - 1.0) < 1e-3);
    }
    ars_model_destroy(&model);
}

static void test_rnn_gradients(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("rnn", 6, 4);
    check_kind(&spec, 6 * 3, 3, 141);
    spec = seq_spec("rnn", 3, 5);
    check_kind(&spec, 3 * 1, 4, 142);
}

static void test_pooling(void **state)
{
    (void)state;
    ars_layer_spec spec = seq_spec("mean_pool", 4, 0);
    check_kind(&spec, 4 * 3, 3, 151);
    spec = seq_spec("last_step", 4, 0);
    check_kind(&spec, 4 * 3, 3, 152);

    const float x[6] = {1, 2, 3, 4, 8, 16};   /* 3 steps of 2 */
    const char *kinds[] = {"mean_pool", "last_step"};
    const float expect[2][2] = {{4, 22.0f / 3.0f}, {8, 16}};
    for (int k = 0; k < 2; k++) {
        spec = seq_spec(kinds[k], 3, 0);
        ars_model model;
        ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(6), 1));
        ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = 1, .global_rows = 1};
        ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
        assert_float_equal(ars_model_output(&model)[0], expect[k][0], 1e-6);
        assert_float_equal(ars_model_output(&model)[1], expect[k][1], 1e-6);
        ars_model_destroy(&model);
    }
}

/* The ids are inputs the layer rounds: a check's nudge of h = 3e-3 * id
 * keeps each id, so dx = 0 is what the differences see too. */
static void test_embedding(void **state)
{
    (void)state;
    enum { T = 5, ROWS = 3, VOCAB = 7 };
    ars_layer_spec spec = seq_spec("embedding", 0, 4);
    spec.vocab = VOCAB;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, &spec, 1, ars_shape_vector(T), ROWS));
    assert_int_equal(model.out_dim, T * 4);
    ars_gradcheck_randomize_model(&model, 161);
    float x[ROWS * T];
    for (int i = 0; i < ROWS * T; i++) x[i] = (float)((i * 3) % VOCAB);   /* ids repeat: dW accumulates */
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS, .step = 1};
    ars_gradcheck_result result;
    ARS_ASSERT_OK(ars_gradcheck_layer_at(&model.layers[0], &pass, x, 161, NULL, &result));
    assert_passed(&result);

    /* a lookup: row id of the table */
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    const float *y = ars_model_output(&model);
    for (int j = 0; j < 4; j++) assert_float_equal(y[1 * 4 + j], model.params[3 * 4 + j], 0);   /* x[1] = 3 */

    x[4] = (float)VOCAB;   /* out of range */
    assert_int_equal(ars_model_forward(&model, &pass, x), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "not a token id"));
    ars_model_destroy(&model);
}

static void check_model_text(const char *text, int in_dim, int rows, uint64_t seed, const char *label)
{
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_vector(in_dim), rows));
    ars_gradcheck_randomize_model(&model, seed);
    float *x = malloc(sizeof(float) * (size_t)rows * (size_t)in_dim);
    ars_rng_normal(x, (size_t)rows * (size_t)in_dim, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, 99), 0);
    ars_gradcheck_result *results = calloc((size_t)count, sizeof *results);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = rows, .global_rows = rows, .seed = seed, .step = 3};
    ARS_ASSERT_OK(ars_gradcheck_model(&model, &pass, x, seed, NULL, results));
    print_message("  model: %s\n", label);
    for (int i = 0; i < count; i++) {
        if (model.layers[i].param_count == 0) continue;
        assert_passed(&results[i]);
    }
    free(results);
    free(x);
    ars_model_destroy(&model);
    free(specs);
}

static const char run_header[] = "[run]\ndata = adding\nseq_len = 5\nepochs = 1\n";

/* Every parameter of a Transformer model: row embedding, learned positions,
 * two pre-LN blocks (the second causal), final LayerNorm, mean pooling. */
static void test_transformer_model_gradients(void **state)
{
    (void)state;
    char text[1024];
    snprintf(text, sizeof text,
             "%s[seq_dense]\ntime = 5\nunits = 8\n[positional]\n"
             "[transformer]\nunits = 8\nheads = 2\nhidden = 12\n"
             "[transformer]\nunits = 8\nheads = 2\nhidden = 12\ncausal = true\n"
             "[seq_layernorm]\n[mean_pool]\n[dense]\nunits = 1\n",
             run_header);
    check_model_text(text, 5 * 2, 3, 171, "transformer");
    snprintf(text, sizeof text,
             "%s[seq_dense]\ntime = 5\nunits = 6\n[rnn]\nunits = 7\n[last_step]\n[dense]\nunits = 2\n", run_header);
    check_model_text(text, 5 * 2, 3, 172, "rnn");
}

/* [transformer] expands into ten layers; time flows from the layer before
 * (through the shapes: the specs leave it 0, the model resolves it). */
static void test_transformer_sugar(void **state)
{
    (void)state;
    char text[512];
    snprintf(text, sizeof text,
             "%s[seq_dense]\ntime = 7\nunits = 8\n[transformer]\nunits = 8\nheads = 4\ncausal = yes\n[mean_pool]\n",
             run_header);
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    const char *kinds[] = {"seq_dense", "residual", "seq_layernorm", "attention", "residual_add", "residual",
                           "seq_layernorm", "seq_dense", "gelu", "seq_dense", "residual_add", "mean_pool"};
    assert_int_equal(count, 12);
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_vector(14), 2));
    for (int i = 0; i < count; i++) {
        assert_string_equal(specs[i].kind, kinds[i]);
        if (strcmp(kinds[i], "residual") && strcmp(kinds[i], "residual_add") && strcmp(kinds[i], "gelu"))
            assert_int_equal(model.layers[i].spec.time, 7);
        if (i > 0 && i < count - 1) {   /* [7, 8] from the seq_dense to the pooling */
            assert_int_equal(model.layers[i].out_shape.rank, 2);
            assert_int_equal(model.layers[i].out_shape.dims[0], 7);
        }
    }
    assert_int_equal(model.layers[count - 1].out_shape.rank, 1);
    assert_int_equal(model.layers[count - 1].out_dim, 8);
    ars_model_destroy(&model);
    assert_int_equal(specs[3].heads, 4);
    assert_int_equal(specs[3].causal, 1);
    assert_int_equal(specs[7].units, 32);   /* hidden defaults to 4 x units */
    assert_int_equal(specs[9].units, 8);
    free(specs);

    /* a block whose width is not its input's is refused by name */
    snprintf(text, sizeof text, "%s[seq_dense]\ntime = 7\nunits = 8\n[transformer]\nunits = 6\n[mean_pool]\n",
             run_header);
    specs = ars_test_load_specs(text, &count);
    assert_int_equal(ars_model_create(&model, specs, count, ars_shape_vector(14), 2), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "[transformer] units = 6"));
    free(specs);
}

/* The probe: ||dL/dh_t|| per step. With a last-step readout, the last step
 * gets exactly the gradient arriving at the readout; with PyTorch's init
 * the norm then decays going back in time. */
static void test_rnn_time_gradient_norms(void **state)
{
    (void)state;
    enum { T = 12, F = 2, H = 16, ROWS = 8 };
    ars_layer_spec specs[3] = {seq_spec("rnn", T, H), seq_spec("last_step", T, 0), seq_spec("dense", 0, 1)};
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 3, ars_shape_vector(T * F), ROWS));
    ARS_ASSERT_OK(ars_init_model(&model, 3));
    float x[ROWS * T * F], dout[ROWS];
    ars_rng_uniform(x, ROWS * T * F, 0.0f, 1.0f, 3, ars_stream(ARS_STREAM_DATA, 5), 0);
    for (int i = 0; i < ROWS; i++) dout[i] = 1.0f / ROWS;
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS, .probe = 1};
    ARS_ASSERT_OK(ars_model_forward(&model, &pass, x));
    ARS_ASSERT_OK(ars_model_backward(&model, &pass, dout, NULL, NULL));
    const ars_layer *rnn = &model.layers[0];
    assert_int_equal(rnn->time_grad_count, T);
    assert_non_null(rnn->time_grad_norm);
    print_message("  ||dL/dh_t||, t = 0..%d:", T - 1);
    for (int t = 0; t < T; t++) print_message(" %.2e", rnn->time_grad_norm[t]);
    print_message("\n");
    const double last = rnn->time_grad_norm[T - 1];
    assert_true(fabs(last - model.layers[1].output_grad_norm) <= 1e-6 * last);
    for (int t = 0; t < T; t++) assert_true(isfinite(rnn->time_grad_norm[t]) && rnn->time_grad_norm[t] > 0);
    assert_true(rnn->time_grad_norm[0] < 0.1 * last);   /* vanishing over 11 steps */
    ars_model_destroy(&model);
}

static void test_adding_task(void **state)
{
    (void)state;
    enum { N = 20000, T = 10 };
    ars_dataset data;
    ARS_ASSERT_OK(ars_dataset_adding(&data, N, T, 42));
    assert_int_equal(data.dim, 2 * T);
    assert_int_equal(data.target_dim, 1);
    assert_null(data.labels);
    double se = 0;
    for (int i = 0; i < N; i++) {
        const float *row = data.x + (size_t)i * data.dim;
        int markers = 0, first = -1, second = -1;
        double sum = 0;
        for (int t = 0; t < T; t++) {
            assert_true(row[2 * t] > 0.0f && row[2 * t] < 1.0f);
            assert_true(row[2 * t + 1] == 0.0f || row[2 * t + 1] == 1.0f);
            if (row[2 * t + 1] == 1.0f) {
                markers++;
                sum += row[2 * t];
                if (first < 0) first = t;
                else second = t;
            }
        }
        assert_int_equal(markers, 2);
        assert_true(first < T / 2 && second >= T / 2);   /* one marker in each half */
        assert_float_equal(data.targets[i], (float)sum, 1e-6);
        se += (data.targets[i] - 1.0) * (data.targets[i] - 1.0);
    }
    print_message("  adding: always answering 1.0 scores MSE %.4f (1/6 = 0.1667)\n", se / N);
    assert_true(fabs(se / N - 1.0 / 6.0) < 0.005);
    /* deterministic in the seed */
    ars_dataset again;
    ARS_ASSERT_OK(ars_dataset_adding(&again, 100, T, 42));
    assert_memory_equal(again.x, data.x, sizeof(float) * 100 * 2 * T);
    ars_dataset_free(&again);
    ars_dataset_free(&data);
    assert_int_equal(ars_dataset_adding(&data, 10, 1, 1), ARS_EINVAL);
}

static void test_copy_task(void **state)
{
    (void)state;
    enum { N = 4000, T = 9, K = ARS_COPY_SYMBOLS };
    ars_dataset data;
    ARS_ASSERT_OK(ars_dataset_copy(&data, N, T, K, 43));
    assert_int_equal(data.dim, T);
    assert_int_equal(data.classes, K);
    int counts[K] = {0};
    for (int i = 0; i < N; i++) {
        const float *row = data.x + (size_t)i * T;
        assert_int_equal(data.labels[i], (int)row[0]);
        for (int t = 0; t < T - 1; t++) assert_true(row[t] >= 0 && row[t] < K && row[t] == floorf(row[t]));
        assert_float_equal(row[T - 1], (float)K, 0);   /* the recall cue */
        counts[data.labels[i]]++;
    }
    for (int k = 0; k < K; k++) assert_true(counts[k] > N / K / 2);   /* every symbol is asked for */
    ars_dataset_free(&data);
}

/* The test that the layers learn: a pre-LN Transformer on the adding
 * problem at T = 50, a few seconds of one process. */
static void test_transformer_learns_adding(void **state)
{
    (void)state;
    static const char text[] =
        "[run]\ndata = adding\nseq_len = 50\ntrain_samples = 4000\ntest_samples = 500\nepochs = 0\n"
        "max_steps = 250\nbatch = 32\nseed = 1\nlr = 0.003\n"
        "[seq_dense]\ntime = 50\nunits = 32\n[positional]\n"
        "[transformer]\nunits = 32\nheads = 4\nhidden = 64\n"
        "[seq_layernorm]\n[mean_pool]\n[dense]\nunits = 1\n";
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "adding.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, &run, &specs, &count));
    assert_int_equal(run.loss, ARS_LOSS_MSE);   /* the adding problem's default */
    ars_train_options options = {.quiet = 1};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, NULL, &options, &result));
    print_message("  adding T = 50: transformer test MSE %.4f after %lld steps, %.1f s (answering 1.0: 0.167)\n",
                  result.test_loss, (long long)result.steps, result.seconds);
    assert_true(result.test_loss < 0.05);   /* measured 0.0126 */
    free(specs);
    ars_config_free(&config);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_dense),
        cmocka_unit_test(test_patch_order),
        cmocka_unit_test(test_positional),
        cmocka_unit_test(test_attention_gradients),
        cmocka_unit_test(test_attention_by_hand),
        cmocka_unit_test(test_causal_mask_blocks_the_future),
        cmocka_unit_test(test_seq_layernorm),
        cmocka_unit_test(test_rnn_gradients),
        cmocka_unit_test(test_pooling),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_transformer_model_gradients),
        cmocka_unit_test(test_transformer_sugar),
        cmocka_unit_test(test_rnn_time_gradient_norms),
        cmocka_unit_test(test_adding_task),
        cmocka_unit_test(test_copy_task),
        cmocka_unit_test(test_transformer_learns_adding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
