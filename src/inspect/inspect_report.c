/* inspect_report: loads a checkpoint for `arsenal inspect`, analyses its
 * history (per-layer figures; the health rules replayed over every record)
 * and prints the one-screen report, or two runs side by side. */
#define _POSIX_C_SOURCE 200809L
#include "inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "arsenal/layer.h"

enum { REPORT_WIDTH = 100, MAX_EVENTS_SHOWN = 24 };

/* ---- small helpers -------------------------------------------------------- */

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double ars_inspect_median(double *values, size_t n)
{
    if (n == 0) return NAN;
    qsort(values, n, sizeof *values, compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int ars_inspect_is_activation(const char *kind) { return ars_activation_from_name(kind) != ARS_ACT_NONE; }

int ars_inspect_record_finite(const ars_history *h, size_t r)
{
    const ars_history_step *s = &h->steps[r];
    return !s->nonfinite && isfinite(s->loss) && isfinite(s->grad_norm);
}

double ars_inspect_value(const ars_history *h, size_t r, ars_history_column column, int layer)
{
    return ars_history_layer_values(h, r)[(size_t)column * (size_t)h->layer_count + (size_t)layer];
}

/* "runs/sigmoid/latest.h5" -> "sigmoid/latest.h5". */
static void short_label(const char *path, char *out, size_t size)
{
    const char *start = path, *last = strrchr(path, '/');
    if (last) {
        const char *p = last;
        while (p > path && p[-1] != '/') p--;   /* back to the start of the parent's name */
        start = *p == '/' ? p + 1 : p;
    }
    size_t n = strlen(start);
    if (n >= size) start += n - (size - 1);
    snprintf(out, size, "%s", start);
}

/* Prints text wrapped at REPORT_WIDTH: the first line after `first`, the
 * others indented by `indent` spaces. */
static void print_wrapped(FILE *out, const char *first, int indent, const char *text)
{
    fputs(first, out);
    int column = (int)strlen(first), line_start = 1;
    for (const char *p = text; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        int word = (int)strcspn(p, " ");
        if (!line_start && column + 1 + word > REPORT_WIDTH) {
            fprintf(out, "\n%*s", indent, "");
            column = indent;
            line_start = 1;
        }
        if (!line_start) {
            fputc(' ', out);
            column++;
        }
        fwrite(p, 1, (size_t)word, out);
        column += word;
        line_start = 0;
        p += word;
    }
    fputc('\n', out);
}

/* Table cells: "-" when there is no value (a median of nothing). */
static void format_value(double v, const char *fmt, char *out, size_t size)
{
    if (isnan(v)) snprintf(out, size, "-");
    else snprintf(out, size, fmt, v);
}

/* Recorded figures: "NaN" / "Inf" when the run produced them. */
static void format_number(double v, char *out, size_t size)
{
    if (isnan(v)) snprintf(out, size, "NaN");
    else if (isinf(v)) snprintf(out, size, v > 0 ? "Inf" : "-Inf");
    else snprintf(out, size, "%.4g", v);
}

/* ---- analysis -------------------------------------------------------------- */

/* The run file's [health] thresholds (defaults when absent or unreadable). */
static void health_config_of(const char *config_text, ars_health_config *out)
{
    ars_health_config_defaults(out);
    if (!config_text || !*config_text) return;
    ars_config config;
    if (ars_config_load_string(&config, config_text, "/config") == 0 && ars_config_expand(&config) == 0) {
        ars_config_section *section = ars_config_find(&config, "health");
        if (section && ars_health_config_load(&config, section, out) != 0) ars_health_config_defaults(out);
    }
    ars_config_free(&config);
    ars_error_clear();
}

/* "39 layers: 20 dense, 19 sigmoid, 16 residual blocks". */
static void summarize_model(ars_inspect_run *run)
{
    const int L = run->history.layer_count;
    char seen[32][24];
    int counts[32], kinds = 0, blocks = 0;
    for (int l = 0; l < L; l++) {
        const char *kind = run->health.kinds[l];
        /* the ends of a block count as one residual block, not as layers */
        if (ars_layer_kind_has(kind, ARS_KIND_RESIDUAL) && !ars_layer_kind_has(kind, ARS_KIND_SUGAR)) {
            blocks += strcmp(kind, "residual_add") == 0;
            continue;
        }
        int k = 0;
        while (k < kinds && strcmp(seen[k], kind) != 0) k++;
        if (k == kinds) {
            if (kinds == 32) continue;
            snprintf(seen[kinds], sizeof seen[kinds], "%s", kind);
            counts[kinds++] = 0;
        }
        counts[k]++;
    }
    char *out = run->model;
    size_t size = sizeof run->model;
    int n = snprintf(out, size, "%d layers:", L);
    for (int k = 0; k < kinds && n > 0 && (size_t)n < size; k++)
        n += snprintf(out + n, size - (size_t)n, "%s %d %s", k ? "," : "", counts[k], seen[k]);
    if (blocks && n > 0 && (size_t)n < size)
        snprintf(out + n, size - (size_t)n, ", %d residual block%s", blocks, blocks == 1 ? "" : "s");
}

/* The activation layer right after layer l (before the next layer with
 * parameters), or -1. */
static int activation_after(const ars_inspect_run *run, int l)
{
    for (int k = l + 1; k < run->history.layer_count; k++) {
        if (ars_inspect_is_activation(run->health.kinds[k])) return k;
        if (ars_health_layer_has_params(&run->health, &run->history, k)) return -1;
    }
    return -1;
}

static int summarize_layer(ars_inspect_run *run, int l, ars_inspect_layer *out, double *scratch)
{
    const ars_history *h = &run->history;
    const int o = run->output_layer;
    memset(out, 0, sizeof *out);
    out->index = l;
    out->grad_first = out->grad_last = out->grad_median = NAN;
    size_t n = 0, last = (size_t)-1;
    for (size_t r = 0; r < h->count; r++) {
        if (!ars_inspect_record_finite(h, r)) continue;
        double g = ars_inspect_value(h, r, ARS_HIST_GRAD_NORM, l);
        if (isnan(out->grad_first)) out->grad_first = g;
        out->grad_last = g;
        scratch[n++] = g;
        last = r;
    }
    out->grad_median = ars_inspect_median(scratch, n);
    n = 0;
    for (size_t r = 0; r < h->count; r++) {
        double g_out = ars_inspect_value(h, r, ARS_HIST_GRAD_NORM, o);
        if (ars_inspect_record_finite(h, r) && g_out > 0)
            scratch[n++] = ars_inspect_value(h, r, ARS_HIST_GRAD_NORM, l) / g_out;
    }
    out->ratio_median = ars_inspect_median(scratch, n);
    double g_out_last = last != (size_t)-1 ? ars_inspect_value(h, last, ARS_HIST_GRAD_NORM, o) : 0;
    out->ratio_last = g_out_last > 0 ? out->grad_last / g_out_last : NAN;
    n = 0;
    for (size_t r = 0; r < h->count; r++)
        if (ars_inspect_record_finite(h, r) && !h->steps[r].skipped)
            scratch[n++] = ars_inspect_value(h, r, ARS_HIST_UPDATE_RATIO, l);
    out->update_median = ars_inspect_median(scratch, n);
    out->activation = activation_after(run, l);
    out->saturated = out->dead = NAN;
    if (out->activation >= 0 && h->count > 0) {
        const char *kind = run->health.kinds[out->activation];
        size_t r = h->count - 1;
        const ars_activation act = ars_activation_from_name(kind);
        if (act == ARS_ACT_SIGMOID || act == ARS_ACT_TANH)
            out->saturated = ars_inspect_value(h, r, ARS_HIST_ACT_SATURATED, out->activation);
        else if (act == ARS_ACT_RELU)
            out->dead = ars_inspect_value(h, r, ARS_HIST_ACT_DEAD, out->activation);
    }
    return 0;
}

static int analyse(ars_inspect_run *run)
{
    const ars_history *h = &run->history;
    const int L = h->layer_count;
    int rc = ars_health_init(&run->health, &run->health_config, L, (const char (*)[40])h->layer_names,
                             run->info.layer_kinds ? (const char (*)[24])run->info.layer_kinds : NULL,
                             run->info.optimizer[0] ? run->info.optimizer : NULL);
    if (!rc) rc = ars_health_catch_up(&run->health, h);
    if (rc) return rc;
    summarize_model(run);
    run->first_loss = run->last_loss = NAN;
    for (size_t r = 0; r < h->count; r++) {
        const ars_history_step *s = &h->steps[r];
        if (ars_inspect_record_finite(h, r)) {
            run->finite_records++;
            if (isnan(run->first_loss)) run->first_loss = s->loss;
            run->last_loss = s->loss;
        } else {
            run->nonfinite_records++;
        }
        run->clipped_records += s->clip_scale < 1;
    }
    run->output_layer = -1;
    int params = 0;
    for (int l = 0; l < L; l++)
        if (ars_health_layer_has_params(&run->health, h, l)) {
            run->output_layer = l;
            params++;
        }
    if (params == 0) return 0;
    run->layers = calloc((size_t)params, sizeof *run->layers);
    double *scratch = malloc(sizeof *scratch * (h->count ? h->count : 1));
    if (!run->layers || !scratch) {
        free(scratch);
        return ars_error(ARS_ENOMEM, "inspect: out of memory");
    }
    for (int l = 0; l < L; l++)
        if (ars_health_layer_has_params(&run->health, h, l)) summarize_layer(run, l, &run->layers[run->layer_count++], scratch);
    free(scratch);
    return 0;
}

int ars_inspect_from(ars_inspect_run *run, const char *path, ars_ckpt_info *info, ars_history *history)
{
    memset(run, 0, sizeof *run);
    snprintf(run->path, sizeof run->path, "%s", path);
    short_label(path, run->label, sizeof run->label);
    run->info = *info;
    run->history = *history;
    memset(info, 0, sizeof *info);
    memset(history, 0, sizeof *history);
    if (run->history.layer_count < 1)
        return ars_error(ARS_EFORMAT, "%s: the history names no layers", path);
    if (run->info.layer_count && run->info.layer_count != run->history.layer_count)
        return ars_error(ARS_EFORMAT, "%s: /history has %d layers, /model %d", path, run->history.layer_count,
                         run->info.layer_count);
    health_config_of(run->info.config_text, &run->health_config);
    return analyse(run);
}

int ars_inspect_load(ars_inspect_run *run, const char *path)
{
    memset(run, 0, sizeof *run);
    ars_ckpt_info info;
    ars_history history;
    /* a corrupted file may crash or hang libhdf5: read it in a child first */
    int rc = ars_ckpt_validate(path);
    if (rc) return rc;
    rc = ars_ckpt_read_info(path, &info);
    if (rc) return rc;
    rc = ars_ckpt_read_history(path, &history);
    if (rc) {
        ars_ckpt_info_free(&info);
        return rc;
    }
    return ars_inspect_from(run, path, &info, &history);
}

void ars_inspect_free(ars_inspect_run *run)
{
    ars_ckpt_info_free(&run->info);
    ars_history_free(&run->history);
    if (run->health.names) ars_health_free(&run->health);
    free(run->layers);
    memset(run, 0, sizeof *run);
}

double ars_inspect_first_to_output(const ars_inspect_run *run)
{
    return run->layer_count > 1 ? run->layers[0].ratio_median : NAN;
}

int ars_inspect_problems(const ars_inspect_run *run, ars_health_problem *out)
{
    int n = 0;
    for (int p = 0; p < ARS_HEALTH_PROBLEMS; p++)
        if (run->health.summary[p].episodes > 0) out[n++] = (ars_health_problem)p;
    return n;
}

/* ---- the report --------------------------------------------------------------- */

static void print_run_facts(FILE *out, const ars_inspect_run *run)
{
    const ars_ckpt_info *i = &run->info;
    const ars_history *h = &run->history;
    fprintf(out, "checkpoint  %s", run->path);
    if (i->arsenal_version[0]) fprintf(out, " (arsenal %s, written %s)", i->arsenal_version, i->created);
    fprintf(out, "\nrun         step %lld, epoch %d (%d steps/epoch), %d rank%s, global batch %d, seed %llu\n",
            (long long)i->step, i->epoch, i->steps_per_epoch, i->world_size, i->world_size == 1 ? "" : "s",
            i->global_batch, (unsigned long long)i->seed);
    fprintf(out, "model       %s; %lld parameters\n", run->model, (long long)i->param_count);
    fprintf(out, "optimizer   %s, lr %g\n", i->optimizer[0] ? i->optimizer : "?", i->lr);
    char number[32];
    format_number(i->last_loss, number, sizeof number);
    fprintf(out, "result      last loss %s", number);
    if (isfinite(run->first_loss)) fprintf(out, " (first recorded %.4g)", run->first_loss);
    if (h->eval_count == 0 && isnan(i->test_loss) && isnan(i->test_accuracy)) {
        fprintf(out, "; not evaluated yet");
    } else {
        format_number(i->test_loss, number, sizeof number);
        fprintf(out, "; test loss %s", number);
        if (isfinite(i->test_accuracy)) fprintf(out, ", test accuracy %.2f%%", 100 * i->test_accuracy);
    }
    fprintf(out, "; %lld non-finite step%s\n", (long long)i->nonfinite_steps, i->nonfinite_steps == 1 ? "" : "s");
    fprintf(out, "history     %zu record%s", h->count, h->count == 1 ? "" : "s");
    if (h->count) fprintf(out, " (steps %lld-%lld)", (long long)h->steps[0].step, (long long)h->steps[h->count - 1].step);
    fprintf(out, ", %zu histogram%s, %zu evaluation%s, %zu non-finite, %zu clipped\n", h->hist_count,
            h->hist_count == 1 ? "" : "s", h->eval_count, h->eval_count == 1 ? "" : "s", run->nonfinite_records,
            run->clipped_records);
}

static void activation_cell(const ars_inspect_run *run, const ars_inspect_layer *layer, char *out, size_t size)
{
    if (layer->activation < 0) {
        snprintf(out, size, "-");
        return;
    }
    const char *kind = run->health.kinds[layer->activation];
    if (!isnan(layer->saturated)) snprintf(out, size, "%s %.0f%% saturated", kind, 100 * layer->saturated);
    else if (!isnan(layer->dead)) snprintf(out, size, "%s %.0f%% dead", kind, 100 * layer->dead);
    else snprintf(out, size, "%s", kind);
}

static void print_layer_table(FILE *out, const ars_inspect_run *run)
{
    if (run->layer_count == 0 || run->finite_records == 0) {
        fprintf(out, "\nno per-layer figures: %s\n",
                run->layer_count == 0 ? "the model has no layer with parameters" : "no finite record in the history");
        return;
    }
    fprintf(out, "\nper layer with parameters (gradient norms over %zu finite records; ratio = / the output "
            "layer's)\n", run->finite_records);
    fprintf(out, "%-18s %9s %9s %9s %11s %12s  %s\n", "layer", "grad 1st", "median", "last", "ratio med",
            "update med", "activation after (last record)");
    for (int i = 0; i < run->layer_count; i++) {
        const ars_inspect_layer *y = &run->layers[i];
        char name[48], first[16], median[16], last[16], ratio[16], update[16], act[64];
        snprintf(name, sizeof name, "%s%s", run->health.names[y->index], y->index == run->output_layer ? " (out)" : "");
        format_value(y->grad_first, "%.2e", first, sizeof first);
        format_value(y->grad_median, "%.2e", median, sizeof median);
        format_value(y->grad_last, "%.2e", last, sizeof last);
        format_value(y->ratio_median, "%.2e", ratio, sizeof ratio);
        format_value(y->update_median, "%.2e", update, sizeof update);
        activation_cell(run, y, act, sizeof act);
        fprintf(out, "%-18s %9s %9s %9s %11s %12s  %s\n", name, first, median, last, ratio, update, act);
    }
}

/* Figures of a healthy run, for the "no problem found" line. */
static void print_healthy(FILE *out, const ars_inspect_run *run)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < run->layer_count; i++) {
        double r = run->layers[i].ratio_median;
        if (run->layers[i].index == run->output_layer || !isfinite(r)) continue;
        lo = fmin(lo, r);
        hi = fmax(hi, r);
    }
    char text[512];
    int n = snprintf(text, sizeof text, "no problem found");
    char range[64];
    snprintf(range, sizeof range, "%.2g to %.2g", lo, hi);
    if (isfinite(lo) && fabs(hi - lo) <= 0.005 * fabs(hi)) snprintf(range, sizeof range, "%.2g", lo);
    if (isfinite(lo))
        n += snprintf(text + n, sizeof text - (size_t)n, ": every layer receives %s times the output layer's "
                      "gradient norm (median; thresholds %.0e and %.0e)", range, run->health_config.vanish_ratio,
                      run->health_config.explode_ratio);
    if (isfinite(run->first_loss) && (size_t)n < sizeof text)
        snprintf(text + n, sizeof text - (size_t)n, "%s the recorded loss went from %.4g to %.4g", isfinite(lo) ? ";" : ":",
                 run->first_loss, run->last_loss);
    print_wrapped(out, "  ", 2, text);
}

