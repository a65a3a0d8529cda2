/* test_conv_reference: arsenal's convolutional layers against PyTorch.
 * tests/reference/make_conv_reference.py computes every case of its CASES
 * list in torch (float64 from float32 inputs, stored as float32) and
 * writes tests/data/conv_reference.h5 (layout documented at the top of the
 * script); this test owns the comparison. For every case in the file's
 * `cases` list it builds the arsenal layer from ars_layer_spec fields (the
 * basic blocks from the [basic_block] run-file sugar), loads x and the
 * parameters by name, runs forward in train mode and backward with the
 * stored dy, and compares:
 *   conv2d          y, dx, dweight, dbias, under both product layouts
 *                   (spec.layout 1 per sample, 2 batched)
 *   maxpool2d       y (exactly: a max is a stored value), dx, and the
 *                   argmax indices of the kernel the layer runs
 *                   (ars_maxpool2d_forward: the layer keeps them private)
 *   avgpool2d, global_avgpool, flatten   y, dx
 *   batchnorm2d     y, dx, dgamma, dbeta in train mode, the running
 *                   statistics after that one step, then eval mode from
 *                   the running statistics before it: eval_y, eval_dx
 *   basic_block     the eight layers of the sugar (identity shortcut, and
 *                   the projection one: residual_add's 1x1 conv + BN)
 *                   under both layouts: y, dx, every parameter gradient
 *                   (torchvision's state_dict names mapped onto arsenal's
 *                   tensors) and every running statistic after the step
 *
 * Tolerance: a float tensor passes when max|arsenal - torch| <= TOL *
 * scale, scale = max|torch| over the tensor (floored at TOL_FLOOR). The
 * reference is exact to float32 rounding, so the differences are arsenal's
 * own float32 error: one rounding per output (~6e-8 of the scale) plus the
 * sums of its products (OpenBLAS sgemm over K = C/g * kh * kw terms, col2im
 * over the overlapping taps, BatchNorm's float xhat), ~1e-7 to 1e-6 of the
 * scale for these sizes. Measured (OpenBLAS 0.3, x86-64, both layouts):
 * conv2d <= 3.6e-7 of the scale, pooling 1.3e-7 (max pooling's y and
 * argmax exact), batchnorm2d 1.3e-7, the basic blocks 2.2e-7. TOL = 5e-6
 * leaves a margin of ~14 over the largest while a wrong tap, a wrong
 * padding offset, a dropped BatchNorm term or the biased variance in the
 * running statistics are >= 1e-3 of the scale. Max differences are printed
 * per tensor, the worst per test. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "arsenal/model.h"
#include "../src/layers/conv_kernels.h"

#define REFERENCE_FILE ARSENAL_TEST_DATA_DIR "/conv_reference.h5"
#define REGENERATE "/usr/bin/python3 tests/reference/make_conv_reference.py (from the source tree)"

static const double TOL = 5e-6;
static const double TOL_FLOOR = 1e-3;

enum { MAX_CASES = 64, MAX_DIMS = 4 };

/* ------------------------------------------------------------ the file */

typedef struct {
    hid_t file;
    char names[MAX_CASES][48];
    int count;
    double worst;          /* largest diff / scale over every tensor compared */
    char worst_what[96];
    int failures;          /* tensors over tolerance */
    char failed[2048];
} reference;

static reference ref;   /* opened once for the whole run (group setup) */

static int has_link(hid_t loc, const char *path)
{
    char prefix[256];
    for (const char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
        snprintf(prefix, sizeof prefix, "%.*s", (int)(p - path), path);
        if (H5Lexists(loc, prefix, H5P_DEFAULT) <= 0) return 0;
    }
    return H5Lexists(loc, path, H5P_DEFAULT) > 0;
}

/* An int attribute of n values (a scalar: n = 1). */
static void attr_ints(hid_t group, const char *where, const char *name, int *out, int n)
{
    if (H5Aexists(group, name) <= 0)
        fail_msg("%s: %s has no attribute '%s'; regenerate with %s", REFERENCE_FILE, where, name, REGENERATE);
    hid_t a = H5Aopen(group, name, H5P_DEFAULT);
    hid_t space = H5Aget_space(a);
    hssize_t count = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    if (count != n) fail_msg("%s: %s/@%s has %lld values, expected %d", REFERENCE_FILE, where, name, (long long)count, n);
    herr_t rc = H5Aread(a, H5T_NATIVE_INT, out);
    H5Aclose(a);
    if (rc < 0) fail_msg("%s: cannot read %s/@%s", REFERENCE_FILE, where, name);
}

static int attr_int(hid_t group, const char *where, const char *name)
{
    int v;
    attr_ints(group, where, name, &v, 1);
    return v;
}

