/* test_conv_ckpt: checkpoints of convolutional models, one process. The
 * tensors of conv2d, batchnorm2d and the image shortcut of residual_add are
 * stored in PyTorch's layout, which the HDF5 datasets' own dims say (conv
 * weight [out, in / groups, kh, kw], vectors [channels], the projection
 * [out, in, 1, 1]) with the model's bytes in them, under /model, /grad and
 * /optimizer alike; they load back bit for bit; the convolution layouts
 * (layer->tuning) are recorded as each layer's `tuning` attribute and read
 * back over whatever the loading model measured or was told, and used by
 * its passes; a file without them keeps the model's own; a conv2d of
 * another shape is refused naming the tensor and both shapes, and a failed
 * load leaves the model's layouts as they were. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/model.h"

enum { SIDE_H = 12, SIDE_W = 12, ROWS = 4 };

/* Image 1x12x12. The second conv2d is grouped (in / groups = 2) and
 * non-square (3x2) so that no two dims of its weight are alike; the first
 * basic_block changes channels and size (projection shortcut), the second
 * keeps them (identity: no tensors, no tuning). %s: the second conv2d's
 * kernel. */
/* The layer named name ("003_conv2d") of model, or NULL. */
static ars_layer *find_layer(ars_model *model, const char *name)
{
    for (int i = 0; i < model->layer_count; i++)
        if (strcmp(model->layers[i].name, name) == 0) return &model->layers[i];
    return NULL;
}

static const char model_format[] =
    "[run]\ndata = fashion-mnist\n"
    "[conv2d]\nchannels = 4\nkernel = 3\npadding = 1\n"
    "[batchnorm2d]\n[relu]\n"
    "[conv2d]\nchannels = 6\nkernel = %s\npadding = 1\ngroups = 2\nbias = false\n"
    "[batchnorm2d]\n"
    "[basic_block]\nchannels = 8\nstride = 2\n"
    "[basic_block]\nchannels = 8\n"
    "[maxpool2d]\nkernel = 2\n[flatten]\n"
    "[dense]\nunits = 3\n";

/* Every tensor the file must hold, in PyTorch's shapes. */
typedef struct expected_tensor {
    const char *layer, *name;
    int rank;
    hsize_t dims[4];
    int buffer;   /* running statistics: /model only */
} expected_tensor;

static const expected_tensor expected[] = {
    {"000_conv2d", "weight", 4, {4, 1, 3, 3}, 0},
    {"000_conv2d", "bias", 1, {4}, 0},
    {"001_batchnorm2d", "gamma", 1, {4}, 0},
    {"001_batchnorm2d", "beta", 1, {4}, 0},
    {"001_batchnorm2d", "running_mean", 1, {4}, 1},
    {"001_batchnorm2d", "running_var", 1, {4}, 1},
    {"003_conv2d", "weight", 4, {6, 2, 3, 2}, 0},   /* [out, in / groups, kh, kw] */
    {"004_batchnorm2d", "gamma", 1, {6}, 0},
    {"004_batchnorm2d", "beta", 1, {6}, 0},
    {"004_batchnorm2d", "running_mean", 1, {6}, 1},
    {"004_batchnorm2d", "running_var", 1, {6}, 1},
    {"006_conv2d", "weight", 4, {8, 6, 3, 3}, 0},   /* basic block 1: 12x13 -> 6x7 */
    {"007_batchnorm2d", "gamma", 1, {8}, 0},
    {"007_batchnorm2d", "beta", 1, {8}, 0},
    {"007_batchnorm2d", "running_mean", 1, {8}, 1},
    {"007_batchnorm2d", "running_var", 1, {8}, 1},
    {"009_conv2d", "weight", 4, {8, 8, 3, 3}, 0},
    {"010_batchnorm2d", "gamma", 1, {8}, 0},
    {"010_batchnorm2d", "beta", 1, {8}, 0},
    {"010_batchnorm2d", "running_mean", 1, {8}, 1},
    {"010_batchnorm2d", "running_var", 1, {8}, 1},
    {"011_residual_add", "projection", 4, {8, 6, 1, 1}, 0},   /* the 1x1 stride-2 shortcut */
    {"011_residual_add", "proj_gamma", 1, {8}, 0},
    {"011_residual_add", "proj_beta", 1, {8}, 0},
    {"011_residual_add", "proj_mean", 1, {8}, 1},
    {"011_residual_add", "proj_var", 1, {8}, 1},
    {"014_conv2d", "weight", 4, {8, 8, 3, 3}, 0},   /* basic block 2: identity */
    {"015_batchnorm2d", "gamma", 1, {8}, 0},
    {"015_batchnorm2d", "beta", 1, {8}, 0},
    {"015_batchnorm2d", "running_mean", 1, {8}, 1},
    {"015_batchnorm2d", "running_var", 1, {8}, 1},
    {"017_conv2d", "weight", 4, {8, 8, 3, 3}, 0},
    {"018_batchnorm2d", "gamma", 1, {8}, 0},
    {"018_batchnorm2d", "beta", 1, {8}, 0},
    {"018_batchnorm2d", "running_mean", 1, {8}, 1},
    {"018_batchnorm2d", "running_var", 1, {8}, 1},
    {"023_dense", "weight", 2, {3, 72}, 0},   /* 8 x 3 x 3 after the pooling */
    {"023_dense", "bias", 1, {3}, 0},
};
enum { EXPECTED = sizeof expected / sizeof expected[0], LAYERS = 24 };

