/* fuzz_csv: the CSV reader (data = csv:PATH, label = y) through
 * ars_user_data_load. The first input byte chooses the options (bit 0:
 * regression targets, as loss = mse; bit 1: limit 2 rows); the rest is the
 * file. Properties besides "no crash, no leak, no UB":
 *  - a failure leaves the data set zeroed and sets a message;
 *  - a success holds count >= 1 rows (<= 2 with the limit) of dim >= 1
 *    finite features, shape [dim], labels in [0, classes) with classes <=
 *    65536, or finite targets of width 1;
 *  - written back as CSV (%.9g: floats round-trip exactly) and read again,
 *    it is the same set, bit for bit. */
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

static void check_set(const ars_dataset *d, const ars_user_options *o)
{
    FUZZ_CHECK(d->count >= 1 && (o->limit <= 0 || d->count <= o->limit), "count %d", d->count);
    FUZZ_CHECK(d->dim >= 1 && d->x && d->shape.rank == 1 && d->shape.dims[0] == d->dim, "dim %d", d->dim);
    for (size_t i = 0; i < (size_t)d->count * (size_t)d->dim; i++) FUZZ_CHECK(isfinite(d->x[i]), "x[%zu]", i);
    if (o->regression) {
        FUZZ_CHECK(d->targets && !d->labels && d->target_dim == 1, "targets expected");
        for (int i = 0; i < d->count; i++) FUZZ_CHECK(isfinite(d->targets[i]), "target %d", i);
    } else {
        FUZZ_CHECK(d->labels && !d->targets && d->classes >= 1 && d->classes <= 65536, "classes %d", d->classes);
        for (int i = 0; i < d->count; i++)
            FUZZ_CHECK(d->labels[i] >= 0 && d->labels[i] < d->classes, "label %d of row %d", d->labels[i], i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    ars_user_options o = {.label = "y", .regression = data[0] & 1, .limit = data[0] & 2 ? 2 : 0, .stream = -1,
                          .memory_limit = 64 << 20};
    const char *path = fuzz_write_file("input.csv", data + 1, size - 1);
    ars_user_spec spec = {.format = ARS_USER_CSV};
    fuzz_set_path(spec.path, sizeof spec.path, path);
    ars_dataset d;
    int rc = ars_user_data_load(&spec, &o, &d);
    if (rc) {
        FUZZ_CHECK(is_zeroed(&d), "failed (%d) but left data", rc);
        FUZZ_CHECK(ars_error_message()[0] != '\0', "failed without a message");
        return 0;
    }
    check_set(&d, &o);

    /* the set written back reads the same */
    size_t cap = 64 + (size_t)d.count * ((size_t)d.dim + 1) * 20 + (size_t)d.dim * 12;
    char *text = malloc(cap);
    FUZZ_CHECK(text != NULL, "out of memory");
    size_t used = 0;
    for (int j = 0; j < d.dim; j++) used += (size_t)snprintf(text + used, cap - used, "f%d,", j);
    used += (size_t)snprintf(text + used, cap - used, "y\n");
    for (int i = 0; i < d.count; i++) {
        for (int j = 0; j < d.dim; j++)
            used += (size_t)snprintf(text + used, cap - used, "%.9g,", (double)d.x[(size_t)i * d.dim + j]);
        if (o.regression) used += (size_t)snprintf(text + used, cap - used, "%.9g\n", (double)d.targets[i]);
        else used += (size_t)snprintf(text + used, cap - used, "%d\n", d.labels[i]);
    }
    FUZZ_CHECK(used < cap, "rewrite buffer too small");
    fuzz_set_path(spec.path, sizeof spec.path, fuzz_write_file("again.csv", (const uint8_t *)text, used));
    free(text);
    ars_dataset again;
    o.limit = 0;
    rc = ars_user_data_load(&spec, &o, &again);
    FUZZ_CHECK(rc == 0, "the set written back does not read (%d)", rc);
    FUZZ_CHECK(again.count == d.count && again.dim == d.dim, "written back: %d x %d, was %d x %d", again.count,
               again.dim, d.count, d.dim);
    FUZZ_CHECK(memcmp(again.x, d.x, sizeof(float) * (size_t)d.count * d.dim) == 0, "x differs after writing back");
    if (o.regression)
        FUZZ_CHECK(memcmp(again.targets, d.targets, sizeof(float) * (size_t)d.count) == 0, "targets differ");
    else
        FUZZ_CHECK(memcmp(again.labels, d.labels, sizeof(int32_t) * (size_t)d.count) == 0, "labels differ");
    ars_dataset_free(&again);
    ars_dataset_free(&d);
    FUZZ_CHECK(is_zeroed(&d), "ars_dataset_free left data");
    return 0;
}
