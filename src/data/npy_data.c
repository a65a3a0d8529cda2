/* npy_data: NumPy .npy files (data = npy:XPATH,YPATH). It owns the header
 * parser (magic, version 1, 2 or 3, the header dict: descr, fortran_order,
 * shape) and the ars_array over the file: little-endian (or single-byte)
 * bool, int8..int64, uint8..uint64, float32 and float64 in C order,
 * converted to float or double as rows are read with pread (a block, or a
 * batch's rows in runs). Everything is checked before it is trusted: the
 * header's length, every key, the shape, and that the file holds exactly
 * the bytes the shape needs; the reader is fuzzed (tests/fuzz/fuzz_npy.c). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arsenal/error.h"
#include "user_data.h"

enum {
    NPY_MAX_HEADER = 1 << 16,   /* numpy itself reads at most 10000 bytes by default */
    NPY_MAX_PARSED_RANK = 32,   /* numpy's own limit; above ARS_ARRAY_MAX_RANK it is refused by name */
    NPY_SCRATCH = 8 << 20       /* bytes read and converted at once */
};

typedef struct npyarray {
    int fd;
    int64_t data_offset;
    char kind;                  /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool */
    int item;                   /* bytes per value */
    unsigned char *scratch;
    size_t scratch_size;        /* NPY_SCRATCH, or the whole data when smaller */
} npyarray;

static void npy_close(ars_array *a)
{
    if (!a) return;
    npyarray *n = a->impl;
    if (n) {
        if (n->fd >= 0) close(n->fd);
        free(n->scratch);
        free(n);
    }
    free(a);
}

/* Converts count values of the file's type at in into float or double. */
static void convert(const npyarray *n, const unsigned char *in, size_t count, int as_double, void *out)
{
    float *f = out;
    double *d = out;
#define NPY_CONVERT(type)                                              \
    for (size_t i = 0; i < count; i++) {                               \
        type v;                                                        \
        memcpy(&v, in + i * sizeof v, sizeof v);                       \
        if (as_double) d[i] = (double)v;                               \
        else f[i] = (float)v;                                          \
    }                                                                  \
    return
    switch (n->kind) {
    case 'f':
        if (n->item == 4) { NPY_CONVERT(float); }
        NPY_CONVERT(double);
    case 'b':
        for (size_t i = 0; i < count; i++) {
            if (as_double) d[i] = in[i] != 0;
            else f[i] = in[i] != 0;
        }
        return;
    case 'i':
        if (n->item == 1) { NPY_CONVERT(int8_t); }
        if (n->item == 2) { NPY_CONVERT(int16_t); }
        if (n->item == 4) { NPY_CONVERT(int32_t); }
        NPY_CONVERT(int64_t);
    default:
        if (n->item == 1) { NPY_CONVERT(uint8_t); }
        if (n->item == 2) { NPY_CONVERT(uint16_t); }
        if (n->item == 4) { NPY_CONVERT(uint32_t); }
        NPY_CONVERT(uint64_t);
    }
#undef NPY_CONVERT
}

static int read_exact(ars_array *a, int fd, unsigned char *buf, size_t size, int64_t offset)
{
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, buf + got, size - got, (off_t)(offset + (int64_t)got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return ars_error(ARS_EIO, "%s: read failed: %s", a->where, strerror(errno));
        if (r == 0)
            return ars_error(ARS_EIO, "%s: the file ended at byte %lld, before the data (it was shortened since it "
                             "was opened?)", a->where, (long long)(offset + (int64_t)got));
        got += (size_t)r;
    }
    return 0;
}

static int npy_read_block(ars_array *a, int64_t start, int64_t rows, int as_double, void *out)
{
    npyarray *n = a->impl;
    const size_t values = (size_t)rows * (size_t)a->row_values;
    const size_t chunk = n->scratch_size / (size_t)n->item;
    const int64_t base = n->data_offset + start * a->row_values * n->item;
    for (size_t done = 0; done < values;) {
        size_t count = values - done < chunk ? values - done : chunk;
        TRY(read_exact(a, n->fd, n->scratch, count * (size_t)n->item, base + (int64_t)(done * (size_t)n->item)));
        convert(n, n->scratch, count, as_double,
                as_double ? (void *)((double *)out + done) : (void *)((float *)out + done));
        done += count;
    }
    return 0;
}

