/* ckpt_io: HDF5 helpers shared by the checkpoint writer and reader. The
 * HDF5 library's own error stack printing is switched off by the callers;
 * every failure here becomes one ars_error naming the object. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"

/* Format 2 stores fixed-length strings only; format 1 stored variable-length
 * ones, whose lengths and global-heap addresses libhdf5 trusts from the file
 * (findings F11-F13: gigabyte allocations, crashes, endless loops). The
 * checkpoint reader allows them only for a format-1 file (ckpt.c decides). */
static int vlen_strings_allowed;

void ars_h5_allow_vlen_strings(int allowed) { vlen_strings_allowed = allowed; }

static hid_t vlen_string_type(void)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

/* A fixed-length UTF-8 string of size bytes (text and terminating NUL). */
static hid_t fixed_string_type(size_t size)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, size ? size : 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

/* Checks a stored string type before anything is read with it: *size is
 * its fixed size, 0 for a variable-length string (allowed in format 1 only). */
static int check_string_type(hid_t file_type, const char *where, const char *name, size_t max, size_t *size)
{
    *size = 0;
    if (file_type < 0 || H5Tget_class(file_type) != H5T_STRING)
        return ars_error(ARS_EFORMAT, "%s%s is not a string", where, name);
    htri_t variable = H5Tis_variable_str(file_type);
    if (variable < 0) return ars_error(ARS_EFORMAT, "%s%s has a corrupted string type", where, name);
    if (variable) {
        if (!vlen_strings_allowed)
            return ars_error(ARS_EFORMAT, "%s%s is a variable-length string, which format version 2 never "
                             "writes (corrupted or forged file)", where, name);
        return 0;
    }
    size_t fixed = H5Tget_size(file_type);
    if (fixed == 0 || fixed > max)
        return ars_error(ARS_EFORMAT, "%s%s is a string of %zu bytes, at most %zu are allowed (corrupted file?)",
                         where, name, fixed, max);
    *size = fixed;
    return 0;
}

/* F9: a dataset's shape is only a claim of the file. Chunks never written
 * read as fill values, so a small file could make the reader allocate
 * gigabytes: refuse a dataset whose stored bytes (at most the file's size)
 * cannot hold bytes of data. Deflate shrinks data at most ~1032:1. */
static int check_storage(hid_t set, const char *path, const char *name, hsize_t bytes)
{
    if (bytes == 0) return 0;
    hsize_t stored = H5Dget_storage_size(set), file_size = 0;
    hid_t file = H5Iget_file_id(set);
    if (file >= 0) {
        if (H5Fget_filesize(file, &file_size) >= 0 && stored > file_size) stored = file_size;
        H5Fclose(file);
    }
    int compressed = 0;
    hid_t plist = H5Dget_create_plist(set);
    int filters = plist >= 0 ? H5Pget_nfilters(plist) : 0;
    for (int i = 0; i < filters; i++) {
        unsigned flags = 0, values[8], config = 0;
        size_t count = 8;
        char filter_name[64];
        H5Z_filter_t id = H5Pget_filter2(plist, (unsigned)i, &flags, &count, values, sizeof filter_name,
                                         filter_name, &config);
        if (id != H5Z_FILTER_FLETCHER32) compressed = 1;
    }
    if (plist >= 0) H5Pclose(plist);
    hsize_t capacity = compressed ? stored * 1100 : stored;
    if (bytes > capacity)
        return ars_error(ARS_EFORMAT, "%s/%s claims %llu bytes of data but the file stores %llu bytes for it "
                         "(corrupted file)", path, name, (unsigned long long)bytes, (unsigned long long)stored);
    return 0;
}

int ars_h5_attr_write(hid_t object, const char *name, hid_t type, const void *value)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t status = attr < 0 ? -1 : H5Awrite(attr, type, value);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "cannot write attribute '%s'", name) : 0;
}

int ars_h5_attr_write_string(hid_t object, const char *name, const char *value)
{
    hid_t type = fixed_string_type(strlen(value) + 1);
    int rc = ars_h5_attr_write(object, name, type, value);
    H5Tclose(type);
    return rc;
}

int ars_h5_attr_read(hid_t object, const char *path, const char *name, hid_t type, void *value)
{
    if (H5Aexists(object, name) <= 0)
        return ars_error(ARS_EFORMAT, "%s: attribute '%s' is missing", path, name);
    hid_t attr = H5Aopen(object, name, H5P_DEFAULT);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    int scalar = space >= 0 && H5Sget_simple_extent_npoints(space) == 1;
    hid_t file_type = attr < 0 ? -1 : H5Aget_type(attr);
    /* The stored class must match (a string where a number is expected is a format error). */
    int class_ok = file_type >= 0 && H5Tget_class(file_type) == H5Tget_class(type);
    herr_t status = scalar && class_ok ? H5Aread(attr, type, value) : -1;
    if (file_type >= 0) H5Tclose(file_type);
    if (space >= 0) H5Sclose(space);
    if (attr >= 0) H5Aclose(attr);
    if (status < 0) return ars_error(ARS_EFORMAT, "%s: attribute '%s' has the wrong type or shape", path, name);
    return 0;
}

