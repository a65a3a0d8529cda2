/* optim: the SGD, Adam and AdamW updates over the model's flat buffers, and
 * the learning-rate schedules. Each update is one fused, branch-free pass per
 * element so the compiler can vectorize it; per-step scalars (bias
 * corrections) are computed once in double. Semantics follow torch.optim. */
#include "arsenal/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "simd.h"

static const char *const optimizer_names[] = {
    [ARS_OPT_SGD] = "sgd", [ARS_OPT_ADAM] = "adam", [ARS_OPT_ADAMW] = "adamw"};

static const char *const schedule_names[] = {
    [ARS_SCHED_CONSTANT] = "constant", [ARS_SCHED_STEP] = "step", [ARS_SCHED_COSINE] = "cosine"};

enum {
    OPTIMIZER_COUNT = sizeof optimizer_names / sizeof optimizer_names[0],
    SCHEDULE_COUNT = sizeof schedule_names / sizeof schedule_names[0]
};

void ars_optim_config_defaults(ars_optim_config *config, ars_optimizer_kind kind)
{
    memset(config, 0, sizeof *config);
    config->kind = kind;
    /* torch.optim defaults: Adam/AdamW lr 1e-3; AdamW weight_decay 1e-2. */
    config->lr = kind == ARS_OPT_SGD ? 0.01f : 0.001f;
    config->momentum = 0.0f;
    config->nesterov = 0;
    config->weight_decay = kind == ARS_OPT_ADAMW ? 0.01f : 0.0f;
    config->beta1 = 0.9f;
    config->beta2 = 0.999f;
    config->eps = 1e-8f;
}

int ars_optimizer_parse(const char *name, ars_optimizer_kind *kind)
{
    for (int i = 0; i < OPTIMIZER_COUNT; i++)
        if (name && strcmp(name, optimizer_names[i]) == 0) {
            *kind = (ars_optimizer_kind)i;
            return 0;
        }
    return ars_error(ARS_EINVAL, "unknown optimizer '%s': expected one of sgd, adam, adamw",
                     name ? name : "(null)");
}

const char *ars_optimizer_name(ars_optimizer_kind kind)
{
    return (unsigned)kind < OPTIMIZER_COUNT ? optimizer_names[kind] : "unknown";
}

