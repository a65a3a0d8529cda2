/* gradcheck: central-difference checks of layer, model and loss gradients
 * (see include/arsenal/gradcheck.h for the measure and the tolerance). */
#include "arsenal/gradcheck.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/rng.h"
#include "gemm_bf16.h"

/* Streams of the check's own random draws: ARS_STREAM_DATA instances
 * tagged 'GC' so they cannot coincide with a data set's. */
enum { GC_X = 0x47430001, GC_R, GC_SAMPLE, GC_LABELS, GC_TARGETS, GC_PARAMS = 0x47440000 };

/* Evaluates L at the current (perturbed) values. scale (may be NULL):
 * sqrt(sum (y_i r_i)^2), the size of L in the units its float rounding is
 * relative to. */
typedef int (*eval_fn)(void *context, double *loss, double *scale);

typedef struct {
    eval_fn eval;
    void *context;
    double base;        /* L at the unperturbed point */
    double resolution;  /* FLT_EPSILON * scale at that point: the smallest change of L to trust */
    double step, floor_fraction, noise_z;
    int max_coords;
    uint64_t seed;
    uint32_t tensors;   /* tensors checked so far: sampling stream per tensor */
} checker;

enum {
    NOISE_PROBES = 5,   /* coordinates per tensor whose quotients measure the noise */
    NOISE_STEPS = 8,    /* step sizes per probe */
    RETRIES = 2         /* smaller steps (h/4, h/16) tried for a failing coordinate */
};

static void checker_init(checker *c, const ars_gradcheck_options *o, uint64_t seed, eval_fn eval,
                         void *context)
{
    memset(c, 0, sizeof *c);
    c->eval = eval;
    c->context = context;
    c->seed = seed;
    c->step = o && o->step > 0 ? o->step : 3e-3;
    c->floor_fraction = o && o->floor_fraction > 0 ? o->floor_fraction : 0.1;
    c->noise_z = o && o->noise_z > 0 ? o->noise_z : 8;
    c->max_coords = o && o->max_coords > 0 ? o->max_coords : 256;
}

static int checker_start(checker *c)
{
    double scale = 0;
    int rc = c->eval(c->context, &c->base, &scale);
    c->resolution = FLT_EPSILON * scale;
    return rc;
}

static void result_init(ars_gradcheck_result *result, const char *name)
{
    memset(result, 0, sizeof *result);
    snprintf(result->name, sizeof result->name, "%s", name);
}

static double step_for(const checker *c, float v) { return c->step * fmax(1.0, fabs((double)v)); }

/* Difference quotients of L at values[i] with step h (values[i] restored
 * afterwards), each over the float step actually stored. */
typedef struct {
    double central, up, down;
    double h;   /* half the central step */
} quotients;

static int quotients_at(checker *c, float *values, size_t i, double h, quotients *q)
{
    const float v0 = values[i];
    double lp = 0, lm = 0;
    values[i] = (float)((double)v0 + h);
    const double vp = values[i];
    int rc = c->eval(c->context, &lp, NULL);
    values[i] = (float)((double)v0 - h);
    const double vm = values[i];
    if (!rc) rc = c->eval(c->context, &lm, NULL);
    values[i] = v0;
    if (rc) return rc;
    q->central = (lp - lm) / (vp - vm);
    q->up = (lp - c->base) / (vp - v0);
    q->down = (c->base - lm) / (v0 - vm);
    q->h = (vp - vm) / 2;
    if (!isfinite(q->central)) return ars_error(ARS_ENUMERIC, "gradcheck: non-finite loss perturbing [%zu]", i);
    return 0;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The float forward makes L a noisy function: rounding changes with every
 * perturbation. Its noise is measured, not modeled: central quotients at
 * NOISE_STEPS steps h (1 + j/16) differ by it (the true quotient moves by
 * O(h^2 / 16) between them). Within a probe the noise is heavy-tailed
 * (often most perturbations round identically and a few do not), so a
 * probe's estimate is the RMS of its successive differences / sqrt(2);
 * across probes the median, so that a kink inside one probe does not make
 * the whole tensor's check lenient. Returned in units of L (sd of the
 * quotient times 2h), so that it scales to any step. */
