/* test_evaluate: arsenal evaluate's figures and arsenal predict's inputs
 * and outputs, one process (src/eval/). The figures of a one-layer model
 * whose logits are its inputs (an identity dense layer) against a hand
 * computation: the confusion matrix, accuracy, per-class precision /
 * recall / F1 and their macro and weighted averages, the cross-entropy
 * loss, for every chunk size; the regression figures of a known linear
 * map. A model written to a checkpoint and rebuilt from its /config gives
 * the figures of the model itself, with the standardization stored or
 * (older files) recomputed; a /config that does not build is refused with
 * the file and the key. The input readers (IDX plain and gzip, HDF5, npy,
 * CSV) give the values written, batch by batch, and refuse bad files with
 * what and where; predict streams an HDF5 input in batches into the
 * probabilities of the model's own forward pass. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "arsenal/ckpt.h"
#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/evaluate.h"
#include "arsenal/init.h"
#include "arsenal/predict.h"

/* ---- figures by hand ---------------------------------------------------------- */

/* A dense layer of width n with weight I and bias 0: logits = x. */
static void identity_model(ars_model *model, int in, int out, const float *weight, const float *bias, int rows)
{
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "dense");
    spec.units = out;
    ARS_ASSERT_OK(ars_model_create(model, &spec, 1, ars_shape_vector(in), rows));
    ars_layer *layer = &model->layers[0];
    memcpy(layer->param + layer->params[0].offset, weight, sizeof(float) * (size_t)in * out);
    memcpy(layer->param + layer->params[1].offset, bias, sizeof(float) * (size_t)out);
}

/* 7 samples, 3 classes; logits = x. Predicted (argmax): 0 1 1 2 2 0 1. */
static const float hand_x[7][3] = {{2, 0, 0}, {0, 1, 0}, {0, 3, 1}, {0, 0, 2}, {0, 0, 1}, {1, 0, 0}, {0, 5, 0}};
static const int32_t hand_labels[7] = {0, 0, 1, 1, 2, 2, 1};

static void hand_dataset(ars_dataset *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "hand");
    d->count = 7;
    d->dim = 3;
    d->shape = ars_shape_vector(3);
    d->classes = 3;
    d->x = malloc(sizeof hand_x);
    d->labels = malloc(sizeof hand_labels);
    memcpy(d->x, hand_x, sizeof hand_x);
    memcpy(d->labels, hand_labels, sizeof hand_labels);
}

static void test_classification_figures_by_hand(void **state)
{
    (void)state;
    const float eye[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, zero[3] = {0, 0, 0};
    ars_dataset d;
    hand_dataset(&d);
    /* true 0: predicted 0, 1; true 1: 1, 2, 1; true 2: 2, 0 */
    const int64_t confusion[9] = {1, 1, 0, 0, 2, 1, 1, 0, 1};
    const double precision[3] = {1.0 / 2, 2.0 / 3, 1.0 / 2}, recall[3] = {1.0 / 2, 2.0 / 3, 1.0 / 2};
    double loss = 0;   /* mean of log(sum_j e^{x_j}) - x_label */
    for (int i = 0; i < 7; i++)
        loss += log(exp(hand_x[i][0]) + exp(hand_x[i][1]) + exp(hand_x[i][2])) - hand_x[i][hand_labels[i]];
    loss /= 7;
    const int batches[] = {1, 2, 3, 7, 100};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        ars_model model;
        identity_model(&model, 3, 3, eye, zero, batches[b]);
        ars_eval_result r;
        ARS_ASSERT_OK(ars_evaluate_dataset(&model, &d, ARS_LOSS_CROSS_ENTROPY, 1, batches[b], NULL, &r));
        assert_int_equal(r.samples, 7);
        assert_int_equal(r.classes, 3);
        for (int i = 0; i < 9; i++) assert_int_equal(r.confusion[i], confusion[i]);
        assert_int_equal(r.correct, 4);
        assert_true(fabs(r.accuracy - 4.0 / 7) < 1e-15);
        assert_true(fabs(r.loss - loss) < 1e-12);
        for (int c = 0; c < 3; c++) {
            assert_true(fabs(r.precision[c] - precision[c]) < 1e-15);
            assert_true(fabs(r.recall[c] - recall[c]) < 1e-15);
            assert_true(fabs(r.f1[c] - 2 * precision[c] * recall[c] / (precision[c] + recall[c])) < 1e-15);
        }
        assert_int_equal(r.support[1], 3);
        assert_int_equal(r.predicted[1], 3);
        assert_true(fabs(r.macro_precision - (0.5 + 2.0 / 3 + 0.5) / 3) < 1e-15);
        assert_true(fabs(r.macro_f1 - (0.5 + 2.0 / 3 + 0.5) / 3) < 1e-15);
        assert_true(fabs(r.weighted_precision - (0.5 * 2 + 2.0 / 3 * 3 + 0.5 * 2) / 7) < 1e-15);
        assert_true(fabs(r.weighted_recall - 4.0 / 7) < 1e-15);
        ars_eval_result_free(&r);
        ars_model_destroy(&model);
    }
    ars_dataset_free(&d);
}