int ars_h5_attr_read_string(hid_t object, const char *path, const char *name, char *out, size_t size)
{
    if (H5Aexists(object, name) <= 0)
        return ars_error(ARS_EFORMAT, "%s: attribute '%s' is missing", path, name);
    char where[600];
    snprintf(where, sizeof where, "%s: attribute ", path);
    hid_t attr = H5Aopen(object, name, H5P_DEFAULT);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    hid_t file_type = attr < 0 ? -1 : H5Aget_type(attr);
    size_t fixed = 0;
    int rc = check_string_type(file_type, where, name, 65536, &fixed);
    if (!rc && (space < 0 || H5Sget_simple_extent_npoints(space) != 1))
        rc = ars_error(ARS_EFORMAT, "%s: attribute '%s' is not a single string", path, name);
    if (!rc && fixed) {
        /* read with the stored type itself: no conversion, bytes as stored */
        char *value = calloc(fixed + 1, 1);
        hid_t type = H5Tcopy(file_type);
        if (!value) rc = ars_error(ARS_ENOMEM, "out of memory");
        else if (type < 0 || H5Aread(attr, type, value) < 0)
            rc = ars_error(ARS_EFORMAT, "%s: cannot read attribute '%s'", path, name);
        else snprintf(out, size, "%s", value);
        if (type >= 0) H5Tclose(type);
        free(value);
    } else if (!rc) {
        hid_t type = vlen_string_type();
        char *value = NULL;
        if (H5Aread(attr, type, &value) < 0 || !value) {
            rc = ars_error(ARS_EFORMAT, "%s: cannot read attribute '%s'", path, name);
        } else {
            snprintf(out, size, "%s", value);
            H5free_memory(value);
        }
        H5Tclose(type);
    }
    if (file_type >= 0) H5Tclose(file_type);
    if (space >= 0) H5Sclose(space);
    if (attr >= 0) H5Aclose(attr);
    return rc;
}

/* chunks of about 1 MiB: big enough for fast I/O, small enough for the checksum filter */
void ars_h5_float_chunk(int rank, const hsize_t *dims, hsize_t *chunk)
{
    hsize_t row = 1;
    for (int i = 1; i < rank; i++) row *= dims[i];
    hsize_t rows_per_chunk = row ? (262144 + row - 1) / row : 1;
    chunk[0] = dims[0] ? (dims[0] < rows_per_chunk ? dims[0] : rows_per_chunk) : 1;
    for (int i = 1; i < rank; i++) chunk[i] = dims[i] ? dims[i] : 1;
}

int ars_h5_write_floats(hid_t group, const char *name, int rank, const hsize_t *dims, const float *data)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[4];
    ars_h5_float_chunk(rank, dims, chunk);
    H5Pset_chunk(plist, rank, chunk);
    H5Pset_fletcher32(plist);
    hid_t set = H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    herr_t status = set < 0 ? -1 : H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (set >= 0) H5Dclose(set);
    H5Pclose(plist);
    H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "cannot write dataset '%s' (disk full?)", name) : 0;
}

/* Opens name under group and checks its rank; fills dims. */
static hid_t open_checked(hid_t group, const char *path, const char *name, hid_t type, int rank, hsize_t *dims,
                          int *rc)
{
    *rc = 0;
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0) {
        *rc = ars_error(ARS_EFORMAT, "%s/%s is missing", path, name);
        return -1;
    }
    hid_t set = H5Dopen2(group, name, H5P_DEFAULT);
    if (set < 0) {
        *rc = ars_error(ARS_EFORMAT, "%s/%s cannot be opened (corrupted file?)", path, name);
        return -1;
    }
    hid_t space = H5Dget_space(set);
    hid_t file_type = H5Dget_type(set);
    int found_rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int class_ok = file_type >= 0 && H5Tget_class(file_type) == H5Tget_class(type) &&
                   (H5Tget_class(type) == H5T_STRING || H5Tget_size(file_type) == H5Tget_size(type));
    if (found_rank == rank && rank > 0) H5Sget_simple_extent_dims(space, dims, NULL);
    if (file_type >= 0) H5Tclose(file_type);
    if (space >= 0) H5Sclose(space);
    if (!class_ok) *rc = ars_error(ARS_EFORMAT, "%s/%s has the wrong data type", path, name);
    else if (found_rank != rank)
        *rc = ars_error(ARS_EFORMAT, "%s/%s has %d dimensions, expected %d", path, name, found_rank, rank);
    if (*rc) {
        H5Dclose(set);
        return -1;
    }
    return set;
}

