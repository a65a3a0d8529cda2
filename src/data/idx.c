/* idx: reads IDX files (the (Fashion-)MNIST container), gzip or plain alike
 * through zlib, and validates every field before trusting it: the reader is
 * meant to survive arbitrary (fuzzed) input with an error, never a crash. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "arsenal/error.h"

enum {
    IDX_TYPE_UBYTE = 0x08,
    IDX_MAX_DIMS = 4,
    /* The payload buffer grows by doubling from this size instead of being
     * allocated at the size the header claims, so a 20-byte file declaring
     * terabytes fails as "truncated", not by exhausting memory. */
    IDX_FIRST_CHUNK = 1 << 20,
    /* gzread takes an unsigned int length. */
    IDX_MAX_READ = 1 << 30
};

static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "16-bit integer";
    case 0x0C: return "32-bit integer";
    case 0x0D: return "32-bit float";
    case 0x0E: return "64-bit float";
    default: return "unknown type";
    }
}

/* After a short or failed gzread: the zlib error as an ars error, or 0 when
 * the stream simply ended. */
static int idx_stream_error(gzFile file, const char *path)
{
    int errnum = Z_OK;
    const char *text = gzerror(file, &errnum);
    if (errnum == Z_OK) return 0;
    /* zlib prefixes its message with the name it was opened under, which
     * after gzdopen is "<fd:N>": drop it, the path is already in ours. */
    const char *sep = strstr(text, ": ");
    if (strncmp(text, "<fd:", 4) == 0 && sep) text = sep + 2;
    if (errnum == Z_ERRNO)
        return ars_error(ARS_EIO, "%s: read failed: %s", path, strerror(errno));
    if (errnum == Z_BUF_ERROR)
        return ars_error(ARS_EFORMAT, "%s: gzip stream truncated (%s)", path, text);
    if (errnum == Z_MEM_ERROR)
        return ars_error(ARS_ENOMEM, "%s: out of memory while decompressing", path);
    return ars_error(ARS_EFORMAT, "%s: corrupt gzip data: %s", path, text);
}

/* Reads up to n bytes; *got receives how many arrived before end of file.
 * Fails only on a read or decompression error. */
static int idx_read_bytes(gzFile file, const char *path, void *buf, size_t n, size_t *got)
{
    unsigned char *out = buf;
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > IDX_MAX_READ) want = IDX_MAX_READ;
        int r = gzread(file, out + *got, (unsigned)want);
        if (r < 0) {
            int rc = idx_stream_error(file, path);
            return rc ? rc : ars_error(ARS_EIO, "%s: read failed", path);
        }
        *got += (size_t)r;
        if ((size_t)r < want) {
            /* zlib reports a truncated gzip stream as a short read with an
             * error set, so a short read must be checked, not trusted. */
            return idx_stream_error(file, path);
        }
    }
    return 0;
}

static uint32_t idx_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Magic, type, ndim and dims into idx (count = product). */
static int idx_read_header(gzFile file, const char *path, ars_idx *idx)
{
    unsigned char head[4 + 4 * IDX_MAX_DIMS];
    size_t got;
    int rc = idx_read_bytes(file, path, head, 4, &got);
    if (rc) return rc;
    if (got == 0) return ars_error(ARS_EFORMAT, "%s: empty file, expected an IDX header", path);
    if (got < 4)
        return ars_error(ARS_EFORMAT, "%s: header truncated: expected 4 bytes, file has %zu",
                         path, got);
    if (head[0] != 0 || head[1] != 0)
        return ars_error(ARS_EFORMAT,
                         "%s: bad magic: expected 00 00 at the start of an IDX file, "
                         "found %02x %02x (not an IDX file?)", path, head[0], head[1]);
    if (head[2] != IDX_TYPE_UBYTE)
        return ars_error(ARS_EFORMAT,
                         "%s: unsupported IDX data type 0x%02x (%s): expected 0x08 "
                         "(unsigned byte)", path, head[2], idx_type_name(head[2]));
    int ndim = head[3];
    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        return ars_error(ARS_EFORMAT, "%s: IDX rank %d: expected 1 to %d dimensions",
                         path, ndim, IDX_MAX_DIMS);

    size_t dims_size = 4 * (size_t)ndim;
    rc = idx_read_bytes(file, path, head + 4, dims_size, &got);
    if (rc) return rc;
    if (got < dims_size)
        return ars_error(ARS_EFORMAT,
                         "%s: header truncated: expected %zu bytes of dimensions, file has %zu",
                         path, dims_size, got);

    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = idx_be32(head + 4 + 4 * i);
        if (d == 0)
            return ars_error(ARS_EFORMAT, "%s: dimension %d of %d is 0, expected > 0",
                             path, i + 1, ndim);
        if (d > INT_MAX)
            return ars_error(ARS_EFORMAT, "%s: dimension %d of %d is %u, expected at most %d",
                             path, i + 1, ndim, d, INT_MAX);
        if (count > SIZE_MAX / d)
            return ars_error(ARS_EFORMAT, "%s: dimensions overflow: the product of the %d "
                             "dimensions does not fit in memory sizes", path, ndim);
        count *= d;
        idx->dims[i] = (int)d;
    }
    idx->ndim = ndim;
    idx->count = count;
    return 0;
}

