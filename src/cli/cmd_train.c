/* cmd_train: `arsenal train`, under mpirun or alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "arsenal/train.h"
#include "cli.h"

static const char train_usage[] =
    "usage: arsenal train FILE.cfg [options]\n"
    "\n"
    "Trains the model of FILE.cfg on its data, evaluating on the test split after every epoch.\n"
    "Under `mpirun -np N` every rank holds a replica and trains on its shard of each batch.\n"
    "\n"
    "options:\n"
    "  --set section.key=value  override a run-file key (repeatable); `dense.init=he_normal` sets it in\n"
    "                           every [dense], `dense#2.units=512` in the second one only\n"
    "  --ckpt-dir DIR           write HDF5 checkpoints into DIR (every [run] ckpt_every steps, each\n"
    "                           epoch and at the end; the last [run] ckpt_keep are kept)\n"
    "  --resume CKPT.h5         continue a run from a checkpoint, bit-exactly\n"
    "  --metrics FILE.jsonl     one JSON object per line: kind \"step\" or \"epoch\"\n"
    "  --quiet                  print only errors\n";

typedef struct train_job {
    const char *path;
    char **overrides;
    int override_count;
    ars_train_options options;
} train_job;

static int run_train(ars_dist *dist, void *context)
{
    train_job *job = context;
    const char *path = job->path;
    ars_train_options *options = &job->options;
    ars_config config;
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0, agreed;
    int rc = ars_cli_read_config(&config, path, job->overrides, job->override_count);
    const int loaded = rc == 0;
    if (!rc) rc = ars_run_config_load(&config, &run, &specs, &count);
    /* Every rank read its own copy of the run file: they usually fail alike,
     * but a copy missing on one host must not leave the others waiting. */
    rc = ars_dist_agree(dist, rc, &agreed);
    if (rc) {
        free(specs);
        if (loaded) ars_config_free(&config);
        return ars_cli_report_failure("arsenal", dist, rc, agreed);
    }
    char *text = ars_config_to_string(&config);
    options->config_text = text;
    ars_train_result result;
    rc = ars_train(&run, specs, count, dist, options, &result);
    free(text);
    free(specs);
    ars_config_free(&config);
    if (rc) return ars_cli_report_failure("arsenal", dist, rc, result.agreed);
    if (dist->rank == 0 && !options->quiet) {
        printf("done: %lld steps, %d epochs, %.1fs", (long long)result.steps, result.epochs_done, result.seconds);
        if (result.test_accuracy == result.test_accuracy) printf(", test accuracy %.4f", result.test_accuracy);
        printf(", test loss %.4f\n", result.test_loss);
    }
    return 0;
}

int ars_cmd_train(int argc, char **argv)
{
    const char *value;
    train_job job = {.overrides = calloc((size_t)argc, sizeof *job.overrides)};
    ars_train_options *options = &job.options;
    int error = 0;
    if (!job.overrides) {
        fprintf(stderr, "arsenal train: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(train_usage, stdout);
            free(job.overrides);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--set", &value, &error)) {
            if (!error) job.overrides[job.override_count++] = (char *)value;
        } else if (ars_cli_option(argc, argv, &i, "--ckpt-dir", &value, &error)) {
            options->ckpt_dir = value;
        } else if (ars_cli_option(argc, argv, &i, "--resume", &value, &error)) {
            options->resume_path = value;
        } else if (ars_cli_option(argc, argv, &i, "--metrics", &value, &error)) {
            options->metrics_path = value;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            options->quiet = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "arsenal train: unknown option '%s' (arsenal train --help)\n", argv[i]);
            error = 1;
        } else if (job.path) {
            fprintf(stderr, "arsenal train: one run file expected, got '%s' and '%s'\n", job.path, argv[i]);
            error = 1;
        } else {
            job.path = argv[i];
        }
    }
    if (!error && !job.path) {
        fputs(train_usage, stderr);
        error = 1;
    }
    int status = error ? 2 : ars_cli_run_mpi(&argc, &argv, run_train, &job);
    free(job.overrides);
    return status;
}