static void format_dims(char *out, size_t size, int rank, const hsize_t *dims)
{
    size_t used = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (used < size) snprintf(out + used, size - used, "]");
}

int ars_h5_read_floats(hid_t group, const char *path, const char *name, int rank, const hsize_t *dims, float *data)
{
    hsize_t found[4] = {0};
    int rc;
    hid_t set = open_checked(group, path, name, H5T_NATIVE_FLOAT, rank, found, &rc);
    if (set < 0) return rc;
    for (int i = 0; i < rank; i++) {
        if (found[i] != dims[i]) {
            char expected[64], got[64];
            format_dims(expected, sizeof expected, rank, dims);
            format_dims(got, sizeof got, rank, found);
            H5Dclose(set);
            return ars_error(ARS_EFORMAT, "%s/%s has shape %s, the model needs %s", path, name, got, expected);
        }
    }
    herr_t status = H5Dread(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(set);
    if (status < 0)
        return ars_error(ARS_EFORMAT, "%s/%s cannot be read: checksum mismatch or truncated data (corrupted file)",
                         path, name);
    return 0;
}

int ars_h5_write_series(hid_t group, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data)
{
    hsize_t maxdims[3], chunk[3];
    for (int i = 0; i < rank; i++) {
        maxdims[i] = i == 0 ? H5S_UNLIMITED : dims[i];
        chunk[i] = dims[i] ? dims[i] : 1;
    }
    /* about 64 KiB per chunk along the growing dimension */
    hsize_t row_bytes = H5Tget_size(type);
    for (int i = 1; i < rank; i++) row_bytes *= chunk[i];
    hsize_t rows = 65536 / (row_bytes ? row_bytes : 1);
    if (rows > dims[0]) rows = dims[0];   /* small series: small chunks */
    chunk[0] = rows < 1 ? 1 : rows;
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, rank, chunk);
    if (H5Tis_variable_str(type) <= 0) {   /* HDF5 filters cannot apply to variable-length data */
        H5Pset_fletcher32(plist);
        H5Pset_deflate(plist, 4);
    }
    hid_t set = H5Dcreate2(group, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    hsize_t count = 1;
    for (int i = 0; i < rank; i++) count *= dims[i];
    herr_t status = set < 0 ? -1 : count ? H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (set >= 0) H5Dclose(set);
    H5Pclose(plist);
    H5Sclose(space);
    return status < 0 ? ars_error(ARS_EIO, "cannot write dataset '%s' (disk full?)", name) : 0;
}

/* Reads the whole of an open dataset (count elements of elem_size bytes in
 * type) into a new buffer, after checking the file can hold them. */
static int read_whole(hid_t set, const char *path, const char *name, hid_t type, size_t elem_size, hsize_t count,
                      void **data)
{
    *data = NULL;
    if (count > ((hsize_t)1 << 34) / elem_size)
        return ars_error(ARS_EFORMAT, "%s/%s claims %llu elements: too large", path, name, (unsigned long long)count);
    if (count == 0) return 0;
    TRY(check_storage(set, path, name, count * elem_size));
    *data = malloc((size_t)count * elem_size);
    if (!*data) return ars_error(ARS_ENOMEM, "%s/%s: out of memory", path, name);
    if (H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0) {
        free(*data);
        *data = NULL;
        return ars_error(ARS_EFORMAT, "%s/%s cannot be read: checksum mismatch or truncated data", path, name);
    }
    return 0;
}

int ars_h5_read_series(hid_t group, const char *path, const char *name, hid_t type, int rank, hsize_t *dims,
                       void **data)
{
    int rc;
    *data = NULL;
    hid_t set = open_checked(group, path, name, type, rank, dims, &rc);
    if (set < 0) return rc;
    hsize_t count = 1;
    for (int i = 0; i < rank; i++) count *= dims[i];
    rc = read_whole(set, path, name, type, H5Tget_size(type), count, data);
    H5Dclose(set);
    return rc;
}

int ars_h5_check_floats(hid_t group, const char *path, const char *name)
{
    hid_t set = H5Lexists(group, name, H5P_DEFAULT) > 0 ? H5Dopen2(group, name, H5P_DEFAULT) : -1;
    hid_t space = set < 0 ? -1 : H5Dget_space(set);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (space >= 0) H5Sclose(space);
    if (set >= 0) H5Dclose(set);
    if (set < 0) return ars_error(ARS_EFORMAT, "%s/%s cannot be opened (corrupted file?)", path, name);
    if (rank < 1 || rank > 4)
        return ars_error(ARS_EFORMAT, "%s/%s has %d dimensions, expected 1 to 4", path, name, rank);
    hsize_t dims[4];
    void *data = NULL;
    int rc = ars_h5_read_series(group, path, name, H5T_NATIVE_FLOAT, rank, dims, &data);
    free(data);
    return rc;
}

int ars_h5_write_string(hid_t group, const char *name, const char *text)
{
    hid_t type = fixed_string_type(strlen(text) + 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t set = H5Dcreate2(group, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t status = set < 0 ? -1 : H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, text);
    if (set >= 0) H5Dclose(set);
    H5Sclose(space);
    H5Tclose(type);
    return status < 0 ? ars_error(ARS_EIO, "cannot write '%s'", name) : 0;
}

int ars_h5_read_string(hid_t group, const char *path, const char *name, char **text)
{
    *text = NULL;
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0) return ars_error(ARS_EFORMAT, "%s/%s is missing", path, name);
    char where[600];
    snprintf(where, sizeof where, "%s/", path);
    hid_t set = H5Dopen2(group, name, H5P_DEFAULT);
    hid_t file_type = set < 0 ? -1 : H5Dget_type(set);
    hid_t space = set < 0 ? -1 : H5Dget_space(set);
    size_t fixed = 0;
    int rc = check_string_type(file_type, where, name, ARS_H5_MAX_TEXT, &fixed);
    if (!rc && (space < 0 || H5Sget_simple_extent_npoints(space) != 1))
        rc = ars_error(ARS_EFORMAT, "%s/%s is not a single string", path, name);
    if (!rc && fixed) {
        hid_t type = H5Tcopy(file_type);
        void *value = NULL;
        rc = read_whole(set, path, name, type, fixed, 1, &value);
        if (!rc) {
            *text = strndup(value, fixed);
            if (!*text) rc = ars_error(ARS_ENOMEM, "out of memory");
        }
        free(value);
        H5Tclose(type);
    } else if (!rc) {
        hid_t type = vlen_string_type();
        char *value = NULL;
        if (H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0 || !value) {
            rc = ars_error(ARS_EFORMAT, "%s/%s cannot be read", path, name);
        } else {
            *text = strdup(value);
            H5free_memory(value);
            if (!*text) rc = ars_error(ARS_ENOMEM, "out of memory");
        }
        H5Tclose(type);
    }
    if (space >= 0) H5Sclose(space);
    if (file_type >= 0) H5Tclose(file_type);
    if (set >= 0) H5Dclose(set);
    return rc;
}

int ars_h5_write_strings(hid_t group, const char *name, const char *const *strings, size_t count)
{
    size_t size = 1;   /* the longest string and its NUL */
    for (size_t i = 0; i < count; i++)
        if (strlen(strings[i]) + 1 > size) size = strlen(strings[i]) + 1;
    char *packed = calloc(count ? count : 1, size);
    if (!packed) return ars_error(ARS_ENOMEM, "checkpoint: out of memory");
    for (size_t i = 0; i < count; i++) memcpy(packed + i * size, strings[i], strlen(strings[i]));
    hid_t type = fixed_string_type(size);
    hsize_t dims[1] = {count};
    int rc = ars_h5_write_series(group, name, type, 1, dims, packed);
    H5Tclose(type);
    free(packed);
    return rc;
}

int ars_h5_read_strings(hid_t group, const char *path, const char *name, char ***strings, size_t *count)
{
    *strings = NULL;
    *count = 0;
    hsize_t dims[1] = {0};
    int rc;
    hid_t type = H5Tcopy(H5T_C_S1), set = open_checked(group, path, name, type, 1, dims, &rc);
    H5Tclose(type);
    if (set < 0) return rc;
    char where[600];
    snprintf(where, sizeof where, "%s/", path);
    hid_t file_type = H5Dget_type(set);
    size_t fixed = 0;
    void *raw = NULL;
    rc = check_string_type(file_type, where, name, 1 << 20, &fixed);
    if (!rc) {
        type = fixed ? H5Tcopy(file_type) : vlen_string_type();
        rc = read_whole(set, path, name, type, fixed ? fixed : sizeof(char *), dims[0], &raw);
        H5Tclose(type);
    }
    if (file_type >= 0) H5Tclose(file_type);
    H5Dclose(set);
    if (rc) return rc;
    char **copies = calloc(dims[0] ? dims[0] : 1, sizeof *copies);
    for (hsize_t i = 0; i < dims[0]; i++) {
        if (fixed) {
            if (copies) copies[i] = strndup((char *)raw + i * fixed, fixed);
        } else {
            char *value = ((char **)raw)[i];
            if (copies && value) copies[i] = strdup(value);
            if (value) H5free_memory(value);
        }
    }
    free(raw);
    if (!copies) return ars_error(ARS_ENOMEM, "out of memory");
    for (hsize_t i = 0; i < dims[0]; i++)
        if (!copies[i]) copies[i] = strdup("");
    *strings = copies;
    *count = dims[0];
    return 0;
}
