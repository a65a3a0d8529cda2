/* dist: MPI collectives for data-parallel training. Every call checks its
 * MPI return code (the communicator uses MPI_ERRORS_RETURN) and turns it
 * into an arsenal error, so a failing collective is reported, not fatal. */
#include "arsenal/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/error.h"
#include "arsenal/model.h"

static int mpi_failed(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    return ars_error(ARS_EMPI, "%s failed: %s", what, text);
}

#define MPI_CHECK(call, what)                              \
    do {                                                   \
        int mpi_rc_ = (call);                              \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_failed(mpi_rc_, what); \
    } while (0)

int ars_dist_create(ars_dist *dist, MPI_Comm comm)
{
    memset(dist, 0, sizeof *dist);
    MPI_CHECK(MPI_Comm_dup(comm, &dist->comm), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(dist->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(dist->comm, &dist->rank);
    MPI_Comm_size(dist->comm, &dist->size);
    dist->overlap = 1;
    dist->side_request = MPI_REQUEST_NULL;
    return 0;
}

void ars_dist_destroy(ars_dist *dist)
{
    if (dist->comm != MPI_COMM_NULL && dist->comm != 0) MPI_Comm_free(&dist->comm);
    free(dist->buckets);
    memset(dist, 0, sizeof *dist);
}

int ars_dist_allreduce_double(const ars_dist *dist, double *values, int count)
{
    if (!ars_dist_active(dist) || count == 0) return 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, dist->comm), "MPI_Allreduce");
    return 0;
}

int ars_dist_allreduce_float(const ars_dist *dist, float *values, size_t count)
{
    if (!ars_dist_active(dist)) return 0;
    for (size_t done = 0; done < count;) {   /* MPI counts are int */
        int chunk = count - done > (size_t)INT_MAX ? INT_MAX : (int)(count - done);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values + done, chunk, MPI_FLOAT, MPI_SUM, dist->comm),
                  "MPI_Allreduce");
        done += (size_t)chunk;
    }
    return 0;
}

int ars_dist_allreduce_int64(const ars_dist *dist, int64_t *values, int count)
{
    if (!ars_dist_active(dist) || count == 0) return 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_INT64_T, MPI_SUM, dist->comm), "MPI_Allreduce");
    return 0;
}

int ars_dist_allreduce_max_int(const ars_dist *dist, int *value)
{
    if (!ars_dist_active(dist)) return 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_INT, MPI_MAX, dist->comm), "MPI_Allreduce");
    return 0;
}

/* FNV-1a of the code and message, in 31 bits so that its negation fits. */
static int error_hash(int rc, const char *message)
{
    uint32_t h = 2166136261u ^ (uint32_t)rc;
    for (const unsigned char *p = (const unsigned char *)message; *p; p++) h = (h ^ *p) * 16777619u;
    return (int)(h & 0x7fffffffu);
}

int ars_dist_agree(const ars_dist *dist, int rc, int *agreed)
{
    *agreed = ARS_AGREED_NONE;
    if (!ars_dist_active(dist)) {
        if (rc) *agreed = ARS_AGREED_SAME;
        return rc;
    }
    /* max of: failed, succeeded, hash, -hash. Every rank failed alike iff
     * none succeeded and the max of the hash and of its negation agree. */
    int hash = rc ? error_hash(rc, ars_error_message()) : 0;
    int flags[4] = {rc != 0, rc == 0, hash, -hash};
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flags, 4, MPI_INT, MPI_MAX, dist->comm), "MPI_Allreduce (agreement)");
    if (!flags[0]) return 0;
    *agreed = !flags[1] && flags[2] == -flags[3] ? ARS_AGREED_SAME : ARS_AGREED;
    if (rc) return rc;
    return ars_error(ARS_EPEER, "another rank failed");
}

