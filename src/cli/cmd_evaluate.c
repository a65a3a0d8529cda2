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
    "                           ... (--set run.data_dir=DIR for the files' directory)\n"
    "  --split test|train       which split of it (default test)\n"
    "  --set section.key=value  override a key of the checkpoint's run file (repeatable), e.g.\n"
    "                           run.test_limit=1000\n"
    "  --batch N                samples per forward pass (default 256)\n"
    "  --json                   the figures as one JSON object on stdout\n"
    "  --plot DIR               draw the confusion matrix into DIR/confusion_matrix.png (and .svg)\n";

/* A failure's message, once (as cmd_train.c): rank 0 alone when every rank
 * holds the same error; a failure the others do not know of ends the job. */
static int report_failure(const ars_dist *dist, int rc, int agreed)
{
    if (rc != ARS_EPEER && (agreed != ARS_AGREED_SAME || dist->rank == 0))
        fprintf(stderr, "arsenal evaluate: %s\n", ars_error_message());
    if (dist->size > 1 && agreed == ARS_AGREED_NONE) {
        fprintf(stderr, "arsenal: rank %d ends the job\n", dist->rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return 1;
}

static int run_evaluate(const ars_evaluate_options *options, int json, const char *plot_dir, ars_dist *dist)
{
    ars_eval_report report;
    int agreed;
    int rc = ars_evaluate_checkpoint(options, dist, &report, &agreed);
    if (rc) return report_failure(dist, rc, agreed);
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
    const char *path = NULL, *plot_dir = NULL, *value;
    char **overrides = calloc((size_t)argc, sizeof *overrides);
    int error = 0, json = 0;
    ars_evaluate_options options = {.batch = 256};
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
            if (!error) overrides[options.override_count++] = (char *)value;
        } else if (ars_cli_option(argc, argv, &i, "--data", &value, &error)) {
            options.data_spec = value;
        } else if (ars_cli_option(argc, argv, &i, "--split", &value, &error)) {
            if (error) break;
            if (strcmp(value, "test") == 0) options.train_split = 0;
            else if (strcmp(value, "train") == 0) options.train_split = 1;
            else {
                fprintf(stderr, "arsenal evaluate: --split '%s': expected test or train\n", value);
                error = 1;
            }
        } else if (ars_cli_option(argc, argv, &i, "--batch", &value, &error)) {
            if (error) break;
            char *end;
            long n = strtol(value, &end, 10);
            if (*value == '\0' || *end != '\0' || n < 1 || n > 1 << 20) {
                fprintf(stderr, "arsenal evaluate: --batch '%s': expected an integer from 1 to %d\n", value, 1 << 20);
                error = 1;
            } else {
                options.batch = (int)n;
            }
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (ars_cli_option(argc, argv, &i, "--plot", &value, &error)) {
            plot_dir = value;
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
    if (error) {
        free(overrides);
        return 2;
    }
    options.checkpoint = path;
    options.overrides = overrides;
    MPI_Init(&argc, &argv);
    ars_dist dist;
    int status;
    if (ars_dist_create(&dist, MPI_COMM_WORLD)) {
        fprintf(stderr, "arsenal: %s\n", ars_error_message());
        status = 1;
    } else {
        status = run_evaluate(&options, json, plot_dir, &dist);
        ars_dist_destroy(&dist);
    }
    free(overrides);
    MPI_Finalize();
    return status;
}
