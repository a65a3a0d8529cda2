/* cmd_experiment: `arsenal experiment`, under mpirun or alone: trains the
 * configurations that test the lecture's claims (src/experiment/) and
 * writes the generated results document with its plots. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../experiment/experiment.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "cli.h"

static const char experiment_usage[] =
    "usage: arsenal experiment [--quick] [--out DIR] [options]\n"
    "\n"
    "Reproduces the lecture's claims about vanishing and exploding gradients on Fashion-MNIST: trains\n"
    "deep networks with each activation, initialization, normalization, residual connections, clipping\n"
    "and optimizer, and He et al. 2016's degradation study (plain CNNs of 20 and 56 layers against\n"
    "ResNet-20 and ResNet-56), judges every claim from the measurements (confirmed / qualified / not\n"
    "confirmed) and writes DIR/arsenal-results.md with PNG plots in DIR/results/. Under `mpirun -np N`\n"
    "every configuration trains data-parallel; the numbers do not depend on N (global batch).\n"
    "\n"
    "options:\n"
    "  --quick           CI budgets (a few minutes; the degradation networks at a quarter of their\n"
    "                    width): the document is written as well, and the exit status is 1 when a\n"
    "                    check fails: the 20-layer sigmoid network's first/last gradient ratio is\n"
    "                    below 1e-3, the 1000-layer residual network trains above chance, clipping\n"
    "                    prevents the NaN of a too-high learning rate, the four degradation networks'\n"
    "                    first-convolution gradient ratios are measured, and with [health] cure = apply\n"
    "                    the learning rate 0.5 run is cured without a non-finite step\n"
    "  --out DIR         where to write (default: docs; with --quick: experiment-quick)\n"
    "  --seed N          seed of every run (default 1)\n"
    "  --only LIST       only these sections, comma-separated: activations, init, normalization,\n"
    "                    residual, exploding, optimizers, degradation, cure (DIR/arsenal-results.md\n"
    "                    then holds only those: give another --out to keep the whole document)\n"
    "  --runs DIR        keep every run's checkpoint in DIR/<run> (for arsenal inspect); by default\n"
    "                    they go to a temporary directory and are removed\n"
    "  --data-dir DIR    the Fashion-MNIST files (default /usr/share/datasets/fashion-mnist)\n"
    "\n"
    "The full run takes about 20-40 minutes on 2 cores, 10-30 of them the degradation section (the\n"
    "more other jobs share the cores, the longer): launch/local.sh -n 2 experiment --out docs\n";

static int parse_sections(const char *list, unsigned *mask)
{
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    *mask = 0;
    for (char *save = NULL, *word = strtok_r(copy, ",", &save); word; word = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int s = 0; s < ARS_EXP_SECTIONS; s++)
            if (strcmp(word, ars_exp_section_keys[s]) == 0) {
                *mask |= 1u << s;
                found = 1;
            }
        if (!found) {
            fprintf(stderr, "arsenal experiment: --only: unknown section '%s' (expected activations, init, "
                    "normalization, residual, exploding, optimizers, degradation or cure)\n", word);
            return 1;
        }
    }
    return 0;
}

static int parse_seed(const char *text, uint64_t *seed)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end || text[0] == '-') {
        fprintf(stderr, "arsenal experiment: --seed needs a non-negative integer, got '%s'\n", text);
        return 1;
    }
    *seed = v;
    return 0;
}

static int run_experiment(ars_dist *dist, void *context)
{
    const ars_experiment_options *options = context;
    int failed_checks = 0;
    int rc = ars_experiment_run(options, dist, &failed_checks);
    if (rc && rc != ARS_EPEER) fprintf(stderr, "arsenal experiment: rank %d: %s\n", dist->rank, ars_error_message());
    if (!rc && failed_checks && dist->rank == 0)
        fprintf(stderr, "arsenal experiment: %d check%s failed (see %s/arsenal-results.md)\n", failed_checks,
                failed_checks == 1 ? "" : "s", options->out_dir);
    return rc || failed_checks ? 1 : 0;
}

int ars_cmd_experiment(int argc, char **argv)
{
    ars_experiment_options options = {.seed = 1};
    const char *value;
    int error = 0;
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(experiment_usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--quick") == 0) {
            options.quick = 1;
        } else if (ars_cli_option(argc, argv, &i, "--out", &value, &error)) {
            options.out_dir = value;
        } else if (ars_cli_option(argc, argv, &i, "--runs", &value, &error)) {
            options.runs_dir = value;
        } else if (ars_cli_option(argc, argv, &i, "--data-dir", &value, &error)) {
            options.data_dir = value;
        } else if (ars_cli_option(argc, argv, &i, "--seed", &value, &error)) {
            if (!error) error = parse_seed(value, &options.seed);
        } else if (ars_cli_option(argc, argv, &i, "--only", &value, &error)) {
            if (!error) error = parse_sections(value, &options.sections);
        } else {
            fprintf(stderr, "arsenal experiment: unknown %s '%s' (arsenal experiment --help)\n",
                    argv[i][0] == '-' ? "option" : "argument", argv[i]);
            error = 1;
        }
    }
    if (error) return 2;
    if (!options.out_dir) options.out_dir = options.quick ? "experiment-quick" : "docs";

    return ars_cli_run_mpi(&argc, &argv, run_experiment, &options);
}