/* A class nobody predicts and no sample holds: 0, and out of the macro
 * average; a label beyond the outputs is refused. */
static void test_absent_class_and_too_many_classes(void **state)
{
    (void)state;
    const float w[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, b[4] = {0, 0, 0, -100};
    ars_dataset d;
    hand_dataset(&d);
    ars_model model;
    identity_model(&model, 3, 4, w, b, 4);
    ars_eval_result r;
    ARS_ASSERT_OK(ars_evaluate_dataset(&model, &d, ARS_LOSS_CROSS_ENTROPY, 1, 4, NULL, &r));
    assert_int_equal(r.classes, 4);
    assert_int_equal(r.support[3], 0);
    assert_true(r.precision[3] == 0 && r.recall[3] == 0 && r.f1[3] == 0);
    assert_true(fabs(r.macro_precision - (0.5 + 2.0 / 3 + 0.5) / 3) < 1e-15);
    ars_eval_result_free(&r);
    ars_model_destroy(&model);
    d.classes = 5;
    identity_model(&model, 3, 4, w, b, 4);
    assert_int_equal(ars_evaluate_dataset(&model, &d, ARS_LOSS_CROSS_ENTROPY, 1, 4, NULL, &r), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "5 classes"));
    ars_model_destroy(&model);
    ars_dataset_free(&d);
}

static void test_regression_figures_by_hand(void **state)
{
    (void)state;
    /* y = x0 + 2 x1 + 0.5; targets off by +1, -1, +2, 0 */
    const float w[2] = {1, 2}, b[1] = {0.5f};
    const float x[4][2] = {{0, 0}, {1, 0}, {0, 1}, {2, 1}};
    const float t[4] = {1.5f, 0.5f, 4.5f, 4.5f};
    ars_dataset d;
    memset(&d, 0, sizeof d);
    d.count = 4;
    d.dim = 2;
    d.shape = ars_shape_vector(2);
    d.target_dim = 1;
    d.x = malloc(sizeof x);
    d.targets = malloc(sizeof t);
    memcpy(d.x, x, sizeof x);
    memcpy(d.targets, t, sizeof t);
    ars_model model;
    identity_model(&model, 2, 1, w, b, 3);
    ars_eval_result r;
    ARS_ASSERT_OK(ars_evaluate_dataset(&model, &d, ARS_LOSS_MSE, 0, 3, NULL, &r));
    const double mse = (1.0 + 1 + 4 + 0) / 4, mae = (1.0 + 1 + 2 + 0) / 4;
    const double mean = (1.5 + 0.5 + 4.5 + 4.5) / 4;
    const double total = (1.5 - mean) * (1.5 - mean) + (0.5 - mean) * (0.5 - mean) + 2 * (4.5 - mean) * (4.5 - mean);
    assert_false(r.classifier);
    assert_true(fabs(r.loss - mse) < 1e-15);
    assert_true(fabs(r.mse - mse) < 1e-15);
    assert_true(fabs(r.mae - mae) < 1e-15);
    assert_true(fabs(r.rmse - sqrt(mse)) < 1e-15);
    assert_true(fabs(r.r2 - (1 - 6.0 / total)) < 1e-15);
    ars_eval_result_free(&r);
    ars_model_destroy(&model);
    ars_dataset_free(&d);
}

