/* cure: automatic cures with rollback (cure.h; docs/health.md "Automatic
 * cures"). A cure is a list of settings, "lr=0.05;clip_norm=1;
 * act:001=relu;init:000=he_normal": the learning rate, the global-norm
 * clip, an activation layer's kind (swapped in place: activation layers
 * have no parameters, so the parameter layout and the gradient buckets
 * stay) and a layer's initializer (He re-initialization of its weights
 * when the cure is applied; --resume takes the weights from the file). */
#define _POSIX_C_SOURCE 200809L
#include "cure.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/ckpt.h"
#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/init.h"
#include "arsenal/rng.h"
#include "text.h"

typedef struct cure_snapshot {
    int valid;
    int64_t step, nonfinite_steps, opt_step;
    int epochs_done;
    double last_loss, test_accuracy, test_loss;
    size_t records, hists, evals;
    float *params, *state, *m, *v;
} cure_snapshot;

typedef struct ars_cure {
    ars_run_config *run;          /* the trainer's resolved copy */
    int mode;
    cure_snapshot healthy;        /* the last healthy state (not moved during a trial) */
    cure_snapshot cured;          /* during a trial: the state right after the cure (re-initialized layers) */
    int trial_left;               /* records left in the trial of the newest cure, 0: none */
    int trial_rule, trial_attempt;
    size_t trial_cure;            /* its index in history.cures */
    float trial_lr, trial_clip;   /* the settings before it, for a revert */
    char (*trial_kinds)[24];
    int episodes[ARS_HEALTH_PROBLEMS];   /* rank 0: starts seen so far */
    int clean_streak;             /* rank 0: consecutive healthy records */
    char *config_text;            /* the run file with the active cures (NULL: none) */
} ars_cure;

enum { ACT_NONE, ACT_SNAPSHOT, ACT_CURE, ACT_STOP };

/* The decision rank 0 broadcasts: a fixed header, then text. */
typedef struct decision {
    int32_t action, rule, attempt, revert;
    int64_t step;
    int32_t text_length;          /* settings \0 change \0 layer \0 (or the stop report) */
} decision;

/* ---- snapshots -------------------------------------------------------------- */

static int copy_floats(float **dst, const float *src, size_t n)
{
    if (!src) return 0;
    if (!*dst && !(*dst = malloc(sizeof(float) * (n ? n : 1))))
        return ars_error(ARS_ENOMEM, "health cure: out of memory for a snapshot of %zu floats", n);
    memcpy(*dst, src, sizeof(float) * n);
    return 0;
}

static int take_snapshot(ars_trainer *t, cure_snapshot *s)
{
    const size_t n = t->model.param_count;
    TRY(copy_floats(&s->params, t->model.params, n));
    TRY(copy_floats(&s->state, t->model.state, t->model.state_count));
    /* the optimizer state is the rank's slice under optimizer_shard */
    TRY(copy_floats(&s->m, t->opt.m, t->opt.count));
    TRY(copy_floats(&s->v, t->opt.v, t->opt.count));
    s->step = t->step;
    s->nonfinite_steps = t->nonfinite_steps;
    s->opt_step = t->opt.step;
    s->epochs_done = t->epochs_done;
    s->last_loss = t->last_loss;
    s->test_accuracy = t->test_accuracy;
    s->test_loss = t->test_loss;
    s->records = t->history.count;
    s->hists = t->history.hist_count;
    s->evals = t->history.eval_count;
    s->valid = 1;
    return 0;
}

static void restore_snapshot(ars_trainer *t, const cure_snapshot *s)
{
    const size_t n = t->model.param_count;
    memcpy(t->model.params, s->params, sizeof(float) * n);
    if (t->model.state_count) memcpy(t->model.state, s->state, sizeof(float) * t->model.state_count);
    if (t->opt.m) memcpy(t->opt.m, s->m, sizeof(float) * t->opt.count);
    if (t->opt.v) memcpy(t->opt.v, s->v, sizeof(float) * t->opt.count);
    t->step = s->step;
    t->nonfinite_steps = s->nonfinite_steps;
    t->opt.step = s->opt_step;
    t->epochs_done = s->epochs_done;
    t->last_loss = s->last_loss;
    t->test_accuracy = s->test_accuracy;
    t->test_loss = s->test_loss;
    ars_history_truncate(&t->history, s->records, s->hists, s->evals);
    t->last_ckpt_step = -1;   /* the steps after it are trained again: their checkpoints are rewritten */
}

