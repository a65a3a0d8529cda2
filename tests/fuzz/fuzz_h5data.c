/* fuzz_h5data: the HDF5 data reader (data = hdf5:PATH) through
 * ars_user_data_load, on the input as a file: its training part (x, y) as
 * class labels and as regression targets, and its test part (x_test,
 * y_test), each in memory and streamed (at most 64 rows, a 64 MiB budget).
 * Properties besides "no crash, no leak, no UB":
 *  - a failure leaves the data set zeroed and sets a message;
 *  - a success is sane (count >= 1 but a missing test part, dim = the
 *    product of the sample shape, labels in [0, classes) or finite
 *    targets) and x in memory equals x streamed, row for row;
 *  - no HDF5 object is left open after an in-memory load, a failed load or
 *    ars_dataset_free (a streamed set holds its file until then).
 * libhdf5 itself is not instrumented, and crashes on some malformed object
 * headers (docs/validation.md F12): the loader reads a file in a checking
 * child first, as training does; ARSENAL_FUZZ_H5DATA_SANDBOX=1 (CI's
 * setting) puts that child in front here too, so that the property is the
 * product's. Without it libhdf5 is read in-process and its own crashes are
 * reported. */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
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

static void check_no_open_objects(const char *after)
{
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 objects left open after %s", open, after);
}

static void check_set(const ars_dataset *d, int regression)
{
    FUZZ_CHECK(d->count >= 1 && d->count <= 64 && d->dim >= 1, "count %d dim %d", d->count, d->dim);
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

static void one_part(const ars_user_spec *spec, int sandbox, int regression, int test_part)
{
    ars_user_options o = {.regression = regression, .test_part = test_part, .limit = 64, .stream = 0,
                          .memory_limit = 64 << 20, .trusted = !sandbox};
    ars_dataset memory, streamed;
    int rc = ars_user_data_load(spec, &o, &memory);
    check_no_open_objects("the in-memory load");
    if (rc) {
        FUZZ_CHECK(is_zeroed(&memory), "failed (%d) but left data", rc);
        FUZZ_CHECK(ars_error_message()[0] != '\0', "failed without a message");
        return;
    }
    o.stream = 1;
    o.trusted = 1;   /* checked above if at all */
    int src = ars_user_data_load(spec, &o, &streamed);   /* keeps its file open while it lives */
    if (src) check_no_open_objects("a failed streamed load");
    FUZZ_CHECK(src == 0, "in memory it loads, streamed it fails (%d): %s", src, ars_error_message());
    if (memory.count == 0) {   /* no test part */
        FUZZ_CHECK(test_part && is_zeroed(&memory) && is_zeroed(&streamed), "an empty set is a missing test part");
        return;
    }
    check_set(&memory, regression);
    check_set(&streamed, regression);
    FUZZ_CHECK(memory.x && streamed.source && memory.count == streamed.count && memory.dim == streamed.dim,
               "the two loads differ");
    uint32_t ids[64];
    for (int i = 0; i < memory.count; i++) ids[i] = (uint32_t)(memory.count - 1 - i);
    float *a = malloc(sizeof(float) * (size_t)memory.count * (size_t)memory.dim);
    float *b = malloc(sizeof(float) * (size_t)memory.count * (size_t)memory.dim);
    FUZZ_CHECK(a && b, "out of memory");
    FUZZ_CHECK(ars_dataset_read_x(&memory, ids, memory.count, a) == 0, "in-memory read failed");
    int read = ars_dataset_read_x(&streamed, ids, memory.count, b);
    FUZZ_CHECK(read == 0, "streamed read failed: %s", ars_error_message());
    FUZZ_CHECK(memcmp(a, b, sizeof(float) * (size_t)memory.count * (size_t)memory.dim) == 0,
               "streamed rows differ from the rows in memory");
    free(a);
    free(b);
    ars_dataset_free(&memory);
    ars_dataset_free(&streamed);
    check_no_open_objects("ars_dataset_free");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int sandbox = -1;
    if (sandbox < 0) {
        const char *env = getenv("ARSENAL_FUZZ_H5DATA_SANDBOX");
        sandbox = env && strcmp(env, "1") == 0;
    }
    ars_user_spec spec = {.format = ARS_USER_HDF5};
    fuzz_set_path(spec.path, sizeof spec.path, fuzz_write_file("input.h5", data, size));
    one_part(&spec, sandbox, 0, 0);
    one_part(&spec, sandbox, 1, 0);
    one_part(&spec, sandbox, 0, 1);
    return 0;
}