static void test_shape_check(void **state)
{
    (void)state;
    const ars_shape image = ars_shape_image(1, 28, 28);
    ars_shape matrix = ars_shape_matrix(28, 28), flat = ars_shape_vector(784), other = ars_shape_matrix(2, 392);
    ars_shape rgb = ars_shape_image(3, 32, 32);
    ARS_ASSERT_OK(ars_trained_check_shape(&image, &image, "m.h5", "x"));
    ARS_ASSERT_OK(ars_trained_check_shape(&image, &matrix, "m.h5", "x"));   /* [28, 28]: one channel */
    ARS_ASSERT_OK(ars_trained_check_shape(&image, &flat, "m.h5", "x"));
    ARS_ASSERT_OK(ars_trained_check_shape(&flat, &other, "m.h5", "x"));    /* a flat model reads any 784 values */
    assert_int_equal(ars_trained_check_shape(&image, &other, "m.h5", "in.h5:/x"), ARS_EINVAL);
    assert_int_equal(ars_trained_check_shape(&image, &rgb, "m.h5", "in.h5:/x"), ARS_EINVAL);
    assert_string_equal(ars_error_message(), "in.h5:/x: samples of shape [3, 32, 32] (3072 values) do not fit the "
                        "model of m.h5, which takes [1, 28, 28] (784 values)");
}

/* ---- a model through a checkpoint -------------------------------------------- */

static const char blobs_run[] =
    "[run]\ndata = blobs\ntrain_samples = 60\ntest_samples = 29\nseed = 5\n"
    "[dense]\nunits = 8\nactivation = relu\n[batchnorm]\n[dropout]\nrate = 0.3\n[dense]\nunits = 4\n";

typedef struct fixture {
    char dir[512], path[600];
    ars_run_config run;
    ars_model model;
    ars_dataset train, test;   /* standardized as the run does */
    double mean, std;
} fixture;

static void load_run(const char *text, ars_run_config *run, ars_layer_spec **specs, int *count)
{
    ars_config config;
    ARS_ASSERT_OK(ars_config_load_string(&config, text, "test"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ARS_ASSERT_OK(ars_run_config_load(&config, run, specs, count));
    ars_config_free(&config);
}

/* Writes the model of config_text (weights from a seed, BatchNorm
 * statistics far from their defaults) to f->path; with_stats 0 writes a
 * file as arsenal wrote them before data_mean/data_std. */
static void write_checkpoint(fixture *f, const char *config_text, int with_stats)
{
    ars_layer_spec *specs;
    int count;
    load_run(config_text, &f->run, &specs, &count);
    ARS_ASSERT_OK(ars_load_run_data_stats(&f->run, 0, f->run.train_limit, &f->train, &f->test, &f->mean, &f->std));
    ARS_ASSERT_OK(ars_model_create(&f->model, specs, count, ars_dataset_shape(&f->train), 64));
    ARS_ASSERT_OK(ars_init_model(&f->model, 3));
    for (size_t i = 0; i < f->model.state_count; i++) f->model.state[i] = 0.3f + 0.05f * (float)(i % 7);
    ars_optimizer opt;
    ars_optim_config oc;
    ars_optim_config_defaults(&oc, ARS_OPT_ADAM);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &oc, f->model.param_count));
    char names[8][40];
    for (int l = 0; l < f->model.layer_count; l++) memcpy(names[l], f->model.layers[l].name, 40);
    ars_history h;
    ARS_ASSERT_OK(ars_history_init(&h, f->model.layer_count, (const char (*)[40])names, 0));
    ars_ckpt_state s = {.step = 12, .epoch = 1, .steps_per_epoch = 10, .world_size = 1, .global_batch = 8,
                        .seed = 5, .test_loss = NAN, .test_accuracy = NAN, .config_text = config_text,
                        .has_data_stats = with_stats, .data_mean = f->mean, .data_std = f->std};
    ARS_ASSERT_OK(ars_ckpt_write(f->path, &f->model, &opt, &h, &s));
    ars_history_free(&h);
    ars_optimizer_destroy(&opt);
    free(specs);
}