static void free_snapshot(cure_snapshot *s)
{
    free(s->params);
    free(s->state);
    free(s->m);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ---- the settings ----------------------------------------------------------- */

static int is_saturating(const char *kind) { return strcmp(kind, "sigmoid") == 0 || strcmp(kind, "tanh") == 0; }

static const char *layer_kind(const ars_trainer *t, int l) { return t->model.layers[l].kind->name; }

/* Swaps activation layer l to kind (no parameters either side). */
static int swap_activation(ars_trainer *t, int l, const char *kind)
{
    ars_layer *layer = &t->model.layers[l];
    if (strcmp(layer->kind->name, kind) == 0) return 0;
    const ars_layer_kind *to = ars_layer_kind_find(kind);
    if (!to || to->activation == ARS_ACT_NONE || layer->kind->activation == ARS_ACT_NONE || layer->param_size)
        return ars_error(ARS_EINVAL, "health cure: layer %s cannot become a %s layer (only an activation layer can "
                         "change its activation)", layer->name, kind);
    ars_layer_spec spec;
    ars_layer_spec_defaults(&spec, kind);
    spec.source_line = layer->spec.source_line;
    spec.source_file = layer->spec.source_file;
    if (strcmp(kind, "leaky_relu") == 0) spec.alpha = 0.01f;
    if (layer->ops && layer->ops->destroy) layer->ops->destroy(layer);
    free(layer->impl);
    layer->impl = NULL;
    const ars_shape in = layer->in_shape;
    TRY(ars_layer_setup(layer, &spec, &in, layer->max_rows));
    snprintf(layer->name, sizeof layer->name, "%03d_%s", l, kind);
    memcpy(t->history.layer_names[l], layer->name, sizeof t->history.layer_names[l]);
    return 0;
}

/* He (or another) re-initialization of layer l's weights, as a fresh run
 * with that initializer would draw them; biases to zero and the layer's
 * optimizer moments cleared. */
static int reinit_layer(ars_trainer *t, int l, const char *init)
{
    ars_layer *layer = &t->model.layers[l];
    ars_init_kind kind;
    TRY(ars_init_parse(init, &kind));
    snprintf(layer->spec.init, sizeof layer->spec.init, "%s", init);
    layer->spec.init_arg = 0;
    for (int k = 0; k < layer->param_count; k++) {
        const ars_tensor_view *view = &layer->params[k];
        float *x = layer->param + view->offset;
        if (view->role == ARS_ROLE_WEIGHT && k == 0) {
            const int rows = view->shape.rank >= 2 ? view->shape.dims[0] : 1;
            TRY(ars_init_fill(x, rows, (int)(view->count / (size_t)rows), kind, 0, 0, t->run->seed,
                              ars_stream(ARS_STREAM_INIT, (uint32_t)layer->index)));
        } else if (view->role == ARS_ROLE_BIAS || view->role == ARS_ROLE_ZEROS) {
            memset(x, 0, sizeof(float) * view->count);
        } else if (view->role == ARS_ROLE_ONES) {
            for (size_t i = 0; i < view->count; i++) x[i] = 1;
        } else {
            return ars_error(ARS_EINVAL, "health cure: layer %s has a second weight tensor (%s): only dense and "
                             "conv2d layers are re-initialized", layer->name, view->name);
        }
    }
    /* its optimizer state restarts: the part of the layer in this rank's
     * slice [shard_lo, shard_hi) (all of it unsharded) */
    const size_t lo = layer->param_offset > t->shard_lo ? layer->param_offset : t->shard_lo;
    const size_t end = layer->param_offset + layer->param_size, hi = end < t->shard_hi ? end : t->shard_hi;
    if (lo < hi) {
        if (t->opt.m) memset(t->opt.m + (lo - t->shard_lo), 0, sizeof(float) * (hi - lo));
        if (t->opt.v) memset(t->opt.v + (lo - t->shard_lo), 0, sizeof(float) * (hi - lo));
    }
    return 0;
}

/* Applies "lr=V;clip_norm=V;act:III=KIND;init:III=KIND" to the run and the
 * model; reinit 0 (a resume) leaves the weights as they are. */
static int apply_settings(ars_trainer *t, const char *settings, int reinit)
{
    ars_cure *c = t->cure;
    char *copy = strdup(settings), *save = NULL;
    if (!copy) return ars_error(ARS_ENOMEM, "health cure: out of memory");
    int rc = 0;
    for (char *item = strtok_r(copy, ";", &save); item && !rc; item = strtok_r(NULL, ";", &save)) {
        char kind[24];
        int layer = -1;
        double value;
        if (sscanf(item, "lr=%lf", &value) == 1 && value > 0) {
            c->run->optim.lr = (float)value;
            t->opt.config.lr = (float)value;
        } else if (sscanf(item, "clip_norm=%lf", &value) == 1 && value >= 0) {
            c->run->clip_norm = (float)value;
        } else if (sscanf(item, "act:%d=%23s", &layer, kind) == 2 && layer >= 0 && layer < t->model.layer_count) {
            rc = swap_activation(t, layer, kind);
        } else if (sscanf(item, "init:%d=%23s", &layer, kind) == 2 && layer >= 0 && layer < t->model.layer_count) {
            if (reinit) rc = reinit_layer(t, layer, kind);
            else snprintf(t->model.layers[layer].spec.init, sizeof t->model.layers[layer].spec.init, "%s", kind);
        } else {
            rc = ars_error(ARS_EFORMAT, "health cure: unknown setting '%s' (expected lr=, clip_norm=, act:LAYER= or "
                           "init:LAYER=; from a newer arsenal or a corrupted /health/cures?)", item);
        }
    }
    free(copy);
    return rc;
}

/* ---- the run file with the cures -------------------------------------------- */

static ars_config_entry *find_entry(ars_config_section *s, const char *key)
{
    for (int i = 0; i < s->entry_count; i++)
        if (strcmp(s->entries[i].key, key) == 0) return &s->entries[i];
    return NULL;
}

static void drop_entry(ars_config_section *s, const char *key)
{
    ars_config_entry *e = find_entry(s, key);
    if (!e) return;
    size_t after = (size_t)(s->entry_count - 1 - (int)(e - s->entries));
    memmove(e, e + 1, after * sizeof *e);
    s->entry_count--;
}

static ars_config_section *written_at(ars_config *config, int line)
{
    for (int i = 0; i < config->written_count; i++)
        if (config->written[i].line == line) return &config->written[i];
    return NULL;
}

/* One layer setting on the written section the layer came from (a section
 * inside [repeat] changes in every copy, as --set does). */
static int edit_layer_section(ars_config *config, const ars_layer_spec *spec, const char *what, const char *kind)
{
    ars_config_section *s = written_at(config, spec->source_line);
    if (!s) return ars_error(ARS_EINVAL, "health cure: no section at line %d of the run file", spec->source_line);
    if (strcmp(what, "act") == 0) {
        ars_config_entry *e = find_entry(s, "activation");
        if (e) snprintf(e->value, sizeof e->value, "%s", kind);
        else if (ars_layer_kind_find(s->name) && ars_layer_kind_find(s->name)->activation != ARS_ACT_NONE)
            snprintf(s->name, sizeof s->name, "%s", kind);
        return 0;
    }
    static const char *const arguments[] = {"init_std", "init_bound", "init_gain", "init_slope"};
    for (size_t k = 0; k < sizeof arguments / sizeof arguments[0]; k++) drop_entry(s, arguments[k]);
    ars_config_entry *e = find_entry(s, "init");
    if (e) {
        snprintf(e->value, sizeof e->value, "%s", kind);
        return 0;
    }
    char assignment[128];
    snprintf(assignment, sizeof assignment, "%s#%d.init=%s", s->name, s->occurrence, kind);
    return ars_config_override(config, assignment);
}

/* c->config_text: options->config_text with every active cure. */
static int rebuild_config_text(ars_trainer *t)
{
    ars_cure *c = t->cure;
    free(c->config_text);
    c->config_text = NULL;
    const char *base = t->options->config_text;
    if (!base) return 0;
    int active = 0;
    for (size_t k = 0; k < t->history.cure_count; k++) active |= strcmp(t->history.cures[k].status, "active") == 0;
    if (!active) return 0;
    /* the layers' sections (lines) from an expanded copy; the edits on the sections as written */
    ars_config layout, config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0;
    int rc = ars_config_load_string(&layout, base, "/config");
    if (!rc) rc = ars_config_expand(&layout);
    if (!rc) rc = ars_run_config_load(&layout, &run, &specs, &count);
    ars_config_free(&layout);
    if (!rc) rc = ars_config_load_string(&config, base, "/config");
    else memset(&config, 0, sizeof config);
    for (size_t k = 0; !rc && k < t->history.cure_count; k++) {
        if (strcmp(t->history.cures[k].status, "active") != 0) continue;
        char *copy = strdup(t->history.cures[k].settings), *save = NULL;
        if (!copy) rc = ars_error(ARS_ENOMEM, "health cure: out of memory");
        for (char *item = copy ? strtok_r(copy, ";", &save) : NULL; item && !rc; item = strtok_r(NULL, ";", &save)) {
            char what[8], kind[24], assignment[96];
            int layer;
            double value;
            if (sscanf(item, "lr=%lf", &value) == 1) {
                snprintf(assignment, sizeof assignment, "run.lr=%.6g", value);
                rc = ars_config_override(&config, assignment);
            } else if (sscanf(item, "clip_norm=%lf", &value) == 1) {
                snprintf(assignment, sizeof assignment, "run.clip_norm=%.9g", value);
                rc = ars_config_override(&config, assignment);
            } else if (sscanf(item, "%7[a-z]:%d=%23s", what, &layer, kind) == 3 && layer >= 0 && layer < count) {
                rc = edit_layer_section(&config, &specs[layer], what, kind);
            }
        }
        free(copy);
    }
    if (!rc) {
        c->config_text = ars_config_to_string(&config);
        if (!c->config_text) rc = ars_error(ARS_ENOMEM, "health cure: out of memory");
    }
    free(specs);
    ars_config_free(&config);
    return rc ? ars_error_context(rc, "health cure: the run file with the cures") : 0;
}

const char *ars_cure_config_text(const ars_trainer *t)
{
    return t->cure && t->cure->config_text ? t->cure->config_text : t->options->config_text;
}

/* ---- plans: the remedies of docs/health.md, in the order tried -------------- */

typedef struct plan {
    char settings[8192], change[1024], layer[40];
    float lr, clip;   /* the settings the remedy starts from (a revert's: those before the cure) */
} plan;


static void plan_lr(const ars_trainer *t, plan *p, double factor, int clip)
{
    /* a decimal of 6 digits: the run file with the cure says "lr = 0.01" */
    char decimal[32];
    (void)t;
    snprintf(decimal, sizeof decimal, "%.6g", (double)p->lr * factor);
    const float lr = p->lr, to = (float)strtod(decimal, NULL), clip_now = p->clip;
    ars_appendf(p->settings, sizeof p->settings, "lr=%s;", decimal);
    ars_appendf(p->change, sizeof p->change, "lr %g -> %g", lr, to);
    if (clip && (clip_now == 0 || clip_now > 1)) {
        ars_appendf(p->settings, sizeof p->settings, "clip_norm=1;");
        ars_appendf(p->change, sizeof p->change, ", clip_norm %g -> 1", clip_now);
    }
}

/* The parameter layer an activation layer follows (-1: none). */
static int feeding_layer(const ars_trainer *t, int l)
{
    for (int k = l - 1; k >= 0; k--) {
        if (t->model.layers[k].param_size) {
            const char *kind = layer_kind(t, k);
            return strcmp(kind, "dense") == 0 || strcmp(kind, "conv2d") == 0 ? k : -1;
        }
        if (t->model.layers[k].kind->activation == ARS_ACT_NONE && strcmp(layer_kind(t, k), "dropout") != 0) return -1;
    }
    return -1;
}

/* Activation layers of kind from (a predicate) -> to, He re-initialization
 * of the layers feeding them; 0 when the model has none. */
static int plan_swap(const ars_trainer *t, plan *p, int (*from)(const char *), const char *to, const char *init)
{
    int swapped = 0, first = -1, last = -1, inits = 0;
    char from_kind[24] = "";
    for (int l = 0; l < t->model.layer_count; l++) {
        if (!from(layer_kind(t, l))) continue;
        if (!swapped++) snprintf(from_kind, sizeof from_kind, "%s", layer_kind(t, l));
        else if (strcmp(from_kind, layer_kind(t, l)) != 0) snprintf(from_kind, sizeof from_kind, "activation");
        ars_appendf(p->settings, sizeof p->settings, "act:%03d=%s;", l, to);
        int feed = feeding_layer(t, l);
        if (feed >= 0 && init) {
            ars_appendf(p->settings, sizeof p->settings, "init:%03d=%s;", feed, init);
            if (first < 0) first = feed;
            last = feed;
            inits++;
        }
    }
    if (!swapped) return 0;
    ars_appendf(p->change, sizeof p->change, "%d %s layer%s -> %s", swapped, from_kind, swapped == 1 ? "" : "s", to);
    if (inits)
        ars_appendf(p->change, sizeof p->change, ", %s re-initialization of the %d layer%s feeding them (%03d-%03d)", init,
            inits, inits == 1 ? "" : "s", first, last);
    return 1;
}

static int is_relu(const char *kind) { return strcmp(kind, "relu") == 0; }

/* He re-initialization of the dense/conv2d layers the vanishing rule flagged. */
static int plan_reinit_flagged(const ars_trainer *t, plan *p)
{
    const unsigned char *ever = ars_health_ever(&t->health, ARS_HEALTH_VANISHING);
    int n = 0;
    for (int l = 0; l < t->model.layer_count; l++) {
        const char *kind = layer_kind(t, l);
        if (!ever[l] || (strcmp(kind, "dense") != 0 && strcmp(kind, "conv2d") != 0)) continue;
        ars_appendf(p->settings, sizeof p->settings, "init:%03d=he_normal;", l);
        n++;
    }
    if (n) ars_appendf(p->change, sizeof p->change, "he_normal re-initialization of the %d flagged layer%s", n, n == 1 ? "" : "s");
    return n > 0;
}

/* The remedy number attempt for problem (rank 0), from the settings lr
 * and clip; 0: none left. */
static int make_plan(const ars_trainer *t, ars_health_problem problem, int attempt, float lr, float clip, plan *p)
{
    memset(p, 0, sizeof *p);
    p->lr = lr;
    p->clip = clip;
    const ars_health_summary *s = &t->health.summary[problem];
    if (s->worst_layer >= 0 && s->worst_layer < t->model.layer_count)
        snprintf(p->layer, sizeof p->layer, "%s", t->model.layers[s->worst_layer].name);
    switch (problem) {
    case ARS_HEALTH_EXPLODING:
    case ARS_HEALTH_NONFINITE: {
        /* the table's order: clipping at 1 (unless it already clips at 1 or less), then the learning rate */
        const int k = attempt + !(clip == 0 || clip > 1);
        if (k == 0) {
            ars_appendf(p->settings, sizeof p->settings, "clip_norm=1;");
            ars_appendf(p->change, sizeof p->change, "clip_norm %g -> 1", clip);
        } else if (k <= 2) {
            plan_lr(t, p, k == 1 ? 0.1 : 0.01, 1);
        }
        return k <= 2;
    }
    case ARS_HEALTH_OSCILLATION:
        if (attempt > 1) return 0;
        plan_lr(t, p, attempt == 0 ? 0.1 : 0.01, attempt == 1);
        return 1;
    case ARS_HEALTH_DEAD_RELU:
        if (attempt == 0) {
            plan_lr(t, p, 0.1, 0);
            return 1;
        }
        return attempt == 1 && plan_swap(t, p, is_relu, "leaky_relu", NULL);
    case ARS_HEALTH_VANISHING:
    case ARS_HEALTH_SATURATION:
    case ARS_HEALTH_PLATEAU:
        if (attempt > 0) return 0;
        if (plan_swap(t, p, is_saturating, "relu", "he_normal")) return 1;
        return problem == ARS_HEALTH_VANISHING && plan_reinit_flagged(t, p);
    default: return 0;
    }
}

/* ---- decisions (rank 0) ----------------------------------------------------- */

/* Healthy: nothing flagged, nothing on its way to be (no bad record
 * pending), a finite step. */
static int healthy(const ars_trainer *t)
{
    const ars_health_monitor *m = &t->health;
    const ars_history *h = &t->history;
    if (!h->count || h->steps[h->count - 1].nonfinite || !m->tracks || m->growth_streak) return 0;
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++)
        for (int s = 0; s <= m->layer_count; s++) {
            const ars_health_track *track = &m->tracks[(size_t)p * (size_t)(m->layer_count + 1) + (size_t)s];
            if (track->flagged || track->bad) return 0;
        }
    return 1;
}

