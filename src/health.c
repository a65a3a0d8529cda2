/* health: the diagnosis rules (one place for each), their hysteresis, the
 * [health] thresholds, the start/end messages with the lecture's remedies,
 * and the whole-run summary that `arsenal inspect` prints. Reads only the
 * history: the newest record and short windows before it. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/health.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/layer.h"
#include "text.h"

static const char *const problem_names[ARS_HEALTH_PROBLEMS] = {
    "vanishing gradient", "exploding gradient", "non-finite loss or gradient", "sigmoid/tanh saturation",
    "dead ReLU units", "loss plateau", "loss oscillation"};
static const char *const problem_keys[ARS_HEALTH_PROBLEMS] = {
    "vanishing", "exploding", "nonfinite", "saturation", "dead_relu", "plateau", "oscillation"};

const char *ars_health_problem_name(ars_health_problem problem)
{
    return problem >= 0 && problem < ARS_HEALTH_PROBLEMS ? problem_names[problem] : "?";
}

const char *ars_health_problem_key(ars_health_problem problem)
{
    return problem >= 0 && problem < ARS_HEALTH_PROBLEMS ? problem_keys[problem] : "?";
}

/* ---- configuration ---------------------------------------------------- */

void ars_health_config_defaults(ars_health_config *out)
{
    memset(out, 0, sizeof *out);
    out->enabled = 1;
    out->patience = 3;
    out->recovery = 5;
    out->vanish_ratio = 1e-3;
    out->vanish_update_floor = 1e-7;
    out->vanish_update_records = 20;
    out->explode_ratio = 1e3;
    out->explode_spike = 10;
    out->explode_window = 20;
    out->explode_growth = 2;
    out->explode_growth_records = 4;
    out->saturation_max = 0.5;
    out->dead_max = 0.5;
    out->plateau_window = 40;
    out->plateau_improvement = 0.01;
    out->plateau_high = 0.8;
    out->oscillation_window = 10;
    out->oscillation_rise = 0.5;
    out->oscillation_count = 3;
    out->cure = ARS_CURE_SUGGEST;
    out->max_cures = 3;
    out->cure_trial = 30;
}

static int get_count(ars_config *c, ars_config_section *s, const char *key, long min, long max, int *value)
{
    long v;
    TRY(ars_config_get_int(c, s, key, *value, min, max, &v));
    *value = (int)v;
    return 0;
}

static int get_real(ars_config *c, ars_config_section *s, const char *key, double min, double max, double *value)
{
    return ars_config_get_double(c, s, key, *value, min, max, value);
}

int ars_health_config_load(ars_config *config, ars_config_section *section, ars_health_config *out)
{
    ars_health_config h;
    ars_health_config_defaults(&h);
    if (section) {
        TRY(ars_config_get_bool(config, section, "enabled", h.enabled, &h.enabled));
        TRY(get_count(config, section, "patience", 1, 100000, &h.patience));
        TRY(get_count(config, section, "recovery", 1, 100000, &h.recovery));
        TRY(get_real(config, section, "vanish_ratio", 0, 1, &h.vanish_ratio));
        TRY(get_real(config, section, "vanish_update_floor", 0, 1, &h.vanish_update_floor));
        TRY(get_count(config, section, "vanish_update_records", 0, 1000000, &h.vanish_update_records));
        TRY(get_real(config, section, "explode_ratio", 1, 1e300, &h.explode_ratio));
        TRY(get_real(config, section, "explode_spike", 1, 1e300, &h.explode_spike));
        TRY(get_count(config, section, "explode_window", 0, 10000, &h.explode_window));
        TRY(get_real(config, section, "explode_growth", 1, 1e300, &h.explode_growth));
        TRY(get_count(config, section, "explode_growth_records", 0, 1000000, &h.explode_growth_records));
        TRY(get_real(config, section, "saturation_max", 0, 1, &h.saturation_max));
        TRY(get_real(config, section, "dead_max", 0, 1, &h.dead_max));
        TRY(get_count(config, section, "plateau_window", 0, 1000000, &h.plateau_window));
        TRY(get_real(config, section, "plateau_improvement", 0, 1, &h.plateau_improvement));
        TRY(get_real(config, section, "plateau_high", 0, 1e300, &h.plateau_high));
        TRY(get_count(config, section, "oscillation_window", 0, 1000000, &h.oscillation_window));
        TRY(get_real(config, section, "oscillation_rise", 0, 1e300, &h.oscillation_rise));
        TRY(get_count(config, section, "oscillation_count", 1, 1000000, &h.oscillation_count));
        static const char *const cures[] = {"off", "suggest", "apply", NULL};
        char cure[16];
        TRY(ars_config_get_string(config, section, "cure", cures[h.cure], cures, cure, sizeof cure));
        for (int k = 0; cures[k]; k++)
            if (strcmp(cure, cures[k]) == 0) h.cure = k;
        TRY(get_count(config, section, "max_cures", 1, 1000, &h.max_cures));
        TRY(get_count(config, section, "cure_trial", 1, 1000000, &h.cure_trial));
        if (h.plateau_window == 1 || h.oscillation_window == 1)
            return ars_error(ARS_EINVAL, "%s:%d: [health] plateau_window and oscillation_window must be 0 "
                             "(off) or at least 2", config->path, section->line);
    }
    *out = h;
    return 0;
}

/* ---- small text helpers ------------------------------------------------ */


