/* inspect_json: `arsenal inspect --json`: the report's content as one JSON
 * document for scripts (NaN and Inf become null). */
#include "inspect.h"

#include <math.h>
#include <string.h>

enum { JSON_MAX_DEPTH = 32 };

/* A minimal streaming writer: values inside objects take a key, values
 * inside arrays pass key NULL; commas and indentation are automatic. */
typedef struct json_writer {
    FILE *out;
    int depth;
    int count[JSON_MAX_DEPTH];   /* values written at each depth */
} json_writer;

static void json_string_literal(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", out);
        else if (*p == '\t') fputs("\\t", out);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

static void json_key(json_writer *j, const char *key)
{
    if (j->depth > 0) {
        fputs(j->count[j->depth] ? ",\n" : "\n", j->out);
        fprintf(j->out, "%*s", 2 * j->depth, "");
    }
    if (j->depth < JSON_MAX_DEPTH) j->count[j->depth]++;
    if (key) {
        json_string_literal(j->out, key);
        fputs(": ", j->out);
    }
}

static void json_open(json_writer *j, const char *key, char bracket)
{
    json_key(j, key);
    fputc(bracket, j->out);
    if (j->depth + 1 < JSON_MAX_DEPTH) j->count[++j->depth] = 0;
}

static void json_close(json_writer *j, char bracket)
{
    int had_values = j->count[j->depth] > 0;
    j->depth--;
    if (had_values) fprintf(j->out, "\n%*s", 2 * j->depth, "");
    fputc(bracket, j->out);
    if (j->depth == 0) fputc('\n', j->out);
}

static void json_str(json_writer *j, const char *key, const char *value)
{
    json_key(j, key);
    if (value) json_string_literal(j->out, value);
    else fputs("null", j->out);
}

static void json_num(json_writer *j, const char *key, double value)
{
    json_key(j, key);
    if (isfinite(value)) fprintf(j->out, "%.9g", value);
    else fputs("null", j->out);
}

static void json_int(json_writer *j, const char *key, long long value)
{
    json_key(j, key);
    fprintf(j->out, "%lld", value);
}

static void json_bool(json_writer *j, const char *key, int value)
{
    json_key(j, key);
    fputs(value ? "true" : "false", j->out);
}

/* ---- one run ---------------------------------------------------------------- */

static void write_facts(json_writer *j, const ars_inspect_run *run)
{
    const ars_ckpt_info *i = &run->info;
    const ars_history *h = &run->history;
    json_str(j, "file", run->path);
    json_str(j, "label", run->label);
    json_open(j, "run", '{');
    json_str(j, "arsenal_version", i->arsenal_version);
    json_str(j, "created", i->created);
    json_int(j, "step", i->step);
    json_int(j, "epoch", i->epoch);
    json_int(j, "steps_per_epoch", i->steps_per_epoch);
    json_int(j, "world_size", i->world_size);
    json_int(j, "global_batch", i->global_batch);
    json_int(j, "seed", (long long)i->seed);
    json_int(j, "param_count", i->param_count);
    json_close(j, '}');
    json_open(j, "model", '{');
    json_str(j, "summary", run->model);
    json_open(j, "layers", '[');
    for (int l = 0; l < h->layer_count; l++) {
        json_open(j, NULL, '{');
        json_str(j, "name", run->health.names[l]);
        json_str(j, "kind", run->health.kinds[l]);
        json_bool(j, "has_params", ars_health_layer_has_params(&run->health, h, l));
        json_close(j, '}');
    }
    json_close(j, ']');
    json_close(j, '}');
    json_open(j, "optimizer", '{');
    json_str(j, "kind", i->optimizer);
    json_num(j, "lr", i->lr);
    json_int(j, "step", i->optimizer_step);
    json_close(j, '}');
    json_open(j, "result", '{');
    json_num(j, "last_loss", i->last_loss);
    json_num(j, "first_recorded_loss", run->first_loss);
    json_num(j, "test_loss", i->test_loss);
    json_num(j, "test_accuracy", i->test_accuracy);
    json_int(j, "nonfinite_steps", i->nonfinite_steps);
    json_close(j, '}');
    json_open(j, "history", '{');
    json_int(j, "records", (long long)h->count);
    if (h->count) {
        json_int(j, "first_step", h->steps[0].step);
        json_int(j, "last_step", h->steps[h->count - 1].step);
    }
    json_int(j, "finite_records", (long long)run->finite_records);
    json_int(j, "nonfinite_records", (long long)run->nonfinite_records);
    json_int(j, "clipped_records", (long long)run->clipped_records);
    json_int(j, "histograms", (long long)h->hist_count);
    json_int(j, "evaluations", (long long)h->eval_count);
    json_close(j, '}');
}

static void write_layers(json_writer *j, const ars_inspect_run *run)
{
    json_open(j, "layers", '[');
    for (int i = 0; i < run->layer_count; i++) {
        const ars_inspect_layer *y = &run->layers[i];
        json_open(j, NULL, '{');
        json_str(j, "name", run->health.names[y->index]);
        json_str(j, "kind", run->health.kinds[y->index]);
        json_int(j, "index", y->index);
        json_bool(j, "output", y->index == run->output_layer);
        json_open(j, "grad_norm", '{');
        json_num(j, "first", y->grad_first);
        json_num(j, "median", y->grad_median);
        json_num(j, "last", y->grad_last);
        json_close(j, '}');
        json_open(j, "ratio_to_output", '{');
        json_num(j, "median", y->ratio_median);
        json_num(j, "last", y->ratio_last);
        json_close(j, '}');
        json_num(j, "update_ratio_median", y->update_median);
        if (y->activation >= 0) {
            json_open(j, "activation", '{');
            json_str(j, "name", run->health.names[y->activation]);
            json_str(j, "kind", run->health.kinds[y->activation]);
            json_num(j, "saturated", y->saturated);
            json_num(j, "dead", y->dead);
            json_close(j, '}');
        } else {
            json_key(j, "activation");
            fputs("null", j->out);
        }
        json_close(j, '}');
    }
    json_close(j, ']');
}

static void write_health_config(json_writer *j, const ars_health_config *c)
{
    json_open(j, "health_config", '{');
    json_int(j, "patience", c->patience);
    json_int(j, "recovery", c->recovery);
    json_num(j, "vanish_ratio", c->vanish_ratio);
    json_num(j, "vanish_update_floor", c->vanish_update_floor);
    json_int(j, "vanish_update_records", c->vanish_update_records);
    json_num(j, "explode_ratio", c->explode_ratio);
    json_num(j, "explode_spike", c->explode_spike);
    json_int(j, "explode_window", c->explode_window);
    json_num(j, "explode_growth", c->explode_growth);
    json_int(j, "explode_growth_records", c->explode_growth_records);
    json_num(j, "saturation_max", c->saturation_max);
    json_num(j, "dead_max", c->dead_max);
    json_int(j, "plateau_window", c->plateau_window);
    json_num(j, "plateau_improvement", c->plateau_improvement);
    json_num(j, "plateau_high", c->plateau_high);
    json_int(j, "oscillation_window", c->oscillation_window);
    json_num(j, "oscillation_rise", c->oscillation_rise);
    json_int(j, "oscillation_count", c->oscillation_count);
    json_close(j, '}');
}

static void write_diagnosis(json_writer *j, const ars_inspect_run *run)
{
    const ars_health_monitor *m = &run->health;
    ars_health_problem problems[ARS_HEALTH_PROBLEMS];
    int n = ars_inspect_problems(run, problems);
    json_bool(j, "healthy", n == 0);
    json_open(j, "diagnosis", '[');
    for (int i = 0; i < n; i++) {
        ars_health_problem p = problems[i];
        const ars_health_summary *s = &m->summary[p];
        char text[1400], remedy[400];
        ars_health_describe(m, p, text, sizeof text);
        ars_health_remedy(m, p, remedy, sizeof remedy);
        json_open(j, NULL, '{');
        json_str(j, "problem", ars_health_problem_key(p));
        json_str(j, "name", ars_health_problem_name(p));
        json_int(j, "episodes", s->episodes);
        json_bool(j, "active_at_end", s->active);
        json_int(j, "records", s->records);
        json_int(j, "first_step", s->first_step);
        if (s->last_end_step >= 0) json_int(j, "last_end_step", s->last_end_step);
        else json_str(j, "last_end_step", NULL);
        const unsigned char *ever = ars_health_ever(m, p);
        json_open(j, "layers", '[');
        for (int l = 0; l < m->layer_count; l++)
            if (ever[l]) json_str(j, NULL, m->names[l]);
        json_close(j, ']');
        json_bool(j, "whole_network", ever[m->layer_count]);
        json_num(j, "worst", s->worst);
        json_int(j, "worst_step", s->worst_step);
        json_str(j, "worst_layer", s->worst_layer >= 0 ? m->names[s->worst_layer] : NULL);
        if (p == ARS_HEALTH_EXPLODING) json_num(j, "worst_global_over_median", s->worst_global);
        json_str(j, "text", text);
        json_str(j, "remedy", remedy);
        json_close(j, '}');
    }
    json_close(j, ']');
    json_open(j, "events", '[');
    for (size_t e = 0; e < run->history.event_count; e++) json_str(j, NULL, run->history.events[e]);
    json_close(j, ']');
    json_open(j, "cures", '[');
    for (size_t k = 0; k < run->history.cure_count; k++) {
        const ars_history_cure *c = &run->history.cures[k];
        json_open(j, NULL, '{');
        json_int(j, "step", c->step);
        json_int(j, "rollback_step", c->rollback_step);
        json_str(j, "rule", c->rule);
        json_str(j, "layer", c->layer[0] ? c->layer : NULL);
        json_str(j, "change", c->change);
        json_str(j, "settings", c->settings);
        json_str(j, "status", c->status);
        json_close(j, '}');
    }
    json_close(j, ']');
}

static void write_run(json_writer *j, const char *key, const ars_inspect_run *run)
{
    json_open(j, key, '{');
    write_facts(j, run);
    write_layers(j, run);
    write_health_config(j, &run->health_config);
    write_diagnosis(j, run);
    json_close(j, '}');
}

/* ---- two runs ------------------------------------------------------------------ */

static void write_comparison(json_writer *j, const ars_inspect_run *const *runs)
{
    json_open(j, "comparison", '{');
    json_open(j, "first_to_output_ratio", '[');
    for (int k = 0; k < 2; k++) json_num(j, NULL, ars_inspect_first_to_output(runs[k]));
    json_close(j, ']');
    json_open(j, "last_loss", '[');
    for (int k = 0; k < 2; k++) json_num(j, NULL, runs[k]->info.last_loss);
    json_close(j, ']');
    json_open(j, "test_accuracy", '[');
    for (int k = 0; k < 2; k++) json_num(j, NULL, runs[k]->info.test_accuracy);
    json_close(j, ']');
    json_open(j, "problems", '[');
    for (int k = 0; k < 2; k++) {
        ars_health_problem problems[ARS_HEALTH_PROBLEMS];
        int n = ars_inspect_problems(runs[k], problems);
        json_open(j, NULL, '[');
        for (int i = 0; i < n; i++) json_str(j, NULL, ars_health_problem_key(problems[i]));
        json_close(j, ']');
    }
    json_close(j, ']');
    int depth = runs[0]->layer_count > runs[1]->layer_count ? runs[0]->layer_count : runs[1]->layer_count;
    json_open(j, "layers", '[');
    for (int d = 0; d < depth; d++) {
        json_open(j, NULL, '{');
        json_int(j, "depth", d + 1);
        json_open(j, "runs", '[');
        for (int k = 0; k < 2; k++) {
            if (d >= runs[k]->layer_count) {
                json_str(j, NULL, NULL);
                continue;
            }
            const ars_inspect_layer *y = &runs[k]->layers[d];
            json_open(j, NULL, '{');
            json_str(j, "name", runs[k]->health.names[y->index]);
            json_num(j, "grad_median", y->grad_median);
            json_num(j, "ratio_median", y->ratio_median);
            json_close(j, '}');
        }
        json_close(j, ']');
        json_close(j, '}');
    }
    json_close(j, ']');
    json_close(j, '}');
}

void ars_inspect_json(FILE *out, const ars_inspect_run *const *runs, int count)
{
    json_writer j = {.out = out};
    if (count == 1) {
        write_run(&j, NULL, runs[0]);
        return;
    }
    json_open(&j, NULL, '{');
    json_open(&j, "runs", '[');
    for (int k = 0; k < count; k++) write_run(&j, NULL, runs[k]);
    json_close(&j, ']');
    if (count == 2) write_comparison(&j, runs);
    json_close(&j, '}');
}
