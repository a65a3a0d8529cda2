/* init: the parameter initializers with torch.nn.init's formulas, the
 * whole-model initialization by tensor role, and LSUV calibration. Draws
 * come from the Philox stream of the layer, so a model's initial weights
 * depend only on (seed, layer index). */
#include "arsenal/init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/rng.h"

typedef struct {
    const char *name;
    ars_init_kind kind;
} init_name;

/* Canonical names first, in enum order (ars_init_name indexes them), then
 * accepted aliases. */
static const init_name init_names[] = {
    {"zeros", ARS_INIT_ZEROS},
    {"normal", ARS_INIT_NORMAL},
    {"uniform", ARS_INIT_UNIFORM},
    {"xavier_uniform", ARS_INIT_XAVIER_UNIFORM},
    {"xavier_normal", ARS_INIT_XAVIER_NORMAL},
    {"he_uniform", ARS_INIT_HE_UNIFORM},
    {"he_normal", ARS_INIT_HE_NORMAL},
    {"orthogonal", ARS_INIT_ORTHOGONAL},
    {"lsuv", ARS_INIT_LSUV},
    {"glorot_uniform", ARS_INIT_XAVIER_UNIFORM},
    {"glorot_normal", ARS_INIT_XAVIER_NORMAL},
    {"kaiming_uniform", ARS_INIT_HE_UNIFORM},
    {"kaiming_normal", ARS_INIT_HE_NORMAL},
};

enum { KIND_COUNT = ARS_INIT_LSUV + 1, NAME_COUNT = sizeof init_names / sizeof init_names[0] };

int ars_init_parse(const char *name, ars_init_kind *kind)
{
    for (int i = 0; i < NAME_COUNT; i++)
        if (name && strcmp(name, init_names[i].name) == 0) {
            *kind = init_names[i].kind;
            return 0;
        }
    return ars_error(ARS_EINVAL,
                     "unknown initializer '%s': expected one of zeros, normal, uniform, "
                     "xavier_uniform, xavier_normal, he_uniform, he_normal, orthogonal, lsuv "
                     "(aliases glorot_uniform, glorot_normal, kaiming_uniform, kaiming_normal)",
                     name ? name : "(null)");
}

const char *ars_init_name(ars_init_kind kind)
{
    return (unsigned)kind < KIND_COUNT ? init_names[kind].name : "unknown";
}

/* Orthogonal columns by modified Gram-Schmidt, run twice ("twice is
 * enough", Giraud et al. 2005) so Q is orthonormal to double precision.
 * a holds ncols columns of length len, contiguous. MGS gives R a positive
 * diagonal, which is what torch's sign correction q *= sign(diag(r)) makes
 * of any QR: the result is the same Q. */
static int orthonormalize_columns(double *a, int len, int ncols)
{
    for (int j = 0; j < ncols; j++) {
        double *qj = a + (size_t)j * len;
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++) {
                const double *qk = a + (size_t)k * len;
                double dot = 0;
                for (int i = 0; i < len; i++) dot += qk[i] * qj[i];
                for (int i = 0; i < len; i++) qj[i] -= dot * qk[i];
            }
        double norm = 0;
        for (int i = 0; i < len; i++) norm += qj[i] * qj[i];
        norm = sqrt(norm);
        if (!(norm > 1e-12)) return -1;   /* rank deficient: probability zero */
        for (int i = 0; i < len; i++) qj[i] /= norm;
    }
    return 0;
}

/* torch.nn.init.orthogonal_: QR of a normal [rows, cols] matrix, transposed
 * first when rows < cols, so W has orthonormal rows (rows <= cols) or
 * orthonormal columns (rows > cols), times gain. */
