/* ckpt_io: small HDF5 helpers for the checkpoint writer and reader:
 * attributes, strings, float tensors with checksums, extendible history
 * datasets. All return 0 or an ars_error code naming the object. Readers
 * check a dataset's claimed size against the bytes the file stores for it
 * before allocating (a never-written chunked dataset reads as fill values). */
#ifndef ARSENAL_CKPT_IO_H
#define ARSENAL_CKPT_IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* The longest string dataset read (the resolved run file, /config). */
#define ARS_H5_MAX_TEXT ((size_t)64 << 20)

/* Whether the string readers accept variable-length strings (checkpoint
 * format 1). Format 2 writes fixed-length strings only, and a
 * variable-length one in it is refused before it is read. */
void ars_h5_allow_vlen_strings(int allowed);

int ars_h5_attr_write(hid_t object, const char *name, hid_t type, const void *value);
int ars_h5_attr_write_string(hid_t object, const char *name, const char *value);
int ars_h5_attr_read(hid_t object, const char *path, const char *name, hid_t type, void *value);
int ars_h5_attr_read_string(hid_t object, const char *path, const char *name, char *out, size_t size);

/* A float32 tensor (rank 1 to 4), chunked with a Fletcher-32 checksum so
 * that corrupted bytes are detected on read. */
int ars_h5_write_floats(hid_t group, const char *name, int rank, const hsize_t *dims, const float *data);

/* The chunk shape ars_h5_write_floats gives a tensor of dims (chunk has
 * rank entries): whole rows of dims[1..], about 1 MiB. */
void ars_h5_float_chunk(int rank, const hsize_t *dims, hsize_t *chunk);

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

/* Reads a float32 dataset of rank 1 or 2, whatever its shape, and drops it
 * (checking a file when no model is at hand). */
int ars_h5_check_floats(hid_t group, const char *path, const char *name);

/* UTF-8 strings, written fixed-length (the text's own length + 1, or the
 * longest of a list); read fixed-length, or variable-length when allowed. */
int ars_h5_write_string(hid_t group, const char *name, const char *text);
int ars_h5_read_string(hid_t group, const char *path, const char *name, char **text);
int ars_h5_write_strings(hid_t group, const char *name, const char *const *strings, size_t count);
int ars_h5_read_strings(hid_t group, const char *path, const char *name, char ***strings, size_t *count);

#endif
