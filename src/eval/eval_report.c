/* eval_report: `arsenal evaluate`'s figures as text (the run, the loss and
 * accuracy, a precision/recall/F1 table per class with its averages, the
 * confusion matrix; or the regression figures) and as one JSON object. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "arsenal/evaluate.h"

static void print_header(FILE *out, const ars_eval_report *p)
{
    fprintf(out, "arsenal evaluate %s: step %" PRId64 " (epoch %d), %d layers, %zu parameters\n", p->checkpoint,
            p->step, p->epoch, p->layers, p->params);
    fprintf(out, "data %s, %s split: %" PRId64 " samples; %d rank%s, batch %d\n", p->data, p->split,
            p->result.samples, p->world, p->world == 1 ? "" : "s", p->batch);
    if (p->data_mean == 0 && p->data_std == 1)
        fprintf(out, "standardization: none, as in the run\n");
    else
        fprintf(out, "standardization: mean %.6g, std %.6g (%s)\n", p->data_mean, p->data_std,
                p->stats_stored ? "the training data's, stored in the checkpoint"
                                : "recomputed from the run's training data: the checkpoint predates storing it");
}

static int digits(int64_t v)
{
    int n = 1;
    for (; v >= 10; v /= 10) n++;
    return n;
}

static void print_classifier(FILE *out, const ars_eval_report *p)
{
    const ars_eval_result *r = &p->result;
    const int C = r->classes;
    fprintf(out, "loss %.6f  accuracy %.4f (%" PRId64 " of %" PRId64 ")\n\n", r->loss, r->accuracy, r->correct,
            r->samples);
    int name_width = 12;
    for (int c = 0; c < C && c < 64; c++) {
        int w = digits(c) + 1 + (int)strlen(p->class_names[c]);
        if (w > name_width) name_width = w;
    }
    fprintf(out, "%-*s  %9s  %6s  %6s  %7s\n", name_width, "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < C; c++) {
        char name[96];
        snprintf(name, sizeof name, "%d%s%s", c, c < 64 && p->class_names[c][0] ? " " : "",
                 c < 64 ? p->class_names[c] : "");
        fprintf(out, "%-*s  %9.4f  %6.4f  %6.4f  %7" PRId64 "\n", name_width, name, r->precision[c], r->recall[c],
                r->f1[c], r->support[c]);
    }
    fprintf(out, "%-*s  %9.4f  %6.4f  %6.4f  %7" PRId64 "\n", name_width, "macro avg", r->macro_precision,
            r->macro_recall, r->macro_f1, r->samples);
    fprintf(out, "%-*s  %9.4f  %6.4f  %6.4f  %7" PRId64 "\n", name_width, "weighted avg", r->weighted_precision,
            r->weighted_recall, r->weighted_f1, r->samples);
    if (C > 40) {
        fprintf(out, "\nconfusion matrix: %d x %d, in --json\n", C, C);
        return;
    }
    int64_t largest = 0;
    for (size_t i = 0; i < (size_t)C * C; i++) largest = r->confusion[i] > largest ? r->confusion[i] : largest;
    const int width = (digits(largest) > digits(C - 1) ? digits(largest) : digits(C - 1)) + 1;
    fprintf(out, "\nconfusion matrix (rows: true class, columns: predicted class)\n%-9s", "true\\pred");
    for (int c = 0; c < C; c++) fprintf(out, " %*d", width, c);
    fputc('\n', out);
    for (int t = 0; t < C; t++) {
        fprintf(out, "%9d", t);
        for (int c = 0; c < C; c++) fprintf(out, " %*" PRId64, width, r->confusion[(size_t)t * C + c]);
        fputc('\n', out);
    }
}

void ars_eval_print(FILE *out, const ars_eval_report *p)
{
    print_header(out, p);
    const ars_eval_result *r = &p->result;
    if (r->classifier) {
        print_classifier(out, p);
        return;
    }
    fprintf(out, "loss %.6f (mse)  mse %.6g  mae %.6g  rmse %.6g  r2 %.6g (%d output%s)\n", r->loss, r->mse, r->mae,
            r->rmse, r->r2, r->outputs, r->outputs == 1 ? "" : "s");
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

static void json_number(FILE *out, double v)
{
    if (isfinite(v)) fprintf(out, "%.17g", v);
    else fputs("null", out);
}

static void json_field(FILE *out, const char *name, double v)
{
    fprintf(out, ",\"%s\":", name);
    json_number(out, v);
}

static void json_average(FILE *out, const char *name, double precision, double recall, double f1, int64_t support)
{
    fprintf(out, ",\"%s\":{\"precision\":", name);
    json_number(out, precision);
    fputs(",\"recall\":", out);
    json_number(out, recall);
    fputs(",\"f1\":", out);
    json_number(out, f1);
    fprintf(out, ",\"support\":%" PRId64 "}", support);
}

void ars_eval_json(FILE *out, const ars_eval_report *p)
{
    const ars_eval_result *r = &p->result;
    fputs("{\"checkpoint\":", out);
    json_string(out, p->checkpoint);
    fprintf(out, ",\"step\":%" PRId64 ",\"epoch\":%d,\"data\":", p->step, p->epoch);
    json_string(out, p->data);
    fprintf(out, ",\"split\":\"%s\",\"samples\":%" PRId64 ",\"world_size\":%d,\"batch\":%d", p->split, r->samples,
            p->world, p->batch);
    fputs(",\"standardization\":{\"mean\":", out);
    json_number(out, p->data_mean);
    fputs(",\"std\":", out);
    json_number(out, p->data_std);
    fprintf(out, ",\"source\":\"%s\"}", p->stats_stored ? "checkpoint" : "recomputed");
    fprintf(out, ",\"task\":\"%s\"", r->classifier ? "classification" : "regression");
    json_field(out, "loss", r->loss);
    if (!r->classifier) {
        fprintf(out, ",\"outputs\":%d", r->outputs);
        json_field(out, "mse", r->mse);
        json_field(out, "mae", r->mae);
        json_field(out, "rmse", r->rmse);
        json_field(out, "r2", r->r2);
        fputs("}\n", out);
        return;
    }
    const int C = r->classes;
    json_field(out, "accuracy", r->accuracy);
    fprintf(out, ",\"correct\":%" PRId64 ",\"classes\":%d,\"per_class\":[", r->correct, C);
    for (int c = 0; c < C; c++) {
        fprintf(out, "%s{\"class\":%d", c ? "," : "", c);
        if (c < 64 && p->class_names[c][0]) {
            fputs(",\"name\":", out);
            json_string(out, p->class_names[c]);
        }
        json_field(out, "precision", r->precision[c]);
        json_field(out, "recall", r->recall[c]);
        json_field(out, "f1", r->f1[c]);
        fprintf(out, ",\"support\":%" PRId64 ",\"predicted\":%" PRId64 "}", r->support[c], r->predicted[c]);
    }
    fputc(']', out);
    json_average(out, "macro_avg", r->macro_precision, r->macro_recall, r->macro_f1, r->samples);
    json_average(out, "weighted_avg", r->weighted_precision, r->weighted_recall, r->weighted_f1, r->samples);
    fputs(",\"confusion_matrix\":[", out);
    for (int t = 0; t < C; t++) {
        fputs(t ? ",[" : "[", out);
        for (int c = 0; c < C; c++) fprintf(out, "%s%" PRId64, c ? "," : "", r->confusion[(size_t)t * C + c]);
        fputc(']', out);
    }
    fputs("]}\n", out);
}
