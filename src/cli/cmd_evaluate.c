/* cmd_evaluate: `arsenal evaluate CKPT.h5 [--data SPEC] [--set ...]
 * [--split test|train] [--batch N] [--json] [--plot DIR]`, under mpirun or
 * alone: the model of a checkpoint measured on a data set (Keras's
 * model.evaluate). The work is in src/eval/ (arsenal/evaluate.h); rank 0
 * prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/evaluate.h"
#include "cli.h"

static const char evaluate_usage[] =
    "usage: arsenal evaluate CKPT.h5 [options]\n"
    "\n"
    "Rebuilds the model of a checkpoint from its run file (/config), loads its weights and measures it in\n"
    "evaluation mode (BatchNorm's running statistics, no dropout) on a data set, by default the run's test\n"
    "split: loss, accuracy, per-class precision / recall / F1 and the confusion matrix of a classifier, or\n"
    "MSE / MAE / RMSE / R^2 of a regression. The data are standardized as the training run standardized its\n"
    "own. Under `mpirun -np N` the chunks of the set are shared by the ranks; every figure is the same on\n"
    "any number of ranks.\n"
    "\n"
    "options:\n"
    "  --data SPEC              the data set, as the run file's [run] data key: fashion-mnist, mnist, spirals,\n"
    "                           ... (--set run.data_dir=DIR for the files' directory), or a file of yours:\n"
    "                           hdf5:PATH (its x_test, y_test), csv:PATH (--set run.label=COLUMN when the\n"
    "                           run's data was no CSV), npy:X.npy,Y.npy (datasets/README.md)\n"
    "  --split test|train       which split of it (default test)\n"
    "  --set section.key=value  override a key of the checkpoint's run file (repeatable), e.g.\n"
    "                           run.test_limit=1000\n"
    "  --batch N                samples per forward pass (default 256)\n"
    "  --json                   the figures as one JSON object on stdout\n"
    "  --plot DIR               draw the confusion matrix into DIR/confusion_matrix.png (and .svg)\n";

typedef struct evaluate_job {
    ars_evaluate_options options;
    int json;
    const char *plot_dir;
} evaluate_job;

static int run_evaluate(ars_dist *dist, void *context)
{
    const evaluate_job *job = context;
    const int json = job->json;
    const char *plot_dir = job->plot_dir;
    ars_eval_report report;
    int agreed;
    int rc = ars_evaluate_checkpoint(&job->options, dist, &report, &agreed);
    if (rc) return ars_cli_report_failure("arsenal evaluate", dist, rc, agreed);
    int status = 0;
    if (dist->rank == 0) {
        if (json) ars_eval_json(stdout, &report);
        else ars_eval_print(stdout, &report);
        fflush(stdout);
        if (plot_dir) {
            if (!json) fputc('\n', stdout);
            if (ars_eval_plot(plot_dir, &report, json ? stderr : stdout)) {
                fprintf(stderr, "arsenal evaluate: %s\n", ars_error_message());
                status = 1;
            }
            fflush(stdout);
        }
    }
    ars_eval_report_free(&report);
    /* rank 0's plot may fail: every rank leaves with its status */
    if (dist->size > 1) MPI_Bcast(&status, 1, MPI_INT, 0, dist->comm);
    return status;
}

int ars_cmd_evaluate(int argc, char **argv)
{
    const char *path = NULL, *value;
    char **overrides = calloc((size_t)argc, sizeof *overrides);
    int error = 0;
    evaluate_job job = {.options = {.batch = 256}};
    ars_evaluate_options *options = &job.options;
    if (!overrides) {
        fprintf(stderr, "arsenal evaluate: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(evaluate_usage, stdout);
            free(overrides);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--set", &value, &error)) {
            if (!error) overrides[options->override_count++] = (char *)value;
        } else if (ars_cli_option(argc, argv, &i, "--data", &value, &error)) {
            options->data_spec = value;
        } else if (ars_cli_option(argc, argv, &i, "--split", &value, &error)) {
            if (error) break;
            if (strcmp(value, "test") == 0) options->train_split = 0;
            else if (strcmp(value, "train") == 0) options->train_split = 1;
            else {
                fprintf(stderr, "arsenal evaluate: --split '%s': expected test or train\n", value);
                error = 1;
            }
        } else if (ars_cli_option(argc, argv, &i, "--batch", &value, &error)) {
            if (!error) error = ars_cli_count("evaluate", "--batch", value, 1 << 20, &options->batch);
        } else if (strcmp(argv[i], "--json") == 0) {
            job.json = 1;
        } else if (ars_cli_option(argc, argv, &i, "--plot", &value, &error)) {
            job.plot_dir = value;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "arsenal evaluate: unknown option '%s' (arsenal evaluate --help)\n", argv[i]);
            error = 1;
        } else if (path) {
            fprintf(stderr, "arsenal evaluate: one checkpoint expected, got '%s' and '%s'\n", path, argv[i]);
            error = 1;
        } else {
            path = argv[i];
        }
    }
    if (!error && !path) {
        fputs(evaluate_usage, stderr);
        error = 1;
    }
    options->checkpoint = path;
    options->overrides = overrides;
    int status = error ? 2 : ars_cli_run_mpi(&argc, &argv, run_evaluate, &job);
    free(overrides);
    return status;
}
