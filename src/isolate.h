/* isolate: a file reader run first in a forked child with limits, where a
 * crash or a hang costs nothing. libhdf5 1.10 crashes or loops forever on
 * some corrupted files (docs/validation.md, F12/F13): the checkpoint
 * reader (ars_ckpt_validate), the HDF5 data loader (ars_h5data_check) and
 * `arsenal predict`'s HDF5 input read the whole file this way before
 * reading it for real, and a crash, a hang or a memory bomb becomes an
 * error naming the file. */
#ifndef ARSENAL_ISOLATE_H
#define ARSENAL_ISOLATE_H

#include <stddef.h>
#include <stdint.h>

/* How the child ended. */
typedef enum {
    ARS_ISOLATED_DONE,      /* it sent its verdict */
    ARS_ISOLATED_TIMEOUT,   /* not within the wall-clock limit: killed */
    ARS_ISOLATED_CPU,       /* killed by its CPU-time limit */
    ARS_ISOLATED_SIGNAL,    /* crashed (signal) */
    ARS_ISOLATED_SILENT     /* exited without its verdict (a failed allocation's abort, say) */
} ars_isolated_end;

typedef struct ars_isolated {
    ars_isolated_end end;
    int signal;             /* ARS_ISOLATED_SIGNAL */
    int exit_status;        /* ARS_ISOLATED_SILENT: its exit status, -1 when not known */
    uint64_t memory;        /* the limits it ran under */
    double seconds;
} ars_isolated;

/* What runs in the child: fills the verdict (verdict_size bytes, zeroed
 * before). It may crash; it must not call MPI. */
typedef void (*ars_isolated_work)(void *context, void *verdict);

/* Forks a child that resets the crash signals to their defaults (no
 * backtrace from Open MPI's or a sanitizer's handlers), sends stdout and
 * stderr to /dev/null, allows no core file, CPU time ceil(seconds) + 1 and
 * (not under AddressSanitizer, which reserves terabytes) its address space
 * at the fork plus memory; runs work and writes the verdict back through
 * a pipe, then _exit(0). The parent waits at most seconds (wall clock),
 * then kills it. Returns 0 with *how saying how the child ended (the
 * verdict is valid when how->end == ARS_ISOLATED_DONE); non-zero (ARS_EIO,
 * naming path) only when no child could be started. */
int ars_isolated_run(const char *path, uint64_t memory, double seconds, ars_isolated_work work, void *context,
                     void *verdict, size_t verdict_size, ars_isolated *how);

/* The error for a child that did not send its verdict: "PATH: corrupted
 * NOUN (the HDF5 reader crashed with signal 11, Segmentation fault)", "...
 * did not finish in 10 s", ... Returns ARS_EFORMAT. */
int ars_isolated_error(const ars_isolated *how, const char *path, const char *noun);

#endif