static float attr_float(hid_t group, const char *where, const char *name)
{
    if (H5Aexists(group, name) <= 0)
        fail_msg("%s: %s has no attribute '%s'; regenerate with %s", REFERENCE_FILE, where, name, REGENERATE);
    float v;
    hid_t a = H5Aopen(group, name, H5P_DEFAULT);
    herr_t rc = H5Aread(a, H5T_NATIVE_FLOAT, &v);
    H5Aclose(a);
    if (rc < 0) fail_msg("%s: cannot read %s/@%s", REFERENCE_FILE, where, name);
    return v;
}

/* A fixed-length string attribute; caller frees. */
static char *attr_string(hid_t group, const char *where, const char *name)
{
    if (H5Aexists(group, name) <= 0)
        fail_msg("%s: %s has no attribute '%s'; regenerate with %s", REFERENCE_FILE, where, name, REGENERATE);
    hid_t a = H5Aopen(group, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) > 0)
        fail_msg("%s: %s/@%s is not a fixed-length string", REFERENCE_FILE, where, name);
    size_t n = H5Tget_size(t);
    char *s = calloc(n + 1, 1);
    assert_non_null(s);
    if (H5Aread(a, t, s) < 0) fail_msg("%s: cannot read %s/@%s", REFERENCE_FILE, where, name);
    H5Tclose(t);
    H5Aclose(a);
    return s;
}

/* Reads dataset path of group (which must have exactly the dims given,
 * rank dims entries) into out as type. */
static void read_dataset(hid_t group, const char *where, const char *path, hid_t type, void *out, int rank,
                         const int *dims)
{
    if (!has_link(group, path))
        fail_msg("%s: dataset '%s/%s' missing; regenerate with %s", REFERENCE_FILE, where, path, REGENERATE);
    hid_t d = H5Dopen2(group, path, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hsize_t got[MAX_DIMS + 1];
    int got_rank = H5Sget_simple_extent_ndims(space);
    int same = got_rank == rank;
    if (got_rank >= 0 && got_rank <= MAX_DIMS) H5Sget_simple_extent_dims(space, got, NULL);
    for (int i = 0; same && i < rank; i++) same = got[i] == (hsize_t)dims[i];
    H5Sclose(space);
    if (!same) {
        char want[64] = "", have[64] = "";
        for (int i = 0; i < rank; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? ", " : "", dims[i]);
        for (int i = 0; i < got_rank && i <= MAX_DIMS; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", i ? ", " : "",
                     (unsigned long long)got[i]);
        H5Dclose(d);
        fail_msg("%s: '%s/%s' is [%s] in the file, the test expects [%s]", REFERENCE_FILE, where, path, have, want);
    }
    herr_t rc = H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(d);
    if (rc < 0) fail_msg("%s: cannot read '%s/%s'", REFERENCE_FILE, where, path);
}

static size_t dims_count(int rank, const int *dims)
{
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
    return n;
}

static float *read_floats(hid_t group, const char *where, const char *path, int rank, const int *dims)
{
    const size_t n = dims_count(rank, dims);
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    read_dataset(group, where, path, H5T_NATIVE_FLOAT, v, rank, dims);
    return v;
}

/* Reads dataset path straight into a tensor of a model, its shape checked
 * against the tensor's: the mapping of a torch name onto an arsenal one. */
static void load_tensor(hid_t group, const char *where, const char *path, const ars_tensor_view *view, float *base)
{
    read_dataset(group, where, path, H5T_NATIVE_FLOAT, base + view->offset, view->shape.rank, view->shape.dims);
}

static void ref_setup(void)
{
    memset(&ref, 0, sizeof ref);
    ref.file = -1;
    if (access(REFERENCE_FILE, R_OK) != 0)
        fail_msg("reference file %s is missing or unreadable; regenerate it with %s", REFERENCE_FILE, REGENERATE);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* our messages name the file and the dataset */
    ref.file = H5Fopen(REFERENCE_FILE, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ref.file < 0) fail_msg("%s is not a readable HDF5 file; regenerate it with %s", REFERENCE_FILE, REGENERATE);
    int format = attr_int(ref.file, "/", "format");
    if (format != 1) fail_msg("%s: format %d, this test reads format 1", REFERENCE_FILE, format);
    char *torch = attr_string(ref.file, "/", "torch_version");
    char *compute = attr_string(ref.file, "/", "compute");
    char *cases = attr_string(ref.file, "/", "cases");
    for (char *line = cases, *next; *line; line = next) {
        next = strchr(line, '\n');
        if (!next) next = line + strlen(line);
        else *next++ = '\0';
        if (!*line) continue;
        if (ref.count == MAX_CASES) fail_msg("%s: more than %d cases", REFERENCE_FILE, MAX_CASES);
        snprintf(ref.names[ref.count++], sizeof ref.names[0], "%s", line);
    }
    print_message("%s: %d cases from torch %s (%s); tolerance max|diff| <= %.0e * max(scale, %.0e)\n",
                  REFERENCE_FILE, ref.count, torch, compute, TOL, TOL_FLOOR);
    free(torch);
    free(compute);
    free(cases);
    assert_true(ref.count > 0);
}

/* ----------------------------------------------------------- comparing */

static void compare(const char *what, const float *got, const float *want, size_t n)
{
    double scale = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        const double w = fabs((double)want[i]), d = fabs((double)got[i] - (double)want[i]);
        if (w > scale) scale = w;
        if (d > diff || isnan(d)) diff = isnan(d) ? INFINITY : d;
    }
    const double rel = diff / (scale > TOL_FLOOR ? scale : TOL_FLOOR);
    const int ok = rel <= TOL;
    print_message("    %-44s max|diff| %.2e  scale %.2e  rel %.2e%s\n", what, diff, scale, rel, ok ? "" : "  FAIL");
    if (rel > ref.worst) {
        ref.worst = rel;
        snprintf(ref.worst_what, sizeof ref.worst_what, "%s", what);
    }
    if (!ok) {
        ref.failures++;
        const size_t used = strlen(ref.failed);
        snprintf(ref.failed + used, sizeof ref.failed - used, "%s%s", used ? ", " : "", what);
    }
}