static int npy_read_rows(ars_array *a, const int64_t *ids, int count, float *out)
{
    for (int i = 0; i < count;) {   /* runs of consecutive rows, one read each */
        int j = i + 1;
        while (j < count && ids[j] == ids[j - 1] + 1) j++;
        TRY(npy_read_block(a, ids[i], j - i, 0, out + (size_t)i * (size_t)a->row_values));
        i = j;
    }
    return 0;
}

/* ---- the header dict --------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
    const char *path;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int bad_header(const cursor *c, const char *what)
{
    return ars_error(ARS_EFORMAT, "%s: bad .npy header: %s", c->path, what);
}

/* A quoted string ('...' or "...", no escapes) into out. */
static int parse_string(cursor *c, char *out, size_t size)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return bad_header(c, "expected a quoted string");
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= size) return bad_header(c, "a string too long, or with escapes");
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return bad_header(c, "a string is not terminated");
    c->p++;
    out[n] = '\0';
    return 0;
}

static int parse_shape(cursor *c, int *rank, int64_t *dims)
{
    skip_space(c);
    if (c->p >= c->end || *c->p != '(') return bad_header(c, "'shape' must be a tuple of integers");
    c->p++;
    *rank = 0;
    for (;;) {
        skip_space(c);
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return 0;
        }
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return bad_header(c, "'shape' must be a tuple of integers");
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            int digit = *c->p++ - '0';
            if (v > (INT64_MAX - digit) / 10) return bad_header(c, "a dimension of 'shape' is too large");
            v = v * 10 + digit;
        }
        if (c->p < c->end && *c->p == 'L') c->p++;   /* Python 2's long */
        if (*rank >= NPY_MAX_PARSED_RANK) return bad_header(c, "'shape' has more than 32 dimensions");
        dims[(*rank)++] = v;
        skip_space(c);
        if (c->p < c->end && *c->p == ',') c->p++;
        else if (c->p < c->end && *c->p != ')') return bad_header(c, "expected ',' or ')' in 'shape'");
    }
}

static int parse_descr(const char *path, const char *descr, char *kind, int *item)
{
    char order = '|';
    const char *p = descr;
    if (*p == '<' || *p == '>' || *p == '|' || *p == '=') order = *p++;
    char k = *p ? *p++ : '\0';
    char *end;
    long size = strtol(p, &end, 10);
    if (end == p || *end) size = -1;
    if (k == '?') k = 'b', size = size < 0 ? 1 : size;
    const int ok_kind = (k == 'f' && (size == 4 || size == 8)) || ((k == 'i' || k == 'u') &&
                        (size == 1 || size == 2 || size == 4 || size == 8)) || (k == 'b' && size == 1);
    if (k == 'f' && size == 2)
        return ars_error(ARS_EFORMAT, "%s: dtype '%s' (float16) is not read: save x.astype('float32')", path, descr);
    if (!ok_kind) {
        const char *what = k == 'c' ? "complex" : k == 'O' ? "Python objects (pickled)" : k == 'U' || k == 'S'
                           ? "strings" : k == 'V' ? "structured or raw bytes" : k == 'M' || k == 'm'
                           ? "dates or times" : "not a number type";
        return ars_error(ARS_EFORMAT, "%s: dtype '%s' (%s): expected bool, int8..int64, uint8..uint64, float32 or "
                         "float64", path, descr, what);
    }
    if (order == '>' && size > 1)
        return ars_error(ARS_EFORMAT, "%s: dtype '%s' is big-endian: save x.astype('<%c%ld')", path, descr, k == 'b'
                         ? 'u' : k, size);
    if (order == '=' || (order == '|' && size > 1))
        return ars_error(ARS_EFORMAT, "%s: dtype '%s': expected an explicit little-endian '<' byte order", path,
                         descr);
    *kind = k;
    *item = (int)size;
    return 0;
}

