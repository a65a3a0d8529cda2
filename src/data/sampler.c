/* sampler: the seeded epoch order and its sharding. The permutation depends
 * only on (seed, epoch), never on rank or world size, so the global batch of
 * a step is the same however many ranks share it; each rank then copies its
 * contiguous slice of that batch into an ars_batch. */
#include "arsenal/data.h"

#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/rng.h"

int ars_sampler_create(ars_sampler *s, const ars_dataset *data, int global_batch,
                       int rank, int world, uint64_t seed, int shuffle)
{
    if (!s) return ars_error(ARS_EINVAL, "sampler: s is NULL");
    memset(s, 0, sizeof *s);
    s->epoch = -1;
    if (!data || (!data->x && !data->source) || data->count < 1 || data->dim < 1)
        return ars_error(ARS_EINVAL, "sampler: empty data set: expected at least one sample");
    if (data->targets && data->target_dim < 1)
        return ars_error(ARS_EINVAL, "sampler: data set has targets of width %d, expected >= 1",
                         data->target_dim);
    if (global_batch < 1)
        return ars_error(ARS_EINVAL, "sampler: global batch %d: expected >= 1", global_batch);
    if (world < 1)
        return ars_error(ARS_EINVAL, "sampler: world size %d: expected >= 1", world);
    if (rank < 0 || rank >= world)
        return ars_error(ARS_EINVAL, "sampler: rank %d: expected 0 to %d", rank, world - 1);

    s->perm = malloc((size_t)data->count * sizeof *s->perm);
    if (!s->perm)
        return ars_error(ARS_ENOMEM, "sampler: cannot allocate a permutation of %d samples",
                         data->count);
    s->data = data;
    s->global_batch = global_batch;
    s->local_capacity = (global_batch - 1) / world + 1;   /* ceil without overflow */
    s->rank = rank;
    s->world = world;
    s->seed = seed;
    s->shuffle = shuffle != 0;
    if (!s->shuffle)
        for (int i = 0; i < data->count; i++) s->perm[i] = (uint32_t)i;
    return 0;
}

void ars_sampler_destroy(ars_sampler *s)
{
    if (!s) return;
    free(s->perm);
    memset(s, 0, sizeof *s);
    s->epoch = -1;
}

int ars_sampler_steps_per_epoch(const ars_sampler *s)
{
    if (!s || !s->data || s->global_batch < 1) return 0;
    /* The last, partial batch counts as a step. */
    return (s->data->count - 1) / s->global_batch + 1;
}

int ars_batch_alloc(ars_batch *batch, const ars_sampler *s)
{
    if (!batch) return ars_error(ARS_EINVAL, "batch: batch is NULL");
    memset(batch, 0, sizeof *batch);
    if (!s || !s->data || !s->perm)
        return ars_error(ARS_EINVAL, "batch: sampler not created");
    const ars_dataset *d = s->data;
    size_t rows = (size_t)s->local_capacity;
    if (rows > SIZE_MAX / sizeof(float) / (size_t)d->dim ||
        (d->targets && rows > SIZE_MAX / sizeof(float) / (size_t)d->target_dim))
        return ars_error(ARS_ENOMEM, "batch: %zu rows of %d features is too large", rows, d->dim);

    batch->x = malloc(rows * (size_t)d->dim * sizeof *batch->x);
    batch->ids = malloc(rows * sizeof *batch->ids);
    if (d->labels) batch->labels = malloc(rows * sizeof *batch->labels);
    if (d->targets) batch->targets = malloc(rows * (size_t)d->target_dim * sizeof *batch->targets);
    if (!batch->x || !batch->ids || (d->labels && !batch->labels) ||
        (d->targets && !batch->targets)) {
        ars_batch_free(batch);
        return ars_error(ARS_ENOMEM, "batch: cannot allocate %zu rows of %d features",
                         rows, d->dim);
    }
    batch->capacity = s->local_capacity;
    batch->dim = d->dim;
    batch->target_dim = d->targets ? d->target_dim : 0;
    return 0;
}

void ars_batch_free(ars_batch *batch)
{
    if (!batch) return;
    free(batch->x);
    free(batch->labels);
    free(batch->targets);
    free(batch->ids);
    memset(batch, 0, sizeof *batch);
}

/* A batch allocated for a different sampler (other batch size, world or
 * data set) would be overrun by the copy: refuse it instead. */
static int batch_fits(const ars_batch *batch, const ars_sampler *s)
{
    const ars_dataset *d = s->data;
    if (!batch->x || !batch->ids || batch->capacity < s->local_capacity || batch->dim != d->dim)
        return ars_error(ARS_EINVAL,
                         "sampler: batch holds %d rows of %d features, expected %d rows of %d "
                         "(allocate it with ars_batch_alloc for this sampler)",
                         batch->capacity, batch->dim, s->local_capacity, d->dim);
    if (d->labels && !batch->labels)
        return ars_error(ARS_EINVAL, "sampler: the data set has labels but the batch has none");
    if (d->targets && (!batch->targets || batch->target_dim != d->target_dim))
        return ars_error(ARS_EINVAL, "sampler: batch holds targets of width %d, expected %d",
                         batch->target_dim, d->target_dim);
    return 0;
}

int ars_sampler_fill(ars_sampler *s, int epoch, int step, ars_batch *batch)
{
    if (!s || !s->data || !s->perm) return ars_error(ARS_EINVAL, "sampler: not created");
    if (!batch) return ars_error(ARS_EINVAL, "sampler: batch is NULL");
    int steps = ars_sampler_steps_per_epoch(s);
    if (epoch < 0) return ars_error(ARS_EINVAL, "sampler: epoch %d: expected >= 0", epoch);
    if (step < 0 || step >= steps)
        return ars_error(ARS_EINVAL, "sampler: step %d: expected 0 to %d", step, steps - 1);
    int rc = batch_fits(batch, s);
    if (rc) return rc;

    const ars_dataset *d = s->data;
    if (s->shuffle && s->epoch != epoch) {
        ars_rng_permutation(s->perm, (size_t)d->count, s->seed,
                            ars_stream(ARS_STREAM_SHUFFLE, (uint32_t)epoch));
        s->epoch = epoch;
    }

    /* Computed in long long: step * B may exceed INT_MAX near the end of a
     * large epoch even though the result is < count. */
    long long start = (long long)step * s->global_batch;
    long long global = d->count - start;
    if (global > s->global_batch) global = s->global_batch;
    long long begin = (long long)s->rank * s->local_capacity;
    long long end = begin + s->local_capacity;
    if (end > global) end = global;
    int rows = end > begin ? (int)(end - begin) : 0;

    batch->global_rows = (int)global;
    batch->rows = rows;
    for (int r = 0; r < rows; r++) {
        uint32_t id = s->perm[start + begin + r];
        batch->ids[r] = id;
        if (d->x)
            memcpy(batch->x + (size_t)r * d->dim, d->x + (size_t)id * d->dim,
                   (size_t)d->dim * sizeof *batch->x);
        if (d->labels) batch->labels[r] = d->labels[id];
        if (d->targets)
            memcpy(batch->targets + (size_t)r * d->target_dim,
                   d->targets + (size_t)id * d->target_dim,
                   (size_t)d->target_dim * sizeof *batch->targets);
    }
    /* a streamed x (user_data.c): the batch's rows read from the file at once */
    if (!d->x) return ars_dataset_read_x(d, batch->ids, rows, batch->x);
    return 0;
}