static int check_config(const ars_optim_config *c)
{
    if ((unsigned)c->kind >= OPTIMIZER_COUNT)
        return ars_error(ARS_EINVAL, "optimizer: unknown kind %d", (int)c->kind);
    const char *name = optimizer_names[c->kind];
    if (!(c->lr >= 0.0f) || !isfinite(c->lr))
        return ars_error(ARS_EINVAL, "%s: lr must be a finite value >= 0, found %g", name, c->lr);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return ars_error(ARS_EINVAL, "%s: weight_decay must be >= 0, found %g", name,
                         c->weight_decay);
    if (c->kind == ARS_OPT_SGD) {
        if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
            return ars_error(ARS_EINVAL, "sgd: momentum must be in [0, 1), found %g", c->momentum);
        if (c->nesterov && c->momentum == 0.0f)
            return ars_error(ARS_EINVAL, "sgd: nesterov needs momentum > 0, found momentum 0");
        return 0;
    }
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
        return ars_error(ARS_EINVAL, "%s: beta1 must be in [0, 1), found %g", name, c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return ars_error(ARS_EINVAL, "%s: beta2 must be in [0, 1), found %g", name, c->beta2);
    if (!(c->eps > 0.0f) || !isfinite(c->eps))
        return ars_error(ARS_EINVAL, "%s: eps must be > 0, found %g", name, c->eps);
    return 0;
}

int ars_optimizer_create(ars_optimizer *opt, const ars_optim_config *config, size_t count)
{
    memset(opt, 0, sizeof *opt);
    int rc = check_config(config);
    if (rc) return rc;
    opt->config = *config;
    opt->count = count;
    int need_m = config->kind != ARS_OPT_SGD || config->momentum > 0.0f;
    int need_v = config->kind != ARS_OPT_SGD;
    size_t alloc = count ? count : 1;   /* calloc(0) may return NULL */
    if (need_m && !(opt->m = calloc(alloc, sizeof(float))))
        goto nomem;
    if (need_v && !(opt->v = calloc(alloc, sizeof(float))))
        goto nomem;
    return 0;
nomem:
    ars_optimizer_destroy(opt);
    return ars_error(ARS_ENOMEM, "%s: cannot allocate state for %zu parameters",
                     optimizer_names[config->kind], count);
}

void ars_optimizer_destroy(ars_optimizer *opt)
{
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

/* Plain SGD (no momentum buffer, as torch with momentum 0). */
ARS_VECTOR_CLONES
static void sgd_plain(float *restrict p, const float *restrict g, float gs, size_t n, float lr, float wd)
{
    for (size_t i = 0; i < n; i++) p[i] -= lr * (g[i] * gs + wd * p[i]);
}

/* The buffer starts at zero, so buf = momentum*0 + d = d at the first step,
 * which is torch's buf = clone(d) without a per-element branch. */
ARS_VECTOR_CLONES
static void sgd_momentum(float *restrict p, const float *restrict g, float gs, float *restrict buf,
                         size_t n, float lr, float wd, float mu)
{
    for (size_t i = 0; i < n; i++) {
        float b = mu * buf[i] + (g[i] * gs + wd * p[i]);
        buf[i] = b;
        p[i] -= lr * b;
    }
}

ARS_VECTOR_CLONES
static void sgd_nesterov(float *restrict p, const float *restrict g, float gs, float *restrict buf,
                         size_t n, float lr, float wd, float mu)
{
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * gs + wd * p[i];
        float b = mu * buf[i] + d;
        buf[i] = b;
        p[i] -= lr * (d + mu * b);
    }
}

/* Adam core as torch's single-tensor path: denom = sqrt(v)/sqrt(bc2) + eps,
 * p -= (lr/bc1) * m / denom. Adam folds weight decay into the gradient
 * (l2 = wd, decay = 1); AdamW decays the parameter first (l2 = 0,
 * decay = 1 - lr*wd), fused here rather than a second pass.
 * sqrtf vectorizes only with -fno-math-errno (GCC guards each call for errno). */
ARS_VECTOR_CLONES
static void adam_core(float *restrict p, const float *restrict g, float gs, float *restrict m,
                      float *restrict v, size_t n, float step_size, float inv_sqrt_bc2,
                      float b1, float b2, float eps, float l2, float decay)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gs + l2 * p[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

void ars_optimizer_step(ars_optimizer *opt, float *params, const float *grads, float lr)
{
    ars_optimizer_step_scaled(opt, params, grads, 1.0f, lr);   /* g * 1 is exact */
}

void ars_optimizer_step_scaled(ars_optimizer *opt, float *params, const float *grads, float grad_scale,
                               float lr)
{
    const ars_optim_config *c = &opt->config;
    size_t n = opt->count;
    opt->step++;
    if (c->kind == ARS_OPT_SGD) {
        if (opt->m && c->nesterov)
            sgd_nesterov(params, grads, grad_scale, opt->m, n, lr, c->weight_decay, c->momentum);
        else if (opt->m)
            sgd_momentum(params, grads, grad_scale, opt->m, n, lr, c->weight_decay, c->momentum);
        else
            sgd_plain(params, grads, grad_scale, n, lr, c->weight_decay);
        return;
    }
    /* Bias corrections in double: 1 - 0.999^t loses digits in float. */
    double t = (double)opt->step;
    double bc1 = 1.0 - pow((double)c->beta1, t);
    double bc2 = 1.0 - pow((double)c->beta2, t);
    float step_size = (float)((double)lr / bc1);
    float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    int decoupled = c->kind == ARS_OPT_ADAMW;
    float l2 = decoupled ? 0.0f : c->weight_decay;
    float decay = decoupled ? 1.0f - lr * c->weight_decay : 1.0f;
    adam_core(params, grads, grad_scale, opt->m, opt->v, n, step_size, inv_sqrt_bc2, c->beta1, c->beta2,
              c->eps, l2, decay);
}

int ars_schedule_parse(const char *name, ars_schedule_kind *kind)
{
    for (int i = 0; i < SCHEDULE_COUNT; i++)
        if (name && strcmp(name, schedule_names[i]) == 0) {
            *kind = (ars_schedule_kind)i;
            return 0;
        }
    return ars_error(ARS_EINVAL, "unknown schedule '%s': expected one of constant, step, cosine",
                     name ? name : "(null)");
}

const char *ars_schedule_name(ars_schedule_kind kind)
{
    return (unsigned)kind < SCHEDULE_COUNT ? schedule_names[kind] : "unknown";
}

int ars_schedule_check(const ars_schedule *s)
{
    if ((unsigned)s->kind >= SCHEDULE_COUNT)
        return ars_error(ARS_EINVAL, "schedule: unknown kind %d", (int)s->kind);
    if (s->warmup_steps < 0)
        return ars_error(ARS_EINVAL, "schedule: warmup_steps must be >= 0, found %lld",
                         (long long)s->warmup_steps);
    if (s->kind == ARS_SCHED_STEP) {
        if (s->step_size <= 0)
            return ars_error(ARS_EINVAL, "step schedule: step_size must be > 0, found %lld",
                             (long long)s->step_size);
        if (!(s->gamma > 0.0f) || !isfinite(s->gamma))
            return ars_error(ARS_EINVAL, "step schedule: gamma must be > 0, found %g", s->gamma);
    }
    if (s->kind == ARS_SCHED_COSINE) {
        if (s->total_steps <= s->warmup_steps)
            return ars_error(ARS_EINVAL,
                             "cosine schedule: total_steps (%lld) must exceed warmup_steps (%lld)",
                             (long long)s->total_steps, (long long)s->warmup_steps);
        if (!(s->min_lr >= 0.0f) || !isfinite(s->min_lr))
            return ars_error(ARS_EINVAL, "cosine schedule: min_lr must be >= 0, found %g",
                             s->min_lr);
    }
    return 0;
}

float ars_schedule_lr(const ars_schedule *s, float base_lr, int64_t step)
{
    if (step < 0) step = 0;
    if (step < s->warmup_steps)
        return (float)((double)base_lr * (double)(step + 1) / (double)s->warmup_steps);
    /* The decay phase starts when warm-up ends. */
    int64_t t = step - s->warmup_steps;
    switch (s->kind) {
    case ARS_SCHED_STEP:
        if (s->step_size <= 0) return base_lr;
        return (float)((double)base_lr * pow((double)s->gamma, (double)(t / s->step_size)));
    case ARS_SCHED_COSINE: {
        int64_t span = s->total_steps - s->warmup_steps;
        if (t >= span) return s->min_lr;
        double progress = (double)t / (double)span;
        return (float)(s->min_lr + ((double)base_lr - s->min_lr) * 0.5 *
                                       (1.0 + cos(3.14159265358979323846 * progress)));
    }
    case ARS_SCHED_CONSTANT:
    default:
        return base_lr;
    }
}
