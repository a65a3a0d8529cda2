/* inspect_plot: `arsenal inspect --plot DIR`: the gradient history drawn
 * with PLplot, each figure as PNG (pngcairo) and SVG (svgcairo, or PLplot's
 * own svg): gradient flow (per-layer gradient norm against depth at a few
 * steps), a layer x step heatmap of log10 gradient norms, loss and global
 * gradient norm over time with clipped and non-finite steps and diagnosis
 * starts marked, and per-layer gradient histograms. Each figure is its own
 * PLplot stream (src/plot/plot.c opens and ends it), ended before the next. */
#define _POSIX_C_SOURCE 200809L
#include "inspect.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arsenal/error.h"
#include "../plot/plot.h"

#ifndef ARSENAL_HAVE_PLPLOT

int ars_inspect_plot(const char *dir, const ars_inspect_run *const *runs, int count, FILE *log)
{
    (void)dir, (void)runs, (void)count, (void)log;
    return ars_error(ARS_EINVAL, "--plot: this arsenal was built without PLplot (install the Debian packages "
                     "libplplot-dev and plplot-driver-cairo, then rebuild)");
}

#else

enum { PAGE_WIDTH = 1200, PAGE_HEIGHT = 800, HEATMAP_MAX_COLUMNS = 300, FLOW_STEPS = 5, MAX_SERIES = 12 };

/* Character heights relative to PLplot's default. */
static const PLFLT TEXT_SIZE = 0.75, TITLE_SIZE = 0.95, SMALL_SIZE = 0.62, MARKER_SIZE = 0.5;

/* Markers (UTF-8, drawn with plstring so legend and plot match). */
static const char *const DOT = "\u25cf", *const DIAMOND = "\u25c6", *const CROSS = "\u00d7",
                  *const DOWN = "\u25bd";

/* cmap0: background, foreground, grid, then the series colors. */
enum { C_BG, C_FG, C_GRID, C_BLUE, C_ORANGE, C_GREEN, C_RED, C_PURPLE, C_BROWN, C_PINK, C_OLIVE, C_CYAN, C_GRAY,
       C_ZERO, C_COUNT };
