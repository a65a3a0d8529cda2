/* user_data (private to src/data): what the readers of the data sets a user
 * brings share. An ars_array is one numeric array on disk whose first
 * dimension is the sample (an HDF5 dataset, hdf5_data.c; a .npy file,
 * npy_data.c), read by blocks of rows or by lists of rows, converted to
 * float or double; user_data.c turns an x and a y array into an
 * ars_dataset (in memory, or x streamed through an ars_data_source). The
 * CSV reader (csv_data.c) parses into memory and shares the label check. */
#ifndef ARSENAL_USER_DATA_H
#define ARSENAL_USER_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "arsenal/data.h"

enum {
    ARS_ARRAY_MAX_RANK = 5,          /* x: [N], [N, F], [N, T, F], [N, C, H, W]; 5 only to name it in refusals */
    ARS_USER_MAX_CLASSES = 1 << 16,  /* a label above this is absurd (as the synthetic sets' limit) */
    ARS_USER_MAX_ROWS = 0x7fffffff   /* ars_dataset.count is an int, sample ids uint32 */
};

typedef struct ars_array ars_array;
struct ars_array {
    char where[600];                 /* "x.h5:/x", "y.npy": the prefix of every message */
    int rank;                        /* 1 to ARS_ARRAY_MAX_RANK */
    int64_t dims[ARS_ARRAY_MAX_RANK];
    int integer;                     /* stored as integers (labels) rather than floats */
    int64_t row_values;              /* product of dims[1..]: values per sample */
    /* Rows [start, start + n) into out (row-major, row_values each), as
     * float (as_double 0) or double. */
    int (*read_block)(ars_array *a, int64_t start, int64_t n, int as_double, void *out);
    /* Rows ids[0..n), sorted ascending and unique, as floats. */
    int (*read_rows)(ars_array *a, const int64_t *ids, int n, float *out);
    void (*close)(ars_array *a);
    void *impl;
};

void ars_array_close(ars_array *a);

/* Opens dataset `name` of an HDF5 file (hdf5_data.c). *missing (may be
 * NULL) is set to 1 and 0 returned when the file has no such link (for the
 * optional x_test / y_test); any other problem is an error naming the file,
 * the dataset and what is wrong. memory_limit bounds a chunk's size (a
 * chunk is read whole): libhdf5 allocates it. */
int ars_h5array_open(const char *path, const char *name, double memory_limit, ars_array **out, int *missing);

/* Opens a .npy file (npy_data.c): v1/v2/v3 header, little-endian (or
 * single-byte) bool/int/uint/float32/float64, C order; the file size must
 * match the header's shape exactly. */
int ars_npy_open(const char *path, ars_array **out);

/* Reads a CSV file into *data (csv_data.c): options->label names the label
 * column, every other column is a feature; budget (described by from) is
 * what it may allocate. */
int ars_csv_load(const char *path, const ars_user_options *options, double budget, const char *from,
                 ars_dataset *data);

/* y values [n, width] (double) as class labels (regression 0: width 1, each
 * an integer in [0, ARS_USER_MAX_CLASSES)) or float targets (regression 1)
 * into data->labels / classes or targets / target_dim (allocated here,
 * after checking them against budget). where names y; column (may be
 * NULL) the label column of a CSV file, and lines (may be NULL) the file
 * line of each row, for messages. */
int ars_user_set_y(ars_dataset *data, const char *where, const double *y, int64_t n, int width, int regression,
                   const char *column, const int64_t *lines, double budget, const char *budget_from);

/* What a scan of a streamed x found: its mean and std (the rows the
 * validation split takes left out), valid once computed. */
typedef struct ars_user_scan {
    int valid;
    double mean, std;
} ars_user_scan;

/* ars_user_data_load without the checking child: prescan (may be NULL), a
 * checking child's scan, spares a streamed set its own; scan (may be NULL)
 * receives a streamed set's. */
int ars_user_load(const ars_user_spec *spec, const ars_user_options *options, const ars_user_scan *prescan,
                  ars_dataset *data, ars_user_scan *scan);

/* Runs ars_user_load on an HDF5 spec in a forked child under time and
 * memory limits (hdf5_data.c): 0 and *scan when it passed, else the
 * child's error, or "corrupted" when libhdf5 crashed, hung or exhausted
 * the limits. */
int ars_h5data_check(const ars_user_spec *spec, const ars_user_options *options, ars_user_scan *scan);

/* Up to 64 MiB of rows (a quarter of budget when that is less), at least
 * one: the block the loaders read at once. */
int64_t ars_user_block_rows(int64_t row_bytes, double budget);

/* The budget the loaders check allocations against: options->memory_limit,
 * or what ars_memory_budget_get says is left. *where describes it. */
double ars_user_budget(const ars_user_options *options, char *where, size_t size);

/* Refuses an allocation of bytes for `what` beyond budget, with both sizes
 * and where the budget comes from. */
int ars_user_check_fits(const char *where_file, const char *what, double bytes, double budget, const char *budget_from);

/* "x.h5:/x[17, 0, 3, 5]" for the flat value index v of a row-major array. */
void ars_array_index_text(const ars_array *a, int64_t row, int64_t v, char *out, size_t size);

#endif