/* The number in front of '_' in "003_dense", or the index. */
static void layer_label(const char (*names)[40], int layer, char *out, size_t size)
{
    const char *name = names ? names[layer] : "";
    const char *underscore = strchr(name, '_');
    size_t digits = underscore ? (size_t)(underscore - name) : 0;
    if (digits > 0 && digits < size && strspn(name, "0123456789") == digits) {
        memcpy(out, name, digits);
        out[digits] = '\0';
    } else {
        snprintf(out, size, "%03d", layer);
    }
}

void ars_health_format_layers(const char (*names)[40], int layer_count, const unsigned char *flags,
                              const unsigned char *candidates, char *out, size_t size)
{
    out[0] = '\0';
    int ranges = 0, members = 0, first = -1, last = -1;
    char text[400] = "";
    for (int l = 0; l <= layer_count; l++) {
        if (l < layer_count && candidates && !candidates[l]) continue;
        int on = l < layer_count && flags[l];
        if (on) {
            if (first < 0) first = l;
            last = l;
            members++;
            continue;
        }
        if (first < 0) continue;
        char a[16], b[16];
        layer_label(names, first, a, sizeof a);
        layer_label(names, last, b, sizeof b);
        if (strlen(text) > sizeof text - 40) {
            ars_appendf(text, sizeof text, ", ...");
            first = -1;
            break;
        }
        if (first == last) ars_appendf(text, sizeof text, "%s%s", ranges ? ", " : "", a);
        else ars_appendf(text, sizeof text, "%s%s-%s", ranges ? ", " : "", a, b);
        ranges++;
        first = -1;
    }
    if (members == 0) return;
    snprintf(out, size, "%s %s", members == 1 ? "layer" : "layers", text);
}

/* "%g", or "NaN" / "Inf" / "-Inf". */
static void number_text(double v, char *out, size_t size)
{
    if (isnan(v)) snprintf(out, size, "NaN");
    else if (isinf(v)) snprintf(out, size, v > 0 ? "Inf" : "-Inf");
    else snprintf(out, size, "%g", v);
}

/* "dense" when every flagged layer has that kind, else "". */
static const char *common_kind(const ars_health_monitor *m, const unsigned char *flags)
{
    const char *kind = NULL;
    for (int l = 0; l < m->layer_count; l++) {
        if (!flags[l]) continue;
        if (!kind) kind = m->kinds[l];
        else if (strcmp(kind, m->kinds[l]) != 0) return "";
    }
    return kind ? kind : "";
}

/* Joins remedies as "A, B or C". */
static void join_remedies(const char *const *items, int count, char *out, size_t size)
{
    out[0] = '\0';
    for (int i = 0; i < count; i++)
        ars_appendf(out, size, "%s%s", i == 0 ? "" : i == count - 1 ? " or " : ", ", items[i]);
}

/* ---- the model's facts --------------------------------------------------- */

static int kind_is(const char *kind, const char *name) { return strcmp(kind, name) == 0; }

/* What the registry says of a kind (health works from names: a monitor
 * can be built from a checkpoint's history without the model). */
static ars_activation kind_activation(const char *kind) { return ars_activation_from_name(kind); }

static int kind_is_saturating(const char *kind)
{
    const ars_activation act = kind_activation(kind);
    return act == ARS_ACT_SIGMOID || act == ARS_ACT_TANH;
}

/* ReLU and the activations built on it (leaky, ELU, SELU, GELU). */
static int kind_is_relu_family(const char *kind)
{
    return kind_activation(kind) != ARS_ACT_NONE && !kind_is_saturating(kind);
}

static int max3(int a, int b, int c)
{
    int m = a > b ? a : b;
    return m > c ? m : c;
}

int ars_health_init(ars_health_monitor *m, const ars_health_config *config, int layer_count,
                    const char (*names)[40], const char (*kinds)[24], const char *optimizer)
{
    memset(m, 0, sizeof *m);
    if (layer_count < 1) return ars_error(ARS_EINVAL, "health: a model needs at least one layer");
    if (config) m->config = *config;
    else ars_health_config_defaults(&m->config);
    m->layer_count = layer_count;
    m->output_layer = -1;
    m->first_loss = NAN;
    m->growth_total = 1;
    if (optimizer) snprintf(m->optimizer, sizeof m->optimizer, "%s", optimizer);
    const size_t L = (size_t)layer_count, subjects = L + 1;
    const ars_health_config *c = &m->config;
    int window = max3(c->explode_window, c->plateau_window, c->oscillation_window);
    m->names = calloc(L, sizeof *m->names);
    m->kinds = calloc(L, sizeof *m->kinds);
    m->candidates = calloc(ARS_HEALTH_PROBLEMS * L, 1);
    m->tracks = calloc(ARS_HEALTH_PROBLEMS * subjects, sizeof *m->tracks);
    m->ever = calloc(ARS_HEALTH_PROBLEMS * subjects, 1);
    m->figures = calloc(subjects, sizeof *m->figures);
    m->verdicts = calloc(subjects, sizeof *m->verdicts);
    m->alternates = calloc(subjects, sizeof *m->alternates);
    m->flags = calloc(subjects, sizeof *m->flags);
    m->window = calloc((size_t)(window > 0 ? window : 1), sizeof *m->window);
    if (!m->names || !m->kinds || !m->candidates || !m->tracks || !m->ever || !m->figures || !m->verdicts ||
        !m->alternates || !m->flags || !m->window) {
        ars_health_free(m);
        return ars_error(ARS_ENOMEM, "health: out of memory for %d layers", layer_count);
    }
    for (int l = 0; l < layer_count; l++) {
        if (names) snprintf(m->names[l], sizeof m->names[l], "%s", names[l]);
        else snprintf(m->names[l], sizeof m->names[l], "%03d_layer", l);
        const char *underscore = strchr(m->names[l], '_');
        snprintf(m->kinds[l], sizeof m->kinds[l], "%s",
                 kinds ? kinds[l] : underscore ? underscore + 1 : m->names[l]);
        const char *k = m->kinds[l];
        m->has_saturating |= kind_is_saturating(k);
        m->has_relu |= kind_is_relu_family(k);
        m->has_norm |= ars_layer_kind_has(k, ARS_KIND_NORMALIZATION);
        m->has_residual |= ars_layer_kind_has(k, ARS_KIND_RESIDUAL);
        m->has_rnn |= kind_is(k, "rnn");
        m->has_attention |= kind_is(k, "attention") || kind_is(k, "transformer");
    }
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) {
        ars_health_summary *s = &m->summary[p];
        s->first_step = s->last_end_step = s->worst_step = s->worst_global_step = -1;
        s->worst_layer = -1;
        s->worst = s->worst_global = NAN;
    }
    return 0;
}

