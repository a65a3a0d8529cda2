/* cmd_gradcheck: `arsenal gradcheck FILE.cfg`: the model of a run file,
 * its backward checked against finite differences on a few real samples. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/gradcheck.h"
#include "arsenal/init.h"
#include "arsenal/model.h"
#include "arsenal/train.h"
#include "cli.h"

static const char gradcheck_usage[] =
    "usage: arsenal gradcheck FILE.cfg [--set section.key=value]... [--rows N] [--coords N] [--step H]\n"
    "\n"
    "Builds the model of FILE.cfg with its initialization, takes N (default 8) training samples and\n"
    "compares every layer's backward with central finite differences (training mode). Prints the\n"
    "largest relative error per layer; exits 1 if any layer exceeds the tolerance.\n"
    "  --rows N     samples in the batch (default 8)\n"
    "  --coords N   coordinates sampled per tensor (default 64)\n"
    "  --step H     relative finite-difference step (default 3e-3); a smaller one crosses fewer\n"
    "               ReLU and max-pool kinks in deep convolutional nets (1e-3), at more float noise\n";

int ars_cmd_gradcheck(int argc, char **argv)
{
    const char *path = NULL, *value;
    char **overrides = calloc((size_t)argc, sizeof *overrides);
    int override_count = 0, error = 0, rows = 8, coords = 64;
    double step = 3e-3;
    for (int i = 1; i < argc && !error; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(gradcheck_usage, stdout);
            free(overrides);
            return 0;
        } else if (ars_cli_option(argc, argv, &i, "--set", &value, &error)) {
            if (!error) overrides[override_count++] = (char *)value;
        } else if (ars_cli_option(argc, argv, &i, "--rows", &value, &error)) {
            char *end;
            long n = strtol(value, &end, 10);
            if (*end || n < 1 || n > 4096) {
                fprintf(stderr, "arsenal gradcheck: --rows '%s': expected an integer in [1, 4096]\n", value);
                error = 1;
            }
            rows = (int)n;
        } else if (ars_cli_option(argc, argv, &i, "--coords", &value, &error)) {
            char *end;
            long n = strtol(value, &end, 10);
            if (*end || n < 1 || n > 100000) {
                fprintf(stderr, "arsenal gradcheck: --coords '%s': expected an integer in [1, 100000]\n", value);
                error = 1;
            }
            coords = (int)n;
        } else if (ars_cli_option(argc, argv, &i, "--step", &value, &error)) {
            char *end;
            step = strtod(value, &end);
            if (*end || !(step >= 1e-5 && step <= 0.1)) {
                fprintf(stderr, "arsenal gradcheck: --step '%s': expected a number in [1e-5, 0.1]\n", value);
                error = 1;
            }
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "arsenal gradcheck: unexpected argument '%s' (arsenal gradcheck --help)\n", argv[i]);
            error = 1;
        } else {
            path = argv[i];
        }
    }
    if (!error && !path) {
        fputs(gradcheck_usage, stderr);
        error = 1;
    }
    ars_config config;
    if (error || ars_cli_load_config(&config, path, overrides, override_count)) {
        free(overrides);
        return error ? 2 : 1;
    }
    free(overrides);
    ars_run_config run;
    ars_layer_spec *specs = NULL;
    int count = 0, failed = 0;
    ars_dataset train = {0}, test = {0};
    ars_model model = {0};
    ars_gradcheck_result *results = NULL;
    int rc = ars_run_config_load(&config, &run, &specs, &count);
    if (!rc && run.precision != 0)   /* ars_gradcheck_model checks in fp32 whatever the run trains in */
        printf("gradcheck: gradients are checked in fp32; [run] precision = %s applies to training\n",
               run.precision == 1 ? "bf16" : "bf16_emulated");
    if (!rc) run.stream_data = 0;   /* train.x is read below: a user's file in memory, its first rows only */
    if (!rc) rc = ars_load_run_data(&run, 0, rows, &train, &test);
    if (!rc) rc = ars_model_create(&model, specs, count, ars_dataset_shape(&train), rows);
    if (!rc) rc = ars_init_model(&model, run.seed);
    if (!rc && !(results = calloc((size_t)model.layer_count, sizeof *results)))
        rc = ars_error(ARS_ENOMEM, "gradcheck: out of memory");
    if (!rc) {
        ars_pass pass = {.mode = ARS_MODE_TRAIN, .rows = rows < train.count ? rows : train.count,
                         .global_rows = rows < train.count ? rows : train.count, .seed = run.seed, .step = 1};
        ars_gradcheck_options options = {.max_coords = coords, .step = step};
        rc = ars_gradcheck_model(&model, &pass, train.x, run.seed, &options, results);
    }
    if (!rc) {
        /* raw = relative error before the noise allowance; a coordinate is
         * resolved when its gradient stands above float finite-difference noise */
        printf("%-22s %8s %9s %12s %12s %10s  %s\n", "layer", "checked", "resolved", "raw rel err",
               "beyond noise", "noise", "result");
        int unresolved = 0;
        for (int l = 0; l < model.layer_count; l++) {
            const ars_gradcheck_result *r = &results[l];
            if (r->checked == 0) continue;
            int ok = ars_gradcheck_passed(r);
            failed += !ok;
            unresolved += ok && r->resolved == 0;
            const char *verdict = !ok ? "FAILED" : r->resolved == 0 ? "below resolution" : "ok";
            printf("%-22s %8zu %9zu %12.2e %12.2e %10.1e  %s%s%s\n", model.layers[l].name, r->checked, r->resolved,
                   r->raw_rel_error, r->max_rel_error, r->noise, verdict, ok ? "" : " at ", ok ? "" : r->worst);
        }
        if (unresolved)
            printf("%d layer(s) have gradients below what float finite differences can resolve (vanishing?): "
                   "not verified\n", unresolved);
        printf("%s: tolerance %.0e on the relative error\n", failed ? "gradient check FAILED" : "gradient check passed",
               ARS_GRADCHECK_TOLERANCE);
    } else {
        fprintf(stderr, "arsenal: %s\n", ars_error_message());
    }
    free(results);
    ars_model_destroy(&model);
    ars_dataset_free(&train);
    ars_dataset_free(&test);
    free(specs);
    ars_config_free(&config);
    return rc ? 1 : failed ? 1 : 0;
}
