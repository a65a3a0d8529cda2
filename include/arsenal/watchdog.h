/* watchdog: a collective timeout for data-parallel training, like the
 * timeout of PyTorch's process groups. A plain MPI job whose peer dies
 * silently (a partition, a frozen host) blocks forever in MPI_Allreduce, and
 * mpirun waits with it. The watchdog is a monitor thread: the trainer arms it
 * before a collective with ars_watchdog_enter(w, step, "gradient all-reduce")
 * and disarms it after with ars_watchdog_leave(w). If the collective has not
 * completed within the timeout, the watchdog writes one line to stderr,
 *
 *   arsenal: watchdog: rank 1 on host node7: step 37: gradient all-reduce did
 *   not complete within 300 s (waited 300.0 s; a peer rank is dead, hung or
 *   unreachable); ending the job
 *
 * and ends the process with a non-zero status: MPI_Abort(MPI_COMM_WORLD)
 * when MPI is initialized (mpirun then ends every rank), and _exit() if
 * MPI_Abort itself has not ended the process after a few seconds (it may
 * hang trying to reach the lost peer).
 *
 * Only the time between enter and leave is watched, so computation, data
 * loading or a long checkpoint write outside an armed section never trips
 * it. enter re-arms: consecutive enters without a leave start a new
 * deadline for the new phase. A NULL watchdog makes every call a no-op, so
 * `timeout 0 = off` needs no branches at the call sites. */
#ifndef ARSENAL_WATCHDOG_H
#define ARSENAL_WATCHDOG_H

#include <stdint.h>

/* The exit status of a process ended by the watchdog (also the MPI_Abort
 * error code, which mpirun returns). */
#define ARS_WATCHDOG_EXIT_CODE 3

typedef struct ars_watchdog ars_watchdog;

typedef struct ars_watchdog_options {
    double timeout_seconds;        /* > 0 arms; <= 0: no watchdog (*out = NULL) */
    int rank;                      /* named in the message; < 0: MPI_COMM_WORLD's rank if MPI is up */
    int exit_code;                 /* 0: ARS_WATCHDOG_EXIT_CODE */
    double abort_grace_seconds;    /* how long abort_fn may take before _exit; 0: 5 s */
    /* What ends the job; NULL: MPI_Abort(MPI_COMM_WORLD, exit_code) if MPI is
     * initialized (and not finalized), then _exit(exit_code). Tests replace it. */
    void (*abort_fn)(int exit_code);
} ars_watchdog_options;

/* Starts the monitor thread. With timeout_seconds <= 0 it starts nothing
 * and sets *out = NULL (every other call is then a no-op). Returns 0 or a
 * negative ARS_E* code with a message. */
int ars_watchdog_start(ars_watchdog **out, double timeout_seconds, int rank);
int ars_watchdog_start_with(ars_watchdog **out, const ars_watchdog_options *options);

/* Arms: `what` (copied; e.g. "gradient all-reduce") must complete within
 * the timeout. step is named in the message. */
void ars_watchdog_enter(ars_watchdog *w, int64_t step, const char *what);

/* Disarms. */
void ars_watchdog_leave(ars_watchdog *w);

/* Stops and joins the thread, frees w. Call before MPI_Finalize. */
void ars_watchdog_stop(ars_watchdog *w);

#endif
