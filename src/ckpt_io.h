/* ckpt_io: small HDF5 helpers for the checkpoint writer and reader:
 * attributes, strings, float tensors with checksums, extendible history
 * datasets. All return 0 or an ars_error code naming the object. */
#ifndef ARSENAL_CKPT_IO_H
#define ARSENAL_CKPT_IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

int ars_h5_attr_write(hid_t object, const char *name, hid_t type, const void *value);
int ars_h5_attr_write_string(hid_t object, const char *name, const char *value);
int ars_h5_attr_read(hid_t object, const char *path, const char *name, hid_t type, void *value);
int ars_h5_attr_read_string(hid_t object, const char *path, const char *name, char *out, size_t size);

/* A float32 tensor (rank 1 or 2), chunked with a Fletcher-32 checksum so
 * that corrupted bytes are detected on read. */
int ars_h5_write_floats(hid_t group, const char *name, int rank, const hsize_t *dims, const float *data);

/* Reads a float32 tensor after checking it exists with exactly dims. */
int ars_h5_read_floats(hid_t group, const char *path, const char *name, int rank, const hsize_t *dims,
                       float *data);

/* Extendible (unlimited first dimension), chunked, deflate-compressed. */
int ars_h5_write_series(hid_t group, const char *name, hid_t type, int rank, const hsize_t *dims,
                        const void *data);

/* Reads a dataset of type whose shape must have the given rank; *dims
 * receives the shape. data is malloc'd (NULL for zero elements). */
int ars_h5_read_series(hid_t group, const char *path, const char *name, hid_t type, int rank, hsize_t *dims,
                       void **data);

/* Variable-length UTF-8 strings. */
int ars_h5_write_string(hid_t group, const char *name, const char *text);
int ars_h5_read_string(hid_t group, const char *path, const char *name, char **text);
int ars_h5_write_strings(hid_t group, const char *name, const char *const *strings, size_t count);
int ars_h5_read_strings(hid_t group, const char *path, const char *name, char ***strings, size_t *count);

#endif