static const PLINT palette_rgb[C_COUNT][3] = {
    {255, 255, 255}, {0, 0, 0}, {215, 215, 215}, {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
    {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {188, 189, 34}, {23, 190, 207}, {127, 127, 127},
    {200, 200, 200}};
static const PLINT series_colors[] = {C_BLUE, C_ORANGE, C_GREEN, C_PURPLE, C_BROWN, C_PINK, C_OLIVE, C_CYAN};

typedef struct plot_job {
    const ars_inspect_run *const *runs;
    int count;     /* runs drawn together (gradient flow, loss) */
    int which;     /* the run of a one-run figure */
} plot_job;

/* Draws one figure into dir/name.<ext> for each device (ars_plot_figure). */
static int render(const char *dir, const char *name, void (*draw)(const void *job), const plot_job *job,
                  const char *const devices[2], FILE *log)
{
    const ars_plot_page style = {.width = PAGE_WIDTH, .height = PAGE_HEIGHT, .palette = palette_rgb,
                                 .colors = C_COUNT, .text_size = TEXT_SIZE};
    return ars_plot_figure(dir, name, devices, &style, draw, job, log);
}

/* Labels of a log10 axis: "10^k" (PLplot's 'l' option labels every
 * decade, which overlaps on a 30-decade axis). */
static void decade_label(PLINT axis, PLFLT value, char *label, PLINT length, PLPointer data)
{
    (void)axis, (void)data;
    snprintf(label, (size_t)length, "10#u%.0f#d", value);
}

/* Grid lines in light gray, then the frame and labels in black. ylog: the
 * y values are log10, labelled as powers of ten every few decades. */
static void draw_axes(const char *xopt, const char *yopt, int ylog, double ylo, double yhi)
{
    PLFLT ytick = ylog ? ars_plot_decade_step(ylo, yhi) : 0;
    PLINT ysub = ylog ? (ytick == 1 ? 1 : ytick <= 10 ? (PLINT)ytick : 5) : 0;
    char y_options[32];
    snprintf(y_options, sizeof y_options, "%s%s", yopt, ylog ? "o" : "");
    plcol0(C_GRID);
    plwidth(0.5);
    plbox("g", 0, 0, "g", ytick, ysub);
    plwidth(1);
    plcol0(C_FG);
    plschr(0, TEXT_SIZE);
    if (ylog) plslabelfunc(decade_label, NULL);
    plbox(xopt, 0, 0, y_options, ytick, ysub);
    if (ylog) plslabelfunc(NULL, NULL);
}

static void labels(const char *x, const char *y, const char *title)
{
    plcol0(C_FG);
    plschr(0, TEXT_SIZE);
    plmtex("b", 3.0, 0.5, 0.5, x);
    plmtex("l", 5.0, 0.5, 0.5, y);
    plschr(0, TITLE_SIZE);
    plmtex("t", 1.5, 0.5, 0.5, title);
    plschr(0, TEXT_SIZE);
}

static void message_page(const char *title, const char *text)
{
    plvpor(0.1, 0.9, 0.1, 0.9);
    plwind(0, 1, 0, 1);
    plcol0(C_FG);
    plbox("bc", 0, 0, "bc", 0, 0);
    labels("", "", title);
    plptex(0.5, 0.5, 1, 0, 0.5, text);
}

/* Markers at the finite points of x/y (a NaN coordinate would put cairo
 * into an error state that silently drops the rest of the figure). */
static void markers(int n, const PLFLT *x, const PLFLT *y, const char *marker)
{
    plschr(0, MARKER_SIZE);
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) plstring(1, &x[i], &y[i], marker);
    plschr(0, TEXT_SIZE);
}

/* Lines broken at non-finite points, with this file's marker size. */
static void broken_line(int n, const PLFLT *x, const PLFLT *y, const char *marker)
{
    ars_plot_broken_line(n, x, y, marker, MARKER_SIZE, TEXT_SIZE);
}

static double log10_or_nan(double v) { return v > 0 && isfinite(v) ? log10(v) : NAN; }

/* Legend at the right, outside the plot. */
typedef struct legend {
    int n;
    const char *text[MAX_SERIES + 4];
    char storage[MAX_SERIES + 4][96];
    PLINT opt[MAX_SERIES + 4], text_color[MAX_SERIES + 4], line_color[MAX_SERIES + 4], line_style[MAX_SERIES + 4];
    PLFLT line_width[MAX_SERIES + 4], symbol_scale[MAX_SERIES + 4];
    PLINT symbol_color[MAX_SERIES + 4], symbol_number[MAX_SERIES + 4];
    const char *symbol[MAX_SERIES + 4];
} legend;

static void legend_add(legend *g, const char *text, PLINT color, PLINT style, PLFLT width, const char *symbol)
{
    if (g->n >= MAX_SERIES + 4) return;
    int i = g->n++;
    ars_plot_plain_text(text, g->storage[i], sizeof g->storage[i]);
    g->text[i] = g->storage[i];
    g->opt[i] = (style > 0 ? PL_LEGEND_LINE : 0) | (symbol ? PL_LEGEND_SYMBOL : 0);
    g->text_color[i] = C_FG;
    g->line_color[i] = color;
    g->line_style[i] = style > 0 ? style : 1;
    g->line_width[i] = width;
    g->symbol_color[i] = color;
    g->symbol_scale[i] = MARKER_SIZE;
    g->symbol_number[i] = symbol ? 1 : 0;
    g->symbol[i] = symbol ? symbol : "";
}

static void legend_draw(const legend *g, PLINT position)
{
    if (g->n == 0) return;
    PLFLT width, height;
    plschr(0, SMALL_SIZE);
    pllegend(&width, &height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, position, 0.015, 0.0, 0.05, C_BG,
             C_FG, 1, 0, 0, g->n, g->opt, 0.8, SMALL_SIZE, 2.0, 0.0, g->text_color, g->text, NULL, NULL, NULL, NULL,
             g->line_color, g->line_style, g->line_width, g->symbol_color, g->symbol_scale, g->symbol_number,
             g->symbol);
    plschr(0, TEXT_SIZE);
}

/* ---- gradient flow ------------------------------------------------------------ */

/* Up to `want` finite records spread over the history (first and last included). */
static int pick_records(const ars_inspect_run *run, int want, size_t *out)
{
    const ars_history *h = &run->history;
    size_t finite = run->finite_records;
    if (finite == 0) return 0;
    int n = finite < (size_t)want ? (int)finite : want;
    int found = 0;
    for (int k = 0; k < n; k++) {
        size_t target = n == 1 ? finite - 1 : (size_t)((double)k * (double)(finite - 1) / (double)(n - 1) + 0.5);
        size_t seen = 0;
        for (size_t r = 0; r < h->count; r++) {
            if (!ars_inspect_record_finite(h, r)) continue;
            if (seen++ == target) {
                if (found == 0 || out[found - 1] != r) out[found++] = r;
                break;
            }
        }
    }
    return found;
}

static void draw_gradient_flow(const void *data)
{
    const plot_job *job = data;
    typedef struct series {
        const ars_inspect_run *run;
        size_t record;
        PLINT color, style;
        PLFLT width;
    } series;
    series all[MAX_SERIES];
    int n_series = 0, depth = 0;
    for (int k = 0; k < job->count; k++) {
        const ars_inspect_run *run = job->runs[k];
        size_t records[FLOW_STEPS];
        int want = job->count == 1 ? FLOW_STEPS : 2;
        int n = pick_records(run, want, records);
        for (int i = 0; i < n && n_series < MAX_SERIES; i++) {
            series *s = &all[n_series++];
            s->run = run;
            s->record = records[i];
            if (job->count == 1) {
                s->color = series_colors[i % (int)(sizeof series_colors / sizeof series_colors[0])];
                s->style = 1;
                s->width = i == n - 1 ? 2.5 : 1.5;
            } else {
                s->color = series_colors[k];
                s->style = i == n - 1 ? 1 : 2;
                s->width = i == n - 1 ? 2.5 : 1.5;
            }
        }
        if (run->layer_count > depth) depth = run->layer_count;
    }
    if (n_series == 0 || depth == 0) {
        message_page("Gradient flow", "no finite gradient record in the history");
        return;
    }
    PLFLT *x = malloc(sizeof *x * (size_t)depth), *y = malloc(sizeof *y * (size_t)depth);
    if (!x || !y) {
        free(x);
        free(y);
        return;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int d = 0; d < all[s].run->layer_count; d++) {
            double v = log10_or_nan(ars_inspect_value(&all[s].run->history, all[s].record, ARS_HIST_GRAD_NORM,
                                                      all[s].run->layers[d].index));
            if (isfinite(v)) {
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
        }
    /* The vanishing threshold below the output layer's last gradient norm. */
    double threshold = NAN;
    if (job->count == 1) {
        const ars_inspect_run *run = job->runs[0];
        size_t last = all[n_series - 1].record;
        double g_out = run->output_layer >= 0
                           ? ars_inspect_value(&run->history, last, ARS_HIST_GRAD_NORM, run->output_layer)
                           : 0;
        threshold = log10_or_nan(g_out * run->health_config.vanish_ratio);
        if (isfinite(threshold)) {
            lo = fmin(lo, threshold);
            hi = fmax(hi, threshold);
        }
    }
    ars_plot_pad_range(&lo, &hi, 0.06);
    int zeros = 0;
    plvpor(0.09, 0.70, 0.10, 0.91);
    plwind(0.5, depth + 0.5, lo, hi);
    draw_axes("bcnst", "bcnstv", 1, lo, hi);
    legend g = {0};
    if (isfinite(threshold)) {
        PLFLT tx[2] = {0.5, depth + 0.5}, ty[2] = {threshold, threshold};
        plcol0(C_RED);
        pllsty(2);
        plline(2, tx, ty);
        pllsty(1);
        char text[96];
        snprintf(text, sizeof text, "vanishing: %.0e x output", job->runs[0]->health_config.vanish_ratio);
        legend_add(&g, text, C_RED, 2, 1.0, NULL);
    }
    for (int s = 0; s < n_series; s++) {
        const ars_inspect_run *run = all[s].run;
        for (int d = 0; d < run->layer_count; d++) {
            x[d] = d + 1;
            y[d] = log10_or_nan(ars_inspect_value(&run->history, all[s].record, ARS_HIST_GRAD_NORM,
                                                  run->layers[d].index));
        }
        plcol0(all[s].color);
        pllsty(all[s].style);
        plwidth(all[s].width);
        broken_line(run->layer_count, x, y, DOT);
        plwidth(1);
        pllsty(1);
        for (int d = 0; d < run->layer_count; d++) {   /* exactly zero: a marker on the bottom edge */
            if (ars_inspect_value(&run->history, all[s].record, ARS_HIST_GRAD_NORM, run->layers[d].index) != 0)
                continue;
            PLFLT zx = d + 1, zy = lo + 0.02 * (hi - lo);
            markers(1, &zx, &zy, DOWN);
            zeros = 1;
        }
        char text[96];
        if (job->count == 1) snprintf(text, sizeof text, "step %lld", (long long)run->history.steps[all[s].record].step);
        else snprintf(text, sizeof text, "%d: %.28s, step %lld", s / 2 + 1, run->label,
                      (long long)run->history.steps[all[s].record].step);
        legend_add(&g, text, all[s].color, all[s].style, all[s].width, DOT);
    }
    if (zeros) legend_add(&g, "gradient exactly 0", C_FG, 0, 1, DOWN);
    char title[160];
    if (job->count == 1) {
        char label[80];
        ars_plot_plain_text(job->runs[0]->label, label, sizeof label);
        snprintf(title, sizeof title, "Gradient flow: %s", label);
    } else {
        snprintf(title, sizeof title, "Gradient flow: 1 against 2 (solid: last step, dashed: first)");
    }
    labels("depth (layers with parameters, 1 = input side)", "parameter gradient norm", title);
    legend_draw(&g, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE);
    free(x);
    free(y);
}

/* ---- heatmap --------------------------------------------------------------------- */

/* One filled rectangle per cell, colored by cmap1 (plimagefr's cairo
 * rasterization misplaces cells): column c spans [x0, x1] / columns, row d
 * spans [d + 0.5, d + 1.5]. */
static void fill_cells(PLFLT **z, int columns, int rows, double x0, double x1, double zmin, double zmax)
{
    const double width = (x1 - x0) / columns;
    for (int c = 0; c < columns; c++)
        for (int d = 0; d < rows; d++) {
            PLFLT xs[4] = {x0 + c * width, x0 + c * width, x0 + (c + 1) * width, x0 + (c + 1) * width};
            PLFLT ys[4] = {d + 0.5, d + 1.5, d + 1.5, d + 0.5};
            if (isfinite(z[c][d])) plcol1((z[c][d] - zmin) / (zmax - zmin));
            else plcol0(C_ZERO);
            plfill(4, xs, ys);
        }
}

static void draw_heatmap(const void *data)
{
    const plot_job *job = data;
    const ars_inspect_run *run = job->runs[job->which];
    const ars_history *h = &run->history;
    const int n = run->layer_count;
    char label[80], title[160];
    ars_plot_plain_text(run->label, label, sizeof label);
    snprintf(title, sizeof title, "Gradient norm per layer and step (log10; gray: exactly 0): %s", label);
    if (n == 0 || run->finite_records == 0) {
        message_page(title, "no finite gradient record in the history");
        return;
    }
    size_t *finite = malloc(sizeof *finite * run->finite_records);
    if (!finite) return;
    size_t T = 0;
    for (size_t r = 0; r < h->count; r++)
        if (ars_inspect_record_finite(h, r)) finite[T++] = r;
    int columns = T < HEATMAP_MAX_COLUMNS ? (int)T : HEATMAP_MAX_COLUMNS;
    PLFLT **z;
    plAlloc2dGrid(&z, columns, n);
    double zmin = INFINITY, zmax = -INFINITY;
    for (int c = 0; c < columns; c++) {
        size_t from = (size_t)c * T / (size_t)columns, to = (size_t)(c + 1) * T / (size_t)columns;
        for (int d = 0; d < n; d++) {
            double sum = 0;
            int count = 0;
            for (size_t i = from; i < to; i++) {
                double v = log10_or_nan(ars_inspect_value(h, finite[i], ARS_HIST_GRAD_NORM, run->layers[d].index));
                if (isfinite(v)) {
                    sum += v;
                    count++;
                }
            }
            z[c][d] = count ? sum / count : NAN;
            if (count) {
                zmin = fmin(zmin, z[c][d]);
                zmax = fmax(zmax, z[c][d]);
            }
        }
    }
    if (!isfinite(zmin)) zmin = zmax = 0;
    if (zmax - zmin < 1e-6) {
        zmin -= 0.5;
        zmax += 0.5;
    }
    double x0 = (double)h->steps[finite[0]].step, x1 = (double)h->steps[finite[T - 1]].step;
    if (x1 <= x0) {
        x0 -= 0.5;
        x1 += 0.5;
    }
    plvpor(0.14, 0.82, 0.10, 0.91);
    plwind(x0, x1, 0.5, n + 0.5);
    fill_cells(z, columns, n, x0, x1, zmin, zmax);
    plcol0(C_FG);
    int named = n <= 32;
    plschr(0, TEXT_SIZE);
    plbox("bcnst", 0, 0, named ? "bc" : "bcnstv", 0, 0);
    if (named) {
        plschr(0, n > 20 ? SMALL_SIZE * 0.9 : SMALL_SIZE);
        for (int d = 0; d < n; d++)
            plmtex("lv", 0.8, (d + 0.5) / n, 1.0, run->health.names[run->layers[d].index]);
    }
    labels("step", named ? "" : "layer (depth, input side at the bottom)", title);
    if (named) plmtex("l", 10.5, 0.5, 0.5, "layer (input side at the bottom)");
    /* color bar */
    PLFLT width, height, values[2] = {zmin, zmax};
    PLINT n_values[1] = {2}, label_opts[1] = {PL_COLORBAR_LABEL_RIGHT}, sub_ticks[1] = {0};
    PLFLT ticks[1] = {0};
    const char *bar_labels[1] = {"log10 gradient norm"}, *axis_opts[1] = {"bcvtm"};
    const PLFLT *value_rows[1] = {values};
    plschr(0, SMALL_SIZE);
    plcolorbar(&width, &height, PL_COLORBAR_IMAGE | PL_COLORBAR_LABEL_RIGHT, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE,
               0.02, 0.0, 0.03, 0.79, C_BG, C_FG, 1, 0, 0, 0, 0, 1, label_opts, bar_labels, 1, axis_opts, ticks,
               sub_ticks, n_values, value_rows);
    plschr(0, TEXT_SIZE);
    plFree2dGrid(z, columns, n);
    free(finite);
}

/* ---- loss and global gradient norm ------------------------------------------------- */

/* Steps of the diagnosis starts recorded in the history ("step N: ... starts"). */
static int event_steps(const ars_history *h, double *out, int max)
{
    int n = 0;
    for (size_t e = 0; e < h->event_count && n < max; e++) {
        long long step;
        if (strstr(h->events[e], " starts") && sscanf(h->events[e], "step %lld:", &step) == 1) out[n++] = (double)step;
    }
    return n;
}

static void vertical_line(double x, double lo, double hi)
{
    PLFLT xs[2] = {x, x}, ys[2] = {lo, hi};
    plline(2, xs, ys);
}

/* One panel: the loss (panel 0) or the global gradient norm (panel 1). */
static void draw_series_panel(const plot_job *job, int panel, double x0, double x1)
{
    double lo = INFINITY, hi = -INFINITY;
    int positive = 1;
    for (int k = 0; k < job->count; k++) {
        const ars_history *h = &job->runs[k]->history;
        for (size_t r = 0; r < h->count; r++) {
            double v = panel == 0 ? h->steps[r].loss : h->steps[r].grad_norm;
            if (!isfinite(v)) continue;
            positive &= v > 0;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
        if (panel == 0)
            for (size_t e = 0; e < h->eval_count; e++) {
                double v = h->evals[e].test_loss;
                if (!isfinite(v)) continue;
                positive &= v > 0;
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
    }
    int logy = positive && isfinite(lo) && hi / lo > (panel == 1 ? 10 : 30);   /* a decade or more */
    if (logy) {
        lo = log10(lo);
        hi = log10(hi);
    }
    ars_plot_pad_range(&lo, &hi, 0.05);
    plvpor(0.09, 0.72, panel == 0 ? 0.55 : 0.10, panel == 0 ? 0.91 : 0.46);
    plwind(x0, x1, lo, hi);
    draw_axes(panel == 0 ? "bcst" : "bcnst", "bcnstv", logy, lo, hi);
    legend g = {0};
    int marked_nonfinite = 0, marked_events = 0, marked_clip = 0;
    for (int k = 0; k < job->count; k++) {
        const ars_inspect_run *run = job->runs[k];
        const ars_history *h = &run->history;
        plcol0(C_RED);
        for (size_t r = 0; r < h->count; r++)
            if (!ars_inspect_record_finite(h, r)) {
                vertical_line((double)h->steps[r].step, lo, hi);
                marked_nonfinite = 1;
            }
        double starts[256];
        int n_starts = event_steps(h, starts, 256);
        plcol0(C_GRAY);
        pllsty(3);
        for (int i = 0; i < n_starts; i++) vertical_line(starts[i], lo, hi);
        pllsty(1);
        marked_events |= n_starts > 0;
    }
    for (int k = 0; k < job->count; k++) {
        const ars_inspect_run *run = job->runs[k];
        const ars_history *h = &run->history;
        PLINT color = series_colors[k];
        PLFLT *x = malloc(sizeof *x * (h->count + 1)), *y = malloc(sizeof *y * (h->count + 1));
        if (!x || !y) {
            free(x);
            free(y);
            return;
        }
        for (size_t r = 0; r < h->count; r++) {
            double v = panel == 0 ? h->steps[r].loss : h->steps[r].grad_norm;
            x[r] = (double)h->steps[r].step;
            y[r] = logy ? log10_or_nan(v) : isfinite(v) ? v : NAN;
        }
        plcol0(color);
        plwidth(1.5);
        broken_line((int)h->count, x, y, h->count == 1 ? DOT : NULL);
        plwidth(1);
        char text[96], prefix[64] = "";
        if (job->count > 1) snprintf(prefix, sizeof prefix, "%d: %.28s ", k + 1, run->label);
        if (job->count > 1 && panel == 1) snprintf(text, sizeof text, "%.*s", (int)strlen(prefix) - 1, prefix);
        else snprintf(text, sizeof text, "%s%s", prefix, panel == 0 ? "training loss" : "gradient norm before clipping");
        legend_add(&g, text, color, 1, 1.5, NULL);
        if (panel == 0 && h->eval_count) {
            size_t m = 0;
            for (size_t e = 0; e < h->eval_count; e++) {
                double v = logy ? log10_or_nan(h->evals[e].test_loss) : h->evals[e].test_loss;
                if (!isfinite(v)) continue;
                x[m] = (double)h->evals[e].step;
                y[m++] = v;
            }
            plcol0(color);
            markers((int)m, x, y, DIAMOND);
            snprintf(text, sizeof text, "%stest loss", prefix);
            if (m) legend_add(&g, text, color, 0, 1, DIAMOND);
        }
        if (panel == 1) {
            size_t m = 0;
            for (size_t r = 0; r < h->count; r++)
                if (h->steps[r].clip_scale < 1 && ars_inspect_record_finite(h, r)) {
                    x[m] = (double)h->steps[r].step;
                    y[m++] = logy ? log10_or_nan(h->steps[r].grad_norm) : h->steps[r].grad_norm;
                }
            if (m) {
                plcol0(C_RED);
                markers((int)m, x, y, CROSS);
                marked_clip = 1;
            }
        }
        free(x);
        free(y);
    }
    if (panel == 1 && marked_clip) legend_add(&g, "clipped (clip_scale < 1)", C_RED, 0, 1, CROSS);
    if (marked_nonfinite) legend_add(&g, "non-finite step (skipped)", C_RED, 1, 1, NULL);
    if (marked_events) legend_add(&g, "diagnosis starts", C_GRAY, 3, 1, NULL);
    plcol0(C_FG);
    if (panel == 0) {
        char title[160], label[80];
        ars_plot_plain_text(job->runs[0]->label, label, sizeof label);
        if (job->count == 1) snprintf(title, sizeof title, "Loss and global gradient norm: %s", label);
        else snprintf(title, sizeof title, "Loss and global gradient norm: 1 against 2");
        labels("", logy ? "training loss (log scale)" : "training loss", title);
    } else {
        labels("step", "global gradient norm", "");
    }
    legend_draw(&g, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE);
}

static void draw_loss_gradnorm(const void *data)
{
    const plot_job *job = data;
    double x0 = INFINITY, x1 = -INFINITY;
    for (int k = 0; k < job->count; k++) {
        const ars_history *h = &job->runs[k]->history;
        if (h->count == 0) continue;
        x0 = fmin(x0, (double)h->steps[0].step);
        x1 = fmax(x1, (double)h->steps[h->count - 1].step);
        for (size_t e = 0; e < h->eval_count; e++) x1 = fmax(x1, (double)h->evals[e].step);
    }
    if (!isfinite(x0)) {
        message_page("Loss and global gradient norm", "the history has no record");
        return;
    }
    ars_plot_pad_range(&x0, &x1, 0.01);
    draw_series_panel(job, 0, x0, x1);
    draw_series_panel(job, 1, x0, x1);
}

/* ---- gradient histograms ------------------------------------------------------------ */

/* The largest fraction of one bin over the layers of histogram k. */
static double histogram_peak(const ars_inspect_run *run, size_t k)
{
    const ars_history *h = &run->history;
    const int B = h->bins, L = h->layer_count;
    double top = 0;
    for (int d = 0; d < run->layer_count; d++) {
        const uint32_t *counts = h->hist_counts + (k * (size_t)L + (size_t)run->layers[d].index) * (size_t)B;
        double total = 0, most = 0;
        for (int b = 0; b < B; b++) {
            total += counts[b];
            most = fmax(most, counts[b]);
        }
        if (total > 0) top = fmax(top, most / total);
    }
    return top;
}

static void draw_histogram_panel(const ars_inspect_run *run, size_t k, double top, double left, double right,
                                 int first_panel)
{
    const ars_history *h = &run->history;
    const int B = h->bins, L = h->layer_count, n = run->layer_count;
    const double width = (h->hist_high - h->hist_low) / B;
    PLFLT *x = malloc(sizeof *x * (size_t)B), *y = malloc(sizeof *y * (size_t)B);
    if (!x || !y) {
        free(x);
        free(y);
        return;
    }
    if (top <= 0) top = 1;
    plvpor(left, right, 0.10, 0.86);
    plwind(h->hist_low, h->hist_high, 0, top * 1.05);
    draw_axes("bcnst", first_panel ? "bcnstv" : "bcstv", 0, 0, 0);
    for (int d = 0; d < n; d++) {
        const uint32_t *counts = h->hist_counts + (k * (size_t)L + (size_t)run->layers[d].index) * (size_t)B;
        double total = 0;
        for (int b = 0; b < B; b++) total += counts[b];
        if (total <= 0) continue;
        for (int b = 0; b < B; b++) {
            x[b] = h->hist_low + (b + 0.5) * width;
            y[b] = counts[b] / total;
        }
        plcol1(n > 1 ? 0.9 * d / (n - 1.0) : 0.0);
        plwidth(1.5);
        plline(B, x, y);
        plwidth(1);
    }
    plcol0(C_FG);
    char text[96];
    snprintf(text, sizeof text, "step %lld", (long long)h->hist_steps[k]);
    plschr(0, TEXT_SIZE);
    plmtex("t", 0.8, 0.5, 0.5, text);
    plmtex("b", 3.0, 0.5, 0.5, "log10 |gradient| of a parameter");
    if (first_panel) plmtex("l", 5.0, 0.5, 0.5, "fraction of the layer's parameters");

    free(x);
    free(y);
}

static void draw_histograms(const void *data)
{
    const plot_job *job = data;
    const ars_inspect_run *run = job->runs[job->which];
    const ars_history *h = &run->history;
    char title[160], label[80];
    ars_plot_plain_text(run->label, label, sizeof label);
    snprintf(title, sizeof title, "Per-layer gradient histograms: %s", label);
    if (h->hist_count == 0 || h->bins <= 0 || run->layer_count == 0) {
        message_page(title, "no gradient histogram in the history ([run] histogram_every = 0)");
        return;
    }
    size_t last = h->hist_count - 1;
    double top = fmax(histogram_peak(run, 0), histogram_peak(run, last));
    if (last == 0) {
        draw_histogram_panel(run, 0, top, 0.09, 0.80, 1);
    } else {
        draw_histogram_panel(run, 0, top, 0.09, 0.44, 1);
        draw_histogram_panel(run, last, top, 0.47, 0.82, 0);
    }
    plvpor(0.09, 0.82, 0.10, 0.86);
    plcol0(C_FG);
    plschr(0, TITLE_SIZE);
    plmtex("t", 3.2, 0.5, 0.5, title);
    plschr(0, SMALL_SIZE);
    char note[160];
    snprintf(note, sizeof note, "one line per layer with parameters; the first bin also holds |g| < 1e%.0f and "
             "zeros, the last |g| > 1e%.0f", h->hist_low, h->hist_high);
    plmtex("t", 3.0, 0.5, 0.5, note);
    plschr(0, TEXT_SIZE);
    /* color bar: depth */
    int n = run->layer_count;
    PLFLT width, height, values[2] = {1, n > 1 ? n : 2};
    PLINT n_values[1] = {2}, label_opts[1] = {PL_COLORBAR_LABEL_RIGHT}, sub_ticks[1] = {0};
    PLFLT ticks[1] = {0};
    const char *bar_labels[1] = {"depth (1 = input side)"}, *axis_opts[1] = {"bcvtm"};
    const PLFLT *value_rows[1] = {values};
    plscmap1_range(0.0, 0.9);
    plschr(0, SMALL_SIZE);
    plcolorbar(&width, &height, PL_COLORBAR_IMAGE | PL_COLORBAR_LABEL_RIGHT,   /* GRADIENT leaks in cairo */
               PL_POSITION_RIGHT | PL_POSITION_OUTSIDE, 0.02, 0.0, 0.03, 0.75, C_BG, C_FG, 1, 0, 0, 0, 0, 1,
               label_opts, bar_labels, 1, axis_opts, ticks, sub_ticks, n_values, value_rows);
    plschr(0, TEXT_SIZE);
    plscmap1_range(0.0, 1.0);
}

/* ---- entry point ------------------------------------------------------------------------ */

int ars_inspect_plot(const char *dir, const ars_inspect_run *const *runs, int count, FILE *log)
{
    if (count < 1 || count > 2) return ars_error(ARS_EINVAL, "--plot: one or two checkpoints");
    const char *devices[2];
    int rc = ars_plot_open_dir(dir, devices, log);
    if (rc) return rc;
    plot_job all = {.runs = runs, .count = count};
    rc = render(dir, "gradient_flow", draw_gradient_flow, &all, devices, log);
    if (!rc) rc = render(dir, "loss_gradnorm", draw_loss_gradnorm, &all, devices, log);
    for (int k = 0; k < count && !rc; k++) {
        plot_job one = {.runs = runs, .count = 1, .which = k};
        char suffix[8] = "", name[64];
        if (count > 1) snprintf(suffix, sizeof suffix, "_%d", k + 1);
        snprintf(name, sizeof name, "grad_heatmap%s", suffix);
        rc = render(dir, name, draw_heatmap, &one, devices, log);
        snprintf(name, sizeof name, "grad_histograms%s", suffix);
        if (!rc) rc = render(dir, name, draw_histograms, &one, devices, log);
    }
    return rc;
}

#endif
