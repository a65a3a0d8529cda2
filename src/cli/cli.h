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

/* An integer option's value from 1 to max into *out; else prints
 * "arsenal COMMAND: OPTION 'VALUE': expected an integer from 1 to MAX"
 * and returns 1. */
int ars_cli_count(const char *command, const char *option, const char *value, int max, int *out);

/* A failed collective command's message, once: from rank 0 when every
 * rank holds the same error, else from each rank whose error it is (the
 * others hold ARS_EPEER), prefixed by who ("arsenal", "arsenal
 * evaluate"). A failure the other ranks do not know of (ARS_AGREED_NONE)
 * ends the job: they may be waiting in a collective. Returns 1. */
struct ars_dist;
int ars_cli_report_failure(const char *who, const struct ars_dist *dist, int rc, int agreed);

/* MPI_Init, a distributed context over MPI_COMM_WORLD, run(dist, context)
 * and MPI_Finalize: the frame of the commands that run under mpirun
 * (train, evaluate, experiment). Returns run's exit status, 1 when the
 * context cannot be made. */
int ars_cli_run_mpi(int *argc, char ***argv, int (*run)(struct ars_dist *dist, void *context), void *context);

#endif