int ars_dist_broadcast_bytes(const ars_dist *dist, void *bytes, size_t size, int root)
{
    if (!ars_dist_active(dist)) return 0;
    for (size_t done = 0; done < size;) {
        int chunk = size - done > (size_t)INT_MAX ? INT_MAX : (int)(size - done);
        MPI_CHECK(MPI_Bcast((char *)bytes + done, chunk, MPI_BYTE, root, dist->comm), "MPI_Bcast");
        done += (size_t)chunk;
    }
    return 0;
}

int ars_dist_broadcast_float(const ars_dist *dist, float *values, size_t count, int root)
{
    if (!ars_dist_active(dist)) return 0;
    for (size_t done = 0; done < count;) {
        int chunk = count - done > (size_t)INT_MAX ? INT_MAX : (int)(count - done);
        MPI_CHECK(MPI_Bcast(values + done, chunk, MPI_FLOAT, root, dist->comm), "MPI_Bcast");
        done += (size_t)chunk;
    }
    return 0;
}

int ars_dist_single_host(const ars_dist *dist, int *single)
{
    *single = 1;
    if (!ars_dist_active(dist)) return 0;
    MPI_Comm host;
    MPI_CHECK(MPI_Comm_split_type(dist->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host),
              "MPI_Comm_split_type");
    int size = 0;
    MPI_Comm_size(host, &size);
    MPI_Comm_free(&host);
    /* the same answer on every rank: a host holds them all or none does */
    *single = size == dist->size;
    return 0;
}

int ars_dist_plan_buckets(ars_dist *dist, ars_model *model, size_t bucket_bytes, size_t first_bucket_bytes,
                          int overlap)
{
    if (!dist) return 0;
    free(dist->buckets);
    dist->buckets = NULL;
    dist->bucket_count = 0;
    dist->grads = model->grads;
    dist->overlap = overlap;
    if (bucket_bytes < sizeof(float)) bucket_bytes = sizeof(float);
    if (first_bucket_bytes < sizeof(float)) first_bucket_bytes = bucket_bytes;
    dist->buckets = calloc((size_t)model->layer_count + 1, sizeof *dist->buckets);
    if (!dist->buckets) return ars_error(ARS_ENOMEM, "dist: out of memory for buckets");
    /* Walk layers in backward order; a bucket closes once it holds enough
     * bytes (or a single oversized layer's; chunking bounds MPI counts). */
    size_t limit = first_bucket_bytes / sizeof(float), held = 0;
    int open = 0;
    ars_bucket *bucket = NULL;
    for (int i = model->layer_count - 1; i >= 0; i--) {
        const ars_layer *layer = &model->layers[i];
        if (layer->param_size == 0) continue;
        if (!open) {
            bucket = &dist->buckets[dist->bucket_count++];
            bucket->count = 0;
            held = 0;
            open = 1;
        }
        bucket->offset = layer->param_offset;
        bucket->count += layer->param_size;
        bucket->first_layer = i;
        held += layer->param_size;
        if (held >= limit || held > (size_t)INT_MAX / 2) {
            open = 0;
            limit = bucket_bytes / sizeof(float);
        }
    }
    return 0;
}

static int start_bucket(ars_dist *dist, ars_bucket *bucket)
{
    bucket->started = 1;
    if (bucket->count > (size_t)INT_MAX) return ars_error(ARS_EINVAL, "dist: bucket too large");
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, dist->grads + bucket->offset, (int)bucket->count, MPI_FLOAT,
                             MPI_SUM, dist->comm, &bucket->request),
              "MPI_Iallreduce");
    return 0;
}