static const ars_health_problem priority[] = {ARS_HEALTH_NONFINITE,  ARS_HEALTH_EXPLODING, ARS_HEALTH_VANISHING,
                                              ARS_HEALTH_SATURATION, ARS_HEALTH_DEAD_RELU, ARS_HEALTH_OSCILLATION,
                                              ARS_HEALTH_PLATEAU};

static void note_started(ars_trainer *t, int *started)
{
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) {
        started[p] = t->health.summary[p].episodes > t->cure->episodes[p];
        t->cure->episodes[p] = t->health.summary[p].episodes;
    }
}

static int cures_used(const ars_trainer *t) { return (int)t->history.cure_count; }

static void decide(ars_trainer *t, decision *d, char *text, size_t size)
{
    ars_cure *c = t->cure;
    memset(d, 0, sizeof *d);
    text[0] = '\0';
    int started[ARS_HEALTH_PROBLEMS];
    note_started(t, started);
    const int64_t step = t->history.count ? t->history.steps[t->history.count - 1].step : t->step;
    d->step = step;
    for (size_t k = 0; k < sizeof priority / sizeof priority[0]; k++) {
        const ars_health_problem p = priority[k];
        if (!started[p]) continue;
        const int again = c->trial_left > 0 && c->trial_rule == (int)p;
        const int attempt = again ? c->trial_attempt + 1 : 0;
        plan pl;
        const float lr = again ? c->trial_lr : c->run->optim.lr, clip = again ? c->trial_clip : c->run->clip_norm;
        if (!make_plan(t, p, attempt, lr, clip, &pl)) {
            if (!again) continue;   /* a rule without a cure: the diagnosis only */
            d->action = ACT_STOP;
            snprintf(text, size, "%s fired again after cure %zu (%s) and no other cure is left for it",
                     ars_health_problem_name(p), c->trial_cure + 1, t->history.cures[c->trial_cure].change);
            return;
        }
        if (cures_used(t) >= t->run->health.max_cures) {
            d->action = ACT_STOP;
            snprintf(text, size, "%s at step %lld, but the run used its %d cures ([health] max_cures)",
                     ars_health_problem_name(p), (long long)step, t->run->health.max_cures);
            return;
        }
        d->action = ACT_CURE;
        d->rule = (int)p;
        d->attempt = attempt;
        d->revert = again;
        size_t n = (size_t)snprintf(text, size, "%s", pl.settings) + 1;
        n += (size_t)snprintf(text + n, size - n, "%s", pl.change) + 1;
        snprintf(text + n, size - n, "%s", pl.layer);
        return;
    }
    /* a state is healthy after patience clean records: the first records of a problem on its way are clean too */
    c->clean_streak = healthy(t) ? c->clean_streak + 1 : 0;
    if (c->trial_left == 0 && c->clean_streak >= t->run->health.patience) d->action = ACT_SNAPSHOT;
}