static int measure_noise(checker *c, float *values, const size_t *index, size_t m, double *noise)
{
    const size_t probes = m < NOISE_PROBES ? m : NOISE_PROBES;
    double estimate[NOISE_PROBES];
    for (size_t p = 0; p < probes; p++) {
        const size_t i = index[p * m / probes];   /* spread over the sample */
        const double h = step_for(c, values[i]);
        double previous = 0, sum_sq = 0;
        for (int j = 0; j < NOISE_STEPS; j++) {
            quotients q;
            int rc = quotients_at(c, values, i, h * (1.0 + j / 16.0), &q);
            if (rc) return rc;
            if (j > 0) sum_sq += (q.central - previous) * (q.central - previous);
            previous = q.central;
        }
        estimate[p] = sqrt(sum_sq / (NOISE_STEPS - 1) / 2.0) * 2.0 * h;
    }
    qsort(estimate, probes, sizeof estimate[0], compare_doubles);
    *noise = probes % 2 ? estimate[probes / 2] : 0.5 * (estimate[probes / 2 - 1] + estimate[probes / 2]);
    return 0;
}

static double excess(double a, double quotient, double slack, double floor_abs)
{
    return fmax(0.0, fabs(a - quotient) - slack) / fmax(fabs(a) + fabs(quotient), floor_abs);
}

/* Error of analytic a against the quotients q: for each quotient, the part
 * of |a - quotient| beyond noise_z sd of that quotient, relative to
 * max(|a| + |quotient|, floor); the smallest of the three. sd of the
 * central quotient = max(measured noise, resolution) / 2h, twice that for
 * a one-sided one.
 * A kink (relu at 0) within h spoils the central quotient, but then one of
 * the one-sided quotients lies wholly on the point's side of it. On smooth
 * functions the one-sided quotients are off by h f''/2, so accepting them
 * loosens the check by the curvature term only, not by anything like a
 * wrong factor or a dropped term. */
static double judge(const checker *c, double a, const quotients *q, double noise, double floor_abs,
                    double *matched)
{
    const double slack = c->noise_z * fmax(noise, c->resolution) / (2.0 * q->h);
    double best = excess(a, q->central, slack, floor_abs), e;
    *matched = q->central;
    if ((e = excess(a, q->up, 2 * slack, floor_abs)) < best) best = e, *matched = q->up;
    if ((e = excess(a, q->down, 2 * slack, floor_abs)) < best) best = e, *matched = q->down;
    return best;   /* NaN when a is NaN: comparisons with NaN are false */
}

/* Compares analytic[i] with difference quotients of L for sampled
 * coordinates i of values (restored afterwards); folds into result. */
