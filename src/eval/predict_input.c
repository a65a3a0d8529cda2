/* predict_input: the input files of `arsenal predict`, read a batch of
 * samples at a time (predict.h): IDX (through zlib, gzip or plain), an
 * HDF5 dataset (training's reader, src/data/hdf5_data.c), NumPy
 * .npy (v1-v3 header, little-endian or byte types, C order) and CSV (a
 * header row, then numbers). An HDF5 input is read whole in a checking
 * child first (src/isolate.c), as training's loader does: libhdf5 can
 * crash on a corrupted file. Headers are checked before anything is read;
 * nothing is allocated from a size a file claims beyond one batch. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/predict.h"

#include <ctype.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../data/user_data.h"
#include "../isolate.h"
#include "arsenal/error.h"

enum { MAX_SAMPLE_VALUES = 1 << 28, MAX_ROW_BYTES = 1 << 30 };

struct ars_input {
    ars_input_format format;
    char where[1200];
    ars_shape shape;
    int64_t count;            /* -1: unknown (CSV) */
    int64_t done;             /* samples read */
    int dim;                  /* values per sample */
    /* IDX and npy: raw rows of `item` bytes per value */
    gzFile gz;
    FILE *file;
    int type;                 /* IDX type code, or npy: one of the NPY_* below */
    int item;
    unsigned char *raw;
    size_t raw_size;
    /* HDF5: training's reader (src/data/hdf5_data.c), which checks each
     * chunk's stored size before libhdf5 copies it */
    ars_array *h5;
    /* CSV */
    char *line;
    size_t line_size;
    int64_t line_number;
    char *header;             /* the header row */
    int columns;              /* in a row: dim, and the dropped column if any */
    int drop;                 /* the column that is not a feature (the run's label), -1: none */
};

const char *ars_input_format_name(ars_input_format format)
{
    switch (format) {
    case ARS_INPUT_IDX: return "IDX";
    case ARS_INPUT_HDF5: return "HDF5";
    case ARS_INPUT_NPY: return "npy";
    case ARS_INPUT_CSV: return "CSV";
    }
    return "?";
}

ars_input_format ars_input_format_of(const ars_input *in) { return in->format; }
const char *ars_input_where(const ars_input *in) { return in->where; }
ars_shape ars_input_shape(const ars_input *in) { return in->shape; }
int64_t ars_input_count(const ars_input *in) { return in->count; }

void ars_input_close(ars_input *in)
{
    if (!in) return;
    if (in->gz) gzclose(in->gz);
    if (in->file) fclose(in->file);
    ars_array_close(in->h5);
    free(in->raw);
    free(in->line);
    free(in->header);
    free(in);
}

/* The per-sample shape from the dimensions after the first. */
static int sample_shape(ars_input *in, int rank, const int64_t *dims, int image_from_2d)
{
    const int dims_after = rank - 1;
    double values = 1;
    for (int i = 1; i < rank; i++) values *= (double)dims[i];
    if (dims_after > ARS_SHAPE_MAX_RANK || (image_from_2d && dims_after > 3))
        return ars_error(ARS_EFORMAT, "%s: %d dimensions per sample, at most %d are read", in->where, dims_after,
                         image_from_2d ? 3 : ARS_SHAPE_MAX_RANK);
    if (values < 1 || values > MAX_SAMPLE_VALUES)
        return ars_error(ARS_EFORMAT, "%s: %.0f values per sample (expected 1 to %d)", in->where, values,
                         MAX_SAMPLE_VALUES);
    memset(&in->shape, 0, sizeof in->shape);
    if (dims_after == 0) {
        in->shape = ars_shape_vector(1);
    } else if (image_from_2d && dims_after == 2) {   /* IDX images [N, H, W]: one channel, as the MNIST loader */
        in->shape = ars_shape_image(1, (int)dims[1], (int)dims[2]);
    } else {
        in->shape.rank = dims_after;
        for (int i = 0; i < dims_after; i++) in->shape.dims[i] = (int)dims[i + 1];
    }
    in->dim = (int)values;
    in->count = dims[0];
    return 0;
}

