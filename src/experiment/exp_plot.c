/* exp_plot: the experiment's figures, line charts drawn with PLplot into
 * PNG files (pngcairo): one or two panels side by side, each with its
 * series (broken where a value is not finite), optional log axes labelled
 * in powers of ten, a reference line, a vertical marker per series (e.g.
 * the step the loss became NaN) and a legend. Each figure is its own
 * PLplot stream (src/plot/plot.c opens and ends it), ended before the next. Without PLplot every figure is
 * reported as not drawn. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"
#include "../plot/plot.h"

void ars_exp_figure(ars_exp *e, int section, const char *name, const char *caption, const char *title,
                    const ars_exp_panel *panels, int panel_count)
{
    ars_exp_text *md = &e->body[section];
    char path[1200];
    snprintf(path, sizeof path, "%s/results/%s.png", e->options->out_dir, name);
    int rc = e->plots_available ? ars_exp_plot(path, title, panels, panel_count)
                                : ars_error(ARS_EINVAL, "arsenal was built without PLplot or its PNG device");
    if (rc) {
        ars_exp_text_printf(md, "*(Plot %s not drawn: %s.)*\n\n", name, ars_error_message());
        ars_error_clear();
        return;
    }
    e->plot_count++;
    if (e->log) fprintf(e->log, "wrote %s\n", path);
    ars_exp_text_printf(md, "![%s](results/%s.png)\n\n*%s*\n\n", title, name, caption);
}

int ars_exp_plot_available(void) { return ars_plot_device_available("pngcairo"); }

#ifndef ARSENAL_HAVE_PLPLOT

int ars_exp_plot(const char *path, const char *title, const ars_exp_panel *panels, int panel_count)
{
    (void)path, (void)title, (void)panels, (void)panel_count;
    return ars_error(ARS_EINVAL, "arsenal was built without PLplot");
}

#else

/* Every figure has the same page, so text has the same size in all of them. */
enum { PAGE_WIDTH = 1800, PAGE_HEIGHT = 700, LEGEND_WIDTH = 390, LEFT_MARGIN = 120 };

static const PLFLT TEXT_SIZE = 0.75, TITLE_SIZE = 0.95, SMALL_SIZE = 0.62, MARKER_SIZE = 0.45;

/* cmap0: background, foreground, grid, reference, then 12 series colors. */
enum { C_BG, C_FG, C_GRID, C_REF, C_SERIES, C_COUNT = C_SERIES + 12 };
static const PLINT palette_rgb[C_COUNT][3] = {
    {255, 255, 255}, {0, 0, 0}, {220, 220, 220}, {110, 110, 110}, {214, 39, 40}, {255, 127, 14}, {31, 119, 180},
    {44, 160, 44}, {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}, {188, 189, 34},
    {127, 127, 127}, {0, 0, 128}, {128, 0, 0}};

static const char *const DOT = "\u25cf";

/* y is clamped to the panel's ymax before any log. */
static double y_value(const ars_exp_panel *p, double v);

static double axis_value(double v, int log_axis)
{
    if (!isfinite(v)) return NAN;
    if (!log_axis) return v;
    return v > 0 ? log10(v) : NAN;
}

static double y_value(const ars_exp_panel *p, double v)
{
    if (p->ymax > 0 && isfinite(v) && v > p->ymax) v = p->ymax;
    return axis_value(v, p->logy);
}

/* Tick labels of a log axis (values are log10): plain numbers near 1,
 * powers of ten elsewhere. */
static void log_label(PLINT axis, PLFLT value, char *label, PLINT length, PLPointer data)
{
    (void)axis, (void)data;
    double k = floor(value + 0.5);
    if (fabs(value - k) > 1e-6) snprintf(label, (size_t)length, "%s", "");
    else if (k >= -3 && k <= 3) snprintf(label, (size_t)length, "%g", pow(10, k));
    else snprintf(label, (size_t)length, "10#u%.0f#d", k);
}

static void draw_axis_box(const ars_exp_panel *p, double xlo, double xhi, double ylo, double yhi)
{
    PLFLT xtick = p->logx ? ars_plot_decade_step(xlo, xhi) : 0;
    PLFLT ytick = p->logy ? ars_plot_decade_step(ylo, yhi) : 0;
    plcol0(C_GRID);
    plwidth(0.5);
    plbox("g", xtick, 0, "g", ytick, 0);
    plwidth(1);
    plcol0(C_FG);
    plschr(0, TEXT_SIZE);
    if (p->logx || p->logy) plslabelfunc(log_label, NULL);
    plbox(p->logx ? "bcnsto" : "bcnst", xtick, p->logx ? 1 : 0, p->logy ? "bcnstvo" : "bcnstv", ytick,
          p->logy ? 1 : 0);
    plslabelfunc(NULL, NULL);
}