static int check_tensor(checker *c, float *values, size_t count, const float *analytic, const char *tensor,
                        ars_gradcheck_result *result)
{
    if (count == 0) return 0;
    const size_t m = count <= (size_t)c->max_coords ? count : (size_t)c->max_coords;
    const uint64_t stream = ars_stream(ARS_STREAM_DATA, GC_SAMPLE + 16 * c->tensors++);
    quotients *qs = malloc(sizeof *qs * m);
    size_t *index = malloc(sizeof *index * m);
    int rc = 0;
    if (!qs || !index) {
        rc = ars_error(ARS_ENOMEM, "gradcheck: out of memory");
        goto done;
    }
    for (size_t k = 0; k < m; k++) {
        index[k] = k;
        if (m < count) {   /* sampled with replacement: duplicates are harmless */
            uint32_t w[4];
            ars_philox(c->seed, stream, k, w);
            index[k] = (size_t)((((uint64_t)w[0] << 32) | w[1]) % count);
        }
    }
    double noise;
    if ((rc = measure_noise(c, values, index, m, &noise)) != 0) goto done;
    for (size_t k = 0; k < m && !rc; k++)
        rc = quotients_at(c, values, index[k], step_for(c, values[index[k]]), &qs[k]);
    if (rc) goto done;

    /* floor, the smallest denominator: a fraction of the tensor's gradient
     * scale (analytic or numeric, whichever is larger, so a gradient that
     * was never written still counts) */
    double ss_a = 0, ss_n = 0;
    for (size_t k = 0; k < m; k++) {
        ss_a += (double)analytic[index[k]] * analytic[index[k]];
        ss_n += qs[k].central * qs[k].central;
    }
    const double floor_abs = fmax(c->floor_fraction * sqrt(fmax(ss_a, ss_n) / (double)m), 1e-30);
    for (size_t k = 0; k < m; k++) {
        const double a = analytic[index[k]];
        double matched, error = judge(c, a, &qs[k], noise, floor_abs, &matched);
        /* Several kinks within h (a first-layer weight of a wide relu net
         * moves thousands of pre-activations) spoil all three quotients:
         * a failing coordinate is retried with smaller steps, where kinks
         * are rarer and the noise allowance grows accordingly. A wrong
         * gradient fails at every step. */
        int retried = 0;
        for (int r = 1; r <= RETRIES && error > ARS_GRADCHECK_TOLERANCE; r++) {
            quotients q;
            if ((rc = quotients_at(c, values, index[k], qs[k].h / pow(4.0, r), &q)) != 0) goto done;
            double m2, e2 = judge(c, a, &q, noise, floor_abs, &m2);
            if (!(e2 >= error)) error = e2, matched = m2;
            retried = 1;
        }
        const double slack = c->noise_z * fmax(noise, c->resolution) / (2.0 * qs[k].h);
        result->kinks += error <= ARS_GRADCHECK_TOLERANCE &&
                         (retried || excess(a, qs[k].central, slack, floor_abs) > ARS_GRADCHECK_TOLERANCE);
        result->resolved += fmax(fabs(a), fabs(matched)) > slack;
        const double raw = excess(a, matched, 0.0, floor_abs);
        if (!isnan(result->raw_rel_error) && !(raw <= result->raw_rel_error)) result->raw_rel_error = raw;
        /* NaN sticks: a non-finite analytic gradient fails the check */
        if (!isnan(result->max_abs_error) && !(fabs(a - matched) <= result->max_abs_error))
            result->max_abs_error = fabs(a - matched);
        if (!isnan(result->max_rel_error) && !(error <= result->max_rel_error)) {
            result->max_rel_error = error;
            snprintf(result->worst, sizeof result->worst, "%s[%zu]", tensor, index[k]);
        }
        result->checked++;
    }
    {
        const double sd = fmax(noise, c->resolution) / (2.0 * c->step);
        if (sd > result->noise) result->noise = sd;
    }
done:
    free(qs);
    free(index);
    return rc ? ars_error_context(rc, "%s", tensor) : 0;
}

int ars_gradcheck_passed(const ars_gradcheck_result *result)
{
    return result->max_rel_error <= ARS_GRADCHECK_TOLERANCE;
}

static double projected_loss(const float *y, const float *r, size_t n, double *scale)
{
    double sum = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        double t = (double)y[i] * r[i];
        sum += t;
        ss += t * t;
    }
    if (scale) *scale = sqrt(ss);
    return sum;
}

/* ---- one layer ---- */

typedef struct {
    ars_layer *layer;
    const ars_pass *pass;
    const float *x;
    float *y;
    const float *r;
} layer_context;

static int eval_layer(void *context, double *loss, double *scale)
{
    layer_context *c = context;
    int rc = c->layer->ops->forward(c->layer, c->pass, c->x, c->y);
    if (rc) return rc;
    *loss = projected_loss(c->y, c->r, (size_t)c->pass->rows * (size_t)c->layer->out_dim, scale);
    return 0;
}