static int fill_orthogonal(float *w, int rows, int cols, double gain, uint64_t seed,
                           uint64_t stream, uint64_t offset)
{
    size_t n = (size_t)rows * (size_t)cols;
    int wide = rows < cols;
    int len = wide ? cols : rows, ncols = wide ? rows : cols;
    double *a = malloc(n * sizeof *a);
    if (!a)
        return ars_error(ARS_ENOMEM, "orthogonal init: cannot allocate a %dx%d work matrix",
                         rows, cols);
    /* The normal draws land in w first (same sequence as the other
     * initializers), then are copied column-wise into a. */
    ars_rng_normal(w, n, 0.0f, 1.0f, seed, stream, offset);
    for (int j = 0; j < ncols; j++)
        for (int i = 0; i < len; i++)
            a[(size_t)j * len + i] = wide ? w[(size_t)j * cols + i] : w[(size_t)i * cols + j];
    if (orthonormalize_columns(a, len, ncols)) {
        free(a);
        return ars_error(ARS_ENUMERIC, "orthogonal init: the %dx%d normal matrix is singular",
                         rows, cols);
    }
    for (int j = 0; j < ncols; j++)
        for (int i = 0; i < len; i++) {
            float v = (float)(gain * a[(size_t)j * len + i]);
            if (wide) w[(size_t)j * cols + i] = v;
            else w[(size_t)i * cols + j] = v;
        }
    free(a);
    return 0;
}

/* Defaults for arg <= 0, per kind (see init.h). */
static double kind_arg(ars_init_kind kind, float arg)
{
    if (arg > 0.0f) return arg;
    switch (kind) {
    case ARS_INIT_NORMAL: return 0.01;
    case ARS_INIT_UNIFORM: return 0.05;
    case ARS_INIT_HE_UNIFORM:
    case ARS_INIT_HE_NORMAL: return 0.0;   /* leaky slope a: plain ReLU */
    default: return 1.0;                   /* gains */
    }
}

/* ars_init_fill at a counter offset, so several tensors of one layer can
 * share the layer's stream without sharing draws, and with the fans given
 * apart from the [rows, cols] matrix (a convolution weight [out, in, kh,
 * kw] is a [out, in * kh * kw] matrix whose fan_out is out * kh * kw). */
static int fill_at(float *w, int rows, int cols, int fan_in, int fan_out, ars_init_kind kind, float arg,
                   int fan_out_mode, uint64_t seed, uint64_t stream, uint64_t offset)
{
    if (!w || rows <= 0 || cols <= 0)
        return ars_error(ARS_EINVAL, "init: weight must be a non-empty [rows, cols], found %dx%d",
                         rows, cols);
    if ((unsigned)kind >= KIND_COUNT)
        return ars_error(ARS_EINVAL, "init: unknown initializer kind %d", (int)kind);
    size_t n = (size_t)rows * (size_t)cols;
    double a = kind_arg(kind, arg);
    double fan_sum = (double)fan_in + (double)fan_out;
    double fan = fan_out_mode ? fan_out : fan_in;
    double he_std = sqrt(2.0 / (1.0 + a * a)) / sqrt(fan);
    switch (kind) {
    case ARS_INIT_ZEROS:
        memset(w, 0, n * sizeof *w);
        return 0;
    case ARS_INIT_NORMAL:
        ars_rng_normal(w, n, 0.0f, (float)a, seed, stream, offset);
        return 0;
    case ARS_INIT_UNIFORM:
        ars_rng_uniform(w, n, (float)-a, (float)a, seed, stream, offset);
        return 0;
    case ARS_INIT_XAVIER_UNIFORM: {
        float bound = (float)(a * sqrt(6.0 / fan_sum));
        ars_rng_uniform(w, n, -bound, bound, seed, stream, offset);
        return 0;
    }
    case ARS_INIT_XAVIER_NORMAL:
        ars_rng_normal(w, n, 0.0f, (float)(a * sqrt(2.0 / fan_sum)), seed, stream, offset);
        return 0;
    case ARS_INIT_HE_UNIFORM: {
        float bound = (float)(sqrt(3.0) * he_std);
        ars_rng_uniform(w, n, -bound, bound, seed, stream, offset);
        return 0;
    }
    case ARS_INIT_HE_NORMAL:
        ars_rng_normal(w, n, 0.0f, (float)he_std, seed, stream, offset);
        return 0;
    case ARS_INIT_ORTHOGONAL:
        return fill_orthogonal(w, rows, cols, a, seed, stream, offset);
    case ARS_INIT_LSUV:   /* the orthogonal pre-init; ars_init_lsuv rescales */
        return fill_orthogonal(w, rows, cols, 1.0, seed, stream, offset);
    }
    return 0;
}