void ars_health_free(ars_health_monitor *m)
{
    free(m->names);
    free(m->kinds);
    free(m->candidates);
    free(m->tracks);
    free(m->ever);
    free(m->figures);
    free(m->verdicts);
    free(m->alternates);
    free(m->flags);
    free(m->window);
    memset(m, 0, sizeof *m);
}

static ars_health_track *track_of(const ars_health_monitor *m, ars_health_problem p, int subject)
{
    return &m->tracks[(size_t)p * (size_t)(m->layer_count + 1) + (size_t)subject];
}

static unsigned char *ever_of(const ars_health_monitor *m, ars_health_problem p)
{
    return m->ever + (size_t)p * (size_t)(m->layer_count + 1);
}

static unsigned char *candidates_of(const ars_health_monitor *m, ars_health_problem p)
{
    return m->candidates + (size_t)p * (size_t)m->layer_count;
}

const unsigned char *ars_health_candidates(const ars_health_monitor *m, ars_health_problem p)
{
    return candidates_of(m, p);
}

const unsigned char *ars_health_ever(const ars_health_monitor *m, ars_health_problem p) { return ever_of(m, p); }

static double value_at(const ars_history *h, size_t record, ars_history_column column, int layer)
{
    return ars_history_layer_values(h, record)[(size_t)column * (size_t)h->layer_count + (size_t)layer];
}

int ars_health_layer_has_params(const ars_health_monitor *m, const ars_history *h, int layer)
{
    if (ars_layer_kind_has(m->kinds[layer], ARS_KIND_PARAMS)) return 1;
    if (!h || layer >= h->layer_count) return 0;
    for (size_t r = 0; r < h->count && r < 4; r++)
        if (value_at(h, r, ARS_HIST_WEIGHT_NORM, layer) > 0) return 1;
    return 0;
}

/* Which layers each rule looks at; fixed when the first record is seen (a
 * residual_add has parameters only with a projection). */
static void setup_candidates(ars_health_monitor *m, const ars_history *h)
{
    const int L = m->layer_count;
    m->output_layer = -1;
    for (int l = 0; l < L; l++)
        if (ars_health_layer_has_params(m, h, l)) m->output_layer = l;
    for (int l = 0; l < L; l++) {
        unsigned char inner = (unsigned char)(ars_health_layer_has_params(m, h, l) && l != m->output_layer);
        candidates_of(m, ARS_HEALTH_VANISHING)[l] = inner;
        candidates_of(m, ARS_HEALTH_EXPLODING)[l] = inner;
        candidates_of(m, ARS_HEALTH_SATURATION)[l] = (unsigned char)kind_is_saturating(m->kinds[l]);
        candidates_of(m, ARS_HEALTH_DEAD_RELU)[l] = (unsigned char)(kind_activation(m->kinds[l]) == ARS_ACT_RELU);
    }
    m->ready = 1;
}

/* ---- the rules: a verdict (and a figure) per subject --------------------- */

enum { UNKNOWN = -1, GOOD = 0, BAD = 1 };

/* The record every rule reads. */
typedef struct record_view {
    const ars_history *h;
    size_t index;
    const ars_history_step *step;
    int finite;        /* loss and gradient finite and the update applied */
} record_view;

static double layer_value(const record_view *r, ars_history_column column, int layer)
{
    return value_at(r->h, r->index, column, layer);
}

/* Vanishing: a layer's gradient norm below vanish_ratio x the output
 * layer's (`patience` records in a row), or its update/weight ratio below
 * vanish_update_floor while the output layer's is above it
 * (vanish_update_records in a row). Figure: the ratio to the output layer. */
static void rule_vanishing(ars_health_monitor *m, const record_view *r)
{
    const ars_health_config *c = &m->config;
    const unsigned char *cand = candidates_of(m, ARS_HEALTH_VANISHING);
    const int out = m->output_layer;
    if (out < 0 || !r->finite) return;
    double g_out = layer_value(r, ARS_HIST_GRAD_NORM, out);
    if (!(g_out > 0) || !isfinite(g_out)) return;
    int update_known = c->vanish_update_records > 0 && r->step->lr > 0 &&
                       layer_value(r, ARS_HIST_UPDATE_RATIO, out) > c->vanish_update_floor;
    for (int l = 0; l < m->layer_count; l++) {
        if (!cand[l]) continue;
        double ratio = layer_value(r, ARS_HIST_GRAD_NORM, l) / g_out;
        m->figures[l] = ratio;
        m->verdicts[l] = ratio < c->vanish_ratio ? BAD : GOOD;
        m->alternates[l] = (unsigned char)(update_known && layer_value(r, ARS_HIST_WEIGHT_NORM, l) > 0 &&
                                           layer_value(r, ARS_HIST_UPDATE_RATIO, l) < c->vanish_update_floor);
    }
}