static int gradcheck_layer_at_fp32(ars_layer *layer, const ars_pass *pass, const float *x, uint64_t seed,
                                   const ars_gradcheck_options *options, ars_gradcheck_result *result)
{
    result_init(result, layer->name);
    const size_t in_n = (size_t)pass->rows * (size_t)layer->in_dim;
    const size_t out_n = (size_t)pass->rows * (size_t)layer->out_dim;
    float *xw = malloc(sizeof(float) * (in_n ? in_n : 1));
    float *y = malloc(sizeof(float) * (out_n ? out_n : 1));
    float *r = malloc(sizeof(float) * (out_n ? out_n : 1));
    float *dx = malloc(sizeof(float) * (in_n ? in_n : 1));
    float *grad = malloc(sizeof(float) * (layer->param_size ? layer->param_size : 1));
    float *state = malloc(sizeof(float) * (layer->state_size ? layer->state_size : 1));
    int rc = 0, saved = 0;
    if (!xw || !y || !r || !dx || !grad || !state) {
        rc = ars_error(ARS_ENOMEM, "gradcheck %s: out of memory", layer->name);
        goto done;
    }
    if (in_n) memcpy(xw, x, sizeof(float) * in_n);
    if (layer->state_size) memcpy(state, layer->state, sizeof(float) * layer->state_size);
    ars_rng_normal(r, out_n, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, GC_R), 0);

    layer_context lc = {layer, pass, xw, y, r};
    checker c;
    checker_init(&c, options, seed, eval_layer, &lc);
    if ((rc = checker_start(&c)) != 0) goto done;
    if ((rc = layer->ops->backward(layer, pass, xw, y, r, dx)) != 0) goto done;
    if (layer->param_size) memcpy(grad, layer->grad, sizeof(float) * layer->param_size);
    saved = 1;

    if ((rc = check_tensor(&c, xw, in_n, dx, "dx", result)) != 0) goto done;
    for (int t = 0; t < layer->param_count; t++) {
        const ars_tensor_view *v = &layer->params[t];
        rc = check_tensor(&c, layer->param + v->offset, v->count, grad + v->offset, v->name, result);
        if (rc) goto done;
    }
done:
    if (state && layer->state_size) memcpy(layer->state, state, sizeof(float) * layer->state_size);
    if (saved && layer->param_size) memcpy(layer->grad, grad, sizeof(float) * layer->param_size);
    free(xw);
    free(y);
    free(r);
    free(dx);
    free(grad);
    free(state);
    return rc ? ars_error_context(rc, "gradcheck %s", layer->name) : 0;
}

static void fill_role(float *p, size_t n, ars_role role, int fan_in, uint64_t seed, uint64_t stream)
{
    switch (role) {
    case ARS_ROLE_WEIGHT:
        ars_rng_normal(p, n, 0.0f, 1.0f / sqrtf((float)(fan_in > 0 ? fan_in : 1)), seed, stream, 0);
        break;
    case ARS_ROLE_ONES:
        ars_rng_normal(p, n, 1.0f, 0.3f, seed, stream, 0);
        break;
    case ARS_ROLE_BIAS:
    case ARS_ROLE_ZEROS:
        ars_rng_normal(p, n, 0.0f, 0.3f, seed, stream, 0);
        break;
    }
}

void ars_gradcheck_randomize(ars_layer *layer, uint64_t seed)
{
    uint32_t base = GC_PARAMS + 16 * (uint32_t)layer->index;
    for (int t = 0; t < layer->param_count; t++) {
        const ars_tensor_view *v = &layer->params[t];
        int fan_in, fan_out;
        ars_tensor_fans(v, &fan_in, &fan_out);
        fill_role(layer->param + v->offset, v->count, v->role, fan_in, seed, ars_stream(ARS_STREAM_DATA, base + t));
    }
    for (int t = 0; t < layer->buffer_count; t++) {
        const ars_tensor_view *v = &layer->buffers[t];
        float *p = layer->state + v->offset;
        uint64_t stream = ars_stream(ARS_STREAM_DATA, base + 8 + t);
        if (v->role == ARS_ROLE_ONES)   /* a variance: keep it positive */
            ars_rng_uniform(p, v->count, 0.5f, 1.5f, seed, stream, 0);
        else
            fill_role(p, v->count, v->role, v->shape.dims[v->shape.rank - 1], seed, stream);
    }
}

void ars_gradcheck_randomize_model(ars_model *model, uint64_t seed)
{
    for (int i = 0; i < model->layer_count; i++) ars_gradcheck_randomize(&model->layers[i], seed);
}

