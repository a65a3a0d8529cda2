/* fuzz_input: arsenal predict's input readers (src/eval/predict_input.c)
 * on a file holding the input as is, opened as IDX, .npy and CSV (the
 * format named by its prefix) and by content detection, then read to the
 * end a few samples at a time. HDF5 is left out: libhdf5 itself is not
 * robust against corrupted files (docs/validation.md). Properties besides
 * "no crash, no leak, no UB":
 *  - a failure sets a message and gives no input;
 *  - a sample has 1 to 2^28 values, and its shape counts them;
 *  - a read never returns more rows than asked for, and the rows of a
 *    known count add up to it when the reads succeed;
 *  - every value a read gives is finite (a float64 beyond float32's range
 *    included). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/predict.h"
#include "fuzz_common.h"

enum { BATCH = 3, MAX_VALUES = 1 << 16 };   /* larger samples are opened, not read (the buffer would be huge) */

static void read_through(const char *spec)
{
    ars_error_clear();
    ars_input *in = NULL;
    int rc = ars_input_open(spec, NULL, &in);
    if (rc) {
        FUZZ_CHECK(in == NULL, "ars_input_open failed (%d) but gave an input", rc);
        FUZZ_CHECK(ars_error_message()[0] != '\0', "ars_input_open failed without a message");
        return;
    }
    const ars_shape shape = ars_input_shape(in);
    const double values = ars_shape_count(&shape);
    FUZZ_CHECK(shape.rank >= 1 && shape.rank <= ARS_SHAPE_MAX_RANK, "shape of rank %d", shape.rank);
    FUZZ_CHECK(values >= 1 && values <= (1 << 28), "%g values per sample", values);
    const int64_t count = ars_input_count(in);
    FUZZ_CHECK(count >= -1, "count %lld", (long long)count);
    if (values <= MAX_VALUES) {
        float *x = malloc(sizeof(float) * BATCH * (size_t)values);
        FUZZ_CHECK(x != NULL, "out of memory for %d samples of %g values", BATCH, values);
        int64_t total = 0;
        int rows = 0;
        for (;;) {
            rc = ars_input_read(in, BATCH, x, &rows);
            if (rc) {
                FUZZ_CHECK(ars_error_message()[0] != '\0', "ars_input_read failed without a message");
                break;
            }
            FUZZ_CHECK(rows >= 0 && rows <= BATCH, "read %d rows of at most %d", rows, BATCH);
            for (size_t i = 0; i < (size_t)rows * (size_t)values; i++)
                FUZZ_CHECK(isfinite(x[i]), "value %zu of a successful read is %g", i, (double)x[i]);
            if (rows == 0) break;
            total += rows;
        }
        if (!rc && count >= 0) FUZZ_CHECK(total == count, "read %lld samples of %lld", (long long)total,
                                          (long long)count);
        free(x);
    }
    ars_input_close(in);
}

static int has_hdf5_signature(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 4 <= size; i++)
        if (memcmp(data + i, "\x89HDF", 4) == 0) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file("input.idx", data, size);
    static const char *const prefixes[] = {"idx:", "npy:", "csv:", ""};
    for (size_t k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++) {
        char spec[512];
        snprintf(spec, sizeof spec, "%s%s", prefixes[k], path);
        /* detection picks HDF5 for an HDF5 signature (at 0, 512, 1024, ...): not fuzzed */
        if (!prefixes[k][0] && has_hdf5_signature(data, size)) continue;
        read_through(spec);
    }
    return 0;
}