/* The dict: {'descr': '<f4', 'fortran_order': False, 'shape': (N, F), } */
static int parse_header(const char *path, const char *text, size_t length, char *descr, size_t descr_size,
                        int *fortran, int *rank, int64_t *dims)
{
    cursor c = {text, text + length, path};
    int seen_descr = 0, seen_order = 0, seen_shape = 0;
    skip_space(&c);
    if (c.p >= c.end || *c.p != '{') return bad_header(&c, "expected a dict '{...}'");
    c.p++;
    for (;;) {
        skip_space(&c);
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        char key[32];
        TRY(parse_string(&c, key, sizeof key));
        skip_space(&c);
        if (c.p >= c.end || *c.p != ':') return bad_header(&c, "expected ':' after a key");
        c.p++;
        skip_space(&c);
        if (strcmp(key, "descr") == 0) {
            if (seen_descr++) return bad_header(&c, "'descr' twice");
            if (c.p < c.end && *c.p == '[')
                return ars_error(ARS_EFORMAT, "%s: a structured dtype (a list 'descr'): expected a plain number "
                                 "array", path);
            TRY(parse_string(&c, descr, descr_size));
        } else if (strcmp(key, "fortran_order") == 0) {
            if (seen_order++) return bad_header(&c, "'fortran_order' twice");
            if ((size_t)(c.end - c.p) >= 4 && strncmp(c.p, "True", 4) == 0) *fortran = 1, c.p += 4;
            else if ((size_t)(c.end - c.p) >= 5 && strncmp(c.p, "False", 5) == 0) *fortran = 0, c.p += 5;
            else return bad_header(&c, "'fortran_order' must be True or False");
        } else if (strcmp(key, "shape") == 0) {
            if (seen_shape++) return bad_header(&c, "'shape' twice");
            TRY(parse_shape(&c, rank, dims));
        } else {
            char what[96];
            snprintf(what, sizeof what, "unknown key '%s' (expected descr, fortran_order, shape)", key);
            return bad_header(&c, what);
        }
        skip_space(&c);
        if (c.p < c.end && *c.p == ',') c.p++;
        else if (c.p < c.end && *c.p != '}') return bad_header(&c, "expected ',' or '}' after a value");
    }
    skip_space(&c);
    while (c.p < c.end && *c.p == '\0') c.p++;   /* some writers pad with NUL */
    if (c.p != c.end) return bad_header(&c, "text after the dict");
    if (!seen_descr || !seen_order || !seen_shape)
        return bad_header(&c, !seen_descr ? "no 'descr'" : !seen_order ? "no 'fortran_order'" : "no 'shape'");
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

static int npy_setup(ars_array *a, npyarray *n, const char *path)
{
    const uint16_t probe = 1;
    unsigned char host;
    memcpy(&host, &probe, 1);
    if (host != 1) return ars_error(ARS_EINVAL, "%s: .npy files are read on little-endian hosts only", path);
    n->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (n->fd < 0) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(n->fd, &st) != 0) return ars_error(ARS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return ars_error(ARS_EIO, "%s: is %s, expected a .npy file", path, file_kind(st.st_mode));
    int flags = fcntl(n->fd, F_GETFL);
    if (flags == -1 || fcntl(n->fd, F_SETFL, flags & ~O_NONBLOCK) == -1)
        return ars_error(ARS_EIO, "%s: cannot set blocking reads: %s", path, strerror(errno));
    const int64_t file_size = (int64_t)st.st_size;

    unsigned char pre[12];
    if (file_size < 10) return ars_error(ARS_EFORMAT, "%s: %lld bytes: too short for a .npy file", path,
                                         (long long)file_size);
    TRY(read_exact(a, n->fd, pre, file_size < 12 ? 10 : 12, 0));
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return ars_error(ARS_EFORMAT, "%s: no .npy magic (\\x93NUMPY) at the start: not a .npy file (an .npz archive "
                         "or a pickle?)", path);
    const int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return ars_error(ARS_EFORMAT, "%s: .npy format version %d.%d: expected 1.0, 2.0 or 3.0", path, major, minor);
    const int preamble = major == 1 ? 10 : 12;
    if (file_size < preamble) return ars_error(ARS_EFORMAT, "%s: the header is truncated", path);
    const uint32_t header = major == 1 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8
                                       : (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 |
                                             (uint32_t)pre[11] << 24;
    if (header > NPY_MAX_HEADER)
        return ars_error(ARS_EFORMAT, "%s: a header of %u bytes: expected at most %d", path, header, NPY_MAX_HEADER);
    if ((int64_t)preamble + header > file_size)
        return ars_error(ARS_EFORMAT, "%s: the header says %u bytes but the file has %lld after the preamble", path,
                         header, (long long)(file_size - preamble));
    char *text = malloc((size_t)header + 1);
    if (!text) return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    int rc = read_exact(a, n->fd, (unsigned char *)text, header, preamble);
    text[header] = '\0';
    char descr[16] = "";
    int fortran = 0, rank = -1;
    int64_t dims[NPY_MAX_PARSED_RANK];
    if (!rc) rc = parse_header(path, text, header, descr, sizeof descr, &fortran, &rank, dims);
    free(text);
    if (!rc) rc = parse_descr(path, descr, &n->kind, &n->item);
    if (rc) return rc;
    if (rank == 0)
        return ars_error(ARS_EFORMAT, "%s: a scalar (shape ()): expected an array whose first dimension is the sample",
                         path);
    if (rank > ARS_ARRAY_MAX_RANK)
        return ars_error(ARS_EFORMAT, "%s: %d dimensions: expected 1 to 4 (the sample first)", path, rank);
    if (fortran && rank > 1)
        return ars_error(ARS_EFORMAT, "%s: the array is in Fortran order: save np.ascontiguousarray(x) (C order)",
                         path);
    /* the exact data size, without overflow */
    uint64_t values = 1;
    int empty = 0;
    a->rank = rank;
    a->row_values = 1;
    for (int d = 0; d < rank; d++) {
        a->dims[d] = dims[d];
        if (dims[d] == 0) empty = 1;
        else if (values > UINT64_MAX / (uint64_t)dims[d]) values = UINT64_MAX;
        else values *= (uint64_t)dims[d];
        if (d > 0) a->row_values = dims[d] && a->row_values > INT64_MAX / dims[d] ? INT64_MAX : a->row_values * dims[d];
    }
    if (empty) values = 0;
    const int64_t have = file_size - preamble - (int64_t)header;
    n->data_offset = preamble + (int64_t)header;
    if (values != UINT64_MAX && values > (uint64_t)INT64_MAX / (uint64_t)n->item) values = UINT64_MAX;
    char shape[200];
    int used = snprintf(shape, sizeof shape, "(");
    for (int d = 0; d < rank && used > 0 && (size_t)used < sizeof shape; d++)
        used += snprintf(shape + used, sizeof shape - (size_t)used, "%lld%s", (long long)dims[d],
                         rank == 1 ? ",)" : d + 1 < rank ? ", " : ")");
    if (values == UINT64_MAX)
        return ars_error(ARS_EFORMAT, "%s: shape %s needs more than 2^63 bytes of data, the file has %lld", path, shape,
                         (long long)have);
    if ((int64_t)values * n->item > have)
        return ars_error(ARS_EFORMAT, "%s: truncated: shape %s of '%s' needs %lld bytes of data, the file has %lld",
                         path, shape, descr, (long long)values * n->item, (long long)have);
    if ((int64_t)values * n->item < have)
        return ars_error(ARS_EFORMAT, "%s: %lld extra bytes after the data (the header's shape does not match the "
                         "file size)", path, (long long)(have - (int64_t)values * n->item));
    a->integer = n->kind != 'f';
    n->scratch_size = have < NPY_SCRATCH ? (size_t)(have > n->item ? have : n->item) : NPY_SCRATCH;
    n->scratch = malloc(n->scratch_size);
    if (!n->scratch) return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    return 0;
}

int ars_npy_open(const char *path, ars_array **out)
{
    *out = NULL;
    ars_array *a = calloc(1, sizeof *a);
    npyarray *n = calloc(1, sizeof *n);
    if (!a || !n) {
        free(a);
        free(n);
        return ars_error(ARS_ENOMEM, "%s: out of memory", path);
    }
    n->fd = -1;
    a->impl = n;
    a->close = npy_close;
    a->read_block = npy_read_block;
    a->read_rows = npy_read_rows;
    snprintf(a->where, sizeof a->where, "%s", path);
    int rc = npy_setup(a, n, path);
    if (rc) {
        npy_close(a);
        return rc;
    }
    *out = a;
    return 0;
}
