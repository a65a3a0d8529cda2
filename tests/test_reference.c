/* test_reference: arsenal against PyTorch, in the manner of llm.c's
 * test_gpt2.c. tests/reference/make_reference.py builds in torch a model
 * with every layer kind arsenal has and writes its reference tensors to
 * tests/data/reference.h5 (layout documented at the top of the script);
 * this test owns the comparison. It builds the same model from
 * ars_layer_spec entries, loads the initial parameters and running
 * statistics by layer/tensor name (initialization is not compared), and
 * checks: Philox words; the step-0 training forward (every layer's output,
 * the dropout masks, the logits), the cross-entropy loss and its gradient,
 * every parameter gradient, the BatchNorm running statistics; then three
 * trainer steps (forward, loss, backward, ars_clip_global_norm,
 * ars_optimizer_step with Adam) against torch's clip_grad_norm_ + Adam:
 * losses, gradient norms, clip scales, parameters, running statistics, and
 * an eval-mode forward after training; and the MSE loss separately.
 *
 * Tolerance: every float tensor passes when max|arsenal - torch| <=
 * TOL * scale, scale = max|torch| over the tensor (floored at 1e-3 for
 * near-zero tensors, TOL_FLOOR). Both sides compute in float32 (arsenal
 * keeps norm statistics and the loss in double, torch in float32) and
 * sum in different orders (OpenBLAS sgemm vs torch), so the differences
 * are rounding: ~1e-7 per operation, a few 1e-7 to 1e-6 after 22 layers
 * and their backward. TOL = 1e-5 leaves a margin of 10 over the largest
 * difference measured while any formula error (a missing term, a wrong
 * constant, a wrong dropout bit) is >= 1e-3 of the scale. Measured
 * (torch 1.13, OpenBLAS, x86-64): <= 5e-7 of the scale for outputs, loss
 * and gradients. The same TOL holds after three Adam steps: each moves a
 * parameter by ~lr = 1e-2 whatever its gradient, so 1e-5 of the parameter
 * scale (~0.5) is 0.02% of the total update; the smallest clipped gradient
 * element (6e-7) stays 60x above Adam's eps, where m / sqrt(v) would start
 * amplifying rounding (measured: <= 8e-7 of the scale). Scalars (loss,
 * gradient norm, clip scale) use the same relative TOL. Max differences
 * are printed per tensor. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arsenal/clip.h"
#include "arsenal/error.h"
#include "arsenal/loss.h"
#include "arsenal/model.h"
#include "arsenal/optim.h"
#include "arsenal/rng.h"

#define REFERENCE_FILE ARSENAL_TEST_DATA_DIR "/reference.h5"
#define REGENERATE "/usr/bin/python3 tests/reference/make_reference.py (from the source tree)"

static const double TOL = 1e-5;
static const double TOL_FLOOR = 1e-3;

enum { NAME_LEN = 32, MAX_LAYERS = 32 };

/* The model of make_reference.py's SPECS, as ars_layer_spec entries. */
static int make_specs(ars_layer_spec *specs)
{
    int n = 0;
#define DENSE(u, b) (ars_layer_spec_defaults(&specs[n], "dense"), specs[n].units = (u), specs[n++].bias = (b))
#define KIND(k) ars_layer_spec_defaults(&specs[n++], (k))
    DENSE(16, 0);
    KIND("batchnorm");
    specs[n - 1].momentum = 0.1f;
    specs[n - 1].eps = 1e-5f;
    specs[n - 1].sync = 1;
    KIND("relu");
    KIND("residual");
    DENSE(16, 1);
    KIND("layernorm");
    specs[n - 1].eps = 1e-5f;
    KIND("gelu");
    DENSE(16, 1);
    KIND("residual_add");
    KIND("residual");
    DENSE(8, 1);
    KIND("tanh");
    KIND("residual_add");   /* 16 -> 8: projection */
    KIND("dropout");
    specs[n - 1].rate = 0.25f;
    DENSE(10, 1);
    KIND("elu");
    specs[n - 1].alpha = 0.8f;
    DENSE(10, 1);
    KIND("leaky_relu");
    specs[n - 1].alpha = 0.1f;
    KIND("selu");
    DENSE(10, 1);
    KIND("sigmoid");
    DENSE(5, 1);
#undef DENSE
#undef KIND
    for (int i = 0; i < n; i++) specs[i].source_line = i + 1;
    return n;
}