/* Reads exactly idx->count payload bytes into idx->data, growing the buffer
 * as bytes actually arrive. */
static int idx_read_payload(gzFile file, const char *path, ars_idx *idx)
{
    size_t need = idx->count, have = 0, capacity = 0;
    uint8_t *data = NULL;
    while (have < need) {
        size_t next = capacity == 0 ? IDX_FIRST_CHUNK
                      : capacity > need / 2 ? need : capacity * 2;
        if (next > need) next = need;
        uint8_t *grown = realloc(data, next);
        if (!grown) {
            free(data);
            return ars_error(ARS_ENOMEM, "%s: cannot allocate %zu bytes for the data", path, next);
        }
        data = grown;
        capacity = next;
        size_t got;
        int rc = idx_read_bytes(file, path, data + have, capacity - have, &got);
        have += got;
        if (rc) {
            free(data);
            return rc;
        }
        if (have < capacity) {
            free(data);
            return ars_error(ARS_EFORMAT, "%s: truncated: expected %zu bytes of data, file has %zu",
                             path, need, have);
        }
    }
    idx->data = data;
    return 0;
}

/* Counts what follows the payload; for gzip this also makes zlib read the
 * stream trailer, which is where a CRC mismatch is detected. */
static int idx_check_trailing(gzFile file, const char *path)
{
    unsigned char scratch[4096];
    size_t extra = 0, got;
    do {
        int rc = idx_read_bytes(file, path, scratch, sizeof scratch, &got);
        if (rc) return rc;
        extra += got;
    } while (got == sizeof scratch);
    if (extra)
        return ars_error(ARS_EFORMAT, "%s: %zu extra bytes after the data "
                         "(the header's dimensions do not match the file size)", path, extra);
    return 0;
}

/* What a path that is not a regular file is, for messages. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

int ars_idx_read(const char *path, ars_idx *idx)
{
    if (!idx) return ars_error(ARS_EINVAL, "ars_idx_read: idx is NULL");
    memset(idx, 0, sizeof *idx);
    if (!path || !*path) return ars_error(ARS_EINVAL, "ars_idx_read: empty path");

    /* open + gzdopen rather than gzopen: errno is then certainly open's, and
     * anything but a regular file is rejected up front instead of as a
     * confusing read error. O_NONBLOCK: opening a FIFO nobody writes to
     * would block forever; fstat on the open file leaves no window for the
     * path to change between the check and the read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ars_error(ARS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ars_error(ARS_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ars_error(ARS_EIO, "%s: is %s, expected an IDX file", path, file_kind(st.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == -1) {
        int e = errno;
        close(fd);
        return ars_error(ARS_EIO, "%s: cannot set blocking reads: %s", path, strerror(e));
    }
    gzFile file = gzdopen(fd, "rb");
    if (!file) {
        close(fd);
        return ars_error(ARS_ENOMEM, "%s: cannot set up zlib to read it", path);
    }

    int rc = idx_read_header(file, path, idx);
    if (!rc) rc = idx_read_payload(file, path, idx);
    if (!rc) rc = idx_check_trailing(file, path);
    gzclose(file);
    if (rc) ars_idx_free(idx);
    return rc;
}

void ars_idx_free(ars_idx *idx)
{
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}
