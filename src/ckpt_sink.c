/* ckpt_sink: an HDF5 virtual file driver (public H5FD API) that writes the
 * checkpoint straight into the caller's temporary file and never reports a
 * failure to HDF5 (why: F1, see ckpt_sink.h). Bookkeeping as in HDF5's sec2
 * driver: eoa is the end of the space HDF5 allocated, eof the end of what
 * was written; the file is cut or extended to eoa when HDF5 truncates. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt_sink.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct ars_ckpt_sink {
    int fd;
    int error;               /* 0, an errno, or ARS_CKPT_SINK_NO_PROGRESS */
    const char *operation;   /* what failed first */
    int read_failed;         /* reads return zeros from then on */
    int released;            /* the caller is done: all I/O is dropped */
    /* the caller, property lists and open files of the driver: freed by the
     * last, so that even a file HDF5 kept open cannot touch freed memory
     * (or, once released, the fd the caller closed) */
    int holders;
};

/* What the file access property list carries (copied by HDF5). */
typedef struct sink_info {
    ars_ckpt_sink *sink;
} sink_info;

/* An open file of the driver: HDF5's public part first. */
typedef struct sink_file {
    H5FD_t pub;
    ars_ckpt_sink *sink;
    haddr_t eoa, eof;
} sink_file;

/* the largest offset pwrite takes */
#define SINK_MAXADDR ((haddr_t)INT64_MAX)
/* the largest single read or write (Linux moves at most ~2 GiB per call) */
#define SINK_MAX_IO ((size_t)1 << 30)

static hid_t sink_driver = -1;

static void hold(ars_ckpt_sink *sink) { sink->holders++; }

static void drop(ars_ckpt_sink *sink)
{
    if (--sink->holders == 0) free(sink);
}

/* Keeps the first failure; later writes see it and are dropped. */
static void latch(ars_ckpt_sink *sink, const char *operation, int error)
{
    if (sink->error) return;
    sink->error = error ? error : EIO;
    sink->operation = operation;
}

static int dropping(const ars_ckpt_sink *sink) { return sink->error || sink->released; }

/* ---- the property list's copy of the sink pointer ------------------------ */

static void *sink_fapl_copy(const void *info)
{
    sink_info *copy = malloc(sizeof *copy);
    if (!copy) return NULL;
    *copy = *(const sink_info *)info;
    hold(copy->sink);
    return copy;
}

static herr_t sink_fapl_free(void *info)
{
    sink_info *own = info;
    drop(own->sink);
    free(own);
    return 0;
}

static void *sink_fapl_get(H5FD_t *file_)
{
    sink_info info = {((sink_file *)file_)->sink};
    return sink_fapl_copy(&info);
}

/* ---- open, close, identity ------------------------------------------------ */

/* HDF5 opens twice on H5Fcreate: first without H5F_ACC_TRUNC (to compare
 * with the files already open), then with it. Both use the caller's fd. */
static H5FD_t *sink_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr)
{
    (void)name;
    (void)maxaddr;
    const sink_info *info = H5Pget_driver_info(fapl);
    if (!info || !info->sink || info->sink->released) return NULL;
    ars_ckpt_sink *sink = info->sink;
    struct stat st;
    if (fstat(sink->fd, &st) != 0) return NULL;
    if ((flags & H5F_ACC_TRUNC) && st.st_size != 0) {
        if (ftruncate(sink->fd, 0) != 0) return NULL;
        st.st_size = 0;
    }
    sink_file *file = calloc(1, sizeof *file);
    if (!file) return NULL;
    file->sink = sink;
    file->eof = (haddr_t)st.st_size;
    hold(sink);
    return &file->pub;
}

static herr_t sink_close(H5FD_t *file_)
{
    sink_file *file = (sink_file *)file_;
    drop(file->sink);   /* the fd is the caller's */
    free(file);
    return 0;
}

static int sink_cmp(const H5FD_t *a_, const H5FD_t *b_)
{
    uintptr_t a = (uintptr_t)((const sink_file *)a_)->sink, b = (uintptr_t)((const sink_file *)b_)->sink;
    return (a > b) - (a < b);
}

/* What sec2 declares, less its SWMR and POSIX-handle promises: small
 * metadata and raw data blocks are aggregated, metadata writes accumulated
 * into larger ones. */
static herr_t sink_query(const H5FD_t *file, unsigned long *flags)
{
    (void)file;
    if (flags)
        *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
                 H5FD_FEAT_AGGREGATE_SMALLDATA;
    return 0;
}

static herr_t sink_get_handle(H5FD_t *file_, hid_t fapl, void **handle)
{
    (void)fapl;
    if (!handle) return -1;
    *handle = &((sink_file *)file_)->sink->fd;
    return 0;
}

/* ---- address space --------------------------------------------------------- */

static haddr_t sink_get_eoa(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const sink_file *)file)->eoa;
}