/* "health.cure = apply would ..." (suggest mode, rank 0). */
static void suggest(ars_trainer *t)
{
    int started[ARS_HEALTH_PROBLEMS];
    note_started(t, started);
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) {
        plan pl;
        if (!started[p] || !make_plan(t, (ars_health_problem)p, 0, t->cure->run->optim.lr, t->cure->run->clip_norm, &pl))
            continue;
        if (!t->options->quiet)
            printf("arsenal: health: cure for the %s ([health] cure = apply would roll back to the last healthy "
                   "step and apply it): %s\n", ars_health_problem_name((ars_health_problem)p), pl.change);
        fflush(stdout);
    }
}

/* ---- applying a decision (every rank) --------------------------------------- */

static int rebuild_monitor(ars_trainer *t)
{
    if (t->rank != 0) return 0;
    ars_health_free(&t->health);
    TRY(ars_health_init(&t->health, &t->run->health, t->model.layer_count,
                        (const char (*)[40])t->history.layer_names, NULL, ars_optimizer_name(t->run->optim.kind)));
    TRY(ars_health_catch_up(&t->health, &t->history));
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) t->cure->episodes[p] = t->health.summary[p].episodes;
    t->cure->clean_streak = 0;
    return 0;
}

static int save_trial_state(ars_trainer *t)
{
    ars_cure *c = t->cure;
    if (!c->trial_kinds && !(c->trial_kinds = calloc((size_t)t->model.layer_count, sizeof *c->trial_kinds)))
        return ars_error(ARS_ENOMEM, "health cure: out of memory");
    c->trial_lr = c->run->optim.lr;
    c->trial_clip = c->run->clip_norm;
    for (int l = 0; l < t->model.layer_count; l++)
        snprintf(c->trial_kinds[l], sizeof c->trial_kinds[l], "%s", layer_kind(t, l));
    return 0;
}

