/* plot: PLplot plumbing shared by inspect_plot.c and exp_plot.c (see
 * plot.h). */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../fs.h"
#include "arsenal/error.h"

void ars_plot_plain_text(const char *in, char *out, size_t size)
{
    snprintf(out, size, "%s", in);
    for (char *p = out; *p; p++)
        if (*p == '#') *p = '_';
}

void ars_plot_pad_range(double *lo, double *hi, double pad)
{
    if (!isfinite(*lo) || !isfinite(*hi)) {
        *lo = 0;
        *hi = 1;
    }
    if (*hi - *lo < 1e-9 * fmax(1.0, fabs(*hi))) {   /* a single value: a window around it */
        double delta = fmax(0.5, 0.1 * fabs(*hi));
        *lo -= delta;
        *hi += delta;
    }
    double span = *hi - *lo;
    *lo -= pad * span;
    *hi += pad * span;
}

double ars_plot_decade_step(double lo, double hi)
{
    static const double nice[] = {1, 2, 5, 10, 20, 50, 100};
    for (size_t i = 0; i < sizeof nice / sizeof nice[0]; i++)
        if ((hi - lo) / nice[i] <= 8) return nice[i];
    return 100;
}

#ifndef ARSENAL_HAVE_PLPLOT

int ars_plot_device_available(const char *name)
{
    (void)name;
    return 0;
}

#else

int ars_plot_device_available(const char *name)
{
    enum { MAX_DEVICES = 128 };
    const char *menu[MAX_DEVICES], *names[MAX_DEVICES];
    const char **menu_p = menu, **names_p = names;
    int n = MAX_DEVICES;
    plgDevs(&menu_p, &names_p, &n);
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], name) == 0) return 1;
    return 0;
}

static void set_palette(const PLINT (*rgb)[3], int colors)
{
    enum { MAX_COLORS = 64 };
    PLINT r[MAX_COLORS], g[MAX_COLORS], b[MAX_COLORS];
    if (colors > MAX_COLORS) colors = MAX_COLORS;
    for (int i = 0; i < colors; i++) {
        r[i] = rgb[i][0];
        g[i] = rgb[i][1];
        b[i] = rgb[i][2];
    }
    plscmap0n(colors);
    plscmap0(r, g, b, colors);
    /* cmap1: viridis-like, dark blue (low) to yellow (high). */
    PLFLT at[5] = {0, 0.25, 0.5, 0.75, 1};
    PLFLT cr[5] = {68 / 255.0, 59 / 255.0, 33 / 255.0, 94 / 255.0, 253 / 255.0};
    PLFLT cg[5] = {1 / 255.0, 82 / 255.0, 145 / 255.0, 201 / 255.0, 231 / 255.0};
    PLFLT cb[5] = {84 / 255.0, 139 / 255.0, 140 / 255.0, 98 / 255.0, 37 / 255.0};
    plscmap1n(256);
    plscmap1l(1, 5, at, cr, cg, cb, NULL);
}

int ars_plot_begin(const ars_plot_page *page)
{
    FILE *probe = fopen(page->path, "wb");   /* PLplot exits the process when it cannot open a file */
    if (!probe) return ars_error(ARS_EIO, "cannot write %s: %s", page->path, strerror(errno));
    fclose(probe);
    PLINT stream;
    plmkstrm(&stream);
    plsdev(page->device);
    plsfnam(page->path);
    plspage(0, 0, page->width, page->height, 0, 0);
    set_palette(page->palette, page->colors);
    plinit();
    plfontld(1);
    pladv(0);
    plschr(0, page->text_size);
    return 0;
}

int ars_plot_end(const ars_plot_page *page)
{
    plend1();
    struct stat st;
    if (stat(page->path, &st) != 0 || st.st_size == 0)
        return ars_error(ARS_EIO, "PLplot wrote nothing to %s (device %s)", page->path, page->device);
    return 0;
}

void ars_plot_broken_line(int n, const PLFLT *x, const PLFLT *y, const char *marker, PLFLT marker_size,
                          PLFLT text_size)
{
    int start = -1;
    for (int i = 0; i <= n; i++) {
        int ok = i < n && isfinite(x[i]) && isfinite(y[i]);
        if (ok && start < 0) start = i;
        if (!ok && start >= 0) {
            const int m = i - start;
            if (m > 1) plline(m, x + start, y + start);
            if (marker || m == 1) {
                plschr(0, marker_size);
                plstring(m, x + start, y + start, marker ? marker : "\u25cf");
                plschr(0, text_size);
            }
            start = -1;
        }
    }
}

int ars_plot_open_dir(const char *dir, const char *devices[2], FILE *log)
{
    devices[0] = ars_plot_device_available("pngcairo") ? "pngcairo" : NULL;
    devices[1] = ars_plot_device_available("svgcairo") ? "svgcairo" : ars_plot_device_available("svg") ? "svg" : NULL;
    if (!devices[0] && !devices[1])
        return ars_error(ARS_EINVAL, "--plot: PLplot has neither a PNG nor an SVG device (install the Debian "
                         "package plplot-driver-cairo)");
    if (!devices[0] && log) fprintf(log, "arsenal: --plot: no PNG device (install plplot-driver-cairo): SVG only\n");
    return ars_make_directories("--plot", dir);
}

int ars_plot_figure(const char *dir, const char *name, const char *const devices[2], const ars_plot_page *style,
                    void (*draw)(const void *data), const void *data, FILE *log)
{
    static const char *const extensions[2] = {"png", "svg"};
    for (int d = 0; d < 2; d++) {
        if (!devices[d]) continue;
        char path[1200];
        if (snprintf(path, sizeof path, "%s/%s.%s", dir, name, extensions[d]) >= (int)sizeof path)
            return ars_error(ARS_EINVAL, "--plot: directory name too long");
        ars_plot_page page = *style;
        page.path = path;
        page.device = devices[d];
        int rc = ars_plot_begin(&page);
        if (rc) return ars_error_context(rc, "--plot");
        draw(data);
        rc = ars_plot_end(&page);
        if (rc) return ars_error_context(rc, "--plot");
        if (log) fprintf(log, "wrote %s\n", path);
    }
    return 0;
}

#endif
