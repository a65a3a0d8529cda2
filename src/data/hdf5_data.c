/* hdf5_data: a user's HDF5 data file (data = hdf5:PATH). It owns the
 * ars_array over one dataset of the file (x, y, x_test, y_test): its type
 * (any integer or float class, converted by libhdf5), its shape, its
 * chunks (a chunk is read whole, so its size is checked first) and filters
 * (one this libhdf5 cannot decode is named up front), reads of a block of
 * rows (one hyperslab) and of a batch's rows (a union of hyperslabs, one
 * read); and the checking child (ars_h5data_check) that reads the whole
 * file first in a forked process under limits, because libhdf5 1.10 may
 * crash or hang on a corrupted file (docs/validation.md F12, F13; the
 * fork and its limits are src/isolate.c). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "../isolate.h"
#include "user_data.h"

typedef struct h5array {
    hid_t file, dataset, space;
    /* chunked: libhdf5 1.10 copies a whole chunk out of what the file
     * stores for it without checking that an unfiltered chunk stores that
     * many bytes (a heap overflow, found by fuzz_h5data), so each chunk a
     * read touches is checked first (check_chunks) */
    int chunked, filters;
    hsize_t chunk[ARS_ARRAY_MAX_RANK];
    hsize_t chunk_bytes;
    int64_t checked_row;      /* the chunk row checked last, -1 none */
} h5array;

/* Chunks of rows [first, last] store what their shape needs when no filter
 * applies to them (or nothing: never written, read as fill values). */
static int check_chunks(ars_array *a, int64_t first, int64_t last)
{
    h5array *h = a->impl;
    if (!h->chunked) return 0;
    for (int64_t row = first / (int64_t)h->chunk[0]; row <= last / (int64_t)h->chunk[0]; row++) {
        if (row == h->checked_row) continue;
        hsize_t offset[ARS_ARRAY_MAX_RANK] = {(hsize_t)row * h->chunk[0]};
        for (;;) {   /* every chunk of this chunk row: an odometer over dims 1.. */
            unsigned mask = 0;
            haddr_t address = HADDR_UNDEF;
            hsize_t size = 0;
            if (H5Dget_chunk_info_by_coord(h->dataset, offset, &mask, &address, &size) < 0)
                return ars_error(ARS_EFORMAT, "%s: the chunk at sample %llu cannot be located (corrupted file?)",
                                 a->where, (unsigned long long)offset[0]);
            const unsigned all = h->filters >= 32 ? ~0u : (1u << h->filters) - 1;
            const int raw = h->filters == 0 || (mask & all) == all;
            if (address != HADDR_UNDEF && raw && size != h->chunk_bytes)
                return ars_error(ARS_EFORMAT, "%s: the chunk at sample %llu stores %llu bytes, its shape needs %llu "
                                 "(corrupted file?)", a->where, (unsigned long long)offset[0],
                                 (unsigned long long)size, (unsigned long long)h->chunk_bytes);
            int d = a->rank - 1;
            for (; d >= 1; d--) {
                offset[d] += h->chunk[d];
                if (offset[d] < (hsize_t)a->dims[d]) break;
                offset[d] = 0;
            }
            if (d < 1) break;
        }
        h->checked_row = row;
    }
    return 0;
}

/* HDF5 prints its error stack by default; arsenal reports its own. */
static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void h5_close(ars_array *a)
{
    if (!a) return;
    h5array *h = a->impl;
    if (h) {
        if (h->space >= 0) H5Sclose(h->space);
        if (h->dataset >= 0) H5Dclose(h->dataset);
        if (h->file >= 0) H5Fclose(h->file);
        free(h);
    }
    free(a);
}

static int h5_read_block(ars_array *a, int64_t start, int64_t n, int as_double, void *out)
{
    h5array *h = a->impl;
    if (n > 0) TRY(check_chunks(a, start, start + n - 1));
    hsize_t offset[ARS_ARRAY_MAX_RANK] = {(hsize_t)start}, count[ARS_ARRAY_MAX_RANK] = {(hsize_t)n};
    for (int d = 1; d < a->rank; d++) count[d] = (hsize_t)a->dims[d];
    hsize_t values = (hsize_t)n * (hsize_t)a->row_values;
    hid_t memory = H5Screate_simple(1, &values, NULL);
    herr_t ok = memory < 0 ? -1 : H5Sselect_hyperslab(h->space, H5S_SELECT_SET, offset, NULL, count, NULL);
    if (ok >= 0)
        ok = H5Dread(h->dataset, as_double ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT, memory, h->space, H5P_DEFAULT, out);
    if (memory >= 0) H5Sclose(memory);
    if (ok < 0)
        return ars_error(ARS_EIO, "%s: reading samples %lld to %lld failed (a corrupted or truncated file?)", a->where,
                         (long long)start, (long long)(start + n - 1));
    return 0;
}

