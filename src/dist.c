/* dist: MPI collectives for data-parallel training. Every call checks its
 * MPI return code (the communicator uses MPI_ERRORS_RETURN) and turns it
 * into an arsenal error, so a failing collective is reported, not fatal. */
#define _POSIX_C_SOURCE 200809L
#include "arsenal/dist.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arsenal/clip.h"
#include "arsenal/error.h"
#include "arsenal/model.h"
#include "dist_ranks.h"
#include "simd.h"

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
    dist->mode = ARS_SYNC_OVERLAP;
    dist->side_request = MPI_REQUEST_NULL;
    return 0;
}

static void release_segment(ars_dist *dist)
{
    if (dist->segment) munmap(dist->segment, dist->segment_bytes);
    dist->segment = NULL;
    dist->segment_bytes = 0;
    free(dist->peer_grads);
    dist->peer_grads = NULL;
}

static void release_shard(ars_dist *dist)
{
    free(dist->slice_counts);
    free(dist->slice_offsets);
    free(dist->gathered);
    dist->slice_counts = dist->slice_offsets = NULL;
    dist->gathered = NULL;
}

void ars_dist_destroy(ars_dist *dist)
{
    release_segment(dist);
    release_shard(dist);
    if (dist->comm != MPI_COMM_NULL && dist->comm != 0) MPI_Comm_free(&dist->comm);
    free(dist->buckets);
    memset(dist, 0, sizeof *dist);
}

const char *ars_grad_sync_name(ars_grad_sync mode)
{
    switch (mode) {
    case ARS_SYNC_AUTO: return "auto";
    case ARS_SYNC_ALLREDUCE: return "allreduce";
    case ARS_SYNC_OVERLAP: return "overlap";
    case ARS_SYNC_SHARED: return "shared_memory";
    }
    return "unknown";
}

int ars_dist_spans_ranks(const ars_dist *dist) { return ars_dist_active(dist); }

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

int ars_dist_allreduce_uint32(const ars_dist *dist, uint32_t *values, int count)
{
    if (!ars_dist_active(dist) || count == 0) return 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_UINT32_T, MPI_SUM, dist->comm), "MPI_Allreduce");
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

void ars_dist_slice(size_t count, int ranks, int rank, size_t *lo, size_t *hi)
{
    /* whole cache lines: no two ranks write into one line of a shared
     * buffer, and a slice starts where ars_sum_squares' blocks of sixteen do */
    size_t lines = (count + 15) / 16, per_rank = (lines + (size_t)ranks - 1) / (size_t)ranks;
    *lo = 16 * per_rank * (size_t)rank;
    *hi = *lo + 16 * per_rank;
    if (*lo > count) *lo = count;
    if (*hi > count) *hi = count;
}

/* Bytes of one rank's part of the segment: its gradients, then (in a
 * cache line of its own) the sum of squares of the slice it reduced. */
static size_t segment_part_bytes(size_t count) { return ((count * sizeof(float) + 63) & ~(size_t)63) + 64; }

static double *partial_slot(const ars_dist *dist, int rank)
{
    return (double *)((char *)dist->peer_grads[rank] + segment_part_bytes(dist->grad_count) - 64);
}

/* One shared-memory segment holding every rank's gradient buffer. Rank 0
 * creates a POSIX shared-memory object and reserves all of it with
 * posix_fallocate, so a full /dev/shm is an error here rather than a
 * SIGBUS in the middle of a step (MPI_Win_allocate_shared only warned and
 * then hung, measured); every rank maps it, then rank 0 unlinks the name:
 * nothing is left behind even if the job is killed. Returns 0, or 1 with
 * the reason in why (every rank alike); ARS_EMPI if a collective fails. */