/* Fails the test when a tensor so far missed the tolerance (all are
 * printed first, so one run shows every mismatch). */
static void finish(const char *label)
{
    print_message("  %s: worst %.2e of the scale (%s)\n", label, ref.worst, ref.worst_what);
    if (ref.failures)
        fail_msg("%d tensor(s) over tolerance %.0e: %s", ref.failures, TOL, ref.failed);
}

/* ------------------------------------------------------------- running */

static ars_pass train_pass(int rows)
{
    return (ars_pass){.mode = ARS_MODE_TRAIN, .rows = rows, .global_rows = rows, .seed = 1, .step = 0};
}

/* A layer's own forward and backward on the test's buffers (dx included,
 * which a model skips for its first layer). The gradient slice is filled
 * with NaN first: backward must overwrite it. */
static void run_layer(ars_layer *layer, const ars_pass *pass, const float *x, float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < layer->param_size; i++) layer->grad[i] = NAN;
    int rc = layer->ops->forward(layer, pass, x, y);
    if (rc) fail_msg("forward of %s: %s", layer->name, ars_error_message());
    rc = layer->ops->backward(layer, pass, x, y, dy, dx);
    if (rc) fail_msg("backward of %s: %s", layer->name, ars_error_message());
}

/* A model's backward as ars_model_backward runs it, but with dx for the
 * first layer too. */
static void model_backward_with_dx(ars_model *model, const ars_pass *pass, const float *x, const float *dout,
                                   float *dx)
{
    const size_t width = (size_t)pass->rows * model->max_width;
    float *buf[2] = {malloc(width * sizeof(float)), malloc(width * sizeof(float))};
    assert_true(buf[0] && buf[1]);
    const float *dy = dout;
    for (int i = model->layer_count - 1; i >= 0; i--) {
        ars_layer *layer = &model->layers[i];
        const float *in = i > 0 ? model->layers[i - 1].output : x;
        float *d = i > 0 ? buf[i % 2] : dx;
        int rc = layer->ops->backward(layer, pass, in, layer->output, dy, d);
        if (rc) fail_msg("backward of %s: %s", layer->name, ars_error_message());
        dy = d;
    }
    free(buf[0]);
    free(buf[1]);
}

static const char *layout_name(int layout) { return layout == 2 ? "batched" : "per_sample"; }

static void check_out_shape(const char *name, const ars_layer *layer, const int *out, int out_rank)
{
    /* the file's [N, ...] against the layer's per-sample shape */
    const ars_shape *s = &layer->out_shape;
    int same = s->rank == out_rank - 1;
    for (int i = 0; same && i < s->rank; i++) same = s->dims[i] == out[i + 1];
    if (!same && !(strcmp(layer->spec.kind, "global_avgpool") == 0 && s->rank == 1 && out_rank == 4 &&
                   s->dims[0] == out[1] && out[2] == 1 && out[3] == 1)) {
        char text[48];
        fail_msg("%s: arsenal's %s gives %s per sample, torch [%d, %d, %d, %d] for the batch", name, layer->name,
                 ars_shape_text(s, text, sizeof text), out[0], out[1], out_rank > 2 ? out[2] : 0,
                 out_rank > 3 ? out[3] : 0);
    }
}

/* ---------------------------------------------------------------- cases */

typedef struct {
    const char *name;
    hid_t g;
    int in[4], out[4], out_rank;
    float *x, *y, *dy, *dx;
} case_data;