static int revert_trial(ars_trainer *t)
{
    ars_cure *c = t->cure;
    c->run->optim.lr = c->trial_lr;
    t->opt.config.lr = c->trial_lr;
    c->run->clip_norm = c->trial_clip;
    for (int l = 0; l < t->model.layer_count; l++)
        if (t->model.layers[l].kind->activation != ARS_ACT_NONE) TRY(swap_activation(t, l, c->trial_kinds[l]));
    snprintf(t->history.cures[c->trial_cure].status, sizeof t->history.cures[c->trial_cure].status, "reverted");
    return 0;
}

static int apply_cure(ars_trainer *t, const decision *d, const char *text)
{
    ars_cure *c = t->cure;
    const char *settings = text, *change = text + strlen(text) + 1, *layer = change + strlen(change) + 1;
    if (d->revert) {   /* back to the state before the cure that did not help */
        TRY(revert_trial(t));
        restore_snapshot(t, &c->healthy);
    } else if (c->trial_left > 0) {   /* another rule during a trial: on top of that cure */
        restore_snapshot(t, &c->cured);
        cure_snapshot swap = c->healthy;
        c->healthy = c->cured;
        c->cured = swap;
    } else {
        restore_snapshot(t, &c->healthy);
    }
    if (!d->revert) TRY(save_trial_state(t));
    TRY(apply_settings(t, settings, 1));
    TRY(take_snapshot(t, &c->cured));
    ars_history_cure cure = {.step = d->step, .rollback_step = c->healthy.step, .change = (char *)change,
                             .settings = (char *)settings};
    snprintf(cure.rule, sizeof cure.rule, "%s", ars_health_problem_key((ars_health_problem)d->rule));
    snprintf(cure.layer, sizeof cure.layer, "%s", layer);
    snprintf(cure.status, sizeof cure.status, "active");
    TRY(ars_history_add_cure(&t->history, &cure));
    c->trial_cure = t->history.cure_count - 1;
    c->trial_rule = d->rule;
    c->trial_attempt = d->attempt;
    c->trial_left = t->run->health.cure_trial;
    char line[1400];
    snprintf(line, sizeof line, "step %lld: cure %zu for the %s%s%s%s: %s; rolled back to step %lld%s",
             (long long)d->step, t->history.cure_count, ars_health_problem_name((ars_health_problem)d->rule),
             layer[0] ? " (" : "", layer, layer[0] ? ")" : "", change, (long long)c->healthy.step,
             d->revert ? " (the previous cure did not help and was reverted)" : "");
    if (t->rank == 0) {
        TRY(ars_history_add_event(&t->history, line));
        if (!t->options->quiet) {
            printf("arsenal: health: %s\n", line);
            fflush(stdout);
        }
    }
    TRY(rebuild_config_text(t));
    return rebuild_monitor(t);
}