int ars_gradcheck_layer(const ars_layer_spec *spec, ars_shape in, int rows, uint64_t seed,
                        const ars_gradcheck_options *options, ars_gradcheck_result *result)
{
    result_init(result, spec->kind);
    if (ars_layer_kind_has(spec->kind, ARS_KIND_RESIDUAL) && !ars_layer_kind_has(spec->kind, ARS_KIND_SUGAR))
        return ars_error(ARS_EINVAL, "gradcheck: '%s' is half of a residual block; check it in a model "
                         "(ars_gradcheck_model)", spec->kind);
    if (rows <= 0) return ars_error(ARS_EINVAL, "gradcheck: %d rows", rows);
    ars_layer layer;
    memset(&layer, 0, sizeof layer);
    snprintf(layer.name, sizeof layer.name, "000_%s", spec->kind);
    int rc = ars_layer_setup(&layer, spec, &in, rows);
    float *param = NULL, *grad = NULL, *state = NULL, *x = NULL;
    const int in_dim = layer.in_dim;
    if (rc) goto done;
    param = calloc(layer.param_size + 1, sizeof(float));
    grad = calloc(layer.param_size + 1, sizeof(float));
    state = calloc(layer.state_size + 1, sizeof(float));
    x = malloc(sizeof(float) * (size_t)rows * (size_t)in_dim);
    if (!param || !grad || !state || !x) {
        rc = ars_error(ARS_ENOMEM, "gradcheck: out of memory");
        goto done;
    }
    layer.param = param;
    layer.grad = grad;
    layer.state = state;
    ars_gradcheck_randomize(&layer, seed);
    ars_rng_normal(x, (size_t)rows * (size_t)in_dim, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, GC_X), 0);
    ars_pass pass = {0};
    pass.mode = options && options->eval ? ARS_MODE_EVAL : ARS_MODE_TRAIN;
    pass.rows = pass.global_rows = rows;
    pass.seed = seed;
    pass.step = 1;
    rc = ars_gradcheck_layer_at(&layer, &pass, x, seed, options, result);
done:
    if (layer.ops && layer.ops->destroy) layer.ops->destroy(&layer);
    free(layer.impl);
    free(param);
    free(grad);
    free(state);
    free(x);
    return rc;
}

/* ---- whole model ---- */

typedef struct {
    ars_model *model;
    const ars_pass *pass;
    const float *x;
    const float *r;
} model_context;

static int eval_model(void *context, double *loss, double *scale)
{
    model_context *c = context;
    int rc = ars_model_forward(c->model, c->pass, c->x);
    if (rc) return rc;
    *loss = projected_loss(ars_model_output(c->model), c->r,
                           (size_t)c->pass->rows * (size_t)c->model->out_dim, scale);
    return 0;
}

static int gradcheck_model_fp32(ars_model *model, const ars_pass *pass, const float *x, uint64_t seed,
                                const ars_gradcheck_options *options, ars_gradcheck_result *per_layer)
{
    for (int i = 0; i < model->layer_count; i++) result_init(&per_layer[i], model->layers[i].name);
    if (ars_dist_active(pass->dist))
        return ars_error(ARS_EINVAL, "gradcheck: the model check runs on one process (dist has %d ranks)",
                         pass->dist->size);
    if (pass->rows <= 0 || pass->rows > model->max_rows)
        return ars_error(ARS_EINVAL, "gradcheck: %d rows for a model of capacity %d", pass->rows,
                         model->max_rows);
    const size_t out_n = (size_t)pass->rows * (size_t)model->out_dim;
    float *r = malloc(sizeof(float) * out_n);
    float *grads = malloc(sizeof(float) * (model->param_count + 1));
    float *state = malloc(sizeof(float) * (model->state_count + 1));
    int rc = 0, saved = 0;
    if (!r || !grads || !state) {
        rc = ars_error(ARS_ENOMEM, "gradcheck: out of memory");
        goto done;
    }
    memcpy(state, model->state, sizeof(float) * model->state_count);
    ars_rng_normal(r, out_n, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, GC_R), 0);

    model_context mc = {model, pass, x, r};
    checker c;
    checker_init(&c, options, seed, eval_model, &mc);
    if ((rc = checker_start(&c)) != 0) goto done;
    if ((rc = ars_model_backward(model, pass, r, NULL, NULL)) != 0) goto done;
    memcpy(grads, model->grads, sizeof(float) * model->param_count);
    saved = 1;
    for (int i = 0; i < model->layer_count && !rc; i++) {
        ars_layer *layer = &model->layers[i];
        for (int t = 0; t < layer->param_count && !rc; t++) {
            const ars_tensor_view *v = &layer->params[t];
            rc = check_tensor(&c, layer->param + v->offset, v->count,
                              grads + layer->param_offset + v->offset, v->name, &per_layer[i]);
        }
    }
    if (!rc) {   /* leave the activations of the unperturbed point behind */
        double unused;
        rc = eval_model(&mc, &unused, NULL);
    }
