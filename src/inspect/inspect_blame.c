/* inspect_blame: `arsenal inspect --blame CKPT.h5`. Finds the first
 * incident in the history (a non-finite loss or gradient, or a spike: the
 * loss or the global gradient norm above explode_spike times its running
 * median) and walks back from it to the first record where a layer's
 * gradient ratio (its parameter-gradient norm over the output layer's)
 * left its usual level by a factor of 10 or more: that layer and step are
 * where the gradient broke. When no ratio broke (every layer grew
 * together) the layers' own gradient norms are judged the same way. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "inspect.h"

enum { BASELINE_RECORDS = 20 };
static const double BREAK_DECADES = 1.0;   /* a factor of 10 */

static double grad_at(const ars_history *h, size_t r, int l)
{
    return ars_inspect_value(h, r, ARS_HIST_GRAD_NORM, l);
}

static int record_nonfinite(const ars_history *h, size_t r)
{
    return h->steps[r].nonfinite || !isfinite(h->steps[r].loss) || !isfinite(h->steps[r].grad_norm);
}

/* A figure of layer l at record r; output is the output layer (the ratio's denominator). */
typedef double (*figure_fn)(const ars_history *h, size_t r, int l, int output);

/* The median of the finite values of f over records [from, to). */
static double median_over(const ars_history *h, size_t from, size_t to, figure_fn f, int l, int output,
                          double *scratch)
{
    size_t n = 0;
    for (size_t r = from; r < to; r++) {
        if (record_nonfinite(h, r)) continue;
        double v = f(h, r, l, output);
        if (isfinite(v) && v > 0) scratch[n++] = v;
    }
    return ars_inspect_median(scratch, n);
}

static double loss_of(const ars_history *h, size_t r, int l, int output)
{
    (void)l, (void)output;
    return h->steps[r].loss;
}

static double norm_of(const ars_history *h, size_t r, int l, int output)
{
    (void)l, (void)output;
    return h->steps[r].grad_norm;
}

static double layer_norm_of(const ars_history *h, size_t r, int l, int output)
{
    (void)output;
    return grad_at(h, r, l);
}

static double ratio_of(const ars_history *h, size_t r, int l, int output)
{
    double out = grad_at(h, r, output);
    return out > 0 ? grad_at(h, r, l) / out : NAN;
}

/* The first incident: a non-finite record, or the loss or global norm above
 * spike x the median of the records before it. */
static size_t find_incident(const ars_history *h, double spike, int window, double *scratch, char *what, size_t size)
{
    for (size_t r = 0; r < h->count; r++) {
        if (record_nonfinite(h, r)) {
            snprintf(what, size, "a non-finite %s (loss %g, global gradient norm %g; the update was skipped)",
                     isfinite(h->steps[r].loss) ? "gradient" : "loss", h->steps[r].loss, h->steps[r].grad_norm);
            return r;
        }
        if (r < 3) continue;
        size_t from = r > (size_t)window ? r - (size_t)window : 0;
        double loss_median = median_over(h, from, r, loss_of, 0, 0, scratch);
        double norm_median = median_over(h, from, r, norm_of, 0, 0, scratch);
        if (isfinite(loss_median) && h->steps[r].loss > spike * loss_median) {
            snprintf(what, size, "a loss spike (loss %.4g, %.3gx the median %.4g of the %zu records before)",
                     h->steps[r].loss, h->steps[r].loss / loss_median, loss_median, r - from);
            return r;
        }
        if (isfinite(norm_median) && h->steps[r].grad_norm > spike * norm_median) {
            snprintf(what, size, "a gradient spike (global norm %.4g, %.3gx the median %.4g of the %zu records "
                     "before)", h->steps[r].grad_norm, h->steps[r].grad_norm / norm_median, norm_median, r - from);
            return r;
        }
    }
    return h->count;
}

typedef struct verdict {
    size_t record;
    int layer;
    double base, value, decades;
    int by_ratio;
} verdict;

/* The first record in [from, to] where a candidate layer's figure left
 * its baseline by BREAK_DECADES or more; the layer that left it most. */
static int find_break(const ars_inspect_run *run, size_t from, size_t to, const double *base, figure_fn f,
                      verdict *v)
{
    const int output_layer = run->output_layer;
    const ars_history *h = &run->history;
    for (size_t r = from; r <= to && r < h->count; r++) {
        int best = -1;
        double best_decades = 0, best_value = NAN;
        for (int k = 0; k < run->layer_count; k++) {
            const int l = run->layers[k].index;
            if (l == output_layer && f == ratio_of) continue;
            double value = f(h, r, l, output_layer);
            if (!(base[k] > 0) || !isfinite(base[k])) continue;
            double decades = isfinite(value) && value > 0 ? fabs(log10(value / base[k])) : INFINITY;
            if (value == 0 || decades < BREAK_DECADES) continue;
            if (decades > best_decades) {
                best = k;
                best_decades = decades;
                best_value = value;
            }
        }
        if (best >= 0) {
            *v = (verdict){.record = r, .layer = run->layers[best].index, .base = base[best], .value = best_value,
                           .decades = best_decades, .by_ratio = f == ratio_of};
            return 1;
        }
    }
    return 0;
}