static void fixture_open(fixture *f, const char *tag)
{
    memset(f, 0, sizeof *f);
    ars_test_tempdir(f->dir, sizeof f->dir, tag);
    snprintf(f->path, sizeof f->path, "%s/ck.h5", f->dir);
}

static void fixture_close(fixture *f)
{
    ars_model_destroy(&f->model);
    ars_dataset_free(&f->train);
    ars_dataset_free(&f->test);
    ars_test_remove_tree(f->dir);
}

static void test_checkpoint_gives_the_models_figures(void **state)
{
    (void)state;
    for (int with_stats = 1; with_stats >= 0; with_stats--) {
        fixture f;
        fixture_open(&f, "evaluate");
        write_checkpoint(&f, blobs_run, with_stats);
        ars_eval_result direct;
        ARS_ASSERT_OK(ars_evaluate_dataset(&f.model, &f.test, ARS_LOSS_CROSS_ENTROPY, 1, 7, NULL, &direct));
        ars_evaluate_options o = {.checkpoint = f.path, .batch = 7};
        ars_eval_report report;
        int agreed;
        ARS_ASSERT_OK(ars_evaluate_checkpoint(&o, NULL, &report, &agreed));
        assert_int_equal(report.stats_stored, with_stats);
        assert_true(report.data_mean == f.mean && report.data_std == f.std);
        assert_int_equal(report.step, 12);
        assert_string_equal(report.split, "test");
        assert_int_equal(report.result.samples, 29);
        assert_true(report.result.loss == direct.loss);   /* bit for bit: the same model, data and chunks */
        for (int i = 0; i < 16; i++) assert_int_equal(report.result.confusion[i], direct.confusion[i]);
        /* the text and the JSON carry them */
        char *text = NULL, *json = NULL;
        size_t text_size = 0, json_size = 0;
        FILE *out = open_memstream(&text, &text_size);
        ars_eval_print(out, &report);
        fclose(out);
        out = open_memstream(&json, &json_size);
        ars_eval_json(out, &report);
        fclose(out);
        char expect[128];
        snprintf(expect, sizeof expect, "accuracy %.4f (%lld of 29)", direct.accuracy, (long long)direct.correct);
        assert_non_null(strstr(text, expect));
        assert_non_null(strstr(text, "confusion matrix (rows: true class, columns: predicted class)"));
        snprintf(expect, sizeof expect, "\"loss\":%.17g", direct.loss);
        assert_non_null(strstr(json, expect));
        assert_non_null(strstr(json, with_stats ? "\"source\":\"checkpoint\"" : "\"source\":\"recomputed\""));
        assert_true(json[json_size - 2] == '}' && json[json_size - 1] == '\n' && !strchr(json, '\n')[1]);
        free(text);
        free(json);
        /* the training split too */
        ars_eval_report_free(&report);
        o.train_split = 1;
        ARS_ASSERT_OK(ars_evaluate_checkpoint(&o, NULL, &report, &agreed));
        assert_int_equal(report.result.samples, 60);
        ars_eval_report_free(&report);
        ars_eval_result_free(&direct);
        fixture_close(&f);
    }
}