static void print_diagnosis(FILE *out, const ars_inspect_run *run)
{
    fprintf(out, "\ndiagnosis\n");
    ars_health_problem problems[ARS_HEALTH_PROBLEMS];
    int n = ars_inspect_problems(run, problems);
    if (run->history.count == 0) {
        fprintf(out, "  nothing to diagnose: the history has no record ([run] probe_every)\n");
        return;
    }
    if (n == 0) print_healthy(out, run);
    for (int i = 0; i < n; i++) {
        char text[1400], remedy[400], line[1900];
        ars_health_describe(&run->health, problems[i], text, sizeof text);
        ars_health_remedy(&run->health, problems[i], remedy, sizeof remedy);
        snprintf(line, sizeof line, "%s: %s.", ars_health_problem_name(problems[i]), text);
        print_wrapped(out, "  * ", 4, line);
        snprintf(line, sizeof line, "try %s.", remedy);
        print_wrapped(out, "    ", 4, line);
    }
}

static void print_events(FILE *out, const ars_inspect_run *run)
{
    const ars_history *h = &run->history;
    if (h->event_count == 0) return;
    fprintf(out, "\nevents recorded during training (%zu)\n", h->event_count);
    size_t shown = h->event_count <= MAX_EVENTS_SHOWN ? h->event_count : MAX_EVENTS_SHOWN - 1;
    for (size_t e = 0; e < shown; e++) print_wrapped(out, "  ", 4, h->events[e]);
    if (shown < h->event_count)
        fprintf(out, "  ... %zu more (arsenal inspect --json lists them all)\n", h->event_count - shown);
}