static void case_open(case_data *c, const char *name)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    c->g = H5Gopen2(ref.file, name, H5P_DEFAULT);
    if (c->g < 0) fail_msg("%s: no group '%s' (listed in /@cases)", REFERENCE_FILE, name);
    attr_ints(c->g, name, "in_shape", c->in, 4);
    hid_t a = H5Aopen(c->g, "out_shape", H5P_DEFAULT);
    hid_t space = H5Aget_space(a);
    c->out_rank = (int)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    H5Aclose(a);
    if (c->out_rank != 2 && c->out_rank != 4) fail_msg("%s/@out_shape has %d values", name, c->out_rank);
    attr_ints(c->g, name, "out_shape", c->out, c->out_rank);
    c->x = read_floats(c->g, name, "x", 4, c->in);
    c->dx = read_floats(c->g, name, "dx", 4, c->in);
    c->y = read_floats(c->g, name, "y", c->out_rank, c->out);
    c->dy = read_floats(c->g, name, "dy", c->out_rank, c->out);
}

static void case_close(case_data *c)
{
    free(c->x);
    free(c->y);
    free(c->dy);
    free(c->dx);
    H5Gclose(c->g);
}

static size_t in_count(const case_data *c) { return dims_count(4, c->in); }
static size_t out_count(const case_data *c) { return dims_count(c->out_rank, c->out); }

/* A one-layer model of spec on the case's input, its y and dx compared. */
typedef struct {
    ars_model model;
    ars_layer *layer;
    float *y, *dx;
} one_layer;

static void one_layer_create(one_layer *o, const case_data *c, const ars_layer_spec *spec)
{
    ARS_ASSERT_OK(ars_model_create(&o->model, spec, 1, ars_shape_image(c->in[1], c->in[2], c->in[3]), c->in[0]));
    o->layer = &o->model.layers[0];
    check_out_shape(c->name, o->layer, c->out, c->out_rank);
    o->y = calloc(out_count(c), sizeof(float));
    o->dx = calloc(in_count(c), sizeof(float));
    assert_true(o->y && o->dx);
}

static void one_layer_destroy(one_layer *o)
{
    free(o->y);
    free(o->dx);
    ars_model_destroy(&o->model);
}

static void label(char *out, size_t size, const char *name, const char *variant, const char *tensor)
{
    snprintf(out, size, "%s%s%s %s", name, variant ? "/" : "", variant ? variant : "", tensor);
}

static void conv_case(const case_data *c)
{
    const char *name = c->name;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "conv2d");
    spec.channels = attr_int(c->g, name, "out_channels");
    attr_ints(c->g, name, "kernel", spec.kernel, 2);
    attr_ints(c->g, name, "stride", spec.stride, 2);
    attr_ints(c->g, name, "padding", spec.padding, 2);
    attr_ints(c->g, name, "dilation", spec.dilation, 2);
    spec.groups = attr_int(c->g, name, "groups");
    spec.bias = attr_int(c->g, name, "bias");
    const int wdims[4] = {spec.channels, c->in[1] / spec.groups, spec.kernel[0], spec.kernel[1]};
    float *dweight = read_floats(c->g, name, "dweight", 4, wdims);
    float *dbias = spec.bias ? read_floats(c->g, name, "dbias", 1, &spec.channels) : NULL;
    print_message("  %s: [%d, %d, %d, %d] -> [%d, %d, %d, %d], kernel %dx%d stride %dx%d padding %dx%d dilation "
                  "%dx%d groups %d%s\n", name, c->in[0], c->in[1], c->in[2], c->in[3], c->out[0], c->out[1], c->out[2],
                  c->out[3], spec.kernel[0], spec.kernel[1], spec.stride[0], spec.stride[1], spec.padding[0],
                  spec.padding[1], spec.dilation[0], spec.dilation[1], spec.groups, spec.bias ? "" : ", no bias");
    for (int layout = 1; layout <= 2; layout++) {
        spec.layout = layout;
        one_layer o;
        one_layer_create(&o, c, &spec);
        assert_int_equal(o.layer->tuning, layout);
        assert_int_equal(o.layer->param_count, spec.bias ? 2 : 1);
        load_tensor(c->g, name, "weight", &o.layer->params[0], o.layer->param);
        if (spec.bias) load_tensor(c->g, name, "bias", &o.layer->params[1], o.layer->param);
        const ars_pass pass = train_pass(c->in[0]);
        run_layer(o.layer, &pass, c->x, o.y, c->dy, o.dx);
        char what[96];
        label(what, sizeof what, name, layout_name(layout), "y");
        compare(what, o.y, c->y, out_count(c));
        label(what, sizeof what, name, layout_name(layout), "dx");
        compare(what, o.dx, c->dx, in_count(c));
        label(what, sizeof what, name, layout_name(layout), "dweight");
        compare(what, o.layer->grad + o.layer->params[0].offset, dweight, o.layer->params[0].count);
        if (spec.bias) {
            label(what, sizeof what, name, layout_name(layout), "dbias");
            compare(what, o.layer->grad + o.layer->params[1].offset, dbias, o.layer->params[1].count);
        }
        one_layer_destroy(&o);
    }
    free(dweight);
    free(dbias);
}