static void test_config_that_does_not_build(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, "evaluate-bad");
    write_checkpoint(&f, blobs_run, 1);
    /* the same tensors under a run file with a key arsenal does not know */
    static const char bad[] = "[run]\ndata = blobs\ntrain_samples = 60\ntest_samples = 29\nseed = 5\nbogus = 1\n"
                              "[dense]\nunits = 8\nactivation = relu\n[batchnorm]\n[dropout]\n[dense]\nunits = 4\n";
    ars_model model = f.model;   /* fixture_close destroys it */
    ars_optimizer opt;
    ars_optim_config oc;
    ars_optim_config_defaults(&oc, ARS_OPT_ADAM);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &oc, model.param_count));
    char names[8][40];
    for (int l = 0; l < model.layer_count; l++) memcpy(names[l], model.layers[l].name, 40);
    ars_history h;
    ARS_ASSERT_OK(ars_history_init(&h, model.layer_count, (const char (*)[40])names, 0));
    ars_ckpt_state s = {.steps_per_epoch = 1, .world_size = 1, .global_batch = 8, .config_text = bad};
    ARS_ASSERT_OK(ars_ckpt_write(f.path, &model, &opt, &h, &s));
    ars_trained t;
    assert_int_equal(ars_trained_open(&t, f.path, NULL, 0, NULL, NULL), ARS_EINVAL);
    char expect[1400];
    snprintf(expect, sizeof expect, "rebuilding the model of %s: %s:/config:6: [run] unknown key 'bogus'", f.path,
             f.path);
    assert_string_equal(ars_error_message(), expect);
    ars_trained_free(&t);
    /* an empty run file */
    s.config_text = "";
    ARS_ASSERT_OK(ars_ckpt_write(f.path, &model, &opt, &h, &s));
    assert_int_equal(ars_trained_open(&t, f.path, NULL, 0, NULL, NULL), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), ":/config is empty"));
    ars_trained_free(&t);
    /* a model other than the tensors': the layer and both shapes */
    s.config_text = "[run]\ndata = blobs\ntrain_samples = 60\ntest_samples = 29\n[dense]\nunits = 5\nactivation = "
                    "relu\n[batchnorm]\n[dropout]\n[dense]\nunits = 4\n";
    ARS_ASSERT_OK(ars_ckpt_write(f.path, &model, &opt, &h, &s));
    ARS_ASSERT_OK(ars_trained_open(&t, f.path, NULL, 0, NULL, NULL));
    t.input_shape = ars_shape_vector(16);
    assert_int_equal(ars_trained_build(&t, 8, NULL), ARS_EFORMAT);
    assert_non_null(strstr(ars_error_message(), "000_dense/weight has shape [8, 16], the model needs [5, 16]"));
    ars_trained_free(&t);
    /* a missing file */
    assert_int_equal(ars_trained_open(&t, "/nonexistent/ck.h5", NULL, 0, NULL, NULL), ARS_EIO);
    assert_string_equal(ars_error_message(), "/nonexistent/ck.h5: No such file or directory");
    ars_history_free(&h);
    ars_optimizer_destroy(&opt);
    fixture_close(&f);
}

/* ---- inputs ------------------------------------------------------------------ */

