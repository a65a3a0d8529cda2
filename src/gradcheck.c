/* gradcheck: central-difference checks of layer, model and loss gradients
 * (see include/arsenal/gradcheck.h for the measure and the tolerance). */
#include "arsenal/gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/rng.h"

/* Streams of the check's own random draws: ARS_STREAM_DATA instances
 * tagged 'GC' so they cannot coincide with a data set's. */
enum { GC_X = 0x47430001, GC_R, GC_SAMPLE, GC_LABELS, GC_TARGETS, GC_PARAMS = 0x47440000 };

/* Evaluates L at the current (perturbed) values. */
typedef int (*eval_fn)(void *context, double *loss);

typedef struct {
    eval_fn eval;
    void *context;
    double base;        /* L at the unperturbed point */
    double step, floor_fraction, noise_z;
    int max_coords;
    uint64_t seed;
    uint32_t tensors;   /* tensors checked so far: sampling stream per tensor */
} checker;

enum {
    NOISE_PROBES = 5,   /* coordinates per tensor whose quotients measure the noise */
    NOISE_STEPS = 8     /* step sizes per probe */
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

static int checker_start(checker *c) { return c->eval(c->context, &c->base); }

static void result_init(ars_gradcheck_result *result, const char *name)
{
    memset(result, 0, sizeof *result);
    snprintf(result->name, sizeof result->name, "%s", name);
}

/* Central quotient of L at values[i] with step h (restores values[i]);
 * the denominator from the float values actually stored. lp/lm (may be
 * NULL) receive L(v+h) and L(v-h). */
static int central_quotient(checker *c, float *values, size_t i, double h, double *quotient, double *lp_out,
                            double *lm_out)
{
    const float v0 = values[i];
    double lp = 0, lm = 0;
    values[i] = (float)((double)v0 + h);
    const double vp = values[i];
    int rc = c->eval(c->context, &lp);
    values[i] = (float)((double)v0 - h);
    const double vm = values[i];
    if (!rc) rc = c->eval(c->context, &lm);
    values[i] = v0;
    if (rc) return rc;
    *quotient = (lp - lm) / (vp - vm);
    if (lp_out) *lp_out = lp;
    if (lm_out) *lm_out = lm;
    return isfinite(*quotient) ? 0 : ars_error(ARS_ENUMERIC, "gradcheck: non-finite loss perturbing [%zu]", i);
}

static double step_for(const checker *c, float v) { return c->step * fmax(1.0, fabs((double)v)); }

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The float forward makes L a noisy function: rounding changes with every
 * perturbation. Its effect on a central quotient is measured, not modeled:
 * quotients at NOISE_STEPS steps h (1 + j/16) differ by the noise (the true
 * quotient moves by O(h^2 / 16) between them). Within a probe the noise is
 * heavy-tailed (often most perturbations round identically and a few do
 * not), so a probe's estimate is the RMS of its successive differences /
 * sqrt(2); across probes the median, so that a kink inside one probe does
 * not make the whole tensor's check lenient. */
static int quotient_noise(checker *c, float *values, const size_t *index, size_t m, double *sigma)
{
    const size_t probes = m < NOISE_PROBES ? m : NOISE_PROBES;
    double estimate[NOISE_PROBES];
    for (size_t p = 0; p < probes; p++) {
        const size_t i = index[p * m / probes];   /* spread over the sample */
        const double h = step_for(c, values[i]);
        double previous = 0, sum_sq = 0;
        for (int j = 0; j < NOISE_STEPS; j++) {
            double q;
            int rc = central_quotient(c, values, i, h * (1.0 + j / 16.0), &q, NULL, NULL);
            if (rc) return rc;
            if (j > 0) sum_sq += (q - previous) * (q - previous);
            previous = q;
        }
        estimate[p] = sqrt(sum_sq / (NOISE_STEPS - 1) / 2.0);
    }
    qsort(estimate, probes, sizeof estimate[0], compare_doubles);
    *sigma = probes % 2 ? estimate[probes / 2] : 0.5 * (estimate[probes / 2 - 1] + estimate[probes / 2]);
    return 0;
}

/* Error of analytic a against quotient q with noise sd sigma: the part of
 * |a - q| beyond noise_z sigma, relative to max(|a| + |q|, floor). */
static double excess_error(const checker *c, double a, double q, double sigma, double floor_abs)
{
    return fmax(0.0, fabs(a - q) - c->noise_z * sigma) / fmax(fabs(a) + fabs(q), floor_abs);
}

typedef struct {
    size_t index;
    double central, up, down;   /* difference quotients */
} probe;

/* Compares analytic[i] with difference quotients of L for sampled
 * coordinates i of values (restored afterwards); folds into result. */
static int check_tensor(checker *c, float *values, size_t count, const float *analytic, const char *tensor,
                        ars_gradcheck_result *result)
{
    if (count == 0) return 0;
    const size_t m = count <= (size_t)c->max_coords ? count : (size_t)c->max_coords;
    const uint64_t stream = ars_stream(ARS_STREAM_DATA, GC_SAMPLE + 16 * c->tensors++);
    probe *probes = malloc(sizeof *probes * m);
    size_t *index = malloc(sizeof *index * m);
    int rc = 0;
    if (!probes || !index) {
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
    double sigma;
    if ((rc = quotient_noise(c, values, index, m, &sigma)) != 0) goto done;
    for (size_t k = 0; k < m && !rc; k++) {
        probe *p = &probes[k];
        const size_t i = index[k];
        const float v0 = values[i];
        const double h = step_for(c, v0);
        double lp, lm;
        p->index = i;
        rc = central_quotient(c, values, i, h, &p->central, &lp, &lm);
        p->up = (lp - c->base) / ((double)(float)((double)v0 + h) - v0);
        p->down = (c->base - lm) / ((double)v0 - (double)(float)((double)v0 - h));
    }
    if (rc) goto done;
    /* floor, the smallest denominator: a fraction of the tensor's gradient
     * scale (analytic or numeric, whichever is larger, so a gradient that
     * was never written still counts) */
    double ss_a = 0, ss_n = 0;
    for (size_t k = 0; k < m; k++) {
        ss_a += (double)analytic[probes[k].index] * analytic[probes[k].index];
        ss_n += probes[k].central * probes[k].central;
    }
    const double floor_abs = fmax(c->floor_fraction * sqrt(fmax(ss_a, ss_n) / (double)m), 1e-30);
    for (size_t k = 0; k < m; k++) {
        const probe *p = &probes[k];
        const double a = analytic[p->index];
        /* A kink (relu at 0) within h spoils the central quotient, but then
         * one of the one-sided quotients lies wholly on the point's side of
         * it: the analytic gradient must match at least one of the three.
         * On smooth functions the one-sided quotients are off by h f''/2,
         * so this loosens the check by the curvature term only, not by
         * anything like a wrong factor or term. One-sided quotients carry
         * twice the noise of the central one. */
        const double central = excess_error(c, a, p->central, sigma, floor_abs);
        double best = central, q = p->central;
        double e_up = excess_error(c, a, p->up, 2 * sigma, floor_abs);
        double e_down = excess_error(c, a, p->down, 2 * sigma, floor_abs);
        if (e_up < best) best = e_up, q = p->up;
        if (e_down < best) best = e_down, q = p->down;
        if (getenv("GC_DEBUG") && best > ARS_GRADCHECK_TOLERANCE) fprintf(stderr, "%s[%zu] a=%.5e c=%.5e up=%.5e down=%.5e floor=%.3e sigma %.3e\n", tensor, p->index, a, p->central, p->up, p->down, floor_abs, sigma);
        result->kinks += central > ARS_GRADCHECK_TOLERANCE && best <= ARS_GRADCHECK_TOLERANCE;
        /* NaN sticks: a non-finite analytic gradient fails the check */
        if (!isnan(result->max_abs_error) && !(fabs(a - q) <= result->max_abs_error))
            result->max_abs_error = fabs(a - q);
        if (!isnan(result->max_rel_error) && !(best <= result->max_rel_error)) {
            result->max_rel_error = best;
            snprintf(result->worst, sizeof result->worst, "%s[%zu]", tensor, p->index);
        }
        result->checked++;
    }
    if (sigma > result->noise) result->noise = sigma;
done:
    free(probes);
    free(index);
    return rc;
}

int ars_gradcheck_passed(const ars_gradcheck_result *result)
{
    return result->max_rel_error <= ARS_GRADCHECK_TOLERANCE;
}

static double projected_loss(const float *y, const float *r, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)y[i] * r[i];
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

static int eval_layer(void *context, double *loss)
{
    layer_context *c = context;
    int rc = c->layer->ops->forward(c->layer, c->pass, c->x, c->y);
    if (rc) return rc;
    *loss = projected_loss(c->y, c->r, (size_t)c->pass->rows * (size_t)c->layer->out_dim);
    return 0;
}

int ars_gradcheck_layer_at(ars_layer *layer, const ars_pass *pass, const float *x, uint64_t seed,
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
    int rc = 0;
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

    if ((rc = check_tensor(&c, xw, in_n, dx, "dx", result)) != 0) goto done;
    for (int t = 0; t < layer->param_count; t++) {
        const ars_tensor_view *v = &layer->params[t];
        rc = check_tensor(&c, layer->param + v->offset, v->count, grad + v->offset, v->name, result);
        if (rc) goto done;
    }
done:
    if (state && layer->state_size) memcpy(layer->state, state, sizeof(float) * layer->state_size);
    if (grad && layer->param_size) memcpy(layer->grad, grad, sizeof(float) * layer->param_size);
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
        fill_role(layer->param + v->offset, v->count, v->role, v->cols, seed, ars_stream(ARS_STREAM_DATA, base + t));
    }
    for (int t = 0; t < layer->buffer_count; t++) {
        const ars_tensor_view *v = &layer->buffers[t];
        float *p = layer->state + v->offset;
        uint64_t stream = ars_stream(ARS_STREAM_DATA, base + 8 + t);
        if (v->role == ARS_ROLE_ONES)   /* a variance: keep it positive */
            ars_rng_uniform(p, v->count, 0.5f, 1.5f, seed, stream, 0);
        else
            fill_role(p, v->count, v->role, v->cols, seed, stream);
    }
}

void ars_gradcheck_randomize_model(ars_model *model, uint64_t seed)
{
    for (int i = 0; i < model->layer_count; i++) ars_gradcheck_randomize(&model->layers[i], seed);
}

int ars_gradcheck_layer(const ars_layer_spec *spec, int in_dim, int rows, uint64_t seed,
                        const ars_gradcheck_options *options, ars_gradcheck_result *result)
{
    result_init(result, spec->kind);
    if (strcmp(spec->kind, "residual") == 0 || strcmp(spec->kind, "residual_add") == 0)
        return ars_error(ARS_EINVAL, "gradcheck: '%s' is half of a residual block; check it in a model "
                         "(ars_gradcheck_model)", spec->kind);
    if (rows <= 0) return ars_error(ARS_EINVAL, "gradcheck: %d rows", rows);
    ars_layer layer;
    memset(&layer, 0, sizeof layer);
    snprintf(layer.name, sizeof layer.name, "000_%s", spec->kind);
    int rc = ars_layer_setup(&layer, spec, in_dim, rows);
    float *param = NULL, *grad = NULL, *state = NULL, *x = NULL;
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

static int eval_model(void *context, double *loss)
{
    model_context *c = context;
    int rc = ars_model_forward(c->model, c->pass, c->x);
    if (rc) return rc;
    *loss = projected_loss(ars_model_output(c->model), c->r,
                           (size_t)c->pass->rows * (size_t)c->model->out_dim);
    return 0;
}

int ars_gradcheck_model(ars_model *model, const ars_pass *pass, const float *x, uint64_t seed,
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
    int rc = 0;
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
        rc = eval_model(&mc, &unused);
    }
done:
    if (state) memcpy(model->state, state, sizeof(float) * model->state_count);
    if (grads && !rc) memcpy(model->grads, grads, sizeof(float) * model->param_count);
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

static int eval_loss(void *context, double *loss)
{
    loss_context *c = context;
    double sum;
    int rc = ars_loss_compute(c->kind, c->logits, c->rows, c->dim, c->labels, c->targets, c->rows, &sum, NULL);
    *loss = sum / c->rows;
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