/* Median of the finite global norms of the (up to) explode_window records
 * before this one. */
static double running_median(const ars_health_monitor *m, const record_view *r, int *count)
{
    double *values = m->window;
    int n = 0;
    for (size_t back = 1; back <= r->index && n < m->config.explode_window; back++) {
        double g = r->h->steps[r->index - back].grad_norm;
        if (isfinite(g) && g > 0) values[n++] = g;
    }
    *count = n;
    if (n == 0) return NAN;
    for (int i = 1; i < n; i++) {   /* insertion sort: the window is small */
        double v = values[i];
        int j = i - 1;
        for (; j >= 0 && values[j] > v; j--) values[j + 1] = values[j];
        values[j + 1] = v;
    }
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/* Exploding, per layer: the gradient norm above explode_ratio x the output
 * layer's (`patience` records). The whole network (at once): the global norm
 * above explode_spike x its running median, or growing by explode_growth or
 * more record over record until it has grown explode_growth ^
 * explode_growth_records in total (16x with the defaults; one huge jump
 * counts). Figures: the ratio to the output layer; for the network, how
 * far the norm is above its recent level (running median or growth). */
static void rule_exploding(ars_health_monitor *m, const record_view *r)
{
    const ars_health_config *c = &m->config;
    const unsigned char *cand = candidates_of(m, ARS_HEALTH_EXPLODING);
    const int L = m->layer_count, out = m->output_layer;
    if (!r->finite) return;   /* the non-finite rule speaks for these */
    double g_out = out >= 0 ? layer_value(r, ARS_HIST_GRAD_NORM, out) : 0;
    if (g_out > 0 && isfinite(g_out)) {
        for (int l = 0; l < L; l++) {
            if (!cand[l]) continue;
            m->figures[l] = layer_value(r, ARS_HIST_GRAD_NORM, l) / g_out;
            m->verdicts[l] = m->figures[l] > c->explode_ratio ? BAD : GOOD;
        }
    }
    double g = r->step->grad_norm;
    if (!(g > 0)) return;
    double previous = r->index > 0 ? r->h->steps[r->index - 1].grad_norm : NAN;
    if (isfinite(previous) && previous > 0 && g >= c->explode_growth * previous) {
        m->growth_streak++;
        m->growth_total = (m->growth_streak == 1 ? 1 : m->growth_total) * (g / previous);
    } else {
        m->growth_streak = 0;
        m->growth_total = 1;
    }
    int count = 0;
    double median = c->explode_window > 0 ? running_median(m, r, &count) : NAN;
    int enough = count >= 3 && count >= c->explode_window / 4 && median > 0;
    double factor = enough ? g / median : NAN;
    int spike = enough && factor > c->explode_spike;
    int growth = c->explode_growth_records > 0 && m->growth_streak > 0 &&
                 m->growth_total >= pow(c->explode_growth, c->explode_growth_records);
    m->figures[L] = fmax(isfinite(factor) ? factor : 1, growth ? m->growth_total : 1);
    m->verdicts[L] = spike || growth ? BAD : GOOD;
    m->alternates[L] = (unsigned char)growth;
}

/* Non-finite: the loss or the global gradient norm is NaN/Inf, or the
 * trainer flagged the step (its update was skipped). At once. */
static void rule_nonfinite(ars_health_monitor *m, const record_view *r)
{
    const ars_history_step *s = r->step;
    int bad = s->nonfinite || !isfinite(s->loss) || !isfinite(s->grad_norm);
    m->verdicts[m->layer_count] = bad ? BAD : GOOD;
    m->figures[m->layer_count] = bad;
}

/* Saturation and dead units: an activation layer's fraction above max. */
static void rule_fraction(ars_health_monitor *m, const record_view *r, ars_health_problem p,
                          ars_history_column column, double max)
{
    const unsigned char *cand = candidates_of(m, p);
    for (int l = 0; l < m->layer_count; l++) {
        if (!cand[l]) continue;
        double f = layer_value(r, column, l);
        if (!isfinite(f)) continue;
        m->figures[l] = f;
        m->verdicts[l] = f > max ? BAD : GOOD;
    }
}

/* Up to n finite losses ending at the record, oldest first. */
static int recent_losses(const record_view *r, int n, double *out)
{
    int found = 0;
    for (size_t back = 0; back <= r->index && found < n && back < 4 * (size_t)n; back++) {
        double loss = r->h->steps[r->index - back].loss;
        if (isfinite(loss)) out[found++] = loss;
    }
    for (int i = 0; i < found / 2; i++) {
        double t = out[i];
        out[i] = out[found - 1 - i];
        out[found - 1 - i] = t;
    }
    return found;
}

/* Plateau: over the last plateau_window records, the newer half's mean
 * loss improved on the older half's by less than plateau_improvement
 * (relative) while still above plateau_high x the first loss (`patience`
 * records). Figure: the relative improvement. */
static void rule_plateau(ars_health_monitor *m, const record_view *r)
{
    const ars_health_config *c = &m->config;
    const int W = c->plateau_window, L = m->layer_count;
    if (W < 2 || !isfinite(m->first_loss) || recent_losses(r, W, m->window) < W) return;
    double older = 0, newer = 0;
    for (int i = 0; i < W / 2; i++) older += m->window[i];
    for (int i = W / 2; i < W; i++) newer += m->window[i];
    older /= W / 2;
    newer /= W - W / 2;
    double improvement = older > 0 ? (older - newer) / older : 0;
    m->figures[L] = improvement;
    m->verdicts[L] = improvement < c->plateau_improvement && newer > c->plateau_high * m->first_loss ? BAD : GOOD;
}

/* Oscillation: in the last oscillation_window records the loss rose by more
 * than oscillation_rise x the first loss, record over record, at least
 * oscillation_count times (at once). Figure: the number of such swings. */
static void rule_oscillation(ars_health_monitor *m, const record_view *r)
{
    const ars_health_config *c = &m->config;
    const int W = c->oscillation_window, L = m->layer_count;
    if (W < 2 || !isfinite(m->first_loss)) return;
    int n = recent_losses(r, W, m->window), swings = 0;
    if (n < 2) return;
    for (int i = 1; i < n; i++) swings += m->window[i] - m->window[i - 1] > c->oscillation_rise * fabs(m->first_loss);
    m->figures[L] = swings;
    m->verdicts[L] = swings >= c->oscillation_count ? BAD : GOOD;
}

static void run_rule(ars_health_monitor *m, ars_health_problem p, const record_view *r)
{
    switch (p) {
    case ARS_HEALTH_VANISHING: rule_vanishing(m, r); break;
    case ARS_HEALTH_EXPLODING: rule_exploding(m, r); break;
    case ARS_HEALTH_NONFINITE: rule_nonfinite(m, r); break;
    case ARS_HEALTH_SATURATION:
        rule_fraction(m, r, p, ARS_HIST_ACT_SATURATED, m->config.saturation_max);
        break;
    case ARS_HEALTH_DEAD_RELU: rule_fraction(m, r, p, ARS_HIST_ACT_DEAD, m->config.dead_max); break;
    case ARS_HEALTH_PLATEAU: rule_plateau(m, r); break;
    case ARS_HEALTH_OSCILLATION: rule_oscillation(m, r); break;
    default: break;
    }
}

/* ---- hysteresis ------------------------------------------------------------ */

/* Records in a row before a subject is flagged: per-layer conditions and
 * the plateau wait `patience`; the rest are already filtered over time. */
static int start_after(const ars_health_monitor *m, ars_health_problem p, int subject)
{
    int network = subject == m->layer_count;
    switch (p) {
    case ARS_HEALTH_EXPLODING: return network ? 1 : m->config.patience;
    case ARS_HEALTH_NONFINITE:
    case ARS_HEALTH_OSCILLATION: return 1;
    default: return m->config.patience;
    }
}

/* +1 when the subject becomes flagged, -1 when it clears, 0 otherwise. */
static int advance(ars_health_track *t, int verdict, int alt, int start, int alt_start, int end)
{
    if (verdict == UNKNOWN) return 0;
    int bad = verdict == BAD;
    t->bad = bad ? t->bad + 1 : 0;
    t->bad_alt = alt ? t->bad_alt + 1 : 0;
    t->good = bad || alt ? 0 : t->good + 1;
    if (!t->flagged && (t->bad >= start || (alt_start > 0 && t->bad_alt >= alt_start))) {
        t->flagged = 1;
        return 1;
    }
    if (t->flagged && t->good >= end) {
        t->flagged = 0;
        return -1;
    }
    return 0;
}

/* 1 if figure a is worse than b for this problem. */
static int worse(ars_health_problem p, double a, double b)
{
    if (!isfinite(a)) return 0;
    if (!isfinite(b)) return 1;
    return p == ARS_HEALTH_VANISHING || p == ARS_HEALTH_PLATEAU ? a < b : a > b;
}

/* ---- remedies and messages --------------------------------------------------- */

void ars_health_remedy(const ars_health_monitor *m, ars_health_problem p, char *out, size_t size)
{
    const char *items[8];
    int n = 0;
    int sgd = kind_is(m->optimizer, "sgd");
    switch (p) {
    case ARS_HEALTH_VANISHING:
        if (m->has_rnn && !m->has_attention) items[n++] = "attention (a transformer) instead of the RNN";
        items[n++] = m->has_saturating ? "ReLU with He initialization instead of sigmoid/tanh"
                                       : "He initialization (or LSUV)";
        if (!m->has_norm) items[n++] = "BatchNorm/LayerNorm";
        if (!m->has_residual) items[n++] = "residual connections";
        if (sgd) items[n++] = "Adam";
        break;
    case ARS_HEALTH_EXPLODING:
        items[n++] = m->clipped ? "a lower learning rate (clipping is already on: lower [run] clip_norm too)"
                                : "gradient clipping ([run] clip_norm = 1)";
        if (!m->clipped) items[n++] = "a lower learning rate";
        items[n++] = "Xavier/He initialization instead of a larger one";
        if (!m->has_norm) items[n++] = "BatchNorm/LayerNorm";
        break;
    case ARS_HEALTH_NONFINITE:
        items[n++] = "a lower learning rate";
        if (!m->clipped) items[n++] = "gradient clipping ([run] clip_norm = 1)";
        items[n++] = "Xavier/He initialization instead of a larger one";
        break;
    case ARS_HEALTH_SATURATION:
        items[n++] = "ReLU with He initialization";
        items[n++] = "Xavier initialization (keeps sigmoid/tanh inputs in their linear range)";
        if (!m->has_norm) items[n++] = "BatchNorm before the activation";
        break;
    case ARS_HEALTH_DEAD_RELU:
        items[n++] = "a lower learning rate";
        items[n++] = "leaky_relu or elu";
        items[n++] = "He initialization";
        if (!m->has_norm) items[n++] = "BatchNorm before the ReLU";
        break;
    case ARS_HEALTH_PLATEAU:
        if (m->summary[ARS_HEALTH_VANISHING].episodes > 0) items[n++] = "curing the vanishing gradient first";
        if (sgd) items[n++] = "Adam";
        if (m->has_saturating) items[n++] = "ReLU with He initialization";
        if (!m->has_norm) items[n++] = "BatchNorm/LayerNorm";
        items[n++] = "a larger learning rate";
        break;
    case ARS_HEALTH_OSCILLATION:
        items[n++] = "a lower learning rate";
        if (!m->clipped) items[n++] = "gradient clipping ([run] clip_norm = 1)";
        if (sgd) items[n++] = "Adam";
        items[n++] = "a decaying schedule ([run] schedule = cosine)";
        break;
    default: break;
    }
    join_remedies(items, n, out, size);
}

/* The range of the figures of the flagged layers and the worst of them. */
static int figure_range(const ars_health_monitor *m, ars_health_problem p, const unsigned char *flags,
                        double *lo, double *hi)
{
    int worst = -1;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int l = 0; l < m->layer_count; l++) {
        double f = m->figures[l];
        if (!flags[l] || !isfinite(f)) continue;
        *lo = fmin(*lo, f);
        *hi = fmax(*hi, f);
        if (worst < 0 || worse(p, f, m->figures[worst])) worst = l;
    }
    return worst;
}

