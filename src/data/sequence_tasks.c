/* sequence_tasks: synthetic long-range tasks of configurable length, the
 * test bench for recurrent networks against attention (docs/attention.md).
 * Deterministic in the seed; every array draws from its own stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/data.h"
#include "arsenal/error.h"
#include "arsenal/rng.h"

/* Instances of ARS_STREAM_DATA, apart from dataset.c's 0x100..0x3ff. */
enum { DATA_ADDING_VALUES = 0x1000, DATA_ADDING_MARKERS = 0x1001, DATA_COPY_TOKENS = 0x1100 };

static int alloc_sequences(ars_dataset *data, const char *name, int count, int dim)
{
    memset(data, 0, sizeof *data);
    if (count < 1) return ars_error(ARS_EINVAL, "%s: count %d: expected >= 1", name, count);
    if ((size_t)count > SIZE_MAX / sizeof(float) / (size_t)dim)
        return ars_error(ARS_ENOMEM, "%s: %d samples x %d values is too large", name, count, dim);
    snprintf(data->name, sizeof data->name, "%s", name);
    data->count = count;
    data->dim = dim;
    data->x = calloc((size_t)count * (size_t)dim, sizeof *data->x);
    if (!data->x) {
        ars_dataset_free(data);
        return ars_error(ARS_ENOMEM, "%s: cannot allocate %d samples x %d values", name, count, dim);
    }
    return 0;
}

int ars_dataset_adding(ars_dataset *data, int count, int time, uint64_t seed)
{
    if (!data) return ars_error(ARS_EINVAL, "adding: data is NULL");
    memset(data, 0, sizeof *data);
    if (time < 2 || time > (1 << 24))
        return ars_error(ARS_EINVAL, "adding: seq_len %d: expected 2 to %d (two marked steps)", time, 1 << 24);
    int rc = alloc_sequences(data, "adding", count, 2 * time);
    if (!rc) data->shape = ars_shape_matrix(time, 2);   /* (value, marker) per step */
    if (rc) return rc;
    data->targets = malloc((size_t)count * sizeof *data->targets);
    if (!data->targets) {
        ars_dataset_free(data);
        return ars_error(ARS_ENOMEM, "adding: cannot allocate %d targets", count);
    }
    data->target_dim = 1;
    /* every value slot and marker slot uniform; the marker slots are
     * overwritten below, so the values never depend on the markers */
    ars_rng_uniform(data->x, (size_t)count * 2 * time, 0.0f, 1.0f, seed,
                    ars_stream(ARS_STREAM_DATA, DATA_ADDING_VALUES), 0);
    const int half = time / 2;
    for (int i = 0; i < count; i++) {
        float *row = data->x + (size_t)i * 2 * time;
        uint32_t w[4];
        ars_philox(seed, ars_stream(ARS_STREAM_DATA, DATA_ADDING_MARKERS), (uint64_t)i, w);
        const int first = (int)(w[0] % (uint32_t)half);
        const int second = half + (int)(w[1] % (uint32_t)(time - half));
        for (int t = 0; t < time; t++) row[2 * t + 1] = 0.0f;
        row[2 * first + 1] = 1.0f;
        row[2 * second + 1] = 1.0f;
        data->targets[i] = (float)((double)row[2 * first] + (double)row[2 * second]);
    }
    return 0;
}

int ars_dataset_copy(ars_dataset *data, int count, int time, int symbols, uint64_t seed)
{
    if (!data) return ars_error(ARS_EINVAL, "copy: data is NULL");
    memset(data, 0, sizeof *data);
    if (time < 2 || time > (1 << 24))
        return ars_error(ARS_EINVAL, "copy: seq_len %d: expected 2 to %d (a symbol and the recall cue)", time,
                         1 << 24);
    if (symbols < 2 || symbols > (1 << 16))
        return ars_error(ARS_EINVAL, "copy: %d symbols: expected 2 to %d", symbols, 1 << 16);
    int rc = alloc_sequences(data, "copy", count, time);
    if (!rc) data->shape = ars_shape_vector(time);   /* one token id per step */
    if (rc) return rc;
    data->labels = malloc((size_t)count * sizeof *data->labels);
    if (!data->labels) {
        ars_dataset_free(data);
        return ars_error(ARS_ENOMEM, "copy: cannot allocate %d labels", count);
    }
    data->classes = symbols;
    for (int i = 0; i < count; i++) {
        float *row = data->x + (size_t)i * time;
        for (int t = 0; t < time - 1; t++) {
            uint32_t w[4];
            ars_philox(seed, ars_stream(ARS_STREAM_DATA, DATA_COPY_TOKENS), (uint64_t)i * (uint64_t)time + t, w);
            row[t] = (float)(w[0] % (uint32_t)symbols);
        }
        row[time - 1] = (float)symbols;   /* the recall cue */
        data->labels[i] = (int32_t)row[0];
    }
    return 0;
}