/* The spec text make_reference.py stores (same keys, %g == Python :g). */
static void spec_text(const ars_layer_spec *specs, int count, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < count && used < size; i++) {
        const ars_layer_spec *s = &specs[i];
        char opts[96] = "";
        if (strcmp(s->kind, "dense") == 0) snprintf(opts, sizeof opts, " units=%d bias=%d", s->units, s->bias);
        else if (strcmp(s->kind, "batchnorm") == 0)
            snprintf(opts, sizeof opts, " momentum=%g eps=%g", (double)s->momentum, (double)s->eps);
        else if (strcmp(s->kind, "layernorm") == 0) snprintf(opts, sizeof opts, " eps=%g", (double)s->eps);
        else if (strcmp(s->kind, "dropout") == 0) snprintf(opts, sizeof opts, " rate=%g", (double)s->rate);
        else if (strcmp(s->kind, "elu") == 0 || strcmp(s->kind, "leaky_relu") == 0)
            snprintf(opts, sizeof opts, " alpha=%g", (double)s->alpha);
        used += (size_t)snprintf(out + used, size - used, "%s%s\n", s->kind, opts);
    }
}

/* ------------------------------------------------------------ the file */

typedef struct {
    hid_t file;
    int rows, in_dim, out_dim, steps, param_count, state_count;
    uint64_t seed;
    float lr, clip_norm, beta1, beta2, adam_eps;
    float *input;
    int32_t *labels;
    uint32_t *ids;
    int tensors;
    char (*names)[NAME_LEN + 1];
    int64_t (*meta)[4];   /* buffer (0 params, 1 state), offset, rows, cols */
    int failures;         /* tensors over tolerance so far */
    char failed[1024];    /* their names */
} reference;

static void read_attr(reference *ref, const char *name, hid_t type, void *out)
{
    if (H5Aexists(ref->file, name) <= 0)
        fail_msg("%s: attribute '%s' missing; regenerate with %s", REFERENCE_FILE, name, REGENERATE);
    hid_t a = H5Aopen(ref->file, name, H5P_DEFAULT);
    herr_t rc = H5Aread(a, type, out);
    H5Aclose(a);
    if (a < 0 || rc < 0) fail_msg("%s: cannot read attribute '%s'", REFERENCE_FILE, name);
}

static char *read_string_attr(reference *ref, const char *name)
{
    if (H5Aexists(ref->file, name) <= 0)
        fail_msg("%s: attribute '%s' missing; regenerate with %s", REFERENCE_FILE, name, REGENERATE);
    hid_t a = H5Aopen(ref->file, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) > 0)
        fail_msg("%s: attribute '%s' is not a fixed-length string", REFERENCE_FILE, name);
    size_t n = H5Tget_size(t);
    char *s = calloc(n + 1, 1);
    if (!s || H5Aread(a, t, s) < 0) fail_msg("%s: cannot read attribute '%s'", REFERENCE_FILE, name);
    H5Tclose(t);
    H5Aclose(a);
    return s;
}

/* 1 if path (which may be nested) names an object in the file. */
static int has_object(hid_t file, const char *path)
{
    char prefix[256];
    for (const char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
        snprintf(prefix, sizeof prefix, "%.*s", (int)(p - path), path);
        if (H5Lexists(file, prefix, H5P_DEFAULT) <= 0) return 0;
    }
    return H5Lexists(file, path, H5P_DEFAULT) > 0;
}

