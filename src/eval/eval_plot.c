/* eval_plot: `arsenal evaluate --plot DIR`: the confusion matrix drawn
 * with PLplot (src/plot/plot.c), as confusion_matrix.png (pngcairo) and
 * .svg: one cell per (true, predicted) class pair, colored by the fraction
 * of the true class it holds (each row sums to 1), with its count written
 * in it, the class names along the axes when the data set has them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plot/plot.h"
#include "arsenal/error.h"
#include "arsenal/evaluate.h"

#ifndef ARSENAL_HAVE_PLPLOT

int ars_eval_plot(const char *dir, const ars_eval_report *report, FILE *log)
{
    (void)dir, (void)report, (void)log;
    return ars_error(ARS_EINVAL, "--plot: this arsenal was built without PLplot (install the Debian packages "
                     "libplplot-dev and plplot-driver-cairo, then rebuild)");
}

#else

enum { PAGE_WIDTH = 1100, PAGE_HEIGHT = 1000, MAX_LABELLED = 40, MAX_COUNTS = 24 };
static const PLFLT TEXT_SIZE = 0.8, TITLE_SIZE = 0.95, SMALL_SIZE = 0.62;

enum { C_BG, C_FG, C_GRID, C_COUNT };
static const PLINT palette_rgb[C_COUNT][3] = {{255, 255, 255}, {0, 0, 0}, {215, 215, 215}};

static void draw_matrix(const void *report)
{
    const ars_eval_report *p = report;
    const ars_eval_result *r = &p->result;
    const int C = r->classes;
    const int named = C <= 64 && p->class_names[0][0];
    /* room on the left and at the bottom for names */
    const PLFLT left = named ? 0.20 : 0.12, bottom = named ? 0.20 : 0.11;
    plvpor(left, 0.84, bottom, 0.90);
    plwind(-0.5, C - 0.5, -0.5, C - 0.5);
    const PLFLT cell_text = C <= 10 ? TEXT_SIZE : C <= MAX_COUNTS ? SMALL_SIZE * 10.0 / C + 0.2 : SMALL_SIZE;
    for (int t = 0; t < C; t++) {
        const double support = (double)r->support[t];
        const PLFLT y = C - 1 - t;   /* the first class at the top */
        for (int c = 0; c < C; c++) {
            const int64_t count = r->confusion[(size_t)t * C + c];
            const double fraction = support > 0 ? count / support : 0;
            PLFLT xs[4] = {c - 0.5, c - 0.5, c + 0.5, c + 0.5}, ys[4] = {y - 0.5, y + 0.5, y + 0.5, y - 0.5};
            plcol1(fraction);
            plfill(4, xs, ys);
            if (C <= MAX_COUNTS) {
                char text[32];
                snprintf(text, sizeof text, "%lld", (long long)count);
                plcol0(fraction > 0.55 ? C_FG : C_BG);   /* dark cells (low fractions) get white text */
                plschr(0, cell_text);
                plptex(c, y - 0.15 * cell_text, 1, 0, 0.5, text);
            }
        }
    }
    plcol0(C_FG);
    plschr(0, TEXT_SIZE);
    plbox("bc", 0, 0, "bc", 0, 0);
    /* class labels: indices (and names) at every cell */
    plschr(0, C > MAX_LABELLED ? SMALL_SIZE * 0.7 : C > 20 ? SMALL_SIZE : TEXT_SIZE);
    for (int k = 0; k < C && C <= MAX_LABELLED * 4; k++) {
        if (C > MAX_LABELLED && k % 5) continue;
        char label[96];
        if (named) snprintf(label, sizeof label, "%d %s", k, p->class_names[k]);
        else snprintf(label, sizeof label, "%d", k);
        char plain[96];
        ars_plot_plain_text(label, plain, sizeof plain);
        const PLFLT at = (k + 0.5) / C;
        plmtex("lv", 0.8, 1.0 - at, 1.0, plain);   /* true class k is the k-th row from the top */
        if (named) plmtex("bv", 0.8, at, 1.0, plain);
        else plmtex("b", 1.4, at, 0.5, plain);
    }
    plschr(0, TEXT_SIZE);
    plmtex("b", named ? 10.5 : 3.2, 0.5, 0.5, "predicted class");
    plmtex("l", named ? 10.5 : 3.5, 0.5, 0.5, "true class");
    /* the file's name and the data set, shortened to fit the title */
    char plain[64], data[64], title[256];
    const char *base = strrchr(p->checkpoint, '/');
    ars_plot_plain_text(base ? base + 1 : p->checkpoint, plain, sizeof plain);
    ars_plot_plain_text(p->data, data, sizeof data);
    snprintf(title, sizeof title, "Confusion matrix: %.60s on %.60s", plain, data);
    plschr(0, TITLE_SIZE);
    plmtex("t", 2.6, 0.5, 0.5, title);
    snprintf(title, sizeof title, "%s split, %lld samples, accuracy %.4f; cell: count, color: fraction of the true "
             "class (each row sums to 1)", p->split, (long long)r->samples, r->accuracy);
    plschr(0, SMALL_SIZE);
    plmtex("t", 1.0, 0.5, 0.5, title);
    /* color bar of the fraction */
    PLFLT width, height, values[2] = {0, 1};
    PLINT n_values[1] = {2}, label_opts[1] = {PL_COLORBAR_LABEL_RIGHT}, sub_ticks[1] = {0};
    PLFLT ticks[1] = {0.2};
    const char *bar_labels[1] = {"fraction of the true class"}, *axis_opts[1] = {"bcvtm"};
    const PLFLT *value_rows[1] = {values};
    plcolorbar(&width, &height, PL_COLORBAR_IMAGE | PL_COLORBAR_LABEL_RIGHT, PL_POSITION_RIGHT | PL_POSITION_OUTSIDE,
               0.02, 0.0, 0.03, 0.70, C_BG, C_FG, 1, 0, 0, 0, 0, 1, label_opts, bar_labels, 1, axis_opts, ticks,
               sub_ticks, n_values, value_rows);
    plschr(0, TEXT_SIZE);
}

int ars_eval_plot(const char *dir, const ars_eval_report *report, FILE *log)
{
    if (!report->result.classifier)
        return ars_error(ARS_EINVAL, "--plot: the model is a regression (loss mse): there is no confusion matrix "
                         "to draw");
    const char *devices[2];
    TRY(ars_plot_open_dir(dir, devices, log));
    const ars_plot_page style = {.width = PAGE_WIDTH, .height = PAGE_HEIGHT, .palette = palette_rgb,
                                 .colors = C_COUNT, .text_size = TEXT_SIZE};
    return ars_plot_figure(dir, "confusion_matrix", devices, &style, draw_matrix, report, log);
}

#endif