int ars_init_fill(float *weight, int rows, int cols, ars_init_kind kind, float arg,
                  int fan_out_mode, uint64_t seed, uint64_t stream)
{
    return fill_at(weight, rows, cols, cols, rows, kind, arg, fan_out_mode, seed, stream, 0);
}

static void fill_constant(float *x, size_t n, float value)
{
    for (size_t i = 0; i < n; i++) x[i] = value;
}

/* The weight initializer of a layer from its spec, with errors naming the
 * layer and its run-file line. */
static int layer_init_kind(const ars_layer *layer, ars_init_kind *kind, int *fan_out_mode)
{
    const ars_layer_spec *spec = &layer->spec;
    if (ars_init_parse(spec->init[0] ? spec->init : "xavier_uniform", kind))
        return ars_error_context(ARS_EINVAL, ARS_SPEC_AT ": layer %s", ARS_SPEC_AT_ARGS(spec), layer->name);
    if (spec->init_mode[0] == '\0' || strcmp(spec->init_mode, "fan_in") == 0)
        *fan_out_mode = 0;
    else if (strcmp(spec->init_mode, "fan_out") == 0)
        *fan_out_mode = 1;
    else
        return ars_error(ARS_EINVAL, ARS_SPEC_AT ": layer %s: init_mode must be fan_in or fan_out, "
                         "found '%s'", ARS_SPEC_AT_ARGS(spec), layer->name, spec->init_mode);
    return 0;
}

static int init_view(const ars_layer *layer, float *base, const ars_tensor_view *view,
                     uint64_t seed)
{
    float *x = base + view->offset;
    switch (view->role) {
    case ARS_ROLE_BIAS:
    case ARS_ROLE_ZEROS: fill_constant(x, view->count, 0.0f); return 0;
    case ARS_ROLE_ONES: fill_constant(x, view->count, 1.0f); return 0;
    case ARS_ROLE_WEIGHT: break;
    }
    ars_init_kind kind = ARS_INIT_XAVIER_UNIFORM;
    int fan_out_mode = 0, rc = layer_init_kind(layer, &kind, &fan_out_mode);
    if (rc) return rc;
    /* The first weight of a layer uses counter offset 0: the same values as
     * ars_init_fill(..., seed, ars_stream(ARS_STREAM_INIT, index)). */
    const int rows = view->shape.rank >= 2 ? view->shape.dims[0] : 1, cols = (int)(view->count / (size_t)rows);
    int fan_in, fan_out;
    ars_tensor_fans(view, &fan_in, &fan_out);
    rc = fill_at(x, rows, cols, fan_in, fan_out, kind, layer->spec.init_arg, fan_out_mode, seed,
                 ars_stream(ARS_STREAM_INIT, (uint32_t)layer->index), view->offset);
    if (rc) return ars_error_context(rc, "layer %s, tensor %s", layer->name, view->name);
    return 0;
}

int ars_init_model(ars_model *model, uint64_t seed)
{
    for (int l = 0; l < model->layer_count; l++) {
        const ars_layer *layer = &model->layers[l];
        for (int t = 0; t < layer->param_count; t++) {
            int rc = init_view(layer, layer->param, &layer->params[t], seed);
            if (rc) return rc;
        }
        for (int t = 0; t < layer->buffer_count; t++) {
            int rc = init_view(layer, layer->state, &layer->buffers[t], seed);
            if (rc) return rc;
        }
    }
    return 0;
}