static void maxpool_case(const case_data *c)
{
    const char *name = c->name;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "maxpool2d");
    attr_ints(c->g, name, "kernel", spec.kernel, 2);
    attr_ints(c->g, name, "stride", spec.stride, 2);
    attr_ints(c->g, name, "padding", spec.padding, 2);
    int dilation[2];
    attr_ints(c->g, name, "dilation", dilation, 2);
    /* what arsenal's maxpool2d is: no dilation, floor mode */
    assert_true(dilation[0] == 1 && dilation[1] == 1);
    assert_int_equal(attr_int(c->g, name, "ceil_mode"), 0);
    print_message("  %s: [%d, %d, %d, %d] -> [%d, %d, %d, %d], kernel %dx%d stride %dx%d padding %dx%d\n", name,
                  c->in[0], c->in[1], c->in[2], c->in[3], c->out[0], c->out[1], c->out[2], c->out[3], spec.kernel[0],
                  spec.kernel[1], spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[1]);
    one_layer o;
    one_layer_create(&o, c, &spec);
    const ars_pass pass = train_pass(c->in[0]);
    run_layer(o.layer, &pass, c->x, o.y, c->dy, o.dx);
    char what[96];
    label(what, sizeof what, name, NULL, "y");
    compare(what, o.y, c->y, out_count(c));
    /* the max of a window is one of its values: exact */
    for (size_t i = 0; i < out_count(c); i++)
        if (o.y[i] != c->y[i]) fail_msg("%s: y[%zu] = %.9g, torch %.9g (a max must be exact)", name, i, o.y[i], c->y[i]);
    label(what, sizeof what, name, NULL, "dx");
    compare(what, o.dx, c->dx, in_count(c));

    /* the argmax, from the kernel the layer runs (ties: the first maximum) */
    int64_t *indices = malloc(out_count(c) * sizeof *indices);
    int32_t *argmax = malloc(out_count(c) * sizeof *argmax);
    float *y = malloc(out_count(c) * sizeof *y);
    assert_true(indices && argmax && y);
    read_dataset(c->g, name, "indices", H5T_NATIVE_INT64, indices, 4, c->out);
    ars_pool_geometry g = {.channels = c->in[1], .in_h = c->in[2], .in_w = c->in[3], .kernel_h = spec.kernel[0],
                           .kernel_w = spec.kernel[1], .stride_h = spec.stride[0], .stride_w = spec.stride[1],
                           .pad_h = spec.padding[0], .pad_w = spec.padding[1]};
    ARS_ASSERT_OK(ars_pool_geometry_init(&g));
    ars_maxpool2d_forward(&g, c->in[0], c->x, y, argmax);
    size_t differ = 0;
    for (size_t i = 0; i < out_count(c); i++) differ += argmax[i] != indices[i];
    print_message("    %-44s %zu of %zu differ\n", "argmax indices", differ, out_count(c));
    if (differ) fail_msg("%s: %zu argmax indices differ from torch's", name, differ);
    free(indices);
    free(argmax);
    free(y);
    one_layer_destroy(&o);
}

static void simple_case(const case_data *c, const char *kind)
{
    const char *name = c->name;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    if (strcmp(kind, "avgpool2d") == 0) {
        attr_ints(c->g, name, "kernel", spec.kernel, 2);
        attr_ints(c->g, name, "stride", spec.stride, 2);
        attr_ints(c->g, name, "padding", spec.padding, 2);
        assert_int_equal(attr_int(c->g, name, "ceil_mode"), 0);
        /* arsenal's avgpool2d counts the padded zeros, as nn.AvgPool2d's default */
        assert_int_equal(attr_int(c->g, name, "count_include_pad"), 1);
    }
    char shape[64];
    snprintf(shape, sizeof shape, c->out_rank == 4 ? "[%d, %d, %d, %d]" : "[%d, %d]", c->out[0], c->out[1],
             c->out_rank == 4 ? c->out[2] : 0, c->out_rank == 4 ? c->out[3] : 0);
    print_message("  %s: [%d, %d, %d, %d] -> %s\n", name, c->in[0], c->in[1], c->in[2], c->in[3], shape);
    one_layer o;
    one_layer_create(&o, c, &spec);
    const ars_pass pass = train_pass(c->in[0]);
    run_layer(o.layer, &pass, c->x, o.y, c->dy, o.dx);
    char what[96];
    label(what, sizeof what, name, NULL, "y");
    compare(what, o.y, c->y, out_count(c));
    label(what, sizeof what, name, NULL, "dx");
    compare(what, o.dx, c->dx, in_count(c));
    one_layer_destroy(&o);
}