int ars_inspect_blame(FILE *out, const ars_inspect_run *run)
{
    const ars_history *h = &run->history;
    if (h->count == 0)
        return ars_error(ARS_EINVAL, "%s: the checkpoint has no gradient history to blame ([run] probe_every "
                         "records it)", run->path);
    if (run->output_layer < 0 || run->layer_count < 2)
        return ars_error(ARS_EINVAL, "%s: fewer than two layers with parameters: no gradient ratio to judge", run->path);
    const int output_layer = run->output_layer;
    const ars_health_config *c = &run->health_config;
    const int window = c->explode_window > 0 ? c->explode_window : BASELINE_RECORDS;
    double *scratch = malloc(sizeof(double) * (h->count + 1)), *base = malloc(sizeof(double) * (size_t)run->layer_count);
    if (!scratch || !base) {
        free(scratch);
        free(base);
        return ars_error(ARS_ENOMEM, "inspect --blame: out of memory");
    }
    char what[300];
    const size_t incident = find_incident(h, c->explode_spike, window, scratch, what, sizeof what);
    fprintf(out, "blame: %s (%zu records, steps %lld-%lld)\n", run->path, h->count, (long long)h->steps[0].step,
            (long long)h->steps[h->count - 1].step);
    if (incident == h->count) {
        fprintf(out, "  no incident: no non-finite step, and neither the loss nor the global gradient norm rose "
                "above %gx its running median ([health] explode_spike)\n", c->explode_spike);
        free(scratch);
        free(base);
        return 0;
    }
    const int64_t incident_step = h->steps[incident].step;
    fprintf(out, "  incident: step %lld, %s\n", (long long)incident_step, what);
    /* the baseline: the first records (up to a window) before the incident; the walk: from the end of it */
    size_t baseline_end = incident < (size_t)window ? (incident + 1) / 2 : (size_t)window;
    if (baseline_end == 0) baseline_end = incident ? 1 : 0;
    if (incident >= 2 * (size_t)window) baseline_end = incident - (size_t)window;   /* the recent usual level */
    size_t baseline_start = baseline_end > (size_t)window ? baseline_end - (size_t)window : 0;
    verdict v;
    int found = 0;
    if (baseline_end > baseline_start) {
        for (int k = 0; k < run->layer_count; k++)
            base[k] = median_over(h, baseline_start, baseline_end, ratio_of, run->layers[k].index, output_layer,
                                  scratch);
        found = find_break(run, baseline_end, incident, base, ratio_of, &v);
        if (!found) {
            for (int k = 0; k < run->layer_count; k++)
                base[k] = median_over(h, baseline_start, baseline_end, layer_norm_of, run->layers[k].index,
                                      output_layer, scratch);
            found = find_break(run, baseline_end, incident, base, layer_norm_of, &v);
        }
    }
    if (found) {
        const char *name = h->layer_names[v.layer];
        fprintf(out, "  first break: layer %s at step %lld (%lld steps before the incident): its %s went from "
                "%.3g (median of steps %lld-%lld) to %.3g, %.1f decades %s\n", name, (long long)h->steps[v.record].step,
                (long long)(incident_step - h->steps[v.record].step),
                v.by_ratio ? "gradient ratio to the output layer" : "gradient norm (every layer's ratio stayed)",
                v.base, (long long)h->steps[baseline_start].step, (long long)h->steps[baseline_end - 1].step, v.value,
                v.decades, v.value > v.base || !isfinite(v.value) ? "up" : "down");
    } else {
        fprintf(out, "  first break: none found: %s\n",
                baseline_end > baseline_start ? "no layer's gradient ratio or norm left its usual level by 10x or "
                                                "more before the incident (it came in one step)"
                                              : "the incident is at the first record: there is no usual level to "
                                                "compare with");
    }
    /* the evidence: the global figures and the blamed layer from the break to the incident */
    const size_t from = found ? (v.record > 2 ? v.record - 2 : 0) : (incident > 4 ? incident - 4 : 0);
    const int shown_layer = found ? v.layer : run->output_layer;
    fprintf(out, "\n  %8s %12s %12s %12s %12s %12s\n", "step", "loss", "grad norm", "clip scale", "layer grad",
            "ratio");
    size_t rows = 0;
    for (size_t r = from; r <= incident && r < h->count; r++) {
        if (rows++ >= 24 && r + 4 < incident) {   /* a long walk: the start and the last records */
            if (rows == 26) fprintf(out, "  %8s\n", "...");
            continue;
        }
        fprintf(out, "  %8lld %12.4g %12.4g %12.3g %12.4g %12.4g%s\n", (long long)h->steps[r].step, h->steps[r].loss,
                h->steps[r].grad_norm, h->steps[r].clip_scale, grad_at(h, r, shown_layer), ratio_of(h, r, shown_layer, output_layer),
                found && r == v.record ? "  <- break" : r == incident ? "  <- incident" : "");
    }
    fprintf(out, "  (layer grad and ratio of %s; layer gradients as applied, after clipping: the ratio is not "
            "changed by clipping)\n", h->layer_names[shown_layer]);
    if (record_nonfinite(h, incident)) {
        int listed = 0;
        fprintf(out, "  non-finite layer gradients at the incident:");
        for (int k = 0; k < run->layer_count; k++) {
            double g = grad_at(h, incident, run->layers[k].index);
            if (isfinite(g)) continue;
            if (listed++ < 12) fprintf(out, " %s", h->layer_names[run->layers[k].index]);
        }
        fprintf(out, "%s\n", listed ? (listed > 12 ? " ..." : "") : " none (the loss was non-finite, or no layer was recorded)");
    }
    fprintf(out, "  replay that step layer by layer: arsenal replay CKPT.h5 --step %lld (a checkpoint at or before it)\n",
            (long long)(found ? h->steps[v.record].step : incident_step));
    free(scratch);
    free(base);
    return 0;
}