static void read_all(const char *path, const char *dataset, int batch, float *x, int expect_count, int dim)
{
    ars_input *in;
    ARS_ASSERT_OK(ars_input_open(path, dataset, &in));
    ars_shape shape = ars_input_shape(in);
    assert_int_equal((int)ars_shape_count(&shape), dim);
    int total = 0, rows;
    do {
        ARS_ASSERT_OK(ars_input_read(in, batch, x + (size_t)total * dim, &rows));
        assert_true(rows <= batch);
        total += rows;
    } while (rows > 0);
    assert_int_equal(total, expect_count);
    ars_input_close(in);
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

static void test_inputs(void **state)
{
    (void)state;
    char dir[512], path[700];
    ars_test_tempdir(dir, sizeof dir, "inputs");
    enum { N = 5, H = 2, W = 3 };
    unsigned char idx[16 + N * H * W];
    idx[0] = idx[1] = 0, idx[2] = 0x08, idx[3] = 3;
    be32(idx + 4, N), be32(idx + 8, H), be32(idx + 12, W);
    for (int i = 0; i < N * H * W; i++) idx[16 + i] = (unsigned char)(i * 7);
    float x[N * H * W + 8];
    /* IDX, plain and gzip, scaled as ars_mnist_load scales pixels */
    snprintf(path, sizeof path, "%s/images-idx3-ubyte", dir);
    ars_test_write_file(path, idx, sizeof idx);
    read_all(path, NULL, 2, x, N, H * W);
    for (int i = 0; i < N * H * W; i++) assert_true(x[i] == (float)(unsigned char)(i * 7) * (1.0f / 255.0f));
    ars_input *in;
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    ars_shape shape = ars_input_shape(in);
    assert_int_equal(shape.rank, 3);   /* [1, H, W]: images of one channel */
    assert_int_equal(ars_input_count(in), N);
    ars_input_close(in);
    snprintf(path, sizeof path, "%s/images-idx3-ubyte.gz", dir);
    gzFile gz = gzopen(path, "wb");
    gzwrite(gz, idx, sizeof idx);
    gzclose(gz);
    memset(x, 0, sizeof x);
    read_all(path, NULL, 3, x, N, H * W);
    assert_true(x[N * H * W - 1] == (float)(unsigned char)((N * H * W - 1) * 7) * (1.0f / 255.0f));
    /* truncated: the header promises more */
    snprintf(path, sizeof path, "%s/short-idx3-ubyte", dir);
    ars_test_write_file(path, idx, sizeof idx - 4);
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    int rows;
    ARS_ASSERT_OK(ars_input_read(in, 4, x, &rows));
    assert_int_not_equal(ars_input_read(in, 4, x, &rows), 0);
    assert_non_null(strstr(ars_error_message(), "truncated: the header declares 5 samples, the file ends in sample 4"));
    ars_input_close(in);
    /* npy: float32 [5, 2, 3] and uint8 */
    {
        char header[128];
        int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }",
                         N, H, W);
        while ((10 + n + 1) % 64) header[n++] = ' ';
        header[n++] = '\n';
        size_t bytes = 10 + (size_t)n + sizeof(float) * N * H * W;
        unsigned char *file = malloc(bytes);
        memcpy(file, "\x93NUMPY\x01\x00", 8);
        file[8] = (unsigned char)n, file[9] = 0;
        memcpy(file + 10, header, (size_t)n);
        for (int i = 0; i < N * H * W; i++) {
            float v = 0.25f * i - 3;
            memcpy(file + 10 + n + 4 * i, &v, 4);
        }
        snprintf(path, sizeof path, "%s/x.npy", dir);
        ars_test_write_file(path, file, bytes);
        read_all(path, NULL, 4, x, N, H * W);
        for (int i = 0; i < N * H * W; i++) assert_true(x[i] == 0.25f * i - 3);
        ars_test_write_file(path, file, bytes - 1);
        assert_int_not_equal(ars_input_open(path, NULL, &in), 0);
        assert_non_null(strstr(ars_error_message(), "truncated"));
        memcpy(file + 10 + 11, ">f4", 3);   /* {'descr': '>f4' */
        ars_test_write_file(path, file, bytes);
        assert_int_not_equal(ars_input_open(path, NULL, &in), 0);
        assert_non_null(strstr(ars_error_message(), "dtype '>f4' is not read"));
        free(file);
    }
    /* CSV: a header, numbers; a bad value names line and column */
    snprintf(path, sizeof path, "%s/x.csv", dir);
    static const char csv[] = "a,b,c\n1,2,3\n\n4.5, -5e-1 ,6\n7,8,9\r\n";
    ars_test_write_file(path, csv, sizeof csv - 1);
    read_all(path, NULL, 2, x, 3, 3);
    assert_true(x[3] == 4.5f && x[4] == -0.5f && x[8] == 9);
    /* the run's label column is no feature */
    static const char labelled[] = "a, \"label\" ,c\n1,7,3\n4,8,6\n";
    ars_test_write_file(path, labelled, sizeof labelled - 1);
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    assert_int_equal(ars_input_drop_column(in, "nothere"), 0);
    assert_int_equal(ars_input_drop_column(in, "label"), 1);
    shape = ars_input_shape(in);
    assert_int_equal((int)ars_shape_count(&shape), 2);
    ARS_ASSERT_OK(ars_input_read(in, 5, x, &rows));
    assert_int_equal(rows, 2);
    assert_true(x[0] == 1 && x[1] == 3 && x[2] == 4 && x[3] == 6);
    ars_input_close(in);
    static const char bad_csv[] = "a,b\n1,2\n3,x\n";
    ars_test_write_file(path, bad_csv, sizeof bad_csv - 1);
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    assert_int_not_equal(ars_input_read(in, 10, x, &rows), 0);
    snprintf(path, sizeof path, "%s/x.csv:3: column 2: 'x' is not a finite number", dir);
    assert_string_equal(ars_error_message(), path);
    ars_input_close(in);
    snprintf(path, sizeof path, "%s/x.csv", dir);
    static const char short_csv[] = "a,b,c\n1,2\n";
    ars_test_write_file(path, short_csv, sizeof short_csv - 1);
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    assert_int_not_equal(ars_input_read(in, 10, x, &rows), 0);
    assert_non_null(strstr(ars_error_message(), "x.csv:2: fewer columns than the header's 3"));
    ars_input_close(in);
    static const char huge_csv[] = "a,b\n1,-5e41\n";   /* a float64, beyond float32 */
    ars_test_write_file(path, huge_csv, sizeof huge_csv - 1);
    ARS_ASSERT_OK(ars_input_open(path, NULL, &in));
    assert_int_not_equal(ars_input_read(in, 10, x, &rows), 0);
    assert_non_null(strstr(ars_error_message(), "x.csv:2: column 2: '-5e41' is not a finite number within float32's"));
    ars_input_close(in);
    static const char no_header[] = "1,2\n3,4\n";
    ars_test_write_file(path, no_header, sizeof no_header - 1);
    assert_int_not_equal(ars_input_open(path, NULL, &in), 0);
    assert_non_null(strstr(ars_error_message(), "a header row naming the columns is expected"));
    /* HDF5: any numeric type, converted; a missing dataset lists the others */
    snprintf(path, sizeof path, "%s/in.h5", dir);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[3] = {N, H, W};
    hid_t space = H5Screate_simple(3, dims, NULL);
    hid_t set = H5Dcreate2(file, "images", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double values[N * H * W];
    for (int i = 0; i < N * H * W; i++) values[i] = 0.5 * i;
    H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
    assert_int_equal(ars_input_open(path, NULL, &in), ARS_EINVAL);
    char expect[800];
    snprintf(expect, sizeof expect, "%s: no dataset 'x' (its datasets: images); --dataset NAME reads another", path);
    assert_string_equal(ars_error_message(), expect);
    memset(x, 0, sizeof x);
    read_all(path, "images", 2, x, N, H * W);
    for (int i = 0; i < N * H * W; i++) assert_true(x[i] == 0.5f * i);
    /* a NaN is refused with its sample, as in training data, and at the
     * open already: the checking child reads the whole input first */
    values[2 * H * W + 1] = NAN;
    file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    set = H5Dopen2(file, "images", H5P_DEFAULT);
    H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    H5Dclose(set);
    H5Fclose(file);
    in = NULL;
    assert_int_equal(ars_input_open(path, "images", &in), ARS_ENUMERIC);
    assert_null(in);
    assert_non_null(strstr(ars_error_message(), "in.h5:/images: sample 2 holds NaN"));
    ars_test_remove_tree(dir);
}

