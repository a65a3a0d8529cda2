/* common: helpers shared by the subcommands (run-file loading, options,
 * the MPI frame and failure reports of the collective commands). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "arsenal/config.h"
#include "arsenal/dist.h"
#include "arsenal/error.h"
#include "cli.h"

int ars_cli_read_config(struct ars_config *config, const char *path, char **overrides, int override_count)
{
    int rc = ars_config_load_file(config, path);
    if (!rc) rc = ars_config_override_all(config, overrides, override_count);
    if (!rc) rc = ars_config_expand(config);
    if (rc) ars_config_free(config);   /* loaded but unusable: nothing for the caller to free */
    return rc;
}

int ars_cli_load_config(struct ars_config *config, const char *path, char **overrides, int override_count)
{
    int rc = ars_cli_read_config(config, path, overrides, override_count);
    if (rc) fprintf(stderr, "arsenal: %s\n", ars_error_message());
    return rc;
}

int ars_cli_option(int argc, char **argv, int *i, const char *name, const char **value, int *error)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "arsenal: %s needs a value\n", name);
        *error = 1;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

int ars_cli_count(const char *command, const char *option, const char *value, int max, int *out)
{
    char *end;
    long n = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || n < 1 || n > max) {
        fprintf(stderr, "arsenal %s: %s '%s': expected an integer from 1 to %d\n", command, option, value, max);
        return 1;
    }
    *out = (int)n;
    return 0;
}

int ars_cli_report_failure(const char *who, const ars_dist *dist, int rc, int agreed)
{
    if (rc != ARS_EPEER && (agreed != ARS_AGREED_SAME || dist->rank == 0))
        fprintf(stderr, "%s: %s\n", who, ars_error_message());
    if (dist->size > 1 && agreed == ARS_AGREED_NONE) {
        fprintf(stderr, "arsenal: rank %d ends the job\n", dist->rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return 1;
}

int ars_cli_run_mpi(int *argc, char ***argv, int (*run)(ars_dist *dist, void *context), void *context)
{
    MPI_Init(argc, argv);
    ars_dist dist;
    int status;
    if (ars_dist_create(&dist, MPI_COMM_WORLD)) {
        fprintf(stderr, "arsenal: %s\n", ars_error_message());
        status = 1;
    } else {
        status = run(&dist, context);
        ars_dist_destroy(&dist);
    }
    MPI_Finalize();
    return status;
}