static int map_segment(ars_dist *dist, size_t count, char *why, size_t why_size)
{
    const size_t part = segment_part_bytes(count), bytes = part * (size_t)dist->size;
    struct {
        int err;
        char name[48];
        size_t bytes;
    } offer = {0, "", bytes};
    if (dist->rank == 0) {
        static unsigned serial;   /* a fresh name for every plan of this process */
        snprintf(offer.name, sizeof offer.name, "/arsenal-grads-%ld-%u", (long)getpid(), serial++);
        int fd = shm_open(offer.name, O_RDWR | O_CREAT | O_EXCL, 0600);
        offer.err = fd < 0 ? errno : posix_fallocate(fd, 0, (off_t)bytes);
        if (fd >= 0) close(fd);
        if (offer.err && fd >= 0) shm_unlink(offer.name);
    }
    MPI_CHECK(MPI_Bcast(&offer, sizeof offer, MPI_BYTE, 0, dist->comm), "MPI_Bcast (shared-memory segment)");
    /* a rank whose model failed to build holds another size: it must not
     * map past the end of the object (SIGBUS) */
    int err = offer.err ? offer.err : offer.bytes != bytes ? EINVAL : 0;
    void *base = MAP_FAILED;
    if (!err) {
        int fd = shm_open(offer.name, O_RDWR, 0);
        if (fd < 0) {
            err = errno;
        } else {
            base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (base == MAP_FAILED) err = errno;
            close(fd);
        }
    }
    int worst = 0;
    int mpi_rc = MPI_Allreduce(&err, &worst, 1, MPI_INT, MPI_MAX, dist->comm);
    if (dist->rank == 0 && !offer.err) shm_unlink(offer.name);   /* every rank has mapped it, or failed */
    if (mpi_rc != MPI_SUCCESS || worst) {
        if (base != MAP_FAILED) munmap(base, bytes);
        if (mpi_rc != MPI_SUCCESS) return mpi_failed(mpi_rc, "MPI_Allreduce (shared-memory segment)");
        snprintf(why, why_size, "cannot share %.1f MiB of gradients in /dev/shm: %s", (double)bytes / 1048576.0,
                 strerror(err ? err : worst));
        return 1;
    }
    dist->segment = base;
    dist->segment_bytes = bytes;
    dist->peer_grads = calloc((size_t)dist->size, sizeof *dist->peer_grads);
    if (!dist->peer_grads) return ars_error(ARS_ENOMEM, "dist: out of memory");
    for (int r = 0; r < dist->size; r++) dist->peer_grads[r] = (float *)(void *)((char *)base + part * (size_t)r);
    return 0;
}

/* Resolves mode (auto, or shared memory that may not be possible) into the
 * sum this dist will do, with the reason in dist->sync_note. */
static int choose_sync(ars_dist *dist, ars_model *model, ars_grad_sync mode)
{
    dist->sync_note[0] = 0;
    if (!ars_dist_active(dist) || (mode != ARS_SYNC_AUTO && mode != ARS_SYNC_SHARED)) {
        dist->mode = mode == ARS_SYNC_AUTO ? ARS_SYNC_ALLREDUCE : mode;
        return 0;
    }
    int single = 0, rc = ars_dist_single_host(dist, &single);
    if (rc) return rc;
    if (!single) {
        if (mode == ARS_SYNC_SHARED)
            return ars_error(ARS_EINVAL, "gradient_sync = shared_memory needs every rank on one host; these %d "
                                         "ranks run on several (use auto, overlap or allreduce)", dist->size);
        dist->mode = ARS_SYNC_OVERLAP;
        snprintf(dist->sync_note, sizeof dist->sync_note, "ranks on several hosts");
        return 0;
    }
    char why[160];
    rc = map_segment(dist, model->param_count, why, sizeof why);
    if (rc == 1) {
        if (mode == ARS_SYNC_SHARED)
            return ars_error(ARS_EIO, "gradient_sync = shared_memory: %s (gradient_sync = allreduce needs none)", why);
        dist->mode = ARS_SYNC_ALLREDUCE;
        snprintf(dist->sync_note, sizeof dist->sync_note, "every rank on one host, but %s", why);
        return 0;
    }
    if (rc) return rc;
    dist->mode = ARS_SYNC_SHARED;   /* no zeroing: the model's gradients are copied over this part */
    snprintf(dist->sync_note, sizeof dist->sync_note, "every rank on one host");
    return ars_model_move_grads(model, dist->peer_grads[dist->rank]);
}