/* The layers with a `tuning` attribute: the conv2d layers and the
 * projecting residual_add. */
static const char *const tuned_layers[] = {"000_conv2d", "003_conv2d", "006_conv2d", "009_conv2d",
                                           "011_residual_add", "014_conv2d", "017_conv2d"};
enum { TUNED = sizeof tuned_layers / sizeof tuned_layers[0] };

typedef struct fixture {
    char dir[256], path[512];
    ars_model model;
    ars_optimizer opt;
    ars_history history;
} fixture;

/* The model of model_format with kernel, every conv2d's layout fixed to
 * layout (0: measured) and the tunings then set to tuning (0: leave). */
static void build_model(ars_model *model, const char *kernel, int layout, int tuning, uint64_t seed)
{
    char text[sizeof model_format + 16];
    snprintf(text, sizeof text, model_format, kernel);
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    for (int i = 0; i < count; i++)
        if (strcmp(specs[i].kind, "conv2d") == 0) specs[i].layout = layout;
    ARS_ASSERT_OK(ars_model_create(model, specs, count, ars_shape_image(1, SIDE_H, SIDE_W), ROWS));
    free(specs);
    assert_int_equal(model->layer_count, LAYERS);
    ARS_ASSERT_OK(ars_init_model(model, seed));
    for (size_t i = 0; i < model->state_count; i++) model->state[i] = 0.25f + 0.01f * (float)i;
    for (int l = 0; tuning && l < model->layer_count; l++)
        if (model->layers[l].tuning) model->layers[l].tuning = tuning;
}

static void write_checkpoint(fixture *f)
{
    ars_ckpt_state s = {.step = 2, .epoch = 0, .steps_per_epoch = 10, .world_size = 1, .global_batch = ROWS,
                        .seed = 3, .last_loss = 2.0, .test_loss = 2.1, .test_accuracy = 0.2,
                        .config_text = "[run]\n"};
    ARS_ASSERT_OK(ars_ckpt_write(f->path, &f->model, &f->opt, &f->history, &s));
}

static void setup_with(fixture *f, int layout, int tuning)
{
    ars_test_tempdir(f->dir, sizeof f->dir, "convckpt");
    snprintf(f->path, sizeof f->path, "%s/ckpt.h5", f->dir);
    build_model(&f->model, "3x2", layout, tuning, 5);
    for (size_t i = 0; i < f->model.param_count; i++) f->model.grads[i] = 1e-3f * (float)(i % 97) - 0.04f;
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    ARS_ASSERT_OK(ars_optimizer_create(&f->opt, &config, f->model.param_count));
    ars_optimizer_step(&f->opt, f->model.params, f->model.grads, 1e-3f);
    ars_optimizer_step(&f->opt, f->model.params, f->model.grads, 1e-3f);
    char (*names)[40] = calloc(LAYERS, sizeof *names);
    assert_non_null(names);
    for (int l = 0; l < LAYERS; l++) memcpy(names[l], f->model.layers[l].name, sizeof names[l]);
    ARS_ASSERT_OK(ars_history_init(&f->history, LAYERS, (const char (*)[40])names, 8));
    free(names);
    write_checkpoint(f);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    setup_with(f, 0, 0);   /* measured layouts */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ars_model_destroy(&f->model);
    ars_optimizer_destroy(&f->opt);
    ars_history_free(&f->history);
    ars_test_remove_tree(f->dir);
    free(f);
    return 0;
}