static double output_variance(const float *y, size_t n)
{
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sum += y[i];
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = y[i] - mean;
        sq += d * d;
    }
    return sq / (double)n;
}

/* Layer kinds LSUV calibrates name the weight in their registry entry:
 * those whose output is linear in one weight (biases, zero at init, aside),
 * so scaling that weight by 1/sqrt(var) gives the output unit variance. */
/* The weight LSUV rescales in layer (its kind's lsuv_weight), NULL when
 * its kind is not calibrated. */
static const char *lsuv_weight_name(const ars_layer *layer)
{
    return layer->kind ? layer->kind->lsuv_weight : NULL;
}

static ars_tensor_view *find_param(ars_layer *layer, const char *name)
{
    for (int t = 0; t < layer->param_count; t++)
        if (strcmp(layer->params[t].name, name) == 0) return &layer->params[t];
    return NULL;
}

/* Forward until |var - 1| < tol, rescaling the weight in between; the
 * output left in layer->output always matches the final weight. */
static int lsuv_layer(ars_layer *layer, const char *weight_name, const ars_pass *pass, const float *x,
                      double tol, int max_iterations, double *variance, int *iterations)
{
    ars_tensor_view *w = find_param(layer, weight_name);
    if (!w)
        return ars_error(ARS_EINVAL, "LSUV: %s layer %s has no tensor %s", layer->spec.kind, layer->name,
                         weight_name);
    float *weight = layer->param + w->offset;
    size_t n = (size_t)pass->rows * (size_t)layer->out_dim;
    int rc = layer->ops->forward(layer, pass, x, layer->output);
    if (rc) return ars_error_context(rc, "LSUV: layer %s", layer->name);
    double var = output_variance(layer->output, n);
    int it = 0;
    for (; it < max_iterations && !(fabs(var - 1.0) < tol); it++) {
        if (!(var > 0.0) || !isfinite(var))
            return ars_error(ARS_ENUMERIC, "LSUV: layer %s output variance is %g on the "
                             "calibration batch (dead or non-finite input?): cannot rescale",
                             layer->name, var);
        float factor = (float)(1.0 / sqrt(var));
        for (size_t i = 0; i < w->count; i++) weight[i] *= factor;
        rc = layer->ops->forward(layer, pass, x, layer->output);
        if (rc) return ars_error_context(rc, "LSUV: layer %s", layer->name);
        var = output_variance(layer->output, n);
    }
    *variance = var;
    *iterations = it;
    return 0;
}

int ars_init_lsuv_report(ars_model *model, const float *x, int rows, double tol,
                         int max_iterations, ars_lsuv_callback callback, void *context)
{
    if (!x || rows <= 0 || rows > model->max_rows)
        return ars_error(ARS_EINVAL, "LSUV: calibration batch must have 1..%d rows, found %d",
                         model->max_rows, rows);
    if (!(tol > 0.0) || max_iterations < 1)
        return ars_error(ARS_EINVAL, "LSUV: need tol > 0 and max_iterations >= 1, found %g, %d",
                         tol, max_iterations);
    ars_pass pass = {.mode = ARS_MODE_EVAL, .rows = rows, .global_rows = rows};
    const float *input = x;
    for (int l = 0; l < model->layer_count; l++) {
        ars_layer *layer = &model->layers[l];
        const char *weight = lsuv_weight_name(layer);
        if (weight) {
            double var = 0;
            int iterations = 0;
            int rc = lsuv_layer(layer, weight, &pass, input, tol, max_iterations, &var, &iterations);
            if (rc) return rc;
            if (callback) callback(context, layer, var, iterations);
        } else {
            int rc = layer->ops->forward(layer, &pass, input, layer->output);
            if (rc) return ars_error_context(rc, "LSUV: layer %s", layer->name);
        }
        input = layer->output;
    }
    return 0;
}

int ars_init_lsuv(ars_model *model, const float *x, int rows, double tol, int max_iterations)
{
    return ars_init_lsuv_report(model, x, rows, tol, max_iterations, NULL, NULL);
}
