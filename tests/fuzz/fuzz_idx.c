/* fuzz_idx: the IDX reader (ars_idx_read) on a file holding the input as
 * is (plain IDX, or gzip when the input is gzip data), then on the input
 * gzip-compressed. Properties besides "no crash, no leak, no UB":
 *  - a success has count = product of dims (1..4 dims, each > 0), data set,
 *    and exactly count payload bytes in the file after the header;
 *  - a failure leaves *idx zeroed and sets a message;
 *  - plain and gzip of the same bytes give the same result (unless the
 *    input is itself gzip, whose compressed form is gzip-in-gzip). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "fuzz_common.h"

static int is_zeroed(const ars_idx *idx)
{
    static const ars_idx zero;
    return memcmp(idx, &zero, sizeof zero) == 0;
}

static void check_result(int rc, const ars_idx *idx, const uint8_t *plain, size_t size)
{
    if (rc) {
        FUZZ_CHECK(is_zeroed(idx), "ars_idx_read failed (%d) but left data in *idx", rc);
        FUZZ_CHECK(ars_error_message()[0] != '\0', "ars_idx_read failed without a message");
        return;
    }
    FUZZ_CHECK(idx->ndim >= 1 && idx->ndim <= 4, "ndim %d", idx->ndim);
    size_t count = 1;
    for (int i = 0; i < idx->ndim; i++) {
        FUZZ_CHECK(idx->dims[i] > 0, "dim %d is %d", i, idx->dims[i]);
        count *= (size_t)idx->dims[i];
    }
    FUZZ_CHECK(count == idx->count, "count %zu, product of dims %zu", idx->count, count);
    FUZZ_CHECK(idx->data != NULL, "no data");
    if (plain) {   /* the payload is the bytes after the header */
        size_t header = 4 + 4 * (size_t)idx->ndim;
        FUZZ_CHECK(size == header + count, "file of %zu bytes, header %zu + payload %zu", size, header, count);
        FUZZ_CHECK(memcmp(idx->data, plain + header, count) == 0, "payload differs from the file");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;

    ars_idx plain;
    const char *path = fuzz_write_file("input.idx", data, size);
    int plain_rc = ars_idx_read(path, &plain);
    check_result(plain_rc, &plain, is_gzip ? NULL : data, size);

    ars_idx packed;
    path = fuzz_write_gzip("input.idx.gz", data, size);
    int packed_rc = ars_idx_read(path, &packed);
    check_result(packed_rc, &packed, is_gzip ? NULL : data, size);

    if (!is_gzip) {
        FUZZ_CHECK(plain_rc == packed_rc, "plain read returned %d, the gzip read of the same bytes %d", plain_rc,
                   packed_rc);
        if (plain_rc == 0)
            FUZZ_CHECK(plain.ndim == packed.ndim && memcmp(plain.dims, packed.dims, sizeof plain.dims) == 0 &&
                           memcmp(plain.data, packed.data, plain.count) == 0,
                       "plain and gzip reads differ");
    }
    ars_idx_free(&plain);
    ars_idx_free(&packed);
    FUZZ_CHECK(is_zeroed(&plain), "ars_idx_free left data");
    return 0;
}