static const ars_tensor_view *find_view(const ars_layer *layer, const char *name, int *buffer)
{
    for (int p = 0; p < layer->param_count; p++)
        if (strcmp(layer->params[p].name, name) == 0) return *buffer = 0, &layer->params[p];
    for (int b = 0; b < layer->buffer_count; b++)
        if (strcmp(layer->buffers[b].name, name) == 0) return *buffer = 1, &layer->buffers[b];
    return NULL;
}

/* The dataset root/layer/name: float32, of the expected dims, holding the
 * count floats at values bit for bit. */
static void check_dataset(hid_t file, const char *root, const expected_tensor *e, const float *values, size_t count)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s/%s", root, e->layer, e->name);
    hid_t set = H5Dopen2(file, path, H5P_DEFAULT);
    if (set < 0) fail_msg("%s is missing", path);
    hid_t type = H5Dget_type(set), space = H5Dget_space(set);
    assert_true(H5Tequal(type, H5T_IEEE_F32LE) > 0);
    hsize_t dims[8];
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank != e->rank) fail_msg("%s is %d-D, expected %d-D", path, rank, e->rank);
    H5Sget_simple_extent_dims(space, dims, NULL);
    size_t n = 1;
    for (int d = 0; d < rank; d++) {
        if (dims[d] != e->dims[d])
            fail_msg("%s: dim %d is %llu, expected %llu", path, d, (unsigned long long)dims[d],
                     (unsigned long long)e->dims[d]);
        n *= (size_t)dims[d];
    }
    assert_int_equal(n, count);
    float *stored = malloc(sizeof(float) * n);
    assert_non_null(stored);
    assert_true(H5Dread(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, stored) >= 0);
    if (memcmp(stored, values, sizeof(float) * n) != 0) fail_msg("%s does not hold the model's values", path);
    free(stored);
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(set);
}

/* The number of links (datasets) in a group, -1 if it is missing. */
static long links_in(hid_t file, const char *path)
{
    if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return -1;
    hid_t group = H5Gopen2(file, path, H5P_DEFAULT);
    H5G_info_t info;
    long n = H5Gget_info(group, &info) >= 0 ? (long)info.nlinks : -1;
    H5Gclose(group);
    return n;
}

/* The `tuning` attribute of /model/<layer>: 0 when absent. */
static int read_tuning(hid_t file, const char *layer)
{
    char path[80];
    snprintf(path, sizeof path, "/model/%s", layer);
    hid_t group = H5Gopen2(file, path, H5P_DEFAULT);
    assert_true(group >= 0);
    int32_t tuning = 0;
    if (H5Aexists(group, "tuning") > 0) {
        hid_t attr = H5Aopen(group, "tuning", H5P_DEFAULT);
        hid_t type = H5Aget_type(attr);
        assert_int_equal(H5Tget_class(type), H5T_INTEGER);
        assert_int_equal(H5Tget_size(type), 4);
        assert_true(H5Aread(attr, H5T_NATIVE_INT32, &tuning) >= 0);
        assert_true(tuning == 1 || tuning == 2);   /* per_sample, batched */
        H5Tclose(type);
        H5Aclose(attr);
    }
    H5Gclose(group);
    return tuning;
}

static int is_tuned(const char *layer)
{
    for (int i = 0; i < TUNED; i++)
        if (strcmp(tuned_layers[i], layer) == 0) return 1;
    return 0;
}

