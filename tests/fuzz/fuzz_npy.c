/* fuzz_npy: the .npy reader (data = npy:XPATH,YPATH) through
 * ars_user_data_load. The input is the x file, then the separator
 * "@@Y@@" and the y file; without a separator the input is both (then a
 * 1-D or 2-D array is its own target). The first byte chooses the loss
 * (bit 0: regression targets, as loss = mse). Properties besides "no
 * crash, no leak, no UB":
 *  - a failure leaves the data set zeroed and sets a message;
 *  - a success is sane: count >= 1, dim = the product of the sample shape,
 *    x finite, labels in [0, classes) or finite targets;
 *  - x in memory and x streamed from the file agree: both load or both
 *    fail, the same labels or targets, and every row read through
 *    ars_dataset_read_x (in reverse order, one repeated) is the same. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "fuzz_common.h"

static int is_zeroed(const ars_dataset *d)
{
    static const ars_dataset zero;
    return memcmp(d, &zero, sizeof zero) == 0;
}

static void check_set(const ars_dataset *d, int regression)
{
    FUZZ_CHECK(d->count >= 1 && d->dim >= 1, "count %d dim %d", d->count, d->dim);
    ars_shape shape = ars_dataset_shape(d);
    FUZZ_CHECK(ars_shape_count(&shape) == d->dim, "shape does not hold dim %d values", d->dim);
    if (regression) {
        FUZZ_CHECK(d->targets && !d->labels && d->target_dim >= 1, "targets expected");
        for (size_t i = 0; i < (size_t)d->count * (size_t)d->target_dim; i++)
            FUZZ_CHECK(isfinite(d->targets[i]), "target %zu", i);
    } else {
        FUZZ_CHECK(d->labels && !d->targets && d->classes >= 1 && d->classes <= 65536, "classes %d", d->classes);
        for (int i = 0; i < d->count; i++)
            FUZZ_CHECK(d->labels[i] >= 0 && d->labels[i] < d->classes, "label %d of row %d", d->labels[i], i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int regression = data[0] & 1;
    data++, size--;
    static const char separator[] = "@@Y@@";
    const uint8_t *y = data;
    size_t x_size = size, y_size = size;
    for (size_t i = 0; i + 5 <= size; i++)
        if (memcmp(data + i, separator, 5) == 0) {
            x_size = i;
            y = data + i + 5;
            y_size = size - i - 5;
            break;
        }
    ars_user_spec spec = {.format = ARS_USER_NPY};
    fuzz_set_path(spec.path, sizeof spec.path, fuzz_write_file("x.npy", data, x_size));
    fuzz_set_path(spec.y_path, sizeof spec.y_path, fuzz_write_file("y.npy", y, y_size));

    ars_user_options o = {.regression = regression, .stream = 0, .memory_limit = 64 << 20};
    ars_dataset memory, streamed;
    int rc = ars_user_data_load(&spec, &o, &memory);
    char message[512];
    snprintf(message, sizeof message, "%s", ars_error_message());
    o.stream = 1;
    int src = ars_user_data_load(&spec, &o, &streamed);
    FUZZ_CHECK((rc == 0) == (src == 0), "in memory %d (%s), streamed %d (%s)", rc, message, src,
               ars_error_message());
    if (rc) {
        FUZZ_CHECK(is_zeroed(&memory) && is_zeroed(&streamed), "failed but left data");
        FUZZ_CHECK(message[0] != '\0' && ars_error_message()[0] != '\0', "failed without a message");
        return 0;
    }
    check_set(&memory, regression);
    check_set(&streamed, regression);
    FUZZ_CHECK(memory.x && !memory.source && !streamed.x && streamed.source, "in memory / streamed expected");
    FUZZ_CHECK(memory.count == streamed.count && memory.dim == streamed.dim &&
                   ars_shape_equal(&memory.shape, &streamed.shape),
               "the two loads differ in shape");
    for (size_t i = 0; i < (size_t)memory.count * (size_t)memory.dim; i++)
        FUZZ_CHECK(isfinite(memory.x[i]), "x value %zu not finite", i);
    if (regression)
        FUZZ_CHECK(memcmp(memory.targets, streamed.targets,
                          sizeof(float) * (size_t)memory.count * (size_t)memory.target_dim) == 0,
                   "targets differ");
    else
        FUZZ_CHECK(memcmp(memory.labels, streamed.labels, sizeof(int32_t) * (size_t)memory.count) == 0 &&
                       memory.classes == streamed.classes,
                   "labels differ");
    int rows = memory.count < 64 ? memory.count : 64;
    uint32_t ids[65];
    for (int i = 0; i < rows; i++) ids[i] = (uint32_t)(memory.count - 1 - i);
    ids[rows] = ids[0];
    float *a = malloc(sizeof(float) * (size_t)(rows + 1) * (size_t)memory.dim);
    float *b = malloc(sizeof(float) * (size_t)(rows + 1) * (size_t)memory.dim);
    FUZZ_CHECK(a && b, "out of memory");
    FUZZ_CHECK(ars_dataset_read_x(&memory, ids, rows + 1, a) == 0, "in-memory read failed");
    FUZZ_CHECK(ars_dataset_read_x(&streamed, ids, rows + 1, b) == 0, "streamed read failed");
    FUZZ_CHECK(memcmp(a, b, sizeof(float) * (size_t)(rows + 1) * (size_t)memory.dim) == 0,
               "streamed rows differ from the rows in memory");
    free(a);
    free(b);
    ars_dataset_free(&memory);
    ars_dataset_free(&streamed);
    return 0;
}