/* /health/cures: what [health] cure = apply changed, and where it went back to. */
static void print_cures(FILE *out, const ars_inspect_run *run)
{
    const ars_history *h = &run->history;
    if (h->cure_count == 0) return;
    fprintf(out, "\nautomatic cures ([health] cure = apply; %zu)\n", h->cure_count);
    for (size_t k = 0; k < h->cure_count; k++) {
        const ars_history_cure *c = &h->cures[k];
        char line[1600];
        snprintf(line, sizeof line, "%zu. step %lld, %s%s%s: %s; rolled back to step %lld; %s", k + 1,
                 (long long)c->step, c->rule, c->layer[0] ? " at " : "", c->layer, c->change,
                 (long long)c->rollback_step, strcmp(c->status, "active") == 0 ? "kept" : c->status);
        print_wrapped(out, "  ", 5, line);
    }
}

void ars_inspect_print(FILE *out, const ars_inspect_run *run)
{
    print_run_facts(out, run);
    print_layer_table(out, run);
    print_diagnosis(out, run);
    print_events(out, run);
    print_cures(out, run);
}

/* ---- two runs side by side ------------------------------------------------------ */

static void problems_text(const ars_inspect_run *run, char *out, size_t size)
{
    ars_health_problem problems[ARS_HEALTH_PROBLEMS];
    int n = ars_inspect_problems(run, problems);
    out[0] = '\0';
    if (n == 0) snprintf(out, size, "none");
    for (int i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? ", " : "", ars_health_problem_key(problems[i]));
    }
}