/* Reads dataset path, which must hold exactly count elements, into out. */
static void read_dataset(reference *ref, const char *path, hid_t type, void *out, size_t count)
{
    if (!has_object(ref->file, path))
        fail_msg("%s: dataset '%s' missing; regenerate with %s", REFERENCE_FILE, path, REGENERATE);
    hid_t d = H5Dopen2(ref->file, path, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    if (n != (hssize_t)count) {
        H5Dclose(d);
        fail_msg("%s: dataset '%s' has %lld elements, the test expects %zu (model changed? regenerate "
                 "with %s)", REFERENCE_FILE, path, (long long)n, count, REGENERATE);
    }
    herr_t rc = H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(d);
    if (rc < 0) fail_msg("%s: cannot read dataset '%s'", REFERENCE_FILE, path);
}

static float *read_floats(reference *ref, const char *path, size_t count)
{
    float *x = malloc((count ? count : 1) * sizeof *x);
    assert_non_null(x);
    read_dataset(ref, path, H5T_NATIVE_FLOAT, x, count);
    return x;
}

static double read_scalar(reference *ref, const char *path)
{
    double v;
    read_dataset(ref, path, H5T_NATIVE_DOUBLE, &v, 1);
    return v;
}

/* Opens the reference and checks it describes this test's model. A
 * missing file fails (never a silent skip) and says how to make it. */
static void ref_open(reference *ref, const ars_layer_spec *specs, int count)
{
    memset(ref, 0, sizeof *ref);
    ref->file = -1;
    if (access(REFERENCE_FILE, R_OK) != 0)
        fail_msg("reference file %s is missing or unreadable; regenerate it with %s", REFERENCE_FILE,
                 REGENERATE);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* our messages name the file and the dataset */
    ref->file = H5Fopen(REFERENCE_FILE, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ref->file < 0) fail_msg("%s is not a readable HDF5 file; regenerate it with %s", REFERENCE_FILE, REGENERATE);
    int format = 0;
    read_attr(ref, "format", H5T_NATIVE_INT, &format);
    if (format != 1) fail_msg("%s: format %d, this test reads format 1", REFERENCE_FILE, format);

    char want[2048];
    spec_text(specs, count, want, sizeof want);
    char *spec = read_string_attr(ref, "spec");
    if (strcmp(spec, want) != 0)
        fail_msg("%s was made for another model:\n%s\nthis test builds:\n%s\nregenerate with %s", REFERENCE_FILE,
                 spec, want, REGENERATE);
    free(spec);

    read_attr(ref, "seed", H5T_NATIVE_UINT64, &ref->seed);
    read_attr(ref, "rows", H5T_NATIVE_INT, &ref->rows);
    read_attr(ref, "in_dim", H5T_NATIVE_INT, &ref->in_dim);
    read_attr(ref, "out_dim", H5T_NATIVE_INT, &ref->out_dim);
    read_attr(ref, "steps", H5T_NATIVE_INT, &ref->steps);
    read_attr(ref, "param_count", H5T_NATIVE_INT, &ref->param_count);
    read_attr(ref, "state_count", H5T_NATIVE_INT, &ref->state_count);
    read_attr(ref, "lr", H5T_NATIVE_FLOAT, &ref->lr);
    read_attr(ref, "clip_norm", H5T_NATIVE_FLOAT, &ref->clip_norm);
    read_attr(ref, "beta1", H5T_NATIVE_FLOAT, &ref->beta1);
    read_attr(ref, "beta2", H5T_NATIVE_FLOAT, &ref->beta2);
    read_attr(ref, "adam_eps", H5T_NATIVE_FLOAT, &ref->adam_eps);
    assert_true(ref->rows > 1 && ref->in_dim > 0 && ref->out_dim > 0 && ref->steps > 0);

    const size_t rows = (size_t)ref->rows;
    ref->input = read_floats(ref, "input", rows * (size_t)ref->in_dim);
    ref->labels = malloc(rows * sizeof *ref->labels);
    ref->ids = malloc(rows * sizeof *ref->ids);
    assert_true(ref->labels && ref->ids);
    read_dataset(ref, "labels", H5T_NATIVE_INT32, ref->labels, rows);
    read_dataset(ref, "sample_ids", H5T_NATIVE_UINT32, ref->ids, rows);

    /* the name index */
    if (!has_object(ref->file, "index/name"))
        fail_msg("%s: dataset 'index/name' missing; regenerate with %s", REFERENCE_FILE, REGENERATE);
    hid_t d = H5Dopen2(ref->file, "index/name", H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    ref->tensors = (int)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, NAME_LEN);
    H5Tset_strpad(str, H5T_STR_NULLPAD);
    char *raw = calloc((size_t)ref->tensors, NAME_LEN);
    ref->names = calloc((size_t)ref->tensors, sizeof *ref->names);
    ref->meta = calloc((size_t)ref->tensors, sizeof *ref->meta);
    assert_true(raw && ref->names && ref->meta);
    if (H5Dread(d, str, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)
        fail_msg("%s: cannot read index/name", REFERENCE_FILE);
    H5Tclose(str);
    H5Dclose(d);
    for (int i = 0; i < ref->tensors; i++) memcpy(ref->names[i], raw + (size_t)i * NAME_LEN, NAME_LEN);
    free(raw);
    read_dataset(ref, "index/meta", H5T_NATIVE_INT64, ref->meta, 4 * (size_t)ref->tensors);
}

static void ref_close(reference *ref)
{
    if (ref->file >= 0) H5Fclose(ref->file);
    free(ref->input);
    free(ref->labels);
    free(ref->ids);
    free(ref->names);
    free(ref->meta);
}

/* Rearranges a packed reference vector (params: buffer 0, state: 1) into
 * arsenal's flat layout, finding each of the model's tensors by
 * "<layer>/<tensor>" and checking its shape; every tensor of that buffer
 * in the file must be used. */
static float *unpack(reference *ref, ars_model *model, int buffer, const float *packed, size_t packed_count)
{
    const size_t total = buffer ? model->state_count : model->param_count;
    float *flat = calloc(total ? total : 1, sizeof *flat);
    assert_non_null(flat);
    int used = 0, in_file = 0;
    for (int t = 0; t < ref->tensors; t++) in_file += ref->meta[t][0] == buffer;
    for (int l = 0; l < model->layer_count; l++) {
        const ars_layer *layer = &model->layers[l];
        const ars_tensor_view *views = buffer ? layer->buffers : layer->params;
        const int count = buffer ? layer->buffer_count : layer->param_count;
        const size_t base = buffer ? layer->state_offset : layer->param_offset;
        for (int v = 0; v < count; v++) {
            char name[sizeof layer->name + sizeof views[v].name + 1];   /* longer than NAME_LEN: not found */
            snprintf(name, sizeof name, "%.39s/%.15s", layer->name, views[v].name);
            int t = 0;
            while (t < ref->tensors && strcmp(ref->names[t], name) != 0) t++;
            if (t == ref->tensors || ref->meta[t][0] != buffer)
                fail_msg("%s: no %s tensor '%s' in index/name; regenerate with %s", REFERENCE_FILE,
                         buffer ? "state" : "parameter", name, REGENERATE);
            const int64_t *m = ref->meta[t];
            /* the file's (rows, cols): vectors rows 1 */
            const ars_shape *shape = &views[v].shape;
            const int rows = shape->rank == 2 ? shape->dims[0] : 1, cols = shape->dims[shape->rank - 1];
            if (shape->rank > 2 || m[2] != rows || m[3] != cols)
                fail_msg("%s: '%s' is [%lld, %lld] in the file, [%d, %d] in arsenal", REFERENCE_FILE, name,
                         (long long)m[2], (long long)m[3], rows, cols);
            if (m[1] < 0 || (size_t)m[1] + views[v].count > packed_count)
                fail_msg("%s: '%s' lies outside its packed vector", REFERENCE_FILE, name);
            memcpy(flat + base + views[v].offset, packed + m[1], views[v].count * sizeof *flat);
            used++;
        }
    }
    if (used != in_file)
        fail_msg("%s: the file has %d %s tensors, the model %d", REFERENCE_FILE, in_file,
                 buffer ? "state" : "parameter", used);
    return flat;
}

/* Reads a packed snapshot ("init/params", ...) in arsenal's flat layout. */
static float *read_snapshot(reference *ref, ars_model *model, const char *path, int buffer)
{
    const size_t n = buffer ? (size_t)ref->state_count : (size_t)ref->param_count;
    float *packed = read_floats(ref, path, n);
    float *flat = unpack(ref, model, buffer, packed, n);
    free(packed);
    return flat;
}

/* ----------------------------------------------------------- comparing */

/* Counts a comparison over tolerance and remembers its name for the
 * final message (every tensor is compared and printed before failing). */
static void record_failure(reference *ref, const char *what)
{
    size_t len = strlen(ref->failed);
    ref->failures++;
    if (len + 3 < sizeof ref->failed)
        snprintf(ref->failed + len, sizeof ref->failed - len, "%s%s", len ? ", " : "", what);
}

/* Prints the max difference of one tensor; records a failure over TOL. */
static void compare(reference *ref, const char *what, const float *got, const float *want, size_t n)
{
    double worst = ars_test_max_abs_diff(got, want, n), scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    const double denom = fmax(scale, TOL_FLOOR);
    const int ok = worst <= TOL * denom;
    printf("  %-34s n %5zu  max|diff| %.3e  scale %.3e  rel %.2e%s\n", what, n, worst, scale, worst / denom,
           ok ? "" : "  <-- OVER TOLERANCE");
    if (!ok) record_failure(ref, what);
}

static void compare_scalar(reference *ref, const char *what, double got, double want)
{
    double worst = fabs(got - want), denom = fmax(fabs(want), TOL_FLOOR);
    const int ok = worst <= TOL * denom;
    printf("  %-34s arsenal %.9g  torch %.9g  rel %.2e%s\n", what, got, want, worst / denom,
           ok ? "" : "  <-- OVER TOLERANCE");
    if (!ok) record_failure(ref, what);
}

/* Every tensor of a flat buffer, by name. */
static void compare_flat(reference *ref, ars_model *model, int buffer, const char *label, const float *got,
                         const float *want)
{
    for (int l = 0; l < model->layer_count; l++) {
        const ars_layer *layer = &model->layers[l];
        const ars_tensor_view *views = buffer ? layer->buffers : layer->params;
        const int count = buffer ? layer->buffer_count : layer->param_count;
        const size_t base = buffer ? layer->state_offset : layer->param_offset;
        for (int v = 0; v < count; v++) {
            char what[96];
            snprintf(what, sizeof what, "%.16s %.39s/%.15s", label, layer->name, views[v].name);
            compare(ref, what, got + base + views[v].offset, want + base + views[v].offset, views[v].count);
        }
    }
}

static void finish(reference *ref, const char *test)
{
    if (ref->failures)
        fail_msg("%s: %d tensor(s) differ from PyTorch by more than %.0e of their scale: %s", test,
                 ref->failures, TOL, ref->failed);
}

/* Checks the dropout layer's kept/zeroed pattern of this step against the
 * mask make_reference.py computed with its own Philox: an element is kept
 * iff its output is nonzero (inputs that are exactly zero say nothing). */
static void check_dropout_mask(reference *ref, ars_model *model, int step)
{
    int d = 0;
    while (d < model->layer_count && strcmp(model->layers[d].spec.kind, "dropout") != 0) d++;
    assert_true(d > 0 && d < model->layer_count);
    const ars_layer *layer = &model->layers[d];
    const size_t per_step = (size_t)ref->rows * (size_t)layer->in_dim;
    uint8_t *mask = malloc(per_step * (size_t)ref->steps);
    assert_non_null(mask);
    read_dataset(ref, "dropout_mask", H5T_NATIVE_UINT8, mask, per_step * (size_t)ref->steps);
    const float *x = model->layers[d - 1].output, *y = layer->output;
    int kept = 0, wrong = 0, known = 0;
    for (size_t i = 0; i < per_step; i++) {
        const uint8_t want = mask[(size_t)step * per_step + i];
        kept += want;
        if (x[i] == 0.0f) continue;
        known++;
        wrong += (y[i] != 0.0f) != want;
    }
    printf("  dropout mask step %d (%s): torch-side Philox keeps %d/%zu, arsenal differs in %d of %d\n", step,
           layer->name, kept, per_step, wrong, known);
    free(mask);
    if (wrong) {
        char what[48];
        snprintf(what, sizeof what, "dropout mask step %d", step);
        record_failure(ref, what);
    }
}

/* ------------------------------------------------------------- fixture */

typedef struct {
    ars_layer_spec specs[MAX_LAYERS];
    int count;
    reference ref;
    ars_model model;
} fixture;

/* Builds the model and loads the initial parameters and state by name. */
static void fixture_open(fixture *fx)
{
    fx->count = make_specs(fx->specs);
    ref_open(&fx->ref, fx->specs, fx->count);
    reference *ref = &fx->ref;
    ARS_ASSERT_OK(ars_model_create(&fx->model, fx->specs, fx->count, ars_shape_vector(ref->in_dim), ref->rows));
    ars_model *model = &fx->model;
    assert_int_equal(model->out_dim, ref->out_dim);
    assert_int_equal(model->param_count, (size_t)ref->param_count);
    assert_int_equal(model->state_count, (size_t)ref->state_count);
    float *p = read_snapshot(ref, model, "init/params", 0);
    float *s = read_snapshot(ref, model, "init/state", 1);
    memcpy(model->params, p, model->param_count * sizeof *p);
    memcpy(model->state, s, model->state_count * sizeof *s);
    free(p);
    free(s);
}

static void fixture_close(fixture *fx)
{
    ars_model_destroy(&fx->model);
    ref_close(&fx->ref);
}

static ars_pass train_pass(const reference *ref, int step)
{
    ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = ref->rows, .global_rows = ref->rows,
                     .sample_ids = ref->ids, .seed = ref->seed, .step = (uint64_t)step, .dist = NULL,
                     .probe = step == 0};   /* as the trainer on a probe step: probes must not change results */
    return pass;
}

/* --------------------------------------------------------------- tests */

/* Philox words for (seed, stream, counter) triples: the generator behind
 * the dropout masks, against the script's independent implementation
 * (itself checked there against Random123's known answers). */
static void test_philox(void **state)
{
    (void)state;
    fixture fx;
    fx.count = make_specs(fx.specs);
    ref_open(&fx.ref, fx.specs, fx.count);
    hid_t d = H5Dopen2(fx.ref.file, "philox/input", H5P_DEFAULT);
    if (d < 0) fail_msg("%s: dataset 'philox/input' missing; regenerate with %s", REFERENCE_FILE, REGENERATE);
    hid_t space = H5Dget_space(d);
    const size_t k = (size_t)H5Sget_simple_extent_npoints(space) / 3;
    H5Sclose(space);
    H5Dclose(d);
    uint64_t *in = malloc(k * 3 * sizeof *in);
    uint32_t *want = malloc(k * 4 * sizeof *want);
    assert_true(in && want && k > 0);
    read_dataset(&fx.ref, "philox/input", H5T_NATIVE_UINT64, in, k * 3);
    read_dataset(&fx.ref, "philox/output", H5T_NATIVE_UINT32, want, k * 4);
    for (size_t i = 0; i < k; i++) {
        uint32_t got[4];
        ars_philox(in[3 * i], in[3 * i + 1], in[3 * i + 2], got);
        if (memcmp(got, want + 4 * i, sizeof got) != 0)
            fail_msg("ars_philox(seed %#llx, stream %#llx, counter %#llx) = %08x %08x %08x %08x, "
                     "reference %08x %08x %08x %08x", (unsigned long long)in[3 * i],
                     (unsigned long long)in[3 * i + 1], (unsigned long long)in[3 * i + 2], got[0], got[1],
                     got[2], got[3], want[4 * i], want[4 * i + 1], want[4 * i + 2], want[4 * i + 3]);
    }
    printf("  %zu Philox 4x32-10 blocks identical\n", k);
    free(in);
    free(want);
    ref_close(&fx.ref);
}

/* One training forward and backward at step 0: every layer's output,
 * logits, loss, dlogits, every parameter gradient, running statistics. */
static void test_step0(void **state)
{
    (void)state;
    fixture fx;
    fixture_open(&fx);
    reference *ref = &fx.ref;
    ars_model *model = &fx.model;
    const int rows = ref->rows, out = model->out_dim;
    const ars_pass pass = train_pass(ref, 0);
    printf("step 0, train mode (tolerance: max|diff| <= %.0e * max(scale, %.0e))\n", TOL, TOL_FLOOR);
    ARS_ASSERT_OK(ars_model_forward(model, &pass, ref->input));

    /* every layer's output: a mismatch is localized to the first layer that shows it */
    int32_t widths[MAX_LAYERS];
    read_dataset(ref, "step0/act_width", H5T_NATIVE_INT32, widths, (size_t)model->layer_count);
    size_t total = 0;
    for (int l = 0; l < model->layer_count; l++) {
        if (widths[l] != model->layers[l].out_dim)
            fail_msg("%s: layer %s has width %d in the file, %d in arsenal", REFERENCE_FILE,
                     model->layers[l].name, widths[l], model->layers[l].out_dim);
        total += (size_t)widths[l];
    }
    float *acts = read_floats(ref, "step0/acts", (size_t)rows * total);
    float *want = malloc((size_t)rows * model->max_width * sizeof *want);
    assert_non_null(want);
    size_t col = 0;
    for (int l = 0; l < model->layer_count; l++) {
        const ars_layer *layer = &model->layers[l];
        for (int r = 0; r < rows; r++)
            memcpy(want + (size_t)r * layer->out_dim, acts + (size_t)r * total + col,
                   (size_t)layer->out_dim * sizeof *want);
        char what[64];
        snprintf(what, sizeof what, "output %s", layer->name);
        compare(ref, what, layer->output, want, (size_t)rows * (size_t)layer->out_dim);
        col += (size_t)layer->out_dim;
    }
    free(want);
    free(acts);
    check_dropout_mask(ref, model, 0);

    float *logits = read_floats(ref, "step0/logits", (size_t)rows * out);
    compare(ref, "logits", ars_model_output(model), logits, (size_t)rows * out);
    free(logits);

    float *dlogits = malloc((size_t)rows * out * sizeof *dlogits);
    assert_non_null(dlogits);
    double loss_sum = 0;
    ARS_ASSERT_OK(ars_loss_compute(ARS_LOSS_CROSS_ENTROPY, ars_model_output(model), rows, out, ref->labels, NULL,
                                   rows, &loss_sum, dlogits));
    compare_scalar(ref, "cross-entropy loss", loss_sum / rows, read_scalar(ref, "step0/loss"));
    float *want_dlogits = read_floats(ref, "step0/dlogits", (size_t)rows * out);
    compare(ref, "dloss/dlogits", dlogits, want_dlogits, (size_t)rows * out);
    free(want_dlogits);

    ARS_ASSERT_OK(ars_model_backward(model, &pass, dlogits, NULL, NULL));
    float *grads = read_snapshot(ref, model, "step0/grads", 0);
    compare_flat(ref, model, 0, "grad", model->grads, grads);
    free(grads);
    float *stats = read_snapshot(ref, model, "step0/state", 1);
    compare_flat(ref, model, 1, "state", model->state, stats);
    free(stats);
    free(dlogits);
    finish(ref, "step 0");
    fixture_close(&fx);
}

/* The trainer's loop for `steps` steps (src/train.c: pass.step = global
 * step from 0; loss, backward, global-norm clip, Adam), then an eval
 * forward. */
static void test_training(void **state)
{
    (void)state;
    fixture fx;
    fixture_open(&fx);
    reference *ref = &fx.ref;
    ars_model *model = &fx.model;
    const int rows = ref->rows, out = model->out_dim;
    const size_t n = model->param_count;
    ars_optim_config config;
    ars_optim_config_defaults(&config, ARS_OPT_ADAM);
    config.lr = ref->lr;
    config.beta1 = ref->beta1;
    config.beta2 = ref->beta2;
    config.eps = ref->adam_eps;
    ars_optimizer opt;
    ARS_ASSERT_OK(ars_optimizer_create(&opt, &config, n));

    double *want_loss = malloc((size_t)ref->steps * sizeof(double));
    double *want_norm = malloc((size_t)ref->steps * sizeof(double));
    double *want_scale = malloc((size_t)ref->steps * sizeof(double));
    float *dlogits = malloc((size_t)rows * out * sizeof *dlogits);
    assert_true(want_loss && want_norm && want_scale && dlogits);
    read_dataset(ref, "train/loss", H5T_NATIVE_DOUBLE, want_loss, (size_t)ref->steps);
    read_dataset(ref, "train/grad_norm", H5T_NATIVE_DOUBLE, want_norm, (size_t)ref->steps);
    read_dataset(ref, "train/clip_scale", H5T_NATIVE_DOUBLE, want_scale, (size_t)ref->steps);

    printf("%d training steps: Adam lr %g, clip_norm %g (tolerance %.0e of scale)\n", ref->steps,
           (double)ref->lr, (double)ref->clip_norm, TOL);
    for (int s = 0; s < ref->steps; s++) {
        const ars_pass pass = train_pass(ref, s);
        ARS_ASSERT_OK(ars_model_forward(model, &pass, ref->input));
        check_dropout_mask(ref, model, s);
        double loss_sum = 0, norm = 0;
        ARS_ASSERT_OK(ars_loss_compute(ARS_LOSS_CROSS_ENTROPY, ars_model_output(model), rows, out, ref->labels,
                                       NULL, rows, &loss_sum, dlogits));
        ARS_ASSERT_OK(ars_model_backward(model, &pass, dlogits, NULL, NULL));
        const float scale = ars_clip_global_norm(model->grads, n, ref->clip_norm, &norm);
        char what[64];
        snprintf(what, sizeof what, "step %d loss", s);
        compare_scalar(ref, what, loss_sum / rows, want_loss[s]);
        snprintf(what, sizeof what, "step %d gradient norm", s);
        compare_scalar(ref, what, norm, want_norm[s]);
        snprintf(what, sizeof what, "step %d clip scale", s);
        compare_scalar(ref, what, scale, want_scale[s]);
        assert_true(scale < 1.0f);   /* the reference chose clip_norm so that every step clips */
        ars_optimizer_step(&opt, model->params, model->grads, ref->lr);
    }

    float *params = read_snapshot(ref, model, "final/params", 0);
    compare_flat(ref, model, 0, "final", model->params, params);
    free(params);
    float *stats = read_snapshot(ref, model, "final/state", 1);
    compare_flat(ref, model, 1, "final", model->state, stats);
    free(stats);

    const ars_pass eval = {.mode = ARS_MODE_EVAL, .rows = rows, .global_rows = rows, .sample_ids = ref->ids,
                           .seed = ref->seed, .step = (uint64_t)ref->steps};
    ARS_ASSERT_OK(ars_model_forward(model, &eval, ref->input));
    float *logits = read_floats(ref, "eval_logits", (size_t)rows * out);
    compare(ref, "eval logits after training", ars_model_output(model), logits, (size_t)rows * out);
    free(logits);

    free(want_loss);
    free(want_norm);
    free(want_scale);
    free(dlogits);
    ars_optimizer_destroy(&opt);
    finish(ref, "training");
    fixture_close(&fx);
}

/* MSE (torch.nn.MSELoss, mean over rows * dim) and its gradient. */
static void test_mse(void **state)
{
    (void)state;
    fixture fx;
    fx.count = make_specs(fx.specs);
    ref_open(&fx.ref, fx.specs, fx.count);
    reference *ref = &fx.ref;
    const int rows = ref->rows, out = ref->out_dim;
    const size_t n = (size_t)rows * out;
    float *pred = read_floats(ref, "mse/prediction", n);
    float *target = read_floats(ref, "mse/target", n);
    float *want = read_floats(ref, "mse/grad", n);
    float *grad = malloc(n * sizeof *grad);
    assert_non_null(grad);
    double loss_sum = 0;
    printf("MSE loss on a [%d, %d] output\n", rows, out);
    ARS_ASSERT_OK(ars_loss_compute(ARS_LOSS_MSE, pred, rows, out, NULL, target, rows, &loss_sum, grad));
    compare_scalar(ref, "mse loss", loss_sum / rows, read_scalar(ref, "mse/loss"));
    compare(ref, "dmse/dprediction", grad, want, n);
    free(pred);
    free(target);
    free(want);
    free(grad);
    finish(ref, "mse");
    ref_close(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox),
        cmocka_unit_test(test_step0),
        cmocka_unit_test(test_training),
        cmocka_unit_test(test_mse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
