/* cmd_inspect: `arsenal inspect CKPT.h5 [CKPT2.h5] [--json] [--plot DIR]`:
 * a checkpoint's run and gradient health on one screen (or two runs side
 * by side), as JSON for scripts, and as PNG/SVG plots. The analysis lives
 * in src/inspect/. */
#include <stdio.h>
#include <string.h>

#include "../inspect/inspect.h"
#include "arsenal/error.h"
#include "cli.h"


static const char inspect_usage[] =
    "usage: arsenal inspect CKPT.h5 [CKPT2.h5] [--json] [--plot DIR]\n"
    "       arsenal inspect --blame CKPT.h5\n"
    "\n"
    "Reads a checkpoint (e.g. runs/x/latest.h5) and shows its run, final loss and accuracy, per layer with\n"
    "parameters the gradient norm (first/median/last), its ratio to the output layer's, the update/weight\n"
    "ratio and the activation that follows it, then a diagnosis in plain words with the remedies that\n"
    "apply (vanishing/exploding gradients, non-finite values, saturation, dead ReLUs, loss plateau or\n"
    "oscillation; thresholds from the run's [health] section, see docs/health.md).\n"
    "\n"
    "  CKPT2.h5     a second checkpoint: both runs side by side (e.g. sigmoid against ReLU)\n"
    "  --json       the same content as JSON on stdout\n"
    "  --plot DIR   PNG and SVG plots in DIR: gradient_flow, grad_heatmap, loss_gradnorm,\n"
    "               grad_histograms (for two runs the flow and loss plots overlay both)\n";

int ars_cmd_inspect(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL}, *plot_dir = NULL, *value;
    int path_count = 0, json = 0, error = 0, blame = 0;
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(inspect_usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--blame") == 0) {
            blame = 1;
        } else if (ars_cli_option(argc, argv, &i, "--plot", &value, &error)) {
            plot_dir = value;
        } else if (argv[i][0] == '-' || path_count == 2) {
            fprintf(stderr, "arsenal inspect: unexpected argument '%s' (arsenal inspect --help)\n", argv[i]);
            error = 1;
        } else {
            paths[path_count++] = argv[i];
        }
    }
    if (!error && path_count == 0) {
        fputs(inspect_usage, stderr);
        error = 1;
    }
    if (!error && blame && (path_count != 1 || json || plot_dir)) {
        fprintf(stderr, "arsenal inspect: --blame takes one checkpoint, without --json or --plot\n");
        error = 1;
    }
    if (error) return 2;

    ars_inspect_run runs[2];
    memset(runs, 0, sizeof runs);
    int rc = 0, loaded = 0;
    for (int k = 0; k < path_count && !rc; k++, loaded++) rc = ars_inspect_load(&runs[k], paths[k]);
    const ars_inspect_run *views[2] = {&runs[0], &runs[1]};
    if (!rc && blame) {
        rc = ars_inspect_blame(stdout, &runs[0]);
        fflush(stdout);
    } else if (!rc) {
        if (json) ars_inspect_json(stdout, views, path_count);
        else if (path_count == 1) ars_inspect_print(stdout, &runs[0]);
        else ars_inspect_print_compare(stdout, &runs[0], &runs[1]);
        fflush(stdout);
    }
    if (!rc && plot_dir) {
        FILE *log = json ? stderr : stdout;
        if (!json) fputc('\n', log);
        rc = ars_inspect_plot(plot_dir, views, path_count, log);
    }
    if (rc) fprintf(stderr, "arsenal inspect: %s\n", ars_error_message());
    for (int k = 0; k < loaded; k++) ars_inspect_free(&runs[k]);
    return rc ? 1 : 0;
}