/* "3.1e-09 to 8.2e-04", "2.0e-05" or "0 to 1.2e-04" (an exact 0 as "0"). */
static void span(double lo, double hi, const char *fmt_one, char *out, size_t size)
{
    char a[32], b[32];
    snprintf(a, sizeof a, fmt_one, lo);
    snprintf(b, sizeof b, fmt_one, hi);
    if (lo == 0) snprintf(a, sizeof a, "0");
    if (hi == 0) snprintf(b, sizeof b, "0");
    if (strcmp(a, b) == 0) snprintf(out, size, "%s", a);
    else snprintf(out, size, "%s to %s", a, b);
}

static void layer_phrase(const ars_health_monitor *m, ars_health_problem p, const unsigned char *flags, char *out,
                         size_t size)
{
    char layers[420];
    ars_health_format_layers((const char (*)[40])m->names, m->layer_count, flags, candidates_of(m, p), layers,
                             sizeof layers);
    const char *kind = common_kind(m, flags);
    if (*kind) snprintf(out, size, "%s (%s)", layers, kind);
    else snprintf(out, size, "%s", layers);
}

/* The figures of a problem at the record where it starts. */
static void start_detail(const ars_health_monitor *m, ars_health_problem p, const record_view *r,
                         const unsigned char *flags, char *out, size_t size)
{
    const int L = m->layer_count;
    const ars_history_step *s = r->step;
    const ars_health_config *c = &m->config;
    char who[480], range[96];
    double lo, hi;
    int worst = figure_range(m, p, flags, &lo, &hi);
    layer_phrase(m, p, flags, who, sizeof who);
    out[0] = '\0';
    switch (p) {
    case ARS_HEALTH_VANISHING: {
        if (worst < 0) break;
        span(lo, hi, "%.1e", range, sizeof range);
        if (hi == 0) ars_appendf(out, size, "%s receive no gradient at all (%s: %.2e", who, m->names[m->output_layer],
                             value_at(r->h, r->index, ARS_HIST_GRAD_NORM, m->output_layer));
        else ars_appendf(out, size, "%s receive %s of the output layer's gradient norm (%s: %.2e", who, range,
                     m->names[m->output_layer], value_at(r->h, r->index, ARS_HIST_GRAD_NORM, m->output_layer));
        if (lo < c->vanish_ratio && hi > 0) ars_appendf(out, size, "; weakest %s: %.2e", m->names[worst],
                                          value_at(r->h, r->index, ARS_HIST_GRAD_NORM, worst));
        ars_appendf(out, size, ")");
        if (hi >= c->vanish_ratio)
            ars_appendf(out, size, "; update/weight ratio below %.0e for %d records", c->vanish_update_floor,
                    c->vanish_update_records);
        if (m->summary[ARS_HEALTH_DEAD_RELU].active) ars_appendf(out, size, "; dead ReLU units block the gradient");
        break;
    }
    case ARS_HEALTH_EXPLODING: {
        const char *sep = "";
        if (worst >= 0) {
            span(lo, hi, "%.1e", range, sizeof range);
            ars_appendf(out, size, "%s receive %s times the output layer's gradient norm", who, range);
            sep = "; ";
        }
        if (track_of(m, p, L)->flagged) {
            ars_appendf(out, size, "%sglobal gradient norm %.3g", sep, s->grad_norm);
            int count = 0;
            double median = c->explode_window > 0 ? running_median(m, r, &count) : NAN;
            if (count >= 3 && median > 0 && s->grad_norm > c->explode_spike * median)
                ars_appendf(out, size, ", %.3gx its running median", s->grad_norm / median);
            if (m->alternates[L])
                ars_appendf(out, size, ", grew %.3gx in %d record%s", m->growth_total, m->growth_streak,
                        m->growth_streak == 1 ? "" : "s");
        }
        break;
    }
    case ARS_HEALTH_NONFINITE: {
        char loss[32], norm[32];
        number_text(s->loss, loss, sizeof loss);
        number_text(s->grad_norm, norm, sizeof norm);
        ars_appendf(out, size, "loss %s, global gradient norm %s%s", loss, norm,
                s->skipped ? "; the update was skipped" : "");
        break;
    }
    case ARS_HEALTH_SATURATION:
    case ARS_HEALTH_DEAD_RELU:
        if (worst < 0) break;
        span(100 * lo, 100 * hi, "%.0f%%", range, sizeof range);
        ars_appendf(out, size, "%s: %s of %s (worst %s)", who, range,
                p == ARS_HEALTH_SATURATION ? "outputs saturated (derivative below 10% of its maximum)"
                                           : "units dead for the whole batch",
                m->names[worst]);
        break;
    case ARS_HEALTH_PLATEAU:
        ars_appendf(out, size, "the loss (%.4g) %s %.2g%% over the last %d records (threshold %.2g%%), still %.0f%% "
                "of its first value %.4g", s->loss, m->figures[L] >= 0 ? "improved only" : "rose",
                100 * fabs(m->figures[L]), c->plateau_window, 100 * c->plateau_improvement,
                100 * s->loss / m->first_loss, m->first_loss);
        break;
    case ARS_HEALTH_OSCILLATION:
        ars_appendf(out, size, "the loss rose by more than %.3g (%.0f%% of its first value) %.0f times in the last %d "
                "records (now %.4g)", c->oscillation_rise * fabs(m->first_loss), 100 * c->oscillation_rise,
                m->figures[L], c->oscillation_window, s->loss);
        break;
    default: break;
    }
}