static int h5_read_rows(ars_array *a, const int64_t *ids, int n, float *out)
{
    h5array *h = a->impl;
    hsize_t offset[ARS_ARRAY_MAX_RANK] = {0}, count[ARS_ARRAY_MAX_RANK] = {0};
    for (int d = 1; d < a->rank; d++) count[d] = (hsize_t)a->dims[d];
    herr_t ok = H5Sselect_none(h->space);
    for (int i = 0; i < n && ok >= 0;) {   /* runs of consecutive rows, one hyperslab each */
        int j = i + 1;
        while (j < n && ids[j] == ids[j - 1] + 1) j++;
        TRY(check_chunks(a, ids[i], ids[j - 1]));
        offset[0] = (hsize_t)ids[i];
        count[0] = (hsize_t)(j - i);
        ok = H5Sselect_hyperslab(h->space, H5S_SELECT_OR, offset, NULL, count, NULL);
        i = j;
    }
    hsize_t values = (hsize_t)n * (hsize_t)a->row_values;
    hid_t memory = ok < 0 || n == 0 ? -1 : H5Screate_simple(1, &values, NULL);
    if (memory >= 0) ok = H5Dread(h->dataset, H5T_NATIVE_FLOAT, memory, h->space, H5P_DEFAULT, out);
    else if (n > 0) ok = -1;
    if (memory >= 0) H5Sclose(memory);
    if (ok < 0)
        return ars_error(ARS_EIO, "%s: reading %d samples (the first %lld) failed (a corrupted or truncated file?)",
                         a->where, n, n ? (long long)ids[0] : 0LL);
    return 0;
}

static const char *type_class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_TIME: return "time";
    case H5T_STRING: return "string";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_COMPOUND: return "compound (a structured array?)";
    case H5T_REFERENCE: return "reference";
    case H5T_ENUM: return "enum (a numpy bool array? store it as uint8)";
    case H5T_VLEN: return "variable-length";
    case H5T_ARRAY: return "array";
    default: return "unknown";
    }
}

/* The root's links, "a, b, c", for a missing dataset's message. */
static herr_t add_link_name(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
    (void)group;
    (void)info;
    char *out = data;
    size_t used = strlen(out);
    if (used + strlen(name) + 8 >= 200) {
        if (used + 4 < 200) strcat(out, ", ...");
        return 1;
    }
    if (used) strcat(out, ", ");
    strcat(out, name);
    return 0;
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

/* A regular file that exists: checked before libhdf5 opens it (a FIFO
 * would block it forever). */
static int check_regular(const char *path, off_t *size)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st);
    int e = errno;
    close(fd);
    if (rc != 0) return ars_error(ARS_EIO, "%s: cannot stat: %s", path, strerror(e));
    if (!S_ISREG(st.st_mode)) return ars_error(ARS_EIO, "%s: is %s, expected an HDF5 file", path, file_kind(st.st_mode));
    if (size) *size = st.st_size;
    return 0;
}

/* The dataset's layout: a chunk is read (and decompressed) whole, so a
 * chunk larger than the budget allows is refused before libhdf5 allocates
 * it; so is a filter this libhdf5 cannot decode. */
