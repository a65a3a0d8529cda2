/* test_layer_registry: a layer kind really is one file and one line. The
 * kind below ("gain": y = g * x, one trainable g per input value, shaped
 * like the input) is defined only in this file and added with one call to
 * ars_layer_kind_register. Then the run file reads its section and its own
 * keys, refuses unknown ones, lists it among the kinds; the model carries
 * its N-D shape; gradients check; training runs; its 3-D parameter is
 * stored [2, 3, 4] in the checkpoint and read back; health counts it as a
 * layer with parameters. Also: the built-in kinds' flags, and shapes
 * flowing from a data set's [1, 28, 28] images and a [time, features]
 * sequence. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/gradcheck.h"
#include "arsenal/health.h"
#include "arsenal/history.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/train.h"

/* ---- the kind, as a file of src/layers/ would define it ------------------ */

static int gain_forward(ars_layer *layer, const ars_pass *pass, const float *x, float *y)
{
    const size_t n = (size_t)layer->in_dim;
    for (int r = 0; r < pass->rows; r++)
        for (size_t i = 0; i < n; i++) y[r * n + i] = layer->param[i] * x[r * n + i];
    return 0;
}

static int gain_backward(ars_layer *layer, const ars_pass *pass, const float *x, const float *y, const float *dy,
                         float *dx)
{
    (void)y;
    const size_t n = (size_t)layer->in_dim;
    memset(layer->grad, 0, sizeof(float) * n);
    for (int r = 0; r < pass->rows; r++)
        for (size_t i = 0; i < n; i++) {
            layer->grad[i] += dy[r * n + i] * x[r * n + i];
            if (dx) dx[r * n + i] = dy[r * n + i] * layer->param[i];
        }
    return 0;
}

static const ars_layer_ops gain_ops = {"gain", gain_forward, gain_backward, NULL};

static int gain_size(const ars_layer_spec *spec, const ars_shape *in, const ars_shape *skip, int max_rows,
                     ars_layer_size *size)
{
    (void)skip;
    (void)max_rows;
    if (!(spec->alpha > 0)) return ars_error(ARS_EINVAL, "[gain] start must be positive");
    size->out = *in;
    size->params = ars_shape_count(in);
    return 0;
}

static int gain_setup(ars_layer *layer, const ars_layer_size *size)
{
    (void)size;
    layer->ops = &gain_ops;
    ars_layer_add_param(layer, "gain", layer->in_shape, ARS_ROLE_ONES);
    return 0;
}

static int gain_parse(ars_layer_parser *p, ars_layer_spec *spec)
{
    return ars_layer_parse_float(p, "start", 1.0, 1e-3, 10, &spec->alpha);
}

static const ars_layer_kind gain_kind = {
    .name = "gain",
    .summary = "y = g * x, one g per value",
    .flags = ARS_KIND_PARAMS,
    .parse = gain_parse,
    .size = gain_size,
    .setup = gain_setup,
};

/* ---- the tests ------------------------------------------------------------ */

static int register_once(void **state)
{
    (void)state;
    return ars_layer_kind_register(&gain_kind);
}

static void test_registration(void **state)
{
    (void)state;
    assert_ptr_equal(ars_layer_kind_find("gain"), &gain_kind);
    assert_int_equal(ars_layer_kind_register(&gain_kind), ARS_EINVAL);   /* the name is taken */
    assert_non_null(strstr(ars_error_message(), "already registered"));
    static const ars_layer_kind nameless = {.name = NULL};
    assert_int_equal(ars_layer_kind_register(&nameless), ARS_EINVAL);
    assert_true(ars_layer_kind_has("gain", ARS_KIND_PARAMS));
    assert_false(ars_layer_kind_has("gain", ARS_KIND_NORMALIZATION));
    assert_false(ars_layer_kind_has("no_such_kind", ARS_KIND_PARAMS));

    /* health works from kind names (a checkpoint's history): it asks the registry */
    const char names[2][40] = {"000_gain", "001_relu"};
    const char kinds[2][24] = {"gain", "relu"};
    ars_health_monitor monitor;
    ARS_ASSERT_OK(ars_health_init(&monitor, NULL, 2, names, kinds, "adam"));
    assert_true(ars_health_layer_has_params(&monitor, NULL, 0));
    assert_false(ars_health_layer_has_params(&monitor, NULL, 1));
    ars_health_free(&monitor);
}