/* ---- observing records ----------------------------------------------------------- */

/* The problem's bookkeeping at one record; calls fn on a start or end. */
static void observe_problem(ars_health_monitor *m, ars_health_problem p, const record_view *r,
                            ars_health_event_fn fn, void *context)
{
    const int L = m->layer_count;
    const ars_health_config *c = &m->config;
    for (int s = 0; s <= L; s++) {
        m->figures[s] = NAN;
        m->verdicts[s] = UNKNOWN;
        m->alternates[s] = 0;
    }
    run_rule(m, p, r);
    int before = 0, after = 0;
    unsigned char *ever = ever_of(m, p);
    for (int s = 0; s <= L; s++) {
        ars_health_track *t = track_of(m, p, s);
        before |= t->flagged;
        int alt_start = p == ARS_HEALTH_VANISHING ? c->vanish_update_records : 0;
        advance(t, m->verdicts[s], m->alternates[s], start_after(m, p, s), alt_start, c->recovery);
        after |= t->flagged;
        ever[s] |= (unsigned char)t->flagged;
    }
    ars_health_summary *sum = &m->summary[p];
    const int64_t step = r->step->step;
    if (after) {
        sum->records++;
        if (p == ARS_HEALTH_NONFINITE) {
            sum->worst = (isfinite(sum->worst) ? sum->worst : 0) + (m->verdicts[L] == BAD);
            if (sum->worst_step < 0) sum->worst_step = step;
        }
        for (int s = 0; s <= L && p != ARS_HEALTH_NONFINITE; s++) {
            if (!track_of(m, p, s)->flagged || !isfinite(m->figures[s])) continue;
            if (s == L && p == ARS_HEALTH_EXPLODING) {
                if (!isfinite(sum->worst_global) || m->figures[s] > sum->worst_global) {
                    sum->worst_global = m->figures[s];
                    sum->worst_global_step = step;
                }
            } else if (worse(p, m->figures[s], sum->worst)) {
                sum->worst = m->figures[s];
                sum->worst_step = step;
                sum->worst_layer = s < L ? s : -1;
            }
        }
    }
    sum->active = after;
    if (before == after) return;
    char text[1200];
    if (after) {
        sum->episodes++;
        if (sum->first_step < 0) sum->first_step = step;
        unsigned char *flags = m->flags;
        for (int s = 0; s <= L; s++) flags[s] = (unsigned char)track_of(m, p, s)->flagged;
        char detail[sizeof sum->first_detail], remedy[400];
        start_detail(m, p, r, flags, detail, sizeof detail);
        ars_health_remedy(m, p, remedy, sizeof remedy);
        snprintf(text, sizeof text, "%s starts: %s; try %s", problem_names[p], detail, remedy);
        if (!sum->first_detail[0]) snprintf(sum->first_detail, sizeof sum->first_detail, "%s", detail);
    } else {
        sum->last_end_step = step;
        snprintf(text, sizeof text, "%s ends", problem_names[p]);
    }
    if (fn) fn(context, p, step, after, text);
}