done:
    if (state) memcpy(model->state, state, sizeof(float) * model->state_count);
    if (saved) memcpy(model->grads, grads, sizeof(float) * model->param_count);   /* the analytic gradient */
    free(r);
    free(grads);
    free(state);
    return rc ? ars_error_context(rc, "gradcheck") : 0;
}

/* ---- losses ---- */

typedef struct {
    ars_loss_kind kind;
    const float *logits;
    int rows, dim;
    const int32_t *labels;
    const float *targets;
} loss_context;

static int eval_loss(void *context, double *loss, double *scale)
{
    loss_context *c = context;
    double sum;
    int rc = ars_loss_compute(c->kind, c->logits, c->rows, c->dim, c->labels, c->targets, c->rows, &sum, NULL);
    *loss = sum / c->rows;
    if (scale) *scale = 0;   /* summed in double from the float logits: no rounding of note */
    return rc;
}

int ars_gradcheck_loss(ars_loss_kind kind, int rows, int dim, uint64_t seed,
                       const ars_gradcheck_options *options, ars_gradcheck_result *result)
{
    result_init(result, ars_loss_name(kind));
    if (rows <= 0 || dim <= 0) return ars_error(ARS_EINVAL, "gradcheck: loss over %d x %d", rows, dim);
    const size_t n = (size_t)rows * (size_t)dim;
    float *logits = malloc(sizeof(float) * n), *targets = malloc(sizeof(float) * n);
    float *dlogits = malloc(sizeof(float) * n);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)rows);
    int rc = 0;
    if (!logits || !targets || !dlogits || !labels) {
        rc = ars_error(ARS_ENOMEM, "gradcheck: out of memory");
        goto done;
    }
    ars_rng_normal(logits, n, 0.0f, 2.0f, seed, ars_stream(ARS_STREAM_DATA, GC_X), 0);
    ars_rng_normal(targets, n, 0.0f, 1.0f, seed, ars_stream(ARS_STREAM_DATA, GC_TARGETS), 0);
    for (int i = 0; i < rows; i++) {
        uint32_t w[4];
        ars_philox(seed, ars_stream(ARS_STREAM_DATA, GC_LABELS), (uint64_t)i, w);
        labels[i] = (int32_t)(w[0] % (uint32_t)dim);
    }
    loss_context lc = {kind, logits, rows, dim, labels, targets};
    checker c;
    checker_init(&c, options, seed, eval_loss, &lc);
    double sum;
    rc = ars_loss_compute(kind, logits, rows, dim, labels, targets, rows, &sum, dlogits);
    if (!rc) rc = checker_start(&c);
    if (rc) goto done;
    rc = check_tensor(&c, logits, n, dlogits, "dlogits", result);
done:
    free(logits);
    free(targets);
    free(dlogits);
    free(labels);
    return rc ? ars_error_context(rc, "gradcheck %s", ars_loss_name(kind)) : 0;
}

/* Gradients are checked in fp32 whatever the products' precision: float
 * finite differences resolve no better than fp32 allows, and [run]
 * precision = bf16 changes the products, not what the gradient should be.
 * The process's precision is put back after. */
static int precision_to_fp32(ars_precision *saved)
{
    *saved = ars_gemm_precision();
    return *saved == ARS_PRECISION_FP32 ? 0 : ars_gemm_set_precision(ARS_PRECISION_FP32);
}

static int precision_back(ars_precision saved, int rc)
{
    const int back = saved == ARS_PRECISION_FP32 ? 0 : ars_gemm_set_precision(saved);
    return rc ? rc : back;
}

int ars_gradcheck_layer_at(ars_layer *layer, const ars_pass *pass, const float *x, uint64_t seed,
                           const ars_gradcheck_options *options, ars_gradcheck_result *result)
{
    ars_precision saved;
    TRY(precision_to_fp32(&saved));
    return precision_back(saved, gradcheck_layer_at_fp32(layer, pass, x, seed, options, result));
}

int ars_gradcheck_model(ars_model *model, const ars_pass *pass, const float *x, uint64_t seed,
                        const ars_gradcheck_options *options, ars_gradcheck_result *per_layer)
{
    ars_precision saved;
    TRY(precision_to_fp32(&saved));
    return precision_back(saved, gradcheck_model_fp32(model, pass, x, seed, options, per_layer));
}