static void report_stop(ars_trainer *t, const char *why)
{
    if (t->rank != 0) return;
    fprintf(stderr, "arsenal: health: stopping at step %lld: %s. Cures tried:\n", (long long)t->step, why);
    for (size_t k = 0; k < t->history.cure_count; k++) {
        const ars_history_cure *cure = &t->history.cures[k];
        fprintf(stderr, "  %zu. step %lld, %s%s%s: %s (rolled back to step %lld) - %s\n", k + 1,
                (long long)cure->step, cure->rule, cure->layer[0] ? " at " : "", cure->layer, cure->change,
                (long long)cure->rollback_step, cure->status);
    }
}

int ars_cure_after_record(ars_trainer *t, int *rolled_back)
{
    *rolled_back = 0;
    ars_cure *c = t->cure;
    if (c->mode == ARS_CURE_OFF || !t->run->health.enabled) return 0;
    if (c->mode == ARS_CURE_SUGGEST) {
        if (t->rank == 0) suggest(t);
        return 0;
    }
    decision d;
    char text[sizeof(plan)];
    if (t->rank == 0) decide(t, &d, text, sizeof text);
    d.text_length = t->rank == 0 ? (int32_t)sizeof text : 0;
    ars_watchdog_enter(t->watchdog, t->step, "health cure decision broadcast");
    int rc = ars_dist_broadcast_bytes(t->dist, &d, sizeof d, 0);
    if (!rc && d.action != ACT_NONE && d.action != ACT_SNAPSHOT) rc = ars_dist_broadcast_bytes(t->dist, text, sizeof text, 0);
    ars_watchdog_leave(t->watchdog);
    if (rc) return rc;
    /* a trial that ends: the cure stays, and the state right after it is the healthy one until a newer */
    if (d.action != ACT_CURE && c->trial_left > 0 && --c->trial_left == 0) {
        cure_snapshot swap = c->healthy;
        c->healthy = c->cured;
        c->cured = swap;
    }
    /* the decision's step is taken: the snapshot holds the state after it */
    if (d.action == ACT_SNAPSHOT) {
        const int64_t step = t->step;
        t->step = d.step + 1;
        rc = take_snapshot(t, &c->healthy);
        t->step = step;
        return ars_trainer_agree(t, rc);
    }
    if (d.action == ACT_STOP) {
        report_stop(t, text);
        t->step = d.step + 1;
        rc = ars_trainer_checkpoint(t);   /* the record of what was tried */
        if (rc) return rc;
        t->agreed = ARS_AGREED_SAME;
        return ars_error(ARS_ESTOP, "health: %s; stopping ([health] cure = apply, docs/health.md)", text);
    }
    if (d.action == ACT_CURE) {
        rc = ars_trainer_agree(t, apply_cure(t, &d, text));
        if (!rc) *rolled_back = 1;
    }
    return rc;
}