/* The slices of every rank (MPI counts are int). */
static int plan_shard(ars_dist *dist, const ars_model *model)
{
    const int ranks = dist->size;
    dist->slice_counts = malloc(sizeof(int) * (size_t)ranks);
    dist->slice_offsets = malloc(sizeof(int) * (size_t)ranks);
    dist->gathered = malloc(sizeof(double) * (size_t)ranks);
    if (!dist->slice_counts || !dist->slice_offsets || !dist->gathered)
        return ars_error(ARS_ENOMEM, "dist: out of memory for the optimizer's slices");
    if (model->param_count > (size_t)INT_MAX)
        return ars_error(ARS_EINVAL, "optimizer_shard: %zu parameters exceed the %d an MPI count can hold",
                         model->param_count, INT_MAX);
    for (int r = 0; r < ranks; r++) {
        size_t lo, hi;
        ars_dist_slice(model->param_count, ranks, r, &lo, &hi);
        dist->slice_offsets[r] = (int)lo;
        dist->slice_counts[r] = (int)(hi - lo);
    }
    return 0;
}

int ars_dist_plan_buckets(ars_dist *dist, ars_model *model, size_t bucket_bytes, size_t first_bucket_bytes,
                          ars_grad_sync mode)
{
    if (!dist) return 0;
    free(dist->buckets);
    dist->buckets = NULL;
    dist->bucket_count = 0;
    /* a model planned before in shared memory takes its gradients back
     * before the segment goes */
    if (dist->segment && model->grads == dist->peer_grads[dist->rank]) {
        int rc = ars_model_move_grads(model, NULL);
        if (rc) return rc;
    }
    release_segment(dist);
    release_shard(dist);
    dist->grad_count = model->param_count;
    dist->sum_squares_ready = 0;
    int rc = choose_sync(dist, model, mode);
    if (rc) return rc;
    if (dist->shard && ars_dist_active(dist)) TRY(plan_shard(dist, model));
    dist->grads = model->grads;
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
    if (!ars_dist_active(dist) || dist->mode != ARS_SYNC_OVERLAP || dist->shard) return 0;
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

/* Sums rank 0's, rank 1's, ... values of [lo, hi) in that order, stores
 * the sum into each of the outputs (every rank's buffer, or this rank's
 * alone when sharded), and returns its sum of squares (sixteen partial sums
 * combined in a fixed tree, as ars_sum_squares: the same bits at any vector
 * width). Written as separate loops over a block of sixteen so that GCC
 * vectorizes each. */
ARS_VECTOR_CLONES
static double sum_slice(float *const *buffers, int ranks, float *const *outs, int out_count, size_t lo, size_t hi)
{
    double acc[ARS_PARTIAL_SUMS] = {0};
    size_t i = lo;
    for (; i + 16 <= hi; i += 16) {
        float sum[16];
        const float *restrict first = buffers[0] + i;
        for (int j = 0; j < 16; j++) sum[j] = first[j];
        for (int r = 1; r < ranks; r++) {
            const float *restrict next = buffers[r] + i;
            for (int j = 0; j < 16; j++) sum[j] += next[j];
        }
        for (int r = 0; r < out_count; r++) {
            float *restrict out = outs[r] + i;
            for (int j = 0; j < 16; j++) out[j] = sum[j];
        }
        for (int j = 0; j < 16; j++) acc[j] += (double)sum[j] * sum[j];
    }
    for (; i < hi; i++) {
        float sum = buffers[0][i];
        for (int r = 1; r < ranks; r++) sum += buffers[r][i];
        for (int r = 0; r < out_count; r++) outs[r][i] = sum;
        acc[0] += (double)sum * sum;
    }
    return ars_combine_partial_sums(acc);
}

/* Every rank sums its slice of the gradient (whole cache lines) over all
 * ranks' buffers and writes the sum back into each: after the second
 * barrier every buffer holds the summed gradient. Together the ranks read
 * and write each buffer once, with no copy through MPI's buffers, and the
 * sum of squares for the clip norm comes with it. */
static int reduce_shared(ars_dist *dist)
{
    /* the fences order this rank's plain loads and stores around the
     * barriers, which order the ranks */
    atomic_thread_fence(memory_order_seq_cst);
    MPI_CHECK(MPI_Barrier(dist->comm), "MPI_Barrier (gradients written)");
    atomic_thread_fence(memory_order_seq_cst);
    size_t lo, hi;
    ars_dist_slice(dist->grad_count, dist->size, dist->rank, &lo, &hi);
    *partial_slot(dist, dist->rank) = sum_slice(dist->peer_grads, dist->size, dist->peer_grads, dist->size, lo, hi);
    atomic_thread_fence(memory_order_seq_cst);
    MPI_CHECK(MPI_Barrier(dist->comm), "MPI_Barrier (gradients summed)");
    atomic_thread_fence(memory_order_seq_cst);
    double total = 0;
    for (int r = 0; r < dist->size; r++) total += *partial_slot(dist, r);   /* rank order: alike everywhere */
    dist->grad_sum_squares = total;
    dist->sum_squares_ready = 1;
    return 0;
}

/* Sharded, one host: this rank sums its slice over every rank's buffer
 * into its own buffer, which no other rank reads there. No barrier after
 * it: the all-gather of the sum of squares that follows keeps every rank
 * from writing its next gradient before all have read it. */
static int reduce_shared_slice(ars_dist *dist)
{
    atomic_thread_fence(memory_order_seq_cst);
    MPI_CHECK(MPI_Barrier(dist->comm), "MPI_Barrier (gradients written)");
    atomic_thread_fence(memory_order_seq_cst);
    const size_t lo = (size_t)dist->slice_offsets[dist->rank], hi = lo + (size_t)dist->slice_counts[dist->rank];
    dist->slice_sum_squares = sum_slice(dist->peer_grads, dist->size, &dist->peer_grads[dist->rank], 1, lo, hi);
    atomic_thread_fence(memory_order_seq_cst);
    return 0;
}

/* Sharded, across hosts: MPI_Reduce_scatter in place leaves the summed
 * slice at the start of the buffer; it moves to its own place. */
static int reduce_scatter(ars_dist *dist)
{
    MPI_CHECK(MPI_Reduce_scatter(MPI_IN_PLACE, dist->grads, dist->slice_counts, MPI_FLOAT, MPI_SUM, dist->comm),
              "MPI_Reduce_scatter");
    const int lo = dist->slice_offsets[dist->rank], count = dist->slice_counts[dist->rank];
    if (lo) memmove(dist->grads + lo, dist->grads, sizeof(float) * (size_t)count);
    dist->slice_sum_squares = ars_sum_squares(dist->grads + lo, (size_t)count);
    return 0;
}

int ars_dist_sum_in_rank_order(ars_dist *dist, double *values, int count)
{
    if (!ars_dist_active(dist) || count == 0) return 0;
    double *all = malloc(sizeof(double) * (size_t)dist->size * (size_t)count);
    if (!all) return ars_error(ARS_ENOMEM, "dist: out of memory");
    int mpi_rc = MPI_Allgather(values, count, MPI_DOUBLE, all, count, MPI_DOUBLE, dist->comm);
    if (mpi_rc != MPI_SUCCESS) {
        free(all);
        return mpi_failed(mpi_rc, "MPI_Allgather (sums)");
    }
    for (int i = 0; i < count; i++) {
        double total = 0;
        for (int r = 0; r < dist->size; r++) total += all[(size_t)r * (size_t)count + (size_t)i];
        values[i] = total;
    }
    free(all);
    return 0;
}

/* Sharded: the sum of squares of each rank's slice, gathered from every
 * rank and added in rank order: the same bits on every rank, and those of
 * the unsharded shared-memory reduction (the same slices, the same tree). */
static int gather_sum_squares(ars_dist *dist)
{
    MPI_CHECK(MPI_Allgather(&dist->slice_sum_squares, 1, MPI_DOUBLE, dist->gathered, 1, MPI_DOUBLE, dist->comm),
              "MPI_Allgather (gradient sum of squares)");
    double total = 0;
    for (int r = 0; r < dist->size; r++) total += dist->gathered[r];
    dist->grad_sum_squares = total;
    dist->sum_squares_ready = 1;
    return 0;
}

int ars_dist_gather_slices(const ars_dist *dist, float *values)
{
    if (!ars_dist_active(dist) || !dist->shard) return 0;
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values, dist->slice_counts, dist->slice_offsets,
                             MPI_FLOAT, dist->comm),
              "MPI_Allgatherv (parameter slices)");
    return 0;
}