static int ensure_raw(ars_input *in, size_t bytes)
{
    if (in->raw_size >= bytes) return 0;
    unsigned char *grown = realloc(in->raw, bytes ? bytes : 1);
    if (!grown) return ars_error(ARS_ENOMEM, "%s: out of memory for a batch of %zu bytes", in->where, bytes);
    in->raw = grown;
    in->raw_size = bytes;
    return 0;
}

/* ---- IDX ------------------------------------------------------------------ */

static int idx_item(int type)
{
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

static int gz_read_all(ars_input *in, void *buffer, size_t bytes, size_t *got)
{
    *got = 0;
    while (*got < bytes) {
        size_t want = bytes - *got > (1u << 30) ? (1u << 30) : bytes - *got;
        int n = gzread(in->gz, (char *)buffer + *got, (unsigned)want);
        if (n < 0) {
            int errnum = Z_OK;
            const char *text = gzerror(in->gz, &errnum);
            if (errnum == Z_ERRNO) return ars_error(ARS_EIO, "%s: read failed: %s", in->where, strerror(errno));
            return ars_error(ARS_EFORMAT, "%s: corrupt gzip data: %s", in->where, text);
        }
        if (n == 0) break;
        *got += (size_t)n;
    }
    return 0;
}

static int idx_open(ars_input *in, const char *path)
{
    in->gz = gzopen(path, "rb");
    if (!in->gz) return ars_error(ARS_EIO, "%s: cannot open: %s", in->where, strerror(errno ? errno : ENOMEM));
    unsigned char header[4 + 4 * 4];
    size_t got;
    TRY(gz_read_all(in, header, 4, &got));
    if (got < 4 || header[0] != 0 || header[1] != 0)
        return ars_error(ARS_EFORMAT, "%s: not an IDX file (its first bytes are not 00 00 <type> <dimensions>)",
                         in->where);
    in->type = header[2];
    in->item = idx_item(in->type);
    const int rank = header[3];
    if (!in->item)
        return ars_error(ARS_EFORMAT, "%s: IDX type 0x%02x is not one of 08 (unsigned byte), 09, 0B, 0C, 0D, 0E",
                         in->where, in->type);
    if (rank < 1 || rank > 4)
        return ars_error(ARS_EFORMAT, "%s: IDX header declares %d dimensions (expected 1 to 4)", in->where, rank);
    TRY(gz_read_all(in, header + 4, 4 * (size_t)rank, &got));
    if (got < 4 * (size_t)rank) return ars_error(ARS_EFORMAT, "%s: IDX header truncated", in->where);
    int64_t dims[4];
    for (int i = 0; i < rank; i++) {
        const unsigned char *b = header + 4 + 4 * i;
        dims[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (i > 0 && dims[i] < 1)
            return ars_error(ARS_EFORMAT, "%s: IDX dimension %d is %lld", in->where, i, (long long)dims[i]);
    }
    return sample_shape(in, rank, dims, 1);
}

static float big_endian_value(const unsigned char *b, int type)
{
    switch (type) {
    case 0x08: return (float)b[0] * (1.0f / 255.0f);   /* pixels to [0, 1], as ars_mnist_load */
    case 0x09: return (float)(int8_t)b[0];
    case 0x0B: return (float)(int16_t)(uint16_t)(b[0] << 8 | b[1]);
    case 0x0C: return (float)(int32_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
    case 0x0D: {
        uint32_t u = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: {
        uint64_t u = 0;
        for (int k = 0; k < 8; k++) u = u << 8 | b[k];
        double d;
        memcpy(&d, &u, 8);
        return (float)d;
    }
    }
}

static int idx_read(ars_input *in, int rows, float *x)
{
    const size_t row_bytes = (size_t)in->dim * (size_t)in->item, bytes = row_bytes * (size_t)rows;
    TRY(ensure_raw(in, bytes));
    size_t got;
    TRY(gz_read_all(in, in->raw, bytes, &got));
    if (got < bytes)
        return ars_error(ARS_EFORMAT, "%s: truncated: the header declares %lld samples, the file ends in sample %lld",
                         in->where, (long long)in->count, (long long)(in->done + (int64_t)(got / row_bytes)));
    const size_t values = (size_t)in->dim * (size_t)rows;
    if (in->type == 0x08) {
        for (size_t i = 0; i < values; i++) x[i] = (float)in->raw[i] * (1.0f / 255.0f);
    } else {
        for (size_t i = 0; i < values; i++) x[i] = big_endian_value(in->raw + i * (size_t)in->item, in->type);
    }
    return 0;
}

/* ---- HDF5 ----------------------------------------------------------------- */

static herr_t list_dataset(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    char *list = data;
    hid_t set = H5Dopen2(group, name, H5P_DEFAULT);   /* a dataset, not a group */
    if (set < 0) return 0;
    H5Dclose(set);
    size_t used = strlen(list);
    if (used + strlen(name) + 3 < 400) snprintf(list + used, 400 - used, "%s%s", used ? ", " : "", name);
    return 0;
}

/* A chunk is read whole: libhdf5 allocates it (the checking child's limit
 * bounds the rest). */
static const double MAX_CHUNK_BYTES = 1024.0 * 1024 * 1024;

static int hdf5_open(ars_input *in, const char *path, const char *dataset)
{
    int missing = 0;
    TRY(ars_h5array_open(path, dataset, MAX_CHUNK_BYTES, &in->h5, &missing));
    if (missing) {
        char list[400] = "";
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (file >= 0) {
            H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, NULL, list_dataset, list);
            H5Fclose(file);
        }
        return ars_error(ARS_EINVAL, "%s: no dataset '%s' (%s%s); --dataset NAME reads another", path, dataset,
                         list[0] ? "its datasets: " : "it has no dataset at its root", list);
    }
    if (in->h5->rank < 1 || in->h5->rank > 5)
        return ars_error(ARS_EFORMAT, "%s: %d dimensions; expected [samples, ...] with 1 to 4 per sample", in->where,
                         in->h5->rank);
    return sample_shape(in, in->h5->rank, in->h5->dims, 0);
}

static int hdf5_read(ars_input *in, int rows, float *x)
{
    return in->h5->read_block(in->h5, in->done, rows, 0, x);
}

/* ---- npy ------------------------------------------------------------------ */

enum { NPY_U1, NPY_I1, NPY_B1, NPY_I2, NPY_U2, NPY_I4, NPY_U4, NPY_I8, NPY_U8, NPY_F4, NPY_F8 };

/* The value of 'key' in a .npy header dict ("{'descr': '<f4', ...}"). */
static const char *npy_field(const char *header, const char *key)
{
    char quoted[32];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    const char *p = strstr(header, quoted);
    if (!p) return NULL;
    p += strlen(quoted);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static int npy_open(ars_input *in, const char *path)
{
    in->file = fopen(path, "rb");
    if (!in->file) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[12];
    if (fread(magic, 1, 10, in->file) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0)
        return ars_error(ARS_EFORMAT, "%s: not a .npy file (no \\x93NUMPY magic)", path);
    const int major = magic[6];
    size_t header_bytes = (size_t)magic[8] | (size_t)magic[9] << 8, offset = 10;
    if (major == 2 || major == 3) {
        if (fread(magic + 10, 1, 2, in->file) != 2) return ars_error(ARS_EFORMAT, "%s: .npy header truncated", path);
        header_bytes |= (size_t)magic[10] << 16 | (size_t)magic[11] << 24;
        offset = 12;
    } else if (major != 1) {
        return ars_error(ARS_EFORMAT, "%s: .npy format version %d (1 to 3 are read)", path, major);
    }
    if (header_bytes > 1 << 20) return ars_error(ARS_EFORMAT, "%s: .npy header of %zu bytes", path, header_bytes);
    char *header = calloc(header_bytes + 1, 1);
    if (!header) return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    int rc = fread(header, 1, header_bytes, in->file) == header_bytes ? 0
             : ars_error(ARS_EFORMAT, "%s: .npy header truncated", path);
    const char *descr = rc ? NULL : npy_field(header, "descr");
    const char *order = rc ? NULL : npy_field(header, "fortran_order");
    const char *shape = rc ? NULL : npy_field(header, "shape");
    if (!rc && (!descr || !order || !shape))
        rc = ars_error(ARS_EFORMAT, "%s: .npy header without descr, fortran_order and shape", path);
    if (!rc && strncmp(order, "False", 5) != 0)
        rc = ars_error(ARS_EFORMAT, "%s: a Fortran-ordered array (save it with numpy.ascontiguousarray)", path);
    if (!rc) {
        static const struct { const char *name; int type, item; } types[] = {
            {"'|u1'", NPY_U1, 1}, {"'|i1'", NPY_I1, 1}, {"'|b1'", NPY_B1, 1}, {"'<i2'", NPY_I2, 2},
            {"'<u2'", NPY_U2, 2}, {"'<i4'", NPY_I4, 4}, {"'<u4'", NPY_U4, 4}, {"'<i8'", NPY_I8, 8},
            {"'<u8'", NPY_U8, 8}, {"'<f4'", NPY_F4, 4}, {"'<f8'", NPY_F8, 8}};
        in->item = 0;
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            if (strncmp(descr, types[k].name, strlen(types[k].name)) == 0) {
                in->type = types[k].type;
                in->item = types[k].item;
            }
        if (!in->item) {
            char found[24] = "";
            for (int k = 0; k < 23 && descr[k] && descr[k] != ','; k++) found[k] = descr[k];
            rc = ars_error(ARS_EFORMAT, "%s: dtype %s is not read (little-endian or byte integers, bool, float32 "
                           "or float64 are)", path, found);
        }
    }
    int64_t dims[8];
    int rank = 0;
    if (!rc) {
        const char *p = shape;
        if (*p++ != '(') rc = ars_error(ARS_EFORMAT, "%s: .npy shape is not a tuple", path);
        while (!rc && *p && *p != ')') {
            while (*p == ' ' || *p == ',') p++;
            if (*p == ')') break;
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p || v < 0 || rank == 6) {
                rc = ars_error(ARS_EFORMAT, "%s: .npy shape %.40s is not 1 to 5 sizes", path, shape);
                break;
            }
            dims[rank++] = v;
            p = end;
        }
        if (!rc && rank == 0) rc = ars_error(ARS_EFORMAT, "%s: a 0-d .npy array holds no samples", path);
    }
    free(header);
    TRY(rc);
    TRY(sample_shape(in, rank, dims, 0));
    /* the data must be exactly what the header declares */
    struct stat st;
    const double want = (double)offset + (double)header_bytes + (double)in->count * in->dim * in->item;
    if (fstat(fileno(in->file), &st) == 0 && (double)st.st_size != want)
        return ars_error(ARS_EFORMAT, "%s: %lld bytes, but its header declares %.0f (%s)", path,
                         (long long)st.st_size, want, (double)st.st_size < want ? "truncated" : "trailing data");
    return 0;
}

static float npy_value(const unsigned char *b, int type)
{
    union { uint8_t u1; int8_t i1; int16_t i2; uint16_t u2; int32_t i4; uint32_t u4; int64_t i8; uint64_t u8;
            float f4; double f8; } v;
    switch (type) {   /* little-endian in the file; this reads it on little-endian hosts */
    case NPY_U1: return (float)b[0];
    case NPY_I1: return (float)(int8_t)b[0];
    case NPY_B1: return b[0] ? 1.0f : 0.0f;
    case NPY_I2: memcpy(&v.i2, b, 2); return (float)v.i2;
    case NPY_U2: memcpy(&v.u2, b, 2); return (float)v.u2;
    case NPY_I4: memcpy(&v.i4, b, 4); return (float)v.i4;
    case NPY_U4: memcpy(&v.u4, b, 4); return (float)v.u4;
    case NPY_I8: memcpy(&v.i8, b, 8); return (float)v.i8;
    case NPY_U8: memcpy(&v.u8, b, 8); return (float)v.u8;
    case NPY_F4: memcpy(&v.f4, b, 4); return v.f4;
    default: memcpy(&v.f8, b, 8); return (float)v.f8;
    }
}

static int npy_read(ars_input *in, int rows, float *x)
{
    const size_t values = (size_t)in->dim * (size_t)rows, bytes = values * (size_t)in->item;
    TRY(ensure_raw(in, bytes));
    if (fread(in->raw, 1, bytes, in->file) != bytes)
        return ars_error(ARS_EIO, "%s: read of samples %lld to %lld failed%s%s", in->where, (long long)in->done,
                         (long long)(in->done + rows - 1), ferror(in->file) ? ": " : " (truncated)",
                         ferror(in->file) ? strerror(errno) : "");
    for (size_t i = 0; i < values; i++) x[i] = npy_value(in->raw + i * (size_t)in->item, in->type);
    return 0;
}

/* ---- CSV ------------------------------------------------------------------ */

/* The next line without its end; 0 at the end of the file. */
static int csv_line(ars_input *in, int *got)
{
    errno = 0;
    ssize_t n = getline(&in->line, &in->line_size, in->file);
    if (n < 0) {
        if (ferror(in->file)) return ars_error(ARS_EIO, "%s: read failed: %s", in->where, strerror(errno));
        *got = 0;
        return 0;
    }
    in->line_number++;
    while (n > 0 && (in->line[n - 1] == '\n' || in->line[n - 1] == '\r')) in->line[--n] = '\0';
    *got = 1;
    return 0;
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

static int csv_open(ars_input *in, const char *path)
{
    in->file = fopen(path, "r");
    if (!in->file) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    int got = 0;
    do TRY(csv_line(in, &got));
    while (got && blank(in->line));
    if (!got) return ars_error(ARS_EFORMAT, "%s: empty (a header row naming the columns is expected)", path);
    /* the header row: names, not numbers */
    int columns = 1;
    for (const char *p = in->line; *p; p++) columns += *p == ',';
    char *end;
    const char *first = in->line;
    while (isspace((unsigned char)*first)) first++;
    strtod(first, &end);
    if (end != first && (*end == ',' || *end == '\0' || isspace((unsigned char)*end)))
        return ars_error(ARS_EFORMAT, "%s:%lld: the first row holds numbers; a header row naming the columns is "
                         "expected", path, (long long)in->line_number);
    int64_t dims[2] = {-1, columns};
    TRY(sample_shape(in, 2, dims, 0));
    in->count = -1;
    in->columns = columns;
    in->drop = -1;
    if (!(in->header = strdup(in->line))) return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    return 0;
}

/* name without surrounding blanks and double quotes, of length *n */
static const char *bare_name(const char *name, size_t *n)
{
    while (*name == ' ' || *name == '\t') name++;
    size_t len = strcspn(name, ",");
    while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t')) len--;
    if (len >= 2 && name[0] == '"' && name[len - 1] == '"') name++, len -= 2;
    *n = len;
    return name;
}

int ars_input_drop_column(ars_input *in, const char *name)
{
    if (in->format != ARS_INPUT_CSV || !name || !name[0] || in->done > 0 || in->drop >= 0 || in->columns < 2)
        return 0;
    const char *p = in->header;
    for (int c = 0; c < in->columns; c++) {
        size_t n;
        const char *field = bare_name(p, &n);
        if (n == strlen(name) && strncmp(field, name, n) == 0) {
            in->drop = c;
            in->dim = in->columns - 1;
            in->shape = ars_shape_vector(in->dim);
            return 1;
        }
        p += strcspn(p, ",");
        if (*p == ',') p++;
    }
    return 0;
}

/* Up to rows samples, one a line (blank lines skipped). */
static int csv_read(ars_input *in, int rows, float *x, int *done_rows)
{
    *done_rows = 0;
    for (int r = 0; r < rows; r++) {
        int got = 0;
        do TRY(csv_line(in, &got));
        while (got && blank(in->line));
        if (!got) break;
        const char *p = in->line;
        for (int c = 0, k = 0; c < in->columns; c++) {
            if (c == in->drop) {   /* the label: not read */
                p += strcspn(p, ",");
                if (*p != ',' && c < in->columns - 1)
                    return ars_error(ARS_EFORMAT, "%s:%lld: fewer columns than the header's %d", in->where,
                                     (long long)in->line_number, in->columns);
                if (*p == ',' && c == in->columns - 1)
                    return ars_error(ARS_EFORMAT, "%s:%lld: more columns than the header's %d", in->where,
                                     (long long)in->line_number, in->columns);
                if (*p == ',') p++;
                continue;
            }
            while (*p == ' ' || *p == '\t') p++;
            char *end;
            errno = 0;
            double v = strtod(p, &end);
            const char *after = end;
            while (*after == ' ' || *after == '\t') after++;
            if (end == p || !(*after == ',' || *after == '\0') || !isfinite((float)v)) {
                char field[40] = "";
                for (int j = 0; j < 39 && p[j] && p[j] != ','; j++) field[j] = p[j];
                return ars_error(ARS_EFORMAT, "%s:%lld: column %d: '%s' is not a finite number%s", in->where,
                                 (long long)in->line_number, c + 1, field,
                                 end != p && isfinite(v) ? " within float32's range" : "");
            }
            if ((*after == '\0') != (c == in->columns - 1))
                return ars_error(ARS_EFORMAT, "%s:%lld: %s columns than the header's %d", in->where,
                                 (long long)in->line_number, *after == '\0' ? "fewer" : "more", in->columns);
            x[(size_t)r * in->dim + k++] = (float)v;
            p = *after == ',' ? after + 1 : after;
        }
        ++*done_rows;
    }
    return 0;
}

/* ---- dispatch --------------------------------------------------------------- */

/* The HDF5 signature where the format puts the superblock: at 0, or after
 * a user block at 512, 1024, 2048, ... (libhdf5's H5Fis_hdf5 looks there
 * too, but it is libhdf5 reading an unchecked file). */
static int hdf5_signature(FILE *f, off_t size)
{
    unsigned char b[8];
    for (off_t at = 0; at + 8 <= size; at = at ? 2 * at : 512)
        if (fseeko(f, at, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8 && memcmp(b, "\x89HDF\r\n\x1a\n", 8) == 0) return 1;
    return 0;
}

static int detect(const char *path, ars_input_format *format)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ars_error(ARS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ars_error(ARS_EIO, "%s: not a regular file", path);
    }
    unsigned char head[8] = {0};
    size_t n = fread(head, 1, sizeof head, f);
    const int hdf5 = hdf5_signature(f, st.st_size);
    fclose(f);
    if (hdf5) *format = ARS_INPUT_HDF5;
    else if (n >= 6 && memcmp(head, "\x93NUMPY", 6) == 0) *format = ARS_INPUT_NPY;
    else if (n >= 2 && ((head[0] == 0x1f && head[1] == 0x8b) || (head[0] == 0 && head[1] == 0))) *format = ARS_INPUT_IDX;
    else *format = ARS_INPUT_CSV;
    return 0;
}

static int open_input(const char *path, ars_input_format format, const char *name, ars_input **input)
{
    *input = NULL;
    ars_input *in = calloc(1, sizeof *in);
    if (!in) return ars_error(ARS_ENOMEM, "out of memory");
    in->format = format;
    if (format == ARS_INPUT_HDF5) snprintf(in->where, sizeof in->where, "%s:/%s", path, name);
    else snprintf(in->where, sizeof in->where, "%s", path);
    int rc = format == ARS_INPUT_IDX    ? idx_open(in, path)
             : format == ARS_INPUT_HDF5 ? hdf5_open(in, path, name)
             : format == ARS_INPUT_NPY  ? npy_open(in, path)
                                        : csv_open(in, path);
    if (rc) {
        ars_input_close(in);
        return rc;
    }
    *input = in;
    return 0;
}

/* ---- the HDF5 input read first in a checking child ---------------------------- */

typedef struct hdf5_check {
    const char *path, *name;
} hdf5_check;

typedef struct hdf5_verdict {
    int rc;
    char message[2048];
} hdf5_verdict;

/* The child's work (src/isolate.c): the input opened and read to its end
 * as predict reads it, values checked included. */
static void hdf5_check_in_child(void *context, void *out)
{
    const hdf5_check *c = context;
    hdf5_verdict *verdict = out;
    ars_input *in = NULL;
    verdict->rc = open_input(c->path, ARS_INPUT_HDF5, c->name, &in);
    if (!verdict->rc) {
        const int64_t per_batch = (16 << 20) / (4 * (int64_t)in->dim);   /* 16 MiB of floats, at least a sample */
        const int rows = per_batch < 1 ? 1 : per_batch > 4096 ? 4096 : (int)per_batch;
        float *x = malloc(sizeof(float) * (size_t)rows * (size_t)in->dim);
        int got = 1;
        if (!x) verdict->rc = ars_error(ARS_ENOMEM, "%s: out of memory for %d samples", in->where, rows);
        while (!verdict->rc && got > 0) verdict->rc = ars_input_read(in, rows, x, &got);
        free(x);
        ars_input_close(in);
    }
    if (verdict->rc) snprintf(verdict->message, sizeof verdict->message, "%s", ars_error_message());
}

/* libhdf5 1.10 crashes or hangs on some corrupted files (docs/validation.md):
 * the whole input is read in a child with limits before predict reads it. */
static int hdf5_check_input(const char *path, const char *name)
{
    struct stat st;
    if (stat(path, &st) != 0) return ars_error(ARS_EIO, "%s: %s", path, strerror(errno));
    /* a batch (at most one sample of 2^28 floats, 1 GiB), libhdf5's chunk cache and a chunk */
    const uint64_t memory = ((uint64_t)2 << 30) + 8 * (uint64_t)st.st_size;
    const double seconds = 10.0 + (double)st.st_size / (double)(8 << 20);   /* 8 MiB/s: far below any disk */
    hdf5_check context = {path, name};
    hdf5_verdict verdict;
    ars_isolated how;
    TRY(ars_isolated_run(path, memory, seconds, hdf5_check_in_child, &context, &verdict, sizeof verdict, &how));
    if (how.end != ARS_ISOLATED_DONE) return ars_isolated_error(&how, path, "HDF5 file");
    verdict.message[sizeof verdict.message - 1] = '\0';
    return verdict.rc ? ars_error(verdict.rc, "%s", verdict.message) : 0;
}

int ars_input_open(const char *spec, const char *dataset, ars_input **input)
{
    *input = NULL;
    static const struct { const char *prefix; ars_input_format format; } prefixes[] = {
        {"idx:", ARS_INPUT_IDX}, {"hdf5:", ARS_INPUT_HDF5}, {"npy:", ARS_INPUT_NPY}, {"csv:", ARS_INPUT_CSV}};
    const char *path = spec;
    int named = 0;
    ars_input_format format = ARS_INPUT_CSV;
    for (size_t k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++)
        if (strncmp(spec, prefixes[k].prefix, strlen(prefixes[k].prefix)) == 0) {
            path = spec + strlen(prefixes[k].prefix);
            format = prefixes[k].format;
            named = 1;
        }
    if (!named) {
        TRY(detect(path, &format));
    } else {
        struct stat st;
        if (stat(path, &st) != 0) return ars_error(ARS_EIO, "%s: %s", path, strerror(errno));
    }
    if (dataset && format != ARS_INPUT_HDF5)
        return ars_error(ARS_EINVAL, "--dataset %s: %s is a %s file, not HDF5", dataset, path,
                         ars_input_format_name(format));
    const char *name = dataset ? dataset : "x";
    if (format == ARS_INPUT_HDF5) TRY(hdf5_check_input(path, name));
    return open_input(path, format, name, input);
}

int ars_input_read(ars_input *in, int max_rows, float *x, int *rows)
{
    *rows = 0;
    if (max_rows < 1) return ars_error(ARS_EINVAL, "ars_input_read: max_rows %d", max_rows);
    if (in->format == ARS_INPUT_CSV) {
        TRY(csv_read(in, max_rows, x, rows));
        in->done += *rows;
        return 0;
    }
    int64_t left = in->count - in->done;
    int n = left < max_rows ? (int)left : max_rows;
    if (n <= 0) return 0;
    int rc = in->format == ARS_INPUT_IDX ? idx_read(in, n, x) : in->format == ARS_INPUT_HDF5 ? hdf5_read(in, n, x)
                                                                                             : npy_read(in, n, x);
    if (rc) return rc;
    /* as the training data: no NaN or Inf (nor a float64 beyond float32's range) */
    for (size_t i = 0; i < (size_t)n * (size_t)in->dim; i++)
        if (!isfinite(x[i]))
            return ars_error(ARS_ENUMERIC, "%s: sample %lld holds %s (NaN, Inf, or a value beyond float32's range)",
                             in->where, (long long)(in->done + (int64_t)(i / (size_t)in->dim)),
                             isnan(x[i]) ? "NaN" : "an infinite value");
    in->done += n;
    *rows = n;
    return 0;
}