/* Lines between finite points, broken elsewhere; an isolated point gets a dot. */
static void draw_series(const ars_exp_curve *c, const ars_exp_panel *p, int marker)
{
    if (!c || c->count <= 0) return;
    PLFLT *x = malloc(sizeof *x * (size_t)c->count), *y = malloc(sizeof *y * (size_t)c->count);
    if (!x || !y) {
        free(x);
        free(y);
        return;
    }
    for (int i = 0; i < c->count; i++) {
        x[i] = axis_value(c->x[i], p->logx);
        y[i] = y_value(p, c->y[i]);
    }
    ars_plot_broken_line(c->count, x, y, marker ? DOT : NULL, MARKER_SIZE, TEXT_SIZE);
    free(x);
    free(y);
}

/* The legend of p's series and of the reference lines of panels[0..count),
 * right of the panel (outside) or inside its top right corner. */
static void draw_legend(const ars_exp_panel *p, const ars_exp_panel *panels, int count, int inside)
{
    enum { MAX = 16 };
    const char *text[MAX], *symbols[MAX];
    char storage[MAX][96];
    PLINT opt[MAX], text_color[MAX], line_color[MAX], line_style[MAX], symbol_color[MAX], symbol_number[MAX];
    PLFLT line_width[MAX], symbol_scale[MAX];
    int n = 0;
    for (int i = 0; i < p->count && n < MAX; i++, n++) {
        ars_plot_plain_text(p->series[i].label, storage[n], sizeof storage[n]);
        text[n] = storage[n];
        opt[n] = PL_LEGEND_LINE | (p->series[i].marker ? PL_LEGEND_SYMBOL : 0);
        text_color[n] = C_FG;
        line_color[n] = symbol_color[n] = C_SERIES + i % 12;
        line_style[n] = p->series[i].style > 0 ? p->series[i].style : 1;
        line_width[n] = 2.0;
        symbol_scale[n] = MARKER_SIZE;
        symbol_number[n] = p->series[i].marker ? 1 : 0;
        symbols[n] = p->series[i].marker ? DOT : "";
    }
    for (int k = 0; k < count && n < MAX; k++) {
        if (!isfinite(panels[k].hline) || !panels[k].hline_label[0]) continue;
        ars_plot_plain_text(panels[k].hline_label, storage[n], sizeof storage[n]);
        int seen = 0;
        for (int i = p->count; i < n; i++) seen |= strcmp(storage[i], storage[n]) == 0;
        if (seen) continue;
        text[n] = storage[n];
        opt[n] = PL_LEGEND_LINE;
        text_color[n] = C_FG;
        line_color[n] = symbol_color[n] = C_REF;
        line_style[n] = 3;
        line_width[n] = 1.0;
        symbol_scale[n] = MARKER_SIZE;
        symbol_number[n] = 0;
        symbols[n] = "";
        n++;
    }
    if (n == 0) return;
    PLFLT width, height;
    plschr(0, SMALL_SIZE);
    PLINT position = inside ? PL_POSITION_RIGHT | PL_POSITION_TOP | PL_POSITION_INSIDE
                            : PL_POSITION_RIGHT | PL_POSITION_OUTSIDE;
    pllegend(&width, &height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, position, 0.015, inside ? 0.015 : 0.0,
             0.05, C_BG, C_FG, 1, 0, 0, n, opt, 0.8, SMALL_SIZE, 2.0, 0.0, text_color, text, NULL, NULL, NULL, NULL, line_color, line_style, line_width, symbol_color, symbol_scale, symbol_number, symbols);
    plschr(0, TEXT_SIZE);
}

/* legend: NULL, or the panels whose reference lines the legend explains
 * (outside right, or inside when inside is 1). */
