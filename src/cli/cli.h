/* cli: the arsenal command's subcommands. Each returns the process exit
 * status; messages go to stderr on the rank that failed. */
#ifndef ARSENAL_CLI_H
#define ARSENAL_CLI_H

int ars_cmd_train(int argc, char **argv);
int ars_cmd_gradcheck(int argc, char **argv);
int ars_cmd_inspect(int argc, char **argv);
int ars_cmd_replay(int argc, char **argv);
int ars_cmd_experiment(int argc, char **argv);
int ars_cmd_export(int argc, char **argv);
int ars_cmd_evaluate(int argc, char **argv);
int ars_cmd_predict(int argc, char **argv);

/* Loads a run file, applies --set overrides and expands blocks. On error
 * prints it and returns non-zero. */
struct ars_config;
int ars_cli_load_config(struct ars_config *config, const char *path, char **overrides, int override_count);
/* The same without printing: under MPI the ranks agree first, then one reports. */
int ars_cli_read_config(struct ars_config *config, const char *path, char **overrides, int override_count);

/* 1 if argv[*i] is the option name; takes its value from the next arg
 * (or after '=') into *value. Prints an error when the value is missing. */
int ars_cli_option(int argc, char **argv, int *i, const char *name, const char **value, int *error);

#endif