static int check_layout(ars_array *a, hid_t dataset, size_t type_size, double memory_limit)
{
    hid_t plist = H5Dget_create_plist(dataset);
    if (plist < 0) return ars_error(ARS_EFORMAT, "%s: cannot read the dataset's layout (corrupted file?)", a->where);
    int rc = 0;
    H5D_layout_t layout = H5Pget_layout(plist);
    if (layout == H5D_CHUNKED) {
        h5array *h = a->impl;
        hsize_t *chunk = h->chunk;
        int rank = H5Pget_chunk(plist, ARS_ARRAY_MAX_RANK, chunk);
        double bytes = (double)type_size;
        for (int d = 0; d < rank && d < a->rank; d++) bytes *= (double)chunk[d];
        for (int d = 0; d < rank && d < a->rank && !rc; d++)
            if (chunk[d] < 1) rc = ars_error(ARS_EFORMAT, "%s: a chunk dimension of 0 (corrupted file?)", a->where);
        h->chunked = 1;
        h->chunk_bytes = (hsize_t)bytes;
        const double most = fmin(256.0 * (1 << 20), memory_limit / 2);
        if (rc) {
        } else if (rank != a->rank) rc = ars_error(ARS_EFORMAT, "%s: chunks of rank %d for a dataset of rank %d "
                                                   "(corrupted file?)", a->where, rank, a->rank);
        else if (bytes > most)
            rc = ars_error(ARS_EFORMAT, "%s: chunks of %.0f MiB are read whole, more than the %.0f MiB allowed: "
                           "rewrite it with smaller chunks (h5py: chunks=(64, ...) or chunks=True)", a->where,
                           bytes / (1 << 20), most / (1 << 20));
        int filters = rc ? 0 : H5Pget_nfilters(plist);
        h->filters = filters > 0 ? filters : 0;
        for (int i = 0; i < filters && !rc; i++) {
            unsigned flags = 0, config = 0;
            size_t elements = 0;
            char name[64] = "";
            H5Z_filter_t id = H5Pget_filter2(plist, (unsigned)i, &flags, &elements, NULL, sizeof name, name, &config);
            if (id < 0) {
                rc = ars_error(ARS_EFORMAT, "%s: unreadable filter pipeline (corrupted file?)", a->where);
            } else if (H5Zfilter_avail(id) <= 0 || H5Zget_filter_info(id, &config) < 0 ||
                       !(config & H5Z_FILTER_CONFIG_DECODE_ENABLED)) {
                rc = ars_error(ARS_EFORMAT, "%s is compressed with HDF5 filter %d%s%s%s, which this libhdf5 cannot "
                               "decode: rewrite it with compression='gzip' (or none)", a->where, (int)id,
                               name[0] ? " (" : "", name, name[0] ? ")" : "");
            }
        }
    } else if (layout == H5D_COMPACT || layout == H5D_CONTIGUOUS) {
        /* The bytes the file stores must be what the shape needs: libhdf5
         * 1.10 reads a compact dataset's shape from its stored bytes without
         * that check (a heap overflow, found by fuzz_h5data). Contiguous
         * storage never written (0 bytes) reads as fill values. */
        double need = (double)type_size;
        for (int d = 0; d < a->rank; d++) need *= (double)a->dims[d];
        hsize_t stored = H5Dget_storage_size(dataset);
        if ((double)stored != need && !(layout == H5D_CONTIGUOUS && stored == 0))
            rc = ars_error(ARS_EFORMAT, "%s: its shape needs %.0f bytes but the file stores %llu for it (corrupted "
                           "file?)", a->where, need, (unsigned long long)stored);
    } else if (layout < 0) {
        rc = ars_error(ARS_EFORMAT, "%s: cannot read the dataset's layout (corrupted file?)", a->where);
    }
    H5Pclose(plist);
    return rc;
}