int ars_dist_gather_to_root(const ars_dist *dist, const float *slice, float *full)
{
    if (!ars_dist_active(dist) || !dist->shard) return 0;
    MPI_CHECK(MPI_Gatherv(slice, dist->slice_counts[dist->rank], MPI_FLOAT, full, dist->slice_counts,
                          dist->slice_offsets, MPI_FLOAT, 0, dist->comm),
              "MPI_Gatherv (optimizer state)");
    return 0;
}

int ars_dist_gather_in_place_to_root(const ars_dist *dist, float *values)
{
    if (!ars_dist_active(dist) || !dist->shard) return 0;
    const int mine = dist->slice_counts[dist->rank];
    MPI_CHECK(MPI_Gatherv(dist->rank == 0 ? MPI_IN_PLACE : values + dist->slice_offsets[dist->rank], mine, MPI_FLOAT,
                          values, dist->slice_counts, dist->slice_offsets, MPI_FLOAT, 0, dist->comm),
              "MPI_Gatherv (gradient slices)");
    return 0;
}

int ars_dist_scatter_from_root(const ars_dist *dist, const float *full, float *slice)
{
    if (!ars_dist_active(dist) || !dist->shard) return 0;
    MPI_CHECK(MPI_Scatterv(full, dist->slice_counts, dist->slice_offsets, MPI_FLOAT, slice,
                           dist->slice_counts[dist->rank], MPI_FLOAT, 0, dist->comm),
              "MPI_Scatterv (optimizer state)");
    return 0;
}

int ars_dist_finish_gradients(ars_dist *dist)
{
    if (!ars_dist_active(dist)) return 0;
    dist->sync_seconds = 0;
    dist->sum_squares_ready = 0;
    double start = MPI_Wtime();
    int rc = 0;
    if (dist->shard) {
        rc = dist->mode == ARS_SYNC_SHARED ? reduce_shared_slice(dist) : reduce_scatter(dist);
    } else if (dist->mode == ARS_SYNC_SHARED) {
        rc = reduce_shared(dist);
    } else if (dist->mode == ARS_SYNC_ALLREDUCE) {
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
    if (!rc && dist->shard) rc = gather_sum_squares(dist);
    dist->sync_seconds = MPI_Wtime() - start;
    return rc;
}

double ars_dist_grad_sum_squares(ars_dist *dist, const ars_model *model)
{
    if (dist && dist->sum_squares_ready && model->grads == dist->grads && model->param_count == dist->grad_count) {
        dist->sum_squares_ready = 0;
        return dist->grad_sum_squares;
    }
    if (model->grad_sum_squares_ready && !ars_dist_active(dist)) return model->grad_sum_squares;
    return ars_sum_squares(model->grads, model->param_count);
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