static void draw_panel(const ars_exp_panel *p, double x0, double x1, double y0, double y1,
                       const ars_exp_panel *legend, int legend_count, int inside)
{
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < p->count; s++) {
        const ars_exp_curve *c = p->series[s].curve;
        for (int i = 0; c && i < c->count; i++) {
            double x = axis_value(c->x[i], p->logx), y = y_value(p, c->y[i]);
            if (!isfinite(x) || !isfinite(y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
        double v = axis_value(p->series[s].vline, p->logx);
        if (isfinite(v)) xlo = fmin(xlo, v), xhi = fmax(xhi, v);
    }
    double h = axis_value(p->hline, p->logy);
    if (isfinite(h)) ylo = fmin(ylo, h), yhi = fmax(yhi, h);
    if (p->logy && isfinite(ylo) && yhi - ylo < 1.0) {   /* less than a decade: a linear axis reads better */
        ars_exp_panel linear = *p;
        linear.logy = 0;
        char *log_note = strstr(linear.ylabel, " (log scale)");
        if (log_note) *log_note = '\0';
        draw_panel(&linear, x0, x1, y0, y1, legend, legend_count, inside);
        return;
    }
    ars_plot_pad_range(&xlo, &xhi, 0.03);
    ars_plot_pad_range(&ylo, &yhi, 0.05);
    plvpor(x0, x1, y0, y1);
    plwind(xlo, xhi, ylo, yhi);
    draw_axis_box(p, xlo, xhi, ylo, yhi);
    if (isfinite(h)) {
        PLFLT hx[2] = {xlo, xhi}, hy[2] = {h, h};
        plcol0(C_REF);
        pllsty(3);
        plline(2, hx, hy);
        pllsty(1);
    }
    for (int s = 0; s < p->count; s++) {
        const ars_exp_series *series = &p->series[s];
        plcol0(C_SERIES + s % 12);
        double v = axis_value(series->vline, p->logx);
        if (isfinite(v)) {   /* thin dotted marker line, e.g. the NaN step */
            PLFLT vx[2] = {v, v}, vy[2] = {ylo, yhi};
            pllsty(3);
            plwidth(1.0);
            plline(2, vx, vy);
            if (series->vline_label[0]) {
                char label[96];
                ars_plot_plain_text(series->vline_label, label, sizeof label);
                plschr(0, SMALL_SIZE);
                plptex(v + 0.01 * (xhi - xlo), yhi - (0.04 + 0.05 * s) * (yhi - ylo), 1, 0, 0, label);
                plschr(0, TEXT_SIZE);
            }
        }
        pllsty(series->style > 0 ? series->style : 1);
        plwidth(2.0);
        draw_series(series->curve, p, series->marker);
        plwidth(1);
        pllsty(1);
    }
    char text[200];
    plcol0(C_FG);
    plschr(0, TEXT_SIZE);
    ars_plot_plain_text(p->xlabel, text, sizeof text);
    plmtex("b", 3.0, 0.5, 0.5, text);
    ars_plot_plain_text(p->ylabel, text, sizeof text);
    plmtex("l", 5.2, 0.5, 0.5, text);
    ars_plot_plain_text(p->title, text, sizeof text);
    plmtex("t", 1.0, 0.5, 0.5, text);
    if (legend) draw_legend(p, legend, legend_count, inside);
}

/* The same legend entries in every panel: one legend, right of the last. */
static int shared_legend(const ars_exp_panel *panels, int count)
{
    for (int k = 1; k < count; k++) {
        if (panels[k].count != panels[0].count) return 0;
        for (int s = 0; s < panels[0].count; s++)
            if (strcmp(panels[k].series[s].label, panels[0].series[s].label) != 0) return 0;
    }
    return 1;
}

int ars_exp_plot(const char *path, const char *title, const ars_exp_panel *panels, int panel_count)
{
    if (panel_count < 1 || panel_count > 2) return ars_error(ARS_EINVAL, "plot: one or two panels");
    const int shared = shared_legend(panels, panel_count);
    const double legend_w = shared ? (double)LEGEND_WIDTH / PAGE_WIDTH : 0, left = (double)LEFT_MARGIN / PAGE_WIDTH,
                 right = 20.0 / PAGE_WIDTH, slot = (1.0 - legend_w) / panel_count;
    ars_plot_page page = {.path = path, .device = "pngcairo", .width = PAGE_WIDTH, .height = PAGE_HEIGHT,
                          .palette = palette_rgb, .colors = C_COUNT, .text_size = TEXT_SIZE};
    int rc = ars_plot_begin(&page);
    if (rc) return rc;
    for (int k = 0; k < panel_count; k++) {
        const double x0 = k * slot + left, x1 = (k + 1) * slot - right;
        if (!shared) draw_panel(&panels[k], x0, x1, 0.11, 0.84, &panels[k], 1, 1);
        else if (k == panel_count - 1) draw_panel(&panels[k], x0, x1, 0.11, 0.84, panels, panel_count, 0);
        else draw_panel(&panels[k], x0, x1, 0.11, 0.84, NULL, 0, 0);
    }
    char text[200];
    ars_plot_plain_text(title, text, sizeof text);
    plvpor(0.02, 0.98, 0.02, 0.86);
    plcol0(C_FG);
    plschr(0, TITLE_SIZE);
    plmtex("t", 3.2, 0.5, 0.5, text);
    plschr(0, TEXT_SIZE);
    return ars_plot_end(&page);
}

#endif
