/* plot: the PLplot plumbing shared by `arsenal inspect --plot`
 * (src/inspect/inspect_plot.c), `arsenal evaluate --plot`
 * (src/eval/eval_plot.c) and `arsenal experiment`
 * (src/experiment/exp_plot.c): which output devices are installed, one
 * figure as one PLplot stream (opened with a page size and a cmap0
 * palette, checked to have written its file), and the small helpers both
 * draw with. What a figure shows stays with its command. */
#ifndef ARSENAL_PLOT_H
#define ARSENAL_PLOT_H

#include <stddef.h>
#include <stdio.h>

/* 1 when PLplot is built in and has the output device `name` ("pngcairo",
 * "svgcairo", "svg"); 0 otherwise. */
int ars_plot_device_available(const char *name);

/* out = in with PLplot's escape character '#' replaced by '_' (labels
 * taken from file names and run keys). */
void ars_plot_plain_text(const char *in, char *out, size_t size);

/* Widens [lo, hi] when it is not finite, empty or a point, then pads it
 * by pad times its span on both sides. */
void ars_plot_pad_range(double *lo, double *hi, double pad);

/* Major tick spacing, in decades, of a log10 axis spanning lo..hi: at
 * most about 8 labels. */
double ars_plot_decade_step(double lo, double hi);

#ifdef ARSENAL_HAVE_PLPLOT

#include <plplot.h>

/* One figure: its file, device, page in pixels and cmap0 palette (colors
 * RGB triples; cmap1 is a viridis-like ramp for shaded plots). */
typedef struct ars_plot_page {
    const char *path, *device;
    int width, height;
    const PLINT (*palette)[3];
    int colors;
    PLFLT text_size;     /* character height relative to PLplot's default */
} ars_plot_page;

/* Opens a new PLplot stream drawing into page->path and advances to its
 * page. The file is created first: PLplot exits the process when it
 * cannot open one, here it is an ARS_EIO error naming the path. */
int ars_plot_begin(const ars_plot_page *page);

/* Ends the stream; ARS_EIO when the file stayed empty. */
int ars_plot_end(const ars_plot_page *page);

/* The devices of a `--plot DIR` (inspect, evaluate): devices[0] "pngcairo"
 * or NULL, devices[1] "svgcairo", "svg" or NULL. ARS_EINVAL, naming the
 * Debian package, when there is neither; a note on log (may be NULL) when
 * PNG is missing. Then creates dir (ars_make_directories). */
int ars_plot_open_dir(const char *dir, const char *devices[2], FILE *log);

/* One figure as dir/name.png and dir/name.svg, one per device of devices
 * (ars_plot_open_dir): a stream of style (its path and device filled in
 * here), draw(data), its end; each file written is named on log. */
int ars_plot_figure(const char *dir, const char *name, const char *const devices[2], const ars_plot_page *style,
                    void (*draw)(const void *data), const void *data, FILE *log);

/* Draws x/y as lines, broken where a coordinate is not finite (a NaN
 * would put cairo into an error state that drops the rest of the figure);
 * marker (may be NULL) at each point, and a dot at an isolated point.
 * Markers are drawn at marker_size, then the character height goes back
 * to text_size. */
void ars_plot_broken_line(int n, const PLFLT *x, const PLFLT *y, const char *marker, PLFLT marker_size,
                          PLFLT text_size);

#endif

#endif