int ars_dist_backward_hook(void *context, const ars_layer *layer)
{
    ars_dist *dist = context;
    if (!ars_dist_active(dist) || !dist->overlap) return 0;
    for (int b = 0; b < dist->bucket_count; b++) {
        ars_bucket *bucket = &dist->buckets[b];
        if (!bucket->started && bucket->first_layer == layer->index) {
            int rc = start_bucket(dist, bucket);
            if (rc) return rc;
        } else if (bucket->started && bucket->request != MPI_REQUEST_NULL) {
            /* Open MPI progresses non-blocking collectives only inside MPI calls. */
            int done = 0;
            MPI_CHECK(MPI_Test(&bucket->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
        }
    }
    return 0;
}

int ars_dist_start_side_sum(ars_dist *dist, double *values, int count)
{
    if (!ars_dist_active(dist) || count == 0) return 0;
    if (dist->side_request != MPI_REQUEST_NULL) return ars_error(ARS_EINVAL, "dist: a side sum is already pending");
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, dist->comm, &dist->side_request),
              "MPI_Iallreduce");
    return 0;
}

int ars_dist_finish_gradients(ars_dist *dist)
{
    if (!ars_dist_active(dist)) return 0;
    dist->sync_seconds = 0;
    double start = MPI_Wtime();
    int rc = 0;
    if (!dist->overlap) {
        size_t total = 0;
        for (int b = 0; b < dist->bucket_count; b++) total += dist->buckets[b].count;
        /* buckets are contiguous and cover the whole buffer from offset 0 */
        rc = ars_dist_allreduce_float(dist, dist->grads, total);
    } else {
        for (int b = 0; b < dist->bucket_count && !rc; b++) {
            ars_bucket *bucket = &dist->buckets[b];
            if (!bucket->started) rc = start_bucket(dist, bucket);
        }
        for (int b = 0; b < dist->bucket_count && !rc; b++) {
            ars_bucket *bucket = &dist->buckets[b];
            int mpi_rc = MPI_Wait(&bucket->request, MPI_STATUS_IGNORE);
            if (mpi_rc != MPI_SUCCESS) rc = mpi_failed(mpi_rc, "MPI_Wait on a gradient bucket");
        }
    }
    if (dist->side_request != MPI_REQUEST_NULL) {   /* MPI_Wait resets it to MPI_REQUEST_NULL */
        int mpi_rc = MPI_Wait(&dist->side_request, MPI_STATUS_IGNORE);
        if (mpi_rc != MPI_SUCCESS && !rc) rc = mpi_failed(mpi_rc, "MPI_Wait on the loss sum");
    }
    for (int b = 0; b < dist->bucket_count; b++) dist->buckets[b].started = 0;
    dist->sync_seconds = MPI_Wtime() - start;
    return rc;
}

uint64_t ars_checksum(const float *values, size_t count)
{
    /* FNV-1a over the bytes: any bit difference changes it. */
    const unsigned char *bytes = (const unsigned char *)values;
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < count * sizeof(float); i++) {
        hash ^= bytes[i];
        hash *= 1099511628211ull;
    }
    return hash;
}

int ars_dist_check_consistent(const ars_dist *dist, const float *values, size_t count, int64_t step,
                              const char *what)
{
    if (!ars_dist_active(dist)) return 0;
    uint64_t mine = ars_checksum(values, count);
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)dist->size);
    if (!all) return ars_error(ARS_ENOMEM, "dist: out of memory");
    int mpi_rc = MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, dist->comm);
    if (mpi_rc != MPI_SUCCESS) {
        free(all);
        return mpi_failed(mpi_rc, "MPI_Allgather of checksums");
    }
    char ranks[256] = "";
    int differing = 0;
    for (int r = 1; r < dist->size; r++) {
        if (all[r] == all[0]) continue;
        size_t used = strlen(ranks);
        if (used < sizeof ranks - 16) snprintf(ranks + used, sizeof ranks - used, "%s%d", differing ? ", " : "", r);
        differing++;
    }
    free(all);
    if (differing)
        return ars_error(ARS_EMPI, "step %lld: %s differ between ranks: rank(s) %s disagree with rank 0 "
                                   "(replicas diverged)", (long long)step, what, ranks);
    return 0;
}