/* What the rest of arsenal asks of the built-in kinds. */
static void test_builtin_flags(void **state)
{
    (void)state;
    assert_true(ars_layer_kind_has("batchnorm", ARS_KIND_NORMALIZATION | ARS_KIND_PARAMS));
    assert_true(ars_layer_kind_has("seq_layernorm", ARS_KIND_NORMALIZATION));
    assert_true(ars_layer_kind_has("residual_add", ARS_KIND_RESIDUAL));
    assert_true(ars_layer_kind_has("transformer", ARS_KIND_SUGAR));
    assert_true(ars_layer_kind_has("mean_pool", ARS_KIND_READOUT));
    assert_true(ars_layer_kind_has("rnn", ARS_KIND_SEQUENCE));
    assert_false(ars_layer_kind_has("dense", ARS_KIND_SEQUENCE));
    assert_int_equal(ars_activation_from_name("gelu"), ARS_ACT_GELU);
    assert_int_equal(ars_activation_from_name("dense"), ARS_ACT_NONE);
    assert_string_equal(ars_layer_kind_find("attention")->lsuv_weight, "out_proj_weight");
    assert_null(ars_layer_kind_find("rnn")->lsuv_weight);
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "leaky_relu");
    assert_true(fabsf(spec.alpha - 0.01f) < 1e-9f);
}

#define RUN "[run]\ndata = spirals\nepochs = 0\nmax_steps = 30\nbatch = 32\nseed = 5\nlr = 0.01\n"

/* The kind's section: its key read by its parse function, a wrong key refused. */
static void test_run_file(void **state)
{
    (void)state;
    int count;
    ars_layer_spec *specs = ars_test_load_specs(RUN "[gain]\nstart = 0.5\n[dense]\nunits = 3\n", &count);
    assert_int_equal(count, 2);
    assert_string_equal(specs[0].kind, "gain");
    assert_true(fabsf(specs[0].alpha - 0.5f) < 1e-7f);
    free(specs);

    ars_config config;
    ars_run_config run;
    ARS_ASSERT_OK(ars_config_load_string(&config, RUN "[gain]\nstrat = 2\n[dense]\nunits = 3\n", "test.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    assert_int_equal(ars_run_config_load(&config, &run, &specs, &count), ARS_EINVAL);
    assert_non_null(strstr(ars_error_message(), "strat"));
    ars_config_free(&config);

    /* the unknown-kind message lists the registry, this kind included */
    ARS_ASSERT_OK(ars_config_load_string(&config, RUN "[gian]\n[dense]\nunits = 3\n", "test.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    assert_int_equal(ars_run_config_load(&config, &run, &specs, &count), ARS_EINVAL);
    const char *message = ars_error_message();
    printf("  %s\n", message);
    assert_non_null(strstr(message, "test.cfg:8: unknown section [gian]"));
    assert_non_null(strstr(message, "dense, sigmoid"));
    assert_non_null(strstr(message, "flatten, basic_block, gain"));   /* after the built-in kinds */
    assert_null(strstr(message, "residual_add"));
    ars_config_free(&config);
}

/* An image-shaped input: the gain's parameter takes its 3-D shape, the
 * gradients check, and the checkpoint stores it as [2, 3, 4]. */
static void test_shape_gradients_and_checkpoint(void **state)
{
    (void)state;
    ars_layer_spec specs[3];
    ars_layer_spec_defaults(&specs[0], "gain");
    ars_layer_spec_defaults(&specs[1], "tanh");
    ars_layer_spec_defaults(&specs[2], "dense");
    specs[2].units = 4;
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, 3, ars_shape_image(2, 3, 4), 5));
    ARS_ASSERT_OK(ars_init_model(&model, 3));
    const ars_tensor_view *g = &model.layers[0].params[0];
    assert_int_equal(g->shape.rank, 3);
    assert_int_equal(g->shape.dims[0], 2);
    assert_int_equal(g->shape.dims[2], 4);
    assert_int_equal(model.layers[0].out_shape.rank, 3);
    assert_int_equal(model.layers[1].out_shape.rank, 3);   /* an activation keeps the shape */
    assert_int_equal(model.layers[2].out_shape.rank, 1);   /* dense reads it flat */
    assert_int_equal((int)model.layers[2].params[0].shape.dims[1], 24);
    assert_true(model.params[0] == 1.0f);                   /* ARS_ROLE_ONES */

    float x[5 * 24];
    for (int i = 0; i < 5 * 24; i++) x[i] = sinf(0.37f * (float)i);
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = 5, .global_rows = 5, .seed = 1, .step = 1};
    ars_gradcheck_result results[3];
    ars_gradcheck_randomize_model(&model, 9);
    ARS_ASSERT_OK(ars_gradcheck_model(&model, &pass, x, 9, NULL, results));
    for (int l = 0; l < 3; l++) {
        printf("  %-12s max rel %.2e over %zu coordinates\n", results[l].name, results[l].max_rel_error,
               results[l].checked);
        assert_true(ars_gradcheck_passed(&results[l]));
    }
    assert_true(results[0].checked > 0);

    char dir[256], path[512];
    ars_test_tempdir(dir, sizeof dir, "registry");
    snprintf(path, sizeof path, "%s/gain.h5", dir);
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &config, model.param_count));
    char names[3][40];
    for (int l = 0; l < 3; l++) memcpy(names[l], model.layers[l].name, 40);
    ars_history history;
    ARS_ASSERT_OK(ars_history_init(&history, 3, (const char (*)[40])names, 8));
    ars_ckpt_state ckpt_state = {.step = 1, .world_size = 1, .global_batch = 5, .seed = 3, .config_text = "[run]\n"};
    ARS_ASSERT_OK(ars_ckpt_write(path, &model, &opt, &history, &ckpt_state));
    ars_history_free(&history);

    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t set = H5Dopen2(file, "/model/000_gain/gain", H5P_DEFAULT);
    assert_true(set >= 0);
    hid_t space = H5Dget_space(set);
    hsize_t dims[4] = {0};
    assert_int_equal(H5Sget_simple_extent_ndims(space), 3);
    H5Sget_simple_extent_dims(space, dims, NULL);
    assert_true(dims[0] == 2 && dims[1] == 3 && dims[2] == 4);
    H5Sclose(space);
    H5Dclose(set);
    H5Fclose(file);

    ars_model copy;
    ARS_ASSERT_OK(ars_model_create(&copy, specs, 3, ars_shape_image(2, 3, 4), 5));
    ars_optimizer copy_opt;
    ARS_ASSERT_OK(ars_optimizer_create(&copy_opt, &config, copy.param_count));
    ARS_ASSERT_OK(ars_ckpt_load(path, &copy, &copy_opt));
    assert_memory_equal(copy.params, model.params, sizeof(float) * model.param_count);

    /* a model of another shape is refused with both shapes */
    ars_model other;
    ARS_ASSERT_OK(ars_model_create(&other, specs, 3, ars_shape_image(2, 4, 3), 5));
    assert_int_equal(ars_ckpt_load(path, &other, &copy_opt), ARS_EFORMAT);
    printf("  %s\n", ars_error_message());
    assert_non_null(strstr(ars_error_message(), "[2, 3, 4]"));
    ars_model_destroy(&other);

    ars_optimizer_destroy(&copy_opt);
    ars_model_destroy(&copy);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&model);
    ars_test_remove_tree(dir);
}