static void batchnorm_case(const case_data *c)
{
    const char *name = c->name;
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, "batchnorm2d");
    spec.eps = attr_float(c->g, name, "eps");
    spec.momentum = attr_float(c->g, name, "momentum");
    const int ch = c->in[1];
    print_message("  %s: [%d, %d, %d, %d], eps %g, momentum %g\n", name, c->in[0], c->in[1], c->in[2], c->in[3],
                  (double)spec.eps, (double)spec.momentum);
    one_layer o;
    one_layer_create(&o, c, &spec);
    ars_layer *l = o.layer;
    assert_int_equal(l->param_count, 2);
    assert_int_equal(l->buffer_count, 2);
    load_tensor(c->g, name, "gamma", &l->params[0], l->param);
    load_tensor(c->g, name, "beta", &l->params[1], l->param);
    load_tensor(c->g, name, "running_mean_in", &l->buffers[0], l->state);
    load_tensor(c->g, name, "running_var_in", &l->buffers[1], l->state);
    float *dgamma = read_floats(c->g, name, "dgamma", 1, &ch);
    float *dbeta = read_floats(c->g, name, "dbeta", 1, &ch);
    float *running_mean = read_floats(c->g, name, "running_mean", 1, &ch);
    float *running_var = read_floats(c->g, name, "running_var", 1, &ch);
    float *eval_y = read_floats(c->g, name, "eval_y", 4, c->out);
    float *eval_dx = read_floats(c->g, name, "eval_dx", 4, c->in);

    const ars_pass pass = train_pass(c->in[0]);
    run_layer(l, &pass, c->x, o.y, c->dy, o.dx);
    char what[96];
    label(what, sizeof what, name, "train", "y");
    compare(what, o.y, c->y, out_count(c));
    label(what, sizeof what, name, "train", "dx");
    compare(what, o.dx, c->dx, in_count(c));
    label(what, sizeof what, name, "train", "dgamma");
    compare(what, l->grad + l->params[0].offset, dgamma, (size_t)ch);
    label(what, sizeof what, name, "train", "dbeta");
    compare(what, l->grad + l->params[1].offset, dbeta, (size_t)ch);
    label(what, sizeof what, name, "train", "running_mean");
    compare(what, l->state + l->buffers[0].offset, running_mean, (size_t)ch);
    label(what, sizeof what, name, "train", "running_var (unbiased)");
    compare(what, l->state + l->buffers[1].offset, running_var, (size_t)ch);

    /* eval mode from the statistics before the step */
    load_tensor(c->g, name, "running_mean_in", &l->buffers[0], l->state);
    load_tensor(c->g, name, "running_var_in", &l->buffers[1], l->state);
    const ars_pass eval = {.mode = ARS_MODE_EVAL, .rows = c->in[0], .global_rows = c->in[0]};
    run_layer(l, &eval, c->x, o.y, c->dy, o.dx);
    label(what, sizeof what, name, "eval", "y");
    compare(what, o.y, eval_y, out_count(c));
    label(what, sizeof what, name, "eval", "dx");
    compare(what, o.dx, eval_dx, in_count(c));
    /* eval mode leaves the running statistics alone */
    float *rm_in = read_floats(c->g, name, "running_mean_in", 1, &ch);
    for (int j = 0; j < ch; j++) assert_true(l->state[l->buffers[0].offset + (size_t)j] == rm_in[j]);
    free(rm_in);

    free(dgamma);
    free(dbeta);
    free(running_mean);
    free(running_var);
    free(eval_y);
    free(eval_dx);
    one_layer_destroy(&o);
}

/* torchvision's BasicBlock names -> the layers of the [basic_block] sugar
 * (0 residual, 1 conv2d, 2 batchnorm2d, 3 relu, 4 conv2d, 5 batchnorm2d,
 * 6 residual_add, 7 relu) and their tensors. */
static const struct {
    const char *torch;
    int layer;
    const char *tensor;
    int buffer;        /* 1: a running statistic */
    int projection;    /* 1: only with the projection shortcut */
} block_names[] = {
    {"conv1.weight", 1, "weight", 0, 0},
    {"bn1.weight", 2, "gamma", 0, 0},
    {"bn1.bias", 2, "beta", 0, 0},
    {"conv2.weight", 4, "weight", 0, 0},
    {"bn2.weight", 5, "gamma", 0, 0},
    {"bn2.bias", 5, "beta", 0, 0},
    {"downsample.0.weight", 6, "projection", 0, 1},
    {"downsample.1.weight", 6, "proj_gamma", 0, 1},
    {"downsample.1.bias", 6, "proj_beta", 0, 1},
    {"bn1.running_mean", 2, "running_mean", 1, 0},
    {"bn1.running_var", 2, "running_var", 1, 0},
    {"bn2.running_mean", 5, "running_mean", 1, 0},
    {"bn2.running_var", 5, "running_var", 1, 0},
    {"downsample.1.running_mean", 6, "proj_mean", 1, 1},
    {"downsample.1.running_var", 6, "proj_var", 1, 1},
};
enum { BLOCK_NAMES = sizeof block_names / sizeof block_names[0] };