static void observe_record(ars_health_monitor *m, const ars_history *h, size_t index, ars_health_event_fn fn,
                           void *context)
{
    const ars_history_step *s = &h->steps[index];
    record_view r = {.h = h, .index = index, .step = s};
    r.finite = !s->nonfinite && !s->skipped && isfinite(s->loss) && isfinite(s->grad_norm);
    if (!m->ready) setup_candidates(m, h);
    if (isnan(m->first_loss) && isfinite(s->loss)) m->first_loss = s->loss;
    if (s->clip_scale < 1) m->clipped = 1;
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++) observe_problem(m, (ars_health_problem)p, &r, fn, context);
}

int ars_health_observe(ars_health_monitor *m, const ars_history *h, ars_health_event_fn fn, void *context)
{
    if (h->layer_count != m->layer_count)
        return ars_error(ARS_EINVAL, "health: the history has %d layers, the monitor %d", h->layer_count,
                         m->layer_count);
    if (m->next_record > h->count) m->next_record = h->count;   /* a shorter history: nothing new */
    for (; m->next_record < h->count; m->next_record++) observe_record(m, h, m->next_record, fn, context);
    return 0;
}

int ars_health_catch_up(ars_health_monitor *m, const ars_history *h) { return ars_health_observe(m, h, NULL, NULL); }