/* The kind trains through ars_train like any built-in one. */
static void test_training(void **state)
{
    (void)state;
    ars_config config;
    ARS_ASSERT_OK(ars_config_load_string(&config,
                                         RUN "[gain]\n[dense]\nunits = 32\nactivation = tanh\n[dense]\nunits = 3\n",
                                         "test.cfg"));
    ARS_ASSERT_OK(ars_config_expand(&config));
    ars_run_config run;
    ars_layer_spec *specs;
    int count;
    ARS_ASSERT_OK(ars_run_config_load(&config, &run, &specs, &count));
    ars_train_options options = {.quiet = 1};
    ars_train_result result;
    ARS_ASSERT_OK(ars_train(&run, specs, count, NULL, &options, &result));
    printf("  30 steps with [gain]: loss %.3f, test accuracy %.3f\n", result.last_loss, result.test_accuracy);
    assert_int_equal(result.steps, 30);
    assert_true(isfinite(result.last_loss));
    free(specs);
    ars_config_free(&config);
}

/* Shapes from the data: (Fashion-)MNIST images are [1, 28, 28]; the adding
 * task [time, 2], whose time the sequence layers take without a time key. */
static void test_shapes_from_data(void **state)
{
    (void)state;
    ars_dataset adding;
    ARS_ASSERT_OK(ars_dataset_adding(&adding, 4, 9, 1));
    ars_shape shape = ars_dataset_shape(&adding);
    assert_int_equal(shape.rank, 2);
    assert_int_equal(shape.dims[0], 9);
    int count;
    ars_layer_spec *specs =
        ars_test_load_specs("[run]\ndata = adding\n[rnn]\nunits = 5\n[last_step]\n[dense]\nunits = 1\n", &count);
    assert_int_equal(specs[0].time, 0);   /* not in the run file: from the shape */
    ars_model model;
    ARS_ASSERT_OK(ars_model_create(&model, specs, count, shape, 4));
    assert_int_equal(model.layers[0].spec.time, 9);
    char text[48];
    assert_string_equal(ars_shape_text(&model.layers[0].out_shape, text, sizeof text), "[9, 5]");
    assert_string_equal(ars_shape_text(&model.layers[1].out_shape, text, sizeof text), "[5]");
    ars_model_destroy(&model);

    /* a flat input to a sequence layer without time: said with its shape */
    assert_int_equal(ars_model_create(&model, specs, count, ars_shape_vector(18), 4), ARS_EINVAL);
    printf("  %s\n", ars_error_message());
    assert_non_null(strstr(ars_error_message(), "needs time = <steps>: its input [18] is not a sequence"));
    free(specs);
    ars_dataset_free(&adding);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_builtin_flags),
        cmocka_unit_test(test_run_file),
        cmocka_unit_test(test_shape_gradients_and_checkpoint),
        cmocka_unit_test(test_training),
        cmocka_unit_test(test_shapes_from_data),
    };
    return cmocka_run_group_tests(tests, register_once, NULL);
}