static void compare_row(FILE *out, const char *what, const char *a, const char *b)
{
    fprintf(out, "%-22s %-38s %s\n", what, a, b);
}

static void print_compare_facts(FILE *out, const ars_inspect_run *a, const ars_inspect_run *b)
{
    const ars_inspect_run *runs[2] = {a, b};
    char cell[2][8][160];
    for (int k = 0; k < 2; k++) {
        const ars_inspect_run *r = runs[k];
        const ars_ckpt_info *i = &r->info;
        snprintf(cell[k][0], sizeof cell[k][0], "%.37s", r->model);
        snprintf(cell[k][1], sizeof cell[k][1], "%s lr %g", i->optimizer[0] ? i->optimizer : "?", i->lr);
        snprintf(cell[k][2], sizeof cell[k][2], "%lld (%d rank%s, batch %d)", (long long)i->step, i->world_size,
                 i->world_size == 1 ? "" : "s", i->global_batch);
        snprintf(cell[k][3], sizeof cell[k][3], "%.4g", i->last_loss);
        if (isfinite(i->test_accuracy)) snprintf(cell[k][4], sizeof cell[k][4], "%.2f%%", 100 * i->test_accuracy);
        else if (isfinite(i->test_loss)) snprintf(cell[k][4], sizeof cell[k][4], "loss %.4g", i->test_loss);
        else snprintf(cell[k][4], sizeof cell[k][4], "-");
        format_value(ars_inspect_first_to_output(r), "%.2e", cell[k][5], sizeof cell[k][5]);
        snprintf(cell[k][6], sizeof cell[k][6], "%lld", (long long)i->nonfinite_steps);
        problems_text(r, cell[k][7], sizeof cell[k][7]);
    }
    static const char *const rows[8] = {"model", "optimizer", "steps", "last loss", "test accuracy",
                                        "first/output ratio", "non-finite steps", "problems"};
    char head_a[64], head_b[64];
    snprintf(head_a, sizeof head_a, "1: %.36s", a->label);
    snprintf(head_b, sizeof head_b, "2: %.36s", b->label);
    compare_row(out, "", head_a, head_b);
    for (int row = 0; row < 8; row++) compare_row(out, rows[row], cell[0][row], cell[1][row]);
}