static void test_tensors_in_pytorch_layout(void **state)
{
    fixture *f = *state;
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    long params_per_layer[LAYERS] = {0}, all_per_layer[LAYERS] = {0};
    for (int i = 0; i < EXPECTED; i++) {
        const expected_tensor *e = &expected[i];
        ars_layer *layer = find_layer(&f->model, e->layer);
        if (!layer) fail_msg("the model has no layer %s", e->layer);
        int buffer = 0;
        const ars_tensor_view *view = find_view(layer, e->name, &buffer);
        if (!view) fail_msg("%s has no tensor %s", e->layer, e->name);
        assert_int_equal(buffer, e->buffer);
        all_per_layer[layer->index]++;
        if (buffer) {
            check_dataset(file, "/model", e, layer->state + view->offset, view->count);
            continue;
        }
        params_per_layer[layer->index]++;
        check_dataset(file, "/model", e, layer->param + view->offset, view->count);
        check_dataset(file, "/grad", e, layer->grad + view->offset, view->count);
        const size_t at = layer->param_offset + view->offset;
        check_dataset(file, "/optimizer/m", e, f->opt.m + at, view->count);
        check_dataset(file, "/optimizer/v", e, f->opt.v + at, view->count);
    }
    /* nothing else: every layer group holds exactly the expected tensors */
    for (int l = 0; l < LAYERS; l++) {
        const ars_layer *layer = &f->model.layers[l];
        char path[80];
        snprintf(path, sizeof path, "/model/%s", layer->name);
        assert_int_equal(links_in(file, path), all_per_layer[l]);
        snprintf(path, sizeof path, "/optimizer/m/%s", layer->name);
        assert_int_equal(links_in(file, path), params_per_layer[l] ? params_per_layer[l] : -1);
        /* the tuning attribute: the conv2d layers and the projecting shortcut, as the layer holds it */
        const int tuning = read_tuning(file, layer->name);
        assert_int_equal(tuning, layer->tuning);
        assert_int_equal(tuning != 0, is_tuned(layer->name));
    }
    H5Fclose(file);
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    ars_model copy;
    ars_optimizer opt;
    build_model(&copy, "3x2", 0, 0, 99);   /* another initialization */
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
    ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
    assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
    assert_memory_equal(copy.state, f->model.state, sizeof(float) * copy.state_count);
    assert_memory_equal(opt.m, f->opt.m, sizeof(float) * copy.param_count);
    assert_memory_equal(opt.v, f->opt.v, sizeof(float) * copy.param_count);
    assert_int_equal(opt.step, 2);
    for (int l = 0; l < LAYERS; l++) assert_int_equal(copy.layers[l].tuning, f->model.layers[l].tuning);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&copy);
}

/* The gradients of a forward and backward pass over fixed rows (caller
 * frees): where the layouts round differently, in the weight gradients'
 * sums over rows and positions. */
static float *gradients(ars_model *model)
{
    const size_t in = (size_t)ROWS * SIDE_H * SIDE_W, out = (size_t)ROWS * (size_t)model->out_dim;
    float *x = malloc(sizeof(float) * in), *dy = malloc(sizeof(float) * out);
    assert_non_null(x);
    assert_non_null(dy);
    for (size_t i = 0; i < in; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (size_t i = 0; i < out; i++) dy[i] = (float)((i * 13) % 7) / 7.0f - 0.4f;
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ROWS, .global_rows = ROWS, .seed = 1};
    ARS_ASSERT_OK(ars_model_forward(model, &pass, x));
    ARS_ASSERT_OK(ars_model_backward(model, &pass, dy, NULL, NULL));
    float *g = malloc(sizeof(float) * model->param_count);
    assert_non_null(g);
    memcpy(g, model->grads, sizeof(float) * model->param_count);
    free(x);
    free(dy);
    return g;
}

/* A checkpoint written with every layout forced to `written` (the conv2d
 * layers by their spec, the shortcut by its tuning) loaded into a model
 * told the other layout: the model takes the checkpoint's, and computes
 * as the writer did, bit for bit (the shortcut's convolution included). */
static void check_tunings_read_back(int written)
{
    const int other = 3 - written;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    setup_with(f, written, written);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    for (int i = 0; i < TUNED; i++) assert_int_equal(read_tuning(file, tuned_layers[i]), written);
    H5Fclose(file);

    ars_model copy;
    ars_optimizer opt;
    build_model(&copy, "3x2", other, other, 7);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
    for (int i = 0; i < TUNED; i++) assert_int_equal(find_layer(&copy, tuned_layers[i])->tuning, other);
    ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
    for (int i = 0; i < TUNED; i++) assert_int_equal(find_layer(&copy, tuned_layers[i])->tuning, written);
    float *a = gradients(&f->model), *b = gradients(&copy);
    assert_memory_equal(a, b, sizeof(float) * copy.param_count);
    /* the other layouts round otherwise (when they do on this machine,
     * which the line printed says): the equality above is the tunings' */
    for (int i = 0; i < TUNED; i++) find_layer(&copy, tuned_layers[i])->tuning = other;
    float *c = gradients(&copy);
    printf("layouts %s vs %s: gradients %.3g apart\n", written == 2 ? "batched" : "per_sample",
           other == 2 ? "batched" : "per_sample", ars_test_max_abs_diff(a, c, copy.param_count));
    free(a);
    free(b);
    free(c);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&copy);
    void *fixture_state = f;
    teardown(&fixture_state);
}