static const ars_tensor_view *find_view(const ars_layer *layer, const char *tensor, int buffer)
{
    const ars_tensor_view *views = buffer ? layer->buffers : layer->params;
    const int count = buffer ? layer->buffer_count : layer->param_count;
    for (int v = 0; v < count; v++)
        if (strcmp(views[v].name, tensor) == 0) return &views[v];
    fail_msg("%s has no %s '%s'", layer->name, buffer ? "buffer" : "parameter", tensor);
    return NULL;
}

static void block_case(const case_data *c)
{
    const char *name = c->name;
    const int planes = attr_int(c->g, name, "planes"), stride = attr_int(c->g, name, "stride");
    char *shortcut = attr_string(c->g, name, "shortcut");
    char *params = attr_string(c->g, name, "params");
    const int projection = strcmp(shortcut, "projection") == 0;
    assert_true(projection || strcmp(shortcut, "identity") == 0);
    /* the file's parameter list is exactly the names this test maps */
    char expect[512] = "";
    for (int i = 0; i < BLOCK_NAMES; i++)
        if (!block_names[i].buffer && (projection || !block_names[i].projection))
            snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s\n", block_names[i].torch);
    if (strcmp(params, expect) != 0) fail_msg("%s/@params is\n%s\nthe test maps\n%s", name, params, expect);

    char text[256];
    snprintf(text, sizeof text, "[run]\ndata = spirals\n[basic_block]\nchannels = %d\nstride = %d\n", planes, stride);
    int count;
    ars_layer_spec *specs = ars_test_load_specs(text, &count);
    static const char *const kinds[] = {"residual", "conv2d", "batchnorm2d", "relu", "conv2d", "batchnorm2d",
                                        "residual_add", "relu"};
    assert_int_equal(count, 8);
    for (int i = 0; i < 8; i++) assert_string_equal(specs[i].kind, kinds[i]);
    for (int i = 0; i < 8; i++) {
        if (strcmp(kinds[i], "batchnorm2d") != 0) continue;
        assert_true(specs[i].eps == attr_float(c->g, name, "eps"));
        assert_true(specs[i].momentum == attr_float(c->g, name, "momentum"));
    }
    print_message("  %s: [%d, %d, %d, %d] -> [%d, %d, %d, %d], planes %d stride %d, %s shortcut\n", name, c->in[0],
                  c->in[1], c->in[2], c->in[3], c->out[0], c->out[1], c->out[2], c->out[3], planes, stride, shortcut);

    float *dx = malloc(in_count(c) * sizeof *dx);
    assert_non_null(dx);
    for (int layout = 1; layout <= 2; layout++) {
        specs[1].layout = specs[4].layout = layout;
        ars_model model;
        ARS_ASSERT_OK(ars_model_create(&model, specs, count, ars_shape_image(c->in[1], c->in[2], c->in[3]), c->in[0]));
        check_out_shape(name, &model.layers[7], c->out, c->out_rank);
        ars_layer *add = &model.layers[6];
        assert_int_equal(add->param_count, projection ? 3 : 0);
        /* the shortcut's 1x1 conv runs in the layout its layer's tuning says */
        if (projection) add->tuning = layout;
        assert_int_equal(model.layers[1].tuning, layout);
        assert_int_equal(model.layers[4].tuning, layout);

        /* every tensor of the model comes from the file */
        size_t loaded = 0, tensors = 0;
        for (int l = 0; l < model.layer_count; l++) tensors += (size_t)(model.layers[l].param_count + model.layers[l].buffer_count);
        for (int i = 0; i < BLOCK_NAMES; i++) {
            if (block_names[i].projection && !projection) continue;
            ars_layer *layer = &model.layers[block_names[i].layer];
            const ars_tensor_view *view = find_view(layer, block_names[i].tensor, block_names[i].buffer);
            char path[96];
            snprintf(path, sizeof path, "%s/%s", block_names[i].buffer ? "running_in" : "params", block_names[i].torch);
            load_tensor(c->g, name, path, view, block_names[i].buffer ? layer->state : layer->param);
            loaded++;
        }
        assert_int_equal(loaded, tensors);

        const ars_pass pass = train_pass(c->in[0]);
        for (size_t i = 0; i < model.param_count; i++) model.grads[i] = NAN;
        ARS_ASSERT_OK(ars_model_forward(&model, &pass, c->x));
        ARS_ASSERT_OK(ars_model_backward(&model, &pass, c->dy, NULL, NULL));
        char what[96];
        label(what, sizeof what, name, layout_name(layout), "y");
        compare(what, ars_model_output(&model), c->y, out_count(c));
        for (int i = 0; i < BLOCK_NAMES; i++) {
            if (block_names[i].projection && !projection) continue;
            ars_layer *layer = &model.layers[block_names[i].layer];
            const ars_tensor_view *view = find_view(layer, block_names[i].tensor, block_names[i].buffer);
            char path[96];
            snprintf(path, sizeof path, "%s/%s", block_names[i].buffer ? "running_out" : "grads", block_names[i].torch);
            float *want = read_floats(c->g, name, path, view->shape.rank, view->shape.dims);
            snprintf(what, sizeof what, "%s/%s %s%s", name, layout_name(layout), block_names[i].buffer ? "" : "d",
                     block_names[i].torch);
            compare(what, (block_names[i].buffer ? layer->state : layer->grad) + view->offset, want, view->count);
            free(want);
        }
        /* dx: the model skips its first layer's; the same backward again with it */
        float *grads = malloc(model.param_count * sizeof *grads);
        assert_non_null(grads);
        memcpy(grads, model.grads, model.param_count * sizeof *grads);
        model_backward_with_dx(&model, &pass, c->x, c->dy, dx);
        assert_memory_equal(grads, model.grads, model.param_count * sizeof *grads);
        free(grads);
        label(what, sizeof what, name, layout_name(layout), "dx");
        compare(what, dx, c->dx, in_count(c));
        ars_model_destroy(&model);
    }
    free(dx);
    free(specs);
    free(shortcut);
    free(params);
}

