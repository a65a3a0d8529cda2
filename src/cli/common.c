/* common: helpers shared by the subcommands (run-file loading, options). */
#include <stdio.h>
#include <string.h>

#include "arsenal/config.h"
#include "arsenal/error.h"
#include "cli.h"

int ars_cli_read_config(struct ars_config *config, const char *path, char **overrides, int override_count)
{
    int rc = ars_config_load_file(config, path);
    for (int i = 0; i < override_count && !rc; i++) {
        rc = ars_config_override(config, overrides[i]);
        if (rc) ars_error_context(rc, "--set %s", overrides[i]);
    }
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