/* ---- setup and resume ------------------------------------------------------- */

int ars_cure_setup(ars_trainer *t, ars_run_config *run)
{
    t->cure = calloc(1, sizeof *t->cure);
    if (!t->cure) return ars_trainer_agree(t, ars_error(ARS_ENOMEM, "health cure: out of memory"));
    t->cure->run = run;
    t->cure->mode = run->health.cure;
    if (!t->options->resume_path) return 0;
    /* rank 0 reads the checkpoint's cures; everyone applies the active ones */
    char *settings = NULL;
    int64_t length = 0;
    int rc = 0;
    if (t->rank == 0) {
        ars_history h;
        rc = ars_ckpt_read_history(t->options->resume_path, &h);
        size_t total = 1;
        for (size_t k = 0; !rc && k < h.cure_count; k++) total += strlen(h.cures[k].settings) + 1;
        if (!rc && !(settings = calloc(total, 1))) rc = ars_error(ARS_ENOMEM, "health cure: out of memory");
        for (size_t k = 0; !rc && k < h.cure_count; k++) {
            if (strcmp(h.cures[k].status, "active") != 0) continue;
            strcat(settings, h.cures[k].settings);
            strcat(settings, ";");
        }
        if (!rc) {
            length = (int64_t)strlen(settings) + 1;
            ars_history_free(&h);
        }
    }
    TRY(ars_trainer_agree(t, rc));
    TRY(ars_dist_broadcast_bytes(t->dist, &length, sizeof length, 0));
    if (t->rank != 0) settings = calloc((size_t)length, 1);
    rc = settings ? 0 : ars_error(ARS_ENOMEM, "health cure: out of memory");
    TRY(ars_trainer_agree(t, rc));
    rc = ars_dist_broadcast_bytes(t->dist, settings, (size_t)length, 0);
    if (!rc && settings[0]) rc = apply_settings(t, settings, 0);
    free(settings);
    if (rc) ars_error_context(rc, "--resume: re-applying the checkpoint's cures");
    return ars_trainer_agree(t, rc);
}

int ars_cure_begin(ars_trainer *t)
{
    ars_cure *c = t->cure;
    int rc = 0;
    if (t->rank == 0 && t->history.cure_count) {
        rc = rebuild_config_text(t);
        if (!rc) rc = rebuild_monitor(t);   /* the layer names of the cured model */
    }
    if (!rc && c->mode == ARS_CURE_APPLY && t->run->health.enabled) rc = take_snapshot(t, &c->healthy);
    return ars_trainer_agree(t, rc);
}

void ars_cure_free(ars_trainer *t)
{
    if (!t->cure) return;
    free_snapshot(&t->cure->healthy);
    free_snapshot(&t->cure->cured);
    free(t->cure->trial_kinds);
    free(t->cure->config_text);
    free(t->cure);
    t->cure = NULL;
}