static void test_tunings_read_back(void **state)
{
    check_tunings_read_back(2);   /* batched written, per_sample told */
    check_tunings_read_back(1);
}

/* A file without tuning attributes (written before they existed, or by
 * hand) leaves the loading model's own layouts. */
static void test_no_tuning_keeps_the_models_own(void **state)
{
    fixture *f = *state;
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    for (int i = 0; i < TUNED; i++) {
        char path[80];
        snprintf(path, sizeof path, "/model/%s", tuned_layers[i]);
        hid_t group = H5Gopen2(file, path, H5P_DEFAULT);
        assert_true(H5Adelete(group, "tuning") >= 0);
        H5Gclose(group);
    }
    H5Fclose(file);
    for (int told = 1; told <= 2; told++) {
        ars_model copy;
        ars_optimizer opt;
        build_model(&copy, "3x2", told, told, 7);
        ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, copy.param_count));
        ARS_ASSERT_OK(ars_ckpt_load(f->path, &copy, &opt));
        assert_memory_equal(copy.params, f->model.params, sizeof(float) * copy.param_count);
        for (int i = 0; i < TUNED; i++) assert_int_equal(find_layer(&copy, tuned_layers[i])->tuning, told);
        ars_optimizer_destroy(&opt);
        ars_model_destroy(&copy);
    }
}

/* A conv2d of another kernel: refused, naming the tensor and both shapes;
 * the model is left as it was. */
static void test_other_kernel_is_refused(void **state)
{
    fixture *f = *state;
    ars_model other;
    ars_optimizer opt;
    build_model(&other, "3", 0, 0, 7);
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &f->opt.config, other.param_count));
    float *before = malloc(sizeof(float) * other.param_count);
    assert_non_null(before);
    memcpy(before, other.params, sizeof(float) * other.param_count);
    int rc = ars_ckpt_load(f->path, &other, &opt);
    assert_int_equal(rc, ARS_EFORMAT);
    const char *message = ars_error_message();
    if (!strstr(message, "003_conv2d/weight") || !strstr(message, "[6, 2, 3, 2]") ||
        !strstr(message, "[6, 2, 3, 3]"))
        fail_msg("unexpected message: %s", message);
    assert_memory_equal(before, other.params, sizeof(float) * other.param_count);
    free(before);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&other);
}

/* A load that fails after the tensors were read (here: the checkpoint's
 * optimizer is Adam, the loading run's SGD) leaves the model as it was,
 * its layouts included. */
static void test_failed_load_keeps_the_layouts(void **state)
{
    fixture *f = *state;
    ars_model other;
    ars_optimizer opt;
    build_model(&other, "3x2", 0, 0, 7);
    for (int l = 0; l < LAYERS; l++)
        if (other.layers[l].tuning) other.layers[l].tuning = 3 - f->model.layers[l].tuning;   /* not the file's */
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_SGD);
    config.momentum = 0.9f;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &config, other.param_count));
    assert_int_equal(ars_ckpt_load(f->path, &other, &opt), ARS_EFORMAT);
    if (!strstr(ars_error_message(), "optimizer is adam")) fail_msg("unexpected message: %s", ars_error_message());
    for (int l = 0; l < LAYERS; l++)
        if (other.layers[l].tuning) assert_int_equal(other.layers[l].tuning, 3 - f->model.layers[l].tuning);
    ars_optimizer_destroy(&opt);
    ars_model_destroy(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tensors_in_pytorch_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test(test_tunings_read_back),
        cmocka_unit_test_setup_teardown(test_no_tuning_keeps_the_models_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_kernel_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_load_keeps_the_layouts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