/* ------------------------------------------------------------------ tests */

/* Runs every case of the file whose kind is in kinds (space-separated). */
static void run_kinds(const char *kinds, const char *title)
{
    ref.worst = 0;
    ref.worst_what[0] = '\0';
    ref.failures = 0;
    ref.failed[0] = '\0';
    int ran = 0;
    for (int i = 0; i < ref.count; i++) {
        case_data c;
        hid_t g = H5Gopen2(ref.file, ref.names[i], H5P_DEFAULT);
        if (g < 0) fail_msg("%s: no group '%s' (listed in /@cases)", REFERENCE_FILE, ref.names[i]);
        char *kind = attr_string(g, ref.names[i], "kind");
        H5Gclose(g);
        char padded[64];
        snprintf(padded, sizeof padded, " %s ", kind);
        char list[128];
        snprintf(list, sizeof list, " %s ", kinds);
        if (!strstr(list, padded)) {
            free(kind);
            continue;
        }
        case_open(&c, ref.names[i]);
        if (strcmp(kind, "conv2d") == 0) conv_case(&c);
        else if (strcmp(kind, "maxpool2d") == 0) maxpool_case(&c);
        else if (strcmp(kind, "batchnorm2d") == 0) batchnorm_case(&c);
        else if (strcmp(kind, "basic_block") == 0) block_case(&c);
        else simple_case(&c, kind);
        case_close(&c);
        free(kind);
        ran++;
    }
    print_message("  %d case(s)\n", ran);
    assert_true(ran > 0);
    finish(title);
}

/* Every case's kind is one this test compares: a case added to the script
 * is never skipped silently. */
static void test_every_case_is_known(void **state)
{
    (void)state;
    static const char *const known[] = {"conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "flatten",
                                        "batchnorm2d", "basic_block"};
    for (int i = 0; i < ref.count; i++) {
        hid_t g = H5Gopen2(ref.file, ref.names[i], H5P_DEFAULT);
        if (g < 0) fail_msg("%s: no group '%s' (listed in /@cases)", REFERENCE_FILE, ref.names[i]);
        char *kind = attr_string(g, ref.names[i], "kind");
        H5Gclose(g);
        int found = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) found |= strcmp(kind, known[k]) == 0;
        if (!found) fail_msg("%s: case '%s' has kind '%s', which this test does not compare", REFERENCE_FILE,
                             ref.names[i], kind);
        free(kind);
    }
}

static void test_conv2d(void **state)
{
    (void)state;
    run_kinds("conv2d", "conv2d");
}

static void test_pooling(void **state)
{
    (void)state;
    run_kinds("maxpool2d avgpool2d global_avgpool flatten", "pooling and flatten");
}

static void test_batchnorm2d(void **state)
{
    (void)state;
    run_kinds("batchnorm2d", "batchnorm2d");
}

static void test_basic_block(void **state)
{
    (void)state;
    run_kinds("basic_block", "basic block");
}

static int group_setup(void **state)
{
    (void)state;
    ref_setup();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (ref.file >= 0) H5Fclose(ref.file);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_case_is_known),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_pooling),
        cmocka_unit_test(test_batchnorm2d),
        cmocka_unit_test(test_basic_block),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