typedef struct update_sink {
    ars_history *h;
    FILE *log;
    int rc;
} update_sink;

static void print_and_record(void *context, ars_health_problem problem, int64_t step, int started, const char *text)
{
    (void)problem;
    (void)started;
    update_sink *sink = context;
    char line[1300];
    snprintf(line, sizeof line, "step %lld: %s", (long long)step, text);
    if (sink->log) {
        fprintf(sink->log, "arsenal: health: %s\n", line);
        fflush(sink->log);
    }
    if (!sink->rc) sink->rc = ars_history_add_event(sink->h, line);
}

int ars_health_update(ars_health_monitor *m, ars_history *h, FILE *log)
{
    if (!m->config.enabled) return 0;
    if (m->calls++ == 0 && h->count > 1 && m->next_record < h->count - 1) {
        ars_history older = *h;   /* a resumed run's records: their events are already in h */
        older.count = h->count - 1;
        TRY(ars_health_observe(m, &older, NULL, NULL));
    }
    update_sink sink = {.h = h, .log = log};
    TRY(ars_health_observe(m, h, print_and_record, &sink));
    return sink.rc;
}

/* ---- the whole run in plain words --------------------------------------------------- */

void ars_health_describe(const ars_health_monitor *m, ars_health_problem p, char *out, size_t size)
{
    const ars_health_summary *s = &m->summary[p];
    const ars_health_config *c = &m->config;
    out[0] = '\0';
    if (s->episodes == 0) return;
    char who[480] = "";
    layer_phrase(m, p, ever_of(m, p), who, sizeof who);
    const char *worst_name = s->worst_layer >= 0 ? m->names[s->worst_layer] : "";
    switch (p) {
    case ARS_HEALTH_VANISHING:
        if (s->worst_layer >= 0 && s->worst == 0)
            ars_appendf(out, size, "%s received no gradient at all (%s first at step %lld)", who, worst_name,
                    (long long)s->worst_step);
        else if (s->worst_layer >= 0)
            ars_appendf(out, size, "%s received gradients down to %.1e of the output layer's (%s, step %lld)", who,
                    s->worst, worst_name, (long long)s->worst_step);
        else ars_appendf(out, size, "%s updated their weights by less than %.0e of their norm per step", who,
                     c->vanish_update_floor);
        break;
    case ARS_HEALTH_EXPLODING:
        if (s->worst_layer >= 0)
            ars_appendf(out, size, "%s received up to %.1e times the output layer's gradient (%s, step %lld)", who,
                    s->worst, worst_name, (long long)s->worst_step);
        if (isfinite(s->worst_global))
            ars_appendf(out, size, "%sthe global gradient norm jumped to %.3gx its recent level (step %lld)",
                    out[0] ? "; " : "", s->worst_global, (long long)s->worst_global_step);
        break;
    case ARS_HEALTH_NONFINITE:
        ars_appendf(out, size, "%.0f record%s had a non-finite loss or gradient (the first at step %lld)", s->worst,
                s->worst == 1 ? "" : "s", (long long)s->first_step);
        break;
    case ARS_HEALTH_SATURATION:
    case ARS_HEALTH_DEAD_RELU:
        ars_appendf(out, size, "up to %.0f%% of %s's %s (%s above %.0f%%)", 100 * s->worst, worst_name,
                p == ARS_HEALTH_SATURATION ? "outputs were saturated" : "units were dead", who,
                100 * (p == ARS_HEALTH_SATURATION ? c->saturation_max : c->dead_max));
        break;
    case ARS_HEALTH_PLATEAU:
        ars_appendf(out, size, "the loss improved by less than %.2g%% per %d records while still above %.0f%% of its "
                "first value", 100 * c->plateau_improvement, c->plateau_window, 100 * c->plateau_high);
        break;
    case ARS_HEALTH_OSCILLATION:
        ars_appendf(out, size, "the loss jumped up by more than %.0f%% of its first value up to %.0f times in %d "
                "records", 100 * c->oscillation_rise, s->worst, c->oscillation_window);
        break;
    default: break;
    }
    if (s->active)
        ars_appendf(out, size, " - from step %lld%s, still at the end", (long long)s->first_step,
                s->episodes > 1 ? " (on and off)" : "");
    else if (s->episodes == 1)
        ars_appendf(out, size, " - steps %lld-%lld", (long long)s->first_step, (long long)s->last_end_step);
    else
        ars_appendf(out, size, " - %d episodes, steps %lld-%lld", s->episodes, (long long)s->first_step,
                (long long)s->last_end_step);
}