static void print_compare_layers(FILE *out, const ars_inspect_run *a, const ars_inspect_run *b)
{
    int depth = a->layer_count > b->layer_count ? a->layer_count : b->layer_count;
    if (depth == 0) return;
    fprintf(out, "\nper layer with parameters, by depth (median gradient norm; ratio = / the output layer's)\n");
    fprintf(out, "%-6s %-16s %10s %10s   %-16s %10s %10s\n", "depth", "1: layer", "grad", "ratio", "2: layer",
            "grad", "ratio");
    for (int d = 0; d < depth; d++) {
        char cells[2][3][48];
        const ars_inspect_run *runs[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (d >= runs[k]->layer_count) {
                snprintf(cells[k][0], sizeof cells[k][0], "-");
                snprintf(cells[k][1], sizeof cells[k][1], "-");
                snprintf(cells[k][2], sizeof cells[k][2], "-");
                continue;
            }
            const ars_inspect_layer *y = &runs[k]->layers[d];
            snprintf(cells[k][0], sizeof cells[k][0], "%s", runs[k]->health.names[y->index]);
            format_value(y->grad_median, "%.2e", cells[k][1], sizeof cells[k][1]);
            format_value(y->ratio_median, "%.2e", cells[k][2], sizeof cells[k][2]);
        }
        fprintf(out, "%-6d %-16s %10s %10s   %-16s %10s %10s\n", d + 1, cells[0][0], cells[0][1], cells[0][2],
                cells[1][0], cells[1][1], cells[1][2]);
    }
}

void ars_inspect_print_compare(FILE *out, const ars_inspect_run *a, const ars_inspect_run *b)
{
    fprintf(out, "comparing 1: %s\n      and 2: %s\n\n", a->path, b->path);
    print_compare_facts(out, a, b);
    print_compare_layers(out, a, b);
    const ars_inspect_run *runs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        fprintf(out, "\n%d: %s", k + 1, runs[k]->label);
        print_diagnosis(out, runs[k]);
    }
}