int ars_h5array_open(const char *path, const char *name, double memory_limit, ars_array **out, int *missing)
{
    *out = NULL;
    if (missing) *missing = 0;
    TRY(check_regular(path, NULL));
    quiet_hdf5();
    ars_array *a = calloc(1, sizeof *a);
    h5array *h = calloc(1, sizeof *h);
    if (!a || !h) {
        free(a);
        free(h);
        return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    }
    h->file = h->dataset = h->space = -1;
    h->checked_row = -1;
    a->impl = h;
    a->close = h5_close;
    a->read_block = h5_read_block;
    a->read_rows = h5_read_rows;
    snprintf(a->where, sizeof a->where, "%s:/%s", path, name);
    int rc = 0;
    htri_t is_hdf5 = H5Fis_hdf5(path);
    if (is_hdf5 <= 0) rc = ars_error(ARS_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    if (!rc) {
        h->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (h->file < 0)
            rc = ars_error(ARS_EFORMAT, "%s: cannot open as HDF5 (a corrupted file, or one a writer holds locked: "
                           "close it in h5py first)", path);
    }
    htri_t exists = rc ? 0 : H5Lexists(h->file, name, H5P_DEFAULT);
    if (!rc && exists < 0) rc = ars_error(ARS_EFORMAT, "%s: cannot list the file's root group (corrupted file?)", path);
    if (!rc && exists == 0) {
        if (missing) {
            *missing = 1;
            h5_close(a);
            return 0;
        }
        char names[200] = "";
        hsize_t index = 0;
        H5Literate(h->file, H5_INDEX_NAME, H5_ITER_INC, &index, add_link_name, names);
        rc = ars_error(ARS_EFORMAT, "%s: no dataset '%s' (the file's root holds: %s); expected x (the samples) and y "
                       "(their labels or targets), optionally x_test and y_test", path, name,
                       names[0] ? names : "nothing");
    }
    if (!rc) {
        hid_t access = H5Pcreate(H5P_DATASET_ACCESS);
        /* cache enough chunks that a batch's rows of one chunk decompress it once */
        size_t cache = (size_t)fmin(32.0 * (1 << 20), memory_limit / 8);
        if (access >= 0) H5Pset_chunk_cache(access, 12421, cache, 0.75);
        h->dataset = H5Dopen2(h->file, name, access >= 0 ? access : H5P_DEFAULT);
        if (access >= 0) H5Pclose(access);
        if (h->dataset < 0) rc = ars_error(ARS_EFORMAT, "%s is not a readable dataset (a group?)", a->where);
    }
    if (!rc) {
        hid_t type = H5Dget_type(h->dataset);
        H5T_class_t c = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
        size_t size = type < 0 ? 0 : H5Tget_size(type);
        if (c == H5T_INTEGER) a->integer = 1;
        else if (c != H5T_FLOAT)
            rc = ars_error(ARS_EFORMAT, "%s has type class %s: expected integers or floats", a->where,
                           type_class_name(c));
        if (!rc && (size < 1 || size > 16))
            rc = ars_error(ARS_EFORMAT, "%s: values of %zu bytes: expected 1 to 16", a->where, size);
        h->space = rc ? -1 : H5Dget_space(h->dataset);
        if (!rc && (h->space < 0 || H5Sget_simple_extent_type(h->space) != H5S_SIMPLE))
            rc = ars_error(ARS_EFORMAT, "%s is a scalar or empty dataset: expected an array whose first dimension is "
                           "the sample", a->where);
        int rank = rc ? 0 : H5Sget_simple_extent_ndims(h->space);
        if (!rc && (rank < 1 || rank > ARS_ARRAY_MAX_RANK))
            rc = ars_error(ARS_EFORMAT, "%s has %d dimensions: expected 1 to 4 (the sample first)", a->where, rank);
        if (!rc) {
            hsize_t dims[ARS_ARRAY_MAX_RANK];
            H5Sget_simple_extent_dims(h->space, dims, NULL);
            a->rank = rank;
            a->row_values = 1;
            for (int d = 0; d < rank; d++) {
                a->dims[d] = dims[d] > (hsize_t)INT64_MAX ? INT64_MAX : (int64_t)dims[d];
                if (d == 0) continue;   /* saturating: an absurd shape is refused by its size, never wraps */
                if (a->dims[d] > 0 && a->row_values > INT64_MAX / a->dims[d]) a->row_values = INT64_MAX;
                else a->row_values *= a->dims[d];
            }
            rc = check_layout(a, h->dataset, size, memory_limit);
        }
        if (type >= 0) H5Tclose(type);
    }
    if (rc) {
        h5_close(a);
        return rc;
    }
    *out = a;
    return 0;
}

/* ---- the checking child ----------------------------------------------------- */

typedef struct check_verdict {
    int rc;
    ars_user_scan scan;
    char message[2048];
} check_verdict;

typedef struct check_context {
    const ars_user_spec *spec;
    const ars_user_options *options;
    uint64_t memory;
} check_context;

/* The child's work (src/isolate.c): the whole reader, x streamed (every
 * block read once). */
static void check_in_child(void *context, void *out)
{
    const check_context *c = context;
    check_verdict *verdict = out;
    ars_user_options o = *c->options;
    o.stream = 1;
    o.trusted = 1;
    if (o.memory_limit <= 0 || o.memory_limit > (double)c->memory) o.memory_limit = (double)c->memory;
    ars_dataset data;
    verdict->rc = ars_user_load(c->spec, &o, NULL, &data, &verdict->scan);
    ars_dataset_free(&data);
    if (verdict->rc) snprintf(verdict->message, sizeof verdict->message, "%s", ars_error_message());
}

int ars_h5data_check(const ars_user_spec *spec, const ars_user_options *options, ars_user_scan *scan)
{
    memset(scan, 0, sizeof *scan);
    off_t size = 0;
    TRY(check_regular(spec->path, &size));
    /* the reader holds labels (4 bytes a sample, at most 8x the stored y),
     * a block of 64 MiB and libhdf5's chunk cache */
    check_context context = {spec, options, ((uint64_t)1 << 30) + 8 * (uint64_t)size};
    const double seconds = 10.0 + (double)size / (double)(8 << 20);   /* 8 MiB/s: far below any disk */
    check_verdict verdict;
    ars_isolated how;
    TRY(ars_isolated_run(spec->path, context.memory, seconds, check_in_child, &context, &verdict, sizeof verdict,
                         &how));
    if (how.end != ARS_ISOLATED_DONE) return ars_isolated_error(&how, spec->path, "HDF5 file");
    if (verdict.rc) {
        verdict.message[sizeof verdict.message - 1] = '\0';
        return ars_error(verdict.rc, "%s", verdict.message);
    }
    *scan = verdict.scan;
    return 0;
}
