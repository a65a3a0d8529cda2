/* cmd_predict: `arsenal predict CKPT.h5 INPUT [--out FILE] [--top K]
 * [--logits] [--batch N] [--dataset NAME] [--set ...]`: class probabilities or
 * regression outputs for every sample of INPUT (Keras's model.predict), a
 * batch at a time. The work is in src/eval/predict.c (arsenal/predict.h);
 * one process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/error.h"
#include "arsenal/predict.h"
#include "cli.h"

static const char predict_usage[] =
    "usage: arsenal predict CKPT.h5 INPUT [options]\n"
    "\n"
    "Rebuilds the model of a checkpoint and writes, for every sample of INPUT, its class probabilities (the\n"
    "softmax of the logits) or, for a regression, its outputs: CSV with a header row, one line per sample\n"
    "(stdout by default), or HDF5 (dataset `probabilities` [N, classes] or `outputs` [N, outputs]). The\n"
    "samples are standardized as the training run standardized its data. INPUT is read a batch at a time,\n"
    "so it may be larger than memory: an IDX file (gzip or plain, e.g. t10k-images-idx3-ubyte.gz; bytes are\n"
    "scaled to [0, 1] as for training), an HDF5 file (dataset x: [N, ...]), a .npy array or a CSV file of\n"
    "numbers with a header row (the run's label column skipped). A prefix idx:, hdf5:, npy: or csv: names\n"
    "the format; else the content does.\n"
    "\n"
    "options:\n"
    "  --out FILE               write FILE: HDF5 when it ends in .h5 or .hdf5, else CSV\n"
    "  --logits                 a classifier's logits (the last layer's outputs) instead of their softmax\n"
    "                           (CSV columns logit_0, ...; HDF5 dataset logits), as a PyTorch model returns\n"
    "  --top K                  only the K most probable classes and their probabilities (HDF5: also the\n"
    "                           datasets top_classes, top_probabilities)\n"
    "  --batch N                samples per batch (default 256)\n"
    "  --dataset NAME           the dataset of an HDF5 INPUT (default x)\n"
    "  --label COLUMN           a CSV INPUT's column that is no feature, skipped (default: the run's label\n"
    "                           column when it trained on a CSV file)\n"
    "  --set section.key=value  override a key of the checkpoint's run file (repeatable)\n";

int ars_cmd_predict(int argc, char **argv)
{
    const char *value, *paths[2] = {NULL, NULL};
    int path_count = 0, error = 0;
    char **overrides = calloc((size_t)argc, sizeof *overrides);
    ars_predict_options options = {.batch = 256};
    if (!overrides) {
        fprintf(stderr, "arsenal predict: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(predict_usage, stdout);
            free(overrides);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--out", &value, &error)) {
            options.out = value;
        } else if (ars_cli_option(argc, argv, &i, "--top", &value, &error)) {
            if (!error) error = ars_cli_count("predict", "--top", value, 1 << 20, &options.top);
        } else if (strcmp(argv[i], "--logits") == 0) {
            options.logits = 1;
        } else if (ars_cli_option(argc, argv, &i, "--batch", &value, &error)) {
            if (!error) error = ars_cli_count("predict", "--batch", value, 1 << 20, &options.batch);
        } else if (ars_cli_option(argc, argv, &i, "--dataset", &value, &error)) {
            options.dataset = value;
        } else if (ars_cli_option(argc, argv, &i, "--label", &value, &error)) {
            options.label = value;
        } else if (ars_cli_option(argc, argv, &i, "--set", &value, &error)) {
            if (!error) overrides[options.override_count++] = (char *)value;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "arsenal predict: unknown option '%s' (arsenal predict --help)\n", argv[i]);
            error = 1;
        } else if (path_count == 2) {
            fprintf(stderr, "arsenal predict: unexpected argument '%s' (a checkpoint and an input expected)\n",
                    argv[i]);
            error = 1;
        } else {
            paths[path_count++] = argv[i];
        }
    }
    if (!error && path_count < 2) {
        if (path_count == 1) fprintf(stderr, "arsenal predict: an INPUT file is expected after %s\n", paths[0]);
        fputs(predict_usage, stderr);
        error = 1;
    }
    if (error) {
        free(overrides);
        return 2;
    }
    options.checkpoint = paths[0];
    options.input = paths[1];
    options.overrides = overrides;
    MPI_Init(&argc, &argv);
    int world = 1, rank = 0, status = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (world > 1) {
        /* N copies would write the same file: say so once, and leave alike */
        if (rank == 0)
            fprintf(stderr, "arsenal predict: runs on one process (it streams INPUT through one model); run it "
                    "without mpirun -np %d\n", world);
        status = 2;
    } else {
        ars_predict_summary summary;
        if (ars_predict_checkpoint(&options, &summary)) {
            fprintf(stderr, "arsenal predict: %s\n", ars_error_message());
            status = 1;
        } else if (options.out) {
            printf("wrote %lld predictions (%d %s%s) to %s (%s)\n", (long long)summary.samples, summary.columns,
                   summary.classifier ? (options.top ? "top classes" : options.logits ? "logits" : "class probabilities")
                                      : "outputs",
                   summary.classifier && !options.top ? " each" : "", options.out, summary.hdf5 ? "HDF5" : "CSV");
            if (!summary.stats_stored)
                printf("note: %s predates the stored standardization; it was recomputed from the run's training "
                       "data (mean %.6g, std %.6g)\n", options.checkpoint, summary.data_mean, summary.data_std);
        } else if (!summary.stats_stored) {
            fprintf(stderr, "arsenal predict: note: %s predates the stored standardization; it was recomputed from "
                    "the run's training data (mean %.6g, std %.6g)\n", options.checkpoint, summary.data_mean,
                    summary.data_std);
        }
    }
    free(overrides);
    MPI_Finalize();
    return status;
}
