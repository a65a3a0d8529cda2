/* ckpt_sink: the HDF5 file driver the checkpoint writer creates its file
 * with. It writes with pwrite straight into a file descriptor the caller
 * opened, and never reports a failed write to HDF5: the first error (disk
 * full, quota, I/O error, file size limit, a write that makes no progress,
 * a failed ftruncate or read) is kept in the sink with its errno, every
 * later write is dropped, and HDF5 carries on to a clean H5Fclose. The
 * caller then reads the error from the sink. Why: when HDF5's own sec2
 * driver hit ENOSPC, libhdf5 1.10.8 kept a file whose close had failed and
 * crashed closing it again at exit (finding F1, docs/validation.md). */
#ifndef ARSENAL_CKPT_SINK_H
#define ARSENAL_CKPT_SINK_H

#include <hdf5.h>

typedef struct ars_ckpt_sink ars_ckpt_sink;

/* A sink writing to fd (open read-write: HDF5 may read back what it
 * wrote); the caller keeps fd and closes it after ars_ckpt_sink_release.
 * NULL when out of memory. */
ars_ckpt_sink *ars_ckpt_sink_create(int fd);

/* A new file access property list that makes H5Fcreate use the sink
 * (H5Pclose it after H5Fcreate); negative if the driver cannot be
 * registered or the list made. */
hid_t ars_ckpt_sink_fapl(ars_ckpt_sink *sink);

/* A write that returned 0 bytes: no errno to report. */
#define ARS_CKPT_SINK_NO_PROGRESS (-1)

/* 0 while nothing failed; else the errno of the first failure (or
 * ARS_CKPT_SINK_NO_PROGRESS), and *operation says what failed, to follow
 * "cannot": "write", "read back" or "set the length of". */
int ars_ckpt_sink_error(const ars_ckpt_sink *sink, const char **operation);

/* The caller is done (after H5Fclose): any later I/O through the sink is
 * dropped, and the sink is freed once HDF5 no longer holds it. */
void ars_ckpt_sink_release(ars_ckpt_sink *sink);

#endif