static herr_t sink_set_eoa(H5FD_t *file, H5FD_mem_t type, haddr_t addr)
{
    (void)type;
    ((sink_file *)file)->eoa = addr;
    return 0;
}

static haddr_t sink_get_eof(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const sink_file *)file)->eof;
}

/* ---- I/O: never fails ------------------------------------------------------ */

/* Reads what was written, zeros past the end of the file (as sec2). After
 * a failed write the file is only discarded, but what did reach it still
 * reads back right, which keeps HDF5 on its way to a clean close; after a
 * failed read, zeros. */
static herr_t sink_read(H5FD_t *file_, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, void *buffer)
{
    (void)type;
    (void)dxpl;
    ars_ckpt_sink *sink = ((sink_file *)file_)->sink;
    unsigned char *bytes = buffer;
    while (size > 0 && !sink->released && !sink->read_failed) {
        ssize_t n = pread(sink->fd, bytes, size < SINK_MAX_IO ? size : SINK_MAX_IO, (off_t)addr);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            sink->read_failed = 1;
            latch(sink, "read back", errno);
        }
        if (n <= 0) break;
        bytes += n;
        addr += (haddr_t)n;
        size -= (size_t)n;
    }
    memset(bytes, 0, size);
    return 0;
}

static herr_t sink_write(H5FD_t *file_, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, const void *buffer)
{
    (void)type;
    (void)dxpl;
    sink_file *file = (sink_file *)file_;
    ars_ckpt_sink *sink = file->sink;
    const unsigned char *bytes = buffer;
    /* as if written, dropped or not: HDF5's view stays consistent */
    if (addr + size > file->eof) file->eof = addr + size;
    while (size > 0 && !dropping(sink)) {
        ssize_t n = pwrite(sink->fd, bytes, size < SINK_MAX_IO ? size : SINK_MAX_IO, (off_t)addr);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            latch(sink, "write", n < 0 ? errno : ARS_CKPT_SINK_NO_PROGRESS);
            break;
        }
        bytes += n;
        addr += (haddr_t)n;
        size -= (size_t)n;
    }
    return 0;
}

/* Makes the file exactly eoa bytes long (HDF5 calls it at every flush and
 * at close), as sec2 does. */
static herr_t sink_truncate(H5FD_t *file_, hid_t dxpl, hbool_t closing)
{
    (void)dxpl;
    (void)closing;
    sink_file *file = (sink_file *)file_;
    if (file->eoa == file->eof) return 0;
    if (!dropping(file->sink) && ftruncate(file->sink->fd, (off_t)file->eoa) != 0)
        latch(file->sink, "set the length of", errno);
    file->eof = file->eoa;
    return 0;
}

static const H5FD_class_t sink_class = {
    .name = "arsenal_ckpt_sink",
    .maxaddr = SINK_MAXADDR,
    /* H5Fclose closes whatever an error path left open, so the file is
     * really closed when it returns (F1 was a file that stayed half-open) */
    .fc_degree = H5F_CLOSE_STRONG,
    .fapl_size = sizeof(sink_info),
    .fapl_get = sink_fapl_get,
    .fapl_copy = sink_fapl_copy,
    .fapl_free = sink_fapl_free,
    .open = sink_open,
    .close = sink_close,
    .cmp = sink_cmp,
    .query = sink_query,
    .get_eoa = sink_get_eoa,
    .set_eoa = sink_set_eoa,
    .get_eof = sink_get_eof,
    .get_handle = sink_get_handle,
    .read = sink_read,
    .write = sink_write,
    .truncate = sink_truncate,
    /* metadata and raw data from separate free lists, as sec2 */
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

/* ---- the caller's side ----------------------------------------------------- */

ars_ckpt_sink *ars_ckpt_sink_create(int fd)
{
    ars_ckpt_sink *sink = calloc(1, sizeof *sink);
    if (!sink) return NULL;
    sink->fd = fd;
    sink->holders = 1;
    return sink;
}

hid_t ars_ckpt_sink_fapl(ars_ckpt_sink *sink)
{
    /* registered once; again if HDF5 was closed and reopened since */
    if (sink_driver < 0 || H5Iget_type(sink_driver) != H5I_VFL) sink_driver = H5FDregister(&sink_class);
    if (sink_driver < 0) return -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    sink_info info = {sink};
    if (fapl >= 0 && H5Pset_driver(fapl, sink_driver, &info) < 0) {
        H5Pclose(fapl);
        fapl = -1;
    }
    return fapl;
}

int ars_ckpt_sink_error(const ars_ckpt_sink *sink, const char **operation)
{
    if (operation) *operation = sink->error ? sink->operation : NULL;
    return sink->error;
}

void ars_ckpt_sink_release(ars_ckpt_sink *sink)
{
    if (!sink) return;
    sink->released = 1;
    drop(sink);
}