/* predict over an HDF5 input of raw (unstandardized) samples, 4 at a time:
 * the softmax of the model's own forward pass on the standardized set. */
static void test_predict_streams_hdf5(void **state)
{
    (void)state;
    fixture f;
    fixture_open(&f, "predict");
    write_checkpoint(&f, blobs_run, 1);
    ars_run_config raw_run = f.run;
    raw_run.standardize = 0;
    ars_dataset raw_train, raw_test;
    ARS_ASSERT_OK(ars_load_run_data(&raw_run, 0, 0, &raw_train, &raw_test));
    char input[700], out[700];
    snprintf(input, sizeof input, "%s/x.h5", f.dir);
    hid_t file = H5Fcreate(input, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {(hsize_t)raw_test.count, (hsize_t)raw_test.dim};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t set = H5Dcreate2(file, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw_test.x);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
    snprintf(out, sizeof out, "%s/p.h5", f.dir);
    ars_predict_options o = {.checkpoint = f.path, .input = input, .out = out, .batch = 4, .top = 2};
    ars_predict_summary summary;
    ARS_ASSERT_OK(ars_predict_checkpoint(&o, &summary));
    assert_int_equal(summary.samples, raw_test.count);
    assert_true(summary.classifier && summary.hdf5);
    /* the model on the standardized test set, all rows at once */
    const int n = f.test.count, C = 4;
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = n, .global_rows = n};
    ARS_ASSERT_OK(ars_model_forward(&f.model, &pass, f.test.x));
    const float *z = ars_model_output(&f.model);
    float *p = malloc(sizeof(float) * (size_t)n * C);
    int32_t *top = malloc(sizeof(int32_t) * (size_t)n * 2);
    file = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    set = H5Dopen2(file, "probabilities", H5P_DEFAULT);
    ARS_ASSERT_OK(H5Dread(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, p) < 0);
    H5Dclose(set);
    set = H5Dopen2(file, "top_classes", H5P_DEFAULT);
    ARS_ASSERT_OK(H5Dread(set, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, top) < 0);
    H5Dclose(set);
    H5Fclose(file);
    double worst = 0;
    for (int r = 0; r < n; r++) {
        double sum = 0, row = 0;
        for (int c = 0; c < C; c++) sum += exp(z[r * C + c]);
        for (int c = 0; c < C; c++) {
            worst = fmax(worst, fabs(p[r * C + c] - exp(z[r * C + c]) / sum));
            row += p[r * C + c];
        }
        assert_true(fabs(row - 1) < 1e-6);
        assert_true(p[r * C + top[2 * r]] >= p[r * C + top[2 * r + 1]]);
        for (int c = 0; c < C; c++) assert_true(p[r * C + c] <= p[r * C + top[2 * r]]);
    }
    printf("predict over 4-sample batches vs one forward pass: %.3g\n", worst);
    assert_true(worst < 1e-6);
    /* a CSV with a header row and one line per sample */
    snprintf(out, sizeof out, "%s/p.csv", f.dir);
    o.top = 0;
    ARS_ASSERT_OK(ars_predict_checkpoint(&o, &summary));
    FILE *csv = fopen(out, "r");
    char line[512];
    assert_non_null(fgets(line, sizeof line, csv));
    assert_string_equal(line, "prob_0,prob_1,prob_2,prob_3\n");
    int lines = 0;
    while (fgets(line, sizeof line, csv)) lines++;
    fclose(csv);
    assert_int_equal(lines, n);
    /* samples of another width: nothing is written */
    ars_test_remove_tree(out);
    o.dataset = "x";
    raw_test.dim = 8;
    file = H5Fcreate(input, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    dims[1] = 8;
    space = H5Screate_simple(2, dims, NULL);
    set = H5Dcreate2(file, "x", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
    assert_int_equal(ars_predict_checkpoint(&o, &summary), ARS_EINVAL);
    char expect[1600];
    snprintf(expect, sizeof expect, "%s:/x: samples of shape [8] (8 values) do not fit the model of %s, which takes "
             "[16] (16 values)", input, f.path);
    assert_string_equal(ars_error_message(), expect);
    assert_null(fopen(out, "r"));
    raw_test.dim = 16;
    free(p);
    free(top);
    ars_dataset_free(&raw_train);
    ars_dataset_free(&raw_test);
    fixture_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_figures_by_hand),
        cmocka_unit_test(test_absent_class_and_too_many_classes),
        cmocka_unit_test(test_regression_figures_by_hand),
        cmocka_unit_test(test_shape_check),
        cmocka_unit_test(test_checkpoint_gives_the_models_figures),
        cmocka_unit_test(test_config_that_does_not_build),
        cmocka_unit_test(test_inputs),
        cmocka_unit_test(test_predict_streams_hdf5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
